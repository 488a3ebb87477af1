//! `rexray env`: the effective configuration, each setting with the
//! environment variable that sets it and where its value came from, and
//! every module's own settings and overrides (`rexray.modules.<name>.…`).

use crate::config::{keys, Config, Setting};
use crate::output::{self, Format};
use crate::{Error, Result};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Serialize)]
struct EnvEntry<'a> {
    key: &'a str,
    env: String,
    value: &'a str,
    source: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct All<'a> {
    directories: BTreeMap<&'a str, String>,
    files: Vec<String>,
    settings: Vec<EnvEntry<'a>>,
    /// How this host attaches rbd images (without loading a module).
    rbd_attach: &'static str,
    /// How the rbd driver reaches Ceph (`rbd.library`): librbd or the
    /// tools.
    rbd_library: String,
}

/// `rexray env -f <format>`: `KEY=value  # source` lines a shell can
/// read (the directories first, then every setting by variable name, then
/// a comment saying how this host attaches rbd images), or the same facts
/// and the files read as JSON or YAML.
pub(crate) fn render(cfg: &Config, format: &str) -> Result<String> {
    let rbd_attach = crate::storage::rbd::node::Method::detect(false).short_name();
    let rbd_library = match crate::storage::rbd::lib::Mode::parse(cfg.string(keys::RBD_LIBRARY)) {
        Ok(m) => m.describe(),
        Err(e) => e.message().to_string(),
    };
    let dirs = [
        ("REXRAY_HOME", &cfg.dirs.home),
        ("REXRAY_HOME_ETC", &cfg.dirs.etc),
        ("REXRAY_HOME_LIB", &cfg.dirs.lib),
        ("REXRAY_HOME_LOG", &cfg.dirs.log),
        ("REXRAY_HOME_RUN", &cfg.dirs.run),
    ]
    .map(|(var, dir)| (var, dir.to_string_lossy().into_owned()));
    // The modules' own settings and overrides (default-docker's registered
    // keys are among the settings already).
    let modules = cfg
        .module_names()
        .iter()
        .map(|m| cfg.module(m))
        .collect::<Result<Vec<_>>>()?;
    let mut settings: Vec<EnvEntry> = cfg
        .settings()
        .map(|(k, s): (&str, &Setting)| (k, s))
        .chain(
            modules
                .iter()
                .flat_map(|m| m.settings().iter().map(|(k, s)| (k.as_str(), s))),
        )
        .map(|(k, s)| EnvEntry {
            key: k,
            env: keys::env_name(k),
            // Secrets are not printed: only whether one is set.
            value: if keys::SECRETS.contains(&k) && !s.value.is_empty() {
                "(secret)"
            } else {
                &s.value
            },
            source: s.source.to_string(),
        })
        .collect();
    settings.sort_by(|a, b| a.env.cmp(&b.env));
    match format.to_ascii_lowercase().as_str() {
        "text" | "tmpl" | "" => {
            let dirs = dirs
                .iter()
                .map(|(var, dir)| format!("{var}={}  # directory\n", shell_quote(dir)));
            let settings = settings
                .iter()
                .map(|e| format!("{}={}  # {}\n", e.env, shell_quote(e.value), e.source));
            let rbd = [
                format!("# rbd library: {rbd_library}\n"),
                format!("# rbd attach: {rbd_attach}\n"),
            ];
            Ok(dirs.chain(settings).chain(rbd).collect())
        }
        f => {
            let fmt: Format = f.parse()?;
            if fmt == Format::Table {
                return Err(Error::invalid("invalid format: use text, json or yaml"));
            }
            let all = All {
                directories: dirs.into_iter().collect(),
                files: cfg
                    .files
                    .iter()
                    .map(|f| f.to_string_lossy().into_owned())
                    .collect(),
                settings,
                rbd_attach,
                rbd_library,
            };
            Ok(output::structured(&all, fmt))
        }
    }
}

/// Quote a value for a POSIX shell only when needed.
fn shell_quote(v: &str) -> String {
    if !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-:+,@%".contains(c))
    {
        v.to_string()
    } else {
        format!("'{}'", v.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LoadOptions;
    use crate::Kind;

    fn config(env: &[(&str, &str)]) -> (tempfile::TempDir, Config) {
        let tmp = tempfile::tempdir().unwrap();
        let mut vars = vec![(
            "REXRAY_HOME".to_string(),
            tmp.path().join("home").display().to_string(),
        )];
        vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let cfg = Config::load(LoadOptions {
            env: Some(vars.into_iter().collect()),
            ..Default::default()
        })
        .unwrap();
        (tmp, cfg)
    }

    #[test]
    fn values_are_quoted_only_when_a_shell_needs_it() {
        assert_eq!(shell_quote("/var/lib/rexray"), "/var/lib/rexray");
        assert_eq!(shell_quote("a:b,c@d%e+f"), "a:b,c@d%e+f");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("two words"), "'two words'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote("$HOME"), "'$HOME'");
    }

    #[test]
    fn text_lists_directories_then_settings_by_variable_with_their_source() {
        let (tmp, cfg) = config(&[("REXRAY_LOGLEVEL", "debug")]);
        let text = render(&cfg, "text").unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let home = tmp.path().join("home");
        assert_eq!(
            lines[0],
            format!("REXRAY_HOME={}  # directory", home.display())
        );
        assert!(lines[1].starts_with("REXRAY_HOME_ETC="), "{}", lines[1]);
        assert!(lines[4].starts_with("REXRAY_HOME_RUN="), "{}", lines[4]);
        assert!(
            lines.contains(&"REXRAY_LOGLEVEL=debug  # env:REXRAY_LOGLEVEL"),
            "{text}"
        );
        let rbd = lines.last().unwrap();
        assert!(
            ["krbd", "rbd-nbd", "rbd-fuse+loop"]
                .contains(&rbd.strip_prefix("# rbd attach: ").unwrap()),
            "{rbd}"
        );
        let library = lines[lines.len() - 2];
        assert!(library.starts_with("# rbd library: "), "{library}");
        let lines = &lines[..lines.len() - 2];
        let vars: Vec<&str> = lines[5..]
            .iter()
            .map(|l| l.split_once('=').unwrap().0)
            .collect();
        let mut sorted = vars.clone();
        sorted.sort();
        assert_eq!(vars, sorted, "settings are sorted by variable");
        assert_eq!(vars.len(), cfg.settings().count());
        assert!(lines[5..].iter().all(|l| l.contains("  # ")), "{text}");
        for f in ["TEXT", "tmpl", ""] {
            assert_eq!(render(&cfg, f).unwrap(), text, "{f:?}");
        }
    }

    #[test]
    fn json_carries_directories_files_and_settings() {
        let (tmp, cfg) = config(&[("REXRAY_LOGLEVEL", "debug")]);
        let all: serde_json::Value = serde_json::from_str(&render(&cfg, "json").unwrap()).unwrap();
        assert_eq!(
            all["directories"]["REXRAY_HOME"],
            tmp.path().join("home").display().to_string()
        );
        assert!(all["files"].is_array());
        let level = all["settings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["env"] == "REXRAY_LOGLEVEL")
            .unwrap();
        assert_eq!(level["key"], keys::LOG_LEVEL);
        assert_eq!(level["value"], "debug");
        assert_eq!(level["source"], "env:REXRAY_LOGLEVEL");
        assert!(all["rbdAttach"].is_string(), "{all}");
        assert!(render(&cfg, "yaml").unwrap().contains("directories:"));
    }

    #[test]
    fn a_table_or_unknown_format_is_refused() {
        let (_tmp, cfg) = config(&[]);
        let e = render(&cfg, "table").unwrap_err();
        assert_eq!(e.kind(), Kind::InvalidInput);
        assert!(e.message().contains("use text, json or yaml"), "{e}");
        let e = render(&cfg, "xml").unwrap_err();
        assert!(e.message().contains("\"xml\""), "{e}");
    }
}
