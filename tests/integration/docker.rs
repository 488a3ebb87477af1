//! `rexray service` as dockerd and Docker plugin clients use it: the HTTP
//! endpoints directly, the service's life cycle, and a real private
//! dockerd driving the plugin with the docker CLI.

use crate::common::*;
use crate::require_root;
use serde_json::{json, Value};
use std::io::{BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PATH_ENV: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub(crate) fn random_hex() -> String {
    let mut b = [0u8; 4];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut b)
        .unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub(crate) fn sigterm(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
}
pub(crate) fn sigkill(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}
fn alive(pid: u32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

/// One HTTP exchange over a unix socket: (status, parsed JSON body).
pub fn post(sock: &Path, path: &str, body: &str) -> (u16, Value) {
    let mut s = UnixStream::connect(sock).unwrap_or_else(|e| panic!("connect {sock:?}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: plugin\r\nAccept: application/vnd.docker.plugins.v1.2+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let (line, fields) = read_head(&mut r).unwrap();
    let status: u16 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_eq!(
        header(&fields, "content-type"),
        Some("application/vnd.docker.plugins.v1.2+json")
    );
    let mut rest = String::new();
    r.read_to_string(&mut rest).unwrap();
    let v: Value =
        serde_json::from_str(rest.trim()).unwrap_or_else(|e| panic!("reply {rest:?}: {e}"));
    (status, v)
}

/// Expect success and return the body.
#[track_caller]
pub(crate) fn ok(r: (u16, Value)) -> Value {
    assert_eq!(r.0, 200, "{r:?}");
    assert!(r.1.get("Err").is_none(), "{r:?}");
    r.1
}
/// Expect an error and return its message.
#[track_caller]
pub(crate) fn err(r: (u16, Value)) -> String {
    assert_ne!(r.0, 200, "{r:?}");
    r.1["Err"]
        .as_str()
        .unwrap_or_else(|| panic!("no Err in {r:?}"))
        .to_string()
}

/// A running `rexray service start`, stopped by its PID.
pub struct Service {
    child: Option<Child>,
    pub log: PathBuf,
    env: Vec<(String, String)>,
    home: PathBuf,
}

impl Service {
    /// Start the service for `home` listening on `host`, and wait until it
    /// answers (unix) or has written its spec file (tcp).
    pub fn start(home: &Home, host: &str, extra: &[(&str, &str)]) -> Service {
        let mut env: Vec<(String, String)> = vec![(
            "REXRAY_MODULES_DEFAULT_DOCKER_HOST".into(),
            host.to_string(),
        )];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut s = Service {
            child: None,
            log: home.dir.join("service.log"),
            env,
            home: home.dir.clone(),
        };
        s.spawn(home);
        s
    }

    fn spawn(&mut self, home: &Home) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut c = home.command("rexray");
        c.args(["service", "start", "-l", "debug"])
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        // A killed service's url may still be there: the new service
        // removes it before it writes its pid, so pid + url means ready.
        let mut child = c.spawn().expect("spawn rexray service");
        let pid_file = self.home.join("var/run/rexray.pid");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                panic!("service exited at start ({st}): {}", self.log_text());
            }
            let pid_ok = std::fs::read_to_string(&pid_file)
                .map(|p| p.trim() == child.id().to_string())
                .unwrap_or(false);
            let url_ok = std::fs::read_to_string(self.home.join("var/run/rexray.url")).is_ok();
            if pid_ok && url_ok {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "service not ready: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, wait (bounded), SIGKILL if it hangs; returns its exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        sigterm(child.id());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st.code();
            }
            if Instant::now() > deadline {
                sigkill(child.id());
                let _ = child.wait();
                panic!("service ignored SIGTERM for 30 s: {}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its exit code if it ends within `bound` (waiting, not signalling);
    /// `None` while it runs on.
    pub fn exits_within(&mut self, bound: Duration) -> Option<Option<i32>> {
        let child = self.child.as_mut().expect("running");
        let deadline = Instant::now() + bound;
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                self.child = None;
                return Some(st.code());
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait for a process that is dying by itself (a failpoint crash).
    pub fn wait_exit(&mut self) {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                sigkill(child.id());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Send `body` to `path` on `sock` while the service dies of a
    /// failpoint mid-request (the reply never comes), and wait for it to
    /// be gone.
    pub fn post_while_dying(&mut self, sock: &Path, path: &str, body: &str) {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let sock = sock.to_path_buf();
        let t = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
            let _ = s.write_all(request.as_bytes());
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf);
        });
        self.wait_exit();
        t.join().unwrap();
    }

    /// Stop and start again with the same settings.
    pub fn restart(&mut self, home: &Home) {
        assert_eq!(self.stop(), Some(0), "{}", self.log_text());
        self.spawn(home);
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            if alive(c.id()) {
                let _ = self.stop();
            }
        }
    }
}

/// A fresh plugin name for a private dockerd, and where that dockerd
/// finds the plugin's socket (`/run/docker/plugins/NAME.sock`): the
/// `docker.host` URL and the path.
pub(crate) fn plugin_socket() -> (String, String, PathBuf) {
    let name = format!("rexraytest-{}", random_hex());
    let sock = PathBuf::from(format!("/run/docker/plugins/{name}.sock"));
    (name, format!("unix://{}", sock.display()), sock)
}

pub(crate) fn mount_record(home: &Home) -> Vec<Value> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(home.lib().join("mounts")) {
        for e in rd.flatten() {
            if let Ok(b) = std::fs::read(e.path()) {
                if let Ok(v) = serde_json::from_slice(&b) {
                    out.push(v);
                }
            }
        }
    }
    out
}

#[test]
fn http_endpoints_follow_the_protocol() {
    let home = Home::new();
    let (host, sock) = unix_host(&home);
    let _svc = Service::start(&home, &host, &[]);
    let s = sock.as_path();

    // Activate with an empty body; Capabilities; List with every body form.
    assert_eq!(
        ok(post(s, "/Plugin.Activate", "")),
        json!({"Implements": ["VolumeDriver"]})
    );
    assert_eq!(
        ok(post(s, "/VolumeDriver.Capabilities", "{}\n")),
        json!({"Capabilities": {"Scope": "global"}})
    );
    for body in ["", "{}", "{}\n", "null", "{\"Unknown\": [1, 2]}"] {
        assert_eq!(
            ok(post(s, "/VolumeDriver.List", body)),
            json!({"Volumes": []})
        );
    }

    // Create: Opts null, unknown top-level fields, case-insensitive keys.
    ok(post(
        s,
        "/VolumeDriver.Create",
        r#"{"Name":"hv1","Opts":null,"Whatever":{"x":1}}"#,
    ));
    ok(post(
        s,
        "/VolumeDriver.Create",
        r#"{"Name":"hv2","Opts":{"SIZE":"2","Iops":"150","type":"fast","AvailabilityZone":"z1","fstype":"xfs"}}"#,
    ));
    // An existing name succeeds and changes nothing.
    ok(post(
        s,
        "/VolumeDriver.Create",
        r#"{"Name":"hv2","Opts":{"size":"5"}}"#,
    ));
    let v = ok(post(s, "/VolumeDriver.Get", r#"{"Name":"hv2"}"#));
    let st = &v["Volume"]["Status"];
    // A bucket (s3fs) keeps no size, IOPS, type, zone or filesystem.
    if test_driver() != TestDriver::S3fs {
        assert_eq!(st["size"], json!(2), "{v}");
        assert_eq!(st["iops"], json!(150), "{v}");
        assert_eq!(st["type"], json!("fast"), "{v}");
        assert_eq!(st["availabilityZone"], json!("z1"), "{v}");
        assert_eq!(st["fields"]["fsType"], json!("xfs"), "{v}");
    }
    assert_eq!(st["name"], json!("hv2"), "{v}");
    assert!(
        st.get("server").is_some() && st.get("service").is_some(),
        "{v}"
    );
    assert!(
        v["Volume"]["CreatedAt"].as_str().unwrap().ends_with('Z'),
        "{v}"
    );
    assert!(v["Volume"].get("Mountpoint").is_none(), "{v}");

    // Bad input: a clean, JSON-escaped message; nothing created.
    let e = err(post(
        s,
        "/VolumeDriver.Create",
        r#"{"Name":"hv3","Opts":{"color":"red"}}"#,
    ));
    assert!(e.contains("\"color\"") && e.contains("snapshotName"), "{e}");
    for opts in [
        r#"{"size":"abc"}"#,
        r#"{"size":"-1"}"#,
        r#"{"encrypted":"x"}"#,
    ] {
        let e = err(post(
            s,
            "/VolumeDriver.Create",
            &format!(r#"{{"Name":"hv3","Opts":{opts}}}"#),
        ));
        assert!(!e.is_empty());
    }
    let e = err(post(
        s,
        "/VolumeDriver.Create",
        r#"{"Name":"bad\"name","Opts":{}}"#,
    ));
    assert!(e.contains("invalid volume name \"bad\\\"name\""), "{e}");
    let e = err(post(
        s,
        "/VolumeDriver.Create",
        r#"{"Name":"hv3","Opts":{"encrypted":"true"}}"#,
    ));
    assert!(e.contains("encrypt"), "{e}");
    let e = err(post(s, "/VolumeDriver.Create", "{\"Name\":"));
    assert!(e.contains("not valid JSON"), "{e}");
    let e = err(post(s, "/VolumeDriver.Create", ""));
    assert!(e.contains("no volume Name"), "{e}");
    let e = err(post(
        s,
        "/VolumeDriver.Create",
        r#"{"Name":"hv3","Opts":{"volumeName":"nope"}}"#,
    ));
    assert!(e.contains("not found"), "{e}");
    let names: Vec<String> = ok(post(s, "/VolumeDriver.List", "{}"))["Volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["Name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["hv1", "hv2"]);

    // Get of a missing volume is an error (dockerd then calls Create).
    let e = err(post(s, "/VolumeDriver.Get", r#"{"Name":"nope"}"#));
    assert!(e.contains("not found"), "{e}");
    // Unknown endpoint: 404 with Err.
    let r = post(s, "/VolumeDriver.Frobnicate", "{}");
    assert_eq!(r.0, 404);
    // GET works as well as POST.
    let mut c = UnixStream::connect(s).unwrap();
    write!(
        c,
        "GET /Plugin.Activate HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    c.read_to_string(&mut text).unwrap();
    assert!(
        text.starts_with("HTTP/1.1 200") && text.contains("VolumeDriver"),
        "{text}"
    );

    // Path of an unmounted volume: no Mountpoint. Remove; remove again fails.
    assert_eq!(
        ok(post(s, "/VolumeDriver.Path", r#"{"Name":"hv1"}"#)),
        json!({})
    );
    ok(post(s, "/VolumeDriver.Remove", r#"{"Name":"hv1"}"#));
    let e = err(post(s, "/VolumeDriver.Remove", r#"{"Name":"hv1"}"#));
    assert!(e.contains("not found"), "{e}");
    // Mount of a volume that does not exist: a clear error.
    let e = err(post(
        s,
        "/VolumeDriver.Mount",
        r#"{"Name":"ghost","ID":"x"}"#,
    ));
    assert!(e.contains("ghost") && e.contains("not found"), "{e}");
    // Mount with an empty body (dockerd's retry after a crash): clear error.
    let e = err(post(s, "/VolumeDriver.Mount", ""));
    assert!(e.contains("Name"), "{e}");
}

#[test]
fn mounts_count_consumers_across_restarts() {
    require_root!();
    let home = Home::new();
    let (host, sock) = unix_host(&home);
    let mut svc = Service::start(&home, &host, &[]);
    let s = sock.as_path();
    ok(post(
        s,
        "/VolumeDriver.Create",
        r#"{"Name":"mv1","Opts":{"size":"1"}}"#,
    ));
    let id_a = "a".repeat(64);
    let id_b = "b".repeat(64);
    let m = ok(post(
        s,
        "/VolumeDriver.Mount",
        &format!(r#"{{"Name":"mv1","ID":"{id_a}"}}"#),
    ));
    let path = PathBuf::from(m["Mountpoint"].as_str().unwrap());
    assert_eq!(path, home.data("mv1"));
    let m2 = ok(post(
        s,
        "/VolumeDriver.Mount",
        &format!(r#"{{"Name":"mv1","ID":"{id_b}"}}"#),
    ));
    assert_eq!(m2["Mountpoint"], m["Mountpoint"]);
    assert_eq!(count_mounts_at(&home.mount_point("mv1")), 1);
    std::fs::write(path.join("f"), "x").unwrap();
    // Get and Path report the mount point while mounted.
    let g = ok(post(s, "/VolumeDriver.Get", r#"{"Name":"mv1"}"#));
    assert_eq!(g["Volume"]["Mountpoint"], m["Mountpoint"]);
    assert_eq!(
        ok(post(s, "/VolumeDriver.Path", r#"{"Name":"mv1"}"#))["Mountpoint"],
        m["Mountpoint"]
    );
    // Remove while in use is refused.
    let e = err(post(s, "/VolumeDriver.Remove", r#"{"Name":"mv1"}"#));
    assert!(e.contains("in use"), "{e}");

    // The consumers live on disk: a restart loses nothing.
    svc.restart(&home);
    ok(post(
        s,
        "/VolumeDriver.Unmount",
        &format!(r#"{{"Name":"mv1","ID":"{id_a}"}}"#),
    ));
    assert_eq!(
        count_mounts_at(&home.mount_point("mv1")),
        1,
        "still used by b"
    );
    assert_eq!(std::fs::read_to_string(path.join("f")).unwrap(), "x");
    ok(post(
        s,
        "/VolumeDriver.Unmount",
        &format!(r#"{{"Name":"mv1","ID":"{id_b}"}}"#),
    ));
    assert_eq!(count_mounts_at(&home.mount_point("mv1")), 0);
    assert!(home.attached().is_empty());
    // Unmount of an unmounted volume succeeds.
    ok(post(
        s,
        "/VolumeDriver.Unmount",
        r#"{"Name":"mv1","ID":"zz"}"#,
    ));

    // ID-less mounts (dvdcli, Mesos) are one anonymous consumer: repeated
    // mounts are idempotent and one unmount releases them.
    for _ in 0..3 {
        ok(post(s, "/VolumeDriver.Mount", r#"{"Name":"mv1"}"#));
    }
    assert_eq!(mount_record(&home)[0]["consumers"], json!(["anonymous"]));
    ok(post(s, "/VolumeDriver.Unmount", r#"{"Name":"mv1"}"#));
    assert_eq!(count_mounts_at(&home.mount_point("mv1")), 0);

    if test_driver() == TestDriver::S3fs {
        // Buckets are not copied (s3fs): the rest is about the copy.
        ok(post(s, "/VolumeDriver.Remove", r#"{"Name":"mv1"}"#));
        assert!(home.mounts().is_empty() && home.attached().is_empty());
        assert_eq!(svc.stop(), Some(0));
        return;
    }
    // Copy a mounted volume: the source is frozen for the copy, and the
    // copy holds the data.
    ok(post(
        s,
        "/VolumeDriver.Mount",
        r#"{"Name":"mv1","ID":"cv1"}"#,
    ));
    std::fs::write(home.data("mv1").join("g"), "copied").unwrap();
    ok(post(
        s,
        "/VolumeDriver.Create",
        r#"{"Name":"mv2","Opts":{"volumeName":"mv1","size":"2"}}"#,
    ));
    // The source still takes writes (thawed).
    std::fs::write(home.data("mv1").join("h"), "after").unwrap();
    let m = ok(post(
        s,
        "/VolumeDriver.Mount",
        r#"{"Name":"mv2","ID":"c2"}"#,
    ));
    let p2 = PathBuf::from(m["Mountpoint"].as_str().unwrap());
    assert_eq!(std::fs::read_to_string(p2.join("g")).unwrap(), "copied");
    assert!(!p2.join("h").exists());
    let g = ok(post(s, "/VolumeDriver.Get", r#"{"Name":"mv2"}"#));
    assert_eq!(g["Volume"]["Status"]["size"], json!(2));
    for (n, id) in [("mv1", "cv1"), ("mv2", "c2")] {
        ok(post(
            s,
            "/VolumeDriver.Unmount",
            &format!(r#"{{"Name":"{n}","ID":"{id}"}}"#),
        ));
    }
    for n in ["mv1", "mv2"] {
        ok(post(
            s,
            "/VolumeDriver.Remove",
            &format!(r#"{{"Name":"{n}"}}"#),
        ));
    }
    assert!(home.mounts().is_empty() && home.attached().is_empty());
    assert_eq!(svc.stop(), Some(0));
}

/// Names and mount points that List shows.
fn listed(s: &Path) -> Vec<(String, Option<String>)> {
    let l = ok(post(s, "/VolumeDriver.List", "{}"));
    let mut out: Vec<_> = l["Volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["Name"].as_str().unwrap().to_string(),
                v.get("Mountpoint").map(|m| m.as_str().unwrap().to_string()),
            )
        })
        .collect();
    out.sort();
    out
}

/// Get and List answer from memory while nothing changes; whatever another
/// process changes (the CLI, another library user, a mount made by hand)
/// shows in the very next request.
#[test]
fn get_and_list_see_changes_by_other_processes_at_once() {
    require_root!();
    let home = Home::new();
    let (host, sock) = unix_host(&home);
    let _svc = Service::start(&home, &host, &[]);
    let s = sock.as_path();
    assert!(listed(s).is_empty());
    let get = |n: &str| post(s, "/VolumeDriver.Get", &format!(r#"{{"Name":"{n}"}}"#));
    let mut want: Vec<String> = Vec::new();
    for i in 0..8 {
        let n = format!("ov{i}");
        if i % 2 == 0 {
            home.rexray(&["volume", "create", &n, "--size", "1"]).ok();
        } else {
            home.volumes()
                .create(&n, &Default::default())
                .expect("create in-process");
        }
        want.push(n.clone());
        // Warm the service's cache, then change the catalog behind it.
        assert_eq!(ok(get(&n))["Volume"]["Name"], json!(n));
        if i % 3 == 2 {
            let gone = want.remove(0);
            home.rexray(&["volume", "rm", &gone]).ok();
            let e = err(get(&gone));
            assert!(e.contains("not found"), "{e}");
        }
        let names: Vec<String> = listed(s).into_iter().map(|(n, _)| n).collect();
        let mut sorted = want.clone();
        sorted.sort();
        assert_eq!(names, sorted);
    }

    // Mounted and unmounted by the CLI.
    let n = want[0].clone();
    let data = home.data(&n).to_string_lossy().into_owned();
    assert!(ok(get(&n))["Volume"].get("Mountpoint").is_none());
    home.rexray(&["volume", "mount", &n]).ok();
    assert_eq!(ok(get(&n))["Volume"]["Mountpoint"], json!(data));
    assert!(listed(s).contains(&(n.clone(), Some(data.clone()))));
    home.rexray(&["volume", "unmount", &n]).ok();
    assert!(ok(get(&n))["Volume"].get("Mountpoint").is_none());
    assert!(listed(s).iter().all(|(_, m)| m.is_none()));

    // A mount made by hand at the mount point counts, and its removal too.
    let mp = home.mount_point(&n);
    let src = home.dir.join("by-hand");
    // Laid out as a volume is: the path handed out is checked to exist.
    std::fs::create_dir_all(src.join("data")).unwrap();
    std::fs::create_dir_all(&mp).unwrap();
    let mut c = std::process::Command::new("mount");
    run_cmd(c.arg("--bind").arg(&src).arg(&mp)).ok();
    assert_eq!(ok(get(&n))["Volume"]["Mountpoint"], json!(data));
    assert!(listed(s).contains(&(n.clone(), Some(data.clone()))));
    run_cmd(std::process::Command::new("umount").arg(&mp)).ok();
    assert!(ok(get(&n))["Volume"].get("Mountpoint").is_none());
    assert!(listed(s).iter().all(|(_, m)| m.is_none()));
    std::fs::remove_dir(&mp).unwrap();
    assert!(home.mounts().is_empty() && home.attached().is_empty());
}

#[test]
fn snapshots_feed_create() {
    require_root!();
    if driver_na_on(&[TestDriver::S3fs], "buckets have no snapshots") {
        return;
    }
    let home = Home::new();
    let (host, sock) = unix_host(&home);
    let _svc = Service::start(&home, &host, &[]);
    let s = sock.as_path();
    ok(post(
        s,
        "/VolumeDriver.Create",
        r#"{"Name":"s1","Opts":{"size":"1"}}"#,
    ));
    ok(post(s, "/VolumeDriver.Mount", r#"{"Name":"s1"}"#));
    std::fs::write(home.data("s1").join("f"), "v1").unwrap();
    let snap = home.rexray(&["snapshot", "create", "s1", "snap1", "-f", "json"]);
    let snap: Value = serde_json::from_str(snap.ok()).unwrap();
    let snap_id = snap[0]["id"].as_str().unwrap().to_string();
    std::fs::write(home.data("s1").join("f"), "v2").unwrap();
    ok(post(s, "/VolumeDriver.Unmount", r#"{"Name":"s1"}"#));
    ok(post(
        s,
        "/VolumeDriver.Create",
        r#"{"Name":"s2","Opts":{"snapshotName":"snap1"}}"#,
    ));
    ok(post(
        s,
        "/VolumeDriver.Create",
        &format!(r#"{{"Name":"s3","Opts":{{"SnapshotID":"{snap_id}"}}}}"#),
    ));
    for n in ["s2", "s3"] {
        let m = ok(post(
            s,
            "/VolumeDriver.Mount",
            &format!(r#"{{"Name":"{n}"}}"#),
        ));
        let p = PathBuf::from(m["Mountpoint"].as_str().unwrap());
        assert_eq!(std::fs::read_to_string(p.join("f")).unwrap(), "v1");
        ok(post(
            s,
            "/VolumeDriver.Unmount",
            &format!(r#"{{"Name":"{n}"}}"#),
        ));
    }
    let e = err(post(
        s,
        "/VolumeDriver.Create",
        r#"{"Name":"s4","Opts":{"snapshotName":"nope"}}"#,
    ));
    assert!(e.contains("not found"), "{e}");
    let ls = home.rexray(&["snapshot", "ls"]);
    assert!(ls.ok().contains("snap1"), "{ls:?}");
    home.rexray(&["snapshot", "rm", "snap1"]).ok();
    assert!(!home.rexray(&["snapshot", "ls"]).ok().contains("snap1"));
    // The vfs driver cannot: a clear refusal.
    let vfs = Home::new().with_env("LIBSTORAGE_SERVICE", "vfs");
    let (host, vsock) = unix_host(&vfs);
    let _v = Service::start(&vfs, &host, &[]);
    ok(post(&vsock, "/VolumeDriver.Create", r#"{"Name":"d1"}"#));
    let e = err(post(
        &vsock,
        "/VolumeDriver.Create",
        r#"{"Name":"d2","Opts":{"volumeName":"d1"}}"#,
    ));
    assert!(e.contains("cannot copy"), "{e}");
}

#[test]
fn service_lifecycle() {
    let home = Home::new();
    let (host, sock) = unix_host(&home);
    let env = [("REXRAY_MODULES_DEFAULT_DOCKER_HOST", host.as_str())];
    let status = |h: &Home| {
        let mut c = h.command("rexray");
        c.args(["service", "status"]).env(env[0].0, env[0].1);
        run_cmd(&mut c)
    };
    assert_eq!(status(&home).code, 3);
    let mut svc = Service::start(&home, &host, &[]);
    let st = status(&home);
    assert_eq!(st.code, 0, "{st:?}");
    assert!(
        st.stdout.contains(&svc.pid().to_string()) && st.stdout.contains(&host),
        "{st:?}"
    );
    // The socket is 0660.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    // A second start fails clearly and leaves the first alone.
    let mut c = home.command("rexray");
    c.args(["service", "start"]).env(env[0].0, env[0].1);
    let second = run_cmd(&mut c);
    assert_eq!(second.code, 1);
    assert!(second.stderr.contains("already running"), "{second:?}");
    ok(post(&sock, "/Plugin.Activate", ""));
    // Stopping removes the socket and the pid file.
    assert_eq!(svc.stop(), Some(0));
    assert!(!sock.exists());
    assert!(!home.dir.join("var/run/rexray.pid").exists());
    assert_eq!(status(&home).code, 3);

    // A live socket of someone else makes start fail; a stale one is
    // replaced.
    let other = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let mut c = home.command("rexray");
    c.args(["service", "start"]).env(env[0].0, env[0].1);
    let busy = run_cmd(&mut c);
    assert_eq!(busy.code, 1, "{busy:?}");
    assert!(busy.stderr.contains("another process serves"), "{busy:?}");
    drop(other); // the file stays: now stale
    assert!(sock.exists());
    let mut svc = Service::start(&home, &host, &[]);
    ok(post(&sock, "/Plugin.Activate", ""));
    // `rexray service stop` signals the pid file's process and waits.
    let mut c = home.command("rexray");
    c.args(["service", "stop"]).env(env[0].0, env[0].1);
    let stopped = run_cmd(&mut c);
    assert_eq!(stopped.code, 0, "{stopped:?}");
    svc.wait_exit();
    assert!(!sock.exists());

    // -d: returns once serving; stop by `rexray stop`.
    let mut c = home.command("rexray");
    c.args(["start", "-d"]).env(env[0].0, env[0].1);
    let d = run_cmd(&mut c);
    assert_eq!(d.code, 0, "{d:?}");
    assert!(d.stdout.contains("started"), "{d:?}");
    ok(post(&sock, "/Plugin.Activate", ""));
    let mut c = home.command("rexray");
    c.args(["stop"]).env(env[0].0, env[0].1);
    assert_eq!(run_cmd(&mut c).code, 0);
    assert!(!sock.exists());

    // disabled: the service runs, serves nothing.
    let mut c = home.command("rexray");
    c.args(["start", "-d"])
        .env(env[0].0, env[0].1)
        .env("REXRAY_MODULES_DEFAULT_DOCKER_DISABLED", "true");
    let d = run_cmd(&mut c);
    assert_eq!(d.code, 0, "{d:?}");
    assert!(d.stdout.contains("disabled"), "{d:?}");
    assert!(!sock.exists());
    let mut c = home.command("rexray");
    c.args(["stop"]).env(env[0].0, env[0].1);
    assert_eq!(run_cmd(&mut c).code, 0);
    assert_eq!(status(&home).code, 3);

    // tcp: a spec file with a full URL, removed at stop.
    let spec = home.dir.join("plugins/rexray.spec");
    let spec_s = spec.to_string_lossy().into_owned();
    let mut t = Service::start(
        &home,
        "tcp://127.0.0.1:0",
        &[("REXRAY_MODULES_DEFAULT_DOCKER_SPEC", spec_s.as_str())],
    );
    let url = std::fs::read_to_string(&spec).unwrap();
    assert!(
        url.starts_with("tcp://127.0.0.1:") && url.ends_with('\n'),
        "{url}"
    );
    let addr = url.trim().trim_start_matches("tcp://").to_string();
    let mut c = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        c,
        "POST /Plugin.Activate HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    c.read_to_string(&mut text).unwrap();
    assert!(text.contains("VolumeDriver"), "{text}");
    assert!(t.log_text().contains("no authentication"));
    assert_eq!(t.stop(), Some(0));
    assert!(!spec.exists());
}

/// The service killed in the middle of an Unmount, before the unmount or
/// between the unmount and the detach: dockerd never repeats the call, so
/// the next start finishes it (unmounted and detached, the record gone).
#[test]
fn a_crash_mid_unmount_is_cleaned_up_at_start() {
    require_root!();
    let home = Home::new();
    let (host, sock) = unix_host(&home);
    for (i, fp) in [
        "volume::unmount-after-record",
        "volume::unmount-after-unmount",
    ]
    .iter()
    .enumerate()
    {
        let name = format!("cv{i}");
        let mut svc = Service::start(&home, &host, &[("FAILPOINTS", &format!("{fp}=return"))]);
        ok(post(
            &sock,
            "/VolumeDriver.Create",
            &format!(r#"{{"Name":"{name}"}}"#),
        ));
        let body = format!(r#"{{"Name":"{name}","ID":"x"}}"#);
        ok(post(&sock, "/VolumeDriver.Mount", &body));
        assert_eq!(count_mounts_at(&home.mount_point(&name)), 1);
        svc.post_while_dying(&sock, "/VolumeDriver.Unmount", &body);
        // The record names no consumer, and says a release is unfinished.
        let recs = mount_record(&home);
        assert!(
            recs.len() == 1
                && recs[0]["consumers"].as_array().is_none_or(|a| a.is_empty())
                && recs[0]["releasing"] == true,
            "{fp}: {recs:?}"
        );
        assert!(
            !home.attached().is_empty(),
            "{fp}: left attached by the kill"
        );
        // The next start finds the stale socket, replaces it, and
        // finishes the release.
        let mut svc = Service::start(&home, &host, &[]);
        assert_eq!(count_mounts_at(&home.mount_point(&name)), 0, "{fp}");
        assert!(home.attached().is_empty(), "{fp}: {}", svc.log_text());
        assert!(
            std::fs::read_dir(home.lib().join("mounts"))
                .unwrap()
                .flatten()
                .all(|e| e.file_name().to_string_lossy().starts_with('.')),
            "{fp}: no record left"
        );
        ok(post(
            &sock,
            "/VolumeDriver.Remove",
            &format!(r#"{{"Name":"{name}"}}"#),
        ));
        assert_eq!(svc.stop(), Some(0));
    }
}

/// A private dockerd: own data root, exec root, socket, pid file and
/// cgroup parent; everything it made is removed on drop.
pub(crate) struct Dockerd {
    pub(crate) dir: PathBuf,
    name: String,
    pid: u32,
    pub(crate) image: String,
}

/// The directories under /run and /etc that dockerd, containerd and the
/// service create if missing; removed again on drop if this test created
/// them and they are empty. Take it before anything else starts.
pub(crate) struct HostDirs(Vec<PathBuf>);

impl HostDirs {
    pub(crate) fn snapshot() -> HostDirs {
        HostDirs(
            RUN_DIRS
                .iter()
                .map(PathBuf::from)
                .filter(|d| !d.exists())
                .collect(),
        )
    }
}

impl Drop for HostDirs {
    fn drop(&mut self) {
        for d in self.0.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// Directories dockerd and containerd create under /run that we remove
/// again if they did not exist before (and are empty).
const RUN_DIRS: &[&str] = &[
    "/run/docker",
    "/run/docker/plugins",
    "/run/containerd",
    "/run/containerd/s",
    "/etc/docker",
    "/etc/docker/plugins",
];

impl Dockerd {
    /// Whether the dockerd tests can run here. In CI scripts/test.sh
    /// installs everything, so a missing tool is a broken install step:
    /// fail rather than pass without testing.
    pub(crate) fn usable() -> bool {
        if Self::available() {
            return true;
        }
        crate::common::skip(
            "dockerd, containerd, runc, docker or /bin/busybox missing (scripts/test.sh installs them)",
        );
        false
    }

    fn available() -> bool {
        ["dockerd", "containerd", "runc", "docker"]
            .iter()
            .all(|b| which::which(b).is_ok())
            && Path::new("/bin/busybox").exists()
    }

    pub(crate) fn start(name: &str) -> Dockerd {
        let dir = tempfile::Builder::new()
            .prefix("rxd.")
            .tempdir_in("/tmp")
            .unwrap()
            .keep();
        std::fs::write(
            dir.join("daemon.json"),
            format!(
                "{{\"deprecated-key-path\": \"{}/key.json\"}}\n",
                dir.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        let mut d = Dockerd {
            dir: dir.clone(),
            name: name.to_string(),
            pid: 0,
            image: format!("{name}-bb:latest"),
        };
        let child = Command::new("dockerd")
            .env_clear()
            .env("PATH", PATH_ENV)
            .arg(format!("--config-file={}/daemon.json", dir.display()))
            .arg(format!("--data-root={}/root", dir.display()))
            .arg(format!("--exec-root={}/exec", dir.display()))
            .arg(format!("--pidfile={}/docker.pid", dir.display()))
            .arg(format!("-H=unix://{}/docker.sock", dir.display()))
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--ip-forward=false",
                "--ip-masq=false",
                "--bridge=none",
                "--userland-proxy=false",
                "--storage-driver=overlay2",
            ])
            .arg(format!("--cgroup-parent=/{name}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn dockerd");
        d.pid = child.id();
        // Reap it in the background so it does not linger as a zombie.
        std::thread::spawn(move || {
            let mut child = child;
            let _ = child.wait();
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(alive(d.pid), "dockerd exited: {}", d.log_tail());
            if d.ping() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "dockerd not ready: {}",
                d.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        d.build_image();
        d
    }

    pub(crate) fn sock(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    fn ping(&self) -> bool {
        let Ok(mut s) = UnixStream::connect(self.sock()) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        if write!(
            s,
            "GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n"
        )
        .is_err()
        {
            return false;
        }
        let mut t = String::new();
        let _ = s.read_to_string(&mut t);
        t.ends_with("OK")
    }

    pub(crate) fn log_tail(&self) -> String {
        let t = std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn build_image(&self) {
        let r = self.dir.join("rootfs");
        for d in ["bin", "etc", "tmp", "proc", "sys", "dev"] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", r.join("bin/busybox")).unwrap();
        for a in [
            "sh", "cat", "echo", "ls", "sleep", "mkdir", "rm", "touch", "true", "test", "stat",
        ] {
            std::os::unix::fs::symlink("busybox", r.join("bin").join(a)).unwrap();
        }
        let tar = self.dir.join("bb.tar");
        run_cmd(
            Command::new("tar")
                .arg("-C")
                .arg(&r)
                .arg("-cf")
                .arg(&tar)
                .arg("."),
        )
        .ok();
        self.docker(&[
            "import",
            "-c",
            "CMD [\"sh\"]",
            tar.to_str().unwrap(),
            &self.image,
        ])
        .ok();
    }

    /// Run the docker CLI against this daemon.
    pub(crate) fn docker(&self, args: &[&str]) -> Out {
        let cli = if Path::new("/usr/bin/docker").exists() {
            "/usr/bin/docker"
        } else {
            "docker"
        };
        run_cmd(
            Command::new(cli)
                .env_clear()
                .env("PATH", PATH_ENV)
                .env("DOCKER_CONFIG", self.dir.join("cli"))
                .arg("-H")
                .arg(format!("unix://{}", self.sock().display()))
                .args(args)
                .stdin(Stdio::null()),
        )
    }

    /// `docker run --rm --network none -v VOL:/data IMAGE sh -c SCRIPT`.
    pub(crate) fn run(&self, driver: &str, vol: &str, script: &str) -> Out {
        self.docker(&[
            "run",
            "--rm",
            "--network",
            "none",
            "--volume-driver",
            driver,
            "-v",
            &format!("{vol}:/data"),
            &self.image,
            "sh",
            "-c",
            script,
        ])
    }

    fn volumes(&self, driver: &str) -> Vec<String> {
        let o = self.docker(&[
            "volume",
            "ls",
            "-q",
            "--filter",
            &format!("driver={driver}"),
        ]);
        o.ok().lines().map(str::to_string).collect()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let t = self.dir.to_string_lossy().into_owned();
        if alive(self.pid) {
            let ids = self.docker(&["ps", "-aq"]).stdout;
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids);
                let _ = self.docker(&args);
            }
            sigterm(self.pid);
            let deadline = Instant::now() + Duration::from_secs(20);
            while alive(self.pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if alive(self.pid) {
                sigkill(self.pid);
            }
        }
        if let Some(cpid) = std::fs::read_to_string(self.dir.join("exec/containerd/containerd.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
        {
            let ours = std::fs::read(format!("/proc/{cpid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&t))
                .unwrap_or(false);
            if ours {
                sigkill(cpid);
            }
        }
        // Processes left in our private cgroup parent (containers whose
        // shim died), by pid.
        for pattern in ["pids", "memory", "unified", ""] {
            let base = Path::new("/sys/fs/cgroup").join(pattern).join(&self.name);
            if let Ok(rd) = std::fs::read_dir(&base) {
                for e in rd.flatten() {
                    if let Ok(p) = std::fs::read_to_string(e.path().join("cgroup.procs")) {
                        for pid in p.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
                            sigkill(pid);
                        }
                    }
                }
            }
        }
        for _ in 0..3 {
            let ms = mounts_under(&self.dir);
            if ms.is_empty() {
                break;
            }
            for m in ms {
                let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
            for e in rd.flatten() {
                let c = e.path().join(&self.name);
                for _ in 0..10 {
                    if !c.exists() {
                        break;
                    }
                    let _ = Command::new("find")
                        .arg(&c)
                        .args(["-depth", "-type", "d", "-exec", "rmdir", "{}", ";"])
                        .stderr(Stdio::null())
                        .status();
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            let c = Path::new("/sys/fs/cgroup").join(&self.name);
            let _ = std::fs::remove_dir(c);
        }
        if mounts_under(&self.dir).is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[test]
fn real_dockerd_drives_the_plugin() {
    require_root!();
    if !Dockerd::usable() {
        return;
    }
    let _dirs = HostDirs::snapshot();
    let (name, host, sock) = plugin_socket();
    let home = Home::new();
    let mut svc = Service::start(&home, &host, &[]);
    let d = Dockerd::start(&name);

    // create with options → ls → inspect
    d.docker(&[
        "volume",
        "create",
        "-d",
        &name,
        "-o",
        "size=2",
        "-o",
        "IOPS=100",
        "-o",
        "volumeType=fast",
        "dv1",
    ])
    .ok();
    assert_eq!(d.volumes(&name), ["dv1"]);
    let info = d.docker(&["volume", "inspect", "dv1"]);
    let info: Value = serde_json::from_str(info.ok()).unwrap();
    let v = &info[0];
    eprintln!("docker volume inspect: {v:#}");
    assert_eq!(v["Driver"], json!(name), "{v}");
    assert_eq!(v["Scope"], json!("global"), "{v}");
    // A bucket (s3fs) keeps no size, IOPS or type.
    if test_driver() != TestDriver::S3fs {
        assert_eq!(v["Status"]["size"], json!(2), "{v}");
        assert_eq!(v["Status"]["iops"], json!(100), "{v}");
        assert_eq!(v["Status"]["type"], json!("fast"), "{v}");
    }
    assert!(
        v["CreatedAt"].as_str().is_some_and(|c| !c.is_empty()),
        "{v}"
    );

    // a container writes, another reads
    d.run(&name, "dv1", "echo hello > /data/f").ok();
    assert_eq!(d.run(&name, "dv1", "cat /data/f").ok(), "hello\n");
    assert_eq!(count_mounts_at(&home.mount_point("dv1")), 0);
    assert!(home.attached().is_empty());

    // two containers share it; the service restarts; one stops; the
    // other still writes
    let run_d = || {
        let o = d.docker(&[
            "run",
            "-d",
            "--network",
            "none",
            "-v",
            "dv1:/data",
            &d.image,
            "sleep",
            "300",
        ]);
        o.ok().trim().to_string()
    };
    let c1 = run_d();
    let c2 = run_d();
    assert_eq!(count_mounts_at(&home.mount_point("dv1")), 1);
    assert_eq!(
        mount_record(&home)[0]["consumers"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    svc.restart(&home);
    d.docker(&["kill", &c1]).ok();
    d.docker(&["wait", &c1]).ok();
    let w = d.docker(&[
        "exec",
        &c2,
        "sh",
        "-c",
        "echo more >> /data/f && cat /data/f",
    ]);
    assert_eq!(w.ok(), "hello\nmore\n");
    assert_eq!(count_mounts_at(&home.mount_point("dv1")), 1);
    assert_eq!(
        mount_record(&home)[0]["consumers"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "the Unmount after the restart released exactly one consumer"
    );

    // rm while in use fails, in dockerd and in the plugin
    let busy = d.docker(&["volume", "rm", "dv1"]);
    assert_ne!(busy.code, 0, "{busy:?}");
    assert!(busy.stderr.contains("in use"), "{busy:?}");
    let e = err(post(&sock, "/VolumeDriver.Remove", r#"{"Name":"dv1"}"#));
    assert!(e.contains("in use"), "{e}");
    d.docker(&["rm", "-f", &c1, &c2]).ok();
    assert_eq!(count_mounts_at(&home.mount_point("dv1")), 0);
    assert!(home.attached().is_empty(), "{:?}", home.attached());
    d.docker(&["volume", "rm", "dv1"]).ok();
    assert!(d.volumes(&name).is_empty());

    // bad names and options: a clean docker error, nothing left behind
    for (args, want) in [
        (vec!["-o", "size=abc"], "size"),
        (vec!["-o", "size=-1"], "size"),
        (vec!["-o", "color=red"], "unknown option"),
        (vec!["-o", "fsType=ntfs"], "ext4 or xfs"),
    ] {
        let mut a = vec!["volume", "create", "-d", name.as_str()];
        a.extend(args);
        a.push("bad1");
        let o = d.docker(&a);
        assert_ne!(o.code, 0, "{o:?}");
        assert!(o.stderr.contains(want), "{o:?}");
        assert!(!o.stderr.contains("{\""), "raw JSON in {o:?}");
        eprintln!("docker said: {}", o.stderr.trim());
    }
    for bad in ["bad@name", "_under", "a b"] {
        let o = d.docker(&["volume", "create", "-d", &name, bad]);
        assert_ne!(o.code, 0, "{o:?}");
        assert!(!o.stderr.contains("{\""), "raw JSON in {o:?}");
        eprintln!("docker said: {}", o.stderr.trim());
    }
    assert!(d.volumes(&name).is_empty(), "{:?}", d.volumes(&name));
    assert!(ok(post(&sock, "/VolumeDriver.List", "{}"))["Volumes"]
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(svc.stop(), Some(0));
    assert!(!sock.exists());

    // tcp mode: dockerd finds the plugin through a spec file
    let tname = format!("{name}t");
    let spec = PathBuf::from(format!("/etc/docker/plugins/{tname}.spec"));
    let spec_s = spec.to_string_lossy().into_owned();
    let mut tsvc = Service::start(
        &home,
        "tcp://127.0.0.1:0",
        &[("REXRAY_MODULES_DEFAULT_DOCKER_SPEC", spec_s.as_str())],
    );
    let url = std::fs::read_to_string(&spec).unwrap();
    assert!(url.starts_with("tcp://127.0.0.1:"), "{url}");
    d.docker(&["volume", "create", "-d", &tname, "tv1"]).ok();
    d.run(&tname, "tv1", "echo tcp > /data/t").ok();
    assert_eq!(d.run(&tname, "tv1", "cat /data/t").ok(), "tcp\n");
    d.docker(&["volume", "rm", "tv1"]).ok();
    assert!(d.volumes(&tname).is_empty());
    assert_eq!(tsvc.stop(), Some(0));
    assert!(!spec.exists());
    drop(d);
    assert!(home.mounts().is_empty() && home.attached().is_empty());
}

#[test]
fn a_slow_mount_blocks_no_one_and_stop_waits_for_it() {
    require_root!();
    let home = Home::new();
    let (host, sock) = unix_host(&home);
    // Formatting takes 10 s more than usual: a slow mkfs (on s3fs, which
    // formats nothing, the step after the mount is as slow).
    let slow = if fires_for_driver("volume::mount-after-format") {
        "volume::mount-after-format=sleep(10000)"
    } else {
        "volume::mount-after-mount=sleep(10000)"
    };
    let mut svc = Service::start(&home, &host, &[("FAILPOINTS", slow)]);
    ok(post(&sock, "/VolumeDriver.Create", r#"{"Name":"slow"}"#));
    ok(post(&sock, "/VolumeDriver.Create", r#"{"Name":"other"}"#));
    let (tx, rx) = std::sync::mpsc::channel();
    let s2 = sock.clone();
    std::thread::spawn(move || {
        let _ = tx.send(post(
            &s2,
            "/VolumeDriver.Mount",
            r#"{"Name":"slow","ID":"s"}"#,
        ));
    });
    // Wait until the slow mount is under way (its device is attached).
    let deadline = Instant::now() + Duration::from_secs(60);
    while home.attached().is_empty() {
        assert!(Instant::now() < deadline, "{}", svc.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    // Requests for other volumes are served meanwhile.
    ok(post(&sock, "/VolumeDriver.Get", r#"{"Name":"other"}"#));
    ok(post(&sock, "/VolumeDriver.List", "{}"));
    ok(post(&sock, "/VolumeDriver.Create", r#"{"Name":"third"}"#));
    ok(post(&sock, "/VolumeDriver.Remove", r#"{"Name":"third"}"#));
    assert!(rx.try_recv().is_err(), "the slow mount finished too early");
    // SIGTERM now: the in-flight mount completes, then the service exits.
    assert_eq!(svc.stop(), Some(0), "{}", svc.log_text());
    let r = rx.recv_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!(
        PathBuf::from(ok(r)["Mountpoint"].as_str().unwrap()),
        home.data("slow")
    );
    assert!(!sock.exists());
    assert_eq!(count_mounts_at(&home.mount_point("slow")), 1);
}

#[test]
fn a_crash_mid_copy_leaves_nothing_frozen() {
    require_root!();
    if driver_na_on(&[TestDriver::S3fs], "buckets are not copied") {
        return;
    }
    let home = Home::new();
    let (host, sock) = unix_host(&home);
    let mut svc = Service::start(
        &home,
        &host,
        &[("FAILPOINTS", "volume::copy-while-frozen=return")],
    );
    ok(post(&sock, "/VolumeDriver.Create", r#"{"Name":"fv1"}"#));
    ok(post(
        &sock,
        "/VolumeDriver.Mount",
        r#"{"Name":"fv1","ID":"c"}"#,
    ));
    // The service dies while the source is frozen for the copy.
    svc.post_while_dying(
        &sock,
        "/VolumeDriver.Create",
        r#"{"Name":"fv2","Opts":{"volumeName":"fv1"}}"#,
    );
    // The freeze guard thawed it as the service died: writes go through
    // again before anything is restarted.
    let (tx, rx) = std::sync::mpsc::channel();
    let f = home.data("fv1").join("after");
    std::thread::spawn(move || {
        let _ = tx.send(std::fs::write(&f, "ok").and_then(|_| std::fs::File::open(&f)?.sync_all()));
    });
    let wrote = rx.recv_timeout(Duration::from_secs(60));
    if wrote.is_err() {
        // Do not leave a frozen filesystem behind a failed test.
        let _ = Command::new("fsfreeze")
            .arg("-u")
            .arg(home.mount_point("fv1"))
            .status();
    }
    wrote.expect("write to the thawed filesystem").unwrap();
    let _svc = Service::start(&home, &host, &[]);
    assert_eq!(
        count_mounts_at(&home.mount_point("fv1")),
        1,
        "still used by c"
    );
    let names: Vec<String> = ok(post(&sock, "/VolumeDriver.List", "{}"))["Volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["Name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["fv1"], "no half-made copy");
    ok(post(
        &sock,
        "/VolumeDriver.Unmount",
        r#"{"Name":"fv1","ID":"c"}"#,
    ));
}
