//! Several Docker drivers from one `rexray service start`: every
//! `rexray.modules.<name>` of type `docker` is its own endpoint over its
//! own service, driven here with the plugin protocol as dockerd speaks it,
//! and (in `docker::`, run alone like the other dockerd tests) by a real
//! private dockerd listing the drivers side by side.

use crate::common::*;
use crate::docker::{err, ok, post, Service};
use crate::require_root;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Names of the volumes a module lists.
fn names(sock: &Path) -> Vec<String> {
    let mut n: Vec<String> = ok(post(sock, "/VolumeDriver.List", "{}"))["Volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["Name"].as_str().unwrap().to_string())
        .collect();
    n.sort();
    n
}

fn get(sock: &Path, name: &str) -> Value {
    ok(post(
        sock,
        "/VolumeDriver.Get",
        &json!({ "Name": name }).to_string(),
    ))["Volume"]
        .clone()
}

/// A home with two Docker modules beside default-docker: `loop1` on the
/// loop service (new volumes of 1 GiB by its own setting) and `vfs1` on the
/// vfs service (the mount point itself handed out: rootPath `/`, and a
/// header timeout of 1 s), each on a private socket. Returns the home and
/// the sockets (default, loop1, vfs1).
fn two_modules(extra_yaml: &str) -> (Home, [PathBuf; 3]) {
    let home = Home::new();
    let (l, v) = (home.dir.join("loop1.sock"), home.dir.join("vfs1.sock"));
    home.config(&format!(
        "rexray:
  modules:
    loop1:
      type: docker
      desc: loop volumes
      host: unix://{}
      libstorage:
        service: loop
        integration:
          volume:
            operations:
              create:
                default:
                  size: 1
    vfs1:
      type: docker
      host: unix://{}
      headerTimeout: 1s
      libstorage:
        service: vfs
        integration:
          volume:
            operations:
              mount:
                rootPath: /
libstorage:
  service: loop
{extra_yaml}",
        l.display(),
        v.display()
    ));
    let (_, d) = unix_host(&home);
    (home, [d, l, v])
}

#[test]
fn two_docker_modules_serve_their_own_services() {
    require_root!();
    let (home, [d, l, v]) = two_modules("");
    let (host, _) = unix_host(&home);
    let mut svc = Service::start(&home, &host, &[]);
    for s in [&d, &l, &v] {
        assert_eq!(
            ok(post(s, "/Plugin.Activate", "")),
            json!({"Implements": ["VolumeDriver"]})
        );
        assert_eq!(names(s), Vec::<String>::new());
    }
    // The startup log names every module with its socket and service.
    let log = svc.log_text();
    for (m, s, service) in [
        ("default-docker", &d, "loop"),
        ("loop1", &l, "loop"),
        ("vfs1", &v, "vfs"),
    ] {
        assert!(
            log.lines()
                .any(|line| line.contains("serving the Docker volume plugin API")
                    && line.contains(&format!("module=\"{m}\""))
                    && line.contains(&format!("url=\"unix://{}\"", s.display()))
                    && line.contains(&format!("service=\"{service}\""))),
            "{m}: {log}"
        );
    }

    ok(post(&l, "/VolumeDriver.Create", r#"{"Name":"lv1"}"#));
    ok(post(&v, "/VolumeDriver.Create", r#"{"Name":"vv1"}"#));
    // Each lists its own service's volumes; default-docker serves loop too.
    assert_eq!(names(&l), ["lv1"]);
    assert_eq!(names(&d), ["lv1"]);
    assert_eq!(names(&v), ["vv1"]);
    let e = err(post(&v, "/VolumeDriver.Get", r#"{"Name":"lv1"}"#));
    assert!(e.contains("not found"), "{e}");
    let e = err(post(&l, "/VolumeDriver.Get", r#"{"Name":"vv1"}"#));
    assert!(e.contains("not found"), "{e}");
    let e = err(post(
        &l,
        "/VolumeDriver.Mount",
        r#"{"Name":"vv1","ID":"x"}"#,
    ));
    assert!(e.contains("not found"), "{e}");

    // Their own settings: loop1 makes 1 GiB volumes (default-docker the
    // global 16), vfs1 hands out the mount point itself.
    let lv = get(&l, "lv1");
    assert_eq!(lv["Status"]["size"], json!(1), "{lv}");
    assert_eq!(lv["Status"]["service"], json!("loop"), "{lv}");
    let vv = get(&v, "vv1");
    assert_eq!(vv["Status"]["service"], json!("vfs"), "{vv}");
    ok(post(&d, "/VolumeDriver.Create", r#"{"Name":"dv1"}"#));
    assert_eq!(get(&d, "dv1")["Status"]["size"], json!(16));
    assert_eq!(names(&l), ["dv1", "lv1"]);
    assert_eq!(names(&v), ["vv1"]);

    // Mount, write, Path, Unmount on each.
    let lm = ok(post(
        &l,
        "/VolumeDriver.Mount",
        r#"{"Name":"lv1","ID":"a"}"#,
    ));
    assert_eq!(lm["Mountpoint"], json!(home.data("lv1")), "{lm}");
    let vm = ok(post(
        &v,
        "/VolumeDriver.Mount",
        r#"{"Name":"vv1","ID":"b"}"#,
    ));
    assert_eq!(vm["Mountpoint"], json!(home.mount_point("vv1")), "{vm}");
    std::fs::write(home.data("lv1").join("f"), "loop\n").unwrap();
    std::fs::write(home.mount_point("vv1").join("f"), "vfs\n").unwrap();
    assert_eq!(
        ok(post(&l, "/VolumeDriver.Path", r#"{"Name":"lv1"}"#))["Mountpoint"],
        json!(home.data("lv1"))
    );
    assert_eq!(
        ok(post(&v, "/VolumeDriver.Path", r#"{"Name":"vv1"}"#))["Mountpoint"],
        json!(home.mount_point("vv1"))
    );
    assert_eq!(get(&v, "vv1")["Mountpoint"], json!(home.mount_point("vv1")));
    assert_eq!(count_mounts_at(&home.mount_point("lv1")), 1);
    assert_eq!(count_mounts_at(&home.mount_point("vv1")), 1);
    // The vfs volume is a directory of the vfs service.
    let vfs_copy = walk_for(&home.lib().join("vfs"), "f");
    assert_eq!(std::fs::read_to_string(&vfs_copy).unwrap(), "vfs\n");

    // `rexray service status` lists every module; `rexray env` its keys.
    let st = home.rexray(&["service", "status"]);
    let out = st.ok();
    for line in [
        format!(
            "module default-docker: unix://{}, service loop",
            d.display()
        ),
        format!("module loop1: unix://{}, service loop", l.display()),
        format!("module vfs1: unix://{}, service vfs", v.display()),
    ] {
        assert!(out.contains(&line), "{line} in {out}");
    }
    assert!(out.starts_with(&format!("rexray service is running: pid {}", svc.pid())));
    let env = home.rexray(&["env"]);
    let env = env.ok();
    for want in [
        "REXRAY_MODULES_LOOP1_TYPE=docker  # file:".to_string(),
        format!("REXRAY_MODULES_VFS1_HOST=unix://{}  # file:", v.display()),
        "REXRAY_MODULES_VFS1_LIBSTORAGE_SERVICE=vfs  # file:".into(),
        "REXRAY_MODULES_VFS1_HEADERTIMEOUT=1s  # file:".into(),
        "REXRAY_MODULES_LOOP1_MAXCONNECTIONS=1024  # default".into(),
        "REXRAY_MODULES_LOOP1_LIBSTORAGE_INTEGRATION_VOLUME_OPERATIONS_CREATE_DEFAULT_SIZE=1  # file:".into(),
        "REXRAY_MODULES_VFS1_LIBSTORAGE_INTEGRATION_VOLUME_OPERATIONS_MOUNT_ROOTPATH=/  # file:".into(),
    ] {
        assert!(env.contains(&want), "{want} in {env}");
    }

    // The consumers survive a restart of the service, per module: no
    // module's clean-up takes another service's records or mounts.
    svc.restart(&home);
    assert_eq!(count_mounts_at(&home.mount_point("lv1")), 1);
    assert_eq!(count_mounts_at(&home.mount_point("vv1")), 1);
    let records = crate::docker::mount_record(&home);
    assert_eq!(records.len(), 2, "{records:?}");
    ok(post(
        &l,
        "/VolumeDriver.Unmount",
        r#"{"Name":"lv1","ID":"a"}"#,
    ));
    ok(post(
        &v,
        "/VolumeDriver.Unmount",
        r#"{"Name":"vv1","ID":"b"}"#,
    ));
    assert_eq!(count_mounts_at(&home.mount_point("lv1")), 0);
    assert_eq!(count_mounts_at(&home.mount_point("vv1")), 0);
    assert!(home.loops().is_empty(), "{:?}", home.loops());
    assert!(get(&v, "vv1").get("Mountpoint").is_none());

    for (s, n) in [(&l, "lv1"), (&v, "vv1"), (&d, "dv1")] {
        ok(post(
            s,
            "/VolumeDriver.Remove",
            &json!({ "Name": n }).to_string(),
        ));
    }
    for s in [&d, &l, &v] {
        assert_eq!(names(s), Vec::<String>::new());
    }
    assert_eq!(svc.stop(), Some(0));
    for s in [&d, &l, &v] {
        assert!(!s.exists(), "{} left behind", s.display());
    }
    assert!(home.mounts().is_empty() && home.loops().is_empty());
}

/// The first file named `name` under `dir`.
fn walk_for(dir: &Path, name: &str) -> PathBuf {
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                todo.push(p);
            } else if e.file_name() == name {
                return p;
            }
        }
    }
    panic!("no {name} under {}", dir.display());
}

/// A name is one volume across the modules that mount at one place: a
/// second service's volume of that name would mount over the first's.
#[test]
fn a_name_is_unique_across_modules_that_share_the_mount_path() {
    require_root!();
    if client_mode_na(
        "a server makes names unique across all its services: the clash is refused by the server, not by the module (src/api/server_tests.rs)",
    ) {
        return;
    }
    let (home, [d, l, v]) = two_modules("");
    let (host, _) = unix_host(&home);
    let _svc = Service::start(&home, &host, &[]);
    ok(post(&l, "/VolumeDriver.Create", r#"{"Name":"same"}"#));
    let e = err(post(&v, "/VolumeDriver.Create", r#"{"Name":"same"}"#));
    assert!(
        e.contains("volume same is also a volume of service loop (Docker driver ")
            && e.contains(&format!("({})", home.mount_point("same").display()))
            && e.contains("unique"),
        "{e}"
    );
    assert_eq!(names(&v), Vec::<String>::new());
    // Modules of one service share the volume itself.
    ok(post(&d, "/VolumeDriver.Create", r#"{"Name":"same"}"#));
    let m = ok(post(
        &d,
        "/VolumeDriver.Mount",
        r#"{"Name":"same","ID":"a"}"#,
    ));
    assert_eq!(m["Mountpoint"], json!(home.data("same")));
    ok(post(
        &l,
        "/VolumeDriver.Unmount",
        r#"{"Name":"same","ID":"a"}"#,
    ));
    assert_eq!(count_mounts_at(&home.mount_point("same")), 0);

    // A vfs volume of that name made behind the service's back (the CLI)
    // is never mounted, unmounted or removed through either module.
    home.rexray(&["-s", "vfs", "volume", "create", "same"]).ok();
    for (s, path, body) in [
        (&v, "/VolumeDriver.Mount", r#"{"Name":"same","ID":"c"}"#),
        (&v, "/VolumeDriver.Path", r#"{"Name":"same"}"#),
        (&v, "/VolumeDriver.Remove", r#"{"Name":"same"}"#),
        (&l, "/VolumeDriver.Mount", r#"{"Name":"same","ID":"c"}"#),
        (&l, "/VolumeDriver.Remove", r#"{"Name":"same"}"#),
    ] {
        let e = err(post(s, path, body));
        assert!(e.contains("unique"), "{path}: {e}");
    }
    assert_eq!(count_mounts_at(&home.mount_point("same")), 0);
    assert_eq!(names(&v), ["same"]);
    assert_eq!(names(&l), ["same"]);
}

/// Each module has its own connection limits: vfs1 closes a connection
/// that sends no request within its 1 s header timeout, loop1 (10 s) keeps
/// its own.
#[test]
fn connection_limits_are_per_module() {
    let (home, [_, l, v]) = two_modules("");
    let (host, _) = unix_host(&home);
    let svc = Service::start(&home, &host, &[]);
    let stalled = |s: &Path| {
        let mut c = UnixStream::connect(s).unwrap();
        c.write_all(b"POST /VolumeDriver.List HTTP/1.1\r\n")
            .unwrap();
        c.set_read_timeout(Some(Duration::from_secs(4))).unwrap();
        c
    };
    let (mut cl, mut cv) = (stalled(&l), stalled(&v));
    let mut buf = [0u8; 256];
    // vfs1's is closed after about a second: end of file, not a timeout.
    let t = std::time::Instant::now();
    let n = cv.read(&mut buf);
    assert!(
        matches!(n, Ok(0))
            || n.as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "{n:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    // loop1's is still open.
    let e = cl.read(&mut buf).unwrap_err();
    assert!(
        matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{e}"
    );
    // The report names the module's key (within the sweeper's 10 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !svc.log_text().contains("rexray.modules.vfs1.headerTimeout") {
        assert!(std::time::Instant::now() < deadline, "{}", svc.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!svc
        .log_text()
        .contains("rexray.modules.loop1.headerTimeout"));
    assert_eq!(names(&l), Vec::<String>::new());
}

/// Bad module settings stop the start with the key named, before anything
/// is made.
#[test]
fn bad_modules_are_refused_before_anything_changes() {
    let home = Home::new();
    let sock = home.dir.join("a.sock");
    let (host, dsock) = unix_host(&home);
    let start = |yaml: &str| {
        home.config(yaml);
        let mut c = home.command("rexray");
        c.args(["service", "start"])
            .env("REXRAY_MODULES_DEFAULT_DOCKER_HOST", &host);
        let o = run_cmd(&mut c);
        assert!(!home.dir.join("var/run/rexray.pid").exists());
        assert!(!sock.exists() && !dsock.exists());
        o
    };
    let o = start("rexray:\n  modules:\n    m1:\n      type: nfs\n");
    let e = o.fails(1);
    assert!(
        e.contains("unknown module type \"nfs\" for rexray.modules.m1.type"),
        "{e}"
    );
    // A csi module needs a socket: its host or CSI_ENDPOINT.
    let o = start("rexray:\n  modules:\n    m1:\n      type: csi\n");
    let e = o.fails(1);
    assert!(
        e.contains("rexray.modules.m1.host") && e.contains("CSI_ENDPOINT"),
        "{e}"
    );
    let o = start(&format!(
        "rexray:\n  modules:\n    m1:\n      type: csi\n      host: {host}\n"
    ));
    let e = o.fails(1);
    assert!(
        e.contains("rexray.modules.default-docker.host and rexray.modules.m1.host"),
        "{e}"
    );
    let o = start("rexray:\n  modules:\n    m1:\n      desc: no type\n");
    assert!(o.fails(1).contains("rexray.modules.m1.type"), "{o:?}");
    let o = start(&format!(
        "rexray:\n  modules:\n    m1:\n      type: docker\n      host: unix://{0}\n    m2:\n      type: docker\n      host: unix://{0}\n",
        sock.display()
    ));
    let e = o.fails(1);
    assert!(
        e.contains("rexray.modules.m1.host and rexray.modules.m2.host") && e.contains("own socket"),
        "{e}"
    );
    let o = start(&format!(
        "rexray:\n  modules:\n    m1:\n      type: docker\n      host: {host}\n"
    ));
    let e = o.fails(1);
    assert!(
        e.contains("rexray.modules.default-docker.host and rexray.modules.m1.host"),
        "{e}"
    );
    let o = start(&format!(
        "rexray:\n  modules:\n    m1:\n      type: docker\n      host: unix://{}\nlibstorage:\n  server:\n    endpoints:\n      a:\n        address: unix://{}\n",
        sock.display(),
        sock.display()
    ));
    assert!(
        o.fails(1).contains("libstorage.server.endpoints.a.address"),
        "{o:?}"
    );
    let o = start("rexray:\n  modules:\n    m1:\n      type: docker\n      host: http://x\n");
    assert!(
        o.fails(1).contains("invalid rexray.modules.m1.host"),
        "{o:?}"
    );
    // A module whose service has no driver: named with its module.
    let o = start(&format!(
        "rexray:\n  modules:\n    m1:\n      type: docker\n      host: unix://{}\n      libstorage:\n        service: nosuch\n",
        sock.display()
    ));
    let e = o.fails(1);
    assert!(e.contains("Docker module m1 (service nosuch)"), "{e}");
    // Disabled, a module is not even read.
    home.config("rexray:\n  modules:\n    m1:\n      type: csi\n      disabled: true\n");
    let _svc = Service::start(&home, &host, &[]);
    ok(post(&dsock, "/Plugin.Activate", ""));
}

/// A node whose modules are clients of a libStorage server (its
/// `libstorage.host`): each module reaches its own service there.
#[test]
fn modules_of_a_node_are_clients_of_the_server() {
    require_root!();
    if client_mode_na("this test starts its own server and makes the node its client") {
        return;
    }
    let server = Home::new();
    let api = server.dir.join("ls.sock");
    let vfs_root = server.dir.join("vfsroot");
    server.config(&format!(
        "libstorage:\n  service: loop\n  server:\n    endpoints:\n      local:\n        address: unix://{}\n    services:\n      loop:\n        driver: loop\n      vfs:\n        driver: vfs\nvfs:\n  root: {}\n",
        api.display(),
        vfs_root.display()
    ));
    let (shost, _) = unix_host(&server);
    let _server = Service::start(&server, &shost, &[]);

    let (node, [_, l, v]) = two_modules(&format!(
        "  host: unix://{}\nvfs:\n  root: {}\n",
        api.display(),
        vfs_root.display()
    ));
    let (host, _) = unix_host(&node);
    let _svc = Service::start(&node, &host, &[]);
    ok(post(&l, "/VolumeDriver.Create", r#"{"Name":"nl1"}"#));
    ok(post(&v, "/VolumeDriver.Create", r#"{"Name":"nv1"}"#));
    // The server holds them, each in its service.
    let ls = |svc: &str| {
        let o = server.rexray(&["-s", svc, "volume", "ls", "--format", "json"]);
        let all: Value = serde_json::from_str(o.ok()).unwrap();
        all.as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(ls("loop"), ["nl1"]);
    assert_eq!(ls("vfs"), ["nv1"]);
    // The server refuses a name another of its services has.
    let e = err(post(&v, "/VolumeDriver.Create", r#"{"Name":"nl1"}"#));
    assert!(e.contains("nl1"), "{e}");
    let m = ok(post(
        &v,
        "/VolumeDriver.Mount",
        r#"{"Name":"nv1","ID":"a"}"#,
    ));
    assert_eq!(m["Mountpoint"], json!(node.mount_point("nv1")));
    std::fs::write(node.mount_point("nv1").join("f"), "through the server\n").unwrap();
    assert_eq!(
        std::fs::read_to_string(walk_for(&vfs_root, "f")).unwrap(),
        "through the server\n"
    );
    ok(post(
        &v,
        "/VolumeDriver.Unmount",
        r#"{"Name":"nv1","ID":"a"}"#,
    ));
    ok(post(&v, "/VolumeDriver.Remove", r#"{"Name":"nv1"}"#));
    ok(post(&l, "/VolumeDriver.Remove", r#"{"Name":"nl1"}"#));
    assert!(ls("loop").is_empty() && ls("vfs").is_empty());
}

/// Run alone (`docker::` in scripts/test.sh): a private dockerd.
mod docker {
    use super::*;
    use crate::docker::{random_hex, Dockerd, HostDirs};

    /// The seed's `docker volume ls`: volumes of two drivers, side by side,
    /// both served by one `rexray service`; the modules' sockets are the
    /// default `/run/docker/plugins/<name>.sock`.
    #[test]
    fn real_dockerd_lists_two_drivers_side_by_side() {
        require_root!();
        if !Dockerd::usable() {
            return;
        }
        let _dirs = HostDirs::snapshot();
        let base = format!("rexraytest-{}", random_hex());
        let (lname, vname) = (format!("{base}-loop"), format!("{base}-vfs"));
        let home = Home::new();
        home.config(&format!(
            "rexray:\n  modules:\n    {lname}:\n      type: docker\n    {vname}:\n      type: docker\n      libstorage:\n        service: vfs\nlibstorage:\n  service: loop\n"
        ));
        let sock = |n: &str| PathBuf::from(format!("/run/docker/plugins/{n}.sock"));
        let (host, _) = unix_host(&home);
        let mut svc = Service::start(&home, &host, &[]);
        assert!(sock(&lname).exists() && sock(&vname).exists());
        let d = Dockerd::start(&base);
        d.docker(&["volume", "create", "-d", &lname, "-o", "size=1", "dl1"])
            .ok();
        d.docker(&["volume", "create", "-d", &vname, "dv1"]).ok();
        let table = d.docker(&["volume", "ls"]);
        eprintln!("docker volume ls:\n{}", table.ok());
        let ls = d.docker(&["volume", "ls", "--format", "{{.Driver}} {{.Name}}"]);
        let lines: Vec<&str> = ls.ok().lines().collect();
        assert!(
            lines.contains(&format!("{lname} dl1").as_str()),
            "{lines:?}"
        );
        assert!(
            lines.contains(&format!("{vname} dv1").as_str()),
            "{lines:?}"
        );
        assert!(
            !lines.contains(&format!("{vname} dl1").as_str()),
            "{lines:?}"
        );
        assert!(
            !lines.contains(&format!("{lname} dv1").as_str()),
            "{lines:?}"
        );
        let info: Value =
            serde_json::from_str(d.docker(&["volume", "inspect", "dv1"]).ok()).unwrap();
        assert_eq!(info[0]["Driver"], json!(vname), "{info}");
        assert_eq!(info[0]["Status"]["service"], json!("vfs"), "{info}");

        // A container of each writes; another reads it back.
        d.run(&lname, "dl1", "echo loop > /data/f").ok();
        d.run(&vname, "dv1", "echo vfs > /data/f").ok();
        assert_eq!(d.run(&lname, "dl1", "cat /data/f").ok(), "loop\n");
        assert_eq!(d.run(&vname, "dv1", "cat /data/f").ok(), "vfs\n");
        assert!(home.loops().is_empty(), "{:?}", home.loops());

        d.docker(&["volume", "rm", "dl1", "dv1"]).ok();
        let ls = d.docker(&["volume", "ls", "-q"]);
        assert!(!ls.ok().lines().any(|n| n == "dl1" || n == "dv1"), "{ls:?}");
        assert_eq!(svc.stop(), Some(0));
        assert!(!sock(&lname).exists() && !sock(&vname).exists());
        drop(d);
        assert!(home.mounts().is_empty() && home.loops().is_empty());
    }
}
