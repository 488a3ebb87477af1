//! The harness's client mode checks itself (see `common::client_mode`):
//! with `REXRAY_TEST_CLIENT_MODE=1` every binary a home runs, and its
//! in-process workflows, reach the volumes only through the home's
//! controller; without it, nothing is running and everything is embedded.

use crate::common::*;
use crate::require_root;

#[test]
fn every_front_end_of_a_home_uses_the_backend_the_mode_says() {
    require_root!();
    let h = Home::new();
    let host = h
        .env
        .iter()
        .find(|(k, _)| k == "LIBSTORAGE_HOST")
        .map(|(_, v)| v.clone());
    h.rexray(&["volume", "create", "cm1", "--size", "1"]).ok();
    assert_eq!(h.volume_names(), ["cm1"]);
    if !client_mode() {
        assert_eq!(host, None);
        assert_eq!(h.controller_log(), "");
        assert!(!h.dir.join("ctl.sock").exists());
        h.rexray(&["volume", "rm", "cm1"]).ok();
        return;
    }
    let host = host.expect("LIBSTORAGE_HOST in client mode");
    assert_eq!(host, format!("unix://{}", h.dir.join("ctl.sock").display()));
    // The volume is the controller's: its image is where the controller
    // keeps them (the node's default loop.volumePath).
    let images = std::fs::read_dir(h.lib().join("loop"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "img"))
        .count();
    assert_eq!(images, 1);

    // Without the controller every front-end fails, naming it, and
    // nothing falls back to the driver.
    h.stop_controller();
    let named = |what: &str, text: &str| {
        assert!(
            text.contains(&format!("libStorage server at {host}")),
            "{what}: {text}"
        );
    };
    let o = h.rexray(&["volume", "ls"]);
    named("rexray volume ls", o.fails(1));
    let o = h.run("dvdcli", &["list", "--volumedriver=rexray"]);
    named("dvdcli list", o.fails(1));
    let o = h.run(
        "dvdcli",
        &["mount", "--volumedriver=rexray", "--volumename=cm1"],
    );
    named("dvdcli mount", o.fails(1));
    assert_eq!(o.stdout, "");
    let mut c = h.command("flexrex");
    c.env_remove("PATH")
        .args(["attach", r#"{"volumeID":"cm1"}"#, "node1"]);
    let o = run_cmd(&mut c);
    assert_eq!((o.code, o.stderr.as_str()), (1, ""), "{o:#?}");
    named("flexrex attach", &o.stdout);
    let e = h
        .open_volumes()
        .err()
        .expect("no workflows without the server");
    named("Home::volumes", &e.to_string());
    // A node's Docker plugin does not start without its server.
    let (dh, _) = unix_host(&h);
    let mut c = h.command("rexray");
    c.args(["service", "start"])
        .env("REXRAY_MODULES_DEFAULT_DOCKER_HOST", &dh);
    let o = run_cmd(&mut c);
    named("rexray service start", o.fails(1));
    assert!(h.mounts().is_empty() && h.loops().is_empty());

    // Back again: everything as it was.
    h.restart_controller("");
    assert_eq!(h.volume_names(), ["cm1"]);
    h.rexray(&["volume", "rm", "cm1"]).ok();
    assert!(h.volume_names().is_empty());
}
