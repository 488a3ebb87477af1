//! The Debian package, as `scripts/build-deb.sh` builds it (test.sh exports
//! its path in REXRAY_DEB): metadata, contents, and that what it installs
//! runs.

use crate::common::*;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn deb() -> Option<PathBuf> {
    match std::env::var_os("REXRAY_DEB") {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            skip("REXRAY_DEB is not set (scripts/test.sh builds the package and sets it)");
            None
        }
    }
}

#[test]
fn package_metadata_and_contents() {
    let Some(deb) = deb() else { return };
    let info = run_cmd(
        std::process::Command::new("dpkg-deb")
            .arg("--info")
            .arg(&deb),
    );
    let info = info.ok();
    for want in [
        "Package: rexray",
        "Depends:",
        "e2fsprogs",
        "Recommends: xfsprogs",
        "postinst",
        "conffiles",
    ] {
        assert!(info.contains(want), "{want} missing in:\n{info}");
    }
    let root = Home::new();
    run_cmd(
        std::process::Command::new("dpkg")
            .arg("-x")
            .arg(&deb)
            .arg(&root.dir),
    )
    .ok();
    for f in [
        "usr/bin/rexray",
        "usr/bin/flexrex",
        "usr/bin/dvdcli",
        "etc/rexray/config.yml",
        "usr/lib/systemd/system/rexray.service",
        "usr/share/man/man1/rexray.1.gz",
        "usr/share/man/man1/rexray-volume-mount.1.gz",
        "usr/share/bash-completion/completions/rexray",
        "usr/share/zsh/vendor-completions/_rexray",
        "usr/share/fish/vendor_completions.d/rexray.fish",
        "usr/share/man/man1/dvdcli.1.gz",
        "usr/share/man/man1/flexrex.1.gz",
        "usr/share/bash-completion/completions/dvdcli",
        "usr/share/zsh/vendor-completions/_dvdcli",
        "usr/share/fish/vendor_completions.d/dvdcli.fish",
    ] {
        assert!(root.dir.join(f).is_file(), "{f} missing from the package");
    }
    // The pages of the protocol binaries describe their protocol.
    for (page, wants) in [
        (
            "dvdcli.1.gz",
            &[
                "volumedriver",
                "explicitcreate",
                "EXIT STATUS",
                "DVDCLI_LOOKUP_TIMEOUT",
            ][..],
        ),
        (
            "flexrex.1.gz",
            &[
                "mountdevice",
                "expandfs",
                "volumeID",
                "forceAttachDelay",
                "EXIT STATUS",
            ][..],
        ),
    ] {
        let out = run_cmd(Command::new("zcat").arg(root.dir.join("usr/share/man/man1").join(page)));
        let text = out.ok().replace("\\-", "-");
        for w in wants {
            assert!(text.contains(w), "{w} missing from {page}:\n{text}");
        }
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page} is not roff"
        );
    }
    let bash = std::fs::read_to_string(
        root.dir
            .join("usr/share/bash-completion/completions/dvdcli"),
    )
    .unwrap();
    assert!(
        bash.contains("complete -F _dvdcli")
            && bash.contains("--volumedriver")
            && bash.contains("unmount"),
        "{bash}"
    );
    let unit =
        std::fs::read_to_string(root.dir.join("usr/lib/systemd/system/rexray.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/bin/rexray service start"),
        "{unit}"
    );
    assert!(unit.contains("Before=docker.service"), "{unit}");
    let ctl = Home::new();
    run_cmd(
        std::process::Command::new("dpkg-deb")
            .arg("-e")
            .arg(&deb)
            .arg(ctl.dir.join("DEBIAN")),
    )
    .ok();
    let conffiles = std::fs::read_to_string(ctl.dir.join("DEBIAN/conffiles")).unwrap();
    assert_eq!(conffiles.trim(), "/etc/rexray/config.yml");
    // An upgrade restarts the service once (postinst); only a removal
    // stops it (prerm): mounts and consumer records stay as they are.
    let postinst = std::fs::read_to_string(ctl.dir.join("DEBIAN/postinst")).unwrap();
    assert!(
        postinst.contains("_dh_action=restart") && postinst.contains("modprobe loop"),
        "{postinst}"
    );
    let prerm = std::fs::read_to_string(ctl.dir.join("DEBIAN/prerm")).unwrap();
    assert!(
        prerm.contains("\"$1\" = remove") && prerm.contains("stop rexray.service"),
        "{prerm}"
    );

    // The installed binary runs, and the default config works as is.
    let rexray = root.dir.join("usr/bin/rexray");
    let cfg = root.dir.join("etc/rexray/config.yml");
    let out = run_cmd(
        std::process::Command::new(&rexray)
            .env_clear()
            .env("REXRAY_HOME", root.dir.join("home"))
            .arg("-c")
            .arg(&cfg)
            .args(["env", "-f", "json"]),
    );
    let v: serde_json::Value = serde_json::from_str(out.ok()).unwrap();
    assert!(
        out.stderr.is_empty(),
        "the default config warns: {}",
        out.stderr
    );
    assert!(v["settings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["key"] == "libstorage.service" && s["value"] == "loop"));
    let version = run_cmd(std::process::Command::new(&rexray).args(["version", "-f", "json"]));
    let v: serde_json::Value = serde_json::from_str(version.ok()).unwrap();
    assert_eq!(v["semVer"], env!("CARGO_PKG_VERSION"));
    for k in ["commit", "branch", "formed", "osArch", "binary"] {
        assert!(
            v[k].as_str().is_some_and(|s| !s.is_empty()),
            "{k} missing: {v}"
        );
    }
    assert!(v["formed"].as_str().unwrap().ends_with('Z'), "{v}");
    assert_eq!(v["drivers"], serde_json::json!(["loop", "vfs", "rbd"]));
    let text = run_cmd(Command::new(&rexray).arg("version"));
    for line in [
        "SemVer: ",
        "Branch: ",
        "Commit: ",
        "Formed: ",
        "Drivers: loop, vfs, rbd",
    ] {
        assert!(text.ok().contains(line), "{line} missing: {}", text.stdout);
    }
}

/// The unit file's `[Service]` value of `key` (the last one wins, as in
/// systemd).
fn unit_value<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .map(str::trim)
}

/// The unit's command line with `/usr/bin/<binary>` replaced by the
/// extracted binary.
fn unit_command(root: &std::path::Path, line: &str, env: &[(&str, String)]) -> Command {
    let mut words = line.split_whitespace();
    let exe = words.next().expect("an empty command line");
    let rel = exe.strip_prefix('/').expect("an absolute path");
    let mut c = Command::new(root.join(rel));
    c.args(words)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What systemd would run: the unit's ExecStart= line, run by hand, serves
/// the plugin socket; SIGTERM (systemd's stop) and the ExecStop= line both
/// stop it and remove the socket.
#[test]
fn unit_file_exec_start_serves_the_socket() {
    let Some(deb) = deb() else { return };
    let root = Home::new();
    run_cmd(Command::new("dpkg").arg("-x").arg(&deb).arg(&root.dir)).ok();
    let unit =
        std::fs::read_to_string(root.dir.join("usr/lib/systemd/system/rexray.service")).unwrap();
    let start = unit_value(&unit, "ExecStart").expect("ExecStart=");
    let stop = unit_value(&unit, "ExecStop").expect("ExecStop=");
    assert_eq!(start, "/usr/bin/rexray service start");
    assert_eq!(stop, "/usr/bin/rexray service stop");
    assert_eq!(unit_value(&unit, "Restart"), Some("on-failure"), "{unit}");
    assert!(
        unit_value(&unit, "Before")
            .is_some_and(|b| b.split_whitespace().any(|u| u == "docker.service")),
        "{unit}"
    );
    assert_eq!(unit_value(&unit, "Type"), Some("simple"), "{unit}");

    let home = Home::new();
    let sock = home.dir.join("unit.sock");
    let env = [
        ("REXRAY_HOME", home.dir.to_string_lossy().into_owned()),
        (
            "REXRAY_MODULES_DEFAULT_DOCKER_HOST",
            format!("unix://{}", sock.display()),
        ),
    ];
    for stop_by_exec_stop in [false, true] {
        let log = std::fs::File::create(home.dir.join("unit.log")).unwrap();
        let mut child = unit_command(&root.dir, start, &env)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let log_text = || std::fs::read_to_string(home.dir.join("unit.log")).unwrap_or_default();
        wait_for("the plugin socket", || {
            if let Some(st) = child.try_wait().unwrap() {
                panic!("ExecStart exited ({st}): {}", log_text());
            }
            sock.exists()
        });
        let (status, body) = crate::docker::post(&sock, "/Plugin.Activate", "");
        assert_eq!(status, 200);
        assert_eq!(body, serde_json::json!({"Implements": ["VolumeDriver"]}));
        if stop_by_exec_stop {
            let out = run_cmd(&mut unit_command(&root.dir, stop, &env));
            assert_eq!(out.code, 0, "{out:?}");
        } else {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            )
            .unwrap();
        }
        let mut code = None;
        wait_for("the service to exit", || {
            code = child.try_wait().unwrap().map(|s| s.code());
            code.is_some()
        });
        assert_eq!(code, Some(Some(0)), "{}", log_text());
        assert!(!sock.exists(), "the socket outlived the service");
        assert!(!home.dir.join("var/run/rexray.pid").exists());
    }
}
