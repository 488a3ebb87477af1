//! Node operations: everything done to this host's kernel for a volume —
//! probing and formatting devices, mounting and unmounting, reading
//! mountinfo, waiting for devices. Node operations never talk to a backend.

pub mod cmd;
pub mod freeze;
pub mod fs;
pub mod mountinfo;

use crate::model::FsType;
use crate::{Error, Result};
use nix::mount::{MntFlags, MsFlags};
use std::path::Path;
use std::time::{Duration, Instant};

pub use mountinfo::Mount;

/// Time limits for the external tools of a format.
#[derive(Debug, Clone, Copy)]
pub struct FormatTimeouts {
    /// blkid (the device is attached: a probe that hangs means a sick device).
    pub probe: Duration,
    /// mkfs.
    pub mkfs: Duration,
}

/// Whether this process may attach loop devices and mount: root, or
/// CAP_SYS_ADMIN in its effective set.
pub fn privileged() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << 21) != 0)
}

/// Fail with a clear message unless [`privileged`].
pub fn require_privileges(what: &str) -> Result<()> {
    if privileged() {
        Ok(())
    } else {
        Err(Error::system(format!(
            "{what} needs root: attaching and mounting volumes need CAP_SYS_ADMIN; run it as root (e.g. with sudo)"
        )))
    }
}

/// Wait until `dev` is a block device node with a non-zero size.
pub fn wait_for_device(dev: &Path, timeout: Duration) -> Result<(u32, u32)> {
    let deadline = Instant::now() + timeout;
    // Tests make a device that never shows up, to prove the bound.
    let absent = (|| {
        fail::fail_point!("node::device-absent", |_| true);
        false
    })();
    loop {
        if let Ok(numbers) = mountinfo::device_numbers(dev) {
            if device_size(numbers).unwrap_or(0) > 0 && !absent {
                return Ok(numbers);
            }
        }
        if Instant::now() >= deadline {
            return Err(Error::system(format!(
                "device {} did not appear within {} (libstorage.device.attachTimeout)",
                dev.display(),
                humantime::format_duration(timeout)
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Size in bytes of a block device, from sysfs.
pub fn device_size((major, minor): (u32, u32)) -> Result<u64> {
    let p = format!("/sys/dev/block/{major}:{minor}/size");
    let s = std::fs::read_to_string(&p).map_err(|e| Error::from_io(format!("reading {p}"), &e))?;
    Ok(s.trim().parse::<u64>().unwrap_or(0) * 512)
}

/// Make sure `dev` holds a filesystem and say which: format it with `want`
/// only if it is blank, or if `overwrite` is set. A device with any
/// signature is never formatted otherwise. `known_blank` is the backend's
/// word that the device was never written (then the probe is skipped).
///
/// Formatting over a signature (with `overwrite`) first logs a warning
/// naming `volume`, the device and what it held (type, UUID, label).
pub fn ensure_filesystem(
    volume: &str,
    dev: &Path,
    want: FsType,
    overwrite: bool,
    known_blank: bool,
    limits: FormatTimeouts,
) -> Result<String> {
    let (probe, tags) = if known_blank {
        (fs::Probe::Blank, Vec::new())
    } else {
        fs::probe_tags(dev, limits.probe)?
    };
    match (&probe, overwrite) {
        (fs::Probe::Blank, _) | (_, true) => {
            if probe != fs::Probe::Blank {
                tracing::warn!(
                    "overwriteFS: formatting volume {volume} (device {}) as {} destroys what it holds: {}",
                    dev.display(),
                    want.as_str(),
                    fs::describe(&probe, &tags)
                );
            }
            tracing::info!(device = %dev.display(), fs = want.as_str(), ?probe, "formatting");
            fail::fail_point!("node::before-mkfs", |_| crate::crash_here());
            fs::mkfs(dev, want, overwrite, limits.mkfs)?;
            fail::fail_point!("node::after-mkfs", |_| crate::crash_here());
            Ok(want.as_str().to_string())
        }
        (fs::Probe::Filesystem(t), false) => {
            if t != want.as_str() {
                tracing::warn!(
                    device = %dev.display(),
                    found = %t,
                    requested = want.as_str(),
                    "the device already holds a filesystem; mounting it as it is (use overwriteFS to reformat)"
                );
            }
            Ok(t.clone())
        }
        (fs::Probe::Other(what), false) => Err(Error::in_use(format!(
            "device {} holds {what}, not a filesystem; refusing to format it (pass overwriteFS to destroy it)",
            dev.display()
        ))),
    }
}

/// Mount a block device's filesystem at `target`.
pub fn mount_device(dev: &Path, target: &Path, fs_type: &str, read_only: bool) -> Result<()> {
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    nix::mount::mount(Some(dev), target, Some(fs_type), flags, None::<&str>).map_err(|e| {
        Error::from_io(
            format!(
                "mounting {} ({fs_type}) on {}",
                dev.display(),
                target.display()
            ),
            &std::io::Error::from(e),
        )
    })
}

/// Bind-mount `source` at `target`, read-only if asked.
pub fn bind(source: &Path, target: &Path, read_only: bool) -> Result<()> {
    let err = |e: nix::Error| {
        Error::from_io(
            format!("bind-mounting {} on {}", source.display(), target.display()),
            &std::io::Error::from(e),
        )
    };
    nix::mount::mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(err)?;
    if read_only {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        if let Err(e) = nix::mount::mount(None::<&str>, target, None::<&str>, flags, None::<&str>) {
            let _ = nix::mount::umount2(target, MntFlags::empty());
            return Err(err(e));
        }
    }
    Ok(())
}

/// Unmount every mount stacked at `target`. Not mounted is success.
pub fn unmount_all(target: &Path) -> Result<()> {
    for _ in 0..64 {
        if mountinfo::mounts_at(target)?.is_empty() {
            return Ok(());
        }
        match nix::mount::umount2(target, MntFlags::UMOUNT_NOFOLLOW) {
            Ok(()) => {}
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => return Ok(()),
            Err(nix::errno::Errno::EBUSY) => {
                return Err(Error::in_use(format!(
                    "cannot unmount {}: it is busy (a process has files open there; see `fuser -vm {}`)",
                    target.display(),
                    target.display()
                )))
            }
            Err(e) => {
                return Err(Error::from_io(
                    format!("unmounting {}", target.display()),
                    &std::io::Error::from(e),
                ))
            }
        }
    }
    Err(Error::system(format!(
        "{} still has mounts after 64 unmounts",
        target.display()
    )))
}

/// Create a directory (and parents) with mode 0755; refuse symlinks at the
/// last component so a planted link cannot redirect a mount.
pub fn ensure_dir(dir: &Path) -> Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() => Err(Error::system(format!(
            "{} is a symbolic link; refusing to use it as a mount point",
            dir.display()
        ))),
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::system(format!(
            "{} exists and is not a directory",
            dir.display()
        ))),
        Err(_) => {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .map_err(|e| Error::from_io(format!("creating {}", dir.display()), &e))
        }
    }
}
