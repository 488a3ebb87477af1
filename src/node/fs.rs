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
            for line in out.stdout.lines() {
                if let Some(v) = line.strip_prefix("TYPE=") {
                    ty = Some(v.to_string());
                } else if let Some(v) = line.strip_prefix("PTTYPE=") {
                    other = Some(format!("partition table {v}"));
                } else if let Some(v) = line.strip_prefix("USAGE=") {
                    other.get_or_insert_with(|| format!("usage {v}"));
                }
            }
            Ok(match (ty, other) {
                (Some(t), _) => Probe::Filesystem(t),
                (None, Some(o)) => Probe::Other(o),
                (None, None) => Probe::Other("an unknown signature".into()),
            })
        }
        Some(2) => Ok(Probe::Blank),
        // 8: ambivalent probing result (several signatures) — not blank.
        Some(8) => Ok(Probe::Other("several conflicting signatures".into())),
        _ => Err(Error::system(format!(
            "probing {} with blkid failed: {}",
            dev.display(),
            out.stderr.trim()
        ))),
    }
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
        return Err(Error::system(format!(
            "growing the filesystem on {} failed: {}",
            dev.display(),
            out.stderr.trim()
        )));
    }
    Ok(())
}
