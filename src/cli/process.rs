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
    let _ = program;
    deferred(level_filter(level), || {
        Some(tracing::Dispatch::new(
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
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
                .finish(),
        ))
    });
}

/// Install, as the global subscriber, one that filters by `level` itself
/// and builds the real one (`make`: the formatter, its registry, the log
/// file it writes) only when the first event or span at that level comes.
/// Most short calls log nothing at the default level, and the registry
/// alone is a few percent of such a call. `make` answering `None` (a log
/// file that cannot be opened) drops every event.
pub fn deferred<F>(level: tracing::level_filters::LevelFilter, make: F)
where
    F: FnOnce() -> Option<tracing::Dispatch> + Send + Sync + 'static,
{
    let _ = tracing::subscriber::set_global_default(Deferred {
        level,
        make: std::sync::Mutex::new(Some(Box::new(make))),
        inner: std::sync::OnceLock::new(),
    });
}

type MakeDispatch = Box<dyn FnOnce() -> Option<tracing::Dispatch> + Send + Sync>;

/// See [`deferred`].
struct Deferred {
    level: tracing::level_filters::LevelFilter,
    make: std::sync::Mutex<Option<MakeDispatch>>,
    inner: std::sync::OnceLock<Option<tracing::Dispatch>>,
}

impl Deferred {
    fn inner(&self) -> Option<&tracing::Dispatch> {
        thread_local!(static MAKING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
        if let Some(d) = self.inner.get() {
            return d.as_ref();
        }
        // An event from `make` itself (the log directory's checks) would
        // wait for the very initialisation it is part of: it is dropped,
        // as it was before any subscriber.
        if MAKING.get() {
            return None;
        }
        MAKING.set(true);
        let d = self.inner.get_or_init(|| {
            let make = self.make.lock().unwrap_or_else(|e| e.into_inner()).take();
            make.and_then(|m| m())
        });
        MAKING.set(false);
        d.as_ref()
    }
}

impl tracing::Subscriber for Deferred {
    fn register_callsite(
        &self,
        m: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if self.enabled(m) {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }
    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(self.level)
    }
    fn enabled(&self, m: &tracing::Metadata<'_>) -> bool {
        *m.level() <= self.level
    }
    fn new_span(&self, a: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        match self.inner() {
            Some(d) => d.new_span(a),
            // Never entered anywhere: no subscriber records it.
            None => tracing::span::Id::from_u64(u64::MAX),
        }
    }
    fn record(&self, span: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        if let Some(d) = self.inner() {
            d.record(span, values)
        }
    }
    fn record_follows_from(&self, span: &tracing::span::Id, follows: &tracing::span::Id) {
        if let Some(d) = self.inner() {
            d.record_follows_from(span, follows)
        }
    }
    fn event(&self, e: &tracing::Event<'_>) {
        if let Some(d) = self.inner() {
            d.event(e)
        }
    }
    fn enter(&self, span: &tracing::span::Id) {
        if let Some(d) = self.inner() {
            d.enter(span)
        }
    }
    fn exit(&self, span: &tracing::span::Id) {
        if let Some(d) = self.inner() {
            d.exit(span)
        }
    }
    fn clone_span(&self, id: &tracing::span::Id) -> tracing::span::Id {
        match self.inner() {
            Some(d) => d.clone_span(id),
            None => id.clone(),
        }
    }
    fn try_close(&self, id: tracing::span::Id) -> bool {
        match self.inner() {
            Some(d) => d.try_close(id),
            None => false,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    /// A writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn subscriber(made: Arc<AtomicUsize>, buf: Buf, level: &str) -> Deferred {
        let make: MakeDispatch = Box::new(move || {
            made.fetch_add(1, Ordering::SeqCst);
            // An event while the real subscriber is being made is dropped,
            // not a deadlock.
            tracing::warn!("from make");
            Some(tracing::Dispatch::new(
                tracing_subscriber::fmt()
                    .with_writer(move || buf.clone())
                    .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
                    .with_ansi(false)
                    .finish(),
            ))
        });
        Deferred {
            level: level_filter(level),
            make: Mutex::new(Some(make)),
            inner: std::sync::OnceLock::new(),
        }
    }

    #[test]
    fn the_real_subscriber_is_made_at_the_first_event_it_would_print() {
        let (made, buf) = (Arc::new(AtomicUsize::new(0)), Buf::default());
        let d = subscriber(made.clone(), buf.clone(), "warn");
        tracing::subscriber::with_default(d, || {
            tracing::info!("below the level");
            tracing::debug!("below the level");
            assert_eq!(made.load(Ordering::SeqCst), 0);
            tracing::warn!("first warning");
            tracing::error!("an error");
            tracing::info!("below the level");
        });
        assert_eq!(made.load(Ordering::SeqCst), 1);
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(
            out.contains("first warning") && out.contains("an error"),
            "{out}"
        );
        assert!(
            !out.contains("below the level") && !out.contains("from make"),
            "{out}"
        );
    }

    #[test]
    fn a_log_that_cannot_be_made_drops_events() {
        let made = Arc::new(AtomicUsize::new(0));
        let m = made.clone();
        let d = Deferred {
            level: level_filter("info"),
            make: Mutex::new(Some(Box::new(move || {
                m.fetch_add(1, Ordering::SeqCst);
                None
            }))),
            inner: std::sync::OnceLock::new(),
        };
        tracing::subscriber::with_default(d, || {
            tracing::info!("one");
            tracing::warn!("two");
            let s = tracing::info_span!("span");
            let _g = s.enter();
            tracing::info!("three");
        });
        assert_eq!(made.load(Ordering::SeqCst), 1);
    }
}
