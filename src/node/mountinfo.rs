//! What is mounted where, read from `/proc/self/mountinfo`.

use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// One mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Device numbers of the mounted filesystem.
    pub dev: (u32, u32),
    /// Root of the mount within its filesystem (`/` unless a bind of a subdir).
    pub root: String,
    /// Mount point.
    pub mount_point: PathBuf,
    /// Filesystem type.
    pub fs_type: String,
    /// Mount source (device path or other).
    pub source: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// Every mount in this process's mount namespace.
pub fn mounts() -> Result<Vec<Mount>> {
    let infos = procfs::process::Process::myself()
        .and_then(|p| p.mountinfo())
        .map_err(|e| Error::system(format!("reading /proc/self/mountinfo: {e}")))?;
    Ok(infos
        .into_iter()
        .filter_map(|m| {
            let (a, b) = m.majmin.split_once(':')?;
            Some(Mount {
                dev: (a.parse().ok()?, b.parse().ok()?),
                root: m.root,
                read_only: m.mount_options.contains_key("ro"),
                mount_point: m.mount_point,
                fs_type: m.fs_type,
                source: m.mount_source.unwrap_or_default(),
            })
        })
        .collect())
}

/// Mounts whose mount point is exactly `path` (several if stacked).
pub fn mounts_at(path: &Path) -> Result<Vec<Mount>> {
    Ok(mounts()?
        .into_iter()
        .filter(|m| m.mount_point == path)
        .collect())
}

/// Mounts of the filesystem on device `dev` (major, minor).
pub fn mounts_of(dev: (u32, u32)) -> Result<Vec<Mount>> {
    Ok(mounts()?.into_iter().filter(|m| m.dev == dev).collect())
}

/// The (major, minor) numbers of a block device node.
pub fn device_numbers(dev: &Path) -> Result<(u32, u32)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let m = std::fs::metadata(dev)
        .map_err(|e| Error::from_io(format!("stat {}", dev.display()), &e))?;
    if !m.file_type().is_block_device() {
        return Err(Error::system(format!(
            "{} is not a block device",
            dev.display()
        )));
    }
    let rdev = m.rdev();
    Ok((libc::major(rdev), libc::minor(rdev)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_root() {
        let m = super::mounts().unwrap();
        assert!(m.iter().any(|m| m.mount_point == std::path::Path::new("/")));
    }
}
