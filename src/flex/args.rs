//! The FlexVolume call as kubelet makes it: `flexrex <subcommand> <args…>`,
//! every JSON argument one argv element holding an object of strings.
//!
//! Parsing is total: any argv gives a [`Parsed`] or an [`Error`] that says
//! which argument was wrong, never a panic.

use crate::input::quote;
use crate::model::FsType;
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// kubelet's own option keys.
pub mod key {
    /// Filesystem for a blank device.
    pub const FS_TYPE: &str = "kubernetes.io/fsType";
    /// `ro` or `rw`.
    pub const READ_WRITE: &str = "kubernetes.io/readwrite";
    /// The PV name, or the pod's volume name for inline volumes.
    pub const PV_OR_VOLUME_NAME: &str = "kubernetes.io/pvOrVolumeName";
    /// Prefix of the secret keys kubelet adds for `secretRef`.
    pub const SECRET_PREFIX: &str = "kubernetes.io/secret/";
    /// The rexray volume's name (matched as a name only, never as an id).
    pub const VOLUME_ID: &str = "volumeID";
    /// Take the volume from another node.
    pub const FORCE_ATTACH: &str = "forceAttach";
    /// Seconds to wait for the other node before taking it.
    pub const FORCE_ATTACH_DELAY: &str = "forceAttachDelay";
}

/// Longest `forceAttachDelay` accepted: one day. kubelet runs attach with
/// no time limit, so an absurd value would block the volume forever.
pub const MAX_FORCE_ATTACH_DELAY_SECS: u64 = 86_400;

/// The options of one call (`flexVolume.options` plus kubelet's keys).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Options {
    /// `volumeID`: the rexray volume's name (required; never matched as an id).
    pub volume_id: String,
    /// `forceAttach`.
    pub force_attach: bool,
    /// `forceAttachDelay`.
    pub force_attach_delay: Duration,
    /// `kubernetes.io/fsType` (None when empty: the volume's or config default).
    pub fs_type: Option<FsType>,
    /// `kubernetes.io/readwrite` is `ro`.
    pub read_only: bool,
    /// `kubernetes.io/pvOrVolumeName`.
    pub pv_or_volume_name: Option<String>,
    /// Every string option except secrets, for the log.
    pub loggable: BTreeMap<String, String>,
}

/// One sub-command with its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `init`
    Init,
    /// `getvolumename <json>`
    GetVolumeName(Options),
    /// `attach <json> [<node>]`
    Attach {
        /// Options.
        opts: Options,
        /// Node name, if given.
        node: Option<String>,
    },
    /// `isattached <json> <node>` or `isattached <node> <json>`
    IsAttached {
        /// Options.
        opts: Options,
        /// Node name, if given.
        node: Option<String>,
    },
    /// `waitforattach <device> <json>`
    WaitForAttach {
        /// The device attach returned.
        device: String,
        /// Options.
        opts: Options,
    },
    /// `mountdevice <deviceMountPath> <device> <json>`
    MountDevice {
        /// Where kubelet wants the device mounted.
        path: PathBuf,
        /// The device attach returned.
        device: String,
        /// Options.
        opts: Options,
    },
    /// `mount <podDir> <json>` or the older `mount <dir> <device> <json>`
    Mount {
        /// The pod's volume directory.
        path: PathBuf,
        /// The device (older form only).
        device: Option<String>,
        /// Options.
        opts: Options,
    },
    /// `unmount <podDir>`
    Unmount {
        /// The pod's volume directory.
        path: PathBuf,
    },
    /// `unmountdevice <deviceMountPath>`
    UnmountDevice {
        /// The device mount path.
        path: PathBuf,
    },
    /// `detach <pvOrVolumeName> [<node>]`
    Detach {
        /// What kubelet calls the volume (or, from old kubelets, the device).
        name: String,
        /// Node name, if given.
        node: Option<String>,
    },
    /// `expandvolume <json> <deviceMountPath> <newSize> <oldSize>`
    ExpandVolume {
        /// Options.
        opts: Options,
        /// New size in bytes.
        new_size: u64,
        /// Old size in bytes.
        old_size: u64,
    },
    /// `expandfs <json> <devicePath> <deviceMountPath> <newSize> <oldSize>`
    ExpandFs {
        /// Options.
        opts: Options,
        /// New size in bytes.
        new_size: u64,
        /// Old size in bytes.
        old_size: u64,
    },
}

impl Call {
    /// The sub-command word.
    pub fn name(&self) -> &'static str {
        match self {
            Call::Init => "init",
            Call::GetVolumeName(_) => "getvolumename",
            Call::Attach { .. } => "attach",
            Call::IsAttached { .. } => "isattached",
            Call::WaitForAttach { .. } => "waitforattach",
            Call::MountDevice { .. } => "mountdevice",
            Call::Mount { .. } => "mount",
            Call::Unmount { .. } => "unmount",
            Call::UnmountDevice { .. } => "unmountdevice",
            Call::Detach { .. } => "detach",
            Call::ExpandVolume { .. } => "expandvolume",
            Call::ExpandFs { .. } => "expandfs",
        }
    }

    /// The options, for calls that carry them.
    pub fn options(&self) -> Option<&Options> {
        match self {
            Call::GetVolumeName(o)
            | Call::Attach { opts: o, .. }
            | Call::IsAttached { opts: o, .. }
            | Call::WaitForAttach { opts: o, .. }
            | Call::MountDevice { opts: o, .. }
            | Call::Mount { opts: o, .. }
            | Call::ExpandVolume { opts: o, .. }
            | Call::ExpandFs { opts: o, .. } => Some(o),
            _ => None,
        }
    }
}

/// What argv asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A call flexrex implements.
    Call(Call),
    /// A sub-command flexrex does not implement (kubelet then uses its
    /// own default for it).
    NotSupported(String),
}

/// Every sub-command kubelet may call, with its arguments, as the man page
/// shows them.
pub const SUBCOMMANDS: &[(&str, &str, &str)] = &[
    (
        "init",
        "",
        "Report the driver's capabilities (attach: true)",
    ),
    (
        "getvolumename",
        "<json options>",
        "Answer the unique volume name",
    ),
    (
        "attach",
        "<json options> <node name>",
        "Attach the volume to this node; answer its device",
    ),
    (
        "isattached",
        "<json options> <node name>",
        "Whether the volume is attached to this node",
    ),
    (
        "waitforattach",
        "<device> <json options>",
        "Wait for the device; answer it",
    ),
    (
        "mountdevice",
        "<device mount path> <device> <json options>",
        "Format a blank device, mount the volume, bind it onto kubelet's device mount path",
    ),
    (
        "mount",
        "<mount dir> <json options>",
        "Bind the volume onto the pod's directory",
    ),
    ("unmount", "<mount dir>", "Release the pod's directory"),
    (
        "unmountdevice",
        "<device mount path>",
        "Release the device mount path; unmount and detach when no one uses the volume",
    ),
    (
        "detach",
        "<pv or volume name> <node name>",
        "Detach the volume from this node",
    ),
    (
        "expandvolume",
        "<json options> <device mount path> <new size bytes> <old size bytes>",
        "Grow the volume",
    ),
    (
        "expandfs",
        "<json options> <device path> <device mount path> <new size bytes> <old size bytes>",
        "Grow the mounted filesystem",
    ),
];

/// The command line described for the man page only: flexrex's argv is the
/// FlexVolume protocol and is parsed by [`parse`], not by clap.
pub fn doc_command() -> clap::Command {
    let mut cmd = clap::Command::new("flexrex")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Kubernetes FlexVolume driver for rexray volumes (run by kubelet)")
        .long_about(
            "flexrex is the Kubernetes FlexVolume driver kubelet execs for every volume operation on \
             its node. It answers with exactly one JSON object on stdout ({\"status\": \"Success\" | \
             \"Failure\" | \"Not supported\", \"message\": ..., ...}) and writes nothing to stderr: \
             kubelet parses both streams together. Install it with `rexray flexrex install`; people do \
             not run it by hand.",
        )
        .override_usage("flexrex COMMAND ARGS...")
        .disable_help_subcommand(true)
        .disable_help_flag(true)
        .disable_version_flag(true);
    for (name, args, about) in SUBCOMMANDS {
        cmd = cmd.subcommand(
            clap::Command::new(*name)
                .about(*about)
                .override_usage(format!("flexrex {name} {args}").trim_end().to_string()),
        );
    }
    cmd
}

/// Sections of the man page after the commands.
pub const MAN_SECTIONS: &[(&str, &str)] = &[
    (
        "VOLUME OPTIONS",
        "flexVolume.options: volumeID (required: the rexray volume's name); forceAttach (\"true\": \
         take the volume from another node); forceAttachDelay (seconds to wait for the other node first). \
         kubelet adds kubernetes.io/fsType, kubernetes.io/readwrite and kubernetes.io/pvOrVolumeName.",
    ),
    ("EXIT STATUS", "0 Success; 1 Failure or Not supported."),
    (
        "FILES",
        "/etc/rexray/config.yml: the configuration (see `rexray env`). \
         /var/log/rexray/flexrex.log: the log (rexray.flexrex.logFile). \
         /usr/libexec/kubernetes/kubelet-plugins/volume/exec/rexray~flexrex/flexrex: where kubelet finds it \
         (`rexray flexrex install`).",
    ),
    ("SEE ALSO", "rexray(1), dvdcli(1)"),
];

/// Parse argv without the program name.
pub fn parse(args: &[String]) -> Result<Parsed> {
    let Some((cmd, rest)) = args.split_first() else {
        return Err(Error::invalid(
            "no sub-command given: flexrex is run by kubelet as `flexrex <init|attach|mountdevice|…> <args…>`",
        ));
    };
    let need = |n: usize, usage: &str| -> Result<()> {
        if rest.len() < n {
            Err(Error::invalid(format!(
                "{cmd} needs {n} argument(s): {cmd} {usage}; got {}",
                rest.len()
            )))
        } else {
            Ok(())
        }
    };
    let call = match cmd.as_str() {
        "init" => Call::Init,
        "getvolumename" => {
            need(1, "<json options>")?;
            Call::GetVolumeName(options(&rest[0])?)
        }
        "attach" => {
            need(1, "<json options> <node name>")?;
            Call::Attach {
                opts: options(&rest[0])?,
                node: rest.get(1).cloned(),
            }
        }
        "isattached" => {
            need(1, "<json options> <node name>")?;
            // Older kubelets put the node first.
            if !looks_like_json(&rest[0]) && rest.get(1).is_some_and(|s| looks_like_json(s)) {
                Call::IsAttached {
                    opts: options(&rest[1])?,
                    node: Some(rest[0].clone()),
                }
            } else {
                Call::IsAttached {
                    opts: options(&rest[0])?,
                    node: rest.get(1).cloned(),
                }
            }
        }
        "waitforattach" => {
            need(2, "<device> <json options>")?;
            Call::WaitForAttach {
                device: rest[0].clone(),
                opts: options(&rest[1])?,
            }
        }
        "mountdevice" => {
            need(3, "<device mount path> <device> <json options>")?;
            Call::MountDevice {
                path: abs_path("device mount path", &rest[0])?,
                device: rest[1].clone(),
                opts: options(&rest[2])?,
            }
        }
        "mount" => {
            need(2, "<mount dir> <json options>")?;
            // Kubernetes 1.5 passed the device too: mount <dir> <device> <json>.
            if rest.len() >= 3 && !looks_like_json(&rest[1]) {
                Call::Mount {
                    path: abs_path("mount dir", &rest[0])?,
                    device: Some(rest[1].clone()),
                    opts: options(&rest[2])?,
                }
            } else {
                Call::Mount {
                    path: abs_path("mount dir", &rest[0])?,
                    device: None,
                    opts: options(&rest[1])?,
                }
            }
        }
        "unmount" => {
            need(1, "<mount dir>")?;
            Call::Unmount {
                path: abs_path("mount dir", &rest[0])?,
            }
        }
        "unmountdevice" => {
            need(1, "<device mount path>")?;
            Call::UnmountDevice {
                path: abs_path("device mount path", &rest[0])?,
            }
        }
        "detach" => {
            need(1, "<pv or volume name> <node name>")?;
            if rest[0].is_empty() || rest[0].chars().any(|c| c.is_control()) {
                return Err(Error::invalid(format!(
                    "invalid volume name {} for detach: it must be non-empty and printable",
                    quote(&rest[0])
                )));
            }
            Call::Detach {
                name: rest[0].clone(),
                node: rest.get(1).cloned(),
            }
        }
        "expandvolume" => {
            need(
                4,
                "<json options> <device mount path> <new size bytes> <old size bytes>",
            )?;
            Call::ExpandVolume {
                opts: options(&rest[0])?,
                new_size: bytes("new size", &rest[2])?,
                old_size: bytes("old size", &rest[3])?,
            }
        }
        "expandfs" => {
            need(
                5,
                "<json options> <device path> <device mount path> <new size bytes> <old size bytes>",
            )?;
            Call::ExpandFs {
                opts: options(&rest[0])?,
                new_size: bytes("new size", &rest[3])?,
                old_size: bytes("old size", &rest[4])?,
            }
        }
        other => return Ok(Parsed::NotSupported(other.to_string())),
    };
    Ok(Parsed::Call(call))
}

fn looks_like_json(s: &str) -> bool {
    s.trim_start().starts_with('{')
}

fn abs_path(what: &str, s: &str) -> Result<PathBuf> {
    if !s.starts_with('/') || s.chars().any(|c| c.is_control()) || s.len() > 4000 {
        return Err(Error::invalid(format!(
            "invalid {what} {}: expected an absolute path",
            quote(s)
        )));
    }
    let p = PathBuf::from(s);
    if p.components().any(|c| c == std::path::Component::ParentDir) {
        return Err(Error::invalid(format!(
            "invalid {what} {}: `..` is not allowed",
            quote(s)
        )));
    }
    Ok(p)
}

fn bytes(what: &str, s: &str) -> Result<u64> {
    s.trim().parse::<u64>().map_err(|_| {
        Error::invalid(format!(
            "invalid {what} {}: expected a whole number of bytes",
            quote(s)
        ))
    })
}

/// Parse the JSON options argument.
pub fn options(json: &str) -> Result<Options> {
    // The text itself is not echoed: it may hold kubelet's secrets.
    let value = crate::input::json_without_repeated_keys(json.as_bytes(), false)
        .map_err(|e| Error::invalid(format!("invalid JSON options ({} bytes): {e}", json.len())))?;
    let serde_json::Value::Object(map) = value else {
        let what = match value {
            serde_json::Value::Array(_) => "an array",
            serde_json::Value::String(_) => "a string",
            serde_json::Value::Number(_) => "a number",
            serde_json::Value::Bool(_) => "a boolean",
            _ => "null",
        };
        return Err(Error::invalid(format!(
            "invalid JSON options: got {what}, expected an object such as {{\"volumeID\":\"vol1\"}}"
        )));
    };
    // kubelet sends only strings; accept plain numbers and booleans too
    // since hand-written specs sometimes leave them unquoted.
    let get = |k: &str| -> Result<Option<String>> {
        match map.get(k) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(serde_json::Value::Bool(b)) => Ok(Some(b.to_string())),
            Some(serde_json::Value::Number(n)) => Ok(Some(n.to_string())),
            Some(other) => Err(Error::invalid(format!(
                "invalid option {k}: expected a string, got {other}"
            ))),
        }
    };
    let volume_id = get(key::VOLUME_ID)?.unwrap_or_default();
    let volume_id = volume_id.trim().to_string();
    if volume_id.is_empty() {
        return Err(Error::invalid(
            "the option volumeID is missing or empty: set flexVolume.options.volumeID to the rexray volume's name",
        ));
    }
    crate::input::volume_name(&volume_id).map_err(|e| e.context("invalid option volumeID"))?;
    let force_attach = match get(key::FORCE_ATTACH)? {
        Some(s) => crate::input::boolean("option forceAttach", &s)?,
        None => false,
    };
    let force_attach_delay = match get(key::FORCE_ATTACH_DELAY)? {
        None => Duration::ZERO,
        Some(s) if s.trim().is_empty() => Duration::ZERO,
        Some(s) => match s.trim().parse::<u64>() {
            Ok(n) if n <= MAX_FORCE_ATTACH_DELAY_SECS => Duration::from_secs(n),
            _ => {
                return Err(Error::invalid(format!(
                    "invalid option forceAttachDelay {}: expected whole seconds from 0 to {MAX_FORCE_ATTACH_DELAY_SECS}",
                    quote(&s)
                )))
            }
        },
    };
    let fs_type = match get(key::FS_TYPE)? {
        Some(s) if !s.trim().is_empty() => Some(
            s.parse::<FsType>()
                .map_err(|e| e.context(format!("invalid option {}", key::FS_TYPE)))?,
        ),
        _ => None,
    };
    let read_only = match get(key::READ_WRITE)?.as_deref().map(str::trim) {
        None | Some("") | Some("rw") => false,
        Some("ro") => true,
        Some(other) => {
            return Err(Error::invalid(format!(
                "invalid option {} {}: expected ro or rw",
                key::READ_WRITE,
                quote(other)
            )))
        }
    };
    let pv_or_volume_name = get(key::PV_OR_VOLUME_NAME)?.filter(|s| !s.is_empty());
    if let Some(n) = &pv_or_volume_name {
        if n.chars().any(|c| c.is_control()) {
            return Err(Error::invalid(format!(
                "invalid option {} {}: control characters are not allowed",
                key::PV_OR_VOLUME_NAME,
                quote(n)
            )));
        }
    }
    let loggable = map
        .iter()
        .filter(|(k, _)| !k.starts_with(key::SECRET_PREFIX))
        .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
        .collect();
    Ok(Options {
        volume_id,
        force_attach,
        force_attach_delay,
        fs_type,
        read_only,
        pv_or_volume_name,
        loggable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn documented_subcommands_are_the_implemented_ones() {
        doc_command().debug_assert();
        for (name, _, _) in SUBCOMMANDS {
            let parsed = parse(&[name.to_string()]);
            assert!(
                !matches!(parsed, Ok(Parsed::NotSupported(_))),
                "{name} is documented but not implemented"
            );
        }
        assert!(matches!(
            parse(&["frobnicate".into()]),
            Ok(Parsed::NotSupported(_))
        ));
    }

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn call(a: &[&str]) -> Call {
        match parse(&argv(a)).unwrap() {
            Parsed::Call(c) => c,
            other => panic!("{other:?}"),
        }
    }

    const J: &str = r#"{"volumeID":"vol1","kubernetes.io/fsType":"xfs","kubernetes.io/readwrite":"ro","kubernetes.io/pvOrVolumeName":"pv1","kubernetes.io/secret/key":"s3cr3t","forceAttach":"true","forceAttachDelay":"15"}"#;

    #[test]
    fn options_are_read() {
        let o = options(J).unwrap();
        assert_eq!(o.volume_id, "vol1");
        assert_eq!(o.fs_type, Some(FsType::Xfs));
        assert!(o.read_only && o.force_attach);
        assert_eq!(o.force_attach_delay, Duration::from_secs(15));
        assert_eq!(o.pv_or_volume_name.as_deref(), Some("pv1"));
        assert!(!o.loggable.keys().any(|k| k.contains("secret")));
    }

    #[test]
    fn a_repeated_option_is_refused_by_name() {
        let e = options(r#"{"volumeID":"vol1","volumeID":"vol2"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"volumeID\" is given twice"), "{e}");
        let e = options(
            r#"{"volumeID":"v","kubernetes.io/secret/pw":"a","kubernetes.io/secret/pw":"hunter2"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("given twice") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn bad_options_say_what_is_wrong() {
        for (json, want) in [
            ("{", "invalid JSON"),
            ("[1]", "expected an object"),
            ("\"x\"", "expected an object"),
            ("{}", "volumeID is missing"),
            (r#"{"volumeID":""}"#, "volumeID is missing"),
            (r#"{"volumeID":"a/b"}"#, "volumeID"),
            (r#"{"volumeID":["x"]}"#, "expected a string"),
            (r#"{"volumeID":"v","forceAttach":"maybe"}"#, "forceAttach"),
            (
                r#"{"volumeID":"v","forceAttachDelay":"-1"}"#,
                "forceAttachDelay",
            ),
            (
                r#"{"volumeID":"v","kubernetes.io/fsType":"ntfs"}"#,
                "fsType",
            ),
            (
                r#"{"volumeID":"v","kubernetes.io/readwrite":"rx"}"#,
                "readwrite",
            ),
        ] {
            let e = options(json).unwrap_err().to_string();
            assert!(e.contains(want), "{json}: {e}");
        }
    }

    #[test]
    fn argv_forms() {
        assert_eq!(call(&["init"]), Call::Init);
        assert!(matches!(
            call(&["attach", J]),
            Call::Attach { node: None, .. }
        ));
        assert!(matches!(
            call(&["attach", J, "n1"]),
            Call::Attach { node: Some(n), .. } if n == "n1"
        ));
        for a in [["isattached", J, "n1"], ["isattached", "n1", J]] {
            match call(&a) {
                Call::IsAttached { opts, node } => {
                    assert_eq!(opts.volume_id, "vol1");
                    assert_eq!(node.as_deref(), Some("n1"));
                }
                c => panic!("{c:?}"),
            }
        }
        assert!(matches!(
            call(&["mount", "/p", "/dev/loop1", J]),
            Call::Mount {
                device: Some(_),
                ..
            }
        ));
        assert!(matches!(
            call(&["mount", "/p", J]),
            Call::Mount { device: None, .. }
        ));
        assert!(matches!(
            call(&["expandfs", J, "/dev/x", "/m", "2147483648", "1073741824"]),
            Call::ExpandFs {
                new_size: 2147483648,
                old_size: 1073741824,
                ..
            }
        ));
        assert_eq!(
            parse(&argv(&["provision", J])).unwrap(),
            Parsed::NotSupported("provision".into())
        );
    }

    #[test]
    fn missing_arguments_fail() {
        for a in [
            &["getvolumename"][..],
            &["attach"],
            &["mountdevice", "/m", "/dev/x"],
            &["mount", "/p"],
            &["unmount"],
            &["detach"],
            &["waitforattach", "/dev/x"],
            &["expandvolume", J, "/m", "1"],
            &[],
        ] {
            assert!(parse(&argv(a)).is_err(), "{a:?}");
        }
        assert!(parse(&argv(&["unmount", "relative"])).is_err());
        assert!(parse(&argv(&["unmount", "/a/../b"])).is_err());
        assert!(parse(&argv(&["expandvolume", J, "/m", "x", "1"])).is_err());
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(|n| serde_json::Value::Number(n.into())),
            "\\PC{0,20}".prop_map(serde_json::Value::String),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("volumeID".to_string()),
                        Just("forceAttach".to_string()),
                        Just("forceAttachDelay".to_string()),
                        Just("kubernetes.io/fsType".to_string()),
                        Just("kubernetes.io/readwrite".to_string()),
                        Just("kubernetes.io/pvOrVolumeName".to_string()),
                        "\\PC{0,12}",
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        #[test]
        fn any_argv_parses_or_fails_cleanly(
            cmd in prop_oneof![
                Just("init".to_string()), Just("getvolumename".to_string()),
                Just("attach".to_string()), Just("isattached".to_string()),
                Just("waitforattach".to_string()), Just("mountdevice".to_string()),
                Just("mount".to_string()), Just("unmount".to_string()),
                Just("unmountdevice".to_string()), Just("detach".to_string()),
                Just("expandvolume".to_string()), Just("expandfs".to_string()),
                "\\PC{0,12}",
            ],
            rest in prop::collection::vec(prop_oneof![
                "\\PC{0,40}",
                "/[a-z/]{0,20}",
                json_value().prop_map(|v| v.to_string()),
            ], 0..6),
        ) {
            let mut a = vec![cmd];
            a.extend(rest);
            match parse(&a) {
                Ok(Parsed::Call(c)) => {
                    if let Some(o) = c.options() {
                        prop_assert!(crate::input::volume_name(&o.volume_id).is_ok());
                    }
                }
                Ok(Parsed::NotSupported(s)) => prop_assert_eq!(&s, &a[0]),
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }

        #[test]
        fn any_json_object_parses_or_fails_cleanly(v in json_value()) {
            let s = v.to_string();
            if let Ok(o) = options(&s) {
                prop_assert!(v.is_object());
                prop_assert!(!o.volume_id.is_empty());
                prop_assert!(o.force_attach_delay.as_secs() <= MAX_FORCE_ATTACH_DELAY_SECS);
            }
        }
    }
}
