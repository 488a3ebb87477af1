//! Running external tools: absolute path from `which`, fixed argv (no
//! shell), stdin from /dev/null, output captured, and a hard time limit.

use crate::{Error, Result};
use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

/// What a finished command left behind.
#[derive(Debug)]
pub struct Output {
    /// Exit status.
    pub status: ExitStatus,
    /// Captured stdout.
    pub stdout: String,
    /// Captured stderr.
    pub stderr: String,
}

/// Where a tool lives, or an error that says which package brings it.
pub fn find(program: &str, package: &str) -> Result<PathBuf> {
    which::which(program).map_err(|_| {
        Error::system(format!(
            "{program} was not found in PATH: install it (Debian: apt-get install {package})"
        ))
    })
}

/// A command for the tool at `path` (absolute, from [`find`]): no shell,
/// stdin from /dev/null, the C locale. For tools that outlive the call or
/// whose output is read as it comes; [`run`] for the rest.
pub fn command_at(path: &Path) -> Command {
    let mut c = Command::new(path);
    c.stdin(Stdio::null()).env("LC_ALL", "C");
    c
}

/// Run `program` with `args`, killing it if it runs past `timeout`.
pub fn run<S: AsRef<OsStr>>(
    program: &str,
    package: &str,
    args: &[S],
    timeout: Duration,
) -> Result<Output> {
    let path = find(program, package)?;
    let mut child = command_at(&path)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::from_io(format!("starting {}", path.display()), &e))?;
    let out_t = drain(child.stdout.take());
    let err_t = drain(child.stderr.take());
    // Wait in a thread so the exit is noticed at once; on timeout the
    // child (ours, by pid) is killed and reaped by that thread.
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let status = match rx.recv_timeout(timeout) {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Err(Error::from_io(
                format!("waiting for {}", path.display()),
                &e,
            ))
        }
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            return Err(Error::system(format!(
                "{} did not finish within {} and was stopped",
                path.display(),
                humantime::format_duration(timeout)
            )));
        }
    };
    Ok(Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    })
}

/// Read all of a tool's output stream in a thread of its own, so that a
/// full pipe never stalls the tool.
fn drain<R: Read + Send + 'static>(r: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut s);
        }
        String::from_utf8_lossy(&s).into_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_and_times_out() {
        let o = run("echo", "coreutils", &["hi"], Duration::from_secs(5)).unwrap();
        assert!(o.status.success());
        assert_eq!(o.stdout, "hi\n");
        let e = run("sleep", "coreutils", &["5"], Duration::from_millis(100)).unwrap_err();
        assert!(e.to_string().contains("did not finish"), "{e}");
        let e = run("no-such-tool-x", "pkg-x", &["a"], Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("apt-get install pkg-x"), "{e}");
    }
}
