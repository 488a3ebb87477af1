//! Mount and unmount: attach, format only a blank device, mount, hand
//! out the path, record the consumer; and the reverse, record first.

use super::{Unmounted, VolumeRef, Volumes};
use crate::config::keys;
use crate::model::{AttachmentState, FsType, MountOptions, MountSource, Volume};
use crate::node;
use crate::state::{Consumer, MountRecord, PUBLISHED_HOLDER};
use crate::{Error, Result};
use std::path::{Path, PathBuf};

impl Volumes {
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
        self.mount_published(r, consumer, opts, None, then)
    }

    /// [`mount_and`](Self::mount_and) of a volume that a CSI controller
    /// attached to this instance (ControllerPublishVolume) when `token`,
    /// the attach token it answered, is given: the node resolves the token
    /// itself instead of asking the controller to attach, and records
    /// [`PUBLISHED_HOLDER`] before anything else, so that no release on
    /// this node (an unmount, a crash's clean-up at start) detaches what
    /// the controller attached. A volume the controller does not hold for
    /// this instance is refused. Without a token, a volume this call
    /// attaches itself drops a [`PUBLISHED_HOLDER`] left from an earlier
    /// publication (the controller no longer holds it for us).
    pub fn mount_published(
        &self,
        r: VolumeRef<'_>,
        consumer: Consumer<'_>,
        opts: &MountOptions,
        token: Option<&str>,
        then: &dyn Fn(&Volume, &Path, &Path) -> Result<()>,
    ) -> Result<(Volume, PathBuf)> {
        let bound = consumer.path();
        let consumer = consumer.key()?;
        let (v, _lock) = self.find_and_lock(r, "mounting")?;
        // What we looked up may have changed while we waited for the lock.
        let v = self
            .inspect(&v.id)?
            .ok_or_else(|| Error::not_found(format!("volume {} was removed", v.name)))?;
        let mp = self.mount_point(&v.name);
        let was_attached = v.state() == AttachmentState::Attached;
        let source = match token {
            Some(t) => self.resolve_published(&v, t)?,
            None => self.attach_for_mount(&v, &mp, opts)?,
        };
        let (device, fs_type) = self
            .mount_attached(&v, &mp, &source, opts)
            .map_err(|e| self.undo_attach(&v, &mp, was_attached, e))?;
        fail::fail_point!("volume::mount-after-mount", |_| crate::crash_here());
        let found = self.state.load_mount(&v.id)?.unwrap_or_default();
        let path = self
            .hand_out(&v, &mp, then)
            .map_err(|e| self.undo_mount(&v, &found, was_attached, e))?;
        let mut rec = MountRecord {
            releasing: false,
            ..found.clone()
        };
        let stale = token.is_none() && !was_attached && rec.holds.remove(PUBLISHED_HOLDER);
        if rec.consumers.insert(consumer.clone())
            || rec.volume_id.is_empty()
            || stale
            || found.releasing
        {
            rec.volume_id = v.id.clone();
            rec.name = v.name.clone();
            rec.device = device.to_string_lossy().into_owned();
            rec.mountpoint = mp.to_string_lossy().into_owned();
            rec.fs_type = fs_type;
            if let Err(e) = self.state.save_mount(&v.id, &rec) {
                // Unrecorded, the consumer could never release what this
                // call made (a full disk, say): undo it, the front-end's
                // own mount of it first.
                if let Some(target) = bound.filter(|_| !found.consumers.contains(&consumer)) {
                    if let Err(u) = self.node.unmount_all(target) {
                        tracing::warn!(volume = %v.name, path = %target.display(), error = %u, "could not undo the mount handed out after its consumer could not be recorded");
                    }
                }
                let e = e.context(format!(
                    "recording consumer {consumer} of volume {}",
                    v.name
                ));
                return Err(self.undo_mount(&v, &found, was_attached, e));
            }
        }
        fail::fail_point!("volume::mount-after-record", |_| crate::crash_here());
        let v = self.inspect(&v.id)?.unwrap_or(v);
        Ok((v, path))
    }

    /// The source of a volume the controller published to this instance
    /// with attach token `token`: [`PUBLISHED_HOLDER`] is recorded first,
    /// then the executor resolves the token (no call to the controller).
    pub(super) fn resolve_published(&self, v: &Volume, token: &str) -> Result<MountSource> {
        if v.state() != AttachmentState::Attached {
            return Err(Error::in_use(format!(
                "volume {} is not published to this node ({}): ControllerPublishVolume attaches it first",
                v.name,
                self.instance().id
            )));
        }
        let mut rec = self.state.load_mount(&v.id)?.unwrap_or_default();
        if rec.holds.insert(PUBLISHED_HOLDER.to_string()) {
            if rec.volume_id.is_empty() {
                rec.volume_id = v.id.clone();
                rec.name = v.name.clone();
            }
            self.state.save_mount(&v.id, &rec)?;
        }
        fail::fail_point!("volume::published-before-resolve", |_| crate::crash_here());
        self.exe
            .resolve(v, token, self.cfg.duration(keys::ATTACH_TIMEOUT))
            .map_err(|e| e.context(mounting(v, "attach")))
    }

    /// Attach `v` to this instance for a mount at `mp`. With preempt
    /// (`forceAttach`, or `mount.preempt`) a volume another instance holds
    /// is taken, after that instance's mounts of it on this host are
    /// unmounted.
    fn attach_for_mount(&self, v: &Volume, mp: &Path, opts: &MountOptions) -> Result<MountSource> {
        let preempt = opts.force_attach || self.cfg.boolean(keys::MOUNT_PREEMPT);
        if preempt && v.state() == AttachmentState::Unavailable {
            self.evict_other_mounts(v, mp)
                .map_err(|e| e.context(mounting(v, "preempt")))?;
        }
        self.attach_here(v, preempt)
            .map_err(|e| e.context(mounting(v, "attach")))
    }

    /// Mount what the driver attached at `mp`, unless it is mounted there
    /// already: a device's filesystem (see
    /// [`mount_device`](Self::mount_device)), or a directory, bound.
    /// Returns the device (or directory) and the filesystem type.
    fn mount_attached(
        &self,
        v: &Volume,
        mp: &Path,
        source: &MountSource,
        opts: &MountOptions,
    ) -> Result<(PathBuf, String)> {
        fail::fail_point!("volume::mount-after-attach", |_| crate::crash_here());
        match source {
            MountSource::Device(dev) => {
                let fs_type = self.mount_device(v, mp, dev, opts)?;
                Ok((dev.clone(), fs_type))
            }
            MountSource::Directory(dir) => {
                if self.node.mounts_at(mp)?.is_empty() {
                    self.node.ensure_dir(mp)?;
                    self.node
                        .bind(dir, mp, false)
                        .map_err(|e| e.context(mounting(v, "bind")))?;
                }
                Ok((dir.clone(), "none".to_string()))
            }
        }
    }

    /// Wait for device `dev` of `v`, then mount its filesystem at `mp`
    /// unless it is mounted there already: a stale mount of another device
    /// is unmounted first, and the device is formatted only if blank (see
    /// [`filesystem`](Self::filesystem)). Returns the filesystem type.
    fn mount_device(
        &self,
        v: &Volume,
        mp: &Path,
        dev: &Path,
        opts: &MountOptions,
    ) -> Result<String> {
        let numbers = self
            .node
            .wait_for_device(dev, self.cfg.duration(keys::ATTACH_TIMEOUT))
            .map_err(|e| e.context(mounting(v, "wait for device")))?;
        fail::fail_point!("volume::mount-after-wait", |_| crate::crash_here());
        let here = self.node.mounts_at(mp)?;
        if let Some(m) = here.iter().find(|m| m.dev == numbers) {
            return Ok(m.fs_type.clone());
        }
        if !here.is_empty() {
            // A stale mount of another device (a volume of this
            // name that was replaced): precautionary unmount.
            tracing::warn!(mount_point = %mp.display(), "unmounting a stale mount");
            self.node
                .unmount_all(mp)
                .map_err(|e| e.context(mounting(v, "clear stale mount")))?;
        }
        let fs = self.filesystem(v, dev, opts)?;
        fail::fail_point!("volume::mount-after-format", |_| crate::crash_here());
        self.node.ensure_dir(mp)?;
        self.node
            .mount_device(dev, mp, &fs, false)
            .map_err(|e| e.context(mounting(v, "mount")))?;
        self.grow_to_device(v, mp, dev, numbers, &fs);
        Ok(fs)
    }

    /// Grow a filesystem that was made smaller than its device (a copy or
    /// a restore at a larger size, a resize while unmounted) to the
    /// device, now that it is mounted: as a resize of a mounted volume
    /// does. One that fills less than 90% of its device counts (a
    /// filesystem's own overhead is a few percent). A failure is logged;
    /// the mount stands.
    fn grow_to_device(&self, v: &Volume, mp: &Path, dev: &Path, numbers: (u32, u32), fs: &str) {
        let Ok(size) = node::device_size(numbers) else {
            return;
        };
        let Ok(u) = self.node.usage(mp) else {
            return;
        };
        if u.total_bytes == 0 || u.total_bytes >= size / 10 * 9 {
            return;
        }
        tracing::info!(volume = %v.name, filesystem_bytes = u.total_bytes, device_bytes = size, "growing the filesystem to its device (it was made smaller: a copy or a resize while unmounted)");
        if let Err(e) = self
            .node
            .grow(dev, mp, fs, self.cfg.duration(keys::FORMAT_TIMEOUT))
        {
            tracing::warn!(volume = %v.name, "could not grow the filesystem to its device: {e}");
        }
    }

    /// The filesystem on `v`'s device `dev`, made first only if the device
    /// is blank or `overwriteFS` is asked (see [`node::ensure_filesystem`]),
    /// of the type the request names, else the volume's `fsType`, else
    /// `create.default.fsType`.
    fn filesystem(&self, v: &Volume, dev: &Path, opts: &MountOptions) -> Result<String> {
        let want = match opts.fs_type {
            Some(f) => f,
            None => v
                .fields
                .get("fsType")
                .map(String::as_str)
                .unwrap_or(self.cfg.string(keys::CREATE_FSTYPE))
                .parse::<FsType>()?,
        };
        // What was written through the device reaches the backend's
        // store first, so that its answer covers it.
        self.node
            .sync_device(dev)
            .map_err(|e| e.context(mounting(v, "format")))?;
        node::ensure_filesystem(
            self.node.as_ref(),
            &v.name,
            dev,
            want,
            opts.overwrite_fs,
            self.ctl.content(&v.id),
            node::FormatTimeouts {
                probe: self.cfg.duration(keys::ATTACH_TIMEOUT),
                mkfs: self.cfg.duration(keys::FORMAT_TIMEOUT),
            },
        )
        .map_err(|e| e.context(mounting(v, "format")))
    }

    /// After a failed step before anything was handed out, leave the
    /// volume as it was found: a device this call attached is detached
    /// again if nothing got mounted. Returns `e`, saying when a full
    /// backing store may be its cause.
    fn undo_attach(&self, v: &Volume, mp: &Path, was_attached: bool, e: Error) -> Error {
        if !was_attached
            && self
                .node
                .mounts_at(mp)
                .map(|m| m.is_empty())
                .unwrap_or(false)
        {
            if let Err(d) = self.detach_here(v, false) {
                tracing::warn!(volume = %v.name, error = %d, "could not detach after a failed mount");
            }
        }
        // A full backing store fails writes to the device (mkfs,
        // journal recovery): say so when it may be the cause.
        match self.ctl.space_note(&v.id) {
            Some(n) => e.map_message(|m| format!("{m}; {n}")),
            None => e,
        }
    }

    /// The path handed out for `v` mounted at `mp`, checked now (see
    /// [`content_path`](Self::content_path)), once the front-end's `then`
    /// has made its own mount of it.
    fn hand_out(
        &self,
        v: &Volume,
        mp: &Path,
        then: &dyn Fn(&Volume, &Path, &Path) -> Result<()>,
    ) -> Result<PathBuf> {
        let path = self
            .content_path(&v.name, mp, true)
            .map_err(|e| e.context(mounting(v, "check the path handed out")))?;
        if path == mp && self.app_path(mp) != mp {
            tracing::warn!(volume = %v.name, mount_point = %mp.display(), "the volume holds files at its root (root layout, filled by pods of an earlier release): handing out its root to every front-end; move them into the rootPath directory to switch it to the usual layout");
        }
        then(v, mp, &path)?;
        Ok(path)
    }

    /// After a failed handout, leave the volume as it was found: a mount
    /// (and a device) no consumer in `rec` uses is undone. Returns `e`,
    /// saying how to remove what is in the way of the path handed out.
    fn undo_mount(&self, v: &Volume, rec: &MountRecord, was_attached: bool, e: Error) -> Error {
        if !rec.consumers.is_empty() {
            return e;
        }
        let keep = if was_attached {
            Keep::Attached
        } else {
            Keep::for_record(rec)
        };
        match self.release(v, keep) {
            Ok(()) if e.reason() == Some(crate::Reason::NotADirectory) => {
                e.map_message(|m| format!(
                    "{m}; the volume is not mounted now: `rexray volume attach {} -f json` prints its device (attachments[0].deviceName), then `mount DEVICE /mnt && rm /mnt/{} && umount /mnt && rexray volume detach {}`, then mount it again",
                    v.name,
                    self.cfg.string(keys::MOUNT_ROOT_PATH).trim_matches('/'),
                    v.name
                ))
            }
            Ok(()) => e,
            Err(u) => {
                tracing::warn!(volume = %v.name, error = %u, "could not undo the mount after a failed step");
                e
            }
        }
    }

    /// Refuse to unmount the filesystem of a block device that is frozen
    /// (a backup agent's `fsfreeze`): with its last mount gone it could
    /// never be thawed (`fsfreeze -u` needs a mount point), the device
    /// would stay busy, and the next mount would bring it back frozen,
    /// every write to it hanging. Told by freezing it for a moment (with
    /// the guard that thaws it if this process dies): only a frozen one
    /// refuses. Only the whole filesystem of the volume's own block device
    /// is asked: never a directory's bind (the vfs driver's, whose
    /// filesystem is the host's), nor FUSE.
    fn refuse_frozen(&self, v: &Volume, mp: &Path) -> Result<()> {
        let Some(m) = self.node.mounts_at(mp)?.into_iter().next() else {
            return Ok(());
        };
        let own_device = v
            .attachments
            .first()
            .map(|a| Path::new(&a.device_name))
            .filter(|d| d.starts_with("/dev/"))
            .and_then(|d| self.node.device_numbers(d).ok())
            == Some(m.dev);
        let freezable = own_device
            && m.root == "/"
            && matches!(
                m.fs_type.as_str(),
                "ext2" | "ext3" | "ext4" | "xfs" | "btrfs"
            );
        if !freezable {
            return Ok(());
        }
        match self.node.freeze(mp, std::time::Duration::from_secs(10)) {
            Ok(g) => {
                if let Err(e) = g.finish() {
                    tracing::warn!(volume = %v.name, "checking whether the filesystem is frozen: {e}");
                }
                Ok(())
            }
            Err(e) if e.kind() == crate::Kind::InUse => Err(Error::in_use(format!(
                "the filesystem of volume {} at {} is frozen (fsfreeze); unmounted now it could never be thawed, and the next mount would bring it back frozen: thaw it (`fsfreeze -u {}`), then unmount again (nothing was unmounted)",
                v.name,
                mp.display(),
                mp.display()
            ))),
            Err(e) => {
                tracing::debug!(volume = %v.name, "cannot tell whether the filesystem is frozen: {e}");
                Ok(())
            }
        }
    }

    /// Preemption of a volume another instance on this host has mounted:
    /// unmount its mounts of the device first, as a forced detach would cut
    /// off another host. A busy mount stops the preemption.
    fn evict_other_mounts(&self, v: &Volume, ours: &Path) -> Result<()> {
        for m in self.device_mounts(v)? {
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
        let (v, _lock) = self.find_and_lock(r, "unmounting")?;
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
    pub(super) fn settle(&self, v: &Volume, rec: MountRecord) -> Result<Unmounted> {
        if !rec.consumers.is_empty() {
            self.state.save_mount(&v.id, &rec)?;
            return Ok(Unmounted::StillUsed(rec.consumers.len()));
        }
        // Marked first: a process killed before the release is done
        // leaves the mark for the next start to finish it.
        self.state.save_mount(
            &v.id,
            &MountRecord {
                releasing: true,
                ..rec.clone()
            },
        )?;
        fail::fail_point!("volume::unmount-after-record", |_| crate::crash_here());
        self.finish_release(v, rec)?;
        Ok(Unmounted::Released)
    }

    /// The release of a volume no consumer uses (its record `rec`, without
    /// consumers): unmounted, and detached as far as its holds allow; the
    /// record is then stored without the releasing mark.
    pub(super) fn finish_release(&self, v: &Volume, rec: MountRecord) -> Result<()> {
        self.release(v, Keep::for_record(&rec))?;
        self.state.save_mount(
            &v.id,
            &MountRecord {
                releasing: false,
                ..rec
            },
        )
    }

    /// Unmount our mount point and detach the volume from this instance,
    /// as far as `keep` allows.
    pub(super) fn release(&self, v: &Volume, keep: Keep) -> Result<()> {
        let mp = self.mount_point(&v.name);
        let step = |what: &str| format!("unmounting volume {} ({what})", v.name);
        self.refuse_frozen(v, &mp)?;
        self.node
            .unmount_all(&mp)
            .map_err(|e| e.context(step("unmount")))?;
        fail::fail_point!("volume::unmount-after-unmount", |_| crate::crash_here());
        if keep == Keep::Attached {
            return Ok(());
        }
        let current = self.inspect(&v.id)?.unwrap_or_else(|| v.clone());
        if current.state() == AttachmentState::Attached {
            if let Some(m) = self.device_mounts(&current)?.first() {
                return Err(Error::in_use(format!(
                    "volume {} is still mounted at {} by something other than rexray; unmount it there, then unmount again",
                    v.name,
                    m.mount_point.display()
                )));
            }
            if keep == Keep::ControllerHold {
                // The controller attached it to this node: the node lets
                // go of its device; the hold stays until the controller
                // unpublishes the volume.
                self.exe
                    .release(&current, false)
                    .map_err(|e| e.context(step("release the device")))?;
                return Ok(());
            }
            self.detach_here(&current, false)
                .map_err(|e| e.context(step("detach")))?;
            fail::fail_point!("volume::unmount-after-detach", |_| crate::crash_here());
        } else {
            // Another instance took the volume over (and may have let go
            // of it since): what this node still has of it (an rbd-fuse
            // process and its loop device, an s3fs mount) is this node's
            // own to let go of. A driver whose devices are shared (loop)
            // refuses, and the device stays for its new holder.
            if let Err(e) = self.exe.release(&current, false) {
                tracing::debug!(volume = %v.name, error = %e, "not releasing a volume this instance does not hold");
            }
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
}

/// The context of an error in mount step `what` of volume `v`.
fn mounting(v: &Volume, what: &str) -> String {
    format!("mounting volume {} ({what})", v.name)
}

/// What a release leaves attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Keep {
    /// Nothing: unmount, then detach (the device here and the hold).
    Nothing,
    /// The hold a CSI controller made ([`PUBLISHED_HOLDER`]): unmount and
    /// let go of the device on this node, but leave the hold.
    ControllerHold,
    /// Everything: a holder keeps the device attached; unmount only.
    Attached,
}

impl Keep {
    /// What a record's holds keep.
    pub(super) fn for_record(rec: &MountRecord) -> Keep {
        if rec.holds.iter().any(|h| h != PUBLISHED_HOLDER) {
            Keep::Attached
        } else if rec.holds.contains(PUBLISHED_HOLDER) {
            Keep::ControllerHold
        } else {
            Keep::Nothing
        }
    }
}
