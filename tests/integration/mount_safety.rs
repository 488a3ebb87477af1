//! What a volume's content may do to the host: a `data` link planted in a
//! volume never makes a front-end hand out a path outside it, and a mount
//! refused for it leaves nothing behind; every front-end shows the same
//! directory of a volume; a full disk under `loop.volumePath` is named
//! before it bites and undone after it does.

use crate::common::*;
use crate::docker::{post, Service};
use crate::require_root;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// Run flexrex as kubelet does (no PATH) and parse its reply.
fn flex(h: &Home, args: &[&str]) -> Value {
    let mut c = h.command("flexrex");
    c.env_remove("PATH").args(args);
    let o = run_cmd(&mut c);
    assert_eq!(o.stderr, "", "flexrex wrote to stderr: {o:#?}");
    serde_json::from_str(o.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {o:#?}"))
}

fn flex_ok(h: &Home, args: &[&str]) -> Value {
    let v = flex(h, args);
    assert_eq!(v["status"], "Success", "flexrex {args:?}: {v}");
    v
}

fn kube_opts(vol: &str, pv: &str) -> String {
    json!({
        "volumeID": vol,
        "kubernetes.io/fsType": "ext4",
        "kubernetes.io/readwrite": "rw",
        "kubernetes.io/pvOrVolumeName": pv,
    })
    .to_string()
}

fn kube_path(h: &Home, pv: &str) -> PathBuf {
    h.dir
        .join("kubelet/plugins/kubernetes.io/flexvolume/rexray/flexrex/mounts")
        .join(pv)
}

/// kubelet's attach + mountdevice; returns its device mount path.
fn kube_mount(h: &Home, vol: &str, pv: &str) -> PathBuf {
    let o = kube_opts(vol, pv);
    let dev = flex_ok(h, &["attach", &o, "node1"])["device"]
        .as_str()
        .unwrap()
        .to_string();
    let p = kube_path(h, pv);
    flex_ok(h, &["mountdevice", s(&p), &dev, &o]);
    p
}

fn kube_unmount(h: &Home, pv: &str) {
    let p = kube_path(h, pv);
    flex_ok(h, &["unmountdevice", s(&p)]);
    let _ = std::fs::remove_dir(&p);
    flex_ok(h, &["detach", pv, "node1"]);
}

/// The dvdcli environment of a configured (in-process) service.
fn dvdcli_home() -> Home {
    let h = Home::new();
    h.config("libstorage:\n  service: loop\n");
    h.with_env("DVDCLI_PLUGIN_SOCKET_DIRS", "/nonexistent-dvdcli-test")
        .with_env("DVDCLI_PLUGIN_SPEC_DIRS", "/nonexistent-dvdcli-test")
        .with_env("DVDCLI_LOOKUP_TIMEOUT", "0")
}

/// Replace the volume's `data` directory (mounted) with a link to `to`.
fn plant_link(h: &Home, vol: &str, to: &Path) {
    let data = h.data(vol);
    std::fs::remove_dir(&data).unwrap();
    std::os::unix::fs::symlink(to, &data).unwrap();
}

/// A `data` link planted in a volume: no front-end hands out a path
/// through it, each says which volume and how to fix it, and a mount
/// refused for it leaves no mount and no loop device behind.
#[test]
fn a_planted_data_link_is_never_handed_out_and_a_refused_mount_leaves_nothing() {
    require_root!();
    let h = dvdcli_home();
    let outside = h.dir.join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"host file").unwrap();
    h.rexray(&["volume", "create", "ln1", "--size", "1"]).ok();
    let p = h.rexray(&["volume", "mount", "ln1", "-f", "json"]);
    assert!(p.ok().contains(s(&h.data("ln1"))), "{p:?}");
    plant_link(&h, "ln1", &outside);

    // Mounted: every path handout checks again.
    let e = h.rexray(&["volume", "path", "ln1"]);
    let m = e.fails(1);
    assert_eq!(e.stdout, "", "{e:?}");
    for w in ["volume ln1", "data", "symbolic link", "rm "] {
        assert!(m.contains(w), "lacks {w:?}: {m}");
    }
    let ls = h.rexray(&["volume", "ls", "ln1", "--path", "-f", "json"]);
    let v: Value = serde_json::from_str(ls.ok()).unwrap();
    assert_eq!(v[0]["Path"], "", "{v}");
    let dv = h.run(
        "dvdcli",
        &["path", "--volumedriver=loop", "--volumename=ln1"],
    );
    assert!(!dv.stdout.contains("data"), "{dv:?}");
    assert!(dv.stderr.contains("symbolic link"), "{dv:?}");
    // A repeated mount (another consumer) is refused too; the first
    // consumer's mount stays.
    let again = h.rexray(&["volume", "mount", "ln1", "--consumer", "other"]);
    assert!(again.fails(1).contains("symbolic link"), "{again:?}");
    assert_eq!(count_mounts_at(&h.mount_point("ln1")), 1);

    h.rexray(&["volume", "unmount", "ln1"]).ok();
    assert!(h.mounts().is_empty() && h.loops().is_empty());

    // The first mount of a volume holding the link: refused, undone.
    let e = h.rexray(&["volume", "mount", "ln1"]);
    let m = e.fails(1);
    for w in [
        "volume ln1",
        "symbolic link",
        "rexray volume attach ln1",
        "rm /mnt/data",
    ] {
        assert!(m.contains(w), "lacks {w:?}: {m}");
    }
    assert!(h.mounts().is_empty(), "mount leaked: {:?}", h.mounts());
    assert!(h.loops().is_empty(), "device leaked: {:?}", h.loops());
    let rec = h
        .volumes()
        .mount_record(rexray::volume::VolumeRef::Name("ln1"))
        .unwrap()
        .unwrap_or_default();
    assert!(rec.consumers.is_empty(), "{rec:?}");
    // dvdcli mount and flexrex mountdevice: the same.
    let dv = h.run(
        "dvdcli",
        &["mount", "--volumedriver=loop", "--volumename=ln1"],
    );
    assert_ne!(dv.code, 0, "{dv:?}");
    assert!(dv.stderr.contains("symbolic link"), "{dv:?}");
    assert!(h.mounts().is_empty() && h.loops().is_empty());
    let o = kube_opts("ln1", "pv-ln1");
    let r = flex(
        &h,
        &["mountdevice", s(&kube_path(&h, "pv-ln1")), "/dev/x", &o],
    );
    assert_eq!(r["status"], "Failure", "{r}");
    assert!(
        r["message"].as_str().unwrap().contains("symbolic link"),
        "{r}"
    );
    assert!(h.mounts().is_empty() && h.loops().is_empty());
    assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"host file");
}

/// Docker's Get, Path and List check the path every time they hand it out.
#[test]
fn docker_get_path_and_list_never_hand_out_a_planted_link() {
    require_root!();
    let h = Home::new();
    let (host, sock) = unix_host(&h);
    let _svc = Service::start(&h, &host, &[]);
    let outside = h.dir.join("outside");
    std::fs::create_dir(&outside).unwrap();
    let r = post(
        &sock,
        "/VolumeDriver.Create",
        r#"{"Name":"dk1","Opts":{"size":"1"}}"#,
    );
    assert_eq!(r.0, 200, "{r:?}");
    let r = post(&sock, "/VolumeDriver.Mount", r#"{"Name":"dk1","ID":"c1"}"#);
    assert_eq!(r.1["Mountpoint"], s(&h.data("dk1")), "{r:?}");
    // List once before the link, so a kept reply would be stale.
    let l = post(&sock, "/VolumeDriver.List", "{}");
    assert_eq!(l.1["Volumes"][0]["Mountpoint"], s(&h.data("dk1")), "{l:?}");
    plant_link(&h, "dk1", &outside);
    for what in ["/VolumeDriver.Get", "/VolumeDriver.Path"] {
        let r = post(&sock, what, r#"{"Name":"dk1"}"#);
        assert_ne!(r.0, 200, "{what}: {r:?}");
        let m = r.1["Err"].as_str().unwrap_or("");
        assert!(
            m.contains("dk1") && m.contains("symbolic link"),
            "{what}: {m}"
        );
    }
    let l = post(&sock, "/VolumeDriver.List", "{}");
    assert_eq!(l.0, 200, "{l:?}");
    assert!(l.1["Volumes"][0].get("Mountpoint").is_none(), "{l:?}");
    let r = post(
        &sock,
        "/VolumeDriver.Unmount",
        r#"{"Name":"dk1","ID":"c1"}"#,
    );
    assert_eq!(r.0, 200, "{r:?}");
    let r = post(&sock, "/VolumeDriver.Mount", r#"{"Name":"dk1","ID":"c2"}"#);
    assert_ne!(r.0, 200, "{r:?}");
    assert!(
        h.mounts().is_empty() && h.loops().is_empty(),
        "{:?} {:?}",
        h.mounts(),
        h.loops()
    );
}

/// Kubernetes and Docker (and the CLI, and dvdcli) show the same directory
/// of a volume: flexrex binds `<mount>/data` onto kubelet's path, so a pod
/// cannot reach the root to plant anything there.
#[test]
fn pods_and_the_cli_see_the_same_files() {
    require_root!();
    let h = Home::new();
    h.rexray(&["volume", "create", "same1", "--size", "1"]).ok();
    let kp = kube_mount(&h, "same1", "pv-same1");
    std::fs::write(kp.join("from-pod"), b"pod").unwrap();
    assert!(
        !kp.join("lost+found").exists(),
        "the pod sees the filesystem root"
    );
    let p = h.rexray(&["volume", "path", "same1"]);
    assert_eq!(p.ok().trim(), s(&h.data("same1")));
    assert_eq!(
        std::fs::read(h.data("same1").join("from-pod")).unwrap(),
        b"pod"
    );
    kube_unmount(&h, "pv-same1");
    assert!(h.mounts().is_empty() && h.loops().is_empty());
    let m = h.rexray(&["volume", "mount", "same1"]);
    assert!(m.ok().contains(s(&h.data("same1"))), "{m:?}");
    assert_eq!(
        std::fs::read(h.data("same1").join("from-pod")).unwrap(),
        b"pod"
    );
    h.rexray(&["volume", "unmount", "same1"]).ok();
}

/// A volume earlier releases let pods fill at its root (the root was bound
/// onto kubelet's path, and mount made an empty `data` beside the files):
/// every front-end hands out the root, so nothing seems to vanish.
#[test]
fn a_volume_filled_at_its_root_keeps_showing_its_root_everywhere() {
    require_root!();
    let h = Home::new();
    h.rexray(&["volume", "create", "old1", "--size", "1"]).ok();
    h.rexray(&["volume", "mount", "old1"]).ok();
    // What a pod of an earlier release wrote: at the root.
    std::fs::write(h.mount_point("old1").join("pod-file"), b"old").unwrap();
    let p = h.rexray(&["volume", "path", "old1"]);
    assert_eq!(p.ok().trim(), s(&h.mount_point("old1")));
    h.rexray(&["volume", "unmount", "old1"]).ok();
    let kp = kube_mount(&h, "old1", "pv-old1");
    assert_eq!(std::fs::read(kp.join("pod-file")).unwrap(), b"old");
    let p = h.rexray(&["volume", "path", "old1"]);
    assert_eq!(p.ok().trim(), s(&h.mount_point("old1")));
    kube_unmount(&h, "pv-old1");
    let m = h.rexray(&["volume", "mount", "old1"]);
    assert!(m.ok().contains(s(&h.mount_point("old1"))), "{m:?}");
    assert!(!m.stdout.contains("old1/data"), "{m:?}");
    h.rexray(&["volume", "unmount", "old1"]).ok();
    assert!(h.mounts().is_empty() && h.loops().is_empty());
}

/// A tmpfs of `mib` MiB of our own as `loop.volumePath` (unmounted with
/// the home, which unmounts everything under its directory).
fn small_volume_path(h: &Home, mib: u32, extra: &str) -> PathBuf {
    let dir = h.dir.join("small");
    mount_tmpfs(&dir, &format!("size={mib}m,mode=0755"));
    h.config(&format!(
        "libstorage:\n  service: loop\nloop:\n  volumePath: {}\n{extra}",
        dir.display()
    ));
    dir
}

/// Fill the filesystem at `dir`, then free `leave` bytes (whole pages).
fn fill(dir: &Path, leave: u64) -> PathBuf {
    use std::io::Write;
    let p = dir.join("filler");
    let mut f = std::fs::File::create(&p).unwrap();
    let chunk = vec![0xa5u8; 64 << 10];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", p.display()),
        }
    }
    let len = f.metadata().unwrap().len() / 4096 * 4096;
    f.set_len(len.saturating_sub(leave)).unwrap();
    p
}

/// Fill the filesystem at `dir` to the last byte: [`fill`], then small
/// files until not one more fits (what a rounded-down filler left).
/// Returns the files made.
fn fill_up(dir: &Path) -> Vec<PathBuf> {
    let mut made = vec![fill(dir, 0)];
    for i in 0..4096 {
        let p = dir.join(format!("crumb{i}"));
        if std::fs::write(&p, b"x").is_err() {
            let _ = std::fs::remove_file(&p);
            break;
        }
        made.push(p);
    }
    made
}

/// Mounts under the home other than the small volumePath itself.
fn volume_mounts(h: &Home, small: &Path) -> Vec<PathBuf> {
    h.mounts().into_iter().filter(|m| m != small).collect()
}

fn images(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".img") || n.contains(".copying"))
        .collect()
}

fn allocated(h: &Home, vol: &str) -> u64 {
    let out = h.rexray(&["volume", "ls", vol, "-f", "json"]);
    let v: Value = serde_json::from_str(out.ok()).unwrap();
    v[0]["fields"]["allocated"]
        .as_str()
        .unwrap_or_else(|| panic!("no allocated field: {v}"))
        .parse()
        .unwrap()
}

/// A sparse volume larger than the free space under volumePath: create
/// and mount say so with the figures, and `ls` shows what is allocated.
#[test]
fn overcommit_is_named_on_create_and_mount_and_shown_by_ls() {
    require_root!();
    let h = Home::new();
    let _small = small_volume_path(&h, 64, "");
    let c = h.rexray(&["volume", "create", "ov1", "--size", "1"]);
    c.ok();
    for w in [
        "volume ov1",
        "overcommitted",
        "1.0 GiB (1073741824 bytes)",
        "is free there",
        "could still grow by",
        "loop.preallocate",
    ] {
        assert!(c.stderr.contains(w), "create: lacks {w:?}: {c:?}");
    }
    assert!(!c.stdout.contains("overcommitted"), "{c:?}");
    assert_eq!(allocated(&h, "ov1"), 0);
    let m = h.rexray(&["volume", "mount", "ov1"]);
    m.ok();
    assert!(
        m.stderr.contains("overcommitted") && m.stderr.contains("ov1"),
        "{m:?}"
    );
    std::fs::write(h.data("ov1").join("f"), vec![1u8; 1 << 20]).unwrap();
    nix::unistd::sync();
    assert!(allocated(&h, "ov1") >= 1 << 20);
    h.rexray(&["volume", "unmount", "ov1"]).ok();
}

/// `loop.preallocate`: the whole image at create, or a refusal naming the
/// figures that leaves nothing behind.
#[test]
fn preallocate_allocates_the_image_or_refuses_leaving_nothing() {
    require_root!();
    let h = Home::new();
    let small = small_volume_path(&h, 8, "  preallocate: true\n");
    let c = h.rexray(&["volume", "create", "pa1", "--size", "1"]);
    let e = c.fails(1);
    for w in [
        "volume pa1",
        "loop.preallocate",
        "1.0 GiB",
        "is free in loop.volumePath",
    ] {
        assert!(e.contains(w), "lacks {w:?}: {c:?}");
    }
    assert!(images(&small).is_empty(), "{:?}", images(&small));
    let ls = h.rexray(&["volume", "ls", "-f", "json"]);
    assert_eq!(ls.ok().trim(), "[]");

    // A copy that could not be preallocated: refused before anything is
    // copied (its source may be frozen for the copy).
    h.config(&format!(
        "libstorage:\n  service: loop\nloop:\n  volumePath: {}\n",
        small.display()
    ));
    h.rexray(&["volume", "create", "src", "--size", "1"]).ok();
    h.config(&format!(
        "libstorage:\n  service: loop\nloop:\n  volumePath: {}\n  preallocate: true\n",
        small.display()
    ));
    let (host, sock) = unix_host(&h);
    let svc = Service::start(&h, &host, &[]);
    let (status, reply) = post(
        &sock,
        "/VolumeDriver.Create",
        r#"{"Name":"cp","Opts":{"volumeName":"src"}}"#,
    );
    let e = reply["Err"].as_str().unwrap_or_default();
    assert!(
        status != 200
            && e.contains("cannot preallocate volume cp")
            && e.contains("nothing was copied"),
        "{status} {reply}"
    );
    assert_eq!(images(&small).len(), 1, "{:?}", images(&small));
    drop(svc);

    // On a disk with room: the image is allocated whole.
    let h2 = Home::new();
    h2.config("loop:\n  preallocate: true\n");
    h2.rexray(&["volume", "create", "pa2", "--size", "1"]).ok();
    assert!(allocated(&h2, "pa2") >= 1 << 30);
    h2.rexray(&["volume", "rm", "pa2"]).ok();
}

/// A disk full at attach: the holder record (written before any device
/// is bound) cannot be written, so nothing is bound, and the error names
/// the volume, the step and the space; once space is freed the attach
/// works.
#[test]
fn an_attach_on_a_full_disk_binds_nothing() {
    require_root!();
    let h = Home::new();
    let small = small_volume_path(&h, 8, "");
    h.rexray(&["volume", "create", "at1", "--size", "1"]).ok();
    let fillers = fill_up(&small);
    let a = h.rexray(&["volume", "attach", "at1"]);
    let e = a.fails(1);
    for w in [
        "attaching volume at1",
        "owner record",
        "No space left",
        "overcommitted",
    ] {
        assert!(e.contains(w), "lacks {w:?}: {a:?}");
    }
    assert!(h.loops().is_empty(), "device left bound: {:?}", h.loops());
    for f in fillers {
        std::fs::remove_file(f).unwrap();
    }
    h.rexray(&["volume", "attach", "at1"]).ok();
    assert_eq!(h.loops().len(), 1);
    h.rexray(&["volume", "detach", "at1"]).ok();
    assert!(h.loops().is_empty());
}

/// mkfs on a full disk fails: the mount detaches what it attached and
/// says why; a create whose catalog cannot be written leaves no image.
#[test]
fn a_full_disk_fails_format_and_create_cleanly() {
    require_root!();
    let h = Home::new();
    let small = small_volume_path(&h, 8, "");
    h.rexray(&["volume", "create", "mk1", "--size", "1"]).ok();
    let filler = fill(&small, 64 << 10);
    let m = h.rexray(&["volume", "mount", "mk1"]);
    let e = m.fails(1);
    for w in ["mounting volume mk1", "overcommitted", "is free there"] {
        assert!(e.contains(w), "lacks {w:?}: {m:?}");
    }
    assert!(h.loops().is_empty(), "{:?}", h.loops());
    assert!(volume_mounts(&h, &small).is_empty(), "{:?}", h.mounts());
    assert!(h
        .volumes()
        .mount_record(rexray::volume::VolumeRef::Name("mk1"))
        .unwrap()
        .unwrap_or_default()
        .consumers
        .is_empty());

    // Completely full: the catalog cannot be written.
    let before = images(&small);
    std::fs::remove_file(&filler).unwrap();
    fill(&small, 0);
    let c = h.rexray(&["volume", "create", "cr1", "--size", "1"]);
    let e = c.fails(1);
    assert!(e.contains("creating volume cr1"), "{c:?}");
    assert_eq!(images(&small), before, "an image was left behind");
}

/// A mount whose consumer cannot be recorded (the state directory's disk
/// is full) is undone: unrecorded, nobody could ever release it. The
/// volume is left as it was found (attached, not mounted, for the CLI;
/// mounted for kubelet's device path, without the pod's bind, for
/// flexrex), and the same call works once there is space again.
#[test]
fn a_mount_whose_consumer_cannot_be_recorded_is_undone() {
    require_root!();
    if client_mode_na("the node's state directory is made before a test can put it on a tmpfs") {
        return;
    }
    let h = Home::plain();
    let lib = h.lib();
    mount_tmpfs(&lib, "size=96m,mode=0711");
    h.rexray(&["volume", "create", "rec", "--size", "1"]).ok();
    h.rexray(&["volume", "mount", "rec"]).ok();
    std::fs::write(h.data("rec").join("keep"), "data").unwrap();
    h.rexray(&["volume", "unmount", "rec"]).ok();
    // Attached before the disk fills (attaching writes an owner record).
    h.rexray(&["volume", "attach", "rec"]).ok();
    let fillers = fill_up(&lib);
    let o = h.rexray(&["volume", "mount", "rec", "--consumer", "z"]);
    let e = o.fails(1);
    assert!(
        e.contains("recording consumer cli:z of volume rec") && e.contains("No space left"),
        "{o:#?}"
    );
    assert!(volume_mounts(&h, &lib).is_empty(), "{:?}", h.mounts());
    assert_eq!(h.loops().len(), 1, "still attached, as found");
    for f in &fillers {
        std::fs::remove_file(f).unwrap();
    }
    // kubelet's device mount is recorded; the pod's is not.
    let dmp = kube_mount(&h, "rec", "pv-rec");
    let fillers = fill_up(&lib);
    let pod = h
        .dir
        .join("kubelet/pods/uid1/volumes/rexray~flexrex/pv-rec");
    let v = flex(&h, &["mount", s(&pod), &kube_opts("rec", "pv-rec")]);
    assert_eq!(v["status"], "Failure", "{v}");
    let left = volume_mounts(&h, &lib);
    assert!(
        !left.contains(&pod) && left.contains(&dmp),
        "the pod's bind is undone, kubelet's device mount kept: {left:?}"
    );
    for f in &fillers {
        std::fs::remove_file(f).unwrap();
    }
    flex_ok(&h, &["mount", s(&pod), &kube_opts("rec", "pv-rec")]);
    assert_eq!(std::fs::read_to_string(pod.join("keep")).unwrap(), "data");
    flex_ok(&h, &["unmount", s(&pod)]);
    kube_unmount(&h, "pv-rec");
    h.rexray(&["volume", "mount", "rec", "--consumer", "z"])
        .ok();
    h.rexray(&["volume", "unmount", "rec", "--consumer", "z"])
        .ok();
    assert!(volume_mounts(&h, &lib).is_empty() && h.loops().is_empty());
    h.rexray(&["volume", "rm", "rec"]).ok();
}
