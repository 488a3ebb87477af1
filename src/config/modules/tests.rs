use super::super::{FlagValue, LoadOptions};
use super::*;
use std::collections::HashMap;
use std::path::Path;

fn load(home: &Path, yaml: &str, env: &[(&str, &str)], flags: Vec<FlagValue>) -> Result<Config> {
    std::fs::create_dir_all(home.join("etc")).unwrap();
    std::fs::write(home.join("etc/config.yml"), yaml).unwrap();
    let mut vars: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    vars.insert("REXRAY_HOME".into(), home.to_string_lossy().into_owned());
    Config::load(LoadOptions {
        config_file: None,
        flags,
        env: Some(vars),
    })
}

/// The seed's layout: two services, a module for each beside the default.
const TWO: &str = "
rexray:
  modules:
    loop1:
      type: docker
      desc: loop volumes
      libstorage:
        integration:
          volume:
            operations:
              create:
                default:
                  size: 2
              mount:
                preempt: true
    VFS1:
      type: Docker
      host: unix:///tmp/vfs1.sock
      maxConnections: 8
      libstorage:
        service: vfs
libstorage:
  service: loop
  integration:
    volume:
      operations:
        create:
          default:
            size: 5
  server:
    services:
      vfs:
        driver: vfs
        vfs:
          root: /srv/vfs
";

#[test]
fn every_module_has_its_socket_service_and_settings() {
    let t = tempfile::tempdir().unwrap();
    let c = load(t.path(), TWO, &[], vec![]).unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(c.module_names(), ["default-docker", "loop1", "vfs1"]);
    let all = c.docker_modules().unwrap();
    assert_eq!(all.len(), 3);

    let d = &all[0];
    assert_eq!(d.name, DEFAULT_DOCKER);
    assert_eq!(d.kind, "docker");
    assert_eq!(d.host, "unix:///run/docker/plugins/rexray.sock");
    assert_eq!(d.spec, Path::new("/etc/docker/plugins/rexray.spec"));
    assert_eq!(d.service(), "loop");
    assert_eq!(d.config.number(keys::CREATE_SIZE), 5);
    assert!(d.settings().is_empty(), "{:?}", d.settings());

    let l = &all[1];
    assert_eq!(l.host, "unix:///run/docker/plugins/loop1.sock");
    assert_eq!(l.spec, Path::new("/etc/docker/plugins/loop1.spec"));
    assert_eq!(l.desc, "loop volumes");
    assert_eq!(l.service(), "loop");
    assert_eq!(l.config.number(keys::CREATE_SIZE), 2);
    assert!(l.config.boolean(keys::MOUNT_PREEMPT));
    assert!(l.overrides(keys::MOUNT_PREEMPT) && !l.overrides(keys::LIBSTORAGE_HOST));
    assert_eq!(l.header_timeout, Duration::from_secs(10));
    assert_eq!(l.max_connections, 1024);
    let keys_listed: Vec<&str> = l.settings().iter().map(|(k, _)| k.as_str()).collect();
    for k in [
        "rexray.modules.loop1.type",
        "rexray.modules.loop1.desc",
        "rexray.modules.loop1.host",
        "rexray.modules.loop1.maxConnections",
        "rexray.modules.loop1.libstorage.integration.volume.operations.create.default.size",
    ] {
        assert!(keys_listed.contains(&k), "{k} in {keys_listed:?}");
    }

    let v = &all[2];
    assert_eq!(v.name, "vfs1");
    assert_eq!(v.kind, "docker");
    assert_eq!(v.host, "unix:///tmp/vfs1.sock");
    assert_eq!(v.max_connections, 8);
    assert_eq!(v.service(), "vfs");
    assert_eq!(v.config.string(keys::SERVICE), "vfs");
    assert_eq!(v.config.driver_name(), "vfs");
    // Its service's section applies; the global size, not loop1's.
    assert_eq!(v.config.path(keys::VFS_ROOT), Path::new("/srv/vfs"));
    assert_eq!(v.config.number(keys::CREATE_SIZE), 5);
    assert!(!v.config.boolean(keys::MOUNT_PREEMPT));
    // The global configuration is untouched.
    assert_eq!(c.number(keys::CREATE_SIZE), 5);
    assert_eq!(c.service(), "loop");
}

#[test]
fn a_module_setting_wins_over_the_global_one_from_any_source() {
    let t = tempfile::tempdir().unwrap();
    let preempt = "LIBSTORAGE_INTEGRATION_VOLUME_OPERATIONS_MOUNT_PREEMPT";
    let flag = FlagValue {
        key: keys::CREATE_SIZE,
        value: "9".into(),
        flag: "--libstorageIntegrationVolumeOperationsCreateDefaultSize".into(),
    };
    let c = load(t.path(), TWO, &[(preempt, "false")], vec![flag]).unwrap();
    let l = c.module("loop1").unwrap();
    assert_eq!(l.config.number(keys::CREATE_SIZE), 2);
    assert!(l.config.boolean(keys::MOUNT_PREEMPT));
    // Where the module says nothing, the flag holds.
    assert_eq!(
        c.module("vfs1").unwrap().config.number(keys::CREATE_SIZE),
        9
    );

    // A module's own variable wins over its file; the old spellings and
    // the original's variable with a hyphen work too.
    let c = load(
        t.path(),
        TWO,
        &[
            (
                "REXRAY_MODULES_LOOP1_LIBSTORAGE_INTEGRATION_VOLUME_OPERATIONS_CREATE_DEFAULT_SIZE",
                "3",
            ),
            ("REXRAY_MODULES_VFS1_HOST", "unix:///tmp/other.sock"),
            ("REXRAY_MODULES_DEFAULT-DOCKER_LIBSTORAGE_SERVICE", "vfs"),
        ],
        vec![],
    )
    .unwrap();
    let l = c.module("loop1").unwrap();
    assert_eq!(l.config.number(keys::CREATE_SIZE), 3);
    assert_eq!(l.config.setting(keys::CREATE_SIZE).source.kind(), "env");
    assert_eq!(c.module("vfs1").unwrap().host, "unix:///tmp/other.sock");
    assert_eq!(c.module(DEFAULT_DOCKER).unwrap().service(), "vfs");

    let c = load(
        t.path(),
        "rexray:\n  modules:\n    m:\n      type: docker\n      docker:\n        size: 4\n      libstorage:\n        integration:\n          volume:\n            mount:\n              preempt: true\n",
        &[],
        vec![],
    )
    .unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let m = c.module("m").unwrap();
    assert_eq!(m.config.number(keys::CREATE_SIZE), 4);
    assert!(m.config.boolean(keys::MOUNT_PREEMPT));
}

#[test]
fn bad_modules_are_refused_by_key() {
    let t = tempfile::tempdir().unwrap();
    let refused = |yaml: &str| {
        let c = load(t.path(), yaml, &[], vec![]).unwrap();
        c.docker_modules().unwrap_err().to_string()
    };
    let e = refused("rexray:\n  modules:\n    m:\n      type: nfs\n");
    assert!(
        e.contains("rexray.modules.m.type") && e.contains("\"nfs\"") && e.contains("docker, csi"),
        "{e}"
    );
    let e = refused("rexray:\n  modules:\n    m:\n      host: unix:///tmp/m.sock\n");
    assert!(
        e.contains("module m has no type") && e.contains("rexray.modules.m.type"),
        "{e}"
    );
    let e = refused("rexray:\n  modules:\n    default-docker:\n      type: admin\n");
    assert!(e.contains("rexray.modules.default-docker.type"), "{e}");
    let e =
        refused("rexray:\n  modules:\n    m:\n      type: docker\n      maxConnections: lots\n");
    assert!(
        e.contains("rexray.modules.m.maxConnections") && e.contains("lots"),
        "{e}"
    );
    let e = refused(
        "rexray:\n  modules:\n    m:\n      type: docker\n      libstorage:\n        integration:\n          volume:\n            operations:\n              mount:\n                preempt: perhaps\n",
    );
    assert!(
        e.contains("rexray.modules.m.libstorage.integration.volume.operations.mount.preempt")
            && e.contains("perhaps"),
        "{e}"
    );
    let e = refused(
        "rexray:\n  modules:\n    m:\n      type: docker\n      libstorage:\n        service: ''\n",
    );
    assert!(e.contains("rexray.modules.m.libstorage.service"), "{e}");
    let e = refused("rexray:\n  modules:\n    \"a b\":\n      type: docker\n");
    assert!(e.contains("\"a b\""), "{e}");

    // Disabled: nothing else of it is read.
    let c = load(
        t.path(),
        "rexray:\n  modules:\n    m:\n      type: csi\n      disabled: true\n    default-docker:\n      disabled: true\n",
        &[],
        vec![],
    )
    .unwrap();
    assert!(c.docker_modules().unwrap().is_empty());
}

#[test]
fn unknown_module_keys_warn_with_a_hint() {
    let t = tempfile::tempdir().unwrap();
    let c = load(
        t.path(),
        "rexray:\n  modules:\n    m:\n      type: docker\n      hots: unix:///tmp/m.sock\n      libstorage:\n        servce: vfs\n",
        &[],
        vec![],
    )
    .unwrap();
    assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("rexray.modules.m.hots")
                && w.contains("did you mean rexray.modules.m.host?")),
        "{:?}",
        c.warnings
    );
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("did you mean rexray.modules.m.libstorage.service?")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn csi_modules_listen_where_host_or_csi_endpoint_says() {
    let t = tempfile::tempdir().unwrap();
    let c = load(
        t.path(),
        "rexray:\n  modules:\n    k8s:\n      type: csi\n      host: unix:///tmp/k8s-csi.sock\n",
        &[],
        vec![],
    )
    .unwrap();
    assert_eq!(
        c.docker_modules()
            .unwrap()
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>(),
        ["default-docker"]
    );
    let csi = c.csi_modules().unwrap();
    assert_eq!(csi.len(), 1);
    assert_eq!(csi[0].kind, "csi");
    assert_eq!(csi[0].host, "unix:///tmp/k8s-csi.sock");
    // Without a host: none, unless $CSI_ENDPOINT names one (a path or a
    // unix:// address).
    let yaml = "rexray:\n  modules:\n    k8s:\n      type: csi\n";
    let c = load(t.path(), yaml, &[], vec![]).unwrap();
    assert_eq!(c.csi_modules().unwrap()[0].host, "");
    let c = load(t.path(), yaml, &[("CSI_ENDPOINT", "/csi/csi.sock")], vec![]).unwrap();
    let m = &c.csi_modules().unwrap()[0];
    assert_eq!(m.host, "unix:///csi/csi.sock");
    assert!(
        m.settings()
            .iter()
            .any(|(k, s)| k == "rexray.modules.k8s.host"
                && s.source.to_string() == "env:CSI_ENDPOINT")
    );
}
