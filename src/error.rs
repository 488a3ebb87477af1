//! The one error type of the library.
//!
//! Every error carries a [`Kind`] (what went wrong, which decides the exit
//! code, the HTTP status and the FlexVolume reply) and one human sentence
//! that names the volume, the step and, where there is one, the fix.
//! An error that came from the operating system also keeps its errno, and
//! one a caller must recognise carries a [`Reason`]: callers test those,
//! never the wording of the message.

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

/// A specific refusal a caller recognises (to add a hint, or to act on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// A path rexray would hand out inside a volume is not a directory:
    /// a file, device or symbolic link stands in its place.
    NotADirectory,
}

/// A library error: a kind plus one clear message, and where known the
/// errno it came from and a [`Reason`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Error {
    kind: Kind,
    message: String,
    errno: Option<i32>,
    reason: Option<Reason>,
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
            errno: None,
            reason: None,
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
    /// The errno of the system call (or tool) the error came from, if any.
    pub fn errno(&self) -> Option<i32> {
        self.errno
    }
    /// The specific refusal, if the error is one callers recognise.
    pub fn reason(&self) -> Option<Reason> {
        self.reason
    }
    /// Whether the error is a refusal for lack of privilege (EPERM, EACCES).
    pub fn is_permission_denied(&self) -> bool {
        matches!(self.errno, Some(libc::EPERM) | Some(libc::EACCES))
    }

    /// The same error, marked as coming from `errno`.
    pub fn with_errno(mut self, errno: i32) -> Self {
        self.errno = Some(errno);
        self
    }
    /// The same error, marked with `reason`.
    pub fn with_reason(mut self, reason: Reason) -> Self {
        self.reason = Some(reason);
        self
    }
    /// The same error (kind, errno, reason) with its message rewritten by
    /// `f`, e.g. to add a note or hint after it.
    pub fn map_message(mut self, f: impl FnOnce(&str) -> String) -> Self {
        self.message = f(&self.message);
        self
    }

    /// The same error with `prefix: ` in front of its message.
    pub fn context(self, prefix: impl fmt::Display) -> Self {
        self.map_message(|m| format!("{prefix}: {m}"))
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

    /// An error from an `io::Error`, classified by its errno (which it
    /// keeps), with context. A missing file is a [`Kind::System`] error,
    /// not [`Kind::NotFound`]: only lookups say that something named does
    /// not exist. The hint to run as root is given only to a process that
    /// does not run as root.
    pub fn from_io(context: impl fmt::Display, err: &io::Error) -> Self {
        Self::from_io_as(context, err, nix::unistd::geteuid().is_root())
    }

    fn from_io_as(context: impl fmt::Display, err: &io::Error, privileged: bool) -> Self {
        let errno = err.raw_os_error();
        let kind = match err.kind() {
            io::ErrorKind::AlreadyExists => Kind::AlreadyExists,
            _ => match errno {
                Some(libc::EBUSY) => Kind::InUse,
                _ => Kind::System,
            },
        };
        let mut message = format!("{context}: {err}");
        let denied = err.kind() == io::ErrorKind::PermissionDenied || errno == Some(libc::EPERM);
        if denied && !privileged {
            message.push_str(" (run as root, or give the process CAP_SYS_ADMIN)");
        }
        Error {
            kind,
            message,
            errno,
            reason: None,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn os(errno: i32) -> io::Error {
        io::Error::from_raw_os_error(errno)
    }

    #[test]
    fn from_io_keeps_the_errno() {
        let e = Error::from_io("opening x", &os(libc::ENOTDIR));
        assert_eq!(e.errno(), Some(libc::ENOTDIR));
        assert_eq!(e.kind(), Kind::System);
        let e = e.context("volume v").map_message(|m| format!("{m}; note"));
        assert_eq!(e.errno(), Some(libc::ENOTDIR), "context and notes keep it");
        assert_eq!(Error::system("no errno").errno(), None);
        assert_eq!(Error::from_io("x", &os(libc::EBUSY)).kind(), Kind::InUse);
        assert_eq!(
            Error::from_io("x", &os(libc::EEXIST)).kind(),
            Kind::AlreadyExists
        );
    }

    #[test]
    fn a_missing_file_is_not_a_missing_volume() {
        let e = Error::from_io("reading /etc/x", &os(libc::ENOENT));
        assert_eq!(e.kind(), Kind::System, "{e}");
        assert_eq!(e.errno(), Some(libc::ENOENT));
        assert_eq!(e.http_status(), 500);
        let e: Error = nix::Error::ENOENT.into();
        assert_eq!(e.kind(), Kind::System, "{e}");
    }

    #[test]
    fn the_root_hint_goes_only_to_unprivileged_processes() {
        for errno in [libc::EPERM, libc::EACCES] {
            let user = Error::from_io_as("mounting x", &os(errno), false);
            assert!(user.message().contains("run as root"), "{user}");
            assert!(user.is_permission_denied());
            let root = Error::from_io_as("mounting x", &os(errno), true);
            assert!(!root.message().contains("run as root"), "{root}");
            assert!(root.is_permission_denied());
        }
        let other = Error::from_io_as("mounting x", &os(libc::EIO), false);
        assert!(!other.message().contains("run as root"), "{other}");
        assert!(!other.is_permission_denied());
    }

    #[test]
    fn reasons_survive_context() {
        let e = Error::system("x is not a directory")
            .with_reason(Reason::NotADirectory)
            .context("step");
        assert_eq!(e.reason(), Some(Reason::NotADirectory));
        assert_eq!(e.message(), "step: x is not a directory");
        assert_eq!(Error::system("y").reason(), None);
    }
}
