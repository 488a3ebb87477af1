//! The loop driver's catalog (`catalog.db`): the import of an earlier
//! release's `catalog.json`, exactly once; the marker earlier releases
//! refuse; kills in the middle of a transaction; and a damaged, locked or
//! full catalog, each named with its fix, losing nothing.

use crate::common::*;
use crate::require_root;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const MARKER: &str =
    "{\"volumes\":\"moved to catalog.db by a newer rexray; downgrade is not supported\"}\n";

fn loop_dir(h: &Home) -> PathBuf {
    h.lib().join("loop")
}

/// An earlier release's volumePath: `catalog.json` with `n` volumes
/// (`old0`, `old1`, ...) and one snapshot, and their sparse images.
fn earlier_release(h: &Home, n: usize) -> Vec<String> {
    let dir = loop_dir(h);
    std::fs::create_dir_all(dir.join("snapshots")).unwrap();
    let mut vols = Vec::new();
    let mut ids = Vec::new();
    for i in 0..n {
        let id = format!("00000000000000{i:02x}");
        let img = std::fs::File::create(dir.join(format!("{id}.img"))).unwrap();
        img.set_len(1 << 30).unwrap();
        vols.push(serde_json::json!({
            "id": id, "name": format!("old{i}"), "size": 1, "type": "",
            "iops": 0, "availabilityZone": "", "createdAt": "2024-01-01T00:00:00Z",
            "fields": {"fsType": "ext4"}
        }));
        ids.push(id);
    }
    let sid = "5000000000000000";
    std::fs::File::create(dir.join("snapshots").join(format!("{sid}.img")))
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let cat = serde_json::json!({
        "volumes": vols,
        "snapshots": [{"id": sid, "name": "snap0", "volumeID": ids[0], "volumeSize": 1}]
    });
    std::fs::write(dir.join("catalog.json"), cat.to_string()).unwrap();
    ids
}

/// Every file under `dir` with its size (images are never touched by a
/// failed command).
fn images(dir: &Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for sub in [dir.to_path_buf(), dir.join("snapshots")] {
        for e in std::fs::read_dir(&sub).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".img") {
                out.insert(name, e.metadata().unwrap().len());
            }
        }
    }
    out
}

#[cfg(feature = "failpoints")]
fn fp(h: &Home, fp: &str, args: &[&str]) -> Out {
    run_cmd(h.command("rexray").env("FAILPOINTS", fp).args(args))
}

/// An earlier release's catalog is imported on first use, once, with a
/// message; catalog.json becomes a marker that the earlier parser (a list
/// of records under `volumes`) refuses, and is never removed.
#[test]
fn an_earlier_catalog_is_imported_once_and_left_as_a_marker() {
    require_root!();
    let h = Home::new();
    earlier_release(&h, 3);
    let before = images(&loop_dir(&h));
    let first = h.rexray(&["volume", "ls"]);
    first.ok();
    assert!(
        first.stderr.contains("imported 3 volumes and 1 snapshots")
            && first.stderr.contains("catalog.db"),
        "{first:#?}"
    );
    assert_eq!(h.volume_names(), ["old0", "old1", "old2"]);
    let json = loop_dir(&h).join("catalog.json");
    let marker = std::fs::read_to_string(&json).unwrap();
    assert_eq!(marker, MARKER);
    // The shape earlier releases parse refuses it.
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Earlier {
        volumes: Vec<serde_json::Value>,
    }
    assert!(serde_json::from_str::<Earlier>(&marker).is_err());
    // Exactly once: a removed volume stays removed, nothing is said again.
    h.rexray(&["volume", "rm", "old1"]).ok();
    let again = h.rexray(&["volume", "ls"]);
    again.ok();
    assert!(!again.stderr.contains("imported"), "{again:#?}");
    assert_eq!(h.volume_names(), ["old0", "old2"]);
    let o = h.rexray(&["snapshot", "ls", "--format", "json"]);
    assert!(o.ok().contains("snap0"), "{o:#?}");
    let mut want = before.clone();
    want.remove("0000000000000001.img");
    assert_eq!(images(&loop_dir(&h)), want, "the images are kept");
    // A lost catalog.db is refused by name, never taken for an empty one
    // (which would make every image an orphan).
    std::fs::remove_file(loop_dir(&h).join("catalog.db")).unwrap();
    for f in ["catalog.db-wal", "catalog.db-shm"] {
        let _ = std::fs::remove_file(loop_dir(&h).join(f));
    }
    let o = h.rexray(&["volume", "ls"]);
    let e = o.fails(1);
    assert!(e.contains("catalog.db") && e.contains("restore"), "{o:#?}");
    assert_eq!(images(&loop_dir(&h)), want, "the images are kept");
}

/// Several processes starting at once on an earlier catalog import it
/// exactly once.
#[test]
fn a_concurrent_first_use_imports_once() {
    require_root!();
    let h = Home::new();
    earlier_release(&h, 5);
    let kids: Vec<_> = (0..4)
        .map(|_| {
            h.command("rexray")
                .args(["volume", "ls", "-q"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut said = 0;
    for k in kids {
        let o = k.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{err}");
        said += err.matches("imported 5 volumes").count();
    }
    assert_eq!(said, 1, "imported exactly once");
    assert_eq!(h.volume_names().len(), 5);
}

/// A kill inside the import (before its commit, or after it and before
/// the marker) leaves the earlier catalog or the finished import: the
/// next call completes it, once.
#[cfg(feature = "failpoints")]
#[test]
fn a_killed_import_is_redone_or_finished() {
    require_root!();
    for point in [
        "loop::catalog-import-before-commit",
        "loop::catalog-import-before-marker",
    ] {
        let h = Home::new();
        earlier_release(&h, 2);
        let before = images(&loop_dir(&h));
        let o = fp(&h, &format!("{point}=return"), &["volume", "ls"]);
        assert_eq!(o.code, -1, "{point}: not killed: {o:#?}");
        let json = std::fs::read_to_string(loop_dir(&h).join("catalog.json")).unwrap();
        assert_ne!(json, MARKER, "{point}: the marker comes last");
        assert_eq!(h.volume_names(), ["old0", "old1"], "{point}");
        assert_eq!(
            std::fs::read_to_string(loop_dir(&h).join("catalog.json")).unwrap(),
            MARKER
        );
        assert_eq!(images(&loop_dir(&h)), before, "{point}");
    }
}

/// A process killed just before a commit (create, remove, snapshot): the
/// next call sees the old state or the new one, never a half, and what a
/// half-made create or remove left is finished by the next create.
#[cfg(feature = "failpoints")]
#[test]
fn a_kill_before_a_commit_leaves_the_old_or_the_new_state() {
    require_root!();
    let h = Home::new();
    h.rexray(&["volume", "create", "keep", "--size", "1"]).ok();
    // The create's claim (first commit), then its publication (second).
    for (i, when) in ["return", "1*off->return"].iter().enumerate() {
        let name = format!("c{i}");
        let o = fp(
            &h,
            &format!("loop::catalog-before-commit={when}"),
            &["volume", "create", &name, "--size", "1"],
        );
        assert_eq!(o.code, -1, "{when}: not killed: {o:#?}");
        assert_eq!(
            h.volume_names(),
            ["keep"],
            "{when}: no half-made volume is seen"
        );
    }
    // The next create finishes what the kills left: one image per volume.
    h.rexray(&["volume", "create", "c0", "--size", "1"]).ok();
    assert_eq!(h.volume_names(), ["c0", "keep"]);
    assert_eq!(
        images(&loop_dir(&h)).len(),
        2,
        "{:?}",
        images(&loop_dir(&h))
    );
    // A remove killed before marking: nothing changed. Killed before the
    // row goes: the volume is gone, and its image with the next create.
    let o = fp(
        &h,
        "loop::catalog-before-commit=return",
        &["volume", "rm", "c0"],
    );
    assert_eq!(o.code, -1, "not killed: {o:#?}");
    assert_eq!(h.volume_names(), ["c0", "keep"]);
    let o = fp(
        &h,
        "loop::catalog-before-commit=1*off->return",
        &["volume", "rm", "c0"],
    );
    assert_eq!(o.code, -1, "not killed: {o:#?}");
    assert_eq!(h.volume_names(), ["keep"]);
    let o = h.rexray(&["volume", "rm", "c0"]);
    assert!(o.fails(1).contains("not found"), "{o:#?}");
    h.rexray(&["volume", "create", "c1", "--size", "1"]).ok();
    assert_eq!(h.volume_names(), ["c1", "keep"]);
    assert_eq!(
        images(&loop_dir(&h)).len(),
        2,
        "{:?}",
        images(&loop_dir(&h))
    );
    // A snapshot killed at its claim: none is listed, none is left.
    let o = fp(
        &h,
        "loop::catalog-before-commit=return",
        &["snapshot", "create", "keep", "s1"],
    );
    assert_eq!(o.code, -1, "not killed: {o:#?}");
    let o = h.rexray(&["snapshot", "ls"]);
    assert!(!o.ok().contains("s1"), "{o:#?}");
    h.rexray(&["snapshot", "create", "keep", "s1"]).ok();
    for v in ["c1", "keep"] {
        h.rexray(&["volume", "rm", v]).ok();
    }
    assert!(h.mounts().is_empty() && h.loops().is_empty());
}

/// A damaged catalog.db is named with its fix by every command, and
/// nothing is made or destroyed.
#[test]
fn a_damaged_catalog_is_named_and_nothing_is_lost() {
    require_root!();
    let h = Home::new();
    h.rexray(&["volume", "create", "d", "--size", "1"]).ok();
    let db = loop_dir(&h).join("catalog.db");
    // Everything in the database file itself, then no log beside it.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    for f in ["catalog.db-wal", "catalog.db-shm"] {
        let _ = std::fs::remove_file(loop_dir(&h).join(f));
    }
    let before = images(&loop_dir(&h));
    // Garbage where the header is, then a truncated file.
    let good = std::fs::read(&db).unwrap();
    let mut bad = good.clone();
    bad[..100].copy_from_slice(&[0x5a; 100]);
    for damage in [bad, good[..good.len() / 3].to_vec()] {
        std::fs::write(&db, &damage).unwrap();
        for args in [
            &["volume", "ls"][..],
            &["volume", "create", "e", "--size", "1"],
            &["volume", "mount", "d"],
            &["volume", "rm", "d"],
        ] {
            let o = h.rexray(args);
            let e = o.fails(1);
            assert!(
                e.contains(&db.display().to_string()) && e.contains("restore"),
                "{args:?}: {o:#?}"
            );
            assert!(!o.stderr.contains("panicked"), "{o:#?}");
        }
        assert_eq!(images(&loop_dir(&h)), before, "nothing made or destroyed");
        assert!(h.mounts().is_empty() && h.loops().is_empty());
    }
    std::fs::write(&db, &good).unwrap();
    assert_eq!(h.volume_names(), ["d"]);
    h.rexray(&["volume", "rm", "d"]).ok();
}

/// A catalog another process holds past rexray.lockTimeout: the writer
/// says which file and what to do; readers are not held up; nothing
/// changes; once released, the create goes through.
#[test]
fn a_catalog_locked_past_the_timeout_is_named() {
    require_root!();
    let h = Home::new();
    h.config("rexray:\n  lockTimeout: 1s\n");
    h.rexray(&["volume", "create", "a", "--size", "1"]).ok();
    let db = loop_dir(&h).join("catalog.db");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let o = h.rexray(&["volume", "create", "b", "--size", "1"]);
    let e = o.fails(1);
    assert!(
        e.contains(&db.display().to_string())
            && e.contains("locked by another process")
            && e.contains("rexray.lockTimeout"),
        "{o:#?}"
    );
    // Readers go on (WAL).
    assert_eq!(h.volume_names(), ["a"]);
    c.execute_batch("COMMIT").unwrap();
    drop(c);
    assert_eq!(images(&loop_dir(&h)).len(), 1);
    h.rexray(&["volume", "create", "b", "--size", "1"]).ok();
    assert_eq!(h.volume_names(), ["a", "b"]);
    for v in ["a", "b"] {
        h.rexray(&["volume", "rm", v]).ok();
    }
}

/// On a full filesystem a create fails naming the catalog and the fix,
/// leaves no image, and every volume stays; with space again it works.
#[test]
fn a_full_filesystem_fails_a_create_cleanly() {
    require_root!();
    let h = Home::new();
    let dir = h.dir.join("small");
    mount_tmpfs(&dir, "size=4m,mode=0700");
    h.config(&format!(
        "libstorage:\n  service: loop\nloop:\n  volumePath: {}\n",
        dir.display()
    ));
    h.rexray(&["volume", "create", "f1", "--size", "1"]).ok();
    let before = images(&dir);
    let filler = dir.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0xa5u8; 4096];
        while f.write_all(&chunk).is_ok() {}
    }
    // Enough creates to need new catalog pages.
    let mut failed = None;
    for i in 0..50 {
        let o = h.rexray(&["volume", "create", &format!("g{i}"), "--size", "1"]);
        if o.code != 0 {
            failed = Some(o);
            break;
        }
    }
    let o = failed.expect("a create on a full filesystem failed");
    let e = o.stderr.clone();
    assert!(
        (e.contains("catalog.db") && e.contains("full")) || e.contains("No space left"),
        "{o:#?}"
    );
    assert!(!e.contains("panicked"), "{o:#?}");
    std::fs::remove_file(&filler).unwrap();
    let listed = h.volume_names();
    assert!(listed.contains(&"f1".to_string()), "{listed:?}");
    assert_eq!(
        images(&dir).len(),
        listed.len(),
        "one image per listed volume: {:?} {listed:?}",
        images(&dir)
    );
    assert!(images(&dir).contains_key(before.keys().next().unwrap()));
    h.rexray(&["volume", "create", "after", "--size", "1"]).ok();
    for v in h.volume_names() {
        h.rexray(&["volume", "rm", &v]).ok();
    }
    nix::mount::umount(&dir).unwrap();
}
