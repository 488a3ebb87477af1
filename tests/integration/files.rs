//! Files and directories the tools make: their modes (no volume's data,
//! record or log readable by other users), no write through a link
//! planted where a file goes, and temporary files of killed writers swept
//! without ever taking a live writer's.

use crate::common::*;
use crate::docker::{post, Service};
use crate::require_root;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const NOBODY: u32 = 65534;

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

fn chmod(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
}

/// Run `cmd` for at most `secs`; a process still running then is killed
/// (by its pid: it is our child) and reported as exit code -9.
fn bounded(cmd: &mut std::process::Command, secs: u64) -> Out {
    use std::io::Read;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(secs);
    let code = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break -9;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (mut stdout, mut stderr) = (String::new(), String::new());
    let _ = child.stdout.take().unwrap().read_to_string(&mut stdout);
    let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
    Out {
        code,
        stdout,
        stderr,
    }
}

/// Every path under `dir` (not `dir` itself), not descending into mounts.
fn walk(dir: &Path, mounts: &[PathBuf], out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        out.push(p.clone());
        let ft = e.file_type().unwrap();
        if ft.is_dir() && !mounts.contains(&p) {
            walk(&p, mounts, out);
        }
    }
}

/// A victim file outside every directory the tools use.
fn victim(h: &Home) -> PathBuf {
    let v = h.dir.join("victim");
    std::fs::write(&v, b"precious\n").unwrap();
    v
}

fn unchanged(v: &Path) {
    assert_eq!(std::fs::read(v).unwrap(), b"precious\n", "{}", v.display());
}

// ---------------------------------------------------------------- modes

/// Every file and directory a create, mount, snapshot, copy, service
/// start (foreground and -d), flexrex and dvdcli run make under
/// REXRAY_HOME is private to root, except what other users must reach:
/// each exception is named below with its reason.
#[test]
fn every_file_and_directory_the_tools_make_is_private() {
    require_root!();
    let h = Home::new();
    let (host, sock) = unix_host(&h);
    let kubelet = h.dir.join("kubelet");
    let flexrex = kubelet.join("rexray~flexrex/flexrex");
    h.rexray(&["volume", "create", "v", "--size", "1"]).ok();
    h.rexray(&["volume", "mount", "v"]).ok();
    std::fs::write(h.data("v").join("f"), b"x").unwrap();
    h.rexray(&["snapshot", "create", "v", "s1"]).ok();
    {
        let svc = Service::start(&h, &host, &[]);
        let r = post(
            &sock,
            "/VolumeDriver.Create",
            r#"{"Name":"c","Opts":{"volumeName":"v"}}"#,
        );
        assert_eq!(r.0, 200, "{r:?} {}", svc.log_text());
    }
    let d = run_cmd(
        h.command("rexray")
            .env("REXRAY_MODULES_DEFAULT_DOCKER_HOST", &host)
            .args(["service", "start", "-d"]),
    );
    d.ok();
    h.rexray(&["service", "stop"]).ok();
    let f = h.run("flexrex", &["init"]);
    assert!(f.stdout.contains("Success"), "{f:#?}");
    // A failure is logged (warn): that makes flexrex's log file.
    let f = h.run("flexrex", &["getvolumename", "{bad"]);
    assert!(f.stdout.contains("Failure"), "{f:#?}");
    let flex_path = flexrex.to_string_lossy().into_owned();
    h.rexray(&["flexrex", "install", "--path", &flex_path]).ok();
    h.run(
        "dvdcli",
        &["mount", "--volumedriver=rexray", "--volumename=c"],
    )
    .ok();
    h.run(
        "dvdcli",
        &["unmount", "--volumedriver=rexray", "--volumename=c"],
    )
    .ok();
    h.rexray(&["volume", "unmount", "v"]).ok();
    assert!(h.mounts().is_empty(), "{:?}", h.mounts());

    let lib = h.lib();
    let mut all = Vec::new();
    walk(&h.dir, &[], &mut all);
    let mut seen_image = 0;
    for p in &all {
        let rel = p.strip_prefix(&h.dir).unwrap();
        let m = std::fs::symlink_metadata(p).unwrap();
        let got = m.mode() & 0o7777;
        assert_eq!(
            got & 0o002,
            0,
            "{} is world-writable ({got:04o})",
            p.display()
        );
        let want: Option<u32> = if rel.starts_with("etc") || rel == Path::new("service.log") {
            // Made by this test (config file, the service's stderr).
            None
        } else if rel == Path::new("var") {
            // Stands for /var: made like `mkdir -p` (0755), as the
            // system's own is.
            Some(0o755)
        } else if *p == lib {
            // <lib> holds the mount path: applications pass through it
            // (o+x) but cannot list it.
            Some(0o711)
        } else if p.starts_with(lib.join("volumes")) {
            // The mount path and the mount points: applications use the
            // volumes there.
            Some(0o755)
        } else if *p == sock {
            // The Docker plugin socket: root and the socket's group.
            Some(0o660)
        } else if p.starts_with(&kubelet) {
            // kubelet's plugin directory and the driver program: nothing
            // secret, made like any installed program.
            Some(0o755)
        } else if m.is_dir() {
            Some(0o700)
        } else {
            Some(0o600)
        };
        if rel.extension().is_some_and(|e| e == "img") {
            seen_image += 1;
        }
        if let Some(want) = want {
            assert_eq!(got, want, "{}: {got:04o}, want {want:04o}", p.display());
        }
    }
    // Volumes v and c, the snapshot: all checked.
    assert!(seen_image >= 3, "{all:#?}");
    for must in ["var/log/rexray.log", "var/log/flexrex.log", "var/lib/locks"] {
        assert!(h.dir.join(must).exists(), "{must} was not made: {all:#?}");
    }

    // What that means for another local user: with every directory
    // above REXRAY_HOME open (as / and /var are), nobody reads no image.
    chmod(&h.dir, 0o755);
    for img in all
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "img"))
    {
        let o = run_cmd(
            std::process::Command::new("/bin/grep")
                .args(["-c", "x"])
                .arg(img)
                .uid(NOBODY)
                .gid(NOBODY),
        );
        assert_eq!(o.code, 2, "nobody read {}: {o:#?}", img.display());
        assert!(o.stderr.contains("Permission denied"), "{o:#?}");
    }
    // ... but reaches its volume's mount point.
    h.rexray(&["volume", "mount", "v"]).ok();
    let o = run_cmd(
        std::process::Command::new("/bin/ls")
            .arg(h.mount_point("v"))
            .uid(NOBODY)
            .gid(NOBODY),
    );
    assert_eq!(o.code, 0, "{o:#?}");
    h.rexray(&["volume", "unmount", "v"]).ok();
}

/// A state made with looser modes (by an earlier version, or by hand) is
/// corrected at the next start, and the log says what changed.
#[test]
fn loose_modes_are_corrected_and_logged() {
    require_root!();
    let h = Home::new();
    h.rexray(&["volume", "create", "v", "--size", "1"]).ok();
    let loop_dir = h.lib().join("loop");
    let img = std::fs::read_dir(&loop_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "img"))
        .unwrap();
    chmod(&h.lib(), 0o755);
    chmod(&loop_dir, 0o755);
    chmod(&h.lib().join("locks"), 0o777);
    chmod(&img, 0o644);
    let o = h.rexray(&["volume", "ls"]);
    o.ok();
    for (p, old, new) in [
        (loop_dir.clone(), "0755", "0700"),
        (h.lib().join("locks"), "0777", "0700"),
        (h.lib(), "0755", "0711"),
    ] {
        let line = format!("changed the mode of {} from {old} to {new}", p.display());
        assert!(o.stderr.contains(&line), "{line}: {o:#?}");
    }
    assert_eq!(mode(&loop_dir), 0o700);
    assert_eq!(mode(&h.lib().join("locks")), 0o700);
    assert_eq!(mode(&h.lib()), 0o711);
    // The image at its next attach (and at the service's start).
    let o = h.rexray(&["volume", "mount", "v"]);
    o.ok();
    assert_eq!(mode(&img), 0o600);
    let line = format!("changed the mode of {} from 0644 to 0600", img.display());
    assert!(o.stderr.contains(&line), "{line}: {o:#?}");
    h.rexray(&["volume", "unmount", "v"]).ok();
    chmod(&img, 0o640);
    let (host, _) = unix_host(&h);
    let svc = Service::start(&h, &host, &[]);
    assert_eq!(mode(&img), 0o600, "{}", svc.log_text());
}

// ---------------------------------------------------------------- no-follow

/// `<run>/rexray.pid` planted as a link to a victim, or as a second name
/// of it: the service refuses to start and the victim keeps its bytes.
#[test]
fn the_pid_file_is_never_written_through_a_link() {
    require_root!();
    let h = Home::new();
    let v = victim(&h);
    let run = h.dir.join("var/run");
    std::fs::create_dir_all(&run).unwrap();
    chmod(&run, 0o700);
    let (host, sock) = unix_host(&h);
    for how in ["symlink", "hard link"] {
        let pid = run.join("rexray.pid");
        let _ = std::fs::remove_file(&pid);
        if how == "symlink" {
            std::os::unix::fs::symlink(&v, &pid).unwrap();
        } else {
            std::fs::hard_link(&v, &pid).unwrap();
        }
        let o = bounded(
            h.command("rexray")
                .env("REXRAY_MODULES_DEFAULT_DOCKER_HOST", &host)
                .args(["service", "start"]),
            30,
        );
        unchanged(&v);
        assert_eq!(o.code, 1, "{how}: {o:#?}");
        let want = if how == "symlink" {
            "rexray.pid is a symbolic link; refusing to write the pid file through it"
        } else {
            "refusing to write the pid file there"
        };
        assert!(o.stderr.contains(want), "{how}: {o:#?}");
        assert!(!sock.exists(), "{how}: it served");
    }
    // <run> itself a link to another directory: refused as well.
    std::fs::remove_dir_all(&run).unwrap();
    let elsewhere = h.dir.join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &run).unwrap();
    let o = bounded(
        h.command("rexray")
            .env("REXRAY_MODULES_DEFAULT_DOCKER_HOST", &host)
            .args(["service", "start"]),
        30,
    );
    assert_eq!(o.code, 1, "{o:#?}");
    assert!(o.stderr.contains("is a symbolic link"), "{o:#?}");
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
}

/// Log files (`rexray service start -d`'s and flexrex's) planted as links:
/// the service refuses with a clear error, flexrex answers as usual and
/// logs nowhere (its stderr is part of its reply); the victim is intact.
#[test]
fn log_files_are_never_written_through_a_link() {
    require_root!();
    let h = Home::new().with_env("REXRAY_LOGLEVEL", "debug");
    let v = victim(&h);
    let log = h.dir.join("var/log");
    std::fs::create_dir_all(&log).unwrap();
    std::os::unix::fs::symlink(&v, log.join("rexray.log")).unwrap();
    std::os::unix::fs::symlink(&v, log.join("flexrex.log")).unwrap();
    let (host, _) = unix_host(&h);
    let o = bounded(
        h.command("rexray")
            .env("REXRAY_MODULES_DEFAULT_DOCKER_HOST", host)
            .args(["service", "start", "-d"]),
        60,
    );
    // Whatever happened, no service is left running.
    let _ = h.rexray(&["service", "stop"]);
    unchanged(&v);
    assert_eq!(o.code, 1, "{o:#?}");
    assert!(
        o.stderr
            .contains("rexray.log is a symbolic link; refusing to write the log file through it"),
        "{o:#?}"
    );
    let f = h.run("flexrex", &["init"]);
    assert!(f.stdout.contains("Success"), "{f:#?}");
    // A failure is logged (warn): that makes flexrex's log file.
    let f = h.run("flexrex", &["getvolumename", "{bad"]);
    assert!(f.stdout.contains("Failure"), "{f:#?}");
    assert_eq!(f.stderr, "");
    unchanged(&v);
}

/// Man pages written over a planted link, and `flexrex install` finding
/// its target as a link to an identical but non-executable file: neither
/// writes nor chmods through the link.
#[test]
fn man_pages_and_the_flexrex_install_never_follow_a_link() {
    require_root!();
    let h = Home::new();
    let v = victim(&h);
    let man = h.dir.join("man1");
    std::fs::create_dir(&man).unwrap();
    std::os::unix::fs::symlink(&v, man.join("rexray.1")).unwrap();
    h.rexray(&["man", &man.to_string_lossy()]).ok();
    unchanged(&v);
    assert!(!std::fs::symlink_metadata(man.join("rexray.1"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(mode(&man.join("rexray.1")), 0o644);

    let copy = h.dir.join("flexrex-copy");
    std::fs::copy(bin("flexrex"), &copy).unwrap();
    chmod(&copy, 0o600);
    let target = h.dir.join("kubelet/rexray~flexrex/flexrex");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&copy, &target).unwrap();
    h.rexray(&["flexrex", "install", "--path", &target.to_string_lossy()])
        .ok();
    assert_eq!(mode(&copy), 0o600, "chmod went through the link");
    // Replacing it (--force) replaces the link, never its target.
    std::fs::remove_file(&target).unwrap();
    std::os::unix::fs::symlink(&v, &target).unwrap();
    h.rexray(&[
        "flexrex",
        "install",
        "--force",
        "--path",
        &target.to_string_lossy(),
    ])
    .ok();
    unchanged(&v);
    assert!(std::fs::symlink_metadata(&target).unwrap().is_file());
}

/// Files the service replaces (rexray.url, the Docker spec file) planted
/// as links: the link is replaced, its target never written.
#[test]
fn the_url_and_spec_files_replace_a_link_not_its_target() {
    require_root!();
    let h = Home::new();
    let v = victim(&h);
    let run = h.dir.join("var/run");
    std::fs::create_dir_all(&run).unwrap();
    std::os::unix::fs::symlink(&v, run.join("rexray.url")).unwrap();
    let spec = h.dir.join("plugins/rexray.spec");
    std::fs::create_dir_all(spec.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&v, &spec).unwrap();
    // Started by hand: the test harness's Service clears a stale url file.
    let mut child = h
        .command("rexray")
        .env("REXRAY_MODULES_DEFAULT_DOCKER_HOST", "tcp://127.0.0.1:0")
        .env("REXRAY_MODULES_DEFAULT_DOCKER_SPEC", &spec)
        .args(["service", "start"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let regular = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file());
    while !(regular(&run.join("rexray.url")) && regular(&spec)) {
        assert!(child.try_wait().unwrap().is_none(), "the service exited");
        assert!(Instant::now() < deadline, "the service did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    unchanged(&v);
    for f in [run.join("rexray.url"), spec.clone()] {
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    unchanged(&v);
}

/// The mount path planted as a link to another directory: nothing is
/// mounted through it.
#[test]
fn the_mount_path_and_driver_subdirectories_are_never_links() {
    require_root!();
    let h = Home::new();
    h.rexray(&["volume", "create", "v", "--size", "1"]).ok();
    let elsewhere = h.dir.join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let volumes = h.lib().join("volumes");
    let _ = std::fs::remove_dir_all(&volumes);
    std::os::unix::fs::symlink(&elsewhere, &volumes).unwrap();
    let o = h.rexray(&["volume", "mount", "v"]);
    assert_eq!(o.code, 1, "{o:#?}");
    assert!(
        o.stderr
            .contains(&format!("{} is a symbolic link", volumes.display())),
        "{o:#?}"
    );
    assert!(h.mounts().is_empty() && h.loops().is_empty());
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    std::fs::remove_file(&volumes).unwrap();
    // The loop driver's locks directory.
    let locks = h.lib().join("loop/locks");
    std::fs::remove_dir_all(&locks).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &locks).unwrap();
    let o = h.rexray(&["volume", "mount", "v"]);
    assert_eq!(o.code, 1, "{o:#?}");
    assert!(o.stderr.contains("is a symbolic link"), "{o:#?}");
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    assert!(h.mounts().is_empty() && h.loops().is_empty());
}

// ---------------------------------------------------------------- sweeps

#[cfg(feature = "failpoints")]
fn temporaries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with('.') && n.contains(".tmp.")
        })
        .collect();
    v.sort();
    v
}

/// A temporary file as a live writer holds it: new, and flocked.
#[cfg(feature = "failpoints")]
fn live_writer(p: &Path) -> std::fs::File {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(p)
        .unwrap();
    // SAFETY: flock on a descriptor we own.
    assert_eq!(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) }, 0);
    f
}

/// A writer killed after writing its temporary file leaves it; the next
/// create (loop directory) and the service's start (state directory)
/// remove it, while a live writer's temporary file is left alone.
#[cfg(feature = "failpoints")]
#[test]
fn temporary_files_of_killed_writers_are_swept_and_live_ones_kept() {
    require_root!();
    let h = Home::new();
    h.rexray(&["volume", "create", "v", "--size", "1"]).ok();
    let loop_dir = h.lib().join("loop");
    let o = run_cmd(
        h.command("rexray")
            .env("FAILPOINTS", "atomic::before-rename=return")
            .args(["volume", "mount", "v"]),
    );
    assert_eq!(o.code, -1, "not killed: {o:#?}");
    // Killed at the holder record, the first write of a mount.
    let owners = loop_dir.join("owners");
    let dead = temporaries(&owners);
    assert_eq!(dead.len(), 1, "{dead:?}");
    // A live writer (this process) holds its own temporary file.
    let live = loop_dir.join(".catalog.json.tmp.1.live");
    let held = live_writer(&live);
    h.rexray(&["volume", "create", "x", "--size", "1"]).ok();
    assert!(temporaries(&loop_dir).contains(&live));
    drop(held);

    // A mount killed at its record's write (the second atomic write: the
    // holder record, then the mount record).
    let o = run_cmd(
        h.command("rexray")
            .env("FAILPOINTS", "atomic::before-rename=1*off->return")
            .args(["volume", "mount", "v"]),
    );
    assert_eq!(o.code, -1, "not killed: {o:#?}");
    let mounts = h.lib().join("mounts");
    assert_eq!(temporaries(&mounts).len(), 1);
    let live2 = mounts.join(".x.json.tmp.1.live");
    let held2 = live_writer(&live2);
    let (host, _) = unix_host(&h);
    let svc = Service::start(&h, &host, &[]);
    assert_eq!(
        temporaries(&mounts),
        vec![live2.clone()],
        "{}",
        svc.log_text()
    );
    // The loop directory's dead one went too.
    assert_eq!(temporaries(&loop_dir), Vec::<PathBuf>::new());
    assert_eq!(temporaries(&owners), Vec::<PathBuf>::new());
    assert!(svc
        .log_text()
        .contains("removed a temporary file a killed process left behind"));
    drop(held2);
    drop(svc);
}
