//! Limits on the connections of an HTTP endpoint (the Docker plugin's, the
//! libStorage server's): how long a client may
//! take to send a request's headers, how long a keep-alive connection may
//! sit idle, and how many connections may be open at once.
//!
//! Every connection is in one of three phases, kept in one atomic word it
//! shares with the registry:
//!
//! * *headers*: accepted, or the first bytes of a request arrived after an
//!   idle spell, and the request (its headers, then its body) is not
//!   complete. Closed after the header timeout, however slowly bytes
//!   trickle in.
//! * *busy*: a request is being served (its body is in, its workflow runs).
//!   Never closed by these limits: the body timeout and the workflows'
//!   own timeouts bound it.
//! * *idle*: the reply was handed over and no byte of the next request has
//!   come. Closed after the idle timeout; an HTTP client re-dials a
//!   keep-alive connection the server closed.
//!
//! One sweeper task checks the deadlines a few times per timeout, so the
//! request path only stores a word when the phase changes and reads a
//! coarse clock the sweeper keeps; no timer per connection.
//!
//! At the connection cap, the connection that has been idle (or stuck in
//! its headers) the longest is closed to make room for the new one, rather
//! than refusing the new one: a flood of stalled connections then evicts
//! itself, and a client that sends its request at once is served. Only
//! when every connection is busy is a new one refused. Closing is a
//! `shutdown(2)` of the victim's socket under the registry lock: its task
//! sees end of file and ends, and a connection leaves the registry before
//! its descriptor is closed, so a reused descriptor number is never hit.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const HEADERS: u64 = 0;
const BUSY: u64 = 1;
const IDLE: u64 = 2;
const PHASE: u64 = 3;

/// Descriptors kept free for everything but connections (catalog and
/// state files, loop devices, mkfs pipes, logs) when the cap is derived
/// from the open-files limit.
pub const RESERVED_FDS: u64 = 128;

/// Connections beyond the cap whose close is under way; the accept loop
/// waits for them before accepting more.
const CLOSING_SLACK: usize = 16;

/// `max` connections (set by `key`, named in the warning), but no more
/// than the open-files limit leaves after [`RESERVED_FDS`].
pub fn capped_by_nofile(max: u64, key: &str) -> u64 {
    if let Ok((soft, _)) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    {
        let room = soft.saturating_sub(RESERVED_FDS).max(16);
        if max > room {
            tracing::warn!(
                "{key} is {max} but the open-files limit is {soft}: serving at most {room} connections; raise LimitNOFILE (ulimit -n) to allow more"
            );
            return room;
        }
    }
    max
}

/// The configured limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// From accept, or from the first byte of a request, to its last header.
    pub header: Duration,
    /// From a reply to the first byte of the next request.
    pub idle: Duration,
    /// Connections open at once.
    pub max: usize,
    /// The configuration keys of `header` and `max`, named in the logs.
    pub keys: LimitKeys,
}

/// The configuration keys that set an endpoint's [`Limits`].
#[derive(Debug, Clone, Copy)]
pub struct LimitKeys {
    /// The key of [`Limits::header`].
    pub header: &'static str,
    /// The key of [`Limits::max`].
    pub max: &'static str,
}

impl Limits {
    /// The cap actually used: `max`, but no more than the open-files limit
    /// leaves after [`RESERVED_FDS`].
    pub fn capped_by_nofile(mut self) -> Limits {
        self.max = capped_by_nofile(self.max as u64, self.keys.max) as usize;
        self
    }

    /// How often the sweeper runs.
    fn tick(&self) -> Duration {
        (self.header.min(self.idle) / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
    }
}

/// A coarse millisecond clock, advanced by the sweeper.
struct Clock {
    epoch: Instant,
    ms: AtomicU64,
}

impl Clock {
    fn advance(&self) -> u64 {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.ms.store(now, Ordering::Relaxed);
        now
    }
}

/// One connection, as the request path and the registry share it.
pub struct Conn {
    /// Phase in the low two bits, the clock's millisecond it began above.
    state: AtomicU64,
    fd: RawFd,
    clock: Arc<Clock>,
}

impl Conn {
    fn set(&self, phase: u64) {
        let now = self.clock.ms.load(Ordering::Relaxed);
        self.state.store(now << 2 | phase, Ordering::Relaxed);
    }

    /// Request complete (headers and body): it is being served.
    pub fn busy(&self) {
        self.state.store(BUSY, Ordering::Relaxed);
    }

    /// Whether the client has closed its side of the connection (or
    /// the connection failed): asked, without waiting, of a connection
    /// whose request is still being served. Once its descriptor is
    /// closed, the answer is about whatever reuses the number, but then
    /// the client had gone anyway: a wrong `false` is possible (the
    /// client's departure is missed, as if it left a moment later), a
    /// wrong `true` is not.
    pub fn peer_gone(&self) -> bool {
        let mut p = libc::pollfd {
            fd: self.fd,
            events: libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one pollfd on the stack, zero timeout.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        n == 1
            && p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
    }

    /// The reply is handed over: idle until the next request.
    pub fn idle(&self) {
        self.set(IDLE);
    }

    /// Bytes arrived: an idle connection starts a request.
    #[inline]
    fn read_some(&self) {
        if self.state.load(Ordering::Relaxed) & PHASE == IDLE {
            self.set(HEADERS);
        }
    }
}

struct Slot {
    conn: Arc<Conn>,
    /// Shut down by the registry; its task has not ended yet.
    closing: bool,
}

#[derive(Default)]
struct Slots {
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    /// Registered and not closing.
    active: usize,
    /// Registered (descriptors still open).
    open: usize,
}

impl Slots {
    fn close(&mut self, i: usize) {
        if let Some(s) = self.slots[i].as_mut() {
            if !s.closing {
                s.closing = true;
                self.active -= 1;
                // SAFETY: shutdown on a descriptor the connection still
                // owns: it leaves the registry (under this lock) before
                // closing it.
                unsafe { libc::shutdown(s.conn.fd, libc::SHUT_RDWR) };
            }
        }
    }

    /// The connection idle or stuck in its headers the longest.
    fn oldest_waiting(&self) -> Option<usize> {
        let mut best: Option<(u64, usize)> = None;
        for (i, s) in self.slots.iter().enumerate() {
            let Some(s) = s else { continue };
            let st = s.conn.state.load(Ordering::Relaxed);
            if s.closing || st & PHASE == BUSY {
                continue;
            }
            if !matches!(best, Some((since, _)) if since <= st >> 2) {
                best = Some((st >> 2, i));
            }
        }
        best.map(|(_, i)| i)
    }
}

/// What was closed since the last report.
#[derive(Default)]
struct Counts {
    header: u64,
    idle: u64,
    evicted: u64,
    starved: u64,
    refused: u64,
    accept_errors: u64,
    last_error: String,
}

/// The open connections of one endpoint.
pub struct Registry {
    limits: Limits,
    clock: Arc<Clock>,
    slots: Mutex<Slots>,
    counts: Mutex<Counts>,
}

/// A connection's place in the registry; leaving drops it from there.
pub struct Registered {
    reg: Arc<Registry>,
    conn: Arc<Conn>,
    index: usize,
}

impl Registered {
    /// The shared connection state.
    pub fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut s = self.reg.lock();
        if let Some(slot) = s.slots[self.index].take() {
            if !slot.closing {
                s.active -= 1;
            }
            s.open -= 1;
            s.free.push(self.index);
        }
    }
}

impl Registry {
    /// An empty registry.
    pub fn new(limits: Limits) -> Arc<Registry> {
        Arc::new(Registry {
            limits,
            clock: Arc::new(Clock {
                epoch: Instant::now(),
                ms: AtomicU64::new(0),
            }),
            slots: Mutex::new(Slots::default()),
            counts: Mutex::new(Counts::default()),
        })
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the accept loop should wait for closing connections to go
    /// before accepting another one.
    pub fn saturated(&self) -> bool {
        self.lock().open >= self.limits.max + CLOSING_SLACK
    }

    /// Register an accepted connection, closing the longest-waiting one if
    /// the cap is reached. `None`: every connection is busy; drop it.
    pub fn register(self: &Arc<Self>, fd: RawFd) -> Option<Registered> {
        let mut s = self.lock();
        if s.active >= self.limits.max {
            match s.oldest_waiting() {
                Some(victim) => {
                    s.close(victim);
                    self.counts().evicted += 1;
                }
                None => {
                    drop(s);
                    self.counts().refused += 1;
                    return None;
                }
            }
        }
        let conn = Arc::new(Conn {
            state: AtomicU64::new(self.clock.ms.load(Ordering::Relaxed) << 2 | HEADERS),
            fd,
            clock: self.clock.clone(),
        });
        let slot = Slot {
            conn: conn.clone(),
            closing: false,
        };
        let index = match s.free.pop() {
            Some(i) => {
                s.slots[i] = Some(slot);
                i
            }
            None => {
                s.slots.push(Some(slot));
                s.slots.len() - 1
            }
        };
        s.active += 1;
        s.open += 1;
        Some(Registered {
            reg: self.clone(),
            conn,
            index,
        })
    }

    /// Out of descriptors: close the longest-waiting connection so that
    /// accepting can go on, and count the error for the next report.
    pub fn accept_failed(&self, e: &std::io::Error) {
        let mut s = self.lock();
        if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
            if let Some(victim) = s.oldest_waiting() {
                s.close(victim);
                self.counts().starved += 1;
            }
        }
        drop(s);
        let mut c = self.counts();
        c.accept_errors += 1;
        c.last_error = e.to_string();
    }

    /// Close the connections past their deadline, and report what was
    /// closed at most every `report` (the first time at once).
    pub async fn sweep(self: Arc<Self>, report: Duration) {
        let tick = self.limits.tick();
        // The phase start is read from a clock up to a tick late: wait a
        // tick more so that no connection is closed early.
        let slack = tick.as_millis() as u64;
        let header = self.limits.header.as_millis() as u64 + slack;
        let idle = self.limits.idle.as_millis() as u64 + slack;
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reported: Option<Instant> = None;
        loop {
            interval.tick().await;
            let now = self.clock.advance();
            let (mut h, mut i) = (0, 0);
            {
                let mut s = self.lock();
                for k in 0..s.slots.len() {
                    let Some(slot) = &s.slots[k] else { continue };
                    if slot.closing {
                        continue;
                    }
                    let st = slot.conn.state.load(Ordering::Relaxed);
                    let waited = now.saturating_sub(st >> 2);
                    match st & PHASE {
                        HEADERS if waited >= header => h += 1,
                        IDLE if waited >= idle => i += 1,
                        _ => continue,
                    }
                    s.close(k);
                }
            }
            if h + i > 0 {
                let mut c = self.counts();
                c.header += h;
                c.idle += i;
            }
            let due = !matches!(reported, Some(t) if t.elapsed() < report);
            if due && self.report() {
                reported = Some(Instant::now());
            }
        }
    }

    /// Log what was closed since the last report; false if nothing was.
    pub fn report(&self) -> bool {
        let c = std::mem::take(&mut *self.counts());
        if c.idle > 0 {
            tracing::debug!(
                "closed {} keep-alive connection(s) idle for {}",
                c.idle,
                humantime::format_duration(self.limits.idle)
            );
        }
        if c.header > 0 {
            tracing::warn!(
                "closed {} connection(s) that sent no complete request headers within {} ({})",
                c.header,
                humantime::format_duration(self.limits.header),
                self.limits.keys.header
            );
        }
        if c.evicted > 0 {
            tracing::warn!(
                "closed {} connection(s) waiting for a request to make room for new ones: {} are open ({})",
                c.evicted,
                self.limits.max,
                self.limits.keys.max
            );
        }
        if c.starved > 0 {
            tracing::warn!(
                "out of file descriptors: closed {} connection(s) waiting for a request; raise the open-files limit (LimitNOFILE) or lower {}",
                c.starved,
                self.limits.keys.max
            );
        }
        if c.refused > 0 {
            tracing::warn!(
                "refused {} connection(s): all {} open connections are serving requests",
                c.refused,
                self.limits.max
            );
        }
        if c.accept_errors > 0 {
            tracing::warn!(
                "accepting a connection failed {} time(s), last: {}; pausing briefly after each",
                c.accept_errors,
                c.last_error
            );
        }
        c.header + c.idle + c.evicted + c.starved + c.refused + c.accept_errors > 0
    }

    /// Open connections (closing ones included).
    #[cfg(test)]
    fn open(&self) -> usize {
        self.lock().open
    }
}

/// A connection's stream: notes the first bytes of a request after an idle
/// spell, and leaves the registry before its descriptor is closed.
pub struct Watched<S> {
    // Dropped before `io`: out of the registry, then closed.
    reg: Registered,
    io: S,
}

impl<S> Watched<S> {
    /// Wrap a registered stream.
    pub fn new(reg: Registered, io: S) -> Self {
        Watched { reg, io }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Watched<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.reg.conn.read_some();
        }
        r
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Raise the soft open-files limit to the hard limit (a flood of
/// connections or many volumes then finds the descriptors the system
/// allows); returns the limit in force.
pub fn raise_nofile_limit() -> Option<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft >= hard {
        return Some(soft);
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => {
            tracing::info!("raised the open-files limit from {soft} to {hard}");
            Some(hard)
        }
        Err(e) => {
            tracing::warn!("could not raise the open-files limit from {soft} to {hard}: {e}");
            Some(soft)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn limits(max: usize) -> Limits {
        Limits {
            header: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            max,
            keys: LimitKeys {
                header: "h",
                max: "m",
            },
        }
    }

    fn pair() -> (
        std::os::unix::net::UnixStream,
        std::os::unix::net::UnixStream,
    ) {
        std::os::unix::net::UnixStream::pair().unwrap()
    }

    /// Whether the peer of `s` shut the connection down (reads end of file).
    fn shut(s: &std::os::unix::net::UnixStream) -> bool {
        use std::io::Read;
        s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        matches!((&*s).read(&mut b), Ok(0))
    }

    #[test]
    fn at_the_cap_the_longest_waiting_connection_makes_room() {
        let reg = Registry::new(limits(2));
        let (a, a_peer) = pair();
        let (b, b_peer) = pair();
        let (c, c_peer) = pair();
        let ra = reg.register(a.as_raw_fd()).unwrap();
        reg.clock.ms.store(5, Ordering::Relaxed);
        let rb = reg.register(b.as_raw_fd()).unwrap();
        // a is serving a request: b, newer but waiting, is the one closed.
        ra.conn().busy();
        let rc = reg.register(c.as_raw_fd()).unwrap();
        assert!(shut(&b_peer));
        assert!(!shut(&a_peer) && !shut(&c_peer));
        // Until b's task ends, it counts as open.
        assert_eq!(reg.open(), 3);
        drop(rb);
        assert_eq!(reg.open(), 2);
        // Both left are busy: a new connection is refused.
        rc.conn().busy();
        let (d, _d_peer) = pair();
        assert!(reg.register(d.as_raw_fd()).is_none());
        // a's reply is out: it waits now, and makes room.
        ra.conn().idle();
        assert!(reg.register(d.as_raw_fd()).is_some());
        assert!(shut(&a_peer));
    }

    #[test]
    fn reading_after_idle_starts_the_header_clock() {
        let reg = Registry::new(limits(4));
        let (a, _p) = pair();
        let r = reg.register(a.as_raw_fd()).unwrap();
        r.conn().busy();
        r.conn().read_some();
        assert_eq!(r.conn().state.load(Ordering::Relaxed) & PHASE, BUSY);
        reg.clock.ms.store(7, Ordering::Relaxed);
        r.conn().idle();
        assert_eq!(r.conn().state.load(Ordering::Relaxed), 7 << 2 | IDLE);
        reg.clock.ms.store(9, Ordering::Relaxed);
        r.conn().read_some();
        assert_eq!(r.conn().state.load(Ordering::Relaxed), 9 << 2 | HEADERS);
        // More bytes do not move the header deadline.
        reg.clock.ms.store(11, Ordering::Relaxed);
        r.conn().read_some();
        assert_eq!(r.conn().state.load(Ordering::Relaxed), 9 << 2 | HEADERS);
    }

    #[test]
    fn out_of_descriptors_closes_a_waiting_connection() {
        let reg = Registry::new(limits(100));
        let (a, a_peer) = pair();
        let _r = reg.register(a.as_raw_fd()).unwrap();
        reg.accept_failed(&std::io::Error::from_raw_os_error(libc::EMFILE));
        assert!(shut(&a_peer));
    }
}
