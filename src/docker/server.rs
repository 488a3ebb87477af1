//! The listeners: per Docker module ([`super::modules`]) a unix socket
//! under `/run/docker/plugins` or a TCP port with a spec file, served until
//! told to stop.
//!
//! HTTP/1.1 is hyper's, on a small tokio runtime: a connection costs a task,
//! not a thread, so idle keep-alive connections (dockerd keeps them) and
//! clients that stall mid-request never hold up anyone else. The workflows
//! are blocking (locks, mkfs, mount), so each request runs on the blocking
//! pool: a slow format of one volume holds one of [`WORKERS`] threads.
//! Requests for one volume wait their turn before they take a thread
//! ([`super::queue`]): however many wait for a stuck volume, it holds one.
//! Requests answered from memory ([`api::handle_in_memory`]: Activate,
//! Capabilities, Get and List while the catalog is unchanged) are served
//! where they arrive: they cost a few metadata syscalls, less than the
//! handoff to a thread, and never wait for a lock.
//!
//! Connections are bounded in time and number ([`super::conns`]): a client
//! has `headerTimeout` to send a request's headers, a keep-alive connection
//! may idle for `idleTimeout`, and at `maxConnections` the connection that
//! waited the longest for a request is closed to make room.

use super::api;
use super::conns::{Conn, Limits, Registry};
use super::modules::{Module, Neighbours};
use super::queue::{Queues, Ticket};
use crate::config::keys;
use crate::httpd::{self, Listener};
use crate::volume::Volumes;
use crate::{Error, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Requests that may block served at once. A slow request (mkfs of a big
/// volume) holds one of these threads; the others go on serving, and
/// requests answered from memory need none.
pub const WORKERS: usize = 32;

/// How long in-flight requests may run on after a stop (dockerd waits up
/// to 2 minutes for a Create or Mount).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(140);

/// Where to listen, from a module's `host`
/// (`rexray.modules.default-docker.host`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A unix socket path.
    Unix(PathBuf),
    /// `host:port` (empty host = every address).
    Tcp(String),
}

impl Listen {
    /// Parse `unix:///path` or `tcp://host:port` (scheme case-insensitive);
    /// `key` is the setting it comes from, named in errors.
    pub fn parse(s: &str, key: &str) -> Result<Listen> {
        let s = s.trim();
        let bad = |why: &str| {
            Err(Error::invalid(format!(
                "invalid {key} {}: {why} (use unix:///run/docker/plugins/rexray.sock or tcp://host:port)",
                crate::input::quote(s)
            )))
        };
        let Some((scheme, rest)) = s.split_once("://") else {
            return bad("no scheme");
        };
        match scheme.to_ascii_lowercase().as_str() {
            "unix" => {
                if !rest.starts_with('/') || rest.len() < 2 {
                    return bad("a unix socket needs an absolute path");
                }
                // sun_path holds 108 bytes including the NUL.
                if rest.len() > 107 {
                    return bad("the socket path is longer than 107 bytes");
                }
                Ok(Listen::Unix(PathBuf::from(rest)))
            }
            "tcp" => {
                let Some((host, port)) = rest.rsplit_once(':') else {
                    return bad("no port");
                };
                if port.parse::<u16>().is_err() || rest.contains('/') {
                    return bad("the port must be a number 0..65535");
                }
                let host = if host.is_empty() { "0.0.0.0" } else { host };
                Ok(Listen::Tcp(format!("{host}:{port}")))
            }
            _ => bad("only unix and tcp are supported"),
        }
    }
}

/// A module's bound endpoint. Dropping it closes the listener and removes
/// the socket or spec file it created.
pub struct Endpoint {
    module: String,
    service: String,
    listener: Option<Listener>,
    socket: Option<PathBuf>,
    spec: Option<(PathBuf, String)>,
    url: String,
    limits: Limits,
}

impl Endpoint {
    /// The address, as a URL dockerd can use.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The module it serves.
    pub fn module(&self) -> &str {
        &self.module
    }

    /// The service it serves.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Bind what module `m` says.
    pub fn bind(m: &Module) -> Result<Endpoint> {
        let (listener, socket, spec, url) = match &m.listen {
            Listen::Unix(p) => {
                let l = httpd::bind_unix(p, &m.host_key)?;
                (l, Some(p.clone()), None, format!("unix://{}", p.display()))
            }
            Listen::Tcp(a) => {
                let (l, spec, url) = bind_tcp(&m.name, a, &m.spec)?;
                (l, None, Some(spec), url)
            }
        };
        Ok(Endpoint {
            module: m.name.clone(),
            service: m.service().to_string(),
            listener: Some(listener),
            socket,
            spec,
            url,
            limits: m.limits.capped_by_nofile(),
        })
    }
}

/// One module as served: its endpoint, its volumes, and the modules whose
/// volumes mount at the same place.
pub struct Served<'a> {
    /// The bound endpoint.
    pub endpoint: &'a Endpoint,
    /// Its volumes.
    pub vols: Arc<Volumes>,
    /// Its neighbours.
    pub neighbours: Neighbours,
}

/// Serve every module until `stop` is set, then let the requests in
/// flight finish (bounded by [`DRAIN_TIMEOUT`]). One runtime serves them
/// all; each module has its own connection registry, queues and kept List
/// reply, and [`WORKERS`] threads of the blocking pool to itself, so a
/// module stuck on its backend holds up none of the others.
pub fn serve(served: Vec<Served<'_>>, stop: Arc<AtomicBool>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(WORKERS * served.len().max(1))
        .thread_name("docker")
        .enable_all()
        .build();
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot serve the Docker plugin API: {e}");
            return;
        }
    };
    let mut tasks = Vec::new();
    for s in served {
        let listener = match s.endpoint.listener.as_ref().expect("bound").try_clone() {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(
                    module = s.endpoint.module,
                    "cannot serve the Docker plugin API: {e}"
                );
                continue;
            }
        };
        let wait = s.vols.config().duration(keys::LOCK_TIMEOUT);
        let state = Arc::new(State {
            vols: s.vols,
            cache: api::Cache::default(),
            queues: Queues::new(WORKERS, wait),
            queue_wait: wait,
            neighbours: s.neighbours,
            module: s.endpoint.module.clone(),
        });
        tasks.push(rt.spawn(httpd::serve(
            vec![listener],
            state,
            Registry::new(s.endpoint.limits),
            stop.clone(),
            DRAIN_TIMEOUT,
        )));
    }
    rt.block_on(async {
        for t in tasks {
            let _ = t.await;
        }
    });
    rt.shutdown_timeout(httpd::ABANDON_AFTER);
}

/// What every request of one module is served from.
struct State {
    vols: Arc<Volumes>,
    cache: api::Cache,
    /// Where requests for one volume wait their turn.
    queues: Arc<Queues>,
    /// How long they may wait (`rexray.lockTimeout`).
    queue_wait: Duration,
    /// The modules whose volumes mount at the same place.
    neighbours: Neighbours,
    /// The module's name, for the logs.
    module: String,
}

impl httpd::Handler for State {
    fn handle(
        self: Arc<Self>,
        rq: Request<Incoming>,
        conn: Arc<Conn>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response<Full<Bytes>>> + Send>> {
        Box::pin(async move { serve_one(self, rq, conn).await })
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        drop(self.listener.take());
        if let Some(p) = &self.socket {
            httpd::remove_socket(p);
        }
        if let Some((p, content)) = &self.spec {
            if std::fs::read_to_string(p).ok().as_deref() == Some(content.as_str()) {
                let _ = std::fs::remove_file(p);
                tracing::info!(module = self.module, spec = %p.display(), "removed the spec file");
            }
        }
    }
}

/// Listen on TCP `addr` for module `module` and write the spec file
/// `spec` with the URL dockerd reaches it by; returns the listener, the
/// spec file (path, content) and the URL.
fn bind_tcp(
    module: &str,
    addr: &str,
    spec: &Path,
) -> Result<(Listener, (PathBuf, String), String)> {
    let (server, url) = httpd::bind_tcp(addr)?;
    let bound = url.trim_start_matches("tcp://").to_string();
    tracing::warn!(
        module,
        listen = %bound,
        "the Docker plugin API on tcp://{bound} has no authentication: whoever can reach it can create, mount and remove volumes; bind it to a trusted address or firewall it"
    );
    httpd::ensure_parent(spec)?;
    let content = format!("{url}\n");
    crate::files::atomic::write(spec, content.as_bytes())?;
    tracing::info!(module, spec = %spec.display(), url, "wrote the spec file");
    Ok((server, (spec.to_path_buf(), content), url))
}

/// Set when the request that holds it is dropped before it is answered.
struct Abandoned(Arc<AtomicBool>, bool);

impl Abandoned {
    fn armed() -> Abandoned {
        Abandoned(Arc::new(AtomicBool::new(false)), true)
    }
    fn flag(&self) -> Arc<AtomicBool> {
        self.0.clone()
    }
    fn disarm(mut self) {
        self.1 = false;
    }
}

impl Drop for Abandoned {
    fn drop(&mut self) {
        if self.1 {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// A Mount that succeeded for a client that has gone (dockerd gave up
/// waiting, its request timed out): dockerd counts it as failed and will
/// never send the Unmount, so the consumer would hold the volume for
/// ever. It is undone (the same ID unmounted) and answered as failed.
fn undo_if_abandoned(
    st: &State,
    path: &str,
    body: &[u8],
    reply: api::Reply,
    client_gone: impl Fn() -> bool,
) -> api::Reply {
    let mounted = path.split('?').next() == Some("/VolumeDriver.Mount") && reply.status == 200;
    if !mounted || !client_gone() {
        return reply;
    }
    let undo = api::handle_with(&st.vols, Some(&st.cache), "/VolumeDriver.Unmount", body);
    let name = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("Name").and_then(|n| n.as_str()).map(str::to_string))
        .unwrap_or_default();
    if undo.status == 200 {
        tracing::warn!(module = %st.module, volume = %name, "the client left before its Mount was answered (dockerd gave up on it and will not unmount): undone");
    } else {
        tracing::warn!(module = %st.module, volume = %name, error = %String::from_utf8_lossy(&undo.body).trim(), "the client left before its Mount was answered, and undoing it failed");
    }
    json_reply(
        500,
        "the client left before the mount was answered; it was undone",
    )
}

/// Longest wait for a request body still on the wire: a client that sends
/// headers and then stalls gets an error instead of holding anything.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

fn json_reply(status: u16, err: &str) -> api::Reply {
    api::Reply {
        status,
        body: format!("{}\n", serde_json::json!({ "Err": err })).into_bytes(),
    }
}

fn panicked(path: &str, p: Box<dyn std::any::Any + Send>) -> api::Reply {
    let what = p
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    tracing::error!(endpoint = %path, "request panicked: {what}");
    json_reply(500, &format!("internal error (a bug in rexray): {what}"))
}

/// Serve one request on `conn`, which counts as busy (never closed to
/// make room) only once its body is in: a client trickling a body is
/// still waiting to send its request, and a flood of them is evicted like
/// one stalled in its headers.
async fn serve_one(
    state: Arc<State>,
    rq: Request<Incoming>,
    conn: Arc<Conn>,
) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let path = rq.uri().path().to_string();
    let body = Limited::new(rq.into_body(), api::MAX_BODY as usize);
    let reply = match tokio::time::timeout(BODY_TIMEOUT, body.collect()).await {
        Err(_) => {
            tracing::warn!(endpoint = %path, "dropped a request whose body did not arrive within {}", humantime::format_duration(BODY_TIMEOUT));
            json_reply(408, "the request body did not arrive in time")
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            json_reply(413, "the request body is larger than 1 MiB")
        }
        Ok(Err(e)) => json_reply(400, &format!("reading the request body: {e}")),
        Ok(Ok(collected)) => 'handled: {
            conn.busy();
            let body = collected.to_bytes();
            let fast = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                api::handle_in_memory(&state.vols, &state.cache, &path, &body)
            }));
            match fast {
                Ok(Some(reply)) => break 'handled reply,
                Ok(None) => {}
                Err(p) => break 'handled panicked(&path, p),
            }
            let ticket = api::ticket(&path, &body);
            let mut key = path.clone().into_bytes();
            key.push(0);
            key.extend_from_slice(&body);
            let p = path.clone();
            let st = state.clone();
            // Set if this request is dropped before its reply (hyper drops
            // it when the client goes): see `undo_if_abandoned`.
            let abandoned = Abandoned::armed();
            let gone = abandoned.flag();
            let conn = conn.clone();
            let work = move |joined: &dyn Fn() -> bool| {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    if let Some(name) = api::mount_point_of(&p, &body) {
                        let creating = p.split('?').next() == Some("/VolumeDriver.Create");
                        if let Err(e) = st.neighbours.check(&st.vols, &name, creating) {
                            return api::refused(&p, e);
                        }
                    }
                    let reply = api::handle_with(&st.vols, Some(&st.cache), &p, &body);
                    // Gone, and no identical request (dockerd's retry) that
                    // joined it waits for this reply either.
                    undo_if_abandoned(&st, &p, &body, reply, || {
                        (gone.load(std::sync::atomic::Ordering::SeqCst) || conn.peer_gone())
                            && !joined()
                    })
                }))
                .unwrap_or_else(|e| panicked(&p, e))
            };
            let ticket = ticket.unwrap_or(Ticket {
                names: Vec::new(),
                name_table: false,
            });
            let waited = state.queue_wait;
            let reply = state
                .queues
                .run(ticket, key, |name| api::busy(name, waited), work)
                .await;
            abandoned.disarm();
            reply
        }
    };
    let status = reply.status;
    tracing::debug!(module = %state.module, endpoint = %path, status, elapsed_us = started.elapsed().as_micros() as u64, "served");
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, api::CONTENT_TYPE)
        .body(Full::new(Bytes::from(reply.body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        let parse = |s: &str| Listen::parse(s, keys::DOCKER_HOST);
        assert_eq!(
            parse("unix:///run/docker/plugins/rexray.sock").unwrap(),
            Listen::Unix("/run/docker/plugins/rexray.sock".into())
        );
        assert_eq!(
            parse("TCP://:7981").unwrap(),
            Listen::Tcp("0.0.0.0:7981".into())
        );
        assert_eq!(
            parse("tcp://127.0.0.1:0").unwrap(),
            Listen::Tcp("127.0.0.1:0".into())
        );
        for bad in [
            "",
            "/run/x.sock",
            "http://x:1",
            "tcp://x",
            "tcp://x:port",
            "unix://rel",
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains(keys::DOCKER_HOST), "{bad}: {e}");
        }
    }
}
