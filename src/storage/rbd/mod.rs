//! The `rbd` driver: a volume is a Ceph RBD image in one pool
//! (`rbd.defaultPool`), driven through the `rbd` and `ceph` tools with
//! `--format json` ([`cli`]); with `rbd.library: auto` (the default) and
//! librbd on the host, the frequent calls (image size and metadata,
//! create, the advisory locks, the holder index) go through librbd and
//! librados instead ([`lib`], loaded at run time), with results of the
//! same shape, so the logic below does not depend on the way.
//!
//! - Volume id `<pool>.<image>`, name `<image>` (the original's scheme).
//! - Who holds an image is recorded in Ceph itself, as an RBD advisory
//!   lock `rexray:<instance id>`, so every node and the controller see
//!   the same holder. Attaching an image another instance holds is
//!   refused; with force (preempt) the controller *fences* the old holder
//!   first — every client address of its lock and of the image's watchers
//!   goes on the OSD blocklist, so its writes fail instead of landing —
//!   then takes the lock over.
//! - An index of the holders, the omap of the pool object
//!   [`HOLDERS_OBJECT`] (`<image>` → `rexray:<instance id>`), lets a
//!   listing read every holder in one `rados listomapvals` beside one
//!   `rbd ls -l` instead of one `rbd lock ls` per locked image. The lock
//!   stays the truth: a key is removed before a lock is released or taken
//!   over and written after a lock is taken, a key of an image that
//!   `rbd ls -l` shows unlocked is ignored (stale), and a locked image
//!   without a key (or a pool without the object) is read with `rbd lock
//!   ls`. Everything but the listing (inspect, attach, detach, remove)
//!   reads the lock itself (or the read of it this operation made less
//!   than a second ago).
//! - Images are made with the `layering` feature only (what kernel RBD
//!   clients map, and no exclusive-lock to compete with the advisory
//!   lock).
//! - The node side ([`node::RbdExecutor`]) maps an image with kernel
//!   `rbd map`, else `rbd-nbd`, else `rbd-fuse` plus a loop device.

pub mod cli;
pub mod lib;
pub mod node;

use super::controller::{Attached, Controller, NextDeviceInfo, ServiceInfo, StorageType};
use super::{now_rfc3339, Prepare};
use crate::model::{Attachment, CreateSpec, InstanceId, Snapshot, Volume};
use crate::{Error, Kind, Result};
use cli::Ceph;
use serde::Deserialize;
use std::collections::BTreeMap;

/// The prefix of the advisory locks this driver takes.
pub const LOCK_PREFIX: &str = "rexray:";
const GIB: u64 = 1 << 30;

/// How long a fenced client stays on the OSD blocklist: a week, not
/// Ceph's default hour, after which an old holder that was cut off but
/// never let go (a node partitioned away, a stuck rbd-nbd) could write
/// again.
const FENCE_EXPIRY: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// Whether a `ceph` tool's error says it does not know the command (an
/// older Ceph's spelling).
fn unknown_command(msg: &str) -> bool {
    let m = msg.to_ascii_lowercase();
    m.contains("invalid command")
        || m.contains("unrecognized command")
        || m.contains("no valid command")
}
/// The prefix of the image metadata keys that hold a volume's fields
/// (`fsType`, ...).
const META_PREFIX: &str = "rexray.";
/// The pool object whose omap indexes the holders: `<image>` →
/// `rexray:<instance id>` (the lock's id).
pub const HOLDERS_OBJECT: &str = "rexray.holders";
/// The pool object whose omap registers the nodes (CSI node services):
/// `<instance id>` → when it last registered.
pub const NODES_OBJECT: &str = "rexray.nodes";
/// The image-meta prefix of the volume's own facts (type, IOPS, zone,
/// creation time); checked before [`META_PREFIX`], which it extends.
const META_VOLUME: &str = "rexray.volume.";

/// The rbd driver's controller side.
pub struct RbdDriver {
    ceph: Ceph,
    /// librbd and librados, when `rbd.library` chose them and they load:
    /// the lookups, create, locks and the holder index go through them.
    lib: Option<lib::Rbd>,
    pool: String,
    info: ServiceInfo,
    /// Where a new copy is shown through rbd-fuse to get a filesystem
    /// UUID of its own (none: copies keep their source's).
    scratch: Option<std::path::PathBuf>,
    /// What the last lookups found of each image (size, create time,
    /// fields), reused for [`SEEN_FOR`]: one operation looks a volume up
    /// several times (find, again under its lock, attach, the answer),
    /// and only the lock can have changed in between. Dropped when this
    /// driver resizes or removes the image.
    seen: std::sync::Mutex<BTreeMap<String, Seen>>,
    /// The locks of each image as this driver last read or set them,
    /// reused for [`LOCKS_FOR`] by the lookups and the attach of one
    /// operation (`lock add` itself is atomic in Ceph: a change made
    /// meanwhile by another instance makes it fail, not succeed twice).
    held: std::sync::Mutex<BTreeMap<String, (std::time::Instant, Vec<LockEntry>)>>,
    /// Index writes still running (see [`RbdDriver::index_set`]).
    pending: std::sync::Mutex<Vec<std::process::Child>>,
}

/// Whether one operation reuses its own lookups ([`SEEN_FOR`],
/// [`LOCKS_FOR`]): yes in the short-lived binaries, whose process is one
/// operation; no in a long-running service, where another process may
/// change an image between two requests (see [`long_running`]).
static REUSE_LOOKUPS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// This process serves many operations: every lookup asks Ceph.
pub fn long_running() {
    REUSE_LOOKUPS.store(false, std::sync::atomic::Ordering::Relaxed);
}

fn reuse_lookups() -> bool {
    REUSE_LOOKUPS.load(std::sync::atomic::Ordering::Relaxed)
}

/// How long a read (or change) of an image's lock is reused.
const LOCKS_FOR: std::time::Duration = std::time::Duration::from_secs(1);

impl Drop for RbdDriver {
    fn drop(&mut self) {
        self.settle_pending();
    }
}

/// How long a lookup's size and fields are reused (the holder is always
/// read again).
const SEEN_FOR: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, Clone)]
struct Seen {
    at: std::time::Instant,
    info: Info,
    meta: BTreeMap<String, String>,
}

/// One entry of `rbd ls -l --format json`: an image or a snapshot.
#[derive(Debug, Deserialize)]
struct LsEntry {
    image: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    snapshot: Option<String>,
    #[serde(default)]
    lock_type: Option<String>,
}

/// One entry of `rbd lock ls --format json`.
#[derive(Debug, Clone, Deserialize)]
struct LockEntry {
    id: String,
    locker: String,
    #[serde(default)]
    address: String,
}

#[derive(Debug, Deserialize)]
struct Status {
    #[serde(default)]
    watchers: Vec<Watcher>,
}

#[derive(Debug, Deserialize)]
struct Watcher {
    address: String,
}

#[derive(Debug, Clone, Deserialize)]
struct Info {
    name: String,
    size: u64,
    #[serde(default)]
    create_timestamp: String,
}

fn parse<T: for<'de> Deserialize<'de>>(what: &str, s: &str) -> Result<T> {
    serde_json::from_str(s.trim())
        .map_err(|e| Error::backend(format!("unreadable answer of {what}: {e}: {s:.200}")))
}

/// RFC 3339 of a ctime(3) time in UTC (`Sun Dec  6 18:00:00 2026`, as
/// `rbd snap ls` prints a snapshot's); `None` for anything else.
fn rfc3339_of_ctime(t: &str) -> Option<String> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let f: Vec<&str> = t.split_whitespace().collect();
    let [_weekday, month, day, hms, year] = f[..] else {
        return None;
    };
    let month = MONTHS.iter().position(|m| *m == month)? + 1;
    let day: u32 = day.parse().ok()?;
    let year: u32 = year.parse().ok()?;
    let s = format!("{year:04}-{month:02}-{day:02}T{hms}Z");
    // Checked the whole way (a day or time out of range is refused).
    humantime::parse_rfc3339(&s).ok()?;
    Some(s)
}

/// Check an image or snapshot name: the volume name rule, which also
/// keeps out what RBD specs reserve (`/`, `@`).
fn image_name<'a>(what: &str, name: &'a str) -> Result<&'a str> {
    crate::input::name_of(what, name)
}

impl RbdDriver {
    /// The driver for `pool`, reaching the cluster through `ceph`.
    pub fn new(ceph: Ceph, pool: &str, service: &str) -> Result<RbdDriver> {
        image_name("pool", pool)
            .map_err(|e| e.context(format!("reading {}", crate::config::keys::RBD_DEFAULT_POOL)))?;
        Ok(RbdDriver {
            lib: if ceph.library {
                lib::Rbd::new(&ceph)
            } else {
                None
            },
            seen: Default::default(),
            held: Default::default(),
            pending: Default::default(),
            ceph,
            pool: pool.to_string(),
            info: ServiceInfo {
                service: if service.is_empty() { "rbd" } else { service }.to_string(),
                driver: "rbd".into(),
                storage_type: StorageType::Block,
                next_device: NextDeviceInfo {
                    ignore: true,
                    ..Default::default()
                },
            },
            scratch: None,
        })
    }

    /// This driver, showing new copies through rbd-fuse under `dir` to
    /// give their filesystems UUIDs of their own.
    pub fn with_scratch_dir(mut self, dir: &std::path::Path) -> RbdDriver {
        self.scratch = Some(dir.to_path_buf());
        self
    }

    /// Let `prepare` change the new image `image` (a copy) before it is
    /// published: shown as a file through rbd-fuse in the scratch
    /// directory. A copy that cannot be shown keeps its source's UUID
    /// (said in the log); one whose `prepare` failed is removed.
    fn prepare_copy(&self, image: &str, prepare: Prepare<'_>) -> Result<()> {
        let Some(dir) = &self.scratch else {
            return Ok(());
        };
        use crate::files::{own_dir, Link, PRIVATE_DIR};
        let shown = own_dir(dir, PRIVATE_DIR, Link::Refuse)
            .map_err(|e| e.context("preparing the rbd scratch directory"))
            .and_then(|_| {
                node::Scratch::new(self.ceph.clone(), &self.pool, dir).with_image_file(
                    image,
                    self.ceph.timeout,
                    prepare,
                )
            });
        match shown {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => {
                tracing::warn!(
                    volume = image,
                    "the new volume keeps its source's filesystem UUID: it could not be shown through rbd-fuse: {why}"
                );
                Ok(())
            }
            Err(e) => {
                let _ = self.rbd(&["rm", "--no-progress", &self.spec(image)]);
                Err(e.context(format!("preparing the new volume {image}")))
            }
        }
    }

    fn id_of(&self, image: &str) -> String {
        format!("{}.{image}", self.pool)
    }

    /// The image of a volume id of this pool, or `None`.
    fn image_of<'a>(&self, id: &'a str) -> Option<&'a str> {
        id.strip_prefix(self.pool.as_str())
            .and_then(|r| r.strip_prefix('.'))
            .filter(|i| image_name("volume", i).is_ok())
    }

    fn must_image<'a>(&self, id: &'a str) -> Result<&'a str> {
        self.image_of(id)
            .ok_or_else(|| Error::not_found(format!("volume {id} not found")))
    }

    fn spec(&self, image: &str) -> String {
        format!("{}/{image}", self.pool)
    }

    fn rbd(&self, args: &[&str]) -> Result<String> {
        self.ceph.run("rbd", args)
    }

    fn ls(&self) -> Result<Vec<LsEntry>> {
        // `rbd ls -l` opens every image it lists, and an image removed in
        // between fails the whole listing: list again.
        let mut tries = 0;
        loop {
            match self.rbd(&["ls", "-l", "--format", "json", "-p", &self.pool]) {
                Ok(out) => return parse("rbd ls", &out),
                Err(e) if tries < 5 && removed_while_listed(e.message()) => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20 * tries));
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn locks(&self, image: &str) -> Result<Vec<LockEntry>> {
        let locks: Vec<LockEntry> = match &self.lib {
            Some(lib) => lib
                .lockers(&self.pool, image)?
                .into_iter()
                .map(|l| LockEntry {
                    id: l.id,
                    locker: l.locker,
                    address: l.address,
                })
                .collect(),
            None => {
                let out = self.rbd(&["lock", "ls", "--format", "json", &self.spec(image)])?;
                parse("rbd lock ls", &out)?
            }
        };
        self.set_held(image, &locks);
        Ok(locks)
    }

    /// The locks of `image`, as read or set within [`LOCKS_FOR`], else
    /// read now.
    fn recent_locks(&self, image: &str) -> Result<Vec<LockEntry>> {
        if reuse_lookups() {
            let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, l)) = held.get(image) {
                if at.elapsed() < LOCKS_FOR {
                    return Ok(l.clone());
                }
            }
        }
        self.locks(image)
    }

    fn set_held(&self, image: &str, locks: &[LockEntry]) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.retain(|_, (at, _)| at.elapsed() < LOCKS_FOR);
        held.insert(
            image.to_string(),
            (std::time::Instant::now(), locks.to_vec()),
        );
    }

    fn forget_held(&self, image: &str) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.remove(image);
    }

    /// Wait for the index writes still running (bounded by the timeout;
    /// one that overruns is stopped).
    fn settle_pending(&self) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let deadline = std::time::Instant::now() + self.ceph.timeout;
        for mut c in pending.drain(..) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let _ = crate::node::cmd::wait_within(&mut c, left);
        }
    }

    /// The holders index: `None` when the pool has no index object (no
    /// attach wrote one yet, or it was removed).
    fn index(&self) -> Result<Option<BTreeMap<String, String>>> {
        self.omap_of(HOLDERS_OBJECT)
    }

    /// The omap of pool object `object`; `None` when there is no such
    /// object.
    fn omap_of(&self, object: &str) -> Result<Option<BTreeMap<String, String>>> {
        if let Some(lib) = &self.lib {
            return lib.omap(&self.pool, object);
        }
        match self
            .ceph
            .run("rados", &["-p", &self.pool, "listomapvals", object])
        {
            Ok(out) => Ok(Some(parse_omap_dump(&out))),
            Err(e) if e.kind() == Kind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Record `lock_id` as the holder of `image` in the index, after the
    /// lock was taken. The write runs on while the caller goes on (the
    /// attach does not wait for it; the next index change or the end of
    /// this driver does): until it lands, a listing finds the lock without
    /// a key and reads the lock. The index only speeds up listings, so a
    /// failure is logged, not returned.
    fn index_set(&self, image: &str, lock_id: &str) {
        if let Some(lib) = &self.lib {
            // One round trip of this process's connection: done now.
            if let Err(e) = lib.omap_set(&self.pool, HOLDERS_OBJECT, image, lock_id) {
                tracing::warn!(volume = image, error = %e, "could not record the holder in the index; listings read the lock instead");
            }
            return;
        }
        self.settle_pending();
        let mut cmd = self.ceph.command("rados");
        cmd.args([
            "-p",
            &self.pool,
            "setomapval",
            HOLDERS_OBJECT,
            image,
            lock_id,
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
        match cmd.spawn() {
            Ok(c) => self
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(c),
            Err(e) => {
                tracing::warn!(volume = image, error = %e, "could not record the holder in the index; listings read the lock instead")
            }
        }
    }

    /// Remove `image` from the index (before its lock changes: a crash
    /// then leaves a lock without a key, which listings read from the
    /// lock). A missing object or key is no error.
    fn index_clear(&self, image: &str) -> Result<()> {
        self.settle_pending();
        let cleared = match &self.lib {
            Some(lib) => lib.omap_rm(&self.pool, HOLDERS_OBJECT, image),
            None => self
                .ceph
                .run(
                    "rados",
                    &["-p", &self.pool, "rmomapkey", HOLDERS_OBJECT, image],
                )
                .map(|_| ()),
        };
        match cleared {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == Kind::NotFound => Ok(()),
            Err(e) => Err(e.context(format!("clearing the holder index of volume {image}"))),
        }
    }

    /// Image metadata `rexray.*` of `image`, prefix removed.
    fn meta(&self, image: &str) -> Result<BTreeMap<String, String>> {
        let meta: BTreeMap<String, String> = match &self.lib {
            Some(lib) => lib.metadata(&self.pool, image)?,
            None => {
                let meta =
                    self.rbd(&["image-meta", "list", "--format", "json", &self.spec(image)])?;
                if meta.trim().is_empty() {
                    Default::default()
                } else {
                    parse("rbd image-meta list", &meta)?
                }
            }
        };
        Ok(meta
            .into_iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(META_PREFIX)?.to_string(), v)))
            .collect())
    }

    fn watchers(&self, image: &str) -> Result<Vec<String>> {
        let out = self.rbd(&["status", "--format", "json", &self.spec(image)])?;
        let s: Status = parse("rbd status", &out)?;
        Ok(s.watchers.into_iter().map(|w| w.address).collect())
    }

    fn holder_of(&self, lock: &LockEntry) -> InstanceId {
        InstanceId {
            id: lock
                .id
                .strip_prefix(LOCK_PREFIX)
                .unwrap_or(&lock.id)
                .to_string(),
            driver: "rbd".into(),
            service: self.info.service.clone(),
        }
    }

    fn volume(&self, image: &str, size: u64, locks: &[LockEntry]) -> Volume {
        let id = self.id_of(image);
        let mut v = Volume {
            id: id.clone(),
            name: image.to_string(),
            size: size.div_ceil(GIB),
            volume_type: "rbd".into(),
            ..Default::default()
        };
        v.fields.insert("pool".into(), self.pool.clone());
        for l in locks {
            v.attachments.push(Attachment {
                instance_id: self.holder_of(l),
                status: "attached".into(),
                volume_id: id.clone(),
                ..Default::default()
            });
        }
        v
    }

    /// The size and fields of `image` a recent lookup found.
    fn seen(&self, image: &str) -> Option<(Info, BTreeMap<String, String>)> {
        if !reuse_lookups() {
            return None;
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.retain(|_, s| s.at.elapsed() < SEEN_FOR);
        seen.get(image).map(|s| (s.info.clone(), s.meta.clone()))
    }

    fn remember(&self, image: &str, info: &Info, meta: &BTreeMap<String, String>) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.insert(
            image.to_string(),
            Seen {
                at: std::time::Instant::now(),
                info: info.clone(),
                meta: meta.clone(),
            },
        );
    }

    fn forget(&self, image: &str) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.remove(image);
    }

    /// The size and fields of `image` (`None`: no such image), from a
    /// recent lookup, else asked (two calls at once).
    fn info_and_meta(&self, image: &str) -> Result<Option<(Info, BTreeMap<String, String>)>> {
        if let Some(s) = self.seen(image) {
            return Ok(Some(s));
        }
        let (info, meta) = both(|| self.info_of(image), || self.meta(image));
        let Some(info) = info? else {
            return Ok(None);
        };
        let meta = match meta {
            Ok(m) => m,
            Err(e) if e.kind() == Kind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        self.remember(image, &info, &meta);
        Ok(Some((info, meta)))
    }

    /// The volume of `info` with its holders and fields.
    fn full_volume(
        &self,
        info: &Info,
        locks: &[LockEntry],
        meta: BTreeMap<String, String>,
    ) -> Volume {
        let mut v = self.volume(&info.name, info.size, locks);
        apply_meta(&mut v, meta);
        if !info.create_timestamp.is_empty() {
            v.fields
                .insert("createTimestamp".into(), info.create_timestamp.clone());
        }
        v
    }

    /// The volumes of `entries`; with `index`, the holders of locked
    /// images from it (`Some(None)`: the pool has no index), a locked
    /// image without a key read with `rbd lock ls`.
    fn volumes(
        &self,
        entries: &[LsEntry],
        index: Option<Option<&BTreeMap<String, String>>>,
    ) -> Result<Vec<Volume>> {
        let images: Vec<&LsEntry> = entries.iter().filter(|e| e.snapshot.is_none()).collect();
        let Some(index) = index else {
            return Ok(images
                .iter()
                .map(|e| self.volume(&e.image, e.size, &[]))
                .collect());
        };
        // Locked images the index does not name: their locks, read
        // concurrently (a few at a time).
        let unknown: Vec<&str> = images
            .iter()
            .filter(|e| e.lock_type.is_some() && index.and_then(|i| i.get(&e.image)).is_none())
            .map(|e| e.image.as_str())
            .collect();
        let mut read: BTreeMap<&str, Vec<LockEntry>> = BTreeMap::new();
        for chunk in unknown.chunks(4) {
            let got: Vec<Result<Vec<LockEntry>>> = std::thread::scope(|s| {
                let hs: Vec<_> = chunk.iter().map(|i| s.spawn(|| self.locks(i))).collect();
                hs.into_iter()
                    .map(|h| {
                        h.join()
                            .unwrap_or_else(|_| Err(Error::backend("a lock lookup panicked")))
                    })
                    .collect()
            });
            for (i, r) in chunk.iter().zip(got) {
                match r {
                    Ok(l) => {
                        read.insert(i, l);
                    }
                    // Removed since the listing.
                    Err(e) if e.kind() == Kind::NotFound => {
                        read.insert(i, Vec::new());
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(images
            .iter()
            .map(|e| {
                let locks = match (&e.lock_type, index.and_then(|i| i.get(&e.image))) {
                    // Unlocked: no holder, whatever a (stale) key says.
                    (None, _) => Vec::new(),
                    (Some(_), Some(id)) => vec![LockEntry {
                        id: id.clone(),
                        locker: String::new(),
                        address: String::new(),
                    }],
                    (Some(_), None) => read.remove(e.image.as_str()).unwrap_or_default(),
                };
                self.volume(&e.image, e.size, &locks)
            })
            .collect())
    }

    /// `rbd info` of an image, or `None` when it does not exist.
    fn info_of(&self, image: &str) -> Result<Option<Info>> {
        if let Some(lib) = &self.lib {
            return match lib.stat(&self.pool, image) {
                Ok((size, create_timestamp)) => Ok(Some(Info {
                    name: image.to_string(),
                    size,
                    create_timestamp,
                })),
                Err(e) if e.kind() == Kind::NotFound => Ok(None),
                Err(e) => Err(e),
            };
        }
        match self.rbd(&["info", "--format", "json", &self.spec(image)]) {
            Ok(out) => Ok(Some(parse("rbd info", &out)?)),
            Err(e) if e.kind() == Kind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn must_volume(&self, id: &str) -> Result<Volume> {
        self.inspect(id)?
            .ok_or_else(|| Error::not_found(format!("volume {id} not found")))
    }

    /// A new image's name: valid, and not another volume's id (`<pool>.<image>`
    /// of an image that exists). Whether the name is free is left to
    /// `rbd create` (or `rbd cp`), which refuses an existing image: no
    /// listing of the pool.
    fn check_new(&self, name: &str) -> Result<()> {
        image_name("volume", name)?;
        if let Some(image) = self.image_of(name) {
            if self.info_of(image)?.is_some() {
                let id = self.id_of(image);
                return super::refuse_name_that_is_an_id(
                    "volume",
                    name,
                    std::iter::once((id.as_str(), image)),
                );
            }
        }
        Ok(())
    }

    /// The error of an image made over an existing one, said plainly.
    /// `rbd cp` of `from` (an image or snapshot spec of `gib` GiB) to the
    /// new image `new_name`, waited for as long as its size needs. A copy
    /// that failed part-way (cut off, or the cluster's error) leaves no
    /// partial image behind; one refused because the name was taken in
    /// the meantime leaves the other's image alone.
    fn copy_image(&self, from: &str, new_name: &str, gib: u64) -> Result<()> {
        let to = self.spec(new_name);
        let args = [
            "cp",
            "--no-progress",
            "--image-feature",
            "layering",
            from,
            to.as_str(),
        ];
        match self.ceph.run_bulk("rbd", &args, gib) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == Kind::AlreadyExists => Err(Self::exists(new_name)(e)),
            Err(e) => {
                let _ = self
                    .ceph
                    .run_bulk("rbd", &["rm", "--no-progress", &to], gib);
                Err(e)
            }
        }
    }

    fn exists(name: &str) -> impl Fn(Error) -> Error + '_ {
        move |e| {
            if e.kind() == Kind::AlreadyExists {
                Error::exists(format!("volume {name} already exists"))
            } else {
                e
            }
        }
    }

    /// Put every client address of the old holder on the blocklist, so
    /// its writes fail from now on.
    fn fence(&self, image: &str, old: &[LockEntry]) -> Result<Vec<String>> {
        let mut addrs: Vec<String> = old
            .iter()
            .map(|l| l.address.clone())
            .chain(self.watchers(image)?)
            .filter(|a| !a.is_empty())
            .collect();
        // Never this process's own connection (it took the old lock when
        // the old holder's request came through this same service).
        if let Some((_, own)) = self.lib.as_ref().and_then(lib::Rbd::own_client) {
            addrs.retain(|a| !lib::same_client_addr(a, &own));
        }
        addrs.sort();
        addrs.dedup();
        self.blocklist(image, &addrs)?;
        tracing::info!(
            volume = image,
            fenced = addrs.join(","),
            "fenced the previous holder (blocklisted its clients)"
        );
        Ok(addrs)
    }

    /// Put `addrs` on the OSD blocklist for [`FENCE_EXPIRY`] (again: an
    /// address already there gets the whole expiry anew).
    fn blocklist(&self, image: &str, addrs: &[String]) -> Result<()> {
        let expire = FENCE_EXPIRY.as_secs().to_string();
        for a in addrs {
            // (Ceph before Pacific spells it `blacklist`.)
            let added = match self
                .ceph
                .run("ceph", &["osd", "blocklist", "add", a, &expire])
            {
                Err(e) if unknown_command(e.message()) => self
                    .ceph
                    .run("ceph", &["osd", "blacklist", "add", a, &expire]),
                r => r,
            };
            added.map_err(|e| e.context(format!("fencing the old holder of volume {image}")))?;
        }
        Ok(())
    }

    fn unlock(&self, image: &str, l: &LockEntry) -> Result<()> {
        let removed = match &self.lib {
            Some(lib) => lib.unlock(&self.pool, image, &l.id, &l.locker),
            None => self
                .rbd(&["lock", "rm", &self.spec(image), &l.id, &l.locker])
                .map(|_| ()),
        };
        match removed {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == Kind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn snap_id(&self, image: &str, snap: &str) -> String {
        format!("{}@{snap}", self.id_of(image))
    }

    /// When each snapshot of `image` was taken (RFC 3339, UTC), by name;
    /// empty when the image cannot be asked (removed since it was listed,
    /// say): a time is a detail of the listing, never a reason to fail it.
    fn snap_times(&self, image: &str) -> BTreeMap<String, String> {
        #[derive(Deserialize)]
        struct SnapEntry {
            name: String,
            #[serde(default)]
            timestamp: String,
        }
        let spec = self.spec(image);
        let args = ["snap", "ls", "--format", "json", spec.as_str()];
        let mut cmd = self.ceph.command("rbd");
        // The tool prints ctime(3): local time, so make it UTC's.
        cmd.args(args).env("TZ", "UTC");
        let Ok(out) = self.ceph.run_cmd(cmd, &format!("rbd {}", args.join(" "))) else {
            return BTreeMap::new();
        };
        let Ok(list) = parse::<Vec<SnapEntry>>("rbd snap ls", &out) else {
            return BTreeMap::new();
        };
        list.into_iter()
            .filter_map(|s| Some((s.name, rfc3339_of_ctime(&s.timestamp)?)))
            .collect()
    }

    /// `(image, snapshot)` of a snapshot id of this pool.
    fn snap_of<'a>(&self, snap_id: &'a str) -> Result<(&'a str, &'a str)> {
        let bad = || Error::not_found(format!("snapshot {snap_id} not found"));
        let (vol, snap) = snap_id.split_once('@').ok_or_else(bad)?;
        let img = self.image_of(vol).ok_or_else(bad)?;
        image_name("snapshot", snap).map_err(|_| bad())?;
        Ok((img, snap))
    }
}

/// Put an image's metadata (keys without [`META_PREFIX`]) on its
/// volume: the volume's own facts (under `volume.`) in their places, the
/// caller's fields as fields.
fn apply_meta(v: &mut Volume, meta: impl IntoIterator<Item = (String, String)>) {
    let own = META_VOLUME.strip_prefix(META_PREFIX).unwrap_or(META_VOLUME);
    for (k, val) in meta {
        match k.strip_prefix(own) {
            Some("type") => v.volume_type = val,
            Some("iops") => v.iops = val.parse().unwrap_or(0),
            Some("availabilityZone") => v.availability_zone = val,
            Some("createdAt") => {
                v.fields.insert("createdAt".into(), val);
            }
            Some(_) => {}
            None => {
                v.fields.insert(k, val);
            }
        }
    }
}

/// Whether `rbd ls -l` failed on an image that went away while it
/// listed.
fn removed_while_listed(msg: &str) -> bool {
    msg.contains("error opening")
        && !msg.contains("error opening pool")
        && msg.contains("(2) No such file or directory")
}

fn same(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Run `a` and `b` at the same time (two Ceph calls in one round trip).
fn both<A: Send, B: Send>(a: impl FnOnce() -> A + Send, b: impl FnOnce() -> B + Send) -> (A, B) {
    std::thread::scope(|s| {
        let hb = s.spawn(b);
        let ra = a();
        let rb = match hb.join() {
            Ok(r) => r,
            Err(p) => std::panic::resume_unwind(p),
        };
        (ra, rb)
    })
}

/// The keys and values of `rados listomapvals`, which prints each key on
/// a line, then `value (N bytes) :`, then a hex dump of the value
/// (`00000000  72 65 78 ... |rex...|`), then the end offset and a blank
/// line.
fn parse_omap_dump(out: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let mut lines = out.lines().peekable();
    while let Some(key) = lines.next() {
        if key.is_empty() {
            continue;
        }
        let Some(len) = lines
            .peek()
            .and_then(|l| l.strip_prefix("value ("))
            .and_then(|l| l.split_once(' '))
            .and_then(|(n, _)| n.parse::<usize>().ok())
        else {
            continue;
        };
        lines.next();
        let mut bytes = Vec::with_capacity(len);
        while bytes.len() < len {
            let Some(l) = lines.next() else { break };
            // The offset, then up to 16 two-digit bytes, then `|ascii|`.
            for w in l.split_whitespace().skip(1) {
                if w.len() != 2 || bytes.len() >= len {
                    break;
                }
                match u8::from_str_radix(w, 16) {
                    Ok(b) => bytes.push(b),
                    Err(_) => break,
                }
            }
        }
        if bytes.len() == len {
            map.insert(
                key.to_string(),
                String::from_utf8_lossy(&bytes).into_owned(),
            );
        }
    }
    map
}

impl Controller for RbdDriver {
    fn info(&self) -> &ServiceInfo {
        &self.info
    }
    fn offers(&self) -> crate::storage::controller::Offers {
        use crate::storage::controller::Offers;
        // `rbd snap create` is atomic, whoever has the image mapped.
        Offers {
            live_snapshots: true,
            ..Offers::ALL
        }
    }

    fn list(&self) -> Result<Vec<Volume>> {
        // One `rbd ls -l` and one read of the index, side by side.
        let (entries, index) = both(|| self.ls(), || self.index());
        let entries = entries?;
        let index = index.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "could not read the holder index; reading each lock");
            None
        });
        self.volumes(&entries, Some(index.as_ref()))
    }

    fn list_metadata(&self) -> Result<std::sync::Arc<[Volume]>> {
        let entries = self.ls()?;
        Ok(self.volumes(&entries, None)?.into())
    }

    fn inspect(&self, id: &str) -> Result<Option<Volume>> {
        let Some(image) = self.image_of(id) else {
            return Ok(None);
        };
        // The holder always; the size and fields beside it unless a
        // lookup of this operation found them already: one round.
        let (locks, found) = both(|| self.recent_locks(image), || self.info_and_meta(image));
        let Some((info, meta)) = found? else {
            return Ok(None);
        };
        let locks = match locks {
            Ok(l) => l,
            Err(e) if e.kind() == Kind::NotFound => {
                self.forget(image);
                self.forget_held(image);
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        Ok(Some(self.full_volume(&info, &locks, meta)))
    }

    fn lookup_name(&self, name: &str) -> Result<Option<Volume>> {
        if image_name("volume", name).is_err() {
            return Ok(None);
        }
        self.inspect(&self.id_of(name))
    }

    fn lookup_metadata_name(&self, name: &str) -> Result<Option<Volume>> {
        if image_name("volume", name).is_err() {
            return Ok(None);
        }
        // Docker's Get shows the volume's type, IOPS, zone, fields and
        // creation time: they are in the image's metadata.
        let Some((info, meta)) = self.info_and_meta(name)? else {
            return Ok(None);
        };
        Ok(Some(self.full_volume(&info, &[], meta)))
    }

    fn create(&self, name: &str, spec: &CreateSpec) -> Result<Volume> {
        if spec.encrypted {
            return Err(Error::unsupported(
                "the rbd driver cannot encrypt volumes: create it without the encrypted option (encrypt below Ceph, e.g. OSDs on dm-crypt)",
            ));
        }
        self.check_new(name)?;
        let bytes = crate::input::gib_bytes(spec.size.max(1))?;
        let size = format!("{}G", spec.size.max(1));
        match &self.lib {
            // The image `rbd create --image-feature layering` makes.
            Some(lib) => lib.create(&self.pool, name, bytes, lib::FEATURE_LAYERING),
            None => self
                .rbd(&[
                    "create",
                    "--size",
                    &size,
                    "--image-feature",
                    "layering",
                    &self.spec(name),
                ])
                .map(|_| ()),
        }
        .map_err(Self::exists(name))?;
        // What Ceph does not keep for an image: the volume's type, IOPS,
        // zone and creation time (RFC 3339, as every driver answers it)
        // under `rexray.volume.`, the caller's fields under `rexray.`;
        // all at once (one call each).
        let created_at = now_rfc3339();
        let iops = spec.iops.to_string();
        let mut meta: Vec<(String, &str)> = vec![(format!("{META_VOLUME}createdAt"), &created_at)];
        for (k, v) in [
            ("type", spec.volume_type.as_str()),
            ("iops", if spec.iops > 0 { iops.as_str() } else { "" }),
            ("availabilityZone", spec.availability_zone.as_str()),
        ] {
            if !v.is_empty() {
                meta.push((format!("{META_VOLUME}{k}"), v));
            }
        }
        for (k, v) in &spec.fields {
            meta.push((format!("{META_PREFIX}{k}"), v));
        }
        let set: Vec<Result<String>> = if let Some(lib) = &self.lib {
            // One open of the image, the keys set one after the other.
            let pairs: Vec<(String, String)> = meta
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect();
            vec![lib
                .set_metadata(&self.pool, name, &pairs)
                .map(|_| String::new())]
        } else {
            std::thread::scope(|s| {
                let hs: Vec<_> = meta
                    .iter()
                    .map(|(key, v)| {
                        let spec = self.spec(name);
                        s.spawn(move || self.rbd(&["image-meta", "set", &spec, key, v]))
                    })
                    .collect();
                hs.into_iter()
                    .map(|h| {
                        h.join()
                            .unwrap_or_else(|_| Err(Error::backend("image-meta set panicked")))
                    })
                    .collect()
            })
        };
        if let Some(Err(e)) = set.into_iter().find(Result::is_err) {
            let _ = self.rbd(&["rm", "--no-progress", &self.spec(name)]);
            return Err(e);
        }
        tracing::info!(
            volume = name,
            pool = self.pool,
            size,
            "created an rbd image"
        );
        // What was just made, without asking again: no holder yet.
        let mut v = self.volume(name, bytes, &[]);
        apply_meta(
            &mut v,
            meta.into_iter().filter_map(|(k, val)| {
                Some((k.strip_prefix(META_PREFIX)?.to_string(), val.to_string()))
            }),
        );
        Ok(v)
    }

    fn remove(&self, id: &str, force: bool) -> Result<()> {
        let image = self.must_image(id)?;
        let v = self.must_volume(id)?;
        if let (Some(a), false) = (v.attachments.first(), force) {
            return Err(Error::in_use(format!(
                "volume {image} is attached to {}; detach it first, or remove it with force",
                a.instance_id.id
            )));
        }
        self.forget(image);
        self.forget_held(image);
        let open = self.watchers(image)?;
        if !open.is_empty() {
            return Err(Error::in_use(format!(
                "volume {image} is in use: the image is open by {} (a mapped device or rbd-fuse); detach it there first",
                open.join(", ")
            )));
        }
        self.index_clear(image)?;
        for l in self.locks(image)? {
            self.unlock(image, &l)?;
        }
        self.ceph
            .run_bulk("rbd", &["rm", "--no-progress", &self.spec(image)], v.size)
            .map_err(|e| {
                if e.message().contains("snapshots") {
                    Error::in_use(format!(
                        "volume {image} has snapshots; remove them first (rexray snapshot rm)"
                    ))
                } else {
                    e
                }
            })?;
        Ok(())
    }

    fn attach(
        &self,
        id: &str,
        who: &InstanceId,
        force: bool,
        _next_device: Option<&str>,
    ) -> Result<Attached> {
        let image = self.must_image(id)?;
        let token = self.spec(image);
        let mine = format!("{LOCK_PREFIX}{}", who.id);
        // The lock, the size and the fields of the volume to return: what
        // this operation's lookup just read, else one round of calls.
        let (locks, found) = both(|| self.recent_locks(image), || self.info_and_meta(image));
        let not_found = || Error::not_found(format!("volume {id} not found"));
        let (info, meta) = found?.ok_or_else(not_found)?;
        let locks = locks.map_err(|e| {
            if e.kind() == Kind::NotFound {
                not_found()
            } else {
                e
            }
        })?;
        let (own, others): (Vec<_>, Vec<_>) = locks.into_iter().partition(|l| same(&l.id, &mine));
        if !others.is_empty() {
            let holder = self.holder_of(&others[0]).id;
            if !force {
                return Err(Error::in_use(format!(
                    "volume {image} is attached to {holder}; detach it there first, or attach with force (preempt) to take it over (the old holder is fenced)"
                )));
            }
            // The key goes before the lock changes hands.
            self.index_clear(image)?;
            let fenced = self.fence(image, &others)?;
            fail::fail_point!("rbd::fence-after-blocklist", |_| crate::crash_here());
            for l in &others {
                self.unlock(image, l)?;
            }
            // Removing a lock may blocklist its address again for Ceph's
            // default hour (the `rbd lock rm` tool does), which would cut
            // the fence's week short: the week again, last.
            self.blocklist(image, &fenced)?;
            fail::fail_point!("rbd::fence-before-lock", |_| crate::crash_here());
            self.forget_held(image);
        }
        let held = match own.into_iter().next() {
            Some(l) => l,
            None => {
                // A stale key of a free image is overwritten just after.
                let added = match &self.lib {
                    Some(lib) => lib.lock(&self.pool, image, &mine),
                    None => self
                        .rbd(&["lock", "add", &self.spec(image), &mine])
                        .map(|_| ()),
                };
                match added {
                    Ok(_) => {}
                    Err(e) => {
                        // The lock this operation read earlier is stale:
                        // read it again. Taken by this instance meanwhile
                        // (another call of this node, which waited for
                        // the same volume), it is ours; by another, refused.
                        self.forget_held(image);
                        let now = self.locks(image).map_err(|_| e.clone())?;
                        if let Some(l) = now.iter().find(|l| same(&l.id, &mine)) {
                            tracing::debug!(
                                volume = image,
                                "lock taken by this instance meanwhile"
                            );
                            let l = l.clone();
                            self.set_held(image, std::slice::from_ref(&l));
                            self.index_set(image, &l.id);
                            return Ok(Attached {
                                volume: self.full_volume(&info, &[l], meta),
                                token,
                            });
                        }
                        if let Some(l) = now.first() {
                            return Err(Error::in_use(format!(
                                "volume {image} was attached by {} at the same time; detach it there first, or attach with force (preempt) to take it over",
                                self.holder_of(l).id
                            )));
                        }
                        return Err(e);
                    }
                }
                fail::fail_point!("rbd::attach-after-lock", |_| crate::crash_here());
                LockEntry {
                    id: mine.clone(),
                    locker: String::new(),
                    address: String::new(),
                }
            }
        };
        self.set_held(image, std::slice::from_ref(&held));
        self.index_set(image, &held.id);
        // The volume as it is now: this instance its only holder.
        Ok(Attached {
            volume: self.full_volume(&info, &[held], meta),
            token,
        })
    }

    fn detach(&self, id: &str, who: &InstanceId, force: bool) -> Result<Volume> {
        let image = self.must_image(id)?;
        let mine = format!("{LOCK_PREFIX}{}", who.id);
        // The index key goes before the lock (a crash between leaves a
        // lock without a key, read from the lock).
        let (locks, cleared) = both(|| self.locks(image), || self.index_clear(image));
        let locks = locks?;
        cleared?;
        fail::fail_point!("rbd::detach-before-unlock", |_| crate::crash_here());
        for l in &locks {
            if !same(&l.id, &mine) && !force {
                // Nothing changed: the index names the holder again.
                self.index_set(image, &l.id);
                return Err(Error::in_use(format!(
                    "volume {image} is attached to {}; detach it there, or with force",
                    self.holder_of(l).id
                )));
            }
        }
        for l in &locks {
            self.unlock(image, l)?;
        }
        self.set_held(image, &[]);
        self.must_volume(id)
    }

    fn resize(&self, id: &str, size_gib: u64) -> Result<u64> {
        let image = self.must_image(id)?;
        let bytes = crate::input::gib_bytes(size_gib)?;
        self.forget(image);
        let size = format!("{size_gib}G");
        self.rbd(&[
            "resize",
            "--no-progress",
            "--size",
            &size,
            &self.spec(image),
        ])?;
        Ok(bytes)
    }

    fn copy(
        &self,
        id: &str,
        new_name: &str,
        spec: &CreateSpec,
        intact: &dyn Fn() -> Result<()>,
        prepare: Prepare<'_>,
    ) -> Result<Volume> {
        let image = self.must_image(id)?;
        let src = self.must_volume(id)?;
        self.check_new(new_name)?;
        self.copy_image(&self.spec(image), new_name, src.size)?;
        if let Err(e) = intact() {
            let _ = self.rbd(&["rm", "--no-progress", &self.spec(new_name)]);
            return Err(e);
        }
        // The copy's own facts, as create writes them, beside the resize.
        let (set, grown) = both(
            || set_copy_meta(self, new_name, spec),
            || {
                if spec.size > src.size {
                    self.resize(&self.id_of(new_name), spec.size)?;
                }
                Ok(())
            },
        );
        if let Err(e) = set.and(grown) {
            let _ = self.rbd(&["rm", "--no-progress", &self.spec(new_name)]);
            return Err(e);
        }
        self.prepare_copy(new_name, prepare)?;
        self.must_volume(&self.id_of(new_name))
    }

    fn snapshot(
        &self,
        id: &str,
        snap_name: &str,
        intact: &dyn Fn() -> Result<()>,
    ) -> Result<Snapshot> {
        let image = self.must_image(id)?;
        image_name("snapshot", snap_name)?;
        let v = self.must_volume(id)?;
        let spec = format!("{}@{snap_name}", self.spec(image));
        self.rbd(&["snap", "create", "--no-progress", &spec])?;
        if let Err(e) = intact() {
            let _ = self.rbd(&["snap", "rm", "--no-progress", &spec]);
            return Err(e);
        }
        Ok(Snapshot {
            name: snap_name.to_string(),
            id: self.snap_id(image, snap_name),
            start_time: now_rfc3339(),
            status: "completed".into(),
            volume_id: id.to_string(),
            volume_size: v.size,
            ..Default::default()
        })
    }

    fn register_node(&self, who: &InstanceId) -> Result<()> {
        let when = now_rfc3339();
        match &self.lib {
            Some(lib) => lib.omap_set(&self.pool, NODES_OBJECT, &who.id, &when),
            None => self
                .ceph
                .run(
                    "rados",
                    &["-p", &self.pool, "setomapval", NODES_OBJECT, &who.id, &when],
                )
                .map(|_| ()),
        }
        .map_err(|e| e.context(format!("registering node {} in pool {}", who.id, self.pool)))
    }

    fn node_known(&self, node: &str) -> Result<Option<bool>> {
        // No registry yet (no node service of this release has started):
        // any node is taken, as before there was one.
        let Some(nodes) = self.omap_of(NODES_OBJECT)? else {
            return Ok(None);
        };
        if nodes.keys().any(|k| k.eq_ignore_ascii_case(node)) {
            return Ok(Some(true));
        }
        // A node that holds a volume now is a node, registered or not
        // (one of an earlier release, say).
        let holder = format!("{LOCK_PREFIX}{node}");
        Ok(Some(self.index()?.is_some_and(|holders| {
            holders.values().any(|h| h.eq_ignore_ascii_case(&holder))
        })))
    }

    fn snapshots(&self) -> Result<Vec<Snapshot>> {
        let snaps: Vec<LsEntry> = self
            .ls()?
            .into_iter()
            .filter(|e| e.snapshot.is_some())
            .collect();
        // When each was taken: one `rbd snap ls` per image that has
        // snapshots, a few at a time.
        let mut images: Vec<&str> = snaps.iter().map(|e| e.image.as_str()).collect();
        images.sort_unstable();
        images.dedup();
        let mut times = BTreeMap::new();
        for batch in images.chunks(8) {
            std::thread::scope(|sc| {
                let asked: Vec<_> = batch
                    .iter()
                    .map(|img| (*img, sc.spawn(|| self.snap_times(img))))
                    .collect();
                for (img, t) in asked {
                    times.insert(img, t.join().unwrap_or_default());
                }
            });
        }
        Ok(snaps
            .iter()
            .filter_map(|e| {
                let snap = e.snapshot.clone()?;
                Some(Snapshot {
                    id: self.snap_id(&e.image, &snap),
                    start_time: times
                        .get(e.image.as_str())
                        .and_then(|t| t.get(&snap))
                        .cloned()
                        .unwrap_or_default(),
                    name: snap,
                    status: "completed".into(),
                    volume_id: self.id_of(&e.image),
                    volume_size: e.size.div_ceil(GIB),
                    ..Default::default()
                })
            })
            .collect())
    }

    fn remove_snapshot(&self, snap_id: &str) -> Result<()> {
        let (image, snap) = self.snap_of(snap_id)?;
        let spec = format!("{}@{snap}", self.spec(image));
        self.rbd(&["snap", "rm", "--no-progress", &spec])
            .map(|_| ())
    }

    fn create_from_snapshot(
        &self,
        snap_id: &str,
        new_name: &str,
        spec: &CreateSpec,
        prepare: Prepare<'_>,
    ) -> Result<Volume> {
        let (image, snap) = self.snap_of(snap_id)?;
        self.check_new(new_name)?;
        let from = format!("{}@{snap}", self.spec(image));
        // (The image's size now bounds its snapshot's: images only grow.)
        let gib = self.info_of(image)?.map_or(0, |i| i.size.div_ceil(GIB));
        self.copy_image(&from, new_name, gib)?;
        // The new volume's own facts, as create writes them, beside the
        // resize.
        let id = self.id_of(new_name);
        let (set, grown) = both(
            || set_copy_meta(self, new_name, spec),
            || {
                // Its size without caching its fields (being written).
                let size = self.info_of(new_name)?.map_or(0, |i| i.size.div_ceil(GIB));
                if spec.size > size {
                    self.resize(&id, spec.size)?;
                }
                Ok(())
            },
        );
        if let Err(e) = set.and(grown) {
            let _ = self.rbd(&["rm", "--no-progress", &self.spec(new_name)]);
            return Err(e);
        }
        self.prepare_copy(new_name, prepare)?;
        self.must_volume(&id)
    }
}

/// Write on `image`, a new copy or a volume made from a snapshot, what
/// [`RbdDriver::create`] writes: its creation time and the type, IOPS,
/// zone and fields `spec` asks for (the source's, which `rbd cp` copies,
/// stay for what it leaves unset); all at once (one call each).
fn set_copy_meta(d: &RbdDriver, image: &str, spec: &CreateSpec) -> Result<()> {
    let iops = spec.iops.to_string();
    let mut meta = vec![(format!("{META_VOLUME}createdAt"), now_rfc3339())];
    for (k, v) in [
        ("type", spec.volume_type.as_str()),
        ("iops", if spec.iops > 0 { iops.as_str() } else { "" }),
        ("availabilityZone", spec.availability_zone.as_str()),
    ] {
        if !v.is_empty() {
            meta.push((format!("{META_VOLUME}{k}"), v.to_string()));
        }
    }
    for (k, v) in &spec.fields {
        meta.push((format!("{META_PREFIX}{k}"), v.clone()));
    }
    if let Some(lib) = &d.lib {
        // One open of the image, the keys set one after the other.
        return lib.set_metadata(&d.pool, image, &meta);
    }
    let target = d.spec(image);
    std::thread::scope(|s| {
        let hs: Vec<_> = meta
            .iter()
            .map(|(key, v)| {
                let target = &target;
                s.spawn(move || d.rbd(&["image-meta", "set", target, key, v]))
            })
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::backend("image-meta set panicked")))
            })
            .collect::<Result<Vec<_>>>()
    })
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn drv() -> RbdDriver {
        let ceph = Ceph::new("--conf /nonexistent/ceph.conf", Duration::from_secs(1)).unwrap();
        RbdDriver::new(ceph, "rbd", "").unwrap()
    }

    #[test]
    fn a_listing_that_met_a_removal_is_recognised() {
        assert!(removed_while_listed(
            "rbd ls -l --format json -p rbd failed (cluster of /c/ceph.conf): rbd: error opening uuxfs: (2) No such file or directory; rbd: listing images failed: (2) No such file or directory"
        ));
        assert!(!removed_while_listed(
            "rbd: error opening pool 'nopool': (2) No such file or directory"
        ));
        assert!(!removed_while_listed("did not answer"));
    }

    #[test]
    fn snapshot_times_are_read_from_ctime_in_utc() {
        let t = rfc3339_of_ctime;
        assert_eq!(
            t("Sun Dec  6 18:00:09 2026").as_deref(),
            Some("2026-12-06T18:00:09Z")
        );
        assert_eq!(
            t("Tue Feb 29 00:00:00 2028").as_deref(),
            Some("2028-02-29T00:00:00Z")
        );
        // Not a time, no time (a snapshot of a cluster that keeps none),
        // or a date that does not exist: none.
        for bad in [
            "",
            "Sun Dec 6 18:00 2026",
            "Sun Foo  6 18:00:00 2026",
            "Thu Feb 30 00:00:00 2027",
            "Sun Dec  6 25:00:00 2026",
            "2026-12-06T18:00:00Z",
        ] {
            assert_eq!(t(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn ids_are_pool_dot_image() {
        let d = drv();
        assert_eq!(d.id_of("v1"), "rbd.v1");
        assert_eq!(d.image_of("rbd.v1"), Some("v1"));
        assert_eq!(d.image_of("rbd.v1.x"), Some("v1.x"));
        assert_eq!(d.image_of("other.v1"), None);
        assert_eq!(d.image_of("rbd."), None);
        assert_eq!(d.snap_of("rbd.v1@s1").unwrap(), ("v1", "s1"));
        assert!(d.snap_of("rbd.v1").is_err());
        assert_eq!(d.info().driver, "rbd");
        assert!(RbdDriver::new(
            Ceph::new("", Duration::from_secs(1)).unwrap(),
            "bad/pool",
            ""
        )
        .is_err());
    }

    #[test]
    fn the_holder_index_is_read_from_the_omap_dump() {
        let out = "life1\nvalue (15 bytes) :\n00000000  72 65 78 72 61 79 3a 2f  61 2f 62 20 7c 20 63     |rexray:/a/b | c|\n0000000f\n\nv2\nvalue (20 bytes) :\n00000000  72 65 78 72 61 79 3a 6e  6f 64 65 2d 61 2d 31 32  |rexray:node-a-12|\n00000010  33 34 35 36                                       |3456|\n00000014\n\nempty\nvalue (0 bytes) :\n\n";
        let m = parse_omap_dump(out);
        assert_eq!(m.len(), 3, "{m:?}");
        assert_eq!(m["life1"], "rexray:/a/b | c");
        assert_eq!(m["v2"], "rexray:node-a-123456");
        assert_eq!(m["empty"], "");
        assert!(parse_omap_dump("").is_empty());
    }

    fn entry(image: &str, locked: bool) -> LsEntry {
        LsEntry {
            image: image.into(),
            size: GIB,
            snapshot: None,
            lock_type: locked.then(|| "exclusive".to_string()),
        }
    }

    #[test]
    fn a_listing_trusts_a_key_only_for_a_locked_image() {
        let d = drv();
        let index: BTreeMap<String, String> = [
            ("held".to_string(), "rexray:node-a".to_string()),
            ("stale".to_string(), "rexray:node-b".to_string()),
        ]
        .into();
        let vols = d
            .volumes(
                &[
                    entry("held", true),
                    entry("stale", false),
                    entry("free", false),
                ],
                Some(Some(&index)),
            )
            .unwrap();
        let holders: Vec<(String, Vec<String>)> = vols
            .iter()
            .map(|v| {
                (
                    v.name.clone(),
                    v.attachments
                        .iter()
                        .map(|a| a.instance_id.id.clone())
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            holders,
            vec![
                ("held".to_string(), vec!["node-a".to_string()]),
                ("stale".to_string(), vec![]),
                ("free".to_string(), vec![]),
            ]
        );
        // Without holders asked for, no lookups at all.
        let vols = d.volumes(&[entry("held", true)], None).unwrap();
        assert!(vols[0].attachments.is_empty());
    }

    #[test]
    fn a_locked_image_without_a_key_is_read_from_its_lock() {
        // The cluster of drv() does not exist: the fallback lookup is
        // made, and its failure is the listing's.
        let d = drv();
        let e = d.volumes(&[entry("locked", true)], Some(None)).unwrap_err();
        assert!(e.message().contains("lock ls"), "{e}");
    }
}
