//! What the kernel said: a failed mount(2) returns a bare `EINVAL`, and
//! the reason ("duplicate UUID", "bad geometry", …) is only in the kernel
//! log. [`KernelLog::open`] is called before the call that may fail, so
//! that [`about`](KernelLog::about) returns only the records logged since,
//! and of those only the ones that name the device.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// How many records [`KernelLog::about`] reads at most (the log may be
/// busy; the ones about our device come first, right after the call).
const MAX_RECORDS: usize = 4096;
/// How many matching messages it keeps.
const MAX_KEPT: usize = 8;

/// A reader of `/dev/kmsg` positioned at its end when opened.
#[derive(Debug)]
pub struct KernelLog {
    file: Option<std::fs::File>,
}

impl KernelLog {
    /// Start reading the kernel log from now on. Never fails: without
    /// `/dev/kmsg` (a container without it, no CAP_SYSLOG under
    /// `dmesg_restrict`) [`about`](Self::about) returns `None`.
    pub fn open() -> KernelLog {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/kmsg")
            .ok()
            .and_then(|f| {
                use std::os::fd::AsRawFd;
                // SAFETY: lseek on an open descriptor; SEEK_END on
                // /dev/kmsg moves past every record logged so far.
                let r = unsafe { libc::lseek(f.as_raw_fd(), 0, libc::SEEK_END) };
                (r >= 0).then_some(f)
            });
        KernelLog { file }
    }

    /// The messages logged since [`open`](Self::open) that name `dev`
    /// (`/dev/loop3` → `loop3`), oldest first; `None` when the log
    /// cannot be read.
    pub fn about(&mut self, dev: &Path) -> Option<Vec<String>> {
        let file = self.file.as_mut()?;
        let name = device_name(dev);
        let mut out = Vec::new();
        let mut buf = vec![0u8; 8192];
        for _ in 0..MAX_RECORDS {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if let Some(msg) = message(&buf[..n]) {
                        if mentions(&msg, &name) && out.len() < MAX_KEPT {
                            out.push(msg);
                        }
                    }
                }
                // Records overwritten before we read them: go on with
                // the next one.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // EAGAIN: nothing more.
                Err(_) => break,
            }
        }
        Some(out)
    }
}

/// `loop3` for `/dev/loop3` (and for a symbolic link to it).
fn device_name(dev: &Path) -> String {
    let real = dev.canonicalize().unwrap_or_else(|_| dev.to_path_buf());
    real.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The text of one `/dev/kmsg` record: `prio,seq,time,flags;text` then
/// optional ` KEY=value` lines.
fn message(record: &[u8]) -> Option<String> {
    let s = String::from_utf8_lossy(record);
    let (_, rest) = s.split_once(';')?;
    let text = rest.lines().next().unwrap_or("").trim_end();
    (!text.is_empty()).then(|| text.to_string())
}

/// Whether `msg` names device `name` as a word (`loop3`, not `loop30`).
fn mentions(msg: &str, name: &str) -> bool {
    if name.is_empty() {
        return false;
    }
    let word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    msg.match_indices(name).any(|(i, _)| {
        !word(msg[..i].chars().next_back()) && !word(msg[i + name.len()..].chars().next())
    })
}

/// `"; the kernel said: …"` for an error message, or a pointer to the log
/// when there is nothing to quote.
pub fn said(messages: Option<&[String]>) -> String {
    match messages {
        Some(m) if !m.is_empty() => format!("; the kernel said: {}", m.join(" / ")),
        Some(_) => "; the kernel logged nothing about the device".to_string(),
        None => "; see the kernel log (dmesg) for the reason".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_device_names() {
        assert_eq!(
            message(b"3,1234,5678,-;XFS (loop3): Filesystem has duplicate UUID 1-2 - can't mount\n SUBSYSTEM=block\n"),
            Some("XFS (loop3): Filesystem has duplicate UUID 1-2 - can't mount".into())
        );
        assert_eq!(message(b"no separator"), None);
        assert!(mentions("XFS (loop3): bad", "loop3"));
        assert!(mentions("loop3: detected capacity change", "loop3"));
        assert!(!mentions("XFS (loop30): bad", "loop3"));
        assert!(!mentions("EXT4-fs (loop13): bad", "loop3"));
        assert!(!mentions("anything", ""));
        assert_eq!(device_name(Path::new("/nonexistent/loop7")), "loop7");
        assert!(said(Some(&["a".into(), "b".into()])).contains("the kernel said: a / b"));
        assert!(said(None).contains("dmesg"));
    }
}
