//! Freezes that survive a group kill, and copies that get a filesystem of
//! their own: a snapshot killed with its whole process group (as
//! `timeout`, cron and CI kill) never leaves its source frozen, and a copy
//! or a volume made from a snapshot mounts beside its source with a fresh
//! filesystem UUID.

use crate::common::*;
use crate::require_root;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Whether a file can be created in `dir` within `bound`. The write runs
/// in a child process, so a frozen filesystem blocks that child and not
/// the test; when it does not finish, the filesystem is thawed by hand so
/// that no freeze outlives a failed test.
fn write_completes(dir: &Path, mount_point: &Path, bound: Duration) -> bool {
    let mut child = Command::new("sh")
        .args(["-c", "echo x > \"$1\"", "sh"])
        .arg(dir.join("probe"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + bound;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.success();
        }
        if Instant::now() > deadline {
            let _ = Command::new("fsfreeze").arg("-u").arg(mount_point).status();
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The processes holding `path` itself open (a freeze guard holds the
/// mount point it guards).
fn holders(path: &Path) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        if fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l == path))
        {
            out.push(pid);
        }
    }
    out
}

/// `rexray snapshot create` as the leader of its own process group, killed
/// with the whole group (SIGKILL) at varying moments, over and over: after
/// every kill the source takes writes (it is not frozen) and no freeze
/// guard is left behind.
#[test]
fn a_group_kill_never_leaves_the_source_frozen() {
    require_root!();
    let h = Home::new();
    h.rexray(&["volume", "create", "v", "--size", "1"]).ok();
    h.rexray(&["volume", "mount", "v"]).ok();
    let mp = h.mount_point("v");
    let data = h.data("v");
    std::fs::write(data.join("token"), "t").unwrap();
    // How long a whole snapshot takes here: the kills are spread over it,
    // most of them around the freeze.
    let t0 = Instant::now();
    h.rexray(&["snapshot", "create", "v", "first"]).ok();
    let whole = t0.elapsed().max(Duration::from_millis(5));
    let start = Instant::now();
    let mut runs = 0;
    let mut snapshots = 0;
    for i in 0..300u32 {
        if start.elapsed() > Duration::from_secs(60) && runs >= 150 {
            break;
        }
        // A spread of delays over the whole run, in a fixed order.
        let frac = f64::from((i * 7919) % 1000) / 1000.0;
        let delay = whole.mul_f64(frac);
        let mut child = h
            .command("rexray")
            .args(["snapshot", "create", "v", &format!("s{i}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
        std::thread::sleep(delay);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let status = child.wait().unwrap();
        if status.success() {
            snapshots += 1;
        }
        runs += 1;
        assert!(
            write_completes(&data, &mp, Duration::from_secs(20)),
            "run {i} (killed after {delay:?}): the source stayed frozen"
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = holders(&mp);
            if left.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "run {i}: processes {left:?} still hold the mount point"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    println!("{runs} group kills, {snapshots} snapshots finished first");
    assert_eq!(std::fs::read_to_string(data.join("token")).unwrap(), "t");
    h.rexray(&["volume", "unmount", "v"]).ok();
    assert!(h.mounts().is_empty() && h.loops().is_empty());
}
