//! What the service's HTTP endpoints (the Docker plugin's and the
//! libStorage server's) share: binding a unix socket or a TCP port, and
//! serving HTTP/1.1 on it with hyper until told to stop.
//!
//! A connection costs a task, not a thread, so idle keep-alive connections
//! and clients that stall mid-request never hold up anyone else. Connections
//! are bounded in time and number by a [`Registry`]; the endpoint's
//! [`Handler`] answers each request. At a stop, idle connections close at
//! once and requests in flight run on for a bounded drain time.

use crate::docker::conns::{Registry, Watched};
use crate::error::IoContext;
use crate::{Error, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use std::convert::Infallible;
use std::future::Future;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A bound listener.
pub enum Listener {
    /// A unix socket.
    Unix(std::os::unix::net::UnixListener),
    /// A TCP port.
    Tcp(std::net::TcpListener),
    /// A TCP port that serves HTTPS only.
    Tls(std::net::TcpListener, Arc<rustls::ServerConfig>),
}

/// Set on every request that came over TLS (a request extension), so that
/// a handler can tell `https` from `http`.
#[derive(Debug, Clone, Copy)]
pub struct OverTls;

/// What a client that sends plain HTTP to a TLS port is answered, as the
/// original's (Go's) server answers it.
const PLAIN_TO_TLS: &[u8] = b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

impl Listener {
    /// The TCP listener, if this is one (without TLS).
    pub fn into_tcp(self) -> Option<std::net::TcpListener> {
        match self {
            Listener::Tcp(l) => Some(l),
            _ => None,
        }
    }

    /// Another handle on the same socket.
    pub fn try_clone(&self) -> std::io::Result<Listener> {
        match self {
            Listener::Unix(l) => l.try_clone().map(Listener::Unix),
            Listener::Tcp(l) => l.try_clone().map(Listener::Tcp),
            Listener::Tls(l, c) => l.try_clone().map(|l| Listener::Tls(l, c.clone())),
        }
    }
}

/// How long a stopping server's runtime waits, once its connections are
/// drained, for blocking work still running whose client has gone (a
/// request waiting for a volume's lock, say): past it that work is left
/// to end with the process, as after a crash, which every step resumes
/// from. Without it, a stop would wait as long as any lock wait.
pub const ABANDON_AFTER: Duration = Duration::from_secs(5);

/// Answers the requests of one endpoint.
pub trait Handler: Send + Sync + 'static {
    /// Answer `rq`, which arrived on `conn`. The handler marks the
    /// connection busy once the request's body is in
    /// ([`crate::docker::conns::Conn::busy`]); the server marks it idle
    /// when the reply is handed over.
    fn handle(
        self: Arc<Self>,
        rq: Request<Incoming>,
        conn: Arc<crate::docker::conns::Conn>,
    ) -> Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>>;
}

/// Make the directory a socket or spec file goes into, refusing one every
/// user may write to (anyone could swap the socket for their own there).
pub fn ensure_parent(p: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    if let Some(dir) = p.parent() {
        if let Ok(m) = std::fs::metadata(dir) {
            if m.is_dir() && m.mode() & 0o002 != 0 {
                return Err(Error::invalid(format!(
                    "refusing to serve in {}: the directory is writable by every user; use a private directory such as /run/docker/plugins",
                    dir.display()
                )));
            }
        }
        if !dir.is_dir() {
            // As dockerd makes its plugin directory: 0755.
            crate::files::own_dir(dir, crate::files::SHARED_DIR, crate::files::Link::Refuse)?;
        }
        crate::files::refuse_others_dir(dir)
            .map_err(|e| e.context(format!("refusing to serve {}", p.display())))?;
    }
    Ok(())
}

/// Listen on the unix socket `path` (mode 0660), replacing a stale socket
/// nothing answers on; `key` is the setting that names it, for the error
/// when another process serves there.
pub fn bind_unix(path: &Path, key: &str) -> Result<Listener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    ensure_parent(path)?;
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if !m.file_type().is_socket() {
            return Err(Error::in_use(format!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            )));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(Error::in_use(format!(
                "another process serves unix://{}; stop it first (rexray service stop) or set {key}",
                path.display(),
            )));
        }
        tracing::info!(socket = %path.display(), "replacing a stale socket nothing answers on");
        std::fs::remove_file(path).ctx(|| format!("removing stale socket {}", path.display()))?;
    }
    let server = std::os::unix::net::UnixListener::bind(path)
        .map_err(|e| Error::system(format!("listening on unix://{}: {e}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .ctx(|| format!("setting the mode of {}", path.display()))?;
    Ok(Listener::Unix(server))
}

/// Listen on TCP `addr` (`host:port`); returns the listener and the URL
/// a client on this host reaches it by (a wildcard address as loopback).
pub fn bind_tcp(addr: &str) -> Result<(Listener, String)> {
    let server = std::net::TcpListener::bind(addr)
        .map_err(|e| Error::system(format!("listening on tcp://{addr}: {e}")))?;
    let bound = server
        .local_addr()
        .map_err(|e| Error::system(format!("the TCP listener has no address: {e}")))?;
    let mut reach = bound;
    if reach.ip().is_unspecified() {
        reach.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    Ok((Listener::Tcp(server), format!("tcp://{reach}")))
}

/// Remove a socket this process bound, logging what happened.
pub fn remove_socket(p: &Path) {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            tracing::warn!(socket = %p.display(), "could not remove the socket: {e}")
        }
        _ => tracing::info!(socket = %p.display(), "removed the socket"),
    }
}

/// How often closed connections and accept errors are logged, at most.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// How long accepting pauses after an error (out of descriptors, say).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What accepted connections are served with.
struct Server {
    http: hyper::server::conn::http1::Builder,
    graceful: hyper_util::server::graceful::GracefulShutdown,
    handler: Arc<dyn Handler>,
    conns: Arc<Registry>,
}

/// Serve `listeners` with `handler` until `stop` is set, then let the
/// requests in flight finish, for at most `drain`.
pub async fn serve(
    listeners: Vec<Listener>,
    handler: Arc<dyn Handler>,
    conns: Arc<Registry>,
    stop: Arc<AtomicBool>,
    drain: Duration,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let sweeper = tokio::spawn(conns.clone().sweep(REPORT_EVERY));
    let mut http = hyper::server::conn::http1::Builder::new();
    // Header and idle deadlines are the registry's: hyper's own header
    // timer would also run while a keep-alive connection idles.
    http.header_read_timeout(None);
    let server = Arc::new(Server {
        http,
        graceful,
        handler,
        conns,
    });
    let mut loops = Vec::new();
    for l in listeners {
        let server = server.clone();
        let stop = stop.clone();
        loops.push(tokio::spawn(async move {
            if let Err(e) = accept_listener(l, &server, &stop).await {
                tracing::error!("cannot accept connections: {e}");
            }
        }));
    }
    for l in loops {
        let _ = l.await;
    }
    // Idle connections close now; a request in flight finishes first.
    let Ok(Server {
        graceful, conns, ..
    }) = Arc::try_unwrap(server)
    else {
        unreachable!("the accept loops have ended");
    };
    let drained = tokio::time::timeout(drain, graceful.shutdown()).await;
    sweeper.abort();
    conns.report();
    if drained.is_err() {
        tracing::warn!(
            "requests still running after {}; stopping anyway",
            humantime::format_duration(drain)
        );
    }
}

async fn accept_listener(
    listener: Listener,
    server: &Server,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    match listener {
        Listener::Unix(l) => {
            l.set_nonblocking(true)?;
            let l = tokio::net::UnixListener::from_std(l)?;
            let r = {
                let l = &l;
                accept_until_stopped(
                    || async move { l.accept().await.map(|(s, _)| s) },
                    server,
                    stop,
                )
                .await
            };
            if let Ok(l) = l.into_std() {
                refuse_more(l.as_raw_fd(), || l.accept().ok());
            }
            r
        }
        Listener::Tcp(l) => {
            l.set_nonblocking(true)?;
            let l = tokio::net::TcpListener::from_std(l)?;
            let r = {
                let l = &l;
                accept_until_stopped(
                    || async move { l.accept().await.map(|(s, _)| s) },
                    server,
                    stop,
                )
                .await
            };
            if let Ok(l) = l.into_std() {
                refuse_more(l.as_raw_fd(), || l.accept().ok());
            }
            r
        }
        Listener::Tls(l, config) => {
            l.set_nonblocking(true)?;
            let l = tokio::net::TcpListener::from_std(l)?;
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                if server.conns.saturated() {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(5)) => continue,
                        _ = tick.tick() => if stop.load(Ordering::SeqCst) { break } else { continue },
                    }
                }
                tokio::select! {
                    r = l.accept() => match r {
                        Ok((s, _)) => serve_tls_connection(s, server, acceptor.clone()),
                        Err(e) => {
                            server.conns.accept_failed(&e);
                            tokio::time::sleep(ACCEPT_BACKOFF).await;
                        }
                    },
                    _ = tick.tick() => if stop.load(Ordering::SeqCst) { break },
                }
            }
            if let Ok(l) = l.into_std() {
                refuse_more(l.as_raw_fd(), || l.accept().ok());
            }
            Ok(())
        }
    }
}

/// At a stop: refuse new connections at once (the listening socket is
/// shut down for reading, which its other descriptors share: a unix
/// socket's connect then fails with ECONNREFUSED, a TCP one is reset),
/// and close those already queued unaccepted, so that no client waits
/// for an answer that will not come while in-flight requests finish.
fn refuse_more<T>(fd: std::os::fd::RawFd, mut accept_now: impl FnMut() -> Option<T>) {
    // SAFETY: shutdown(2) on a descriptor this function's caller owns for
    // the duration of the call; no memory is passed.
    unsafe { libc::shutdown(fd, libc::SHUT_RD) };
    // What was queued: accepted and dropped (closed) until none is left.
    for _ in 0..65_536 {
        match accept_now() {
            Some(conn) => drop(conn),
            None => break,
        }
    }
}

/// Serve one TLS connection: the handshake (bounded by the header
/// timeout: the connection is registered first, in its header phase),
/// then HTTP over it. A client that speaks plain HTTP instead is told so.
fn serve_tls_connection(
    stream: tokio::net::TcpStream,
    server: &Server,
    acceptor: tokio_rustls::TlsAcceptor,
) {
    let Some(reg) = server.conns.register(stream.as_raw_fd()) else {
        return;
    };
    let handler = server.handler.clone();
    let conn = reg.conn().clone();
    let http = server.http.clone();
    let watcher = server.graceful.watcher();
    tokio::spawn(async move {
        let mut first = [0u8; 1];
        match stream.peek(&mut first).await {
            // 0x16: a TLS handshake record.
            Ok(1) if first[0] != 0x16 => {
                use tokio::io::AsyncWriteExt;
                let mut stream = stream;
                // Read what the request sent so far, so that closing does
                // not reset the connection before the answer is read.
                let mut sink = [0u8; 4096];
                for _ in 0..16 {
                    match stream.try_read(&mut sink) {
                        Ok(n) if n > 0 => continue,
                        _ => break,
                    }
                }
                let _ = stream.write_all(PLAIN_TO_TLS).await;
                let _ = stream.shutdown().await;
                drop(reg);
                return;
            }
            Ok(1) => {}
            _ => {
                // Out of the registry before the descriptor closes.
                drop(reg);
                return;
            }
        }
        let tls = match acceptor.accept(Watched::new(reg, stream)).await {
            Ok(t) => t,
            Err(e) => {
                tracing::info!("TLS handshake failed: {e}");
                return;
            }
        };
        let served = http.serve_connection(
            hyper_util::rt::TokioIo::new(tls),
            hyper::service::service_fn(move |mut rq: Request<Incoming>| {
                let conn = conn.clone();
                let handler = handler.clone();
                rq.extensions_mut().insert(OverTls);
                async move {
                    let r = handler.handle(rq, conn.clone()).await;
                    conn.idle();
                    Ok::<_, Infallible>(r)
                }
            }),
        );
        if let Err(e) = watcher.watch(served).await {
            tracing::debug!("connection ended: {e}");
        }
    });
}

/// Accept and serve connections until `stop` is set.
async fn accept_until_stopped<S, F, Fut>(
    mut accept: F,
    server: &Server,
    stop: &AtomicBool,
) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + AsRawFd + Unpin + Send + 'static,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<S>>,
{
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        if server.conns.saturated() {
            // Connections closed to make room have not ended yet: leave
            // new ones in the listen queue a moment.
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(5)) => continue,
                _ = tick.tick() => if stop.load(Ordering::SeqCst) { return Ok(()) } else { continue },
            }
        }
        tokio::select! {
            r = accept() => match r {
                Ok(s) => serve_connection(s, server),
                Err(e) => {
                    // E.g. out of descriptors: make room, say so (the
                    // registry's report), and pause so that a persistent
                    // failure does not spin.
                    server.conns.accept_failed(&e);
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            _ = tick.tick() => if stop.load(Ordering::SeqCst) { return Ok(()) },
        }
    }
}

fn serve_connection<S>(stream: S, server: &Server)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + AsRawFd + Unpin + Send + 'static,
{
    let Some(reg) = server.conns.register(stream.as_raw_fd()) else {
        // Every connection is serving a request: this one is closed.
        return;
    };
    let handler = server.handler.clone();
    let conn = reg.conn().clone();
    let served = server.http.serve_connection(
        hyper_util::rt::TokioIo::new(Watched::new(reg, stream)),
        hyper::service::service_fn(move |rq| {
            let conn = conn.clone();
            let handler = handler.clone();
            async move {
                let r = handler.handle(rq, conn.clone()).await;
                conn.idle();
                Ok::<_, Infallible>(r)
            }
        }),
    );
    let served = server.graceful.watch(served);
    tokio::spawn(async move {
        if let Err(e) = served.await {
            tracing::debug!("connection ended: {e}");
        }
    });
}
