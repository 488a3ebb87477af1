//! Running external tools: absolute path from `which`, fixed argv (no
//! shell), stdin from /dev/null, output captured, and a hard time limit.

use crate::{Error, Result};
use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
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
    let mut cmd = command_at(&path);
    cmd.args(args);
    match output_within(cmd, timeout) {
        Ok(Some(out)) => Ok(out),
        Ok(None) => Err(Error::system(format!(
            "{} did not finish within {} and was stopped",
            path.display(),
            humantime::format_duration(timeout)
        ))),
        Err(e) => Err(Error::from_io(format!("running {}", path.display()), &e)),
    }
}

/// Run a prepared command with its stdout and stderr captured, waiting at
/// most `timeout` for it to exit: `Ok(None)` when it ran past that and was
/// killed. The exit is noticed at once (no polling), and the child is
/// never reaped before it is killed, so the kill cannot reach another
/// process that was given its pid. An error: it could not be started.
pub fn output_within(mut cmd: Command, timeout: Duration) -> std::io::Result<Option<Output>> {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let out_t = drain(child.stdout.take());
    let err_t = drain(child.stderr.take());
    let status = wait_within(&mut child, timeout)?;
    // The tool is gone; a process it started may still hold its output
    // open (a daemon that kept the pipe): wait a little for the rest,
    // then answer with what came, rather than for as long as it lives.
    let until = std::time::Instant::now() + OUTPUT_WAIT;
    let (stdout, stderr) = (out_t.until(until), err_t.until(until));
    Ok(status.map(|status| Output {
        status,
        stdout,
        stderr,
    }))
}

/// Wait at most `timeout` for `child` to exit, else kill it: `Ok(None)`
/// when it was killed. Either way it is reaped. The exit is noticed at
/// once (no polling), and the child is not reaped before the kill, so the
/// kill cannot reach another process given its pid.
pub fn wait_within(child: &mut Child, timeout: Duration) -> std::io::Result<Option<ExitStatus>> {
    use nix::sys::wait::{waitid, Id, WaitPidFlag};
    if let Some(st) = child.try_wait()? {
        return Ok(Some(st));
    }
    let deadline = std::time::Instant::now() + timeout;
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // WNOWAIT: told of the exit, the child stays a zombie (its pid
        // ours) until `child.wait()` below reaps it.
        let r = loop {
            match waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
                Err(nix::errno::Errno::EINTR) => continue,
                r => break r.is_ok(),
            }
        };
        let _ = tx.send(r);
    });
    let timed_out = match rx.recv_timeout(timeout) {
        Ok(true) => false,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => true,
        // The exit could not be waited for that way (SIGCHLD ignored,
        // say): asked every 10 ms until the bound.
        _ => loop {
            if child.try_wait()?.is_some() {
                break false;
            }
            if std::time::Instant::now() >= deadline {
                break true;
            }
            std::thread::sleep(Duration::from_millis(10));
        },
    };
    if timed_out {
        let _ = child.kill();
        // A tool stuck in the kernel (writing to a frozen filesystem, a
        // hung device) does not end at once even then: it is waited for
        // a bound, then left to be reaped whenever it ends.
        let ended = match rx.recv_timeout(KILL_WAIT) {
            Ok(true) => true,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => false,
            _ => {
                let until = std::time::Instant::now() + KILL_WAIT;
                loop {
                    if child.try_wait()?.is_some() {
                        break true;
                    }
                    if std::time::Instant::now() >= until {
                        break false;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        };
        if !ended {
            tracing::warn!(pid = child.id(), "a command killed at its time limit has not ended {} s later (stuck in the kernel: a frozen filesystem or a hung device?); not waiting for it", KILL_WAIT.as_secs());
            std::thread::spawn(move || {
                let _ = nix::sys::wait::waitpid(pid, None);
            });
            return Ok(None);
        }
    }
    let status = child.wait()?;
    Ok((!timed_out).then_some(status))
}

/// How long a command killed at its time limit may take to end.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// How long the output of a tool that exited may still take to end.
const OUTPUT_WAIT: Duration = Duration::from_secs(5);

/// A tool's output stream, read in a thread of its own.
struct Drain {
    got: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    done: std::sync::mpsc::Receiver<()>,
}

impl Drain {
    /// What came, once the stream ended or by `until`.
    fn until(self, until: std::time::Instant) -> String {
        let wait = until.saturating_duration_since(std::time::Instant::now());
        if self.done.recv_timeout(wait).is_err() {
            tracing::warn!(
                "a process started by a tool still holds its output open; answering with what came by then"
            );
        }
        let got = self.got.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&got).into_owned()
    }
}

/// Read all of a tool's output stream in a thread of its own, so that a
/// full pipe never stalls the tool.
fn drain<R: Read + Send + 'static>(r: Option<R>) -> Drain {
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (tx, done) = std::sync::mpsc::channel();
    let sink = got.clone();
    std::thread::spawn(move || {
        if let Some(mut r) = r {
            let mut buf = [0u8; 8192];
            loop {
                match r.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => sink
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        }
        let _ = tx.send(());
    });
    Drain { got, done }
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

    #[test]
    fn the_exit_is_noticed_at_once_and_a_timeout_kills_and_reaps() {
        // A quick tool answers long before its bound (no polling step).
        let t = std::time::Instant::now();
        let o = output_within(
            command_at(&find("true", "coreutils").unwrap()),
            Duration::from_secs(30),
        )
        .unwrap()
        .unwrap();
        assert!(o.status.success());
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        // Past the bound: killed (not left to run for its 30 s).
        let mut c = command_at(&find("sh", "dash").unwrap());
        c.args(["-c", "echo started; exec sleep 30"]);
        let t = std::time::Instant::now();
        assert!(output_within(c, Duration::from_millis(200))
            .unwrap()
            .is_none());
        assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
        // A tool whose child keeps its output open: answered once the tool
        // exits (and a little wait), not when the child does (the child
        // waits for a file made only after the answer, then goes).
        let t = tempfile::tempdir().unwrap();
        let go = t.path().join("go");
        let mut c = command_at(&find("sh", "dash").unwrap());
        c.args([
            "-c",
            // (Bounded, and gone with the test's directory, should the
            // file be missed: no process outlives the test.)
            "echo first; (i=0; while [ ! -e \"$1\" ] && [ -d \"${1%/*}\" ] && [ $i -lt 600 ]; do i=$((i+1)); sleep 0.1; done) & echo second",
            "sh",
        ])
        .arg(&go);
        let o = output_within(c, Duration::from_secs(60)).unwrap().unwrap();
        std::fs::write(&go, b"").unwrap();
        assert!(o.status.success());
        assert_eq!(o.stdout, "first\nsecond\n");
        // A tool that fails to start is an error of its own.
        let e =
            output_within(Command::new("/nonexistent/tool"), Duration::from_secs(1)).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    }
}
