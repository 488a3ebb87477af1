//! The `dvdcli` command line, as mesos-module-dvdi and Mesos' docker/volume
//! isolator write it.
//!
//! Parsed by hand because the callers' spellings are fixed and not what an
//! argument-parser library accepts out of the box: flag names are matched
//! case-insensitively (mesos-module-dvdi passes `--explicitCreate=true`, the
//! original only knew `--explicitcreate`), global flags may come before or
//! after the sub-command, `--volumeopts` repeats *and* splits on commas, and
//! the module's shell string leaves empty trailing arguments behind.

use std::fmt;

/// A sub-command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Get or create the volume, mount it, print its path.
    Mount,
    /// Release the volume's mount.
    Unmount,
    /// Print the path of a mounted volume.
    Path,
    /// Create the volume.
    Create,
    /// Remove the volume.
    Remove,
    /// Print the volume's name if it exists.
    Get,
    /// Print every volume's name.
    List,
    /// Print version facts.
    Version,
    /// Print the usage text.
    Help,
}

impl Command {
    /// Every sub-command name, as typed.
    pub const NAMES: [&'static str; 9] = [
        "mount", "unmount", "path", "create", "remove", "get", "list", "version", "help",
    ];

    fn from_word(w: &str) -> Option<Command> {
        Some(match w.to_ascii_lowercase().as_str() {
            "mount" => Command::Mount,
            "unmount" | "umount" => Command::Unmount,
            "path" => Command::Path,
            "create" => Command::Create,
            "remove" | "rm" => Command::Remove,
            "get" => Command::Get,
            "list" | "ls" => Command::List,
            "version" => Command::Version,
            "help" => Command::Help,
            _ => return None,
        })
    }

    /// The name as typed.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Mount => "mount",
            Command::Unmount => "unmount",
            Command::Path => "path",
            Command::Create => "create",
            Command::Remove => "remove",
            Command::Get => "get",
            Command::List => "list",
            Command::Version => "version",
            Command::Help => "help",
        }
    }

    fn needs_driver(self) -> bool {
        !matches!(self, Command::Version | Command::Help)
    }
    fn needs_name(self) -> bool {
        self.needs_driver() && self != Command::List
    }
    fn takes_opts(self) -> bool {
        matches!(self, Command::Mount | Command::Create)
    }
}

/// One parsed invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The sub-command.
    pub command: Command,
    /// `--volumedriver` (empty only for `version` and `help`).
    pub driver: String,
    /// `--volumename` (empty only for `list`, `version` and `help`).
    pub name: String,
    /// `--volumeopts` pairs in the order given; key case as typed.
    pub opts: Vec<(String, String)>,
    /// `--explicitcreate`: never create a missing volume on mount.
    pub explicit_create: bool,
}

/// The command line cannot be understood: exit 2, one line on stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// The usage text.
pub const USAGE: &str = "\
Usage: dvdcli <command> --volumedriver=<driver> --volumename=<name> [--volumeopts=k=v[,k=v...]]... [--explicitcreate[=true|false]]

Commands:
  mount     get the volume (create it with the options unless --explicitcreate), mount it, print its path
  unmount   release the volume's mount (a volume that is not mounted is fine)
  path      print the path of the volume if it is mounted on this host
  create    create the volume (an existing one is left as it is)
  remove    remove the volume
  get       print the volume's name if it exists
  list      print the name of every volume, one per line
  version   print version facts

Options for --volumedriver=rexray (keys case-insensitive):
  size=<GiB> iops=<n> volumetype=<type> newfstype=ext4|xfs overwritefs=true|false
Other driver names are reached as Docker volume plugins (/run/docker/plugins/<name>.sock, ...).
";

/// The command line described for the man page and shell completions only:
/// dvdcli's argv is a protocol fixed by its callers and is parsed by
/// [`parse`], not by clap.
pub fn doc_command() -> clap::Command {
    use clap::{Arg, ArgAction};
    let usage = "--volumedriver=DRIVER --volumename=NAME";
    let sub = |name: &'static str, args: &str, about: &'static str| {
        clap::Command::new(name)
            .about(about)
            .override_usage(format!("dvdcli {name} {args}").trim_end().to_string())
    };
    clap::Command::new("dvdcli")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Mount and unmount volumes for Mesos (mesos-module-dvdi, the docker/volume isolator)")
        .long_about(
            "dvdcli mounts and unmounts volumes for the Mesos containerizer: mesos-module-dvdi and \
             Mesos' docker/volume isolator exec it. `mount` prints exactly the path and a newline; \
             `path`, `get` and `list` print only their result; errors are one line on stderr. \
             Flags may come before or after the command, names match case-insensitively, values go \
             after `=` or as the next argument.",
        )
        .override_usage("dvdcli COMMAND --volumedriver=DRIVER [--volumename=NAME] [--volumeopts=K=V[,K=V...]]... [--explicitcreate[=true|false]]")
        .disable_help_subcommand(true)
        .disable_help_flag(true)
        .disable_version_flag(true)
        .arg(
            Arg::new("volumedriver")
                .long("volumedriver")
                .value_name("DRIVER")
                .global(true)
                .help("rexray (the configured service, run in-process), another configured service, or the name of a Docker volume plugin"),
        )
        .arg(
            Arg::new("volumename")
                .long("volumename")
                .value_name("NAME")
                .global(true)
                .help("The volume's name"),
        )
        .arg(
            Arg::new("volumeopts")
                .long("volumeopts")
                .value_name("K=V[,K=V...]")
                .action(ArgAction::Append)
                .global(true)
                .help("Options for a volume this call creates: size=GiB, iops=N, volumetype=TYPE, newfstype=ext4|xfs, overwritefs=true|false; repeatable, comma-separated"),
        )
        .arg(
            Arg::new("explicitcreate")
                .long("explicitcreate")
                .value_name("true|false")
                .num_args(0..=1)
                .default_missing_value("true")
                .global(true)
                .help("Never create a missing volume on mount: fail instead"),
        )
        .subcommand(sub("mount", &format!("{usage} [--volumeopts=K=V,...] [--explicitcreate]"), "Get the volume (create it with the options unless --explicitcreate), attach, format only if blank, mount; print the path"))
        .subcommand(sub("unmount", usage, "Release dvdcli's use of the volume; unmount and detach when no one else uses it"))
        .subcommand(sub("path", usage, "Print the volume's path if it is mounted on this host (nothing if not)"))
        .subcommand(sub("create", &format!("{usage} [--volumeopts=K=V,...]"), "Create the volume (an existing one is left as it is)"))
        .subcommand(sub("remove", usage, "Remove the volume (never one in use)"))
        .subcommand(sub("get", usage, "Print the volume's name if it exists"))
        .subcommand(sub("list", "--volumedriver=DRIVER", "Print the name of every volume, one per line"))
        .subcommand(sub("version", "", "Print version facts"))
        .subcommand(sub("help", "", "Print the usage text"))
}

/// Sections of the man page after the commands.
pub const MAN_SECTIONS: &[(&str, &str)] = &[
    (
        "EXIT STATUS",
        "0 success; 1 error (one line on stderr, nothing on stdout); 2 the command line cannot be understood.",
    ),
    (
        "ENVIRONMENT",
        "DVDCLI_PLUGIN_SOCKET_DIRS: directories searched for <driver>.sock (default /run/docker/plugins). \
         DVDCLI_PLUGIN_SPEC_DIRS: directories searched for spec files (default /etc/docker/plugins:/usr/lib/docker/plugins). \
         DVDCLI_LOOKUP_TIMEOUT: retry budget for finding a plugin (default 30 s). \
         REXRAY_HOME and every rexray configuration variable (see `rexray env`).",
    ),
    (
        "FILES",
        "/etc/rexray/config.yml: the configuration used for --volumedriver=rexray.",
    ),
    ("SEE ALSO", "rexray(1), flexrex(1)"),
];

fn usage(msg: impl Into<String>) -> UsageError {
    UsageError(msg.into())
}

/// Shown in errors: the argument as typed, escaped and cut.
fn shown(s: &str) -> String {
    crate::input::quote(s)
}

/// Parse the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Invocation, UsageError> {
    let mut command = None;
    let mut driver = None;
    let mut name = None;
    let mut raw_opts: Vec<String> = Vec::new();
    let mut explicit = None;
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        // The module builds a shell string with empty fields at the end.
        if a.is_empty() {
            continue;
        }
        if a == "-h" {
            command = Some(Command::Help);
            continue;
        }
        let Some(body) = a.strip_prefix("--") else {
            if a.starts_with('-') {
                return Err(usage(format!(
                    "unknown flag {}: flags are --volumedriver, --volumename, --volumeopts and --explicitcreate",
                    shown(a)
                )));
            }
            match (command, Command::from_word(a)) {
                (None, Some(c)) => command = Some(c),
                (None, None) => {
                    return Err(usage(format!(
                        "unknown command {}: use one of {}",
                        shown(a),
                        Command::NAMES.join(", ")
                    )))
                }
                (Some(Command::Help), _) => {}
                (Some(c), _) => {
                    return Err(usage(format!(
                        "unexpected argument {} after `{}`: the volume is given with --volumename",
                        shown(a),
                        c.as_str()
                    )))
                }
            }
            continue;
        };
        let (flag, inline) = match body.split_once('=') {
            Some((f, v)) => (f, Some(v)),
            None => (body, None),
        };
        let key = flag.to_ascii_lowercase();
        match key.as_str() {
            "volumedriver" | "volumename" | "volumeopts" => {
                let value = match inline {
                    Some(v) => v.to_string(),
                    None => match args.get(i) {
                        Some(v) => {
                            i += 1;
                            v.clone()
                        }
                        None => return Err(usage(format!("flag --{flag} needs a value"))),
                    },
                };
                // A second, different driver or name: which one was meant
                // is a guess (the last would win, and `remove` acts on it).
                let once = |slot: &mut Option<String>, value: String| match slot {
                    Some(before) if *before != value => Err(usage(format!(
                        "--{key} is given twice ({} and {}): give it once",
                        shown(before),
                        shown(&value)
                    ))),
                    _ => {
                        *slot = Some(value);
                        Ok(())
                    }
                };
                match key.as_str() {
                    "volumedriver" => once(&mut driver, value)?,
                    "volumename" => once(&mut name, value)?,
                    _ => raw_opts.push(value),
                }
            }
            "explicitcreate" => {
                let value = match inline {
                    Some(v) => Some(v.to_string()),
                    None => match args.get(i).map(|s| s.to_ascii_lowercase()) {
                        Some(v) if v == "true" || v == "false" => {
                            i += 1;
                            Some(v)
                        }
                        _ => None,
                    },
                };
                explicit = Some(match value {
                    None => true,
                    Some(v) => match v.trim().to_ascii_lowercase().as_str() {
                        "true" | "1" | "t" => true,
                        "false" | "0" | "f" => false,
                        _ => {
                            return Err(usage(format!(
                                "invalid --{flag} value {}: expected true or false",
                                shown(&v)
                            )))
                        }
                    },
                });
            }
            "help" => command = Some(Command::Help),
            _ => {
                return Err(usage(format!(
                    "unknown flag {}: flags are --volumedriver, --volumename, --volumeopts and --explicitcreate",
                    shown(&format!("--{flag}"))
                )))
            }
        }
    }

    let Some(command) = command else {
        return Err(usage(format!(
            "missing command: use one of {}",
            Command::NAMES.join(", ")
        )));
    };
    if matches!(command, Command::Help | Command::Version) {
        return Ok(Invocation {
            command,
            driver: driver.unwrap_or_default(),
            name: name.unwrap_or_default(),
            opts: Vec::new(),
            explicit_create: false,
        });
    }
    let driver = driver.unwrap_or_default();
    if command.needs_driver() && driver.is_empty() {
        return Err(usage(format!(
            "missing volume driver name: `dvdcli {}` needs --volumedriver (e.g. --volumedriver=rexray)",
            command.as_str()
        )));
    }
    let name = name.unwrap_or_default();
    if command.needs_name() && name.is_empty() {
        return Err(usage(format!(
            "missing volume name: `dvdcli {}` needs --volumename",
            command.as_str()
        )));
    }
    if !raw_opts.is_empty() && !command.takes_opts() {
        return Err(usage(format!(
            "--volumeopts applies to mount and create only, not to `{}`",
            command.as_str()
        )));
    }
    if explicit.is_some() && command != Command::Mount {
        return Err(usage(format!(
            "--explicitcreate applies to mount only, not to `{}`",
            command.as_str()
        )));
    }
    Ok(Invocation {
        command,
        driver,
        name,
        opts: split_opts(&raw_opts)?,
        explicit_create: explicit.unwrap_or(false),
    })
}

/// `--volumeopts` values → `(key, value)` pairs: every value is also a
/// comma-separated list; empty elements are skipped (as the module drops
/// them); an element must be `key=value` with a non-empty key. The value is
/// everything after the first `=`. A key given twice (in any case: keys
/// are case-insensitive) is refused: which value was meant is a guess.
pub fn split_opts(raw: &[String]) -> Result<Vec<(String, String)>, UsageError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for value in raw {
        for el in value.split(',').filter(|e| !e.is_empty()) {
            match el.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => {
                    let k = k.trim();
                    if let Some((ko, vo)) = out
                        .iter()
                        .find(|(o, _)| crate::options::same_key(o, k, crate::options::DVDCLI.fold_case))
                    {
                        return Err(usage(format!(
                            "--volumeopts key {} is given twice ({} and {}): give each key once",
                            shown(k),
                            shown(&format!("{ko}={vo}")),
                            shown(el)
                        )));
                    }
                    out.push((k.to_string(), v.to_string()))
                }
                Some(_) => {
                    return Err(usage(format!(
                        "invalid --volumeopts element {}: the key before `=` is empty (expected key=value, e.g. size=5)",
                        shown(el)
                    )))
                }
                None => {
                    return Err(usage(format!(
                        "invalid --volumeopts element {}: expected key=value, e.g. size=5",
                        shown(el)
                    )))
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn doc_command_lists_every_command() {
        let cmd = doc_command();
        cmd.clone().debug_assert();
        let mut documented: Vec<&str> = cmd.get_subcommands().map(|c| c.get_name()).collect();
        let mut parsed = Command::NAMES.to_vec();
        documented.sort_unstable();
        parsed.sort_unstable();
        assert_eq!(documented, parsed);
    }

    fn argv(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    fn p(s: &[&str]) -> Result<Invocation, UsageError> {
        parse(&argv(s))
    }

    #[test]
    fn module_argv_with_explicit_create() {
        // mesos-module-dvdi's shell string, split by sh.
        let inv = p(&[
            "mount",
            "--volumedriver=rexray",
            "--volumename=test12345",
            "--volumeopts=size=5",
            "--volumeopts=iops=150",
            "--volumeopts=volumetype=io1",
            "--volumeopts=newfstype=xfs",
            "--volumeopts=overwritefs=true",
            "--explicitCreate=true",
        ])
        .unwrap();
        assert_eq!(inv.command, Command::Mount);
        assert_eq!(inv.driver, "rexray");
        assert_eq!(inv.name, "test12345");
        assert!(inv.explicit_create);
        assert_eq!(inv.opts.len(), 5);
        assert_eq!(inv.opts[4], ("overwritefs".into(), "true".into()));
    }

    #[test]
    fn empty_trailing_args_and_flags_before_the_command() {
        let inv = p(&[
            "--volumedriver",
            "rexray",
            "unmount",
            "--volumename=v1",
            "",
            "",
        ])
        .unwrap();
        assert_eq!(inv.command, Command::Unmount);
        assert_eq!((inv.driver.as_str(), inv.name.as_str()), ("rexray", "v1"));
        assert!(!inv.explicit_create);
    }

    #[test]
    fn comma_lists_equal_repeated_flags() {
        let a = p(&[
            "mount",
            "--volumedriver=x",
            "--volumename=v",
            "--volumeopts=size=5,iops=150",
        ])
        .unwrap();
        let b = p(&[
            "mount",
            "--volumedriver=x",
            "--volumename=v",
            "--volumeopts",
            "size=5",
            "--volumeOpts=iops=150",
        ])
        .unwrap();
        assert_eq!(a, b);
        let c = p(&[
            "create",
            "--volumedriver=x",
            "--volumename=v",
            "--volumeopts=,size=5,,",
        ])
        .unwrap();
        assert_eq!(c.opts, vec![("size".to_string(), "5".to_string())]);
        // Everything after the first `=` is the value.
        let d = p(&[
            "create",
            "--volumedriver=x",
            "--volumename=v",
            "--volumeopts=a=b=c",
        ])
        .unwrap();
        assert_eq!(d.opts, vec![("a".to_string(), "b=c".to_string())]);
    }

    #[test]
    fn a_repeated_key_is_refused_by_name() {
        for opts in [
            &["--volumeopts=size=1", "--volumeopts=size=2"][..],
            &["--volumeopts=size=1,Size=2"],
            &["--volumeopts=size=1", "--volumeopts=iops=3,SIZE=1"],
        ] {
            let mut args = vec!["create", "--volumedriver=x", "--volumename=v"];
            args.extend_from_slice(opts);
            let e = p(&args).unwrap_err();
            assert!(
                e.0.contains("given twice") && e.0.to_ascii_lowercase().contains("size"),
                "{opts:?}: {}",
                e.0
            );
        }
    }

    #[test]
    fn explicit_create_spellings() {
        for (args, want) in [
            (vec!["--explicitcreate"], true),
            (vec!["--explicitCreate"], true),
            (vec!["--EXPLICITCREATE=false"], false),
            (vec!["--explicitcreate", "false"], false),
            (vec!["--explicitcreate", "TRUE"], true),
            (vec![], false),
        ] {
            let mut a = vec!["mount", "--volumedriver=r", "--volumename=v"];
            a.extend(args.iter());
            assert_eq!(p(&a).unwrap().explicit_create, want, "{a:?}");
        }
        let e = p(&[
            "mount",
            "--volumedriver=r",
            "--volumename=v",
            "--explicitCreate=maybe",
        ])
        .unwrap_err();
        assert!(e.0.contains("--explicitCreate"), "{e}");
    }

    #[test]
    fn usage_errors_name_the_problem() {
        let cases: &[(&[&str], &str)] = &[
            (&[], "missing command"),
            (&["mount", "--volumedriver=rexray"], "--volumename"),
            (
                &["mount", "--volumedriver=rexray", "--volumename="],
                "--volumename",
            ),
            (&["mount", "--volumename=v"], "--volumedriver"),
            (
                &[
                    "mount",
                    "--volumedriver=r",
                    "--volumename=v",
                    "--volumeopts=novalue",
                ],
                "\"novalue\"",
            ),
            (
                &[
                    "mount",
                    "--volumedriver=r",
                    "--volumename=v",
                    "--volumeopts==5",
                ],
                "key before",
            ),
            (
                &[
                    "mount",
                    "--volumedriver=r",
                    "--volumename=v",
                    "--volumeopts",
                ],
                "--volumeopts needs a value",
            ),
            (&["frob"], "unknown command \"frob\""),
            (
                &["mount", "--volumedriver=r", "--volumename=v", "--bogus"],
                "\"--bogus\"",
            ),
            (
                &["mount", "--volumedriver=r", "--volumename=v", "-x"],
                "\"-x\"",
            ),
            (
                &["mount", "--volumedriver=r", "--volumename=v", "extra"],
                "\"extra\"",
            ),
            (
                &[
                    "unmount",
                    "--volumedriver=r",
                    "--volumename=v",
                    "--volumeopts=size=1",
                ],
                "mount and create only",
            ),
            (
                &[
                    "path",
                    "--volumedriver=r",
                    "--volumename=v",
                    "--explicitcreate",
                ],
                "mount only",
            ),
            (&["list"], "--volumedriver"),
        ];
        for (args, want) in cases {
            let e = p(args).unwrap_err();
            assert!(e.0.contains(want), "{args:?}: {e}");
            assert!(!e.0.contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn list_version_help() {
        assert_eq!(
            p(&["list", "--volumedriver=r"]).unwrap().command,
            Command::List
        );
        assert_eq!(p(&["version"]).unwrap().command, Command::Version);
        assert_eq!(p(&["--help"]).unwrap().command, Command::Help);
        assert_eq!(p(&["help", "mount"]).unwrap().command, Command::Help);
    }

    fn token() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("mount".to_string()),
            Just("unmount".to_string()),
            Just("path".to_string()),
            Just("list".to_string()),
            Just("".to_string()),
            Just("--volumedriver=rexray".to_string()),
            Just("--volumedriver".to_string()),
            Just("--volumename=v1".to_string()),
            Just("--volumename".to_string()),
            Just("--explicitCreate".to_string()),
            Just("--explicitcreate=false".to_string()),
            Just("true".to_string()),
            "--volumeopts=[a-zA-Z=,0-9]{0,12}",
            "--[a-zA-Z]{0,14}(=[a-z0-9]{0,4})?",
            "\\PC{0,10}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]
        #[test]
        fn never_panics_and_errors_are_one_line(args in proptest::collection::vec(token(), 0..8)) {
            match parse(&args) {
                Ok(inv) => {
                    if inv.command.needs_name() {
                        prop_assert!(!inv.name.is_empty());
                    }
                    if inv.command.needs_driver() {
                        prop_assert!(!inv.driver.is_empty());
                    }
                    for (k, _) in &inv.opts {
                        prop_assert!(!k.is_empty() && !k.contains(','));
                    }
                }
                Err(e) => {
                    prop_assert!(!e.0.is_empty());
                    prop_assert!(!e.0.contains('\n'));
                }
            }
        }

        #[test]
        fn opts_split_roundtrip(pairs in proptest::collection::vec(("[a-zA-Z][a-zA-Z0-9]{0,8}", "[a-zA-Z0-9=.]{0,8}"), 0..6)) {
            let joined = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
            let mut keys: Vec<String> = pairs.iter().map(|(k, _)| k.to_ascii_lowercase()).collect();
            keys.sort();
            keys.dedup();
            match split_opts(&[joined]) {
                Ok(got) => {
                    prop_assert_eq!(keys.len(), pairs.len());
                    prop_assert_eq!(got, pairs);
                }
                Err(e) => {
                    prop_assert!(keys.len() < pairs.len());
                    prop_assert!(e.0.contains("given twice"), "{}", e.0);
                }
            }
        }

        #[test]
        fn bad_opts_name_the_element(s in "[a-z]{1,8}") {
            let e = split_opts(&[format!("size=1,{s}")]).unwrap_err();
            prop_assert!(e.0.contains(&s));
        }
    }
}
