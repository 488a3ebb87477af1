//! The argv of `rexray` and the commands answered without a
//! configuration. The volume commands are tested in `volume_tests.rs`.

use super::*;
use clap::error::ErrorKind;
use std::os::unix::ffi::OsStringExt;

fn parse(args: &[&str]) -> std::result::Result<(Cli, Vec<FlagValue>), clap::Error> {
    let argv = std::iter::once("rexray")
        .chain(args.iter().copied())
        .map(String::from)
        .collect();
    let (rest, flags) = take_key_flags(argv);
    Cli::try_parse_from(rest).map(|cli| (cli, flags))
}

fn refused(args: &[&str]) -> clap::Error {
    match parse(args) {
        Ok(_) => panic!("{args:?} was accepted"),
        Err(e) => e,
    }
}

/// `execute` with its notes kept, for commands that need no
/// configuration.
fn answer(args: &[&str]) -> (Result<Answer>, String) {
    let (cli, flags) = parse(args).unwrap();
    let mut err = Vec::new();
    let r = execute(cli, flags, &mut Notes(&mut err));
    (r, String::from_utf8(err).unwrap())
}

#[test]
fn the_definitions_are_consistent() {
    command().debug_assert();
}

#[test]
fn unknown_options_and_commands_are_usage_errors_naming_them() {
    for (args, name) in [
        (&["volume", "ls", "--bogus"][..], "--bogus"),
        (&["--bogusKey", "volume", "ls"], "--bogusKey"),
        (
            &["volume", "create", "v", "--createDisable"],
            "--createDisable",
        ),
        (&["-f", "json"], "-f"),
        (&["volume", "bogus"], "bogus"),
        (&["bogus"], "bogus"),
    ] {
        let e = refused(args);
        assert!(
            matches!(
                e.kind(),
                ErrorKind::UnknownArgument | ErrorKind::InvalidSubcommand
            ),
            "{args:?}: {:?}",
            e.kind()
        );
        assert!(e.to_string().contains(name), "{args:?}: {e}");
        assert_eq!(e.exit_code(), 2, "{args:?}");
    }
}

#[test]
fn an_option_given_twice_is_refused() {
    let e = refused(&["volume", "create", "v", "--size", "1", "--size", "2"]);
    assert_eq!(e.kind(), ErrorKind::ArgumentConflict);
    assert!(e.to_string().contains("--size"), "{e}");
    let e = refused(&["volume", "mount", "v", "--consumer", "a", "--consumer", "b"]);
    assert_eq!(e.kind(), ErrorKind::ArgumentConflict);
    let e = refused(&["-s", "vfs", "-s", "loop", "volume", "ls"]);
    assert_eq!(e.kind(), ErrorKind::ArgumentConflict);
}

#[test]
fn a_negative_size_is_taken_for_an_unknown_option() {
    let e = refused(&["volume", "create", "v", "--size", "-1"]);
    assert_eq!(e.kind(), ErrorKind::UnknownArgument);
    assert!(e.to_string().contains("'-1'"), "{e}");
}

#[test]
fn commands_that_act_on_volumes_need_at_least_one() {
    for cmd in [
        "create", "rm", "attach", "detach", "mount", "unmount", "path",
    ] {
        let e = refused(&["volume", cmd]);
        assert_eq!(e.kind(), ErrorKind::MissingRequiredArgument, "{cmd}");
    }
    let e = refused(&["volume", "path", "a", "b"]);
    assert_eq!(e.kind(), ErrorKind::UnknownArgument);
}

#[test]
fn aliases_name_the_same_commands() {
    use volume::VolumeCmd as V;
    let volume_cmd = |args: &[&str]| match parse(args).unwrap().0.command {
        Command::Volume(c) => c,
        _ => panic!("{args:?} is not a volume command"),
    };
    for a in ["ls", "list", "get", "inspect", "l"] {
        assert!(matches!(volume_cmd(&["volumes", a]), V::Ls(_)), "{a}");
    }
    for a in ["create", "new", "c", "n"] {
        assert!(
            matches!(volume_cmd(&["volume", a, "v"]), V::Create(_)),
            "{a}"
        );
    }
    for a in ["rm", "remove", "delete", "del", "r"] {
        assert!(matches!(volume_cmd(&["volume", a, "v"]), V::Rm(_)), "{a}");
    }
    for (a, attach) in [
        ("attach", true),
        ("a", true),
        ("detach", false),
        ("d", false),
    ] {
        let c = volume_cmd(&["volume", a, "v"]);
        assert_eq!(matches!(c, V::Attach(_)), attach, "{a}");
        assert_eq!(matches!(c, V::Detach(_)), !attach, "{a}");
    }
    assert!(matches!(volume_cmd(&["volume", "m", "v"]), V::Mount(_)));
    for a in ["unmount", "umount", "u"] {
        assert!(
            matches!(volume_cmd(&["volume", a, "v"]), V::Unmount(_)),
            "{a}"
        );
    }
    assert!(matches!(
        parse(&["snapshots", "ls"]).unwrap().0.command,
        Command::Snapshot(_)
    ));
    assert!(matches!(
        parse(&["start", "-d"]).unwrap().0.command,
        Command::Start(StartArgs { daemon: true })
    ));
}

#[test]
fn global_options_go_anywhere_and_key_flags_are_taken_out() {
    let (cli, flags) = parse(&[
        "volume",
        "ls",
        "-s",
        "vfs",
        "--logLevel",
        "debug",
        "--config",
        "/etc/x.yml",
        "--loopVolumePath=/srv/loop",
    ])
    .unwrap();
    assert_eq!(cli.service.as_deref(), Some("vfs"));
    assert_eq!(cli.log_level.as_deref(), Some("debug"));
    assert_eq!(cli.config, Some(PathBuf::from("/etc/x.yml")));
    assert_eq!(flags.len(), 1);
    assert_eq!(flags[0].key, keys::LOOP_VOLUME_PATH);
    assert_eq!(flags[0].value, "/srv/loop");
}

#[test]
fn an_argument_that_is_not_utf8_is_refused_by_position_not_a_panic() {
    let argv = vec![
        OsString::from("rexray"),
        OsString::from("volume"),
        OsString::from_vec(b"bad\xffname".to_vec()),
    ];
    let e = utf8_args(argv).unwrap_err();
    assert_eq!(e.kind(), crate::Kind::InvalidInput);
    assert_eq!(
        e.message(),
        "argument 2 (\"bad\\xFFname\") is not valid UTF-8"
    );
    assert_eq!(
        utf8_args(vec![OsString::from("rexray"), OsString::from("ls")]).unwrap(),
        ["rexray", "ls"]
    );
}

#[test]
fn version_needs_no_configuration() {
    let (r, notes) = answer(&["version", "-f", "json"]);
    let a = r.unwrap();
    assert_eq!(a.code, 0);
    assert!(notes.is_empty(), "{notes}");
    let v: serde_json::Value = serde_json::from_str(&a.out).unwrap();
    assert_eq!(v["semVer"], env!("CARGO_PKG_VERSION"));
    let (r, _) = answer(&["version", "--format", "xml"]);
    assert!(r.unwrap_err().message().contains("\"xml\""));
}

#[test]
fn completion_answers_on_stdout_and_refuses_other_programs() {
    let a = answer(&["completion", "fish"]).0.unwrap();
    assert!(a.out.contains("complete -c rexray"), "{}", a.out);
    assert!(a.out.contains("volume"), "{}", a.out);
    let a = answer(&["completion", "zsh", "--program", "dvdcli"])
        .0
        .unwrap();
    assert!(a.out.starts_with("#compdef dvdcli"), "{}", a.out);
    assert!(!a.out.contains("_rexray"), "{}", a.out);
    let e = answer(&["completion", "zsh", "--program", "flexrex"])
        .0
        .unwrap_err();
    assert!(e.message().contains("use rexray or dvdcli"), "{e}");
    let e = refused(&["completion", "tcsh"]);
    assert_eq!(e.kind(), ErrorKind::InvalidValue);
}

#[test]
fn man_writes_pages_and_prints_nothing() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("pages");
    let a = answer(&["man", dir.to_str().unwrap()]).0.unwrap();
    assert_eq!(a, Answer::ok(String::new()));
    assert!(dir.join("rexray-volume-ls.1").is_file());
    // The hidden `man` command has no page of its own.
    assert!(!dir.join("rexray-man.1").exists());
}
