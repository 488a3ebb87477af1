//! Hostile input and a damaged state directory: names that try to escape,
//! exposed sockets, loose config modes, shells, leaked secrets, and state
//! files that are truncated, stale, or deleted behind our back. Each is
//! refused or repaired with a clear message; never a panic, never a wrong
//! unmount.

use crate::common::*;
use crate::docker::{post, Service};
use crate::require_root;
use serde_json::json;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn volume_id(h: &Home, name: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(h.rexray(&["volume", "ls", name, "-f", "json"]).ok()).unwrap();
    v[0]["id"].as_str().unwrap().to_string()
}

/// Every path under `dir` (files and directories).
fn tree(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(p.clone());
            }
            out.insert(p);
        }
    }
    out
}

fn no_panic(o: &Out) {
    assert!(
        !o.stderr.contains("panicked") && !o.stdout.contains("panicked"),
        "{o:#?}"
    );
}

// ---------------------------------------------------------------- state dir

#[test]
fn garbage_mount_record_is_reported_by_every_front_end_and_nothing_unmounted() {
    require_root!();
    let h = Home::new();
    h.rexray(&["volume", "create", "g", "--size", "1"]).ok();
    h.rexray(&["volume", "mount", "g"]).ok();
    let rec = h
        .lib()
        .join("mounts")
        .join(format!("{}.json", volume_id(&h, "g")));
    for garbage in [&b"{\"consumers\": [\"anon"[..], b"\x00\xffgarbage"] {
        std::fs::write(&rec, garbage).unwrap();
        let e = h.rexray(&["volume", "unmount", "g"]);
        no_panic(&e);
        assert!(e.fails(1).contains(rec.to_str().unwrap()), "{e:#?}");
        // dvdcli (Mesos) sees the same clear error.
        let d = h.run(
            "dvdcli",
            &["unmount", "--volumedriver=rexray", "--volumename=g"],
        );
        no_panic(&d);
        assert_ne!(d.code, 0);
        assert!(d.stderr.contains("mount record"), "{d:#?}");
        // flexrex: one JSON Failure naming the record, nothing on stderr.
        let opts = json!({"volumeID": "g"}).to_string();
        let dmp = h.dir.join("kubelet/g");
        let f = h.run(
            "flexrex",
            &["mountdevice", dmp.to_str().unwrap(), "/dev/null", &opts],
        );
        assert_eq!(f.stderr, "", "{f:#?}");
        let v: serde_json::Value = serde_json::from_str(f.stdout.trim()).unwrap();
        assert_eq!(v["status"], "Failure", "{v}");
        assert!(
            v["message"].as_str().unwrap().contains("mount record"),
            "{v}"
        );
        assert_eq!(count_mounts_at(&h.mount_point("g")), 1, "nothing unmounted");
        assert_eq!(h.loops().len(), 1);
    }
    // The Docker endpoint too.
    let (host, sock) = unix_host(&h);
    let svc = Service::start(&h, &host, &[]);
    let r = post(&sock, "/VolumeDriver.Unmount", r#"{"Name":"g","ID":"c1"}"#);
    assert_eq!(r.0, 500, "{r:?}");
    assert!(
        r.1["Err"].as_str().unwrap().contains("mount record"),
        "{r:?}"
    );
    let r = post(&sock, "/VolumeDriver.Mount", r#"{"Name":"g","ID":"c1"}"#);
    assert_eq!(r.0, 500, "{r:?}");
    assert_eq!(count_mounts_at(&h.mount_point("g")), 1, "nothing unmounted");
    drop(svc);
    // The operator deletes the record as told: the next unmount proceeds.
    std::fs::remove_file(&rec).unwrap();
    h.rexray(&["volume", "unmount", "g"]).ok();
    assert!(h.mounts().is_empty() && h.loops().is_empty());
}

#[test]
fn a_record_of_a_removed_volume_breaks_nothing_and_is_dropped() {
    require_root!();
    let h = Home::new();
    h.rexray(&["volume", "create", "a", "--size", "1"]).ok();
    h.rexray(&["volume", "create", "b", "--size", "1"]).ok();
    h.rexray(&["volume", "mount", "a"]).ok();
    let mounts = h.lib().join("mounts");
    let a_rec = mounts.join(format!("{}.json", volume_id(&h, "a")));
    // A record of a volume that is gone (another instance removed it).
    let ghost = mounts.join("0123456789abcdef.json");
    let text = std::fs::read_to_string(&a_rec)
        .unwrap()
        .replace(&volume_id(&h, "a"), "0123456789abcdef");
    std::fs::write(&ghost, text).unwrap();
    h.rexray(&["volume", "ls"]).ok();
    h.rexray(&["volume", "mount", "b"]).ok();
    h.rexray(&["volume", "unmount", "b"]).ok();
    h.rexray(&["volume", "rm", "b"]).ok();
    assert_eq!(count_mounts_at(&h.mount_point("a")), 1);
    // The service's reconcile at start drops it, and only it.
    let (host, _sock) = unix_host(&h);
    let svc = Service::start(&h, &host, &[]);
    drop(svc);
    assert!(!ghost.exists(), "dangling record dropped");
    assert!(a_rec.exists(), "a live record is kept");
    assert_eq!(count_mounts_at(&h.mount_point("a")), 1);
    h.rexray(&["volume", "unmount", "a"]).ok();
    assert!(h.mounts().is_empty() && h.loops().is_empty());
}

#[test]
fn a_mount_that_vanished_is_remounted_or_released() {
    require_root!();
    let h = Home::new();
    h.rexray(&["volume", "create", "m", "--size", "1"]).ok();
    h.rexray(&["volume", "mount", "m"]).ok();
    std::fs::write(h.data("m").join("token"), "t").unwrap();
    run_cmd(std::process::Command::new("umount").arg(h.mount_point("m"))).ok();
    // Mounting again: the record says mounted, reality says not: reality wins.
    h.rexray(&["volume", "mount", "m"]).ok();
    assert_eq!(count_mounts_at(&h.mount_point("m")), 1);
    assert_eq!(
        std::fs::read_to_string(h.data("m").join("token")).unwrap(),
        "t"
    );
    run_cmd(std::process::Command::new("umount").arg(h.mount_point("m"))).ok();
    // Unmounting a vanished mount releases the device too.
    h.rexray(&["volume", "unmount", "m"]).ok();
    assert!(
        h.mounts().is_empty() && h.loops().is_empty(),
        "{:?}",
        h.loops()
    );
}

#[test]
fn a_loop_device_detached_by_hand_is_attached_again() {
    require_root!();
    let h = Home::new();
    h.rexray(&["volume", "create", "l", "--size", "1"]).ok();
    h.rexray(&["volume", "attach", "l"]).ok();
    let dev = h.loops();
    assert_eq!(dev.len(), 1);
    run_cmd(std::process::Command::new("losetup").arg("-d").arg(&dev[0])).ok();
    assert!(h.loops().is_empty());
    h.rexray(&["volume", "mount", "l"]).ok();
    assert_eq!(count_mounts_at(&h.mount_point("l")), 1);
    assert_eq!(h.loops().len(), 1);
    h.rexray(&["volume", "unmount", "l"]).ok();
    // And detached by hand while merely attached, detach still succeeds.
    h.rexray(&["volume", "attach", "l"]).ok();
    let dev = h.loops();
    run_cmd(std::process::Command::new("losetup").arg("-d").arg(&dev[0])).ok();
    h.rexray(&["volume", "detach", "l"]).ok();
    h.rexray(&["volume", "rm", "l"]).ok();
    assert!(h.mounts().is_empty() && h.loops().is_empty());
}

#[test]
fn deleted_lock_files_block_nothing() {
    require_root!();
    let h = Home::new();
    h.rexray(&["volume", "create", "k", "--size", "1"]).ok();
    h.rexray(&["volume", "mount", "k"]).ok();
    for p in tree(&h.lib()) {
        if p.extension().is_some_and(|e| e == "lock") {
            std::fs::remove_file(&p).unwrap();
        }
    }
    h.rexray(&["volume", "mount", "k", "--consumer", "c2"]).ok();
    h.rexray(&["volume", "unmount", "k", "--consumer", "c2"])
        .ok();
    h.rexray(&["volume", "unmount", "k"]).ok();
    h.rexray(&["volume", "rm", "k"]).ok();
    assert!(h.mounts().is_empty() && h.loops().is_empty());
}

#[test]
fn a_garbage_catalog_is_named_and_nothing_is_destroyed() {
    require_root!();
    let h = Home::new();
    h.rexray(&["volume", "create", "c", "--size", "1"]).ok();
    let cat = h.lib().join("loop").join("catalog.db");
    // Everything in the database file itself, then no log beside it.
    rusqlite::Connection::open(&cat)
        .unwrap()
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    for f in ["catalog.db-wal", "catalog.db-shm"] {
        let _ = std::fs::remove_file(h.lib().join("loop").join(f));
    }
    let good = std::fs::read(&cat).unwrap();
    std::fs::write(&cat, b"{\"volumes\": [tru").unwrap();
    let before = tree(&h.dir);
    for args in [
        &["volume", "ls"][..],
        &["volume", "create", "d", "--size", "1"],
        &["volume", "mount", "c"],
        &["volume", "rm", "c"],
    ] {
        let o = h.rexray(args);
        no_panic(&o);
        assert!(o.fails(1).contains("catalog.db"), "{args:?}: {o:#?}");
    }
    assert_eq!(tree(&h.dir), before, "nothing made or destroyed");
    assert_eq!(std::fs::read(&cat).unwrap(), b"{\"volumes\": [tru");
    assert!(h.mounts().is_empty() && h.loops().is_empty());
    std::fs::write(&cat, good).unwrap();
    h.rexray(&["volume", "rm", "c"]).ok();
}

// ---------------------------------------------------------------- exposure

#[test]
fn plugin_socket_is_0660_and_world_writable_dirs_are_refused() {
    require_root!();
    use std::os::unix::fs::PermissionsExt;
    let h = Home::new();
    let (host, sock) = unix_host(&h);
    let svc = Service::start(&h, &host, &[]);
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "{mode:o}");
    assert!(!svc.log_text().contains("no authentication"));
    drop(svc);
    // A /tmp-like directory (1777) it did not create: refused.
    let open = h.dir.join("shared");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let o = run_cmd(
        h.command("rexray")
            .env(
                "REXRAY_MODULES_DEFAULT_DOCKER_HOST",
                format!("unix://{}/p.sock", open.display()),
            )
            .args(["service", "start"]),
    );
    assert!(o.fails(1).contains("writable by every user"), "{o:#?}");
    assert!(!open.join("p.sock").exists());
    // A directory another user owns (or one below it): that user could
    // swap the socket for their own. Refused, naming the owner.
    let theirs = h.dir.join("theirs");
    std::fs::create_dir_all(theirs.join("below")).unwrap();
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o755)).unwrap();
    nix::unistd::chown(&theirs, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    for dir in [theirs.clone(), theirs.join("below")] {
        let o = run_cmd(
            h.command("rexray")
                .env(
                    "REXRAY_MODULES_DEFAULT_DOCKER_HOST",
                    format!("unix://{}/p.sock", dir.display()),
                )
                .args(["service", "start"]),
        );
        let e = o.fails(1);
        assert!(
            e.contains(&format!("{} is owned by uid 65534", theirs.display())),
            "{o:#?}"
        );
        assert!(!dir.join("p.sock").exists());
    }
}

#[test]
fn tcp_is_opened_only_when_configured_and_then_named_as_exposed() {
    require_root!();
    let h = Home::new();
    // Default: the env var is not set; the listener is the unix socket only.
    let (host, _sock) = unix_host(&h);
    let svc = Service::start(&h, &host, &[]);
    let url = std::fs::read_to_string(h.dir.join("var/run/rexray.url")).unwrap();
    assert!(url.starts_with("unix://"), "{url}");
    assert!(!svc.log_text().contains("tcp://"), "{}", svc.log_text());
    drop(svc);
    let svc = Service::start(
        &h,
        "tcp://127.0.0.1:0",
        &[(
            "REXRAY_MODULES_DEFAULT_DOCKER_SPEC",
            h.dir.join("spec/rexray.spec").to_str().unwrap(),
        )],
    );
    let log = svc.log_text();
    assert!(
        log.contains("has no authentication") && log.contains("tcp://127.0.0.1:"),
        "{log}"
    );
}

#[test]
fn group_writable_config_is_refused_like_sshd() {
    require_root!();
    use std::os::unix::fs::PermissionsExt;
    let h = Home::new();
    h.config("rexray:\n  logLevel: warn\n");
    let f = h.etc().join("config.yml");
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o664)).unwrap();
    // Owned by root's group: allowed (root may write it anyway).
    h.rexray(&["volume", "ls"]).ok();
    nix::unistd::chown(&f, None, Some(nix::unistd::Gid::from_raw(65534))).unwrap();
    let o = h.rexray(&["volume", "ls"]);
    assert!(o.fails(1).contains("writable by group 65534"), "{o:#?}");
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    h.rexray(&["volume", "ls"]).ok();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o646)).unwrap();
    assert!(h
        .rexray(&["volume", "ls"])
        .fails(1)
        .contains("writable by every user"));
}

/// Clients that send headers and then stall hold no worker for ever:
/// others are served, and a stop ends (it waits for in-flight requests).
#[test]
fn stalled_clients_do_not_wedge_the_service() {
    require_root!();
    use std::io::Write;
    let h = Home::new();
    h.rexray(&["volume", "create", "st", "--size", "1"]).ok();
    let (host, sock) = unix_host(&h);
    let mut svc = Service::start(&h, &host, &[]);
    let stalled: Vec<_> = (0..rexray::docker::server::WORKERS / 4)
        .map(|_| {
            let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
            write!(
                s,
                "POST /VolumeDriver.Get HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n{{\"Na"
            )
            .unwrap();
            s
        })
        .collect();
    let r = post(&sock, "/VolumeDriver.Get", r#"{"Name":"st"}"#);
    assert_eq!(r.0, 200, "{r:?}");
    assert_eq!(svc.stop(), Some(0), "{}", svc.log_text());
    assert!(
        svc.log_text().contains("did not arrive"),
        "{}",
        svc.log_text()
    );
    drop(stalled);
}

// ---------------------------------------------------------------- escapes

const HOSTILE: &[&str] = &[
    "..",
    "../escape",
    "../../etc/passwd",
    "/etc/passwd",
    "a/b",
    "a\u{0}b",
    ".",
    "-rf",
    "a b",
];

#[test]
fn names_from_every_front_end_never_escape_the_state_dir() {
    require_root!();
    let h = Home::new();
    let long = "x".repeat(300);
    let mut names: Vec<&str> = HOSTILE.to_vec();
    names.push(&long);
    let (host, sock) = unix_host(&h);
    let svc = Service::start(&h, &host, &[]);
    let passwd = std::fs::metadata("/etc/passwd")
        .unwrap()
        .modified()
        .unwrap();
    let before = tree(&h.dir);
    for n in &names {
        // Docker JSON.
        for ep in ["Create", "Mount", "Remove", "Path", "Get"] {
            let body = json!({"Name": n, "ID": "c"}).to_string();
            let r = post(&sock, &format!("/VolumeDriver.{ep}"), &body);
            assert_eq!(r.0, 500, "{ep} {n:?}: {r:?}");
        }
        // FlexVolume JSON.
        let opts = json!({"volumeID": n}).to_string();
        let f = h.run("flexrex", &["attach", &opts, "node1"]);
        assert_eq!(f.stderr, "");
        assert!(f.stdout.contains("Failure"), "{n:?}: {f:#?}");
        // dvdcli and rexray argv (NUL cannot be in argv).
        if !n.contains('\0') {
            let arg = format!("--volumename={n}");
            let d = h.run("dvdcli", &["mount", "--volumedriver=rexray", &arg]);
            assert_ne!(d.code, 0, "{n:?}: {d:#?}");
            no_panic(&d);
            for args in [
                vec!["volume", "create", n, "--size", "1"],
                vec!["volume", "mount", n],
                vec!["volume", "rm", n],
            ] {
                let o = h.rexray(&args);
                assert_ne!(o.code, 0, "{args:?}: {o:#?}");
                no_panic(&o);
            }
        }
    }
    drop(svc);
    let after = tree(&h.dir);
    // Logs, the pid file and lock files come and go; nothing else may.
    let new: Vec<_> = after
        .difference(&before)
        .filter(|p| {
            !p.to_string_lossy().ends_with(".lock")
                && !p.starts_with(h.dir.join("var/log"))
                && !p.starts_with(h.dir.join("var/run"))
        })
        .collect();
    assert!(new.is_empty(), "hostile names made {new:?}");
    assert!(h.mounts().is_empty() && h.loops().is_empty());
    assert!(!h.dir.join("escape").exists() && !h.lib().join("escape").exists());
    assert_eq!(
        std::fs::metadata("/etc/passwd")
            .unwrap()
            .modified()
            .unwrap(),
        passwd
    );
}

// ---------------------------------------------------------------- commands

/// Every external command is spawned through `node::cmd::run` (absolute
/// path from `which`, fixed argv, a timeout) — never through a shell.
#[test]
fn external_commands_use_absolute_paths_and_no_shell() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut spawns = Vec::new();
    for p in tree(&src) {
        if p.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        // Unit tests may do what they like.
        let code = text.split("#[cfg(test)]").next().unwrap();
        for (i, line) in code.lines().enumerate() {
            let l = line.trim();
            if l.starts_with("//") {
                continue;
            }
            for bad in ["\"sh\"", "\"bash\"", "\"-c\"", "/bin/sh"] {
                assert!(!l.contains(bad), "{}:{}: {l}", p.display(), i + 1);
            }
            // clap's Command (man pages) spawns nothing.
            if l.contains("Command::new(") && !l.contains("clap::Command::new(") {
                spawns.push(format!(
                    "{}:{}",
                    p.strip_prefix(&src).unwrap().display(),
                    l.split("Command::new(").nth(1).unwrap()
                ));
            }
        }
    }
    // node/cmd.rs: the path `which` found; docker/service.rs: our own
    // binary (current_exe) for `service start -d`.
    assert_eq!(
        spawns,
        ["docker/service.rs:exe);", "node/cmd.rs:path);"],
        "a new spawn site: route it through node::cmd::run"
    );
}

#[test]
fn flexvolume_secrets_never_reach_the_log() {
    require_root!();
    let h = Home::new().with_env("REXRAY_LOGLEVEL", "debug");
    h.rexray(&["volume", "create", "s", "--size", "1"]).ok();
    let secret = "hunter2-Zq9xK";
    let opts = json!({
        "volumeID": "s",
        "kubernetes.io/fsType": "ext4",
        "kubernetes.io/pvOrVolumeName": "pv-s",
        "kubernetes.io/secret/password": secret,
        "kubernetes.io/secret/token": format!("tok-{secret}"),
    })
    .to_string();
    let dmp = h.dir.join("kubelet/pv-s");
    let dev = {
        let o = h.run("flexrex", &["attach", &opts, "node1"]);
        let v: serde_json::Value = serde_json::from_str(o.stdout.trim()).unwrap();
        v["device"].as_str().unwrap().to_string()
    };
    for args in [
        vec!["waitforattach", dev.as_str(), opts.as_str()],
        vec![
            "mountdevice",
            dmp.to_str().unwrap(),
            dev.as_str(),
            opts.as_str(),
        ],
        vec!["unmountdevice", dmp.to_str().unwrap()],
        vec!["detach", "pv-s", "node1"],
        // A bad call echoes nothing of its arguments either.
        vec![
            "mountdevice",
            dmp.to_str().unwrap(),
            dev.as_str(),
            "{\"kubernetes.io/secret/x\": \"hunter2-Zq9xK\"",
        ],
    ] {
        let o = h.run("flexrex", &args);
        assert!(!o.stdout.contains(secret), "{o:#?}");
    }
    let log = std::fs::read_to_string(h.dir.join("var/log/rexray/flexrex.log"))
        .or_else(|_| std::fs::read_to_string(h.dir.join("var/log/flexrex.log")))
        .expect("flexrex log written");
    assert!(
        log.contains("mountdevice"),
        "the log is the right one: {log}"
    );
    assert!(!log.contains(secret), "secret in the log: {log}");
    assert!(h.mounts().is_empty() && h.loops().is_empty());
}

// ---------------------------------------------------------------- Docker JSON

mod docker_bodies {
    use super::tree;
    use crate::common::Home;
    use proptest::prelude::*;
    use rexray::docker::api::{handle, ENDPOINTS};
    use serde_json::{Map, Value};
    use std::collections::BTreeMap;
    use std::path::Path;

    /// Every path under `dir` with the content of its small files.
    fn state(dir: &Path) -> BTreeMap<std::path::PathBuf, Vec<u8>> {
        tree(dir)
            .into_iter()
            .filter(|p| !p.to_string_lossy().ends_with(".lock"))
            .map(|p| {
                let c = if p.extension().is_some_and(|e| e == "json") {
                    std::fs::read(&p).unwrap_or_default()
                } else {
                    Vec::new()
                };
                (p, c)
            })
            .collect()
    }

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "[0-9]{0,3}".prop_map(Value::from),
            "\\PC{0,16}".prop_map(Value::from),
            prop_oneof![
                Just("ext4"),
                Just("xfs"),
                Just("true"),
                Just("1"),
                Just("-1")
            ]
            .prop_map(Value::from),
        ]
    }

    fn json_value() -> impl Strategy<Value = Value> {
        scalar().prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::btree_map("\\PC{0,6}", inner, 0..3)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn key() -> impl Strategy<Value = String> {
        let keys: Vec<&str> = rexray::options::DOCKER
            .keys
            .iter()
            .map(|k| k.name)
            .collect();
        prop_oneof![
            prop::sample::select(keys.clone()).prop_map(str::to_string),
            prop::sample::select(keys).prop_map(|k| k.to_uppercase()),
            "[a-zA-Z]{1,8}",
        ]
    }

    fn name() -> impl Strategy<Value = Value> {
        prop_oneof![
            "[a-z][a-z0-9]{0,6}".prop_map(Value::from),
            "\\PC{0,12}".prop_map(Value::from),
            Just(Value::from("../x")),
            Just(Value::from("a/b")),
            "x{250,260}".prop_map(Value::from),
            scalar(),
        ]
    }

    fn create_body() -> impl Strategy<Value = Value> {
        (
            name(),
            prop_oneof![
                3 => prop::collection::btree_map(key(), prop_oneof![scalar(), json_value()], 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
                1 => json_value(),
            ],
            prop_oneof![Just("Name"), Just("name"), Just("NAME"), Just("Nom")],
        )
            .prop_map(|(n, o, k)| {
                let mut m = Map::new();
                m.insert(k.to_string(), n);
                m.insert("Opts".into(), o);
                Value::Object(m)
            })
    }

    fn reply_ok(status: u16, body: &[u8]) -> Result<Value, TestCaseError> {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| TestCaseError::fail(format!("reply is not JSON: {e}")))?;
        prop_assert!(v.is_object());
        if status != 200 {
            let e = v["Err"].as_str().unwrap_or_default();
            prop_assert!(!e.is_empty(), "error without a message: {}", v);
        }
        Ok(v)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        /// Any bytes to any endpoint: a JSON reply, never a panic, and no
        /// volume made.
        #[test]
        fn any_bytes_to_any_endpoint(
            ep in prop::sample::select(ENDPOINTS),
            body in prop_oneof![
                prop::collection::vec(any::<u8>(), 0..64),
                json_value().prop_map(|v| v.to_string().into_bytes()),
            ],
        ) {
            thread_local!(static HOME: (Home, rexray::volume::Volumes) = {
                let h = Home::new();
                let v = h.volumes();
                (h, v)
            });
            HOME.with(|(h, vols)| {
                let r = handle(vols, ep, &body);
                reply_ok(r.status, &r.body)?;
                if ep.ends_with("Create") && r.status == 200 {
                    for v in vols.list().unwrap() {
                        vols.remove(rexray::volume::VolumeRef::Id(&v.id)).unwrap();
                    }
                }
                prop_assert!(vols.list().unwrap().is_empty());
                let _ = h;
                Ok(())
            })?;
        }

        /// Any Create object: accepted, or refused with an error naming
        /// the bad field — and a refused Create changes nothing on disk.
        #[test]
        fn rejected_docker_creates_name_the_field_and_change_nothing(body in create_body()) {
            thread_local!(static HOME: (Home, rexray::volume::Volumes) = {
                let h = Home::new();
                let v = h.volumes();
                (h, v)
            });
            HOME.with(|(h, vols)| {
                let before = state(&h.dir);
                let bytes = body.to_string().into_bytes();
                let r = handle(vols, "/VolumeDriver.Create", &bytes);
                let v = reply_ok(r.status, &r.body)?;
                if r.status == 200 {
                    for v in vols.list().unwrap() {
                        vols.remove(rexray::volume::VolumeRef::Id(&v.id)).unwrap();
                    }
                } else {
                    let e = v["Err"].as_str().unwrap().to_lowercase();
                    let mut fields: Vec<String> = vec!["name".into(), "opts".into()];
                    if let Some(o) = body["Opts"].as_object() {
                        fields.extend(o.keys().map(|k| k.to_lowercase()));
                    }
                    prop_assert!(
                        fields.iter().any(|f| e.contains(f.as_str())),
                        "error names no field of {}: {}", body, e
                    );
                    prop_assert_eq!(&state(&h.dir), &before, "a refused create changed the state dir");
                }
                Ok(())
            })?;
        }
    }
}

/// Another user asking whether the service runs is told that it cannot
/// tell (the pid file is root's), not given a capability hint.
#[test]
fn service_status_as_another_user_says_it_cannot_tell() {
    require_root!();
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let h = Home::new();
    let (host, _sock) = unix_host(&h);
    let _svc = Service::start(&h, &host, &[]);
    std::fs::set_permissions(&h.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = run_cmd(
        std::process::Command::new(bin("rexray"))
            .env("REXRAY_HOME", &h.dir)
            .args(["service", "status"])
            .uid(65534)
            .gid(65534),
    );
    assert_ne!(o.code, 0, "{o:#?}");
    assert!(
        o.stderr
            .contains("cannot tell whether the rexray service runs")
            && !o.stderr.contains("CAP_SYS_ADMIN"),
        "{o:#?}"
    );
    // Root is told.
    let o = h.rexray(&["service", "status"]);
    assert!(o.ok().contains("running"), "{o:#?}");
}
