//! The one error type of the library.
//!
//! Every error carries a [`Kind`] (what went wrong, which decides the exit
//! code, the HTTP status and the FlexVolume reply) and one human sentence
//! that names the volume, the step and, where there is one, the fix.

use std::fmt;
use std::io;

/// What kind of failure an [`Error`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The caller's input was wrong: a bad name, size, option or config value.
    InvalidInput,
    /// The volume (or other named object) does not exist.
    NotFound,
    /// The name is taken.
    AlreadyExists,
    /// The volume is attached, mounted or otherwise held by someone.
    InUse,
    /// A lock could not be taken in time.
    Busy,
    /// The storage backend failed.
    Backend,
    /// The operating system failed: a syscall, a missing tool, a timeout.
    System,
    /// The driver or platform cannot do this.
    Unsupported,
}

impl Kind {
    /// Stable lower-case name, used in JSON error replies and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::InvalidInput => "invalid-input",
            Kind::NotFound => "not-found",
            Kind::AlreadyExists => "already-exists",
            Kind::InUse => "in-use",
            Kind::Busy => "busy",
            Kind::Backend => "backend",
            Kind::System => "system",
            Kind::Unsupported => "unsupported",
        }
    }
}

/// A library error: a kind plus one clear message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Error {
    kind: Kind,
    message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of the given kind.
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }
    /// Bad input from the caller.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Kind::InvalidInput, message)
    }
    /// Something named does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Kind::NotFound, message)
    }
    /// A name is already taken.
    pub fn exists(message: impl Into<String>) -> Self {
        Self::new(Kind::AlreadyExists, message)
    }
    /// A volume is in use.
    pub fn in_use(message: impl Into<String>) -> Self {
        Self::new(Kind::InUse, message)
    }
    /// A lock could not be taken in time.
    pub fn busy(message: impl Into<String>) -> Self {
        Self::new(Kind::Busy, message)
    }
    /// The backend failed.
    pub fn backend(message: impl Into<String>) -> Self {
        Self::new(Kind::Backend, message)
    }
    /// The system failed.
    pub fn system(message: impl Into<String>) -> Self {
        Self::new(Kind::System, message)
    }
    /// Not supported by this driver or platform.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(Kind::Unsupported, message)
    }

    /// The kind of failure.
    pub fn kind(&self) -> Kind {
        self.kind
    }
    /// The message alone.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same error with `prefix: ` in front of its message.
    pub fn context(self, prefix: impl fmt::Display) -> Self {
        Error {
            kind: self.kind,
            message: format!("{prefix}: {}", self.message),
        }
    }

    /// Process exit code for the CLIs: 1 for every runtime error.
    /// (Usage errors exit 2 and are produced by the argument parsers.)
    pub fn exit_code(&self) -> i32 {
        1
    }

    /// HTTP status for the service endpoints.
    pub fn http_status(&self) -> u16 {
        match self.kind {
            Kind::InvalidInput => 400,
            Kind::NotFound => 404,
            Kind::AlreadyExists | Kind::InUse => 409,
            Kind::Busy => 503,
            Kind::Unsupported => 501,
            Kind::Backend | Kind::System => 500,
        }
    }

    /// An error from an `io::Error`, classified by its errno, with context.
    pub fn from_io(context: impl fmt::Display, err: &io::Error) -> Self {
        let kind = match err.kind() {
            io::ErrorKind::NotFound => Kind::NotFound,
            io::ErrorKind::AlreadyExists => Kind::AlreadyExists,
            io::ErrorKind::PermissionDenied => Kind::System,
            _ => match err.raw_os_error() {
                Some(libc::EBUSY) => Kind::InUse,
                _ => Kind::System,
            },
        };
        let mut message = format!("{context}: {err}");
        if err.kind() == io::ErrorKind::PermissionDenied || err.raw_os_error() == Some(libc::EPERM)
        {
            message.push_str(" (run as root, or give the process CAP_SYS_ADMIN)");
        }
        Error { kind, message }
    }
}

/// Adds context to `io::Result`s: `file.read(..).ctx(|| format!("reading {p}"))`.
pub trait IoContext<T> {
    /// Map an io error to [`Error`] with the message from `f` in front.
    fn ctx<D: fmt::Display>(self, f: impl FnOnce() -> D) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx<D: fmt::Display>(self, f: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|e| Error::from_io(f(), &e))
    }
}

impl From<nix::Error> for Error {
    fn from(e: nix::Error) -> Self {
        Error::from_io("system call failed", &io::Error::from(e))
    }
}
