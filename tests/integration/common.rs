//! Test harness: a private `REXRAY_HOME` per test, the binaries run as a
//! user would run them, and exact cleanup of what the test made — mounts
//! under its directory and loop devices backed by files under it, nothing
//! else.

#![allow(dead_code)]

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Whether the tests run as root (loop devices, mount).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Record that the running test is skipped for `reason`, or fail it when
/// `CI` is set: in CI `scripts/test.sh` installs everything and runs as
/// root, so a missing requirement is a broken step, never a pass.
/// Skips are appended to `$REXRAY_TEST_SKIPS` (one line per test), which
/// `scripts/test.sh` prints apart from the passed tests.
pub fn skip(reason: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("unknown test")
        .to_string();
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} cannot run in CI: {reason}"
    );
    eprintln!("skipped: {reason}");
    // The same test skipped in both runs of scripts/test.sh is two skips.
    let test = if client_mode() {
        format!("{test} (client mode)")
    } else {
        test
    };
    // And in each driver's run.
    let test = match test_driver() {
        TestDriver::Loop => test,
        d => format!("{test} ({})", d.name()),
    };
    if let Some(file) = std::env::var_os("REXRAY_TEST_SKIPS") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(file)
        {
            let _ = writeln!(f, "{test}: {reason}");
        }
    }
}

/// Whether the tests run in client mode (`REXRAY_TEST_CLIENT_MODE=1`):
/// every [`Home`] then has a private controller, a `rexray service start`
/// serving the libStorage API, and every binary the home runs (and
/// [`Home::volumes`]) is its client. See [`Home::new`].
pub fn client_mode() -> bool {
    std::env::var("REXRAY_TEST_CLIENT_MODE").is_ok_and(|v| v == "1")
}

/// In client mode, record that the running test does not apply there
/// (for `reason`) and return true: the caller returns at once. Outside
/// client mode, false. Recorded in `$REXRAY_TEST_NA` (one line per test),
/// which `scripts/test.sh` reports apart from the passed tests; use as
/// `if client_mode_na("why") { return; }`.
pub fn client_mode_na(reason: &str) -> bool {
    if !client_mode() {
        return false;
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("unknown test")
        .to_string();
    eprintln!("not applicable in client mode: {reason}");
    if let Some(file) = std::env::var_os("REXRAY_TEST_NA") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(file)
        {
            let _ = writeln!(f, "{test}: {reason}");
        }
    }
    true
}

/// The loop driver's fail points that fire in its node side (the loop
/// device binding, on the node in client mode); every other `loop::` one
/// fires in the controller side (the catalog and the images: in the
/// server in client mode).
pub const NODE_LOOP_FAILPOINTS: &[&str] = &[
    "loop::attach-before-bind",
    "loop::attach-after-bind",
    "loop::detach-after-clear",
];

/// Whether fail point `fp` fires in the process that holds the backend:
/// in client mode the home's controller, not the command that sets
/// `FAILPOINTS` (see [`Home::restart_controller`]).
pub fn fires_in_controller(fp: &str) -> bool {
    fp.starts_with("loop::") && !NODE_LOOP_FAILPOINTS.contains(&fp)
}

/// Skip a test that needs root when not root (a failure under `CI`).
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::common::is_root() {
            $crate::common::skip("needs root (loop devices and mount)");
            return;
        }
    };
}

/// The Docker plugin socket of a test's service, in its home: the
/// `docker.host` URL and the socket's path.
pub fn unix_host(h: &Home) -> (String, PathBuf) {
    let sock = h.dir.join("plugin.sock");
    (format!("unix://{}", sock.display()), sock)
}

/// The size of the filesystem holding `p`, in bytes.
pub fn fs_bytes(p: &Path) -> u64 {
    let st = nix::sys::statvfs::statvfs(p).unwrap();
    st.blocks() as u64 * st.fragment_size() as u64
}

/// Mount a tmpfs of the test's own at `dir` (made first) with mount
/// options `data` ("" for none); the home's cleanup unmounts it with
/// everything under its directory.
pub fn mount_tmpfs(dir: &Path, data: &str) {
    std::fs::create_dir_all(dir).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
        (!data.is_empty()).then_some(data),
    )
    .unwrap_or_else(|e| panic!("mounting a tmpfs on {}: {e}", dir.display()));
}

/// Read the head of an HTTP message: its first line, and its header
/// fields with their names in lower case.
pub fn read_head(
    r: &mut impl std::io::BufRead,
) -> std::io::Result<(String, Vec<(String, String)>)> {
    let mut first = String::new();
    r.read_line(&mut first)?;
    let mut fields = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line)?;
        let line = line.trim();
        if line.is_empty() {
            return Ok((first.trim_end().to_string(), fields));
        }
        if let Some((k, v)) = line.split_once(':') {
            fields.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
}

/// The value of header field `name` (lower case) among `fields`.
pub fn header<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The fail points of a create, in order: a process killed at any of
/// them leaves what the next create (or mount) finishes.
pub const CREATE_FAILPOINTS: &[&str] = &[
    "volume::create-before-driver",
    "loop::create-after-image",
    "volume::create-after-driver",
];

/// The fail points of a mount, in order, from the attach to the record.
pub const MOUNT_FAILPOINTS: &[&str] = &[
    "loop::attach-before-bind",
    "loop::attach-after-bind",
    "volume::mount-after-attach",
    "volume::mount-after-wait",
    "node::before-mkfs",
    "node::after-mkfs",
    "volume::mount-after-format",
    "volume::mount-after-mount",
    "volume::mount-after-record",
];

/// The Ceph drivers' own fail points of a mount (see
/// [`fires_for_driver`]): killed there, the next mount finishes the job.
pub const CEPH_MOUNT_FAILPOINTS: &[&str] = &["rbd::attach-after-fuse", "s3fs::attach-after-mount"];

/// A path as an argument of a command line.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A finished command.
#[derive(Debug, Clone)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// Assert success and return stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "command failed: {self:#?}");
        &self.stdout
    }
    /// Assert failure with exit code `code` and return stderr.
    #[track_caller]
    pub fn fails(&self, code: i32) -> &str {
        assert_eq!(self.code, code, "expected exit {code}: {self:#?}");
        &self.stderr
    }
}

/// Path of one of the package's binaries.
pub fn bin(name: &str) -> PathBuf {
    PathBuf::from(match name {
        "rexray" => env!("CARGO_BIN_EXE_rexray"),
        "flexrex" => env!("CARGO_BIN_EXE_flexrex"),
        "dvdcli" => env!("CARGO_BIN_EXE_dvdcli"),
        other => panic!("no binary {other}"),
    })
}

/// A private REXRAY_HOME that cleans up after itself.
pub struct Home {
    pub dir: PathBuf,
    pub env: Vec<(String, String)>,
    /// Client mode: this home's own controller (none for a home that uses
    /// another home's, see [`Home::sharing_volumes_with`]).
    pub(crate) ctl: Option<std::sync::Mutex<Controller>>,
    /// `REXRAY_TEST_DRIVER=rbd|s3fs`: the home's share of the test
    /// cluster (see [`Home::new`]); none for the loop driver.
    pub(crate) backend: Option<Backend>,
}

impl Home {
    /// A fresh home under /tmp (short paths: unix sockets are limited).
    ///
    /// In client mode (see [`client_mode`]) it comes with a private
    /// controller, started and answering before this returns: `rexray
    /// service start` with its own REXRAY_HOME (`<home>/ctl`), no Docker
    /// module, one unix endpoint (`<home>/ctl.sock`), `loop` and `vfs`
    /// services over the node's own `loop.volumePath` and `vfs.root`
    /// (their defaults, under the node's lib dir), and `LIBSTORAGE_HOST`
    /// naming it in the home's environment, so every binary the home runs
    /// is its client. [`Home::config`] keeps it in step with the node's
    /// settings; dropping the home stops it before the cleanup.
    pub fn new() -> Home {
        let mut h = Home::plain();
        match test_driver() {
            TestDriver::Loop => {}
            d => {
                assert!(
                    !client_mode(),
                    "REXRAY_TEST_DRIVER={} does not run in client mode",
                    d.name()
                );
                let backend = Backend::make(d);
                for (k, v) in &backend.env {
                    h.env.push((k.clone(), v.clone()));
                }
                h.backend = Some(backend);
                h.config("");
            }
        }
        h
    }

    /// A fresh home of the loop driver whatever `REXRAY_TEST_DRIVER`
    /// says (for tests that configure their own backend, as the Ceph
    /// tests do); in client mode with its controller as [`Home::new`]'s.
    pub fn plain() -> Home {
        let dir = tempfile::Builder::new()
            .prefix("rxt.")
            .tempdir_in("/tmp")
            .expect("temp dir")
            .keep();
        let mut h = Home {
            dir,
            env: Vec::new(),
            ctl: None,
            backend: None,
        };
        if client_mode() {
            // The node's state directory as the node makes it (its mount
            // path is inside): the controller's volume path is inside it
            // here, which a controller creating it first would make 0755.
            // (In a real deployment the volume path is shared storage, not
            // under a node's state directory.)
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o711)
                .create(h.lib())
                .unwrap();
            let c = Controller::start(&h.dir, controller_yaml(&h.dir, None), String::new());
            h.env.push(("LIBSTORAGE_HOST".into(), c.url()));
            h.ctl = Some(std::sync::Mutex::new(c));
        }
        h
    }

    /// A second node of `other`'s volumes: a fresh home whose
    /// `loop.volumePath` is `other`'s, as two hosts that see the same
    /// shared storage at the same path. In client mode it has no
    /// controller of its own: it is a client of `other`'s, as a second
    /// node of one controller is.
    pub fn sharing_volumes_with(other: &Home) -> Home {
        let dir = tempfile::Builder::new()
            .prefix("rxt.")
            .tempdir_in("/tmp")
            .expect("temp dir")
            .keep();
        let backend = other.backend.as_ref().map(Backend::shared);
        let h = Home {
            dir,
            env: other
                .env
                .iter()
                .filter(|(k, _)| {
                    k == "LIBSTORAGE_HOST"
                        || backend
                            .as_ref()
                            .is_some_and(|b| b.env.iter().any(|(bk, _)| bk == k))
                })
                .cloned()
                .collect(),
            ctl: None,
            backend,
        };
        h.config(&format!(
            "loop:\n  volumePath: {}\n",
            other.lib().join("loop").display()
        ));
        h
    }

    /// Add an environment variable for every command.
    pub fn with_env(mut self, k: &str, v: &str) -> Home {
        self.env.push((k.into(), v.into()));
        self
    }

    pub fn lib(&self) -> PathBuf {
        self.dir.join("var/lib")
    }
    pub fn etc(&self) -> PathBuf {
        self.dir.join("etc")
    }
    pub fn mount_point(&self, name: &str) -> PathBuf {
        self.lib().join("volumes").join(name)
    }
    pub fn data(&self, name: &str) -> PathBuf {
        self.mount_point(name).join("data")
    }

    /// Write `<etc>/config.yml`. In client mode the home's controller
    /// follows the backend's part of it (`loop`, `vfs`, the declared
    /// `libstorage.server.services`): restarted with them when they change.
    ///
    /// With `REXRAY_TEST_DRIVER=rbd|s3fs` the driver's settings are added
    /// to it (its section, and `libstorage.service` unless `yaml` names
    /// one); text that is not a YAML mapping is written as it is.
    pub fn config(&self, yaml: &str) {
        std::fs::create_dir_all(self.etc()).unwrap();
        let text = match &self.backend {
            Some(b) => b.merge(yaml),
            None => yaml.to_string(),
        };
        std::fs::write(self.etc().join("config.yml"), text).unwrap();
        if let Some(ctl) = &self.ctl {
            let want = controller_yaml(&self.dir, Some(yaml));
            let mut c = ctl.lock().unwrap_or_else(|e| e.into_inner());
            if c.yaml != want {
                c.stop();
                c.yaml = want;
                c.spawn();
            }
        }
    }

    /// Client mode: (re)start this home's controller with `FAILPOINTS`
    /// set to `fps` ("" for none), e.g. for a fail point that fires in the
    /// controller ([`fires_in_controller`]). Panics outside client mode.
    pub fn restart_controller(&self, fps: &str) {
        let ctl = self.ctl.as_ref().expect("client mode: a home's controller");
        let mut c = ctl.lock().unwrap_or_else(|e| e.into_inner());
        c.stop();
        c.failpoints = fps.to_string();
        c.spawn();
    }

    /// Client mode: stop this home's controller (until
    /// [`restart_controller`](Self::restart_controller)). Panics outside
    /// client mode.
    pub fn stop_controller(&self) {
        let ctl = self.ctl.as_ref().expect("client mode: a home's controller");
        ctl.lock().unwrap_or_else(|e| e.into_inner()).stop();
    }

    /// Client mode: the log of this home's controller ("" without one).
    pub fn controller_log(&self) -> String {
        match &self.ctl {
            Some(c) => c.lock().unwrap_or_else(|e| e.into_inner()).log_text(),
            None => String::new(),
        }
    }

    /// A command for one of the binaries with this home's environment.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new(bin(program));
        c.env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("REXRAY_HOME", &self.dir)
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// Run a binary and collect its output.
    pub fn run(&self, program: &str, args: &[&str]) -> Out {
        run_cmd(self.command(program).args(args))
    }

    /// Run `rexray ARGS`.
    pub fn rexray(&self, args: &[&str]) -> Out {
        self.run("rexray", args)
    }

    /// The names of every volume, sorted (`rexray volume ls`).
    pub fn volume_names(&self) -> Vec<String> {
        let o = self.rexray(&["volume", "ls", "--format", "json"]);
        let v: serde_json::Value = serde_json::from_str(o.ok()).unwrap();
        let mut n: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_string())
            .collect();
        n.sort();
        n
    }

    /// The library's workflows for this home, in-process.
    pub fn volumes(&self) -> rexray::volume::Volumes {
        self.open_volumes().expect("volumes")
    }

    /// [`volumes`](Self::volumes), or why they cannot be opened.
    pub fn open_volumes(&self) -> rexray::Result<rexray::volume::Volumes> {
        let mut env: std::collections::HashMap<String, String> = self.env.iter().cloned().collect();
        env.insert(
            "REXRAY_HOME".into(),
            self.dir.to_string_lossy().into_owned(),
        );
        let cfg = rexray::config::Config::load(rexray::config::LoadOptions {
            env: Some(env),
            ..Default::default()
        })
        .expect("config");
        rexray::volume::Volumes::open(cfg)
    }

    /// Loop devices backed by files under this home.
    pub fn loops(&self) -> Vec<PathBuf> {
        loops_under(&self.dir)
    }

    /// Mounts under this home, apart from what a Ceph driver's attach
    /// mounts in the run dir (rbd-fuse's images, s3fs's buckets: see
    /// [`attached`](Self::attached)): its volumes' mounts and binds, on
    /// every driver.
    pub fn mounts(&self) -> Vec<PathBuf> {
        let mut v = mounts_under(&self.dir);
        let attach_dir = match test_driver() {
            TestDriver::Loop => return v,
            TestDriver::Rbd => self.dir.join("var/run/rbd-fuse"),
            TestDriver::S3fs => self.dir.join("var/run/s3fs"),
        };
        v.retain(|p| !p.starts_with(&attach_dir));
        v
    }
}

impl Default for Home {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        // The controller first: it holds the images' catalog open.
        if let Some(ctl) = self.ctl.take() {
            let mut c = ctl.into_inner().unwrap_or_else(|e| e.into_inner());
            if std::thread::panicking() {
                let log = c.log_text();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                eprintln!(
                    "controller of {} (log tail):\n{}",
                    self.dir.display(),
                    tail.join("\n")
                );
            }
            c.stop();
        }
        cleanup(&self.dir);
        // The home's pool or radosgw user, after its mounts are gone.
        if let Some(b) = self.backend.take() {
            b.remove();
        }
    }
}

/// Client mode: a home's private controller, a `rexray service start`
/// serving the libStorage API on `<home>/ctl.sock`, stopped by its PID.
pub(crate) struct Controller {
    home: PathBuf,
    child: Option<std::process::Child>,
    /// The configuration it runs with (`<home>/ctl/etc/config.yml`).
    yaml: String,
    /// Its `FAILPOINTS` ("" for none).
    failpoints: String,
}

impl Controller {
    fn start(home: &Path, yaml: String, failpoints: String) -> Controller {
        let mut c = Controller {
            home: home.to_path_buf(),
            child: None,
            yaml,
            failpoints,
        };
        c.spawn();
        c
    }

    fn sock(&self) -> PathBuf {
        self.home.join("ctl.sock")
    }

    fn log(&self) -> PathBuf {
        self.home.join("ctl.log")
    }

    /// The `libstorage.host` of its clients.
    fn url(&self) -> String {
        format!("unix://{}", self.sock().display())
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    /// Start it with the current settings and wait (bounded) until it
    /// answers a request.
    fn spawn(&mut self) {
        let etc = self.home.join("ctl/etc");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("config.yml"), &self.yaml).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .unwrap();
        let mut c = Command::new(bin("rexray"));
        c.env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("REXRAY_HOME", self.home.join("ctl"))
            .args(["service", "start", "-l", "debug"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if !self.failpoints.is_empty() {
            c.env("FAILPOINTS", &self.failpoints);
        }
        let mut child = c.spawn().expect("spawn the controller");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                panic!("controller exited at start ({st}): {}", self.log_text());
            }
            if answers(&self.sock()) {
                break;
            }
            if std::time::Instant::now() > deadline {
                signal(child.id(), nix::sys::signal::Signal::SIGKILL);
                let _ = child.wait();
                panic!("controller not answering after 60 s: {}", self.log_text());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        self.child = Some(child);
    }

    /// SIGTERM, a bounded wait, SIGKILL. Nothing to do when it is not
    /// running (or already died of a fail point).
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if child.try_wait().unwrap().is_some() {
            return;
        }
        signal(child.id(), nix::sys::signal::Signal::SIGTERM);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                eprintln!(
                    "controller of {} ignored SIGTERM for 30 s: killed",
                    self.home.display()
                );
                signal(child.id(), nix::sys::signal::Signal::SIGKILL);
                let _ = child.wait();
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

/// Whether a libStorage server answers on `sock` (`GET /help/version`).
fn answers(sock: &Path) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(sock) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
    if s.write_all(b"GET /help/version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut t = String::new();
    let _ = s.read_to_string(&mut t);
    t.starts_with("HTTP/1.1 200")
}

/// The configuration of `home`'s controller, from the node's
/// configuration `node` (its `<etc>/config.yml`, if any): the node's
/// `loop` and `vfs` settings with the node's defaults for their paths, and
/// the services the node declares plus `loop` and `vfs`.
fn controller_yaml(home: &Path, node: Option<&str>) -> String {
    use serde_yaml_ng::{Mapping, Value};
    // Unreadable settings are the node's to report; the controller keeps
    // its defaults.
    let node: Value = node
        .and_then(|t| serde_yaml_ng::from_str(t).ok())
        .unwrap_or(Value::Null);
    // Keys are case-insensitive, as the configuration's own.
    let get = |v: &Value, k: &str| -> Value {
        v.as_mapping()
            .and_then(|m| {
                m.iter()
                    .find(|(mk, _)| mk.as_str().is_some_and(|s| s.eq_ignore_ascii_case(k)))
            })
            .map(|(_, v)| v.clone())
            .unwrap_or(Value::Null)
    };
    let with_default = |section: Value, key: &str, default: PathBuf| -> Value {
        let mut m = section.as_mapping().cloned().unwrap_or_default();
        if get(&Value::Mapping(m.clone()), key).is_null() {
            m.insert(key.into(), default.to_string_lossy().into_owned().into());
        }
        Value::Mapping(m)
    };
    let lib = home.join("var/lib");
    let mut services = get(&get(&get(&node, "libstorage"), "server"), "services")
        .as_mapping()
        .cloned()
        .unwrap_or_default();
    for d in ["loop", "vfs"] {
        if get(&Value::Mapping(services.clone()), d).is_null() {
            let mut m = Mapping::new();
            m.insert("driver".into(), d.into());
            services.insert(d.into(), Value::Mapping(m));
        }
    }
    let mut endpoint = Mapping::new();
    endpoint.insert(
        "address".into(),
        format!("unix://{}", home.join("ctl.sock").display()).into(),
    );
    let mut endpoints = Mapping::new();
    endpoints.insert("ctl".into(), Value::Mapping(endpoint));
    let mut server = Mapping::new();
    server.insert("endpoints".into(), Value::Mapping(endpoints));
    server.insert("services".into(), Value::Mapping(services));
    let mut libstorage = Mapping::new();
    libstorage.insert("service".into(), "loop".into());
    libstorage.insert("server".into(), Value::Mapping(server));
    let mut docker = Mapping::new();
    docker.insert("disabled".into(), true.into());
    let mut modules = Mapping::new();
    modules.insert("default-docker".into(), Value::Mapping(docker));
    let mut rexray = Mapping::new();
    rexray.insert("modules".into(), Value::Mapping(modules));
    let mut top = Mapping::new();
    top.insert("rexray".into(), Value::Mapping(rexray));
    top.insert("libstorage".into(), Value::Mapping(libstorage));
    top.insert(
        "loop".into(),
        with_default(get(&node, "loop"), "volumePath", lib.join("loop")),
    );
    top.insert(
        "vfs".into(),
        with_default(get(&node, "vfs"), "root", lib.join("vfs")),
    );
    serde_yaml_ng::to_string(&Value::Mapping(top)).unwrap()
}

/// Run `rexray ARGS` of `h` with fail point `fp` set to fire (a build
/// with the `failpoints` feature: the crash matrices).
#[cfg(feature = "failpoints")]
pub fn with_fp(h: &Home, fp: &str, args: &[&str]) -> Out {
    run_cmd(
        h.command("rexray")
            .env("FAILPOINTS", format!("{fp}=return"))
            .args(args),
    )
}

/// Assert that `o` is a process its fail point `fp` killed (SIGKILL).
#[cfg(feature = "failpoints")]
#[track_caller]
pub fn killed(o: &Out, fp: &str) {
    assert_eq!(
        o.code, -1,
        "{fp}: expected the process to die by SIGKILL: {o:#?}"
    );
}

/// Run a prepared command, with a generous bound so a hung binary fails
/// the test instead of hanging CI.
pub fn run_cmd(c: &mut Command) -> Out {
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = c.spawn().expect("spawn");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let o = match rx.recv_timeout(std::time::Duration::from_secs(300)) {
        Ok(o) => o.expect("wait"),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("command {c:?} did not finish within 300 s");
        }
    };
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// Mount points at or under `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape)
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    v
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Loop devices whose backing file is under `dir`.
pub fn loops_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    if let Ok(rd) = std::fs::read_dir("/sys/block") {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with("loop") {
                continue;
            }
            if let Ok(b) = std::fs::read_to_string(e.path().join("loop/backing_file")) {
                let b = b.trim_end().trim_end_matches(" (deleted)");
                if Path::new(b).starts_with(&dir) {
                    out.push(PathBuf::from(format!("/dev/{name}")));
                }
            }
        }
    }
    out.sort();
    out
}

/// Abort the connections of the FUSE mounts that `mountinfo` (a
/// namespace's `/proc/PID/mountinfo`) shows under `dir`: a test that
/// failed midway can leave an rbd-fuse whose client was fenced, or an
/// s3fs whose server is gone, and every access to a file on it (a loop
/// device's backing file among them: the kernel asks it for the file's
/// attributes whenever anyone reads that device's status) would wait
/// forever; aborted, each fails at once. Only this test's mounts, by the
/// device number mountinfo gives them.
pub fn abort_fuse_under(mountinfo: &str, dir: &Path) {
    let minors = fuse_under(mountinfo, dir);
    if minors.is_empty() {
        return;
    }
    let conns = Path::new("/sys/fs/fuse/connections");
    let mounted_here = std::fs::read_dir(conns).is_ok_and(|mut d| d.next().is_none())
        && nix::mount::mount(
            Some("fusectl"),
            conns,
            Some("fusectl"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .is_ok();
    for m in minors {
        if std::fs::write(conns.join(&m).join("abort"), b"1").is_ok() {
            eprintln!(
                "aborted the FUSE connection {m} a test left under {}",
                dir.display()
            );
        }
    }
    if mounted_here {
        let _ = nix::mount::umount(conns);
    }
}

/// The FUSE connections (their device minors) of the FUSE mounts that
/// `mountinfo` shows under `dir`.
fn fuse_under(mountinfo: &str, dir: &Path) -> Vec<String> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            let fstype = *f.get(sep + 1)?;
            let fuse = fstype == "fuse" || fstype == "fuseblk" || fstype.starts_with("fuse.");
            let under = Path::new(&unescape(f.get(4)?)).starts_with(dir);
            (fuse && under)
                .then(|| f[2].split_once(':').map(|(_, m)| m.to_string()))
                .flatten()
        })
        .collect()
}

#[test]
fn fuse_mounts_of_a_home_and_only_those() {
    let info = "\
36 25 0:32 / /sys/fs/fuse/connections rw,nosuid,nodev,noexec,relatime shared:14 - fusectl fusectl rw
512 30 0:61 / /tmp/rx.a/var/run/rbd-fuse/img1 rw,nosuid,nodev,relatime shared:300 - fuse rbd-fuse rw,user_id=0,group_id=0
513 30 0:62 / /tmp/rx.a/var/run/s3fs/my\\040bucket rw,nosuid,nodev,relatime - fuse.s3fs s3fs rw,user_id=0,group_id=0
514 30 7:3 / /tmp/rx.a/var/lib/volumes/v1/data rw,relatime - ext4 /dev/loop3 rw
515 30 0:63 / /tmp/rx.b/var/run/s3fs/b rw,relatime - fuse.s3fs s3fs rw
516 30 0:64 / /tmp/rx.ab/x rw,relatime - fuse.sshfs h:/ rw
";
    assert_eq!(fuse_under(info, Path::new("/tmp/rx.a")), ["61", "62"]);
    assert_eq!(fuse_under(info, Path::new("/tmp/rx.b")), ["63"]);
    assert!(fuse_under(info, Path::new("/sys")).is_empty());
}

/// Unmount everything under `dir`, detach its loop devices, delete it.
pub fn cleanup(dir: &Path) {
    abort_fuse_under(
        &std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default(),
        dir,
    );
    // The loop devices first: once a filesystem under `dir` that holds
    // images (a test's own tmpfs) is unmounted, their backing files no
    // longer show under `dir`, and they could not be told apart.
    let loops = loops_under(dir);
    for m in mounts_under(dir) {
        let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
    }
    for d in loops {
        let _ = rexray::storage::loopdev::detach(&d);
    }
    if mounts_under(dir).is_empty() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The backing-file → device map of this home's volumes, for assertions.
pub fn count_mounts_at(p: &Path) -> usize {
    mounts_under(p).iter().filter(|m| m.as_path() == p).count()
}

/// The storage driver the front-end tests run on
/// (`REXRAY_TEST_DRIVER=loop|rbd|s3fs`, loop when unset): every [`Home`]
/// made by [`Home::new`] uses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestDriver {
    Loop,
    /// RBD images in a pool of the home's own on the test cluster.
    Rbd,
    /// Buckets of a radosgw user (and tenant) of the home's own.
    S3fs,
}

impl TestDriver {
    pub fn name(self) -> &'static str {
        match self {
            TestDriver::Loop => "loop",
            TestDriver::Rbd => "rbd",
            TestDriver::S3fs => "s3fs",
        }
    }
}

/// The driver of this test run (`REXRAY_TEST_DRIVER`); an unknown name
/// fails the test.
pub fn test_driver() -> TestDriver {
    match std::env::var("REXRAY_TEST_DRIVER").as_deref() {
        Err(_) | Ok("") | Ok("loop") => TestDriver::Loop,
        Ok("rbd") => TestDriver::Rbd,
        Ok("s3fs") => TestDriver::S3fs,
        Ok(other) => panic!("REXRAY_TEST_DRIVER={other:?}: expected loop, rbd or s3fs"),
    }
}

/// Append `line` to the file `$var` names, if any.
fn record(var: &str, line: &str) {
    if let Some(file) = std::env::var_os(var) {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(file)
        {
            let _ = writeln!(f, "{line}");
        }
    }
}

/// Under a driver other than loop, record that the running test does not
/// apply to it (for `reason`) and return true: the caller returns at
/// once. Recorded in `$REXRAY_TEST_NA` as [`client_mode_na`] does, never
/// counted as passed; use as `if driver_na("why") { return; }`.
pub fn driver_na(reason: &str) -> bool {
    driver_na_on(&[TestDriver::Rbd, TestDriver::S3fs], reason)
}

/// [`driver_na`] for the drivers `on` only.
pub fn driver_na_on(on: &[TestDriver], reason: &str) -> bool {
    let d = test_driver();
    if !on.contains(&d) {
        return false;
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("unknown test")
        .to_string();
    eprintln!("not applicable to the {} driver: {reason}", d.name());
    record(
        "REXRAY_TEST_NA",
        &format!("{test} ({}): {reason}", d.name()),
    );
    true
}

/// Whether fail point `fp` is on the path of this run's driver: a
/// driver's own (`loop::`, `rbd::`, `s3fs::`) only on it, and the
/// device's steps (wait, format) not on s3fs, which has none.
pub fn fires_for_driver(fp: &str) -> bool {
    let d = test_driver();
    for (prefix, owner) in [
        ("loop::", TestDriver::Loop),
        ("rbd::", TestDriver::Rbd),
        ("s3fs::", TestDriver::S3fs),
    ] {
        if fp.starts_with(prefix) {
            return d == owner;
        }
    }
    let device_steps = [
        "volume::mount-after-wait",
        "node::before-mkfs",
        "node::after-mkfs",
        "volume::mount-after-format",
    ];
    !(d == TestDriver::S3fs && device_steps.contains(&fp))
}

/// A home's share of the test cluster under `REXRAY_TEST_DRIVER=rbd|s3fs`:
/// for rbd a pool (`rxt-<pid>-<n>`), for s3fs a radosgw user in a tenant
/// of its own (so its bucket names meet no other home's); made by
/// [`Home::new`], removed with everything in it when the home is dropped.
pub(crate) struct Backend {
    driver: TestDriver,
    /// The pool, or the user (and its tenant).
    pub name: String,
    /// The driver's configuration section.
    section: serde_yaml_ng::Mapping,
    /// The home's environment for it (s3fs: the user's keys).
    env: Vec<(String, String)>,
    /// Made by this home (a second node's share is not removed by it).
    owned: bool,
}

fn test_cluster(d: TestDriver) -> &'static crate::cluster::Cluster {
    crate::cluster::cluster().unwrap_or_else(|| {
        panic!(
            "REXRAY_TEST_DRIVER={} needs the test Ceph cluster (root, REXRAY_SKIP_CEPH unset)",
            d.name()
        )
    })
}

impl Backend {
    fn make(d: TestDriver) -> Backend {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let c = test_cluster(d);
        let conf = c.conf.to_string_lossy().into_owned();
        let mut section = serde_yaml_ng::Mapping::new();
        let env = Vec::new();
        let name = match d {
            TestDriver::Rbd => {
                let pool = format!("rxt-{}-{n}", std::process::id());
                c.tool("ceph", &["osd", "pool", "create", &pool, "8", "8"])
                    .ok();
                c.tool(
                    "ceph",
                    &["osd", "pool", "application", "enable", &pool, "rbd"],
                )
                .ok();
                c.tool("rbd", &["pool", "init", &pool]).ok();
                section.insert("cephArgs".into(), c.args().into());
                section.insert("defaultPool".into(), pool.clone().into());
                pool
            }
            TestDriver::S3fs => {
                let user = format!("rxt{}x{n}", std::process::id());
                let o = c.tool(
                    "radosgw-admin",
                    &[
                        "-c",
                        &conf,
                        "user",
                        "create",
                        "--uid",
                        &user,
                        "--tenant",
                        &user,
                        "--display-name",
                        &user,
                    ],
                );
                let v: serde_json::Value = serde_json::from_str(o.ok()).unwrap();
                let key = &v["keys"][0];
                section.insert("endpoint".into(), c.s3().0.into());
                // In the file, so the library's in-process workflows
                // (Home::volumes) have them too.
                section.insert(
                    "accessKey".into(),
                    key["access_key"].as_str().unwrap().into(),
                );
                section.insert(
                    "secretKey".into(),
                    key["secret_key"].as_str().unwrap().into(),
                );
                user
            }
            TestDriver::Loop => unreachable!("the loop driver needs no backend"),
        };
        Backend {
            driver: d,
            name,
            section,
            env,
            owned: true,
        }
    }

    /// The same share for a second node (not removed by it).
    fn shared(&self) -> Backend {
        Backend {
            driver: self.driver,
            name: self.name.clone(),
            section: self.section.clone(),
            env: self.env.clone(),
            owned: false,
        }
    }

    /// `yaml` with the driver's settings added: `libstorage.service`
    /// unless it names one, and the keys of the driver's section it does
    /// not set. Text that is not a mapping is returned as it is.
    fn merge(&self, yaml: &str) -> String {
        use serde_yaml_ng::{Mapping, Value};
        let mut top = match serde_yaml_ng::from_str::<Value>(yaml) {
            Ok(Value::Null) => Mapping::new(),
            Ok(Value::Mapping(m)) => m,
            _ => return yaml.to_string(),
        };
        // Keys are case-insensitive, as the configuration's own.
        fn entry<'a>(m: &'a mut Mapping, k: &str) -> &'a mut Value {
            let found = m
                .keys()
                .find(|mk| mk.as_str().is_some_and(|s| s.eq_ignore_ascii_case(k)))
                .cloned();
            let key = found.unwrap_or_else(|| k.into());
            m.entry(key).or_insert(Value::Null)
        }
        let ls = entry(&mut top, "libstorage");
        if ls.is_null() {
            *ls = Value::Mapping(Mapping::new());
        }
        if let Value::Mapping(ls) = ls {
            let svc = entry(ls, "service");
            if svc.is_null() {
                *svc = self.driver.name().into();
            }
        }
        let sec = entry(&mut top, self.driver.name());
        if sec.is_null() {
            *sec = Value::Mapping(Mapping::new());
        }
        if let Value::Mapping(sec) = sec {
            for (k, v) in &self.section {
                let e = entry(sec, k.as_str().unwrap());
                if e.is_null() {
                    *e = v.clone();
                }
            }
        }
        serde_yaml_ng::to_string(&Value::Mapping(top)).unwrap()
    }

    /// The volumes in it, as the backend lists them: rbd images of the
    /// pool, buckets of the user.
    fn volumes(&self) -> Vec<String> {
        let c = test_cluster(self.driver);
        let conf = c.conf.to_string_lossy().into_owned();
        let o = match self.driver {
            TestDriver::Rbd => c.tool("rbd", &["ls", "--format", "json", "-p", &self.name]),
            _ => c.tool(
                "radosgw-admin",
                &[
                    "-c", &conf, "bucket", "list", "--uid", &self.name, "--tenant", &self.name,
                ],
            ),
        };
        let v: serde_json::Value = serde_json::from_str(o.ok()).unwrap_or_default();
        let mut out: Vec<String> = v
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    /// Remove the pool, or the user with its buckets (made by this home
    /// only). Failures are reported, not raised: this runs in a drop.
    fn remove(self) {
        if !self.owned {
            return;
        }
        let c = test_cluster(self.driver);
        let conf = c.conf.to_string_lossy().into_owned();
        let o = match self.driver {
            TestDriver::Rbd => c.tool(
                "ceph",
                &[
                    "osd",
                    "pool",
                    "rm",
                    &self.name,
                    &self.name,
                    "--yes-i-really-really-mean-it",
                ],
            ),
            _ => c.tool(
                "radosgw-admin",
                &[
                    "-c",
                    &conf,
                    "user",
                    "rm",
                    "--uid",
                    &self.name,
                    "--tenant",
                    &self.name,
                    "--purge-data",
                ],
            ),
        };
        if o.code != 0 {
            eprintln!("removing the test backend {}: {o:?}", self.name);
        }
    }
}

impl Home {
    /// What this home's volumes hold attached here: loop devices (loop;
    /// rbd, whose images are attached through rbd-fuse and a loop
    /// device), s3fs mounts of buckets in the run dir (s3fs, which
    /// attaches nothing else; the volumes' mount points are binds of them).
    pub fn attached(&self) -> Vec<PathBuf> {
        match test_driver() {
            TestDriver::S3fs => {
                let run = self.dir.join("var/run/s3fs");
                let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
                text.lines()
                    .filter(|l| {
                        l.split(" - ")
                            .nth(1)
                            .is_some_and(|r| r.starts_with("fuse.s3fs "))
                    })
                    .filter_map(|l| l.split(' ').nth(4))
                    .map(|p| PathBuf::from(unescape(p)))
                    .filter(|p| p.starts_with(&run))
                    .collect()
            }
            _ => self.loops(),
        }
    }

    /// The volumes left in this home's backend: loop image files, rbd
    /// images of its pool, buckets of its user.
    pub fn leftovers(&self) -> Vec<String> {
        match &self.backend {
            Some(b) => b.volumes(),
            None => {
                let mut v: Vec<String> = std::fs::read_dir(self.lib().join("loop"))
                    .map(|rd| {
                        rd.flatten()
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .filter(|n| n.ends_with(".img"))
                            .collect()
                    })
                    .unwrap_or_default();
                v.sort();
                v
            }
        }
    }
}

/// The filesystem type a volume mounted with `fs` shows in the mount
/// table on this run's driver: `fs` itself on a block device, s3fs's
/// FUSE mount on s3fs (which has no device and makes no filesystem).
pub fn mounted_fs(fs: &str) -> &str {
    match test_driver() {
        TestDriver::S3fs => "fuse.s3fs",
        _ => fs,
    }
}

/// The source a mounted volume shows in the mount table on this run's
/// driver starts with this: a loop device (loop; rbd through rbd-fuse),
/// or "s3fs".
pub fn mounted_source() -> &'static str {
    match test_driver() {
        TestDriver::S3fs => "s3fs",
        _ => "/dev/loop",
    }
}

impl Home {
    /// Write `bytes` at the start of volume `id`'s data behind the
    /// driver's back (as a stray tool would): the loop image file, or the
    /// first object of the rbd image. Panics on s3fs (no block data).
    pub fn write_volume_head(&self, id: &str, bytes: &[u8]) {
        match &self.backend {
            None => {
                use std::io::Write;
                let img = self.lib().join("loop").join(format!("{id}.img"));
                let mut f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
                f.write_all(bytes).unwrap();
            }
            Some(b) => {
                let tmp = self.dir.join("head.bin");
                std::fs::write(&tmp, bytes).unwrap();
                let (pool, obj) = b.first_object(id);
                test_cluster(b.driver)
                    .tool("rados", &["-p", &pool, "put", &obj, s(&tmp)])
                    .ok();
                std::fs::remove_file(&tmp).unwrap();
            }
        }
    }

    /// The first `n` bytes of volume `id`'s data (see
    /// [`write_volume_head`](Self::write_volume_head)).
    pub fn read_volume_head(&self, id: &str, n: usize) -> Vec<u8> {
        let mut out = match &self.backend {
            None => std::fs::read(self.lib().join("loop").join(format!("{id}.img"))).unwrap(),
            Some(b) => {
                let tmp = self.dir.join("head.bin");
                let (pool, obj) = b.first_object(id);
                test_cluster(b.driver)
                    .tool("rados", &["-p", &pool, "get", &obj, s(&tmp)])
                    .ok();
                let v = std::fs::read(&tmp).unwrap();
                std::fs::remove_file(&tmp).unwrap();
                v
            }
        };
        out.resize(n, 0);
        out
    }
}

impl Backend {
    /// The pool and first data object of rbd volume `id` (`<pool>.<image>`).
    fn first_object(&self, id: &str) -> (String, String) {
        assert_eq!(
            self.driver,
            TestDriver::Rbd,
            "s3fs volumes have no block data"
        );
        let image = id
            .strip_prefix(&format!("{}.", self.name))
            .unwrap_or_else(|| panic!("{id} is not a volume of pool {}", self.name));
        let o = test_cluster(self.driver).tool(
            "rbd",
            &[
                "info",
                "--format",
                "json",
                &format!("{}/{image}", self.name),
            ],
        );
        let v: serde_json::Value = serde_json::from_str(o.ok()).unwrap();
        let prefix = v["block_name_prefix"].as_str().unwrap();
        (self.name.clone(), format!("{prefix}.0000000000000000"))
    }
}

/// Whether `dev` is what an attach answers on this run's driver: a loop
/// device (loop; rbd through rbd-fuse), nothing on s3fs (no device).
pub fn is_attach_device(dev: &str) -> bool {
    match test_driver() {
        TestDriver::S3fs => dev.is_empty(),
        _ => dev.starts_with("/dev/loop"),
    }
}
