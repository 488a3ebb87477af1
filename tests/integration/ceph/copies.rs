//! Copies of rbd volumes: new filesystem UUIDs.

use super::{cluster, fuse_processes_under, mounted_path};
use crate::common::*;
use crate::require_root;
use std::path::Path;
use std::process::Command;

/// The filesystem UUID of the device mounted at `mp` (blkid of the
/// mount's source).
fn uuid_at(mp: &Path) -> String {
    let src = run_cmd(Command::new("findmnt").args(["-n", "-o", "SOURCE"]).arg(mp));
    let dev = src.ok().trim().to_string();
    let o = run_cmd(Command::new("blkid").args(["-p", "-o", "value", "-s", "UUID", &dev]));
    o.ok().trim().to_string()
}

/// A copy of a written rbd volume, and a volume made from its snapshot,
/// get filesystem UUIDs of their own (ext4 after the check tune2fs asks
/// for, XFS), and mount beside their source with its data.
#[test]
fn rbd_copies_get_filesystems_of_their_own() {
    require_root!();
    let Some(c) = cluster() else { return };
    let h = c.home("");
    let vols = h.volumes();
    for fs in ["ext4", "xfs"] {
        let v = format!("uu{fs}");
        h.rexray(&["volume", "create", &v, "--size", "1", "--fsType", fs])
            .ok();
        let p = mounted_path(h.rexray(&["volume", "mount", &v]).ok());
        std::fs::write(Path::new(&p).join("f"), fs).unwrap();
        let src = uuid_at(&h.mount_point(&v));
        assert!(!src.is_empty(), "{fs}");
        h.rexray(&["snapshot", "create", &v, &format!("{v}s")]).ok();
        let copy = format!("{v}c");
        vols.create_from(
            &copy,
            &Default::default(),
            &rexray::volume::CopySource::VolumeName(v.clone()),
        )
        .unwrap();
        let from_snap = format!("{v}f");
        vols.create_from(
            &from_snap,
            &Default::default(),
            &rexray::volume::CopySource::SnapshotName(format!("{v}s")),
        )
        .unwrap();
        let mut seen = vec![src];
        for n in [&copy, &from_snap] {
            let p = mounted_path(h.rexray(&["volume", "mount", n]).ok());
            assert_eq!(
                std::fs::read_to_string(Path::new(&p).join("f")).unwrap(),
                fs
            );
            let u = uuid_at(&h.mount_point(n));
            assert!(
                !u.is_empty() && !seen.contains(&u),
                "{fs} {n}: {u} of {seen:?}"
            );
            seen.push(u);
        }
        // Nothing is left in the scratch directory.
        let scratch = h.dir.join("var/run/rbd-scratch");
        let left: Vec<_> = std::fs::read_dir(&scratch)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{left:?}");
        assert!(fuse_processes_under(&scratch).is_empty());
        for n in [&copy, &from_snap, &v] {
            h.rexray(&["volume", "unmount", n]).ok();
        }
        h.rexray(&["snapshot", "rm", &format!("{v}s")]).ok();
        for n in [&copy, &from_snap, &v] {
            h.rexray(&["volume", "rm", n]).ok();
        }
    }
    assert!(mounts_under(&h.dir).is_empty());
    assert!(loops_under(&h.dir).is_empty());
    assert!(fuse_processes_under(&h.dir).is_empty());
}
