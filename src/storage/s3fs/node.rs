//! The s3fs node side: a volume's bucket is mounted with s3fs-fuse under
//! `<run>/s3fs/<bucket>` (one FUSE process per bucket, its PID in
//! `<bucket>.pid`), and that directory is what the node binds to the
//! volume's mount point. The credentials are in `<run>/s3fs/passwd`
//! (mode 0600), never on a command line.

use super::S3;
use crate::error::IoContext;
use crate::model::{InstanceId, MountSource, Volume};
use crate::storage::controller::Executor;
use crate::storage::rbd::node::{helper_pid, stop_pid, wait_gone, RbdExecutor};
use crate::{Error, Result};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long an unmounted s3fs process may take to exit.
const EXIT_WAIT: Duration = Duration::from_secs(10);

/// The s3fs node side.
pub struct S3fsExecutor {
    s3: S3,
    me: InstanceId,
    /// `<run>/s3fs`.
    dir: PathBuf,
    /// The s3fs program (`s3fs.cmd`).
    cmd: String,
    /// More mount options (`s3fs.options`).
    options: String,
}

impl S3fsExecutor {
    /// The node side for the endpoint of `s3`, with `run` as this
    /// instance's run dir.
    pub fn new(s3: S3, me: InstanceId, run: &Path, cmd: &str, options: &str) -> S3fsExecutor {
        S3fsExecutor {
            s3,
            me,
            dir: run.join("s3fs"),
            cmd: if cmd.is_empty() { "s3fs" } else { cmd }.to_string(),
            options: options.trim().trim_matches(',').to_string(),
        }
    }

    fn bucket<'a>(&self, v: &'a Volume) -> Result<&'a str> {
        super::bucket_name(&v.id)
    }

    fn mount_dir(&self, bucket: &str) -> PathBuf {
        self.dir.join(bucket)
    }

    fn pid_file(&self, bucket: &str) -> PathBuf {
        self.dir.join(format!("{bucket}.pid"))
    }

    fn log_file(&self, bucket: &str) -> PathBuf {
        self.dir.join(format!("{bucket}.log"))
    }

    fn passwd_file(&self) -> PathBuf {
        self.dir.join("passwd")
    }

    /// The recorded s3fs PID of `bucket`, if that process still runs s3fs
    /// on its mount point.
    fn fuse_pid(&self, bucket: &str) -> Option<i32> {
        helper_pid(&self.pid_file(bucket), &self.mount_dir(bucket))
    }

    /// Write the credentials for s3fs, mode 0600 (s3fs refuses others).
    /// Concurrent calls each write their own temporary file and rename it
    /// over the old one (same content, so either wins); a file already
    /// holding these credentials is left alone, and temporaries a killed
    /// writer left (with the secret in them) are removed first.
    fn write_passwd(&self) -> Result<()> {
        let p = self.passwd_file();
        let want = format!("{}:{}\n", self.s3.access_key, self.s3.secret_key);
        crate::files::sweep_temporaries(&self.dir);
        if let Ok(m) = std::fs::symlink_metadata(&p) {
            if m.is_file()
                && m.permissions().mode() & 0o7777 == crate::files::PRIVATE_FILE
                && std::fs::read(&p).is_ok_and(|b| b == want.as_bytes())
            {
                return Ok(());
            }
        }
        crate::state::atomic::write_volatile(&p, want.as_bytes())
    }

    /// Start s3fs for `bucket` and wait until its mount is there.
    fn start(&self, bucket: &str, deadline: Instant) -> Result<()> {
        let mnt = self.mount_dir(bucket);
        if let Some(pid) = self.fuse_pid(bucket) {
            // A process a killed attach left without its mount.
            stop_pid(pid, Duration::from_secs(2));
        }
        use crate::files::{own_dir, Link, PRIVATE_DIR};
        own_dir(&self.dir, PRIVATE_DIR, Link::Refuse)
            .map_err(|e| e.context("preparing the s3fs directory"))?;
        self.write_passwd()?;
        std::fs::create_dir_all(&mnt).ctx(|| format!("creating {}", mnt.display()))?;
        let log = self.log_file(bucket);
        let logf = std::fs::File::create(&log).ctx(|| format!("creating {}", log.display()))?;
        let s3fs = crate::node::cmd::find(&self.cmd, "s3fs")?;
        let mut opts = format!(
            "passwd_file={},url={},endpoint={},use_path_request_style",
            self.passwd_file().display(),
            self.s3.endpoint,
            self.s3.region
        );
        let own_retries = self
            .options
            .split(',')
            .any(|o| o.trim().starts_with("retries="));
        if !own_retries {
            opts.push_str(&format!(",retries={}", self.s3.max_retries.max(1)));
        }
        if !self.options.is_empty() {
            opts.push(',');
            opts.push_str(&self.options);
        }
        let mut cmd =
            crate::node::cmd::command_at(&crate::node::cmd::find("setsid", "util-linux")?);
        cmd.arg(&s3fs)
            .arg(bucket)
            .arg(&mnt)
            .arg("-f")
            .arg("-o")
            .arg(&opts);
        if let Some(ca) = &self.s3.ca_file {
            // s3fs has no CA option: on a certificate its libcurl does not
            // trust (the system's store), it asks again trusting the
            // bundle CURL_CA_BUNDLE names, so either CA list admits one.
            cmd.env("CURL_CA_BUNDLE", ca);
        }
        cmd.stdout(
            logf.try_clone()
                .ctx(|| format!("opening {}", log.display()))?,
        )
        .stderr(logf);
        let child = cmd
            .spawn()
            .map_err(|e| Error::from_io("starting s3fs (install the s3fs package)", &e))?;
        let pid = child.id();
        crate::state::atomic::write(&self.pid_file(bucket), format!("{pid}\n").as_bytes())?;
        tracing::info!(volume = bucket, pid, mount = %mnt.display(), "started s3fs");
        // The child is reaped when it exits while this process runs; its
        // end is known from its exit, never guessed from /proc (whose
        // command line reads empty while `setsid` execs s3fs).
        let exited = Arc::new(AtomicBool::new(false));
        let flag = exited.clone();
        std::thread::spawn(move || {
            let mut child = child;
            let _ = child.wait();
            flag.store(true, Ordering::SeqCst);
        });
        loop {
            if RbdExecutor::is_mounted(&mnt) {
                return Ok(());
            }
            let gone = exited.load(Ordering::SeqCst);
            if gone || Instant::now() >= deadline {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                if let Some(pid) = self.fuse_pid(bucket) {
                    stop_pid(pid, Duration::from_secs(2));
                }
                let _ = nix::mount::umount2(&mnt, nix::mount::MntFlags::MNT_DETACH);
                let _ = std::fs::remove_dir(&mnt);
                return Err(Error::backend(format!(
                    "s3fs for volume {bucket} {} (endpoint {}){}",
                    if gone {
                        "exited without mounting the bucket"
                    } else {
                        "did not mount the bucket in time"
                    },
                    self.s3.endpoint,
                    log.lines()
                        .rev()
                        .find(|l| !l.trim().is_empty())
                        .map(|l| format!(": {l}"))
                        .unwrap_or_default()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Executor for S3fsExecutor {
    fn instance_id(&self) -> &InstanceId {
        &self.me
    }

    fn present(&self, volume: &Volume) -> Result<Option<MountSource>> {
        let mnt = self.mount_dir(self.bucket(volume)?);
        Ok(RbdExecutor::is_mounted(&mnt).then_some(MountSource::Directory(mnt)))
    }

    fn resolve(&self, volume: &Volume, token: &str, timeout: Duration) -> Result<MountSource> {
        let bucket = self.bucket(volume)?;
        if token != bucket {
            return Err(Error::backend(format!(
                "volume {}: the controller attached {token:?}, not bucket {bucket}",
                volume.name
            )));
        }
        if let Some(src) = self.present(volume)? {
            return Ok(src);
        }
        self.start(bucket, Instant::now() + timeout)?;
        fail::fail_point!("s3fs::attach-after-mount", |_| crate::crash_here());
        Ok(MountSource::Directory(self.mount_dir(bucket)))
    }

    fn release(&self, volume: &Volume, _force: bool) -> Result<()> {
        let bucket = self.bucket(volume)?;
        let mnt = self.mount_dir(bucket);
        if RbdExecutor::is_mounted(&mnt) {
            let out = crate::node::cmd::run(
                "fusermount",
                "fuse3",
                &[std::ffi::OsStr::new("-u"), mnt.as_os_str()],
                Duration::from_secs(30),
            )?;
            if !out.status.success() {
                return Err(Error::in_use(format!(
                    "volume {bucket}: fusermount -u {} failed: {} (still mounted or open?)",
                    mnt.display(),
                    out.stderr.trim()
                )));
            }
            fail::fail_point!("s3fs::detach-after-unmount", |_| crate::crash_here());
        }
        if let Some(pid) = self.fuse_pid(bucket) {
            if !wait_gone(pid, EXIT_WAIT) {
                stop_pid(pid, Duration::from_secs(2));
            }
        }
        let _ = std::fs::remove_file(self.pid_file(bucket));
        let _ = std::fs::remove_file(self.log_file(bucket));
        let _ = std::fs::remove_dir(&mnt);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn executor(run: &Path, secret: &str) -> S3fsExecutor {
        let s3 = S3::new(
            "http://127.0.0.1:1",
            "",
            "ak",
            secret,
            Duration::from_secs(1),
            None,
        )
        .unwrap();
        S3fsExecutor::new(s3, InstanceId::default(), run, "", "")
    }

    #[test]
    fn concurrent_writers_of_the_credentials_all_succeed() {
        let run = tempfile::tempdir().unwrap();
        let dir = run.path().join("s3fs");
        std::fs::create_dir(&dir).unwrap();
        // Writers that each find the file missing or stale race on it.
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..16)
                .map(|i| {
                    let run = run.path();
                    s.spawn(move || {
                        let e = executor(run, if i % 2 == 0 { "sk" } else { "sk2" });
                        for _ in 0..20 {
                            e.write_passwd().unwrap();
                        }
                    })
                })
                .collect();
            for h in hs {
                h.join().unwrap();
            }
        });
        let e = executor(run.path(), "sk");
        e.write_passwd().unwrap();
        assert_eq!(std::fs::read_to_string(e.passwd_file()).unwrap(), "ak:sk\n");
        let m = std::fs::metadata(e.passwd_file()).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o600);
        // Nothing but the file is left.
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["passwd"]);
    }
}
