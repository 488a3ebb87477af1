//! Test harness: a private `REXRAY_HOME` per test, the binaries run as a
//! user would run them, and exact cleanup of what the test made — mounts
//! under its directory and loop devices backed by files under it, nothing
//! else.

#![allow(dead_code)]

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
}

impl Home {
    /// A fresh home under /tmp (short paths: unix sockets are limited).
    pub fn new() -> Home {
        let dir = tempfile::Builder::new()
            .prefix("rxt.")
            .tempdir_in("/tmp")
            .expect("temp dir")
            .keep();
        Home {
            dir,
            env: Vec::new(),
        }
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

    /// Write `<etc>/config.yml`.
    pub fn config(&self, yaml: &str) {
        std::fs::create_dir_all(self.etc()).unwrap();
        std::fs::write(self.etc().join("config.yml"), yaml).unwrap();
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
        rexray::volume::Volumes::open(cfg).expect("volumes")
    }

    /// Loop devices backed by files under this home.
    pub fn loops(&self) -> Vec<PathBuf> {
        loops_under(&self.dir)
    }

    /// Mounts under this home.
    pub fn mounts(&self) -> Vec<PathBuf> {
        mounts_under(&self.dir)
    }
}

impl Default for Home {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        cleanup(&self.dir);
    }
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

/// Unmount everything under `dir`, detach its loop devices, delete it.
pub fn cleanup(dir: &Path) {
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
