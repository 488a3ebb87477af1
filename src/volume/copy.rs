//! Copies and snapshots: a source mounted on this host is frozen while
//! it is copied, and a copy whose freeze did not hold is never published.

use super::lookup::ambiguous;
use super::{Created, SnapshotRef, VolumeRef, Volumes};
use crate::config::keys;
use crate::model::{AttachmentState, CreateOptions, Snapshot, Volume};
use crate::node;
use crate::{Error, Kind, Result};
use std::path::Path;

impl Volumes {
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
                    CopySource::VolumeName(n) => self.lookup_name(n)?,
                    CopySource::VolumeId(i) => self.inspect(i)?,
                    _ => None,
                }
                .ok_or_else(|| Error::not_found(format!("source volume {from} not found")))?;
                spec.size = opts.size.unwrap_or(src.size);
                spec.fields.insert(
                    crate::model::CONTENT_SOURCE.into(),
                    crate::model::ContentSource::Volume(src.id.clone()).field(),
                );
                let _src_lock = self.state.lock_volume(&src.id)?;
                self.frozen_copy(&src, "copy", false, |intact| {
                    fail::fail_point!("volume::copy-while-frozen", |_| crate::crash_here());
                    self.ctl
                        .copy(&src.id, name, &spec, intact, &|img| self.prepare(name, img))
                })
            }
            CopySource::SnapshotName(_) | CopySource::SnapshotId(_) => {
                let snap = self
                    .ctl
                    .snapshots()?
                    .into_iter()
                    .find(|s| match from {
                        CopySource::SnapshotName(n) => &s.name == n,
                        CopySource::SnapshotId(i) => &s.id == i,
                        _ => false,
                    })
                    .ok_or_else(|| Error::not_found(format!("{from} not found")))?;
                spec.size = opts.size.unwrap_or(snap.volume_size);
                spec.fields.insert(
                    crate::model::CONTENT_SOURCE.into(),
                    crate::model::ContentSource::Snapshot(snap.id.clone()).field(),
                );
                self.ctl
                    .create_from_snapshot(&snap.id, name, &spec, &|img| self.prepare(name, img))
            }
        };
        fail::fail_point!("volume::copy-after-driver", |_| crate::crash_here());
        match made {
            Ok(v) => Ok(Created::New(self.settled(v))),
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
        self.frozen_copy(&v, "snapshot", true, |intact| {
            fail::fail_point!("volume::snapshot-while-frozen", |_| crate::crash_here());
            self.ctl.snapshot(&v.id, snap_name, intact)
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
        node::fresh_uuid(
            self.node.as_ref(),
            name,
            img,
            self.cfg.duration(keys::ATTACH_TIMEOUT),
            self.cfg.duration(keys::FORMAT_TIMEOUT),
        )
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
        live: bool,
        copy: impl FnOnce(&dyn Fn() -> Result<()>) -> Result<T>,
    ) -> Result<T> {
        let frozen = std::cell::RefCell::new(self.quiesce(v, what, live)?);
        let was_frozen = frozen.borrow().is_some();
        let checked = std::cell::Cell::new(false);
        let finish = |f: Box<dyn node::FreezeGuard>| {
            // The copy was whole when the check passed; a thaw after it
            // changes nothing in it.
            if let Err(e) = f.finish() {
                tracing::warn!(volume = %v.name, "{e}");
            }
        };
        let intact = || {
            checked.set(true);
            let held = frozen.borrow_mut().take();
            match held {
                Some(f) => match f.intact() {
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
                self.ctl.info().driver
            );
            tracing::error!(volume = %v.name, driver = self.ctl.info().driver, "a {what} was published without checking that the source stayed frozen");
        }
        if let Some(f) = frozen.into_inner() {
            finish(f);
        }
        made
    }

    /// Every snapshot, by name.
    pub fn snapshots(&self) -> Result<Vec<Snapshot>> {
        let mut s = self.ctl.snapshots()?;
        s.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(s)
    }

    /// Remove a snapshot as `r` says (exact name, id, or either, refused
    /// when the argument is one snapshot's id and another's name).
    pub fn remove_snapshot(&self, r: SnapshotRef<'_>) -> Result<Snapshot> {
        let all = self.ctl.snapshots()?;
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
        self.ctl.remove_snapshot(&s.id)?;
        Ok(s)
    }

    /// Make a volume's content stable for a copy: nothing to do when it is
    /// not attached; freeze its filesystem when it is mounted on this
    /// kernel; when another instance holds it, refuse, unless `live` (a
    /// snapshot) and the driver's snapshots are one point in time of the
    /// image however it is written: then it is taken crash-consistent.
    fn quiesce(
        &self,
        v: &Volume,
        what: &str,
        live: bool,
    ) -> Result<Option<Box<dyn node::FreezeGuard>>> {
        let current = self.inspect(&v.id)?.unwrap_or_else(|| v.clone());
        let Some(a) = current.attachments.first() else {
            return Ok(None);
        };
        if current.state() != AttachmentState::Attached {
            // (Asked only now: a libStorage client asks its server.)
            if live && self.ctl.offers().live_snapshots {
                // One point in time of the image, as a power cut would
                // leave it: the journal replays when a copy is mounted.
                tracing::warn!(
                    volume = %v.name,
                    holder = %a.instance_id.id,
                    "taking a {what} of a volume attached to another instance: its filesystem cannot be frozen from here, so the {what} is crash-consistent"
                );
                return Ok(None);
            }
            return Err(Error::in_use(format!(
                "cannot {what} volume {}: it is attached to another instance ({}); detach it there first",
                v.name, a.instance_id.id
            )));
        }
        match self.device_mounts(&current)?.first() {
            Some(m) => self
                .node
                .freeze(&m.mount_point, self.cfg.duration(keys::FREEZE_TIMEOUT))
                .map(Some)
                .map_err(|e| e.context(format!("cannot {what} volume {}", v.name))),
            None => Ok(None),
        }
    }
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
