//! The libStorage REST client: a remote service's [`Controller`], so the
//! workflow drives a controller on another host exactly as a local driver.
//!
//! It speaks as the original 0.11 client does: a handshake at connect
//! (`GET /services`, then `GET /services/{svc}?instance` with the node
//! executor's instance id, which the server resolves), then on every
//! request the resolved `Libstorage-Instanceid`, a fresh `Libstorage-Tx`,
//! and on `/volumes` GETs and POSTs the node's `Libstorage-Localdevices`.
//! Error bodies come back as the library's [`Error`] kinds (404 →
//! not found, and our server's `error.kind` where it sends one).
//!
//! HTTP is ureq's, over TCP or a unix socket (ureq has no unix socket
//! transport of its own: [`UnixConnector`] is the small one it needs).
//! Keep-alive connections are pooled, as the original client's.

use super::headers::{self, InstanceId, LocalDevices, Tx};
use super::wire::{self, ErrorBody};
use crate::model::{CreateSpec, Snapshot, Volume};
use crate::storage::controller::{Attached, Controller, Executor, Prepare, ServiceInfo};
use crate::{Error, Result};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, DefaultConnector, LazyBuffers, NextTimeout, Transport,
};

/// How long a request may take in all (connect, send, answer), unless
/// the caller sets another bound.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// A connection's stream: a unix socket, or TLS over TCP.
pub trait Stream: Read + Write + std::fmt::Debug + Send + Sync + 'static {
    /// Bound the next reads and writes (`None`: no bound).
    fn set_timeouts(&self, read: Option<Duration>, write: Option<Duration>) -> std::io::Result<()>;
    /// Whether the peer has not closed it and sent nothing unasked.
    fn is_open(&mut self) -> bool;
}

/// Open when a read would block: no end of file, no stray bytes.
fn socket_open(fd: &impl std::os::fd::AsFd) -> bool {
    use std::os::fd::AsRawFd;
    let mut b = [0u8; 1];
    // SAFETY: a peek into a local buffer of the length given, on a
    // descriptor the stream owns.
    let n = unsafe {
        libc::recv(
            fd.as_fd().as_raw_fd(),
            b.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
}

impl Stream for UnixStream {
    fn set_timeouts(&self, read: Option<Duration>, write: Option<Duration>) -> std::io::Result<()> {
        self.set_read_timeout(read)?;
        self.set_write_timeout(write)
    }
    fn is_open(&mut self) -> bool {
        socket_open(self)
    }
}

/// TLS over TCP, as the client speaks it.
pub type TlsStream = rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>;

impl Stream for TlsStream {
    fn set_timeouts(&self, read: Option<Duration>, write: Option<Duration>) -> std::io::Result<()> {
        self.sock.set_read_timeout(read)?;
        self.sock.set_write_timeout(write)
    }
    fn is_open(&mut self) -> bool {
        // A close_notify or any record unasked for: not reused.
        socket_open(&self.sock)
    }
}

/// Connects every request of an agent to one unix socket, whatever the
/// URL's host.
#[derive(Debug)]
pub struct UnixConnector(PathBuf);

impl Connector for UnixConnector {
    type Out = StreamTransport<UnixStream>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        _chained: Option<()>,
    ) -> std::result::Result<Option<Self::Out>, ureq::Error> {
        let stream = UnixStream::connect(&self.0)?;
        Ok(Some(StreamTransport::new(stream, details)))
    }
}

/// Where an agent's requests go, looked up at most once per client.
/// ureq's own resolver looks the host up again for every request, on a
/// thread of its own when a timeout is set (as ours always is): a thread
/// and a hosts-file read per request, for an answer that does not change.
#[derive(Debug)]
enum Addresses {
    /// The connector finds the server itself (a unix socket, or TLS over
    /// the address it was given): nothing to look up.
    Unused,
    /// Looked up by ureq's resolver the first time (within the request's
    /// timeout), then kept.
    Once(std::sync::OnceLock<Vec<std::net::SocketAddr>>),
}

impl Resolver for Addresses {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> std::result::Result<ResolvedSocketAddrs, ureq::Error> {
        let mut out = self.empty();
        match self {
            Addresses::Unused => out.push(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
            Addresses::Once(kept) => match kept.get() {
                Some(addrs) => addrs.iter().for_each(|a| out.push(*a)),
                None => {
                    let found = DefaultResolver::default().resolve(uri, config, timeout)?;
                    let _ = kept.set(found.to_vec());
                    return Ok(found);
                }
            },
        }
        Ok(out)
    }
}

/// Connects every request of an agent to one TCP address with TLS; the
/// handshake is made at once, so that an untrusted server is refused
/// before anything is sent.
#[derive(Debug)]
pub struct TlsConnector {
    addr: String,
    tls: Arc<super::tls::ClientTls>,
    /// Why the last handshake failed, for the caller's error.
    failure: Arc<std::sync::Mutex<Option<Error>>>,
}

impl Connector for TlsConnector {
    type Out = StreamTransport<TlsStream>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        _chained: Option<()>,
    ) -> std::result::Result<Option<Self::Out>, ureq::Error> {
        use std::net::ToSocketAddrs;
        let limit = details.timeout.not_zero().map(|d| *d);
        let mut last = None;
        let mut tcp = None;
        for sa in self.addr.to_socket_addrs()? {
            let r = match limit {
                Some(t) => std::net::TcpStream::connect_timeout(&sa, t),
                None => std::net::TcpStream::connect(sa),
            };
            match r {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let Some(tcp) = tcp else {
            return Err(ureq::Error::Io(last.unwrap_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotFound, "the host has no address")
            })));
        };
        let _ = tcp.set_nodelay(true);
        let conn = rustls::ClientConnection::new(
            self.tls.config().clone(),
            self.tls.server_name().clone(),
        )
        .map_err(|e| ureq::Error::Io(std::io::Error::other(e)))?;
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        stream.set_timeouts(limit, limit)?;
        while stream.conn.is_handshaking() {
            if let Err(e) = stream.conn.complete_io(&mut stream.sock) {
                let err = self.tls.explain(&self.addr, &e);
                let msg = err.message().to_string();
                if let Ok(mut f) = self.failure.lock() {
                    *f = Some(err);
                }
                return Err(ureq::Error::Io(std::io::Error::other(msg)));
            }
        }
        Ok(Some(StreamTransport::new(stream, details)))
    }
}

/// One connection.
#[derive(Debug)]
pub struct StreamTransport<S> {
    stream: S,
    buffers: LazyBuffers,
}

/// A connection to a unix socket.
pub type UnixTransport = StreamTransport<UnixStream>;

impl<S> StreamTransport<S> {
    fn new(stream: S, details: &ConnectionDetails) -> Self {
        let buffers = LazyBuffers::new(
            details.config.input_buffer_size(),
            details.config.output_buffer_size(),
        );
        StreamTransport { stream, buffers }
    }
}

fn io_error(e: std::io::Error, timeout: &NextTimeout) -> ureq::Error {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            ureq::Error::Timeout(timeout.reason)
        }
        _ => ureq::Error::Io(e),
    }
}

impl<S: Stream> Transport for StreamTransport<S> {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(
        &mut self,
        amount: usize,
        timeout: NextTimeout,
    ) -> std::result::Result<(), ureq::Error> {
        let timeout = timeout.for_write();
        self.stream
            .set_timeouts(None, timeout.not_zero().map(|d| *d))?;
        let output = &self.buffers.output()[..amount];
        self.stream
            .write_all(output)
            .and_then(|()| self.stream.flush())
            .map_err(|e| io_error(e, &timeout))
    }

    fn await_input(&mut self, timeout: NextTimeout) -> std::result::Result<bool, ureq::Error> {
        let timeout = timeout.for_read();
        self.stream
            .set_timeouts(timeout.not_zero().map(|d| *d), None)?;
        let input = self.buffers.input_append_buf();
        let n = loop {
            match self.stream.read(input) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => break r.map_err(|e| io_error(e, &timeout))?,
            }
        };
        self.buffers.input_appended(n);
        Ok(n > 0)
    }

    fn is_open(&mut self) -> bool {
        self.stream.is_open()
    }
}

/// Where a server is: `unix:///path`, `tcp://host:port` (TLS as the
/// `libstorage.tls` keys say) or `https://host:port` (also spelt
/// `tcp+tls://`: always TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A unix socket.
    Unix(PathBuf),
    /// `host:port`.
    Tcp(String),
    /// `host:port`, over TLS.
    Tls(String),
}

impl Host {
    /// Parse a `libstorage.host` value.
    pub fn parse(s: &str) -> Result<Host> {
        let s = s.trim();
        let bad = |why: &str| {
            Err(Error::invalid(format!(
                "invalid libStorage host {}: {why} (use unix:///path.sock or tcp://host:port)",
                crate::input::quote(s)
            )))
        };
        let Some((scheme, rest)) = s.split_once("://") else {
            return bad("no scheme");
        };
        match scheme.to_ascii_lowercase().as_str() {
            "unix" if rest.starts_with('/') => Ok(Host::Unix(PathBuf::from(rest))),
            "unix" => bad("a unix socket needs an absolute path"),
            scheme @ ("tcp" | "http" | "https" | "tcp+tls") => {
                match rest.trim_end_matches('/').rsplit_once(':') {
                    Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => {
                        let a = rest.trim_end_matches('/').to_string();
                        Ok(match scheme {
                            "https" | "tcp+tls" => Host::Tls(a),
                            _ => Host::Tcp(a),
                        })
                    }
                    _ => bad("expected host:port"),
                }
            }
            _ => bad("only unix, tcp and https are supported"),
        }
    }

    /// As a URL.
    pub fn url(&self) -> String {
        match self {
            Host::Unix(p) => format!("unix://{}", p.display()),
            Host::Tcp(a) => format!("tcp://{a}"),
            Host::Tls(a) => format!("https://{a}"),
        }
    }
}

/// What a client needs to reach a server safely: TLS for a tcp host, and
/// the bearer token.
#[derive(Clone, Default)]
pub struct Security {
    /// TLS (`None`: plain HTTP, or a unix socket).
    pub tls: Option<Arc<super::tls::ClientTls>>,
    /// The bearer token.
    pub token: Option<String>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("Security")
            .field("tls", &self.tls.is_some())
            .field("token", &self.token.is_some())
            .finish()
    }
}

impl Security {
    /// As `cfg` says for the server at `url`: a `tcp://` host speaks TLS
    /// when the `libstorage.tls` keys ask for it, an `https://` one always.
    pub fn from_config(cfg: &crate::config::Config, url: &str) -> Result<Security> {
        use crate::config::keys;
        let token = super::auth::client_token(cfg)?;
        let tls = match Host::parse(url)? {
            Host::Unix(_) => None,
            Host::Tcp(a) => match super::tls::client_wants_tls(cfg)? {
                true => Some(a),
                false => None,
            },
            Host::Tls(a) => {
                if cfg.boolean(keys::CLIENT_TLS_DISABLED) {
                    return Err(Error::invalid(format!(
                        "{url} asks for TLS but {} is true: use tcp:// for a server without TLS, or unset it",
                        keys::CLIENT_TLS_DISABLED
                    )));
                }
                Some(a)
            }
        };
        let tls = match tls {
            Some(a) => Some(Arc::new(super::tls::client_config(cfg, &a)?)),
            None => None,
        };
        Ok(Security { tls, token })
    }
}

/// The URL of a running server this host announced in `<run>/rexray.spec`,
/// if one answers there (a unix socket that accepts a connection, or a
/// TCP port on this host that does, within a second).
pub fn local_server(spec: &Path) -> Option<String> {
    let text = std::fs::read_to_string(spec).ok()?;
    let url = text.trim().to_string();
    let answers = match Host::parse(&url).ok()? {
        Host::Unix(p) => UnixStream::connect(p).is_ok(),
        Host::Tcp(a) | Host::Tls(a) => {
            use std::net::ToSocketAddrs;
            let local =
                a.starts_with("127.") || a.starts_with("localhost:") || a.starts_with("[::1]:");
            local
                && a.to_socket_addrs().ok()?.any(|sa| {
                    std::net::TcpStream::connect_timeout(&sa, Duration::from_secs(1)).is_ok()
                })
        }
    };
    answers.then_some(url)
}

/// A remote service, as a [`Controller`].
pub struct Client {
    agent: ureq::Agent,
    base: String,
    host: String,
    info: ServiceInfo,
    executor: Option<Arc<dyn Executor>>,
    /// The caller as the server resolved it (`DRIVER:SERVICE=ID`).
    instance: Option<InstanceId>,
    /// `Bearer <token>`.
    authorization: Option<String>,
    /// Why the last TLS handshake failed.
    tls_failure: Option<Arc<std::sync::Mutex<Option<Error>>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("host", &self.host)
            .field("service", &self.info.service)
            .field("instance", &self.instance)
            .finish()
    }
}

/// The create body, in the original client's field order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreateBody<'a> {
    name: &'a str,
    availability_zone: &'a str,
    encrypted: bool,
    iops: i64,
    size: u64,
    #[serde(rename = "type")]
    volume_type: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    opts: &'a BTreeMap<String, String>,
}

/// Escape a path segment (ids and names are plain already; this keeps a
/// stray character from changing the route).
fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// What the server answered.
struct Answer {
    status: u16,
    body: Vec<u8>,
}

impl Client {
    /// Connect to the server at `host` (`unix:///path` or
    /// `tcp://host:port`) for `service`, and shake hands as the original
    /// client: the service must be served, and the `executor`'s instance
    /// id (when this node has one) is resolved by the server. `timeout`
    /// bounds each request.
    pub fn connect(
        host: &str,
        service: &str,
        executor: Option<Arc<dyn Executor>>,
        timeout: Duration,
    ) -> Result<Client> {
        Self::connect_with(host, service, executor, timeout, &Security::default())
    }

    /// [`Client::connect`] with TLS and a token: a `tcp://` host with
    /// `security.tls` (or an `https://` one) speaks TLS.
    pub fn connect_with(
        host: &str,
        service: &str,
        executor: Option<Arc<dyn Executor>>,
        timeout: Duration,
        security: &Security,
    ) -> Result<Client> {
        let parsed = Host::parse(host)?;
        let tls = match (&parsed, &security.tls) {
            (Host::Unix(_), _) | (Host::Tcp(_), None) => None,
            (Host::Tcp(a) | Host::Tls(a), Some(t)) => Some((a.clone(), t.clone())),
            (Host::Tls(a), None) => {
                return Err(Error::invalid(format!(
                    "https://{a}: no TLS settings were given for it"
                )))
            }
        };
        let failure = Arc::new(std::sync::Mutex::new(None));
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(timeout))
            .user_agent(concat!("rexray-rs/", env!("CARGO_PKG_VERSION")))
            .build();
        let (agent, base) = match &parsed {
            Host::Unix(p) => (
                ureq::Agent::with_parts(config, UnixConnector(p.clone()), Addresses::Unused),
                "http://localhost".to_string(),
            ),
            _ => match tls {
                Some((a, tls)) => (
                    ureq::Agent::with_parts(
                        config,
                        TlsConnector {
                            addr: a.clone(),
                            tls,
                            failure: failure.clone(),
                        },
                        Addresses::Unused,
                    ),
                    format!("http://{a}"),
                ),
                None => {
                    let (Host::Tcp(a) | Host::Tls(a)) = &parsed else {
                        unreachable!("a unix host is handled above")
                    };
                    (
                        ureq::Agent::with_parts(
                            config,
                            DefaultConnector::default(),
                            Addresses::Once(Default::default()),
                        ),
                        format!("http://{a}"),
                    )
                }
            },
        };
        let host_url = match (&parsed, &security.tls) {
            (Host::Tcp(a), Some(_)) => format!("https://{a}"),
            _ => parsed.url(),
        };
        let mut c = Client {
            agent,
            base,
            host: host_url,
            info: ServiceInfo {
                service: service.to_string(),
                driver: String::new(),
                storage_type: crate::storage::controller::StorageType::Block,
                next_device: Default::default(),
            },
            executor,
            instance: None,
            authorization: security.token.as_ref().map(|t| format!("Bearer {t}")),
            tls_failure: Some(failure),
        };
        // 1. The services.
        let a = c.send("GET", "/services", None, None, false)?;
        let services: BTreeMap<String, wire::Service> = c.decode(&a, "listing the services")?;
        let Some(svc) = services
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(service))
            .map(|(_, s)| s)
        else {
            return Err(Error::not_found(format!(
                "the libStorage server at {} does not serve service {service} (it serves: {})",
                c.host,
                services.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        };
        c.info = svc.to_info();
        // 2. Who this node is, as the server resolves it.
        if let Some(x) = &c.executor {
            let mine = InstanceId {
                driver: c.info.driver.clone(),
                service: String::new(),
                ..InstanceId::from_model(x.instance_id())
            };
            let path = format!("/services/{}?instance", seg(&c.info.service));
            let a = c.send("GET", &path, None, Some(&mine), false)?;
            let s: wire::Service = c.decode(&a, "resolving this node's instance id")?;
            let Some(inst) = s.instance else {
                return Err(Error::backend(format!(
                    "the libStorage server at {} did not resolve this node's instance id",
                    c.host
                )));
            };
            c.instance = Some(InstanceId {
                id: inst.instance_id.id,
                driver: c.info.driver.clone(),
                service: c.info.service.clone(),
                ..Default::default()
            });
        }
        Ok(c)
    }

    /// The server's URL.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// This node as the server knows it, once resolved.
    pub fn instance(&self) -> Option<&InstanceId> {
        self.instance.as_ref()
    }

    fn who(&self, who: &crate::model::InstanceId) -> InstanceId {
        InstanceId {
            id: who.id.clone(),
            driver: self.info.driver.clone(),
            service: self.info.service.clone(),
            ..Default::default()
        }
    }

    /// One request. `who`: the instance header (else the handshake's);
    /// `devices`: send this node's local devices.
    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        who: Option<&InstanceId>,
        devices: bool,
    ) -> Result<Answer> {
        self.send_with(method, path, body, who, devices, None)
    }

    /// [`send`](Self::send) with one more header.
    fn send_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        who: Option<&InstanceId>,
        devices: bool,
        extra: Option<(&'static str, &'static str)>,
    ) -> Result<Answer> {
        let url = format!("{}{path}", self.base);
        let mut hs: Vec<(&str, String)> = vec![(headers::TX, Tx::new().header())];
        if let Some((k, v)) = extra {
            hs.push((k, v.to_string()));
        }
        if let Some(a) = &self.authorization {
            hs.push(("Authorization", a.clone()));
        }
        if let Some(i) = who.or(self.instance.as_ref()) {
            hs.push((headers::INSTANCE_ID, i.header()));
        }
        if devices {
            if let Some(x) = &self.executor {
                let ld = LocalDevices {
                    driver: self.info.driver.clone(),
                    devices: x.local_devices()?,
                };
                hs.push((headers::LOCAL_DEVICES, ld.header()));
            }
        }
        let unreachable = |e: ureq::Error| {
            let tls = self
                .tls_failure
                .as_ref()
                .and_then(|f| f.lock().ok().and_then(|mut f| f.take()));
            if let Some(e) = tls {
                return e;
            }
            Error::system(format!(
                "the libStorage server at {} did not answer {method} {path}: {e}",
                self.host
            ))
        };
        let resp = match (method, body) {
            ("GET", _) => {
                let mut r = self.agent.get(&url);
                for (k, v) in &hs {
                    r = r.header(*k, v);
                }
                r.call()
            }
            ("DELETE", _) => {
                let mut r = self.agent.delete(&url);
                for (k, v) in &hs {
                    r = r.header(*k, v);
                }
                r.call()
            }
            (_, b) => {
                let mut r = self
                    .agent
                    .post(&url)
                    .header("Content-Type", "application/json");
                for (k, v) in &hs {
                    r = r.header(*k, v);
                }
                let bytes = serde_json::to_vec(b.unwrap_or(&Value::Object(Default::default())))
                    .expect("JSON serialises");
                r.send(&bytes[..])
            }
        }
        .map_err(unreachable)?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .map_err(unreachable)?;
        Ok(Answer { status, body })
    }

    /// The error an answer of status ≥ 300 stands for.
    fn error(&self, a: &Answer, what: &str) -> Error {
        if a.status == 408 {
            let task = serde_json::from_slice::<wire::Task>(&a.body)
                .map(|t| format!(" (task {})", t.id))
                .unwrap_or_default();
            return Error::busy(format!(
                "{what}: the libStorage server at {} did not finish within its libstorage.server.tasks.exeTimeout; the operation goes on there{task}",
                self.host
            ));
        }
        if a.status == 400
            && String::from_utf8_lossy(&a.body).contains("HTTP request to an HTTPS server")
        {
            return Error::invalid(format!(
                "{what}: the libStorage server at {} serves HTTPS on that port: use https://{} as libstorage.host, or tcp:// with libstorage.tls.trustedCertsFile or libstorage.tls.knownHosts set",
                self.host,
                self.host.split_once("://").map(|(_, a)| a).unwrap_or(&self.host)
            ));
        }
        if a.status == 401 {
            let why = serde_json::from_slice::<ErrorBody>(&a.body)
                .ok()
                .map(|b| match b.error {
                    Value::String(s) if !s.is_empty() => s,
                    _ => b.message,
                })
                .unwrap_or_else(|| String::from_utf8_lossy(&a.body).trim().to_string());
            let hint = if self.authorization.is_some() {
                "check libstorage.client.auth.token: it must be signed with the server's libstorage.server.auth.key and algorithm, unexpired, and its subject allowed"
            } else {
                "the server requires a bearer token: set libstorage.client.auth.token (see `rexray token new`)"
            };
            return Error::invalid(format!(
                "{what}: the libStorage server at {} refused the request: {why}; {hint}",
                self.host
            ));
        }
        match serde_json::from_slice::<ErrorBody>(&a.body) {
            Ok(b) => b.to_error().context(what),
            Err(_) => Error::backend(format!(
                "{what}: the libStorage server at {} answered {}: {}",
                self.host,
                a.status,
                String::from_utf8_lossy(&a.body).trim()
            )),
        }
    }

    fn decode<T: serde::de::DeserializeOwned>(&self, a: &Answer, what: &str) -> Result<T> {
        if a.status >= 300 {
            return Err(self.error(a, what));
        }
        serde_json::from_slice(&a.body).map_err(|e| {
            Error::backend(format!(
                "{what}: the libStorage server at {} answered what is not the expected JSON: {e}",
                self.host
            ))
        })
    }

    /// The extensions this crate's server offers for the service
    /// (`GET /services/{svc}?extensions`); `None` from a server without
    /// them (an original REX-Ray server ignores the query).
    fn extensions(&self) -> Result<Option<wire::Extensions>> {
        let path = format!("/services/{}?extensions", seg(&self.info.service));
        let a = self.send("GET", &path, None, None, false)?;
        let s: wire::Service = self.decode(&a, "asking the server for its extensions")?;
        Ok(s.rexray)
    }

    fn vols(&self) -> String {
        format!("/volumes/{}", seg(&self.info.service))
    }

    /// Every volume, `attachments` as the mask.
    fn volumes(&self, mask: u32, name: Option<&str>) -> Result<Vec<Volume>> {
        self.volumes_with(mask, name, None)
    }

    fn volumes_with(
        &self,
        mask: u32,
        name: Option<&str>,
        extra: Option<(&'static str, &'static str)>,
    ) -> Result<Vec<Volume>> {
        let mut path = format!("{}?attachments={mask}", self.vols());
        if let Some(n) = name {
            path.push_str(&format!("&filter={}", seg(&format!("(name={n})"))));
        }
        let a = self.send_with("GET", &path, None, None, true, extra)?;
        let m: BTreeMap<String, Volume> = self.decode(&a, "listing volumes")?;
        Ok(m.into_values().map(unsettled).collect())
    }

    fn one(&self, id: &str) -> Result<Option<Volume>> {
        let path = format!("{}/{}?attachments=1", self.vols(), seg(id));
        let a = self.send("GET", &path, None, None, true)?;
        if a.status == 404 {
            return Ok(None);
        }
        // The original server answers `null` for a volume it lost track
        // of mid-change.
        let v: Option<Volume> = self.decode(&a, &format!("inspecting volume {id}"))?;
        Ok(v.map(unsettled))
    }
}

/// The controller's view: the state is the caller's to derive.
fn unsettled(mut v: Volume) -> Volume {
    v.attachment_state = 0;
    v
}

impl Controller for Client {
    fn info(&self) -> &ServiceInfo {
        &self.info
    }
    fn offers(&self) -> crate::storage::controller::Offers {
        use crate::storage::controller::Offers;
        // What the server's driver offers is its to tell: asked, it
        // answers. Growing is the exception: the libStorage API has none,
        // so a server without this crate's extensions (the original
        // REX-Ray) cannot (one that cannot be reached now is taken to).
        // So are snapshots of volumes attached elsewhere, which only the
        // server's driver can tell.
        let (resize, live_snapshots) = match self.extensions() {
            Ok(x) => x.map_or((false, false), |x| (x.resize, x.live_snapshots)),
            Err(_) => (true, false),
        };
        Offers {
            resize,
            live_snapshots,
            ..Offers::ALL
        }
    }

    fn list(&self) -> Result<Vec<Volume>> {
        self.volumes(1, None)
    }

    fn list_without_usage(&self) -> Result<Vec<Volume>> {
        self.volumes_with(1, None, Some((headers::USAGE, headers::USAGE_OMIT)))
    }

    fn inspect(&self, id: &str) -> Result<Option<Volume>> {
        self.one(id)
    }

    fn lookup_name(&self, name: &str) -> Result<Option<Volume>> {
        Ok(self
            .volumes(1, Some(name))?
            .into_iter()
            .find(|v| v.name == name))
    }

    fn list_metadata(&self) -> Result<Arc<[Volume]>> {
        Ok(self.volumes(0, None)?.into())
    }

    fn lookup_metadata_name(&self, name: &str) -> Result<Option<Volume>> {
        Ok(self
            .volumes(0, Some(name))?
            .into_iter()
            .find(|v| v.name == name))
    }

    fn create(&self, name: &str, spec: &CreateSpec) -> Result<Volume> {
        let body = serde_json::to_value(CreateBody {
            name,
            availability_zone: &spec.availability_zone,
            encrypted: spec.encrypted,
            iops: spec.iops,
            size: spec.size,
            volume_type: &spec.volume_type,
            opts: &spec.fields,
        })
        .expect("JSON serialises");
        let a = self.send("POST", &self.vols(), Some(&body), None, true)?;
        let v: Volume = self.decode(&a, &format!("creating volume {name}"))?;
        Ok(unsettled(v))
    }

    fn remove(&self, id: &str, force: bool) -> Result<()> {
        let mut path = format!("{}/{}", self.vols(), seg(id));
        if force {
            path.push_str("?force");
        }
        // As the original client: no local devices on DELETE.
        let a = self.send("DELETE", &path, None, None, false)?;
        if a.status >= 300 {
            return Err(self.error(&a, &format!("removing volume {id}")));
        }
        Ok(())
    }

    fn attach(
        &self,
        id: &str,
        who: &crate::model::InstanceId,
        force: bool,
        next_device: Option<&str>,
    ) -> Result<Attached> {
        let mut body = serde_json::Map::new();
        if force {
            body.insert("force".into(), Value::Bool(true));
        }
        if let Some(d) = next_device {
            body.insert("nextDeviceName".into(), Value::String(d.to_string()));
        }
        let path = format!("{}/{}?attach", self.vols(), seg(id));
        let who = self.who(who);
        let a = self.send("POST", &path, Some(&Value::Object(body)), Some(&who), true)?;
        let r: wire::AttachResponse = self.decode(&a, &format!("attaching volume {id}"))?;
        Ok(Attached {
            volume: unsettled(r.volume),
            token: r.attach_token,
        })
    }

    fn detach(&self, id: &str, who: &crate::model::InstanceId, force: bool) -> Result<Volume> {
        let mut body = serde_json::Map::new();
        if force {
            body.insert("force".into(), Value::Bool(true));
        }
        let path = format!("{}/{}?detach", self.vols(), seg(id));
        let who = self.who(who);
        let a = self.send("POST", &path, Some(&Value::Object(body)), Some(&who), true)?;
        let v: Volume = self.decode(&a, &format!("detaching volume {id}"))?;
        Ok(unsettled(v))
    }

    /// The libStorage API has no resize: this crate's server offers one
    /// as an extension (`POST /volumes/{svc}/{id}?resize`, `{"size":
    /// GiB}`), used only when the server says so; against any other
    /// server the resize is refused before it is sent, naming the server
    /// (not the server's driver, which may well resize volumes of its own).
    fn resize(&self, id: &str, size_gib: u64) -> Result<u64> {
        if !self.extensions()?.is_some_and(|x| x.resize) {
            return Err(Error::unsupported(format!(
                "volumes cannot be resized through the libStorage server at {}: the libStorage API has no resize, and the server does not offer rexray-rs's resize extension",
                self.host
            )));
        }
        let path = format!("{}/{}?resize", self.vols(), seg(id));
        let body = serde_json::json!({ "size": size_gib });
        let a = self.send("POST", &path, Some(&body), None, false)?;
        let v: Volume = self.decode(&a, &format!("resizing volume {id}"))?;
        Ok(v.size.saturating_mul(1 << 30))
    }

    fn available_bytes(&self) -> Option<u64> {
        self.capacity().ok().flatten()
    }

    /// Registered with the server, whose driver keeps the registry (this
    /// crate's extension); a server without it (the original REX-Ray)
    /// keeps none, so there is nothing to register with.
    fn register_node(&self, who: &crate::model::InstanceId) -> Result<()> {
        let path = format!("/services/{}?registerNode", seg(&self.info.service));
        let a = self.send("POST", &path, None, Some(&self.who(who)), false)?;
        match a.status {
            s if s < 300 => Ok(()),
            404 | 405 => Ok(()),
            _ => Err(self.error(&a, &format!("registering node {} with the server", who.id))),
        }
    }

    fn node_known(&self, node: &str) -> Result<Option<bool>> {
        let path = format!(
            "/services/{}?extensions&node={}",
            seg(&self.info.service),
            seg(node)
        );
        let a = self.send("GET", &path, None, None, false)?;
        let s: wire::Service = self.decode(&a, &format!("asking the server about node {node}"))?;
        Ok(s.rexray.and_then(|x| x.node_known))
    }

    /// From the server's extensions; a server without them cannot tell.
    fn capacity(&self) -> Result<Option<u64>> {
        match self.extensions()? {
            Some(x) => Ok(x.available_bytes),
            None => Err(Error::unsupported(format!(
                "the libStorage server at {} does not tell the space it has free: the libStorage API has no capacity, and the server does not offer rexray-rs's extensions",
                self.host
            ))),
        }
    }

    /// The copy is made by the server; `intact` is checked once it is
    /// made (the copy is removed again if it fails), and `prepare` is
    /// skipped: the new image is on the controller's host, not here.
    /// A size other than the source's is sent as `size`, which only this
    /// crate's server knows (the original API has none for a copy): a copy
    /// of the source's size sends the original's body.
    fn copy(
        &self,
        id: &str,
        new_name: &str,
        spec: &CreateSpec,
        intact: &dyn Fn() -> Result<()>,
        prepare: Prepare<'_>,
    ) -> Result<Volume> {
        let _ = prepare;
        let mut body = serde_json::Map::new();
        body.insert("volumeName".into(), Value::String(new_name.to_string()));
        if spec.size > 0 {
            let src = self.one(id)?.map(|v| v.size);
            if src != Some(spec.size) {
                body.insert("size".into(), Value::from(spec.size));
            }
        }
        if !spec.fields.is_empty() {
            body.insert(
                "opts".into(),
                serde_json::to_value(&spec.fields).expect("JSON"),
            );
        }
        let path = format!("{}/{}?copy", self.vols(), seg(id));
        let a = self.send("POST", &path, Some(&Value::Object(body)), None, true)?;
        let v: Volume = self.decode(&a, &format!("copying volume {id} to {new_name}"))?;
        if let Err(e) = intact() {
            let _ = self.remove(&v.id, true);
            return Err(e);
        }
        Ok(unsettled(v))
    }

    fn snapshot(
        &self,
        id: &str,
        snap_name: &str,
        intact: &dyn Fn() -> Result<()>,
    ) -> Result<Snapshot> {
        let body = serde_json::json!({ "snapshotName": snap_name });
        let path = format!("{}/{}?snapshot", self.vols(), seg(id));
        let a = self.send("POST", &path, Some(&body), None, true)?;
        let s: wire::Snapshot =
            self.decode(&a, &format!("taking snapshot {snap_name} of volume {id}"))?;
        if let Err(e) = intact() {
            let _ = self.remove_snapshot(&s.id);
            return Err(e);
        }
        Ok(s.to_model())
    }

    fn snapshots(&self) -> Result<Vec<Snapshot>> {
        let path = format!("/snapshots/{}", seg(&self.info.service));
        let a = self.send("GET", &path, None, None, false)?;
        let m: BTreeMap<String, wire::Snapshot> = self.decode(&a, "listing snapshots")?;
        Ok(m.values().map(wire::Snapshot::to_model).collect())
    }

    fn remove_snapshot(&self, snap_id: &str) -> Result<()> {
        let path = format!("/snapshots/{}/{}", seg(&self.info.service), seg(snap_id));
        let a = self.send("DELETE", &path, None, None, false)?;
        if a.status >= 300 {
            return Err(self.error(&a, &format!("removing snapshot {snap_id}")));
        }
        Ok(())
    }

    fn create_from_snapshot(
        &self,
        snap_id: &str,
        new_name: &str,
        spec: &CreateSpec,
        prepare: Prepare<'_>,
    ) -> Result<Volume> {
        let _ = prepare;
        let body = serde_json::to_value(CreateBody {
            name: new_name,
            availability_zone: &spec.availability_zone,
            encrypted: spec.encrypted,
            iops: spec.iops,
            size: spec.size,
            volume_type: &spec.volume_type,
            opts: &spec.fields,
        })
        .expect("JSON serialises");
        let path = format!(
            "/snapshots/{}/{}?create",
            seg(&self.info.service),
            seg(snap_id)
        );
        let a = self.send("POST", &path, Some(&body), None, false)?;
        let v: Volume = self.decode(
            &a,
            &format!("creating volume {new_name} from snapshot {snap_id}"),
        )?;
        Ok(unsettled(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(
            Host::parse("unix:///run/x.sock").unwrap(),
            Host::Unix("/run/x.sock".into())
        );
        assert_eq!(
            Host::parse("tcp://127.0.0.1:7979").unwrap(),
            Host::Tcp("127.0.0.1:7979".into())
        );
        assert_eq!(Host::parse("tcp://h:1").unwrap().url(), "tcp://h:1");
        assert_eq!(
            Host::parse("https://h:1/").unwrap(),
            Host::Tls("h:1".into())
        );
        assert_eq!(Host::parse("TCP+TLS://h:1").unwrap().url(), "https://h:1");
        for bad in [
            "",
            "unix://rel",
            "tcp://h",
            "tcp://:1",
            "https://h",
            "ftp://h:1",
        ] {
            assert!(Host::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(seg("a b/c"), "a%20b%2Fc");
        let t = tempfile::tempdir().unwrap();
        let spec = t.path().join("rexray.spec");
        assert_eq!(local_server(&spec), None);
        std::fs::write(&spec, format!("unix://{}/none.sock\n", t.path().display())).unwrap();
        assert_eq!(local_server(&spec), None);
        let sock = t.path().join("s.sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        std::fs::write(&spec, format!("unix://{}\n", sock.display())).unwrap();
        assert_eq!(
            local_server(&spec),
            Some(format!("unix://{}", sock.display()))
        );
    }

    /// The client against the server, in process, over a unix socket and
    /// a TCP port: the Controller calls round-trip, errors keep their kind.
    #[test]
    fn the_client_drives_the_server() {
        use crate::storage::vfs::{VfsDriver, VfsExecutor};
        let t = tempfile::tempdir().unwrap();
        let mut env = std::collections::HashMap::new();
        env.insert(
            "REXRAY_HOME".to_string(),
            t.path().to_string_lossy().into_owned(),
        );
        let sock = t.path().join("ls.sock");
        std::fs::create_dir_all(t.path().join("etc")).unwrap();
        std::fs::write(
            t.path().join("etc/config.yml"),
            format!(
                "libstorage:\n  service: vfs\n  server:\n    endpoints:\n      a:\n        address: unix://{}\n      b:\n        address: tcp://127.0.0.1:0\n    services:\n      vfs:\n        driver: vfs\n",
                sock.display()
            ),
        )
        .unwrap();
        let cfg = crate::config::Config::load(crate::config::LoadOptions {
            env: Some(env),
            ..Default::default()
        })
        .unwrap();
        let server = Arc::new(crate::api::server::Server::bind(&cfg).unwrap().unwrap());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let serving = {
            let (server, stop) = (server.clone(), stop.clone());
            std::thread::spawn(move || server.serve(stop))
        };
        let urls = server.urls().to_vec();
        assert!(urls[1].starts_with("tcp://127.0.0.1:"), "{urls:?}");
        let _ = VfsDriver::open(&t.path().join("var/lib/vfs"), "vfs").unwrap();
        for (n, url) in urls.iter().enumerate() {
            let node = |id: &str| -> Arc<dyn Executor> {
                Arc::new(
                    VfsExecutor::open(
                        &t.path().join("var/lib/vfs"),
                        crate::model::InstanceId {
                            id: id.into(),
                            driver: "vfs".into(),
                            service: String::new(),
                        },
                    )
                    .unwrap(),
                )
            };
            let a =
                Client::connect(url, "VFS", Some(node("node-a")), Duration::from_secs(30)).unwrap();
            let b =
                Client::connect(url, "vfs", Some(node("node-b")), Duration::from_secs(30)).unwrap();
            assert_eq!(a.info().driver, "vfs");
            assert_eq!(a.instance().unwrap().header(), "vfs:vfs=node-a");
            let spec = CreateSpec {
                size: 2,
                fields: [("fsType".to_string(), "ext4".to_string())].into(),
                ..Default::default()
            };
            let name = format!("v{n}");
            let v = a.create(&name, &spec).unwrap();
            assert_eq!((v.size, v.fields["fsType"].as_str()), (2, "ext4"));
            assert_eq!(
                a.create(&name, &spec).unwrap_err().kind(),
                crate::Kind::AlreadyExists
            );
            assert_eq!(a.lookup_name(&name).unwrap().unwrap().id, v.id);
            assert_eq!(a.lookup_name(&name.to_uppercase()).unwrap(), None);
            assert_eq!(a.lookup_metadata_name(&name).unwrap().unwrap().id, v.id);
            assert_eq!(a.inspect("nosuch").unwrap(), None);
            let me_a = a.instance().unwrap().to_model();
            let me_b = b.instance().unwrap().to_model();
            let at = a.attach(&v.id, &me_a, false, Some("/dev/xvda")).unwrap();
            assert_eq!(at.token, "/dev/xvda");
            assert_eq!(at.volume.attachments[0].instance_id.id, "node-a");
            let e = b.attach(&v.id, &me_b, false, None).unwrap_err();
            assert_eq!(e.kind(), crate::Kind::InUse, "{e}");
            assert!(e.message().contains("node-a"), "{e}");
            assert_eq!(
                b.remove(&v.id, false).unwrap_err().kind(),
                crate::Kind::InUse
            );
            let seen = b.inspect(&v.id).unwrap().unwrap();
            assert_eq!(
                crate::storage::controller::derive_state(&seen, Some(&me_b)),
                crate::model::AttachmentState::Unavailable
            );
            let at = b.attach(&v.id, &me_b, true, None).unwrap();
            assert_eq!(at.volume.attachments[0].instance_id.id, "node-b");
            let d = b.detach(&v.id, &me_b, false).unwrap();
            assert!(d.attachments.is_empty());
            assert_eq!(a.list().unwrap().len(), 1);
            assert_eq!(a.list_metadata().unwrap().len(), 1);
            assert!(a.snapshots().unwrap().is_empty());
            let e = a.snapshot(&v.id, "s", &|| Ok(())).unwrap_err();
            assert_eq!(e.kind(), crate::Kind::Unsupported, "{e}");
            // This server offers resize (an extension): the refusal is
            // its driver's.
            let e = a.resize(&v.id, 3).unwrap_err();
            assert_eq!(e.kind(), crate::Kind::Unsupported, "{e}");
            assert!(e.message().contains("vfs driver cannot"), "{e}");
            assert!(a.capacity().is_ok());
            a.remove(&v.id, false).unwrap();
            assert_eq!(
                a.remove(&v.id, false).unwrap_err().kind(),
                crate::Kind::NotFound
            );
            assert!(a.list().unwrap().is_empty());
            let e = Client::connect(url, "nosvc", None, Duration::from_secs(5)).unwrap_err();
            assert_eq!(e.kind(), crate::Kind::NotFound);
            assert!(e.message().contains("serves: vfs"), "{e}");
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        serving.join().unwrap();
        drop(server);
        assert!(!sock.exists());
        assert!(!t.path().join("var/run/rexray.spec").exists());
        let e = Client::connect(&urls[0], "vfs", None, Duration::from_secs(5)).unwrap_err();
        assert_eq!(e.kind(), crate::Kind::System, "{e}");
    }
}
