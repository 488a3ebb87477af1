//! `rexray volume …` as an operator uses it, on real loop devices.

use crate::common::*;
use crate::require_root;
use std::path::Path;

fn findmnt(target: &Path) -> (String, String) {
    let o = run_cmd(
        std::process::Command::new("findmnt")
            .args(["-n", "-o", "SOURCE,FSTYPE", "--mountpoint"])
            .arg(target),
    );
    let line = o.stdout.trim().to_string();
    let mut it = line.split_whitespace();
    (
        it.next().unwrap_or("").to_string(),
        it.next().unwrap_or("").to_string(),
    )
}

#[test]
fn create_mount_share_unmount_remove() {
    require_root!();
    let h = Home::new();
    let out = h.rexray(&["volume", "create", "vol1", "--size", "1"]);
    let table = out.ok();
    assert!(table.starts_with("ID"), "{table}");
    assert!(
        table.contains("vol1") && table.contains("available"),
        "{table}"
    );

    // mount prints the path under <lib>/volumes/<name>/data
    let out = h.rexray(&["volume", "mount", "vol1", "-f", "json"]);
    let v: serde_json::Value = serde_json::from_str(out.ok()).unwrap();
    let path = v[0]["Path"].as_str().unwrap().to_string();
    assert_eq!(Path::new(&path), h.data("vol1"));
    let (src, fs) = findmnt(&h.mount_point("vol1"));
    assert!(src.starts_with(mounted_source()), "{src}");
    assert_eq!(fs, mounted_fs("ext4"));
    assert_eq!(h.attached().len(), 1);

    // a second consumer: same path, no second mount
    std::fs::write(h.data("vol1").join("token"), "kept").unwrap();
    let out = h.rexray(&["volume", "path", "vol1"]);
    assert_eq!(out.ok().trim(), path);
    assert_eq!(count_mounts_at(&h.mount_point("vol1")), 1);

    // rm of a mounted volume is refused and changes nothing
    let err = h.rexray(&["volume", "rm", "vol1"]).fails(1).to_string();
    assert!(err.contains("in use"), "{err}");
    assert_eq!(count_mounts_at(&h.mount_point("vol1")), 1);

    // unmount releases the anonymous consumer: unmounted, loop freed
    h.rexray(&["volume", "unmount", "vol1"]).ok();
    assert_eq!(count_mounts_at(&h.mount_point("vol1")), 0);
    assert!(h.attached().is_empty(), "{:?}", h.attached());
    // unmount again is fine
    h.rexray(&["volume", "unmount", "vol1"]).ok();

    // data survives; the filesystem is not remade (xfs asked, ext4 kept)
    h.rexray(&["volume", "mount", "vol1", "--fsType", "xfs"])
        .ok();
    assert_eq!(findmnt(&h.mount_point("vol1")).1, mounted_fs("ext4"));
    assert_eq!(
        std::fs::read_to_string(h.data("vol1").join("token")).unwrap(),
        "kept"
    );
    h.rexray(&["volume", "unmount", "vol1"]).ok();

    let out = h.rexray(&["volume", "rm", "vol1"]);
    assert_eq!(out.ok(), "vol1\n");
    assert!(h.rexray(&["volume", "ls", "-q"]).ok().is_empty());
    // Gone from the backend too (image file, rbd image, bucket).
    assert!(h.leftovers().is_empty(), "{:?}", h.leftovers());
    assert!(h.mounts().is_empty() && h.attached().is_empty());
}

#[test]
fn xfs_and_overwrite() {
    require_root!();
    if driver_na_on(
        &[TestDriver::S3fs],
        "no filesystem to choose: s3fs mounts a bucket",
    ) {
        return;
    }
    let h = Home::new();
    h.rexray(&["volume", "create", "x1", "--size", "1", "--fsType", "xfs"])
        .ok();
    h.rexray(&["volume", "mount", "x1"]).ok();
    assert_eq!(findmnt(&h.mount_point("x1")).1, "xfs");
    std::fs::write(h.data("x1").join("f"), "x").unwrap();
    h.rexray(&["volume", "unmount", "x1"]).ok();
    // explicit overwrite destroys the old filesystem
    h.rexray(&["volume", "mount", "x1", "--fsType", "ext4", "--overwriteFS"])
        .ok();
    assert_eq!(findmnt(&h.mount_point("x1")).1, "ext4");
    assert!(!h.data("x1").join("f").exists());
    h.rexray(&["volume", "unmount", "x1"]).ok();
    h.rexray(&["volume", "rm", "x1"]).ok();
}

#[test]
fn consumers_are_counted_in_the_state_dir() {
    require_root!();
    let h = Home::new();
    h.rexray(&["volume", "create", "cc1", "--size", "1"]).ok();
    let lib = h.lib();
    let vols = h.volumes();
    use rexray::state::Consumer;
    use rexray::volume::VolumeRef::Name;
    let opts = rexray::model::MountOptions::default();
    let (_, p1) = vols
        .mount(Name("cc1"), Consumer::Docker("container-a"), &opts)
        .unwrap();
    let (_, p2) = vols
        .mount(Name("cc1"), Consumer::Docker("container-b"), &opts)
        .unwrap();
    assert_eq!(p1, p2);
    assert_eq!(count_mounts_at(&h.mount_point("cc1")), 1);
    // the CLI's anonymous consumer is a third one; twice is still one
    h.rexray(&["volume", "mount", "cc1"]).ok();
    h.rexray(&["volume", "mount", "cc1"]).ok();
    assert_eq!(
        vols.consumers(rexray::volume::VolumeRef::Name("cc1"))
            .unwrap()
            .len(),
        3
    );
    h.rexray(&["volume", "unmount", "cc1"]).ok();
    assert_eq!(
        vols.consumers(rexray::volume::VolumeRef::Name("cc1"))
            .unwrap(),
        vec!["docker:container-a", "docker:container-b"]
    );
    assert_eq!(
        vols.unmount(Name("cc1"), Consumer::Docker("container-a"))
            .unwrap(),
        rexray::volume::Unmounted::StillUsed(1)
    );
    assert_eq!(count_mounts_at(&h.mount_point("cc1")), 1);
    assert_eq!(
        vols.unmount(Name("cc1"), Consumer::Docker("container-b"))
            .unwrap(),
        rexray::volume::Unmounted::Released
    );
    assert_eq!(count_mounts_at(&h.mount_point("cc1")), 0);
    assert!(h.attached().is_empty());
    assert!(std::fs::read_dir(lib.join("mounts"))
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn bad_input_changes_nothing() {
    require_root!();
    let h = Home::new();
    h.rexray(&["volume", "create", "good", "--size", "1"]).ok();
    // Every row of the loop catalog, as text; other backends' volumes
    // are compared as the backend lists them.
    let catalog = || {
        if test_driver() != TestDriver::Loop {
            return (String::new(), h.leftovers().len() as i64);
        }
        let c = rusqlite::Connection::open(h.lib().join("loop/catalog.db")).unwrap();
        let g: String = c
            .query_row(
                "SELECT coalesce((SELECT group_concat(seq || id || name || size || created_at || fields || state, ',') FROM volumes), '')
                     || '|' || coalesce((SELECT group_concat(seq || id || name || state, ',') FROM snapshots), '')
                     || '|' || coalesce((SELECT group_concat(key || value, ',') FROM meta), '')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let n: i64 = c
            .query_row("SELECT count(*) FROM volumes", [], |r| r.get(0))
            .unwrap();
        (g, n)
    };
    let before = catalog();
    let long = "x".repeat(300);
    for name in ["../x", "a/b", ".", "", &long, "a b"] {
        let e = h
            .rexray(&["volume", "create", name, "--size", "1"])
            .fails(1)
            .to_string();
        assert!(e.contains("invalid volume name"), "{name}: {e}");
    }
    for size in ["abc", "0", "-1", "99999999999"] {
        let e = h
            .rexray(&["volume", "create", "v", &format!("--size={size}")])
            .fails(1)
            .to_string();
        assert!(e.contains("--size"), "{size}: {e}");
    }
    let e = h
        .rexray(&["volume", "create", "v", "--fsType", "btrfs"])
        .fails(1)
        .to_string();
    assert!(e.contains("btrfs"), "{e}");
    let e = h
        .rexray(&["volume", "mount", "good", "--fsType", "zfs"])
        .fails(1)
        .to_string();
    assert!(e.contains("zfs"), "{e}");
    let e = h
        .rexray(&["-s", "nosuch", "volume", "ls"])
        .fails(1)
        .to_string();
    assert!(e.contains("unknown service"), "{e}");
    let e = h
        .rexray(&["volume", "create", "v", "--bogus"])
        .fails(2)
        .to_string();
    assert!(e.contains("--bogus"), "{e}");
    let e = h.rexray(&["volume", "rm", "goo"]).fails(1).to_string();
    assert!(e.contains("not found"), "prefix must not match: {e}");
    h.config("libstorage:\n  integration:\n    volume:\n      operations:\n        create:\n          default:\n            size: big\n");
    let e = h.rexray(&["volume", "ls"]).fails(1).to_string();
    assert!(
        e.contains("libstorage.integration.volume.operations.create.default.size")
            && e.contains("big"),
        "{e}"
    );
    h.config("");
    // NUL cannot pass through argv; the library rejects it.
    assert!(rexray::input::volume_name("a\0b").is_err());
    assert_eq!(catalog(), before);
    assert!(h.mounts().is_empty() && h.attached().is_empty());
    h.rexray(&["volume", "rm", "good"]).ok();
}

#[test]
fn env_shows_sources() {
    let h = Home::new();
    h.config("rexray:\n  logLevel: info\nlibstorage:\n  integration:\n    volume:\n      operations:\n        create:\n          default:\n            size: 3\n");
    let line = |out: &str, key: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{key}=")))
            .unwrap_or_else(|| panic!("{key} missing in {out}"))
            .to_string()
    };
    let k = "LIBSTORAGE_INTEGRATION_VOLUME_OPERATIONS_CREATE_DEFAULT_SIZE";
    let out = h.rexray(&["env"]);
    let l = line(out.ok(), k);
    assert!(
        l.starts_with(&format!("{k}=3 ")) && l.contains("# file:"),
        "{l}"
    );
    let h2 = Home {
        dir: h.dir.clone(),
        env: vec![(k.into(), "4".into())],
        ctl: None,
        backend: None,
    };
    let l = line(h2.rexray(&["env"]).ok(), k);
    assert!(
        l.starts_with(&format!("{k}=4 ")) && l.contains(&format!("# env:{k}")),
        "{l}"
    );
    let l = line(
        h2.rexray(&[
            "env",
            "--libstorageIntegrationVolumeOperationsCreateDefaultSize=5",
        ])
        .ok(),
        k,
    );
    assert!(
        l.starts_with(&format!("{k}=5 ")) && l.contains("# flag:"),
        "{l}"
    );
    let l = line(h2.rexray(&["-l", "debug", "env"]).ok(), "REXRAY_LOGLEVEL");
    assert!(l.contains("=debug") && l.contains("flag:--logLevel"), "{l}");
    let json: serde_json::Value =
        serde_json::from_str(h2.rexray(&["env", "-f", "json"]).ok()).unwrap();
    assert!(json["settings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["env"] == k && s["value"] == "4"));
    std::mem::forget(h2); // same directory as h; h cleans up
}

#[test]
fn vfs_works_without_devices() {
    let h = Home::new();
    let out = h.rexray(&["-s", "vfs", "volume", "create", "d1", "--size", "2"]);
    assert!(out.ok().contains("d1"));
    let out = h.rexray(&["-s", "vfs", "volume", "ls", "-f", "json"]);
    let v: serde_json::Value = serde_json::from_str(out.ok()).unwrap();
    assert_eq!(v[0]["name"], "d1");
    assert_eq!(v[0]["size"], 2);
    if is_root() {
        h.rexray(&["-s", "vfs", "volume", "mount", "d1"]).ok();
        std::fs::write(h.data("d1").join("f"), "v").unwrap();
        h.rexray(&["-s", "vfs", "volume", "unmount", "d1"]).ok();
        assert!(h.mounts().is_empty());
    }
    h.rexray(&["-s", "vfs", "volume", "rm", "d1"]).ok();
}

#[test]
fn disable_switches_and_ignore_used_count() {
    require_root!();
    let h = Home::new();
    h.config("libstorage:\n  integration:\n    volume:\n      operations:\n        create:\n          disable: true\n");
    let out = h.rexray(&["volume", "create", "nd", "--size", "1"]);
    assert!(out.ok().trim() == "ID  Name  Status  Size", "{out:#?}");
    assert!(out.stderr.contains("create.disable"), "{out:#?}");
    assert!(h.rexray(&["volume", "ls", "-q"]).ok().is_empty());

    h.config("libstorage:\n  integration:\n    volume:\n      remove:\n        disable: true\n      unmount:\n        ignoreUsedCount: true\n");
    h.rexray(&["volume", "create", "rd1", "--size", "1"]).ok();
    h.rexray(&["volume", "rm", "rd1"]).ok();
    assert!(
        h.rexray(&["volume", "ls", "-q"]).ok().contains("rd1"),
        "remove.disable keeps it"
    );
    // ignoreUsedCount: one unmount releases every consumer
    h.rexray(&["volume", "mount", "rd1", "--consumer", "a"])
        .ok();
    h.rexray(&["volume", "mount", "rd1", "--consumer", "b"])
        .ok();
    h.rexray(&["volume", "unmount", "rd1", "--consumer", "a"])
        .ok();
    assert!(h.mounts().is_empty() && h.attached().is_empty());
    h.config("");
    h.rexray(&["volume", "rm", "rd1"]).ok();
    assert!(h.rexray(&["volume", "ls", "-q"]).ok().is_empty());
}

#[test]
fn version_and_formats() {
    let h = Home::new();
    let v: serde_json::Value =
        serde_json::from_str(h.rexray(&["version", "-f", "json"]).ok()).unwrap();
    assert_eq!(v["semVer"], env!("CARGO_PKG_VERSION"));
    assert!(v["drivers"].as_array().unwrap().iter().any(|d| d == "loop"));
    assert!(h.rexray(&["version"]).ok().contains("Commit:"));
    h.rexray(&["-s", "vfs", "volume", "create", "y1", "--size", "1"])
        .ok();
    let y = h.rexray(&["-s", "vfs", "volume", "ls", "-f", "yaml"]);
    assert!(y.ok().contains("name: y1"), "{}", y.stdout);
    let e = h
        .rexray(&["-s", "vfs", "volume", "ls", "-f", "{{.Name}}"])
        .fails(1)
        .to_string();
    assert!(e.contains("invalid format"), "{e}");
    let ls = h.rexray(&["-s", "vfs", "volume", "ls", "nosuch"]);
    assert_eq!(ls.ok(), "ID  Name  Status  Size\n");
    h.rexray(&["-s", "vfs", "volume", "rm", "y1"]).ok();
}

#[test]
fn a_partition_table_is_never_formatted_over() {
    require_root!();
    if driver_na_on(
        &[TestDriver::S3fs],
        "no device to format: s3fs mounts a bucket",
    ) {
        return;
    }
    let h = Home::new();
    let out = h.rexray(&["volume", "create", "pt1", "--size", "1", "-f", "json"]);
    let v: serde_json::Value = serde_json::from_str(out.ok()).unwrap();
    let id = v[0]["id"].as_str().unwrap().to_string();
    // A DOS partition table: one Linux partition at 1 MiB.
    let mut mbr = vec![0u8; 512];
    mbr[446 + 4] = 0x83;
    mbr[446 + 8..446 + 12].copy_from_slice(&2048u32.to_le_bytes());
    mbr[446 + 12..446 + 16].copy_from_slice(&4096u32.to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    h.write_volume_head(&id, &mbr);
    let e = h.rexray(&["volume", "mount", "pt1"]).fails(1).to_string();
    assert!(
        e.contains("refusing to format") && e.contains("partition table"),
        "{e}"
    );
    assert!(h.mounts().is_empty(), "nothing mounted");
    assert!(
        h.attached().is_empty(),
        "the failed mount detached what it attached"
    );
    assert_eq!(h.read_volume_head(&id, 512), mbr, "untouched");
    h.rexray(&["volume", "mount", "pt1", "--overwriteFS"]).ok();
    h.rexray(&["volume", "unmount", "pt1"]).ok();
    h.rexray(&["volume", "rm", "pt1"]).ok();
}

/// A state directory reached through a link (to a bigger disk, say): the
/// kernel names its volumes' mounts where the link leads, and every
/// command finds them there: a second mount mounts nothing more, the path
/// is shown, and the unmount unmounts and detaches.
#[test]
fn a_state_directory_behind_a_link_mounts_and_unmounts_cleanly() {
    require_root!();
    if client_mode_na("the node's state directory is made before a test can link it") {
        return;
    }
    let h = Home::plain();
    let real = h.dir.join("disk").join("lib");
    std::fs::create_dir_all(&real).unwrap();
    let lib = h.lib();
    std::fs::create_dir_all(lib.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&real, &lib).unwrap();
    h.rexray(&["volume", "create", "ln", "--size", "1"]).ok();
    h.rexray(&["volume", "mount", "ln"]).ok();
    h.rexray(&["volume", "mount", "ln"]).ok();
    assert_eq!(h.mounts().len(), 1, "{:?}", h.mounts());
    let path = h.rexray(&["volume", "path", "ln"]).ok().trim().to_string();
    assert!(Path::new(&path).starts_with(&real), "{path}");
    std::fs::write(Path::new(&path).join("f"), "x").unwrap();
    let ls = h.rexray(&["volume", "ls", "--path"]).ok().to_string();
    assert!(ls.contains(&path), "{ls}");
    h.rexray(&["volume", "unmount", "ln"]).ok();
    assert!(h.mounts().is_empty(), "{:?}", h.mounts());
    assert!(h.loops().is_empty(), "{:?}", h.loops());
    h.rexray(&["volume", "rm", "ln"]).ok();
}
