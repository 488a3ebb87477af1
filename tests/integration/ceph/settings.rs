//! Settings of the Ceph drivers: the original's s3fs keys, and how a
//! host attaches rbd images as `rexray env` says.

use super::cluster;
use crate::common::*;
use crate::require_root;

/// `rexray env` says how this host attaches rbd images, in text and
/// JSON, without a cluster.
#[test]
fn env_says_how_rbd_attaches() {
    let h = Home::new();
    let text = h.rexray(&["env"]);
    let last = text.ok().lines().last().unwrap_or_default().to_string();
    let method = last
        .strip_prefix("# rbd attach: ")
        .unwrap_or_else(|| panic!("{last}"));
    assert!(
        ["krbd", "rbd-nbd", "rbd-fuse+loop"].contains(&method),
        "{last}"
    );
    // This host has no kernel rbd module unless /sys/bus/rbd says so.
    if !std::path::Path::new("/sys/bus/rbd").exists() {
        assert_ne!(method, "krbd");
    }
    let json: serde_json::Value =
        serde_json::from_str(h.rexray(&["env", "-f", "json"]).ok()).unwrap();
    assert_eq!(json["rbdAttach"], method, "{json}");
}

/// The original's s3fs keys: `hostName` names this node in the holder
/// record; `maxRetries` over 100, `disablePathStyle: true` and a `tag`
/// are refused naming the key, and change nothing.
#[test]
fn s3fs_settings_of_the_original() {
    require_root!();
    let Some(c) = cluster() else { return };
    let h = c.s3_home();
    let base = std::fs::read_to_string(h.etc().join("config.yml")).unwrap();
    let v = "s3keys1";
    h.rexray(&["volume", "create", v]).ok();
    for (line, key) in [
        ("  maxRetries: 101\n", "s3fs.maxRetries"),
        ("  disablePathStyle: true\n", "s3fs.disablePathStyle"),
        ("  tag: t1\n", "s3fs.tag"),
    ] {
        h.config(&format!("{base}{line}"));
        let e = h.rexray(&["volume", "mount", v]).fails(1).to_string();
        assert!(e.contains(key), "{key}: {e}");
        assert!(mounts_under(&h.dir).is_empty(), "{key}");
        let e = h
            .rexray(&["volume", "create", "s3keys2"])
            .fails(1)
            .to_string();
        assert!(e.contains(key), "{key}: {e}");
    }
    h.config(&format!("{base}  hostName: node-a\n  maxRetries: 0\n"));
    assert!(!h.volume_names().contains(&"s3keys2".to_string()));
    h.rexray(&["volume", "mount", v]).ok();
    let ls = h.rexray(&["volume", "ls", v, "-f", "json"]);
    let ls: serde_json::Value = serde_json::from_str(ls.ok()).unwrap();
    let holder = ls[0]["attachments"][0]["instanceID"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(holder.starts_with("node-a:"), "{ls}");
    h.rexray(&["volume", "unmount", v]).ok();
    h.rexray(&["volume", "rm", v]).ok();
    assert!(mounts_under(&h.dir).is_empty());
}
