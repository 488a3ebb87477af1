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
//! <volumePath>/owners/<id>.owner  which instance holds it (written
//!                               before its node binds a device, so a crash
//!                               never orphans one)
//! <volumePath>/locks/<id>.lock  held while creating, removing, attaching
//!                               or detaching the volume
//! <volumePath>/snapshots/<id>.img  snapshot images
//! ```
//!
//! Copies and snapshots are reflinks (FICLONE) where the filesystem under
//! volumePath supports them (xfs, btrfs), else sparse copies that skip
//! holes, so a mostly empty 16 GiB volume copies in milliseconds.
//!
//! The driver is split as every driver is ([`crate::storage::controller`]):
//! [`LoopDriver`] is the controller (the catalog, the images, and who
//! holds each volume), [`LoopExecutor`] the node side (binds an image to a
//! loop device of its host). Which device backs an image is read from the
//! kernel (`/sys/block/loopN/loop/backing_file`), never from a record.
//! Several `REXRAY_HOME`s (or nodes of a libStorage server) may share one
//! volumePath: each is an instance, and a volume held by another one is
//! "unavailable" to the rest until it is detached or taken with force
//! (preempt).
//!
//! `catalog` keeps the rows, `device` records holders and binds images to
//! loop devices, `copy` makes copies and snapshots.

mod catalog;
mod copy;
mod device;
mod rows;
mod space;

use super::controller::{
    Attached, Controller, MetadataCache, NextDeviceInfo, ServiceInfo, StorageType,
};
use super::{loopdev, new_id, now_rfc3339};
use crate::error::IoContext;
use crate::model::{AttachmentState, Content, CreateSpec, InstanceId, Snapshot, Volume};
use crate::state::atomic;
use crate::{Error, Result};
use catalog::Catalog;
pub use device::LoopExecutor;
use device::{kernel_loops, open_image, Owner};
use serde::{Deserialize, Serialize};
use space::{allocated, free_bytes};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const GIB: u64 = 1 << 30;

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

/// The loop driver.
pub struct LoopDriver {
    root: PathBuf,
    info: ServiceInfo,
    lock_timeout: Duration,
    /// `loop.preallocate`: images are allocated whole, never sparse.
    preallocate: bool,
    catalog: Catalog,
    /// Every volume's metadata as of a catalog generation, for the
    /// long-running service: a `List` among 100,000 volumes then costs one
    /// indexed read.
    cache: Mutex<Option<(i64, Arc<[Volume]>)>>,
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
    pub fn open(root: &Path, service: &str, lock_timeout: Duration) -> Result<LoopDriver> {
        // Only root enters: the images hold every volume's data.
        use crate::files::{own_dir, Link, PRIVATE_DIR};
        let ctx = |e: Error| e.context("preparing the loop volume directory (loop.volumePath)");
        own_dir(root, PRIVATE_DIR, Link::Follow).map_err(ctx)?;
        for sub in ["locks", "snapshots", "owners"] {
            own_dir(&root.join(sub), PRIVATE_DIR, Link::Refuse).map_err(ctx)?;
        }
        // The kernel reports backing files by their resolved path (known
        // already when the checks above ran as root).
        let root = match crate::files::resolved(root) {
            Some(real) => real,
            None => root
                .canonicalize()
                .ctx(|| format!("resolving {}", root.display()))?,
        };
        let catalog = Catalog::open(&root, lock_timeout)?;
        Ok(LoopDriver {
            root,
            info: ServiceInfo {
                service: service.to_string(),
                driver: "loop".into(),
                storage_type: StorageType::Block,
                next_device: NextDeviceInfo {
                    ignore: true,
                    ..Default::default()
                },
            },
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

    fn record(&self, id: &str) -> Result<Record> {
        crate::input::volume_id(id)?;
        self.catalog
            .by_id(id)?
            .ok_or_else(|| Error::not_found(format!("volume {id} not found")))
    }

    /// A record as a volume, without asking the kernel about attachments.
    fn metadata(r: Record) -> Volume {
        let Record {
            id,
            name,
            size,
            volume_type,
            iops,
            availability_zone,
            created_at,
            mut fields,
        } = r;
        if !created_at.is_empty() {
            fields.insert("createdAt".into(), created_at);
        }
        Volume {
            id,
            name,
            size,
            volume_type,
            iops,
            availability_zone,
            fields,
            attachment_state: AttachmentState::Unknown as u8,
            ..Default::default()
        }
    }

    fn to_volume(&self, r: Record, loops: &HashMap<PathBuf, Vec<PathBuf>>) -> Volume {
        let img = self.image(&r.id);
        let dev = loops.get(&img).and_then(|d| d.first());
        let mut v = self.with_attachment(r, dev.map(PathBuf::as_path), None);
        // Bytes the sparse image takes under volumePath now.
        v.fields
            .insert("allocated".into(), allocated(&img).to_string());
        v
    }

    /// A record as a volume, with its holder (if any: see
    /// [`attachment`](Self::attachment)) and the device `dev` bound to its
    /// image, without its allocated bytes. The state is the caller's to
    /// derive (who asks decides "mine").
    fn with_attachment(
        &self,
        r: Record,
        dev: Option<&Path>,
        owners: Option<&HashMap<String, Owner>>,
    ) -> Volume {
        let mut v = Self::metadata(r);
        v.attachment_state = 0;
        v.attachments.extend(self.attachment(&v.id, dev, owners));
        v
    }

    /// Every volume with its attachments, in creation order; with
    /// `usage`, with the bytes its image takes (`allocated`) too.
    fn list_volumes(&self, usage: bool) -> Result<Vec<Volume>> {
        let loops = kernel_loops();
        // The first device of each image in volumePath, by volume id: no
        // path is made per volume to look it up.
        let attached: HashMap<&str, &Path> = loops
            .iter()
            .filter_map(|(img, devs)| {
                let name = img.strip_prefix(&self.root).ok()?.to_str()?;
                Some((name.strip_suffix(".img")?, devs.first()?.as_path()))
            })
            .collect();
        let owners = self.owners();
        let mut vols = Vec::new();
        self.catalog.each_volume(|r| {
            let dev = attached.get(r.id.as_str()).copied();
            vols.push(self.with_attachment(r, dev, Some(&owners)));
        })?;
        if usage {
            let sizes = self.allocated_of(&vols);
            for (v, bytes) in vols.iter_mut().zip(sizes) {
                v.fields.insert("allocated".into(), bytes.to_string());
            }
        }
        Ok(vols)
    }

    /// The bytes each volume's image takes: one stat per image, relative
    /// to the directory (no walk of the whole path each time), spread
    /// over the cores. The bulk of an `ls` among 100,000 volumes, done
    /// only when the answer shows it.
    fn allocated_of(&self, vols: &[Volume]) -> Vec<u64> {
        use std::os::fd::AsRawFd;
        let dir = std::fs::File::open(&self.root).ok();
        let stat = |chunk: &[Volume]| -> Vec<u64> {
            let mut name = String::new();
            chunk
                .iter()
                .map(|v| {
                    let Some(d) = dir.as_ref() else {
                        return allocated(&self.image(&v.id));
                    };
                    name.clear();
                    name.push_str(&v.id);
                    name.push_str(".img");
                    nix::sys::stat::fstatat(
                        Some(d.as_raw_fd()),
                        name.as_str(),
                        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                    )
                    .map(|st| (st.st_blocks as u64).saturating_mul(512))
                    .unwrap_or(0)
                })
                .collect()
        };
        let threads = std::thread::available_parallelism()
            .map(|n| n.get().min(4))
            .unwrap_or(1);
        if threads < 2 || vols.len() < 4096 {
            return stat(vols);
        }
        let per = vols.len().div_ceil(threads);
        std::thread::scope(|s| {
            let parts: Vec<_> = vols.chunks(per).map(|c| s.spawn(move || stat(c))).collect();
            parts
                .into_iter()
                .zip(vols.chunks(per))
                .flat_map(|(h, c)| h.join().unwrap_or_else(|_| vec![0; c.len()]))
                .collect()
        })
    }
}

impl Controller for LoopDriver {
    fn info(&self) -> &ServiceInfo {
        &self.info
    }
    fn offers(&self) -> crate::storage::controller::Offers {
        use crate::storage::controller::Offers;
        Offers::ALL
    }

    fn list(&self) -> Result<Vec<Volume>> {
        self.list_volumes(true)
    }

    fn list_without_usage(&self) -> Result<Vec<Volume>> {
        self.list_volumes(false)
    }

    fn inspect(&self, id: &str) -> Result<Option<Volume>> {
        if crate::input::volume_id(id).is_err() {
            return Ok(None);
        }
        Ok(self
            .catalog
            .by_id(id)?
            .map(|r| self.to_volume(r, &kernel_loops())))
    }

    fn create(&self, name: &str, spec: &CreateSpec) -> Result<Volume> {
        crate::input::volume_name(name)?;
        if spec.encrypted {
            return Err(Error::unsupported(
                "the loop driver cannot encrypt volumes: create it without the encrypted option",
            ));
        }
        let bytes = crate::input::gib_bytes(spec.size)?;
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
            f.set_len(bytes)
                .and_then(|_| f.sync_all())
                .map_err(|e| self.sizing_error(name, Some(&img), spec.size, &e))
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
        Ok(self.to_volume(rec, &HashMap::new()))
    }

    fn remove(&self, id: &str, force: bool) -> Result<()> {
        crate::input::volume_id(id)?;
        let attach = self.lock_attach(id)?;
        let rec = self.record(id)?;
        let loops = kernel_loops();
        if let Some(devs) = loops.get(&self.image(id)) {
            return Err(Error::in_use(format!(
                "volume {} is attached as {}; unmount and detach it first",
                rec.name,
                devs[0].display()
            )));
        }
        if let Some(a) = self.attachment_now(id, &loops) {
            if !force {
                return Err(Error::in_use(format!(
                    "volume {} is attached to {}; detach it first",
                    rec.name, a.instance_id.id
                )));
            }
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
        self.remove_owner(id)?;
        self.catalog.write(&step, |tx| {
            catalog::delete(tx, "volumes", id).map_err(self.catalog.sql(&step))
        })?;
        attach.remove_file();
        Ok(())
    }

    fn attach(
        &self,
        id: &str,
        who: &InstanceId,
        force: bool,
        next_device: Option<&str>,
    ) -> Result<Attached> {
        let _ = next_device; // the node binds whichever loop device is free
        self.attach_holder(id, who, force)
    }

    fn detach(&self, id: &str, who: &InstanceId, force: bool) -> Result<Volume> {
        self.detach_holder(id, who, force)
    }

    fn tidy(&self) {
        use std::os::unix::fs::OpenOptionsExt;
        let loops = kernel_loops();
        crate::files::sweep_temporaries(&self.owners_dir());
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

    fn available_bytes(&self) -> Option<u64> {
        Some(space::free_bytes(&self.root))
    }

    fn space_note(&self, id: &str) -> Option<String> {
        let r = self.catalog.by_id(id).ok()??;
        let sp = self.space();
        (sp.growth > sp.free).then(|| self.overcommit_text(&r, &sp))
    }

    fn content(&self, id: &str) -> Content {
        match open_image(&self.image(id), false) {
            Ok(f) => space::first_nonzero(&f).map_or(Content::Unknown, |at| match at {
                None => Content::Blank,
                Some(at) => Content::Written(at),
            }),
            Err(_) => Content::Unknown,
        }
    }

    fn resize(&self, id: &str, size_gib: u64) -> Result<u64> {
        let bytes = crate::input::gib_bytes(size_gib)?;
        let rec = self.record(id)?;
        if size_gib < rec.size {
            return Err(Error::invalid(format!(
                "volume {} is {} GiB; shrinking to {size_gib} GiB is not supported",
                rec.name, rec.size
            )));
        }
        let _attach = self.lock_attach(id)?;
        let img = self.image(id);
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
            .map(|r| self.to_volume(r, &kernel_loops())))
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
        self.catalog.each_volume(|r| all.push(Self::metadata(r)))?;
        let all: Arc<[Volume]> = all.into();
        *self.cache.lock().unwrap_or_else(|e| e.into_inner()) = Some((generation, all.clone()));
        Ok(all)
    }

    fn cache(&self) -> Option<&dyn MetadataCache> {
        Some(self)
    }

    fn lookup_metadata_name(&self, name: &str) -> Result<Option<Volume>> {
        Ok(self.catalog.by_name(name)?.map(Self::metadata))
    }

    fn copy(
        &self,
        id: &str,
        new_name: &str,
        spec: &CreateSpec,
        intact: &dyn Fn() -> Result<()>,
        prepare: crate::storage::Prepare<'_>,
    ) -> Result<Volume> {
        self.copy_volume(id, new_name, spec, intact, prepare)
    }

    fn snapshot(
        &self,
        id: &str,
        snap_name: &str,
        intact: &dyn Fn() -> Result<()>,
    ) -> Result<Snapshot> {
        self.snapshot_volume(id, snap_name, intact)
    }

    fn snapshots(&self) -> Result<Vec<Snapshot>> {
        self.list_snapshots()
    }

    fn remove_snapshot(&self, snap_id: &str) -> Result<()> {
        self.remove_snapshot_image(snap_id)
    }

    fn create_from_snapshot(
        &self,
        snap_id: &str,
        new_name: &str,
        spec: &CreateSpec,
        prepare: crate::storage::Prepare<'_>,
    ) -> Result<Volume> {
        self.restore_snapshot(snap_id, new_name, spec, prepare)
    }
}

impl MetadataCache for LoopDriver {
    fn cached_metadata(&self) -> Option<Arc<[Volume]>> {
        let generation = self.catalog.generation_now()?;
        let cache = self.cache.try_lock().ok()?;
        let (g, c) = cache.as_ref()?;
        (*g == generation).then(|| c.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No volume or snapshot is named after another's id, however it is
    /// created: the check is made under the catalog lock.
    #[test]
    fn a_name_is_never_another_volumes_id() {
        let t = tempfile::tempdir().unwrap();
        let d = LoopDriver::open(t.path(), "loop", Duration::from_secs(5)).unwrap();
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

    /// A listing without usage is the listing less the `allocated` field
    /// of each volume (the one stat per image it spares).
    #[test]
    fn a_listing_without_usage_lacks_only_the_allocated_bytes() {
        let t = tempfile::tempdir().unwrap();
        let d = LoopDriver::open(t.path(), "loop", Duration::from_secs(5)).unwrap();
        let spec = CreateSpec {
            size: 1,
            ..Default::default()
        };
        for n in ["b", "a", "c"] {
            d.create(n, &spec).unwrap();
        }
        std::fs::write(d.image(&d.lookup_name("a").unwrap().unwrap().id), b"data").unwrap();
        let mut full = d.list().unwrap();
        assert!(full.iter().any(|v| v.fields["allocated"] != "0"));
        for v in &mut full {
            assert!(v.fields.remove("allocated").is_some());
        }
        assert_eq!(d.list_without_usage().unwrap(), full);
        assert_eq!(full.len(), 3);
    }

    /// The reader's cache never outlives a change made through another
    /// driver (another process in real life): every read after the change
    /// sees it, including the no-wait `cached_metadata`.
    #[test]
    fn cached_reads_see_every_change_by_another_instance() {
        let t = tempfile::tempdir().unwrap();
        let open = || LoopDriver::open(t.path(), "loop", Duration::from_secs(5)).unwrap();
        let (reader, writer) = (open(), open());
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
                writer.remove(&id, false).unwrap();
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
        // driver involved) is seen too: the generation is SQLite's count
        // of commits, not the driver's.
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
