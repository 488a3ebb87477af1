//! The listener: a unix socket under `/run/docker/plugins` or a TCP port
//! with a spec file, served by a pool of workers until told to stop.

use super::api;
use crate::config::{keys, Config};
use crate::error::IoContext;
use crate::volume::Volumes;
use crate::{Error, Result};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Requests served at once. A slow request (mkfs of a big volume) holds
/// one worker; the others go on serving.
pub const WORKERS: usize = 32;

/// Where to listen, from `rexray.modules.default-docker.host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A unix socket path.
    Unix(PathBuf),
    /// `host:port` (empty host = every address).
    Tcp(String),
}

impl Listen {
    /// Parse `unix:///path` or `tcp://host:port` (scheme case-insensitive).
    pub fn parse(s: &str) -> Result<Listen> {
        let s = s.trim();
        let bad = |why: &str| {
            Err(Error::invalid(format!(
                "invalid {} {}: {why} (use unix:///run/docker/plugins/rexray.sock or tcp://host:port)",
                keys::DOCKER_HOST,
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

/// A bound endpoint. Dropping it closes the listener and removes the
/// socket or spec file it created.
pub struct Endpoint {
    server: Option<tiny_http::Server>,
    socket: Option<PathBuf>,
    spec: Option<(PathBuf, String)>,
    url: String,
}

impl Endpoint {
    /// The address, as a URL dockerd can use.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Bind what the configuration says.
    pub fn bind(cfg: &Config) -> Result<Endpoint> {
        match Listen::parse(cfg.string(keys::DOCKER_HOST))? {
            Listen::Unix(p) => bind_unix(&p),
            Listen::Tcp(a) => bind_tcp(&a, &cfg.path(keys::DOCKER_SPEC)),
        }
    }

    /// Serve until `stop` is set, then finish what was already received.
    pub fn serve(&self, vols: Arc<Volumes>, stop: Arc<AtomicBool>) {
        let server = self.server.as_ref().expect("bound");
        std::thread::scope(|s| {
            for i in 0..WORKERS {
                let vols = vols.clone();
                let stop = stop.clone();
                std::thread::Builder::new()
                    .name(format!("docker-{i}"))
                    .spawn_scoped(s, move || worker(server, &vols, &stop))
                    .expect("spawn worker");
            }
        });
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        // tiny_http connects to its own socket to wake its acceptor: drop
        // it before the socket file goes.
        drop(self.server.take());
        if let Some(p) = &self.socket {
            // tiny_http may have removed it already.
            match std::fs::remove_file(p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    tracing::warn!(socket = %p.display(), "could not remove the socket: {e}")
                }
                _ => tracing::info!(socket = %p.display(), "removed the socket"),
            }
        }
        if let Some((p, content)) = &self.spec {
            if std::fs::read_to_string(p).ok().as_deref() == Some(content.as_str()) {
                let _ = std::fs::remove_file(p);
                tracing::info!(spec = %p.display(), "removed the spec file");
            }
        }
    }
}

fn ensure_parent(p: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    if let Some(dir) = p.parent() {
        if let Ok(m) = std::fs::metadata(dir) {
            // Anyone could swap the socket for their own there.
            if m.is_dir() && m.mode() & 0o002 != 0 {
                return Err(Error::invalid(format!(
                    "refusing to serve in {}: the directory is writable by every user; use a private directory such as /run/docker/plugins",
                    dir.display()
                )));
            }
        }
        if !dir.is_dir() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .ctx(|| format!("creating {}", dir.display()))?;
        }
    }
    Ok(())
}

fn bind_unix(path: &Path) -> Result<Endpoint> {
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
                "another process serves unix://{}; stop it first (rexray service stop) or set {}",
                path.display(),
                keys::DOCKER_HOST
            )));
        }
        tracing::info!(socket = %path.display(), "replacing a stale socket nothing answers on");
        std::fs::remove_file(path).ctx(|| format!("removing stale socket {}", path.display()))?;
    }
    let server = tiny_http::Server::http_unix(path)
        .map_err(|e| Error::system(format!("listening on unix://{}: {e}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .ctx(|| format!("setting the mode of {}", path.display()))?;
    Ok(Endpoint {
        server: Some(server),
        socket: Some(path.to_path_buf()),
        spec: None,
        url: format!("unix://{}", path.display()),
    })
}

fn bind_tcp(addr: &str, spec: &Path) -> Result<Endpoint> {
    let server = tiny_http::Server::http(addr)
        .map_err(|e| Error::system(format!("listening on tcp://{addr}: {e}")))?;
    let bound = match server.server_addr() {
        tiny_http::ListenAddr::IP(a) => a,
        #[allow(unreachable_patterns)]
        _ => return Err(Error::system("the TCP listener has no address")),
    };
    let mut reach = bound;
    if reach.ip().is_unspecified() {
        // dockerd on this host reaches a wildcard listener on loopback.
        reach.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let url = format!("tcp://{reach}");
    tracing::warn!(
        listen = %bound,
        "the Docker plugin API on tcp://{bound} has no authentication: whoever can reach it can create, mount and remove volumes; bind it to a trusted address or firewall it"
    );
    ensure_parent(spec)?;
    let content = format!("{url}\n");
    crate::state::atomic::write(spec, content.as_bytes())?;
    tracing::info!(spec = %spec.display(), url, "wrote the spec file");
    Ok(Endpoint {
        server: Some(server),
        socket: None,
        spec: Some((spec.to_path_buf(), content)),
        url,
    })
}

fn worker(server: &tiny_http::Server, vols: &Volumes, stop: &AtomicBool) {
    loop {
        let next = if stop.load(Ordering::SeqCst) {
            // Finish what was already received, then leave.
            match server.try_recv() {
                Ok(Some(rq)) => rq,
                _ => return,
            }
        } else {
            match server.recv_timeout(Duration::from_millis(200)) {
                Ok(Some(rq)) => rq,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!("accepting a request failed: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            }
        };
        serve_one(vols, next);
    }
}

/// Longest wait for a request body still on the wire: a client that sends
/// headers and then stalls must not hold a worker (or a stop) for ever.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Read the body of `rq`. tiny_http has already buffered a small body;
/// any other is read by a helper thread, abandoned (with the stalled
/// connection) after [`BODY_TIMEOUT`].
fn read_body(
    mut rq: tiny_http::Request,
) -> std::result::Result<(tiny_http::Request, std::io::Result<Vec<u8>>), ()> {
    fn read(rq: &mut tiny_http::Request) -> std::io::Result<Vec<u8>> {
        let mut body = Vec::new();
        rq.as_reader()
            .take(api::MAX_BODY + 1)
            .read_to_end(&mut body)?;
        Ok(body)
    }
    let expects = rq.headers().iter().any(|h| h.field.equiv("Expect"));
    if !expects && rq.body_length().is_some_and(|n| n <= 1024) {
        let body = read(&mut rq);
        return Ok((rq, body));
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("docker-body".into())
        .spawn(move || {
            let body = read(&mut rq);
            let _ = tx.send((rq, body));
        });
    if spawned.is_err() {
        return Err(());
    }
    rx.recv_timeout(BODY_TIMEOUT).map_err(|_| ())
}

fn serve_one(vols: &Volumes, rq: tiny_http::Request) {
    let started = Instant::now();
    let path = rq.url().to_string();
    let Ok((rq, read)) = read_body(rq) else {
        tracing::warn!(endpoint = %path, "dropped a request whose body did not arrive within {}", humantime::format_duration(BODY_TIMEOUT));
        return;
    };
    let mut body = Vec::new();
    let read = read.map(|b| body = b);
    let reply = match read {
        Err(e) => api::Reply {
            status: 400,
            body: format!(
                "{}\n",
                serde_json::json!({ "Err": format!("reading the request body: {e}") })
            )
            .into_bytes(),
        },
        Ok(_) if body.len() as u64 > api::MAX_BODY => api::Reply {
            status: 413,
            body: b"{\"Err\":\"the request body is larger than 1 MiB\"}\n".to_vec(),
        },
        Ok(_) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            api::handle(vols, &path, &body)
        }))
        .unwrap_or_else(|p| {
            let what = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            tracing::error!(endpoint = %path, "request panicked: {what}");
            api::Reply {
                status: 500,
                body: format!(
                    "{}\n",
                    serde_json::json!({ "Err": format!("internal error (a bug in rexray): {what}") })
                )
                .into_bytes(),
            }
        }),
    };
    let status = reply.status;
    // Always Content-Length (tiny_http would switch big bodies to chunked).
    let resp = tiny_http::Response::from_data(reply.body)
        .with_chunked_threshold(usize::MAX)
        .with_status_code(status)
        .with_header(
            tiny_http::Header::from_bytes(&b"Content-Type"[..], api::CONTENT_TYPE.as_bytes())
                .expect("valid header"),
        );
    if let Err(e) = rq.respond(resp) {
        tracing::debug!(endpoint = %path, "the client went away: {e}");
    }
    tracing::debug!(endpoint = %path, status, elapsed_us = started.elapsed().as_micros() as u64, "served");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(
            Listen::parse("unix:///run/docker/plugins/rexray.sock").unwrap(),
            Listen::Unix("/run/docker/plugins/rexray.sock".into())
        );
        assert_eq!(
            Listen::parse("TCP://:7981").unwrap(),
            Listen::Tcp("0.0.0.0:7981".into())
        );
        assert_eq!(
            Listen::parse("tcp://127.0.0.1:0").unwrap(),
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
            assert!(Listen::parse(bad).is_err(), "{bad}");
        }
    }
}
