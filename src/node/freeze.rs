//! Filesystem freeze (FIFREEZE/FITHAW): flushes dirty data and the journal
//! and blocks writers, so a copy of the device underneath is a clean
//! filesystem.

use crate::{Error, Result};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

nix::ioctl_readwrite!(fifreeze, b'X', 119, libc::c_int);
nix::ioctl_readwrite!(fithaw, b'X', 120, libc::c_int);

/// A frozen filesystem; thawed on drop.
#[derive(Debug)]
pub struct Frozen {
    dir: std::fs::File,
    path: PathBuf,
}

impl Frozen {
    /// Freeze the filesystem mounted at `mount_point`.
    pub fn freeze(mount_point: &Path) -> Result<Frozen> {
        let dir = std::fs::File::open(mount_point)
            .map_err(|e| Error::from_io(format!("opening {}", mount_point.display()), &e))?;
        let mut arg: libc::c_int = 0;
        // SAFETY: the descriptor is open; the argument is an int as the
        // ioctl expects.
        unsafe { fifreeze(dir.as_raw_fd(), &mut arg) }.map_err(|e| {
            let io = std::io::Error::from(e);
            let mut err = Error::from_io(
                format!("freezing the filesystem at {}", mount_point.display()),
                &io,
            );
            if e == nix::errno::Errno::EBUSY {
                err = Error::in_use(format!(
                    "the filesystem at {} is already frozen; thaw it (fsfreeze -u) and retry",
                    mount_point.display()
                ));
            }
            err
        })?;
        tracing::debug!(mount_point = %mount_point.display(), "filesystem frozen");
        Ok(Frozen {
            dir,
            path: mount_point.to_path_buf(),
        })
    }
}

/// Thaw the filesystem at `mount_point` if it is frozen; `Ok(false)` when
/// it was not.
pub fn thaw(mount_point: &Path) -> Result<bool> {
    let dir = std::fs::File::open(mount_point)
        .map_err(|e| Error::from_io(format!("opening {}", mount_point.display()), &e))?;
    let mut arg: libc::c_int = 0;
    // SAFETY: as in `Frozen::freeze`.
    match unsafe { fithaw(dir.as_raw_fd(), &mut arg) } {
        Ok(_) => Ok(true),
        Err(nix::errno::Errno::EINVAL) => Ok(false),
        Err(e) => Err(Error::from_io(
            format!("thawing {}", mount_point.display()),
            &std::io::Error::from(e),
        )),
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let mut arg: libc::c_int = 0;
        // SAFETY: as in `freeze`.
        if let Err(e) = unsafe { fithaw(self.dir.as_raw_fd(), &mut arg) } {
            tracing::error!(mount_point = %self.path.display(), "could not thaw the filesystem: {e}; run `fsfreeze -u` on it");
        }
    }
}
