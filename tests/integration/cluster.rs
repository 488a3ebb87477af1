//! The test Ceph cluster (`scripts/ceph.sh`): one per test process,
//! started at the first test that needs it and stopped when the process
//! exits (and by `scripts/test.sh`'s trap). Used by the Ceph tests and by
//! every [`Home`](crate::common::Home) when `REXRAY_TEST_DRIVER` names a
//! Ceph driver.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// A cluster started by `scripts/ceph.sh start DIR`.
pub struct Cluster {
    pub dir: PathBuf,
    pub conf: PathBuf,
    /// Settings for `ceph.sh` (ports, no manager).
    pub env: Vec<(String, String)>,
}

pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ceph.sh")
}

/// A free TCP port of 127.0.0.1 (for a monitor: two clusters, or a
/// developer's own, never meet on 3300).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    /// Start a cluster in `dir` with `env` for the script; panics with the
    /// script's output when it fails.
    pub fn start(dir: &Path, env: Vec<(String, String)>) -> Cluster {
        let mut c = Cluster {
            dir: dir.to_path_buf(),
            conf: PathBuf::new(),
            env,
        };
        c.conf = c.up();
        c
    }

    pub fn up(&self) -> PathBuf {
        let mut cmd = Command::new("bash");
        cmd.arg(script()).arg("start").arg(&self.dir);
        cmd.env_remove("CEPH_ARGS").env_remove("CEPH_CONF");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let o = run_cmd(&mut cmd);
        assert_eq!(o.code, 0, "scripts/ceph.sh start failed: {o:#?}");
        PathBuf::from(o.stdout.trim())
    }

    pub fn stop(&self) {
        let o = run_cmd(
            Command::new("bash")
                .arg(script())
                .arg("stop")
                .arg(&self.dir),
        );
        assert_eq!(o.code, 0, "scripts/ceph.sh stop failed: {o:#?}");
    }

    /// `rbd.cephArgs` for this cluster.
    pub fn args(&self) -> String {
        format!("--conf {}", self.conf.display())
    }

    /// Run a Ceph tool against this cluster.
    pub fn tool(&self, prog: &str, args: &[&str]) -> Out {
        run_cmd(
            Command::new(prog)
                .env_remove("CEPH_ARGS")
                .env("CEPH_CONF", &self.conf)
                .args(args),
        )
    }

    /// A home whose service is the rbd driver on this cluster; `extra`:
    /// more `rbd.*` lines.
    pub fn home(&self, extra: &str) -> Home {
        let h = Home::plain();
        h.config(&format!(
            "libstorage:\n  service: rbd\nrbd:\n  cephArgs: {}\n{extra}",
            self.args()
        ));
        h
    }
}

impl Cluster {
    /// The value of `key` in `DIR/s3.env` ("" when missing).
    fn s3_env(&self, key: &str) -> String {
        let env = std::fs::read_to_string(self.dir.join("s3.env"))
            .expect("the cluster was started with radosgw (DIR/s3.env)");
        env.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or_default()
            .to_string()
    }

    /// `(endpoint, access key, secret key)` of the radosgw S3 user
    /// (`DIR/s3.env`).
    pub fn s3(&self) -> (String, String, String) {
        (
            self.s3_env("S3_ENDPOINT"),
            self.s3_env("AWS_ACCESS_KEY_ID"),
            self.s3_env("AWS_SECRET_ACCESS_KEY"),
        )
    }

    /// `(https endpoint, the PEM file of the CA that signed its
    /// certificate)` of radosgw (`CEPH_RGW_HTTPS=1`).
    pub fn s3_https(&self) -> (String, PathBuf) {
        let (ep, ca) = (self.s3_env("S3_HTTPS_ENDPOINT"), self.s3_env("S3_CA_FILE"));
        assert!(
            ep.starts_with("https://") && !ca.is_empty(),
            "the cluster was started without CEPH_RGW_HTTPS=1 (DIR/s3.env has no https endpoint)"
        );
        (ep, PathBuf::from(ca))
    }

    /// A home whose service is the s3fs driver on this cluster's radosgw
    /// over https, trusting `ca_file` (`s3fs.caFile`) when given.
    pub fn s3_https_home(&self, ca_file: Option<&Path>) -> Home {
        let (_, ak, sk) = self.s3();
        let (endpoint, _) = self.s3_https();
        let h = Home::plain()
            .with_env("AWS_ACCESS_KEY_ID", &ak)
            .with_env("AWS_SECRET_ACCESS_KEY", &sk);
        let ca = ca_file
            .map(|p| format!("  caFile: {}\n", p.display()))
            .unwrap_or_default();
        h.config(&format!(
            "libstorage:\n  service: s3fs\ns3fs:\n  endpoint: {endpoint}\n{ca}"
        ));
        h
    }

    /// A home whose service is the s3fs driver on this cluster's
    /// radosgw, with the credentials in the environment.
    pub fn s3_home(&self) -> Home {
        let (endpoint, ak, sk) = self.s3();
        let h = Home::plain()
            .with_env("AWS_ACCESS_KEY_ID", &ak)
            .with_env("AWS_SECRET_ACCESS_KEY", &sk);
        h.config(&format!(
            "libstorage:\n  service: s3fs\ns3fs:\n  endpoint: {endpoint}\n"
        ));
        h
    }
}

/// The directory of the shared cluster (stopped at exit), and whether
/// this process made it (then it is removed too).
static SHARED_DIR: OnceLock<(PathBuf, bool)> = OnceLock::new();

extern "C" fn stop_shared_cluster() {
    if let Some((dir, ours)) = SHARED_DIR.get() {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        if *ours {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Whether the Ceph tests run here: not with `REXRAY_SKIP_CEPH=1`, and
/// only as root (the test is recorded as skipped otherwise).
pub fn enabled() -> bool {
    if std::env::var("REXRAY_SKIP_CEPH").is_ok_and(|v| v == "1") {
        skip("REXRAY_SKIP_CEPH=1: the Ceph tests are off");
        return false;
    }
    if !is_root() {
        skip("needs root (a Ceph cluster, FUSE, loop devices and mount)");
        return false;
    }
    true
}

/// The cluster of this test process, started at the first call; `None`
/// (the test recorded as skipped) when the Ceph tests do not run here.
pub fn cluster() -> Option<&'static Cluster> {
    if !enabled() {
        return None;
    }
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    Some(CLUSTER.get_or_init(|| {
        // scripts/test.sh names the directory, so its trap stops the
        // cluster even when this process is killed.
        let (dir, ours) = match std::env::var_os("REXRAY_CEPH_DIR") {
            Some(d) => (PathBuf::from(d), false),
            None => (
                tempfile::Builder::new()
                    .prefix("rxceph.")
                    .tempdir_in("/tmp")
                    .unwrap()
                    .keep(),
                true,
            ),
        };
        let _ = SHARED_DIR.set((dir.clone(), ours));
        // SAFETY: registers a plain function with no arguments.
        unsafe { libc::atexit(stop_shared_cluster) };
        // With radosgw, for the s3fs driver, over http and https.
        Cluster::start(
            &dir,
            vec![
                ("CEPH_MON_PORT".into(), free_port().to_string()),
                ("CEPH_RGW".into(), "1".into()),
                ("CEPH_RGW_PORT".into(), free_port().to_string()),
                ("CEPH_RGW_HTTPS".into(), "1".into()),
                ("CEPH_RGW_HTTPS_PORT".into(), free_port().to_string()),
            ],
        )
    }))
}
