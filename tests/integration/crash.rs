//! The crash matrix: `kill -9` (SIGKILL from a failpoint) at every step
//! boundary of create, mount, unmount and remove, then the same operation
//! again: it must converge to exactly one mount, one loop device, the right
//! consumer records, intact data, and no stale lock.

use crate::common::*;
use crate::require_root;

fn image_count(h: &Home) -> usize {
    std::fs::read_dir(h.lib().join("loop"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".img"))
        .count()
}

fn consumers(h: &Home) -> Vec<String> {
    let d = h.lib().join("mounts");
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).unwrap().flatten() {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap();
        for c in v["consumers"].as_array().unwrap() {
            out.push(c.as_str().unwrap().to_string());
        }
    }
    out
}

/// One row of the printed matrix.
fn row(op: &str, fp: &str, outcome: &str) {
    println!("| {op} | `{fp}` | {outcome} |");
}

#[test]
fn crash_matrix_mount() {
    require_root!();
    for fp in MOUNT_FAILPOINTS {
        let h = Home::new();
        h.rexray(&["volume", "create", "v", "--size", "1"]).ok();
        // First mount of a blank volume dies at the failpoint ...
        killed(&with_fp(&h, fp, &["volume", "mount", "v"]), fp);
        // ... and the next mount finishes the job.
        h.rexray(&["volume", "mount", "v"]).ok();
        assert_eq!(count_mounts_at(&h.mount_point("v")), 1, "{fp}");
        assert_eq!(h.loops().len(), 1, "{fp}");
        assert_eq!(consumers(&h), vec!["anonymous"], "{fp}");
        std::fs::write(h.data("v").join("token"), fp).unwrap();
        // A crash on a remount must not touch the data either.
        h.rexray(&["volume", "unmount", "v"]).ok();
        let o = with_fp(&h, fp, &["volume", "mount", "v"]);
        let hit = o.code == -1;
        h.rexray(&["volume", "mount", "v"]).ok();
        assert_eq!(count_mounts_at(&h.mount_point("v")), 1, "{fp}");
        assert_eq!(h.loops().len(), 1, "{fp}");
        assert_eq!(
            std::fs::read_to_string(h.data("v").join("token")).unwrap(),
            *fp
        );
        h.rexray(&["volume", "unmount", "v"]).ok();
        assert!(h.mounts().is_empty() && h.loops().is_empty(), "{fp}");
        h.rexray(&["volume", "rm", "v"]).ok();
        row(
            "mount",
            fp,
            if hit {
                "killed on first and on re-mount; next mount: 1 mount, 1 loop device, data intact"
            } else {
                "killed on first mount (not on the path of a re-mount); next mount: 1 mount, 1 loop device, data intact"
            },
        );
    }
}

#[test]
fn crash_matrix_unmount() {
    require_root!();
    for fp in [
        "volume::unmount-after-record",
        "volume::unmount-after-unmount",
        "loop::detach-after-clear",
        "volume::unmount-after-detach",
    ] {
        let h = Home::new();
        h.rexray(&["volume", "create", "v", "--size", "1"]).ok();
        h.rexray(&["volume", "mount", "v"]).ok();
        std::fs::write(h.data("v").join("token"), fp).unwrap();
        killed(&with_fp(&h, fp, &["volume", "unmount", "v"]), fp);
        h.rexray(&["volume", "unmount", "v"]).ok();
        assert!(h.mounts().is_empty(), "{fp}: {:?}", h.mounts());
        assert!(h.loops().is_empty(), "{fp}: {:?}", h.loops());
        assert!(consumers(&h).is_empty(), "{fp}");
        h.rexray(&["volume", "mount", "v"]).ok();
        assert_eq!(
            std::fs::read_to_string(h.data("v").join("token")).unwrap(),
            fp
        );
        h.rexray(&["volume", "unmount", "v"]).ok();
        h.rexray(&["volume", "rm", "v"]).ok();
        row(
            "unmount",
            fp,
            "next unmount: nothing mounted, loop device freed, no record; data intact",
        );
    }
}

#[test]
fn crash_matrix_create_and_remove() {
    require_root!();
    for &fp in CREATE_FAILPOINTS {
        let h = Home::new();
        killed(
            &with_fp(&h, fp, &["volume", "create", "v", "--size", "1"]),
            fp,
        );
        let again = h.rexray(&["volume", "create", "v", "--size", "1"]);
        assert!(
            again.code == 0 || again.stderr.contains("already exists"),
            "{fp}: {again:#?}"
        );
        let ls = h.rexray(&["volume", "ls", "-q"]);
        assert_eq!(
            ls.ok().lines().filter(|l| l.contains(" v ")).count(),
            1,
            "{fp}"
        );
        // A crashed create may leave one unlisted image; the next create sweeps it.
        h.rexray(&["volume", "create", "w", "--size", "1"]).ok();
        assert_eq!(image_count(&h), 2, "{fp}");
        row(
            "create",
            fp,
            "next create: exactly one volume v; a half-made image is swept",
        );
    }
    for fp in [
        "volume::remove-before-driver",
        "loop::remove-after-catalog",
        "volume::remove-after-driver",
    ] {
        let h = Home::new();
        h.rexray(&["volume", "create", "v", "--size", "1"]).ok();
        h.rexray(&["volume", "mount", "v"]).ok();
        h.rexray(&["volume", "unmount", "v"]).ok();
        killed(&with_fp(&h, fp, &["volume", "rm", "v"]), fp);
        let again = h.rexray(&["volume", "rm", "v"]);
        assert!(
            again.code == 0 || again.stderr.contains("not found"),
            "{fp}: {again:#?}"
        );
        assert!(h.rexray(&["volume", "ls", "-q"]).ok().is_empty(), "{fp}");
        h.rexray(&["volume", "create", "w", "--size", "1"]).ok();
        assert_eq!(
            image_count(&h),
            1,
            "{fp}: the removed volume's image is gone"
        );
        assert!(h.mounts().is_empty() && h.loops().is_empty());
        row(
            "remove",
            fp,
            "next remove (or not-found): volume gone, image swept, nothing mounted",
        );
    }
}

/// Files in `dir` whose names end with `suffix`.
fn files_ending(dir: &std::path::Path, suffix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(suffix))
        .collect()
}

fn volume_size(h: &Home, name: &str) -> u64 {
    let v: serde_json::Value =
        serde_json::from_str(h.rexray(&["volume", "ls", name, "-f", "json"]).ok()).unwrap();
    v[0]["size"].as_u64().unwrap_or_else(|| panic!("{v}"))
}

#[test]
fn crash_matrix_resize() {
    require_root!();
    const GIB: u64 = 1 << 30;
    for fp in [
        "loop::resize-after-image",
        "loop::resize-after-capacity",
        "volume::resize-after-driver",
        "volume::resize-after-fs",
    ] {
        let h = Home::new();
        h.rexray(&["volume", "create", "v", "--size", "1"]).ok();
        // xfs: growing a mounted ext4 needs CAP_SYS_RESOURCE, which a
        // container may lack.
        h.rexray(&["volume", "mount", "v", "--fsType", "xfs"]).ok();
        std::fs::write(h.data("v").join("token"), fp).unwrap();
        let before = fs_bytes(&h.data("v"));
        let opts = serde_json::json!({ "volumeID": "v" }).to_string();
        let mp = h.mount_point("v");
        let mp = mp.to_str().unwrap();
        let (two, one) = ((2 * GIB).to_string(), GIB.to_string());
        let argv = ["expandvolume", opts.as_str(), mp, &two, &one];
        killed(
            &run_cmd(
                h.command("flexrex")
                    .env("FAILPOINTS", format!("{fp}=return"))
                    .args(argv),
            ),
            fp,
        );
        // kubelet retries the same call: it finishes the job.
        let again = h.run("flexrex", &argv);
        assert_eq!(again.code, 0, "{fp}: {again:#?}");
        let reply: serde_json::Value = serde_json::from_str(again.stdout.trim()).unwrap();
        assert_eq!(reply["volumeNewSize"], 2 * GIB, "{fp}: {reply}");
        assert_eq!(volume_size(&h, "v"), 2, "{fp}");
        assert!(
            fs_bytes(&h.data("v")) > before + (700 << 20),
            "{fp}: filesystem not grown"
        );
        assert_eq!(count_mounts_at(&h.mount_point("v")), 1, "{fp}");
        assert_eq!(h.loops().len(), 1, "{fp}");
        assert_eq!(consumers(&h), vec!["anonymous"], "{fp}");
        assert_eq!(
            std::fs::read_to_string(h.data("v").join("token")).unwrap(),
            fp
        );
        h.rexray(&["volume", "unmount", "v"]).ok();
        assert!(h.mounts().is_empty() && h.loops().is_empty(), "{fp}");
        row(
            "resize",
            fp,
            "retried expandvolume: volume 2 GiB in the catalog, filesystem grown, 1 mount, 1 loop device, data intact",
        );
    }
}

/// How many snapshots `rexray snapshot ls` lists.
fn snapshot_count(h: &Home) -> usize {
    let ls: serde_json::Value =
        serde_json::from_str(h.rexray(&["snapshot", "ls", "-f", "json"]).ok()).unwrap();
    ls.as_array().unwrap().len()
}

/// `fsfreeze FLAG MOUNT_POINT`: whether it succeeded.
fn fsfreeze(mp: &std::path::Path, flag: &str) -> bool {
    std::process::Command::new("fsfreeze")
        .arg(flag)
        .arg(mp)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// Write to a volume from another thread, bounded: a frozen filesystem
/// blocks the writer, so a write that never returns means "still frozen"
/// (thawed by hand then, so no frozen filesystem outlives a failed test).
fn writable(h: &Home, name: &str, what: &str) -> bool {
    let (tx, rx) = std::sync::mpsc::channel();
    let f = h.data(name).join("after");
    let what = what.to_string();
    std::thread::spawn(move || {
        let _ = tx.send(std::fs::write(&f, what).and_then(|_| std::fs::File::open(&f)?.sync_all()));
    });
    match rx.recv_timeout(std::time::Duration::from_secs(30)) {
        Ok(r) => r.is_ok(),
        Err(_) => {
            let _ = std::process::Command::new("fsfreeze")
                .arg("-u")
                .arg(h.mount_point(name))
                .status();
            false
        }
    }
}

#[test]
fn crash_matrix_snapshot() {
    snapshot_matrix(false);
}

#[test]
fn crash_matrix_snapshot_of_a_mounted_volume() {
    snapshot_matrix(true);
}

/// A snapshot killed at each failpoint, of an unmounted volume or of a
/// mounted one (then frozen for the copy).
fn snapshot_matrix(mounted: bool) {
    require_root!();
    for fp in [
        "volume::snapshot-while-frozen",
        "loop::snapshot-after-clone",
        "loop::snapshot-after-rename",
    ] {
        let h = Home::new();
        h.rexray(&["volume", "create", "v", "--size", "1"]).ok();
        h.rexray(&["volume", "mount", "v"]).ok();
        std::fs::write(h.data("v").join("token"), fp).unwrap();
        if !mounted {
            h.rexray(&["volume", "unmount", "v"]).ok();
        }
        killed(&with_fp(&h, fp, &["snapshot", "create", "v", "s1"]), fp);
        if mounted {
            // Killed while the filesystem is frozen for the copy: its
            // guard thaws it at once, with no rexray command run since.
            assert!(writable(&h, "v", fp), "{fp}: the filesystem stayed frozen");
            assert_eq!(consumers(&h), vec!["anonymous"], "{fp}");
            h.rexray(&["volume", "unmount", "v"]).ok();
        }
        h.rexray(&["snapshot", "create", "v", "s1"]).ok();
        let ls: serde_json::Value =
            serde_json::from_str(h.rexray(&["snapshot", "ls", "-f", "json"]).ok()).unwrap();
        assert_eq!(ls.as_array().unwrap().len(), 1, "{fp}: {ls}");
        let snaps = h.lib().join("loop").join("snapshots");
        assert_eq!(files_ending(&snaps, ".img").len(), 1, "{fp}: swept");
        assert!(files_ending(&snaps, ".copying").is_empty(), "{fp}");
        assert!(h.mounts().is_empty() && h.loops().is_empty(), "{fp}");
        // The volume is untouched and still usable.
        h.rexray(&["volume", "mount", "v"]).ok();
        assert_eq!(
            std::fs::read_to_string(h.data("v").join("token")).unwrap(),
            fp
        );
        h.rexray(&["volume", "unmount", "v"]).ok();
        if mounted {
            row(
                "snapshot of a mounted volume",
                fp,
                "killed while frozen: thawed at once by its guard (writes go through before any other command); next snapshot: exactly one",
            );
        } else {
            row(
                "snapshot",
                fp,
                "next snapshot: exactly one snapshot, partial copies swept, volume data intact",
            );
        }
    }
}

#[test]
fn a_freeze_that_outlasts_its_bound_discards_the_snapshot() {
    require_root!();
    let h = Home::new();
    h.config("rexray:\n  freezeTimeout: 1s\n");
    h.rexray(&["volume", "create", "v", "--size", "1"]).ok();
    h.rexray(&["volume", "mount", "v"]).ok();
    std::fs::write(h.data("v").join("token"), "t").unwrap();
    // The copy takes longer than the bound: the guard thaws the
    // filesystem and the snapshot, no longer taken from a frozen
    // filesystem, is discarded before it is published (a kill right after
    // publishing, at loop::snapshot-after-rename, is never reached).
    let o = run_cmd(
        h.command("rexray")
            .args(["snapshot", "create", "v", "s1"])
            .env(
                "FAILPOINTS",
                "volume::snapshot-while-frozen=sleep(3000);loop::snapshot-after-rename=return",
            ),
    );
    assert_eq!(o.code, 1, "an error, not a kill after publishing: {o:#?}");
    assert!(o.stderr.contains("rexray.freezeTimeout"), "{o:#?}");
    assert!(o.stdout.is_empty(), "{o:#?}");
    assert_eq!(snapshot_count(&h), 0);
    assert!(files_ending(&h.lib().join("loop").join("snapshots"), ".img").is_empty());
    assert!(writable(&h, "v", "w"), "thawed");
    // Within the bound, the same snapshot succeeds.
    h.rexray(&["snapshot", "create", "v", "s1"]).ok();
    h.rexray(&["volume", "unmount", "v"]).ok();
}

#[test]
fn a_copy_that_outlasts_the_freeze_bound_is_discarded() {
    use crate::docker::{post, Service};
    require_root!();
    let h = Home::new();
    h.config("rexray:\n  freezeTimeout: 1s\n");
    h.rexray(&["volume", "create", "v", "--size", "1"]).ok();
    h.rexray(&["volume", "mount", "v"]).ok();
    let (host, sock) = unix_host(&h);
    let _svc = Service::start(
        &h,
        &host,
        &[("FAILPOINTS", "volume::copy-while-frozen=sleep(3000)")],
    );
    let (code, body) = post(
        &sock,
        "/VolumeDriver.Create",
        r#"{"Name":"c","Opts":{"volumeName":"v"}}"#,
    );
    assert_eq!(code, 500, "{body}");
    assert!(
        body["Err"]
            .as_str()
            .unwrap_or("")
            .contains("rexray.freezeTimeout"),
        "{body}"
    );
    let ls = h.rexray(&["volume", "ls", "-q"]);
    assert_eq!(ls.ok().lines().count(), 1, "no torn copy: {ls:#?}");
    assert_eq!(image_count(&h), 1);
    assert!(writable(&h, "v", "w"), "thawed");
    h.rexray(&["volume", "unmount", "v"]).ok();
}

#[test]
fn a_thaw_by_someone_else_discards_the_snapshot() {
    require_root!();
    let h = Home::new();
    h.rexray(&["volume", "create", "v", "--size", "1"]).ok();
    h.rexray(&["volume", "mount", "v"]).ok();
    let mut c = h.command("rexray");
    c.env("FAILPOINTS", "volume::snapshot-while-frozen=sleep(5000)")
        .args(["snapshot", "create", "v", "s1"]);
    let snap = std::thread::spawn(move || run_cmd(&mut c));
    // An operator's `fsfreeze -u` while the copy runs: it succeeds once
    // the snapshot has frozen the filesystem.
    let mp = h.mount_point("v");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let ok = fsfreeze(&mp, "-u");
        if ok || snap.is_finished() || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let o = snap.join().unwrap();
    assert_ne!(
        o.code, 0,
        "a copy no longer frozen must not be kept: {o:#?}"
    );
    assert!(o.stderr.contains("thawed by something else"), "{o:#?}");
    assert_eq!(snapshot_count(&h), 0);
    h.rexray(&["volume", "unmount", "v"]).ok();
}

/// `rexray snapshot create v s1` held `ms` at the frozen failpoint, in
/// the background; with the PID of the freeze guard it forked.
fn snapshot_in_background(h: &Home, ms: u32) -> (std::thread::JoinHandle<Out>, i32) {
    let child = h
        .command("rexray")
        .env(
            "FAILPOINTS",
            format!("volume::snapshot-while-frozen=sleep({ms})"),
        )
        .args(["snapshot", "create", "v", "s1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let snap = std::thread::spawn(move || {
        let o = child.wait_with_output().unwrap();
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    });
    let children = format!("/proc/{pid}/task/{pid}/children");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let guard = loop {
        let c = std::fs::read_to_string(&children).unwrap_or_default();
        if let Some(g) = c.split_whitespace().next() {
            break g.parse::<i32>().unwrap();
        }
        assert!(std::time::Instant::now() < deadline && !snap.is_finished());
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    (snap, guard)
}

/// The bound passes, the guard thaws, and another freezer (a backup
/// agent, say) freezes the filesystem before the copy ends: the snapshot
/// is torn and discarded, and the other freeze is left alone.
#[test]
fn a_freeze_by_someone_else_after_the_bound_is_left_alone() {
    require_root!();
    let h = Home::new();
    h.config("rexray:\n  freezeTimeout: 1s\n");
    h.rexray(&["volume", "create", "v", "--size", "1"]).ok();
    h.rexray(&["volume", "mount", "v"]).ok();
    let (snap, _guard) = snapshot_in_background(&h, 6000);
    let mp = h.mount_point("v");
    let fsfreeze = |flag: &str| fsfreeze(&mp, flag);
    // The guard is forked right before the freeze; the bound (1 s) passes
    // well before the copy (6 s) ends.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let ours = fsfreeze("-f");
    let o = snap.join().unwrap();
    let still_frozen = ours && !fsfreeze("-f");
    if ours {
        fsfreeze("-u");
    }
    assert!(ours, "the guard did not thaw at the bound: {o:#?}");
    assert_ne!(o.code, 0, "{o:#?}");
    assert!(o.stderr.contains("rexray.freezeTimeout"), "{o:#?}");
    assert!(still_frozen, "the other freeze was undone");
    assert_eq!(snapshot_count(&h), 0);
    assert!(writable(&h, "v", "w"));
    h.rexray(&["volume", "unmount", "v"]).ok();
}

/// The guard itself is killed while the snapshot copies: nothing can say
/// the filesystem stayed frozen, so the snapshot is not published, and the
/// freezer thaws (a guard that died proves nothing).
#[test]
fn a_killed_guard_discards_the_snapshot_and_thaws() {
    require_root!();
    let h = Home::new();
    h.rexray(&["volume", "create", "v", "--size", "1"]).ok();
    h.rexray(&["volume", "mount", "v"]).ok();
    let (snap, guard) = snapshot_in_background(&h, 2000);
    // Let the freeze begin (either moment must end the same way), then
    // kill only the guard this test's snapshot forked, by PID.
    std::thread::sleep(std::time::Duration::from_millis(300));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(guard),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let o = snap.join().unwrap();
    let stderr = &o.stderr;
    assert_eq!(o.code, 1, "{stderr}");
    assert!(
        stderr.contains("lost its freeze guard") || stderr.contains("freeze guard of"),
        "{stderr}"
    );
    assert_eq!(snapshot_count(&h), 0);
    assert!(writable(&h, "v", "w"), "thawed by the freezer");
    h.rexray(&["volume", "unmount", "v"]).ok();
}

/// A parent that ignores SIGCHLD passes that on: the kernel then reaps
/// children at once. mkfs is still waited for, and a freeze guard that
/// timed out is still noticed.
#[test]
fn an_inherited_ignored_sigchld_changes_nothing() {
    use std::os::unix::process::CommandExt;
    require_root!();
    let h = Home::new();
    h.config("rexray:\n  freezeTimeout: 1s\n");
    h.rexray(&["volume", "create", "v", "--size", "1"]).ok();
    let ignoring = |args: &[&str], fp: Option<&str>| {
        let mut c = h.command("rexray");
        c.args(args);
        if let Some(fp) = fp {
            c.env("FAILPOINTS", fp);
        }
        // SAFETY: only sets a signal disposition between fork and exec.
        unsafe {
            c.pre_exec(|| {
                libc::signal(libc::SIGCHLD, libc::SIG_IGN);
                Ok(())
            });
        }
        run_cmd(&mut c)
    };
    let m = ignoring(&["volume", "mount", "v"], None);
    assert_eq!(m.code, 0, "{m:#?}");
    let s = ignoring(
        &["snapshot", "create", "v", "s1"],
        Some("volume::snapshot-while-frozen=sleep(3000)"),
    );
    assert_ne!(s.code, 0, "{s:#?}");
    assert!(s.stderr.contains("rexray.freezeTimeout"), "{s:#?}");
    assert!(writable(&h, "v", "w"));
    h.rexray(&["volume", "unmount", "v"]).ok();
}

/// flexrex, killed as kubelet's calls run: a reply is never read, kubelet
/// repeats the call, and the node converges.
mod flexrex {
    use super::*;
    use serde_json::{json, Value};

    fn flex(h: &Home, fp: Option<&str>, args: &[&str]) -> (i32, Value) {
        let mut c = h.command("flexrex");
        c.env_remove("PATH").args(args);
        if let Some(fp) = fp {
            c.env("FAILPOINTS", format!("{fp}=return"));
        }
        let o = run_cmd(&mut c);
        assert_eq!(o.stderr, "", "{args:?}: {o:#?}");
        let v = if o.code == -1 {
            Value::Null
        } else {
            serde_json::from_str(o.stdout.trim()).unwrap_or(Value::Null)
        };
        (o.code, v)
    }

    #[track_caller]
    fn ok(h: &Home, args: &[&str]) -> Value {
        let (code, v) = flex(h, None, args);
        assert_eq!(
            (code, v["status"].as_str()),
            (0, Some("Success")),
            "{args:?}: {v}"
        );
        v
    }

    struct Kubelet {
        opts: String,
        dmp: std::path::PathBuf,
    }

    impl Kubelet {
        fn new(h: &Home) -> Kubelet {
            Kubelet {
                opts: json!({
                    "volumeID": "v",
                    "kubernetes.io/fsType": "ext4",
                    "kubernetes.io/readwrite": "rw",
                    "kubernetes.io/pvOrVolumeName": "pv-v",
                })
                .to_string(),
                dmp: h.dir.join("kubelet/plugins/mounts/pv-v"),
            }
        }
        fn attach(&self, h: &Home, fp: Option<&str>) -> (i32, Value) {
            flex(h, fp, &["attach", &self.opts, "node1"])
        }
        fn mountdevice(&self, h: &Home, fp: Option<&str>) -> (i32, Value) {
            let dmp = self.dmp.to_str().unwrap();
            flex(h, fp, &["mountdevice", dmp, "/dev/unused", &self.opts])
        }
        fn unmountdevice(&self, h: &Home, fp: Option<&str>) -> (i32, Value) {
            flex(h, fp, &["unmountdevice", self.dmp.to_str().unwrap()])
        }
        fn detach(&self, h: &Home, fp: Option<&str>) -> (i32, Value) {
            flex(h, fp, &["detach", "pv-v", "node1"])
        }
        fn consumer(&self) -> String {
            format!("flex:{}", self.dmp.display())
        }
    }

    fn holds(h: &Home) -> Vec<String> {
        h.volumes()
            .mount_record(rexray::volume::VolumeRef::Name("v"))
            .unwrap()
            .map(|r| r.holds.into_iter().collect())
            .unwrap_or_default()
    }

    /// The state after kubelet's attach and mountdevice: one loop device,
    /// the volume mounted once and bound once onto kubelet's path, one
    /// consumer, kubelet's hold.
    fn set_up(h: &Home, k: &Kubelet, fp: &str) {
        assert_eq!(h.loops().len(), 1, "{fp}");
        assert_eq!(count_mounts_at(&h.mount_point("v")), 1, "{fp}");
        assert_eq!(count_mounts_at(&k.dmp), 1, "{fp}");
        assert_eq!(consumers(h), vec![k.consumer()], "{fp}");
        assert_eq!(holds(h), vec!["flexrex:pv-v"], "{fp}");
    }

    fn torn_down(h: &Home, fp: &str) {
        assert!(h.mounts().is_empty(), "{fp}: {:?}", h.mounts());
        assert!(h.loops().is_empty(), "{fp}: {:?}", h.loops());
        assert!(
            h.volumes()
                .mount_record(rexray::volume::VolumeRef::Name("v"))
                .unwrap()
                .is_none(),
            "{fp}"
        );
    }

    fn killed_flex(r: (i32, Value), fp: &str) {
        assert_eq!(r.0, -1, "{fp}: expected SIGKILL, got {r:?}");
    }

    #[test]
    fn crash_matrix_flexrex() {
        require_root!();
        let attach = [
            "loop::attach-before-bind",
            "loop::attach-after-bind",
            "volume::attach-before-hold",
        ];
        // After kubelet's attach, mountdevice finds the device attached.
        let mut mountdevice: Vec<&str> = MOUNT_FAILPOINTS
            .iter()
            .copied()
            .filter(|p| !p.starts_with("loop::attach"))
            .collect();
        mountdevice.extend(["flex::before-bind", "flex::after-bind"]);
        let unmountdevice = [
            "volume::unmount-after-record",
            "volume::unmount-after-unmount",
        ];
        let detach = [
            "volume::unmount-after-record",
            "volume::unmount-after-unmount",
            "loop::detach-after-clear",
            "volume::unmount-after-detach",
        ];
        let steps: [(&str, &[&str]); 4] = [
            ("attach", &attach),
            ("mountdevice", &mountdevice),
            ("unmountdevice", &unmountdevice),
            ("detach", &detach),
        ];
        for (step, fps) in steps {
            for fp in fps {
                let h = Home::new();
                h.rexray(&["volume", "create", "v", "--size", "1"]).ok();
                let k = Kubelet::new(&h);
                let fp_at = |s: &str| (s == step).then_some(*fp);
                // Each call is killed once at its failpoint, then kubelet
                // repeats it.
                if step == "attach" {
                    killed_flex(k.attach(&h, fp_at("attach")), fp);
                }
                let (code, a) = k.attach(&h, None);
                assert_eq!(code, 0, "{fp}: {a}");
                if step == "mountdevice" {
                    let r = k.mountdevice(&h, fp_at("mountdevice"));
                    // A blank volume's first mount passes every point.
                    killed_flex(r, fp);
                }
                assert_eq!(k.mountdevice(&h, None).0, 0, "{fp}");
                set_up(&h, &k, fp);
                std::fs::write(k.dmp.join("token"), fp).unwrap();
                if step == "unmountdevice" {
                    killed_flex(k.unmountdevice(&h, fp_at("unmountdevice")), fp);
                    assert_eq!(h.loops().len(), 1, "{fp}: kubelet's hold keeps it");
                }
                assert_eq!(k.unmountdevice(&h, None).0, 0, "{fp}");
                assert_eq!(count_mounts_at(&k.dmp), 0, "{fp}");
                assert!(consumers(&h).is_empty(), "{fp}");
                // Killed between dropping the consumer and unmounting, the
                // volume's own mount is left without a user; the repeated
                // call finds the volume by the PV name that ends kubelet's
                // path, and unmounts it.
                assert!(h.mounts().is_empty(), "{fp}: {:?}", h.mounts());
                assert_eq!(h.loops().len(), 1, "{fp}: attached until detach");
                if step == "detach" {
                    killed_flex(k.detach(&h, fp_at("detach")), fp);
                }
                assert_eq!(k.detach(&h, None).0, 0, "{fp}");
                torn_down(&h, fp);
                // The data survived: a new cycle finds it.
                ok(&h, &["attach", &k.opts, "node1"]);
                assert_eq!(k.mountdevice(&h, None).0, 0);
                assert_eq!(std::fs::read_to_string(k.dmp.join("token")).unwrap(), *fp);
                ok(&h, &["unmountdevice", k.dmp.to_str().unwrap()]);
                ok(&h, &["detach", "pv-v", "node1"]);
                torn_down(&h, fp);
                let outcome = match step {
                    "attach" | "mountdevice" => "kubelet repeats the call: 1 loop device, 1 mount + 1 bind, 1 consumer, kubelet's hold; after unmountdevice + detach nothing is left; data intact",
                    "unmountdevice" => "repeated unmountdevice: nothing mounted, no consumer, device still attached for kubelet; detach: nothing left; data intact",
                    _ => "repeated detach: nothing mounted, loop device freed, no record; data intact",
                };
                row(&format!("flexrex {step}"), fp, outcome);
            }
        }
    }

    /// Killed after binding kubelet's path but before recording it; then
    /// `rexray service start` cleans up the volume's mount no one holds;
    /// kubelet's repeated mountdevice must still succeed (the path holds
    /// the volume's own filesystem, not a foreign one).
    #[test]
    fn mountdevice_killed_then_service_start_then_retried() {
        use crate::docker::Service;
        require_root!();
        let h = Home::new();
        h.rexray(&["volume", "create", "v", "--size", "1"]).ok();
        let k = Kubelet::new(&h);
        assert_eq!(k.attach(&h, None).0, 0);
        killed_flex(
            k.mountdevice(&h, Some("flex::after-bind")),
            "flex::after-bind",
        );
        let (host, _) = unix_host(&h);
        let svc = Service::start(&h, &host, &[]);
        drop(svc);
        assert_eq!(
            count_mounts_at(&h.mount_point("v")),
            0,
            "cleaned up at start"
        );
        assert_eq!(
            count_mounts_at(&k.dmp),
            1,
            "kubelet's bind is not ours to remove"
        );
        assert_eq!(h.loops().len(), 1, "kubelet's hold keeps the device");
        let (code, v) = k.mountdevice(&h, None);
        assert_eq!(code, 0, "{v}");
        set_up(&h, &k, "retry");
        assert_eq!(k.unmountdevice(&h, None).0, 0);
        assert_eq!(k.detach(&h, None).0, 0);
        torn_down(&h, "retry");
    }
}

#[test]
fn crash_matrix_copy() {
    use crate::docker::{post, Service};
    require_root!();
    for fp in [
        "volume::copy-while-frozen",
        "loop::copy-after-clone",
        "loop::copy-after-prepare",
        "loop::copy-after-rename",
        "volume::copy-after-driver",
    ] {
        let h = Home::new();
        let (host, sock) = unix_host(&h);
        h.rexray(&["volume", "create", "v", "--size", "1"]).ok();
        h.rexray(&["volume", "mount", "v"]).ok();
        std::fs::write(h.data("v").join("token"), fp).unwrap();
        h.rexray(&["volume", "unmount", "v"]).ok();
        let body = r#"{"Name":"c","Opts":{"volumeName":"v"}}"#;
        let mut svc = Service::start(&h, &host, &[("FAILPOINTS", &format!("{fp}=return"))]);
        // The reply never comes: the service dies mid-request.
        svc.post_while_dying(&sock, "/VolumeDriver.Create", body);
        // dockerd retries the Create after the restart.
        let svc = Service::start(&h, &host, &[]);
        let r = post(&sock, "/VolumeDriver.Create", body);
        assert_eq!(r.0, 200, "{fp}: {r:?} {}", svc.log_text());
        let ls = h.rexray(&["volume", "ls", "-q"]);
        let names: Vec<&str> = ls
            .ok()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .collect();
        assert_eq!(names.len(), 2, "{fp}: {names:?}");
        assert_eq!(image_count(&h), 2, "{fp}: orphan image swept");
        assert!(
            files_ending(&h.lib().join("loop"), ".copying").is_empty(),
            "{fp}: partial copy swept"
        );
        let r = post(&sock, "/VolumeDriver.Mount", r#"{"Name":"c","ID":"x"}"#);
        assert_eq!(r.0, 200, "{fp}: {r:?}");
        assert_eq!(
            std::fs::read_to_string(h.data("c").join("token")).unwrap(),
            fp,
            "the copy holds the source's data"
        );
        assert_eq!(
            post(&sock, "/VolumeDriver.Unmount", r#"{"Name":"c","ID":"x"}"#).0,
            200
        );
        assert!(h.mounts().is_empty() && h.loops().is_empty(), "{fp}");
        drop(svc);
        row(
            "copy (Docker Create volumeName)",
            fp,
            "service restarted, Create retried: exactly one copy with the source's data, partial copies and orphan images swept",
        );
    }
}

/// Named `crash::docker::…` so that scripts/test.sh runs it with the other
/// real-dockerd tests, alone.
mod docker {
    use crate::common::*;
    use crate::docker::{plugin_socket, sigkill, Dockerd, HostDirs, Service};
    use crate::require_root;
    use std::time::{Duration, Instant};

    /// `kill -9` of the service while a real dockerd's Mount request is in
    /// flight (held at a failpoint after the format), then a restart:
    /// dockerd retries (or `docker start` again), the container starts,
    /// and exactly one mount, one loop device and one consumer exist.
    #[test]
    fn service_killed_mid_mount_from_a_real_dockerd() {
        require_root!();
        if !crate::docker::Dockerd::usable() {
            return;
        }
        let _dirs = HostDirs::snapshot();
        let (name, host, _) = plugin_socket();
        let home = Home::new();
        let mut svc = Service::start(
            &home,
            &host,
            &[("FAILPOINTS", "volume::mount-after-format=sleep(60000)")],
        );
        let d = std::sync::Arc::new(Dockerd::start(&name));
        d.docker(&["volume", "create", "-d", &name, "kv"]).ok();
        let (d2, n2) = (d.clone(), name.clone());
        let run = std::thread::spawn(move || {
            d2.docker(&[
                "run",
                "-d",
                "--name",
                "c1",
                "--network",
                "none",
                "--volume-driver",
                &n2,
                "-v",
                "kv:/data",
                &d2.image,
                "sh",
                "-c",
                "echo ok > /data/f; sleep 600",
            ])
        });
        // The Mount is under way: attached and formatted, held at the failpoint.
        let deadline = Instant::now() + Duration::from_secs(120);
        while home.loops().is_empty() {
            assert!(Instant::now() < deadline, "{}", svc.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(500));
        sigkill(svc.pid());
        svc.wait_exit();
        let svc = Service::start(&home, &host, &[]);
        let first = run.join().unwrap();
        let how = if first.code == 0 {
            "dockerd retried the Mount"
        } else {
            d.docker(&["start", "c1"]).ok();
            "docker start again"
        };
        // The container runs with the volume.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !home.data("kv").join("f").exists() {
            assert!(Instant::now() < deadline, "{first:#?} {}", svc.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(count_mounts_at(&home.mount_point("kv")), 1);
        assert_eq!(home.loops().len(), 1);
        let consumers = home
            .volumes()
            .consumers(rexray::volume::VolumeRef::Name("kv"))
            .unwrap();
        assert_eq!(
            consumers.len(),
            1,
            "exactly the container's mount: {consumers:?}"
        );
        d.docker(&["rm", "-f", "c1"]).ok();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !home.mounts().is_empty() {
            assert!(Instant::now() < deadline, "{:?}", home.mounts());
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(home.loops().is_empty(), "{:?}", home.loops());
        assert!(home
            .volumes()
            .consumers(rexray::volume::VolumeRef::Name("kv"))
            .unwrap()
            .is_empty());
        d.docker(&["volume", "rm", "kv"]).ok();
        drop(d);
        drop(svc);
        println!(
            "| Docker service | `kill -9` during dockerd's Mount (`volume::mount-after-format=sleep`) | restart; {how}; container started: 1 mount, 1 loop device, 1 consumer; after `docker rm -f`: nothing left |"
        );
    }
}
