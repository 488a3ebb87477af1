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
            for line in out.stdout.lines() {
                if let Some(v) = line.strip_prefix("TYPE=") {
                    ty = Some(v.to_string());
                } else if let Some(v) = line.strip_prefix("PTTYPE=") {
                    other = Some(format!("partition table {v}"));
                } else if let Some(v) = line.strip_prefix("USAGE=") {
                    other.get_or_insert_with(|| format!("usage {v}"));
                }
            }
            let probe = match (ty, other) {
                (Some(t), _) => Probe::Filesystem(t),
                (None, Some(o)) => Probe::Other(o),
                (None, None) => Probe::Other("an unknown signature".into()),
            };
            Ok((probe, tags))
        }
        Some(2) => Ok((Probe::Blank, Vec::new())),
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
