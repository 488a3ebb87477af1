//! Exclusive file locks (`flock`) with a bounded wait.
//!
//! Locks die with the process, so `kill -9` never leaves a stale lock. A
//! lock file may be deleted while held (by `remove`, or by an operator); to
//! stay correct the holder re-checks after locking that the path still names
//! the file it locked, and retries otherwise.

use crate::error::IoContext;
use crate::{Error, Result};
use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A held exclusive lock; released on drop.
#[derive(Debug)]
pub struct FileLock {
    _lock: Flock<File>,
    path: PathBuf,
}

impl FileLock {
    /// Take the lock at `path`, creating the file; wait up to `timeout`.
    /// `what` names the object for the error message.
    pub fn acquire(path: &Path, timeout: Duration, what: &str) -> Result<FileLock> {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(1);
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                .open(path)
                .ctx(|| format!("opening lock file {}", path.display()))?;
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => {
                    // Is the path still the file we locked?
                    let ours = lock.metadata().map(|m| (m.dev(), m.ino())).ok();
                    let now = std::fs::symlink_metadata(path)
                        .map(|m| (m.dev(), m.ino()))
                        .ok();
                    if ours.is_some() && ours == now {
                        return Ok(FileLock {
                            _lock: lock,
                            path: path.to_path_buf(),
                        });
                    }
                    // Replaced or removed under us: try again, within
                    // the same deadline.
                    if Instant::now() < deadline {
                        continue;
                    }
                }
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => {}
                Err((_, e)) => {
                    return Err(Error::from_io(
                        format!("locking {}", path.display()),
                        &std::io::Error::from(e),
                    ))
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::busy(format!(
                    "{what} is busy: another operation has held its lock {} for over {}; try again, or raise rexray.lockTimeout",
                    path.display(),
                    humantime::format_duration(timeout)
                )));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// Try once; `None` if someone else holds it.
    pub fn try_acquire(path: &Path) -> Result<Option<FileLock>> {
        match Self::acquire(path, Duration::ZERO, "lock") {
            Ok(l) => Ok(Some(l)),
            Err(e) if e.kind() == crate::Kind::Busy => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Delete the lock file while holding the lock (when its object is gone).
    /// Waiters notice the replacement and retry on a fresh file.
    pub fn remove_file(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_and_bounded() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("a.lock");
        let l = FileLock::acquire(&p, Duration::from_secs(1), "volume a").unwrap();
        let e = FileLock::acquire(&p, Duration::from_millis(30), "volume a").unwrap_err();
        assert_eq!(e.kind(), crate::Kind::Busy);
        assert!(e.to_string().contains("volume a is busy"));
        drop(l);
        FileLock::acquire(&p, Duration::from_millis(30), "volume a").unwrap();
    }

    #[test]
    fn deleted_lock_file_is_not_shared() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("b.lock");
        let l = FileLock::acquire(&p, Duration::from_secs(1), "b").unwrap();
        l.remove_file();
        // A new taker gets a fresh file, and the old holder's file is gone.
        let l2 = FileLock::acquire(&p, Duration::from_secs(1), "b").unwrap();
        assert!(p.exists());
        drop(l);
        drop(l2);
    }
}
