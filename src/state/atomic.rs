//! Atomic file replacement: temp file, fsync, rename, fsync directory.

use crate::error::IoContext;
use crate::Result;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Replace `path` with `bytes` so a reader sees the old or the new file,
/// never a mix, and the new one survives a power loss once this returns.
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    replace(path, bytes, true, None)
}

/// [`write`] with an exact file mode (not narrowed by the umask), e.g.
/// 0755 for an installed program.
pub fn write_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    replace(path, bytes, true, Some(mode))
}

/// Replace `path` atomically without forcing it to disk: for records that
/// only describe this boot (mounts, attachments), which a power loss makes
/// void anyway. A killed process still leaves the old or the new file.
pub fn write_volatile(path: &Path, bytes: &[u8]) -> Result<()> {
    replace(path, bytes, false, None)
}

fn replace(path: &Path, bytes: &[u8], durable: bool, mode: Option<u32>) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&tmp)
            .ctx(|| format!("writing {}", tmp.display()))?;
        f.write_all(bytes)
            .ctx(|| format!("writing {}", tmp.display()))?;
        if let Some(mode) = mode {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(mode))
                .ctx(|| format!("setting the mode of {}", tmp.display()))?;
        }
        if durable {
            f.sync_all().ctx(|| format!("syncing {}", tmp.display()))?;
        }
        std::fs::rename(&tmp, path).ctx(|| format!("replacing {}", path.display()))?;
        if durable {
            sync_dir(dir)?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
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
