//! The `loop` driver, the embedded default: a volume is a sparse file on
//! this host, attached as a loop device.
//!
//! ```text
//! <volumePath>/catalog.db       every volume's and snapshot's metadata
//!                               (SQLite, see `catalog`), with its -wal
//!                               and -shm
//! <volumePath>/catalog.json     a marker that earlier releases refuse
//!                               (they kept the catalog there)
//! <volumePath>/catalog.lock     held while catalog.json is imported
//! <volumePath>/<id>.img         the sparse backing file
//! <volumePath>/<id>.owner       which instance attached it (written before
//!                               the attach, so a crash never orphans one)
//! <volumePath>/locks/<id>.lock  held while creating, removing, attaching
//!                               or detaching the volume
//! <volumePath>/snapshots/<id>.img  snapshot images
//! ```
//!
//! Copies and snapshots are reflinks (FICLONE) where the filesystem under
//! volumePath supports them (xfs, btrfs), else sparse copies that skip
//! holes, so a mostly empty 16 GiB volume copies in milliseconds.
//!
//! Whether a volume is attached, and as which device, is read from the
//! kernel (`/sys/block/loopN/loop/backing_file`), never from a record.
//! Several `REXRAY_HOME`s may share one volumePath: each is an instance,
//! and a volume attached by another one is "unavailable" to the rest
//! until it is detached or taken with force (preempt).

mod catalog;

use super::{loopdev, new_id, now_rfc3339, StorageDriver};
use crate::error::IoContext;
use crate::model::{
    Attachment, AttachmentState, CreateSpec, InstanceId, MountSource, Snapshot, Volume,
};
use crate::state::{atomic, FileLock};
use crate::{Error, Result};
use catalog::Catalog;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const GIB: u64 = 1 << 30;

/// How long a detach waits for a device someone else holds open for a
/// moment (a probe) to be released before it reports the device in use.
const DETACH_SETTLE: Duration = Duration::from_secs(2);

/// One volume in the catalog (also the shape of earlier releases'
/// `catalog.json` entries, for the import).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    id: String,
    name: String,
    size: u64,
    #[serde(rename = "type", default)]
    volume_type: String,
    #[serde(default)]
    iops: i64,
    #[serde(default)]
    availability_zone: String,
    #[serde(default)]
    created_at: String,
    #[serde(default)]
    fields: BTreeMap<String, String>,
}

/// One snapshot in the catalog.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SnapRecord {
    id: String,
    name: String,
    #[serde(rename = "volumeID")]
    volume_id: String,
    volume_size: u64,
    #[serde(default)]
    created_at: String,
    #[serde(default)]
    fields: BTreeMap<String, String>,
}

impl SnapRecord {
    fn to_snapshot(&self) -> Snapshot {
        Snapshot {
            name: self.name.clone(),
            id: self.id.clone(),
            start_time: self.created_at.clone(),
            status: "completed".into(),
            volume_id: self.volume_id.clone(),
            volume_size: self.volume_size,
            fields: self.fields.clone(),
            ..Default::default()
        }
    }
}

/// Who attached a volume.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Owner {
    #[serde(rename = "instanceID")]
    instance_id: InstanceId,
    #[serde(default)]
    device: String,
}

/// The loop driver.
pub struct LoopDriver {
    root: PathBuf,
    me: InstanceId,
    lock_timeout: Duration,
    /// `loop.preallocate`: images are allocated whole, never sparse.
    preallocate: bool,
    catalog: Catalog,
    /// Every volume's metadata as of a catalog generation, for the
    /// long-running service: a `List` among 100,000 volumes then costs one
    /// indexed read.
    cache: Mutex<Option<(i64, Arc<[Volume]>)>>,
}

/// Loop devices and the files behind them, read from sysfs.
fn kernel_loops() -> HashMap<PathBuf, Vec<PathBuf>> {
    let mut map: HashMap<PathBuf, Vec<PathBuf>> = HashMap::new();
    let Ok(rd) = std::fs::read_dir("/sys/block") else {
        return map;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let Ok(backing) = std::fs::read_to_string(e.path().join("loop/backing_file")) else {
            continue;
        };
        let backing = backing.trim_end_matches('\n');
        if backing.ends_with(" (deleted)") {
            continue;
        }
        map.entry(PathBuf::from(backing))
            .or_default()
            .push(PathBuf::from(format!("/dev/{name}")));
    }
    for devs in map.values_mut() {
        devs.sort();
    }
    map
}

/// What a claim is for: a volume or a snapshot.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Volume,
    Snapshot,
}

impl Kind {
    fn what(self) -> &'static str {
        match self {
            Kind::Volume => "volume",
            Kind::Snapshot => "snapshot",
        }
    }
    fn table(self) -> &'static str {
        match self {
            Kind::Volume => "volumes",
            Kind::Snapshot => "snapshots",
        }
    }
}

impl LoopDriver {
    /// Open (and create) the volume directory and its catalog.
    pub fn open(root: &Path, me: InstanceId, lock_timeout: Duration) -> Result<LoopDriver> {
        // Only root enters: the images hold every volume's data.
        use crate::files::{own_dir, Link, PRIVATE_DIR};
        let ctx = |e: Error| e.context("preparing the loop volume directory (loop.volumePath)");
        own_dir(root, PRIVATE_DIR, Link::Follow).map_err(ctx)?;
        for sub in ["locks", "snapshots"] {
            own_dir(&root.join(sub), PRIVATE_DIR, Link::Refuse).map_err(ctx)?;
        }
        // The kernel reports backing files by their resolved path.
        let root = root
            .canonicalize()
            .ctx(|| format!("resolving {}", root.display()))?;
        let catalog = Catalog::open(&root, lock_timeout)?;
        Ok(LoopDriver {
            root,
            me,
            lock_timeout,
            preallocate: false,
            catalog,
            cache: Mutex::new(None),
        })
    }

    /// With `on`, images are allocated whole at create and copy
    /// (`loop.preallocate`).
    pub fn preallocating(mut self, on: bool) -> LoopDriver {
        self.preallocate = on;
        self
    }

    /// The space figures of volumePath, from every image (a full scan).
    fn space(&self) -> Space {
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
    fn overcommit(&self) -> Option<Space> {
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
    fn warn_overcommit(&self, r: &Record, when: &str) {
        if let Some(sp) = self.overcommit() {
            tracing::warn!("{when} volume {}: {}", r.name, self.overcommit_text(r, &sp));
        }
    }

    fn overcommit_text(&self, r: &Record, sp: &Space) -> String {
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
    fn allocate(&self, f: &std::fs::File, path: &Path, name: &str, len: u64) -> Result<()> {
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

    fn image(&self, id: &str) -> PathBuf {
        self.root.join(format!("{id}.img"))
    }
    fn owner_path(&self, id: &str) -> PathBuf {
        self.root.join(format!("{id}.owner"))
    }
    fn snap_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }
    fn snap_image(&self, id: &str) -> PathBuf {
        self.snap_dir().join(format!("{id}.img"))
    }

    /// The lock a writer holds while a row of `kind` is not `ready`
    /// (for a volume, the same lock as attach and detach).
    fn row_lock_path(&self, kind: Kind, id: &str) -> PathBuf {
        match kind {
            Kind::Volume => self.root.join("locks").join(format!("{id}.lock")),
            Kind::Snapshot => self.root.join("locks").join(format!("{id}.snapshot.lock")),
        }
    }

    /// Claim `name` for a new volume or snapshot, in one transaction:
    /// finish what killed writers left, refuse a taken name or a name that
    /// is an id, draw an id that is neither, and insert the row (made by
    /// `insert`) in state `creating`. Returns the id and the held lock that
    /// tells a sweep this writer lives.
    fn claim(
        &self,
        kind: Kind,
        name: &str,
        insert: impl Fn(&rusqlite::Transaction<'_>, &str) -> rusqlite::Result<()>,
    ) -> Result<(String, FileLock)> {
        let what = kind.what();
        let step = format!("creating {what} {name}");
        for _ in 0..64 {
            let id = new_id()?;
            let lock = FileLock::acquire(
                &self.row_lock_path(kind, &id),
                self.lock_timeout,
                &format!("{what} {id}"),
            )?;
            let claimed = self.catalog.write_as(&step, false, |tx| {
                let sql = self.catalog.sql(&step);
                self.finish_unfinished(tx).map_err(&sql)?;
                let (named, id_of) = catalog::name_check(tx, kind.table(), name).map_err(&sql)?;
                if named {
                    return Err(Error::exists(format!("{what} {name} already exists")));
                }
                if let Some(other) = id_of {
                    super::refuse_name_that_is_an_id(
                        what,
                        name,
                        std::iter::once((name, other.as_str())),
                    )?;
                }
                let taken = id == name
                    || match kind {
                        Kind::Volume => catalog::volume_taken(tx, &id),
                        Kind::Snapshot => catalog::snapshot_taken(tx, &id),
                    }
                    .map_err(&sql)?;
                if taken {
                    return Ok(false);
                }
                insert(tx, &id).map_err(&sql)?;
                Ok(true)
            })?;
            if claimed {
                return Ok((id, lock));
            }
            lock.remove_file();
        }
        Err(Error::system(
            "could not draw a volume id that is not already an id or a name (64 tries)",
        ))
    }

    /// Mark the claimed row `id` ready (its image is in place and synced).
    fn publish(&self, kind: Kind, id: &str, name: &str) -> Result<()> {
        let step = format!("creating {} {name}", kind.what());
        self.catalog.write(&step, |tx| {
            catalog::set_state(tx, kind.table(), id, "creating", "ready")
                .map(|_| ())
                .map_err(self.catalog.sql(&step))
        })
    }

    /// Publish the finished copy `tmp` as a new volume or snapshot named
    /// `name`: claim the name (the row made by `insert`), move the copy to
    /// its image path, mark the row ready. Every failure undoes what was
    /// done — the copy, the image and the claim go — so nothing half-made
    /// is ever listed. Returns the id and the row's lock.
    fn publish_copy(
        &self,
        kind: Kind,
        name: &str,
        tmp: &Path,
        insert: impl Fn(&rusqlite::Transaction<'_>, &str) -> rusqlite::Result<()>,
        after_rename: &str,
    ) -> Result<(String, FileLock)> {
        let (id, lock) = self.claim(kind, name, insert).inspect_err(|_| {
            let _ = std::fs::remove_file(tmp);
        })?;
        let img = match kind {
            Kind::Volume => self.image(&id),
            Kind::Snapshot => self.snap_image(&id),
        };
        if let Err(e) = std::fs::rename(tmp, &img) {
            let _ = std::fs::remove_file(tmp);
            self.unclaim(kind, &id, lock);
            return Err(Error::from_io(format!("renaming {}", tmp.display()), &e));
        }
        let _ = after_rename; // a failpoint name, unused without the feature
        fail::fail_point!(after_rename, |_| crate::crash_here());
        if let Err(e) = self.publish(kind, &id, name) {
            let _ = std::fs::remove_file(&img);
            self.unclaim(kind, &id, lock);
            return Err(e);
        }
        Ok((id, lock))
    }

    /// Undo a claim whose image could not be made: the row goes (the
    /// image is already gone); if even that fails, the next claim does it.
    fn unclaim(&self, kind: Kind, id: &str, lock: FileLock) {
        let _ = self.catalog.write("undoing a failed create", |tx| {
            catalog::delete(tx, kind.table(), id).map_err(self.catalog.sql("undoing"))
        });
        lock.remove_file();
    }

    /// Finish the rows killed writers left (not `ready`, and their lock
    /// free): their images go, then the rows. An attached image is never
    /// removed.
    fn finish_unfinished(&self, tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
        let rows = Catalog::unfinished(tx)?;
        if rows.is_empty() {
            return Ok(());
        }
        let loops = kernel_loops();
        for u in rows {
            let kind = if u.snapshot {
                Kind::Snapshot
            } else {
                Kind::Volume
            };
            let Ok(Some(lock)) = FileLock::try_acquire(&self.row_lock_path(kind, &u.id)) else {
                continue; // its writer lives
            };
            let img = match kind {
                Kind::Volume => self.image(&u.id),
                Kind::Snapshot => self.snap_image(&u.id),
            };
            if loops.contains_key(&img) {
                continue;
            }
            tracing::info!(image = %img.display(), "removing an image a killed create or remove left behind");
            if std::fs::remove_file(&img).is_err() && img.exists() {
                continue;
            }
            if kind == Kind::Volume {
                let _ = std::fs::remove_file(self.owner_path(&u.id));
            }
            catalog::delete(tx, kind.table(), &u.id)?;
            lock.remove_file();
        }
        Ok(())
    }

    fn record(&self, id: &str) -> Result<Record> {
        crate::input::volume_id(id)?;
        self.catalog
            .by_id(id)?
            .ok_or_else(|| Error::not_found(format!("volume {id} not found")))
    }

    /// Copy `src` into a new volume image sized `bytes`, then record it
    /// under `name`. The copy goes to a temporary name first: a process
    /// killed meanwhile leaves a temporary file for the sweep, never a
    /// published one.
    fn create_copy(
        &self,
        src: &Path,
        name: &str,
        spec: &CreateSpec,
        fields: BTreeMap<String, String>,
        intact: &dyn Fn() -> Result<()>,
        prepare: super::Prepare<'_>,
    ) -> Result<Volume> {
        crate::input::volume_name(name)?;
        if spec.encrypted {
            return Err(Error::unsupported(
                "the loop driver cannot encrypt volumes: create it without the encrypted option",
            ));
        }
        // What killed copies left (their writers' flocks are gone).
        crate::files::sweep_temporaries(&self.root);
        let tmp_id = new_id()?;
        let tmp = self.root.join(format!("{tmp_id}.copying"));
        // Held until the copy is published: a sweep leaves it alone.
        let (how, tmp_file) = clone_file(src, &tmp)?;
        fail::fail_point!("loop::copy-after-clone", |_| crate::crash_here());
        if let Err(e) = intact() {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        if let Err(e) = prepare(&tmp) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        fail::fail_point!("loop::copy-after-prepare", |_| crate::crash_here());
        let bytes = spec
            .size
            .checked_mul(GIB)
            .ok_or_else(|| Error::invalid(format!("size {} GiB is too large", spec.size)))?;
        let grow = (|| {
            if self.preallocate {
                self.allocate(&tmp_file, &tmp, name, bytes)?;
            }
            let sized = || -> std::io::Result<()> {
                if tmp_file.metadata()?.len() < bytes {
                    tmp_file.set_len(bytes)?;
                }
                tmp_file.sync_all()
            };
            sized().map_err(|e| Error::from_io(format!("sizing {}", tmp.display()), &e))
        })();
        if let Err(e) = grow {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let created_at = now_rfc3339();
        let rec_of = |id: &str| Record {
            id: id.to_string(),
            name: name.to_string(),
            size: spec.size,
            volume_type: spec.volume_type.clone(),
            iops: spec.iops,
            availability_zone: spec.availability_zone.clone(),
            created_at: created_at.clone(),
            fields: fields.clone(),
        };
        let (id, lock) = self.publish_copy(
            Kind::Volume,
            name,
            &tmp,
            |tx, id| catalog::insert_volume(tx, &rec_of(id), "creating"),
            "loop::copy-after-rename",
        )?;
        drop(lock);
        let rec = rec_of(&id);
        tracing::info!(volume = name, source = %src.display(), how, "created a volume from a copy");
        self.warn_overcommit(&rec, "created");
        Ok(self.to_volume(&rec, &kernel_loops()))
    }

    fn lock_attach(&self, id: &str) -> Result<FileLock> {
        FileLock::acquire(
            &self.row_lock_path(Kind::Volume, id),
            self.lock_timeout,
            &format!("attachment of volume {id}"),
        )
    }

    fn read_owner(&self, id: &str) -> Option<Owner> {
        std::fs::read(self.owner_path(id))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    }

    fn write_owner(&self, id: &str, device: &Path) -> Result<()> {
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

    /// A record as a volume, without asking the kernel about attachments.
    fn metadata(r: &Record) -> Volume {
        let mut v = Volume {
            id: r.id.clone(),
            name: r.name.clone(),
            size: r.size,
            volume_type: r.volume_type.clone(),
            iops: r.iops,
            availability_zone: r.availability_zone.clone(),
            fields: r.fields.clone(),
            attachment_state: AttachmentState::Unknown as u8,
            ..Default::default()
        };
        if !r.created_at.is_empty() {
            v.fields.insert("createdAt".into(), r.created_at.clone());
        }
        v
    }
    fn to_volume(&self, r: &Record, loops: &HashMap<PathBuf, Vec<PathBuf>>) -> Volume {
        self.to_volume_with(r, allocated(&self.image(&r.id)), loops)
    }

    /// [`to_volume`](Self::to_volume) with the image's allocated bytes
    /// already known.
    fn to_volume_with(
        &self,
        r: &Record,
        allocated: u64,
        loops: &HashMap<PathBuf, Vec<PathBuf>>,
    ) -> Volume {
        let mut v = Self::metadata(r);
        // Bytes the sparse image takes under volumePath now.
        v.fields.insert("allocated".into(), allocated.to_string());
        v.attachment_state = AttachmentState::Available as u8;
        if let Some(dev) = loops.get(&self.image(&r.id)).and_then(|d| d.first()) {
            let owner = self.read_owner(&r.id);
            let instance = owner.map(|o| o.instance_id).unwrap_or_else(|| InstanceId {
                id: "unknown (attached outside rexray)".into(),
                driver: "loop".into(),
                service: String::new(),
            });
            v.attachment_state = if instance.id == self.me.id {
                AttachmentState::Attached as u8
            } else {
                AttachmentState::Unavailable as u8
            };
            v.attachments.push(Attachment {
                device_name: dev.to_string_lossy().into_owned(),
                instance_id: instance,
                status: "attached".into(),
                volume_id: r.id.clone(),
                ..Default::default()
            });
        }
        v
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
}

impl LoopDriver {
    /// Mark the row of `id` in `table` as being removed (`false`: no such
    /// ready row). On a full disk the catalog cannot take even that
    /// write, and removing is how an operator frees space: then the
    /// blocks of `img`, the image about to be removed (not attached), are
    /// freed first — it keeps its size, holding zeros — and the write is
    /// tried again. A failure after that leaves the row listed with a
    /// blank image, which `rm` removes once there is room.
    fn mark_removing(&self, table: &str, id: &str, step: &str, img: &Path) -> Result<bool> {
        use std::os::unix::fs::OpenOptionsExt;
        let mark = || {
            self.catalog.write(step, |tx| {
                catalog::set_state(tx, table, id, "ready", "removing")
                    .map_err(self.catalog.sql(step))
            })
        };
        let first = match mark() {
            Ok(m) => return Ok(m),
            Err(e) => e,
        };
        let full = nix::sys::statvfs::statvfs(&self.root).is_ok_and(|s| s.files_available() == 0)
            || free_bytes(&self.root) < (1 << 20);
        if !full {
            return Err(first);
        }
        let freed = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(img)
            .and_then(|f| {
                let size = f.metadata()?.len();
                f.set_len(0)?;
                f.set_len(size)
            });
        if let Err(e) = freed {
            tracing::warn!(image = %img.display(), error = %e, "could not free the blocks of an image being removed");
            return Err(first);
        }
        tracing::warn!(image = %img.display(), "{}; freed the blocks of the image being removed to write the catalog", first.message());
        mark().map_err(|e| {
            e.context(format!(
                "{step}: the disk under loop.volumePath is full (its image's blocks were freed, and it holds zeros now; remove it again once space is freed)"
            ))
        })
    }
}

impl StorageDriver for LoopDriver {
    fn name(&self) -> &str {
        "loop"
    }

    fn list(&self) -> Result<Vec<Volume>> {
        let loops = kernel_loops();
        let mut recs = Vec::new();
        self.catalog.each_volume(|r| recs.push(r))?;
        // One stat per image (its allocated bytes), relative to the
        // directory (no walk of the whole path each time), spread over
        // the cores: the bulk of an `ls` among 100,000 volumes.
        let dir = std::fs::File::open(&self.root).ok();
        let stat = |r: &Record| -> u64 {
            use std::os::fd::AsRawFd;
            let Some(d) = dir.as_ref() else {
                return allocated(&self.image(&r.id));
            };
            nix::sys::stat::fstatat(
                Some(d.as_raw_fd()),
                format!("{}.img", r.id).as_str(),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map(|st| (st.st_blocks as u64).saturating_mul(512))
            .unwrap_or(0)
        };
        let threads = std::thread::available_parallelism()
            .map(|n| n.get().min(4))
            .unwrap_or(1);
        let build = |chunk: &[Record]| -> Vec<Volume> {
            chunk
                .iter()
                .map(|r| self.to_volume_with(r, stat(r), &loops))
                .collect()
        };
        if threads < 2 || recs.len() < 4096 {
            return Ok(build(&recs));
        }
        let per = recs.len().div_ceil(threads);
        Ok(std::thread::scope(|s| {
            let parts: Vec<_> = recs
                .chunks(per)
                .map(|c| s.spawn(move || build(c)))
                .collect();
            parts
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        }))
    }

    fn inspect(&self, id: &str) -> Result<Option<Volume>> {
        if crate::input::volume_id(id).is_err() {
            return Ok(None);
        }
        Ok(self
            .catalog
            .by_id(id)?
            .map(|r| self.to_volume(&r, &kernel_loops())))
    }

    fn create(&self, name: &str, spec: &CreateSpec) -> Result<Volume> {
        crate::input::volume_name(name)?;
        if spec.encrypted {
            return Err(Error::unsupported(
                "the loop driver cannot encrypt volumes: create it without the encrypted option",
            ));
        }
        let bytes = spec
            .size
            .checked_mul(GIB)
            .ok_or_else(|| Error::invalid(format!("size {} GiB is too large", spec.size)))?;
        let created_at = now_rfc3339();
        let rec_of = |id: &str| Record {
            id: id.to_string(),
            name: name.to_string(),
            size: spec.size,
            volume_type: spec.volume_type.clone(),
            iops: spec.iops,
            availability_zone: spec.availability_zone.clone(),
            created_at: created_at.clone(),
            fields: spec.fields.clone(),
        };
        // The row first (state creating, committed), then the image: no
        // image is ever unknown to the catalog.
        let (id, lock) = self
            .claim(Kind::Volume, name, |tx, id| {
                catalog::insert_volume(tx, &rec_of(id), "creating")
            })
            .map_err(|e| e.context(format!("creating volume {name} (catalog)")))?;
        let img = self.image(&id);
        let made = (|| {
            let f = crate::files::create_new(&img, crate::files::PRIVATE_FILE, "image")?;
            if self.preallocate {
                self.allocate(&f, &img, name, bytes)?;
            }
            f.set_len(bytes).and_then(|_| f.sync_all()).map_err(|e| {
                Error::from_io(
                    format!(
                        "creating volume {name}: sizing image {} to {} GiB",
                        img.display(),
                        spec.size
                    ),
                    &e,
                )
            })
        })();
        if let Err(e) = made {
            if e.kind() != crate::Kind::AlreadyExists {
                let _ = std::fs::remove_file(&img);
            }
            self.unclaim(Kind::Volume, &id, lock);
            return Err(e);
        }
        fail::fail_point!("loop::create-after-image", |_| crate::crash_here());
        if let Err(e) = self.publish(Kind::Volume, &id, name) {
            let _ = std::fs::remove_file(&img);
            self.unclaim(Kind::Volume, &id, lock);
            return Err(e.context(format!("creating volume {name} (catalog)")));
        }
        drop(lock);
        let rec = rec_of(&id);
        self.warn_overcommit(&rec, "created");
        // New: no loop device can be bound to it yet.
        Ok(self.to_volume(&rec, &HashMap::new()))
    }

    fn remove(&self, id: &str) -> Result<()> {
        crate::input::volume_id(id)?;
        let attach = self.lock_attach(id)?;
        let rec = self.record(id)?;
        if let Some(devs) = kernel_loops().get(&self.image(id)) {
            return Err(Error::in_use(format!(
                "volume {} is attached as {}; unmount and detach it first",
                rec.name,
                devs[0].display()
            )));
        }
        // Marked first (hidden from every reader), then the image goes,
        // then the row: a kill between leaves a row the next create
        // finishes, never an image nobody knows.
        let step = format!("removing volume {}", rec.name);
        let marked = self.mark_removing("volumes", id, &step, &self.image(id))?;
        if !marked {
            return Err(Error::not_found(format!("volume {id} not found")));
        }
        fail::fail_point!("loop::remove-after-catalog", |_| crate::crash_here());
        atomic::remove(&self.image(id))?;
        atomic::remove(&self.owner_path(id))?;
        self.catalog.write(&step, |tx| {
            catalog::delete(tx, "volumes", id).map_err(self.catalog.sql(&step))
        })?;
        attach.remove_file();
        Ok(())
    }

    fn attach(&self, id: &str, force: bool) -> Result<MountSource> {
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

    fn detach(&self, id: &str, force: bool) -> Result<()> {
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

    fn tidy(&self) {
        use std::os::unix::fs::OpenOptionsExt;
        let loops = kernel_loops();
        for (dir, kind) in [
            (self.root.clone(), Kind::Volume),
            (self.snap_dir(), Kind::Snapshot),
        ] {
            crate::files::sweep_temporaries(&dir);
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(id) = name.strip_suffix(".img") else {
                    continue;
                };
                // Every image has had its row since before it existed
                // (earlier releases could leave one without): one with no
                // row at all, and no loop device, is an orphan.
                if matches!(self.catalog.known(kind.table(), id), Ok(false))
                    && !loops.contains_key(&e.path())
                {
                    tracing::info!(image = %e.path().display(), "removing an image no catalog row names");
                    let _ = std::fs::remove_file(e.path());
                    continue;
                }
                if let Ok(f) = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
                    .open(e.path())
                {
                    if f.metadata().is_ok_and(|m| m.is_file()) {
                        crate::files::tighten(&f, &e.path(), crate::files::PRIVATE_FILE);
                    }
                }
            }
        }
    }

    fn space_note(&self, id: &str) -> Option<String> {
        let r = self.catalog.by_id(id).ok()??;
        let sp = self.space();
        (sp.growth > sp.free).then(|| self.overcommit_text(&r, &sp))
    }

    fn known_blank(&self, id: &str) -> bool {
        use std::os::fd::AsRawFd;
        let Ok(f) = open_image(&self.image(id), false) else {
            return false;
        };
        // SAFETY: lseek on a file descriptor we own; no memory is passed.
        let r = unsafe { libc::lseek(f.as_raw_fd(), 0, libc::SEEK_DATA) };
        r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO)
    }

    fn resize(&self, id: &str, size_gib: u64) -> Result<u64> {
        let rec = self.record(id)?;
        if size_gib < rec.size {
            return Err(Error::invalid(format!(
                "volume {} is {} GiB; shrinking to {size_gib} GiB is not supported",
                rec.name, rec.size
            )));
        }
        let _attach = self.lock_attach(id)?;
        let img = self.image(id);
        let bytes = size_gib * GIB;
        let f = open_image(&img, true)?;
        if self.preallocate {
            self.allocate(&f, &img, &rec.name, bytes)
                .map_err(|e| e.context(format!("resizing volume {}", rec.name)))?;
        }
        if f.metadata().map(|m| m.len()).unwrap_or(0) < bytes {
            f.set_len(bytes)
                .and_then(|_| f.sync_all())
                .ctx(|| format!("growing image {} to {size_gib} GiB", img.display()))?;
        }
        fail::fail_point!("loop::resize-after-image", |_| crate::crash_here());
        for dev in kernel_loops().get(&img).into_iter().flatten() {
            loopdev::set_capacity(dev).map_err(|e| {
                Error::from_io(format!("updating capacity of {}", dev.display()), &e)
            })?;
        }
        fail::fail_point!("loop::resize-after-capacity", |_| crate::crash_here());
        let step = format!("resizing volume {}", rec.name);
        self.catalog.write(&step, |tx| {
            catalog::set_size(tx, id, size_gib).map_err(self.catalog.sql(&step))
        })?;
        Ok(bytes)
    }

    fn lookup_name(&self, name: &str) -> Result<Option<Volume>> {
        Ok(self
            .catalog
            .by_name(name)?
            .map(|r| self.to_volume(&r, &kernel_loops())))
    }

    fn list_metadata(&self) -> Result<Arc<[Volume]>> {
        // The generation first: rows read after it are at least as new.
        let generation = self.catalog.generation()?;
        {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((g, c)) = cache.as_ref() {
                if *g == generation {
                    return Ok(c.clone());
                }
            }
        }
        let mut all = Vec::new();
        self.catalog.each_volume(|r| all.push(Self::metadata(&r)))?;
        let all: Arc<[Volume]> = all.into();
        *self.cache.lock().unwrap_or_else(|e| e.into_inner()) = Some((generation, all.clone()));
        Ok(all)
    }

    fn cached_metadata(&self) -> Option<Arc<[Volume]>> {
        let generation = self.catalog.generation_now()?;
        let cache = self.cache.try_lock().ok()?;
        let (g, c) = cache.as_ref()?;
        (*g == generation).then(|| c.clone())
    }

    fn lookup_metadata_name(&self, name: &str) -> Result<Option<Volume>> {
        Ok(self.catalog.by_name(name)?.as_ref().map(Self::metadata))
    }

    fn copy(
        &self,
        id: &str,
        new_name: &str,
        spec: &CreateSpec,
        intact: &dyn Fn() -> Result<()>,
        prepare: super::Prepare<'_>,
    ) -> Result<Volume> {
        let src = self.record(id)?;
        if spec.size < src.size {
            return Err(Error::invalid(format!(
                "a copy of volume {} must be at least its size, {} GiB",
                src.name, src.size
            )));
        }
        let mut fields = src.fields.clone();
        fields.extend(spec.fields.clone());
        fields.insert("copiedFrom".into(), src.id.clone());
        self.create_copy(&self.image(id), new_name, spec, fields, intact, prepare)
    }

    fn snapshot(
        &self,
        id: &str,
        snap_name: &str,
        intact: &dyn Fn() -> Result<()>,
    ) -> Result<Snapshot> {
        crate::input::name_of("snapshot", snap_name)?;
        let src = self.record(id)?;
        let dir = self.snap_dir();
        crate::files::own_dir(&dir, crate::files::PRIVATE_DIR, crate::files::Link::Refuse)?;
        crate::files::sweep_temporaries(&dir);
        let tmp_id = new_id()?;
        let tmp = dir.join(format!("{tmp_id}.copying"));
        let (_, _tmp_lock) = clone_file(&self.image(id), &tmp)?;
        fail::fail_point!("loop::snapshot-after-clone", |_| crate::crash_here());
        if let Err(e) = intact() {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let created_at = now_rfc3339();
        let rec_of = |sid: &str| SnapRecord {
            id: sid.to_string(),
            name: snap_name.to_string(),
            volume_id: src.id.clone(),
            volume_size: src.size,
            created_at: created_at.clone(),
            fields: src
                .fields
                .iter()
                .filter(|(k, _)| k.as_str() == "fsType")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        let (sid, lock) = self.publish_copy(
            Kind::Snapshot,
            snap_name,
            &tmp,
            |tx, sid| catalog::insert_snapshot(tx, &rec_of(sid), "creating"),
            "loop::snapshot-after-rename",
        )?;
        lock.remove_file();
        Ok(rec_of(&sid).to_snapshot())
    }

    fn snapshots(&self) -> Result<Vec<Snapshot>> {
        Ok(self
            .catalog
            .snapshots()?
            .iter()
            .map(SnapRecord::to_snapshot)
            .collect())
    }

    fn remove_snapshot(&self, snap_id: &str) -> Result<()> {
        crate::input::volume_id(snap_id)?;
        let lock = FileLock::acquire(
            &self.row_lock_path(Kind::Snapshot, snap_id),
            self.lock_timeout,
            &format!("snapshot {snap_id}"),
        )?;
        let step = format!("removing snapshot {snap_id}");
        let marked = self.mark_removing("snapshots", snap_id, &step, &self.snap_image(snap_id))?;
        if !marked {
            return Err(Error::not_found(format!("snapshot {snap_id} not found")));
        }
        atomic::remove(&self.snap_image(snap_id))?;
        self.catalog.write(&step, |tx| {
            catalog::delete(tx, "snapshots", snap_id).map_err(self.catalog.sql(&step))
        })?;
        lock.remove_file();
        Ok(())
    }

    fn create_from_snapshot(
        &self,
        snap_id: &str,
        new_name: &str,
        spec: &CreateSpec,
        prepare: super::Prepare<'_>,
    ) -> Result<Volume> {
        crate::input::volume_id(snap_id)?;
        let snap = self
            .catalog
            .snapshot(snap_id)?
            .ok_or_else(|| Error::not_found(format!("snapshot {snap_id} not found")))?;
        if spec.size < snap.volume_size {
            return Err(Error::invalid(format!(
                "a volume from snapshot {} must be at least {} GiB",
                snap.name, snap.volume_size
            )));
        }
        let mut fields = snap.fields.clone();
        fields.extend(spec.fields.clone());
        fields.insert("snapshotID".into(), snap.id.clone());
        self.create_copy(
            &self.snap_image(snap_id),
            new_name,
            spec,
            fields,
            &|| Ok(()),
            prepare,
        )
    }
}

nix::ioctl_write_int!(ficlone, 0x94, 9);

/// Free space under volumePath and what its volumes could still take.
struct Space {
    free: u64,
    growth: u64,
}

/// Bytes free for unprivileged use on the filesystem of `dir`
/// (`u64::MAX` when unknown).
#[allow(clippy::unnecessary_cast)] // fsblkcnt_t is 32 bits on some targets
fn free_bytes(dir: &Path) -> u64 {
    nix::sys::statvfs::statvfs(dir)
        .map(|s| (s.blocks_available() as u64).saturating_mul(s.fragment_size() as u64))
        .unwrap_or(u64::MAX)
}

/// Bytes in use on the filesystem of `dir` (0 when unknown).
#[allow(clippy::unnecessary_cast)] // fsblkcnt_t is 32 bits on some targets
fn used_bytes(dir: &Path) -> u64 {
    nix::sys::statvfs::statvfs(dir)
        .map(|s| {
            (s.blocks() as u64)
                .saturating_sub(s.blocks_free() as u64)
                .saturating_mul(s.fragment_size() as u64)
        })
        .unwrap_or(0)
}

/// Bytes a file takes on disk (0 when it cannot be read).
fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .map(|m| m.blocks() * 512)
        .unwrap_or(0)
}

/// A byte count for people: `5.0 GiB (5368709120 bytes)`.
fn bytes(b: u64) -> String {
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

/// Copy `src` to the new file `dst`: a reflink when the filesystem can
/// share extents, else a sparse copy that writes only the data regions.
/// Returns which one it did and `dst` open and flocked, so that a sweep
/// of files crashed copies left behind can tell a live copy from a dead one.
fn clone_file(src: &Path, dst: &Path) -> Result<(&'static str, std::fs::File)> {
    use std::os::fd::AsRawFd;
    let from = std::fs::File::open(src).ctx(|| format!("opening {}", src.display()))?;
    // New (never through a link), 0600 and flocked while the copy lives.
    let to = crate::files::create_locked(dst, crate::files::PRIVATE_FILE, "copy")?;
    let result = (|| {
        // SAFETY: both descriptors are open for the duration of the call.
        let how = if unsafe { ficlone(to.as_raw_fd(), from.as_raw_fd() as _) }.is_ok() {
            "reflink"
        } else {
            sparse_copy(&from, &to)?;
            "sparse copy"
        };
        to.sync_all()?;
        Ok(how)
    })();
    let result = result.map(|how| (how, to));
    result.map_err(|e: std::io::Error| {
        let _ = std::fs::remove_file(dst);
        Error::from_io(
            format!("copying {} to {}", src.display(), dst.display()),
            &e,
        )
    })
}

/// Copy the data regions of `from` (found with SEEK_DATA/SEEK_HOLE) and
/// leave holes, and all-zero blocks, as holes.
fn sparse_copy(from: &std::fs::File, to: &std::fs::File) -> std::io::Result<()> {
    use nix::unistd::{lseek, Whence};
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;
    let len = from.metadata()?.len();
    to.set_len(len)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut pos: u64 = 0;
    while pos < len {
        let start = match lseek(from.as_raw_fd(), pos as i64, Whence::SeekData) {
            Ok(o) => o as u64,
            Err(nix::errno::Errno::ENXIO) => break,
            // No hole support: treat everything as data.
            Err(nix::errno::Errno::EINVAL) => pos,
            Err(e) => return Err(e.into()),
        };
        let end = match lseek(from.as_raw_fd(), start as i64, Whence::SeekHole) {
            Ok(o) => o as u64,
            Err(_) => len,
        };
        let mut off = start;
        while off < end {
            let n = ((end - off) as usize).min(buf.len());
            from.read_exact_at(&mut buf[..n], off)?;
            if buf[..n].iter().any(|&b| b != 0) {
                to.write_all_at(&buf[..n], off)?;
            }
            off += n as u64;
        }
        pos = end.max(start + 1);
    }
    Ok(())
}

/// Open a volume image: never through a symbolic link, and only a regular
/// file — a link planted in the volume directory must not turn an attach
/// (and a format) onto some other file or device.
fn open_image(path: &Path, write: bool) -> Result<std::fs::File> {
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
    use std::os::unix::fs::{FileExt, MetadataExt};

    #[test]
    fn copies_keep_data_and_holes() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("a.img");
        let f = std::fs::File::create(&src).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(b"head", 0).unwrap();
        f.write_all_at(b"middle", 40 << 20).unwrap();
        f.write_all_at(&[0u8; 1 << 20], 50 << 20).unwrap();
        drop(f);
        let dst = t.path().join("b.img");
        clone_file(&src, &dst).unwrap();
        assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&dst).unwrap());
        // Only the two data blocks (and at most a few more) are allocated.
        let m = std::fs::metadata(&dst).unwrap();
        assert_eq!(m.len(), 64 << 20);
        assert!(
            m.blocks() * 512 < 4 << 20,
            "{} bytes allocated",
            m.blocks() * 512
        );
        // An existing destination is never overwritten.
        assert!(clone_file(&src, &dst).is_err());
    }

    #[test]
    fn snapshots_and_copies_in_the_catalog() {
        let t = tempfile::tempdir().unwrap();
        let me = InstanceId {
            id: "test".into(),
            driver: "loop".into(),
            service: "loop".into(),
        };
        let d = LoopDriver::open(t.path(), me, Duration::from_secs(5)).unwrap();
        let spec = CreateSpec {
            size: 1,
            ..Default::default()
        };
        let v = d.create("src", &spec).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(d.image(&v.id))
            .unwrap()
            .write_all_at(b"data", 4096)
            .unwrap();
        let s = d.snapshot(&v.id, "snap", &|| Ok(())).unwrap();
        assert_eq!(s.volume_id, v.id);
        assert!(
            d.snapshot(&v.id, "snap", &|| Ok(())).is_err(),
            "names are unique"
        );
        let torn = d.snapshot(&v.id, "torn", &|| Err(Error::system("torn")));
        assert_eq!(torn.unwrap_err().message(), "torn");
        assert!(d.snapshots().unwrap().iter().all(|s| s.name != "torn"));
        let small = CreateSpec {
            size: 0,
            ..Default::default()
        };
        assert!(d
            .create_from_snapshot(&s.id, "tiny", &small, &|_| Ok(()))
            .is_err());
        let spec2 = CreateSpec {
            size: 2,
            ..Default::default()
        };
        let c = d
            .create_from_snapshot(&s.id, "restored", &spec2, &|_| Ok(()))
            .unwrap();
        assert_eq!(c.size, 2);
        let mut buf = [0u8; 4];
        std::fs::File::open(d.image(&c.id))
            .unwrap()
            .read_exact_at(&mut buf, 4096)
            .unwrap();
        assert_eq!(&buf, b"data");
        let k = d
            .copy(&v.id, "copy", &spec, &|| Ok(()), &|_| Ok(()))
            .unwrap();
        assert_eq!(k.fields.get("copiedFrom"), Some(&v.id));
        assert!(
            d.copy(&v.id, "copy", &spec, &|| Ok(()), &|_| Ok(()))
                .is_err(),
            "name taken"
        );
        let torn = d.copy(
            &v.id,
            "torn",
            &spec,
            &|| Err(Error::system("torn")),
            &|_| Ok(()),
        );
        assert_eq!(torn.unwrap_err().message(), "torn");
        assert!(d.list().unwrap().iter().all(|v| v.name != "torn"));
        // The image is prepared before it is published: a failed step
        // publishes nothing and leaves nothing behind.
        let seen = std::cell::RefCell::new(None);
        let unprepared = d.copy(&v.id, "unprepared", &spec, &|| Ok(()), &|img| {
            *seen.borrow_mut() = Some(img.to_path_buf());
            Err(Error::system("prepare"))
        });
        assert_eq!(unprepared.unwrap_err().message(), "prepare");
        assert!(d.list().unwrap().iter().all(|v| v.name != "unprepared"));
        let img = seen.into_inner().expect("prepare was called");
        assert!(img.to_string_lossy().ends_with(".copying"), "{img:?}");
        assert!(!img.exists());
        assert_eq!(d.lookup_name("copy").unwrap().unwrap().id, k.id);
        assert_eq!(d.inspect(&k.id).unwrap().unwrap().name, "copy");
        assert!(d.lookup_name(&k.id).unwrap().is_none(), "names only");
        assert!(d.lookup_name("nope").unwrap().is_none());
        assert_eq!(d.list().unwrap().len(), 3);
        d.remove_snapshot(&s.id).unwrap();
        assert!(d.snapshots().unwrap().is_empty());
        assert!(!d.snap_image(&s.id).exists());
    }

    /// No volume or snapshot is named after another's id, however it is
    /// created: the check is made under the catalog lock.
    #[test]
    fn a_name_is_never_another_volumes_id() {
        let t = tempfile::tempdir().unwrap();
        let me = InstanceId {
            id: "me".into(),
            driver: "loop".into(),
            service: "loop".into(),
        };
        let d = LoopDriver::open(t.path(), me, Duration::from_secs(5)).unwrap();
        let spec = CreateSpec {
            size: 1,
            ..Default::default()
        };
        let v = d.create("vol", &spec).unwrap();
        let e = d.create(&v.id, &spec).unwrap_err();
        assert_eq!(e.kind(), crate::Kind::InvalidInput);
        assert!(e.message().contains("volume vol"), "{e}");
        let e = d
            .copy(&v.id, &v.id, &spec, &|| Ok(()), &|_| Ok(()))
            .unwrap_err();
        assert_eq!(e.kind(), crate::Kind::InvalidInput, "{e}");
        let s = d.snapshot(&v.id, "s1", &|| Ok(())).unwrap();
        let e = d.snapshot(&v.id, &s.id, &|| Ok(())).unwrap_err();
        assert_eq!(e.kind(), crate::Kind::InvalidInput, "{e}");
        assert!(e.message().contains("snapshot s1"), "{e}");
        let e = d
            .create_from_snapshot(&s.id, &v.id, &spec, &|_| Ok(()))
            .unwrap_err();
        assert_eq!(e.kind(), crate::Kind::InvalidInput, "{e}");
        assert_eq!(d.list().unwrap().len(), 1);
        assert_eq!(d.snapshots().unwrap().len(), 1);
        // Nothing was left behind by the refusals.
        let copying = std::fs::read_dir(t.path())
            .unwrap()
            .chain(std::fs::read_dir(d.snap_dir()).unwrap())
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".copying")
            })
            .count();
        assert_eq!(copying, 0);
    }

    /// The reader's cache never outlives a change made through another
    /// driver (another process in real life): every read after the change
    /// sees it, including the no-wait `cached_metadata`.
    #[test]
    fn cached_reads_see_every_change_by_another_instance() {
        let t = tempfile::tempdir().unwrap();
        let open = |who: &str| {
            let me = InstanceId {
                id: who.into(),
                driver: "loop".into(),
                service: "loop".into(),
            };
            LoopDriver::open(t.path(), me, Duration::from_secs(5)).unwrap()
        };
        let (reader, writer) = (open("reader"), open("writer"));
        let names = |vs: &[Volume]| vs.iter().map(|v| v.name.clone()).collect::<Vec<_>>();
        assert!(reader.list_metadata().unwrap().is_empty());
        assert!(reader.cached_metadata().unwrap().is_empty());
        let spec = CreateSpec {
            size: 1,
            ..Default::default()
        };
        let mut want: Vec<String> = Vec::new();
        for i in 0..40 {
            let n = format!("v{i}");
            let v = writer.create(&n, &spec).unwrap();
            want.push(n.clone());
            if i % 3 == 2 {
                let gone = want.remove(0);
                let id = writer.lookup_name(&gone).unwrap().unwrap().id;
                writer.remove(&id).unwrap();
                assert!(
                    reader.lookup_metadata_name(&gone).unwrap().is_none(),
                    "{gone}"
                );
            }
            if let Some(c) = reader.cached_metadata() {
                assert_eq!(names(&c), want, "stale cache after change {i}");
            }
            assert_eq!(names(&reader.list_metadata().unwrap()), want);
            assert_eq!(names(&reader.cached_metadata().unwrap()), want);
            let got = reader.lookup_metadata_name(&n).unwrap().unwrap();
            assert_eq!((got.id.as_str(), got.size), (v.id.as_str(), 1));
            assert!(reader.lookup_metadata_name(&v.id).unwrap().is_none());
        }
        // A change made by another process straight in the database (no
        // driver involved) is seen too: the generation is bumped by the
        // database's triggers, not by the driver.
        let last = want.last().unwrap().clone();
        let renamed = format!("{}x", &last[..last.len() - 1]);
        let c = rusqlite::Connection::open(t.path().join("catalog.db")).unwrap();
        c.execute(
            "UPDATE volumes SET name = ?1 WHERE name = ?2",
            [&renamed, &last],
        )
        .unwrap();
        drop(c);
        if let Some(c) = reader.cached_metadata() {
            assert!(names(&c).contains(&renamed));
        }
        assert!(names(&reader.list_metadata().unwrap()).contains(&renamed));
        assert!(reader.lookup_metadata_name(&last).unwrap().is_none());
    }
}
