//! The five loop-driver ioctls the `loop` storage driver needs, on `nix`:
//! find a free device (LOOP_CTL_GET_FREE), bind a file to it in one step
//! (LOOP_CONFIGURE, Linux 5.8+; LOOP_SET_FD on older kernels), update its
//! size after the file grew (LOOP_SET_CAPACITY) and unbind it
//! (LOOP_CLR_FD).
//!
//! Devices are bound without LO_FLAGS_AUTOCLEAR: an attachment outlives the
//! process that made it (the CLI attaches, the service or kubelet's next
//! call mounts), and the kernel is the record of what is attached.
//! Every descriptor is opened with O_CLOEXEC.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// `LO_NAME_SIZE` of `<linux/loop.h>`.
const LO_NAME_SIZE: usize = 64;
/// `LO_KEY_SIZE` of `<linux/loop.h>`.
const LO_KEY_SIZE: usize = 32;

/// `struct loop_info64` of `<linux/loop.h>` (232 bytes).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct LoopInfo64 {
    pub lo_device: u64,
    pub lo_inode: u64,
    pub lo_rdevice: u64,
    pub lo_offset: u64,
    pub lo_sizelimit: u64,
    pub lo_number: u32,
    pub lo_encrypt_type: u32,
    pub lo_encrypt_key_size: u32,
    pub lo_flags: u32,
    pub lo_file_name: [u8; LO_NAME_SIZE],
    pub lo_crypt_name: [u8; LO_NAME_SIZE],
    pub lo_encrypt_key: [u8; LO_KEY_SIZE],
    pub lo_init: [u64; 2],
}

/// `struct loop_config` of `<linux/loop.h>` (304 bytes).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct LoopConfig {
    pub fd: u32,
    pub block_size: u32,
    pub info: LoopInfo64,
    pub reserved: [u64; 8],
}

impl Default for LoopConfig {
    fn default() -> Self {
        // SAFETY: every field is an integer or an array of integers, for
        // which all-zero bytes are a valid value.
        unsafe { std::mem::zeroed() }
    }
}

// The loop ioctls predate the _IO* encoding: plain numbers ("bad" ioctls).
nix::ioctl_write_int_bad!(loop_set_fd, 0x4C00);
nix::ioctl_none_bad!(loop_clr_fd, 0x4C01);
nix::ioctl_none_bad!(loop_set_capacity, 0x4C07);
nix::ioctl_write_int_bad!(loop_set_direct_io, 0x4C08);
nix::ioctl_write_ptr_bad!(loop_configure, 0x4C0A, LoopConfig);
nix::ioctl_none_bad!(loop_ctl_get_free, 0x4C82);

/// Set once LOOP_CONFIGURE turned out unknown to this kernel.
static NO_CONFIGURE: AtomicBool = AtomicBool::new(false);

/// How many free devices a bind tries before giving up: each EBUSY means
/// another process took the device between LOOP_CTL_GET_FREE and the bind.
const TRIES: usize = 64;

fn open_rw(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

/// `/dev/loop<n>`.
pub fn device_path(n: u32) -> PathBuf {
    PathBuf::from(format!("/dev/loop{n}"))
}

/// The number of a free loop device (the kernel creates it if needed).
pub fn next_free() -> std::io::Result<u32> {
    let control = open_rw(Path::new("/dev/loop-control"))?;
    // SAFETY: an argument-less ioctl on a descriptor we own.
    let n = unsafe { loop_ctl_get_free(control.as_raw_fd()) }?;
    Ok(n as u32)
}

/// How [`bind_to`] binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// LOOP_CONFIGURE, falling back to LOOP_SET_FD on a kernel without it.
    Best,
    /// LOOP_SET_FD only (what kernels before 5.8 have).
    Legacy,
}

/// Bind `backing` (open read-write) to `dev`. EBUSY means the device is
/// taken.
pub fn bind_to(dev: &Path, backing: &File, method: Method) -> std::io::Result<()> {
    let d = open_rw(dev)?;
    if method == Method::Best && !NO_CONFIGURE.load(Ordering::Relaxed) {
        let cfg = LoopConfig {
            fd: backing.as_raw_fd() as u32,
            ..Default::default()
        };
        // SAFETY: `cfg` is a valid loop_config that outlives the call.
        match unsafe { loop_configure(d.as_raw_fd(), &cfg) } {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::ENOTTY) | Err(nix::errno::Errno::EINVAL) => {
                // EINVAL is also what a kernel that knows LOOP_CONFIGURE
                // says to bad arguments; LOOP_SET_FD then says it again.
                NO_CONFIGURE.store(true, Ordering::Relaxed);
                tracing::debug!("LOOP_CONFIGURE unsupported; using LOOP_SET_FD");
            }
            Err(e) => return Err(e.into()),
        }
    }
    // LOOP_SET_FD alone configures the device: no offset, no flags are
    // needed, and the backing path shows in sysfs either way.
    // SAFETY: ioctl with an integer argument on descriptors we own.
    unsafe { loop_set_fd(d.as_raw_fd(), backing.as_raw_fd()) }?;
    Ok(())
}

/// Bind `backing` to a free loop device and return its path. A device
/// taken by another process between the search and the bind (EBUSY) is
/// skipped for the next free one.
pub fn attach(backing: &File) -> std::io::Result<PathBuf> {
    attach_from(&mut next_free, backing, Method::Best)
}

/// [`attach`] over the device numbers `candidates` yields.
pub fn attach_from(
    candidates: &mut dyn FnMut() -> std::io::Result<u32>,
    backing: &File,
    method: Method,
) -> std::io::Result<PathBuf> {
    for _ in 0..TRIES {
        let path = device_path(candidates()?);
        match bind_to(&path, backing, method) {
            Ok(()) => return Ok(path),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other(format!(
        "every free loop device was taken by another process ({TRIES} tries)"
    )))
}

/// Unbind `dev`. A device still open (mounted) is unbound by the kernel
/// when its last user closes it.
pub fn detach(dev: &Path) -> std::io::Result<()> {
    let d = open_rw(dev)?;
    // SAFETY: an argument-less ioctl on a descriptor we own.
    unsafe { loop_clr_fd(d.as_raw_fd()) }?;
    Ok(())
}

/// Have `dev` read and write its backing file with direct I/O
/// (LOOP_SET_DIRECT_IO), so a write fails when the backing file's write
/// fails, instead of landing in the page cache and failing later unseen.
pub fn set_direct_io(dev: &Path, on: bool) -> std::io::Result<()> {
    let d = open_rw(dev)?;
    // SAFETY: ioctl with an integer argument on a descriptor we own.
    unsafe { loop_set_direct_io(d.as_raw_fd(), libc::c_int::from(on)) }?;
    Ok(())
}

/// Make `dev` see its backing file's current size.
pub fn set_capacity(dev: &Path) -> std::io::Result<()> {
    let d = open_rw(dev)?;
    // SAFETY: an argument-less ioctl on a descriptor we own.
    unsafe { loop_set_capacity(d.as_raw_fd()) }?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_layouts_match_the_kernel() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
        assert_eq!(std::mem::offset_of!(LoopInfo64, lo_flags), 52);
        assert_eq!(std::mem::offset_of!(LoopInfo64, lo_file_name), 56);
        assert_eq!(std::mem::offset_of!(LoopInfo64, lo_init), 216);
        assert_eq!(std::mem::offset_of!(LoopConfig, info), 8);
        assert_eq!(std::mem::offset_of!(LoopConfig, reserved), 240);
    }

    fn root() -> bool {
        if nix::unistd::geteuid().is_root() && Path::new("/dev/loop-control").exists() {
            return true;
        }
        assert!(
            std::env::var_os("CI").is_none(),
            "loop device tests need root and /dev/loop-control"
        );
        eprintln!("skipped: needs root and /dev/loop-control");
        false
    }

    fn sys(dev: &Path, what: &str) -> Option<String> {
        let name = dev.file_name()?.to_str()?;
        std::fs::read_to_string(format!("/sys/block/{name}/{what}"))
            .ok()
            .map(|s| s.trim_end().to_string())
    }

    /// Detaches on drop, so a failed assertion leaves no device behind.
    struct Bound(PathBuf);
    impl Drop for Bound {
        fn drop(&mut self) {
            if sys(&self.0, "loop/backing_file").is_some() {
                let _ = detach(&self.0);
            }
        }
    }

    fn image(dir: &Path, name: &str, len: u64) -> (PathBuf, File) {
        let p = dir.join(name);
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&p)
            .unwrap();
        f.set_len(len).unwrap();
        (p.canonicalize().unwrap(), f)
    }

    fn attach_detach_resize(method: Method) {
        let t = tempfile::tempdir().unwrap();
        let (p, f) = image(t.path(), "a.img", 4 << 20);
        let dev = attach_from(&mut next_free, &f, method).unwrap();
        let guard = Bound(dev.clone());
        assert_eq!(
            sys(&dev, "loop/backing_file").as_deref(),
            Some(p.to_str().unwrap())
        );
        // No autoclear: the attachment outlives every descriptor.
        drop(f);
        assert_eq!(sys(&dev, "loop/autoclear").as_deref(), Some("0"));
        assert_eq!(sys(&dev, "size").as_deref(), Some("8192"));
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(8 << 20)
            .unwrap();
        set_capacity(&dev).unwrap();
        assert_eq!(sys(&dev, "size").as_deref(), Some("16384"));
        detach(&dev).unwrap();
        assert_eq!(sys(&dev, "loop/backing_file"), None);
        drop(guard);
    }

    #[test]
    fn attach_check_sysfs_grow_and_detach() {
        if root() {
            attach_detach_resize(Method::Best);
        }
    }

    #[test]
    fn attach_with_loop_set_fd_as_on_older_kernels() {
        if root() {
            attach_detach_resize(Method::Legacy);
        }
    }

    /// A device another process took between LOOP_CTL_GET_FREE and the
    /// bind answers EBUSY; the bind moves on to the next free device.
    #[test]
    fn a_device_taken_meanwhile_is_skipped() {
        if !root() {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let (_, first) = image(t.path(), "first.img", 1 << 20);
        let (p, second) = image(t.path(), "second.img", 1 << 20);
        let taken = attach(&first).unwrap();
        let _g1 = Bound(taken.clone());
        let n: u32 = taken.to_str().unwrap()["/dev/loop".len()..]
            .parse()
            .unwrap();
        for method in [Method::Best, Method::Legacy] {
            let mut calls = 0;
            let mut candidates = || {
                calls += 1;
                if calls == 1 {
                    Ok(n)
                } else {
                    next_free()
                }
            };
            let dev = attach_from(&mut candidates, &second, method).unwrap();
            let _g2 = Bound(dev.clone());
            assert_ne!(dev, taken);
            // The taken device cost one more candidate; a device some other
            // process takes meanwhile (tests run concurrently) may cost more.
            assert!(calls >= 2, "{method:?}: {calls}");
            assert_eq!(
                sys(&dev, "loop/backing_file").as_deref(),
                Some(p.to_str().unwrap())
            );
            detach(&dev).unwrap();
        }
        // Always busy: a bounded number of tries, then a clear error.
        let e = attach_from(&mut || Ok(n), &second, Method::Best).unwrap_err();
        assert!(e.to_string().contains("every free loop device"), "{e}");
        detach(&taken).unwrap();
    }
}
