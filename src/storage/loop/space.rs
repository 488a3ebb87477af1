//! Space under volumePath: what the filesystem has free, what the
//! sparse images take and could still take (the overcommit warning), and
//! preallocation (`loop.preallocate`).

use super::{LoopDriver, Record, GIB};
use crate::{Error, Result};
use std::path::Path;

impl LoopDriver {
    /// The error of sizing the image of volume `name` (`img`, when it is
    /// the volume's own) to `gib` GiB: one past the largest file the
    /// filesystem allows is named as that.
    pub(super) fn sizing_error(
        &self,
        name: &str,
        img: Option<&Path>,
        gib: u64,
        e: &std::io::Error,
    ) -> Error {
        let image = img.map_or_else(
            || "its image".to_string(),
            |p| format!("image {}", p.display()),
        );
        let err = Error::from_io(
            format!("creating volume {name}: sizing {image} to {gib} GiB"),
            e,
        );
        if e.raw_os_error() != Some(libc::EFBIG) {
            return err;
        }
        err.map_message(|m| {
            format!(
                "{m}: larger than the largest file the filesystem of loop.volumePath {} allows (16 TiB on ext4 with 4 KiB blocks); choose a smaller size",
                self.root.display()
            )
        })
    }

    /// Before a copy of `gib` GiB is made (its source may be frozen for
    /// it): whether an image of that size can exist here at all (a sparse
    /// probe), and, with `loop.preallocate`, whether the space is free.
    pub(super) fn check_room(&self, name: &str, gib: u64, probe: &Path) -> Result<()> {
        let bytes = crate::input::gib_bytes(gib)?;
        let f = crate::files::create_new(probe, crate::files::PRIVATE_FILE, "image")?;
        let sized = f.set_len(bytes);
        drop(f);
        let _ = std::fs::remove_file(probe);
        sized.map_err(|e| self.sizing_error(name, None, gib, &e))?;
        let free = free_bytes(&self.root);
        if self.preallocate && bytes > free {
            return Err(Error::backend(format!(
                "cannot preallocate volume {name} (loop.preallocate): it needs {}, and {} is free in loop.volumePath {}; nothing was copied; free space there, create a smaller volume, or unset loop.preallocate for a sparse image",
                self::bytes(bytes),
                self::bytes(free),
                self.root.display()
            )));
        }
        Ok(())
    }

    /// The space figures of volumePath, from every image (a full scan).
    pub(super) fn space(&self) -> Space {
        let free = free_bytes(&self.root);
        let mut growth: u64 = 0;
        let _ = self.catalog.each_volume(|r| {
            growth = growth.saturating_add(
                (r.size.saturating_mul(GIB)).saturating_sub(allocated(&self.image(&r.id))),
            );
        });
        Space { free, growth }
    }

    /// The space figures when they show an overcommit, else `None`:
    /// decided from the sum of all sizes and the filesystem's figures when
    /// they suffice (no image is looked at), by a full scan only when not.
    pub(super) fn overcommit(&self) -> Option<Space> {
        let free = free_bytes(&self.root);
        let total = self.catalog.total_gib().ok()?.saturating_mul(GIB);
        // Growth is at most the sum of sizes ...
        if total <= free {
            return None;
        }
        // ... and at least that sum less all the filesystem holds.
        let lower = total.saturating_sub(used_bytes(&self.root));
        if lower > free {
            return Some(Space {
                free,
                growth: lower,
            });
        }
        let sp = self.space();
        (sp.growth > sp.free).then_some(sp)
    }

    /// Say so (a warning: stderr for the CLI, the log otherwise) when the
    /// volumes under volumePath could grow past its free space: a write
    /// there then fails inside the volume.
    pub(super) fn warn_overcommit(&self, r: &Record, when: &str) {
        if let Some(sp) = self.overcommit() {
            tracing::warn!("{when} volume {}: {}", r.name, self.overcommit_text(r, &sp));
        }
    }

    pub(super) fn overcommit_text(&self, r: &Record, sp: &Space) -> String {
        format!(
            "loop.volumePath {} is overcommitted: the volume is {} with {} allocated, {} is free there and all its volumes could still grow by {}; writes past the free space fail inside the volumes (lost writes, a journal that cannot be recovered on the next mount). Free space there, or set loop.preallocate for new volumes",
            self.root.display(),
            bytes(r.size * GIB),
            bytes(allocated(&self.image(&r.id))),
            bytes(sp.free),
            bytes(sp.growth)
        )
    }

    /// Allocate all of `f` (`path`, for volume `name`), `len` bytes; a
    /// refusal names the figures.
    pub(super) fn allocate(
        &self,
        f: &std::fs::File,
        path: &Path,
        name: &str,
        len: u64,
    ) -> Result<()> {
        use nix::fcntl::{fallocate, FallocateFlags};
        use std::os::fd::AsRawFd;
        let free = free_bytes(&self.root);
        let need = len.saturating_sub(allocated(path));
        let refuse = |why: &str| {
            Error::backend(format!(
                "cannot preallocate volume {name} (loop.preallocate): it needs {} more, and {} is free in loop.volumePath {}{why}; free space there, create a smaller volume, or unset loop.preallocate for a sparse image",
                bytes(need),
                bytes(free),
                self.root.display()
            ))
        };
        if need > free {
            return Err(refuse(""));
        }
        match fallocate(f.as_raw_fd(), FallocateFlags::empty(), 0, len as i64) {
            Ok(()) => Ok(()),
            Err(nix::errno::Errno::ENOSPC) => Err(refuse(" (ENOSPC)")),
            Err(e) => Err(Error::from_io(
                format!(
                    "preallocating volume {name}: fallocate of {} (loop.preallocate needs a filesystem with fallocate)",
                    path.display()
                ),
                &std::io::Error::from(e),
            )),
        }
    }
}

/// Free space under volumePath and what its volumes could still take.
pub(super) struct Space {
    pub(super) free: u64,
    pub(super) growth: u64,
}

/// Bytes free for unprivileged use on the filesystem of `dir`
/// (`u64::MAX` when unknown).
#[allow(clippy::unnecessary_cast)] // fsblkcnt_t is 32 bits on some targets
pub(super) fn free_bytes(dir: &Path) -> u64 {
    nix::sys::statvfs::statvfs(dir)
        .map(|s| (s.blocks_available() as u64).saturating_mul(s.fragment_size() as u64))
        .unwrap_or(u64::MAX)
}

/// Bytes in use on the filesystem of `dir` (0 when unknown).
#[allow(clippy::unnecessary_cast)] // fsblkcnt_t is 32 bits on some targets
pub(super) fn used_bytes(dir: &Path) -> u64 {
    nix::sys::statvfs::statvfs(dir)
        .map(|s| {
            (s.blocks() as u64)
                .saturating_sub(s.blocks_free() as u64)
                .saturating_mul(s.fragment_size() as u64)
        })
        .unwrap_or(0)
}

/// Bytes a file takes on disk (0 when it cannot be read).
pub(super) fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .map(|m| m.blocks() * 512)
        .unwrap_or(0)
}

/// The offset of the first non-zero byte of image `f`, reading only
/// what its filesystem has allocated (`SEEK_DATA`/`SEEK_HOLE`): `None`
/// when every byte is zero. A filesystem without holes reports the whole
/// file as data; past [`SCAN_LIMIT`] bytes of allocated zeros the answer
/// is an error (then the caller cannot tell, and the probe decides).
pub(super) fn first_nonzero(f: &std::fs::File) -> std::io::Result<Option<u64>> {
    use nix::unistd::{lseek, Whence};
    use std::os::fd::AsRawFd;
    let len = f.metadata()?.len();
    let fd = f.as_raw_fd();
    let (mut at, mut scanned) = (0u64, 0u64);
    while at < len {
        let start = match lseek(fd, at as i64, Whence::SeekData) {
            Ok(o) => o as u64,
            Err(nix::errno::Errno::ENXIO) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let end = (lseek(fd, start as i64, Whence::SeekHole)? as u64).min(len);
        // At most what is left of the scan's allowance.
        let stop = end.min(start.saturating_add(SCAN_LIMIT - scanned));
        if let Some(found) = crate::files::first_nonzero_in(f, start, stop)? {
            return Ok(Some(found));
        }
        scanned += stop - start;
        if stop < end {
            return Err(std::io::Error::other(
                "more allocated zeros than the scan reads",
            ));
        }
        at = end.max(start + 1);
    }
    Ok(None)
}

/// How many allocated bytes [`first_nonzero`] reads at most (an image
/// preallocated on a filesystem that reports fallocated ranges as data).
const SCAN_LIMIT: u64 = 256 << 20;

/// A byte count for people: `5.0 GiB (5368709120 bytes)`.
pub(super) fn bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    if b == u64::MAX {
        return "unknown".into();
    }
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} bytes")
    } else {
        format!("{v:.1} {} ({b} bytes)", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::first_nonzero;
    use std::os::unix::fs::FileExt;

    #[test]
    fn the_first_nonzero_byte_is_found_in_what_is_allocated() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("img");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&p)
            .unwrap();
        f.set_len(64 << 20).unwrap();
        assert_eq!(first_nonzero(&f).unwrap(), None, "a sparse image is blank");
        // Zeros written are still blank.
        f.write_all_at(&vec![0u8; 1 << 20], 4 << 20).unwrap();
        assert_eq!(first_nonzero(&f).unwrap(), None);
        f.write_all_at(b"precious", (10 << 20) + 3).unwrap();
        assert_eq!(first_nonzero(&f).unwrap(), Some((10 << 20) + 3));
        f.write_all_at(b"\x01", 63 << 20).unwrap();
        assert_eq!(first_nonzero(&f).unwrap(), Some((10 << 20) + 3));
        f.write_all_at(b"\x01", 5).unwrap();
        assert_eq!(first_nonzero(&f).unwrap(), Some(5));
    }
}
