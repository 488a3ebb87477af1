//! Node operations: everything done to this host's kernel for a volume —
//! probing and formatting devices, mounting and unmounting, reading
//! mountinfo, waiting for devices. Node operations never talk to a backend.

pub mod cmd;
pub mod freeze;
pub mod fs;
pub mod kmsg;
pub mod mountinfo;

use crate::model::FsType;
use crate::{Error, Result};
use nix::mount::{MntFlags, MsFlags};
use std::path::{Path, PathBuf};
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

/// Mount a block device's filesystem at `target`. A failure says what
/// the kernel logged about the device (mount(2) itself returns a bare
/// errno). An XFS refused for a duplicate UUID (a copy whose UUID could
/// not be changed, mounted beside its source) is mounted with `nouuid`,
/// and the log says so.
pub fn mount_device(dev: &Path, target: &Path, fs_type: &str, read_only: bool) -> Result<()> {
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    let mount = |data: Option<&str>| {
        let mut log = kmsg::KernelLog::open();
        nix::mount::mount(Some(dev), target, Some(fs_type), flags, data)
            .map_err(|e| (e, log.about(dev)))
    };
    let failed = |data: Option<&str>, (e, said): (nix::Error, Option<Vec<String>>)| {
        let opts = data.map(|d| format!(", -o {d}")).unwrap_or_default();
        let err = Error::from_io(
            format!(
                "mounting {} ({fs_type}{opts}) on {}",
                dev.display(),
                target.display()
            ),
            &std::io::Error::from(e),
        );
        Error::new(
            err.kind(),
            format!("{}{}", err.message(), kmsg::said(said.as_deref())),
        )
    };
    let first = match mount(None) {
        Ok(()) => return Ok(()),
        Err(f) => f,
    };
    let duplicate = first
        .1
        .as_ref()
        .is_none_or(|m| m.iter().any(|m| m.contains("duplicate UUID")));
    if fs_type != "xfs" || first.0 != nix::errno::Errno::EINVAL || !duplicate {
        return Err(failed(None, first));
    }
    tracing::warn!(
        device = %dev.display(),
        mount_point = %target.display(),
        "the XFS filesystem has the UUID of one already mounted (a copy that kept its source's UUID); mounting it with nouuid"
    );
    mount(Some("nouuid")).map_err(|second| {
        let again = failed(Some("nouuid"), second);
        let first = failed(None, first);
        Error::new(
            again.kind(),
            format!("{}; then {}", first.message(), again.message()),
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

/// Create a directory (and parents) with mode 0755 (set, not left to the
/// umask); refuse symlinks at the last component so a planted link cannot
/// redirect a mount.
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
            use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .map_err(|e| Error::from_io(format!("creating {}", dir.display()), &e))?;
            // Exactly 0755 whatever the umask: applications must reach
            // the volume through it.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| Error::from_io(format!("setting the mode of {}", dir.display()), &e))
        }
    }
}

/// The directory handed to applications for `volume` mounted at `mp`:
/// `<mp>/<rel>` (`mount.rootPath`), or `mp` itself for a volume in the
/// root layout (see [`root_layout`]).
///
/// Checked on every call, component by component with
/// `openat(O_NOFOLLOW|O_DIRECTORY)` from the mount point, so a path handed
/// out never leads outside the volume: a symbolic link (or any other
/// non-directory) in its place is an error naming the volume and the fix.
/// With `create`, missing components are made (mode 0755).
pub fn content_dir(volume: &str, mp: &Path, rel: &str, create: bool) -> Result<PathBuf> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    let parts: Vec<&str> = rel
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if parts.is_empty() {
        return Ok(mp.to_path_buf());
    }
    if parts.contains(&"..") {
        return Err(Error::invalid(format!(
            "mount.rootPath {rel:?} must not contain `..`: it names a directory inside each volume"
        )));
    }
    let open_flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    let root = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(open_flags)
            .open(mp)
            .map_err(|e| Error::from_io(format!("volume {volume}: opening {}", mp.display()), &e))?
    };
    if root_layout(mp, parts[0])? {
        return Ok(mp.to_path_buf());
    }
    let mut dir = OwnedFd::from(root);
    let mut at = mp.to_path_buf();
    for c in parts {
        at.push(c);
        let name = std::ffi::CString::new(std::ffi::OsStr::new(c).as_bytes())
            .map_err(|_| Error::invalid(format!("mount.rootPath {rel:?} contains a NUL byte")))?;
        let open = |dir: &OwnedFd| -> std::io::Result<OwnedFd> {
            // SAFETY: a valid descriptor and NUL-terminated name; the
            // returned descriptor is owned by the OwnedFd.
            let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), open_flags) };
            if fd < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                // SAFETY: a descriptor just opened and owned by nobody else.
                Ok(unsafe { OwnedFd::from_raw_fd(fd) })
            }
        };
        let next = match open(&dir) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && create => {
                // SAFETY: as above; mkdirat does not keep the pointer.
                if unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o755) } < 0 {
                    let e = std::io::Error::last_os_error();
                    if e.raw_os_error() != Some(libc::EEXIST) {
                        return Err(Error::from_io(
                            format!("volume {volume}: creating {}", at.display()),
                            &e,
                        ));
                    }
                }
                open(&dir)
            }
            r => r,
        };
        dir = match next {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                return Err(Error::not_found(format!(
                    "volume {volume}: {} is missing (removed by hand?); unmount and mount the volume again to recreate it",
                    at.display()
                )))
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) => {
                let link = std::fs::symlink_metadata(&at)
                    .map(|m| m.file_type().is_symlink())
                    .unwrap_or(true);
                let what = if link {
                    "a symbolic link"
                } else {
                    "not a directory either (a file or device)"
                };
                return Err(Error::system(format!(
                    "volume {volume}: {} is {what}, not a directory; rexray hands out only paths inside the volume. Remove it (`rm {}` while the volume is mounted)",
                    at.display(),
                    at.display()
                )));
            }
            Err(e) => {
                return Err(Error::from_io(
                    format!("volume {volume}: opening {}", at.display()),
                    &e,
                ))
            }
        };
    }
    Ok(at)
}

/// Whether a volume is in the root layout: files at the root of its
/// filesystem beside `lost+found` and `first` (the first component of
/// `mount.rootPath`). Earlier releases bound the root onto kubelet's paths,
/// so pods filled volumes there; such a volume is handed out from its root
/// to every front-end, so that nothing it holds seems to vanish.
pub fn root_layout(mp: &Path, first: &str) -> Result<bool> {
    let rd = std::fs::read_dir(mp)
        .map_err(|e| Error::from_io(format!("reading {}", mp.display()), &e))?;
    for e in rd {
        let e = e.map_err(|e| Error::from_io(format!("reading {}", mp.display()), &e))?;
        let n = e.file_name();
        if n != "lost+found" && n != first {
            return Ok(true);
        }
    }
    Ok(false)
}
