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
