//! Names, ids and consumers are never ambiguous: a request names one
//! volume and one consumer of its own front-end, or it fails. And a
//! request that says one thing twice fails instead of meaning either.

use crate::common::*;
use crate::docker::{err, mount_record, ok, post, Service};
use crate::require_root;
use serde_json::Value;

/// The id of volume `name`, as `rexray volume ls` shows it.
fn id_of(h: &Home, name: &str) -> String {
    let ls: Value = serde_json::from_str(h.rexray(&["volume", "ls", "-f", "json"]).ok()).unwrap();
    ls.as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no volume {name}: {ls}"))["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Rename a volume in the loop catalog behind rexray's back, as a
/// previous release allowed: a volume named after another's id.
fn rename_behind_the_back(h: &Home, from: &str, to: &str) {
    let p = h.lib().join("loop/catalog.db");
    let c = rusqlite::Connection::open(p).unwrap();
    let n = c
        .execute("UPDATE volumes SET name = ?2 WHERE name = ?1", [from, to])
        .unwrap();
    assert_eq!(n, 1, "{from} not in the catalog");
}

/// The reproduction of issue #12: a Docker volume named after another's
/// id mounted and removed that other volume.
#[test]
fn a_docker_name_never_reaches_a_volume_by_its_id() {
    require_root!();
    let h = Home::new();
    let (host, sock) = unix_host(&h);
    let _svc = Service::start(&h, &host, &[]);
    let s = sock.as_path();
    ok(post(
        s,
        "/VolumeDriver.Create",
        r#"{"Name":"vol","Opts":{"size":"1"}}"#,
    ));
    let x = id_of(&h, "vol");

    // No volume may be named after another's id.
    let e = err(post(
        s,
        "/VolumeDriver.Create",
        &format!(r#"{{"Name":"{x}","Opts":{{"size":"1"}}}}"#),
    ));
    assert!(e.contains(&x) && e.contains("volume vol"), "{e}");
    assert_eq!(h.volume_names(), vec!["vol"]);
    // Requests carry names: the id is no name.
    for ep in ["Mount", "Path", "Get", "Remove", "Unmount"] {
        let e = err(post(
            s,
            &format!("/VolumeDriver.{ep}"),
            &format!(r#"{{"Name":"{x}"}}"#),
        ));
        assert!(e.contains("not found"), "{ep}: {e}");
        if ep != "Get" {
            assert!(e.contains("is the id of volume vol"), "{ep}: {e}");
        }
    }
    assert_eq!(h.volume_names(), vec!["vol"]);
    assert!(h.mounts().is_empty() && h.loops().is_empty());

    // A pair left by a previous release: each request reaches the volume
    // it names, never the one whose id that name is.
    ok(post(
        s,
        "/VolumeDriver.Create",
        r#"{"Name":"other","Opts":{"size":"1"}}"#,
    ));
    rename_behind_the_back(&h, "other", &x);
    let m = ok(post(
        s,
        "/VolumeDriver.Mount",
        &format!(r#"{{"Name":"{x}","ID":"c1"}}"#),
    ));
    assert_eq!(
        m["Mountpoint"].as_str().unwrap(),
        h.data(&x).to_str().unwrap()
    );
    assert_eq!(count_mounts_at(&h.mount_point("vol")), 0);
    let g = ok(post(
        s,
        "/VolumeDriver.Get",
        &format!(r#"{{"Name":"{x}"}}"#),
    ));
    assert_eq!(g["Volume"]["Name"], x.as_str());
    ok(post(
        s,
        "/VolumeDriver.Unmount",
        &format!(r#"{{"Name":"{x}","ID":"c1"}}"#),
    ));
    ok(post(
        s,
        "/VolumeDriver.Remove",
        &format!(r#"{{"Name":"{x}"}}"#),
    ));
    assert_eq!(
        h.volume_names(),
        vec!["vol"],
        "the volume named {x} went, not vol"
    );
    ok(post(s, "/VolumeDriver.Remove", r#"{"Name":"vol"}"#));
    assert!(h.mounts().is_empty() && h.loops().is_empty());
}

/// The CLI takes an id or a name, and refuses to guess between the two.
#[test]
fn the_cli_refuses_an_argument_that_is_an_id_and_another_name() {
    let h = Home::new();
    h.rexray(&["volume", "create", "vol", "--size", "1"]).ok();
    let x = id_of(&h, "vol");
    let o = h.rexray(&["volume", "create", &x, "--size", "1"]);
    assert_ne!(o.code, 0, "{o:#?}");
    assert!(
        o.stderr.contains(&x) && o.stderr.contains("volume vol"),
        "{o:#?}"
    );
    assert_eq!(h.volume_names(), vec!["vol"]);

    h.rexray(&["volume", "create", "other", "--size", "1"]).ok();
    let other = id_of(&h, "other");
    rename_behind_the_back(&h, "other", &x);
    for args in [
        &["volume", "rm", x.as_str()][..],
        &["volume", "path", x.as_str()],
        &["volume", "unmount", x.as_str()],
        &["volume", "detach", x.as_str()],
    ] {
        let o = h.rexray(args);
        assert_ne!(o.code, 0, "{args:?}: {o:#?}");
        assert!(
            o.stderr.contains("ambiguous")
                && o.stderr.contains("volume vol")
                && o.stderr.contains(&other),
            "{args:?}: {o:#?}"
        );
    }
    let mut both = vec!["vol".to_string(), x.clone()];
    both.sort();
    assert_eq!(h.volume_names(), both, "nothing was removed");
    // Saying which works.
    assert_eq!(
        h.rexray(&["volume", "rm", &format!("name:{x}")]).ok(),
        format!("{x}\n")
    );
    assert_eq!(h.volume_names(), vec!["vol"]);
    assert_eq!(h.rexray(&["volume", "rm", &x]).ok(), "vol\n");
}

/// A Docker client cannot name kubelet's (or the CLI's) consumer: its
/// mount IDs live in Docker's own namespace.
#[test]
fn a_docker_client_cannot_release_another_front_ends_consumer() {
    require_root!();
    let h = Home::new();
    h.rexray(&["volume", "create", "kv", "--size", "1"]).ok();
    let pod = h.dir.join("kubelet/pods/0b9c/volumes/rexray~flexrex/pv-kv");
    let opts = r#"{"volumeID":"kv","kubernetes.io/pvOrVolumeName":"pv-kv"}"#;
    let r = h.run("flexrex", &["mount", pod.to_str().unwrap(), opts]);
    assert_eq!(r.code, 0, "{r:#?}");
    h.rexray(&["volume", "mount", "kv"]).ok();
    let kubelet = format!("flex:{}", pod.display());

    let (host, sock) = unix_host(&h);
    let _svc = Service::start(&h, &host, &[]);
    let s = sock.as_path();
    for forged in [kubelet.as_str(), "anonymous", "cli:anonymous"] {
        let body = serde_json::json!({"Name": "kv", "ID": forged}).to_string();
        ok(post(s, "/VolumeDriver.Unmount", &body));
    }
    let rec = mount_record(&h);
    let consumers = &rec[0]["consumers"];
    assert_eq!(
        consumers,
        &serde_json::json!(["anonymous", kubelet]),
        "{rec:?}"
    );
    assert_eq!(count_mounts_at(&pod), 1);
    assert_eq!(count_mounts_at(&h.mount_point("kv")), 1);

    // The CLI's --consumer is its own namespace too.
    h.rexray(&["volume", "unmount", "kv", "--consumer", &kubelet])
        .ok();
    assert_eq!(count_mounts_at(&pod), 1);
    assert_eq!(
        mount_record(&h)[0]["consumers"].as_array().unwrap().len(),
        2
    );

    h.rexray(&["volume", "unmount", "kv"]).ok();
    let r = h.run("flexrex", &["unmount", pod.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{r:#?}");
    assert!(h.mounts().is_empty() && h.loops().is_empty());
}

/// A mount ID recorded bare by the previous release is still released by
/// Docker's Unmount of the same ID.
#[test]
fn a_bare_docker_id_from_the_previous_release_is_released() {
    require_root!();
    let h = Home::new();
    let (host, sock) = unix_host(&h);
    let _svc = Service::start(&h, &host, &[]);
    let s = sock.as_path();
    ok(post(
        s,
        "/VolumeDriver.Create",
        r#"{"Name":"old","Opts":{"size":"1"}}"#,
    ));
    let id = "c0ffee".repeat(10);
    ok(post(
        s,
        "/VolumeDriver.Mount",
        &format!(r#"{{"Name":"old","ID":"{id}"}}"#),
    ));
    // Rewrite the record as the previous release wrote it.
    let dir = h.lib().join("mounts");
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let text = std::fs::read_to_string(&file).unwrap();
    let bare = text.replace(&format!("\"docker:{id}\""), &format!("\"{id}\""));
    assert_ne!(text, bare, "{text}");
    std::fs::write(&file, bare).unwrap();
    assert_eq!(mount_record(&h)[0]["consumers"], serde_json::json!([id]));
    ok(post(
        s,
        "/VolumeDriver.Unmount",
        &format!(r#"{{"Name":"old","ID":"{id}"}}"#),
    ));
    assert_eq!(count_mounts_at(&h.mount_point("old")), 0);
    assert!(mount_record(&h).is_empty());
    assert!(h.mounts().is_empty() && h.loops().is_empty());
}

/// Docker requests that say one thing twice fail naming it.
#[test]
fn docker_requests_with_a_repeated_key_are_refused() {
    require_root!();
    let h = Home::new();
    let (host, sock) = unix_host(&h);
    let _svc = Service::start(&h, &host, &[]);
    let s = sock.as_path();
    for (body, key) in [
        (
            r#"{"Name":"d1","Opts":{"size":"1","size":"2"}}"#,
            "\"size\"",
        ),
        (
            r#"{"Name":"d1","Opts":{"size":"1","Size":"2"}}"#,
            "\"Size\"",
        ),
        (r#"{"Name":"d1","Name":"d2"}"#, "\"Name\""),
        (r#"{"name":"d1","Name":"d2"}"#, "\"Name\""),
    ] {
        let e = err(post(s, "/VolumeDriver.Create", body));
        assert!(e.contains(key) && e.contains("given twice"), "{body}: {e}");
    }
    assert!(h.volume_names().is_empty());
    ok(post(s, "/VolumeDriver.Create", r#"{"Name":"d1"}"#));
    let e = err(post(
        s,
        "/VolumeDriver.Remove",
        r#"{"Name":"d1","Name":"d2"}"#,
    ));
    assert!(e.contains("given twice"), "{e}");
    assert_eq!(h.volume_names(), vec!["d1"]);
}

/// dvdcli, flexrex and the CLI refuse a repeated option, naming it.
#[test]
fn repeated_options_are_refused_by_every_front_end() {
    let h = Home::new();
    for opts in [
        &["--volumeopts=size=1", "--volumeopts=size=2"][..],
        &["--volumeopts=size=1,SIZE=2"],
    ] {
        let mut args = vec!["create", "--volumedriver=rexray", "--volumename=d1"];
        args.extend_from_slice(opts);
        let o = h.run("dvdcli", &args);
        assert_ne!(o.code, 0, "{o:#?}");
        assert!(
            o.stderr.contains("given twice") && o.stderr.to_lowercase().contains("\"size\""),
            "{o:#?}"
        );
        assert_eq!(o.stdout, "");
    }
    assert!(h.volume_names().is_empty());

    h.rexray(&["volume", "create", "a", "--size", "1"]).ok();
    h.rexray(&["volume", "create", "b", "--size", "1"]).ok();
    let o = h.run(
        "flexrex",
        &["getvolumename", r#"{"volumeID":"a","volumeID":"b"}"#],
    );
    assert_eq!(o.stderr, "", "{o:#?}");
    let v: Value = serde_json::from_str(o.stdout.trim()).unwrap();
    assert_eq!(v["status"], "Failure", "{v}");
    let m = v["message"].as_str().unwrap();
    assert!(m.contains("\"volumeID\" is given twice"), "{m}");

    let o = h.rexray(&["volume", "create", "c", "--size", "1", "--size", "2"]);
    assert_ne!(o.code, 0, "{o:#?}");
    assert!(o.stderr.contains("--size"), "{o:#?}");
    assert_eq!(h.volume_names(), vec!["a", "b"]);
}

/// `--overwriteFS` over a filesystem says what it destroys before it does.
#[test]
fn overwriting_a_filesystem_names_what_is_destroyed() {
    require_root!();
    let h = Home::new();
    h.rexray(&["volume", "create", "ow", "--size", "1"]).ok();
    h.rexray(&["volume", "mount", "ow"]).ok();
    h.rexray(&["volume", "unmount", "ow"]).ok();
    let o = h.rexray(&["volume", "mount", "ow", "--overwriteFS", "--fsType", "xfs"]);
    o.ok();
    let e = &o.stderr;
    assert!(
        e.contains("overwriteFS")
            && e.contains("volume ow")
            && e.contains("/dev/loop")
            && e.contains("ext4 filesystem")
            && e.contains("UUID="),
        "{o:#?}"
    );
    h.rexray(&["volume", "unmount", "ow"]).ok();
    // A blank volume is formatted without a word.
    h.rexray(&["volume", "create", "ow2", "--size", "1"]).ok();
    let o = h.rexray(&["volume", "mount", "ow2", "--overwriteFS"]);
    o.ok();
    assert!(!o.stderr.contains("overwriteFS"), "{o:#?}");
    h.rexray(&["volume", "unmount", "ow2"]).ok();
    assert!(h.mounts().is_empty() && h.loops().is_empty());
}
