//! Configuration from argv: the global options and a `--<camelCaseKey>`
//! flag for every registered configuration key.

use crate::config::{self, keys, Config, FlagValue, LoadOptions};
use crate::Result;
use std::path::PathBuf;

/// Pull `--<camelCaseKey>[=value]` flags for registered config keys out of
/// argv (the original accepted one for every key), leaving the rest for the
/// argument parser.
pub fn take_key_flags(args: Vec<String>) -> (Vec<String>, Vec<FlagValue>) {
    let mut rest = Vec::with_capacity(args.len());
    let mut flags = Vec::new();
    let mut it = args.into_iter().peekable();
    while let Some(a) = it.next() {
        if a == "--" {
            rest.push(a);
            rest.extend(it.by_ref());
            break;
        }
        if let Some(body) = a.strip_prefix("--") {
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            if let Some(def) = config::key_for_flag(name) {
                let value = match inline {
                    Some(v) => v,
                    None if def.ty == config::KeyType::Bool => {
                        match it.peek().map(|s| s.to_ascii_lowercase()) {
                            Some(v) if v == "true" || v == "false" => it.next().unwrap_or_default(),
                            _ => "true".into(),
                        }
                    }
                    None => it.next().unwrap_or_default(),
                };
                flags.push(FlagValue {
                    key: def.key,
                    value,
                    flag: format!("--{name}"),
                });
                continue;
            }
        }
        rest.push(a);
    }
    (rest, flags)
}

/// Load the configuration from the global options.
pub fn load_config(
    config_file: Option<PathBuf>,
    log_level: Option<String>,
    service: Option<String>,
    mut flags: Vec<FlagValue>,
) -> Result<Config> {
    if let Some(l) = log_level {
        flags.push(FlagValue {
            key: keys::LOG_LEVEL,
            value: l,
            flag: "--logLevel".into(),
        });
    }
    if let Some(s) = service {
        flags.push(FlagValue {
            key: keys::SERVICE,
            value: s,
            flag: "--service".into(),
        });
    }
    Config::load(LoadOptions {
        config_file,
        flags,
        env: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_flags_are_taken_out() {
        let args: Vec<String> = [
            "rexray",
            "volume",
            "--libstorageIntegrationVolumeOperationsMountPreempt",
            "ls",
            "--loopVolumePath=/x",
            "--size",
            "3",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (rest, flags) = take_key_flags(args);
        assert_eq!(rest, vec!["rexray", "volume", "ls", "--size", "3"]);
        assert_eq!(flags.len(), 2);
        assert_eq!(flags[0].value, "true");
        assert_eq!(flags[1].value, "/x");
    }
}
