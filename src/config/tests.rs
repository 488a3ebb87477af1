use super::*;

fn env_of(home: &Path, extra: &[(&str, &str)]) -> HashMap<String, String> {
    let mut m: HashMap<String, String> = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    m.insert("REXRAY_HOME".into(), home.to_string_lossy().into_owned());
    m
}

fn load(home: &Path, extra: &[(&str, &str)], flags: Vec<FlagValue>) -> Result<Config> {
    Config::load(LoadOptions {
        config_file: None,
        flags,
        env: Some(env_of(home, extra)),
    })
}

fn write_cfg(home: &Path, text: &str) {
    std::fs::create_dir_all(home.join("etc")).unwrap();
    std::fs::write(home.join("etc/config.yml"), text).unwrap();
}

#[test]
fn defaults() {
    let t = tempfile::tempdir().unwrap();
    let c = load(t.path(), &[], vec![]).unwrap();
    assert_eq!(c.service(), "loop");
    assert_eq!(c.number(keys::CREATE_SIZE), 16);
    assert_eq!(c.string(keys::CREATE_FSTYPE), "ext4");
    assert_eq!(c.string(keys::MOUNT_ROOT_PATH), "/data");
    assert_eq!(
        c.path(keys::LOOP_VOLUME_PATH),
        t.path().join("var/lib/loop")
    );
    assert_eq!(c.setting(keys::CREATE_SIZE).source, Source::Default);
}

#[test]
fn file_env_flag_precedence() {
    let t = tempfile::tempdir().unwrap();
    write_cfg(
        t.path(),
        "libstorage:\n  integration:\n    volume:\n      operations:\n        create:\n          default:\n            size: 5\n",
    );
    let c = load(t.path(), &[], vec![]).unwrap();
    assert_eq!(c.number(keys::CREATE_SIZE), 5);
    assert!(matches!(
        c.setting(keys::CREATE_SIZE).source,
        Source::File(_)
    ));

    let env = [(
        "LIBSTORAGE_INTEGRATION_VOLUME_OPERATIONS_CREATE_DEFAULT_SIZE",
        "7",
    )];
    let c = load(t.path(), &env, vec![]).unwrap();
    assert_eq!(c.number(keys::CREATE_SIZE), 7);
    assert_eq!(c.setting(keys::CREATE_SIZE).source.kind(), "env");

    let flag = FlagValue {
        key: keys::CREATE_SIZE,
        value: "9".into(),
        flag: "--x".into(),
    };
    let c = load(t.path(), &env, vec![flag]).unwrap();
    assert_eq!(c.number(keys::CREATE_SIZE), 9);
    assert_eq!(c.setting(keys::CREATE_SIZE).source.kind(), "flag");
}

#[test]
fn case_insensitive_and_old_spelling_operations_wins() {
    let t = tempfile::tempdir().unwrap();
    write_cfg(
        t.path(),
        "libstorage:\n  integration:\n    volume:\n      unmount:\n        IGNOREUSEDCOUNT: true\n      mount:\n        preempt: true\n      operations:\n        mount:\n          preempt: false\n",
    );
    let c = load(t.path(), &[], vec![]).unwrap();
    assert!(c.boolean(keys::UNMOUNT_IGNORE_USED_COUNT));
    assert!(!c.boolean(keys::MOUNT_PREEMPT), "operations wins");
}

#[test]
fn rexray_scope_and_var_expansion() {
    let t = tempfile::tempdir().unwrap();
    std::env::set_var("REXRAY_TEST_VOLPATH", "/srv/vols");
    write_cfg(
        t.path(),
        "rexray:\n  logLevel: debug\nloop:\n  volumePath: ${REXRAY_TEST_VOLPATH}/loop\nvfs:\n  root: $REXRAY_TEST_VOLPATH\n",
    );
    let c = load(t.path(), &[], vec![]).unwrap();
    assert_eq!(c.string(keys::LOG_LEVEL), "debug");
    assert_eq!(c.string(keys::LOOP_VOLUME_PATH), "/srv/vols/loop");
    assert_eq!(c.string(keys::VFS_ROOT), "/srv/vols");
}

#[test]
fn services_scope_and_driver() {
    let t = tempfile::tempdir().unwrap();
    write_cfg(
        t.path(),
        "libstorage:\n  service: fast\n  server:\n    services:\n      fast:\n        driver: loop\n        loop:\n          volumePath: /srv/fast\n",
    );
    let c = load(t.path(), &[], vec![]).unwrap();
    assert_eq!(c.service(), "fast");
    assert_eq!(c.driver_name(), "loop");
    assert_eq!(c.string(keys::LOOP_VOLUME_PATH), "/srv/fast");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn env_hyphen_matches_underscore() {
    let t = tempfile::tempdir().unwrap();
    let c = load(
        t.path(),
        &[("REXRAY_MODULES_DEFAULT-DOCKER_HOST", "tcp://127.0.0.1:7981")],
        vec![],
    )
    .unwrap();
    assert_eq!(c.string(keys::DOCKER_HOST), "tcp://127.0.0.1:7981");
    let c = load(
        t.path(),
        &[("REXRAY_MODULES_DEFAULT_DOCKER_HOST", "tcp://127.0.0.1:7982")],
        vec![],
    )
    .unwrap();
    assert_eq!(c.string(keys::DOCKER_HOST), "tcp://127.0.0.1:7982");
}

#[test]
fn invalid_values_name_the_key_and_value() {
    let t = tempfile::tempdir().unwrap();
    write_cfg(
        t.path(),
        "libstorage:\n  integration:\n    volume:\n      operations:\n        mount:\n          preempt: perhaps\n",
    );
    let e = load(t.path(), &[], vec![]).unwrap_err().to_string();
    assert!(
        e.contains("libstorage.integration.volume.operations.mount.preempt"),
        "{e}"
    );
    assert!(e.contains("perhaps"), "{e}");

    write_cfg(
        t.path(),
        "libstorage:\n  device:\n    attachTimeout: soon\n",
    );
    let e = load(t.path(), &[], vec![]).unwrap_err().to_string();
    assert!(
        e.contains("libstorage.device.attachTimeout") && e.contains("soon"),
        "{e}"
    );

    write_cfg(t.path(), "- a\n- b\n");
    let e = load(t.path(), &[], vec![]).unwrap_err().to_string();
    assert!(e.contains("mapping"), "{e}");

    write_cfg(t.path(), "a: [\n");
    let e = load(t.path(), &[], vec![]).unwrap_err().to_string();
    assert!(e.contains("invalid config file"), "{e}");
}

#[test]
fn unknown_keys_warn() {
    let t = tempfile::tempdir().unwrap();
    write_cfg(t.path(), "libstorage:\n  integraton:\n    x: 1\n");
    let c = load(t.path(), &[], vec![]).unwrap();
    assert_eq!(c.warnings.len(), 1);
    assert!(c.warnings[0].contains("libstorage.integraton.x"));

    write_cfg(t.path(), "libstorage:\n  integration:\n    volume:\n      operations:\n        mount:\n          premept: true\n");
    let c = load(t.path(), &[], vec![]).unwrap();
    assert!(
        c.warnings[0]
            .contains("did you mean libstorage.integration.volume.operations.mount.preempt?"),
        "{:?}",
        c.warnings
    );
}

#[test]
fn world_writable_config_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    write_cfg(t.path(), "rexray:\n  logLevel: info\n");
    let f = t.path().join("etc/config.yml");
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).unwrap();
    let e = load(t.path(), &[], vec![]).unwrap_err().to_string();
    assert!(e.contains("writable by every user"), "{e}");
}

#[test]
fn explicit_config_must_exist() {
    let t = tempfile::tempdir().unwrap();
    let e = Config::load(LoadOptions {
        config_file: Some(t.path().join("nope.yml")),
        flags: vec![],
        env: Some(env_of(t.path(), &[])),
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("nope.yml"), "{e}");
}

#[test]
fn flags_for_keys() {
    assert_eq!(
        key_for_flag("--libstorageIntegrationVolumeOperationsMountPreempt")
            .unwrap()
            .key,
        keys::MOUNT_PREEMPT
    );
    assert_eq!(
        key_for_flag("--loopvolumepath").unwrap().key,
        keys::LOOP_VOLUME_PATH
    );
    assert!(key_for_flag("--nope").is_none());
    // The same answer as comparing with each key's flag name.
    for def in KEYS {
        let flag = keys::flag_name(def.key);
        for f in [
            flag.clone(),
            flag.to_ascii_uppercase(),
            format!("--{}", flag.to_ascii_lowercase()),
            format!("{flag}x"),
            flag[..flag.len() - 1].to_string(),
        ] {
            let by_name = KEYS
                .iter()
                .find(|k| keys::flag_name(k.key).eq_ignore_ascii_case(f.trim_start_matches('-')))
                .map(|k| k.key);
            assert_eq!(key_for_flag(&f).map(|k| k.key), by_name, "{f}");
        }
    }
}

#[test]
fn defaults_are_valid_as_they_are() {
    // `resolve` takes a default without a directory placeholder as it is.
    for def in KEYS.iter().filter(|d| !d.default.contains('{')) {
        assert_eq!(
            validate(def, def.default, &Source::Default).as_deref().ok(),
            Some(def.default),
            "{}",
            def.key
        );
    }
}

#[test]
fn keys_are_found_in_any_case() {
    for (i, def) in KEYS.iter().enumerate() {
        assert_eq!(keys::index(def.key), Some(i));
        assert_eq!(keys::index(&def.key.to_ascii_uppercase()), Some(i));
    }
    assert_eq!(keys::index("no.such.key"), None);
}

#[test]
fn only_the_variables_that_can_matter_are_read() {
    assert!(env_relevant("REXRAY_LOGLEVEL"));
    assert!(env_relevant("rexray-loglevel"));
    assert!(env_relevant("LOOP_VOLUMEPATH"));
    assert!(env_relevant("HOME"));
    assert!(env_relevant("CSI_ENDPOINT"));
    assert!(!env_relevant("PATH"));
    assert!(!env_relevant("REXRAY"));
    // The settings are the same with unrelated variables around.
    let t = tempfile::tempdir().unwrap();
    let a = load(t.path(), &[("LOOP_SIZE", "3")], vec![]).unwrap();
    let b = load(
        t.path(),
        &[("LOOP_SIZE", "3"), ("PATH", "/bin"), ("TERM", "xterm")],
        vec![],
    )
    .unwrap();
    assert_eq!(
        a.settings().collect::<Vec<_>>(),
        b.settings().collect::<Vec<_>>()
    );
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]
        #[test]
        fn any_yaml_loads_or_fails_cleanly(text in "[a-zA-Z0-9:. \\n\\-\\[\\]{}'\"$]{0,200}") {
            let t = tempfile::tempdir().unwrap();
            write_cfg(t.path(), &text);
            match load(t.path(), &[], vec![]) {
                Ok(c) => { let _ = c.service(); }
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }

        #[test]
        fn any_flag_value_is_validated_with_its_key(k in 0usize..22, v in "\\PC{0,30}") {
            let t = tempfile::tempdir().unwrap();
            let def = &KEYS[k % KEYS.len()];
            let flag = FlagValue { key: def.key, value: v.clone(), flag: "--x".into() };
            match load(t.path(), &[], vec![flag]) {
                Ok(c) => prop_assert_eq!(c.setting(def.key).source.kind(), "flag"),
                Err(e) => prop_assert!(e.to_string().contains(def.key), "{}", e),
            }
        }

        #[test]
        fn any_env_value_for_size_is_validated(v in "\\PC{0,20}") {
            let t = tempfile::tempdir().unwrap();
            match load(t.path(), &[("LIBSTORAGE_INTEGRATION_VOLUME_OPERATIONS_CREATE_DEFAULT_SIZE", &v)], vec![]) {
                Ok(c) => prop_assert!(c.number(keys::CREATE_SIZE) >= 1),
                Err(e) => prop_assert!(e.to_string().contains(keys::CREATE_SIZE)),
            }
        }
    }
}

#[test]
fn server_endpoints_services_and_per_service_settings() {
    let t = tempfile::tempdir().unwrap();
    write_cfg(
        t.path(),
        "libstorage:\n  service: vfs\n  server:\n    tasks:\n      logTimeout: 0s\n    endpoints:\n      public:\n        address: tcp://127.0.0.1:7979\n      admin:\n        address: unix:///run/x.sock\n    services:\n      VFS2:\n        driver: vfs\n        vfs:\n          root: /srv/vfs2\n      vfs:\n        driver: vfs\nvfs:\n  root: /srv/vfs\n",
    );
    let c = load(t.path(), &[("LOOP_VOLUMEPATH", "/srv/loop")], vec![]).unwrap();
    assert_eq!(
        c.server_endpoints(),
        vec![
            ("admin".to_string(), "unix:///run/x.sock".to_string()),
            ("public".to_string(), "tcp://127.0.0.1:7979".to_string())
        ]
    );
    assert_eq!(c.server_services(), vec!["vfs", "vfs2"]);
    assert_eq!(c.path(keys::VFS_ROOT), Path::new("/srv/vfs"));
    assert_eq!(
        c.duration(keys::SERVER_LOG_TIMEOUT),
        std::time::Duration::ZERO
    );
    let c2 = c.for_service("vfs2").unwrap();
    assert_eq!(c2.service(), "vfs2");
    assert_eq!(c2.string(keys::SERVICE), "vfs2");
    assert_eq!(c2.driver_name(), "vfs");
    assert_eq!(c2.path(keys::VFS_ROOT), Path::new("/srv/vfs2"));
    // The environment keeps winning.
    assert_eq!(c2.path(keys::LOOP_VOLUME_PATH), Path::new("/srv/loop"));
    assert_eq!(
        c.for_service("vfs").unwrap().path(keys::VFS_ROOT),
        Path::new("/srv/vfs")
    );
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    // A zero execution timeout is refused; a zero log timeout is not.
    write_cfg(
        t.path(),
        "libstorage:\n  server:\n    tasks:\n      exeTimeout: 0s\n",
    );
    let e = load(t.path(), &[], vec![]).unwrap_err();
    assert!(e.message().contains(keys::SERVER_EXE_TIMEOUT), "{e}");
}

/// The prefixes an environment variable must start with to name a key
/// are exactly the first segments of the keys and their aliases.
#[test]
fn env_prefixes_are_the_keys_first_segments() {
    let mut firsts: Vec<String> = KEYS
        .iter()
        .flat_map(|d| std::iter::once(&d.key).chain(d.aliases.iter()))
        .map(|k| k.split('.').next().unwrap_or(""))
        .chain(std::iter::once("rexray"))
        .map(|f| format!("{}_", f.to_ascii_uppercase()))
        .collect();
    firsts.sort_unstable();
    firsts.dedup();
    assert_eq!(firsts, ENV_PREFIXES);
}
