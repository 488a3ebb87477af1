//! The Docker endpoint with one volume stuck: the requests for it wait
//! their turn without taking the threads every other volume needs, and
//! all complete once it is free.

use crate::common::*;
use crate::docker::{mount_record, ok, post, sigterm, Service};
use crate::require_root;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Generous bound for a request that must not wait for the stuck volume.
const PROMPT: Duration = Duration::from_secs(60);

/// `post` on a thread, answered within `PROMPT` or the test fails.
#[track_caller]
fn post_within(sock: &Path, path: &str, body: &str, why: &str) -> serde_json::Value {
    let (p, b) = (path.to_string(), body.to_string());
    let what = format!("{path} {body}");
    within_named(move |s| post(s, &p, &b), sock, &what, why)
}

/// [`unmount`] on a thread, answered within `PROMPT` or the test fails.
#[track_caller]
fn unmount_within(sock: &Path, body: &str, why: &str) -> serde_json::Value {
    let b = body.to_string();
    let what = format!("/VolumeDriver.Unmount {body}");
    within_named(move |s| unmount(s, &b), sock, &what, why)
}

#[track_caller]
fn within_named<F>(call: F, sock: &Path, what: &str, why: &str) -> serde_json::Value
where
    F: FnOnce(&Path) -> (u16, serde_json::Value) + Send + 'static,
{
    let (tx, rx) = mpsc::channel();
    let s = sock.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(call(&s));
    });
    match rx.recv_timeout(PROMPT) {
        Ok(r) => ok(r),
        Err(_) => panic!(
            "{what} waited over {} s behind the stuck requests: {why}",
            PROMPT.as_secs()
        ),
    }
}

/// Sockets the process `pid` has open.
fn sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .map(|l| l.to_string_lossy().starts_with("socket:"))
                        .unwrap_or(false)
                })
                .count()
        })
        .unwrap_or(0)
}

/// Unmount, again while the kernel defers the detach of a device
/// something else on the machine has open for a moment (a probe by
/// another program).
fn unmount(sock: &Path, body: &str) -> (u16, serde_json::Value) {
    let deadline = Instant::now() + PROMPT;
    loop {
        let r = post(sock, "/VolumeDriver.Unmount", body);
        let deferred = r.1["Err"]
            .as_str()
            .is_some_and(|e| e.contains("it will detach when released"));
        if !deferred || Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Hold the lock file `p` as a stuck operation would, until dropped.
fn hold(p: &Path) -> nix::fcntl::Flock<std::fs::File> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(p)
        .unwrap();
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).unwrap()
}

/// Hold volume `name`'s lock, as an operation that never ends would.
fn hold_volume(home: &Home, name: &str) -> nix::fcntl::Flock<std::fs::File> {
    let id = home
        .volumes()
        .lookup(rexray::volume::VolumeRef::Name(name))
        .unwrap()
        .unwrap()
        .id;
    hold(&home.lib().join("locks").join(format!("{id}.lock")))
}

/// Wait until `n` requests have reached the service (its sockets: theirs
/// and the listener).
fn arrived(svc: &Service, n: usize) {
    let deadline = Instant::now() + PROMPT;
    while sockets(svc.pid()) < n + 1 {
        assert!(
            Instant::now() < deadline,
            "the requests did not reach the service ({} of {n} sockets): {}",
            sockets(svc.pid()),
            svc.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
}

#[test]
fn a_stuck_volume_holds_up_no_other_request() {
    require_root!();
    let home = Home::new();
    let (host, sock) = unix_host(&home);
    let mut svc = Service::start(&home, &host, &[]);
    for n in ["stuck", "other"] {
        ok(post(
            &sock,
            "/VolumeDriver.Create",
            &format!(r#"{{"Name":"{n}"}}"#),
        ));
    }
    ok(post(
        &sock,
        "/VolumeDriver.Mount",
        r#"{"Name":"other","ID":"o1"}"#,
    ));

    // An operation that never ends holds the stuck volume's lock (an
    // operator's command on a hung device, say).
    let held = hold_volume(&home, "stuck");

    // Twice as many mounts of it as the service has threads for blocking
    // work; a quarter of them a second time (dockerd retrying).
    let n = 2 * rexray::docker::server::WORKERS;
    let consumers = n * 3 / 4;
    let (tx, rx) = mpsc::channel();
    for i in 0..n {
        let (tx, s) = (tx.clone(), sock.clone());
        let c = format!("c{}", i % consumers);
        std::thread::spawn(move || {
            let body = format!(r#"{{"Name":"stuck","ID":"{c}"}}"#);
            let _ = tx.send((c, post(&s, "/VolumeDriver.Mount", &body)));
        });
    }
    drop(tx);
    arrived(&svc, n);

    // Other volumes are served meanwhile, mounts and creates included.
    let why = "requests for one volume must queue before they take a thread";
    let other = post_within(
        &sock,
        "/VolumeDriver.Mount",
        r#"{"Name":"other","ID":"o2"}"#,
        why,
    );
    assert_eq!(other["Mountpoint"], home.data("other").to_str().unwrap());
    let path = post_within(&sock, "/VolumeDriver.Path", r#"{"Name":"other"}"#, why);
    assert_eq!(path["Mountpoint"], other["Mountpoint"]);
    post_within(&sock, "/VolumeDriver.Create", r#"{"Name":"fresh"}"#, why);
    post_within(&sock, "/VolumeDriver.Remove", r#"{"Name":"fresh"}"#, why);
    for c in ["o1", "o2"] {
        unmount_within(&sock, &format!(r#"{{"Name":"other","ID":"{c}"}}"#), why);
    }
    let got = post_within(&sock, "/VolumeDriver.Get", r#"{"Name":"stuck"}"#, why);
    assert!(got["Volume"].get("Mountpoint").is_none(), "{got}");
    assert!(
        rx.try_recv().is_err(),
        "a mount of the stuck volume finished"
    );

    // Once the volume is free, every queued mount completes.
    drop(held);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..n {
        let (c, r) = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("a queued mount never answered: {}", svc.log_text()));
        assert_eq!(
            ok(r)["Mountpoint"],
            home.data("stuck").to_str().unwrap(),
            "{c}"
        );
        seen.insert(c);
    }
    assert_eq!(seen.len(), consumers);
    assert_eq!(count_mounts_at(&home.mount_point("stuck")), 1);
    let rec = mount_record(&home);
    assert_eq!(rec.len(), 1, "{rec:?}");
    assert_eq!(
        rec[0]["consumers"].as_array().map(Vec::len),
        Some(consumers),
        "{rec:?}"
    );

    // And so do as many unmounts at once.
    let threads: Vec<_> = seen
        .iter()
        .map(|c| {
            let (s, body) = (sock.clone(), format!(r#"{{"Name":"stuck","ID":"{c}"}}"#));
            std::thread::spawn(move || unmount(&s, &body))
        })
        .collect();
    for t in threads {
        ok(t.join().unwrap());
    }
    assert_eq!(count_mounts_at(&home.mount_point("stuck")), 0);
    assert!(mount_record(&home).is_empty());
    assert_eq!(svc.stop(), Some(0), "{}", svc.log_text());
    assert!(home.mounts().is_empty() && home.loops().is_empty());
}

#[test]
fn a_stuck_name_table_leaves_threads_for_mounts() {
    require_root!();
    let home = Home::new();
    let (host, sock) = unix_host(&home);
    let mut svc = Service::start(&home, &host, &[]);
    ok(post(&sock, "/VolumeDriver.Create", r#"{"Name":"other"}"#));
    // Something holds the name table: every Create and Remove waits.
    let held = hold(&home.lib().join("locks/names.lock"));
    let n = 2 * rexray::docker::server::WORKERS;
    let (tx, rx) = mpsc::channel();
    for i in 0..n {
        let (tx, s) = (tx.clone(), sock.clone());
        std::thread::spawn(move || {
            let body = format!(r#"{{"Name":"n{i}"}}"#);
            let _ = tx.send(post(&s, "/VolumeDriver.Create", &body));
        });
    }
    drop(tx);
    arrived(&svc, n);
    let why = "the creates waiting for the name table must leave threads to mounts";
    let m = post_within(
        &sock,
        "/VolumeDriver.Mount",
        r#"{"Name":"other","ID":"o"}"#,
        why,
    );
    assert_eq!(m["Mountpoint"], home.data("other").to_str().unwrap());
    unmount_within(&sock, r#"{"Name":"other","ID":"o"}"#, why);
    assert!(rx.try_recv().is_err(), "a create finished");
    drop(held);
    for _ in 0..n {
        let r = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("a queued create never answered: {}", svc.log_text()));
        ok(r);
    }
    assert_eq!(home.volumes().list().unwrap().len(), n + 1);
    assert_eq!(svc.stop(), Some(0), "{}", svc.log_text());
    assert!(home.mounts().is_empty() && home.loops().is_empty());
}

/// A stop while a request waits on a stuck volume: new connections are
/// refused at once (dockerd is told, not left waiting for an answer that
/// will not come), the request in flight may finish, and the same signal
/// again ends the service at once.
#[test]
fn a_stop_refuses_new_connections_and_a_second_signal_ends_it() {
    require_root!();
    use std::io::{Read, Write};
    let home = Home::new();
    let (host, sock) = unix_host(&home);
    let mut svc = Service::start(&home, &host, &[]);
    ok(post(&sock, "/VolumeDriver.Create", r#"{"Name":"stuck"}"#));
    let held = hold_volume(&home, "stuck");
    let s = sock.clone();
    let waiting = std::thread::spawn(move || {
        let mut c = std::os::unix::net::UnixStream::connect(&s).unwrap();
        c.set_read_timeout(Some(PROMPT)).unwrap();
        let body = r#"{"Name":"stuck","ID":"w"}"#;
        let _ = write!(
            c,
            "POST /VolumeDriver.Mount HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut got = Vec::new();
        let _ = c.read_to_end(&mut got);
    });
    arrived(&svc, 1);
    sigterm(svc.pid());
    // Within a bound, a new client is refused (or closed unanswered),
    // never left hanging.
    let deadline = Instant::now() + PROMPT;
    loop {
        let Ok(mut c) = std::os::unix::net::UnixStream::connect(&sock) else {
            break;
        };
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = c.write_all(
            b"POST /VolumeDriver.List HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
        );
        let mut buf = [0u8; 64];
        match c.read(&mut buf) {
            Ok(0) => break,
            Err(e)
                if e.kind() != std::io::ErrorKind::WouldBlock
                    && e.kind() != std::io::ErrorKind::TimedOut =>
            {
                break
            }
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "new connections still served or left waiting after the stop: {}",
            svc.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The request in flight holds the stop...
    assert_eq!(svc.exits_within(Duration::from_millis(300)), None);
    // ... until the signal comes again.
    sigterm(svc.pid());
    assert_eq!(
        svc.exits_within(Duration::from_secs(30)),
        Some(Some(128 + 15)),
        "{}",
        svc.log_text()
    );
    assert!(
        svc.log_text().contains("again: stopping now"),
        "{}",
        svc.log_text()
    );
    drop(held);
    waiting.join().unwrap();
}

/// A Mount whose client gave up while it waited for a stuck volume
/// (dockerd's request timed out): dockerd counts it as failed and never
/// sends its Unmount, so once the volume is free the mount is undone, not
/// recorded for a consumer nobody will release.
#[test]
fn a_mount_whose_client_left_is_undone() {
    require_root!();
    use std::io::Write;
    let home = Home::new();
    let (host, sock) = unix_host(&home);
    let svc = Service::start(&home, &host, &[]);
    ok(post(&sock, "/VolumeDriver.Create", r#"{"Name":"left"}"#));
    let held = hold_volume(&home, "left");
    {
        let mut c = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        let body = r#"{"Name":"left","ID":"c0"}"#;
        write!(
            c,
            "POST /VolumeDriver.Mount HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        arrived(&svc, 1);
        // The client gives up and goes.
    }
    std::thread::sleep(Duration::from_millis(300));
    drop(held);
    let deadline = Instant::now() + PROMPT;
    while !svc
        .log_text()
        .contains("left before its Mount was answered")
    {
        assert!(Instant::now() < deadline, "{}", svc.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(svc.log_text().contains("): undone"), "{}", svc.log_text());
    assert!(
        mount_record(&home)
            .iter()
            .all(|r| r["consumers"].as_array().is_none_or(|a| a.is_empty())),
        "{:?}",
        mount_record(&home)
    );
    assert_eq!(count_mounts_at(&home.mount_point("left")), 0);
    ok(post(&sock, "/VolumeDriver.Remove", r#"{"Name":"left"}"#));
}
