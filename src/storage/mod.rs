//! Storage drivers: the backends volumes live on. A driver creates,
//! lists, removes, attaches and detaches volumes; it never mounts.

pub mod controller;
pub mod r#loop;
pub mod loopdev;
pub mod rbd;
pub mod s3fs;
pub mod vfs;

use crate::config::{keys, Config};
use crate::model::InstanceId;
use crate::{Error, Result};
use controller::{Controller, Executor};
use std::path::Path;
use std::sync::Arc;

/// The workflow's step for a new volume's data before it is published
/// (a copy or a volume made from a snapshot): it is given a path of this
/// host where the new image is, unattached (a file or a block device),
/// and gives the filesystem in it a UUID of its own. An error means the
/// image must not be published.
pub type Prepare<'a> = &'a dyn Fn(&Path) -> Result<()>;

/// Refuse to name a new volume (or snapshot) after an existing one's id:
/// names and ids must never be ambiguous, or a request for the new name
/// could reach the other volume. `ids` yields `(id, name)` of the
/// existing ones; `what` is "volume" or "snapshot".
pub fn refuse_name_that_is_an_id<'a>(
    what: &str,
    name: &str,
    mut existing: impl Iterator<Item = (&'a str, &'a str)>,
) -> Result<()> {
    match existing.find(|(id, _)| *id == name) {
        Some((id, other)) => Err(Error::invalid(format!(
            "cannot create {what} {name}: {id} is the id of {what} {other}, and a name must never be another {what}'s id; choose another name"
        ))),
        None => Ok(()),
    }
}

/// A fresh id that `taken` does not refuse (an existing id or name):
/// drawn again until it is free, so an id never equals a name.
pub fn fresh_id(taken: impl Fn(&str) -> bool) -> Result<String> {
    fresh_id_from(new_id, taken)
}

fn fresh_id_from(
    mut draw: impl FnMut() -> Result<String>,
    taken: impl Fn(&str) -> bool,
) -> Result<String> {
    for _ in 0..64 {
        let id = draw()?;
        if !taken(&id) {
            return Ok(id);
        }
    }
    Err(Error::system(
        "could not draw a volume id that is not already an id or a name (64 tries)",
    ))
}

/// This instance's identity for a driver: the host name plus the state
/// directory, so two `REXRAY_HOME`s on one host are two instances.
pub fn instance_id(cfg: &Config, driver: &str) -> InstanceId {
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".into());
    InstanceId {
        id: format!("{host}:{}", cfg.dirs.lib.display()),
        driver: driver.to_string(),
        service: cfg.service().to_string(),
    }
}

/// The names of the drivers this build has.
pub const DRIVERS: &[&str] = &["loop", "vfs", "rbd", "s3fs"];

fn unknown_driver(cfg: &Config, driver: &str) -> Error {
    Error::invalid(format!(
        "unknown service {:?} (driver {driver:?}): available drivers are {}; declare services under libstorage.server.services",
        cfg.service(),
        DRIVERS.join(", ")
    ))
}

/// Open the controller side of the configured service's driver: the
/// backend itself (see [`controller`]).
pub fn open_controller(cfg: &Config) -> Result<Arc<dyn Controller>> {
    let driver = cfg.driver_name();
    match driver.as_str() {
        "loop" => Ok(Arc::new(
            r#loop::LoopDriver::open(
                &cfg.path(keys::LOOP_VOLUME_PATH),
                cfg.service(),
                cfg.duration(keys::LOCK_TIMEOUT),
            )?
            .preallocating(cfg.boolean(keys::LOOP_PREALLOCATE)),
        )),
        "vfs" => Ok(Arc::new(vfs::VfsDriver::open(
            &cfg.path(keys::VFS_ROOT),
            cfg.service(),
        )?)),
        "rbd" => Ok(Arc::new(
            rbd::RbdDriver::new(
                rbd_tools(cfg)?,
                cfg.string(keys::RBD_DEFAULT_POOL),
                cfg.service(),
            )?
            .with_scratch_dir(&cfg.dirs.run.join("rbd-scratch")),
        )),
        "s3fs" => Ok(Arc::new(s3fs::S3fsDriver::new(s3(cfg)?, cfg.service()))),
        other => Err(unknown_driver(cfg, other)),
    }
}

/// Open the node side of the configured service's driver, for this
/// instance (see [`controller`]).
pub fn open_executor(cfg: &Config) -> Result<Arc<dyn Executor>> {
    open_executor_for(cfg, &cfg.driver_name())
}

/// Open the node side of `driver`, for this instance, with its settings
/// from `cfg` (a node of a libStorage server uses the server's driver).
pub fn open_executor_for(cfg: &Config, driver: &str) -> Result<Arc<dyn Executor>> {
    match driver {
        "loop" => {
            let root = cfg.path(keys::LOOP_VOLUME_PATH);
            crate::files::own_dir(&root, crate::files::PRIVATE_DIR, crate::files::Link::Follow)
                .map_err(|e| e.context("preparing the loop volume directory (loop.volumePath)"))?;
            Ok(Arc::new(r#loop::LoopExecutor::new(
                &root,
                instance_id(cfg, "loop"),
                cfg.duration(keys::LOCK_TIMEOUT),
            )?))
        }
        "vfs" => Ok(Arc::new(vfs::VfsExecutor::open(
            &cfg.path(keys::VFS_ROOT),
            instance_id(cfg, "vfs"),
        )?)),
        "rbd" => Ok(Arc::new(rbd::node::RbdExecutor::new(
            rbd_tools(cfg)?,
            cfg.string(keys::RBD_DEFAULT_POOL),
            instance_id(cfg, "rbd"),
            &cfg.dirs.run,
            cfg.boolean(keys::RBD_TEST_MODULE),
        ))),
        "s3fs" => Ok(Arc::new(s3fs::node::S3fsExecutor::new(
            s3(cfg)?,
            s3fs_instance_id(cfg),
            &cfg.dirs.run,
            cfg.string(keys::S3FS_CMD),
            cfg.string(keys::S3FS_OPTIONS),
        ))),
        other => Err(unknown_driver(cfg, other)),
    }
}

/// How the rbd driver reaches its cluster (`rbd.cephArgs`, `rbd.timeout`),
/// and whether through librbd (`rbd.library`).
fn rbd_tools(cfg: &Config) -> Result<rbd::cli::Ceph> {
    let mode = rbd::lib::Mode::parse(cfg.string(keys::RBD_LIBRARY))
        .map_err(|e| e.context(format!("reading {}", keys::RBD_LIBRARY)))?;
    Ok(rbd::cli::Ceph::new(
        cfg.string(keys::RBD_CEPH_ARGS),
        cfg.duration(keys::RBD_TIMEOUT),
    )?
    .with_library(mode))
}

/// This node's instance id for the s3fs driver: `s3fs.hostName`, when
/// set, stands for the system's host name.
fn s3fs_instance_id(cfg: &Config) -> InstanceId {
    let mut id = instance_id(cfg, "s3fs");
    let host = cfg.string(keys::S3FS_HOST_NAME).trim();
    if !host.is_empty() {
        id.id = format!("{host}:{}", cfg.dirs.lib.display());
    }
    id
}

/// The S3 endpoint of the s3fs driver (`s3fs.*`; the keys default to
/// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`).
fn s3(cfg: &Config) -> Result<s3fs::S3> {
    s3fs::check_settings(
        cfg.number(keys::S3FS_MAX_RETRIES),
        cfg.boolean(keys::S3FS_DISABLE_PATH_STYLE),
        cfg.string(keys::S3FS_TAG),
    )?;
    let or_env = |key: &str, var: &str| {
        let v = cfg.string(key);
        if v.is_empty() {
            std::env::var(var).unwrap_or_default()
        } else {
            v.to_string()
        }
    };
    let ca_file = cfg.string(keys::S3FS_CA_FILE).trim();
    s3fs::S3::new(
        cfg.string(keys::S3FS_ENDPOINT),
        cfg.string(keys::S3FS_REGION),
        &or_env(keys::S3FS_ACCESS_KEY, "AWS_ACCESS_KEY_ID"),
        &or_env(keys::S3FS_SECRET_KEY, "AWS_SECRET_ACCESS_KEY"),
        std::time::Duration::from_secs(30),
        (!ca_file.is_empty()).then(|| std::path::Path::new(ca_file)),
    )
    .map(|s| s.with_max_retries(cfg.number(keys::S3FS_MAX_RETRIES) as u32))
}

/// A fresh random volume id: 16 hex digits from the kernel's random pool.
pub fn new_id() -> Result<String> {
    let mut b = [0u8; 8];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| Error::from_io("reading /dev/urandom", &e))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// RFC 3339 time of now, to the second.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// The two sides of the configured service for this node: the driver
/// itself (embedded) or a client of a libStorage server (the `libstorage`
/// driver, as the original named it), and this node's side of the driver.
pub fn open_sides(
    cfg: &Config,
    backend: &Backend,
) -> Result<(Arc<dyn Controller>, Arc<dyn Executor>)> {
    match backend {
        Backend::Embedded => Ok((open_controller(cfg)?, open_executor(cfg)?)),
        Backend::Remote(url) => remote(cfg, url),
    }
}

/// Where a node's controller operations go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// To the driver, in this process.
    Embedded,
    /// To the libStorage server at this URL.
    Remote(String),
}

/// Where the controller operations of `cfg` go: the server of
/// `libstorage.host` (unless `libstorage.embedded`), else a server on this
/// host that announces itself in `<run>/rexray.spec` and answers, else the
/// driver itself.
pub fn backend(cfg: &Config) -> Result<Backend> {
    let host = cfg.string(keys::LIBSTORAGE_HOST).trim();
    if !host.is_empty() && !cfg.boolean(keys::LIBSTORAGE_EMBEDDED) {
        crate::api::client::Host::parse(host)
            .map_err(|e| e.context(format!("reading {}", keys::LIBSTORAGE_HOST)))?;
        return Ok(Backend::Remote(host.to_string()));
    }
    Ok(
        match crate::api::client::local_server(&crate::api::server::spec_path(cfg)) {
            Some(url) => Backend::Remote(url),
            None => Backend::Embedded,
        },
    )
}

/// A client of the server at `url` for the configured service, with this
/// node's side of the driver the server names.
fn remote(cfg: &Config, url: &str) -> Result<(Arc<dyn Controller>, Arc<dyn Executor>)> {
    let timeout = cfg.duration(keys::SERVER_EXE_TIMEOUT) + std::time::Duration::from_secs(10);
    let security = crate::api::client::Security::from_config(cfg, url)?;
    let connect = |exe: Arc<dyn Executor>| {
        crate::api::client::Client::connect_with(url, cfg.service(), Some(exe), timeout, &security)
            .map_err(|e| e.context(format!("reaching the libStorage server at {url}")))
    };
    let mut driver = cfg.driver_name();
    let mut exe = open_executor_for(cfg, &driver)?;
    let mut client = connect(exe.clone())?;
    // The server's service may use another driver than this node's
    // configuration names: its node side is the one to use.
    if client.info().driver != driver {
        driver = client.info().driver.clone();
        exe = open_executor_for(cfg, &driver)?;
        client = connect(exe.clone())?;
    }
    tracing::debug!(
        server = url,
        service = cfg.service(),
        driver,
        "client of a libStorage server"
    );
    Ok((Arc::new(client), exe))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_id_is_never_a_taken_name() {
        let mut draws = ["00000000000000aa", "00000000000000bb", "00000000000000cc"].into_iter();
        let id = fresh_id_from(
            || Ok(draws.next().unwrap().to_string()),
            |id| id == "00000000000000aa" || id == "00000000000000bb",
        )
        .unwrap();
        assert_eq!(id, "00000000000000cc");
        assert!(fresh_id_from(|| Ok("x".into()), |_| true).is_err());
        let id = fresh_id(|_| false).unwrap();
        assert_eq!(id.len(), 16);
    }

    #[test]
    fn a_name_that_is_an_id_is_refused_naming_both() {
        let all = [("0123456789abcdef", "vol")];
        let e = refuse_name_that_is_an_id("volume", "0123456789abcdef", all.iter().copied())
            .unwrap_err();
        assert_eq!(e.kind(), crate::Kind::InvalidInput);
        assert!(
            e.message().contains("0123456789abcdef") && e.message().contains("volume vol"),
            "{e}"
        );
        refuse_name_that_is_an_id("volume", "vol2", all.iter().copied()).unwrap();
    }
}
