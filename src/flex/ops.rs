//! The FlexVolume calls on the library's workflows.
//!
//! - attach / isattached / waitforattach: [`Volumes::hold`] (attach, and
//!   keep the device attached for kubelet until its detach, whatever other
//!   front-ends on the node do meanwhile) and the driver's attachment
//!   state (attached = attached to *this* node).
//! - mountdevice and mount: [`Volumes::mount`] with the path as consumer
//!   (`flex:<path>`), which attaches, formats only a blank device and
//!   mounts at `<mount.path>/<name>`; then that mount is bind-mounted onto
//!   the path, under the volume's lock with the consumer's record, so the
//!   consumer never exists without its bind. Repeating a call finds the
//!   bind and adds nothing.
//! - unmount and unmountdevice: remove the bind, then [`Volumes::unmount`]
//!   for that consumer; the last one out unmounts and detaches.
//!   Which volume a path holds is read back from the mount records (the
//!   consumer) or the kernel (the device behind the bind).
//! - detach: [`Volumes::release_hold`] on the volume recorded for kubelet's
//!   name; consumers whose path is no longer mounted (kubelet skips
//!   unmountdevice for a path that is not mounted, e.g. after a reboot) are
//!   released with it, under the volume's lock. A volume another front-end
//!   still uses stays attached for it and is detached by its last unmount.

use super::args::{Call, Options};
use super::reply::{Reply, CAPABILITIES};
use super::store::{NameRecord, Store};
use crate::config::keys;
use crate::model::{AttachmentState, MountOptions, Volume};
use crate::node;
use crate::volume::Consumer;
use crate::volume::{kubelet_holder, pv_of_holder, KUBELET_HOLDER};
use crate::volume::{Unmounted, VolumeRef, Volumes};
use crate::{Error, Kind, Result};
use std::path::Path;
use std::time::{Duration, Instant};

/// How often a forced attach looks again whether the other node let go.
pub const FORCE_ATTACH_POLL: Duration = Duration::from_secs(5);

/// The consumer id of a path (`flex:<path>`, flexrex's namespace).
pub fn consumer(path: &Path) -> String {
    format!("flex:{}", path.display())
}

/// The reply to `init`: needs no volume, no state.
pub fn init() -> Reply {
    Reply {
        capabilities: Some(CAPABILITIES),
        ..Reply::success()
    }
}

/// Volumes plus flexrex's own records.
pub struct Flex {
    vols: Volumes,
    store: Store,
}

impl Flex {
    /// Over opened volumes.
    pub fn new(vols: Volumes) -> Flex {
        let store = Store::new(&vols.front_end_dir("flex"));
        Flex { vols, store }
    }

    /// Run one call (not `init`).
    pub fn call(&self, call: Call) -> Result<Reply> {
        match call {
            Call::Init => Ok(init()),
            Call::GetVolumeName(o) => {
                // The name needs no attachment state (no scan of the
                // kernel's loop devices); `find` words a miss.
                let v = match self.vols.lookup_metadata(&o.volume_id)? {
                    Some(v) => v,
                    None => self.vols.find(VolumeRef::Name(&o.volume_id))?,
                };
                Ok(Reply {
                    volume_name: Some(v.name),
                    ..Reply::success()
                })
            }
            Call::Attach { opts, node } => self.attach(&opts, node.as_deref()),
            Call::IsAttached { opts, .. } => {
                let v = self.vols.find(VolumeRef::Name(&opts.volume_id))?;
                Ok(Reply {
                    attached: Some(v.state() == AttachmentState::Attached),
                    ..Reply::success()
                })
            }
            Call::WaitForAttach { device, opts } => self.wait_for_attach(&device, &opts),
            Call::MountDevice { path, opts, .. } | Call::Mount { path, opts, .. } => {
                self.mount_at(&path, &opts)?;
                Ok(Reply::success())
            }
            Call::Unmount { path } | Call::UnmountDevice { path } => self.unmount_at(&path),
            Call::Detach { name, .. } => self.detach(&name),
            Call::ExpandVolume { opts, new_size, .. } | Call::ExpandFs { opts, new_size, .. } => {
                let (_, bytes) = self
                    .vols
                    .resize(VolumeRef::Name(&opts.volume_id), new_size)?;
                Ok(Reply {
                    volume_new_size: Some(bytes),
                    ..Reply::success()
                })
            }
        }
    }

    fn remember_name(&self, opts: &Options, v: &Volume) -> Result<()> {
        if let Some(n) = &opts.pv_or_volume_name {
            self.store.save_name(&NameRecord {
                pv_or_volume_name: n.clone(),
                volume_id: v.id.clone(),
                name: v.name.clone(),
            })?;
        }
        Ok(())
    }

    /// The device of `v` when it is attached to this node: the one its
    /// attachment names, else the one this node has for it (drivers whose
    /// backend cannot know the node's device, as rbd's); "" for a volume
    /// with no device (s3fs).
    fn device_of(&self, v: &Volume) -> Option<String> {
        if v.state() != AttachmentState::Attached {
            return None;
        }
        let named = v
            .attachments
            .first()
            .map(|a| a.device_name.clone())
            .unwrap_or_default();
        if !named.is_empty() {
            return Some(named);
        }
        Some(match self.vols.device_here(v) {
            Ok(Some(d)) => d.to_string_lossy().into_owned(),
            _ => String::new(),
        })
    }

    fn attach(&self, opts: &Options, node: Option<&str>) -> Result<Reply> {
        let v = self.vols.find(VolumeRef::Name(&opts.volume_id))?;
        // flexrex attaches where it runs. Node names may differ from host
        // names (--hostname-override), so this is a hint, not a refusal:
        // the controller manager calling attach for another node means
        // kubelet was not told to attach itself.
        if let Some(n) = node.filter(|n| !n.is_empty()) {
            let host = nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default();
            let short = host.split('.').next().unwrap_or("");
            if !host.is_empty() && n != host && n.split('.').next() != Some(short) {
                tracing::warn!(node = n, host = %host, volume = %v.name, "attach for a node that is not this host: the volume is attached here; is kubelet running with --enable-controller-attach-detach=false?");
            }
        }
        let step = |what: &str| format!("attaching volume {} ({what})", v.name);
        let attached = match v.state() {
            AttachmentState::Unavailable => {
                let other = v
                    .attachments
                    .first()
                    .map(|a| a.instance_id.id.clone())
                    .unwrap_or_default();
                // mount.preempt is the operator's standing forceAttach.
                let preempt = self.vols.config().boolean(keys::MOUNT_PREEMPT);
                if !opts.force_attach && !preempt {
                    return Err(Error::in_use(format!(
                        "volume {} is attached to another node ({other}); detach it there, or set forceAttach: \"true\" (and forceAttachDelay) in the volume's options to take it",
                        v.name
                    )));
                }
                let deadline = Instant::now() + opts.force_attach_delay;
                let mut force = true;
                loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    std::thread::sleep(left.min(FORCE_ATTACH_POLL));
                    if self.vols.find(VolumeRef::Id(&v.id))?.state() != AttachmentState::Unavailable
                    {
                        force = false;
                        break;
                    }
                }
                if force {
                    tracing::warn!(volume = %v.name, from = %other, "forceAttachDelay elapsed: taking the volume");
                }
                self.remember_name(opts, &v)?;
                self.vols
                    .hold(
                        VolumeRef::Id(&v.id),
                        &kubelet_holder(opts.pv_or_volume_name.as_deref()),
                        force,
                    )
                    .map_err(|e| e.context(step(if force { "forced" } else { "after wait" })))?
            }
            _ => {
                // Before the attach: if we die after it, detach still
                // knows which volume kubelet's name means.
                self.remember_name(opts, &v)?;
                self.vols.hold(
                    VolumeRef::Id(&v.id),
                    &kubelet_holder(opts.pv_or_volume_name.as_deref()),
                    false,
                )?
            }
        };
        tracing::info!(volume = %v.name, node = node.unwrap_or(""), "attached");
        Ok(Reply {
            device: Some(self.device_of(&attached).unwrap_or_default()),
            ..Reply::success()
        })
    }

    fn wait_for_attach(&self, device: &str, opts: &Options) -> Result<Reply> {
        let mut v = self.vols.find(VolumeRef::Name(&opts.volume_id))?;
        if v.state() == AttachmentState::Available {
            // kubelet believes the volume attached (it was detached by force,
            // or kubelet rebuilt its state after a reboot) and will not
            // attach again: attach it for kubelet here.
            tracing::warn!(volume = %v.name, "waitforattach: the volume is attached nowhere; attaching it");
            self.remember_name(opts, &v)?;
            v = self.vols.hold(
                VolumeRef::Id(&v.id),
                &kubelet_holder(opts.pv_or_volume_name.as_deref()),
                false,
            )?;
        }
        let Some(dev) = self.device_of(&v) else {
            return Err(Error::in_use(format!(
                "volume {} is not attached to this node: it is attached to another node ({}); attach takes it only with forceAttach",
                v.name,
                v.attachments
                    .first()
                    .map(|a| a.instance_id.id.as_str())
                    .unwrap_or("unknown")
            )));
        };
        if !dev.is_empty() {
            self.vols.node().wait_for_device(
                Path::new(&dev),
                self.vols.config().duration(keys::ATTACH_TIMEOUT),
            )?;
        }
        if dev != device {
            tracing::warn!(volume = %v.name, given = device, actual = %dev, "waitforattach: the volume is attached as another device");
        }
        Ok(Reply {
            device: Some(dev),
            ..Reply::success()
        })
    }

    /// Mount the volume for `path` and bind its mount onto `path`.
    fn mount_at(&self, path: &Path, opts: &Options) -> Result<()> {
        let v = self.vols.find(VolumeRef::Name(&opts.volume_id))?;
        Consumer::Flex(path).key()?;
        let mp = self.vols.mount_point(&v.name);
        // Refuse before touching anything when the path holds something
        // other than this volume's mount.
        if let Some(m) = self.vols.node().mounts_at(path)?.first() {
            // Ours: the volume's filesystem (the path binds its mount or a
            // directory in it), whether or not its own mount point is
            // still mounted (a service start unmounts it when a crash left
            // the path's bind without a record).
            let ours = self
                .vols
                .node()
                .mounts_at(&mp)?
                .first()
                .is_some_and(|s| s.dev == m.dev && Path::new(&m.root).starts_with(&s.root))
                || self
                    .device_of(&v)
                    .filter(|d| !d.is_empty())
                    .and_then(|d| self.vols.node().device_numbers(Path::new(&d)).ok())
                    .is_some_and(|n| n == m.dev);
            if !ours {
                return Err(stacking_refused(path, m, &v));
            }
        }
        self.remember_name(opts, &v)?;
        let mo = MountOptions {
            fs_type: opts.fs_type,
            overwrite_fs: false,
            force_attach: false,
        };
        self.vols.mount_and(
            VolumeRef::Id(&v.id),
            Consumer::Flex(path),
            &mo,
            &|v, mp, content| self.bind_once(v, mp, content, path, opts.read_only),
        )?;
        Ok(())
    }

    /// Bind `content` (the directory every front-end hands out, inside the
    /// volume mounted at `mp`) onto kubelet's `path`.
    fn bind_once(
        &self,
        v: &Volume,
        mp: &Path,
        content: &Path,
        path: &Path,
        read_only: bool,
    ) -> Result<()> {
        let step =
            |what: &str| format!("mounting volume {} at {} ({what})", v.name, path.display());
        let source = mp;
        let src = self
            .vols
            .node()
            .mounts_at(source)?
            .into_iter()
            .next()
            .ok_or_else(|| {
                Error::system(format!(
                    "volume {} is not mounted at {} after mounting it",
                    v.name,
                    source.display()
                ))
            })?;
        self.vols
            .node()
            .ensure_dir(path)
            .map_err(|e| e.context(step("create the directory")))?;
        let here = self.vols.node().mounts_at(path)?;
        if let Some(m) = here.iter().find(|m| m.dev == src.dev) {
            // Ours already. A bind of another directory of the volume (the
            // root, bound by an earlier release) stays until kubelet
            // unmounts the path.
            let rel = content.strip_prefix(mp).unwrap_or(Path::new(""));
            let want = Path::new(&src.root).join(rel);
            if Path::new(&m.root) != want {
                tracing::warn!(volume = %v.name, path = %path.display(), bound = %m.root, expected = %want.display(), "the path shows another directory of the volume (bound by an earlier release); kept until it is unmounted");
            }
            return Ok(());
        }
        if let Some(m) = here.first() {
            return Err(stacking_refused(path, m, v));
        }
        fail::fail_point!("flex::before-bind", |_| crate::crash_here());
        // Bound from a descriptor, not by path: `content` was checked, but
        // whoever can write at the volume's root may since have swapped a
        // link in for it.
        self.vols
            .node()
            .bind_beneath(mp, content, path, read_only)
            .map_err(|e| e.context(step("bind")))?;
        fail::fail_point!("flex::after-bind", |_| crate::crash_here());
        Ok(())
    }

    /// The volume whose mount record lists `who` as a consumer.
    fn volume_of_consumer(&self, who: &str) -> Result<Option<String>> {
        self.vols.volume_of_consumer(who)
    }

    /// Give up `who`'s use of a volume; a volume that no longer exists
    /// has nothing to give up.
    fn release(&self, volume_id: &str, path: &Path) -> Result<()> {
        let id = VolumeRef::Id(volume_id);
        match self.vols.unmount(id, Consumer::Flex(path)) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == Kind::NotFound && self.vols.lookup(id)?.is_none() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Which volume a path holds comes from the mount records (who uses
    /// what) and, for a bind flexrex has no record of, from the kernel
    /// (the device behind the mount); nothing else is stored per path.
    fn unmount_at(&self, path: &Path) -> Result<Reply> {
        let who = consumer(path);
        let here = self.vols.node().mounts_at(path)?;
        let volume_id = match self.volume_of_consumer(&who)? {
            Some(id) => id,
            None if here.is_empty() => {
                // kubelet's paths end with the PV (or pod volume) name: a
                // call repeated after a crash between dropping the path's
                // record and unmounting finishes that unmount here.
                let named = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| self.store.name(n).ok().flatten());
                if let Some(r) = named {
                    if self.vols.lookup(VolumeRef::Id(&r.volume_id))?.is_some() {
                        self.vols.release_unused(VolumeRef::Id(&r.volume_id))?;
                    }
                }
                return Ok(Reply::success().with_message(format!(
                    "{} is not mounted; nothing to do",
                    path.display()
                )));
            }
            None => match self.volume_mounted_at(&here)? {
                Some(v) => v.id,
                None => {
                    return Err(Error::in_use(format!(
                        "{} is mounted ({} from {}) but flexrex did not mount it there; refusing to unmount it",
                        path.display(),
                        here[0].fs_type,
                        here[0].source
                    )))
                }
            },
        };
        if !here.is_empty() {
            self.vols
                .node()
                .unmount_all(path)
                .map_err(|e| e.context(format!("unmounting {}", path.display())))?;
        }
        self.release(&volume_id, path)?;
        Ok(Reply::success())
    }

    /// The attached volume whose filesystem a mount shows.
    fn volume_mounted_at(&self, here: &[node::Mount]) -> Result<Option<Volume>> {
        for v in self.vols.list()? {
            if let Some(dev) = self.device_of(&v).filter(|d| !d.is_empty()) {
                if let Ok(n) = self.vols.node().device_numbers(Path::new(&dev)) {
                    if here.iter().any(|m| m.dev == n) {
                        return Ok(Some(v));
                    }
                }
            }
        }
        Ok(None)
    }

    /// The name record is kept after a detach: detaching again must
    /// succeed, and the next attach of the same PV rewrites it only if it
    /// changed.
    fn detach(&self, name: &str) -> Result<Reply> {
        // By name: kubelet's hold for that PV; by device (Kubernetes 1.5):
        // every hold kubelet has on the device.
        let named = kubelet_holder(Some(name));
        let (target, which): (_, &dyn Fn(&str) -> bool) = match self.store.name(name)? {
            // A bare hold is an attach that came without a name: kubelet
            // has one attachment per volume and node, so it goes too.
            Some(r) => (
                self.vols.lookup(VolumeRef::Id(&r.volume_id))?,
                &|h: &str| h == named || h == KUBELET_HOLDER,
            ),
            None if name.starts_with("/dev/") => (
                self.vols
                    .list()?
                    .into_iter()
                    .find(|v| self.device_of(v).as_deref() == Some(name)),
                &|h: &str| pv_of_holder(h).is_some(),
            ),
            None => (None, &|_: &str| false),
        };
        let nothing = || {
            Ok(Reply::success().with_message(format!(
                "no volume is known as {name} on this node; nothing to detach"
            )))
        };
        let Some(v) = target else {
            return nothing();
        };
        // A path that is not mounted any more (lost in a reboot, unmounted
        // by hand) cannot be unmounted by kubelet: its use ends here.
        let gone = |who: &str| {
            who.strip_prefix("flex:").is_some_and(|p| {
                self.vols
                    .node()
                    .mounts_at(Path::new(p))
                    .is_ok_and(|m| m.is_empty())
            })
        };
        match self.vols.release_hold(VolumeRef::Id(&v.id), which, &gone) {
            Ok(Unmounted::Released) => Ok(Reply::success()),
            // kubelet's hold is gone; the volume stays attached for the
            // others, and kubelet, which retries, must not believe it is
            // free to attach elsewhere meanwhile.
            Ok(Unmounted::StillUsed(n)) => {
                let users = self
                    .vols
                    .consumers(VolumeRef::Id(&v.id))
                    .unwrap_or_default()
                    .join(", ");
                Err(Error::in_use(format!(
                    "cannot detach volume {}: {n} other user(s) on this node still have it mounted ({users}); it is detached when the last of them unmounts it",
                    v.name
                )))
            }
            Err(e)
                if e.kind() == Kind::NotFound
                    && self.vols.lookup(VolumeRef::Id(&v.id))?.is_none() =>
            {
                nothing()
            }
            Err(e) => Err(e),
        }
    }
}

/// The refusal to mount volume `v` over `m`, a filesystem flexrex did not
/// put at `path`.
fn stacking_refused(path: &Path, m: &node::Mount, v: &Volume) -> Error {
    Error::in_use(format!(
        "{} already has another filesystem mounted ({} from {}); refusing to stack volume {} on it",
        path.display(),
        m.fs_type,
        m.source,
        v.name
    ))
}

/// The volume a call is about, for the failure message.
pub fn subject(call: &Call) -> String {
    match call {
        Call::Unmount { path } | Call::UnmountDevice { path } => {
            format!("at {}", path.display())
        }
        Call::Detach { name, .. } => name.clone(),
        c => c
            .options()
            .map(|o| format!("volume {}", o.volume_id))
            .unwrap_or_default(),
    }
}

#[cfg(test)]
#[path = "ops_tests.rs"]
mod tests;
