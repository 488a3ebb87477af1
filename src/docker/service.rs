//! `rexray service start|stop|status`: the long-running Docker volume
//! plugin endpoints, one per Docker module ([`super::modules`]), and beside
//! them the libStorage API when `libstorage.server.endpoints` are
//! configured ([`crate::api::server`]).
//!
//! The pid file `<run>/rexray.pid` is held with an exclusive `flock` for
//! the life of the service: a second start fails while the first runs, a
//! pid file left by a crash is taken over, and `status` tells "running"
//! from "stale pid file" without trusting a pid that may have been reused.

use super::modules::{self, Neighbours};
use super::server::{Endpoint, Served, DRAIN_TIMEOUT};
use crate::config::{keys, Config};
use crate::error::IoContext;
use crate::volume::Volumes;
use crate::{Error, Result};
use nix::sys::signal::{SigSet, Signal};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long `service stop` waits for in-flight requests to finish.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(DRAIN_TIMEOUT.as_secs() + 20);
/// How long `service start -d` waits for the service to listen.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// `rexray service …`
#[derive(clap::Subcommand, Debug)]
pub enum ServiceCmd {
    /// Serve the Docker volume plugin endpoint (foreground unless -d).
    Start(StartArgs),
    /// Stop the running service (SIGTERM, then wait for it to finish its
    /// requests).
    Stop,
    /// Report whether the service runs: exit 0 running, 3 stopped.
    Status,
}

/// Flags of `rexray service start`.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct StartArgs {
    /// Run in the background (log to <log>/rexray.log); returns once the
    /// endpoint listens. Under systemd run in the foreground instead.
    #[arg(short = 'd', long = "daemon")]
    pub daemon: bool,
}

/// Run a `rexray service` command; appends the answer to `out` and returns
/// the exit code.
pub fn run(cmd: ServiceCmd, cfg: Config, out: &mut String) -> Result<i32> {
    match cmd {
        ServiceCmd::Start(a) if a.daemon => daemonize(&cfg, out),
        ServiceCmd::Start(_) => {
            // Many operations in one process: drivers read afresh.
            crate::storage::rbd::long_running();
            start(cfg)
        }
        ServiceCmd::Stop => stop(&cfg, out),
        ServiceCmd::Status => status(&cfg, out),
    }
}

/// The pid file.
pub fn pid_path(cfg: &Config) -> PathBuf {
    cfg.dirs.run.join("rexray.pid")
}

/// Where the running service records its address (for `status`).
fn url_path(cfg: &Config) -> PathBuf {
    cfg.dirs.run.join("rexray.url")
}

fn flock(f: &File, op: libc::c_int) -> std::io::Result<()> {
    // SAFETY: flock on an open descriptor.
    if unsafe { libc::flock(f.as_raw_fd(), op | libc::LOCK_NB) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn would_block(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::EWOULDBLOCK)
}

/// The pid of the running service, if one runs.
pub fn running_pid(cfg: &Config) -> Result<Option<i32>> {
    let p = pid_path(cfg);
    let f = match File::open(&p) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(Error::system(format!(
                "cannot tell whether the rexray service runs: {} is readable by its owner only; ask as root",
                p.display()
            )))
        }
        Err(e) => return Err(Error::from_io(format!("opening {}", p.display()), &e)),
    };
    match flock(&f, libc::LOCK_SH) {
        Ok(()) => return Ok(None),
        Err(e) if would_block(&e) => {}
        Err(e) => return Err(Error::from_io(format!("locking {}", p.display()), &e)),
    }
    // The holder writes its pid right after locking: give it a moment.
    for _ in 0..100 {
        let mut s = String::new();
        let _ = (&f).read_to_string(&mut s);
        if let Ok(pid) = s.trim().parse::<i32>() {
            return Ok(Some(pid));
        }
        std::thread::sleep(Duration::from_millis(10));
        let _ = std::io::Seek::rewind(&mut &f);
    }
    Err(Error::system(format!(
        "{} is locked by a running service but holds no pid",
        p.display()
    )))
}

/// The held pid file; removed on drop.
struct PidFile {
    /// Holds the lock; never read.
    _file: File,
    path: PathBuf,
}

impl PidFile {
    /// Lock the pid file, remove the files in `stale` a killed predecessor
    /// left behind, then write our pid. Whoever reads our pid from the
    /// file therefore knows those files are gone or ours: a `start -d`
    /// waiting for the url file never takes a dead service's for ours.
    fn acquire(path: &Path, stale: &[PathBuf]) -> Result<PidFile> {
        use std::os::unix::fs::MetadataExt;
        if let Some(dir) = path.parent() {
            // <run>: rexray's own directory, never a link to elsewhere.
            crate::files::own_dir(dir, crate::files::PRIVATE_DIR, crate::files::Link::Refuse)?;
        }
        loop {
            // Never through a link, never a file with another name: the
            // pid is written into it.
            let file = crate::files::open_private(path, false, "pid file")?;
            match flock(&file, libc::LOCK_EX) {
                Ok(()) => {}
                Err(e) if would_block(&e) => {
                    let mut s = String::new();
                    let _ = (&file).read_to_string(&mut s);
                    return Err(Error::in_use(format!(
                        "the rexray service is already running (pid {}, pid file {}); stop it with `rexray service stop`",
                        s.trim(),
                        path.display()
                    )));
                }
                Err(e) => return Err(Error::from_io(format!("locking {}", path.display()), &e)),
            }
            // A service that just stopped may have removed the file we
            // opened: lock the file that is at the path now.
            let same = std::fs::symlink_metadata(path)
                .ok()
                .zip(file.metadata().ok())
                .is_some_and(|(a, b)| a.ino() == b.ino() && a.dev() == b.dev());
            if !same {
                continue;
            }
            for f in stale {
                let _ = std::fs::remove_file(f);
            }
            file.set_len(0)
                .and_then(|_| (&file).write_all(format!("{}\n", std::process::id()).as_bytes()))
                .and_then(|_| file.sync_all())
                .ctx(|| format!("writing pid file {}", path.display()))?;
            return Ok(PidFile {
                _file: file,
                path: path.to_path_buf(),
            });
        }
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Remove while still locked (the lock goes with `_file`, closed
        // after this), so no one reads a stale pid from it.
        let _ = std::fs::remove_file(&self.path);
    }
}

fn shutdown_signals() -> SigSet {
    let mut s = SigSet::empty();
    s.add(Signal::SIGTERM);
    s.add(Signal::SIGINT);
    s
}

/// Run the service in the foreground until SIGTERM or SIGINT.
fn start(cfg: Config) -> Result<i32> {
    // A bad module is refused before anything changes.
    let modules = modules::configured(&cfg)?;
    let csi_modules = crate::csi::configured(&cfg)?;
    for c in &csi_modules {
        if let Some(d) = modules
            .iter()
            .find(|d| matches!(&d.listen, super::server::Listen::Unix(p) if *p == c.path))
        {
            return Err(Error::invalid(format!(
                "{} and {} both name unix://{}: the Docker module and the csi module each need their own socket",
                d.host_key,
                c.config.key("host"),
                c.path.display()
            )));
        }
    }
    // Connections and volumes each hold descriptors: take all the system
    // allows rather than a login shell's 1024.
    super::conns::raise_nofile_limit();
    // Block the shutdown signals in every thread (threads inherit the
    // mask) and take them synchronously in one; children get a clean mask
    // from std::process.
    let signals = shutdown_signals();
    signals
        .thread_block()
        .map_err(|e| Error::system(format!("blocking signals: {e}")))?;
    // A service that was killed left its url and spec files behind: they
    // must not announce this one before its endpoints are bound.
    let pid = PidFile::acquire(
        &pid_path(&cfg),
        &[url_path(&cfg), crate::api::server::spec_path(&cfg)],
    )?;
    // A service that serves the libStorage API is the controller: its
    // Docker modules use the drivers themselves. Otherwise it is a node
    // like any other (a client of libstorage.host, when set).
    let serves_api = !cfg.server_endpoints().is_empty();
    let mut opened: Vec<(String, Arc<Volumes>)> = Vec::new();
    for m in &modules {
        opened.push((m.name.clone(), Arc::new(m.open(serves_api)?)));
    }
    let mut csi_opened: Vec<Arc<Volumes>> = Vec::new();
    for m in &csi_modules {
        csi_opened.push(Arc::new(m.open(serves_api)?));
    }
    let neighbours: Vec<Neighbours> = (0..opened.len())
        .map(|i| Neighbours::of(i, &opened))
        .collect();
    for ((name, vols), n) in opened.iter().zip(&neighbours) {
        match vols.reconcile_beside(&n.volumes()) {
            Ok(done) if done.is_empty() => {}
            Ok(done) => tracing::warn!(
                module = %name,
                "cleaned up {} mount(s) left without consumers: {}",
                done.len(),
                done.join(", ")
            ),
            Err(e) => {
                tracing::warn!(module = %name, "could not check for mounts left by a crash: {e}")
            }
        }
    }
    // A csi module's mounts left by a crash, unless a Docker module of the
    // same service and mount path has just looked at them.
    for (m, vols) in csi_modules.iter().zip(&csi_opened) {
        let same = |d: &Volumes| {
            d.config()
                .service()
                .eq_ignore_ascii_case(vols.config().service())
                && d.config().path(keys::MOUNT_PATH) == vols.config().path(keys::MOUNT_PATH)
        };
        if opened.iter().any(|(_, d)| same(d)) {
            continue;
        }
        let others: Vec<&Volumes> = opened.iter().map(|(_, d)| d.as_ref()).collect();
        match vols.reconcile_beside(&others) {
            Ok(done) if done.is_empty() => {}
            Ok(done) => tracing::warn!(
                module = %m.name,
                "cleaned up {} mount(s) left without consumers: {}",
                done.len(),
                done.join(", ")
            ),
            Err(e) => {
                tracing::warn!(module = %m.name, "could not check for mounts left by a crash: {e}")
            }
        }
    }
    // The libStorage API, when endpoints are configured, beside the
    // Docker endpoints.
    let api = crate::api::server::Server::bind(&cfg)?;
    if let Some(a) = &api {
        tracing::warn!(
            pid = std::process::id(),
            urls = a.urls().join(", "),
            services = a.service_names().join(", "),
            "rexray service: serving the libStorage API"
        );
    }
    // Dropping what is bound so far (an error) removes its sockets.
    let endpoints = modules
        .iter()
        .map(Endpoint::bind)
        .collect::<Result<Vec<Endpoint>>>()?;
    let mut csi_endpoints = csi_modules
        .iter()
        .map(crate::csi::Endpoint::bind)
        .collect::<Result<Vec<_>>>()?;
    if endpoints.is_empty() {
        tracing::warn!(
            "{} is true and no other Docker module is configured: no Docker endpoint{}",
            keys::DOCKER_DISABLED,
            if csi_endpoints.is_empty() {
                "; waiting for SIGTERM"
            } else {
                ""
            }
        );
    }
    let url_file = url_path(&cfg);
    let listing: String = endpoints
        .iter()
        .map(|e| format!("{}\t{}\t{}\n", e.url(), e.module(), e.service()))
        .chain(csi_endpoints.iter().map(|e| {
            let m = e.module();
            format!(
                "{}\t{}\t{} (csi, {})\n",
                m.url(),
                m.name,
                m.service(),
                m.mode.as_str()
            )
        }))
        .collect();
    let _ = crate::files::atomic::write(&url_file, listing.as_bytes());
    for e in &endpoints {
        tracing::warn!(
            pid = std::process::id(),
            module = e.module(),
            url = e.url(),
            service = e.service(),
            "rexray service: serving the Docker volume plugin API"
        );
    }
    for e in &csi_endpoints {
        let m = e.module();
        tracing::warn!(
            pid = std::process::id(),
            module = %m.name,
            url = %m.url(),
            service = m.service(),
            mode = m.mode.as_str(),
            "rexray service: serving CSI"
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                if let Ok(sig) = signals.wait() {
                    tracing::warn!("{sig:?}: finishing in-flight requests (for up to {} s), then stopping; the same signal again stops at once", DRAIN_TIMEOUT.as_secs());
                }
                stop.store(true, Ordering::SeqCst);
                // A second signal: the operator will not wait. What is in
                // flight stops where it is, as after a crash, which every
                // step resumes from; the listeners already refuse.
                if let Ok(sig) = signals.wait() {
                    tracing::warn!("{sig:?} again: stopping now, without waiting for in-flight requests");
                    std::process::exit(128 + sig as i32);
                }
            })
            .ctx(|| "starting the signal thread")?;
    }
    let api = match api {
        Some(a) => {
            let stop = stop.clone();
            Some(
                std::thread::Builder::new()
                    .name("libstorage".into())
                    .spawn(move || {
                        a.serve(stop);
                        a
                    })
                    .ctx(|| "starting the libStorage API thread")?,
            )
        }
        None => None,
    };
    let csi = if csi_endpoints.is_empty() {
        None
    } else {
        let stop = stop.clone();
        let served: Vec<_> = csi_endpoints.iter_mut().zip(csi_opened).collect();
        // The listeners move into the server; the endpoints stay here and
        // remove their sockets when dropped.
        let servers = crate::csi::Servers::new(served)?;
        Some(
            std::thread::Builder::new()
                .name("csi".into())
                .spawn(move || servers.serve(stop, DRAIN_TIMEOUT))
                .ctx(|| "starting the CSI thread")?,
        )
    };
    if endpoints.is_empty() {
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(100));
        }
    } else {
        let served = endpoints
            .iter()
            .zip(opened)
            .zip(neighbours)
            .map(|((endpoint, (_, vols)), neighbours)| Served {
                endpoint,
                vols,
                neighbours,
            })
            .collect();
        super::server::serve(served, stop.clone());
    }
    if let Some(csi) = csi {
        drop(csi.join());
    }
    if let Some(api) = api {
        // Closes its endpoints and removes its sockets and spec file.
        drop(api.join());
    }
    let _ = std::fs::remove_file(&url_file);
    drop(endpoints);
    drop(pid);
    tracing::warn!("rexray service stopped");
    Ok(0)
}

/// A served module as `<run>/rexray.url` lists it.
struct Listed {
    url: String,
    module: String,
    service: String,
}

/// The modules the running service serves, from `<run>/rexray.url`
/// (`url<TAB>module<TAB>service` lines); `None` when it is not there.
fn listed(cfg: &Config) -> Option<Vec<Listed>> {
    let text = std::fs::read_to_string(url_path(cfg)).ok()?;
    Some(
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let mut f = l.split('\t').map(str::trim);
                Listed {
                    url: f.next().unwrap_or_default().to_string(),
                    module: f.next().unwrap_or_default().to_string(),
                    service: f.next().unwrap_or_default().to_string(),
                }
            })
            .collect(),
    )
}

/// The address of the first module, and one line per module.
fn address(cfg: &Config) -> String {
    let modules = match listed(cfg) {
        Some(m) => m,
        None if cfg.boolean(keys::DOCKER_DISABLED) => {
            return "the Docker endpoint is disabled".into();
        }
        None => return cfg.string(keys::DOCKER_HOST).to_string(),
    };
    let Some(first) = modules.first() else {
        return "the Docker endpoint is disabled".into();
    };
    let mut out = first.url.clone();
    for m in &modules {
        if !m.module.is_empty() {
            out.push_str(&format!(
                "\nmodule {}: {}, service {}",
                m.module, m.url, m.service
            ));
        }
    }
    out
}

fn status(cfg: &Config, out: &mut String) -> Result<i32> {
    match running_pid(cfg)? {
        Some(pid) => {
            out.push_str(&format!(
                "rexray service is running: pid {pid}, {}\n",
                address(cfg)
            ));
            Ok(0)
        }
        None => {
            out.push_str("rexray service is not running\n");
            Ok(3)
        }
    }
}

fn stop(cfg: &Config, out: &mut String) -> Result<i32> {
    let Some(pid) = running_pid(cfg)? else {
        out.push_str("rexray service is not running\n");
        return Ok(0);
    };
    let target = nix::unistd::Pid::from_raw(pid);
    nix::sys::signal::kill(target, Signal::SIGTERM)
        .map_err(|e| Error::system(format!("signalling the rexray service (pid {pid}): {e}")))?;
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if running_pid(cfg)?.is_none() {
            out.push_str(&format!("rexray service stopped (pid {pid})\n"));
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(Error::busy(format!(
        "the rexray service (pid {pid}) did not stop within {} s; it may still be finishing a request (see its log)",
        STOP_TIMEOUT.as_secs()
    )))
}

/// `start -d`: run the same command line without `-d` in a new session,
/// logging to `<log>/rexray.log`, and return once it serves.
fn daemonize(cfg: &Config, out: &mut String) -> Result<i32> {
    use std::os::unix::process::CommandExt;
    if let Some(pid) = running_pid(cfg)? {
        return Err(Error::in_use(format!(
            "the rexray service is already running (pid {pid}); stop it with `rexray service stop`"
        )));
    }
    let exe = std::env::current_exe().ctx(|| "finding the rexray binary")?;
    let args: Vec<std::ffi::OsString> = std::env::args_os()
        .skip(1)
        .filter(|a| a != "-d" && a != "--daemon")
        .collect();
    if !cfg.dirs.log.is_dir() {
        crate::files::own_dir(
            &cfg.dirs.log,
            crate::files::PRIVATE_DIR,
            crate::files::Link::Refuse,
        )?;
    }
    let log_path = cfg.dirs.log.join("rexray.log");
    let log = crate::files::open_private(&log_path, true, "log file")?;
    let log2 = log.try_clone().ctx(|| "duplicating the log file")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log2);
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let mut child = cmd.spawn().ctx(|| "starting the service")?;
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if let Some(st) = child.try_wait().ctx(|| "waiting for the service")? {
            return Err(Error::system(format!(
                "the rexray service exited at start ({st}); see {}",
                log_path.display()
            )));
        }
        if running_pid(cfg)? == Some(child.id() as i32) && url_path(cfg).exists() {
            out.push_str(&format!(
                "rexray service started: pid {}, {}\n",
                child.id(),
                address(cfg)
            ));
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(Error::system(format!(
        "the rexray service (pid {}) did not start listening within {} s; see {}",
        child.id(),
        START_TIMEOUT.as_secs(),
        log_path.display()
    )))
}
