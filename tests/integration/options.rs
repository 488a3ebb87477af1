//! One options parser for every front-end: the same rules and the same
//! words for a bad value, whether it comes as a Docker `Opts` key, a dvdcli
//! `--volumeopts` key or a CLI flag. A refused option creates nothing.

use crate::common::Home;
use serde_json::Value;

fn docker_create(h: &Home, opts: &str) -> String {
    let vols = h.volumes();
    let body = format!(r#"{{"Name":"o1","Opts":{opts}}}"#);
    let r = rexray::docker::api::handle(&vols, "/VolumeDriver.Create", body.as_bytes());
    assert_eq!(r.status, 500, "{}", String::from_utf8_lossy(&r.body));
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    v["Err"].as_str().unwrap().to_string()
}

fn dvdcli_create(h: &Home, opts: &str) -> String {
    let o = h.run(
        "dvdcli",
        &[
            "create",
            "--volumedriver=rexray",
            "--volumename=o1",
            &format!("--volumeopts={opts}"),
        ],
    );
    assert_eq!(o.stdout, "", "{o:#?}");
    o.fails(1).to_string()
}

/// A bad filesystem type is told the same way by every front-end, naming
/// the key as the caller wrote it.
#[test]
fn a_bad_fs_type_is_told_alike_by_every_front_end() {
    let h = Home::new();
    let e = docker_create(&h, r#"{"fsType":"btrfs"}"#);
    assert!(
        e.contains(r#"invalid option fsType "btrfs": use ext4 or xfs"#),
        "{e}"
    );
    let e = dvdcli_create(&h, "newfstype=btrfs");
    assert!(
        e.contains(r#"invalid --volumeopts newfstype "btrfs": use ext4 or xfs"#),
        "{e}"
    );
    let o = h.rexray(&["volume", "create", "o1", "--fsType", "btrfs"]);
    let e = o.fails(1);
    assert!(
        e.contains(r#"invalid --fsType "btrfs": use ext4 or xfs"#),
        "{e}"
    );
    assert!(h.volumes().list().unwrap().is_empty());
}

/// A volume type (and a zone) is checked by Docker and the CLI as dvdcli
/// checked it: at most 255 printable characters.
#[test]
fn a_volume_type_with_control_characters_is_refused_everywhere() {
    let h = Home::new();
    let e = docker_create(&h, r#"{"volumeType":"io1\u0007"}"#);
    assert!(
        e.contains("invalid option volumeType") && e.contains("printable"),
        "{e}"
    );
    let e = docker_create(
        &h,
        &format!(r#"{{"availabilityZone":"{}"}}"#, "z".repeat(300)),
    );
    assert!(
        e.contains("invalid option availabilityZone") && e.contains("255"),
        "{e}"
    );
    let e = dvdcli_create(&h, "volumetype=io1\u{7}");
    assert!(
        e.contains("invalid --volumeopts volumetype") && e.contains("printable"),
        "{e}"
    );
    let o = h.rexray(&["volume", "create", "o1", "--volumeType", "io1\u{7}"]);
    let e = o.fails(1);
    assert!(
        e.contains("invalid --volumeType") && e.contains("printable"),
        "{e}"
    );
    assert!(h.volumes().list().unwrap().is_empty());
}
