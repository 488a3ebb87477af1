//! The Docker modules one `rexray service` serves (`rexray.modules.<name>`,
//! configured as [`crate::config::modules`] reads them): each is its own
//! Docker volume driver — its own socket (or TCP port and spec file),
//! connection limits, per-volume queues and kept List reply — over its own
//! [`Volumes`]: its service, used directly or through a libStorage server,
//! exactly as `default-docker`'s.
//!
//! The modules of different services share the state directory and, unless
//! one sets its own `…mount.path`, the mount path: two volumes of one name
//! would mount at one place. So a request that acts on a mount point
//! (Create, Remove, Mount, Unmount, Path) is refused when another module
//! has a different volume of that name mounting there ([`Neighbours`]).

use super::conns::{LimitKeys, Limits};
use super::server::Listen;
use crate::config::{keys, Config, ModuleConfig, DEFAULT_DOCKER};
use crate::volume::Volumes;
use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One Docker module, checked and ready to bind.
#[derive(Debug, Clone)]
pub struct Module {
    /// Its name (`rexray.modules.<name>`).
    pub name: String,
    /// Where it listens.
    pub listen: Listen,
    /// Its spec file, for a tcp endpoint.
    pub spec: PathBuf,
    /// Its connection limits.
    pub limits: Limits,
    /// Its configuration: own settings, service, overrides.
    pub config: ModuleConfig,
    /// The key of `listen`, named in errors.
    pub host_key: String,
}

/// A module's key for its connection limits' log lines: the limits name
/// their keys as `&'static str`, and a module's keys are made once, at
/// start, for the life of the process.
fn static_key(module: &ModuleConfig, setting: &str, default_docker: &'static str) -> &'static str {
    if module.name == DEFAULT_DOCKER {
        default_docker
    } else {
        Box::leak(module.key(setting).into_boxed_str())
    }
}

/// Every Docker module the configuration enables, checked: a type served,
/// a valid name and host, and no two on one socket, port or spec file, nor
/// on a libStorage API endpoint's socket.
pub fn configured(cfg: &Config) -> Result<Vec<Module>> {
    let mut out: Vec<Module> = Vec::new();
    for m in cfg.docker_modules()? {
        let host_key = m.key("host");
        let listen = Listen::parse(&m.host, &host_key)?;
        if let Some(other) = out.iter().find(|o| same_place(&o.listen, &listen)) {
            return Err(Error::invalid(format!(
                "{} and {host_key} both name {}: each Docker module needs its own socket (dockerd names the driver after it)",
                other.host_key, m.host
            )));
        }
        if matches!(listen, Listen::Tcp(_)) {
            if let Some(other) = out
                .iter()
                .find(|o| matches!(o.listen, Listen::Tcp(_)) && o.spec == m.spec)
            {
                return Err(Error::invalid(format!(
                    "{} and {} both name the spec file {}: each tcp Docker module needs its own",
                    other.config.key("spec"),
                    m.key("spec"),
                    m.spec.display()
                )));
            }
        }
        if let Listen::Unix(p) = &listen {
            for (name, address) in cfg.server_endpoints() {
                if unix_path(&address).is_some_and(|a| same_file(&a, p)) {
                    return Err(Error::invalid(format!(
                        "{host_key} and libstorage.server.endpoints.{name}.address both name unix://{}: the Docker module and the libStorage API each need their own socket",
                        p.display()
                    )));
                }
            }
        }
        let limits = Limits {
            header: m.header_timeout,
            idle: m.idle_timeout,
            max: m.max_connections.max(1) as usize,
            keys: LimitKeys {
                header: static_key(&m, "headerTimeout", keys::DOCKER_HEADER_TIMEOUT),
                max: static_key(&m, "maxConnections", keys::DOCKER_MAX_CONNECTIONS),
            },
        };
        out.push(Module {
            name: m.name.clone(),
            listen,
            spec: m.spec.clone(),
            limits,
            config: m,
            host_key,
        });
    }
    Ok(out)
}

impl Module {
    /// The service it serves.
    pub fn service(&self) -> &str {
        self.config.service()
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
                "opening Docker module {} (service {})",
                self.name,
                self.service()
            ))
        })
    }
}

/// The path of a `unix://` address.
fn unix_path(address: &str) -> Option<PathBuf> {
    let (scheme, rest) = address.trim().split_once("://")?;
    scheme
        .eq_ignore_ascii_case("unix")
        .then(|| PathBuf::from(rest))
}

/// Whether two paths name one file: `/var/run/x` is `/run/x` where
/// `/var/run` links to `/run`.
fn same_file(a: &Path, b: &Path) -> bool {
    let resolved = |p: &Path| -> PathBuf {
        match (
            p.parent().and_then(|d| d.canonicalize().ok()),
            p.file_name(),
        ) {
            (Some(d), Some(f)) => d.join(f),
            _ => p.to_path_buf(),
        }
    };
    a == b || resolved(a) == resolved(b)
}

/// Whether two endpoints cannot both be bound: one socket, or one TCP port
/// (a wildcard address takes the port on every address).
fn same_place(a: &Listen, b: &Listen) -> bool {
    match (a, b) {
        (Listen::Unix(x), Listen::Unix(y)) => same_file(x, y),
        (Listen::Tcp(x), Listen::Tcp(y)) => {
            let split = |s: &str| {
                let (h, p) = s.rsplit_once(':').unwrap_or((s, "0"));
                (h.to_string(), p.to_string())
            };
            let ((hx, px), (hy, py)) = (split(x), split(y));
            let any = |h: &str| h == "0.0.0.0" || h == "[::]" || h == "::";
            px == py && px != "0" && (hx == hy || any(&hx) || any(&hy))
        }
        _ => false,
    }
}

/// The other modules whose volumes mount where one module's do (same
/// mount path), by name.
#[derive(Clone, Default)]
pub struct Neighbours(Vec<(String, Arc<Volumes>)>);

impl Neighbours {
    /// The neighbours of module `me` among `all` (name, volumes).
    pub fn of(me: usize, all: &[(String, Arc<Volumes>)]) -> Neighbours {
        let path = |v: &Volumes| v.config().path(keys::MOUNT_PATH);
        let mine = path(&all[me].1);
        Neighbours(
            all.iter()
                .enumerate()
                .filter(|(i, (_, v))| *i != me && path(v) == mine)
                .map(|(_, m)| m.clone())
                .collect(),
        )
    }

    /// The volumes of the neighbours.
    pub fn volumes(&self) -> Vec<&Volumes> {
        self.0.iter().map(|(_, v)| v.as_ref()).collect()
    }

    /// Refuse to act on volume `name` of `me` (or, `creating`, to make
    /// it) when a neighbour has another volume of that name: both would
    /// mount at the same place. Modules of one service see the same
    /// volume (same id), which is fine; a request for a name `me` does not
    /// have fails by itself (not found). A neighbour that cannot answer
    /// (its server is down) is passed over with a warning: it cannot
    /// mount anything either.
    pub fn check(&self, me: &Volumes, name: &str, creating: bool) -> Result<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        // This module's volume of that name (its id), looked up once, when
        // a neighbour has one.
        let mut mine: Option<Option<String>> = None;
        for (module, other) in &self.0 {
            let theirs = match other.lookup_metadata(name) {
                Ok(Some(v)) => v,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(volume = name, module = %module, "could not check the volume names of Docker module {module}: {e}");
                    continue;
                }
            };
            let mine = match &mine {
                Some(m) => m.as_deref(),
                None => mine
                    .insert(me.lookup_metadata(name)?.map(|v| v.id))
                    .as_deref(),
            };
            if mine.is_none() && !creating {
                return Ok(());
            }
            if mine != Some(theirs.id.as_str()) {
                return Err(Error::exists(format!(
                    "volume {name} is also a volume of service {} (Docker driver {module}), which mounts volumes at the same place ({}): a name must be unique across the Docker drivers of this rexray service; use another name, or give one module its own {}",
                    other.config().service(),
                    other.mount_point(name).display(),
                    keys::MOUNT_PATH
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_that_cannot_both_be_bound() {
        let u = |p: &str| Listen::Unix(PathBuf::from(p));
        let t = |a: &str| Listen::Tcp(a.to_string());
        assert!(same_place(&u("/run/a.sock"), &u("/run/a.sock")));
        assert!(!same_place(&u("/run/a.sock"), &u("/run/b.sock")));
        assert!(same_place(&t("0.0.0.0:7981"), &t("127.0.0.1:7981")));
        assert!(same_place(&t("10.0.0.1:7981"), &t("10.0.0.1:7981")));
        assert!(!same_place(&t("10.0.0.1:7981"), &t("10.0.0.2:7981")));
        assert!(!same_place(&t("127.0.0.1:0"), &t("127.0.0.1:0")));
        assert!(!same_place(&t("127.0.0.1:1"), &u("/run/a.sock")));
        let d = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(d.path(), d.path().join("link")).unwrap();
        assert!(same_file(
            &d.path().join("x.sock"),
            &d.path().join("link/x.sock")
        ));
        assert_eq!(
            unix_path("UNIX:///a/b.sock"),
            Some(PathBuf::from("/a/b.sock"))
        );
        assert_eq!(unix_path("tcp://:1"), None);
    }
}
