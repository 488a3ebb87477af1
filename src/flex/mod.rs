//! Kubernetes FlexVolume: the protocol model behind the `flexrex` binary
//! and `rexray flexrex install|uninstall|status`.
//!
//! kubelet reads flexrex's stdout and stderr *together* as one JSON object,
//! so [`run`] never writes to either stream: the caller prints the reply it
//! returns, logs go to a file (`rexray.flexrex.logFile`), and panics are
//! caught and logged there too.

pub mod args;
pub mod install;
pub mod ops;
pub mod reply;
pub mod store;

use crate::config::{keys, Config};
use args::{Call, Parsed};
use reply::Reply;
use std::path::Path;

/// Where external tools are looked up when the caller passed no `PATH`.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Answer one call. Never panics and never writes to stdout or stderr
/// (it installs a process-wide panic hook that logs instead).
pub fn run(args: &[String]) -> Reply {
    crate::cli::reset_inherited_signals();
    // Before anything else: the default hook prints to stderr.
    std::panic::set_hook(Box::new(|info| {
        tracing::error!("flexrex panicked: {info}");
    }));
    let outcome = std::panic::catch_unwind(|| {
        #[cfg(feature = "failpoints")]
        let _scenario = fail::FailScenario::setup();
        answer(args)
    });
    let reply = outcome.unwrap_or_else(|_| {
        Reply::failure("flexrex hit an internal error (a bug; see the flexrex log file)")
    });
    match reply.status {
        reply::Status::Success => {
            tracing::info!(pid = std::process::id(), reply = %reply.to_json(), "done")
        }
        _ => tracing::warn!(
            pid = std::process::id(),
            call = args.first().map(String::as_str).unwrap_or(""),
            reply = %reply.to_json(),
            "done"
        ),
    }
    reply
}

fn answer(args: &[String]) -> Reply {
    // kubelet may run drivers with an empty environment; mkfs, blkid and
    // resize2fs must still be found.
    if std::env::var_os("PATH").is_none_or(|p| p.is_empty()) {
        std::env::set_var("PATH", DEFAULT_PATH);
    }
    let cfg = match crate::cli::load_config(None, None, None, Vec::new()) {
        Ok(c) => c,
        Err(e) => {
            let dirs = crate::config::dirs::Dirs::from_env(&|k| std::env::var(k).ok());
            log_to_file(&dirs.log.join("flexrex.log"), "warn");
            return Reply::failure(format!("flexrex cannot load its configuration: {e}"));
        }
    };
    log_to_file(
        &cfg.path(keys::FLEXREX_LOG_FILE),
        cfg.string(keys::LOG_LEVEL),
    );
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    let parsed = match args::parse(args) {
        Ok(p) => p,
        Err(e) => {
            return Reply::failure(match args.first() {
                Some(cmd) => format!("{cmd}: {e}"),
                None => e.to_string(),
            });
        }
    };
    let call = match parsed {
        Parsed::NotSupported(cmd) => {
            return Reply::not_supported(format!(
                "flexrex does not implement {}",
                crate::input::quote(&cmd)
            ))
        }
        Parsed::Call(c) => c,
    };
    // JSON arguments may carry secrets: only their vetted options are logged.
    let plain: Vec<&str> = args
        .iter()
        .skip(1)
        .filter(|a| !a.trim_start().starts_with('{'))
        .map(String::as_str)
        .collect();
    tracing::info!(
        pid = std::process::id(),
        call = call.name(),
        args = ?plain,
        options = ?call.options().map(|o| &o.loggable),
        "called"
    );
    if call == Call::Init {
        return ops::init();
    }
    execute(call, cfg)
}

/// Run a parsed call against the configured service.
pub fn execute(call: Call, cfg: Config) -> Reply {
    let name = call.name();
    let subject = ops::subject(&call);
    let result = crate::volume::Volumes::open(cfg).and_then(|v| ops::Flex::new(v).call(call));
    match result {
        Ok(r) => r,
        Err(e) => Reply::failure(format!("{name} {subject} failed: {e}")),
    }
}

/// Send logs to `file`, creating its directory. If it cannot be opened,
/// log nowhere: stderr is part of the reply.
fn log_to_file(file: &Path, level: &str) {
    let file = file.to_path_buf();
    crate::cli::deferred(crate::cli::level_filter(level), move || {
        if let Some(dir) = file.parent().filter(|d| !d.is_dir()) {
            let _ =
                crate::files::own_dir(dir, crate::files::PRIVATE_DIR, crate::files::Link::Refuse);
        }
        // 0600, never through a link or into a file with another name.
        let f = crate::files::open_private(&file, true, "log file").ok()?;
        Some(tracing::Dispatch::new(
            tracing_subscriber::fmt()
                .with_writer(std::sync::Mutex::new(f))
                .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
                .with_ansi(false)
                .with_target(false)
                .finish(),
        ))
    });
}
