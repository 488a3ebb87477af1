//! The crash matrix: `kill -9` (SIGKILL from a failpoint) at every step
//! boundary of create, mount, unmount and remove, then the same operation
//! again: it must converge to exactly one mount, one loop device, the right
//! consumer records, intact data, and no stale lock.

use crate::common::*;
use crate::require_root;

fn with_fp(h: &Home, fp: &str, args: &[&str]) -> Out {
    run_cmd(
        h.command("rexray")
            .env("FAILPOINTS", format!("{fp}=return"))
            .args(args),
    )
}

fn killed(o: &Out, fp: &str) {
    assert_eq!(
        o.code, -1,
        "{fp}: expected the process to die by SIGKILL: {o:#?}"
    );
}

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

const MOUNT_POINTS: &[&str] = &[
    "loop::attach-before-bind",
    "loop::attach-after-bind",
    "volume::mount-after-attach",
    "volume::mount-after-wait",
    "node::before-mkfs",
    "node::after-mkfs",
    "volume::mount-after-format",
    "volume::mount-after-mount",
    "volume::mount-after-record",
];

#[test]
fn crash_matrix_mount() {
    require_root!();
    for fp in MOUNT_POINTS {
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
    for fp in [
        "volume::create-before-driver",
        "loop::create-after-image",
        "volume::create-after-driver",
    ] {
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

fn fs_bytes(p: &std::path::Path) -> u64 {
    let st = nix::sys::statvfs::statvfs(p).unwrap();
    st.blocks() as u64 * st.fragment_size() as u64
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

#[test]
fn crash_matrix_snapshot() {
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
        h.rexray(&["volume", "unmount", "v"]).ok();
        killed(&with_fp(&h, fp, &["snapshot", "create", "v", "s1"]), fp);
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
        row(
            "snapshot",
            fp,
            "next snapshot: exactly one snapshot, partial copies swept, volume data intact",
        );
    }
}

#[test]
fn crash_matrix_copy() {
    use crate::docker::{post, Service};
    require_root!();
    for fp in [
        "volume::copy-while-frozen",
        "loop::copy-after-clone",
        "loop::copy-after-rename",
        "volume::copy-after-driver",
    ] {
        let h = Home::new();
        let sock = h.dir.join("plugin.sock");
        let host = format!("unix://{}", sock.display());
        h.rexray(&["volume", "create", "v", "--size", "1"]).ok();
        h.rexray(&["volume", "mount", "v"]).ok();
        std::fs::write(h.data("v").join("token"), fp).unwrap();
        h.rexray(&["volume", "unmount", "v"]).ok();
        let body = r#"{"Name":"c","Opts":{"volumeName":"v"}}"#;
        let mut svc = Service::start(&h, &host, &[("FAILPOINTS", &format!("{fp}=return"))]);
        let s2 = sock.clone();
        // The reply never comes: the service dies mid-request.
        let t = std::thread::spawn(move || {
            let mut s = std::os::unix::net::UnixStream::connect(&s2).unwrap();
            use std::io::{Read, Write};
            let _ = write!(
                s,
                "POST /VolumeDriver.Create HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf);
        });
        svc.wait_exit();
        t.join().unwrap();
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
    use crate::docker::{random_hex, sigkill, Dockerd, HostDirs, Service};
    use crate::require_root;
    use std::path::PathBuf;
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
        let name = format!("rexraytest-{}", random_hex());
        let sock = PathBuf::from(format!("/run/docker/plugins/{name}.sock"));
        let host = format!("unix://{}", sock.display());
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
        let consumers = home.volumes().consumers("kv").unwrap();
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
        assert!(home.volumes().consumers("kv").unwrap().is_empty());
        d.docker(&["volume", "rm", "kv"]).ok();
        drop(d);
        drop(svc);
        println!(
            "| Docker service | `kill -9` during dockerd's Mount (`volume::mount-after-format=sleep`) | restart; {how}; container started: 1 mount, 1 loop device, 1 consumer; after `docker rm -f`: nothing left |"
        );
    }
}
