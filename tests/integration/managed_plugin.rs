//! The Docker managed plugin bundle (`packaging/docker-plugin/`): its
//! config.json against Docker's documented plugin config (version 1), a
//! rootfs that runs on its own, and a private dockerd that creates,
//! enables and uses the plugin.

use crate::common::*;
use crate::docker::{random_hex, Dockerd, HostDirs};
use crate::require_root;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn bundle_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/docker-plugin")
}

fn config() -> Value {
    let text = std::fs::read_to_string(bundle_dir().join("config.json")).unwrap();
    serde_json::from_str(&text).expect("config.json is not JSON")
}

/// Keys of an object, checked against the keys the documentation allows.
#[track_caller]
fn only_keys(v: &Value, what: &str, allowed: &[&str]) {
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("{what} is not an object"));
    for k in obj.keys() {
        assert!(
            allowed.contains(&k.as_str()),
            "{what}.{k} is not in Docker's plugin config (allowed: {allowed:?})"
        );
    }
}

#[track_caller]
fn strings(v: &Value, what: &str) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("{what} is not an array"))
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("{what} holds a non-string"))
                .to_string()
        })
        .collect()
}

/// https://docs.docker.com/engine/extend/config/ (plugin config version 1
/// of plugin v2): field names and types, and what a volume driver of
/// ours needs.
#[test]
fn config_json_follows_the_documented_schema() {
    let c = config();
    only_keys(
        &c,
        "config",
        &[
            "description",
            "documentation",
            "entrypoint",
            "workdir",
            "interface",
            "network",
            "mounts",
            "propagatedMount",
            "linux",
            "env",
            "args",
            "user",
            "ipcHost",
            "pidHost",
        ],
    );
    assert!(c["description"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(c["documentation"].is_string());
    assert_eq!(
        strings(&c["entrypoint"], "entrypoint"),
        ["/usr/bin/rexray", "service", "start"]
    );
    only_keys(
        &c["interface"],
        "interface",
        &["types", "socket", "protocolScheme"],
    );
    assert_eq!(
        strings(&c["interface"]["types"], "interface.types"),
        ["docker.volumedriver/1.0"]
    );
    // The service's default socket is /run/docker/plugins/rexray.sock,
    // where dockerd mounts the plugin's runtime directory.
    assert_eq!(c["interface"]["socket"], "rexray.sock");
    only_keys(&c["network"], "network", &["type"]);
    assert_eq!(c["network"]["type"], "host");

    only_keys(
        &c["linux"],
        "linux",
        &["capabilities", "allowAllDevices", "devices"],
    );
    let caps = strings(&c["linux"]["capabilities"], "linux.capabilities");
    assert!(caps.iter().all(|c| c.starts_with("CAP_")), "{caps:?}");
    assert!(caps.contains(&"CAP_SYS_ADMIN".to_string()), "mount, loop");
    assert_eq!(
        c["linux"]["allowAllDevices"], true,
        "loop devices appear on demand"
    );

    let mounts = c["mounts"].as_array().expect("mounts");
    for m in mounts {
        only_keys(
            m,
            "mounts[]",
            &[
                "name",
                "description",
                "settable",
                "source",
                "destination",
                "type",
                "options",
            ],
        );
        for k in ["source", "destination", "type"] {
            assert!(m[k].is_string(), "mounts[].{k}: {m}");
        }
        strings(&m["options"], "mounts[].options");
        if !m["settable"].is_null() {
            for s in strings(&m["settable"], "mounts[].settable") {
                assert!(["source", "destination"].contains(&s.as_str()), "{m}");
            }
        }
    }
    let dev = mounts
        .iter()
        .find(|m| m["destination"] == "/dev")
        .expect("/dev");
    assert_eq!(dev["source"], "/dev");
    // State on a settable host path, so images outlive the plugin; volumes
    // mounted under the propagated mount, so dockerd sees them.
    let state = mounts
        .iter()
        .find(|m| m["name"] == "state")
        .expect("a state mount");
    assert_eq!(state["destination"], "/var/lib/rexray");
    assert_eq!(strings(&state["settable"], "state.settable"), ["source"]);
    let propagated = c["propagatedMount"].as_str().expect("propagatedMount");
    assert!(
        !Path::new(propagated).starts_with("/var/lib/rexray"),
        "mounts are applied after the propagated mount: it must not sit under the state mount"
    );

    let mut env = std::collections::HashMap::new();
    for e in c["env"].as_array().expect("env") {
        only_keys(e, "env[]", &["name", "description", "settable", "value"]);
        let name = e["name"].as_str().expect("env[].name");
        assert!(e["value"].is_string(), "{e}");
        if !e["settable"].is_null() {
            assert_eq!(strings(&e["settable"], "env[].settable"), ["value"]);
        }
        env.insert(name.to_string(), e.clone());
    }
    for settable in [
        "REXRAY_LOGLEVEL",
        "LIBSTORAGE_INTEGRATION_VOLUME_OPERATIONS_MOUNT_PREEMPT",
        "LOOP_VOLUMEPATH",
    ] {
        assert!(env[settable]["settable"].is_array(), "{settable}");
    }
    assert_eq!(
        env["LIBSTORAGE_INTEGRATION_VOLUME_OPERATIONS_MOUNT_PATH"]["value"], propagated,
        "volumes must be mounted under the propagated mount"
    );
    // Every variable is one rexray reads.
    let out = run_cmd(
        Command::new(bin("rexray"))
            .env_clear()
            .env("REXRAY_HOME", "/nonexistent-rexray-home")
            .envs(
                env.iter()
                    .map(|(k, v)| (k.clone(), v["value"].as_str().unwrap().to_string())),
            )
            .args(["env", "-f", "json"]),
    );
    let all: Value = serde_json::from_str(out.ok()).unwrap();
    for name in env.keys() {
        let s = all["settings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["env"] == name.as_str())
            .unwrap_or_else(|| panic!("{name} is not a rexray setting"));
        assert_eq!(s["source"], format!("env:{name}"), "{s}");
    }
}

fn build(bundle: &Path, create: bool, docker_env: &[(&str, String)], name: &str) -> Out {
    let mut c = Command::new(bundle_dir().join("build.sh"));
    c.env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("REXRAY_BIN", bin("rexray"))
        .env("BUNDLE", bundle)
        .env("CREATE", if create { "1" } else { "0" })
        .arg(name);
    for (k, v) in docker_env {
        c.env(k, v);
    }
    run_cmd(&mut c)
}

/// The rootfs holds rexray and every tool it execs with their libraries:
/// each runs chrooted into it.
#[test]
fn rootfs_runs_on_its_own() {
    require_root!();
    let h = Home::new();
    let bundle = h.dir.join("bundle");
    let out = build(&bundle, false, &[], "unused");
    out.ok();
    let root = bundle.join("rootfs");
    let copied: Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(copied, config());
    for (tool, arg) in [
        ("/usr/bin/rexray", "version"),
        ("/usr/sbin/mkfs.ext4", "-V"),
        ("/usr/sbin/mkfs.xfs", "-V"),
        ("/usr/sbin/blkid", "-V"),
        ("/usr/sbin/resize2fs", "-P"),
        ("/usr/sbin/xfs_growfs", "-V"),
    ] {
        let out = run_cmd(
            Command::new("chroot")
                .arg(&root)
                .arg(tool)
                .arg(arg)
                .env_clear()
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        );
        // resize2fs -P without a device prints usage and exits 1: what
        // matters is that the loader found every library.
        assert!(
            !out.stderr.contains("error while loading shared libraries")
                && !out.stderr.contains("No such file"),
            "{tool}: {out:?}"
        );
        if tool != "/usr/sbin/resize2fs" {
            assert_eq!(out.code, 0, "{tool}: {out:?}");
        }
    }
    for d in [
        "var/lib/rexray",
        "var/lib/rexray-volumes",
        "run/docker/plugins",
        "dev",
        "proc",
        "sys",
    ] {
        assert!(root.join(d).is_dir(), "{d}");
    }
    // A missing binary is one clear line.
    let out = run_cmd(
        Command::new(bundle_dir().join("build.sh"))
            .env("BUNDLE", h.dir.join("none-bundle"))
            .env("REXRAY_BIN", h.dir.join("none"))
            .env("CREATE", "0"),
    );
    let e = out.fails(1);
    assert!(
        e.contains("cargo build --release") && e.lines().count() == 1,
        "{e}"
    );
}

/// (device, inode) of the regular files under `dir`.
fn inodes_under(dir: &Path) -> Vec<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut v = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() {
                v.push((m.dev(), m.ino()));
            }
        }
    }
    v
}

/// Loop devices backed by files under `dir`, matched by inode: inside the
/// plugin the images have other paths than on the host.
fn loops_by_inode(dir: &Path) -> Vec<PathBuf> {
    let files = inodes_under(dir);
    let out = run_cmd(Command::new("losetup").args([
        "--list",
        "--noheadings",
        "--raw",
        "--output",
        "NAME,BACK-INO,BACK-MAJ:MIN",
    ]));
    let mut found = Vec::new();
    for l in out.stdout.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        let [name, ino, majmin] = f[..] else { continue };
        let Some((maj, min)) = majmin.split_once(':') else {
            continue;
        };
        let (Ok(ino), Ok(maj), Ok(min)) = (ino.parse::<u64>(), maj.parse(), min.parse()) else {
            continue;
        };
        let dev = libc::makedev(maj, min);
        if files.contains(&(dev, ino)) {
            found.push(PathBuf::from(name));
        }
    }
    found
}

/// The volume images in the host's state directory.
fn images(state: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(state.join("loop"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "img"))
        .collect()
}

/// Removes the plugin and detaches what it left attached, whatever the
/// test's outcome; runs before the daemon is stopped.
struct PluginGuard<'a> {
    d: &'a Dockerd,
    name: String,
    state: PathBuf,
}

impl Drop for PluginGuard<'_> {
    fn drop(&mut self) {
        let _ = self.d.docker(&["plugin", "disable", "-f", &self.name]);
        let _ = self.d.docker(&["plugin", "rm", "-f", &self.name]);
        for dev in loops_by_inode(&self.state) {
            let _ = rexray::storage::loopdev::detach(&dev);
        }
    }
}

/// Build, create, configure and enable the plugin in a private dockerd;
/// one container writes to a volume, another reads it; the volume
/// outlives a restart of the plugin; removing it leaves nothing attached.
#[test]
fn dockerd_runs_the_managed_plugin() {
    if client_mode_na(
        "the managed plugin runs with dockerd's environment in its own rootfs, not the home's: it has no libstorage.host setting, and it sees images at /var/lib/rexray/loop, not at the controller's path",
    ) {
        return;
    }
    require_root!();
    if !crate::docker::Dockerd::usable() {
        return;
    }
    let _dirs = HostDirs::snapshot();
    let home = Home::new();
    let state = home.dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let name = format!("rexraytest-{}", random_hex());
    let d = Dockerd::start(&name);
    let plugin = format!("{name}-plugin:test");
    let docker_env = [
        ("DOCKER_HOST", format!("unix://{}", d.sock().display())),
        (
            "DOCKER_CONFIG",
            d.dir.join("cli").to_string_lossy().into_owned(),
        ),
    ];
    let guard = PluginGuard {
        d: &d,
        name: plugin.clone(),
        state: state.clone(),
    };
    let out = build(&home.dir.join("bundle"), true, &docker_env, &plugin);
    assert_eq!(out.ok().trim(), plugin);
    let ls = d.docker(&["plugin", "ls", "--format", "{{.Name}} {{.Enabled}}"]);
    assert!(ls.ok().contains(&format!("{plugin} false")), "{ls:?}");

    d.docker(&[
        "plugin",
        "set",
        &plugin,
        &format!("state.source={}", state.display()),
        "REXRAY_LOGLEVEL=debug",
    ])
    .ok();
    let en = d.docker(&["plugin", "enable", "--timeout", "60", &plugin]);
    if en.code != 0 {
        panic!(
            "docker plugin enable failed: {}\ndockerd log:\n{}",
            en.stderr.trim(),
            d.log_tail()
        );
    }

    d.docker(&["volume", "create", "-d", &plugin, "-o", "size=1", "mv1"])
        .ok();
    d.run(&plugin, "mv1", "echo managed > /data/f").ok();
    assert_eq!(d.run(&plugin, "mv1", "cat /data/f").ok(), "managed\n");
    // The image lives in the host's state directory, nothing is left
    // attached once no container uses the volume.
    assert_eq!(images(&state).len(), 1);
    assert!(loops_by_inode(&state).is_empty());

    // Disable and enable again (what an upgrade does; -f because dockerd
    // counts the volume as a use): the volume and its data are still there.
    let busy = d.docker(&["plugin", "disable", &plugin]);
    assert!(busy.stderr.contains("in use"), "{busy:?}");
    d.docker(&["plugin", "disable", "-f", &plugin]).ok();
    d.docker(&["plugin", "enable", &plugin]).ok();
    assert_eq!(d.run(&plugin, "mv1", "cat /data/f").ok(), "managed\n");
    let vols = d.docker(&[
        "volume",
        "ls",
        "-q",
        "--filter",
        &format!("driver={plugin}"),
    ]);
    assert_eq!(vols.ok().trim(), "mv1");

    d.docker(&["volume", "rm", "mv1"]).ok();
    assert!(images(&state).is_empty());
    assert!(loops_by_inode(&state).is_empty());
    d.docker(&["plugin", "disable", &plugin]).ok();
    d.docker(&["plugin", "rm", &plugin]).ok();
    drop(guard);
}
