//! The csi modules' sockets and their gRPC servers.

use super::conns::{CallsLayer, Conns, Tracked};
use super::proto::controller_server::ControllerServer;
use super::proto::identity_server::IdentityServer;
use super::proto::node_server::NodeServer;
use super::{Csi, Mode};
use crate::config::{keys, Config, ModuleConfig};
use crate::volume::Volumes;
use crate::{Error, Result};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One csi module, checked and ready to bind.
#[derive(Debug, Clone)]
pub struct Module {
    /// Its name (`rexray.modules.<name>`).
    pub name: String,
    /// Its socket.
    pub path: PathBuf,
    /// The services it serves.
    pub mode: Mode,
    /// Its configuration: own settings, service, overrides.
    pub config: ModuleConfig,
}

/// The socket path of a csi module's host: `unix:///path` or a bare
/// absolute path; anything else is refused, naming the key.
fn socket_path(m: &ModuleConfig) -> Result<PathBuf> {
    let key = m.key("host");
    let host = m.host.trim();
    if host.is_empty() {
        return Err(Error::invalid(format!(
            "csi module {} has no endpoint: set {key} (e.g. unix:///var/lib/kubelet/plugins/{}/csi.sock) or the {} environment variable",
            m.name,
            super::DRIVER_NAME,
            crate::config::modules::CSI_ENDPOINT_VAR
        )));
    }
    let path = match host.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("unix") => rest,
        Some(_) => {
            return Err(Error::invalid(format!(
            "invalid value {} for {key}: a CSI endpoint is a unix socket (unix:///path/csi.sock)",
            crate::input::quote(host)
        )))
        }
        None => host,
    };
    let p = PathBuf::from(path);
    if !p.is_absolute() || p.file_name().is_none() {
        return Err(Error::invalid(format!(
            "invalid value {} for {key}: the socket's path must be absolute",
            crate::input::quote(host)
        )));
    }
    Ok(p)
}

/// Every csi module the configuration enables, checked: an absolute unix
/// socket each, no two on one socket.
pub fn configured(cfg: &Config) -> Result<Vec<Module>> {
    let mode = Mode::parse(cfg.string(keys::CSI_MODE));
    let mut out: Vec<Module> = Vec::new();
    for m in cfg.csi_modules()? {
        let path = socket_path(&m)?;
        if let Some(o) = out.iter().find(|o| o.path == path) {
            return Err(Error::invalid(format!(
                "{} and {} both name unix://{}: each csi module needs its own socket",
                o.config.key("host"),
                m.key("host"),
                path.display()
            )));
        }
        out.push(Module {
            name: m.name.clone(),
            path,
            mode,
            config: m,
        });
    }
    Ok(out)
}

impl Module {
    /// The service it serves.
    pub fn service(&self) -> &str {
        self.config.service()
    }

    /// Its address, as `rexray service status` shows it.
    pub fn url(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    /// Open its volumes ([`Volumes::open_for_module`]).
    pub fn open(&self, serves_api: bool) -> Result<Volumes> {
        Volumes::open_for_module(
            self.config.config.clone(),
            serves_api,
            self.config.overrides(keys::LIBSTORAGE_HOST),
        )
        .map_err(|e| {
            e.context(format!(
                "opening csi module {} (service {})",
                self.name,
                self.service()
            ))
        })
    }
}

/// A bound csi socket; removed when dropped (if it is still ours).
pub struct Endpoint {
    module: Module,
    listener: Option<std::os::unix::net::UnixListener>,
    ino: (u64, u64),
}

impl Endpoint {
    /// Bind a module's socket (0660, its directory made when missing). A
    /// socket left by a killed service (nothing accepts on it) is removed
    /// first; one that something serves, or a file that is not a socket,
    /// is refused.
    pub fn bind(m: &Module) -> Result<Endpoint> {
        let p = &m.path;
        let key = m.config.key("host");
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::from_io(format!("creating {} ({key})", dir.display()), &e))?;
        }
        match std::fs::symlink_metadata(p) {
            Ok(md) if md.file_type().is_socket() => {
                if std::os::unix::net::UnixStream::connect(p).is_ok() {
                    return Err(Error::in_use(format!(
                        "{} ({key}) is served by another process; stop it or give csi module {} another socket",
                        p.display(),
                        m.name
                    )));
                }
                tracing::warn!(socket = %p.display(), "removing a stale csi socket");
                std::fs::remove_file(p)
                    .map_err(|e| Error::from_io(format!("removing {}", p.display()), &e))?;
            }
            Ok(_) => {
                return Err(Error::invalid(format!(
                    "{} ({key}) exists and is not a socket; refusing to replace it",
                    p.display()
                )))
            }
            Err(_) => {}
        }
        let listener = std::os::unix::net::UnixListener::bind(p)
            .map_err(|e| Error::from_io(format!("binding {} ({key})", p.display()), &e))?;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o660))
            .map_err(|e| Error::from_io(format!("setting the mode of {}", p.display()), &e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::from_io(format!("setting up {}", p.display()), &e))?;
        let md = std::fs::symlink_metadata(p)
            .map_err(|e| Error::from_io(format!("reading {}", p.display()), &e))?;
        Ok(Endpoint {
            module: m.clone(),
            listener: Some(listener),
            ino: (md.dev(), md.ino()),
        })
    }

    /// Its module.
    pub fn module(&self) -> &Module {
        &self.module
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.module.path)
            .is_ok_and(|md| (md.dev(), md.ino()) == self.ino);
        if ours {
            let _ = std::fs::remove_file(&self.module.path);
        }
    }
}

/// The gRPC servers of the csi endpoints, ready to serve.
pub struct Servers {
    rt: tokio::runtime::Runtime,
    servers: Vec<(PathBuf, Csi, tokio::net::UnixListener, Arc<Conns>)>,
}

impl Servers {
    /// Take the endpoints' listeners, each with its module's volumes.
    pub fn new(served: Vec<(&mut Endpoint, Arc<Volumes>)>) -> Result<Servers> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("csi")
            .enable_all()
            .build()
            .map_err(|e| Error::from_io("starting the csi runtime", &e))?;
        let mut servers = Vec::new();
        for (ep, vols) in served {
            let listener = ep.listener.take().expect("bound once");
            let path = ep.module.path.clone();
            let incoming = {
                let _guard = rt.enter();
                tokio::net::UnixListener::from_std(listener)
                    .map_err(|e| Error::from_io(format!("serving {}", path.display()), &e))?
            };
            let conns = Conns::new(
                path.display().to_string(),
                ep.module.config.max_connections,
                &ep.module.config.key("maxConnections"),
            );
            servers.push((path, Csi::new(vols, ep.module.mode), incoming, conns));
        }
        Ok(Servers { rt, servers })
    }

    /// Serve until `stop` is set, then let the work of the calls in
    /// flight finish (bounded by `grace`) and close every connection: a
    /// client that keeps an idle connection open (kubelet does) does not
    /// hold the stop up.
    pub fn serve(self, stop: Arc<AtomicBool>, grace: Duration) {
        let Servers { rt, servers } = self;
        let csis: Vec<Csi> = servers.iter().map(|(_, c, _, _)| c.clone()).collect();
        // A node service registers this host as a node of the backend
        // now, and again at each NodeGetInfo (which fails while it
        // cannot): a controller elsewhere publishes only to nodes.
        for csi in csis.iter().filter(|c| c.mode.node()) {
            let c = csi.clone();
            rt.spawn_blocking(move || {
                if let Err(e) = c.vols.register_node() {
                    tracing::warn!(
                        "csi: could not register this node yet (NodeGetInfo tries again): {e}"
                    );
                }
            });
        }
        let mut running = Vec::new();
        for (path, csi, incoming, conns) in servers {
            let stop = stop.clone();
            let mode = csi.mode;
            running.push(rt.spawn(async move {
                let router = tonic::transport::Server::builder()
                    .layer(CallsLayer)
                    .add_service(IdentityServer::new(csi.clone()))
                    .add_optional_service(
                        mode.controller()
                            .then(|| ControllerServer::new(csi.clone())),
                    )
                    .add_optional_service(mode.node().then(|| NodeServer::new(csi.clone())));
                let stream = accepted(incoming, path.clone(), conns);
                let shutdown = async move {
                    while !stop.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                };
                if let Err(e) = router.serve_with_incoming_shutdown(stream, shutdown).await {
                    tracing::error!(socket = %path.display(), "the csi endpoint failed: {e}");
                }
            }));
        }
        rt.block_on(async {
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let end = tokio::time::Instant::now() + grace;
            while csis.iter().any(|c| c.active() > 0) && tokio::time::Instant::now() < end {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            for s in &running {
                s.abort();
            }
            for s in running {
                let _ = s.await;
            }
        });
        rt.shutdown_timeout(Duration::from_secs(1));
    }
}

/// A failed `accept` (out of descriptors, out of memory) is retried this
/// long after.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Connections closed to make room whose tasks have not ended yet, beyond
/// which accepting waits for them.
const CLOSING_SLACK: usize = 16;

/// The connections of `listener`, for tonic, each admitted by `conns`
/// (which may close another to make room, or refuse it). tonic moves on
/// to the next `accept` as soon as one fails, so a failure that lasts (the
/// process's descriptors used up) would spin a core: each failure is
/// logged (the first, then every 600th) and followed by a pause, while the
/// connections already open are served.
fn accepted(
    listener: tokio::net::UnixListener,
    path: PathBuf,
    conns: Arc<Conns>,
) -> impl tokio_stream::Stream<Item = std::io::Result<Tracked<tokio::net::UnixStream>>> {
    use tokio_stream::StreamExt;
    let failures = Arc::new(std::sync::atomic::AtomicU64::new(0));
    tokio_stream::wrappers::UnixListenerStream::new(listener)
        .then(move |r| {
            let (failures, path, conns) = (failures.clone(), path.clone(), conns.clone());
            async move {
                match r {
                    Ok(s) => {
                        // Connections closed to make room have not ended
                        // yet: let them go before taking more (bounded).
                        let end = tokio::time::Instant::now() + Duration::from_secs(1);
                        while conns.closing() > CLOSING_SLACK && tokio::time::Instant::now() < end {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        conns.admit(s).map(Ok)
                    }
                    Err(e) => {
                        let n = failures.fetch_add(1, Ordering::Relaxed);
                        if n.is_multiple_of(600) {
                            tracing::warn!(
                                socket = %path.display(),
                                failures = n + 1,
                                "accepting a csi connection failed: {e}; pausing {} ms after each failure (raise the open-files limit if it says too many open files)",
                                ACCEPT_BACKOFF.as_millis()
                            );
                        }
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        Some(Err(e))
                    }
                }
            }
        })
        .filter_map(|r| r)
}
