//! flexrex driven exactly as kubelet drives it: argv forms from
//! pkg/volume/flexvolume, stdin /dev/null, an environment with nothing
//! but REXRAY_HOME (not even PATH), and every reply judged as kubelet's
//! driver-call.go judges it: stdout and stderr together must be one JSON
//! object, and Success comes with exit 0 (anything else with non-zero).

use crate::common::*;
use crate::require_root;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// What kubelet sees of one call.
struct Reply {
    code: i32,
    v: Value,
}

impl Reply {
    fn status(&self) -> &str {
        self.v["status"].as_str().unwrap_or("")
    }
    #[track_caller]
    fn success(&self) -> &Value {
        assert_eq!(self.status(), "Success", "{}", self.v);
        &self.v
    }
    #[track_caller]
    fn failure(&self, words: &[&str]) -> String {
        assert_eq!(self.status(), "Failure", "{}", self.v);
        let m = self.v["message"].as_str().unwrap_or("").to_string();
        for w in words {
            assert!(m.contains(w), "message lacks {w:?}: {m}");
        }
        m
    }
}

/// Run `flexrex ARGS` as kubelet does and judge the reply as kubelet does.
fn flex(h: &Home, args: &[&str]) -> Reply {
    flex_env(h, args, &[])
}

fn flex_env(h: &Home, args: &[&str], env: &[(&str, &str)]) -> Reply {
    let mut c = h.command("flexrex");
    c.env_remove("PATH").args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let o = run_cmd(&mut c);
    judge(&o, args)
}

#[track_caller]
fn judge(o: &Out, args: &[&str]) -> Reply {
    assert_eq!(o.stderr, "", "flexrex {args:?} wrote to stderr: {o:#?}");
    let combined = format!("{}{}", o.stdout, o.stderr);
    let v: Value = serde_json::from_str(combined.trim()).unwrap_or_else(|e| {
        panic!("flexrex {args:?}: output is not one JSON object ({e}): {o:#?}")
    });
    assert!(v.is_object(), "{v}");
    let status = v["status"].as_str().unwrap_or("");
    assert!(
        ["Success", "Failure", "Not supported"].contains(&status),
        "bad status: {v}"
    );
    assert_eq!(
        status == "Success",
        o.code == 0,
        "Success must come with exit 0 and only then: {args:?} {o:#?}"
    );
    if let Some(a) = v.get("attached") {
        assert!(a.is_boolean(), "attached must be a JSON bool: {v}");
    }
    Reply { code: o.code, v }
}

/// The options kubelet sends for a volume.
fn opts(volume: &str, pv: &str, rw: &str) -> String {
    opts_fs(volume, pv, rw, "ext4")
}

fn opts_fs(volume: &str, pv: &str, rw: &str, fs: &str) -> String {
    json!({
        "volumeID": volume,
        "kubernetes.io/fsType": fs,
        "kubernetes.io/readwrite": rw,
        "kubernetes.io/pvOrVolumeName": pv,
    })
    .to_string()
}

/// The options kubelet sends for a pod mount.
fn pod_opts(volume: &str, pv: &str, rw: &str, fs: &str) -> String {
    let mut v: Value = serde_json::from_str(&opts_fs(volume, pv, rw, fs)).unwrap();
    let o = v.as_object_mut().unwrap();
    o.insert("kubernetes.io/pod.name".into(), "pod-0".into());
    o.insert("kubernetes.io/pod.namespace".into(), "default".into());
    o.insert("kubernetes.io/pod.uid".into(), "0b9c-uid".into());
    o.insert("kubernetes.io/serviceAccount.name".into(), "default".into());
    o.insert("kubernetes.io/mounterArgs.FsGroup".into(), "2000".into());
    o.insert("kubernetes.io/secret/password".into(), "hunter2".into());
    v.to_string()
}

/// kubelet's paths for a volume under this home.
fn device_mount_path(h: &Home, pv: &str) -> PathBuf {
    h.dir
        .join("kubelet/plugins/kubernetes.io/flexvolume/rexray/flexrex/mounts")
        .join(pv)
}
fn pod_dir(h: &Home, pv: &str) -> PathBuf {
    h.dir
        .join("kubelet/pods/0b9c-uid/volumes/rexray~flexrex")
        .join(pv)
}

fn create(h: &Home, name: &str) {
    h.rexray(&["volume", "create", name, "--size", "1"]).ok();
}

/// attach → attach → isattached → waitforattach → mountdevice ×2 → mount ×2
/// as kubelet's reconciler does; returns the device.
fn set_up(h: &Home, vol: &str, pv: &str, pod_rw: &str) -> String {
    set_up_fs(h, vol, pv, pod_rw, "ext4")
}

fn set_up_fs(h: &Home, vol: &str, pv: &str, pod_rw: &str, fs: &str) -> String {
    let o = opts_fs(vol, pv, "rw", fs);
    let dev = flex(h, &["attach", &o, "node1"]).success()["device"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(is_attach_device(&dev), "{dev}");
    let again = flex(h, &["attach", &o, "node1"]);
    assert_eq!(again.success()["device"], dev.as_str(), "attach again");
    assert_eq!(h.attached().len(), 1);
    assert_eq!(
        flex(h, &["isattached", &o, "node1"]).success()["attached"],
        true
    );
    assert_eq!(
        flex(h, &["waitforattach", &dev, &o]).success()["device"],
        dev.as_str()
    );
    let dmp = device_mount_path(h, pv);
    for _ in 0..2 {
        flex(h, &["mountdevice", s(&dmp), &dev, &o]).success();
        assert_eq!(count_mounts_at(&dmp), 1, "mountdevice must not stack");
    }
    let pod = pod_dir(h, pv);
    let po = pod_opts(vol, pv, pod_rw, fs);
    for _ in 0..2 {
        flex(h, &["mount", s(&pod), &po]).success();
        assert_eq!(count_mounts_at(&pod), 1, "mount must not stack");
    }
    dev
}

/// unmount → unmountdevice → detach, removing the directories as kubelet
/// does after each successful call.
fn tear_down(h: &Home, pv: &str) {
    let pod = pod_dir(h, pv);
    flex(h, &["unmount", s(&pod)]).success();
    assert_eq!(count_mounts_at(&pod), 0);
    std::fs::remove_dir(&pod).unwrap();
    let dmp = device_mount_path(h, pv);
    flex(h, &["unmountdevice", s(&dmp)]).success();
    assert_eq!(count_mounts_at(&dmp), 0);
    std::fs::remove_dir(&dmp).unwrap();
    flex(h, &["detach", pv, "node1"]).success();
}

#[test]
fn flexrex_init_announces_attach() {
    let h = Home::new();
    let r = flex(&h, &["init"]);
    assert_eq!(r.success()["capabilities"]["attach"], true);
    assert_eq!(r.code, 0);
}

#[test]
fn flexrex_never_writes_to_stderr_even_without_a_log_file() {
    let h = Home::new();
    // The log file's directory cannot be created (a file is in the way).
    std::fs::write(h.dir.join("blocker"), b"").unwrap();
    h.config(&format!(
        "rexray:\n  logLevel: debug\n  flexrex:\n    logFile: {}\n  unknownKey: 1\n",
        h.dir.join("blocker/flexrex.log").display()
    ));
    flex(&h, &["init"]).success();
    flex(&h, &["getvolumename", r#"{"volumeID":"none"}"#]).failure(&["none"]);
    flex(&h, &["bogus"]);
    // A broken configuration is a Failure reply, still on stdout only.
    h.config("libstorage:\n  integration:\n    volume:\n      operations:\n        mount:\n          preempt: perhaps\n");
    flex(&h, &["init"]).failure(&["configuration"]);
}

#[test]
fn flexrex_full_cycle_twice_keeps_data() {
    require_root!();
    let h = Home::new();
    create(&h, "kv1");
    flex(&h, &["init"]).success();
    let o = opts("kv1", "pv-kv1", "rw");
    assert_eq!(
        flex(&h, &["getvolumename", &o]).success()["volumeName"],
        "kv1"
    );

    set_up(&h, "kv1", "pv-kv1", "rw");
    let pod = pod_dir(&h, "pv-kv1");
    std::fs::write(pod.join("hello.txt"), b"kept across cycles").unwrap();
    tear_down(&h, "pv-kv1");
    assert_eq!(
        flex(&h, &["isattached", &o, "node1"]).success()["attached"],
        false
    );
    assert!(h.mounts().is_empty(), "{:?}", h.mounts());
    assert!(h.attached().is_empty(), "{:?}", h.attached());

    // Every teardown step again: nothing there is success.
    let dmp = device_mount_path(&h, "pv-kv1");
    flex(&h, &["unmount", s(&pod)]).success();
    flex(&h, &["unmountdevice", s(&dmp)]).success();
    flex(&h, &["detach", "pv-kv1", "node1"]).success();

    // Second cycle: the same filesystem, not a new one.
    set_up(&h, "kv1", "pv-kv1", "rw");
    assert_eq!(
        std::fs::read_to_string(pod.join("hello.txt")).unwrap(),
        "kept across cycles"
    );
    // The older argv forms reach the same state.
    let old = flex(&h, &["isattached", "node1", &o]);
    assert_eq!(old.success()["attached"], true);
    tear_down(&h, "pv-kv1");
    assert!(h.mounts().is_empty(), "{:?}", h.mounts());
    assert!(h.attached().is_empty(), "{:?}", h.attached());
    let log = std::fs::read_to_string(h.dir.join("var/log/flexrex.log")).unwrap_or_default();
    assert!(!log.contains("hunter2"), "secrets must not be logged");
}

#[test]
fn flexrex_read_only_mount_rejects_writes() {
    require_root!();
    let h = Home::new();
    create(&h, "ro1");
    set_up(&h, "ro1", "pv-ro1", "ro");
    let pod = pod_dir(&h, "pv-ro1");
    let e = std::fs::write(pod.join("nope.txt"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    // The device mount itself stays writable for other pods.
    let dmp = device_mount_path(&h, "pv-ro1");
    std::fs::write(dmp.join("yes.txt"), b"x").unwrap();
    tear_down(&h, "pv-ro1");
    assert!(h.mounts().is_empty() && h.attached().is_empty());
}

#[test]
fn flexrex_expand_grows_the_filesystem() {
    require_root!();
    if driver_na_on(&[TestDriver::S3fs], "a bucket has no size to expand") {
        return;
    }
    let h = Home::new();
    create(&h, "ex1");
    // xfs: growing a mounted ext4 needs CAP_SYS_RESOURCE, which test
    // containers often lack; xfs_growfs needs only CAP_SYS_ADMIN.
    let dev = set_up_fs(&h, "ex1", "pv-ex1", "rw", "xfs");
    let dmp = device_mount_path(&h, "pv-ex1");
    let before = fs_bytes(&dmp);
    assert!(before < 1 << 30, "{before}");
    let findmnt = run_cmd(
        std::process::Command::new("findmnt")
            .args(["-n", "-o", "FSTYPE", "--mountpoint"])
            .arg(&dmp),
    );
    assert_eq!(findmnt.stdout.trim(), "xfs");
    let o = opts_fs("ex1", "pv-ex1", "rw", "xfs");
    let two = (2u64 << 30).to_string();
    let one = (1u64 << 30).to_string();
    // In client mode the volume grows through the server's resize
    // extension (see `libstorage::resize_extension_*`).
    let r = flex(&h, &["expandvolume", &o, s(&dmp), &two, &one]);
    assert_eq!(r.success()["volumeNewSize"], 2u64 << 30);
    let r = flex(&h, &["expandfs", &o, &dev, s(&dmp), &two, &one]);
    assert_eq!(r.success()["volumeNewSize"], 2u64 << 30);
    let after = fs_bytes(&dmp);
    assert!(after > before + (700 << 20), "{before} -> {after}");
    // The pod sees the same filesystem.
    assert_eq!(fs_bytes(&pod_dir(&h, "pv-ex1")), after);
    // A byte count that is not whole GiB rounds up.
    let r = flex(&h, &["expandvolume", &o, s(&dmp), "2147483649", &two]);
    assert_eq!(r.success()["volumeNewSize"], 3u64 << 30);
    tear_down(&h, "pv-ex1");
    assert!(h.mounts().is_empty() && h.attached().is_empty());
}

#[test]
fn flexrex_bad_input_fails_and_changes_nothing() {
    require_root!();
    let h = Home::new();
    create(&h, "bad1");
    let dmp = device_mount_path(&h, "pv-bad");
    let pod = pod_dir(&h, "pv-bad");
    let unknown = opts("nope", "pv-bad", "rw");
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (vec!["attach", "{"], vec!["invalid JSON"]),
        (vec!["attach", "[\"volumeID\"]"], vec!["expected an object"]),
        (vec!["attach", "\"bad1\""], vec!["expected an object"]),
        (vec!["attach", "{}"], vec!["volumeID"]),
        (vec!["attach", r#"{"volumeID":""}"#], vec!["volumeID"]),
        (vec!["attach", r#"{"volumeID":"../x"}"#], vec!["volumeID"]),
        (vec!["attach", &unknown, "node1"], vec!["nope", "not found"]),
        (vec!["attach"], vec!["attach needs"]),
        (vec!["getvolumename"], vec!["getvolumename needs"]),
        (vec!["getvolumename", &unknown], vec!["nope"]),
        (vec!["isattached", &unknown, "node1"], vec!["nope"]),
        (vec!["waitforattach", "/dev/loop0"], vec!["needs"]),
        (vec!["mountdevice", s(&dmp), "/dev/loop0"], vec!["needs"]),
        (
            vec!["mountdevice", s(&dmp), "/dev/loop0", &unknown],
            vec!["nope"],
        ),
        (
            vec![
                "mountdevice",
                "relative/dir",
                "/dev/loop0",
                r#"{"volumeID":"bad1"}"#,
            ],
            vec!["absolute"],
        ),
        (
            vec![
                "mountdevice",
                s(&dmp),
                "/dev/loop0",
                r#"{"volumeID":"bad1","kubernetes.io/fsType":"ntfs"}"#,
            ],
            vec!["ntfs"],
        ),
        (vec!["mount", s(&pod)], vec!["needs"]),
        (vec!["mount", s(&pod), "{"], vec!["invalid JSON"]),
        (vec!["mount", s(&pod), &unknown], vec!["nope"]),
        (vec!["unmount"], vec!["needs"]),
        (vec!["unmountdevice"], vec!["needs"]),
        (vec!["detach"], vec!["needs"]),
        (
            vec!["expandvolume", &unknown, s(&dmp), "x", "1"],
            vec!["new size"],
        ),
        (vec![], vec!["sub-command"]),
    ];
    for (args, words) in &cases {
        let r = flex(&h, args);
        r.failure(words);
        assert_eq!(r.code, 1);
    }
    let leaky = flex(
        &h,
        &[
            "attach",
            r#"{"volumeID":"bad1","kubernetes.io/secret/pw":"hunter2""#,
        ],
    );
    assert!(!leaky.failure(&["invalid JSON"]).contains("hunter2"));
    for args in [
        vec!["provision", r#"{"volumeID":"bad1"}"#],
        vec!["delete", "pv1"],
        vec!["getattachstatus"],
        vec!["INIT"],
    ] {
        let r = flex(&h, &args);
        assert_eq!(r.status(), "Not supported", "{args:?}: {}", r.v);
    }
    assert!(h.mounts().is_empty(), "{:?}", h.mounts());
    assert!(h.attached().is_empty(), "{:?}", h.attached());
    let ls = h.rexray(&["volume", "ls", "bad1", "-f", "json"]);
    let v: Value = serde_json::from_str(ls.ok()).unwrap();
    assert_eq!(v[0]["attachmentState"], 3, "{v}");
}

#[test]
fn flexrex_force_attach_takes_the_volume_from_another_node() {
    require_root!();
    let a = Home::new();
    create(&a, "fa1");
    a.rexray(&["volume", "attach", "fa1"]).ok();
    // Node B sees node A's volumes (in client mode: through A's controller).
    let b = Home::sharing_volumes_with(&a);
    let plain = opts("fa1", "pv-fa1", "rw");
    flex(&b, &["attach", &plain, "node2"]).failure(&["fa1", "another node", "forceAttach"]);
    assert_eq!(
        flex(&b, &["isattached", &plain, "node2"]).success()["attached"],
        false
    );
    let forced = json!({
        "volumeID": "fa1",
        "forceAttach": "true",
        "forceAttachDelay": "1",
        "kubernetes.io/pvOrVolumeName": "pv-fa1",
    })
    .to_string();
    let dev = flex(&b, &["attach", &forced, "node2"]).success()["device"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(is_attach_device(&dev), "{dev}");
    assert_eq!(
        flex(&b, &["isattached", &forced, "node2"]).success()["attached"],
        true
    );
    let ls = a.rexray(&["volume", "ls", "fa1", "-f", "json"]);
    let v: Value = serde_json::from_str(ls.ok()).unwrap();
    assert_eq!(v[0]["attachmentState"], 4, "node A lost it: {v}");
    flex(&b, &["detach", "pv-fa1", "node2"]).success();
    flex(&b, &["detach", "pv-fa1", "node2"]).success();
    // On Ceph node A keeps what it made here (rbd: fenced, its writes
    // fail; s3fs: S3 has no fencing) until it lets go itself.
    if test_driver() == TestDriver::Loop {
        assert!(a.attached().is_empty(), "{:?}", a.attached());
    }
}

#[test]
fn flexrex_panic_still_replies_and_crash_converges() {
    require_root!();
    let h = Home::new();
    create(&h, "pn1");
    let o = opts("pn1", "pv-pn1", "rw");
    let dmp = device_mount_path(&h, "pv-pn1");
    let dev = flex(&h, &["attach", &o, "n"]).success()["device"]
        .as_str()
        .unwrap()
        .to_string();
    // A panic inside the mount workflow: still one JSON reply, no stderr.
    let r = flex_env(
        &h,
        &["mountdevice", s(&dmp), &dev, &o],
        &[("FAILPOINTS", "volume::mount-after-attach=panic")],
    );
    r.failure(&["internal error"]);
    // Killed right after formatting (after mounting on s3fs, which
    // formats nothing): kubelet gets no reply and retries.
    let fp = if fires_for_driver("volume::mount-after-format") {
        "volume::mount-after-format=return"
    } else {
        "volume::mount-after-mount=return"
    };
    let mut c = h.command("flexrex");
    c.env_remove("PATH")
        .env("FAILPOINTS", fp)
        .args(["mountdevice", s(&dmp), &dev, &o]);
    let killed = run_cmd(&mut c);
    assert_ne!(killed.code, 0);
    assert_eq!(killed.stderr, "");
    flex(&h, &["mountdevice", s(&dmp), &dev, &o]).success();
    assert_eq!(count_mounts_at(&dmp), 1);
    flex(&h, &["unmountdevice", s(&dmp)]).success();
    flex(&h, &["detach", "pv-pn1", "n"]).success();
    assert!(h.mounts().is_empty() && h.attached().is_empty());
}

#[test]
fn flexrex_detach_releases_a_device_mount_lost_in_a_reboot() {
    require_root!();
    let h = Home::new();
    create(&h, "rb1");
    let o = opts("rb1", "pv-rb1", "rw");
    let dmp = device_mount_path(&h, "pv-rb1");
    let dev = flex(&h, &["attach", &o, "n"]).success()["device"]
        .as_str()
        .unwrap()
        .to_string();
    flex(&h, &["mountdevice", s(&dmp), &dev, &o]).success();
    // The bind vanishes behind kubelet's back; kubelet then skips
    // unmountdevice (the path is not mounted) and goes straight to detach.
    nix::mount::umount2(&dmp, nix::mount::MntFlags::empty()).unwrap();
    flex(&h, &["detach", "pv-rb1", "n"]).success();
    assert!(h.mounts().is_empty(), "{:?}", h.mounts());
    assert!(h.attached().is_empty(), "{:?}", h.attached());
}

fn rexray_flexrex(h: &Home, args: &[&str]) -> Out {
    let mut a = vec!["flexrex"];
    a.extend_from_slice(args);
    h.rexray(&a)
}

#[test]
fn rexray_flexrex_install_status_uninstall() {
    let h = Home::new();
    let p = h.dir.join("exec/rexray~flexrex/flexrex");
    let ps = s(&p);
    let st = rexray_flexrex(&h, &["status", "--path", ps]);
    assert_eq!(
        st.ok(),
        format!(
            "Path{}  Installed  Modified\n{ps}  false      false\n",
            " ".repeat(ps.len() - 4)
        )
    );
    let out = rexray_flexrex(&h, &["install", "--path", ps]);
    assert!(
        out.ok()
            .lines()
            .nth(1)
            .unwrap()
            .ends_with("  true       false"),
        "{out:?}"
    );
    assert_eq!(
        std::fs::read(&p).unwrap(),
        std::fs::read(bin("flexrex")).unwrap()
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
        0o755
    );
    assert!(!std::fs::symlink_metadata(&p)
        .unwrap()
        .file_type()
        .is_symlink());
    // Identical: installed, not modified.
    let out = rexray_flexrex(&h, &["install", "--path", ps, "-f", "json"]);
    let v: Value = serde_json::from_str(out.ok()).unwrap();
    assert_eq!(
        v,
        json!([{"path": ps, "installed": true, "modified": false}])
    );
    // The installed copy answers kubelet.
    let o = run_cmd(
        std::process::Command::new(&p)
            .arg("init")
            .env_clear()
            .env("REXRAY_HOME", &h.dir),
    );
    judge(&o, &["init"]).success();
    // A different file needs --force.
    std::fs::write(&p, b"#!/bin/sh\necho old\n").unwrap();
    let st = rexray_flexrex(&h, &["status", "--path", ps, "-f", "json"]);
    let v: Value = serde_json::from_str(st.ok()).unwrap();
    assert_eq!(v[0]["modified"], true);
    let e = rexray_flexrex(&h, &["install", "--path", ps]);
    let err = e.fails(1);
    assert!(err.contains(ps) && err.contains("--force"), "{err}");
    assert_eq!(e.stdout, "");
    assert_eq!(std::fs::read(&p).unwrap(), b"#!/bin/sh\necho old\n");
    let out = rexray_flexrex(&h, &["install", "--path", ps, "--force", "-f", "json"]);
    let v: Value = serde_json::from_str(out.ok()).unwrap();
    assert_eq!(
        v,
        json!([{"path": ps, "installed": true, "modified": true}])
    );
    assert_eq!(
        std::fs::read(&p).unwrap(),
        std::fs::read(bin("flexrex")).unwrap()
    );
    assert_eq!(
        std::fs::read_dir(p.parent().unwrap()).unwrap().count(),
        1,
        "no temp files left"
    );
    let out = rexray_flexrex(&h, &["uninstall", "--path", ps]);
    assert_eq!(out.ok(), format!("{ps}\n"));
    assert!(!p.exists());
    let out = rexray_flexrex(&h, &["uninstall", "--path", ps, "-f", "json"]);
    let v: Value = serde_json::from_str(out.ok()).unwrap();
    assert_eq!(v, json!([{"path": ps, "removed": false}]));
    rexray_flexrex(&h, &["install", "--path", "relative/flexrex"]).fails(1);
}

#[test]
fn flexrex_daemonset_installs_into_the_plugin_dir() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text =
        std::fs::read_to_string(root.join("packaging/kubernetes/flexrex-daemonset.yaml")).unwrap();
    let d: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    assert_eq!(d["kind"].as_str(), Some("DaemonSet"));
    let spec = &d["spec"]["template"]["spec"];
    assert_eq!(
        spec["volumes"][0]["hostPath"]["path"].as_str(),
        Some("/usr/libexec/kubernetes/kubelet-plugins/volume/exec")
    );
    let init = &spec["initContainers"][0];
    let cmd: Vec<&str> = init["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(&cmd[..3], &["/usr/bin/rexray", "flexrex", "install"]);
    let mount = init["volumeMounts"][0]["mountPath"].as_str().unwrap();
    let path = cmd[cmd.iter().position(|c| *c == "--path").unwrap() + 1];
    assert_eq!(path, format!("{mount}/rexray~flexrex/flexrex"));
    // kubelet finds the driver `rexray/flexrex` at <plugin dir>/rexray~flexrex/flexrex.
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(readme.contains("--enable-controller-attach-detach=false"));
    assert!(readme.contains("driver: rexray/flexrex"));
}

#[test]
fn flexrex_paths_are_found_from_records_and_the_kernel() {
    require_root!();
    let h = Home::new();
    create(&h, "pa1");
    create(&h, "pa2");
    set_up(&h, "pa1", "pv-pa1", "rw");
    let pod = pod_dir(&h, "pv-pa1");
    let dmp = device_mount_path(&h, "pv-pa1");

    // A path that holds pa1 is refused to pa2, and pa2 stays untouched.
    let other = pod_opts("pa2", "pv-pa2", "rw", "ext4");
    flex(&h, &["mount", s(&pod), &other]).failure(&["pa2", "another filesystem"]);
    flex(&h, &["mountdevice", s(&dmp), "/dev/null", &other]).failure(&["pa2"]);
    assert_eq!(h.attached().len(), 1, "pa2 must not be attached");
    assert_eq!(count_mounts_at(&pod), 1);

    // The pod's bind disappears before flexrex could release it (a crash
    // between the two steps): unmount still releases the pod's use, so
    // unmountdevice is the last user and unmounts the volume; kubelet's
    // attach keeps the device until its detach.
    nix::mount::umount2(&pod, nix::mount::MntFlags::empty()).unwrap();
    flex(&h, &["unmount", s(&pod)]).success();
    flex(&h, &["unmountdevice", s(&dmp)]).success();
    assert!(h.mounts().is_empty(), "{:?}", h.mounts());
    assert_eq!(h.attached().len(), 1, "attached until kubelet's detach");
    flex(&h, &["detach", "pv-pa1", "node1"]).success();
    assert!(h.attached().is_empty(), "{:?}", h.attached());

    // A mount flexrex did not make is not flexrex's to remove.
    let foreign = h.dir.join("foreign");
    mount_tmpfs(&foreign, "");
    flex(&h, &["unmount", s(&foreign)]).failure(&["did not mount it"]);
    assert_eq!(count_mounts_at(&foreign), 1);
}

#[test]
fn flexrex_older_argv_forms() {
    require_root!();
    if driver_na_on(
        &[TestDriver::S3fs],
        "Kubernetes 1.5's forms name the volume by its device (mount, detach); a bucket has none",
    ) {
        return;
    }
    let h = Home::new();
    create(&h, "old1");
    // Kubernetes 1.5: attach without a node, mount with the device and no
    // mountdevice, detach by device.
    let o = json!({"volumeID": "old1", "kubernetes.io/fsType": "xfs"}).to_string();
    // waitforattach of a volume attached nowhere (kubelet believes it
    // attached: after a forced detach, or state rebuilt after a reboot)
    // attaches it for kubelet; attach then returns the same device.
    let waited = flex(&h, &["waitforattach", "/dev/loop-unknown", &o]).success()["device"]
        .as_str()
        .unwrap()
        .to_string();
    let dev = flex(&h, &["attach", &o]).success()["device"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(waited, dev);
    assert_eq!(h.attached().len(), 1);
    let dir = pod_dir(&h, "old1");
    flex(&h, &["mount", s(&dir), &dev, &o]).success();
    flex(&h, &["mount", s(&dir), &dev, &o]).success();
    assert_eq!(count_mounts_at(&dir), 1);
    let fs = run_cmd(
        std::process::Command::new("findmnt")
            .args(["-n", "-o", "FSTYPE", "--mountpoint"])
            .arg(&dir),
    );
    assert_eq!(
        fs.stdout.trim(),
        mounted_fs("xfs"),
        "fsType from the options"
    );
    flex(&h, &["unmount", s(&dir)]).success();
    // The last user is gone: unmounted, still attached for kubelet.
    assert!(h.mounts().is_empty(), "{:?}", h.mounts());
    assert_eq!(h.attached().len(), 1);
    // Detach by device, as 1.5 did.
    flex(&h, &["detach", &dev]).success();
    assert!(h.attached().is_empty(), "{:?}", h.attached());
    flex(&h, &["detach", &dev]).success();
    flex(&h, &["detach", "never-attached", "node1"]).success();
    assert!(h.mounts().is_empty(), "{:?}", h.mounts());
    assert!(h.attached().is_empty(), "{:?}", h.attached());
}

#[test]
fn flexrex_force_attach_waits_for_the_other_node_to_let_go() {
    require_root!();
    let a = Home::new();
    create(&a, "fw1");
    a.rexray(&["volume", "attach", "fw1"]).ok();
    // Node B sees node A's volumes (in client mode: through A's controller).
    let b = Home::sharing_volumes_with(&a);
    let forced = json!({
        "volumeID": "fw1",
        "forceAttach": "true",
        "forceAttachDelay": "20",
        "kubernetes.io/pvOrVolumeName": "pv-fw1",
    })
    .to_string();
    let mut c = b.command("flexrex");
    c.env_remove("PATH").args(["attach", &forced, "node2"]);
    let waiting = std::thread::spawn(move || run_cmd(&mut c));
    // Node A lets go well before flexrex looks again (every 5 s). The pause
    // only makes it likely that flexrex saw the volume taken first; the
    // outcome is the same either way.
    std::thread::sleep(std::time::Duration::from_millis(500));
    a.rexray(&["volume", "detach", "fw1"]).ok();
    let o = waiting.join().unwrap();
    let r = judge(&o, &["attach"]);
    assert!(is_attach_device(r.success()["device"].as_str().unwrap()));
    let log = std::fs::read_to_string(b.dir.join("var/log/flexrex.log")).unwrap_or_default();
    assert!(
        !log.contains("taking the volume"),
        "attached after the wait, not by force: {log}"
    );
    flex(&b, &["detach", "pv-fw1", "node2"]).success();
    assert!(a.attached().is_empty(), "{:?}", a.attached());
}

#[test]
fn flexrex_attach_holds_the_device_until_kubelets_detach() {
    require_root!();
    let h = Home::new();
    create(&h, "ho1");
    let o = opts("ho1", "pv-ho1", "rw");
    let dev = flex(&h, &["attach", &o, "node1"]).success()["device"]
        .as_str()
        .unwrap()
        .to_string();
    // Another front-end mounts and unmounts the volume between kubelet's
    // attach and its waitforattach: its last unmount unmounts, but the
    // device stays attached for kubelet.
    h.rexray(&["volume", "mount", "ho1"]).ok();
    let u = h.rexray(&["volume", "unmount", "ho1"]);
    u.ok();
    assert!(
        u.stderr.contains("stays attached") && u.stderr.contains("flexrex:pv-ho1"),
        "{u:#?}"
    );
    assert!(h.mounts().is_empty(), "{:?}", h.mounts());
    assert_eq!(h.attached().len(), 1, "kubelet's attach keeps the device");
    assert_eq!(
        flex(&h, &["waitforattach", &dev, &o]).success()["device"],
        dev.as_str()
    );
    // An operator's detach and remove are refused while kubelet holds it,
    // naming who holds it.
    let d = h.rexray(&["volume", "detach", "ho1"]);
    assert_ne!(d.code, 0, "{d:#?}");
    assert!(d.stderr.contains("flexrex"), "{d:#?}");
    let r = h.rexray(&["volume", "rm", "ho1"]);
    assert_ne!(r.code, 0, "{r:#?}");
    assert!(r.stderr.contains("flexrex"), "{r:#?}");
    assert_eq!(h.attached().len(), 1);

    // kubelet uses it; a Docker-style user joins; kubelet lets go: the
    // volume stays mounted and attached for the other user, and kubelet's
    // detach fails (kubelet retries) rather than let kubelet believe the
    // volume free.
    let dmp = device_mount_path(&h, "pv-ho1");
    flex(&h, &["mountdevice", s(&dmp), &dev, &o]).success();
    h.rexray(&["volume", "mount", "ho1", "--consumer", "c1"])
        .ok();
    flex(&h, &["unmountdevice", s(&dmp)]).success();
    flex(&h, &["detach", "pv-ho1", "node1"]).failure(&["ho1", "1 other user"]);
    assert_eq!(count_mounts_at(&h.mount_point("ho1")), 1);
    assert_eq!(h.attached().len(), 1);
    // Its last unmount detaches (kubelet's hold is gone); kubelet's retry
    // then succeeds.
    h.rexray(&["volume", "unmount", "ho1", "--consumer", "c1"])
        .ok();
    assert!(h.mounts().is_empty(), "{:?}", h.mounts());
    assert!(h.attached().is_empty(), "{:?}", h.attached());
    flex(&h, &["detach", "pv-ho1", "node1"]).success();

    // Two PVs on the same volume hold it each: one detach keeps it for
    // the other.
    let o2 = opts("ho1", "pv-ho2", "rw");
    flex(&h, &["attach", &o, "node1"]).success();
    flex(&h, &["attach", &o2, "node1"]).success();
    flex(&h, &["detach", "pv-ho1", "node1"]).success();
    assert_eq!(h.attached().len(), 1, "still held for pv-ho2");
    let r = h.rexray(&["volume", "rm", "ho1"]);
    assert!(
        r.stderr.contains("pv-ho2") && r.stderr.contains("--force"),
        "{r:#?}"
    );

    // `volume detach --force` overrides kubelet's holds; kubelet's next
    // waitforattach (it still believes the volume attached) attaches again.
    h.rexray(&["volume", "detach", "ho1", "--force"]).ok();
    assert!(h.attached().is_empty(), "{:?}", h.attached());
    assert!(h
        .volumes()
        .mount_record(rexray::volume::VolumeRef::Name("ho1"))
        .unwrap()
        .is_none());
    let again = flex(&h, &["waitforattach", &dev, &o2]).success()["device"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(is_attach_device(&again), "{again}");
    assert_eq!(h.attached().len(), 1);
    flex(&h, &["detach", "pv-ho2", "node1"]).success();
    assert!(h.attached().is_empty(), "{:?}", h.attached());
    h.rexray(&["volume", "rm", "ho1"]).ok();
}

#[test]
fn flexrex_detach_waits_for_a_mountdevice_in_flight() {
    require_root!();
    let h = Home::new();
    create(&h, "if1");
    let o = opts("if1", "pv-if1", "rw");
    let dev = flex(&h, &["attach", &o, "node1"]).success()["device"]
        .as_str()
        .unwrap()
        .to_string();
    let dmp = device_mount_path(&h, "pv-if1");
    // A mountdevice that pauses between mounting the volume and binding
    // it onto kubelet's path; a detach for the same volume arrives then.
    let mut c = h.command("flexrex");
    c.env_remove("PATH")
        .env("FAILPOINTS", "flex::before-bind=sleep(3000)")
        .args(["mountdevice", s(&dmp), &dev, &o]);
    let args: Vec<String> = ["mountdevice", s(&dmp), &dev, &o]
        .iter()
        .map(|a| a.to_string())
        .collect();
    let mounting = std::thread::spawn(move || run_cmd(&mut c));
    let mp = h.mount_point("if1");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while count_mounts_at(&mp) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "mountdevice never mounted"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // The volume is mounted, the path not yet: detach must not take the
    // in-flight path for one lost in a reboot.
    assert_eq!(
        count_mounts_at(&dmp),
        0,
        "detach must come while the bind is pending"
    );
    let d = flex(&h, &["detach", "pv-if1", "node1"]);
    let m = judge(
        &mounting.join().unwrap(),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    m.success();
    // The path is in use after all: detach refuses (kubelet retries).
    d.failure(&["if1", "1 other user"]);
    assert_eq!(count_mounts_at(&dmp), 1, "kubelet's path is mounted");
    assert_eq!(count_mounts_at(&mp), 1);
    assert_eq!(h.attached().len(), 1);
    let who = format!("flex:{}", dmp.display());
    assert_eq!(
        h.volumes()
            .consumers(rexray::volume::VolumeRef::Name("if1"))
            .unwrap(),
        vec![who]
    );
    flex(&h, &["unmountdevice", s(&dmp)]).success();
    assert!(h.mounts().is_empty(), "{:?}", h.mounts());
    assert!(h.attached().is_empty(), "{:?}", h.attached());
}

/// kubelet's root reached through a link (`/var/lib/kubelet` on a bigger
/// disk): the kernel names its mounts where the link leads. A repeated
/// `mountdevice`/`mount` binds nothing more, and the unmounts really
/// unmount before they release the volume.
#[test]
fn kubelet_paths_behind_a_link_are_unmounted_for_real() {
    require_root!();
    let h = Home::new();
    let real = h.dir.join("disk").join("kubelet");
    std::fs::create_dir_all(&real).unwrap();
    let kube = h.dir.join("kube");
    std::os::unix::fs::symlink(&real, &kube).unwrap();
    h.rexray(&["volume", "create", "lnk", "--size", "1"]).ok();
    let o = opts("lnk", "pv-lnk", "rw");
    let dev = flex(&h, &["attach", &o, "node1"]).success()["device"]
        .as_str()
        .unwrap()
        .to_string();
    let dmp = kube.join("plugins").join("pv-lnk");
    let pod = kube.join("pods").join("uid1").join("pv-lnk");
    for _ in 0..2 {
        flex(&h, &["mountdevice", s(&dmp), &dev, &o]).success();
        flex(&h, &["mount", s(&pod), &o]).success();
    }
    let under_real = || mounts_under(&real);
    assert_eq!(under_real().len(), 2, "one mount each: {:?}", under_real());
    std::fs::write(pod.join("f"), "x").unwrap();
    flex(&h, &["unmount", s(&pod)]).success();
    flex(&h, &["unmountdevice", s(&dmp)]).success();
    assert!(under_real().is_empty(), "left mounted: {:?}", under_real());
    flex(&h, &["detach", "pv-lnk", "node1"]).success();
    assert!(h.mounts().is_empty() && h.loops().is_empty());
    h.rexray(&["volume", "rm", "lnk"]).ok();
}
