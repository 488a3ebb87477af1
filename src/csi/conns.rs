//! The connections of a csi socket: at most `maxConnections` open at once,
//! so that connections which stay open cannot take the descriptors the
//! calls themselves need (the catalog, images, loop devices, mkfs).
//!
//! kubelet and each sidecar keep one connection and make their calls on
//! it, one after another or several at once (HTTP/2 streams). A connection
//! is *busy* while a call on it is being served, and otherwise *waiting*
//! since its last byte or its last call's end. At the cap, the connection
//! that has waited the longest is closed (`shutdown(2)` under the
//! registry's lock: its task sees end of file and ends) to make room for
//! the new one, so a flood of connections that send nothing evicts itself
//! while the clients that make calls are served; a gRPC client dials again
//! when its connection was closed. A busy connection is never closed; only
//! when all are busy is the new one refused.
//!
//! There is no idle timeout: kubelet's connection may rightly wait hours
//! between calls.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

/// One connection, as its stream, its calls and the registry share it.
pub struct Conn {
    fd: RawFd,
    /// Calls being served.
    calls: AtomicUsize,
    /// Milliseconds since the registry's epoch of its last byte or call end.
    last: AtomicU64,
    /// Shut down by the registry; its task has not ended yet.
    closing: AtomicBool,
    epoch: Instant,
}

impl Conn {
    fn touch(&self) {
        self.last
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

/// What `Conn::calls` is set to when the connection is chosen to close
/// (from 0, atomically): a call counted after that never makes it look
/// idle again, and one counted before keeps it open.
const EVICTED: usize = usize::MAX / 2;

/// A csi socket's connections.
pub struct Conns {
    socket: String,
    max: usize,
    epoch: Instant,
    open: Mutex<Vec<Arc<Conn>>>,
    evicted: AtomicU64,
    refused: AtomicU64,
}

impl Conns {
    /// At most `max` connections on `socket` (named in the logs), and no
    /// more than the open-files limit leaves after the descriptors kept
    /// for the calls.
    pub fn new(socket: String, max: u64, key: &str) -> Arc<Conns> {
        let max = crate::docker::conns::capped_by_nofile(max.max(1), key);
        Arc::new(Conns {
            socket,
            max: max as usize,
            epoch: Instant::now(),
            open: Mutex::new(Vec::new()),
            evicted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        })
    }

    /// Take a new connection: `None` (and it is closed) when every open
    /// one is busy; otherwise, at the cap, the one waiting the longest is
    /// closed first.
    pub fn admit<S: AsRawFd>(self: &Arc<Self>, io: S) -> Option<Tracked<S>> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let active = open
            .iter()
            .filter(|c| !c.closing.load(Ordering::Relaxed))
            .count();
        if active >= self.max {
            let mut idle: Vec<&Arc<Conn>> = open
                .iter()
                .filter(|c| {
                    !c.closing.load(Ordering::Relaxed) && c.calls.load(Ordering::SeqCst) == 0
                })
                .collect();
            idle.sort_by_key(|c| c.last.load(Ordering::Relaxed));
            // Claimed only while it has no call: a call that starts
            // between the look above and now wins, and the next one goes.
            let victim = idle.into_iter().find(|c| {
                c.calls
                    .compare_exchange(0, EVICTED, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            });
            match victim {
                Some(v) => {
                    v.closing.store(true, Ordering::Relaxed);
                    // SAFETY: shutdown on a descriptor its stream still
                    // owns: the stream leaves this list (under this lock)
                    // before it is closed.
                    unsafe { libc::shutdown(v.fd, libc::SHUT_RDWR) };
                    self.note(
                        &self.evicted,
                        "closed the connection waiting the longest to make room",
                    );
                }
                None => {
                    self.note(
                        &self.refused,
                        "refused a new connection: every open one is serving a call",
                    );
                    return None;
                }
            }
        }
        let conn = Arc::new(Conn {
            fd: io.as_raw_fd(),
            calls: AtomicUsize::new(0),
            last: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            epoch: self.epoch,
        });
        conn.touch();
        open.push(conn.clone());
        Some(Tracked {
            reg: Registered {
                conns: self.clone(),
                conn,
            },
            io,
        })
    }

    /// Warn at the first event of a kind, then at every 1000th.
    fn note(&self, count: &AtomicU64, what: &str) {
        let n = count.fetch_add(1, Ordering::Relaxed);
        if n.is_multiple_of(1000) {
            tracing::warn!(
                socket = %self.socket,
                times = n + 1,
                max = self.max,
                "{what} (at the connection cap)"
            );
        }
    }

    /// Connections closed to make room whose streams have not ended yet.
    pub fn closing(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|c| c.closing.load(Ordering::Relaxed))
            .count()
    }

    /// Connections open (closing ones included).
    #[cfg(test)]
    fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// A connection's place in the registry, left before its descriptor is
/// closed.
struct Registered {
    conns: Arc<Conns>,
    conn: Arc<Conn>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut open = self.conns.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = open.iter().position(|c| Arc::ptr_eq(c, &self.conn)) {
            open.swap_remove(i);
        }
    }
}

/// A connection's stream: notes its traffic, and leaves the registry
/// before its descriptor is closed.
pub struct Tracked<S> {
    // Dropped before `io`: out of the registry, then closed.
    reg: Registered,
    io: S,
}

/// What a call finds in its request's extensions: its connection.
#[derive(Clone)]
pub struct Info(Arc<Conn>);

impl<S> tonic::transport::server::Connected for Tracked<S> {
    type ConnectInfo = Info;
    fn connect_info(&self) -> Info {
        Info(self.reg.conn.clone())
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.reg.conn.touch();
        }
        r
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The layer that counts each connection's calls in flight (so a busy
/// connection is never the one closed to make room).
#[derive(Clone, Copy, Default)]
pub struct CallsLayer;

impl<S> tower_layer::Layer<S> for CallsLayer {
    type Service = Calls<S>;
    fn layer(&self, inner: S) -> Calls<S> {
        Calls { inner }
    }
}

/// See [`CallsLayer`].
#[derive(Clone)]
pub struct Calls<S> {
    inner: S,
}

/// A call in flight on a connection; its end is the connection's latest
/// activity.
struct InFlight(Arc<Conn>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.calls.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<S, B> tower_service::Service<tonic::codegen::http::Request<B>> for Calls<S>
where
    S: tower_service::Service<tonic::codegen::http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, rq: tonic::codegen::http::Request<B>) -> Self::Future {
        let guard = rq.extensions().get::<Info>().map(|Info(c)| {
            c.calls.fetch_add(1, Ordering::SeqCst);
            InFlight(c.clone())
        });
        let fut = self.inner.call(rq);
        Box::pin(async move {
            let r = fut.await;
            drop(guard);
            r
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> std::os::unix::net::UnixStream {
        std::os::unix::net::UnixStream::pair().unwrap().0
    }

    #[test]
    fn at_the_cap_the_longest_waiting_goes_and_a_busy_one_stays() {
        let conns = Conns::new("test".into(), 2, "k");
        let a = conns.admit(pair()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let b = conns.admit(pair()).unwrap();
        // a is busy: b, though newer, is the one closed.
        a.reg.conn.calls.fetch_add(1, Ordering::SeqCst);
        let c = conns.admit(pair()).unwrap();
        assert!(b.reg.conn.closing.load(Ordering::Relaxed));
        assert!(!a.reg.conn.closing.load(Ordering::Relaxed));
        // a busy and c busy: a fourth is refused.
        c.reg.conn.calls.fetch_add(1, Ordering::SeqCst);
        assert!(conns.admit(pair()).is_none());
        assert_eq!(conns.refused.load(Ordering::Relaxed), 1);
        // The closed one leaves when its stream ends.
        assert_eq!(conns.open(), 3);
        drop(b);
        assert_eq!(conns.open(), 2);
        // a's call ends: it is waiting again, and goes first.
        drop(InFlight(a.reg.conn.clone()));
        assert_eq!(a.reg.conn.calls.load(Ordering::SeqCst), 0);
        let _d = conns.admit(pair()).unwrap();
        assert!(a.reg.conn.closing.load(Ordering::Relaxed));
    }
}
