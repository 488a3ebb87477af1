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

/// What Rust's own start-up does that the binaries need, for a `main`
/// of their own (`#![no_main]`, which spares every short-lived command
/// the rest of it: the main thread's guard page and stack-overflow
/// handlers, its name): descriptors 0, 1 and 2 open (on `/dev/null` when
/// a parent closed them, so no file this process opens takes their place
/// and receives its output) and SIGPIPE ignored (a write to a closed pipe or
/// socket is an error to handle, not the end of the process).
pub fn start() {
    let mut fds = [0, 1, 2].map(|fd| libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    });
    // SAFETY: polling three descriptors in a local array; opening
    // /dev/null with a static NUL-terminated path; setting a signal's
    // disposition to "ignore" (no handler runs).
    unsafe {
        if libc::poll(fds.as_mut_ptr(), 3, 0) == -1 {
            // (poll refused: ask each descriptor.)
            for f in &mut fds {
                let closed = libc::fcntl(f.fd, libc::F_GETFD) == -1;
                f.revents = if closed { libc::POLLNVAL } else { 0 };
            }
        }
        // In order, so each open takes the lowest free descriptor: the
        // closed one.
        for f in &fds {
            if f.revents & libc::POLLNVAL != 0
                && libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) == -1
            {
                // Better no command than one writing its answer into a
                // file it opened.
                libc::abort();
            }
        }
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
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
