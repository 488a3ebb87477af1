//! Attach without mounting, holds (kubelet's attach before its mount),
//! detach, and the refusals while a volume is used or held.

use super::{Unmounted, VolumeRef, Volumes};
use crate::config::keys;
use crate::model::{AttachmentState, InstanceId, MountSource, Volume};
use crate::state::{MountRecord, PUBLISHED_HOLDER};
use crate::{Error, Result};

impl Volumes {
    /// Attach a volume to this instance without mounting it.
    pub fn attach(&self, r: VolumeRef<'_>, force: bool) -> Result<Volume> {
        self.attach_held(r, force, None, None)
    }

    /// Attach a volume for `holder`, who will mount it later (kubelet's
    /// attach before its mountdevice): the device stays attached, even
    /// when every consumer of its mount leaves, until the holder lets go
    /// with [`release_hold`](Self::release_hold).
    pub fn hold(&self, r: VolumeRef<'_>, holder: &str, force: bool) -> Result<Volume> {
        crate::input::consumer(holder)?;
        self.attach_held(r, force, Some(holder), None)
    }

    /// [`hold`](Self::hold) of a volume a CSI controller attached to this
    /// instance, with the attach token it answered: see
    /// [`mount_published`](Self::mount_published).
    pub fn hold_published(&self, r: VolumeRef<'_>, holder: &str, token: &str) -> Result<Volume> {
        crate::input::consumer(holder)?;
        self.attach_held(r, false, Some(holder), Some(token))
    }

    /// The CSI controller's publish (ControllerPublishVolume): record
    /// instance `who` (a node, not necessarily this one) as the volume's
    /// holder and return the volume and the attach token that node
    /// resolves. Nothing is attached on this host. Publishing again to the
    /// same instance answers the same token; a volume another instance
    /// holds is refused (InUse).
    pub fn publish_to(&self, r: VolumeRef<'_>, who: &InstanceId) -> Result<(Volume, String)> {
        let (v, _lock) = self.find_and_lock(r, "publishing")?;
        let a = self.ctl.attach(&v.id, who, false, None)?;
        Ok((a.volume, a.token))
    }

    /// The CSI controller's unpublish (ControllerUnpublishVolume): release
    /// instance `who`'s hold. A volume `who` does not hold succeeds. When
    /// `who` is this instance, a volume still staged or mounted here is
    /// refused (InUse: never pull a mounted device away), and the device
    /// this node resolved is let go of before the hold.
    pub fn unpublish_from(&self, r: VolumeRef<'_>, who: &InstanceId) -> Result<()> {
        let (v, _lock) = self.find_and_lock(r, "unpublishing")?;
        let current = self.inspect(&v.id)?.unwrap_or_else(|| v.clone());
        let me = who.id.eq_ignore_ascii_case(&self.instance().id);
        let mut rec = self.state.load_mount(&v.id)?.unwrap_or_default();
        if me {
            let staged: Vec<&String> = rec
                .consumers
                .iter()
                .chain(rec.holds.iter().filter(|h| *h != PUBLISHED_HOLDER))
                .collect();
            if !staged.is_empty() {
                return Err(Error::in_use(format!(
                    "cannot unpublish volume {} from node {}: it is still staged or used there ({}); NodeUnstageVolume first",
                    v.name,
                    who.id,
                    staged
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            let mp = self.mount_point(&v.name);
            let mounted = self.node.mounts_at(&mp)?.into_iter().next();
            let mounted = match mounted {
                Some(m) => Some(m.mount_point),
                None if current.state() == AttachmentState::Attached => self
                    .device_mounts(&current)?
                    .into_iter()
                    .next()
                    .map(|m| m.mount_point),
                None => None,
            };
            if let Some(at) = mounted {
                return Err(Error::in_use(format!(
                    "cannot unpublish volume {} from node {}: it is mounted at {}; unmount it first",
                    v.name,
                    who.id,
                    at.display()
                )));
            }
        }
        let held = current
            .attachments
            .iter()
            .any(|a| a.instance_id.id.eq_ignore_ascii_case(&who.id));
        if held {
            if me {
                self.exe.release(&current, false)?;
            }
            fail::fail_point!("volume::unpublish-before-detach", |_| crate::crash_here());
            self.ctl.detach(&v.id, who, false)?;
        }
        if me && rec.holds.remove(PUBLISHED_HOLDER) {
            self.state.save_mount(&v.id, &rec)?;
        }
        Ok(())
    }

    /// Attach `v` (as just looked up) to this node: the controller records
    /// this instance as its holder (`force` takes it from another), then
    /// the executor turns the attach token into something mountable here.
    /// When that fails, a volume that was not attached to this instance
    /// before is released again.
    pub(super) fn attach_here(&self, v: &Volume, force: bool) -> Result<MountSource> {
        let was_attached = v.state() == AttachmentState::Attached;
        // Held by this instance and here already: nothing to ask the
        // controller (some backends record a second attachment for a
        // second attach, as the original vfs server does).
        if was_attached {
            if let Some(here) = self.exe.present(v)? {
                return Ok(here);
            }
        }
        let next = self.exe.next_device()?;
        let a = self
            .ctl
            .attach(&v.id, self.instance(), force, next.as_deref())?;
        let held = self.settled(a.volume);
        self.exe
            .resolve(&held, &a.token, self.cfg.duration(keys::ATTACH_TIMEOUT))
            .inspect_err(|_| {
                if !was_attached {
                    if let Err(d) = self.ctl.detach(&v.id, self.instance(), false) {
                        tracing::warn!(volume = %v.name, error = %d, "could not release the volume after a failed attach");
                    }
                }
            })
    }

    /// Detach `v` from this node: the executor lets go of what it made of
    /// the volume here (a device another instance took over since is left
    /// alone unless `force`), then the controller releases the hold. A
    /// crash between the two leaves a hold without a device, which the
    /// next attach or detach of this instance finishes.
    pub(super) fn detach_here(&self, v: &Volume, force: bool) -> Result<()> {
        self.exe.release(v, force)?;
        self.ctl.detach(&v.id, self.instance(), force)?;
        Ok(())
    }

    fn attach_held(
        &self,
        r: VolumeRef<'_>,
        force: bool,
        holder: Option<&str>,
        token: Option<&str>,
    ) -> Result<Volume> {
        let (v, _lock) = self.find_and_lock(r, "attaching")?;
        let current = self.inspect(&v.id)?.unwrap_or_else(|| v.clone());
        let was_attached = current.state() == AttachmentState::Attached;
        let src = match token {
            Some(t) => self.resolve_published(&current, t)?,
            None => self.attach_here(&current, force)?,
        };
        if let MountSource::Device(dev) = &src {
            if let Err(e) = self
                .node
                .wait_for_device(dev, self.cfg.duration(keys::ATTACH_TIMEOUT))
            {
                // Leave the volume as we found it.
                if !was_attached {
                    if let Err(d) = self.detach_here(&current, false) {
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
        Ok(self.inspect(&v.id)?.unwrap_or(v))
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
        let (v, _lock) = self.find_and_lock(r, "detaching")?;
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
        let (v, _lock) = self.find_and_lock(r, "detaching")?;
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
        let current = self.inspect(&v.id)?.unwrap_or_else(|| v.clone());
        self.detach_here(&current, force)?;
        Ok(self.inspect(&v.id)?.unwrap_or(v))
    }

    /// Refuse `what` while a holder keeps the volume attached.
    pub(super) fn refuse_if_held(
        &self,
        v: &Volume,
        rec: &MountRecord,
        what: &str,
        or: &str,
    ) -> Result<()> {
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
                None if h == PUBLISHED_HOLDER => "a CSI controller (published to this node; ControllerUnpublishVolume releases it)".to_string(),
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
    pub(super) fn refuse_if_consumed(&self, v: &Volume, what: &str) -> Result<()> {
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
}
