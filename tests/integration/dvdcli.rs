//! `dvdcli` driven exactly as its two Mesos callers drive it:
//! mesos-module-dvdi (a shell string per mount/unmount) and Mesos'
//! docker/volume isolator (plain argv, a mount per container, one unmount),
//! on real loop volumes; plus a foreign Docker volume plugin served by the
//! test itself.

use crate::common::*;
use crate::require_root;
use serde_json::{json, Value};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

const SEED_OPTS: &str = "size=5,iops=150,volumetype=io1,newfstype=xfs,overwritefs=true";

fn fstype(target: &Path) -> String {
    let o = run_cmd(
        Command::new("findmnt")
            .args(["-n", "-o", "FSTYPE", "--mountpoint"])
            .arg(target),
    );
    o.stdout.trim().to_string()
}

/// The shell string mesos-module-dvdi builds for a mount
/// (`"%s %s %s%s %s%s %s %s"`: the options string starts with a space and
/// the last field is empty unless explicit create is on).
fn module_mount_line(name: &str, opts: &str, explicit: bool) -> String {
    let options: String = opts
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|o| format!(" --volumeopts={o}"))
        .collect();
    format!(
        "{} {} {}{} {}{} {} {}",
        bin("dvdcli").display(),
        "mount",
        "--volumedriver=",
        "rexray",
        "--volumename=",
        name,
        options,
        if explicit {
            "--explicitCreate=true"
        } else {
            ""
        }
    )
}

/// The module's unmount string (trailing space included).
fn module_unmount_line(name: &str) -> String {
    format!(
        "{} unmount --volumedriver=rexray --volumename={name} ",
        bin("dvdcli").display()
    )
}

/// Run a shell string as the module does (`sh -c`), with the home's env.
fn module(h: &Home, line: &str) -> Out {
    let mut c = Command::new("/bin/sh");
    c.env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("REXRAY_HOME", &h.dir)
        .arg("-c")
        .arg(line);
    for (k, v) in &h.env {
        c.env(k, v);
    }
    run_cmd(&mut c)
}

fn dvdcli(h: &Home, args: &[&str]) -> Out {
    h.run("dvdcli", args)
}

fn volume_json(h: &Home, name: &str) -> Value {
    let out = h.rexray(&["volume", "ls", name, "-f", "json"]);
    let v: Value = serde_json::from_str(out.ok()).unwrap();
    v[0].clone()
}

#[test]
fn mesos_module_dvdi_seed_options() {
    require_root!();
    let h = Home::new();
    let want = format!("{}\n", h.data("test12345").display());

    // First task launch: the volume is created with the seed's options
    // and formatted xfs.
    let out = module(&h, &module_mount_line("test12345", SEED_OPTS, false));
    assert_eq!(out.ok(), want, "stdout is exactly the path: {out:#?}");
    assert_eq!(fstype(&h.mount_point("test12345")), mounted_fs("xfs"));
    let v = volume_json(&h, "test12345");
    // A bucket (s3fs) keeps no size, IOPS or type.
    if test_driver() != TestDriver::S3fs {
        assert_eq!(v["size"], 5, "{v}");
        assert_eq!(v["iops"], 150, "{v}");
        assert_eq!(v["type"], "io1", "{v}");
    }
    std::fs::write(h.data("test12345").join("token"), "kept").unwrap();

    // The same options again (overwritefs=true included) while mounted:
    // same path, no second mount, nothing reformatted.
    let out = module(&h, &module_mount_line("test12345", SEED_OPTS, false));
    assert_eq!(out.ok(), want);
    assert_eq!(count_mounts_at(&h.mount_point("test12345")), 1);
    assert_eq!(h.attached().len(), 1);

    // Task ends: the module unmounts once.
    module(&h, &module_unmount_line("test12345")).ok();
    assert!(h.mounts().is_empty(), "{:?}", h.mounts());
    assert!(h.attached().is_empty(), "{:?}", h.attached());

    // Next launch, with DVDI_VOLUME_EXPLICITCREATE=true and the same
    // overwritefs=true: the data is still there.
    let out = module(&h, &module_mount_line("test12345", SEED_OPTS, true));
    assert_eq!(out.ok(), want);
    assert_eq!(fstype(&h.mount_point("test12345")), mounted_fs("xfs"));
    assert_eq!(
        std::fs::read_to_string(h.data("test12345").join("token")).unwrap(),
        "kept"
    );
    assert_eq!(
        dvdcli(
            &h,
            &["path", "--volumedriver=rexray", "--volumename=test12345"]
        )
        .ok(),
        want
    );
    assert_eq!(
        dvdcli(
            &h,
            &["get", "--volumedriver=rexray", "--volumename=test12345"]
        )
        .ok(),
        "test12345\n"
    );
    assert_eq!(
        dvdcli(&h, &["list", "--volumedriver=rexray"]).ok(),
        "test12345\n"
    );
    module(&h, &module_unmount_line("test12345")).ok();
    // A module that unmounts twice (recovery) is fine; path of an
    // unmounted volume prints nothing.
    module(&h, &module_unmount_line("test12345")).ok();
    assert_eq!(
        dvdcli(
            &h,
            &["path", "--volumedriver=rexray", "--volumename=test12345"]
        )
        .ok(),
        ""
    );

    // Explicit create of a missing volume: an error, nothing made.
    let out = module(&h, &module_mount_line("missing1", SEED_OPTS, true));
    assert_eq!((out.code, out.stdout.as_str()), (1, ""), "{out:#?}");
    assert!(out.stderr.contains("--explicitcreate"), "{}", out.stderr);
    assert_eq!(
        dvdcli(&h, &["list", "--volumedriver=rexray"]).ok(),
        "test12345\n"
    );

    dvdcli(
        &h,
        &["remove", "--volumedriver=rexray", "--volumename=test12345"],
    )
    .ok();
    assert_eq!(dvdcli(&h, &["list", "--volumedriver=rexray"]).ok(), "");
    assert!(h.mounts().is_empty() && h.attached().is_empty());
}

#[test]
fn docker_volume_isolator_mounts_per_container_unmounts_once() {
    require_root!();
    let h = Home::new();
    let mount = [
        "mount",
        "--volumedriver=rexray",
        "--volumename=iso1",
        "--volumeopts=size=1",
        "--volumeopts=newfstype=ext4",
    ];
    let want = format!("{}\n", h.data("iso1").display());
    // Three containers use the volume: three mounts, one mount point.
    for _ in 0..3 {
        assert_eq!(dvdcli(&h, &mount).ok(), want);
    }
    assert_eq!(count_mounts_at(&h.mount_point("iso1")), 1);
    assert_eq!(fstype(&h.mount_point("iso1")), mounted_fs("ext4"));
    // Flags after or before the sub-command, spelled either way.
    assert_eq!(
        dvdcli(
            &h,
            &["--volumeDriver", "rexray", "--volumeName=iso1", "mount"]
        )
        .ok(),
        want
    );
    // The last container goes: one unmount releases it.
    dvdcli(
        &h,
        &["unmount", "--volumedriver=rexray", "--volumename=iso1"],
    )
    .ok();
    assert!(h.mounts().is_empty() && h.attached().is_empty());

    // Another consumer on this host (a Docker container through the
    // rexray service) keeps its mount when dvdcli lets go ...
    let vols = h.volumes();
    vols.mount(
        rexray::volume::VolumeRef::Name("iso1"),
        rexray::state::Consumer::Docker("docker-container-1"),
        &Default::default(),
    )
    .unwrap();
    assert_eq!(dvdcli(&h, &mount).ok(), want);
    dvdcli(
        &h,
        &["unmount", "--volumedriver=rexray", "--volumename=iso1"],
    )
    .ok();
    assert_eq!(count_mounts_at(&h.mount_point("iso1")), 1);
    assert_eq!(
        vols.consumers(rexray::volume::VolumeRef::Name("iso1"))
            .unwrap(),
        vec!["docker:docker-container-1"]
    );

    // ... unless ignoreUsedCount says the scheduler decides.
    h.config("libstorage:\n  integration:\n    volume:\n      operations:\n        unmount:\n          ignoreusedcount: true\n");
    dvdcli(
        &h,
        &["unmount", "--volumedriver=rexray", "--volumename=iso1"],
    )
    .ok();
    assert!(h.mounts().is_empty() && h.attached().is_empty());
    dvdcli(
        &h,
        &["remove", "--volumedriver=rexray", "--volumename=iso1"],
    )
    .ok();
}

#[test]
fn configured_service_names_run_in_process() {
    require_root!();
    let h = Home::new();
    // A service of the run's driver under a name of its own (the loop
    // driver with its images in a directory of its own).
    let d = test_driver().name();
    let fast = format!("fast{d}");
    h.config(&format!(
        "libstorage:\n  service: {d}\n  server:\n    services:\n      {fast}:\n        driver: {d}\nloop:\n  volumePath: {}/imgs\n",
        h.dir.display()
    ));
    // No plugin socket anywhere: a configured service must not be looked
    // up as a plugin.
    let h = h
        .with_env("DVDCLI_PLUGIN_SOCKET_DIRS", "/nonexistent-dvdcli-test")
        .with_env("DVDCLI_PLUGIN_SPEC_DIRS", "/nonexistent-dvdcli-test")
        .with_env("DVDCLI_LOOKUP_TIMEOUT", "0");
    for drv in [fast.as_str(), d, "REXRAY"] {
        let out = dvdcli(
            &h,
            &[
                "mount",
                &format!("--volumedriver={drv}"),
                "--volumename=svc1",
                "--volumeopts=size=1",
            ],
        );
        assert_eq!(out.ok(), format!("{}\n", h.data("svc1").display()), "{drv}");
    }
    assert_eq!(count_mounts_at(&h.mount_point("svc1")), 1);
    dvdcli(
        &h,
        &[
            "unmount",
            &format!("--volumedriver={fast}"),
            "--volumename=svc1",
        ],
    )
    .ok();
    dvdcli(
        &h,
        &[
            "remove",
            &format!("--volumedriver={d}"),
            "--volumename=svc1",
        ],
    )
    .ok();
    assert!(h.mounts().is_empty() && h.attached().is_empty());
}

#[test]
fn parallel_processes_end_consistent() {
    require_root!();
    let h = Arc::new(Home::new());
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let h = Arc::clone(&h);
            std::thread::spawn(move || {
                let name = format!("--volumename=par{}", i % 2);
                let mut outs = Vec::new();
                for _ in 0..3 {
                    outs.push(dvdcli(
                        &h,
                        &[
                            "mount",
                            "--volumedriver=rexray",
                            &name,
                            "--volumeopts=size=1,newfstype=xfs",
                        ],
                    ));
                    outs.push(dvdcli(&h, &["unmount", "--volumedriver=rexray", &name]));
                }
                outs
            })
        })
        .collect();
    for t in threads {
        for out in t.join().unwrap() {
            assert_eq!(out.code, 0, "{out:#?}");
            if !out.stdout.is_empty() {
                assert!(
                    out.stdout.ends_with("/data\n") && out.stdout.lines().count() == 1,
                    "{out:#?}"
                );
            }
        }
    }
    // Every thread ended with an unmount, so the last operation on each
    // volume was one: nothing is left mounted or attached, no record left.
    assert!(h.mounts().is_empty(), "{:?}", h.mounts());
    assert!(h.attached().is_empty(), "{:?}", h.attached());
    assert!(std::fs::read_dir(h.lib().join("mounts"))
        .unwrap()
        .next()
        .is_none());
    // Exactly two volumes were created; nothing is stacked.
    assert_eq!(
        dvdcli(&h, &["list", "--volumedriver=rexray"]).ok(),
        "par0\npar1\n"
    );
    for n in ["par0", "par1"] {
        assert!(count_mounts_at(&h.mount_point(n)) <= 1);
        // A final mount finds (or makes) one xfs mount, and one unmount
        // clears everything.
        let name = format!("--volumename={n}");
        dvdcli(&h, &["mount", "--volumedriver=rexray", &name]).ok();
        assert_eq!(count_mounts_at(&h.mount_point(n)), 1);
        assert_eq!(fstype(&h.mount_point(n)), mounted_fs("xfs"));
    }
    assert_eq!(h.attached().len(), 2);
    for n in ["par0", "par1"] {
        let name = format!("--volumename={n}");
        dvdcli(&h, &["unmount", "--volumedriver=rexray", &name]).ok();
        dvdcli(&h, &["remove", "--volumedriver=rexray", &name]).ok();
    }
    assert!(h.mounts().is_empty() && h.attached().is_empty());
    assert!(std::fs::read_dir(h.lib().join("mounts"))
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn bad_input_changes_nothing() {
    require_root!();
    let h = Home::new()
        .with_env("DVDCLI_LOOKUP_TIMEOUT", "0")
        .with_env("DVDCLI_PLUGIN_SOCKET_DIRS", "/nonexistent-dvdcli-test")
        .with_env("DVDCLI_PLUGIN_SPEC_DIRS", "/nonexistent-dvdcli-test");
    let cases: &[(&[&str], i32, &str)] = &[
        (&["mount", "--volumedriver=rexray"], 2, "--volumename"),
        (
            &["mount", "--volumedriver=rexray", "--volumename="],
            2,
            "--volumename",
        ),
        (&["mount", "--volumename=v1"], 2, "--volumedriver"),
        (
            &["mount", "--volumedriver=nosuchdriver", "--volumename=v1"],
            1,
            "nosuchdriver",
        ),
        (
            &[
                "mount",
                "--volumedriver=rexray",
                "--volumename=v1",
                "--volumeopts=size=abc",
            ],
            1,
            "size \"abc\"",
        ),
        (
            &[
                "mount",
                "--volumedriver=rexray",
                "--volumename=v1",
                "--volumeopts=size=5,colour=red",
            ],
            1,
            "colour",
        ),
        (
            &[
                "mount",
                "--volumedriver=rexray",
                "--volumename=v1",
                "--volumeopts=newfstype=btrfs",
            ],
            1,
            "btrfs",
        ),
        (
            &["mount", "--volumedriver=rexray", "--volumename=a/b"],
            1,
            "\"a/b\"",
        ),
        (
            &["mount", "--volumedriver=rexray", "--volumename=.."],
            1,
            "\"..\"",
        ),
        (
            &["mount", "--volumedriver=rexray", "--volumename=../etc"],
            1,
            "\"../etc\"",
        ),
        (
            &[
                "mount",
                "--volumedriver=rexray",
                "--volumename=v1",
                "--volumeopts=novalue",
            ],
            2,
            "\"novalue\"",
        ),
        (
            &[
                "mount",
                "--volumedriver=rexray",
                "--volumename=v1",
                "--explicitcreate",
            ],
            1,
            "--explicitcreate",
        ),
        (
            &["mount", "--volumedriver=../x", "--volumename=v1"],
            1,
            "--volumedriver",
        ),
        (
            &[
                "mount",
                "--volumedriver=rexray",
                "--volumename=v1",
                "--bogus",
            ],
            2,
            "--bogus",
        ),
        (
            &["unmount", "--volumedriver=rexray", "--volumename=v1"],
            1,
            "v1",
        ),
        (&["frobnicate"], 2, "frobnicate"),
        (&[], 2, "missing command"),
    ];
    for (args, code, want) in cases {
        let out = dvdcli(&h, args);
        assert_eq!(out.code, *code, "{args:?}: {out:#?}");
        assert_eq!(out.stdout, "", "{args:?}: nothing on stdout");
        assert!(out.stderr.contains(want), "{args:?}: {}", out.stderr);
        assert_eq!(
            out.stderr.trim_end().lines().count(),
            1,
            "{args:?}: one line: {}",
            out.stderr
        );
    }
    assert_eq!(dvdcli(&h, &["list", "--volumedriver=rexray"]).ok(), "");
    assert!(h.mounts().is_empty() && h.attached().is_empty());
}

// ---------------------------------------------------------------------------
// A foreign Docker volume plugin (v1), backed by directories.

#[derive(Debug, Clone)]
struct Call {
    method: String,
    accept: String,
    body: String,
}

/// How to wake the accept loop so it sees the stop flag.
enum Wake {
    Unix(PathBuf),
    Tcp(std::net::SocketAddr),
}

/// Serves the v1 plugin protocol on a unix socket (or TCP) until dropped.
struct FakePlugin {
    wake: Wake,
    calls: Arc<Mutex<Vec<Call>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakePlugin {
    fn start(socket: PathBuf, root: PathBuf) -> FakePlugin {
        std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        Self::run(
            std::iter::from_fn(move || Some(listener.accept().map(|(c, _)| c))).map(|c| {
                c.map(|c| {
                    // A stuck client must not hang the test.
                    let _ = c.set_read_timeout(Some(std::time::Duration::from_secs(10)));
                    (c.try_clone().unwrap(), c)
                })
            }),
            Wake::Unix(socket),
            root,
        )
    }

    fn start_tcp(root: PathBuf) -> FakePlugin {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        Self::run(
            std::iter::from_fn(move || Some(listener.accept().map(|(c, _)| c))).map(|c| {
                c.map(|c| {
                    // A stuck client must not hang the test.
                    let _ = c.set_read_timeout(Some(std::time::Duration::from_secs(10)));
                    (c.try_clone().unwrap(), c)
                })
            }),
            Wake::Tcp(addr),
            root,
        )
    }

    fn run<R, W>(
        conns: impl Iterator<Item = std::io::Result<(R, W)>> + Send + 'static,
        wake: Wake,
        root: PathBuf,
    ) -> FakePlugin
    where
        R: Read + Send + 'static,
        W: Write + Send + 'static,
    {
        std::fs::create_dir_all(root.join("vols")).unwrap();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (Arc::clone(&calls), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            for conn in conns {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok((r, w)) = conn else { continue };
                let _ = serve(r, w, &root, &c);
            }
        });
        FakePlugin {
            wake,
            calls,
            stop,
            thread: Some(thread),
        }
    }

    fn tcp_addr(&self) -> String {
        match &self.wake {
            Wake::Tcp(a) => a.to_string(),
            Wake::Unix(_) => panic!("not a TCP plugin"),
        }
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
    fn methods(&self) -> Vec<String> {
        self.calls().into_iter().map(|c| c.method).collect()
    }
    fn clear(&self) {
        self.calls.lock().unwrap().clear();
    }
}

impl Drop for FakePlugin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        match &self.wake {
            Wake::Unix(p) => drop(std::os::unix::net::UnixStream::connect(p)),
            Wake::Tcp(a) => drop(std::net::TcpStream::connect(a)),
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    reader: impl Read,
    mut w: impl Write,
    root: &Path,
    calls: &Mutex<Vec<Call>>,
) -> std::io::Result<()> {
    let mut r = BufReader::new(reader);
    let (line, fields) = read_head(&mut r)?;
    let path = line.split(' ').nth(1).unwrap_or("").to_string();
    let len: usize = header(&fields, "content-length").map_or(0, |v| v.parse().unwrap_or(0));
    let accept = header(&fields, "accept").unwrap_or("").to_string();
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    let body = String::from_utf8_lossy(&body).into_owned();
    let method = path.trim_start_matches('/').to_string();
    calls.lock().unwrap().push(Call {
        method: method.clone(),
        accept,
        body: body.clone(),
    });
    let req: Value = serde_json::from_str(&body).unwrap_or(json!({}));
    let name = req["Name"].as_str().unwrap_or("").to_string();
    let vol = root.join("vols").join(&name);
    let exists = !name.is_empty() && vol.is_dir();
    let (status, reply) = match method.as_str() {
        "Plugin.Activate" => (200, json!({"Implements": ["VolumeDriver"]})),
        "VolumeDriver.Get" if exists => (
            200,
            json!({"Volume": {"Name": name, "Mountpoint": if vol.join(".mounted").exists() { vol.display().to_string() } else { String::new() }}}),
        ),
        "VolumeDriver.Get" => (200, json!({"Err": format!("no such volume: {name}")})),
        "VolumeDriver.Create" => {
            std::fs::create_dir_all(&vol)?;
            std::fs::write(vol.join(".opts"), req["Opts"].to_string())?;
            (200, json!({"Err": ""}))
        }
        "VolumeDriver.Mount" if name == "broken" => {
            (500, json!({"Error": "boom: the backend is down"}))
        }
        "VolumeDriver.Mount" if exists => {
            std::fs::write(vol.join(".mounted"), "")?;
            (
                200,
                json!({"Mountpoint": vol.display().to_string(), "Err": ""}),
            )
        }
        "VolumeDriver.Unmount" if exists => {
            let _ = std::fs::remove_file(vol.join(".mounted"));
            (200, json!({}))
        }
        "VolumeDriver.Path" if exists => (200, json!({"Mountpoint": ""})),
        "VolumeDriver.Remove" if exists => {
            std::fs::remove_dir_all(&vol)?;
            (200, json!({}))
        }
        "VolumeDriver.List" => {
            let mut names: Vec<String> = std::fs::read_dir(root.join("vols"))?
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            let vols: Vec<Value> = names.iter().map(|n| json!({"Name": n})).collect();
            (200, json!({"Volumes": vols}))
        }
        m if m.starts_with("VolumeDriver.") => {
            (200, json!({"Err": format!("no such volume: {name}")}))
        }
        _ => (404, json!({"Err": "404 page not found"})),
    };
    let text = format!("{reply}\n");
    // Mount replies chunked, everything else with a length, so the
    // client's both paths are exercised.
    if method == "VolumeDriver.Mount" && status == 200 {
        let (a, b) = text.split_at(text.len() / 2);
        write!(
            w,
            "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.plugins.v1.1+json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
            a.len(),
            b.len()
        )?;
    } else {
        write!(
            w,
            "HTTP/1.1 {status} X\r\nContent-Type: application/vnd.docker.plugins.v1.2+json\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        )?;
    }
    w.flush()
}

#[test]
fn foreign_docker_plugin_over_its_socket() {
    let h = Home::new();
    let sockets = h.dir.join("run/docker/plugins");
    let specs = h.dir.join("specs");
    let h = h
        .with_env("DVDCLI_PLUGIN_SOCKET_DIRS", &sockets.to_string_lossy())
        .with_env("DVDCLI_PLUGIN_SPEC_DIRS", &specs.to_string_lossy())
        .with_env("DVDCLI_LOOKUP_TIMEOUT", "0");
    // The `<n>/<n>.sock` form.
    let plugin = FakePlugin::start(sockets.join("fakedrv/fakedrv.sock"), h.dir.join("fake"));
    let vol = h.dir.join("fake/vols/fv1");

    let out = dvdcli(
        &h,
        &[
            "mount",
            "--volumedriver=fakedrv",
            "--volumename=fv1",
            "--volumeopts=Size=5,iops=150",
            "--volumeopts=volumetype=io1",
        ],
    );
    assert_eq!(out.ok(), format!("{}\n", vol.display()));
    assert_eq!(
        plugin.methods(),
        [
            "Plugin.Activate",
            "VolumeDriver.Get",
            "VolumeDriver.Create",
            "VolumeDriver.Mount"
        ]
    );
    let calls = plugin.calls();
    assert!(
        calls
            .iter()
            .all(|c| c.accept == "application/vnd.docker.plugins.v1.2+json"),
        "{calls:?}"
    );
    assert_eq!(calls[0].body, "", "Activate has an empty body");
    // Opts are forwarded verbatim; Mount carries no ID (a Docker 1.11 client).
    let create: Value = serde_json::from_str(&calls[2].body).unwrap();
    assert_eq!(
        create,
        json!({"Name": "fv1", "Opts": {"Size": "5", "iops": "150", "volumetype": "io1"}})
    );
    assert!(calls[2].body.ends_with('\n'));
    let mount: Value = serde_json::from_str(&calls[3].body).unwrap();
    assert_eq!(mount, json!({"Name": "fv1"}));

    // Mount again: Get finds it, no Create.
    plugin.clear();
    dvdcli(
        &h,
        &[
            "mount",
            "--volumedriver=fakedrv",
            "--volumename=fv1",
            "--explicitCreate=true",
        ],
    )
    .ok();
    assert_eq!(
        plugin.methods(),
        ["Plugin.Activate", "VolumeDriver.Get", "VolumeDriver.Mount"]
    );
    assert_eq!(
        dvdcli(&h, &["path", "--volumedriver=fakedrv", "--volumename=fv1"]).ok(),
        format!("{}\n", vol.display())
    );
    assert_eq!(
        dvdcli(&h, &["get", "--volumedriver=fakedrv", "--volumename=fv1"]).ok(),
        "fv1\n"
    );
    assert_eq!(
        dvdcli(&h, &["list", "--volumedriver=fakedrv"]).ok(),
        "fv1\n"
    );
    plugin.clear();
    dvdcli(
        &h,
        &["unmount", "--volumedriver=fakedrv", "--volumename=fv1"],
    )
    .ok();
    assert_eq!(
        plugin.methods(),
        ["Plugin.Activate", "VolumeDriver.Unmount"]
    );
    assert!(!vol.join(".mounted").exists());

    // Explicit create of a missing volume: no Create call, nothing printed.
    plugin.clear();
    let out = dvdcli(
        &h,
        &[
            "mount",
            "--volumedriver=fakedrv",
            "--volumename=fv2",
            "--explicitcreate",
        ],
    );
    assert_eq!((out.code, out.stdout.as_str()), (1, ""), "{out:#?}");
    assert!(!plugin
        .methods()
        .contains(&"VolumeDriver.Create".to_string()));

    // A plugin error reaches stderr, nothing on stdout.
    let out = dvdcli(
        &h,
        &["mount", "--volumedriver=fakedrv", "--volumename=broken"],
    );
    assert_eq!((out.code, out.stdout.as_str()), (1, ""), "{out:#?}");
    assert!(
        out.stderr
            .contains("VolumeDriver.Mount: boom: the backend is down"),
        "{}",
        out.stderr
    );

    dvdcli(
        &h,
        &["remove", "--volumedriver=fakedrv", "--volumename=fv1"],
    )
    .ok();
    assert_eq!(
        dvdcli(&h, &["list", "--volumedriver=fakedrv"]).ok(),
        "broken\n"
    );
}

#[test]
fn foreign_plugin_found_by_spec_file_and_after_a_late_start() {
    let h = Home::new();
    let specs = h.dir.join("specs");
    std::fs::create_dir_all(&specs).unwrap();
    let sock = h.dir.join("elsewhere/late.sock");
    std::fs::write(
        specs.join("late.spec"),
        format!("unix://{}\n", sock.display()),
    )
    .unwrap();
    let run = h.dir.join("run");
    let h = h
        .with_env("DVDCLI_PLUGIN_SOCKET_DIRS", &run.to_string_lossy())
        .with_env("DVDCLI_PLUGIN_SPEC_DIRS", &specs.to_string_lossy())
        .with_env("DVDCLI_LOOKUP_TIMEOUT", "10");
    // The plugin comes up after dvdcli started: the connection is retried.
    let child = h
        .command("dvdcli")
        .args(["mount", "--volumedriver=late", "--volumename=lv1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let _plugin = FakePlugin::start(sock, h.dir.join("fake"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let o = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("dvdcli finishes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(
        stdout,
        format!("{}\n", h.dir.join("fake/vols/lv1").display())
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("retrying"),
        "{o:?}"
    );
}

#[test]
fn foreign_plugin_over_tcp_from_a_json_spec() {
    let h = Home::new();
    let specs = h.dir.join("specs");
    std::fs::create_dir_all(specs.join("tcpdrv")).unwrap();
    let plugin = FakePlugin::start_tcp(h.dir.join("fake"));
    // The `<n>/<n>.json` form, as Docker documents it.
    std::fs::write(
        specs.join("tcpdrv/tcpdrv.json"),
        json!({"Name": "tcpdrv", "Addr": format!("tcp://{}", plugin.tcp_addr())}).to_string(),
    )
    .unwrap();
    let run = h.dir.join("run");
    let h = h
        .with_env("DVDCLI_PLUGIN_SOCKET_DIRS", &run.to_string_lossy())
        .with_env("DVDCLI_PLUGIN_SPEC_DIRS", &specs.to_string_lossy())
        .with_env("DVDCLI_LOOKUP_TIMEOUT", "0");
    let out = dvdcli(
        &h,
        &[
            "mount",
            "--volumedriver=tcpdrv",
            "--volumename=tv1",
            "--volumeopts=size=2",
        ],
    );
    assert_eq!(
        out.ok(),
        format!("{}\n", h.dir.join("fake/vols/tv1").display())
    );
    assert_eq!(
        plugin.methods(),
        [
            "Plugin.Activate",
            "VolumeDriver.Get",
            "VolumeDriver.Create",
            "VolumeDriver.Mount"
        ]
    );
    dvdcli(
        &h,
        &["unmount", "--volumedriver=tcpdrv", "--volumename=tv1"],
    )
    .ok();
    dvdcli(&h, &["remove", "--volumedriver=tcpdrv", "--volumename=tv1"]).ok();
    assert_eq!(dvdcli(&h, &["list", "--volumedriver=tcpdrv"]).ok(), "");
}

/// The filesystem UUID on a volume's image ("" when it has none).
fn image_uuid(h: &Home) -> String {
    let Ok(rd) = std::fs::read_dir(h.lib().join("loop")) else {
        return String::new();
    };
    let Some(img) = rd
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "img"))
    else {
        return String::new();
    };
    run_cmd(
        Command::new("blkid")
            .args(["-o", "value", "-s", "UUID"])
            .arg(img),
    )
    .stdout
    .trim()
    .to_string()
}

#[test]
fn killed_at_every_step_the_next_call_converges() {
    require_root!();
    let mount = [
        "mount",
        "--volumedriver=rexray",
        "--volumename=crash1",
        "--volumeopts=size=1,newfstype=xfs,overwritefs=true",
    ];
    let unmount = ["unmount", "--volumedriver=rexray", "--volumename=crash1"];
    for fp in CREATE_FAILPOINTS
        .iter()
        .chain(MOUNT_FAILPOINTS)
        .chain(CEPH_MOUNT_FAILPOINTS)
        .filter(|fp| fires_for_driver(fp))
    {
        let h = Home::new();
        if client_mode() && fires_in_controller(fp) {
            // The controller dies mid-request: the node's call fails,
            // naming the server, and prints no path; the controller is
            // started again before the retry.
            h.restart_controller(&format!("{fp}=return"));
            let out = dvdcli(&h, &mount);
            assert_eq!((out.code, out.stdout.as_str()), (1, ""), "{fp}: {out:#?}");
            assert!(
                out.stderr.contains("libStorage server at unix://"),
                "{fp}: {out:#?}"
            );
            h.restart_controller("");
        } else {
            let out = run_cmd(
                h.command("dvdcli")
                    .env("FAILPOINTS", format!("{fp}=return"))
                    .args(mount),
            );
            assert_eq!(
                (out.code, out.stdout.as_str()),
                (-1, ""),
                "{fp}: killed: {out:#?}"
            );
        }
        let uuid = image_uuid(&h);
        // Mesos retries the task: same argv, overwritefs=true included.
        assert_eq!(
            dvdcli(&h, &mount).ok(),
            format!("{}\n", h.data("crash1").display()),
            "{fp}"
        );
        if !uuid.is_empty() {
            assert_eq!(image_uuid(&h), uuid, "{fp}: the filesystem was remade");
        }
        assert_eq!(count_mounts_at(&h.mount_point("crash1")), 1, "{fp}");
        assert_eq!(fstype(&h.mount_point("crash1")), mounted_fs("xfs"), "{fp}");
        assert_eq!(h.attached().len(), 1, "{fp}");
        dvdcli(&h, &unmount).ok();
        assert!(h.mounts().is_empty() && h.attached().is_empty(), "{fp}");
    }
    for fp in [
        "volume::unmount-after-record",
        "volume::unmount-after-unmount",
        "volume::unmount-after-detach",
    ] {
        let h = Home::new();
        dvdcli(&h, &mount).ok();
        std::fs::write(h.data("crash1").join("token"), fp).unwrap();
        let out = run_cmd(
            h.command("dvdcli")
                .env("FAILPOINTS", format!("{fp}=return"))
                .args(unmount),
        );
        assert_eq!(out.code, -1, "{fp}: killed: {out:#?}");
        dvdcli(&h, &unmount).ok();
        assert!(h.mounts().is_empty() && h.attached().is_empty(), "{fp}");
        dvdcli(&h, &mount).ok();
        assert_eq!(
            std::fs::read_to_string(h.data("crash1").join("token")).unwrap(),
            fp
        );
        dvdcli(&h, &unmount).ok();
    }
}

/// dvdcli reaching a real `rexray service` as a foreign driver, by its
/// socket, from a host with no configuration for it: the same calls a
/// Mesos agent makes against any Docker volume plugin.
#[test]
fn rexray_service_as_a_foreign_plugin() {
    require_root!();
    let svc_home = Home::new();
    let plugins = svc_home.dir.join("plugins");
    let sock = plugins.join("rxforeign.sock");
    let mut svc =
        crate::docker::Service::start(&svc_home, &format!("unix://{}", sock.display()), &[]);
    let h = Home::new()
        .with_env("DVDCLI_PLUGIN_SOCKET_DIRS", &plugins.to_string_lossy())
        .with_env("DVDCLI_LOOKUP_TIMEOUT", "0");
    let mount = [
        "mount",
        "--volumedriver=rxforeign",
        "--volumename=fx1",
        "--volumeopts=size=1,newfstype=xfs",
    ];
    let out = dvdcli(&h, &mount);
    assert_eq!(out.ok(), format!("{}\n", svc_home.data("fx1").display()));
    assert_eq!(fstype(&svc_home.mount_point("fx1")), mounted_fs("xfs"));
    std::fs::write(svc_home.data("fx1").join("token"), "kept").unwrap();
    // Mount again (the docker/volume isolator does, per container): same path, one mount.
    assert_eq!(
        dvdcli(&h, &mount).ok(),
        format!("{}\n", svc_home.data("fx1").display())
    );
    assert_eq!(count_mounts_at(&svc_home.mount_point("fx1")), 1);
    let unmount = ["unmount", "--volumedriver=rxforeign", "--volumename=fx1"];
    dvdcli(&h, &unmount).ok();
    assert_eq!(count_mounts_at(&svc_home.mount_point("fx1")), 0);
    assert!(svc_home.attached().is_empty());
    // Remount: the filesystem and the token are still there.
    dvdcli(&h, &mount).ok();
    assert_eq!(
        std::fs::read_to_string(svc_home.data("fx1").join("token")).unwrap(),
        "kept"
    );
    dvdcli(&h, &unmount).ok();
    // The calling host has no volume of its own: everything went through the socket.
    assert!(h.rexray(&["volume", "ls", "-q"]).ok().is_empty());
    svc.stop();
    assert!(!sock.exists(), "the service removed its socket");
    svc_home.rexray(&["volume", "rm", "fx1"]).ok();
}
