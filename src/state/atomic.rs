//! Atomic file replacement: temp file, fsync, rename, fsync directory.
//!
//! The temporary file is new (`O_CREAT|O_EXCL|O_NOFOLLOW`, a name no one
//! else uses) and its writer holds an flock on it until it is renamed or
//! removed, so [`crate::files::sweep_temporaries`] can remove what a
//! killed writer left without ever taking a live writer's file. The final
//! path is replaced by `rename`, which replaces a symbolic link there
//! instead of following it.

use crate::error::IoContext;
use crate::files;
use crate::Result;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Replace `path` with `bytes` (mode 0600) so a reader sees the old or the
/// new file, never a mix, and the new one survives a power loss once this
/// returns.
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    replace(path, bytes, true, files::PRIVATE_FILE)
}

/// [`write`] with an exact file mode (not narrowed by the umask), e.g.
/// 0755 for an installed program.
pub fn write_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    replace(path, bytes, true, mode)
}

/// Replace `path` atomically without forcing it to disk: for records that
/// only describe this boot (mounts, attachments), which a power loss makes
/// void anyway. A killed process still leaves the old or the new file.
pub fn write_volatile(path: &Path, bytes: &[u8]) -> Result<()> {
    replace(path, bytes, false, files::PRIVATE_FILE)
}

/// A temporary name next to `path` no other writer uses:
/// `.<name>.tmp.<pid>.<nonce>`.
fn temp_path(dir: &Path, name: &str) -> PathBuf {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let n = COUNT.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".{name}.tmp.{}.{n}{nanos:08x}", std::process::id()))
}

/// Create a fresh temporary file next to `path`, flocked by us.
fn create_temp(path: &Path, mode: u32) -> Result<(PathBuf, std::fs::File)> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut tries = 0;
    loop {
        let tmp = temp_path(dir, &name);
        match files::create_locked(&tmp, mode, "temporary file") {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == crate::Kind::AlreadyExists && tries < 8 => tries += 1,
            Err(e) => return Err(e),
        }
    }
}

fn replace(path: &Path, bytes: &[u8], durable: bool, mode: u32) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let (tmp, mut f) = create_temp(path, mode)?;
    let result = (|| {
        f.write_all(bytes)
            .ctx(|| format!("writing {}", tmp.display()))?;
        if durable {
            f.sync_all().ctx(|| format!("syncing {}", tmp.display()))?;
        }
        fail::fail_point!("atomic::before-rename", |_| crate::crash_here());
        std::fs::rename(&tmp, path).ctx(|| format!("replacing {}", path.display()))?;
        if durable {
            sync_dir(dir)?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    drop(f);
    result
}
/// fsync a directory so a rename or unlink in it is durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx(|| format!("syncing directory {}", dir.display()))
}

/// Remove a file and make the removal durable; a missing file is fine.
pub fn remove(path: &Path) -> Result<()> {
    remove_file(path, true)
}

/// Remove a per-boot record; a missing file is fine.
pub fn remove_volatile(path: &Path) -> Result<()> {
    remove_file(path, false)
}

fn remove_file(path: &Path, durable: bool) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) if durable => sync_dir(path.parent().unwrap_or(Path::new("."))),
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(crate::Error::from_io(
            format!("removing {}", path.display()),
            &e,
        )),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn replace() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("r.json");
        super::write(&p, b"one").unwrap();
        super::write(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 1);
        super::remove(&p).unwrap();
        super::remove(&p).unwrap();
    }
}
