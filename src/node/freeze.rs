//! Filesystem freeze (FIFREEZE/FITHAW): flushes dirty data and the journal
//! and blocks writers, so a copy of the device underneath is a clean
//! filesystem.
//!
//! A frozen filesystem blocks every writer on the host until it is thawed,
//! so the freeze must never outlive the process that made it: before
//! freezing, a guard process is forked that holds the read end of a pipe.
//! When the freezer thaws, it tells the guard, which exits. When the
//! freezer dies instead (`kill -9`, a panic with abort, the OOM killer),
//! the pipe closes and the guard thaws. The guard also thaws after a
//! bound (`rexray.freezeTimeout`), and the freezer then learns that its
//! copy was not taken from a frozen filesystem.

use crate::{Error, Result};
use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{ForkResult, Pid};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

nix::ioctl_readwrite!(fifreeze, b'X', 119, libc::c_int);
nix::ioctl_readwrite!(fithaw, b'X', 120, libc::c_int);

/// The guard's exit status when it thawed because the freeze lasted too
/// long.
const GUARD_TIMED_OUT: i32 = 3;
/// What the freezer writes to let the guard go without thawing.
const RELEASE: u8 = b'r';

/// A frozen filesystem; thawed by [`finish`](Frozen::finish), or on drop.
#[derive(Debug)]
pub struct Frozen {
    dir: std::fs::File,
    path: PathBuf,
    guard: Option<Guard>,
}

#[derive(Debug)]
struct Guard {
    pid: Pid,
    tx: OwnedFd,
}

impl Guard {
    /// Fork the guard of `dir`'s filesystem.
    fn spawn(dir: &std::fs::File, bound: Duration) -> Result<Guard> {
        let (rx, tx) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| Error::system(format!("creating the freeze guard's pipe: {e}")))?;
        let dir_fd = dir.as_raw_fd();
        let rx_fd = rx.as_raw_fd();
        let tx_fd = tx.as_raw_fd();
        let bound_ms = libc::c_int::try_from(bound.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: the child calls only async-signal-safe functions (signal,
        // setsid, close, close_range, poll, read, ioctl, _exit) and never
        // returns into Rust code, so forking a multi-threaded process is
        // sound.
        match unsafe { nix::unistd::fork() } {
            Ok(ForkResult::Child) => unsafe { guard_main(dir_fd, rx_fd, tx_fd, bound_ms) },
            Ok(ForkResult::Parent { child }) => {
                drop(rx);
                Ok(Guard { pid: child, tx })
            }
            Err(e) => Err(Error::system(format!(
                "starting the freeze guard (fork): {e}"
            ))),
        }
    }

    /// Let the guard go (the freezer thawed, or never froze) and learn
    /// whether it had to thaw on its own meanwhile.
    fn release(self) -> bool {
        // EPIPE when the guard is gone already: its exit status tells why.
        let _ = nix::unistd::write(&self.tx, &[RELEASE]);
        drop(self.tx);
        loop {
            match waitpid(self.pid, None) {
                Ok(WaitStatus::Exited(_, code)) => return code == GUARD_TIMED_OUT,
                Ok(WaitStatus::Signaled(..)) => return false,
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                // Reaped by someone else (SIGCHLD ignored): nothing to learn.
                Err(_) => return false,
            }
        }
    }
}

/// The guard process: wait for the freezer's word or its death, or for the
/// bound; thaw unless released.
///
/// # Safety
/// Called only in the child of a fork: async-signal-safe calls only.
unsafe fn guard_main(dir: RawFd, rx: RawFd, tx: RawFd, bound_ms: libc::c_int) -> ! {
    // Outlive the freezer: a Ctrl-C or a hang-up meant for it must not
    // kill the guard before it thaws.
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
        libc::signal(sig, libc::SIG_IGN);
    }
    libc::setsid();
    libc::close(tx);
    // Keep no other descriptor: not the freezer's lock files (the locks
    // would outlive it), not a listening socket.
    // Standard streams too: a caller reading the freezer's output to its
    // end must not wait for the guard.
    let (lo, hi) = (dir.min(rx) as libc::c_uint, dir.max(rx) as libc::c_uint);
    for (first, last) in [
        (0, lo.checked_sub(1)),
        (lo + 1, hi.checked_sub(1)),
        (hi + 1, Some(libc::c_uint::MAX)),
    ] {
        match last {
            Some(last) if first <= last => {
                libc::syscall(libc::SYS_close_range, first, last, 0);
            }
            _ => {}
        }
    }
    let mut pfd = libc::pollfd {
        fd: rx,
        events: libc::POLLIN,
        revents: 0,
    };
    let timed_out = loop {
        let n = libc::poll(&mut pfd, 1, bound_ms);
        if n == 0 {
            break true;
        }
        if n < 0 && *libc::__errno_location() == libc::EINTR {
            continue;
        }
        break false;
    };
    if !timed_out {
        let mut b = 0u8;
        let n = libc::read(rx, std::ptr::addr_of_mut!(b).cast(), 1);
        if n == 1 && b == RELEASE {
            libc::_exit(0);
        }
    }
    // The freezer died (end of file) or the bound passed.
    let mut arg: libc::c_int = 0;
    let _ = fithaw(dir, &mut arg);
    libc::_exit(if timed_out { GUARD_TIMED_OUT } else { 1 });
}

impl Frozen {
    /// Freeze the filesystem mounted at `mount_point` for at most `bound`.
    pub fn freeze(mount_point: &Path, bound: Duration) -> Result<Frozen> {
        let dir = std::fs::File::open(mount_point)
            .map_err(|e| Error::from_io(format!("opening {}", mount_point.display()), &e))?;
        let guard = Guard::spawn(&dir, bound)?;
        let mut arg: libc::c_int = 0;
        // SAFETY: the descriptor is open; the argument is an int as the
        // ioctl expects.
        if let Err(e) = unsafe { fifreeze(dir.as_raw_fd(), &mut arg) } {
            guard.release();
            let io = std::io::Error::from(e);
            let mut err = Error::from_io(
                format!("freezing the filesystem at {}", mount_point.display()),
                &io,
            );
            if e == Errno::EBUSY {
                err = Error::in_use(format!(
                    "the filesystem at {} is already frozen; thaw it (fsfreeze -u) and retry",
                    mount_point.display()
                ));
            }
            return Err(err);
        }
        tracing::debug!(mount_point = %mount_point.display(), "filesystem frozen");
        Ok(Frozen {
            dir,
            path: mount_point.to_path_buf(),
            guard: Some(guard),
        })
    }

    /// Thaw, and fail if the filesystem did not stay frozen the whole time
    /// (the guard's bound passed): what was copied meanwhile may be torn.
    pub fn finish(mut self, bound: Duration) -> Result<()> {
        if self.thaw_now() {
            return Err(Error::system(format!(
                "the filesystem at {} was frozen longer than rexray.freezeTimeout ({}) and was thawed before the copy ended; \
                 the copy was discarded. Raise rexray.freezeTimeout, or copy the volume unmounted",
                self.path.display(),
                humantime::format_duration(bound)
            )));
        }
        Ok(())
    }

    /// Thaw and release the guard; true when the guard had thawed first.
    fn thaw_now(&mut self) -> bool {
        let mut arg: libc::c_int = 0;
        // SAFETY: as in `freeze`.
        match unsafe { fithaw(self.dir.as_raw_fd(), &mut arg) } {
            Ok(_) | Err(Errno::EINVAL) => {}
            Err(e) => {
                tracing::error!(mount_point = %self.path.display(), "could not thaw the filesystem: {e}; run `fsfreeze -u` on it");
            }
        }
        self.guard.take().is_some_and(Guard::release)
    }
}

/// Thaw the filesystem at `mount_point` if it is frozen; `Ok(false)` when
/// it was not.
pub fn thaw(mount_point: &Path) -> Result<bool> {
    let dir = std::fs::File::open(mount_point)
        .map_err(|e| Error::from_io(format!("opening {}", mount_point.display()), &e))?;
    let mut arg: libc::c_int = 0;
    // SAFETY: as in `Frozen::freeze`.
    match unsafe { fithaw(dir.as_raw_fd(), &mut arg) } {
        Ok(_) => Ok(true),
        Err(Errno::EINVAL) => Ok(false),
        Err(e) => Err(Error::from_io(
            format!("thawing {}", mount_point.display()),
            &std::io::Error::from(e),
        )),
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if self.guard.is_some() && self.thaw_now() {
            tracing::warn!(mount_point = %self.path.display(), "the freeze guard thawed the filesystem before the copy ended");
        }
    }
}
