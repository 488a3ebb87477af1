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

/// A copy and a volume from a snapshot, made through the Docker plugin,
/// carry the facts create writes as image metadata: the type, IOPS and
/// zone asked for, and a creation time of their own (not the source's);
/// Docker Get, `volume inspect` and `rbd image-meta list` show them. A copy
/// that asks for none keeps the source's type, IOPS and zone.
#[test]
fn rbd_copies_have_volume_metadata_of_their_own() {
    require_root!();
    let Some(c) = cluster() else { return };
    let h = c.home("");
    let src = "md1";
    h.rexray(&[
        "volume",
        "create",
        src,
        "--size",
        "1",
        "--volumeType",
        "gold",
        "--iops",
        "300",
        "--availabilityZone",
        "z1",
    ])
    .ok();
    h.rexray(&["snapshot", "create", src, "md1s"]).ok();
    // Creation times are to the second: the copies' are later.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (host, sock) = unix_host(&h);
    let svc = crate::docker::Service::start(&h, &host, &[]);
    let get = |n: &str| {
        crate::docker::ok(crate::docker::post(
            &sock,
            "/VolumeDriver.Get",
            &format!(r#"{{"Name":"{n}"}}"#),
        ))["Volume"]
            .clone()
    };
    let src_created = get(src)["CreatedAt"].as_str().unwrap().to_string();
    crate::docker::ok(crate::docker::post(
        &sock,
        "/VolumeDriver.Create",
        r#"{"Name":"md1c","Opts":{"volumeName":"md1","type":"silver","iops":"500","availabilityZone":"z2"}}"#,
    ));
    crate::docker::ok(crate::docker::post(
        &sock,
        "/VolumeDriver.Create",
        r#"{"Name":"md1f","Opts":{"snapshotName":"md1s","type":"bronze","iops":"700","availabilityZone":"z3"}}"#,
    ));
    crate::docker::ok(crate::docker::post(
        &sock,
        "/VolumeDriver.Create",
        r#"{"Name":"md1k","Opts":{"volumeName":"md1"}}"#,
    ));
    for (n, ty, iops, az) in [
        ("md1c", "silver", 500, "z2"),
        ("md1f", "bronze", 700, "z3"),
        ("md1k", "gold", 300, "z1"),
    ] {
        let v = get(n);
        let st = &v["Status"];
        assert_eq!(st["type"], ty, "{n}: {v}");
        assert_eq!(st["iops"], iops, "{n}: {v}");
        assert_eq!(st["availabilityZone"], az, "{n}: {v}");
        let created = v["CreatedAt"].as_str().unwrap_or_default();
        assert!(
            created.len() == 20 && created > src_created.as_str(),
            "{n}: {created} vs the source's {src_created}"
        );
        let out = h.rexray(&["volume", "inspect", n, "-f", "json"]);
        let rows: serde_json::Value = serde_json::from_str(out.ok()).unwrap();
        let row = &rows[0];
        assert_eq!(row["type"], ty, "{row}");
        assert_eq!(row["iops"], iops, "{row}");
        assert_eq!(row["availabilityZone"], az, "{row}");
        let meta = c.tool(
            "rbd",
            &[
                "image-meta",
                "list",
                "--format",
                "json",
                &format!("rbd/{n}"),
            ],
        );
        let meta: serde_json::Value = serde_json::from_str(meta.ok()).unwrap();
        assert_eq!(meta["rexray.volume.type"], ty, "{n}: {meta}");
        assert_eq!(meta["rexray.volume.iops"], iops.to_string(), "{n}: {meta}");
        assert_eq!(meta["rexray.volume.availabilityZone"], az, "{n}: {meta}");
        assert_eq!(meta["rexray.volume.createdAt"], created, "{n}: {meta}");
    }
    drop(svc);
    h.rexray(&["snapshot", "rm", "md1s"]).ok();
    for n in ["md1c", "md1f", "md1k", src] {
        h.rexray(&["volume", "rm", n]).ok();
    }
    assert!(fuse_processes_under(&h.dir).is_empty());
}
