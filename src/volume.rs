//! The volume workflows every front-end calls: create (with defaults),
//! mount, unmount, path, attach, detach, remove.
//!
//! Each step checks reality first — the kernel for attachments and mounts,
//! the state directory for consumers — so running an operation again after
//! a crash at any point finishes the job instead of failing or duplicating
//! it. Every mutating step holds the volume's lock for its whole duration.

use crate::config::{keys, Config};
use crate::model::{
    AttachmentState, CreateOptions, CreateSpec, FsType, MountOptions, MountSource, Snapshot, Volume,
};
use crate::node::{self, Node};
use crate::state::{Consumer, MountRecord, StateDir};
use crate::storage::{self, StorageDriver};
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
/// Two seams: the storage driver (the backend) and the [`Node`] (this
/// host's kernel). [`open`](Self::open) takes the configured driver and
/// the real [`node::Kernel`]; [`with`](Self::with) takes any, so the
/// workflows' decisions are unit-tested over fakes, without root.
pub struct Volumes {
    cfg: Config,
    state: StateDir,
    driver: Box<dyn StorageDriver>,
    node: Arc<dyn Node>,
}

impl Volumes {
    /// Open the configured service's driver and the state directory.
    pub fn open(cfg: Config) -> Result<Volumes> {
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
        let driver = storage::open(&cfg)?;
        Ok(Volumes::with(cfg, state, driver, Arc::new(node::Kernel)))
    }

    /// Workflows over the given state directory, driver and node.
    pub fn with(
        cfg: Config,
        state: StateDir,
        driver: Box<dyn StorageDriver>,
        node: Arc<dyn Node>,
    ) -> Volumes {
        Volumes {
            cfg,
            state,
            driver,
            node,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.cfg
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
    /// Every volume without attachments (see
    /// [`StorageDriver::list_metadata`]): names, sizes and fields only.
    pub fn list_metadata(&self) -> Result<std::sync::Arc<[Volume]>> {
        self.driver.list_metadata()
    }
    /// [`list_metadata`](Self::list_metadata) when the driver holds it in
    /// memory and current; never blocks (see
    /// [`StorageDriver::cached_metadata`]).
    pub fn cached_metadata(&self) -> Option<std::sync::Arc<[Volume]>> {
        self.driver.cached_metadata()
    }
    /// One volume by exact name, without attachments.
    pub fn lookup_metadata(&self, name: &str) -> Result<Option<Volume>> {
        self.driver.lookup_metadata_name(name)
    }
    /// Whether the backend knows `v` was never written (see
    /// [`StorageDriver::known_blank`]).
    pub fn known_blank(&self, v: &Volume) -> bool {
        self.driver.known_blank(&v.id)
    }
    /// The id of the volume whose mount record lists consumer `key`.
    pub fn volume_of_consumer(&self, key: &str) -> Result<Option<String>> {
        for id in self.state.mount_record_ids()? {
            // One unreadable record must not block every other consumer;
            // the volume it belongs to reports it when it is unmounted.
            match self.state.load_mount(&id) {
                Ok(Some(rec)) if rec.consumers.contains(key) => return Ok(Some(id)),
                Ok(_) => {}
                Err(e) => tracing::warn!("{e}"),
            }
        }
        Ok(None)
    }
    /// This host's kernel, as the workflows see it.
    pub fn node(&self) -> &dyn Node {
        self.node.as_ref()
    }

    /// Where a volume is mounted on this host: `<mount.path>/<name>`.
    pub fn mount_point(&self, name: &str) -> PathBuf {
        self.cfg.path(keys::MOUNT_PATH).join(name)
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

    /// Every volume.
    pub fn list(&self) -> Result<Vec<Volume>> {
        let mut v = self.driver.list()?;
        v.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        Ok(v)
    }

    /// [`list`](Self::list) without the space each volume's backing store
    /// takes (`fields.allocated`), for an answer that does not show it.
    pub fn list_without_usage(&self) -> Result<Vec<Volume>> {
        let mut v = self.driver.list_without_usage()?;
        v.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        Ok(v)
    }

    /// Find a volume as `r` says: by exact name, exact id, or (the
    /// operator's CLI) either — refused when the argument is one volume's
    /// id and another's name.
    pub fn lookup(&self, r: VolumeRef<'_>) -> Result<Option<Volume>> {
        let arg = r.arg();
        if arg.is_empty() || arg.len() > crate::input::MAX_NAME_LEN || arg.contains(['/', '\0']) {
            crate::input::volume_name(arg)?;
        }
        match r {
            VolumeRef::Name(n) => self.driver.lookup_name(n),
            VolumeRef::Id(i) => self.driver.inspect(i),
            VolumeRef::IdOrName(a) => {
                let by_id = self.driver.inspect(a)?;
                let by_name = self.driver.lookup_name(a)?;
                match (by_id, by_name) {
                    (Some(i), Some(n)) if i.id != n.id => {
                        Err(ambiguous("volume", a, &i.name, &n.id))
                    }
                    (Some(v), _) | (None, Some(v)) => Ok(Some(v)),
                    (None, None) => Ok(None),
                }
            }
        }
    }

    /// Like [`lookup`](Self::lookup), but a missing volume is an error.
    pub fn find(&self, r: VolumeRef<'_>) -> Result<Volume> {
        if let Some(v) = self.lookup(r)? {
            return Ok(v);
        }
        let q = crate::input::quote(r.arg());
        // A name that is some volume's id: say so rather than act on it.
        if let VolumeRef::Name(n) = r {
            if let Ok(Some(v)) = self.driver.inspect(n) {
                return Err(Error::not_found(format!(
                    "volume {q} not found: volumes are named here by name, and {n} is the id of volume {}; use that name",
                    v.name
                )));
            }
        }
        Err(Error::not_found(format!(
            "volume {q} not found (see `rexray volume ls`)"
        )))
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
        if self.driver.lookup_metadata_name(name)?.is_some() {
            return self.driver.lookup_name(name);
        }
        if crate::input::volume_id(name).is_ok() {
            if let Some(v) = self.driver.inspect(name)? {
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
        let v = self.driver.create(name, &spec)?;
        fail::fail_point!("volume::create-after-driver", |_| crate::crash_here());
        Ok(Created::New(v))
    }

    /// Mount a volume for `consumer` and return it with the application
    /// path (`<mount.path>/<name>/<rootPath>`).
    ///
    /// attach (force only with preempt) → wait for the device → format only
    /// if blank → mount → ensure rootPath → record the consumer. A consumer
    /// is recorded only after the mount exists, so a crash never leaves a
    /// consumer without a mount.
    pub fn mount(
        &self,
        r: VolumeRef<'_>,
        consumer: Consumer<'_>,
        opts: &MountOptions,
    ) -> Result<(Volume, PathBuf)> {
        self.mount_and(r, consumer, opts, &|_, _, _| Ok(()))
    }

    /// [`mount`](Self::mount), then `then(volume, mount point, path handed
    /// out)` under the
    /// volume's lock before the consumer is recorded: a front-end that
    /// makes a mount of its own from ours (flexrex binds it onto kubelet's
    /// path) does so atomically with the record, so no other caller ever
    /// sees the consumer without that mount. When `then` fails, the
    /// consumer is not recorded and a mount nobody uses is undone.
    pub fn mount_and(
        &self,
        r: VolumeRef<'_>,
        consumer: Consumer<'_>,
        opts: &MountOptions,
        then: &dyn Fn(&Volume, &Path, &Path) -> Result<()>,
    ) -> Result<(Volume, PathBuf)> {
        let consumer = consumer.key()?;
        let v = self.find(r)?;
        self.node
            .require_privileges(&format!("mounting volume {}", v.name))?;
        let _lock = self.state.lock_volume(&v.id)?;
        // What we looked up may have changed while we waited for the lock.
        let v = self
            .driver
            .inspect(&v.id)?
            .ok_or_else(|| Error::not_found(format!("volume {} was removed", v.name)))?;
        let mp = self.mount_point(&v.name);
        let preempt = opts.force_attach || self.cfg.boolean(keys::MOUNT_PREEMPT);
        let step = |what: &str| format!("mounting volume {} ({what})", v.name);

        if preempt && v.state() == AttachmentState::Unavailable {
            self.evict_other_mounts(&v, &mp)
                .map_err(|e| e.context(step("preempt")))?;
        }
        let was_attached = v.state() == AttachmentState::Attached;
        let source = self
            .driver
            .attach(&v.id, preempt)
            .map_err(|e| e.context(step("attach")))?;
        let mounted = (|| -> Result<(PathBuf, String)> {
            fail::fail_point!("volume::mount-after-attach", |_| crate::crash_here());
            let (device, fs_type) = match &source {
                MountSource::Device(dev) => {
                    let numbers = self
                        .node
                        .wait_for_device(dev, self.cfg.duration(keys::ATTACH_TIMEOUT))
                        .map_err(|e| e.context(step("wait for device")))?;
                    fail::fail_point!("volume::mount-after-wait", |_| crate::crash_here());
                    let here = self.node.mounts_at(&mp)?;
                    if let Some(m) = here.iter().find(|m| m.dev == numbers) {
                        (dev.clone(), m.fs_type.clone())
                    } else {
                        if !here.is_empty() {
                            // A stale mount of another device (a volume of this
                            // name that was replaced): precautionary unmount.
                            tracing::warn!(mount_point = %mp.display(), "unmounting a stale mount");
                            self.node
                                .unmount_all(&mp)
                                .map_err(|e| e.context(step("clear stale mount")))?;
                        }
                        let want = match opts.fs_type {
                            Some(f) => f,
                            None => v
                                .fields
                                .get("fsType")
                                .map(String::as_str)
                                .unwrap_or(self.cfg.string(keys::CREATE_FSTYPE))
                                .parse::<FsType>()?,
                        };
                        let fs = node::ensure_filesystem(
                            self.node.as_ref(),
                            &v.name,
                            dev,
                            want,
                            opts.overwrite_fs,
                            self.driver.known_blank(&v.id),
                            node::FormatTimeouts {
                                probe: self.cfg.duration(keys::ATTACH_TIMEOUT),
                                mkfs: self.cfg.duration(keys::FORMAT_TIMEOUT),
                            },
                        )
                        .map_err(|e| e.context(step("format")))?;
                        fail::fail_point!("volume::mount-after-format", |_| crate::crash_here());
                        self.node.ensure_dir(&mp)?;
                        self.node
                            .mount_device(dev, &mp, &fs, false)
                            .map_err(|e| e.context(step("mount")))?;
                        (dev.clone(), fs)
                    }
                }
                MountSource::Directory(dir) => {
                    if self.node.mounts_at(&mp)?.is_empty() {
                        self.node.ensure_dir(&mp)?;
                        self.node
                            .bind(dir, &mp, false)
                            .map_err(|e| e.context(step("bind")))?;
                    }
                    (dir.clone(), "none".to_string())
                }
            };
            Ok((device, fs_type))
        })();
        let (device, fs_type) = match mounted {
            Ok(m) => m,
            Err(e) => {
                // Leave the volume as we found it: a device this call
                // attached is detached again if nothing got mounted.
                if !was_attached
                    && self
                        .node
                        .mounts_at(&mp)
                        .map(|m| m.is_empty())
                        .unwrap_or(false)
                {
                    if let Err(d) = self.driver.detach(&v.id, false) {
                        tracing::warn!(volume = %v.name, error = %d, "could not detach after a failed mount");
                    }
                }
                // A full backing store fails writes to the device (mkfs,
                // journal recovery): say so when it may be the cause.
                return Err(match self.driver.space_note(&v.id) {
                    Some(n) => e.map_message(|m| format!("{m}; {n}")),
                    None => e,
                });
            }
        };
        fail::fail_point!("volume::mount-after-mount", |_| crate::crash_here());
        let mut rec = self.state.load_mount(&v.id)?.unwrap_or_default();
        let handed = self
            .content_path(&v.name, &mp, true)
            .map_err(|e| e.context(step("check the path handed out")))
            .and_then(|path| {
                if path == mp && self.app_path(&mp) != mp {
                    tracing::warn!(volume = %v.name, mount_point = %mp.display(), "the volume holds files at its root (root layout, filled by pods of an earlier release): handing out its root to every front-end; move them into the rootPath directory to switch it to the usual layout");
                }
                then(&v, &mp, &path)?;
                Ok(path)
            });
        let path = match handed {
            Ok(p) => p,
            Err(e) => {
                // Leave the volume as we found it: a mount (and a device)
                // no consumer uses is undone.
                if !rec.consumers.is_empty() {
                    return Err(e);
                }
                let keep_attached = was_attached || !rec.holds.is_empty();
                return match self.release(&v, keep_attached) {
                    Ok(()) if e.reason() == Some(crate::Reason::NotADirectory) => {
                        Err(e.map_message(|m| format!(
                            "{m}; the volume is not mounted now: `rexray volume attach {}` prints its device, then `mount DEVICE /mnt && rm /mnt/{} && umount /mnt && rexray volume detach {}`, then mount it again",
                            v.name,
                            self.cfg.string(keys::MOUNT_ROOT_PATH).trim_matches('/'),
                            v.name
                        )))
                    }
                    Ok(()) => Err(e),
                    Err(u) => {
                        tracing::warn!(volume = %v.name, error = %u, "could not undo the mount after a failed step");
                        Err(e)
                    }
                };
            }
        };
        if rec.consumers.insert(consumer) || rec.volume_id.is_empty() {
            rec.volume_id = v.id.clone();
            rec.name = v.name.clone();
            rec.device = device.to_string_lossy().into_owned();
            rec.mountpoint = mp.to_string_lossy().into_owned();
            rec.fs_type = fs_type;
            self.state.save_mount(&v.id, &rec)?;
        }
        fail::fail_point!("volume::mount-after-record", |_| crate::crash_here());
        let v = self.driver.inspect(&v.id)?.unwrap_or(v);
        Ok((v, path))
    }

    /// Preemption of a volume another instance on this host has mounted:
    /// unmount its mounts of the device first, as a forced detach would cut
    /// off another host. A busy mount stops the preemption.
    fn evict_other_mounts(&self, v: &Volume, ours: &Path) -> Result<()> {
        let Some(dev) = v.attachments.first().map(|a| a.device_name.clone()) else {
            return Ok(());
        };
        if dev.is_empty() {
            return Ok(());
        }
        let numbers = self.node.device_numbers(Path::new(&dev))?;
        for m in self.node.mounts_of(numbers)? {
            if m.mount_point != ours {
                tracing::warn!(volume = %v.name, mount_point = %m.mount_point.display(), "preempt: unmounting another instance's mount");
                self.node.unmount_all(&m.mount_point)?;
            }
        }
        Ok(())
    }

    /// Release `consumer`'s use of a volume. When no consumer is left (or
    /// `unmount.ignoreUsedCount` is set) the volume is unmounted and
    /// detached — unless a holder keeps it attached (see
    /// [`hold`](Self::hold)). Unmounting a volume that is not mounted
    /// succeeds.
    pub fn unmount(&self, r: VolumeRef<'_>, consumer: Consumer<'_>) -> Result<Unmounted> {
        let key = consumer.key()?;
        let v = self.find(r)?;
        self.node
            .require_privileges(&format!("unmounting volume {}", v.name))?;
        let _lock = self.state.lock_volume(&v.id)?;
        let mut rec = self.state.load_mount(&v.id)?.unwrap_or_default();
        if self.cfg.boolean(keys::UNMOUNT_IGNORE_USED_COUNT) {
            rec.consumers.clear();
        } else {
            rec.consumers.retain(|e| !consumer.matches(&key, e));
        }
        self.settle(&v, rec)
    }

    /// Unmount a volume's mount that no consumer uses any more (left by a
    /// process killed between dropping its consumer and unmounting), and
    /// detach it unless held; a mount in use is left alone.
    pub fn release_unused(&self, r: VolumeRef<'_>) -> Result<()> {
        let v = self.find(r)?;
        let _lock = self.state.lock_volume(&v.id)?;
        let rec = self.state.load_mount(&v.id)?.unwrap_or_default();
        let mp = self.mount_point(&v.name);
        if rec.consumers.is_empty() && !self.node.mounts_at(&mp)?.is_empty() {
            self.node
                .require_privileges(&format!("unmounting volume {}", v.name))?;
            tracing::warn!(volume = %v.name, "unmounting a mount no consumer uses (left by a crash)");
            self.settle(&v, rec)?;
        }
        Ok(())
    }

    /// Store a record whose consumer set just shrank and act on it: with
    /// consumers left, nothing else changes; with none, the volume is
    /// unmounted, and detached unless a holder keeps it attached.
    ///
    /// The consumers are dropped from the record before the real unmount:
    /// a crash after this leaves a mount without consumers, which the next
    /// unmount, remove or service start cleans up — never a consumer
    /// without a mount.
    fn settle(&self, v: &Volume, rec: MountRecord) -> Result<Unmounted> {
        self.state.save_mount(&v.id, &rec)?;
        if !rec.consumers.is_empty() {
            return Ok(Unmounted::StillUsed(rec.consumers.len()));
        }
        fail::fail_point!("volume::unmount-after-record", |_| crate::crash_here());
        self.release(v, !rec.holds.is_empty())?;
        Ok(Unmounted::Released)
    }

    /// Unmount our mount point and, unless `keep_attached`, detach the
    /// volume from this instance.
    fn release(&self, v: &Volume, keep_attached: bool) -> Result<()> {
        let mp = self.mount_point(&v.name);
        let step = |what: &str| format!("unmounting volume {} ({what})", v.name);
        self.node
            .unmount_all(&mp)
            .map_err(|e| e.context(step("unmount")))?;
        fail::fail_point!("volume::unmount-after-unmount", |_| crate::crash_here());
        if keep_attached {
            return Ok(());
        }
        let current = self.driver.inspect(&v.id)?.unwrap_or_else(|| v.clone());
        if current.state() == AttachmentState::Attached {
            if let Some(dev) = current.attachments.first().map(|a| a.device_name.clone()) {
                if !dev.is_empty() {
                    let numbers = self.node.device_numbers(Path::new(&dev))?;
                    if let Some(m) = self.node.mounts_of(numbers)?.first() {
                        return Err(Error::in_use(format!(
                            "volume {} is still mounted at {} by something other than rexray; unmount it there, then unmount again",
                            v.name,
                            m.mount_point.display()
                        )));
                    }
                }
            }
            self.driver
                .detach(&v.id, false)
                .map_err(|e| e.context(step("detach")))?;
            fail::fail_point!("volume::unmount-after-detach", |_| crate::crash_here());
        }
        Ok(())
    }

    /// The application path of a volume mounted on this host, if it is.
    pub fn path(&self, r: VolumeRef<'_>) -> Result<Option<PathBuf>> {
        let v = self.find(r)?;
        let mp = self.mount_point(&v.name);
        if self.node.mounts_at(&mp)?.is_empty() {
            Ok(None)
        } else {
            self.content_path(&v.name, &mp, false).map(Some)
        }
    }

    /// Every volume with its application path ("" when not mounted here).
    pub fn list_with_paths(&self) -> Result<Vec<(Volume, String)>> {
        let mounts = self.node.mounts()?;
        Ok(self
            .list()?
            .into_iter()
            .map(|v| {
                let mp = self.mount_point(&v.name);
                let p = if mounts.iter().any(|m| m.mount_point == mp) {
                    match self.content_path(&v.name, &mp, false) {
                        Ok(p) => p.to_string_lossy().into_owned(),
                        Err(e) => {
                            tracing::warn!("{e}");
                            String::new()
                        }
                    }
                } else {
                    String::new()
                };
                (v, p)
            })
            .collect())
    }

    /// The consumers of a volume's mount (its used count is their number).
    pub fn consumers(&self, r: VolumeRef<'_>) -> Result<Vec<String>> {
        let v = self.find(r)?;
        Ok(self
            .state
            .load_mount(&v.id)?
            .map(|r| r.consumers.into_iter().collect())
            .unwrap_or_default())
    }

    /// Attach a volume to this instance without mounting it.
    pub fn attach(&self, r: VolumeRef<'_>, force: bool) -> Result<Volume> {
        self.attach_held(r, force, None)
    }

    /// Attach a volume for `holder`, who will mount it later (kubelet's
    /// attach before its mountdevice): the device stays attached, even
    /// when every consumer of its mount leaves, until the holder lets go
    /// with [`release_hold`](Self::release_hold).
    pub fn hold(&self, r: VolumeRef<'_>, holder: &str, force: bool) -> Result<Volume> {
        crate::input::consumer(holder)?;
        self.attach_held(r, force, Some(holder))
    }

    fn attach_held(&self, r: VolumeRef<'_>, force: bool, holder: Option<&str>) -> Result<Volume> {
        let v = self.find(r)?;
        self.node
            .require_privileges(&format!("attaching volume {}", v.name))?;
        let _lock = self.state.lock_volume(&v.id)?;
        let current = self.driver.inspect(&v.id)?.unwrap_or_else(|| v.clone());
        let was_attached = current.state() == AttachmentState::Attached;
        let src = self.driver.attach(&v.id, force)?;
        if let MountSource::Device(dev) = &src {
            if let Err(e) = self
                .node
                .wait_for_device(dev, self.cfg.duration(keys::ATTACH_TIMEOUT))
            {
                // Leave the volume as we found it.
                if !was_attached {
                    if let Err(d) = self.driver.detach(&v.id, false) {
                        tracing::warn!(volume = %v.name, error = %d, "could not detach after a failed attach");
                    }
                }
                return Err(e.context(format!("attaching volume {}", v.name)));
            }
        }
        fail::fail_point!("volume::attach-before-hold", |_| crate::crash_here());
        if let Some(h) = holder {
            let mut rec = self.state.load_mount(&v.id)?.unwrap_or_default();
            if rec.holds.insert(h.to_string()) {
                if rec.volume_id.is_empty() {
                    rec.volume_id = v.id.clone();
                    rec.name = v.name.clone();
                }
                self.state.save_mount(&v.id, &rec)?;
            }
        }
        Ok(self.driver.inspect(&v.id)?.unwrap_or(v))
    }

    /// The holders `which` selects let go of a volume they attached with
    /// [`hold`](Self::hold); consumers for which `gone` is true (their mount vanished, e.g. in a
    /// reboot) are released with it, under the same lock. When nothing
    /// else uses or holds the volume it is unmounted and detached; a
    /// volume still used elsewhere stays as it is.
    pub fn release_hold(
        &self,
        r: VolumeRef<'_>,
        which: &dyn Fn(&str) -> bool,
        gone: &dyn Fn(&str) -> bool,
    ) -> Result<Unmounted> {
        let v = self.find(r)?;
        self.node
            .require_privileges(&format!("detaching volume {}", v.name))?;
        let _lock = self.state.lock_volume(&v.id)?;
        let mut rec = self.state.load_mount(&v.id)?.unwrap_or_default();
        rec.holds.retain(|h| !which(h));
        rec.consumers.retain(|who| {
            let stale = gone(who);
            if stale {
                tracing::info!(volume = %v.name, consumer = %who, "releasing a consumer whose mount is gone");
            }
            !stale
        });
        self.settle(&v, rec)
    }

    /// Detach a volume that is not mounted. A volume a holder keeps
    /// attached (see [`hold`](Self::hold)) is detached only with `force`,
    /// which also drops the holders.
    pub fn detach(&self, r: VolumeRef<'_>, force: bool) -> Result<Volume> {
        let v = self.find(r)?;
        self.node
            .require_privileges(&format!("detaching volume {}", v.name))?;
        let _lock = self.state.lock_volume(&v.id)?;
        self.refuse_if_used(&v, "detach")?;
        if let Some(mut rec) = self.state.load_mount(&v.id)? {
            if !force {
                self.refuse_if_held(&v, &rec, "detach", "; `--force` detaches it anyway")?;
            } else if !rec.holds.is_empty() {
                tracing::warn!(volume = %v.name, holders = ?rec.holds, "forced detach: dropping the holders");
                rec.holds.clear();
                self.state.save_mount(&v.id, &rec)?;
            }
        }
        self.driver.detach(&v.id, force)?;
        Ok(self.driver.inspect(&v.id)?.unwrap_or(v))
    }

    /// Refuse `what` while a holder keeps the volume attached.
    fn refuse_if_held(&self, v: &Volume, rec: &MountRecord, what: &str, or: &str) -> Result<()> {
        if rec.holds.is_empty() {
            return Ok(());
        }
        let who: Vec<String> = rec
            .holds
            .iter()
            .map(|h| match crate::state::pv_of_holder(h) {
                Some("") => {
                    "kubelet (attached through flexrex; its detach releases it)".to_string()
                }
                Some(pv) => {
                    format!("kubelet for {pv} (attached through flexrex; its detach releases it)")
                }
                None => format!("{h} (its detach releases it)"),
            })
            .collect();
        Err(Error::in_use(format!(
            "cannot {what} volume {}: it is held attached by {}{or}",
            v.name,
            who.join(", ")
        )))
    }

    /// Refuse `what` while the volume has consumers or is mounted here.
    fn refuse_if_used(&self, v: &Volume, what: &str) -> Result<()> {
        self.refuse_if_consumed(v, what)?;
        let mp = self.mount_point(&v.name);
        if !self.node.mounts_at(&mp)?.is_empty() {
            return Err(Error::in_use(format!(
                "cannot {what} volume {}: it is mounted at {}; unmount it first",
                v.name,
                mp.display()
            )));
        }
        Ok(())
    }

    /// Refuse `what` while any consumer holds the volume.
    fn refuse_if_consumed(&self, v: &Volume, what: &str) -> Result<()> {
        match self.state.load_mount(&v.id)? {
            Some(rec) if !rec.consumers.is_empty() => Err(Error::in_use(format!(
                "cannot {what} volume {}: it is in use by {} consumer(s) ({}); unmount it first",
                v.name,
                rec.consumers.len(),
                rec.consumers.iter().cloned().collect::<Vec<_>>().join(", ")
            ))),
            _ => Ok(()),
        }
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
            self.release(&v, false)?;
        }
        let current = self.driver.inspect(&v.id)?.unwrap_or_else(|| v.clone());
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
        self.driver.remove(&v.id)?;
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
            self.driver
                .resize(&v.id, gib)
                .map_err(|e| e.context(step("grow the volume")))?
        } else {
            v.size * GIB
        };
        fail::fail_point!("volume::resize-after-driver", |_| crate::crash_here());
        let mp = self.mount_point(&v.name);
        if let Some(m) = self.node.mounts_at(&mp)?.into_iter().next() {
            let current = self.driver.inspect(&v.id)?.unwrap_or_else(|| v.clone());
            if let Some(dev) = current
                .attachments
                .first()
                .map(|a| PathBuf::from(&a.device_name))
                .filter(|d| !d.as_os_str().is_empty())
            {
                self.node.grow(&dev, &mp, &m.fs_type, self.cfg.duration(keys::FORMAT_TIMEOUT)).map_err(|e| {
                    let hint = if m.fs_type.starts_with("ext") && e.is_permission_denied() {
                        " (growing a mounted ext filesystem needs CAP_SYS_RESOURCE; the volume itself has grown, retry with that capability or grow it unmounted)"
                    } else {
                        ""
                    };
                    e.map_message(|m| format!("{m}{hint}"))
                        .context(step("grow the filesystem"))
                })?;
            }
        }
        fail::fail_point!("volume::resize-after-fs", |_| crate::crash_here());
        let v = self.driver.inspect(&v.id)?.unwrap_or(v);
        Ok((v, bytes))
    }

    /// Whether an error means "the volume does not exist". Only lookups
    /// make such errors: a missing file or tool is a system error.
    pub fn is_not_found(e: &Error) -> bool {
        e.kind() == Kind::NotFound
    }

    /// The mount record of a volume (for tests and diagnostics).
    pub fn mount_record(&self, r: VolumeRef<'_>) -> Result<Option<MountRecord>> {
        let v = self.find(r)?;
        self.state.load_mount(&v.id)
    }

    /// Create volume `name` as a copy of an existing volume or from a
    /// snapshot. Sizes default to the source's; an existing name is
    /// reported as [`Created::Existing`] and left unchanged.
    ///
    /// A source volume mounted on this host is frozen (FIFREEZE) for the
    /// length of the copy, so the copy holds a clean filesystem rather than
    /// a torn one; writers wait meanwhile (milliseconds with a reflink).
    pub fn create_from(
        &self,
        name: &str,
        opts: &CreateOptions,
        from: &CopySource,
    ) -> Result<Created> {
        crate::input::volume_name(name)?;
        if self.cfg.boolean(keys::CREATE_DISABLE) {
            tracing::info!(volume = name, "create.disable is set: not creating");
            return Ok(Created::Disabled);
        }
        {
            let _names = self.state.lock_names()?;
            if let Some(v) = self.existing_or_refused(name)? {
                return Ok(Created::Existing(v));
            }
        }
        // The copy runs without the name lock, so a long copy does not hold
        // up every other create and remove; the driver claims the name
        // atomically at the end, and a racing create of the same name wins.
        let mut spec = self.create_spec(opts);
        let made = match from {
            CopySource::VolumeName(_) | CopySource::VolumeId(_) => {
                let src = match from {
                    CopySource::VolumeName(n) => self.driver.lookup_name(n)?,
                    CopySource::VolumeId(i) => self.driver.inspect(i)?,
                    _ => None,
                }
                .ok_or_else(|| Error::not_found(format!("source volume {from} not found")))?;
                spec.size = opts.size.unwrap_or(src.size);
                let _src_lock = self.state.lock_volume(&src.id)?;
                self.frozen_copy(&src, "copy", |intact| {
                    fail::fail_point!("volume::copy-while-frozen", |_| crate::crash_here());
                    self.driver
                        .copy(&src.id, name, &spec, intact, &|img| self.prepare(name, img))
                })
            }
            CopySource::SnapshotName(_) | CopySource::SnapshotId(_) => {
                let snap = self
                    .driver
                    .snapshots()?
                    .into_iter()
                    .find(|s| match from {
                        CopySource::SnapshotName(n) => &s.name == n,
                        CopySource::SnapshotId(i) => &s.id == i,
                        _ => false,
                    })
                    .ok_or_else(|| Error::not_found(format!("{from} not found")))?;
                spec.size = opts.size.unwrap_or(snap.volume_size);
                self.driver
                    .create_from_snapshot(&snap.id, name, &spec, &|img| self.prepare(name, img))
            }
        };
        fail::fail_point!("volume::copy-after-driver", |_| crate::crash_here());
        match made {
            Ok(v) => Ok(Created::New(v)),
            Err(e) if e.kind() == Kind::AlreadyExists => {
                match self.lookup(VolumeRef::Name(name))? {
                    Some(v) if v.name == name => Ok(Created::Existing(v)),
                    _ => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Take snapshot `snap_name` of a volume (frozen while copied when it
    /// is mounted on this host, as for [`create_from`](Self::create_from)).
    pub fn snapshot(&self, r: VolumeRef<'_>, snap_name: &str) -> Result<Snapshot> {
        let v = self.find(r)?;
        let _lock = self.state.lock_volume(&v.id)?;
        self.frozen_copy(&v, "snapshot", |intact| {
            fail::fail_point!("volume::snapshot-while-frozen", |_| crate::crash_here());
            self.driver.snapshot(&v.id, snap_name, intact)
        })
    }

    /// Give the filesystem of a new volume's image (a copy, or a volume
    /// made from a snapshot) a UUID of its own before it is published, so
    /// it mounts beside its source (XFS refuses a second filesystem of one
    /// UUID) and `/dev/disk/by-uuid` names one filesystem. When the UUID
    /// cannot be changed the copy is kept as it is, and said so; XFS then
    /// mounts it with `nouuid`. Fails (and the copy is discarded) only
    /// when a tool had to be stopped half-way.
    fn prepare(&self, name: &str, img: &Path) -> Result<()> {
        fail::fail_point!("volume::copy-keep-uuid", |_| Ok(()));
        let timeout = self.cfg.duration(keys::FORMAT_TIMEOUT);
        let fs = match self
            .node
            .probe_tags(img, self.cfg.duration(keys::ATTACH_TIMEOUT))
        {
            Ok((node::fs::Probe::Filesystem(t), _)) => t,
            Ok(_) => return Ok(()),
            Err(e) => {
                tracing::warn!(
                    volume = name,
                    "{e}; the new volume keeps its source's filesystem UUID"
                );
                return Ok(());
            }
        };
        match self.node.regenerate_uuid(img, &fs, timeout) {
            Ok(node::fs::NewUuid::Changed(uuid)) => {
                tracing::info!(volume = name, fs = %fs, uuid = %uuid, "the new volume's filesystem has a UUID of its own");
                Ok(())
            }
            Ok(node::fs::NewUuid::Kept(why)) => {
                tracing::warn!(
                    volume = name,
                    fs = %fs,
                    "the new volume keeps its source's filesystem UUID ({why}); /dev/disk/by-uuid may name either, and XFS mounts it with nouuid"
                );
                Ok(())
            }
            Err(e) => Err(e.context(format!(
                "cannot create volume {name} (giving its filesystem a UUID of its own); the copy was discarded"
            ))),
        }
    }

    /// Run `copy` of a volume with its filesystem frozen when it is
    /// mounted here (see [`quiesce`](Self::quiesce)). `copy` gets the check
    /// the driver runs once the data is copied and before publishing it:
    /// it fails when the filesystem did not stay frozen (the guard thawed
    /// it at `rexray.freezeTimeout`, or someone else did), so a torn copy
    /// is never published, even by a process killed right after. Once the
    /// check passes, the filesystem is thawed at once: the copy is whole,
    /// and what the driver does next with it (preparing it, publishing it)
    /// keeps no writer waiting.
    fn frozen_copy<T>(
        &self,
        v: &Volume,
        what: &str,
        copy: impl FnOnce(&dyn Fn() -> Result<()>) -> Result<T>,
    ) -> Result<T> {
        let bound = self.cfg.duration(keys::FREEZE_TIMEOUT);
        let frozen = std::cell::RefCell::new(self.quiesce(v, what)?);
        let was_frozen = frozen.borrow().is_some();
        let checked = std::cell::Cell::new(false);
        let finish = |f: node::freeze::Frozen| {
            // The copy was whole when the check passed; a thaw after it
            // changes nothing in it.
            if let Err(e) = f.finish(bound) {
                tracing::warn!(volume = %v.name, "{e}");
            }
        };
        let intact = || {
            checked.set(true);
            let held = frozen.borrow_mut().take();
            match held {
                Some(f) => match f.intact(bound) {
                    Ok(()) => {
                        finish(f);
                        Ok(())
                    }
                    Err(e) => {
                        // `finish` below thaws it and ends the guard.
                        *frozen.borrow_mut() = Some(f);
                        Err(e
                            .map_message(|m| format!("{m}; the {what} was discarded"))
                            .context(format!("cannot {what} volume {}", v.name)))
                    }
                },
                None => Ok(()),
            }
        };
        let made = copy(&intact);
        if was_frozen && made.is_ok() && !checked.get() {
            // Every driver that copies must check before publishing.
            debug_assert!(
                false,
                "the {} driver published a copy without checking the freeze",
                self.driver.name()
            );
            tracing::error!(volume = %v.name, driver = self.driver.name(), "a {what} was published without checking that the source stayed frozen");
        }
        if let Some(f) = frozen.into_inner() {
            finish(f);
        }
        made
    }

    /// Every snapshot, by name.
    pub fn snapshots(&self) -> Result<Vec<Snapshot>> {
        let mut s = self.driver.snapshots()?;
        s.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(s)
    }

    /// Remove a snapshot as `r` says (exact name, id, or either, refused
    /// when the argument is one snapshot's id and another's name).
    pub fn remove_snapshot(&self, r: SnapshotRef<'_>) -> Result<Snapshot> {
        let all = self.driver.snapshots()?;
        let by_id = || all.iter().find(|s| s.id == r.arg());
        let by_name = || all.iter().find(|s| s.name == r.arg());
        let s = match r {
            VolumeRef::Name(_) => by_name(),
            VolumeRef::Id(_) => by_id(),
            VolumeRef::IdOrName(a) => match (by_id(), by_name()) {
                (Some(i), Some(n)) if i.id != n.id => {
                    return Err(ambiguous("snapshot", a, &i.name, &n.id))
                }
                (i, n) => i.or(n),
            },
        }
        .ok_or_else(|| {
            Error::not_found(format!(
                "snapshot {} not found",
                crate::input::quote(r.arg())
            ))
        })?
        .clone();
        self.driver.remove_snapshot(&s.id)?;
        Ok(s)
    }

    /// Make a volume's content stable for a copy: nothing to do when it is
    /// not attached; freeze its filesystem when it is mounted on this
    /// kernel; refuse when another instance holds it.
    fn quiesce(&self, v: &Volume, what: &str) -> Result<Option<node::freeze::Frozen>> {
        let current = self.driver.inspect(&v.id)?.unwrap_or_else(|| v.clone());
        let Some(a) = current.attachments.first() else {
            return Ok(None);
        };
        if current.state() != AttachmentState::Attached {
            return Err(Error::in_use(format!(
                "cannot {what} volume {}: it is attached to another instance ({}); detach it there first",
                v.name, a.instance_id.id
            )));
        }
        if a.device_name.is_empty() {
            return Ok(None);
        }
        let numbers = self.node.device_numbers(Path::new(&a.device_name))?;
        match self.node.mounts_of(numbers)?.first() {
            Some(m) => node::freeze::Frozen::freeze(
                &m.mount_point,
                self.cfg.duration(keys::FREEZE_TIMEOUT),
            )
            .map(Some)
            .map_err(|e| e.context(format!("cannot {what} volume {}", v.name))),
            None => Ok(None),
        }
    }

    /// Delete mount records of volumes that no longer exist (removed by
    /// another instance or by hand): nothing can mount or unmount them.
    /// Checked again under the volume's lock, so a volume created and
    /// mounted meanwhile keeps its record.
    fn drop_dangling_records(&self) {
        let Ok(ids) = self.state.mount_record_ids() else {
            return;
        };
        for id in ids {
            if crate::input::volume_id(&id).is_err() {
                continue;
            }
            let Ok(_lock) = self.state.lock_volume(&id) else {
                continue;
            };
            if matches!(self.driver.inspect(&id), Ok(None)) {
                tracing::warn!(volume_id = %id, "deleting the mount record of a volume that no longer exists");
                if let Err(e) = self.state.remove_mount(&id) {
                    tracing::warn!(volume_id = %id, "could not delete the record: {e}");
                }
            }
        }
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
        self.driver.tidy();
    }

    /// Clean up after a crash: every volume mounted at its mount point that
    /// no consumer holds is unmounted and detached (the process died
    /// between the unmount's record drop and the real unmount, or between
    /// the mount and its record). Returns the names cleaned up.
    pub fn reconcile(&self) -> Result<Vec<String>> {
        let mounts = self.node.mounts()?;
        let mut done = Vec::new();
        for v in self.list()? {
            let mp = self.mount_point(&v.name);
            if !mounts.iter().any(|m| m.mount_point == mp) {
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
            let held = !rec.holds.is_empty();
            tracing::warn!(volume = %v.name, mount_point = %mp.display(), detach = !held, "unmounting a mount no consumer holds (left by a crash)");
            match self.release(&v, held) {
                Ok(()) => done.push(v.name.clone()),
                Err(e) => tracing::warn!(volume = %v.name, "could not clean up: {e}"),
            }
        }
        self.drop_dangling_records();
        self.tidy();
        Ok(done)
    }
}

/// How a request names a volume. Docker, flexrex and dvdcli requests
/// carry names and match names only; the operator's CLI takes an id or a
/// name. Names and ids never overlap for volumes created by this release
/// (a name that is another volume's id is refused at create, and a new id
/// is never a name); a pair made earlier is refused by
/// [`IdOrName`](Self::IdOrName) rather than guessed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeRef<'a> {
    /// Exact name only.
    Name(&'a str),
    /// Exact id only (a volume already found, a recorded id).
    Id(&'a str),
    /// Exact id or exact name, refused when it is both, of two volumes.
    IdOrName(&'a str),
}

/// Snapshots are named the same ways as volumes.
pub type SnapshotRef<'a> = VolumeRef<'a>;

impl<'a> VolumeRef<'a> {
    /// The text given.
    pub fn arg(&self) -> &'a str {
        match *self {
            VolumeRef::Name(s) | VolumeRef::Id(s) | VolumeRef::IdOrName(s) => s,
        }
    }

    /// An operator's argument: `id:<ID>` or `name:<NAME>` say which (names
    /// and ids have no `:`), anything else is an id or a name.
    pub fn operator(arg: &'a str) -> VolumeRef<'a> {
        if let Some(id) = arg.strip_prefix("id:") {
            VolumeRef::Id(id)
        } else if let Some(name) = arg.strip_prefix("name:") {
            VolumeRef::Name(name)
        } else {
            VolumeRef::IdOrName(arg)
        }
    }
}

impl std::fmt::Display for VolumeRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.arg())
    }
}

/// The refusal of an argument that is the id of `id_owner` and the name
/// of the volume (or snapshot) with id `named_id`.
fn ambiguous(what: &str, arg: &str, id_owner: &str, named_id: &str) -> Error {
    Error::invalid(format!(
        "{what} argument {q} is ambiguous: it is the id of {what} {id_owner} and the name of another {what} (id {named_id}); \
         refusing to guess. Say which: `id:{arg}` for {what} {id_owner}, `name:{arg}` for the {what} named {arg}",
        q = crate::input::quote(arg),
    ))
}

/// Where [`Volumes::create_from`] copies from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopySource {
    /// An existing volume, by exact name.
    VolumeName(String),
    /// An existing volume, by exact id.
    VolumeId(String),
    /// A snapshot, by exact name.
    SnapshotName(String),
    /// A snapshot, by exact id.
    SnapshotId(String),
}

impl std::fmt::Display for CopySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::input::quote;
        match self {
            CopySource::VolumeName(n) => write!(f, "volumeName {}", quote(n)),
            CopySource::VolumeId(n) => write!(f, "volumeID {}", quote(n)),
            CopySource::SnapshotName(n) => write!(f, "snapshot with snapshotName {}", quote(n)),
            CopySource::SnapshotId(n) => write!(f, "snapshot with snapshotID {}", quote(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(home: &Path) -> Volumes {
        let env = [("REXRAY_HOME".to_string(), home.display().to_string())];
        let cfg = crate::config::Config::load(crate::config::LoadOptions {
            env: Some(env.into_iter().collect()),
            ..Default::default()
        })
        .unwrap();
        Volumes::open(cfg).unwrap()
    }

    fn new(vols: &Volumes, name: &str) -> Volume {
        match vols.create(name, &CreateOptions::default()).unwrap() {
            Created::New(v) => v,
            other => panic!("{other:?}"),
        }
    }

    /// Rename, behind the workflows' back, as a previous release allowed.
    fn rename_in_catalog(vols: &Volumes, from: &str, to: &str) {
        let p = vols
            .config()
            .path(keys::LOOP_VOLUME_PATH)
            .join("catalog.db");
        let c = rusqlite::Connection::open(p).unwrap();
        let n: usize = ["volumes", "snapshots"]
            .iter()
            .map(|t| {
                c.execute(
                    &format!("UPDATE {t} SET name = ?2 WHERE name = ?1"),
                    [from, to],
                )
                .unwrap()
            })
            .sum();
        assert_eq!(n, 1, "{from}");
    }

    #[test]
    fn a_name_that_is_another_volumes_id_is_refused_at_create() {
        let t = tempfile::tempdir().unwrap();
        let vols = open(t.path());
        let v = new(&vols, "vol");
        let e = vols.create(&v.id, &CreateOptions::default()).unwrap_err();
        assert_eq!(e.kind(), Kind::InvalidInput);
        assert!(
            e.message().contains(&v.id) && e.message().contains("volume vol"),
            "{e}"
        );
        let from = CopySource::VolumeName("vol".into());
        let e = vols
            .create_from(&v.id, &CreateOptions::default(), &from)
            .unwrap_err();
        assert_eq!(e.kind(), Kind::InvalidInput, "{e}");
        assert_eq!(vols.list().unwrap().len(), 1);
    }

    #[test]
    fn requests_match_names_only_and_the_cli_refuses_ambiguity() {
        let t = tempfile::tempdir().unwrap();
        let vols = open(t.path());
        let v = new(&vols, "vol");
        // By name only: an id is not a name.
        assert!(vols.lookup(VolumeRef::Name(&v.id)).unwrap().is_none());
        assert_eq!(vols.find(VolumeRef::Name("vol")).unwrap().id, v.id);
        assert_eq!(vols.find(VolumeRef::Id(&v.id)).unwrap().name, "vol");
        assert!(vols.lookup(VolumeRef::Id("vol")).unwrap().is_none());
        assert_eq!(vols.find(VolumeRef::IdOrName(&v.id)).unwrap().name, "vol");
        assert_eq!(vols.find(VolumeRef::IdOrName("vol")).unwrap().id, v.id);

        // A pair left by a previous release: "other" named after vol's id.
        let other = new(&vols, "other");
        rename_in_catalog(&vols, "other", &v.id);
        assert_eq!(vols.find(VolumeRef::Name(&v.id)).unwrap().id, other.id);
        let e = vols.find(VolumeRef::IdOrName(&v.id)).unwrap_err();
        assert_eq!(e.kind(), Kind::InvalidInput);
        let m = e.message();
        assert!(
            m.contains("ambiguous") && m.contains("volume vol") && m.contains(&other.id),
            "{m}"
        );
        assert!(vols.remove(VolumeRef::IdOrName(&v.id)).is_err());
        assert_eq!(vols.list().unwrap().len(), 2, "nothing was removed");
        // The operator says which.
        assert_eq!(
            vols.find(VolumeRef::operator(&format!("id:{}", v.id)))
                .unwrap()
                .name,
            "vol"
        );
        assert_eq!(
            vols.find(VolumeRef::operator(&format!("name:{}", v.id)))
                .unwrap()
                .id,
            other.id
        );
        vols.remove(VolumeRef::Name(&v.id)).unwrap();
        assert_eq!(vols.find(VolumeRef::IdOrName(&v.id)).unwrap().name, "vol");
    }

    #[test]
    fn snapshots_follow_the_same_rules() {
        let t = tempfile::tempdir().unwrap();
        let vols = open(t.path());
        new(&vols, "vol");
        let s1 = vols.snapshot(VolumeRef::Name("vol"), "s1").unwrap();
        let e = vols.snapshot(VolumeRef::Name("vol"), &s1.id).unwrap_err();
        assert_eq!(e.kind(), Kind::InvalidInput, "{e}");
        let s2 = vols.snapshot(VolumeRef::Name("vol"), "s2").unwrap();
        rename_in_catalog(&vols, "s2", &s1.id);
        let e = vols
            .remove_snapshot(SnapshotRef::IdOrName(&s1.id))
            .unwrap_err();
        assert!(
            e.message().contains("ambiguous") && e.message().contains("s1"),
            "{e}"
        );
        assert_eq!(vols.snapshots().unwrap().len(), 2);
        assert_eq!(
            vols.remove_snapshot(SnapshotRef::Name(&s1.id)).unwrap().id,
            s2.id
        );
        assert_eq!(
            vols.remove_snapshot(SnapshotRef::IdOrName(&s1.id))
                .unwrap()
                .name,
            "s1"
        );
    }
}

#[cfg(test)]
#[path = "volume_tests.rs"]
pub(crate) mod workflow_tests;
