//! Node operations: everything done to this host's kernel for a volume —
//! probing and formatting devices, mounting and unmounting, reading
//! mountinfo, waiting for devices. Node operations never talk to a backend.

pub mod cmd;
#[cfg(test)]
pub mod fake;
pub mod freeze;
pub mod fs;
pub mod kmsg;
pub mod mountinfo;

use crate::model::{Content, FsType};
use crate::{Error, Result};
use nix::mount::{MntFlags, MsFlags};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use mountinfo::Mount;

/// Everything the workflows do to this host's kernel for a volume, as one
/// seam: [`Kernel`] does it for real (the functions of this module), and
/// the unit tests' fake (`node::fake`) keeps a mount table and devices in
/// memory, so the workflows' decisions are tested without root.
///
/// Decisions stay out of it: whether to format ([`ensure_filesystem`]),
/// what to unmount, when to detach are the callers'. Each method is one
/// kernel fact or one kernel action.
pub trait Node: Send + Sync {
    /// Fail with a clear message naming `what` unless this process may
    /// attach and mount (see [`privileged`]).
    fn require_privileges(&self, what: &str) -> Result<()>;
    /// Every mount in this process's mount namespace.
    fn mounts(&self) -> Result<Vec<Mount>>;
    /// Mounts whose mount point is exactly `path` (several if stacked).
    fn mounts_at(&self, path: &Path) -> Result<Vec<Mount>> {
        Ok(self
            .mounts()?
            .into_iter()
            .filter(|m| m.mount_point == path)
            .collect())
    }
    /// Mounts of the filesystem on device `dev` (major, minor).
    fn mounts_of(&self, dev: (u32, u32)) -> Result<Vec<Mount>> {
        Ok(self
            .mounts()?
            .into_iter()
            .filter(|m| m.dev == dev)
            .collect())
    }
    /// Whether something is mounted at `path`, as cheaply as the kernel
    /// tells (one `statx` where it can): for the Docker endpoint's
    /// in-memory answers.
    fn is_mounted(&self, path: &Path) -> Result<bool>;
    /// The names of the entries of `base` something is mounted on.
    fn mounted_under(&self, base: &Path) -> Result<HashSet<String>>;
    /// The (major, minor) numbers of a block device node.
    fn device_numbers(&self, dev: &Path) -> Result<(u32, u32)>;
    /// Wait until `dev` is a block device with a non-zero size.
    fn wait_for_device(&self, dev: &Path, timeout: Duration) -> Result<(u32, u32)>;
    /// What a device (or image file) holds, with blkid's tags.
    fn probe_tags(
        &self,
        dev: &Path,
        timeout: Duration,
    ) -> Result<(fs::Probe, Vec<(String, String)>)>;
    /// Write what the page cache holds for `dev` through to its backing
    /// store (`fsync` on the device).
    fn sync_device(&self, dev: &Path) -> Result<()>;
    /// Make filesystem `fs` on `dev` (`overwrite`: over a signature).
    fn mkfs(&self, dev: &Path, fs: FsType, overwrite: bool, timeout: Duration) -> Result<()>;
    /// Give the filesystem in an unattached image a fresh UUID.
    fn regenerate_uuid(
        &self,
        image: &Path,
        fs_type: &str,
        timeout: Duration,
    ) -> Result<fs::NewUuid>;
    /// Grow the filesystem of `dev`, mounted at `mount_point`, to the device.
    fn grow(&self, dev: &Path, mount_point: &Path, fs_type: &str, timeout: Duration) -> Result<()>;
    /// Where `path` is as the kernel names it (every link on it
    /// followed), as mount points are written in the mount table; `None`
    /// when it cannot be told.
    fn resolve(&self, path: &Path) -> Option<PathBuf>;
    /// Make a mount point (see [`ensure_dir`]).
    fn ensure_dir(&self, dir: &Path) -> Result<()>;
    /// Mount a block device's filesystem (see [`mount_device`]).
    fn mount_device(&self, dev: &Path, target: &Path, fs_type: &str, read_only: bool)
        -> Result<()>;
    /// Bind-mount `source` at `target` (see [`bind`]).
    fn bind(&self, source: &Path, target: &Path, read_only: bool) -> Result<()>;
    /// Bind `dir`, a directory inside the mount at `mp`, at `target`
    /// through descriptors opened beneath `mp` (see [`bind_beneath`]): a
    /// link swapped in after `dir` was checked is never followed.
    fn bind_beneath(&self, mp: &Path, dir: &Path, target: &Path, read_only: bool) -> Result<()> {
        let _ = mp;
        self.bind(dir, target, read_only)
    }
    /// [`bind`](Self::bind) with mount flags a caller asked for (`ro`,
    /// `nosuid`, `nodev`, `noexec`, `noatime`, ...; see [`bind_flags`]).
    /// Unknown flags are refused before anything is mounted. The default
    /// honours only `ro`; the real kernel applies them all.
    fn bind_with_flags(
        &self,
        source: &Path,
        target: &Path,
        read_only: bool,
        flags: &[String],
    ) -> Result<()> {
        let f = bind_flags(flags)?;
        self.bind(source, target, read_only || f.contains(MsFlags::MS_RDONLY))
    }
    /// Make sure a regular file exists at `path` (the target a block
    /// device is bound onto); a link or a directory there is refused.
    fn ensure_file(&self, path: &Path) -> Result<()> {
        ensure_file(path)
    }
    /// The space and inodes of the filesystem holding `path`.
    fn usage(&self, path: &Path) -> Result<Usage> {
        usage(path)
    }
    /// Unmount every mount stacked at `target`; not mounted is success.
    fn unmount_all(&self, target: &Path) -> Result<()>;
    /// The directory handed out for `volume` mounted at `mp`, checked now
    /// (see [`content_dir`]).
    fn content_dir(&self, volume: &str, mp: &Path, rel: &str, create: bool) -> Result<PathBuf>;
    /// Freeze the filesystem mounted at `mount_point` for a copy, for at
    /// most `bound` (`rexray.freezeTimeout`): see [`freeze::Frozen`].
    fn freeze(&self, mount_point: &Path, bound: Duration) -> Result<Box<dyn FreezeGuard>>;
    /// Thaw a filesystem a crashed copy left frozen; `Ok(false)` when it
    /// was not frozen.
    fn thaw(&self, mount_point: &Path) -> Result<bool>;
}

/// A filesystem frozen for a copy by [`Node::freeze`]: thawed by
/// [`finish`](Self::finish), or when dropped.
pub trait FreezeGuard {
    /// Whether the filesystem has stayed frozen since the freeze: called
    /// once the copy's data is complete, before the copy is published. An
    /// error (the bound passed and the guard thawed it, someone else
    /// thawed it, the guard died) means the copy may be torn.
    fn intact(&self) -> Result<()>;
    /// Thaw, and fail if the filesystem did not stay frozen the whole
    /// time: what was copied meanwhile may be torn.
    fn finish(self: Box<Self>) -> Result<()>;
}

/// The real node: this host's kernel and tools.
#[derive(Debug, Clone, Copy, Default)]
pub struct Kernel;

impl Node for Kernel {
    fn require_privileges(&self, what: &str) -> Result<()> {
        require_privileges(what)
    }
    fn mounts(&self) -> Result<Vec<Mount>> {
        mountinfo::mounts()
    }
    fn mounts_at(&self, path: &Path) -> Result<Vec<Mount>> {
        mountinfo::mounts_at(path)
    }
    fn mounts_of(&self, dev: (u32, u32)) -> Result<Vec<Mount>> {
        mountinfo::mounts_of(dev)
    }
    fn is_mounted(&self, path: &Path) -> Result<bool> {
        mountinfo::is_mounted(path)
    }
    fn mounted_under(&self, base: &Path) -> Result<HashSet<String>> {
        mountinfo::mounted_under(base)
    }
    fn device_numbers(&self, dev: &Path) -> Result<(u32, u32)> {
        mountinfo::device_numbers(dev)
    }
    fn wait_for_device(&self, dev: &Path, timeout: Duration) -> Result<(u32, u32)> {
        wait_for_device(dev, timeout)
    }
    fn probe_tags(
        &self,
        dev: &Path,
        timeout: Duration,
    ) -> Result<(fs::Probe, Vec<(String, String)>)> {
        fs::probe_tags(dev, timeout)
    }
    fn sync_device(&self, dev: &Path) -> Result<()> {
        fs::sync_device(dev)
    }
    fn resolve(&self, path: &Path) -> Option<PathBuf> {
        mountinfo::kernel_path(path)
    }
    fn mkfs(&self, dev: &Path, fs: FsType, overwrite: bool, timeout: Duration) -> Result<()> {
        fs::mkfs(dev, fs, overwrite, timeout)
    }
    fn regenerate_uuid(
        &self,
        image: &Path,
        fs_type: &str,
        timeout: Duration,
    ) -> Result<fs::NewUuid> {
        fs::regenerate_uuid(image, fs_type, timeout)
    }
    fn grow(&self, dev: &Path, mount_point: &Path, fs_type: &str, timeout: Duration) -> Result<()> {
        fs::grow(dev, mount_point, fs_type, timeout)
    }
    fn ensure_dir(&self, dir: &Path) -> Result<()> {
        ensure_dir(dir)
    }
    fn mount_device(
        &self,
        dev: &Path,
        target: &Path,
        fs_type: &str,
        read_only: bool,
    ) -> Result<()> {
        mount_device(dev, target, fs_type, read_only)
    }
    fn bind(&self, source: &Path, target: &Path, read_only: bool) -> Result<()> {
        bind(source, target, read_only)
    }
    fn bind_beneath(&self, mp: &Path, dir: &Path, target: &Path, read_only: bool) -> Result<()> {
        bind_beneath(mp, dir, target, read_only)
    }
    fn bind_with_flags(
        &self,
        source: &Path,
        target: &Path,
        read_only: bool,
        flags: &[String],
    ) -> Result<()> {
        bind_with_flags(source, target, read_only, flags)
    }
    fn unmount_all(&self, target: &Path) -> Result<()> {
        unmount_all(target)
    }
    fn content_dir(&self, volume: &str, mp: &Path, rel: &str, create: bool) -> Result<PathBuf> {
        content_dir(volume, mp, rel, create)
    }
    fn freeze(&self, mount_point: &Path, bound: Duration) -> Result<Box<dyn FreezeGuard>> {
        Ok(Box::new(freeze::Frozen::freeze(mount_point, bound)?))
    }
    fn thaw(&self, mount_point: &Path) -> Result<bool> {
        freeze::thaw(mount_point)
    }
}

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

/// Whether a test has made every device never show up (failpoint
/// `node::device-absent`); always false in a build without failpoints.
fn device_made_absent() -> bool {
    fail::fail_point!("node::device-absent", |_| true);
    false
}

/// Wait until `dev` is a block device node with a non-zero size.
pub fn wait_for_device(dev: &Path, timeout: Duration) -> Result<(u32, u32)> {
    let deadline = Instant::now() + timeout;
    // Tests make a device that never shows up, to prove the bound.
    let absent = device_made_absent();
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
/// signature is never formatted otherwise. `content` is the backend's
/// word on the volume's bytes: all zero (then the probe is skipped), or a
/// non-zero byte at some offset (then a device with no signature holds
/// data no tool recognises, and is not formatted either).
///
/// Formatting over a signature (with `overwrite`) first logs a warning
/// naming `volume`, the device and what it held (type, UUID, label).
pub fn ensure_filesystem(
    node: &dyn Node,
    volume: &str,
    dev: &Path,
    want: FsType,
    overwrite: bool,
    content: Content,
    limits: FormatTimeouts,
) -> Result<String> {
    let (probe, tags) = match content {
        Content::Blank => (fs::Probe::Blank, Vec::new()),
        Content::Written(at) => match node.probe_tags(dev, limits.probe)? {
            (fs::Probe::Blank, tags) => (fs::Probe::Other(fs::unrecognised(at)), tags),
            found => found,
        },
        Content::Unknown => node.probe_tags(dev, limits.probe)?,
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
            node.mkfs(dev, want, overwrite, limits.mkfs)?;
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
        err.map_message(|m| format!("{m}{}", kmsg::said(said.as_deref())))
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
        again.map_message(|m| format!("{}; then {m}", first.message()))
    })
}

/// Bind-mount the directory `dir` (inside the filesystem mounted at `mp`)
/// at `target`, read-only if asked. Each component of `dir` below `mp` is
/// opened with `openat(O_NOFOLLOW|O_DIRECTORY)` and the directory opened
/// is what is bound (through `/proc/self/fd`), so a symbolic link swapped
/// in after `dir` was checked is refused, never followed out of the
/// volume.
pub fn bind_beneath(mp: &Path, dir: &Path, target: &Path, read_only: bool) -> Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::OpenOptionsExt;
    let rel = dir.strip_prefix(mp).map_err(|_| {
        Error::system(format!(
            "{} is not inside the mount point {}",
            dir.display(),
            mp.display()
        ))
    })?;
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    let opening = |at: &Path, e: &std::io::Error| {
        let why = if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) {
            " (a symbolic link or not a directory: rexray binds only directories inside the volume)"
        } else {
            ""
        };
        Error::from_io(format!("opening {}{why}", at.display()), e)
    };
    let mut fd: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(mp)
        .map_err(|e| opening(mp, &e))?
        .into();
    let mut at = mp.to_path_buf();
    for c in rel.components() {
        let std::path::Component::Normal(c) = c else {
            return Err(Error::system(format!(
                "{} must name a directory below {}",
                dir.display(),
                mp.display()
            )));
        };
        at.push(c);
        let name = std::ffi::CString::new(c.as_bytes())
            .map_err(|_| Error::invalid(format!("{} contains a NUL byte", dir.display())))?;
        // SAFETY: a valid descriptor and a NUL-terminated name.
        let next = unsafe { libc::openat(fd.as_raw_fd(), name.as_ptr(), flags) };
        if next < 0 {
            return Err(opening(&at, &std::io::Error::last_os_error()));
        }
        // SAFETY: a descriptor just opened and owned by nobody else.
        fd = unsafe { OwnedFd::from_raw_fd(next) };
    }
    let source = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    bind(&source, target, read_only).map_err(|e| {
        Error::new(
            e.kind(),
            e.message()
                .replace(&source.display().to_string(), &dir.display().to_string()),
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
        let flags =
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | kept_flags(target);
        if let Err(e) = nix::mount::mount(None::<&str>, target, None::<&str>, flags, None::<&str>) {
            let _ = nix::mount::umount2(target, MntFlags::empty());
            return Err(err(e));
        }
    }
    Ok(())
}

/// The flags a fresh bind at `target` inherited from its source (nosuid,
/// nodev, noexec, read-only, the atime mode), to be named again in its
/// remount: a bind's remount sets every one of them anew, so one that
/// names only `ro` would drop the nosuid and nodev of the volume's mount.
fn kept_flags(target: &Path) -> MsFlags {
    use nix::sys::statvfs::FsFlags;
    let Ok(st) = nix::sys::statvfs::statvfs(target) else {
        return MsFlags::empty();
    };
    let had = st.flags();
    [
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ]
    .into_iter()
    .filter(|(st, _)| had.contains(*st))
    .fold(MsFlags::empty(), |f, (_, m)| f | m)
}

/// The flags of a bind's remount for mount options a caller asked for
/// (a CSI volume capability's `mount_flags`): `ro`/`rw`, `nosuid`/`suid`,
/// `nodev`/`dev`, `noexec`/`exec`, `noatime`, `nodiratime`, `relatime`,
/// `strictatime`, and `defaults`/`bind` (nothing). Anything else (a
/// filesystem's own option) is refused by name: a bind cannot apply it.
pub fn bind_flags(flags: &[String]) -> Result<MsFlags> {
    let mut f = MsFlags::empty();
    for raw in flags {
        for opt in raw.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            match opt {
                "ro" => f |= MsFlags::MS_RDONLY,
                "nosuid" => f |= MsFlags::MS_NOSUID,
                "nodev" => f |= MsFlags::MS_NODEV,
                "noexec" => f |= MsFlags::MS_NOEXEC,
                "noatime" => f |= MsFlags::MS_NOATIME,
                "nodiratime" => f |= MsFlags::MS_NODIRATIME,
                "relatime" => f |= MsFlags::MS_RELATIME,
                "strictatime" => f |= MsFlags::MS_STRICTATIME,
                "rw" | "suid" | "dev" | "exec" | "defaults" | "bind" | "rbind" => {}
                other => {
                    return Err(Error::invalid(format!(
                        "unsupported mount flag {}: a bind mount takes ro, rw, nosuid, nodev, noexec, noatime, nodiratime, relatime, strictatime",
                        crate::input::quote(other)
                    )))
                }
            }
        }
    }
    Ok(f)
}

/// Bind `source` on `target`, then remount the bind with `flags` (see
/// [`bind_flags`]) and read-only when asked. A remount that fails undoes
/// the bind.
pub fn bind_with_flags(
    source: &Path,
    target: &Path,
    read_only: bool,
    flags: &[String],
) -> Result<()> {
    let mut f = bind_flags(flags)?;
    if read_only {
        f |= MsFlags::MS_RDONLY;
    }
    if f.is_empty() {
        return bind(source, target, false);
    }
    bind(source, target, false)?;
    let remount = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | f | kept_flags(target);
    if let Err(e) = nix::mount::mount(None::<&str>, target, None::<&str>, remount, None::<&str>) {
        let _ = nix::mount::umount2(target, MntFlags::empty());
        return Err(Error::from_io(
            format!(
                "remounting the bind of {} on {} with {}",
                source.display(),
                target.display(),
                flags.join(",")
            ),
            &std::io::Error::from(e),
        ));
    }
    Ok(())
}

/// Make sure a regular file exists at `path` (its directory too); a link,
/// a directory or a device there is refused.
pub fn ensure_file(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(Error::system(format!(
            "{} exists and is not a regular file; refusing to bind a device onto it",
            path.display()
        ))),
        Err(_) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| Error::from_io(format!("creating {}", dir.display()), &e))?;
            }
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map(drop)
                .map_err(|e| Error::from_io(format!("creating {}", path.display()), &e))
        }
    }
}

/// Space and inodes of a filesystem, as statvfs reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Bytes in all.
    pub total_bytes: u64,
    /// Bytes free for unprivileged writers.
    pub available_bytes: u64,
    /// Bytes used.
    pub used_bytes: u64,
    /// Inodes in all.
    pub total_inodes: u64,
    /// Inodes free for unprivileged writers.
    pub available_inodes: u64,
    /// Inodes used.
    pub used_inodes: u64,
}

/// [`Usage`] of the filesystem holding `path`.
pub fn usage(path: &Path) -> Result<Usage> {
    let s = nix::sys::statvfs::statvfs(path).map_err(|e| {
        Error::from_io(
            format!("reading the usage of {}", path.display()),
            &std::io::Error::from(e),
        )
    })?;
    let frag = s.fragment_size() as u64;
    let total = s.blocks() as u64 * frag;
    let free = s.blocks_free() as u64 * frag;
    let avail = s.blocks_available() as u64 * frag;
    let files = s.files() as u64;
    let ffree = s.files_free() as u64;
    Ok(Usage {
        total_bytes: total,
        available_bytes: avail,
        used_bytes: total.saturating_sub(free),
        total_inodes: files,
        available_inodes: s.files_available() as u64,
        used_inodes: files.saturating_sub(ffree),
    })
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
                return Err(Error::system(format!(
                    "volume {volume}: {} is missing (removed by hand?); unmount and mount the volume again to recreate it",
                    at.display()
                ))
                .with_errno(libc::ENOENT))
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
                ))
                .with_errno(e.raw_os_error().unwrap_or(libc::ENOTDIR))
                .with_reason(crate::Reason::NotADirectory));
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
/// filesystem beside `lost+found`, `first` (the first component of
/// `mount.rootPath`) and the s3fs driver's holder record. Earlier releases bound the root onto kubelet's paths,
/// so pods filled volumes there; such a volume is handed out from its root
/// to every front-end, so that nothing it holds seems to vanish.
pub fn root_layout(mp: &Path, first: &str) -> Result<bool> {
    let rd = std::fs::read_dir(mp)
        .map_err(|e| Error::from_io(format!("reading {}", mp.display()), &e))?;
    for e in rd {
        let e = e.map_err(|e| Error::from_io(format!("reading {}", mp.display()), &e))?;
        let n = e.file_name();
        if n != "lost+found" && n != first && n != crate::storage::s3fs::HOLDER_OBJECT {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Give the filesystem of a new volume's image `img` (a copy, or a volume
/// made from a snapshot; unattached) a UUID of its own before it is
/// published, so it mounts beside its source (XFS refuses a second
/// filesystem of one UUID) and `/dev/disk/by-uuid` names one filesystem.
/// When the UUID cannot be changed the copy is kept as it is, and said so;
/// XFS then mounts it with `nouuid`. Fails (and the copy must be
/// discarded) only when a tool had to be stopped half-way.
pub fn fresh_uuid(
    node: &dyn Node,
    name: &str,
    img: &Path,
    probe_timeout: Duration,
    timeout: Duration,
) -> Result<()> {
    fail::fail_point!("volume::copy-keep-uuid", |_| Ok(()));
    let fs = match node.probe_tags(img, probe_timeout) {
        Ok((fs::Probe::Filesystem(t), _)) => t,
        Ok(_) => return Ok(()),
        Err(e) => {
            tracing::warn!(
                volume = name,
                "{e}; the new volume keeps its source's filesystem UUID"
            );
            return Ok(());
        }
    };
    match node.regenerate_uuid(img, &fs, timeout) {
        Ok(fs::NewUuid::Changed(uuid)) => {
            tracing::info!(volume = name, fs = %fs, uuid = %uuid, "the new volume's filesystem has a UUID of its own");
            Ok(())
        }
        Ok(fs::NewUuid::Kept(why)) => {
            tracing::warn!(
                volume = name,
                fs = %fs,
                "the new volume keeps its source's filesystem UUID ({why}); /dev/disk/by-uuid may name either, and XFS mounts it with nouuid"
            );
            Ok(())
        }
        Err(e) => Err(e.context(format!(
            "cannot create volume {name} (giving its filesystem a UUID of its own); the copy was discarded"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeNode;
    use super::fs::Probe;
    use super::*;

    const LIMITS: FormatTimeouts = FormatTimeouts {
        probe: Duration::from_secs(1),
        mkfs: Duration::from_secs(1),
    };

    #[test]
    fn only_a_blank_device_is_formatted_unless_overwrite_is_asked() {
        let t = tempfile::tempdir().unwrap();
        let node = FakeNode::default();
        let dev = Path::new("/dev/fake0");
        let ensure = |overwrite, content| {
            ensure_filesystem(&node, "vol", dev, FsType::Ext4, overwrite, content, LIMITS)
        };
        let cases = [
            (Probe::Blank, false, Ok("ext4"), true),
            (Probe::Filesystem("xfs".into()), false, Ok("xfs"), false),
            (Probe::Other("LVM2_member".into()), false, Err(()), false),
            (Probe::Other("LVM2_member".into()), true, Ok("ext4"), true),
            (Probe::Filesystem("xfs".into()), true, Ok("ext4"), true),
        ];
        for (held, overwrite, want, formats) in cases {
            node.plug(dev, held.clone(), t.path());
            let got = ensure(overwrite, Content::Unknown);
            match want {
                Ok(fs) => assert_eq!(got.unwrap(), fs, "{held:?}"),
                Err(()) => {
                    let e = got.unwrap_err();
                    assert_eq!(e.kind(), crate::Kind::InUse, "{e}");
                    assert!(e.message().contains("LVM2_member"), "{e}");
                }
            }
            let calls = node.take_calls();
            let made = calls.iter().any(|c| c.starts_with("mkfs"));
            assert_eq!(made, formats, "{held:?} overwrite={overwrite}: {calls:?}");
            node.unplug(dev).unwrap();
        }
        // The backend's word that the device was never written skips the
        // probe.
        node.plug(dev, Probe::Blank, t.path());
        assert_eq!(ensure(false, Content::Blank).unwrap(), "ext4");
        assert_eq!(node.take_calls(), vec!["mkfs /dev/fake0 ext4"]);
        node.unplug(dev).unwrap();
        // Its word that a byte is written makes a device with no
        // signature one that holds data: refused, formatted only when
        // asked to overwrite.
        node.plug(dev, Probe::Blank, t.path());
        let e = ensure(false, Content::Written(10 << 20)).unwrap_err();
        assert_eq!(e.kind(), crate::Kind::InUse, "{e}");
        assert!(
            e.message().contains(
                "data in no format blkid recognises (a non-zero byte at offset 10485760)"
            ),
            "{e}"
        );
        assert_eq!(node.take_calls(), vec!["probe /dev/fake0"]);
        assert_eq!(ensure(true, Content::Written(0)).unwrap(), "ext4");
        assert_eq!(
            node.take_calls(),
            vec!["probe /dev/fake0", "mkfs /dev/fake0 ext4"]
        );
        // A signature found is what it is, written or not.
        node.unplug(dev).unwrap();
        node.plug(dev, Probe::Filesystem("xfs".into()), t.path());
        assert_eq!(ensure(false, Content::Written(0)).unwrap(), "xfs");
    }

    use crate::{Kind, Reason};

    #[test]
    fn a_handed_out_path_that_is_no_directory_is_marked() {
        let t = tempfile::tempdir().unwrap();
        let mp = t.path();
        std::fs::write(mp.join("lost+found"), b"").unwrap();
        std::fs::create_dir(mp.join("data")).unwrap();
        std::fs::write(mp.join("data").join("file"), b"x").unwrap();
        let e = content_dir("v", mp, "data/file", false).unwrap_err();
        assert_eq!(e.reason(), Some(Reason::NotADirectory), "{e}");
        assert_eq!(e.errno(), Some(libc::ENOTDIR), "{e}");
        assert!(e.message().contains("not a directory"), "{e}");
        std::os::unix::fs::symlink("/", mp.join("data").join("link")).unwrap();
        let e = content_dir("v", mp, "data/link", false).unwrap_err();
        assert_eq!(e.reason(), Some(Reason::NotADirectory), "{e}");
        assert!(e.message().contains("symbolic link"), "{e}");
    }

    #[test]
    fn a_missing_handed_out_path_is_no_missing_volume() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("data")).unwrap();
        let e = content_dir("v", t.path(), "data/sub", false).unwrap_err();
        assert_eq!(e.kind(), Kind::System, "{e}");
        assert_eq!(e.errno(), Some(libc::ENOENT), "{e}");
        assert_eq!(e.reason(), None);
        assert!(e.message().contains("is missing"), "{e}");
    }
}
