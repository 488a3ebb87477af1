//! Running the Ceph tools (`rbd`, `ceph`) with a bounded wait.
//!
//! The cluster's arguments (`rbd.cephArgs`, else the caller's `CEPH_ARGS`)
//! reach the tools through their `CEPH_ARGS` environment variable, never
//! on a command line that `ps` shows; only files and ids are accepted
//! there (a keyring file, not a key).

use crate::{Error, Kind, Result};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// How the Ceph tools reach the cluster.
#[derive(Debug, Clone)]
pub struct Ceph {
    /// `CEPH_ARGS` for every tool (empty: the tools' defaults).
    args: String,
    /// The configuration file, for messages and for `rbd-fuse -c`.
    pub conf: PathBuf,
    /// How long one call may take.
    pub timeout: Duration,
    /// Whether the driver's hot calls go through librbd and librados
    /// ([`super::lib`]) rather than the tools.
    pub library: bool,
}

/// Options that carry a secret: refused in `rbd.cephArgs`.
const SECRET_OPTIONS: &[&str] = &["--key", "--secret"];

impl Ceph {
    /// From `rbd.cephArgs` (`configured`), else the environment's
    /// `CEPH_ARGS`; the conf is the one they name, else `CEPH_CONF`, else
    /// `/etc/ceph/ceph.conf`.
    pub fn new(configured: &str, timeout: Duration) -> Result<Ceph> {
        let args = if configured.trim().is_empty() {
            std::env::var("CEPH_ARGS").unwrap_or_default()
        } else {
            configured.trim().to_string()
        };
        let mut conf = None;
        let mut words = args.split_whitespace();
        while let Some(w) = words.next() {
            let (opt, inline) = match w.split_once('=') {
                Some((o, v)) if o.starts_with('-') => (o, Some(v.to_string())),
                _ => (w, None),
            };
            if SECRET_OPTIONS.contains(&opt) {
                return Err(Error::invalid(format!(
                    "rbd.cephArgs (or CEPH_ARGS) has {opt}: give the Ceph key in a keyring file (--keyring FILE, mode 0600) and the user with --id, never the key itself"
                )));
            }
            // `-c FILE` or `--conf FILE` (spelt so that no line here reads
            // like a shell's command flag to the no-shell check).
            if opt == "--conf" || opt.strip_prefix('-') == Some("c") {
                conf = inline.or_else(|| words.next().map(str::to_string));
            }
        }
        let conf = conf
            .or_else(|| std::env::var("CEPH_CONF").ok().filter(|c| !c.is_empty()))
            .unwrap_or_else(|| "/etc/ceph/ceph.conf".into());
        Ok(Ceph {
            args,
            conf: PathBuf::from(conf),
            timeout,
            library: false,
        })
    }

    /// These settings, reaching Ceph as `mode` (`rbd.library`) says: the
    /// libraries when they load (and the mode allows), else the tools.
    pub fn with_library(mut self, mode: super::lib::Mode) -> Ceph {
        self.library = mode.uses_library();
        super::lib::log_choice(mode);
        self
    }

    /// The cluster's arguments (`CEPH_ARGS` of the tools).
    pub fn args(&self) -> &str {
        &self.args
    }

    /// A command for `prog` with the cluster's arguments in its
    /// environment.
    pub fn command(&self, prog: &str) -> Command {
        // The tool's absolute path; one that is not installed fails to
        // start, with the install hint of `run_cmd`.
        let path = crate::node::cmd::find(prog, "ceph-common")
            .unwrap_or_else(|_| std::path::PathBuf::from(prog));
        let mut c = crate::node::cmd::command_at(&path);
        c.env("CEPH_ARGS", &self.args).env("CEPH_CONF", &self.conf);
        c
    }

    /// Run `prog args`, wait at most the timeout, and return its stdout.
    /// A timeout or a failure is an error naming the cluster and the step.
    pub fn run(&self, prog: &str, args: &[&str]) -> Result<String> {
        let mut cmd = self.command(prog);
        cmd.args(args);
        self.run_cmd(cmd, &format!("{prog} {}", args.join(" ")))
    }

    /// [`run`](Self::run) for a call whose work grows with the image
    /// (`rbd cp`, `rbd rm`): waited for [`bulk_timeout`](Self::bulk_timeout)
    /// of `gib`, so a large image is not cut off part-way.
    pub fn run_bulk(&self, prog: &str, args: &[&str], gib: u64) -> Result<String> {
        let mut cmd = self.command(prog);
        cmd.args(args);
        let bulk = Ceph {
            timeout: self.bulk_timeout(gib),
            ..self.clone()
        };
        bulk.run_cmd(cmd, &format!("{prog} {}", args.join(" ")))
    }

    /// `rbd.timeout` plus 10 s a GiB (at least 100 MiB/s): the bound of a
    /// call that copies or removes a whole image. A cluster that does not
    /// answer at all is found out by the calls before it, within
    /// `rbd.timeout`.
    pub fn bulk_timeout(&self, gib: u64) -> Duration {
        self.timeout
            .saturating_add(Duration::from_secs(10).saturating_mul(gib.min(u32::MAX as u64) as u32))
    }

    /// [`run`](Self::run) of a prepared command; `shown` names it.
    pub fn run_cmd(&self, cmd: Command, shown: &str) -> Result<String> {
        let what = shown.to_string();
        match crate::node::cmd::output_within(cmd, self.timeout) {
            Ok(Some(out)) if out.status.success() => Ok(out.stdout),
            Ok(Some(out)) => Err(self.failed(&what, &out.stderr)),
            Ok(None) => Err(self.unreachable(&what)),
            Err(e) => {
                let hint = if e.kind() == std::io::ErrorKind::NotFound {
                    " (install the Ceph client tools: ceph-common, rbd-fuse)"
                } else {
                    ""
                };
                Err(Error::from_io(format!("running {what}{hint}"), &e))
            }
        }
    }

    /// The error for a call that did not finish in time.
    pub fn unreachable(&self, what: &str) -> Error {
        Error::backend(format!(
            "the Ceph cluster of {} did not answer within {} ({what}): is it running and reachable from this host?",
            self.conf.display(),
            humantime::format_duration(self.timeout)
        ))
    }

    fn failed(&self, what: &str, stderr: &str) -> Error {
        // The tools' own message, without their timestamped log lines.
        let msg: Vec<&str> = stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("20") && !l.contains("did not load config"))
            .collect();
        let msg = if msg.is_empty() {
            stderr.lines().last().unwrap_or("").trim().to_string()
        } else {
            msg.join("; ")
        };
        let kind = if msg.contains("No such file or directory") || msg.contains("(2)") {
            Kind::NotFound
        } else if msg.contains("(16)") || msg.contains("busy") {
            Kind::InUse
        } else if msg.contains("(17)") || msg.contains("exists") {
            Kind::AlreadyExists
        } else {
            Kind::Backend
        };
        Error::new(
            kind,
            format!("{what} failed (cluster of {}): {msg}", self.conf.display()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_comes_from_the_arguments_and_keys_are_refused() {
        let c = Ceph::new("--conf /x/ceph.conf --id rexray", Duration::from_secs(1)).unwrap();
        assert_eq!(c.conf, PathBuf::from("/x/ceph.conf"));
        let c = Ceph::new("-c=/y.conf", Duration::from_secs(1)).unwrap();
        assert_eq!(c.conf, PathBuf::from("/y.conf"));
        let e = Ceph::new("--id a --key AQBsecret==", Duration::from_secs(1)).unwrap_err();
        assert_eq!(e.kind(), Kind::InvalidInput);
        assert!(e.message().contains("keyring"), "{e}");
    }

    #[test]
    fn bulk_calls_are_waited_for_by_the_size_of_the_image() {
        let c = Ceph::new("--conf /x/ceph.conf", Duration::from_secs(30)).unwrap();
        assert_eq!(c.bulk_timeout(0), Duration::from_secs(30));
        assert_eq!(c.bulk_timeout(100), Duration::from_secs(30 + 1000));
        assert!(c.bulk_timeout(u64::MAX) > Duration::from_secs(1 << 32));
        // A bulk call still ends, with the usual words, when it overruns.
        let c = Ceph::new("--conf /x/ceph.conf", Duration::from_millis(100)).unwrap();
        let e = c.run_bulk("sleep", &["30"], 0).unwrap_err();
        assert!(e.message().contains("did not answer"), "{e}");
    }

    #[test]
    fn a_call_that_hangs_is_cut_off_naming_the_cluster() {
        let c = Ceph::new("--conf /x/ceph.conf", Duration::from_millis(100)).unwrap();
        let t = std::time::Instant::now();
        let e = c.run("sleep", &["5"]).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(4));
        assert!(
            e.message().contains("/x/ceph.conf") && e.message().contains("did not answer"),
            "{e}"
        );
        let e = c
            .run(
                "sh",
                &[
                    "-c",
                    "echo 'rbd: error opening image x: (2) No such file or directory' >&2; exit 2",
                ],
            )
            .unwrap_err();
        assert_eq!(e.kind(), Kind::NotFound, "{e}");
    }
}
