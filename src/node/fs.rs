//! Filesystems on devices: probe for any signature, make ext4 or xfs,
//! grow a mounted filesystem.

use super::cmd;
use crate::model::FsType;
use crate::{Error, Result};
use std::path::Path;
use std::time::Duration;

/// What a device holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// No signature at all: safe to format.
    Blank,
    /// A filesystem of this type.
    Filesystem(String),
    /// Some other signature (partition table, RAID member, LVM, ...).
    Other(String),
}

/// Probe a device with `blkid -p` (low-level superblock and partition-table
/// probing, no cache).
pub fn probe(dev: &Path, timeout: Duration) -> Result<Probe> {
    Ok(probe_tags(dev, timeout)?.0)
}

/// [`probe`], with every `TAG=value` blkid reported (`TYPE`, `UUID`,
/// `LABEL`, `PTTYPE`, ...), to say what a format would destroy.
pub fn probe_tags(dev: &Path, timeout: Duration) -> Result<(Probe, Vec<(String, String)>)> {
    let out = cmd::run(
        "blkid",
        "util-linux",
        &[
            "-p".as_ref(),
            "-o".as_ref(),
            "export".as_ref(),
            dev.as_os_str(),
        ],
        timeout,
    )?;
    match out.status.code() {
        Some(0) => {
            let mut ty = None;
            let mut other = None;
            let tags: Vec<(String, String)> = out
                .stdout
                .lines()
                .filter_map(|l| l.split_once('='))
                .filter(|(k, _)| *k != "DEVNAME")
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let mut usage = None;
            for line in out.stdout.lines() {
                if let Some(v) = line.strip_prefix("TYPE=") {
                    ty = Some(v.to_string());
                } else if let Some(v) = line.strip_prefix("PTTYPE=") {
                    other = Some(format!("partition table {v}"));
                } else if let Some(v) = line.strip_prefix("USAGE=") {
                    usage = Some(v.to_string());
                }
            }
            // Only a signature whose usage is a filesystem can be mounted:
            // swap (usage "other"), a RAID or LVM member ("raid"), an
            // encrypted volume ("crypto") are something else.
            let probe = match (ty, usage, other) {
                (Some(t), None, _) => Probe::Filesystem(t),
                (Some(t), Some(u), _) if u == "filesystem" => Probe::Filesystem(t),
                (Some(t), Some(u), _) => Probe::Other(format!("{t} (usage {u})")),
                (None, _, Some(o)) => Probe::Other(o),
                (None, Some(u), None) => Probe::Other(format!("usage {u}")),
                (None, None, None) => Probe::Other("an unknown signature".into()),
            };
            Ok((probe, tags))
        }
        // No signature. Bytes no probe knows (an encrypted volume with a
        // detached header, a database written to the raw device) are
        // not blank either: the first and last MiB must be zeros.
        Some(2) => match nonzero_at_ends(dev) {
            Ok(None) => Ok((Probe::Blank, Vec::new())),
            Ok(Some(at)) => Ok((Probe::Other(unrecognised(at)), Vec::new())),
            Err(e) => Err(Error::from_io(format!("reading {}", dev.display()), &e)),
        },
        // 8: ambivalent probing result (several signatures) — not blank.
        Some(8) => Ok((
            Probe::Other("several conflicting signatures".into()),
            Vec::new(),
        )),
        _ => Err(Error::system(format!(
            "probing {} with blkid failed: {}",
            dev.display(),
            out.stderr.trim()
        ))),
    }
}

/// What a device with no signature but a non-zero byte at `at` holds.
pub fn unrecognised(at: u64) -> String {
    format!("data in no format blkid recognises (a non-zero byte at offset {at})")
}

/// How much of each end of a device [`nonzero_at_ends`] reads: where
/// partition tables, superblocks, headers and their backups live.
const ENDS: u64 = 1 << 20;

/// The offset of a non-zero byte in the first or last [`ENDS`] bytes of
/// `dev`, if any.
fn nonzero_at_ends(dev: &Path) -> std::io::Result<Option<u64>> {
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::File::open(dev)?;
    let len = f.seek(SeekFrom::End(0))?;
    let head = ENDS.min(len);
    for (start, end) in [(0, head), (len.saturating_sub(ENDS).max(head), len)] {
        if let Some(at) = crate::files::first_nonzero_in(&f, start, end)? {
            return Ok(Some(at));
        }
    }
    Ok(None)
}

/// `fsync` on a block device: what its page cache holds reaches the
/// store behind it (a loop device's image).
pub fn sync_device(dev: &Path) -> Result<()> {
    std::fs::File::open(dev)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::from_io(format!("flushing {}", dev.display()), &e))
}

/// Make a filesystem. `overwrite` passes the tool's force flag, which is
/// needed when the device already holds a signature.
pub fn mkfs(dev: &Path, fs: FsType, overwrite: bool, timeout: Duration) -> Result<()> {
    let (prog, pkg, force) = match fs {
        FsType::Ext4 => ("mkfs.ext4", "e2fsprogs", "-F"),
        FsType::Xfs => ("mkfs.xfs", "xfsprogs", "-f"),
    };
    let mut args: Vec<&std::ffi::OsStr> = vec!["-q".as_ref()];
    if overwrite {
        args.push(force.as_ref());
    }
    args.push(dev.as_os_str());
    let out = cmd::run(prog, pkg, &args, timeout)?;
    if !out.status.success() {
        return Err(Error::system(format!(
            "{prog} {} failed: {}",
            dev.display(),
            out.stderr.trim()
        )));
    }
    Ok(())
}

/// Grow the filesystem mounted at `mount_point` (on `dev`) to fill its device.
pub fn grow(dev: &Path, mount_point: &Path, fs: &str, timeout: Duration) -> Result<()> {
    let out = match fs {
        "ext4" | "ext3" | "ext2" => {
            cmd::run("resize2fs", "e2fsprogs", &[dev.as_os_str()], timeout)?
        }
        "xfs" => cmd::run(
            "xfs_growfs",
            "xfsprogs",
            &[mount_point.as_os_str()],
            timeout,
        )?,
        other => {
            return Err(Error::unsupported(format!(
                "cannot grow a {other} filesystem; only ext4 and xfs are supported"
            )))
        }
    };
    if !out.status.success() {
        return Err(grow_failed(dev, &out.stderr));
    }
    Ok(())
}

/// The error for a grow tool that failed saying `stderr`. The tools report
/// a refused resize ioctl (EPERM) only in words: resize2fs's "Permission
/// denied to resize filesystem", strerror's "Operation not permitted"
/// (`LC_ALL=C`). Such a refusal keeps its errno, so callers tell it by
/// [`Error::is_permission_denied`], not by the message.
fn grow_failed(dev: &Path, stderr: &str) -> Error {
    let e = Error::system(format!(
        "growing the filesystem on {} failed: {}",
        dev.display(),
        stderr.trim()
    ));
    if stderr.contains("Permission denied") || stderr.contains("Operation not permitted") {
        e.with_errno(libc::EPERM)
    } else {
        e
    }
}

/// The filesystem UUID in `dev` (a device or an image file), read from
/// the superblock itself (`blkid -p`: no cache, no udev), if it has one.
pub fn fs_uuid(dev: &Path, timeout: Duration) -> Result<Option<String>> {
    let out = cmd::run(
        "blkid",
        "util-linux",
        &[
            "-p".as_ref(),
            "-s".as_ref(),
            "UUID".as_ref(),
            "-o".as_ref(),
            "value".as_ref(),
            dev.as_os_str(),
        ],
        timeout,
    )?;
    let uuid = out.stdout.trim();
    Ok((out.status.success() && !uuid.is_empty()).then(|| uuid.to_string()))
}

/// What [`regenerate_uuid`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewUuid {
    /// The filesystem has this fresh UUID.
    Changed(String),
    /// It keeps its UUID, for this reason (the tool refused, is missing,
    /// or the filesystem type has no UUID this knows how to change). The
    /// image is as it was.
    Kept(String),
}

/// Give the filesystem in `image` (an image file or a device, neither
/// mounted nor attached anywhere else) a fresh random UUID, so that it can
/// be mounted beside the filesystem it was copied from (XFS refuses two of
/// one UUID) and `/dev/disk/by-uuid` and fstab entries keep naming one
/// filesystem.
///
/// ext2/3/4: `tune2fs -U random`. XFS: `xfs_admin -U generate`; a copy of
/// a frozen XFS has a quiesced but dirty log, which xfs_admin refuses, so
/// the log is replayed first by mounting the image once, with `nouuid`, in
/// a private mount namespace (no other process sees that mount, and it
/// ends with the namespace even if this process is killed).
///
/// `Err` only when a tool ran past `timeout` and was stopped: the image
/// may be half changed then and must not be used.
pub fn regenerate_uuid(image: &Path, fs_type: &str, timeout: Duration) -> Result<NewUuid> {
    let (prog, pkg, args): (&str, &str, &[&str]) = match fs_type {
        "ext4" | "ext3" | "ext2" => ("tune2fs", "e2fsprogs", &["-U", "random"]),
        "xfs" => ("xfs_admin", "xfsprogs", &["-U", "generate"]),
        other => {
            return Ok(NewUuid::Kept(format!(
                "changing the UUID of a {other} filesystem is not supported"
            )))
        }
    };
    if let Err(e) = cmd::find(prog, pkg) {
        return Ok(NewUuid::Kept(e.message().to_string()));
    }
    // Tests make a tool that refuses, to prove the fallback.
    fail::fail_point!("node::uuid-refused", |_| Ok(NewUuid::Kept(format!(
        "{prog} refused"
    ))));
    let before = fs_uuid(image, timeout)?;
    let run = || -> Result<(Option<String>, String)> {
        let mut argv: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        argv.push(image.as_os_str());
        let out = cmd::run(prog, pkg, &argv, timeout)?;
        let said = format!("{} {}", out.stdout.trim(), out.stderr.trim());
        // xfs_admin's exit status does not tell whether it changed the
        // UUID: the superblock does.
        let after = fs_uuid(image, timeout)?;
        Ok((after.filter(|a| Some(a) != before.as_ref()), said))
    };
    let (mut after, mut said) = run()?;
    if after.is_none() && fs_type != "xfs" && needs_fsck(&said) {
        // tune2fs changes the UUID of a filesystem with metadata
        // checksums only right after a full check.
        tracing::debug!(image = %image.display(), "checking the filesystem before changing its UUID");
        if let Err(why) = fsck(image, timeout)? {
            return Ok(NewUuid::Kept(format!(
                "tune2fs asked for a checked filesystem ({}) and e2fsck -f -p failed: {why}",
                said.trim()
            )));
        }
        (after, said) = run()?;
    }
    if after.is_none() && fs_type == "xfs" && said.contains("log") {
        tracing::debug!(image = %image.display(), "replaying the XFS log before changing the UUID");
        if let Err(why) = replay_xfs_log(image, timeout)? {
            return Ok(NewUuid::Kept(format!(
                "xfs_admin refused ({}) and the log could not be replayed: {why}",
                said.trim()
            )));
        }
        fail::fail_point!("node::uuid-after-replay", |_| crate::crash_here());
        (after, said) = run()?;
    }
    Ok(match after {
        Some(u) => NewUuid::Changed(u),
        None => NewUuid::Kept(format!("{prog} left the UUID unchanged: {}", said.trim())),
    })
}

/// Whether tune2fs refused for want of a freshly checked filesystem.
fn needs_fsck(said: &str) -> bool {
    said.contains("freshly checked") || said.contains("e2fsck -f")
}

/// `e2fsck -f -p` of the ext filesystem in `image` (unattached): `Ok(Err(why))`
/// when it found what it may not fix by itself; `Err` when it ran past
/// `timeout`.
fn fsck(image: &Path, timeout: Duration) -> Result<std::result::Result<(), String>> {
    let out = cmd::run(
        "e2fsck",
        "e2fsprogs",
        &["-f".as_ref(), "-p".as_ref(), image.as_os_str()],
        timeout,
    )?;
    // 0: clean; 1: errors corrected; anything else needs a person.
    match out.status.code() {
        Some(0 | 1) => Ok(Ok(())),
        c => Ok(Err(format!(
            "exit status {}: {}",
            c.map_or("signal".to_string(), |c| c.to_string()),
            out.stderr.trim()
        ))),
    }
}

/// Replay the log of the XFS in `image` by mounting it once (with
/// `nouuid`: its source may be mounted) in a private mount namespace,
/// which unmounts it as it ends. `Ok(Err(why))` when that failed and nothing changed;
/// `Err` when it ran past `timeout`.
fn replay_xfs_log(image: &Path, timeout: Duration) -> Result<std::result::Result<(), String>> {
    let mount = match cmd::find("unshare", "util-linux").and_then(|_| cmd::find("mount", "mount")) {
        Ok(m) => m,
        Err(e) => return Ok(Err(e.message().to_string())),
    };
    // Any directory serves as the mount point inside the namespace: the
    // image's own is there and ours.
    let Some(dir) = image.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(Err(format!("{} has no directory", image.display())));
    };
    // XFS replays its log while mounting. The mount lives in a namespace
    // of its own, which ends with `mount` itself: the kernel then unmounts
    // it cleanly (an unmount record in the log), and `-o loop` has set
    // autoclear, so its loop device goes too — also if we are killed.
    let out = cmd::run(
        "unshare",
        "util-linux",
        &[
            "--mount".as_ref(),
            "--propagation".as_ref(),
            "private".as_ref(),
            "--".as_ref(),
            mount.as_os_str(),
            "-t".as_ref(),
            "xfs".as_ref(),
            "-o".as_ref(),
            "loop,nouuid".as_ref(),
            "--".as_ref(),
            image.as_os_str(),
            dir.as_os_str(),
        ],
        timeout,
    )?;
    // The unmount and the loop device's release follow the namespace's
    // end: wait for them, so nothing holds the image.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while loop_backs(image) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if loop_backs(image) {
        return Ok(Err(format!(
            "{} was still attached 10 s after the log replay",
            image.display()
        )));
    }
    if out.status.success() {
        Ok(Ok(()))
    } else {
        Ok(Err(out.stderr.trim().to_string()))
    }
}

/// Whether a loop device is backed by `file`.
fn loop_backs(file: &Path) -> bool {
    let Ok(file) = file.canonicalize() else {
        return false;
    };
    let Ok(rd) = std::fs::read_dir("/sys/block") else {
        return false;
    };
    rd.flatten().any(|e| {
        e.file_name().to_string_lossy().starts_with("loop")
            && std::fs::read_to_string(e.path().join("loop/backing_file"))
                .is_ok_and(|b| Path::new(b.trim_end()) == file)
    })
}

/// What a probe found, for a person: `ext4 filesystem (UUID=…, LABEL=…)`.
pub fn describe(probe: &Probe, tags: &[(String, String)]) -> String {
    let what = match probe {
        Probe::Blank => return "nothing".to_string(),
        Probe::Filesystem(t) => format!("{t} filesystem"),
        Probe::Other(o) => o.clone(),
    };
    let shown: Vec<String> = tags
        .iter()
        .filter(|(k, _)| matches!(k.as_str(), "UUID" | "LABEL" | "PTTYPE" | "PTUUID" | "USAGE"))
        .map(|(k, v)| format!("{k}={}", crate::input::quote(v)))
        .collect();
    if shown.is_empty() {
        what
    } else {
        format!("{what} ({})", shown.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_at_either_end_are_data_a_blank_middle_is_not_looked_at() {
        use std::os::unix::fs::FileExt;
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("dev");
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(8 << 20).unwrap();
        assert_eq!(nonzero_at_ends(&p).unwrap(), None);
        // The middle is past what the check reads (a backend's scan of
        // its store covers it: `Content::Written`).
        f.write_all_at(b"x", 4 << 20).unwrap();
        assert_eq!(nonzero_at_ends(&p).unwrap(), None);
        f.write_all_at(b"x", (8 << 20) - 1).unwrap();
        assert_eq!(nonzero_at_ends(&p).unwrap(), Some((8 << 20) - 1));
        f.write_all_at(b"x", 4096).unwrap();
        assert_eq!(nonzero_at_ends(&p).unwrap(), Some(4096));
        // A device smaller than both ends together is read once, whole.
        let small = t.path().join("small");
        std::fs::write(&small, [0u8; 1000]).unwrap();
        assert_eq!(nonzero_at_ends(&small).unwrap(), None);
        if which::which("blkid").is_ok() {
            let (probe, _) = probe_tags(&p, Duration::from_secs(10)).unwrap();
            assert_eq!(probe, Probe::Other(unrecognised(4096)));
        }
    }

    #[test]
    fn tune2fs_asking_for_a_check_is_recognised() {
        assert!(needs_fsck(
            "This operation requires a freshly checked filesystem.\n\nPlease run e2fsck -f on the filesystem."
        ));
        assert!(!needs_fsck("tune2fs 1.47.0 (5-Feb-2023)"));
    }

    /// An ext4 without `metadata_csum_seed`, mounted since its last check
    /// (what a copy of a used volume is): tune2fs refuses until e2fsck -f
    /// has run, which regenerate_uuid does.
    #[test]
    fn an_ext4_that_needs_a_check_first_gets_its_new_uuid() {
        let tools = ["mkfs.ext4", "debugfs", "tune2fs", "e2fsck", "blkid"];
        if tools.iter().any(|t| cmd::find(t, "e2fsprogs").is_err()) {
            eprintln!("skipped: e2fsprogs is not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        let t = Duration::from_secs(30);
        let run = |prog: &str, args: &[&str]| {
            let mut argv: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
            argv.push(img.as_os_str());
            let o = cmd::run(prog, "e2fsprogs", &argv, t).unwrap();
            assert!(o.status.success(), "{prog}: {}", o.stderr);
        };
        run("mkfs.ext4", &["-q", "-F", "-O", "^metadata_csum_seed"]);
        // Last mounted after its last check, as if it had been in use.
        run("debugfs", &["-w", "-R", "ssv mtime 2000000000"]);
        let before = fs_uuid(&img, t).unwrap();
        match regenerate_uuid(&img, "ext4", t).unwrap() {
            NewUuid::Changed(u) => assert_ne!(Some(u), before),
            kept => panic!("{kept:?}"),
        }
    }

    #[test]
    fn a_refused_grow_keeps_its_errno() {
        let dev = Path::new("/dev/loop9");
        let e = grow_failed(dev, "resize2fs: Permission denied to resize filesystem\n");
        assert!(e.is_permission_denied(), "{e}");
        assert!(
            e.message()
                .ends_with("Permission denied to resize filesystem"),
            "{e}"
        );
        let e = grow_failed(
            dev,
            "xfs_growfs: XFS_IOC_FSGROWFSDATA xfsctl failed: Operation not permitted",
        );
        assert!(e.is_permission_denied(), "{e}");
        let e = grow_failed(dev, "resize2fs: No space left on device");
        assert!(!e.is_permission_denied(), "{e}");
        assert_eq!(e.errno(), None);
    }

    #[test]
    fn a_probe_is_described_with_its_uuid_and_label() {
        let tags = [
            ("TYPE".to_string(), "ext4".to_string()),
            ("UUID".to_string(), "1234-abcd".to_string()),
            ("LABEL".to_string(), "data".to_string()),
        ];
        assert_eq!(
            describe(&Probe::Filesystem("ext4".into()), &tags),
            "ext4 filesystem (UUID=\"1234-abcd\", LABEL=\"data\")"
        );
        assert_eq!(
            describe(&Probe::Other("partition table dos".into()), &[]),
            "partition table dos"
        );
    }
}
