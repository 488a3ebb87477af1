//! The libStorage REST server `rexray service start` runs beside the
//! Docker plugin: every `libstorage.server.endpoints.<name>.address`
//! (`unix:///path` or `tcp://host:port`) serves every
//! `libstorage.server.services.<name>` (each with its driver's
//! [`Controller`]).
//!
//! HTTP is served as the Docker endpoint serves it ([`crate::httpd`]: a
//! task per connection, bounded header and idle times, a connection cap).
//! A request is checked by [`routes::route`]; its work then runs as a
//! task ([`super::tasks`]) on the blocking pool, after the requests for
//! the same volume before it ([`crate::docker::queue`]). A request waits
//! `libstorage.server.tasks.exeTimeout` for its task (then 408 with the
//! task, which runs on), or, with `?async`, not at all (202).
//!
//! Clients on this host find the server through `<run>/rexray.spec`,
//! which holds the first endpoint's URL while the server runs.

use super::headers::{self, Tx};
use super::routes::{self, Call, Routed, Service, Services};
use super::tasks::Tasks;
use super::wire::ErrorBody;
use crate::config::{keys, Config};
use crate::docker::api::Reply;
use crate::docker::conns::{Conn, LimitKeys, Limits, Registry};
use crate::docker::queue::Queues;
use crate::httpd::{self, Listener};
use crate::storage::controller::Controller;
use crate::{Error, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Operations served at once (each may wait on a backend).
pub const WORKERS: usize = 32;

/// How long requests in flight may run on after a stop.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(140);

/// Largest request body read.
pub const MAX_BODY: usize = 1 << 20;

/// Longest wait for a request body still on the wire.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// How often an idle server checks whether to give freed memory back.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(1);

/// Where an endpoint listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A unix socket.
    Unix(PathBuf),
    /// `host:port`.
    Tcp(String),
}

impl Address {
    /// Parse `unix:///path` or `tcp://host:port`; `key` names the setting.
    pub fn parse(s: &str, key: &str) -> Result<Address> {
        let bad = |why: &str| {
            Err(Error::invalid(format!(
                "invalid {key} {}: {why} (use unix:///var/run/rexray/libstorage.sock or tcp://127.0.0.1:7979)",
                crate::input::quote(s)
            )))
        };
        let Some((scheme, rest)) = s.trim().split_once("://") else {
            return bad("no scheme");
        };
        match scheme.to_ascii_lowercase().as_str() {
            "unix" if rest.starts_with('/') && rest.len() > 1 && rest.len() <= 107 => {
                Ok(Address::Unix(PathBuf::from(rest)))
            }
            "unix" => bad("a unix socket needs an absolute path of at most 107 bytes"),
            "tcp" => match rest.rsplit_once(':') {
                Some((host, port)) if port.parse::<u16>().is_ok() && !rest.contains('/') => {
                    let host = if host.is_empty() { "0.0.0.0" } else { host };
                    Ok(Address::Tcp(format!("{host}:{port}")))
                }
                _ => bad("the port must be a number 0..65535"),
            },
            _ => bad("only unix and tcp are supported (TLS is not supported yet)"),
        }
    }
}

/// Open the controller of every configured service (with no service
/// declared, the one of `libstorage.service`). A service whose driver
/// cannot be served is left out with a warning, so the rest (and the
/// Docker endpoint) still serve.
pub fn open_services(cfg: &Config) -> Result<Services> {
    let mut names = cfg.server_services();
    if names.is_empty() {
        names.push(cfg.service().to_ascii_lowercase());
    }
    let mut out = Services::new();
    for name in names {
        let scfg = cfg.for_service(&name)?;
        match open_controller(&scfg) {
            Ok((ctrl, default_size)) => {
                ctrl.tidy();
                out.insert(
                    name.clone(),
                    Service {
                        name,
                        ctrl,
                        default_size,
                    },
                );
            }
            Err(e) => tracing::warn!(service = %name, "not serving service {name}: {e}"),
        }
    }
    Ok(out)
}

/// The controller of the configured service's driver, and the size of a
/// volume created without one.
pub fn open_controller(cfg: &Config) -> Result<(Arc<dyn Controller>, u64)> {
    let ctrl = crate::storage::open_controller(cfg)?;
    // The original vfs driver's default size is 1 GiB; the others take
    // the configured default.
    let default_size = match ctrl.info().driver.as_str() {
        "vfs" => 1,
        _ => cfg.number(keys::CREATE_SIZE),
    };
    Ok((ctrl, default_size))
}

/// What every request is served from.
pub struct Api {
    services: Arc<Services>,
    tasks: Tasks,
    queues: Arc<Queues>,
    queue_wait: Duration,
    exe_timeout: Duration,
    server_name: String,
    auth: super::auth::Auth,
    /// Requests served and in flight, for [`release_memory_when_idle`].
    served: AtomicU64,
    in_flight: AtomicUsize,
    /// `?async` operations accepted and not finished, and how many may
    /// be: such a request is answered at once, so connections do not
    /// bound them.
    tasks_running: Arc<AtomicUsize>,
    max_tasks: usize,
    /// The log of refused tokens, bounded (see [`Refusals`]).
    refusals: Refusals,
}

/// Refused requests cost whoever sends them nothing, so their log lines
/// are bounded: at most [`Refusals::BURST`] lines in each
/// [`Refusals::EVERY`]-second window, the first line of a window counting
/// what the one before did not log; the path is cut at
/// [`Refusals::PATH`] bytes. A client without a token cannot fill the
/// disk through the log.
#[derive(Default)]
struct Refusals(std::sync::Mutex<Window>);

/// See [`Refusals`].
#[derive(Default)]
struct Window {
    /// The Unix time the window started.
    start: u64,
    /// Lines logged in it.
    logged: u32,
    /// Refusals not logged since the last line.
    unlogged: u64,
}

impl Refusals {
    const EVERY: u64 = 10;
    const BURST: u32 = 20;
    const PATH: usize = 200;

    fn log(&self, method: &hyper::Method, path: &str, why: &dyn std::fmt::Display) {
        let now = super::auth::now().max(0) as u64;
        let unlogged = {
            let mut w = self.0.lock().unwrap_or_else(|e| e.into_inner());
            if now >= w.start + Self::EVERY {
                w.start = now;
                w.logged = 0;
            }
            if w.logged >= Self::BURST {
                w.unlogged += 1;
                return;
            }
            w.logged += 1;
            std::mem::take(&mut w.unlogged)
        };
        let mut cut = path.len().min(Self::PATH);
        while !path.is_char_boundary(cut) {
            cut -= 1;
        }
        let more = if cut < path.len() { "…" } else { "" };
        let since = if unlogged > 0 {
            format!(" ({unlogged} more refused before this, not logged)")
        } else {
            String::new()
        };
        tracing::warn!(method = %method, endpoint = %format_args!("{}{more}", &path[..cut]), "refused: {}: {why}{since}", super::auth::INVALID_TOKEN);
    }
}

/// One operation counted in `Api::tasks_running` until dropped.
struct Running(Arc<AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Api {
    /// A server for `services`.
    pub fn new(services: Services, cfg: &Config) -> Api {
        let wait = cfg.duration(keys::LOCK_TIMEOUT);
        Api {
            services: Arc::new(services),
            tasks: Tasks::new(cfg.duration(keys::SERVER_LOG_TIMEOUT)),
            queues: Queues::new(WORKERS, wait),
            queue_wait: wait,
            exe_timeout: cfg.duration(keys::SERVER_EXE_TIMEOUT),
            server_name: server_name(),
            auth: Default::default(),
            served: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            tasks_running: Arc::new(AtomicUsize::new(0)),
            max_tasks: cfg.number(keys::SERVER_MAX_TASKS).max(1) as usize,
            refusals: Refusals::default(),
        }
    }

    /// The same server, checking bearer tokens as `auth` says.
    pub fn with_auth(mut self, auth: super::auth::Auth) -> Api {
        self.auth = auth;
        self
    }

    /// The services served.
    pub fn services(&self) -> &Services {
        &self.services
    }

    /// Answer one request (headers, body) in full: for tests and the
    /// hyper handler alike.
    pub async fn answer(self: &Arc<Self>, call: Call) -> Reply {
        match routes::route(&self.services, &self.tasks, &call) {
            Routed::Now(r) => r,
            Routed::Later(work) => self.run_task(&call, work).await,
        }
    }

    async fn run_task(self: &Arc<Self>, call: &Call, work: routes::Work) -> Reply {
        // Only `?async` operations count: the others are bounded by the
        // connections that wait for them.
        let running = if call.has("async") {
            if self.tasks_running.fetch_add(1, Ordering::SeqCst) >= self.max_tasks {
                self.tasks_running.fetch_sub(1, Ordering::SeqCst);
                return routes::error(&ErrorBody::from_error(
                    &Error::busy(format!(
                        "this server has {} ?async operations in flight ({}); try again once some finish",
                        self.max_tasks,
                        keys::SERVER_MAX_TASKS
                    )),
                    None,
                ));
            }
            Some(Running(self.tasks_running.clone()))
        } else {
            None
        };
        let id = self.tasks.queue();
        let mut key = format!("{} {}?", call.method, call.path).into_bytes();
        for (k, v) in &call.query {
            key.extend_from_slice(format!("{k}={v}&").as_bytes());
        }
        for h in call.instance_ids.iter().chain(&call.local_devices) {
            key.extend_from_slice(h.as_bytes());
            key.push(0);
        }
        key.extend_from_slice(&call.body);
        let me = self.clone();
        let path = call.path.clone();
        let run = work.run;
        let job = move |_: &dyn Fn() -> bool| {
            me.tasks.start(id);
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).unwrap_or_else(|p| {
                let what = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                tracing::error!(endpoint = %path, "request panicked: {what}");
                routes::error(&ErrorBody::from_error(
                    &Error::system(format!("internal error (a bug in rexray): {what}")),
                    None,
                ))
            })
        };
        let waited = self.queue_wait;
        let queues = self.queues.clone();
        let me = self.clone();
        let handle = tokio::spawn(async move {
            let _running = running;
            let r = queues
                .run(
                    work.ticket,
                    key,
                    |name| {
                        routes::error(&ErrorBody::from_error(
                            &Error::busy(format!(
                                "{} is busy: the requests for it before this one have not finished within {}; try again, or raise {}",
                                name.trim_start_matches('\0'),
                                humantime::format_duration(waited),
                                keys::LOCK_TIMEOUT
                            )),
                            None,
                        ))
                    },
                    job,
                )
                .await;
            me.tasks.finish(id, &r);
            r
        });
        let task = || self.tasks.get(id);
        if call.has("async") {
            return match task() {
                Some(t) => routes::json(202, &t),
                None => routes::json(202, &serde_json::json!({ "id": id })),
            };
        }
        match tokio::time::timeout(self.exe_timeout, handle).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => routes::error(&ErrorBody::from_error(
                &Error::system(format!("internal error: {e}")),
                None,
            )),
            Err(_) => match task() {
                Some(t) => routes::json(408, &t),
                None => routes::json(408, &serde_json::json!({ "id": id })),
            },
        }
    }
}

/// A random three-word name for this run (`Libstorage-Servername`).
fn server_name() -> String {
    const A: &[&str] = &[
        "amber", "brisk", "cotton", "dusty", "eager", "frosty", "gentle", "hollow", "ivory",
        "jolly", "leather", "mellow", "nimble", "quiet", "rusty", "silver", "tidy", "velvet",
    ];
    const B: &[&str] = &[
        "anchor", "badger", "canyon", "delta", "ember", "falcon", "harbor", "island", "lantern",
        "meadow", "otter", "pebble", "ridge", "shirt", "throat", "willow",
    ];
    let mut b = [0u8; 3];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut b);
    }
    let c = (b'a' + b[2] % 26) as char;
    let d = (b'a' + (b[2] / 26) % 26) as char;
    format!(
        "{}-{}-{c}{d}",
        A[b[0] as usize % A.len()],
        B[b[1] as usize % B.len()]
    )
}

fn decode(s: &str) -> String {
    let plus = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8_lossy()
        .into_owned()
}

fn respond(api: &Api, status: u16, content_type: &str, body: Vec<u8>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, content_type)
        .header(headers::SERVER_NAME, &api.server_name)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

async fn serve_one(api: Arc<Api>, rq: Request<Incoming>, conn: &Conn) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let (parts, body) = rq.into_parts();
    // A token first: a refused request is not read any further.
    if api.auth.is_on() {
        let authz = parts
            .headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok());
        match api.auth.check(parts.uri.path(), authz, super::auth::now()) {
            Ok(Some(who)) => {
                tracing::debug!(method = %parts.method, endpoint = %parts.uri.path(), subject = %who.sub, "token accepted")
            }
            Ok(None) => {}
            Err(why) => {
                api.refusals.log(&parts.method, parts.uri.path(), &why);
                let e = ErrorBody {
                    message: super::auth::INVALID_TOKEN.into(),
                    status: 401,
                    error: serde_json::Value::String(format!(
                        "{}: {why}",
                        super::auth::INVALID_TOKEN
                    )),
                };
                let mut r = respond(
                    &api,
                    401,
                    "application/json",
                    serde_json::to_vec(&e).unwrap_or_default(),
                );
                r.headers_mut().insert(
                    hyper::header::WWW_AUTHENTICATE,
                    hyper::header::HeaderValue::from_static("Bearer"),
                );
                return r;
            }
        }
    }
    let all = |name: &str| -> Vec<String> {
        parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    };
    let body = Limited::new(body, MAX_BODY);
    let body = match tokio::time::timeout(BODY_TIMEOUT, body.collect()).await {
        Err(_) => {
            let e = ErrorBody {
                message: "the request body did not arrive in time".into(),
                status: 408,
                error: serde_json::Value::Null,
            };
            return respond(
                &api,
                408,
                "application/json",
                serde_json::to_vec(&e).unwrap_or_default(),
            );
        }
        Ok(Err(e)) => {
            let (status, message) = if e.is::<http_body_util::LengthLimitError>() {
                (413, "the request body is larger than 1 MiB".to_string())
            } else {
                (400, format!("reading the request body: {e}"))
            };
            let e = ErrorBody {
                message,
                status,
                error: serde_json::Value::Null,
            };
            return respond(
                &api,
                status,
                "application/json",
                serde_json::to_vec(&e).unwrap_or_default(),
            );
        }
        Ok(Ok(b)) => b.to_bytes(),
    };
    conn.busy();
    // A transaction header that does not parse fails the request before
    // anything else, in plain text, as the original.
    if let Some(tx) = parts.headers.get(headers::TX) {
        let tx = String::from_utf8_lossy(tx.as_bytes());
        if let Err(e) = Tx::parse(&tx) {
            tracing::debug!("{e}");
            return respond(
                &api,
                500,
                "text/plain; charset=utf-8",
                b"invalid transaction\n".to_vec(),
            );
        }
    }
    let host = parts
        .headers
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
        .to_string();
    let call = Call {
        method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        query: parts
            .uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (decode(k), decode(v))
            })
            .collect(),
        instance_ids: all(headers::INSTANCE_ID),
        local_devices: all(headers::LOCAL_DEVICES),
        omit_usage: parts.headers.get(headers::USAGE).is_some_and(|v| {
            v.as_bytes()
                .eq_ignore_ascii_case(headers::USAGE_OMIT.as_bytes())
        }),
        body: body.to_vec(),
        base_url: format!(
            "{}://{host}",
            if parts.extensions.get::<httpd::OverTls>().is_some() {
                "https"
            } else {
                "http"
            }
        ),
    };
    let reply = api.answer(call).await;
    tracing::debug!(method = %parts.method, endpoint = %parts.uri, status = reply.status, elapsed_us = started.elapsed().as_micros() as u64, "served");
    respond(&api, reply.status, "application/json", reply.body)
}

impl httpd::Handler for Api {
    fn handle(
        self: Arc<Self>,
        rq: Request<Incoming>,
        conn: Arc<Conn>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response<Full<Bytes>>> + Send>> {
        Box::pin(async move {
            let _busy = InFlight::new(&self);
            serve_one(self.clone(), rq, &conn).await
        })
    }
}

/// A request in flight, counted until it is answered (or dropped).
struct InFlight<'a>(&'a Api);

impl<'a> InFlight<'a> {
    fn new(api: &'a Api) -> InFlight<'a> {
        api.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(api)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.served.fetch_add(1, Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Give the memory freed after a burst back to the system once the server
/// is idle (no request in flight, some served since the last check). The
/// allocator keeps what a burst of connections and volume lists freed in
/// its arenas otherwise, and a controller mostly waits.
async fn release_memory_when_idle(api: Arc<Api>) {
    let mut seen = 0;
    let mut tick = tokio::time::interval(TRIM_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let served = api.served.load(Ordering::Relaxed);
        if served == seen || api.in_flight.load(Ordering::Relaxed) != 0 {
            continue;
        }
        seen = served;
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only returns free pages of glibc's own heap.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

/// The bound endpoints of the server. Dropping it closes them and removes
/// the sockets and the spec file it made.
pub struct Server {
    listeners: Vec<Listener>,
    sockets: Vec<PathBuf>,
    urls: Vec<String>,
    spec: Option<(PathBuf, String)>,
    api: Arc<Api>,
    limits: Limits,
}

/// The spec file through which local clients find a running server.
pub fn spec_path(cfg: &Config) -> PathBuf {
    cfg.dirs.run.join("rexray.spec")
}

impl Server {
    /// Bind every configured endpoint and open every service; `None`
    /// when no endpoint is configured (nothing to serve).
    pub fn bind(cfg: &Config) -> Result<Option<Server>> {
        let endpoints = cfg.server_endpoints();
        if endpoints.is_empty() {
            return Ok(None);
        }
        // Security settings first: a mistake there serves nothing.
        let tls = super::tls::server_config(cfg)?;
        let declared: Vec<String> = {
            let mut v = cfg.server_services();
            v.push(cfg.service().to_ascii_lowercase());
            v
        };
        let auth = super::auth::Auth::from_config(cfg, &declared)?;
        let authenticated = auth.is_on();
        let services = open_services(cfg)?;
        if services.is_empty() {
            tracing::warn!("no service can be served: the libStorage API is off");
            return Ok(None);
        }
        let mut s = Server {
            listeners: Vec::new(),
            sockets: Vec::new(),
            urls: Vec::new(),
            spec: None,
            api: Arc::new(Api::new(services, cfg).with_auth(auth)),
            limits: Limits {
                header: cfg.duration(keys::SERVER_HEADER_TIMEOUT),
                idle: cfg.duration(keys::SERVER_IDLE_TIMEOUT),
                max: cfg.number(keys::SERVER_MAX_CONNECTIONS).max(1) as usize,
                keys: LimitKeys {
                    header: keys::SERVER_HEADER_TIMEOUT,
                    max: keys::SERVER_MAX_CONNECTIONS,
                },
            }
            .capped_by_nofile(),
        };
        for (name, address) in endpoints {
            let key = format!("libstorage.server.endpoints.{name}.address");
            match Address::parse(&address, &key)? {
                Address::Unix(p) => {
                    let l = httpd::bind_unix(&p, &key)?;
                    s.listeners.push(l);
                    s.sockets.push(p.clone());
                    s.urls.push(format!("unix://{}", p.display()));
                }
                Address::Tcp(a) => {
                    let (l, url) = httpd::bind_tcp(&a)?;
                    let (l, url) = match &tls {
                        Some(t) => (
                            Listener::Tls(l.into_tcp().expect("a TCP listener"), t.config.clone()),
                            url.replacen("tcp://", "https://", 1),
                        ),
                        None => (l, url),
                    };
                    exposure(&name, &url, tls.as_ref(), authenticated);
                    s.listeners.push(l);
                    s.urls.push(url);
                }
            }
        }
        let spec = spec_path(cfg);
        let content = format!("{}\n", s.urls[0]);
        crate::files::own_dir(
            &cfg.dirs.run,
            crate::files::PRIVATE_DIR,
            crate::files::Link::Refuse,
        )?;
        crate::state::atomic::write(&spec, content.as_bytes())?;
        s.spec = Some((spec, content));
        Ok(Some(s))
    }

    /// The endpoints' URLs, in order.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// The service names served.
    pub fn service_names(&self) -> Vec<String> {
        self.api.services().keys().cloned().collect()
    }

    /// Serve until `stop` is set, then let requests in flight finish.
    pub fn serve(&self, stop: Arc<AtomicBool>) {
        let listeners: std::io::Result<Vec<Listener>> =
            self.listeners.iter().map(Listener::try_clone).collect();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(WORKERS)
            .thread_name("libstorage")
            .enable_all()
            .build();
        match (listeners, rt) {
            (Ok(l), Ok(rt)) => {
                let trim = rt.spawn(release_memory_when_idle(self.api.clone()));
                rt.block_on(httpd::serve(
                    l,
                    self.api.clone(),
                    Registry::new(self.limits),
                    stop,
                    DRAIN_TIMEOUT,
                ));
                trim.abort();
                rt.shutdown_timeout(httpd::ABANDON_AFTER);
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!("cannot serve the libStorage API: {e}");
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.listeners.clear();
        for p in &self.sockets {
            httpd::remove_socket(p);
        }
        if let Some((p, content)) = &self.spec {
            remove_spec(p, content);
        }
    }
}

/// Say how exposed a tcp endpoint is: whoever can reach one without
/// authentication can create, attach, detach and remove every volume.
fn exposure(name: &str, url: &str, tls: Option<&super::tls::ServerTls>, tokens: bool) {
    let certs = tls.is_some_and(|t| t.client_certs);
    match (tls.is_some(), tokens || certs) {
        (false, false) => tracing::warn!(
            endpoint = %name,
            "the libStorage API on {url} has neither TLS nor authentication: whoever can reach it can create, attach, detach and remove the volumes of every service; set {} and {} (TLS) and {} (bearer tokens), or bind it to 127.0.0.1 or firewall it",
            keys::SERVER_TLS_CERT_FILE,
            keys::SERVER_TLS_KEY_FILE,
            keys::SERVER_AUTH_KEY
        ),
        (true, false) => tracing::warn!(
            endpoint = %name,
            "the libStorage API on {url} has TLS but no authentication: whoever can reach it can manage every volume; set {} (bearer tokens) or {}",
            keys::SERVER_AUTH_KEY,
            keys::SERVER_TLS_CLIENT_CERT_REQUIRED
        ),
        (false, true) => tracing::info!(
            endpoint = %name,
            "note: the libStorage API on {url} requires a token but has no TLS: tokens and volume data travel in clear text; set {} and {}",
            keys::SERVER_TLS_CERT_FILE,
            keys::SERVER_TLS_KEY_FILE
        ),
        (true, true) => {
            tracing::info!(endpoint = %name, "the libStorage API on {url} serves HTTPS and requires authentication")
        }
    }
}

/// Remove the spec file if it still says what this server wrote.
fn remove_spec(p: &Path, content: &str) {
    if std::fs::read_to_string(p).ok().as_deref() == Some(content) {
        let _ = std::fs::remove_file(p);
        tracing::info!(spec = %p.display(), "removed the spec file");
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
