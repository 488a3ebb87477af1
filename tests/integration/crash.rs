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
