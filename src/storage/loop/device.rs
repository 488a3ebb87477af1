//! Who holds a volume, and loop devices.
//!
//! The controller side records the holder ([`Owner`], in
//! `<volumePath>/owners/<id>.owner`) before any device exists, so a crash
//! never leaves a device nobody owns; the node side ([`LoopExecutor`])
//! binds the image to a loop device, and unbinds it before the holder is
//! released. Whether an image is bound, and as which device, is always
//! read from the kernel.

use super::LoopDriver;
use crate::error::IoContext;
use crate::model::{Attachment, InstanceId, MountSource, Volume};
use crate::state::{atomic, FileLock};
use crate::storage::controller::Controller;
use crate::storage::controller::{Attached, Executor};
use crate::storage::loopdev;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a detach waits for a device someone else holds open for a
/// moment (a probe) to be released before it reports the device in use.
const DETACH_SETTLE: Duration = Duration::from_secs(2);
/// How long a cleared device that no mount uses may take to go away.
const DETACH_SETTLE_UNMOUNTED: Duration = Duration::from_secs(15);

/// Whether a mount in this namespace uses `dev` (unknown counts as yes:
/// the short wait then applies).
fn mounted_somewhere(dev: &Path) -> bool {
    crate::node::mountinfo::device_numbers(dev)
        .and_then(crate::node::mountinfo::mounts_of)
        .map_or(true, |m| !m.is_empty())
}

/// Who holds a volume.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Owner {
    #[serde(rename = "instanceID")]
    pub(super) instance_id: InstanceId,
    /// The device, as earlier releases recorded it (unused).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(super) device: String,
    /// The boot of the controller's host the record was written in: a
    /// record of a holder on this host, from an earlier boot, whose image
    /// no loop device backs is stale (loop devices do not survive a
    /// reboot); another host's is not (see `holder`).
    #[serde(default)]
    pub(super) boot: String,
}

/// Loop devices and the files behind them, read from sysfs.
///
/// Every command asks this at least once, so it costs a read of
/// `/proc/partitions` and an open, a read and a close per bound device
/// (see [`loop_names`]).
pub(super) fn kernel_loops() -> HashMap<PathBuf, Vec<PathBuf>> {
    use std::io::Read;
    use std::os::unix::ffi::OsStrExt;
    let mut map: HashMap<PathBuf, Vec<PathBuf>> = HashMap::new();
    let mut path = String::with_capacity(64);
    // A path (at most PATH_MAX) and its newline, or " (deleted)".
    let mut buf = vec![0u8; 4096 + 16];
    for name in loop_names() {
        let name = name.as_str();
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

/// The names of the loop devices that may be bound. `/proc/partitions`
/// lists the block devices that have a size: a bound loop device has its
/// image's, an unbound one none. Hosts keep dozens of unbound devices (a
/// device made is never removed), so one read replaces a failed open per
/// device. Without it, every `loop*` of `/sys/block`.
fn loop_names() -> Vec<String> {
    let is_loop = |n: &str| {
        n.strip_prefix("loop")
            .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
    };
    if let Ok(text) = std::fs::read_to_string("/proc/partitions") {
        return text
            .lines()
            .filter_map(|l| l.split_whitespace().nth(3))
            .filter(|n| is_loop(n))
            .map(String::from)
            .collect();
    }
    std::fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| is_loop(n))
        .collect()
}

fn unknown_holder() -> InstanceId {
    InstanceId {
        id: "unknown (attached outside rexray)".into(),
        driver: "loop".into(),
        service: String::new(),
    }
}

fn this_boot() -> &'static str {
    static BOOT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BOOT.get_or_init(crate::state::boot_id)
}

/// The lock of a volume's attachment (the same file for the controller's
/// record and the node's device), `<volumePath>/locks/<id>.lock`.
fn lock_attach(root: &Path, id: &str, timeout: Duration) -> Result<FileLock> {
    FileLock::acquire(
        &root.join("locks").join(format!("{id}.lock")),
        timeout,
        &format!("attachment of volume {id}"),
    )
}

/// The holder record of `id` under `root` (earlier releases kept it next
/// to the image).
fn read_owner(root: &Path, id: &str) -> Option<Owner> {
    [
        root.join("owners").join(format!("{id}.owner")),
        root.join(format!("{id}.owner")),
    ]
    .iter()
    .find_map(|p| std::fs::read(p).ok())
    .and_then(|b| serde_json::from_slice(&b).ok())
}

/// Whether `who` is an instance of this host (`<host name>:<state dir>`):
/// its loop devices are this kernel's, so they tell whether it still holds
/// an image.
fn of_this_host(who: &InstanceId) -> bool {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let host = HOST.get_or_init(|| {
        nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "localhost".into())
    });
    who.id
        .strip_prefix(host.as_str())
        .is_some_and(|rest| rest.starts_with(':'))
}

/// Who holds the image `img` of `id`, from its record and the kernel's
/// loop devices: a record counts when a device backs the image, when it
/// was written in this boot (an attach whose device is not bound yet), or
/// when its holder is another host's node (whose devices this kernel
/// cannot see, and which a reboot of this host did not detach: it holds
/// the volume until it lets go, or is preempted). Only a record of this
/// host from an earlier boot with no device is stale (loop devices do not
/// survive a reboot). A device without a record was attached outside
/// rexray.
fn holder(owner: Option<Owner>, bound: bool) -> Option<InstanceId> {
    match owner {
        Some(o) if bound || o.boot == this_boot() || !of_this_host(&o.instance_id) => {
            Some(o.instance_id)
        }
        _ if bound => Some(unknown_holder()),
        _ => None,
    }
}

impl LoopDriver {
    pub(super) fn lock_attach(&self, id: &str) -> Result<FileLock> {
        lock_attach(&self.root, id, self.lock_timeout)
    }

    pub(super) fn owners_dir(&self) -> PathBuf {
        self.root.join("owners")
    }

    /// Every holder record (one small directory: only held volumes).
    pub(super) fn owners(&self) -> HashMap<String, Owner> {
        let mut out = HashMap::new();
        for e in std::fs::read_dir(self.owners_dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".owner") else {
                continue;
            };
            if let Some(o) = std::fs::read(e.path())
                .ok()
                .and_then(|b| serde_json::from_slice::<Owner>(&b).ok())
            {
                out.insert(id.to_string(), o);
            }
        }
        out
    }

    /// The attachment of volume `id` (none, or one holder), given the
    /// device bound to its image, if any, and the holder records when
    /// read at once (else its own is read).
    pub(super) fn attachment(
        &self,
        id: &str,
        dev: Option<&Path>,
        owners: Option<&HashMap<String, Owner>>,
    ) -> Option<Attachment> {
        let owner = match owners {
            Some(all) => all.get(id).cloned().or_else(|| {
                // An earlier release's record, next to the image.
                dev.and_then(|_| read_owner(&self.root, id))
            }),
            None => read_owner(&self.root, id),
        };
        let who = holder(owner, dev.is_some())?;
        Some(Attachment {
            device_name: dev
                .map(|d| d.to_string_lossy().into_owned())
                .unwrap_or_default(),
            instance_id: who,
            status: "attached".into(),
            volume_id: id.to_string(),
            ..Default::default()
        })
    }

    /// The attachment of `id` as the kernel's loop devices `loops` show it.
    pub(super) fn attachment_now(
        &self,
        id: &str,
        loops: &HashMap<PathBuf, Vec<PathBuf>>,
    ) -> Option<Attachment> {
        let dev = loops.get(&self.image(id)).and_then(|d| d.first());
        self.attachment(id, dev.map(PathBuf::as_path), None)
    }

    fn write_owner(&self, id: &str, who: &InstanceId) -> Result<()> {
        let o = Owner {
            instance_id: who.clone(),
            device: String::new(),
            boot: this_boot().to_string(),
        };
        crate::files::own_dir(
            &self.owners_dir(),
            crate::files::PRIVATE_DIR,
            crate::files::Link::Refuse,
        )?;
        // Not synced: a loop attachment does not survive a reboot.
        atomic::write_volatile(
            &self.owners_dir().join(format!("{id}.owner")),
            &serde_json::to_vec(&o).expect("owner serialises"),
        )?;
        atomic::remove_volatile(&self.owner_path(id))
    }

    pub(super) fn remove_owner(&self, id: &str) -> Result<()> {
        atomic::remove_volatile(&self.owners_dir().join(format!("{id}.owner")))?;
        atomic::remove_volatile(&self.owner_path(id))
    }

    /// The controller's attach: record `who` as the holder (see
    /// [`crate::storage::controller::Controller::attach`]); the token is
    /// the image's path, which `who`'s node binds to a loop device.
    pub(super) fn attach_holder(
        &self,
        id: &str,
        who: &InstanceId,
        force: bool,
    ) -> Result<Attached> {
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
        let loops = kernel_loops();
        let now = self.attachment_now(id, &loops);
        match &now {
            Some(a) if a.instance_id.id == who.id => {}
            Some(a) if !force => {
                let dev = if a.device_name.is_empty() {
                    String::new()
                } else {
                    format!(" as {}", a.device_name)
                };
                return Err(Error::in_use(format!(
                    "volume {} is attached to another instance ({}){dev}; set libstorage.integration.volume.operations.mount.preempt or attach with --force to take it",
                    rec.name, a.instance_id.id
                )));
            }
            Some(a) => {
                // A device on this kernel stays bound: the new holder's node
                // takes it over with every write the old holder made.
                tracing::warn!(volume = %rec.name, from = %a.instance_id.id, to = %who.id, "taking the volume from another instance");
                self.write_owner(id, who).map_err(|e| {
                    e.context(format!("attaching volume {} (owner record)", rec.name))
                })?;
            }
            None => {
                // The record first: if we die after the node binds a device,
                // the device is still known to be ours.
                self.write_owner(id, who).map_err(|e| {
                    let note = self
                        .space_note(id)
                        .map(|n| format!("; {n}"))
                        .unwrap_or_default();
                    e.map_message(|m| format!("{m}{note}"))
                        .context(format!("attaching volume {} (owner record)", rec.name))
                })?;
            }
        }
        fail::fail_point!("loop::attach-after-owner", |_| crate::crash_here());
        Ok(Attached {
            volume: self.to_volume(rec, &loops),
            token: img.to_string_lossy().into_owned(),
        })
    }

    /// The controller's detach: release `who`'s hold (the node has unbound
    /// its device first, see [`LoopExecutor::release`]).
    pub(super) fn detach_holder(&self, id: &str, who: &InstanceId, force: bool) -> Result<Volume> {
        let rec = self.record(id)?;
        let _lock = self.lock_attach(id)?;
        let loops = kernel_loops();
        if let Some(a) = self.attachment_now(id, &loops) {
            if a.instance_id.id != who.id && !force {
                return Err(Error::in_use(format!(
                    "volume {} is attached to another instance ({}); detach it there or use --force",
                    rec.name, a.instance_id.id
                )));
            }
        }
        self.remove_owner(id)?;
        Ok(self.to_volume(rec, &loops))
    }
}

/// The loop driver's node side: binds images to loop devices of this host.
/// The images are found under this node's `loop.volumePath`, which must be
/// the controller's (the same directory, or shared storage mounted at the
/// same path).
pub struct LoopExecutor {
    root: PathBuf,
    me: InstanceId,
    lock_timeout: Duration,
}

impl LoopExecutor {
    /// The node side for images under `root`, as instance `me`.
    pub fn new(root: &Path, me: InstanceId, lock_timeout: Duration) -> Result<LoopExecutor> {
        // (Resolved already when this process checked it as root.)
        let root = match crate::files::resolved(root) {
            Some(real) => real,
            None => root
                .canonicalize()
                .ctx(|| format!("resolving loop.volumePath {}", root.display()))?,
        };
        Ok(LoopExecutor {
            root,
            me,
            lock_timeout,
        })
    }

    fn image(&self, id: &str) -> Result<PathBuf> {
        crate::input::volume_id(id)?;
        Ok(self.root.join(format!("{id}.img")))
    }

    fn devices(&self, img: &Path) -> Vec<PathBuf> {
        kernel_loops().remove(img).unwrap_or_default()
    }
}

impl Executor for LoopExecutor {
    fn instance_id(&self) -> &InstanceId {
        &self.me
    }

    fn local_devices(&self) -> Result<BTreeMap<String, String>> {
        Ok(kernel_loops()
            .into_iter()
            .filter(|(img, _)| img.parent() == Some(self.root.as_path()))
            .filter_map(|(img, devs)| {
                Some((
                    img.to_string_lossy().into_owned(),
                    devs.first()?.to_string_lossy().into_owned(),
                ))
            })
            .collect())
    }

    fn present(&self, volume: &Volume) -> Result<Option<MountSource>> {
        let img = self.image(&volume.id)?;
        Ok(self
            .devices(&img)
            .into_iter()
            .next()
            .map(MountSource::Device))
    }

    fn resolve(&self, volume: &Volume, token: &str, timeout: Duration) -> Result<MountSource> {
        let _ = timeout; // binding is synchronous; the workflow waits for the node
        let img = self.image(&volume.id)?;
        if Path::new(token) != img {
            return Err(Error::backend(format!(
                "volume {}: the controller attached image {token}, but this node finds its images at {} (loop.volumePath): every node must see the controller's volume path at the same path",
                volume.name,
                img.display()
            )));
        }
        let _lock = lock_attach(&self.root, &volume.id, self.lock_timeout)?;
        if let Some(dev) = self.devices(&img).into_iter().next() {
            return Ok(MountSource::Device(dev));
        }
        let step = |what: &str| format!("attaching volume {} ({what})", volume.name);
        fail::fail_point!("loop::attach-before-bind", |_| crate::crash_here());
        let dev = bind_loop(&img).map_err(|e| e.context(step("bind a loop device")))?;
        fail::fail_point!("loop::attach-after-bind", |_| crate::crash_here());
        Ok(MountSource::Device(dev))
    }

    fn release(&self, volume: &Volume, force: bool) -> Result<()> {
        let img = self.image(&volume.id)?;
        let _lock = lock_attach(&self.root, &volume.id, self.lock_timeout)?;
        let devs = self.devices(&img);
        if devs.is_empty() {
            return Ok(());
        }
        // Someone else may have taken the volume over since this node
        // looked: its device is theirs now.
        if let Some(who) = holder(read_owner(&self.root, &volume.id), true) {
            if who.id != self.me.id && !force {
                return Err(Error::in_use(format!(
                    "volume {} is attached to another instance ({}); detach it there or use --force",
                    volume.name, who.id
                )));
            }
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
        // A device mounted nowhere is held only by openers on their way
        // out (a process being killed, the last user of a lazily unmounted
        // filesystem): on a loaded host those take longer, so wait longer.
        let start = std::time::Instant::now();
        while let Some(still) = kernel_loops().get(&img) {
            let waited = start.elapsed();
            if waited >= DETACH_SETTLE_UNMOUNTED
                || (waited >= DETACH_SETTLE && mounted_somewhere(&still[0]))
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Some(still) = kernel_loops().get(&img) {
            return Err(Error::in_use(format!(
                "volume {} is still in use as {} (mounted or open); it will detach when released",
                volume.name,
                still[0].display()
            )));
        }
        Ok(())
    }
}

/// Bind a free loop device to `image` (see [`loopdev::attach`]: a device
/// another process takes meanwhile is skipped).
fn bind_loop(image: &Path) -> Result<PathBuf> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(host: &str, boot: &str) -> Owner {
        Owner {
            instance_id: InstanceId {
                id: format!("{host}:/var/lib/rexray"),
                driver: "loop".into(),
                service: "loop".into(),
            },
            device: String::new(),
            boot: boot.into(),
        }
    }

    #[test]
    fn stale_records_are_this_hosts_only() {
        let me = nix::unistd::gethostname()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let now = this_boot();
        // This host, this boot or a bound device: held.
        assert!(holder(Some(owner(&me, now)), false).is_some());
        assert!(holder(Some(owner(&me, "an-earlier-boot")), true).is_some());
        // This host, an earlier boot, no device: the reboot let it go.
        assert!(holder(Some(owner(&me, "an-earlier-boot")), false).is_none());
        // Another host's node (a name that merely starts like this one's
        // too): this host's reboot did not detach it, so it still holds.
        for other in ["node-b.example", &format!("{me}2")] {
            let h = holder(Some(owner(other, "an-earlier-boot")), false).unwrap();
            assert!(h.id.starts_with(other), "{other}");
        }
        // A device without a record: attached outside rexray.
        assert_eq!(holder(None, true), Some(unknown_holder()));
        assert_eq!(holder(None, false), None);
    }
}
