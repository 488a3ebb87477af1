//! The files and directories the tools make: exact modes (set explicitly,
//! never left to the umask), and never written through a symbolic link.
//!
//! | what | mode |
//! |---|---|
//! | volume images, snapshot images, copies in progress, records, the catalog, locks, the pid and url files, logs | 0600 |
//! | state, driver, lock, record, log and run directories | 0700 |
//! | `<lib>` when the mount path is inside it | 0711 (applications pass through it to their volumes) |
//! | the mount path and each mount point | 0755 (applications use the volumes) |
//!
//! Every file is created with `O_NOFOLLOW`, and either `O_EXCL` (temporary
//! files, images) or renamed into place (records, the catalog, the spec
//! file, the installed flexrex), so a link planted where a file goes makes
//! the write fail instead of landing on the link's target.

/// Crash-safe file writes (temporary file, fsync, rename), for every
/// layer: the state directory's records and the front-ends' own files.
pub use crate::state::atomic;

use crate::{Error, Result};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Files only the owner (root) reads: images, records, pid file, logs.
pub const PRIVATE_FILE: u32 = 0o600;
/// Directories only the owner enters.
pub const PRIVATE_DIR: u32 = 0o700;
/// A directory applications pass through but cannot list: `<lib>` when
/// the mount path is inside it.
pub const TRAVERSE_DIR: u32 = 0o711;
/// The mount path and the mount points: applications use what is there.
pub const SHARED_DIR: u32 = 0o755;

/// What to do when a directory's path is a symbolic link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// A directory the tools name themselves (`<lib>/locks`, the mount
    /// path, ...): a link there was planted, refuse it.
    Refuse,
    /// A location the operator configures (`<lib>`, `loop.volumePath`):
    /// a link to a bigger disk is a normal setup.
    Follow,
}

fn is_loop(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::ELOOP)
}

/// The error for a write refused because `path` is a symbolic link.
fn link_error(path: &Path, what: &str) -> Error {
    Error::system(format!(
        "{} is a symbolic link; refusing to write the {what} through it (remove the link)",
        path.display()
    ))
}

/// An error opening `path` for writing: a link gets its own message.
fn open_error(path: &Path, what: &str, e: &std::io::Error) -> Error {
    if is_loop(e) {
        link_error(path, what)
    } else {
        Error::from_io(format!("opening {what} {}", path.display()), e)
    }
}

/// Make `dir` a directory with exactly `mode`. A missing one is created
/// (its missing parents 0755, as `mkdir -p` makes them); an existing one
/// with another mode is changed, and the change logged with the old and
/// new mode. `link` says whether a symbolic link at `dir` is followed.
pub fn own_dir(dir: &Path, mode: u32, link: Link) -> Result<()> {
    // The common case in one call: an existing directory, no link at its
    // last component, with its mode already right. `lstat` names the
    // same object the open below would (no link followed at the end, the
    // same walk above it), and nothing here needs the directory open
    // afterwards: only a change of mode does, on the one checked.
    if let Ok(meta) = std::fs::symlink_metadata(dir) {
        if meta.is_dir() && meta.mode() & 0o7777 == mode {
            if nix::unistd::geteuid().is_root() {
                refuse_other_users_path(dir, &meta, false)?;
            }
            return Ok(());
        }
    }
    let mut created = false;
    // Otherwise: opened with no link at its last component; a missing
    // one is made, then opened the same way.
    let mut opened = open_dir(dir, true);
    if opened
        .as_ref()
        .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
    {
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            if !parent.exists() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(SHARED_DIR)
                    .create(parent)
                    .map_err(|e| Error::from_io(format!("creating {}", parent.display()), &e))?;
            }
        }
        match std::fs::DirBuilder::new().mode(mode).create(dir) {
            Ok(()) => created = true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::from_io(format!("creating {}", dir.display()), &e)),
        }
        opened = open_dir(dir, true);
    }
    // With O_DIRECTORY a link answers ENOTDIR (ELOOP without it).
    let maybe_link = |e: &std::io::Error| is_loop(e) || e.raw_os_error() == Some(libc::ENOTDIR);
    let mut through_link = false;
    if link == Link::Follow && opened.as_ref().is_err_and(maybe_link) {
        opened = open_dir(dir, false);
        through_link = opened.is_ok();
    }
    let f = opened.map_err(|e| {
        let link = link == Link::Refuse
            && (is_loop(&e)
                || std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()));
        if link {
            Error::system(format!(
                "{} is a symbolic link; rexray makes this directory itself and does not follow a link there (remove the link)",
                dir.display()
            ))
        } else if e.raw_os_error() == Some(libc::ENOTDIR) {
            Error::system(format!("{} exists and is not a directory", dir.display()))
        } else {
            Error::from_io(format!("opening directory {}", dir.display()), &e)
        }
    })?;
    let meta = f
        .metadata()
        .map_err(|e| Error::from_io(format!("stat {}", dir.display()), &e))?;
    if nix::unistd::geteuid().is_root() {
        refuse_other_users_path(dir, &meta, through_link)?;
    }
    let old = meta.mode() & 0o7777;
    if old != mode {
        // Another user's directory (root's state, read by a user's
        // `volume ls`): only its owner may change it; say so and go on.
        if meta.uid() != nix::unistd::geteuid().as_raw() && !nix::unistd::geteuid().is_root() {
            tracing::info!(
                path = %dir.display(),
                "{} has mode {old:04o}, not {mode:04o}; only its owner (uid {}) can change that",
                dir.display(),
                meta.uid()
            );
            return Ok(());
        }
        // fchmod on the directory opened above: the one checked, not
        // whatever the path names by now.
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::from_io(format!("setting the mode of {}", dir.display()), &e))?;
        if !created {
            tracing::warn!(
                path = %dir.display(),
                "changed the mode of {} from {old:04o} to {mode:04o}",
                dir.display()
            );
        }
    }
    Ok(())
}

/// Open the directory `dir` for reading; with `no_link`, not through a
/// symbolic link at its last component.
fn open_dir(dir: &Path, no_link: bool) -> std::io::Result<File> {
    let nofollow = if no_link { libc::O_NOFOLLOW } else { 0 };
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC | nofollow)
        .open(dir)
}

/// Refuse, as root, a directory another user could replace what is in
/// it (see [`refuse_other_users_path`]): where a socket is served, say, a
/// user owning the directory could swap the socket for their own. Links
/// on the way are followed; a missing directory passes (it is made as
/// root's).
pub fn refuse_others_dir(dir: &Path) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let Ok(meta) = std::fs::metadata(dir) else {
        return Ok(());
    };
    let through_link = std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink());
    refuse_other_users_path(dir, &meta, through_link)
}

/// The offset of the first non-zero byte of `f` in `start..end`, read in
/// 64 KiB pieces (a short file ends the range early).
pub fn first_nonzero_in(f: &File, start: u64, end: u64) -> std::io::Result<Option<u64>> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 64 * 1024];
    let mut pos = start;
    while pos < end {
        let want = (end - pos).min(buf.len() as u64) as usize;
        let n = f.read_at(&mut buf[..want], pos)?;
        if n == 0 {
            break;
        }
        if let Some(i) = buf[..n].iter().position(|&b| b != 0) {
            return Ok(Some(pos + i as u64));
        }
        pos += n as u64;
    }
    Ok(None)
}

/// Directories this process found safe (see [`refuse_other_users_path`]),
/// as named and as resolved, each with its resolved path: every
/// directory above one is safe too.
static SAFE: std::sync::Mutex<Safe> = std::sync::Mutex::new(Safe(Vec::new()));

/// The paths of [`SAFE`]: a process checks about a dozen, so a list
/// compared byte by byte costs less than hashing each path.
struct Safe(Vec<(PathBuf, PathBuf)>);

impl Safe {
    fn get(&self, dir: &Path) -> Option<&PathBuf> {
        let d = dir.as_os_str();
        self.0
            .iter()
            .find(|(k, _)| k.as_os_str() == d)
            .map(|(_, v)| v)
    }
    fn contains_key(&self, dir: &Path) -> bool {
        self.get(dir).is_some()
    }
    /// Record `dir` → `real`; `keep` leaves an existing entry as it is.
    fn insert(&mut self, dir: &Path, real: PathBuf, keep: bool) {
        let d = dir.as_os_str();
        match self.0.iter_mut().find(|(k, _)| k.as_os_str() == d) {
            Some(_) if keep => {}
            Some((_, v)) => *v = real,
            None => self.0.push((dir.to_path_buf(), real)),
        }
    }
}

/// The resolved path (links followed) of a directory [`own_dir`] checked
/// in this process, as root, without asking the filesystem again.
pub fn resolved(dir: &Path) -> Option<PathBuf> {
    SAFE.lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(dir)
        .cloned()
}

/// Refuse a directory root keeps its state in when another user could
/// replace what is in it: it, or a directory above it (links resolved),
/// is owned by a user other than root, or a directory above it is
/// writable by every user without the sticky bit. Such a user could swap
/// records, images or mount points between a check and its use (a
/// `REXRAY_HOME` under `/tmp` that another user made first, say).
///
/// `meta` is the open directory's; `through_link` says it was reached
/// through a symbolic link at its last component.
fn refuse_other_users_path(dir: &Path, meta: &std::fs::Metadata, through_link: bool) -> Result<()> {
    let refuse = |d: &Path, why: String, real: &Path| {
        let within = if d == real {
            String::new()
        } else {
            format!(", which holds {}", real.display())
        };
        Err(Error::system(format!(
            "{} {why}{within}: another user could replace what rexray keeps there; refusing to use it as root (`chown root:` it and make it writable by root only, or use a directory of root's)",
            d.display()
        )))
    };
    let owned_by = |uid: u32| format!("is owned by uid {uid}, not root");
    // Known already, or a directory named in one this process found safe
    // (a process opens a dozen under one home) whose path has no link in
    // it, and not reached through a link itself: then its path names
    // what it named when its parent was checked (only root can change
    // any directory on it), everything above it is checked, and only its
    // own owner is left, which is the open directory's. (Its mode is
    // corrected by the caller.)
    let known_real = {
        let safe = SAFE.lock().unwrap_or_else(|e| e.into_inner());
        let named = dir.parent().zip(dir.file_name()).and_then(|(p, name)| {
            let plain = !through_link
                && p.join(name).as_os_str() == dir.as_os_str()
                && safe.get(p)?.as_os_str() == p.as_os_str();
            plain.then(|| dir.to_path_buf())
        });
        safe.get(dir).cloned().or(named)
    };
    if let Some(real) = known_real {
        if meta.uid() != 0 {
            return refuse(&real, owned_by(meta.uid()), &real);
        }
        SAFE.lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(dir, real, false);
        return Ok(());
    }
    let real = dir
        .canonicalize()
        .map_err(|e| Error::from_io(format!("resolving {}", dir.display()), &e))?;
    let known = |d: &Path| {
        SAFE.lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(d)
    };
    for d in real.ancestors() {
        let m;
        let m = if d == real {
            meta
        } else if known(d) {
            break;
        } else {
            m = std::fs::symlink_metadata(d)
                .map_err(|e| Error::from_io(format!("stat {}", d.display()), &e))?;
            &m
        };
        if m.uid() != 0 {
            return refuse(d, owned_by(m.uid()), &real);
        }
        if d != real && m.mode() & 0o002 != 0 && m.mode() & 0o1000 == 0 {
            // (Its own mode is corrected by the caller.)
            return refuse(
                d,
                "is writable by every user (and not sticky)".into(),
                &real,
            );
        }
    }
    let mut safe = SAFE.lock().unwrap_or_else(|e| e.into_inner());
    for d in real.ancestors() {
        safe.insert(d, d.to_path_buf(), true);
    }
    safe.insert(dir, real, false);
    Ok(())
}

/// Set an existing file's mode to `mode` if it has other bits, logging
/// the change; `f` is the open file (fchmod, never through a link).
pub fn tighten(f: &File, path: &Path, mode: u32) {
    let Ok(m) = f.metadata() else { return };
    let old = m.mode() & 0o7777;
    if old & !mode != 0
        && f.set_permissions(std::fs::Permissions::from_mode(mode))
            .is_ok()
    {
        tracing::warn!(
            path = %path.display(),
            "changed the mode of {} from {old:04o} to {mode:04o}",
            path.display()
        );
    }
}

/// Create the new file `path` for writing with exactly `mode`: fails if
/// anything is there (`O_EXCL`, which also refuses a symbolic link).
pub fn create_new(path: &Path, mode: u32, what: &str) -> Result<File> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::exists(format!(
                    "creating {what} {}: it already exists",
                    path.display()
                ))
            } else {
                open_error(path, what, &e)
            }
        })?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::from_io(format!("setting the mode of {}", path.display()), &e))?;
    Ok(f)
}

/// Open (creating it 0600) a file that is written in place: never through
/// a symbolic link, and only a regular file with no other name (a hard
/// link planted there would make the write land in someone else's file).
pub fn open_private(path: &Path, append: bool, what: &str) -> Result<File> {
    let mut o = std::fs::OpenOptions::new();
    if append {
        o.append(true);
    } else {
        o.read(true).write(true);
    }
    let f = o
        .create(true)
        .mode(PRIVATE_FILE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| open_error(path, what, &e))?;
    let m = f
        .metadata()
        .map_err(|e| Error::from_io(format!("stat {}", path.display()), &e))?;
    if !m.is_file() || m.nlink() != 1 {
        return Err(Error::system(format!(
            "{} is not a regular file of its own (it is a device, pipe or a file with {} names); refusing to write the {what} there (remove it)",
            path.display(),
            m.nlink()
        )));
    }
    // Back to blocking writes (O_NONBLOCK only kept the open of a planted
    // pipe from hanging).
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let fl = libc::fcntl(f.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(f.as_raw_fd(), libc::F_SETFL, fl & !libc::O_NONBLOCK);
    }
    Ok(f)
}

/// Whether `name` is a temporary file a writer of [`crate::state::atomic`]
/// or a copy names (`.<name>.tmp.<...>`, `<id>.copying`).
pub fn is_temporary(name: &str) -> bool {
    (name.starts_with('.') && name.contains(".tmp.")) || name.ends_with(".copying")
}

/// Create the new temporary file `path` (as [`create_new`]) and hold an
/// exclusive flock on it for as long as the returned file is open, which
/// tells [`sweep_temporaries`] that its writer lives. A sweep may take
/// the file in the instant between its creation and the flock: then the
/// flock fails, or the path no longer names the file, and the file is
/// made again.
pub fn create_locked(path: &Path, mode: u32, what: &str) -> Result<File> {
    let mut tries = 0;
    loop {
        tries += 1;
        match create_new(path, mode, what) {
            Ok(f) => {
                let ours = f.metadata().map(|m| (m.dev(), m.ino())).ok();
                let now = std::fs::symlink_metadata(path)
                    .map(|m| (m.dev(), m.ino()))
                    .ok();
                if try_flock(&f) && ours.is_some() && ours == now {
                    return Ok(f);
                }
            }
            // A sweep holds the file it found there and removes it.
            Err(e) if e.kind() == crate::Kind::AlreadyExists && tries > 1 => {}
            Err(e) => return Err(e),
        }
        if tries >= 200 {
            return Err(Error::busy(format!(
                "creating {what} {}: a sweep of temporary files kept taking it; try again",
                path.display()
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Take an exclusive flock without waiting; false if someone holds one.
pub fn try_flock(f: &File) -> bool {
    // SAFETY: flock on a descriptor we own.
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// Remove the temporary files in `dir` whose writer is dead. Every writer
/// holds an flock on its temporary file while it exists (see
/// [`create_locked`]), so a file no process holds was left by a killed
/// one; a live writer's file is never taken. Returns how many went.
pub fn sweep_temporaries(dir: &Path) -> usize {
    let mut n = 0;
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    for e in rd.flatten() {
        if !is_temporary(&e.file_name().to_string_lossy()) {
            continue;
        }
        let path = e.path();
        let Ok(f) = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(&path)
        else {
            continue;
        };
        let Ok(m) = f.metadata() else { continue };
        if !m.is_file() || !try_flock(&f) {
            continue;
        }
        // Still the file we locked? A writer that finished renamed it
        // away (temporary names are never reused while their file lives).
        let same = std::fs::symlink_metadata(&path)
            .is_ok_and(|now| now.dev() == m.dev() && now.ino() == m.ino());
        if same && std::fs::remove_file(&path).is_ok() {
            tracing::warn!(file = %path.display(), "removed a temporary file a killed process left behind");
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirs_get_exact_modes_and_links_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/b/c");
        own_dir(&d, PRIVATE_DIR, Link::Refuse).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&d), 0o700);
        assert_eq!(mode(&t.path().join("a/b")), 0o755);
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        own_dir(&d, PRIVATE_DIR, Link::Refuse).unwrap();
        assert_eq!(mode(&d), 0o700);
        let l = t.path().join("l");
        std::os::unix::fs::symlink(&d, &l).unwrap();
        let e = own_dir(&l, PRIVATE_DIR, Link::Refuse).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        own_dir(&l, TRAVERSE_DIR, Link::Follow).unwrap();
        assert_eq!(mode(&d), 0o711);
    }

    /// The directories under one this process checked are checked by
    /// what is left (their own owner, and no link; the whole path again
    /// when a link is on it), and are known with their resolved path.
    #[test]
    fn directories_under_a_checked_one_keep_every_check() {
        let t = tempfile::tempdir().unwrap();
        let real = t.path().canonicalize().unwrap().join("real");
        own_dir(&real, PRIVATE_DIR, Link::Follow).unwrap();
        let plain = real.join("plain");
        own_dir(&plain, PRIVATE_DIR, Link::Refuse).unwrap();
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        own_dir(&link, PRIVATE_DIR, Link::Follow).unwrap();
        let sub = link.join("sub");
        own_dir(&sub, PRIVATE_DIR, Link::Refuse).unwrap();
        assert!(real.join("sub").is_dir());
        // A link below a checked directory is refused all the same.
        std::os::unix::fs::symlink(&plain, real.join("sublink")).unwrap();
        let e = own_dir(&real.join("sublink"), PRIVATE_DIR, Link::Refuse).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        // And a loose mode is corrected.
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o777)).unwrap();
        own_dir(&plain, PRIVATE_DIR, Link::Refuse).unwrap();
        assert_eq!(std::fs::metadata(&plain).unwrap().mode() & 0o7777, 0o700);
        if !nix::unistd::geteuid().is_root() {
            // (Only root checks owners, and keeps what it found.)
            assert_eq!(resolved(&link), None);
            return;
        }
        assert_eq!(resolved(&link), Some(real.clone()));
        assert_eq!(resolved(&sub), Some(real.join("sub")));
        assert_eq!(resolved(&plain), Some(plain.clone()));
        // Another user's directory is refused, below a checked one too,
        // and when it was found safe before.
        let nobody = nix::unistd::Uid::from_raw(65534);
        let theirs = real.join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        nix::unistd::chown(&theirs, Some(nobody), None).unwrap();
        let e = own_dir(&theirs, PRIVATE_DIR, Link::Refuse).unwrap_err();
        let want = format!("{} is owned by uid 65534", theirs.display());
        assert!(e.to_string().contains(&want), "{e}");
        nix::unistd::chown(&plain, Some(nobody), None).unwrap();
        let e = own_dir(&plain, PRIVATE_DIR, Link::Refuse).unwrap_err();
        assert!(e.to_string().contains("owned by uid 65534"), "{e}");
        // A link on the path is followed again: pointed meanwhile at a
        // directory another user owns, what is under it is refused, even
        // a directory of root's.
        let other = t.path().canonicalize().unwrap().join("other");
        std::fs::create_dir_all(other.join("fresh")).unwrap();
        nix::unistd::chown(&other, Some(nobody), None).unwrap();
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(&other, &link).unwrap();
        let e = own_dir(&link.join("fresh"), PRIVATE_DIR, Link::Refuse).unwrap_err();
        let want = format!("{} is owned by uid 65534", other.display());
        assert!(e.to_string().contains(&want), "{e}");
    }

    #[test]
    fn files_are_never_written_through_links() {
        let t = tempfile::tempdir().unwrap();
        let victim = t.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let l = t.path().join("l");
        std::os::unix::fs::symlink(&victim, &l).unwrap();
        assert!(create_new(&l, PRIVATE_FILE, "test file").is_err());
        let e = open_private(&l, true, "log").unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        let h = t.path().join("h");
        std::fs::hard_link(&victim, &h).unwrap();
        let e = open_private(&h, false, "pid file").unwrap_err();
        assert!(e.to_string().contains("2 names"), "{e}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        let f = create_new(&t.path().join("new"), PRIVATE_FILE, "test file").unwrap();
        assert_eq!(f.metadata().unwrap().mode() & 0o7777, 0o600);
    }

    #[test]
    fn sweeps_take_only_what_no_live_writer_holds() {
        let t = tempfile::tempdir().unwrap();
        let live = t.path().join(".a.json.tmp.1.2");
        let dead = t.path().join("x.copying");
        let kept = t.path().join("a.json");
        let _held = create_locked(&live, PRIVATE_FILE, "test file").unwrap();
        drop(create_locked(&dead, PRIVATE_FILE, "test file").unwrap());
        std::fs::write(&kept, b"{}").unwrap();
        assert_eq!(sweep_temporaries(t.path()), 1);
        assert!(live.exists() && kept.exists() && !dead.exists());
    }
}
