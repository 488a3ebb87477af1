//! What the three binaries share: config flags from argv, logging set-up,
//! version facts.

use crate::config::{self, keys, Config, FlagValue, LoadOptions};
use crate::Result;
use serde::Serialize;
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

/// Map the original's level words onto tracing's.
pub fn level_filter(level: &str) -> tracing_subscriber::filter::LevelFilter {
    use tracing_subscriber::filter::LevelFilter as L;
    match level {
        "trace" => L::TRACE,
        "debug" => L::DEBUG,
        "info" => L::INFO,
        "warn" | "warning" => L::WARN,
        "error" | "fatal" | "panic" => L::ERROR,
        _ => L::WARN,
    }
}

/// Send logs to stderr at `level`.
pub fn log_to_stderr(program: &'static str, level: &str) {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level_filter(level))
        .with_target(false)
        .without_time()
        .with_ansi(false)
        .fmt_fields(tracing_subscriber::fmt::format::DefaultFields::new())
        .event_format(
            tracing_subscriber::fmt::format()
                .with_target(false)
                .without_time()
                .with_level(true)
                .compact(),
        )
        .try_init();
    let _ = program;
}

/// Build and version facts.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    /// The binary's path.
    pub binary: String,
    /// Semantic version.
    pub sem_ver: String,
    /// OS and architecture.
    pub os_arch: String,
    /// Git commit.
    pub commit: String,
    /// Git branch the build was made from (`HEAD` when detached).
    pub branch: String,
    /// Build time (RFC 3339).
    pub formed: String,
    /// Storage drivers compiled in.
    pub drivers: Vec<String>,
}

/// This build's version facts.
pub fn version_info() -> VersionInfo {
    let epoch: u64 = env!("REXRAY_BUILD_EPOCH").parse().unwrap_or(0);
    VersionInfo {
        binary: std::env::current_exe()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default(),
        sem_ver: env!("CARGO_PKG_VERSION").into(),
        os_arch: format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH),
        commit: env!("REXRAY_COMMIT").into(),
        branch: env!("REXRAY_BRANCH").into(),
        formed: humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch),
        )
        .to_string(),
        drivers: crate::storage::DRIVERS
            .iter()
            .map(|s| s.to_string())
            .collect(),
    }
}

/// Undo signal dispositions a parent may have passed down: with SIGCHLD
/// ignored the kernel reaps children at once, so waiting for mkfs or for
/// the freeze guard would fail ("No child processes").
pub fn reset_inherited_signals() {
    // SAFETY: restoring a default disposition; no handler is installed.
    let _ = unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGCHLD,
            nix::sys::signal::SigHandler::SigDfl,
        )
    };
}

static LAST_PANIC: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// Replace the default panic output (a multi-line message, maybe a
/// backtrace, on stderr) with a record that [`catch_panics`] turns into one
/// error line — or, for flexrex, one JSON reply.
pub fn quiet_panics() {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        if let Ok(mut slot) = LAST_PANIC.lock() {
            *slot = Some(format!("{msg}{at}"));
        }
    }));
}

/// Run `f`, turning a panic into an error so a reply is always printed.
pub fn catch_panics<T>(f: impl FnOnce() -> Result<T> + std::panic::UnwindSafe) -> Result<T> {
    match std::panic::catch_unwind(f) {
        Ok(r) => r,
        Err(p) => {
            let recorded = LAST_PANIC.lock().ok().and_then(|mut s| s.take());
            let what = recorded.unwrap_or_else(|| {
                p.downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown".into())
            });
            Err(crate::Error::system(format!(
                "internal error (a bug, please report it): {what}"
            )))
        }
    }
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
