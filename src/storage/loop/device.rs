//! Loop devices: binding an image to one and unbinding it, and the
//! record of which instance attached a volume. Whether an image is
//! attached, and as which device, is always read from the kernel.

use super::{Kind, LoopDriver};
use crate::error::IoContext;
use crate::model::{InstanceId, MountSource};
use crate::state::{atomic, FileLock};
use crate::storage::loopdev;
use crate::storage::StorageDriver;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a detach waits for a device someone else holds open for a
/// moment (a probe) to be released before it reports the device in use.
const DETACH_SETTLE: Duration = Duration::from_secs(2);

/// Who attached a volume.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Owner {
    #[serde(rename = "instanceID")]
    pub(super) instance_id: InstanceId,
    #[serde(default)]
    pub(super) device: String,
}

/// Loop devices and the files behind them, read from sysfs.
///
/// Every command asks this at least once, so it costs one failed open
/// per unbound device and an open, a read and a close per bound one.
pub(super) fn kernel_loops() -> HashMap<PathBuf, Vec<PathBuf>> {
    use std::io::Read;
    use std::os::unix::ffi::OsStrExt;
    let mut map: HashMap<PathBuf, Vec<PathBuf>> = HashMap::new();
    let Ok(rd) = std::fs::read_dir("/sys/block") else {
        return map;
    };
    let mut path = String::with_capacity(64);
    // A path (at most PATH_MAX) and its newline, or " (deleted)".
    let mut buf = vec![0u8; 4096 + 16];
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str().filter(|n| n.starts_with("loop")) else {
            continue;
        };
        path.clear();
        path.push_str("/sys/block/");
        path.push_str(name);
        path.push_str("/loop/backing_file");
        // (Only a bound device has the file.)
        let Ok(mut f) = std::fs::File::open(&path) else {
            continue;
        };
        // sysfs hands the whole value to the first read.
        let Ok(n) = f.read(&mut buf) else {
            continue;
        };
        let backing = &buf[..n];
        let backing = backing.strip_suffix(b"\n").unwrap_or(backing);
        if backing.is_empty() || backing.ends_with(b" (deleted)") {
            continue;
        }
        map.entry(PathBuf::from(std::ffi::OsStr::from_bytes(backing)))
            .or_default()
            .push(PathBuf::from(format!("/dev/{name}")));
    }
    for devs in map.values_mut() {
        devs.sort();
    }
    map
}

impl LoopDriver {
    pub(super) fn lock_attach(&self, id: &str) -> Result<FileLock> {
        FileLock::acquire(
            &self.row_lock_path(Kind::Volume, id),
            self.lock_timeout,
            &format!("attachment of volume {id}"),
        )
    }

    pub(super) fn read_owner(&self, id: &str) -> Option<Owner> {
        std::fs::read(self.owner_path(id))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    }

    pub(super) fn write_owner(&self, id: &str, device: &Path) -> Result<()> {
        let o = Owner {
            instance_id: self.me.clone(),
            device: device.to_string_lossy().into_owned(),
        };
        // Per boot: a loop attachment does not survive a reboot.
        atomic::write_volatile(
            &self.owner_path(id),
            &serde_json::to_vec(&o).expect("owner serialises"),
        )
    }

    /// Bind a free loop device to `image` (see [`loopdev::attach`]: a
    /// device another process takes meanwhile is skipped).
    fn bind_loop(&self, image: &Path) -> Result<PathBuf> {
        {
            use std::os::unix::fs::FileTypeExt;
            let is_char = std::fs::metadata("/dev/loop-control")
                .map(|m| m.file_type().is_char_device())
                .unwrap_or(false);
            if !is_char {
                return Err(Error::system(
                    "loop devices are unavailable: /dev/loop-control is missing; load the loop module with `modprobe loop` (in a container: run it privileged with /dev bind-mounted)",
                ));
            }
        }
        let file = open_image(image, true)?;
        loopdev::attach(&file).map_err(|e| {
            Error::from_io(
                format!("attaching {} to a loop device", image.display()),
                &e,
            )
        })
    }

    pub(super) fn attach_image(&self, id: &str, force: bool) -> Result<MountSource> {
        let rec = self.record(id)?;
        self.warn_overcommit(&rec, "attaching");
        let _lock = self.lock_attach(id)?;
        let img = self.image(id);
        if !img.is_file() {
            return Err(Error::backend(format!(
                "the image {} of volume {} is missing",
                img.display(),
                rec.name
            )));
        }
        if let Some(dev) = kernel_loops().get(&img).and_then(|d| d.first()).cloned() {
            let owner = self.read_owner(id);
            let mine = owner
                .as_ref()
                .is_some_and(|o| o.instance_id.id == self.me.id);
            if mine {
                return Ok(MountSource::Device(dev));
            }
            if !force {
                let who = owner
                    .map(|o| o.instance_id.id)
                    .unwrap_or_else(|| "outside rexray".into());
                return Err(Error::in_use(format!(
                    "volume {} is attached to another instance ({who}) as {}; set libstorage.integration.volume.operations.mount.preempt or attach with --force to take it",
                    rec.name,
                    dev.display()
                )));
            }
            // Same kernel: taking over the device keeps every write the
            // other instance made; its mounts stay valid until it unmounts.
            tracing::warn!(volume = %rec.name, device = %dev.display(), "taking the volume from another instance");
            self.write_owner(id, &dev)?;
            return Ok(MountSource::Device(dev));
        }
        // Record the intent first: if we die after the attach, the device
        // is still known to be ours.
        let step = |what: &str| format!("attaching volume {} ({what})", rec.name);
        self.write_owner(id, Path::new(""))
            .map_err(|e| e.context(step("owner record")))?;
        fail::fail_point!("loop::attach-before-bind", |_| crate::crash_here());
        let dev = match self.bind_loop(&img) {
            Ok(d) => d,
            Err(e) => {
                let _ = atomic::remove_volatile(&self.owner_path(id));
                return Err(e.context(step("bind a loop device")));
            }
        };
        fail::fail_point!("loop::attach-after-bind", |_| crate::crash_here());
        if let Err(e) = self.write_owner(id, &dev) {
            // Undo the bind: a device nobody records is a device nobody
            // detaches.
            if let Err(d) = loopdev::detach(&dev) {
                tracing::warn!(volume = %rec.name, device = %dev.display(), error = %d, "could not unbind the loop device after a failed attach");
            }
            let _ = atomic::remove_volatile(&self.owner_path(id));
            let note = self
                .space_note(id)
                .map(|n| format!("; {n}"))
                .unwrap_or_default();
            return Err(e
                .map_message(|m| format!("{m}{note}"))
                .context(step("record the device; the device was unbound")));
        }
        Ok(MountSource::Device(dev))
    }

    pub(super) fn detach_image(&self, id: &str, force: bool) -> Result<()> {
        let rec = self.record(id)?;
        let _lock = self.lock_attach(id)?;
        let img = self.image(id);
        let devs = kernel_loops().remove(&img).unwrap_or_default();
        if devs.is_empty() {
            return atomic::remove_volatile(&self.owner_path(id));
        }
        let owner = self.read_owner(id);
        let mine = owner
            .as_ref()
            .is_some_and(|o| o.instance_id.id == self.me.id);
        if !mine && !force {
            return Err(Error::in_use(format!(
                "volume {} is attached to another instance ({}); detach it there or use --force",
                rec.name,
                owner
                    .map(|o| o.instance_id.id)
                    .unwrap_or_else(|| "outside rexray".into())
            )));
        }
        for dev in &devs {
            loopdev::detach(dev)
                .map_err(|e| Error::from_io(format!("detaching {}", dev.display()), &e))?;
        }
        fail::fail_point!("loop::detach-after-clear", |_| crate::crash_here());
        // The kernel defers the detach of a device that is still open: a
        // passing reader (a probe, a `blkid` of someone else) lets go in
        // moments, a mount elsewhere never. Wait a bounded moment, then
        // report it rather than pretend.
        let deadline = std::time::Instant::now() + DETACH_SETTLE;
        while kernel_loops().contains_key(&img) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Some(still) = kernel_loops().get(&img) {
            return Err(Error::in_use(format!(
                "volume {} is still in use as {} (mounted or open); it will detach when released",
                rec.name,
                still[0].display()
            )));
        }
        atomic::remove_volatile(&self.owner_path(id))
    }
}

/// Open a volume image: never through a symbolic link, and only a regular
/// file — a link planted in the volume directory must not turn an attach
/// (and a format) onto some other file or device.
pub(super) fn open_image(path: &Path, write: bool) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .ctx(|| {
            format!(
                "opening image {} (it must be a regular file, not a link)",
                path.display()
            )
        })?;
    let m = f.metadata().ctx(|| format!("stat {}", path.display()))?;
    if !m.is_file() {
        return Err(Error::backend(format!(
            "image {} is not a regular file; refusing to attach it",
            path.display()
        )));
    }
    // An image made before modes were set explicitly may be readable by
    // every user.
    crate::files::tighten(&f, path, crate::files::PRIVATE_FILE);
    Ok(f)
}
