//! The Debian package, as `scripts/build-deb.sh` builds it (test.sh exports
//! its path in REXRAY_DEB): metadata, contents, and that what it installs
//! runs.

use crate::common::*;
use std::path::PathBuf;

fn deb() -> Option<PathBuf> {
    match std::env::var_os("REXRAY_DEB") {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            eprintln!(
                "skipped: REXRAY_DEB is not set (scripts/test.sh builds the package and sets it)"
            );
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
    ] {
        assert!(root.dir.join(f).is_file(), "{f} missing from the package");
    }
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
}
