//! Freezes that survive a group kill, and copies that get a filesystem of
//! their own: a snapshot killed with its whole process group (as
//! `timeout`, cron and CI kill) never leaves its source frozen, and a copy
//! or a volume made from a snapshot mounts beside its source with a fresh
//! filesystem UUID.

use crate::common::*;
use crate::require_root;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Whether a file can be created in `dir` within `bound`. The write runs
/// in a child process, so a frozen filesystem blocks that child and not
/// the test; when it does not finish, the filesystem is thawed by hand so
/// that no freeze outlives a failed test.
fn write_completes(dir: &Path, mount_point: &Path, bound: Duration) -> bool {
    let mut child = Command::new("sh")
        .args(["-c", "echo x > \"$1\"", "sh"])
        .arg(dir.join("probe"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + bound;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.success();
        }
        if Instant::now() > deadline {
            let _ = Command::new("fsfreeze").arg("-u").arg(mount_point).status();
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The processes holding `path` itself open (a freeze guard holds the
/// mount point it guards).
fn holders(path: &Path) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        if fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l == path))
        {
            out.push(pid);
        }
    }
    out
}

/// `rexray snapshot create` as the leader of its own process group, killed
/// with the whole group (SIGKILL) at varying moments, over and over: after
/// every kill the source takes writes (it is not frozen) and no freeze
/// guard is left behind.
#[test]
fn a_group_kill_never_leaves_the_source_frozen() {
    require_root!();
    let h = Home::new();
    h.rexray(&["volume", "create", "v", "--size", "1"]).ok();
    h.rexray(&["volume", "mount", "v"]).ok();
    let mp = h.mount_point("v");
    let data = h.data("v");
    std::fs::write(data.join("token"), "t").unwrap();
    // How long a whole snapshot takes here: the kills are spread over it,
    // most of them around the freeze.
    let t0 = Instant::now();
    h.rexray(&["snapshot", "create", "v", "first"]).ok();
    let whole = t0.elapsed().max(Duration::from_millis(5));
    let start = Instant::now();
    let mut runs = 0;
    let mut snapshots = 0;
    for i in 0..300u32 {
        if start.elapsed() > Duration::from_secs(60) && runs >= 150 {
            break;
        }
        // A spread of delays over the whole run, in a fixed order.
        let frac = f64::from((i * 7919) % 1000) / 1000.0;
        let delay = whole.mul_f64(frac);
        let mut child = h
            .command("rexray")
            .args(["snapshot", "create", "v", &format!("s{i}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
        std::thread::sleep(delay);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let status = child.wait().unwrap();
        if status.success() {
            snapshots += 1;
        }
        runs += 1;
        assert!(
            write_completes(&data, &mp, Duration::from_secs(20)),
            "run {i} (killed after {delay:?}): the source stayed frozen"
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = holders(&mp);
            if left.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "run {i}: processes {left:?} still hold the mount point"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    println!("{runs} group kills, {snapshots} snapshots finished first");
    assert_eq!(std::fs::read_to_string(data.join("token")).unwrap(), "t");
    h.rexray(&["volume", "unmount", "v"]).ok();
    assert!(h.mounts().is_empty() && h.loops().is_empty());
}

/// The device mounted at `mp` (from mountinfo).
fn device_of(mp: &Path) -> String {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for l in text.lines() {
        let f: Vec<&str> = l.split(' ').collect();
        if f.get(4).map(Path::new) == Some(mp) {
            let dash = f.iter().position(|x| *x == "-").unwrap();
            return f[dash + 2].to_string();
        }
    }
    panic!("nothing mounted at {}", mp.display());
}

/// `blkid -p -s UUID -o value DEV`: the UUID in the superblock itself.
fn uuid_of(dev: &str) -> String {
    let o = Command::new("blkid")
        .args(["-p", "-s", "UUID", "-o", "value", dev])
        .output()
        .unwrap();
    let u = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(!u.is_empty(), "no UUID on {dev}: {o:?}");
    u
}

/// A mounted volume `v` of filesystem `fs` holding a token, and the
/// socket of a service to send Docker's Create requests to (see
/// [`unix_host`]).
fn source(h: &Home, fs: &str) -> (String, PathBuf) {
    h.rexray(&["volume", "create", "v", "--size", "1", "--fsType", fs])
        .ok();
    h.rexray(&["volume", "mount", "v"]).ok();
    std::fs::write(h.data("v").join("token"), fs).unwrap();
    unix_host(h)
}

/// A copy of a mounted volume and a volume made from its snapshot, each
/// mounted beside the source (all three at once): same data, three
/// filesystem UUIDs. XFS refused the second before ("duplicate UUID");
/// ext4 mounted it with the source's UUID.
#[test]
fn copies_and_restored_volumes_mount_beside_their_source() {
    use crate::docker::{post, Service};
    require_root!();
    for fs in ["xfs", "ext4"] {
        let h = Home::new();
        let (host, sock) = source(&h, fs);
        let svc = Service::start(&h, &host, &[]);
        h.rexray(&["snapshot", "create", "v", "s"]).ok();
        for (name, opts) in [
            ("c", r#"{"volumeName":"v"}"#),
            ("r", r#"{"snapshotName":"s"}"#),
        ] {
            let r = post(
                &sock,
                "/VolumeDriver.Create",
                &format!(r#"{{"Name":"{name}","Opts":{opts}}}"#),
            );
            assert_eq!(r.0, 200, "{fs} {name}: {r:?}");
        }
        let log = svc.log_text();
        assert_eq!(
            log.matches("filesystem has a UUID of its own").count(),
            2,
            "{fs}: {log}"
        );
        assert!(
            !log.contains("keeps its source's filesystem UUID"),
            "{fs}: {log}"
        );
        // Written after the snapshot and the copy: only the source has it.
        std::fs::write(h.data("v").join("later"), "l").unwrap();
        for name in ["c", "r"] {
            let m = h.rexray(&["volume", "mount", name]);
            assert_eq!(m.code, 0, "{fs}: {name} mounts beside its source: {m:#?}");
            assert!(!m.stderr.contains("nouuid"), "{fs} {name}: {m:#?}");
            assert_eq!(
                std::fs::read_to_string(h.data(name).join("token")).unwrap(),
                fs,
                "{fs} {name}: the source's data"
            );
            assert!(!h.data(name).join("later").exists(), "{fs} {name}");
        }
        let uuids: Vec<String> = ["v", "c", "r"]
            .iter()
            .map(|n| uuid_of(&device_of(&h.mount_point(n))))
            .collect();
        assert!(
            uuids[0] != uuids[1] && uuids[0] != uuids[2] && uuids[1] != uuids[2],
            "{fs}: {uuids:?}"
        );
        // Both copies take writes.
        for name in ["c", "r"] {
            std::fs::write(h.data(name).join("own"), name).unwrap();
            h.rexray(&["volume", "unmount", name]).ok();
        }
        h.rexray(&["volume", "unmount", "v"]).ok();
        assert!(h.mounts().is_empty() && h.loops().is_empty(), "{fs}");
    }
}

/// A filesystem the kernel refuses (its superblock says it has no
/// inodes; blkid still sees ext4): the mount fails, and the error quotes
/// the kernel's reason, not only "Invalid argument".
#[test]
fn a_failed_mount_says_what_the_kernel_said() {
    require_root!();
    let h = Home::new();
    h.rexray(&["volume", "create", "v", "--size", "1"]).ok();
    h.rexray(&["volume", "mount", "v"]).ok();
    h.rexray(&["volume", "unmount", "v"]).ok();
    let img = std::fs::read_dir(h.lib().join("loop"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "img"))
        .unwrap();
    let o = Command::new("debugfs")
        .args(["-w", "-R", "ssv inodes_count 0"])
        .arg(&img)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let m = h.rexray(&["volume", "mount", "v"]);
    let err = m.fails(1);
    assert!(err.contains("Invalid argument"), "{m:#?}");
    assert!(
        err.contains("the kernel said") && err.contains("inodes count not valid"),
        "{m:#?}"
    );
    assert!(h.mounts().is_empty() && h.loops().is_empty(), "{m:#?}");
}

/// Kills and refusals at the new step, with failpoints.
#[cfg(feature = "failpoints")]
mod crash {
    use super::*;
    use crate::docker::{post, Service};

    fn files_ending(dir: &Path, suffix: &str) -> usize {
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(suffix))
                    .count()
            })
            .unwrap_or(0)
    }

    /// The service killed while a copy (or a volume from a snapshot) of a
    /// mounted volume gets its fresh UUID, or right after, before it is
    /// published: the source is not left frozen, nothing half-prepared is
    /// published, and dockerd's retry makes exactly one volume, which
    /// mounts beside its source with a UUID of its own.
    #[test]
    fn crash_matrix_uuid() {
        require_root!();
        for (fs, fp) in [
            ("xfs", "node::uuid-after-replay"),
            ("xfs", "loop::copy-after-prepare"),
            ("ext4", "loop::copy-after-prepare"),
        ] {
            for (name, opts) in [
                ("c", r#"{"volumeName":"v"}"#),
                ("r", r#"{"snapshotName":"s"}"#),
            ] {
                let h = Home::new();
                let (host, sock) = source(&h, fs);
                h.rexray(&["snapshot", "create", "v", "s"]).ok();
                let mut svc = Service::start(&h, &host, &[("FAILPOINTS", &format!("{fp}=return"))]);
                svc.post_while_dying(
                    &sock,
                    "/VolumeDriver.Create",
                    &format!(r#"{{"Name":"{name}","Opts":{opts}}}"#),
                );
                let at = format!("{fs} {name} killed at {fp}");
                assert!(
                    write_completes(&h.data("v"), &h.mount_point("v"), Duration::from_secs(20)),
                    "{at}: the source stayed frozen"
                );
                let ls = h.rexray(&["volume", "ls", "-q"]);
                assert_eq!(
                    ls.ok().lines().count(),
                    1,
                    "{at}: nothing published: {ls:#?}"
                );
                let svc = Service::start(&h, &host, &[]);
                let r = post(
                    &sock,
                    "/VolumeDriver.Create",
                    &format!(r#"{{"Name":"{name}","Opts":{opts}}}"#),
                );
                assert_eq!(r.0, 200, "{at}: {r:?} {}", svc.log_text());
                let ls = h.rexray(&["volume", "ls", "-q"]);
                assert_eq!(ls.ok().lines().count(), 2, "{at}: {ls:#?}");
                let loopdir = h.lib().join("loop");
                assert_eq!(files_ending(&loopdir, ".copying"), 0, "{at}: swept");
                assert_eq!(files_ending(&loopdir, ".img"), 2, "{at}");
                let m = h.rexray(&["volume", "mount", name]);
                assert_eq!(m.code, 0, "{at}: {m:#?}");
                assert_eq!(
                    std::fs::read_to_string(h.data(name).join("token")).unwrap(),
                    fs,
                    "{at}"
                );
                assert_ne!(
                    uuid_of(&device_of(&h.mount_point("v"))),
                    uuid_of(&device_of(&h.mount_point(name))),
                    "{at}"
                );
                h.rexray(&["volume", "unmount", name]).ok();
                h.rexray(&["volume", "unmount", "v"]).ok();
                drop(svc);
                assert!(h.mounts().is_empty() && h.loops().is_empty(), "{at}");
            }
        }
    }

    /// A copy whose UUID cannot be changed is still made (the log says
    /// so), and an XFS one mounts beside its source with `nouuid`.
    #[test]
    fn a_copy_that_keeps_its_uuid_mounts_with_nouuid() {
        require_root!();
        let h = Home::new();
        let (host, sock) = source(&h, "xfs");
        let svc = Service::start(&h, &host, &[("FAILPOINTS", "node::uuid-refused=return")]);
        // An fsType asked for a copy does not change what it records: it
        // holds its source's filesystem.
        let r = post(
            &sock,
            "/VolumeDriver.Create",
            r#"{"Name":"c","Opts":{"volumeName":"v","fsType":"ext4"}}"#,
        );
        assert_eq!(r.0, 200, "{r:?}");
        let copy = h
            .volumes()
            .lookup(rexray::volume::VolumeRef::Name("c"))
            .unwrap()
            .unwrap();
        assert_eq!(copy.fields.get("fsType").map(String::as_str), Some("xfs"));
        let log = svc.log_text();
        assert!(
            log.contains("keeps its source's filesystem UUID") && log.contains("xfs_admin refused"),
            "{log}"
        );
        let m = h.rexray(&["volume", "mount", "c"]);
        assert_eq!(m.code, 0, "{m:#?}");
        assert!(m.stderr.contains("nouuid"), "said so: {m:#?}");
        assert_eq!(
            std::fs::read_to_string(h.data("c").join("token")).unwrap(),
            "xfs"
        );
        assert_eq!(
            uuid_of(&device_of(&h.mount_point("v"))),
            uuid_of(&device_of(&h.mount_point("c")))
        );
        std::fs::write(h.data("c").join("own"), "c").unwrap();
        h.rexray(&["volume", "unmount", "c"]).ok();
        h.rexray(&["volume", "unmount", "v"]).ok();
        assert!(h.mounts().is_empty() && h.loops().is_empty());
    }
}
