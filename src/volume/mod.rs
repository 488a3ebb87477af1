//! The volume workflows every front-end calls: create (with defaults),
//! mount, unmount, path, attach, detach, remove.
//!
//! Each step checks reality first — the backend for who holds a volume,
//! the kernel for devices and mounts, the state directory for consumers —
//! so running an operation again after a crash at any point finishes the
//! job instead of failing or duplicating it. Every mutating step holds the
//! volume's lock for its whole duration.
//!
//! [`Volumes`] holds the configuration, the state directory, the storage
//! driver's two sides ([`Controller`]: the backend, local or behind a
//! libStorage server — the workflows cannot tell; [`Executor`]: this
//! node's devices) and the node; its workflows are split by concept: `lookup`
//! (naming volumes), `mount` (mount, unmount, the path handed out),
//! `attach` (attach, hold, detach) and `copy` (copies and snapshots,
//! frozen while mounted). Create, remove, resize and the crash clean-up
//! are here.

mod attach;
mod copy;
mod lookup;
mod mount;

/// Who uses a volume, as the front-ends name them (see [`crate::state`]).
pub use crate::state::{kubelet_holder, pv_of_holder, Consumer, KUBELET_HOLDER, PUBLISHED_HOLDER};
pub use copy::CopySource;
pub use lookup::{SnapshotRef, VolumeRef};

use crate::config::{keys, Config};
use crate::model::{CreateOptions, CreateSpec, MountSource, Volume};
use crate::node::{self, Node};
use crate::state::{FileLock, MountRecord, StateDir};
use crate::storage;
use crate::storage::controller::{Controller, Executor};
use crate::{Error, Kind, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The result of a create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// A new volume.
    New(Volume),
    /// The name existed; nothing changed.
    Existing(Volume),
    /// `create.disable` is set; nothing was done.
    Disabled,
}

/// The result of an unmount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unmounted {
    /// The last consumer left: unmounted, and detached unless a holder
    /// keeps it attached (see [`Volumes::hold`]).
    Released,
    /// Other consumers still use the mount; it stays.
    StillUsed(usize),
}

/// Workflows over one configured service.
///
/// Three seams: the driver's controller (the backend), its executor (this
/// node's side of the driver) and the [`Node`] (this host's kernel).
/// [`open`](Self::open) takes the configured driver and the real
/// [`node::Kernel`]; [`with`](Self::with) takes any, so the workflows'
/// decisions are unit-tested over fakes, without root.
pub struct Volumes {
    cfg: Config,
    state: StateDir,
    ctl: Arc<dyn Controller>,
    exe: Arc<dyn Executor>,
    node: Arc<dyn Node>,
    /// `mount.path` as the kernel names it (see [`Self::mount_root`]).
    mount_root: std::sync::OnceLock<PathBuf>,
}

impl Volumes {
    /// Open the state directory and the configured service: through the
    /// libStorage server of `libstorage.host`, or of `<run>/rexray.spec`
    /// when a server on this host announces itself there, else the driver
    /// itself (embedded). See [`storage::backend`].
    pub fn open(cfg: Config) -> Result<Volumes> {
        let b = storage::backend(&cfg)?;
        Self::open_on(cfg, b)
    }

    /// [`open`](Self::open), always with the driver itself (the server's
    /// own front-ends).
    pub fn open_embedded(cfg: Config) -> Result<Volumes> {
        Self::open_on(cfg, storage::Backend::Embedded)
    }

    /// The volumes of a module of `rexray service start` (Docker or CSI).
    /// A service that serves the libStorage API is the controller: its
    /// modules use the drivers themselves, unless one names a server of
    /// its own (`own_host`: `rexray.modules.<name>.libstorage.host`).
    /// Otherwise each is a node like any other ([`open`](Self::open)).
    pub fn open_for_module(cfg: Config, serves_api: bool, own_host: bool) -> Result<Volumes> {
        if serves_api && !own_host {
            Self::open_embedded(cfg)
        } else {
            Self::open(cfg)
        }
    }

    fn open_on(cfg: Config, backend: storage::Backend) -> Result<Volumes> {
        use crate::files::{own_dir, Link, PRIVATE_DIR, SHARED_DIR, TRAVERSE_DIR};
        let mount_path = cfg.path(keys::MOUNT_PATH);
        // Applications reach their volumes through the mount path: when it
        // is inside the state directory, that needs o+x (not o+r).
        let inside = mount_path.starts_with(&cfg.dirs.lib);
        let root_mode = if inside { TRAVERSE_DIR } else { PRIVATE_DIR };
        let state =
            StateDir::open_with_mode(&cfg.dirs.lib, cfg.duration(keys::LOCK_TIMEOUT), root_mode)?;
        if inside {
            own_dir(&mount_path, SHARED_DIR, Link::Refuse).map_err(|e| {
                e.context(format!("preparing the mount path ({})", keys::MOUNT_PATH))
            })?;
        }
        let (ctl, exe) = storage::open_sides(&cfg, &backend)?;
        Ok(Volumes::with(cfg, state, ctl, exe, Arc::new(node::Kernel)))
    }

    /// Workflows over the given state directory, driver sides and node.
    pub fn with(
        cfg: Config,
        state: StateDir,
        ctl: Arc<dyn Controller>,
        exe: Arc<dyn Executor>,
        node: Arc<dyn Node>,
    ) -> Volumes {
        Volumes {
            cfg,
            state,
            ctl,
            exe,
            node,
            mount_root: std::sync::OnceLock::new(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Whether `name` can name a new volume of this driver (see
    /// [`Controller::check_name`]), beyond the rule of every driver.
    pub fn check_name(&self, name: &str) -> Result<()> {
        crate::input::volume_name(name)?;
        self.ctl.check_name(name)
    }

    /// Record this host as a node of the backend (see
    /// [`Controller::register_node`]).
    pub fn register_node(&self) -> Result<()> {
        self.ctl.register_node(self.exe.instance_id())
    }

    /// Whether `node` is a node of the backend; `None` when the driver
    /// cannot tell (see [`Controller::node_known`]).
    pub fn node_known(&self, node: &str) -> Result<Option<bool>> {
        self.ctl.node_known(node)
    }

    /// The optional operations the driver offers.
    pub fn offers(&self) -> crate::storage::controller::Offers {
        self.ctl.offers()
    }

    /// The state directory, for the workflow's unit tests (front-ends go
    /// through the methods below, never to the state or the driver).
    #[cfg(test)]
    pub(crate) fn state(&self) -> &StateDir {
        &self.state
    }

    /// The directory a front-end keeps its own records in
    /// (`<lib>/<front_end>`), next to the workflow's state.
    pub fn front_end_dir(&self, front_end: &str) -> PathBuf {
        self.state.root().join(front_end)
    }

    /// This host's kernel, as the workflows see it.
    pub fn node(&self) -> &dyn Node {
        self.node.as_ref()
    }

    /// Where a volume is mounted on this host: `<mount.path>/<name>`.
    pub fn mount_point(&self, name: &str) -> PathBuf {
        self.mount_root().join(name)
    }

    /// `mount.path` with every link on it followed, as the kernel writes
    /// the mount points under it: a state directory or mount path that is
    /// a link (to a bigger disk, say) names its volumes' mounts the way
    /// the mount table does, so they are found there. As configured when
    /// it does not exist yet.
    pub fn mount_root(&self) -> &Path {
        self.mount_root.get_or_init(|| {
            let p = self.cfg.path(keys::MOUNT_PATH);
            crate::files::resolved(&p)
                .or_else(|| self.node.resolve(&p))
                .unwrap_or(p)
        })
    }

    /// The directory handed to applications for volume `name` mounted at
    /// `mount_point`, checked now (see [`node::content_dir`]): `<mount
    /// point>/<rootPath>` for every front-end (flexrex binds it onto
    /// kubelet's paths too), or the mount point itself for a volume in the
    /// root layout ([`node::root_layout`]). Never a path that resolves
    /// outside the volume.
    pub fn content_path(&self, name: &str, mount_point: &Path, create: bool) -> Result<PathBuf> {
        self.node.content_dir(
            name,
            mount_point,
            self.cfg.string(keys::MOUNT_ROOT_PATH),
            create,
        )
    }

    /// The path handed to applications for a mount point: `+ rootPath`,
    /// unchecked (see [`content_path`](Self::content_path)).
    pub fn app_path(&self, mount_point: &Path) -> PathBuf {
        let root = self.cfg.string(keys::MOUNT_ROOT_PATH).trim_matches('/');
        if root.is_empty() {
            mount_point.to_path_buf()
        } else {
            mount_point.join(root)
        }
    }

    /// Find the volume `r` names, make sure this process may act on it
    /// (`doing`: "mounting", "detaching", ...), and take its lock.
    fn find_and_lock(&self, r: VolumeRef<'_>, doing: &str) -> Result<(Volume, FileLock)> {
        let v = self.find(r)?;
        self.node
            .require_privileges(&format!("{doing} volume {}", v.name))?;
        let lock = self.state.lock_volume(&v.id)?;
        Ok((v, lock))
    }

    /// The block device of `v` on this host, if one is here now (whoever
    /// holds the volume): the loop device of a loop image or of an rbd
    /// image behind rbd-fuse; none for a volume with no device (s3fs).
    pub fn device_here(&self, v: &Volume) -> Result<Option<PathBuf>> {
        self.local_device(v)
    }

    fn local_device(&self, v: &Volume) -> Result<Option<PathBuf>> {
        Ok(match self.exe.present(v)? {
            Some(MountSource::Device(d)) => Some(d),
            _ => None,
        })
    }

    /// The mounts on this host of the filesystem on `v`'s device (none
    /// when no device of it is here).
    fn device_mounts(&self, v: &Volume) -> Result<Vec<node::Mount>> {
        match self.local_device(v)? {
            Some(dev) => {
                let numbers = self.node.device_numbers(&dev)?;
                self.node.mounts_of(numbers)
            }
            None => Ok(Vec::new()),
        }
    }

    /// Fill a create request from `create.default.*`.
    pub fn create_spec(&self, opts: &CreateOptions) -> CreateSpec {
        CreateSpec {
            size: opts
                .size
                .unwrap_or_else(|| self.cfg.number(keys::CREATE_SIZE)),
            iops: opts
                .iops
                .unwrap_or_else(|| self.cfg.number(keys::CREATE_IOPS) as i64),
            volume_type: opts
                .volume_type
                .clone()
                .unwrap_or_else(|| self.cfg.string(keys::CREATE_TYPE).to_string()),
            availability_zone: opts
                .availability_zone
                .clone()
                .unwrap_or_else(|| self.cfg.string(keys::CREATE_AZ).to_string()),
            encrypted: opts.encrypted,
            fields: opts
                .fs_type
                .map(|f| [("fsType".to_string(), f.as_str().to_string())].into())
                .unwrap_or_default(),
        }
    }

    /// The volume already named `name`, if any; an error when `name` is
    /// another volume's id (a name must never be one).
    fn existing_or_refused(&self, name: &str) -> Result<Option<Volume>> {
        // Two lookups, never a listing: as fast among 100,000 volumes.
        if self.ctl.lookup_metadata_name(name)?.is_some() {
            return self.lookup_name(name);
        }
        if crate::input::volume_id(name).is_ok() {
            if let Some(v) = self.ctl.inspect(name)? {
                storage::refuse_name_that_is_an_id(
                    "volume",
                    name,
                    std::iter::once((v.id.as_str(), v.name.as_str())),
                )?;
            }
        }
        Ok(None)
    }

    /// Create a volume named `name`. An existing name is reported as
    /// [`Created::Existing`] and left unchanged.
    pub fn create(&self, name: &str, opts: &CreateOptions) -> Result<Created> {
        crate::input::volume_name(name)?;
        if self.cfg.boolean(keys::CREATE_DISABLE) {
            tracing::info!(volume = name, "create.disable is set: not creating");
            return Ok(Created::Disabled);
        }
        let spec = self.create_spec(opts);
        let _names = self.state.lock_names()?;
        if let Some(v) = self.existing_or_refused(name)? {
            return Ok(Created::Existing(v));
        }
        fail::fail_point!("volume::create-before-driver", |_| crate::crash_here());
        let v = self.settled(self.ctl.create(name, &spec)?);
        fail::fail_point!("volume::create-after-driver", |_| crate::crash_here());
        Ok(Created::New(v))
    }

    /// Remove a volume (exact id or name only). Refused while it has
    /// consumers or is attached; a mount left without consumers by a crash
    /// is cleaned up first. `remove.disable` makes this a no-op.
    pub fn remove(&self, r: VolumeRef<'_>) -> Result<Option<Volume>> {
        let _names = self.state.lock_names()?;
        let v = self.find(r)?;
        if self.cfg.boolean(keys::REMOVE_DISABLE) {
            tracing::info!(volume = %v.name, "remove.disable is set: not removing");
            return Ok(None);
        }
        let lock = self.state.lock_volume(&v.id)?;
        self.refuse_if_consumed(&v, "remove")?;
        if let Some(rec) = self.state.load_mount(&v.id)? {
            self.refuse_if_held(
                &v,
                &rec,
                "remove",
                "; `rexray volume detach --force` drops the hold",
            )?;
        }
        let mp = self.mount_point(&v.name);
        if !self.node.mounts_at(&mp)?.is_empty() {
            tracing::warn!(volume = %v.name, "cleaning up a mount that no consumer holds");
            self.release(&v, mount::Keep::Nothing)?;
        }
        let current = self.inspect(&v.id)?.unwrap_or_else(|| v.clone());
        if let Some(a) = current.attachments.first() {
            return Err(Error::in_use(format!(
                "cannot remove volume {}: it is attached to {}{}; detach it first",
                v.name,
                a.instance_id.id,
                if a.device_name.is_empty() {
                    String::new()
                } else {
                    format!(" as {}", a.device_name)
                }
            )));
        }
        fail::fail_point!("volume::remove-before-driver", |_| crate::crash_here());
        self.ctl.remove(&v.id, false)?;
        fail::fail_point!("volume::remove-after-driver", |_| crate::crash_here());
        self.state.remove_mount(&v.id)?;
        let _ = std::fs::remove_dir(self.app_path(&mp));
        let _ = std::fs::remove_dir(&mp);
        lock.remove_file();
        Ok(Some(v))
    }

    /// Grow a volume to at least `new_size_bytes` (rounded up to whole
    /// GiB) and, when it is mounted here, its filesystem. Growing to the
    /// current size is a no-op that still grows the filesystem, so a retry
    /// after a crash between the two steps finishes the job. Returns the
    /// volume and its size in bytes.
    pub fn resize(&self, r: VolumeRef<'_>, new_size_bytes: u64) -> Result<(Volume, u64)> {
        const GIB: u64 = 1 << 30;
        let v = self.find(r)?;
        let gib = new_size_bytes.div_ceil(GIB).max(1);
        if gib > crate::input::MAX_SIZE_GIB {
            return Err(Error::invalid(format!(
                "cannot resize volume {} to {new_size_bytes} bytes: the largest size is {} GiB",
                v.name,
                crate::input::MAX_SIZE_GIB
            )));
        }
        let _lock = self.state.lock_volume(&v.id)?;
        let step = |what: &str| format!("resizing volume {} ({what})", v.name);
        let bytes = if gib > v.size {
            self.ctl
                .resize(&v.id, gib)
                .map_err(|e| e.context(step("grow the volume")))?
        } else {
            v.size * GIB
        };
        fail::fail_point!("volume::resize-after-driver", |_| crate::crash_here());
        self.exe
            .grown(&v)
            .map_err(|e| e.context(step("the device here learns the new size")))?;
        let mp = self.mount_point(&v.name);
        if let Some(m) = self.node.mounts_at(&mp)?.into_iter().next() {
            if let Some(dev) = self.local_device(&v)? {
                self.node.grow(&dev, &mp, &m.fs_type, self.cfg.duration(keys::FORMAT_TIMEOUT)).map_err(|e| {
                    let hint = if m.fs_type.starts_with("ext") && e.is_permission_denied() {
                        " (growing a mounted ext filesystem needs CAP_SYS_RESOURCE; the volume itself has grown, retry with that capability; its next mount with it grows the filesystem too)"
                    } else {
                        ""
                    };
                    e.map_message(|m| format!("{m}{hint}"))
                        .context(step("grow the filesystem"))
                })?;
            }
        }
        fail::fail_point!("volume::resize-after-fs", |_| crate::crash_here());
        let v = self.inspect(&v.id)?.unwrap_or(v);
        Ok((v, bytes))
    }

    /// The bytes the backend has free for new volumes, when it can tell.
    pub fn available_bytes(&self) -> Option<u64> {
        self.ctl.available_bytes()
    }

    /// [`available_bytes`](Self::available_bytes), or why the backend
    /// cannot be asked (see [`Controller::capacity`]).
    pub fn capacity(&self) -> Result<Option<u64>> {
        self.ctl.capacity()
    }

    /// Whether an error means "the volume does not exist". Only lookups
    /// make such errors: a missing file or tool is a system error.
    pub fn is_not_found(e: &Error) -> bool {
        e.kind() == Kind::NotFound
    }

    /// The mount record of a volume (for tests and diagnostics).
    pub fn mount_record(&self, r: VolumeRef<'_>) -> Result<Option<MountRecord>> {
        let v = self.find(r)?;
        self.mount_record_of(&v)
    }

    /// The mount record of a volume already found: no second lookup (a
    /// request to the server in client mode).
    pub fn mount_record_of(&self, v: &Volume) -> Result<Option<MountRecord>> {
        self.state.load_mount(&v.id)
    }

    /// Delete mount records of volumes that no longer exist (removed by
    /// another instance or by hand): nothing can mount or unmount them.
    /// Checked again under the volume's lock, so a volume created and
    /// mounted meanwhile keeps its record.
    /// `others`: the other services sharing this state directory; a
    /// record of one of their volumes is theirs.
    fn drop_dangling_records(&self, others: &[&Volumes]) {
        let Ok(ids) = self.state.mount_record_ids() else {
            return;
        };
        let gone = |v: &Volumes, id: &str| matches!(v.ctl.inspect(id), Ok(None));
        for id in ids {
            if crate::input::volume_id(&id).is_err() {
                continue;
            }
            let Ok(_lock) = self.state.lock_volume(&id) else {
                continue;
            };
            if gone(self, &id) && others.iter().all(|o| gone(o, &id)) {
                tracing::warn!(volume_id = %id, "deleting the mount record of a volume that no longer exists");
                if let Err(e) = self.state.remove_mount(&id) {
                    tracing::warn!(volume_id = %id, "could not delete the record: {e}");
                }
            }
        }
    }

    /// Finish the releases a killed process left half done (records
    /// marked [`MountRecord::releasing`] with no consumer): the volume is
    /// unmounted if it still is, and detached as far as its holds allow.
    /// Returns the names of the volumes released.
    fn finish_releases(&self) -> Vec<String> {
        let mut done = Vec::new();
        let Ok(ids) = self.state.mount_record_ids() else {
            return done;
        };
        for id in ids {
            if crate::input::volume_id(&id).is_err() {
                continue;
            }
            let Ok(_lock) = self.state.lock_volume(&id) else {
                continue;
            };
            let Ok(Some(rec)) = self.state.load_mount(&id) else {
                continue;
            };
            if !rec.releasing || !rec.consumers.is_empty() {
                continue;
            }
            // Another service's volume (a record in a shared state
            // directory) is that service's to finish.
            let Ok(Some(v)) = self.ctl.inspect(&id) else {
                continue;
            };
            tracing::warn!(volume = %v.name, "finishing the unmount and detach a killed process left half done");
            match self.finish_release(&v, rec) {
                Ok(()) => done.push(v.name.clone()),
                Err(e) => tracing::warn!(volume = %v.name, "could not finish its release: {e}"),
            }
        }
        done
    }

    /// Remove the temporary files killed writers left in the state
    /// directory and the driver's, and correct the modes of the driver's
    /// files (a full scan: for the service's start, not every call).
    pub fn tidy(&self) {
        for d in [
            self.state.root().join("mounts"),
            self.state.root().join("flex/names"),
        ] {
            crate::files::sweep_temporaries(&d);
        }
        self.ctl.tidy();
    }

    /// Clean up after a crash: every volume mounted at its mount point that
    /// no consumer holds is unmounted and detached (the process died
    /// between the unmount's record drop and the real unmount, or between
    /// the mount and its record). Returns the names cleaned up.
    pub fn reconcile(&self) -> Result<Vec<String>> {
        self.reconcile_beside(&[])
    }

    /// [`reconcile`](Self::reconcile) for one of several services that
    /// share this state directory (the Docker modules of one `rexray
    /// service`): a mount record is dropped only when none of `others`
    /// knows its volume either, and a mount point that is also another
    /// service's volume of the same name is left alone.
    pub fn reconcile_beside(&self, others: &[&Volumes]) -> Result<Vec<String>> {
        let mut done = self.finish_releases();
        let mounts = self.node.mounts()?;
        for v in self.list()? {
            let mp = self.mount_point(&v.name);
            if !mounts.iter().any(|m| m.mount_point == mp) {
                continue;
            }
            let shared = others.iter().any(|o| {
                o.mount_point(&v.name) == mp
                    && match o.ctl.lookup_metadata_name(&v.name) {
                        Ok(Some(w)) => w.id != v.id,
                        Ok(None) => false,
                        // Cannot tell: leave the mount alone.
                        Err(_) => true,
                    }
            });
            if shared {
                tracing::warn!(volume = %v.name, mount_point = %mp.display(), "not cleaning up: another service has a volume of this name mounting there");
                continue;
            }
            let _lock = self.state.lock_volume(&v.id)?;
            // A crash in the middle of a copy leaves the source frozen.
            if self.node.thaw(&mp).unwrap_or(false) {
                tracing::warn!(volume = %v.name, "thawed a filesystem a crashed copy left frozen");
            }
            let rec = self.state.load_mount(&v.id)?.unwrap_or_default();
            if !rec.consumers.is_empty() || self.node.mounts_at(&mp)?.is_empty() {
                continue;
            }
            let keep = mount::Keep::for_record(&rec);
            tracing::warn!(volume = %v.name, mount_point = %mp.display(), keep = ?keep, "unmounting a mount no consumer holds (left by a crash)");
            match self.finish_release(&v, rec) {
                Ok(()) => done.push(v.name.clone()),
                Err(e) => tracing::warn!(volume = %v.name, "could not clean up: {e}"),
            }
        }
        self.drop_dangling_records(others);
        self.tidy();
        Ok(done)
    }
}

#[cfg(test)]
pub(crate) mod tests;
