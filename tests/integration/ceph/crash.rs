//! The crash matrix of the Ceph drivers: a `rexray` killed (SIGKILL from
//! a failpoint) at each step of its own (the rbd lock, rbd-fuse, the
//! loop device, the fence; the s3fs holder record and mount), then the
//! next call (mount, unmount, preempt) finishes the job, and nothing is
//! left behind: no rbd-fuse or s3fs process of the test's home, no loop
//! device on its files, no rbd lock.

use super::{cluster, mounted_path, processes_under, Cluster};
use crate::common::*;
use crate::multihost::Node;
use crate::require_root;
use std::path::Path;

/// Stops, when dropped, the FUSE helpers a failed test left under `dir`
/// (by PID: only those whose command line names the test's home).
struct Helpers<'a>(&'a Path);

impl Drop for Helpers<'_> {
    fn drop(&mut self) {
        for prog in ["rbd-fuse", "s3fs"] {
            for pid in processes_under(prog, self.0) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// The advisory locks of image `image` (their ids).
fn locks(c: &Cluster, image: &str) -> Vec<String> {
    let o = c.tool(
        "rbd",
        &["lock", "ls", "--format", "json", &format!("rbd/{image}")],
    );
    let v: serde_json::Value = serde_json::from_str(o.ok().trim()).unwrap_or_default();
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|l| l["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Nothing of the volume is left under `dir`: no mount (but a node's
/// namespace file, `ns/`), no loop device, no rbd-fuse or s3fs process.
fn nothing_left(dir: &Path, what: &str) {
    let ns = dir.join("ns");
    let mounts: Vec<_> = mounts_under(dir)
        .into_iter()
        .filter(|m| !m.starts_with(&ns))
        .collect();
    assert!(mounts.is_empty(), "{what}: {mounts:?}");
    assert!(
        loops_under(dir).is_empty(),
        "{what}: {:?}",
        loops_under(dir)
    );
    for prog in ["rbd-fuse", "s3fs"] {
        let left = processes_under(prog, dir);
        assert!(left.is_empty(), "{what}: {prog} left running: {left:?}");
    }
}

/// Mount `v` again: the token written before the kill reads back; then
/// unmount and remove it, and nothing of the home is left.
fn token_intact_then_removed(h: &Home, v: &str, fp: &str) {
    let path = mounted_path(h.rexray(&["volume", "mount", v]).ok());
    assert_eq!(
        std::fs::read_to_string(Path::new(&path).join("token")).unwrap(),
        fp
    );
    h.rexray(&["volume", "unmount", v]).ok();
    h.rexray(&["volume", "rm", v]).ok();
    nothing_left(&h.dir, fp);
}

/// One row of the printed matrix.
fn row(op: &str, fp: &str, outcome: &str) {
    println!("| {op} | `{fp}` | {outcome} |");
}

/// The rbd steps of a mount.
const RBD_MOUNT_FAILPOINTS: &[&str] = &[
    "rbd::attach-after-lock",
    "rbd::attach-after-fuse",
    "rbd::attach-after-loop",
    "volume::mount-after-attach",
];

/// Killed at each rbd step of a mount: the next mount ends with one
/// mount, one loop device, one rbd-fuse, this node's lock; killed there
/// again, the next unmount leaves nothing and no lock.
#[test]
fn rbd_crash_matrix_mount() {
    require_root!();
    let Some(c) = cluster() else { return };
    for (i, fp) in RBD_MOUNT_FAILPOINTS.iter().enumerate() {
        let h = c.home("");
        let _helpers = Helpers(&h.dir);
        let v = format!("crm{i}");
        h.rexray(&["volume", "create", &v, "--size", "1"]).ok();
        killed(&with_fp(&h, fp, &["volume", "mount", &v]), fp);
        let path = mounted_path(h.rexray(&["volume", "mount", &v]).ok());
        assert_eq!(count_mounts_at(&h.mount_point(&v)), 1, "{fp}");
        assert_eq!(loops_under(&h.dir).len(), 1, "{fp}");
        assert_eq!(processes_under("rbd-fuse", &h.dir).len(), 1, "{fp}");
        assert_eq!(locks(c, &v).len(), 1, "{fp}");
        std::fs::write(Path::new(&path).join("token"), fp).unwrap();
        h.rexray(&["volume", "unmount", &v]).ok();
        nothing_left(&h.dir, fp);
        assert!(locks(c, &v).is_empty(), "{fp}");

        // Killed on a remount; this time an unmount is the next call.
        killed(&with_fp(&h, fp, &["volume", "mount", &v]), fp);
        h.rexray(&["volume", "unmount", &v]).ok();
        nothing_left(&h.dir, fp);
        assert!(locks(c, &v).is_empty(), "{fp}: {:?}", locks(c, &v));
        token_intact_then_removed(&h, &v, fp);
        row(
            "rbd mount",
            fp,
            "next mount: 1 mount, 1 loop device, 1 rbd-fuse, 1 lock; next unmount instead: nothing left, no lock",
        );
    }
}

/// Killed at each rbd step of an unmount: the next unmount leaves no
/// mount, loop device, rbd-fuse or lock; the data is intact.
#[test]
fn rbd_crash_matrix_unmount() {
    require_root!();
    let Some(c) = cluster() else { return };
    for (i, fp) in [
        "volume::unmount-after-unmount",
        "rbd::detach-after-loop",
        "rbd::detach-after-fuse",
        "rbd::detach-before-unlock",
    ]
    .iter()
    .enumerate()
    {
        let h = c.home("");
        let _helpers = Helpers(&h.dir);
        let v = format!("cru{i}");
        h.rexray(&["volume", "create", &v, "--size", "1"]).ok();
        let path = mounted_path(h.rexray(&["volume", "mount", &v]).ok());
        std::fs::write(Path::new(&path).join("token"), fp).unwrap();
        killed(&with_fp(&h, fp, &["volume", "unmount", &v]), fp);
        h.rexray(&["volume", "unmount", &v]).ok();
        nothing_left(&h.dir, fp);
        assert!(locks(c, &v).is_empty(), "{fp}: {:?}", locks(c, &v));
        token_intact_then_removed(&h, &v, fp);
        row(
            "rbd unmount",
            fp,
            "next unmount: no mount, loop device, rbd-fuse or lock; data intact",
        );
    }
}

/// Killed at each step of a remove: the next remove removes the image
/// (or finds it gone), and no lock, mount or rbd-fuse is left.
#[test]
fn rbd_crash_matrix_remove() {
    require_root!();
    let Some(c) = cluster() else { return };
    for (i, fp) in [
        "volume::remove-before-driver",
        "volume::remove-after-driver",
    ]
    .iter()
    .enumerate()
    {
        let h = c.home("");
        let _helpers = Helpers(&h.dir);
        let v = format!("crr{i}");
        h.rexray(&["volume", "create", &v, "--size", "1"]).ok();
        h.rexray(&["volume", "mount", &v]).ok();
        h.rexray(&["volume", "unmount", &v]).ok();
        killed(&with_fp(&h, fp, &["volume", "rm", &v]), fp);
        let again = h.rexray(&["volume", "rm", &v]);
        assert!(
            again.code == 0 || again.stderr.contains("not found"),
            "{fp}: {again:#?}"
        );
        assert!(!h.volume_names().contains(&v), "{fp}");
        let ls = c.tool("rbd", &["ls", "--format", "json"]);
        assert!(!ls.ok().contains(&format!("\"{v}\"")), "{fp}: {ls:?}");
        nothing_left(&h.dir, fp);
        row(
            "rbd remove",
            fp,
            "next remove (or not-found): image gone, nothing left here",
        );
    }
}

/// Node B's preempt killed at each step of the takeover (after the
/// blocklist, after the old lock went, after its own lock): B's next
/// preempt takes the volume with A's data and one lock, B's; A's unmount
/// lets go of what A has; nothing is left on either node.
#[test]
fn rbd_crash_matrix_preempt() {
    require_root!();
    let Some(c) = cluster() else { return };
    let preempt = (
        "LIBSTORAGE_INTEGRATION_VOLUME_OPERATIONS_MOUNT_PREEMPT",
        "true",
    );
    for (i, fp) in [
        "rbd::fence-after-blocklist",
        "rbd::fence-before-lock",
        "rbd::attach-after-lock",
        "rbd::attach-after-loop",
    ]
    .iter()
    .enumerate()
    {
        let a = Node::in_namespace(c.home(""));
        let b = Node::in_namespace(c.home(""));
        let _ha = Helpers(&a.home.dir);
        let _hb = Helpers(&b.home.dir);
        let v = format!("crp{i}");
        a.rexray(&["volume", "create", &v, "--size", "1"]).ok();
        let pa = mounted_path(a.rexray(&["volume", "mount", &v]).ok());
        a.sh(&format!("echo {fp} > {pa}/token && sync")).ok();

        let o = b.rexray_env(
            &[preempt, ("FAILPOINTS", &format!("{fp}=return"))],
            &["volume", "mount", &v],
        );
        killed(&o, fp);
        let pb = mounted_path(b.rexray_env(&[preempt], &["volume", "mount", &v]).ok());
        assert_eq!(b.sh(&format!("cat {pb}/token")).ok().trim(), *fp);
        let held = locks(c, &v);
        assert_eq!(held.len(), 1, "{fp}: {held:?}");
        assert!(
            held[0].contains(&*b.home.lib().to_string_lossy()),
            "{fp}: {held:?}"
        );
        assert_eq!(loops_under(&b.home.dir).len(), 1, "{fp}");
        assert_eq!(processes_under("rbd-fuse", &b.home.dir).len(), 1, "{fp}");

        a.rexray(&["volume", "unmount", &v]).ok();
        assert!(a.mounts().is_empty(), "{fp}: {:?}", a.mounts());
        nothing_left(&a.home.dir, fp);
        assert_eq!(locks(c, &v), held, "{fp}: A's unmount kept B's hold");
        b.rexray(&["volume", "unmount", &v]).ok();
        assert!(b.mounts().is_empty(), "{fp}: {:?}", b.mounts());
        nothing_left(&b.home.dir, fp);
        assert!(locks(c, &v).is_empty(), "{fp}");
        b.rexray(&["volume", "rm", &v]).ok();
        row(
            "rbd preempt",
            fp,
            "next preempt: B holds (1 lock), reads A's data; A's unmount and B's leave nothing",
        );
    }
}

/// A node whose volume was taken over, and let go of by the new holder
/// since, still releases its own rbd-fuse and loop device at unmount.
#[test]
fn rbd_unmount_after_takeover_and_release_leaves_nothing() {
    require_root!();
    let Some(c) = cluster() else { return };
    let a = Node::in_namespace(c.home(""));
    let b = Node::in_namespace(c.home(""));
    let _ha = Helpers(&a.home.dir);
    let _hb = Helpers(&b.home.dir);
    let v = "crtk1";
    a.rexray(&["volume", "create", v, "--size", "1"]).ok();
    a.rexray(&["volume", "mount", v]).ok();
    b.rexray_env(
        &[(
            "LIBSTORAGE_INTEGRATION_VOLUME_OPERATIONS_MOUNT_PREEMPT",
            "true",
        )],
        &["volume", "mount", v],
    )
    .ok();
    b.rexray(&["volume", "unmount", v]).ok();
    assert!(locks(c, v).is_empty());
    // No one holds the volume now; A's unmount still lets go of A's own.
    a.rexray(&["volume", "unmount", v]).ok();
    assert!(a.mounts().is_empty(), "{:?}", a.mounts());
    nothing_left(&a.home.dir, "A");
    nothing_left(&b.home.dir, "B");
    a.rexray(&["volume", "rm", v]).ok();
}

/// Killed at each s3fs step of a mount and of an unmount: the next call
/// of the same kind finishes it, with one s3fs (or none) and the holder
/// record right.
#[test]
fn s3fs_crash_matrix() {
    require_root!();
    let Some(c) = cluster() else { return };
    for (i, fp) in [
        "s3fs::attach-after-holder",
        "s3fs::attach-after-mount",
        "volume::mount-after-attach",
    ]
    .iter()
    .enumerate()
    {
        let h = c.s3_home();
        let _helpers = Helpers(&h.dir);
        let v = format!("s3crm{i}");
        h.rexray(&["volume", "create", &v]).ok();
        killed(&with_fp(&h, fp, &["volume", "mount", &v]), fp);
        let path = mounted_path(h.rexray(&["volume", "mount", &v]).ok());
        assert_eq!(count_mounts_at(&h.mount_point(&v)), 1, "{fp}");
        assert_eq!(processes_under("s3fs", &h.dir).len(), 1, "{fp}");
        std::fs::write(Path::new(&path).join("token"), fp).unwrap();
        h.rexray(&["volume", "unmount", &v]).ok();
        nothing_left(&h.dir, fp);
        assert!(h.rexray(&["volume", "ls", &v]).ok().contains("available"));
        killed(&with_fp(&h, fp, &["volume", "mount", &v]), fp);
        h.rexray(&["volume", "unmount", &v]).ok();
        nothing_left(&h.dir, fp);
        assert!(h.rexray(&["volume", "ls", &v]).ok().contains("available"));
        h.rexray(&["volume", "rm", &v]).ok();
        row(
            "s3fs mount",
            fp,
            "next mount: 1 mount, 1 s3fs; next unmount instead: nothing left, no holder",
        );
    }
    for (i, fp) in [
        "volume::unmount-after-unmount",
        "s3fs::detach-after-unmount",
    ]
    .iter()
    .enumerate()
    {
        let h = c.s3_home();
        let _helpers = Helpers(&h.dir);
        let v = format!("s3cru{i}");
        h.rexray(&["volume", "create", &v]).ok();
        let path = mounted_path(h.rexray(&["volume", "mount", &v]).ok());
        std::fs::write(Path::new(&path).join("token"), fp).unwrap();
        killed(&with_fp(&h, fp, &["volume", "unmount", &v]), fp);
        h.rexray(&["volume", "unmount", &v]).ok();
        nothing_left(&h.dir, fp);
        assert!(h.rexray(&["volume", "ls", &v]).ok().contains("available"));
        token_intact_then_removed(&h, &v, fp);
        row(
            "s3fs unmount",
            fp,
            "next unmount: no mount, no s3fs, no holder; data intact",
        );
    }
}
