//! The `rbd` driver against a real single-node Ceph cluster
//! (`scripts/ceph.sh`): one cluster per test process, started at the
//! first test that needs it and stopped when the process exits (and by
//! `scripts/test.sh`'s trap). `REXRAY_SKIP_CEPH=1` skips these tests
//! (recorded as skipped; under CI a skip fails).
//!
//! Every test names its volumes after itself, so tests share the cluster
//! without meeting.

use crate::cluster::*;
mod copies;
#[cfg(feature = "failpoints")]
mod crash;
mod s3https;
mod settings;

use crate::common::*;
use crate::multihost::Node;
use crate::require_root;
use std::path::Path;

/// The path a `volume mount` printed (last column of its one row).
fn mounted_path(out: &str) -> String {
    out.lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().last())
        .unwrap_or_default()
        .to_string()
}

/// rbd-fuse processes whose command line names `dir`.
fn fuse_processes_under(dir: &Path) -> Vec<u32> {
    processes_under("rbd-fuse", dir)
}

/// Live processes of program `prog` whose command line names `dir`.
fn processes_under(prog: &str, dir: &Path) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd);
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = state
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'));
        if !zombie
            && cmd
                .split('\0')
                .next()
                .is_some_and(|a| a.rsplit('/').next() == Some(prog))
            && cmd.contains(&*dir.to_string_lossy())
        {
            out.push(pid);
        }
    }
    out
}

/// Create, list, inspect, mount, write, unmount, mount again and read,
/// snapshot, a volume from the snapshot, resize, remove: through the CLI
/// (the library for what the CLI has no command for), on real RBD images.
#[test]
fn rbd_volume_lifecycle() {
    require_root!();
    let Some(c) = cluster() else { return };
    let h = c.home("");
    let v = "life1";
    let out = h.rexray(&["volume", "create", v, "--size", "1", "-f", "json"]);
    let made: serde_json::Value = serde_json::from_str(out.ok()).unwrap();
    assert_eq!(made[0]["id"], "rbd.life1", "{made}");
    assert_eq!(made[0]["size"], 1);
    // The image is in Ceph, made for kernel clients too (layering only).
    let info = c.tool("rbd", &["info", "--format", "json", "rbd/life1"]);
    let info: serde_json::Value = serde_json::from_str(info.ok()).unwrap();
    assert_eq!(info["size"], 1u64 << 30);
    assert_eq!(info["features"], serde_json::json!(["layering"]));
    let e = h
        .rexray(&["volume", "create", "bad@name"])
        .fails(1)
        .to_string();
    assert!(e.contains("invalid volume name"), "{e}");
    assert!(h.volume_names().contains(&v.to_string()));
    let ls = h.rexray(&["volume", "ls", v]);
    assert!(ls.ok().contains("available"), "{ls:?}");

    let path = mounted_path(h.rexray(&["volume", "mount", v]).ok());
    assert!(path.ends_with("/life1/data"), "{path}");
    std::fs::write(Path::new(&path).join("f"), "first").unwrap();
    // Held in Ceph by this instance.
    let locks = c.tool("rbd", &["lock", "ls", "--format", "json", "rbd/life1"]);
    assert!(locks.ok().contains("rexray:"), "{locks:?}");
    assert!(h.rexray(&["volume", "ls", v]).ok().contains("attached"));
    assert_eq!(fuse_processes_under(&h.dir).len(), 1);
    h.rexray(&["volume", "unmount", v]).ok();
    assert!(
        mounts_under(&h.dir).is_empty(),
        "{:?}",
        mounts_under(&h.dir)
    );
    assert!(loops_under(&h.dir).is_empty());
    assert!(fuse_processes_under(&h.dir).is_empty());
    let locks = c.tool("rbd", &["lock", "ls", "--format", "json", "rbd/life1"]);
    assert!(!locks.ok().contains("rexray:"), "{locks:?}");

    // Again: the data is there (and the filesystem was not made again).
    let path = mounted_path(h.rexray(&["volume", "mount", v]).ok());
    assert_eq!(
        std::fs::read_to_string(Path::new(&path).join("f")).unwrap(),
        "first"
    );
    let snap = h.rexray(&["snapshot", "create", v, "s1", "-f", "json"]);
    let snap: serde_json::Value = serde_json::from_str(snap.ok()).unwrap();
    assert_eq!(snap[0]["id"], "rbd.life1@s1", "{snap}");
    std::fs::write(Path::new(&path).join("f"), "second").unwrap();
    h.rexray(&["volume", "unmount", v]).ok();
    assert!(h.rexray(&["snapshot", "ls"]).ok().contains("s1"));
    // Listed, it tells when it was taken (what `create` said, to the
    // second or the one after: both read the clock).
    let ls = h.rexray(&["snapshot", "ls", "-f", "json"]);
    let ls: serde_json::Value = serde_json::from_str(ls.ok()).unwrap();
    let listed = ls
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "s1")
        .unwrap_or_else(|| panic!("{ls}"));
    let secs = |t: &serde_json::Value| {
        humantime::parse_rfc3339(t.as_str().unwrap_or_else(|| panic!("{ls}")))
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let (taken, seen) = (secs(&snap[0]["startTime"]), secs(&listed["startTime"]));
    assert!(seen.abs_diff(taken) <= 2, "{snap} {listed}");

    // A volume from the snapshot has the data of the snapshot.
    let vols = h.volumes();
    vols.create_from(
        "life2",
        &Default::default(),
        &rexray::volume::CopySource::SnapshotName("s1".into()),
    )
    .unwrap();
    let p2 = mounted_path(h.rexray(&["volume", "mount", "life2"]).ok());
    assert_eq!(
        std::fs::read_to_string(Path::new(&p2).join("f")).unwrap(),
        "first"
    );
    h.rexray(&["volume", "unmount", "life2"]).ok();

    // Grow (unmounted), then the filesystem sees it at the next mount.
    let (grown, bytes) = vols
        .resize(rexray::volume::VolumeRef::Name(v), 2 << 30)
        .unwrap();
    assert_eq!((grown.size, bytes), (2, 2 << 30));
    assert!(h
        .rexray(&["volume", "ls", v, "-f", "json"])
        .ok()
        .contains("\"size\":2"));

    // A volume with a snapshot is not removed; without, it is.
    let e = h.rexray(&["volume", "rm", v]).fails(1).to_string();
    assert!(e.contains("snapshots"), "{e}");
    h.rexray(&["snapshot", "rm", "s1"]).ok();
    h.rexray(&["volume", "rm", v]).ok();
    h.rexray(&["volume", "rm", "life2"]).ok();
    assert!(!h.volume_names().iter().any(|n| n.starts_with("life")));
    let ls = c.tool("rbd", &["ls", "--format", "json"]);
    assert!(!ls.ok().contains("life"), "{ls:?}");
}

/// Node A mounts and writes; node B is refused naming A; B with preempt
/// takes the volume over and reads A's synced data; A is fenced: its
/// further writes fail instead of reaching the image.
#[test]
fn rbd_preempt_fences_the_old_holder() {
    require_root!();
    let Some(c) = cluster() else { return };
    let a = Node::in_namespace(c.home(""));
    let b = Node::in_namespace(c.home(""));
    let v = "fence1";
    a.rexray(&["volume", "create", v, "--size", "1"]).ok();
    let pa = mounted_path(a.rexray(&["volume", "mount", v]).ok());
    a.sh(&format!("echo from-a > {pa}/token && sync")).ok();
    assert!(b.rexray(&["volume", "ls", v]).ok().contains("unavailable"));

    let e = b.rexray(&["volume", "mount", v]).fails(1).to_string();
    let a_id = format!("{}", a.home.lib().display());
    assert!(e.contains("attached to") && e.contains(&a_id), "{e}");
    assert!(b.mounts().is_empty());
    let e = b.rexray(&["volume", "rm", v]).fails(1).to_string();
    assert!(e.contains("attached") || e.contains("in use"), "{e}");
    // The address of A's lock, which the preempt below fences.
    let locks = c.tool(
        "rbd",
        &["lock", "ls", "--format", "json", &format!("rbd/{v}")],
    );
    let locks: serde_json::Value = serde_json::from_str(locks.stdout.trim()).unwrap();
    let a_lock_addr = locks[0]["address"].as_str().unwrap().to_string();

    let out = b.rexray_env(
        &[(
            "LIBSTORAGE_INTEGRATION_VOLUME_OPERATIONS_MOUNT_PREEMPT",
            "true",
        )],
        &["volume", "mount", v],
    );
    let pb = mounted_path(out.ok());
    assert_eq!(b.sh(&format!("cat {pb}/token")).ok().trim(), "from-a");
    assert!(b.rexray(&["volume", "ls", v]).ok().contains("attached"));
    // The old holder's client is on the blocklist, and its writes fail.
    let bl = c.tool("ceph", &["osd", "blocklist", "ls"]);
    assert!(
        bl.stdout.contains("127.0.0.1") || bl.stderr.contains("127.0.0.1"),
        "{bl:?}"
    );
    // For a week, not Ceph's default hour: the old lock's address stays
    // on the blocklist for more than six days (other tests' detaches on
    // this cluster add entries of their own).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let text = format!("{}\n{}", bl.stdout, bl.stderr);
    let entry = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(a_lock_addr.as_str()))
        .unwrap_or_else(|| panic!("{a_lock_addr} is not on the blocklist: {bl:?}"));
    let when = entry.split_whitespace().nth(1).unwrap();
    let o = std::process::Command::new("date")
        .args(["-d", when, "+%s"])
        .output()
        .unwrap();
    let expiry: u64 = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    assert!(expiry > now + 6 * 24 * 3600, "{entry} (now {now})");
    let w = a.sh(&format!(
        "dd if=/dev/urandom of={pa}/late bs=64k count=4 conv=fsync 2>&1"
    ));
    assert_ne!(w.code, 0, "a fenced node wrote: {w:?}");
    // B's data is untouched by A's attempt.
    b.sh(&format!("echo from-b >> {pb}/token && sync")).ok();
    assert_eq!(b.sh(&format!("cat {pb}/token")).ok(), "from-a\nfrom-b\n");
    // A lets go of what it has here; B's hold stays.
    a.rexray(&["volume", "unmount", v]).ok();
    assert!(a.mounts().is_empty(), "{:?}", a.mounts());
    assert!(fuse_processes_under(&a.home.dir).is_empty());
    assert!(b.rexray(&["volume", "ls", v]).ok().contains("attached"));
    b.rexray(&["volume", "unmount", v]).ok();
    assert!(b.mounts().is_empty());
    assert!(fuse_processes_under(&b.home.dir).is_empty());
    b.rexray(&["volume", "rm", v]).ok();
}

/// A volume mounted on another node is snapshotted from here,
/// crash-consistent (an RBD snapshot is one point in time of the image;
/// the other node's filesystem cannot be frozen from here): a volume made
/// from it holds what that node had synced. A copy, which reads the image
/// over time, is still refused.
#[test]
fn rbd_snapshot_of_a_volume_mounted_on_another_node() {
    require_root!();
    let Some(c) = cluster() else { return };
    let a = Node::in_namespace(c.home(""));
    let b = Node::in_namespace(c.home(""));
    let v = "live1";
    a.rexray(&["volume", "create", v, "--size", "1"]).ok();
    let pa = mounted_path(a.rexray(&["volume", "mount", v]).ok());
    a.sh(&format!("echo synced > {pa}/f && sync")).ok();
    b.rexray(&["snapshot", "create", v, "live1s"]).ok();
    use rexray::volume::CopySource;
    let vols = b.home.volumes();
    let e = vols
        .create_from(
            "live1c",
            &Default::default(),
            &CopySource::VolumeName(v.into()),
        )
        .unwrap_err();
    assert!(
        e.to_string().contains("attached to another instance"),
        "{e}"
    );
    vols.create_from(
        "live1f",
        &Default::default(),
        &CopySource::SnapshotName("live1s".into()),
    )
    .unwrap();
    let pb = mounted_path(b.rexray(&["volume", "mount", "live1f"]).ok());
    assert_eq!(b.sh(&format!("cat {pb}/f")).ok(), "synced\n");
    // A's volume was never taken from it.
    assert!(a.rexray(&["volume", "ls", v]).ok().contains("attached"));
    b.rexray(&["volume", "unmount", "live1f"]).ok();
    b.rexray(&["volume", "rm", "live1f"]).ok();
    b.rexray(&["snapshot", "rm", "live1s"]).ok();
    a.rexray(&["volume", "unmount", v]).ok();
    a.rexray(&["volume", "rm", v]).ok();
    assert!(a.mounts().is_empty() && b.mounts().is_empty());
}

/// A CSI controller on rbd publishes only to nodes of the pool: a node
/// id no node service registered (NodeGetInfo registers it) is NOT_FOUND;
/// the registered node's is published, and its release is never refused.
#[test]
fn rbd_csi_publishes_only_to_registered_nodes() {
    require_root!();
    let Some(c) = cluster() else { return };
    use crate::csi::{code, create_req, mount_cap, start_on, GIB};
    use rexray::csi::proto::*;
    use tonic::Code;
    let h = Home::plain();
    let mut csi = start_on(&h, "rbd", &format!("rbd:\n  cephArgs: {}\n", c.args()), &[]);
    let v = csi.create(create_req("csi-reg1", GIB)).unwrap().volume_id;
    let publish = |csi: &mut crate::csi::Csi, node: &str| {
        code(
            csi.rt.block_on(
                csi.ctl
                    .controller_publish_volume(ControllerPublishVolumeRequest {
                        volume_id: v.clone(),
                        node_id: node.into(),
                        volume_capability: Some(mount_cap("")),
                        ..Default::default()
                    }),
            ),
        )
    };
    // The node service registered at its start; NodeGetInfo again.
    let me = csi
        .rt
        .block_on(csi.node.node_get_info(NodeGetInfoRequest {}))
        .unwrap()
        .into_inner()
        .node_id;
    let nodes = c.tool("rados", &["-p", "rbd", "listomapkeys", "rexray.nodes"]);
    assert!(nodes.stdout.lines().any(|l| l == me), "{nodes:?}");
    assert_eq!(publish(&mut csi, "no-such-node"), Code::NotFound);
    assert_eq!(publish(&mut csi, &me), Code::Ok);
    assert_eq!(publish(&mut csi, &me), Code::Ok);
    let unpublish = |csi: &mut crate::csi::Csi, node: &str| {
        code(
            csi.rt.block_on(csi.ctl.controller_unpublish_volume(
                ControllerUnpublishVolumeRequest {
                    volume_id: v.clone(),
                    node_id: node.into(),
                    ..Default::default()
                },
            )),
        )
    };
    assert_eq!(unpublish(&mut csi, "no-such-node"), Code::Ok);
    assert_eq!(unpublish(&mut csi, &me), Code::Ok);
    assert_eq!(csi.delete(&v), Code::Ok);
}

/// CSI on s3fs: a name S3 does not take as a bucket's (upper case) is
/// kept under a bucket name of its own, the same each time; buckets have
/// no size, so a retried CreateVolume with the same capacity range is the
/// same volume.
#[test]
fn s3fs_csi_names_and_retries() {
    require_root!();
    let Some(c) = cluster() else { return };
    use crate::csi::{create_req, start_on, GIB};
    use tonic::Code;
    let (endpoint, ak, sk) = c.s3();
    let h = Home::plain()
        .with_env("AWS_ACCESS_KEY_ID", &ak)
        .with_env("AWS_SECRET_ACCESS_KEY", &sk);
    let mut csi = start_on(
        &h,
        "s3fs",
        &format!("s3fs:\n  endpoint: {endpoint}\n"),
        &[("AWS_ACCESS_KEY_ID", &ak), ("AWS_SECRET_ACCESS_KEY", &sk)],
    );
    let v = csi.create(create_req("Sanity-S3-1", 10 * GIB)).unwrap();
    assert!(v.volume_id.starts_with("csi-"), "{v:?}");
    let again = csi.create(create_req("Sanity-S3-1", 10 * GIB)).unwrap();
    assert_eq!(again.volume_id, v.volume_id);
    let plain = csi.create(create_req("s3csi1", GIB)).unwrap();
    assert_eq!(plain.volume_id, "s3csi1");
    for id in [&v.volume_id, &plain.volume_id] {
        assert_eq!(csi.delete(id), Code::Ok);
    }
}

/// The cluster stops: every call ends within its bound with an error that
/// names the cluster; nothing is left attached; started again, the data
/// is all there.
#[test]
fn rbd_cluster_down_is_a_clear_bounded_error() {
    require_root!();
    if !enabled() {
        return;
    }
    // A cluster of its own (no manager): this one is stopped.
    let dir = tempfile::Builder::new()
        .prefix("rxceph.")
        .tempdir_in("/tmp")
        .unwrap()
        .keep();
    struct Stop<'a>(&'a Cluster);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.stop();
            let _ = std::fs::remove_dir_all(&self.0.dir);
        }
    }
    let c = Cluster::start(
        &dir,
        vec![
            ("CEPH_MON_PORT".into(), free_port().to_string()),
            ("CEPH_MGR".into(), "0".into()),
        ],
    );
    let _stop = Stop(&c);
    let h = c.home("  timeout: 5s\n");
    h.rexray(&["volume", "create", "down1", "--size", "1"]).ok();
    let p = mounted_path(h.rexray(&["volume", "mount", "down1"]).ok());
    std::fs::write(Path::new(&p).join("f"), "kept").unwrap();
    h.rexray(&["volume", "unmount", "down1"]).ok();

    c.stop();
    for args in [
        &["volume", "ls"][..],
        &["volume", "mount", "down1"][..],
        &["volume", "create", "down2", "--size", "1"][..],
    ] {
        let t = std::time::Instant::now();
        let o = h.rexray(args);
        let took = t.elapsed();
        assert_ne!(o.code, 0, "{args:?} succeeded with the cluster down: {o:?}");
        assert!(
            o.stderr.contains("did not answer") && o.stderr.contains(&*c.conf.to_string_lossy()),
            "{args:?}: {o:?}"
        );
        println!("{args:?} failed after {took:?} (rbd.timeout 5s)");
    }
    assert!(
        mounts_under(&h.dir).is_empty(),
        "{:?}",
        mounts_under(&h.dir)
    );
    assert!(loops_under(&h.dir).is_empty());
    assert!(fuse_processes_under(&h.dir).is_empty());

    c.up();
    assert_eq!(h.volume_names(), vec!["down1".to_string()]);
    let p = mounted_path(h.rexray(&["volume", "mount", "down1"]).ok());
    assert_eq!(
        std::fs::read_to_string(Path::new(&p).join("f")).unwrap(),
        "kept"
    );
    h.rexray(&["volume", "unmount", "down1"]).ok();
    h.rexray(&["volume", "rm", "down1"]).ok();
}

/// The s3fs driver on radosgw: create (bad bucket names refused), list,
/// mount (s3fs, credentials only in a 0600 file), write, remove refused
/// while mounted, unmount (no s3fs left), mount again and read, remove.
#[test]
fn s3fs_volume_lifecycle() {
    require_root!();
    let Some(c) = cluster() else { return };
    let h = c.s3_home();
    let (_, _, secret) = c.s3();
    for bad in ["bk", "Upper1", "under_score"] {
        let e = h.rexray(&["volume", "create", bad]).fails(1).to_string();
        assert!(e.contains("invalid bucket name"), "{bad}: {e}");
    }
    assert!(!h.volume_names().iter().any(|n| n == "bk"));
    let v = "s3life1";
    let out = h.rexray(&["volume", "create", v, "-f", "json"]);
    let made: serde_json::Value = serde_json::from_str(out.ok()).unwrap();
    assert_eq!(made[0]["id"], v, "{made}");
    // Buckets have no size (0, which JSON leaves out).
    assert_eq!(made[0]["size"].as_u64().unwrap_or(0), 0, "{made}");
    let e = h.rexray(&["volume", "create", v]).fails(1).to_string();
    assert!(e.contains("already exists"), "{e}");
    assert!(h.volume_names().contains(&v.to_string()));
    assert!(h.rexray(&["volume", "ls", v]).ok().contains("available"));

    let path = mounted_path(h.rexray(&["volume", "mount", v]).ok());
    assert!(path.ends_with("/s3life1/data"), "{path}");
    std::fs::write(Path::new(&path).join("f"), "first").unwrap();
    assert!(h.rexray(&["volume", "ls", v]).ok().contains("attached"));
    let procs = processes_under("s3fs", &h.dir);
    assert_eq!(procs.len(), 1, "{procs:?}");
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", procs[0])).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains(&secret));
    let passwd = h.dir.join("var/run/s3fs/passwd");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&passwd).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", passwd.display());

    let e = h.rexray(&["volume", "rm", v]).fails(1).to_string();
    assert!(e.contains("unmount"), "{e}");
    h.rexray(&["volume", "unmount", v]).ok();
    assert!(
        mounts_under(&h.dir).is_empty(),
        "{:?}",
        mounts_under(&h.dir)
    );
    assert!(processes_under("s3fs", &h.dir).is_empty());
    assert!(h.rexray(&["volume", "ls", v]).ok().contains("available"));

    s3_reads_back_then_removed(&h, v, "first");
}

/// Mount s3fs volume `v` of `h` again: its file `f` reads `content`; then
/// unmount (no s3fs process left) and remove it.
pub(super) fn s3_reads_back_then_removed(h: &Home, v: &str, content: &str) {
    let path = mounted_path(h.rexray(&["volume", "mount", v]).ok());
    assert_eq!(
        std::fs::read_to_string(Path::new(&path).join("f")).unwrap(),
        content
    );
    h.rexray(&["volume", "unmount", v]).ok();
    assert!(processes_under("s3fs", &h.dir).is_empty());
    h.rexray(&["volume", "rm", v]).ok();
    assert!(!h.volume_names().contains(&v.to_string()));
}

/// The holders of `volume ls -f json`: name → instance ids.
fn holders(h: &Home) -> std::collections::BTreeMap<String, Vec<String>> {
    let out = h.rexray(&["volume", "ls", "-f", "json"]);
    let vols: serde_json::Value = serde_json::from_str(out.ok()).unwrap();
    vols.as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let ids = v["attachments"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|a| a["instanceID"]["id"].as_str().unwrap_or("").to_string())
                        .collect()
                })
                .unwrap_or_default();
            (v["name"].as_str().unwrap().to_string(), ids)
        })
        .collect()
}

/// `volume ls` reads the holders from the index in the pool object
/// `rexray.holders` (written at attach, removed at detach), and the lock
/// stays the truth: a key of an unlocked image (stale) is ignored, a
/// locked image without a key (or a pool without the object) is read from
/// its lock, and a key that disagrees with the lock never lets an attach
/// through; a takeover rewrites it.
#[test]
fn rbd_holder_index_is_read_by_volume_ls_and_the_lock_decides() {
    require_root!();
    let Some(c) = cluster() else { return };
    // A pool of its own: this test removes the index object.
    let pool = "rxidx";
    c.tool("ceph", &["osd", "pool", "create", pool, "8", "8"])
        .ok();
    c.tool("rbd", &["pool", "init", pool]).ok();
    struct Drop_<'a>(&'a Cluster, &'a str);
    impl Drop for Drop_<'_> {
        fn drop(&mut self) {
            let _ = self.0.tool(
                "ceph",
                &[
                    "osd",
                    "pool",
                    "rm",
                    self.1,
                    self.1,
                    "--yes-i-really-really-mean-it",
                ],
            );
        }
    }
    let _pool = Drop_(c, pool);
    let h = c.home(&format!("  defaultPool: {pool}\n"));
    let rados = |args: &[&str]| {
        let mut a = vec!["-p", pool];
        a.extend_from_slice(args);
        c.tool("rados", &a)
    };
    for v in ["ix1", "ix2", "ix3"] {
        h.rexray(&["volume", "create", v, "--size", "1"]).ok();
    }
    h.rexray(&["volume", "attach", "ix1"]).ok();
    let me = holders(&h)["ix1"].clone();
    assert_eq!(me.len(), 1, "{me:?}");
    assert!(me[0].contains(&*h.lib().to_string_lossy()), "{me:?}");
    // The index names this instance; the listing agrees with the lock.
    let idx = rados(&["listomapvals", "rexray.holders"]);
    assert!(idx.ok().contains("ix1"), "{idx:?}");
    assert_eq!(holders(&h)["ix2"], Vec::<String>::new());

    // A stale key (no lock): ignored.
    rados(&["setomapval", "rexray.holders", "ix2", "rexray:ghost"]).ok();
    assert_eq!(holders(&h)["ix2"], Vec::<String>::new());
    // A lock without a key: read from the lock.
    c.tool(
        "rbd",
        &["lock", "add", &format!("{pool}/ix3"), "rexray:other"],
    )
    .ok();
    assert_eq!(holders(&h)["ix3"], vec!["other".to_string()]);
    // No index object at all: every holder from its lock.
    rados(&["rm", "rexray.holders"]).ok();
    let all = holders(&h);
    assert_eq!(all["ix1"], me);
    assert_eq!(all["ix2"], Vec::<String>::new());
    assert_eq!(all["ix3"], vec!["other".to_string()]);

    // A key that disagrees with the lock: the listing shows the image
    // held (the caveat: by the key's holder), and the lock decides an
    // attach: refused, naming the lock's holder.
    rados(&["setomapval", "rexray.holders", "ix3", "rexray:ghost"]).ok();
    assert_eq!(holders(&h)["ix3"].len(), 1);
    let e = h.rexray(&["volume", "attach", "ix3"]).fails(1).to_string();
    assert!(e.contains("attached to other"), "{e}");
    // A takeover rewrites the key.
    h.rexray(&["volume", "attach", "ix3", "--force"]).ok();
    assert_eq!(holders(&h)["ix3"], me);
    let idx = rados(&["listomapvals", "rexray.holders"]);
    assert!(!idx.ok().contains("ghost"), "{idx:?}");

    // Detach removes the key and the lock.
    for v in ["ix1", "ix3"] {
        h.rexray(&["volume", "detach", v]).ok();
    }
    let idx = rados(&["listomapkeys", "rexray.holders"]);
    assert!(
        !idx.ok().contains("ix1") && !idx.ok().contains("ix3"),
        "{idx:?}"
    );
    assert!(holders(&h).values().all(Vec::is_empty));
    assert!(fuse_processes_under(&h.dir).is_empty());
    for v in ["ix1", "ix2", "ix3"] {
        h.rexray(&["volume", "rm", v]).ok();
    }
}

/// Growing a volume mounted through rbd-fuse and a loop device: the loop
/// device learns the image's new size (LOOP_SET_CAPACITY) and the XFS on
/// it grows online; the data stays.
#[test]
fn rbd_resize_grows_a_mounted_xfs_online() {
    require_root!();
    let Some(c) = cluster() else { return };
    let h = c.home("");
    let v = "grow1";
    h.rexray(&["volume", "create", v, "--size", "1", "--fsType", "xfs"])
        .ok();
    let path = mounted_path(h.rexray(&["volume", "mount", v]).ok());
    std::fs::write(Path::new(&path).join("f"), "kept").unwrap();
    let total = |p: &str| {
        let s = nix::sys::statvfs::statvfs(p).unwrap();
        s.blocks() as u64 * s.fragment_size() as u64
    };
    let before = total(&path);
    assert!(before < 1 << 30, "{before}");
    let (grown, bytes) = h
        .volumes()
        .resize(rexray::volume::VolumeRef::Name(v), 3 << 30)
        .unwrap();
    assert_eq!((grown.size, bytes), (3, 3 << 30));
    let loops = loops_under(&h.dir);
    assert_eq!(loops.len(), 1, "{loops:?}");
    let after = total(&path);
    assert!(
        after > 2 << 30,
        "the filesystem did not grow: {before} -> {after}"
    );
    assert_eq!(
        std::fs::read_to_string(Path::new(&path).join("f")).unwrap(),
        "kept"
    );
    h.rexray(&["volume", "unmount", v]).ok();
    assert!(loops_under(&h.dir).is_empty());
    assert!(fuse_processes_under(&h.dir).is_empty());
    h.rexray(&["volume", "rm", v]).ok();
}

/// `rbd.library: off` (the tools) and the default (librbd, loaded at run
/// time, when the host has it) make the same images with the same
/// metadata, and each reads and releases the other's locks: a lifecycle
/// through the tools, with the library's instance beside it.
#[test]
fn rbd_library_and_tools_make_the_same_volumes() {
    require_root!();
    let Some(c) = cluster() else { return };
    let lib = c.home("");
    let tools = c.home("  library: off\n");
    let env = |h: &Home| {
        h.rexray(&["env"])
            .ok()
            .lines()
            .find_map(|l| l.strip_prefix("# rbd library: ").map(str::to_string))
            .unwrap_or_default()
    };
    assert_eq!(env(&tools), "tools (rbd.library off)");
    assert!(env(&lib).starts_with("librbd "), "{}", env(&lib));

    for (h, v) in [(&lib, "same1"), (&tools, "same2")] {
        h.rexray(&[
            "volume",
            "create",
            v,
            "--size",
            "1",
            "--volumeType",
            "gold",
            "--iops",
            "7",
        ])
        .ok();
    }
    let info = |v: &str| {
        let out = c.tool("rbd", &["info", "--format", "json", &format!("rbd/{v}")]);
        let mut j: serde_json::Value = serde_json::from_str(out.ok()).unwrap();
        let o = j.as_object_mut().unwrap();
        for k in [
            "name",
            "id",
            "block_name_prefix",
            "create_timestamp",
            "access_timestamp",
            "modify_timestamp",
        ] {
            o.remove(k);
        }
        j
    };
    assert_eq!(info("same1"), info("same2"));
    assert_eq!(info("same1")["features"], serde_json::json!(["layering"]));
    let meta_keys = |v: &str| {
        let out = c.tool(
            "rbd",
            &[
                "image-meta",
                "list",
                "--format",
                "json",
                &format!("rbd/{v}"),
            ],
        );
        let m: std::collections::BTreeMap<String, String> = serde_json::from_str(out.ok()).unwrap();
        m.into_iter()
            .filter(|(k, _)| k != "rexray.volume.createdAt")
            .collect::<Vec<_>>()
    };
    assert_eq!(meta_keys("same1"), meta_keys("same2"));
    assert!(!meta_keys("same1").is_empty());
    // Each reads what the other made, the same way.
    let inspect = |h: &Home, v: &str| {
        let out = h.rexray(&["volume", "inspect", v, "-f", "json"]);
        let mut j: serde_json::Value = serde_json::from_str(out.ok()).unwrap();
        j[0]["fields"]
            .as_object_mut()
            .unwrap()
            .remove("createTimestamp");
        j[0]["fields"].as_object_mut().unwrap().remove("createdAt");
        j[0]["name"] = "x".into();
        j[0]["id"] = "x".into();
        j
    };
    assert_eq!(inspect(&lib, "same1"), inspect(&tools, "same2"));
    assert_eq!(inspect(&tools, "same1"), inspect(&lib, "same2"));

    // The tools' lifecycle: mount, write, unmount, mount again and read.
    let p = mounted_path(tools.rexray(&["volume", "mount", "same2"]).ok());
    std::fs::write(Path::new(&p).join("f"), "tools").unwrap();
    // The library's instance sees the tools' lock and is refused.
    let e = lib
        .rexray(&["volume", "mount", "same2"])
        .fails(1)
        .to_string();
    assert!(e.contains("attached to"), "{e}");
    tools.rexray(&["volume", "unmount", "same2"]).ok();
    let p = mounted_path(lib.rexray(&["volume", "mount", "same2"]).ok());
    assert_eq!(
        std::fs::read_to_string(Path::new(&p).join("f")).unwrap(),
        "tools"
    );
    // And the other way round.
    let e = tools
        .rexray(&["volume", "mount", "same2"])
        .fails(1)
        .to_string();
    assert!(e.contains("attached to"), "{e}");
    assert!(tools
        .rexray(&["volume", "ls", "same2"])
        .ok()
        .contains("unavailable"));
    lib.rexray(&["volume", "unmount", "same2"]).ok();
    let locks = c.tool("rbd", &["lock", "ls", "--format", "json", "rbd/same2"]);
    assert!(!locks.ok().contains("rexray:"), "{locks:?}");
    for v in ["same1", "same2"] {
        tools.rexray(&["volume", "rm", v]).ok();
    }
    assert!(mounts_under(&lib.dir).is_empty() && mounts_under(&tools.dir).is_empty());
    assert!(fuse_processes_under(&lib.dir).is_empty());
    assert!(fuse_processes_under(&tools.dir).is_empty());
}
