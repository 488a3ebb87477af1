//! Process set-up every binary shares: logging to stderr, signal
//! dispositions, and panics turned into one error line.

use crate::Result;

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
