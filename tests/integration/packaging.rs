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
    assert_eq!(
        v["drivers"],
        serde_json::json!(["loop", "vfs", "rbd", "s3fs"])
    );
    let text = run_cmd(Command::new(&rexray).arg("version"));
    for line in [
        "SemVer: ",
        "Branch: ",
        "Commit: ",
        "Formed: ",
        "Drivers: loop, vfs, rbd, s3fs",
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

/// Every document of the CSI manifests (`packaging/kubernetes/csi/*.yaml`),
/// with the file it is in.
fn csi_manifests() -> Vec<(String, serde_yaml_ng::Value)> {
    use serde::Deserialize;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/kubernetes/csi");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let v = serde_yaml_ng::Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            if !v.is_null() {
                out.push((f.file_name().unwrap().to_string_lossy().into_owned(), v));
            }
        }
    }
    out
}

/// The string at `path` (keys and sequence indexes) in `v`.
fn at<'a>(v: &'a serde_yaml_ng::Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = match p.parse::<usize>() {
            Ok(i) => cur.get(i)?,
            Err(_) => cur.get(*p)?,
        };
    }
    cur.as_str()
}

/// The containers of a workload.
fn containers(v: &serde_yaml_ng::Value) -> Vec<serde_yaml_ng::Value> {
    v["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .cloned()
        .unwrap_or_default()
}

fn args(c: &serde_yaml_ng::Value) -> Vec<String> {
    c["args"]
        .as_sequence()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn env_of(c: &serde_yaml_ng::Value, name: &str) -> Option<String> {
    c["env"]
        .as_sequence()?
        .iter()
        .find(|e| e["name"].as_str() == Some(name))
        .and_then(|e| e["value"].as_str().map(String::from))
}

#[test]
fn csi_manifests_parse_name_the_driver_and_agree_on_the_socket() {
    let docs = csi_manifests();
    let kind = |k: &str| -> Vec<&serde_yaml_ng::Value> {
        docs.iter()
            .filter(|(_, v)| at(v, &["kind"]) == Some(k))
            .map(|(_, v)| v)
            .collect()
    };
    for k in [
        "CSIDriver",
        "DaemonSet",
        "Deployment",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "StorageClass",
        "VolumeSnapshotClass",
        "ConfigMap",
    ] {
        assert!(!kind(k).is_empty(), "no {k} in packaging/kubernetes/csi");
    }
    for (file, v) in &docs {
        assert!(at(v, &["apiVersion"]).is_some(), "{file}: no apiVersion");
        assert!(at(v, &["metadata", "name"]).is_some(), "{file}: no name");
    }
    let name = rexray::csi::DRIVER_NAME;
    assert_eq!(at(kind("CSIDriver")[0], &["metadata", "name"]), Some(name));
    // The controller attaches (ControllerPublishVolume), through
    // external-attacher.
    assert_eq!(
        kind("CSIDriver")[0]["spec"]["attachRequired"].as_bool(),
        Some(true)
    );
    assert_eq!(at(kind("StorageClass")[0], &["provisioner"]), Some(name));
    assert_eq!(at(kind("VolumeSnapshotClass")[0], &["driver"]), Some(name));

    // The rexray container of a workload, its socket, and every sidecar
    // pointed at that socket.
    let check = |w: &serde_yaml_ng::Value, mode: &str, sidecars: &[&str]| -> String {
        let cs = containers(w);
        let rexray = cs
            .iter()
            .find(|c| at(c, &["name"]) == Some("rexray"))
            .expect("a rexray container");
        assert_eq!(env_of(rexray, "REXRAY_CSI_MODE").as_deref(), Some(mode));
        let endpoint = env_of(rexray, "CSI_ENDPOINT").expect("CSI_ENDPOINT");
        let sock = endpoint.strip_prefix("unix://").expect("a unix socket");
        for s in sidecars {
            let c = cs
                .iter()
                .find(|c| at(c, &["image"]).is_some_and(|i| i.contains(&format!("/{s}:"))))
                .unwrap_or_else(|| panic!("no {s} sidecar"));
            assert!(
                args(c).contains(&format!("--csi-address={sock}")),
                "{s}: {:?} does not name {sock}",
                args(c)
            );
            // The sidecar sees the socket's directory.
            let dir = std::path::Path::new(sock).parent().unwrap();
            assert!(
                c["volumeMounts"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .any(|m| at(m, &["mountPath"]).map(std::path::Path::new) == Some(dir)),
                "{s} does not mount {}",
                dir.display()
            );
        }
        sock.to_string()
    };
    let node = kind("DaemonSet")[0];
    let sock = check(
        node,
        "node",
        &["csi-node-driver-registrar", "livenessprobe"],
    );
    assert_eq!(sock, format!("/var/lib/kubelet/plugins/{name}/csi.sock"));
    let registrar = containers(node)
        .into_iter()
        .find(|c| at(c, &["image"]).is_some_and(|i| i.contains("registrar")))
        .unwrap();
    assert!(args(&registrar).contains(&format!("--kubelet-registration-path={sock}")));
    // kubelet's directory with Bidirectional propagation, so kubelet and
    // the pods see the mounts.
    let rexray = containers(node)
        .into_iter()
        .find(|c| at(c, &["name"]) == Some("rexray"))
        .unwrap();
    assert!(rexray["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|m| at(m, &["mountPath"]) == Some("/var/lib/kubelet")
            && at(m, &["mountPropagation"]) == Some("Bidirectional")));
    assert_eq!(
        rexray["securityContext"]["privileged"].as_bool(),
        Some(true)
    );
    check(
        kind("Deployment")[0],
        "controller",
        &[
            "csi-provisioner",
            "csi-resizer",
            "csi-snapshotter",
            "csi-attacher",
            "livenessprobe",
        ],
    );

    // Both run on the host's network: an instance id is the host name
    // (plus the state directory), and the controller names nodes by the
    // node plugin's id (ControllerPublishVolume, topology). Their
    // livenessprobes then need ports of their own.
    let mut ports = Vec::new();
    for w in [kind("DaemonSet")[0], kind("Deployment")[0]] {
        assert_eq!(
            w["spec"]["template"]["spec"]["hostNetwork"].as_bool(),
            Some(true)
        );
        let probe = containers(w)
            .into_iter()
            .find(|c| at(c, &["image"]).is_some_and(|i| i.contains("/livenessprobe:")))
            .unwrap();
        let port = args(&probe)
            .iter()
            .find_map(|a| a.strip_prefix("--health-port=").map(String::from))
            .unwrap_or_else(|| "9808".into());
        ports.push(port);
    }
    assert_ne!(ports[0], ports[1], "{ports:?}");

    // external-attacher may read and patch VolumeAttachments and their
    // status, and its role is bound to the controller's service account.
    let attacher = kind("ClusterRole")
        .into_iter()
        .find(|r| {
            r["rules"].as_sequence().unwrap().iter().any(|rule| {
                rule["resources"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .any(|x| x.as_str() == Some("volumeattachments/status"))
            })
        })
        .expect("a role for external-attacher");
    let allows = |res: &str, verb: &str| {
        attacher["rules"].as_sequence().unwrap().iter().any(|rule| {
            rule["resources"]
                .as_sequence()
                .unwrap()
                .iter()
                .any(|x| x.as_str() == Some(res))
                && rule["verbs"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .any(|x| x.as_str() == Some(verb))
        })
    };
    for (res, verb) in [
        ("volumeattachments", "watch"),
        ("volumeattachments", "patch"),
        ("volumeattachments/status", "patch"),
        ("persistentvolumes", "get"),
        ("csinodes", "get"),
    ] {
        assert!(allows(res, verb), "external-attacher may not {verb} {res}");
    }
    let attacher_name = at(attacher, &["metadata", "name"]).unwrap();
    let sa = at(
        kind("Deployment")[0],
        &["spec", "template", "spec", "serviceAccountName"],
    )
    .unwrap();
    assert!(
        kind("ClusterRoleBinding").iter().any(|b| {
            at(b, &["roleRef", "name"]) == Some(attacher_name)
                && b["subjects"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .any(|s| at(s, &["name"]) == Some(sa))
        }),
        "external-attacher's role is not bound to {sa}"
    );

    // Service accounts and roles referred to exist.
    let names = |k: &str| -> Vec<String> {
        kind(k)
            .iter()
            .filter_map(|v| at(v, &["metadata", "name"]).map(String::from))
            .collect()
    };
    for w in kind("DaemonSet").into_iter().chain(kind("Deployment")) {
        let sa = at(w, &["spec", "template", "spec", "serviceAccountName"]).unwrap();
        assert!(names("ServiceAccount").contains(&sa.to_string()), "{sa}");
        let cm = w["spec"]["template"]["spec"]["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find_map(|v| at(v, &["configMap", "name"]))
            .unwrap();
        assert!(names("ConfigMap").contains(&cm.to_string()), "{cm}");
    }
    for b in kind("ClusterRoleBinding") {
        let r = at(b, &["roleRef", "name"]).unwrap();
        assert!(names("ClusterRole").contains(&r.to_string()), "{r}");
    }
    for b in kind("RoleBinding") {
        let r = at(b, &["roleRef", "name"]).unwrap();
        assert!(names("Role").contains(&r.to_string()), "{r}");
    }

    // The configuration the pods get is one rexray reads: one csi module,
    // listening where CSI_ENDPOINT says.
    let cm = kind("ConfigMap")[0];
    let yml = at(cm, &["data", "config.yml"]).unwrap();
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("etc")).unwrap();
    std::fs::write(home.path().join("etc/config.yml"), yml).unwrap();
    let env: std::collections::HashMap<String, String> = [
        (
            "REXRAY_HOME".to_string(),
            home.path().to_string_lossy().into_owned(),
        ),
        ("CSI_ENDPOINT".to_string(), format!("unix://{sock}")),
    ]
    .into();
    let cfg = rexray::config::Config::load(rexray::config::LoadOptions {
        env: Some(env),
        ..Default::default()
    })
    .unwrap();
    let csi = rexray::csi::configured(&cfg).unwrap();
    assert_eq!(csi.len(), 1);
    assert_eq!(csi[0].path, std::path::Path::new(&sock));
    assert!(cfg.docker_modules().unwrap().is_empty());
}

/// The packaged binaries as `build.rs` means them to start: without
/// libgcc_s.so.1 (the unwinder is linked in) and with the start-up code
/// laid out as `link/startup.order` lists it. A list gone stale (another
/// toolchain, other dependency versions) fails here, naming the fix.
#[test]
fn packaged_binaries_start_lean() {
    let Some(deb) = deb() else { return };
    let root = Home::new();
    run_cmd(Command::new("dpkg").arg("-x").arg(&deb).arg(&root.dir)).ok();
    let bins = ["rexray", "flexrex", "dvdcli"].map(|b| root.dir.join("usr/bin").join(b));

    // Needed libraries: glibc's (libc, libm, the loader), nothing else.
    for b in &bins {
        let dynamic = run_cmd(Command::new("readelf").arg("-d").arg(b));
        let needed: Vec<&str> = dynamic
            .ok()
            .lines()
            .filter(|l| l.contains("(NEEDED)"))
            .filter_map(|l| l.split('[').nth(1)?.split(']').next())
            .collect();
        let shared_libgcc = option_env!("REXRAY_SHARED_LIBGCC").is_some();
        assert_eq!(
            needed.contains(&"libgcc_s.so.1"),
            shared_libgcc,
            "{}: needs {needed:?}",
            b.display()
        );
        for n in &needed {
            assert!(
                [
                    "libc.so.6",
                    "libm.so.6",
                    "ld-linux-x86-64.so.2",
                    "libgcc_s.so.1"
                ]
                .contains(n),
                "{}: needs {n} (all: {needed:?})",
                b.display()
            );
        }
    }

    // The layout: most listed functions exist, and in each binary the
    // ones it has come in the listed order.
    let list = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/link/startup.order"))
        .expect("link/startup.order");
    let names: Vec<&str> = list
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let mut anywhere = std::collections::HashSet::new();
    for b in &bins {
        let syms = run_cmd(Command::new("nm").arg("--defined-only").arg(b));
        let addr: std::collections::HashMap<&str, u64> = syms
            .ok()
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let a = u64::from_str_radix(f.next()?, 16).ok()?;
                let name = f.nth(1)?;
                Some((name, a))
            })
            .collect();
        let placed: Vec<u64> = names.iter().filter_map(|n| addr.get(n).copied()).collect();
        anywhere.extend(names.iter().filter(|n| addr.contains_key(**n)).copied());
        let in_order = placed.windows(2).filter(|w| w[0] <= w[1]).count();
        assert!(
            placed.len() > 100 && in_order * 100 >= (placed.len() - 1) * 95,
            "{}: {} of the {} listed functions it has are in the listed order: the linker did not lay them out (build.rs, startup_order)",
            b.display(),
            in_order + 1,
            placed.len()
        );
    }
    assert!(
        anywhere.len() * 100 >= names.len() * 80,
        "the packaged binaries have {} of the {} functions link/startup.order lists: the list is stale (another toolchain or other dependency versions); run scripts/order.sh as root and commit link/startup.order",
        anywhere.len(),
        names.len()
    );
}
