//! Errors an operator hits in the README's walkthroughs: each is one line
//! on stderr naming the cause and the fix, nothing on stdout, exit 1, and
//! nothing changed.

use crate::common::*;
use crate::require_root;

#[test]
fn not_root() {
    require_root!();
    let h = Home::new();
    h.rexray(&["volume", "create", "nr", "--size", "1"]).ok();
    // Let an unprivileged user read the state, as a world-readable install would.
    run_cmd(
        std::process::Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(&h.dir),
    )
    .ok();
    let out = run_cmd(
        std::process::Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
            ])
            .arg(bin("rexray"))
            .args(["volume", "mount", "nr"])
            .env_clear()
            .env("REXRAY_HOME", &h.dir),
    );
    let e = out.fails(1);
    assert!(e.contains("needs root") && e.contains("sudo"), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(out.stdout.is_empty(), "{out:#?}");
    assert!(h.loops().is_empty() && h.mounts().is_empty());
}

#[test]
fn mkfs_missing() {
    require_root!();
    let h = Home::new();
    h.rexray(&["volume", "create", "nx", "--size", "1"]).ok();
    let out = run_cmd(
        h.command("rexray")
            .env("PATH", "/nonexistent")
            .args(["volume", "mount", "nx", "--fsType", "xfs"]),
    );
    let e = out.fails(1);
    assert!(
        e.contains("mkfs.xfs was not found") && e.contains("apt-get install xfsprogs"),
        "{e}"
    );
    assert!(out.stdout.is_empty(), "{out:#?}");
    assert!(h.loops().is_empty(), "the failed mount detached again");
}

#[test]
fn volume_in_use_and_typo() {
    require_root!();
    let h = Home::new();
    h.rexray(&["volume", "create", "iu", "--size", "1"]).ok();
    h.rexray(&["volume", "mount", "iu"]).ok();
    let out = h.rexray(&["volume", "rm", "iu"]);
    let e = out.fails(1);
    assert!(
        e.contains("in use") && e.contains("unmount it first"),
        "{e}"
    );
    assert_eq!(e.lines().count(), 1, "{e}");
    h.rexray(&["volume", "unmount", "iu"]).ok();

    h.config("libstorage:\n  integration:\n    volume:\n      operations:\n        mount:\n          premept: true\n");
    let out = h.rexray(&["volume", "ls"]);
    out.ok();
    assert!(
        out.stderr
            .contains("did you mean libstorage.integration.volume.operations.mount.preempt?"),
        "{}",
        out.stderr
    );
    h.rexray(&["volume", "rm", "iu"]).ok();
}

#[test]
fn missing_volume() {
    let h = Home::new();
    let out = h.rexray(&["-s", "vfs", "volume", "mount", "ghost"]);
    let e = out.fails(1);
    assert!(
        e.contains("\"ghost\" not found") && e.contains("rexray volume ls"),
        "{e}"
    );
    assert!(out.stdout.is_empty());
}

/// Links planted in the state directory never redirect a mount, an attach
/// or a lock.
#[test]
fn planted_symlinks_are_refused() {
    require_root!();
    let h = Home::new();
    let out = h.rexray(&["volume", "create", "s1", "--size", "1", "-f", "json"]);
    let v: serde_json::Value = serde_json::from_str(out.ok()).unwrap();
    let id = v[0]["id"].as_str().unwrap().to_string();
    let victim = h.dir.join("victim");
    std::fs::create_dir_all(&victim).unwrap();

    // The mount point is a link to somewhere else.
    std::fs::create_dir_all(h.lib().join("volumes")).unwrap();
    std::os::unix::fs::symlink(&victim, h.mount_point("s1")).unwrap();
    let e = h.rexray(&["volume", "mount", "s1"]).fails(1).to_string();
    assert!(e.contains("symbolic link"), "{e}");
    assert!(h.mounts().is_empty() && h.loops().is_empty());
    std::fs::remove_file(h.mount_point("s1")).unwrap();

    // The image is replaced by a link to another file.
    let img = h.lib().join("loop").join(format!("{id}.img"));
    let real = h.dir.join("other.img");
    std::fs::rename(&img, &real).unwrap();
    std::os::unix::fs::symlink(&real, &img).unwrap();
    let e = h.rexray(&["volume", "mount", "s1"]).fails(1).to_string();
    assert!(
        e.contains("not a link") || e.contains("regular file"),
        "{e}"
    );
    assert!(h.loops().is_empty());
    std::fs::remove_file(&img).unwrap();
    std::fs::rename(&real, &img).unwrap();

    // The lock file is a link.
    std::fs::create_dir_all(h.lib().join("locks")).unwrap();
    let _ = std::fs::remove_file(h.lib().join("locks").join(format!("{id}.lock")));
    std::os::unix::fs::symlink(
        victim.join("x"),
        h.lib().join("locks").join(format!("{id}.lock")),
    )
    .unwrap();
    let e = h.rexray(&["volume", "mount", "s1"]).fails(1).to_string();
    assert!(e.contains("lock"), "{e}");
    assert!(!victim.join("x").exists());
    std::fs::remove_file(h.lib().join("locks").join(format!("{id}.lock"))).unwrap();

    h.rexray(&["volume", "mount", "s1"]).ok();
    h.rexray(&["volume", "unmount", "s1"]).ok();
    h.rexray(&["volume", "rm", "s1"]).ok();
}

/// A hung mkfs is stopped at `libstorage.device.formatTimeout`; the mount
/// fails clearly and leaves nothing attached or mounted.
#[test]
fn hung_mkfs_is_bounded() {
    require_root!();
    let h = Home::new();
    let fake = h.dir.join("fakebin");
    std::fs::create_dir_all(&fake).unwrap();
    let script = fake.join("mkfs.ext4");
    std::fs::write(&script, "#!/bin/sh\nexec sleep 600\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    h.rexray(&["volume", "create", "hm", "--size", "1"]).ok();
    let path = format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", fake.display());
    let out = run_cmd(
        h.command("rexray")
            .env("PATH", path)
            .env("LIBSTORAGE_DEVICE_FORMATTIMEOUT", "1s")
            .args(["volume", "mount", "hm"]),
    );
    let e = out.fails(1);
    assert!(e.contains("did not finish within 1s"), "{e}");
    assert!(
        h.mounts().is_empty() && h.loops().is_empty(),
        "nothing half-done"
    );
    // With the real mkfs the next mount works.
    h.rexray(&["volume", "mount", "hm"]).ok();
    h.rexray(&["volume", "unmount", "hm"]).ok();
    h.rexray(&["volume", "rm", "hm"]).ok();
}

/// A tool stuck in the kernel (growing a frozen filesystem) does not end
/// even when killed at its time limit: the call still answers within a
/// bound, and says why.
#[test]
fn a_tool_stuck_on_a_frozen_filesystem_is_not_waited_for() {
    require_root!();
    if driver_na_on(&[TestDriver::S3fs], "no filesystem to freeze") {
        return;
    }
    let h = Home::new();
    h.rexray(&["volume", "create", "fz", "--size", "1", "--fsType", "xfs"])
        .ok();
    h.rexray(&["volume", "mount", "fz"]).ok();
    let mp = h.mount_point("fz");
    let freeze = |how: &str| fsfreeze(how, &mp);
    freeze("-f");
    let started = std::time::Instant::now();
    let out = run_cmd(
        h.command("flexrex")
            .env("LIBSTORAGE_DEVICE_FORMATTIMEOUT", "2s")
            .args([
                "expandvolume",
                r#"{"volumeID":"fz"}"#,
                "/x",
                "2147483648",
                "1073741824",
            ]),
    );
    let took = started.elapsed();
    freeze("-u");
    assert!(out.stdout.contains(r#""status":"Failure""#), "{out:#?}");
    assert!(out.stdout.contains("did not finish within 2s"), "{out:#?}");
    assert!(took < std::time::Duration::from_secs(60), "{took:?}");
    h.rexray(&["volume", "unmount", "fz"]).ok();
    h.rexray(&["volume", "rm", "fz"]).ok();
}

/// A frozen filesystem (a backup agent's fsfreeze) is not unmounted:
/// unmounted, it could never be thawed, and the next mount would bring it
/// back frozen. Thawed, the same unmount goes through.
#[test]
fn a_frozen_filesystem_is_not_unmounted() {
    require_root!();
    let h = Home::new();
    h.rexray(&["volume", "create", "fr", "--size", "1"]).ok();
    h.rexray(&["volume", "mount", "fr"]).ok();
    let mp = h.mount_point("fr");
    let freeze = |how: &str| fsfreeze(how, &mp);
    freeze("-f");
    let e = h.rexray(&["volume", "unmount", "fr"]).fails(1).to_string();
    assert!(
        e.contains("is frozen (fsfreeze)") && e.contains("fsfreeze -u"),
        "{e}"
    );
    assert_eq!(count_mounts_at(&mp), 1, "still mounted");
    freeze("-u");
    h.rexray(&["volume", "unmount", "fr"]).ok();
    assert!(h.mounts().is_empty() && h.loops().is_empty());
    h.rexray(&["volume", "rm", "fr"]).ok();
}

/// A volume grown while unmounted (its image only) has its filesystem
/// grown to it at the next mount.
#[test]
fn a_filesystem_smaller_than_its_volume_grows_at_mount() {
    require_root!();
    if driver_na_on(&[TestDriver::S3fs], "no filesystem size") {
        return;
    }
    let h = Home::new();
    h.rexray(&["volume", "create", "gm", "--size", "1", "--fsType", "xfs"])
        .ok();
    h.rexray(&["volume", "mount", "gm"]).ok();
    std::fs::write(h.data("gm").join("keep"), "data").unwrap();
    h.rexray(&["volume", "unmount", "gm"]).ok();
    let out = run_cmd(h.command("flexrex").args([
        "expandvolume",
        r#"{"volumeID":"gm"}"#,
        "/x",
        "3221225472",
        "1073741824",
    ]));
    assert!(out.stdout.contains(r#""status":"Success""#), "{out:#?}");
    h.rexray(&["volume", "mount", "gm"]).ok();
    let total = fs_bytes(&h.mount_point("gm"));
    assert!(total > 2 << 30, "{total} bytes after the mount");
    assert_eq!(
        std::fs::read_to_string(h.data("gm").join("keep")).unwrap(),
        "data"
    );
    h.rexray(&["volume", "unmount", "gm"]).ok();
    h.rexray(&["volume", "rm", "gm"]).ok();
}

/// `fsfreeze HOW MOUNTPOINT` (`-f` freezes, `-u` thaws), which must work.
#[track_caller]
fn fsfreeze(how: &str, mp: &std::path::Path) {
    let o = run_cmd(std::process::Command::new("fsfreeze").arg(how).arg(mp));
    assert_eq!(o.code, 0, "{o:#?}");
}

/// One line on stderr, nothing on stdout, exit 1; returns the line./// One line on stderr, nothing on stdout, exit 1; returns the line./// One line on stderr, nothing on stdout, exit 1; returns the line./// One line on stderr, nothing on stdout, exit 1; returns the line.
#[track_caller]
fn one_line(out: &Out) -> String {
    let e = out.fails(1).to_string();
    assert_eq!(e.lines().count(), 1, "not one line: {e}");
    assert!(out.stdout.is_empty(), "{out:#?}");
    e
}

/// Without the loop module (/dev/loop-control missing, as in a container
/// without /dev): the mount says to load it, and changes nothing.
#[test]
fn loop_devices_unavailable() {
    require_root!();
    let h = Home::new();
    h.rexray(&["volume", "create", "lc", "--size", "1"]).ok();
    let empty = h.dir.join("not-a-device");
    std::fs::write(&empty, "").unwrap();
    // A private mount namespace: only this process sees the file over
    // /dev/loop-control.
    let out = run_cmd(
        std::process::Command::new("unshare")
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("REXRAY_HOME", &h.dir)
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(format!(
                "mount --bind '{}' /dev/loop-control && exec '{}' volume mount lc",
                empty.display(),
                bin("rexray").display()
            )),
    );
    let e = one_line(&out);
    assert!(
        e.contains("loop devices are unavailable") && e.contains("modprobe loop"),
        "{e}"
    );
    assert!(h.loops().is_empty() && h.mounts().is_empty());
    h.rexray(&["volume", "rm", "lc"]).ok();
}

/// `rexray service start` while another process listens on the socket.
#[test]
fn socket_in_use() {
    let h = Home::new();
    let sock = h.dir.join("busy.sock");
    let _other = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let out = run_cmd(h.command("rexray").args(["service", "start"]).env(
        "REXRAY_MODULES_DEFAULT_DOCKER_HOST",
        format!("unix://{}", sock.display()),
    ));
    let e = one_line(&out);
    assert!(
        e.contains("another process serves")
            && e.contains(&sock.display().to_string())
            && e.contains("rexray service stop")
            && e.contains("rexray.modules.default-docker.host"),
        "{e}"
    );
    assert!(sock.exists(), "the other process's socket was left alone");
    assert!(!h.dir.join("var/run/rexray.pid").exists());
}

#[test]
fn unknown_service() {
    let h = Home::new();
    let e = one_line(&h.rexray(&["-s", "ebs", "volume", "ls"]));
    assert!(
        e.contains("unknown service \"ebs\"")
            && e.contains("loop, vfs")
            && e.contains("libstorage.server.services"),
        "{e}"
    );
}

/// `rexray flexrex install` over another driver file needs --force; the
/// file is left as it was.
#[test]
fn flexrex_install_over_a_different_file() {
    let h = Home::new();
    let target = h.dir.join("exec/rexray~flexrex/flexrex");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::write(&target, "#!/bin/sh\necho someone else's driver\n").unwrap();
    let path = target.to_string_lossy().into_owned();
    let e = one_line(&h.rexray(&["flexrex", "install", "--path", &path]));
    assert!(
        e.contains(&path) && e.contains("differs") && e.contains("--force"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        "#!/bin/sh\necho someone else's driver\n"
    );
    h.rexray(&["flexrex", "install", "--path", &path, "--force"])
        .ok();
    assert_eq!(
        std::fs::read(&target).unwrap(),
        std::fs::read(bin("flexrex")).unwrap()
    );
}

/// dvdcli with a driver that is neither a rexray service nor a running
/// Docker plugin.
#[test]
fn dvdcli_unknown_driver() {
    let h = Home::new();
    let empty = h.dir.join("plugins");
    std::fs::create_dir_all(&empty).unwrap();
    let out = run_cmd(
        h.command("dvdcli")
            .env("DVDCLI_PLUGIN_SOCKET_DIRS", &empty)
            .env("DVDCLI_PLUGIN_SPEC_DIRS", &empty)
            .env("DVDCLI_LOOKUP_TIMEOUT", "0")
            .args(["mount", "--volumedriver=nope", "--volumename=v1"]),
    );
    let e = one_line(&out);
    assert!(
        e.contains("\"nope\"")
            && e.contains("no plugin found")
            && e.contains("--volumedriver=rexray")
            && e.contains("libstorage.server.services"),
        "{e}"
    );
    assert!(h
        .rexray(&["-s", "vfs", "volume", "ls", "-q"])
        .ok()
        .is_empty());
}

/// Configuration files an operator gets wrong: each names the file (and
/// the key) and what to do.
#[test]
fn config_file_mistakes() {
    let h = Home::new();
    h.config("libstorage: [\n");
    let e = one_line(&h.rexray(&["volume", "ls"]));
    assert!(
        e.contains("invalid config file")
            && e.contains("config.yml")
            && e.contains("line 2")
            && e.contains("fix the YAML"),
        "{e}"
    );
    h.config("rexray:\n  logLevel: loud\n");
    let e = one_line(&h.rexray(&["volume", "ls"]));
    assert!(
        e.contains("\"loud\"") && e.contains("rexray.logLevel") && e.contains("expected one of"),
        "{e}"
    );
    h.config("libstorage:\n  service: vfs\n");
    let cfg = h.etc().join("config.yml");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o666)).unwrap();
    let e = one_line(&h.rexray(&["volume", "ls"]));
    assert!(
        e.contains("writable by every user") && e.contains("chmod o-w"),
        "{e}"
    );
    let e = one_line(&h.rexray(&["-c", "/nonexistent/rexray.yml", "volume", "ls"]));
    assert!(
        e.contains("/nonexistent/rexray.yml") && e.contains("no such file"),
        "{e}"
    );
    // What a shell hands over: /dev/null (no settings), a pipe (`-c <(…)`).
    h.rexray(&["-c", "/dev/null", "volume", "ls"]).ok();
    let out = run_cmd(
        std::process::Command::new("bash")
            .env("REXRAY_HOME", &h.dir)
            .arg("-c")
            .arg(format!(
                r"{} -c <(printf 'libstorage:\n  service: vfs\n') volume ls",
                bin("rexray").display()
            )),
    );
    assert_eq!(out.code, 0, "{out:#?}");
    let e = one_line(&h.rexray(&["-c", "/tmp", "volume", "ls"]));
    assert!(e.contains("/tmp: it is a directory"), "{e}");
}

/// A device that never appears fails within `libstorage.device.attachTimeout`
/// with a message naming the key, for a mount and for kubelet's attach, and
/// leaves nothing attached, mounted or recorded.
#[test]
fn a_device_that_never_appears_is_bounded() {
    require_root!();
    let h = Home::new();
    h.rexray(&["volume", "create", "na", "--size", "1"]).ok();
    let absent = |c: &mut std::process::Command| {
        c.env("LIBSTORAGE_DEVICE_ATTACHTIMEOUT", "1s")
            .env("FAILPOINTS", "node::device-absent=return");
    };
    let mut c = h.command("rexray");
    absent(&mut c);
    let out = run_cmd(c.args(["volume", "mount", "na"]));
    let e = one_line(&out);
    assert!(
        e.contains("did not appear within 1s") && e.contains("libstorage.device.attachTimeout"),
        "{e}"
    );
    assert!(
        h.mounts().is_empty() && h.loops().is_empty(),
        "nothing half-done"
    );
    assert!(h
        .volumes()
        .mount_record(rexray::volume::VolumeRef::Name("na"))
        .unwrap()
        .is_none());

    let mut c = h.command("flexrex");
    absent(&mut c);
    let opts = r#"{"volumeID":"na","kubernetes.io/pvOrVolumeName":"pv-na"}"#;
    let out = run_cmd(c.args(["attach", opts, "node1"]));
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stdout.contains("did not appear within 1s"), "{out:#?}");
    assert!(h.loops().is_empty(), "{:?}", h.loops());
    assert!(
        h.volumes()
            .mount_record(rexray::volume::VolumeRef::Name("na"))
            .unwrap()
            .is_none(),
        "no hold"
    );

    // A volume that was attached before stays attached after the failure.
    h.rexray(&["volume", "attach", "na"]).ok();
    let mut c = h.command("rexray");
    absent(&mut c);
    one_line(&run_cmd(c.args(["volume", "mount", "na"])));
    assert_eq!(h.loops().len(), 1, "still attached");
    let mut c = h.command("flexrex");
    absent(&mut c);
    assert_eq!(run_cmd(c.args(["attach", opts, "node1"])).code, 1);
    assert_eq!(h.loops().len(), 1, "still attached");
    h.rexray(&["volume", "detach", "na"]).ok();

    // Without the fault the same calls work.
    h.rexray(&["volume", "mount", "na"]).ok();
    h.rexray(&["volume", "unmount", "na"]).ok();
    h.rexray(&["volume", "rm", "na"]).ok();
}

/// A volume whose device carries conflicting signatures (here an xfs
/// superblock written over an ext4 volume's first sector) is neither
/// mounted nor formatted: mounting ext4 there would write to a device
/// something else may own.
#[test]
fn a_device_with_conflicting_signatures_is_left_alone() {
    require_root!();
    let h = Home::new();
    let out = h.rexray(&["volume", "create", "amb", "--size", "1", "-f", "json"]);
    let v: serde_json::Value = serde_json::from_str(out.ok()).unwrap();
    let id = v[0]["id"].as_str().unwrap().to_string();
    h.rexray(&["volume", "mount", "amb"]).ok();
    std::fs::write(h.data("amb").join("keep"), "data").unwrap();
    h.rexray(&["volume", "unmount", "amb"]).ok();
    // An xfs superblock from a scratch image over sector 0.
    let scratch = h.dir.join("xfs.img");
    std::fs::File::create(&scratch)
        .unwrap()
        .set_len(300 << 20)
        .unwrap();
    let mk = run_cmd(
        std::process::Command::new("mkfs.xfs")
            .arg("-q")
            .arg(&scratch),
    );
    assert_eq!(mk.code, 0, "{mk:#?}");
    let sb = std::fs::read(&scratch).unwrap()[..512].to_vec();
    let img = h.lib().join("loop").join(format!("{id}.img"));
    use std::os::unix::fs::FileExt;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&img)
        .unwrap()
        .write_all_at(&sb, 0)
        .unwrap();
    // A streamed digest: the image is 1 GiB.
    let digest = |p: &std::path::Path| {
        use std::hash::Hasher;
        use std::io::Read;
        let mut f = std::fs::File::open(p).unwrap();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).unwrap();
            if n == 0 {
                break h.finish();
            }
            h.write(&buf[..n]);
        }
    };
    let before = digest(&img);
    let e = h.rexray(&["volume", "mount", "amb"]).fails(1).to_string();
    assert!(
        e.contains("conflicting signatures") && e.contains("refusing"),
        "{e}"
    );
    assert!(
        h.mounts().is_empty() && h.loops().is_empty(),
        "nothing left attached"
    );
    assert_eq!(digest(&img), before, "not one byte written");
}

/// Bytes no probe recognises (written through the device, not yet
/// flushed to the image) are data: a mount refuses to format over them
/// and says where they are; `--overwriteFS` is how to destroy them.
#[test]
fn data_without_a_signature_is_never_formatted() {
    require_root!();
    use std::os::unix::fs::FileExt;
    let h = Home::new();
    h.rexray(&["volume", "create", "raw", "--size", "1"]).ok();
    let out = h.rexray(&["volume", "attach", "raw", "-f", "json"]);
    let v: serde_json::Value = serde_json::from_str(out.ok()).unwrap();
    let dev = v[0]["attachments"][0]["deviceName"]
        .as_str()
        .unwrap_or_else(|| panic!("no device in {v}"))
        .to_string();
    let at = (10u64 << 20) + 7;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&dev)
        .unwrap()
        .write_all_at(b"precious", at)
        .unwrap();
    let e = h.rexray(&["volume", "mount", "raw"]).fails(1).to_string();
    assert!(
        e.contains(&format!(
            "holds data in no format blkid recognises (a non-zero byte at offset {at})"
        )) && e.contains("overwriteFS"),
        "{e}"
    );
    assert!(h.mounts().is_empty(), "nothing mounted");
    let mut buf = [0u8; 8];
    std::fs::File::open(&dev)
        .unwrap()
        .read_exact_at(&mut buf, at)
        .unwrap();
    assert_eq!(&buf, b"precious", "not formatted");
    // Asked to overwrite: formatted and mounted.
    h.rexray(&["volume", "mount", "raw", "--overwriteFS"]).ok();
    assert_eq!(h.mounts().len(), 1);
    h.rexray(&["volume", "unmount", "raw"]).ok();
    h.rexray(&["volume", "rm", "raw"]).ok();
}

/// A device holding swap (or any signature whose usage is not a
/// filesystem: RAID and LVM members, encrypted volumes) is not mounted as
/// if it were one: the mount is refused up front, naming it.
#[test]
fn swap_is_not_mounted_as_a_filesystem() {
    require_root!();
    let h = Home::new();
    h.rexray(&["volume", "create", "sw", "--size", "1"]).ok();
    let out = h.rexray(&["volume", "attach", "sw", "-f", "json"]);
    let v: serde_json::Value = serde_json::from_str(out.ok()).unwrap();
    let dev = v[0]["attachments"][0]["deviceName"]
        .as_str()
        .unwrap()
        .to_string();
    let mk = run_cmd(std::process::Command::new("mkswap").arg(&dev));
    assert_eq!(mk.code, 0, "{mk:#?}");
    let e = h.rexray(&["volume", "mount", "sw"]).fails(1).to_string();
    assert!(
        e.contains("holds swap (usage other), not a filesystem") && e.contains("overwriteFS"),
        "{e}"
    );
    assert!(h.mounts().is_empty());
    h.rexray(&["volume", "detach", "sw"]).ok();
    h.rexray(&["volume", "rm", "sw"]).ok();
}

/// A size past the largest file the backing filesystem allows (ext4's
/// 16 TiB) is named as that, and leaves nothing.
#[test]
fn a_size_past_the_backing_filesystems_limit_is_named() {
    require_root!();
    let h = Home::new();
    let img = h.dir.join("ext4.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let mk = run_cmd(std::process::Command::new("mkfs.ext4").arg("-q").arg(&img));
    assert_eq!(mk.code, 0, "{mk:#?}");
    let dir = h.dir.join("ext4");
    std::fs::create_dir(&dir).unwrap();
    let m = run_cmd(
        std::process::Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&dir),
    );
    assert_eq!(m.code, 0, "{m:#?}");
    h.config(&format!(
        "libstorage:\n  service: loop\nloop:\n  volumePath: {}\n",
        dir.display()
    ));
    let e = h
        .rexray(&["volume", "create", "huge", "--size", "65536"])
        .fails(1)
        .to_string();
    assert!(
        e.contains("larger than the largest file the filesystem of loop.volumePath")
            && e.contains("choose a smaller size"),
        "{e}"
    );
    assert!(h.rexray(&["volume", "ls", "-q"]).ok().trim().is_empty());
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".img"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // A copy that large: refused the same way before anything is copied
    // (its source may be frozen for the copy).
    h.rexray(&["volume", "create", "src", "--size", "1"]).ok();
    let (host, sock) = unix_host(&h);
    let _svc = crate::docker::Service::start(&h, &host, &[]);
    let (status, reply) = crate::docker::post(
        &sock,
        "/VolumeDriver.Create",
        r#"{"Name":"huge","Opts":{"volumeName":"src","size":"65536"}}"#,
    );
    let e = reply["Err"].as_str().unwrap_or_default();
    assert!(
        status != 200
            && e.contains("creating volume huge")
            && e.contains("larger than the largest file the filesystem of loop.volumePath")
            && !e.contains(".copying"),
        "{status} {reply}"
    );
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".img") || n.ends_with(".copying"))
        .collect();
    assert_eq!(names.len(), 1, "only the source's image: {names:?}");
}

#[test]
fn an_environment_variable_that_is_not_utf8() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let h = Home::new();
    let bad = OsStr::from_bytes(b"info\xff");
    // One the configuration reads: a clear error naming it, no panic.
    let out = run_cmd(
        h.command("rexray")
            .env("REXRAY_LOGLEVEL", bad)
            .args(["volume", "ls"]),
    );
    let e = out.fails(1);
    assert!(
        e.contains("REXRAY_LOGLEVEL is not valid UTF-8") && !e.contains("panicked"),
        "{e}"
    );
    assert!(out.stdout.is_empty(), "{out:#?}");
    // flexrex answers kubelet in JSON on stdout, and nothing on stderr.
    let out = run_cmd(h.command("flexrex").env("REXRAY_LOGLEVEL", bad).arg("init"));
    assert!(out.stderr.is_empty(), "{out:#?}");
    assert!(
        out.stdout.contains("\"status\":\"Failure\"")
            && out.stdout.contains("REXRAY_LOGLEVEL is not valid UTF-8"),
        "{out:#?}"
    );
    // One it does not read is no concern of it.
    let out = run_cmd(
        h.command("rexray")
            .env("SOME_OTHER_VAR", bad)
            .args(["volume", "ls"]),
    );
    out.ok();
}
