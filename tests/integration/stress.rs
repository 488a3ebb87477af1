//! Stress: 32 concurrent actors — `rexray volume mount/unmount --consumer`,
//! kubelet's flexrex sequence, dvdcli and Docker plugin requests to a
//! running `rexray service` — on 8 volumes for a bounded number of rounds.
//! At the end every consumer set is exactly what the actors hold, every
//! mount has a consumer, each held volume is mounted once, nothing leaked.

use crate::common::*;
use crate::docker::{post, Service};
use crate::require_root;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

const VOLUMES: usize = 8;
const PER_KIND: usize = 8;
const ROUNDS: usize = 6;

fn vol(i: usize) -> String {
    format!("s{}", i % VOLUMES)
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Rexray,
    Flex,
    Dvdcli,
    Docker,
}

/// What an actor holds at the end: (volume, consumer id as recorded).
type Held = Option<(String, String)>;

struct Ctx {
    h: Home,
    sock: PathBuf,
}

fn flex(h: &Home, args: &[&str]) -> Value {
    let o = h.run("flexrex", args);
    assert_eq!(o.stderr, "", "{args:?}: {o:#?}");
    serde_json::from_str(o.stdout.trim()).unwrap_or_else(|e| panic!("{args:?}: {e}: {o:#?}"))
}

fn success(v: &Value, what: &str) {
    assert_eq!(v["status"], "Success", "{what}: {v}");
}

fn detached_or_used(d: &Value) {
    if d["status"] != "Success" {
        let m = d["message"].as_str().unwrap_or_default();
        assert!(m.contains("other user(s) on this node"), "detach: {d}");
    }
}

/// One actor's rounds; returns what it still holds and how many ops it ran.
fn actor(c: &Ctx, kind: Kind, k: usize) -> (Held, usize) {
    let h = &c.h;
    let mut held: Held = None;
    let mut ops = 0;
    for round in 0..ROUNDS {
        // The last round, even actors keep what they took.
        let keep = round == ROUNDS - 1 && k.is_multiple_of(2);
        match kind {
            Kind::Rexray => {
                let v = vol(k + round);
                let who = format!("r{k}");
                h.rexray(&["volume", "mount", &v, "--consumer", &who]).ok();
                ops += 1;
                if keep {
                    held = Some((v, format!("cli:{who}")));
                } else {
                    h.rexray(&["volume", "unmount", &v, "--consumer", &who])
                        .ok();
                    ops += 1;
                }
            }
            Kind::Docker => {
                let v = vol(3 * k + round + 1);
                let id = format!("d{k}");
                let body = json!({"Name": v, "ID": id}).to_string();
                let r = post(&c.sock, "/VolumeDriver.Mount", &body);
                assert_eq!(r.0, 200, "{r:?}");
                ops += 1;
                if keep {
                    held = Some((v, format!("docker:{id}")));
                } else {
                    let r = post(&c.sock, "/VolumeDriver.Unmount", &body);
                    assert_eq!(r.0, 200, "{r:?}");
                    ops += 1;
                }
            }
            Kind::Dvdcli => {
                // dvdcli callers are anonymous: one actor per volume.
                let v = vol(k);
                let arg = format!("--volumename={v}");
                h.run("dvdcli", &["mount", "--volumedriver=rexray", &arg])
                    .ok();
                ops += 1;
                if keep {
                    held = Some((v, "anonymous".into()));
                } else {
                    h.run("dvdcli", &["unmount", "--volumedriver=rexray", &arg])
                        .ok();
                    ops += 1;
                }
            }
            Kind::Flex => {
                // kubelet serialises operations per volume: one actor per volume.
                let v = vol(k);
                let pv = format!("pv-{k}");
                let opts = json!({
                    "volumeID": v,
                    "kubernetes.io/fsType": "ext4",
                    "kubernetes.io/readwrite": "rw",
                    "kubernetes.io/pvOrVolumeName": pv,
                })
                .to_string();
                let dmp = h.dir.join(format!("kubelet/plugins/mounts/{pv}"));
                let dmp_s = dmp.to_str().unwrap();
                let a = flex(h, &["attach", &opts, "node1"]);
                success(&a, "attach");
                let dev = a["device"].as_str().unwrap().to_string();
                // kubelet's attach holds the device: another front-end's
                // last unmount in between leaves it attached.
                let w = flex(h, &["waitforattach", &dev, &opts]);
                success(&w, "waitforattach");
                assert_eq!(w["device"], dev.as_str(), "the same device");
                success(
                    &flex(h, &["mountdevice", dmp_s, &dev, &opts]),
                    "mountdevice",
                );
                ops += 3;
                if keep {
                    held = Some((v, format!("flex:{dmp_s}")));
                } else {
                    success(&flex(h, &["unmountdevice", dmp_s]), "unmountdevice");
                    // Others may still use the volume: it stays attached
                    // for them, and kubelet's detach refuses (kubelet
                    // would retry).
                    detached_or_used(&flex(h, &["detach", &pv, "node1"]));
                    ops += 2;
                }
            }
        }
    }
    (held, ops)
}

fn record_consumers(h: &Home) -> BTreeMap<String, BTreeSet<String>> {
    let vols = h.volumes();
    (0..VOLUMES)
        .map(|i| {
            let v = vol(i);
            let c = vols
                .consumers(rexray::volume::VolumeRef::Name(&v))
                .unwrap()
                .into_iter()
                .collect();
            (v, c)
        })
        .collect()
}

#[test]
fn thirty_two_actors_on_eight_volumes() {
    require_root!();
    let h = Home::new();
    for i in 0..VOLUMES {
        h.rexray(&["volume", "create", &vol(i), "--size", "1"]).ok();
    }
    let (host, sock) = unix_host(&h);
    let svc = Service::start(&h, &host, &[]);
    let c = Arc::new(Ctx { h, sock });
    let start = std::time::Instant::now();
    let mut threads = Vec::new();
    for kind in [Kind::Rexray, Kind::Flex, Kind::Dvdcli, Kind::Docker] {
        for k in 0..PER_KIND {
            let c = c.clone();
            threads.push(std::thread::spawn(move || (kind, k, actor(&c, kind, k))));
        }
    }
    let mut expected: BTreeMap<String, BTreeSet<String>> =
        (0..VOLUMES).map(|i| (vol(i), BTreeSet::new())).collect();
    let mut ops = 0;
    let mut held = Vec::new();
    for t in threads {
        let (kind, k, (hold, n)) = t.join().expect("actor");
        ops += n;
        if let Some((v, who)) = hold {
            expected.get_mut(&v).unwrap().insert(who.clone());
            held.push((kind, k, v, who));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let h = &c.h;
    assert_eq!(
        record_consumers(h),
        expected,
        "consumer sets = what actors hold"
    );
    let used: Vec<&String> = expected
        .iter()
        .filter(|(_, c)| !c.is_empty())
        .map(|(v, _)| v)
        .collect();
    for (v, cs) in &expected {
        let n = count_mounts_at(&h.mount_point(v));
        assert_eq!(n, usize::from(!cs.is_empty()), "{v}: {cs:?}");
    }
    assert_eq!(
        h.loops().len(),
        used.len(),
        "one loop device per held volume"
    );
    let flex_held = held
        .iter()
        .filter(|(k, ..)| matches!(k, Kind::Flex))
        .count();
    // Every mount is a held volume or a held flex path: none without a consumer.
    assert_eq!(h.mounts().len(), used.len() + flex_held, "{:?}", h.mounts());
    println!(
        "stress: 32 actors, {VOLUMES} volumes, {ROUNDS} rounds: {ops} ops in {secs:.1} s = {:.1} ops/s",
        ops as f64 / secs
    );
    // Everyone lets go: nothing is left.
    for (kind, k, v, who) in held {
        match kind {
            Kind::Rexray => {
                let who = who.strip_prefix("cli:").unwrap();
                h.rexray(&["volume", "unmount", &v, "--consumer", who]).ok();
            }
            Kind::Docker => {
                let who = who.strip_prefix("docker:").unwrap();
                let body = json!({"Name": v, "ID": who}).to_string();
                assert_eq!(post(&c.sock, "/VolumeDriver.Unmount", &body).0, 200);
            }
            Kind::Dvdcli => {
                let arg = format!("--volumename={v}");
                h.run("dvdcli", &["unmount", "--volumedriver=rexray", &arg])
                    .ok();
            }
            Kind::Flex => {
                let p = who.strip_prefix("flex:").unwrap();
                success(&flex(h, &["unmountdevice", p]), "unmountdevice");
                detached_or_used(&flex(h, &["detach", &format!("pv-{k}"), "node1"]));
            }
        }
    }
    drop(svc);
    assert!(
        record_consumers(h).values().all(|c| c.is_empty()),
        "{:?}",
        record_consumers(h)
    );
    assert!(h.mounts().is_empty(), "{:?}", h.mounts());
    assert!(h.loops().is_empty(), "{:?}", h.loops());
}
