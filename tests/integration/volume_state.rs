//! Concurrency and multi-instance behaviour of the volume workflows.

use crate::common::*;
use crate::require_root;
use std::collections::BTreeSet;

fn record_consumers(h: &Home, name: &str) -> BTreeSet<String> {
    let out = h.rexray(&["volume", "ls", name, "-f", "json"]);
    let v: serde_json::Value = serde_json::from_str(out.ok()).unwrap();
    let id = v[0]["id"].as_str().unwrap().to_string();
    match std::fs::read(h.lib().join("mounts").join(format!("{id}.json"))) {
        Ok(b) => {
            let r: serde_json::Value = serde_json::from_slice(&b).unwrap();
            r["consumers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_string())
                .collect()
        }
        Err(_) => BTreeSet::new(),
    }
}

/// 16 processes at a time mount and unmount 4 volumes with distinct
/// consumers; the even ones end holding their volume. The consumer sets
/// must match exactly, every mount must be single, nothing may leak.
#[test]
fn concurrent_mounts_stay_consistent() {
    require_root!();
    let h = Home::new();
    for i in 0..4 {
        h.rexray(&["volume", "create", &format!("c{i}"), "--size", "1"])
            .ok();
    }
    let rounds = 3;
    std::thread::scope(|s| {
        for a in 0..16 {
            let h = &h;
            s.spawn(move || {
                let vol = format!("c{}", a % 4);
                let who = format!("actor-{a}");
                for r in 0..rounds {
                    h.rexray(&["volume", "mount", &vol, "--consumer", &who])
                        .ok();
                    std::fs::write(h.data(&vol).join(format!("{who}-{r}")), "x").unwrap();
                    if r + 1 < rounds || a % 2 == 1 {
                        h.rexray(&["volume", "unmount", &vol, "--consumer", &who])
                            .ok();
                    }
                }
            });
        }
    });
    for i in 0..4 {
        let vol = format!("c{i}");
        let want: BTreeSet<String> = (0..16)
            .filter(|a| a % 4 == i && a % 2 == 0)
            .map(|a| format!("cli:actor-{a}"))
            .collect();
        assert_eq!(record_consumers(&h, &vol), want, "{vol}");
        let mounted = count_mounts_at(&h.mount_point(&vol));
        assert_eq!(mounted, usize::from(!want.is_empty()), "{vol}");
    }
    // c0 and c2 are held (even actors 0,4,8,12 and 2,6,10,14); c1, c3 not.
    assert_eq!(h.loops().len(), 2, "{:?}", h.loops());
    for a in (0..16).filter(|a| a % 2 == 0) {
        let vol = format!("c{}", a % 4);
        h.rexray(&[
            "volume",
            "unmount",
            &vol,
            "--consumer",
            &format!("actor-{a}"),
        ])
        .ok();
    }
    assert!(h.mounts().is_empty() && h.loops().is_empty());
}

/// Two REXRAY_HOMEs sharing one loop volumePath are two instances: a
/// volume one of them uses is "unavailable" to the other, which takes it
/// only with preempt — and then the first instance's mount is gone.
#[test]
fn preempt_between_instances() {
    require_root!();
    let shared = Home::new();
    let vp = shared.dir.join("shared-loop");
    let vp = vp.to_str().unwrap();
    let a = Home::new().with_env("LOOP_VOLUMEPATH", vp);
    let b = Home::new().with_env("LOOP_VOLUMEPATH", vp);
    a.rexray(&["volume", "create", "p1", "--size", "1"]).ok();
    a.rexray(&["volume", "mount", "p1"]).ok();
    std::fs::write(a.data("p1").join("token"), "from-a").unwrap();

    let ls = b.rexray(&["volume", "ls", "p1"]);
    assert!(ls.ok().contains("unavailable"), "{}", ls.stdout);
    assert!(a
        .rexray(&["volume", "ls", "--attached", "-q"])
        .ok()
        .contains("p1"));
    assert!(b
        .rexray(&["volume", "ls", "--attached", "-q"])
        .ok()
        .is_empty());
    assert!(b
        .rexray(&["volume", "ls", "--available", "-q"])
        .ok()
        .is_empty());

    let e = b.rexray(&["volume", "mount", "p1"]).fails(1).to_string();
    assert!(
        e.contains("another instance") && e.contains("preempt"),
        "{e}"
    );
    let e = b.rexray(&["volume", "rm", "p1"]).fails(1).to_string();
    assert!(e.contains("attached"), "{e}");

    let b = b.with_env(
        "LIBSTORAGE_INTEGRATION_VOLUME_OPERATIONS_MOUNT_PREEMPT",
        "true",
    );
    b.rexray(&["volume", "mount", "p1"]).ok();
    assert_eq!(
        std::fs::read_to_string(b.data("p1").join("token")).unwrap(),
        "from-a"
    );
    assert_eq!(
        count_mounts_at(&a.mount_point("p1")),
        0,
        "a's mount was preempted"
    );
    assert!(a
        .rexray(&["volume", "ls", "p1"])
        .ok()
        .contains("unavailable"));
    // a's own unmount converges without touching b's attachment.
    a.rexray(&["volume", "unmount", "p1"]).ok();
    assert_eq!(count_mounts_at(&b.mount_point("p1")), 1);
    b.rexray(&["volume", "unmount", "p1"]).ok();
    assert!(a.rexray(&["volume", "ls", "p1"]).ok().contains("available"));
    assert!(loops_under(&shared.dir).is_empty());
    a.rexray(&["volume", "rm", "p1"]).ok();
}

#[test]
fn attach_detach_and_refusals() {
    require_root!();
    let h = Home::new();
    h.rexray(&["volume", "create", "ad", "--size", "1"]).ok();
    let out = h.rexray(&["volume", "attach", "ad", "-f", "json"]);
    let v: serde_json::Value = serde_json::from_str(out.ok()).unwrap();
    let dev = v[0]["attachments"][0]["deviceName"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(dev.starts_with("/dev/loop"));
    // attach again: same device
    let out = h.rexray(&["volume", "attach", "ad", "-f", "json"]);
    let v: serde_json::Value = serde_json::from_str(out.ok()).unwrap();
    assert_eq!(v[0]["attachments"][0]["deviceName"], dev.as_str());
    assert_eq!(h.loops().len(), 1);
    let e = h.rexray(&["volume", "rm", "ad"]).fails(1).to_string();
    assert!(e.contains("attached"), "{e}");
    h.rexray(&["volume", "mount", "ad"]).ok();
    let e = h.rexray(&["volume", "detach", "ad"]).fails(1).to_string();
    assert!(e.contains("in use"), "{e}");
    h.rexray(&["volume", "unmount", "ad"]).ok();
    assert!(h.loops().is_empty());
    h.rexray(&["volume", "detach", "ad"]).ok();
    h.rexray(&["volume", "rm", "ad"]).ok();
}

/// State the kernel changed behind our back is detected, not trusted.
#[test]
fn reality_wins_over_records() {
    require_root!();
    let h = Home::new();
    h.rexray(&["volume", "create", "r1", "--size", "1"]).ok();
    h.rexray(&["volume", "mount", "r1"]).ok();
    // An operator unmounts by hand: the next mount mounts again.
    nix::mount::umount2(&h.mount_point("r1"), nix::mount::MntFlags::empty()).unwrap();
    h.rexray(&["volume", "mount", "r1"]).ok();
    assert_eq!(count_mounts_at(&h.mount_point("r1")), 1);
    // A garbage record is reported, and nothing is unmounted.
    let recs: Vec<_> = std::fs::read_dir(h.lib().join("mounts"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(recs.len(), 1);
    std::fs::write(recs[0].path(), b"{garbage").unwrap();
    let e = h.rexray(&["volume", "unmount", "r1"]).fails(1).to_string();
    assert!(e.contains("unreadable"), "{e}");
    assert_eq!(count_mounts_at(&h.mount_point("r1")), 1);
    std::fs::remove_file(recs[0].path()).unwrap();
    // A deleted lock file does not block anything.
    let _ = std::fs::remove_dir_all(h.lib().join("locks"));
    std::fs::create_dir_all(h.lib().join("locks")).unwrap();
    h.rexray(&["volume", "unmount", "r1"]).ok();
    assert!(h.mounts().is_empty() && h.loops().is_empty());
    h.rexray(&["volume", "rm", "r1"]).ok();
}
