//! A hostile local user or a careless operator against the data-safety
//! and security fixes: each test is an attack that once worked.

use crate::common::*;
use crate::require_root;
#[cfg(feature = "failpoints")]
use serde_json::json;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

#[cfg(feature = "failpoints")]
fn flex_json(h: &Home, args: &[&str], env: &[(&str, &str)]) -> (Value, Out) {
    let mut c = h.command("flexrex");
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let o = run_cmd(&mut c);
    let v: Value = serde_json::from_str(o.stdout.trim())
        .unwrap_or_else(|e| panic!("flexrex {args:?}: not JSON ({e}): {o:#?}"));
    (v, o)
}

/// Someone who can write at a mounted volume's root (a container given the
/// root of a volume in the root layout, a pod whose path an earlier
/// release bound to the root) swaps `data` for a link to a host directory
/// between flexrex's check of `data` and its bind: the bind must not
/// follow it, or the pod gets the host's directory.
#[cfg(feature = "failpoints")]
#[test]
fn a_data_link_swapped_in_after_the_check_is_never_bound_for_kubelet() {
    require_root!();
    let h = Home::new();
    h.rexray(&["volume", "create", "v", "--size", "1"]).ok();
    let host = h.dir.join("host-dir");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("secret"), "host data").unwrap();
    let o = json!({
        "volumeID": "v",
        "kubernetes.io/fsType": "ext4",
        "kubernetes.io/readwrite": "rw",
        "kubernetes.io/pvOrVolumeName": "pv1",
    })
    .to_string();
    let (a, out) = flex_json(&h, &["attach", &o, "node1"], &[]);
    assert_eq!(a["status"], "Success", "{out:#?}");
    let dev = a["device"].as_str().unwrap().to_string();
    let dmp = h.dir.join("kubelet/mounts/pv1");
    // flexrex waits between its check of `data` and the bind, long enough
    // for the swap below (made once the check passed: the directory it
    // binds onto is made after it).
    let mut c = h.command("flexrex");
    c.args(["mountdevice", dmp.to_str().unwrap(), &dev, &o])
        .env("FAILPOINTS", "flex::before-bind=sleep(4000)");
    let call = std::thread::spawn(move || run_cmd(&mut c));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !dmp.exists() && !call.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mp = h.mount_point("v");
    std::fs::rename(mp.join("data"), mp.join("lost+found/real")).unwrap();
    std::os::unix::fs::symlink(&host, mp.join("data")).unwrap();
    let out = call.join().unwrap();
    let r: Value = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("mountdevice: not JSON ({e}): {out:#?}"));
    let leaked = dmp.join("secret").exists();
    // Undo the swap and let go of everything before judging.
    if count_mounts_at(&mp) > 0 {
        std::fs::remove_file(mp.join("data")).unwrap();
        std::fs::rename(mp.join("lost+found/real"), mp.join("data")).unwrap();
    }
    if count_mounts_at(&dmp) > 0 {
        let _ = nix::mount::umount2(&dmp, nix::mount::MntFlags::MNT_DETACH);
    }
    assert!(
        !leaked,
        "kubelet's path shows the host directory the link points to: {out:#?}"
    );
    assert_eq!(r["status"], "Failure", "{out:#?}");
    let m = r["message"].as_str().unwrap_or("");
    assert!(m.contains("symbolic link"), "{m}");
    // The refused mount is undone: nothing mounted, nothing attached
    // but kubelet's hold.
    assert_eq!(count_mounts_at(&dmp), 0);
    assert_eq!(count_mounts_at(&mp), 0, "the refused mount is undone");
    assert_eq!(
        h.loops().len(),
        1,
        "kubelet's attach still holds the device"
    );
    assert!(Path::new(&host.join("secret")).exists());
    let (d, out) = flex_json(&h, &["detach", "pv1", "node1"], &[]);
    assert_eq!(d["status"], "Success", "{out:#?}");
    assert!(h.loops().is_empty());
}

/// Write into `img` until the disk under it is full.
fn fill_through(img: &Path) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    let chunk = vec![0x5a_u8; 1 << 20];
    for _ in 0..256 {
        if f.write_all(&chunk).is_err() {
            return;
        }
    }
    panic!("{} never filled its disk", img.display());
}

/// The one image in `dir`.
fn image_in(dir: &Path) -> std::path::PathBuf {
    let imgs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "img"))
        .collect();
    assert_eq!(imgs.len(), 1, "{imgs:?}");
    imgs[0].clone()
}

/// A careless operator lets the disk under loop.volumePath fill up (the
/// volumes' writes did): removing a volume or a snapshot is how space is
/// freed, so it must not fail for want of space to rewrite the catalog
/// (deleting images by hand instead is how the wrong one goes).
#[test]
fn a_full_disk_still_lets_volumes_and_snapshots_be_removed() {
    require_root!();
    let h = Home::new();
    let small = h.dir.join("small");
    mount_tmpfs(&small, "size=16m");
    h.config(&format!("loop:\n  volumePath: {}/loop\n", small.display()));
    h.rexray(&["volume", "create", "v", "--size", "1"]).ok();
    h.rexray(&["snapshot", "create", "v", "s"]).ok();

    fill_through(&image_in(&small.join("loop/snapshots")));
    let o = h.rexray(&["snapshot", "rm", "s"]);
    assert_eq!(o.code, 0, "snapshot rm on a full disk: {o:#?}");
    let ls = h.rexray(&["snapshot", "ls", "-f", "json"]);
    let ls: Value = serde_json::from_str(ls.ok()).unwrap();
    assert_eq!(ls.as_array().map(Vec::len), Some(0), "{ls}");
    assert!(std::fs::read_dir(small.join("loop/snapshots"))
        .unwrap()
        .next()
        .is_none());

    let img = image_in(&small.join("loop"));
    fill_through(&img);
    let o = h.rexray(&["volume", "rm", "v"]);
    assert_eq!(o.code, 0, "volume rm on a full disk: {o:#?}");
    assert!(h.rexray(&["volume", "ls", "-q"]).ok().trim().is_empty());
    assert!(!img.exists());
}

/// A careless operator points `REXRAY_HOME` at a directory another user
/// made first (under `/tmp`, say): that user owns the state directory
/// and could swap mount records, images or mount points under root. Root
/// must refuse it before making anything there.
#[test]
fn a_state_directory_another_user_owns_is_refused() {
    require_root!();
    let h = Home::new();
    let lib = h.lib();
    std::fs::create_dir_all(&lib).unwrap();
    let nobody = nix::unistd::Uid::from_raw(65534);
    nix::unistd::chown(&lib, Some(nobody), None).unwrap();
    let o = h.rexray(&["volume", "create", "v", "--size", "1"]);
    assert_eq!(o.code, 1, "{o:#?}");
    assert!(
        o.stderr
            .contains(&format!("{} is owned by uid 65534", lib.display())),
        "{o:#?}"
    );
    assert!(
        std::fs::read_dir(&lib).unwrap().next().is_none(),
        "nothing made"
    );
    // Above the state directory too: its owner can rename it away.
    nix::unistd::chown(&lib, Some(nix::unistd::Uid::from_raw(0)), None).unwrap();
    nix::unistd::chown(&h.dir.join("var"), Some(nobody), None).unwrap();
    let o = h.rexray(&["volume", "ls"]);
    assert_eq!(o.code, 1, "{o:#?}");
    assert!(o.stderr.contains("owned by uid 65534"), "{o:#?}");
    nix::unistd::chown(
        &h.dir.join("var"),
        Some(nix::unistd::Uid::from_raw(0)),
        None,
    )
    .unwrap();
    h.rexray(&["volume", "create", "v", "--size", "1"]).ok();
}

/// Clients that send a request's headers at once and then trickle its
/// body hold the Docker endpoint's connections as if busy: at the
/// connection cap every new connection (dockerd's) was refused until the
/// body timeout, and a client that reconnects kept it so. A request whose
/// body is not in yet is still waiting to be sent, and is closed to make
/// room like one stalled in its headers.
#[test]
fn clients_trickling_bodies_do_not_lock_dockerd_out() {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    require_root!();
    let h = Home::new();
    let sock = h.dir.join("p.sock");
    let log = std::fs::File::create(h.dir.join("service.log")).unwrap();
    let mut child = h
        .command("rexray")
        .args(["service", "start"])
        .env(
            "REXRAY_MODULES_DEFAULT_DOCKER_HOST",
            format!("unix://{}", sock.display()),
        )
        .env("REXRAY_MODULES_DEFAULT_DOCKER_MAXCONNECTIONS", "8")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let url = h.dir.join("var/run/rexray.url");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !url.exists() && Instant::now() < deadline && child.try_wait().unwrap().is_none() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let served = (|| {
        let mut slow = Vec::new();
        for _ in 0..8 {
            let mut s = UnixStream::connect(&sock).ok()?;
            s.write_all(
                b"POST /VolumeDriver.List HTTP/1.1\r\nHost: p\r\nContent-Length: 1000\r\n\r\n{",
            )
            .ok()?;
            slow.push(s);
        }
        // Let the service read their headers (the request starts).
        std::thread::sleep(Duration::from_millis(500));
        let mut s = UnixStream::connect(&sock).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(
            b"POST /VolumeDriver.List HTTP/1.1\r\nHost: p\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
        )
        .ok()?;
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        drop(slow);
        Some(reply)
    })();
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let reply = served.unwrap_or_default();
    assert!(
        reply.starts_with("HTTP/1.1 200") && reply.contains("\"Volumes\""),
        "a List on a new connection was not served: {reply:?}; log: {}",
        std::fs::read_to_string(h.dir.join("service.log")).unwrap_or_default()
    );
}

/// A script that appends `--volumename` to a command line that already
/// has one (a careless operator's wrapper): the last one won, so
/// `remove` removed another volume than the first name says. Two
/// different names (or drivers) are refused, and nothing is removed.
#[test]
fn dvdcli_refuses_two_different_volume_names() {
    require_root!();
    let h = Home::new();
    for v in ["a", "b"] {
        h.rexray(&["volume", "create", v, "--size", "1"]).ok();
    }
    for args in [
        &[
            "remove",
            "--volumedriver=rexray",
            "--volumename=a",
            "--volumename=b",
        ][..],
        &[
            "remove",
            "--volumedriver=rexray",
            "--volumename=a",
            "--VolumeName",
            "b",
        ],
        &[
            "remove",
            "--volumedriver=rexray",
            "--volumename=b",
            "--volumedriver=other",
        ],
    ] {
        let o = h.run("dvdcli", args);
        assert_eq!(o.code, 2, "{args:?}: {o:#?}");
        assert!(o.stderr.contains("given twice"), "{o:#?}");
    }
    let ls = h.rexray(&["volume", "ls", "-q"]);
    assert_eq!(ls.ok().lines().count(), 2, "nothing removed: {ls:#?}");
    // The same name twice is one name.
    let o = h.run(
        "dvdcli",
        &[
            "get",
            "--volumedriver=rexray",
            "--volumename=a",
            "--volumename=a",
        ],
    );
    assert_eq!(o.ok().trim(), "a");
}
