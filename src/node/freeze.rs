//! Filesystem freeze (FIFREEZE/FITHAW): flushes dirty data and the journal
//! and blocks writers, so a copy of the device underneath is a clean
//! filesystem.
//!
//! A frozen filesystem blocks every writer on the host until it is thawed,
//! so the freeze must never outlive the process that made it: before
//! freezing, a guard process is forked that holds the read end of a pipe.
//! The freezer tells it "frozen" once the freeze holds, and "released"
//! once it has thawed. When the freezer dies instead (`kill -9`, the OOM
//! killer, a Ctrl-C), the pipe closes and the guard thaws. The guard also
//! thaws once the filesystem has been frozen for `rexray.freezeTimeout`;
//! the freezer then finds it thawed and knows its copy may be torn.
//!
//! The guard must not die with its freezer. A kill of the freezer's whole
//! process group (`timeout`, cron, CI runners and terminals signal the
//! group; a closing terminal hangs up the session) reaches every process
//! still in that group, so the guard leaves it first: it starts a session
//! of its own (`setsid`), ignores the signals a terminal or a supervisor
//! sends a group, opts out of the OOM killer, and only then tells the
//! freezer it is ready. The freezer freezes only after hearing that (and
//! gives up, freezing nothing, when it does not within [`READY_TIMEOUT`]).
//! What still takes both: a kill of every process of a cgroup (systemd's
//! `KillMode=control-group`, `docker kill` of a container, the cgroup OOM
//! killer with `memory.oom.group`); then `rexray service start` (its
//! reconcile thaws what a crashed copy left frozen) or `fsfreeze -u`.

use super::FreezeGuard;
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
/// The guard's exit status when the bound passed and the filesystem was
/// no longer frozen (someone else had thawed it).
const GUARD_LATE: i32 = 4;
/// The signals a terminal or a service manager sends a whole group (and
/// SIGPIPE: the guard's "ready" may meet a freezer already gone).
const GROUP_SIGNALS: [libc::c_int; 8] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGTSTP,
    libc::SIGTTIN,
    libc::SIGTTOU,
    libc::SIGPIPE,
];
/// "Out of the freezer's group and session": the freezer may freeze.
const READY: u8 = b'g';
/// How long the freezer waits for its guard to be ready before it gives
/// up without freezing.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// "The filesystem is frozen now": the guard's bound starts.
const FROZEN: u8 = b'f';
/// "Thawed (or never frozen)": the guard exits without thawing.
const RELEASE: u8 = b'r';

/// A frozen filesystem; thawed by [`finish`](FreezeGuard::finish), or on
/// drop.
#[derive(Debug)]
pub struct Frozen {
    dir: std::fs::File,
    path: PathBuf,
    /// `rexray.freezeTimeout`: the guard thaws once it has passed.
    bound: Duration,
    guard: Option<Guard>,
}

#[derive(Debug)]
struct Guard {
    pid: Pid,
    tx: Option<OwnedFd>,
    /// How it ended, once reaped.
    end: std::cell::Cell<Option<GuardEnd>>,
}

/// How a guard ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GuardEnd {
    /// Released: it did not thaw.
    Released,
    /// The bound passed and it thawed.
    TimedOut,
    /// The bound passed and the filesystem was already thawed (by
    /// someone else).
    FoundThawed,
    /// It thawed because the pipe closed.
    ThawedOnEof,
    /// Killed, or reaped elsewhere (SIGCHLD ignored): whether it thawed is
    /// unknown.
    Lost,
}

impl GuardEnd {
    /// Whether the guard's end proves the filesystem was thawed by it or
    /// before it: then a freeze found now is someone else's.
    fn thawed(self) -> bool {
        matches!(
            self,
            GuardEnd::TimedOut | GuardEnd::FoundThawed | GuardEnd::ThawedOnEof
        )
    }

    /// Why a copy made meanwhile may be torn.
    fn broken(self) -> Broken {
        match self {
            GuardEnd::TimedOut => Broken::TimedOut,
            GuardEnd::FoundThawed | GuardEnd::Released => Broken::ThawedElsewhere,
            GuardEnd::ThawedOnEof | GuardEnd::Lost => Broken::GuardLost,
        }
    }
}

/// Why a freeze did not hold until the copy was checked: what was copied
/// meanwhile may be torn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broken {
    /// Frozen longer than `rexray.freezeTimeout`: the guard thawed it.
    TimedOut,
    /// Thawed by something else (`fsfreeze -u`).
    ThawedElsewhere,
    /// The guard died before the copy ended.
    GuardLost,
}

impl Broken {
    /// The error message for a copy of the filesystem at `mount_point`,
    /// frozen for at most `bound`.
    pub fn why(self, mount_point: &Path, bound: Duration) -> String {
        let at = mount_point.display();
        match self {
            Broken::TimedOut => format!(
                "the filesystem at {at} was frozen longer than rexray.freezeTimeout ({}) and was thawed before the copy ended; \
                 raise rexray.freezeTimeout, or copy the volume unmounted",
                humantime::format_duration(bound)
            ),
            Broken::ThawedElsewhere => format!(
                "the filesystem at {at} was thawed by something else (fsfreeze -u?) before the copy ended; retry"
            ),
            Broken::GuardLost => {
                format!("the filesystem at {at} lost its freeze guard before the copy ended; retry")
            }
        }
    }
}

impl Guard {
    /// Fork the guard of `dir`'s filesystem.
    fn spawn(dir: &std::fs::File, bound: Duration) -> Result<Guard> {
        let (rx, tx) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| Error::system(format!("creating the freeze guard's pipe: {e}")))?;
        let (ready_rx, ready_tx) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| Error::system(format!("creating the freeze guard's pipe: {e}")))?;
        let fds = GuardFds {
            dir: dir.as_raw_fd(),
            rx: rx.as_raw_fd(),
            tx: tx.as_raw_fd(),
            ready: ready_tx.as_raw_fd(),
            // Read before the fork: the child only closes what is below.
            max_fd: nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .map(|(soft, _)| soft.min(1 << 20) as RawFd)
                .unwrap_or(1 << 16),
        };
        let bound_ms = libc::c_int::try_from(bound.as_millis()).unwrap_or(libc::c_int::MAX);
        // The group signals stay blocked across the fork, so a Ctrl-C
        // cannot kill the guard before it ignores them; it unblocks them
        // after, the freezer at once.
        let mut block = nix::sys::signal::SigSet::empty();
        for sig in GROUP_SIGNALS {
            if let Ok(s) = nix::sys::signal::Signal::try_from(sig) {
                block.add(s);
            }
        }
        let mut old = nix::sys::signal::SigSet::empty();
        let _ = nix::sys::signal::pthread_sigmask(
            nix::sys::signal::SigmaskHow::SIG_BLOCK,
            Some(&block),
            Some(&mut old),
        );
        let old_raw: libc::sigset_t = *old.as_ref();
        // SAFETY: the child calls only async-signal-safe functions (signal,
        // sigprocmask, setsid, open, write, close, close_range, poll, read,
        // ioctl, _exit) and never returns into Rust code, so forking a
        // multi-threaded process is sound.
        let forked = unsafe { nix::unistd::fork() };
        if let Ok(ForkResult::Child) = forked {
            unsafe { guard_main(fds, bound_ms, old_raw) }
        }
        let _ = nix::sys::signal::pthread_sigmask(
            nix::sys::signal::SigmaskHow::SIG_SETMASK,
            Some(&old),
            None,
        );
        match forked {
            Ok(ForkResult::Parent { child }) => {
                drop(rx);
                drop(ready_tx);
                let guard = Guard {
                    pid: child,
                    tx: Some(tx),
                    end: std::cell::Cell::new(None),
                };
                guard.await_ready(ready_rx)?;
                Ok(guard)
            }
            Ok(ForkResult::Child) => unreachable!("the guard never returns"),
            Err(e) => Err(Error::system(format!(
                "starting the freeze guard (fork): {e}"
            ))),
        }
    }

    /// Wait until the guard has left the freezer's process group and
    /// session: from then on nothing sent to the freezer's group or
    /// session reaches it. A guard that dies or stalls first is ended, and
    /// nothing is frozen.
    fn await_ready(&self, ready: OwnedFd) -> Result<()> {
        let ms = libc::c_int::try_from(READY_TIMEOUT.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `next_byte` is async-signal-safe, so safe anywhere; the
        // descriptor is open.
        let got = unsafe { next_byte(ready.as_raw_fd(), ms) };
        if got == Some(READY) {
            return Ok(());
        }
        let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGKILL);
        // Reap it (by pid: ours).
        loop {
            match waitpid(self.pid, None) {
                Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) | Err(Errno::ECHILD) => break,
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(_) => break,
            }
        }
        self.end.set(Some(GuardEnd::Lost));
        Err(Error::system(if got.is_none() {
            format!(
                "the freeze guard did not start within {}; nothing was frozen (is the host overloaded?)",
                humantime::format_duration(READY_TIMEOUT)
            )
        } else {
            "the freeze guard died as it started; nothing was frozen".to_string()
        }))
    }

    /// Tell the guard the freeze holds: its bound starts now. False when
    /// the guard is gone.
    fn frozen(&self) -> bool {
        self.tx
            .as_ref()
            .is_some_and(|tx| nix::unistd::write(tx, &[FROZEN]) == Ok(1))
    }

    /// Whether the guard has already ended (it thawed: the bound passed,
    /// or it died), without waiting.
    fn ended(&self) -> Option<GuardEnd> {
        if let Some(end) = self.end.get() {
            return Some(end);
        }
        let end = match waitpid(self.pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return None,
            Ok(status @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => {
                Self::end_of(status)
            }
            Ok(_) => return None,
            // Reaped elsewhere: gone, how is unknown.
            Err(_) => GuardEnd::Lost,
        };
        self.end.set(Some(end));
        Some(end)
    }

    /// Let the guard go without thawing (the freezer thawed, or never
    /// froze) and learn how it ended.
    fn release(mut self) -> GuardEnd {
        if let Some(tx) = self.tx.take() {
            // EPIPE when the guard is gone already: its exit status tells.
            let _ = nix::unistd::write(&tx, &[RELEASE]);
        }
        self.wait()
    }

    /// Close the pipe without a word: the guard thaws.
    fn abandon(self) -> GuardEnd {
        self.wait()
    }

    fn end_of(status: WaitStatus) -> GuardEnd {
        match status {
            WaitStatus::Exited(_, 0) => GuardEnd::Released,
            WaitStatus::Exited(_, GUARD_TIMED_OUT) => GuardEnd::TimedOut,
            WaitStatus::Exited(_, GUARD_LATE) => GuardEnd::FoundThawed,
            WaitStatus::Exited(_, 1) => GuardEnd::ThawedOnEof,
            _ => GuardEnd::Lost,
        }
    }

    fn wait(mut self) -> GuardEnd {
        drop(self.tx.take());
        if let Some(end) = self.end.get() {
            return end;
        }
        loop {
            match waitpid(self.pid, None) {
                Ok(s @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => {
                    return Self::end_of(s)
                }
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(_) => return GuardEnd::Lost,
            }
        }
    }
}

/// What the guard keeps of its parent's descriptors.
#[derive(Clone, Copy)]
struct GuardFds {
    dir: RawFd,
    rx: RawFd,
    tx: RawFd,
    /// Where it says it is ready (then closes it).
    ready: RawFd,
    max_fd: RawFd,
}

/// Read one byte from the pipe, waiting at most `timeout_ms` (-1: for
/// ever). `None` on time-out; `Some(0)` on end of file or error.
///
/// # Safety
/// Async-signal-safe; for the guard child.
unsafe fn next_byte(rx: RawFd, timeout_ms: libc::c_int) -> Option<u8> {
    let mut pfd = libc::pollfd {
        fd: rx,
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        let n = libc::poll(&mut pfd, 1, timeout_ms);
        if n == 0 {
            return None;
        }
        if n < 0 && *libc::__errno_location() == libc::EINTR {
            continue;
        }
        let mut b = 0u8;
        let r = libc::read(rx, std::ptr::addr_of_mut!(b).cast(), 1);
        if r < 0 && *libc::__errno_location() == libc::EINTR {
            continue;
        }
        return Some(if r == 1 { b } else { 0 });
    }
}

/// The guard process: wait for "frozen" (or a release, or the freezer's
/// death), then for the release, the freezer's death or the bound; thaw
/// unless released.
///
/// # Safety
/// Called only in the child of a fork: async-signal-safe calls only.
unsafe fn guard_main(fds: GuardFds, bound_ms: libc::c_int, mask: libc::sigset_t) -> ! {
    // Outlive the freezer: a Ctrl-C, a Ctrl-Z or a hang-up meant for it
    // must not kill (or stop) the guard before it thaws. (They are blocked
    // since the fork; pending ones are dropped once ignored.)
    for sig in GROUP_SIGNALS {
        libc::signal(sig, libc::SIG_IGN);
    }
    // Leave the freezer's process group and session: a kill of its group
    // (`timeout -s KILL`, a CI job's end) or a hang-up of its terminal no
    // longer reaches the guard. Until the freezer hears "ready", it has
    // frozen nothing, so a kill before this point takes both harmlessly.
    // (A forked child is never a group leader: setsid cannot fail.)
    if libc::setsid() < 0 {
        libc::_exit(1);
    }
    libc::sigprocmask(libc::SIG_SETMASK, &mask, std::ptr::null_mut());
    // The OOM killer is to pick the freezer, never its guard (best effort:
    // lowering needs CAP_SYS_RESOURCE).
    let adj = libc::open(
        c"/proc/self/oom_score_adj".as_ptr(),
        libc::O_WRONLY | libc::O_CLOEXEC,
    );
    if adj >= 0 {
        libc::write(adj, b"-1000".as_ptr().cast(), 5);
        libc::close(adj);
    }
    libc::close(fds.tx);
    libc::write(fds.ready, [READY].as_ptr().cast(), 1);
    libc::close(fds.ready);
    // Keep no other descriptor: not the freezer's lock files (the locks
    // would outlive it), not a listening socket, not another guard's pipe
    // (that guard would never see its freezer die), not the standard
    // streams (a caller reading the freezer's output to its end must not
    // wait for the guard).
    let (lo, hi) = (fds.dir.min(fds.rx), fds.dir.max(fds.rx));
    let mut closed = true;
    for (first, last) in [(0, lo - 1), (lo + 1, hi - 1), (hi + 1, libc::c_int::MAX)] {
        if first <= last
            && libc::syscall(
                libc::SYS_close_range,
                first as libc::c_uint,
                last as libc::c_uint,
                0 as libc::c_uint,
            ) != 0
        {
            closed = false;
        }
    }
    if !closed {
        // No close_range (Linux < 5.9, or a seccomp filter): one by one.
        for fd in 0..fds.max_fd {
            if fd != fds.dir && fd != fds.rx {
                libc::close(fd);
            }
        }
    }
    let thaw = || {
        let mut arg: libc::c_int = 0;
        fithaw(fds.dir, &mut arg).is_ok()
    };
    match next_byte(fds.rx, -1) {
        Some(RELEASE) => libc::_exit(0),
        Some(FROZEN) => {}
        _ => {
            thaw();
            libc::_exit(1);
        }
    }
    match next_byte(fds.rx, bound_ms) {
        Some(RELEASE) => libc::_exit(0),
        None => libc::_exit(if thaw() { GUARD_TIMED_OUT } else { GUARD_LATE }),
        Some(_) => {
            thaw();
            libc::_exit(1);
        }
    }
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
        if !guard.frozen() {
            // No guard: no freeze either.
            // SAFETY: as above.
            let _ = unsafe { fithaw(dir.as_raw_fd(), &mut arg) };
            guard.abandon();
            return Err(Error::system(format!(
                "the freeze guard of {} died; the filesystem was thawed at once",
                mount_point.display()
            )));
        }
        tracing::debug!(mount_point = %mount_point.display(), "filesystem frozen");
        Ok(Frozen {
            dir,
            path: mount_point.to_path_buf(),
            bound,
            guard: Some(guard),
        })
    }

    /// Thaw and end the guard: `Ok(true)` when this call thawed,
    /// `Ok(false)` when the filesystem was no longer frozen, or no longer
    /// ours (the guard's end proves it thawed it: a freeze found now is
    /// someone else's and is left alone). A guard that was killed proves
    /// nothing, so the filesystem is thawed: a freeze with no end is
    /// worse than undoing another one.
    fn thaw_now(&mut self) -> (Result<bool>, GuardEnd) {
        let Some(guard) = self.guard.take() else {
            return (Ok(false), GuardEnd::Released);
        };
        let ended = guard.ended();
        if let Some(end) = ended.filter(|e| e.thawed()) {
            return (Ok(false), end);
        }
        let mut arg: libc::c_int = 0;
        // SAFETY: as in `freeze`.
        let thawed = match unsafe { fithaw(self.dir.as_raw_fd(), &mut arg) } {
            Ok(_) => Ok(true),
            Err(Errno::EINVAL) => Ok(false),
            Err(e) => Err(Error::from_io(
                format!("thawing the filesystem at {}", self.path.display()),
                &std::io::Error::from(e),
            )),
        };
        if let Some(end) = ended {
            return (thawed, end);
        }
        // Could not thaw: the guard tries too, as the pipe closes.
        let end = if thawed.is_err() {
            guard.abandon()
        } else {
            guard.release()
        };
        (thawed, end)
    }
}

impl FreezeGuard for Frozen {
    fn intact(&self) -> Result<()> {
        let broken = |b: Broken| Error::system(b.why(&self.path, self.bound));
        if let Some(end) = self.guard.as_ref().and_then(Guard::ended) {
            // A lost guard may have left it frozen: `finish` thaws then.
            return Err(broken(end.broken()));
        }
        // Freezing a frozen filesystem is EBUSY. A freeze that succeeds
        // means someone thawed it meanwhile; this probe keeps no freeze of
        // its own. (A thaw followed by someone else's new freeze looks
        // frozen: no kernel interface counts freezes.)
        let mut arg: libc::c_int = 0;
        // SAFETY: as in `freeze`.
        match unsafe { fifreeze(self.dir.as_raw_fd(), &mut arg) } {
            Err(Errno::EBUSY) => Ok(()),
            Ok(_) => {
                // SAFETY: as in `freeze`.
                let _ = unsafe { fithaw(self.dir.as_raw_fd(), &mut arg) };
                Err(broken(Broken::ThawedElsewhere))
            }
            Err(e) => Err(Error::from_io(
                format!("checking that {} is still frozen", self.path.display()),
                &std::io::Error::from(e),
            )),
        }
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        let (thawed, end) = self.thaw_now();
        match (thawed?, end) {
            (true, GuardEnd::Released) => Ok(()),
            // Released with nothing left to thaw: someone else thawed it.
            (_, end) => Err(Error::system(end.broken().why(&self.path, self.bound))),
        }
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
        if self.guard.is_none() {
            return;
        }
        match self.thaw_now() {
            (Ok(true), _) => {}
            (Ok(false), _) => {
                tracing::warn!(mount_point = %self.path.display(), "the filesystem was thawed before the copy ended")
            }
            (Err(e), _) => {
                tracing::error!(mount_point = %self.path.display(), "{e}; run `fsfreeze -u` on it")
            }
        }
    }
}
