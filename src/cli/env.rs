//! `rexray env`: the effective configuration, each setting with the
//! environment variable that sets it and where its value came from.

use crate::config::{keys, Config};
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
struct All<'a> {
    directories: BTreeMap<&'a str, String>,
    files: Vec<String>,
    settings: Vec<EnvEntry<'a>>,
}

/// `rexray env -f <format>`: `KEY=value  # source` lines a shell can
/// read (the directories first, then every setting by variable name), or
/// the same facts and the files read as JSON or YAML.
pub(crate) fn render(cfg: &Config, format: &str) -> Result<String> {
    let dirs = [
        ("REXRAY_HOME", &cfg.dirs.home),
        ("REXRAY_HOME_ETC", &cfg.dirs.etc),
        ("REXRAY_HOME_LIB", &cfg.dirs.lib),
        ("REXRAY_HOME_LOG", &cfg.dirs.log),
        ("REXRAY_HOME_RUN", &cfg.dirs.run),
    ]
    .map(|(var, dir)| (var, dir.to_string_lossy().into_owned()));
    let mut settings: Vec<EnvEntry> = cfg
        .settings()
        .map(|(k, s)| EnvEntry {
            key: k,
            env: keys::env_name(k),
            value: &s.value,
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
            Ok(dirs.chain(settings).collect())
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
