//! The Node service: stage (attach, format only if blank, mount), publish
//! (bind onto the pod's path), and their reverses; stats and expansion.
//!
//! NodeStageVolume of a filesystem volume is the workflow's mount with the
//! staging path as consumer (`csi:<staging path>`), attached by the node
//! itself or, given a publish context, through the controller's attach
//! token (see [`super::publish`]): the volume is mounted
//! at `<mount.path>/<name>` as for every front-end, and the directory
//! handed out is bound onto the staging path under the volume's lock,
//! with the consumer's record. A raw block volume is held attached for
//! the staging path instead (nothing is mounted). NodePublishVolume binds
//! the staging path (or the device, for a block volume) onto the target.

use super::proto::node_server::Node;
use super::proto::*;
use super::{bytes, check_capability, deadline, is_block, missing, status, Csi};
use crate::config::keys;
use crate::model::{AttachmentState, MountOptions, Volume as RexVolume};
use crate::node::Mount;
use crate::volume::{Consumer, VolumeRef};
use crate::Kind;
use std::path::{Path, PathBuf};
use tonic::{Request, Response, Status};

/// The holder id of a raw block volume staged at `staging`.
fn block_holder(staging: &Path) -> String {
    format!("csi:{}", staging.display())
}

/// A path from a request: absolute, without `..`, in its plain spelling
/// (no trailing `/`, `//` or `.`) and with its links resolved (see
/// [`resolved`]), so that one path is one consumer and one mount point
/// however it is written; or INVALID_ARGUMENT.
fn path_of(field: &str, p: &str) -> Result<PathBuf, Status> {
    use std::path::Component;
    if p.is_empty() {
        return Err(missing(field));
    }
    let pb = PathBuf::from(p);
    if !pb.is_absolute() || p.contains('\0') {
        return Err(Status::invalid_argument(format!(
            "{field} must be an absolute path"
        )));
    }
    let mut plain = PathBuf::new();
    for c in pb.components() {
        match c {
            Component::ParentDir => {
                return Err(Status::invalid_argument(format!(
                    "{field} {p:?} must not go up a directory (..)"
                )))
            }
            Component::CurDir => {}
            c => plain.push(c.as_os_str()),
        }
    }
    Ok(resolved(plain))
}

/// `path` with the symbolic links of its parent's longest existing part
/// resolved (the rest as given): what the kernel mounts on, and what
/// mountinfo then shows, so that a kubelet root reached through a link
/// (say `/var/lib/kubelet` → `/data/kubelet`) is one path to every check.
/// The last component is never followed: a link there is refused where
/// the path is used (as a target, a mount point), never mounted through
/// nor removed through.
fn resolved(path: PathBuf) -> PathBuf {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return path;
    };
    let mut rest = vec![name.to_owned()];
    let mut cur = parent;
    loop {
        if let Ok(mut real) = std::fs::canonicalize(cur) {
            real.extend(rest.iter().rev());
            return real;
        }
        match (cur.parent(), cur.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                cur = parent;
            }
            _ => return path,
        }
    }
}

/// A `volume_path` of NodeGetVolumeStats or NodeExpandVolume, checked
/// after the volume is found: a path that cannot be where the volume is
/// (relative, or going up) is NOT_FOUND, as the spec has it for "not
/// published at the path"; only an empty one is INVALID_ARGUMENT, up
/// front.
fn volume_path_of(p: &str) -> Result<PathBuf, Status> {
    path_of("volume_path", p).map_err(|e| Status::not_found(e.message().to_string()))
}

impl Csi {
    /// The volume `id` names, or NOT_FOUND.
    fn volume_here(&self, id: &str) -> Result<RexVolume, Status> {
        if crate::input::volume_id(id).is_err() {
            return Err(Status::not_found(format!("volume {id} not found")));
        }
        self.vols
            .lookup(VolumeRef::Id(id))
            .map_err(status)?
            .ok_or_else(|| Status::not_found(format!("volume {id} not found")))
    }

    /// The device of a volume attached to this node.
    fn device(v: &RexVolume) -> Option<PathBuf> {
        (v.state() == AttachmentState::Attached)
            .then(|| v.attachments.first().map(|a| a.device_name.clone()))
            .flatten()
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
    }

    /// Whether a mount of device `dev` is volume `v`'s filesystem: its
    /// mount point's, or, whether or not that is still mounted (a service
    /// start unmounts it when a crash left a staging bind without a
    /// record), its attached device's.
    fn is_of(&self, v: &RexVolume, dev: (u32, u32)) -> Result<bool, Status> {
        let node = self.vols.node();
        Ok(node
            .mounts_at(&self.vols.mount_point(&v.name))
            .map_err(status)?
            .first()
            .is_some_and(|m| m.dev == dev)
            || Self::device(v)
                .and_then(|d| node.device_numbers(&d).ok())
                .is_some_and(|n| n == dev))
    }

    /// The name of a volume other than `name` whose filesystem is what
    /// `here` (the mount at some path) holds: it shares the device of that
    /// volume's mount point `<mount.path>/<other>` among `all` (this
    /// node's mounts). A path that holds another volume is never unmounted
    /// for this one.
    fn other_volume_in(&self, name: Option<&str>, here: &Mount, all: &[Mount]) -> Option<String> {
        let base = self.vols.mount_root();
        all.iter()
            .filter(|o| o.dev == here.dev && o.mount_point.parent() == Some(base))
            .filter_map(|o| Some(o.mount_point.file_name()?.to_string_lossy().into_owned()))
            .find(|other| Some(other.as_str()) != name)
    }

    /// Where volume `v`, staged at `staging`, is still published on this
    /// node: binds of its device node (raw block), or, when `staging` is
    /// its last consumer, other mounts of its filesystem than the staging
    /// path and its own mount point (filesystem).
    fn published_from(&self, v: &RexVolume, staging: &Path) -> Result<Vec<PathBuf>, Status> {
        let node = self.vols.node();
        let rec = self
            .vols
            .mount_record(VolumeRef::Id(&v.id))
            .map_err(status)?
            .unwrap_or_default();
        let mut left = Vec::new();
        if rec.holds.contains(&block_holder(staging)) {
            if let Some(dev) = Self::device(v) {
                if let (Ok(want), Some(name)) = (node.device_numbers(&dev), dev.file_name()) {
                    let suffix = format!("/{}", name.to_string_lossy());
                    left.extend(
                        node.mounts()
                            .map_err(status)?
                            .into_iter()
                            .filter(|m| m.root.ends_with(&suffix))
                            .filter(|m| node.device_numbers(&m.mount_point).ok() == Some(want))
                            .map(|m| m.mount_point),
                    );
                }
            }
        }
        let key = Consumer::Csi(staging).key().map_err(status)?;
        if rec.consumers.len() == 1 && rec.consumers.contains(&key) {
            if let Some(staged) = node.mounts_at(staging).map_err(status)?.into_iter().next() {
                let mp = self.vols.mount_point(&v.name);
                left.extend(
                    node.mounts_of(staged.dev)
                        .map_err(status)?
                        .into_iter()
                        .map(|m| m.mount_point)
                        .filter(|p| p != staging && *p != mp),
                );
            }
        }
        Ok(left)
    }

    /// Whether the device node bound at `path` (a raw block volume's
    /// target) is volume `v`'s device; `None` when either cannot be told.
    fn device_at(&self, v: &RexVolume, path: &Path) -> Option<bool> {
        let node = self.vols.node();
        let here = node.device_numbers(path).ok()?;
        let mine = node.device_numbers(&Self::device(v)?).ok()?;
        Some(here == mine)
    }

    /// Whether `path` is where volume `v` is staged or published on this
    /// node: a mount of its filesystem (a directory), or a bind of its
    /// device (a raw block volume's target).
    fn is_at(&self, v: &RexVolume, path: &Path) -> Result<bool, Status> {
        let node = self.vols.node();
        let Some(m) = node.mounts_at(path).map_err(status)?.into_iter().next() else {
            return Ok(false);
        };
        if std::fs::metadata(path).is_ok_and(|md| md.is_dir()) {
            return self.is_of(v, m.dev);
        }
        Ok(self.device_at(v, path) == Some(true))
    }

    /// Undo this node's mount at `path` for volume `id` whatever the
    /// backend says (a volume removed behind rexray's back, or a backend
    /// that does not answer, must not keep the path mounted), unless the
    /// path holds another volume: then the outer error, nothing undone.
    /// Otherwise the volume's lookup, for the caller to answer with once
    /// its own part is done too (NOT_FOUND when unknown).
    fn unmount_for(&self, id: &str, path: &Path) -> Result<Result<RexVolume, Status>, Status> {
        let node = self.vols.node();
        let found = self.volume_here(id);
        let Some(here) = node.mounts_at(path).map_err(status)?.into_iter().next() else {
            return Ok(found);
        };
        let here = &here;
        // One look at this node's mounts for every check below.
        let all = node.mounts().map_err(status)?;
        match &found {
            // The right volume's path, or nothing of another volume's.
            Ok(v) => {
                if let Some(other) = self.other_volume_in(Some(&v.name), here, &all) {
                    return Err(Status::failed_precondition(format!(
                        "{} holds volume {other}, not volume {}; nothing was unmounted",
                        path.display(),
                        v.name
                    )));
                }
                let dir = std::fs::metadata(path).is_ok_and(|m| m.is_dir());
                if !dir && self.device_at(v, path) == Some(false) {
                    return Err(Status::failed_precondition(format!(
                        "{} holds another device than volume {}'s; nothing was unmounted",
                        path.display(),
                        v.name
                    )));
                }
            }
            // An unknown id: the path is undone unless it holds a volume
            // the backend still has (a volume removed behind rexray's
            // back no longer is one).
            Err(e) if e.code() == tonic::Code::NotFound => {
                if let Some(other) = self.other_volume_in(None, here, &all) {
                    if self
                        .vols
                        .lookup(VolumeRef::Name(&other))
                        .map_err(status)?
                        .is_some()
                    {
                        return Err(Status::not_found(format!(
                            "volume {id} not found ({} holds volume {other}: left mounted)",
                            path.display()
                        )));
                    }
                }
            }
            // The backend cannot be asked: this node's part is done all
            // the same (kubelet's unpublish of a pod must not wait for
            // the backend), though which volume the path holds cannot be
            // checked against the id then.
            Err(_) => {}
        }
        node.unmount_all(path).map_err(status)?;
        Ok(found)
    }

    fn stage(&self, r: NodeStageVolumeRequest, staging: PathBuf) -> Result<(), Status> {
        let cap = r.volume_capability.as_ref().expect("checked");
        let v = self.volume_here(&r.volume_id)?;
        let node = self.vols.node();
        let token = r
            .publish_context
            .get(super::publish::ATTACH_TOKEN)
            .filter(|t| !t.is_empty())
            .map(String::as_str);
        if is_block(cap) {
            let holder = block_holder(&staging);
            match token {
                Some(t) => self.vols.hold_published(VolumeRef::Id(&v.id), &holder, t),
                None => self.vols.hold(VolumeRef::Id(&v.id), &holder, false),
            }
            .map_err(status)?;
            return Ok(());
        }
        let fs_type = match &cap.access_type {
            Some(volume_capability::AccessType::Mount(m)) if !m.fs_type.is_empty() => {
                Some(crate::options::fs_type("fs_type", &m.fs_type).map_err(status)?)
            }
            _ => None,
        };
        // Something other than this volume at the staging path: refused
        // before anything changes.
        if let Some(m) = node.mounts_at(&staging).map_err(status)?.first() {
            if !self.is_of(&v, m.dev)? {
                return Err(Status::already_exists(format!(
                    "{} already has another filesystem mounted ({} from {}); refusing to stage volume {} there",
                    staging.display(),
                    m.fs_type,
                    m.source,
                    v.name
                )));
            }
        }
        let mo = MountOptions {
            fs_type,
            overwrite_fs: false,
            force_attach: false,
        };
        self.vols
            .mount_published(
                VolumeRef::Id(&v.id),
                Consumer::Csi(&staging),
                &mo,
                token,
                &|v, mp, content| bind_once(self, v, mp, content, &staging),
            )
            .map_err(status)?;
        tracing::info!(volume = %v.name, staging = %staging.display(), "csi: staged");
        Ok(())
    }

    fn unstage(&self, id: &str, staging: PathBuf) -> Result<(), Status> {
        // Still published from here: refused before anything is undone
        // (the CO unpublishes first). Unstaged regardless, a raw block
        // target would keep a device that is detached and reused, a
        // filesystem target a mount of a volume gone from this node.
        if let Ok(v) = self.volume_here(id) {
            let left = self.published_from(&v, &staging)?;
            if !left.is_empty() {
                let at: Vec<String> = left.iter().map(|p| p.display().to_string()).collect();
                return Err(Status::failed_precondition(format!(
                    "volume {} is still published at {}; NodeUnpublishVolume first (nothing was unstaged)",
                    v.name,
                    at.join(", ")
                )));
            }
        }
        // This node's own part first (see `unmount_for`).
        let v = self.unmount_for(id, &staging)??;
        let key = Consumer::Csi(&staging).key().map_err(status)?;
        let holder = block_holder(&staging);
        let rec = self
            .vols
            .mount_record(VolumeRef::Id(&v.id))
            .map_err(status)?
            .unwrap_or_default();
        if rec.consumers.contains(&key) {
            self.vols
                .unmount(VolumeRef::Id(&v.id), Consumer::Csi(&staging))
                .map_err(status)?;
        }
        if rec.holds.contains(&holder) {
            self.vols
                .release_hold(VolumeRef::Id(&v.id), &|h| h == holder, &|_| false)
                .map_err(status)?;
        }
        if !rec.consumers.contains(&key) && !rec.holds.contains(&holder) {
            // A retry after a crash between dropping the record and the
            // unmount (or a stage killed before its record): a mount of
            // the volume that no consumer uses is released here.
            self.vols
                .release_unused(VolumeRef::Id(&v.id))
                .map_err(status)?;
        }
        tracing::info!(volume = %v.name, staging = %staging.display(), "csi: unstaged");
        Ok(())
    }

    fn publish(
        &self,
        r: NodePublishVolumeRequest,
        staging: PathBuf,
        target: PathBuf,
    ) -> Result<(), Status> {
        let cap = r.volume_capability.as_ref().expect("checked");
        let v = self.volume_here(&r.volume_id)?;
        let node = self.vols.node();
        let read_only = r.readonly
            || cap.access_mode.as_ref().is_some_and(|m| {
                m.mode == volume_capability::access_mode::Mode::SingleNodeReaderOnly as i32
            });
        if is_block(cap) {
            let dev = Self::device(&v).ok_or_else(|| {
                Status::failed_precondition(format!(
                    "volume {} is not staged on this node (not attached here); NodeStageVolume first",
                    v.name
                ))
            })?;
            if let Some(m) = node.mounts_at(&target).map_err(status)?.first() {
                // Ours only if the device bound there is this volume's.
                return if m.read_only == read_only && self.device_at(&v, &target) == Some(true) {
                    Ok(())
                } else {
                    Err(incompatible(&target, &v))
                };
            }
            node.ensure_file(&target).map_err(status)?;
            node.bind_with_flags(&dev, &target, read_only, &[])
                .map_err(status)?;
            return Ok(());
        }
        let flags = match &cap.access_type {
            Some(volume_capability::AccessType::Mount(m)) => m.mount_flags.clone(),
            _ => Vec::new(),
        };
        // `ro` among the mount flags publishes read-only as `readonly`
        // does, so a retry compares the same thing.
        let read_only = read_only
            || crate::node::bind_flags(&flags)
                .map_err(status)?
                .contains(nix::mount::MsFlags::MS_RDONLY);
        let staged = node
            .mounts_at(&staging)
            .map_err(status)?
            .into_iter()
            .next()
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "volume {} is not staged at {}; NodeStageVolume first",
                    v.name,
                    staging.display()
                ))
            })?;
        // The staging path must hold this volume, not another's.
        if !self.is_of(&v, staged.dev)? {
            return Err(Status::failed_precondition(format!(
                "{} does not hold volume {} (another filesystem is mounted there); NodeStageVolume it first",
                staging.display(),
                v.name
            )));
        }
        if let Some(m) = node.mounts_at(&target).map_err(status)?.first() {
            return if m.dev == staged.dev && m.read_only == read_only {
                Ok(())
            } else {
                Err(incompatible(&target, &v))
            };
        }
        node.ensure_dir(&target).map_err(status)?;
        node.bind_with_flags(&staging, &target, read_only, &flags)
            .map_err(status)?;
        tracing::info!(volume = %v.name, target = %target.display(), read_only, "csi: published");
        Ok(())
    }

    fn unpublish(&self, id: &str, target: PathBuf) -> Result<(), Status> {
        // Nothing but this node's bind is undone, so that comes before
        // the backend is asked (see `unmount_for`); the answer for an
        // unknown volume (NOT_FOUND) comes after the target is removed.
        let was_mounted = !self
            .vols
            .node()
            .mounts_at(&target)
            .map_err(status)?
            .is_empty();
        let found = self.unmount_for(id, &target)?;
        // The spec has the plugin remove the target it made: one it just
        // unmounted, or an empty one left for a volume it knows (a retry
        // after a crash between the unmount and the removal). Nothing
        // for an unknown volume with nothing mounted there (a mistyped
        // path is not ours to delete), and never through a link (the
        // path's last component is not followed).
        if was_mounted || found.is_ok() {
            match std::fs::symlink_metadata(&target) {
                Ok(m) if m.is_dir() => {
                    let _ = std::fs::remove_dir(&target);
                }
                Ok(m) if m.is_file() && m.len() == 0 => {
                    let _ = std::fs::remove_file(&target);
                }
                _ => {}
            }
        }
        // Then what the spec asks of an unknown volume (NOT_FOUND), with
        // this node's part already done.
        let v = found?;
        tracing::info!(volume = %v.name, target = %target.display(), "csi: unpublished");
        Ok(())
    }

    fn stats(&self, id: &str, path: &str) -> Result<NodeGetVolumeStatsResponse, Status> {
        let v = self.volume_here(id)?;
        let path = volume_path_of(path)?;
        let node = self.vols.node();
        // One answer for every path the volume is not at, whatever is
        // there: it tells nothing about the host's other paths.
        let not_here = || {
            Status::not_found(format!(
                "volume {} is not staged or published at the given path",
                v.name
            ))
        };
        if node.mounts_at(&path).map_err(status)?.is_empty() {
            // Where this node staged the volume (its record says so), its
            // mount is gone: that is the volume's condition, and the usage
            // of whatever is underneath is not the volume's.
            let rec = self
                .vols
                .mount_record(VolumeRef::Id(&v.id))
                .map_err(status)?
                .unwrap_or_default();
            let key = Consumer::Csi(&path).key().map_err(status)?;
            if !rec.consumers.contains(&key) && !rec.holds.contains(&block_holder(&path)) {
                return Err(not_here());
            }
            return Ok(NodeGetVolumeStatsResponse {
                usage: Vec::new(),
                volume_condition: Some(VolumeCondition {
                    abnormal: true,
                    message: format!("volume {} is not mounted at {}", v.name, path.display()),
                }),
            });
        }
        if !self.is_at(&v, &path)? {
            return Err(not_here());
        }
        let md = std::fs::metadata(&path).map_err(|_| not_here())?;
        let condition = VolumeCondition {
            abnormal: false,
            message: "mounted".into(),
        };
        if !md.is_dir() {
            // A raw block volume's target: its size.
            return Ok(NodeGetVolumeStatsResponse {
                usage: vec![VolumeUsage {
                    available: 0,
                    total: bytes(v.size),
                    used: 0,
                    unit: volume_usage::Unit::Bytes as i32,
                }],
                volume_condition: Some(condition),
            });
        }
        let u = node.usage(&path).map_err(status)?;
        let i = |n: u64| n.min(i64::MAX as u64) as i64;
        Ok(NodeGetVolumeStatsResponse {
            usage: vec![
                VolumeUsage {
                    available: i(u.available_bytes),
                    total: i(u.total_bytes),
                    used: i(u.used_bytes),
                    unit: volume_usage::Unit::Bytes as i32,
                },
                VolumeUsage {
                    available: i(u.available_inodes),
                    total: i(u.total_inodes),
                    used: i(u.used_inodes),
                    unit: volume_usage::Unit::Inodes as i32,
                },
            ],
            volume_condition: Some(condition),
        })
    }
}

/// ALREADY_EXISTS: the target holds a publication that differs.
fn incompatible(target: &Path, v: &RexVolume) -> Status {
    Status::already_exists(format!(
        "{} is already published with other options (or holds another mount); volume {} was not published again",
        target.display(),
        v.name
    ))
}

/// Bind `content` (the directory every front-end hands out, inside the
/// volume mounted at `mp`) onto `staging`, unless it is there already.
fn bind_once(
    csi: &Csi,
    v: &RexVolume,
    mp: &Path,
    content: &Path,
    staging: &Path,
) -> crate::Result<()> {
    let node = csi.vols.node();
    let src = node.mounts_at(mp)?.into_iter().next().ok_or_else(|| {
        crate::Error::system(format!(
            "volume {} is not mounted at {} after mounting it",
            v.name,
            mp.display()
        ))
    })?;
    node.ensure_dir(staging)?;
    let here = node.mounts_at(staging)?;
    if here.iter().any(|m| m.dev == src.dev) {
        return Ok(());
    }
    if let Some(m) = here.first() {
        return Err(crate::Error::exists(format!(
            "{} already has another filesystem mounted ({} from {})",
            staging.display(),
            m.fs_type,
            m.source
        )));
    }
    node.bind_beneath(mp, content, staging, false)?;
    fail::fail_point!("csi::after-stage-bind", |_| crate::crash_here());
    Ok(())
}

#[tonic::async_trait]
impl Node for Csi {
    async fn node_stage_volume(
        &self,
        req: Request<NodeStageVolumeRequest>,
    ) -> Result<Response<NodeStageVolumeResponse>, Status> {
        let d = deadline(&req);
        let r = req.into_inner();
        if r.volume_id.is_empty() {
            return Err(missing("volume_id"));
        }
        let staging = path_of("staging_target_path", &r.staging_target_path)?;
        let cap = r
            .volume_capability
            .as_ref()
            .ok_or_else(|| missing("volume_capability"))?;
        check_capability(cap)?;
        let key = format!("volume {}", r.volume_id);
        self.run(d, vec![key], move |csi| csi.stage(r, staging))
            .await?;
        Ok(Response::new(NodeStageVolumeResponse {}))
    }

    async fn node_unstage_volume(
        &self,
        req: Request<NodeUnstageVolumeRequest>,
    ) -> Result<Response<NodeUnstageVolumeResponse>, Status> {
        let d = deadline(&req);
        let r = req.into_inner();
        if r.volume_id.is_empty() {
            return Err(missing("volume_id"));
        }
        let staging = path_of("staging_target_path", &r.staging_target_path)?;
        let key = format!("volume {}", r.volume_id);
        self.run(d, vec![key], move |csi| csi.unstage(&r.volume_id, staging))
            .await?;
        Ok(Response::new(NodeUnstageVolumeResponse {}))
    }

    async fn node_publish_volume(
        &self,
        req: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        let d = deadline(&req);
        let r = req.into_inner();
        if r.volume_id.is_empty() {
            return Err(missing("volume_id"));
        }
        let staging = path_of("staging_target_path", &r.staging_target_path)?;
        let target = path_of("target_path", &r.target_path)?;
        let cap = r
            .volume_capability
            .as_ref()
            .ok_or_else(|| missing("volume_capability"))?;
        check_capability(cap)?;
        // The volume's key too: an unstage of it must not run beside
        // (the staging mount checked here is what gets bound).
        let keys = vec![
            format!("volume {}", r.volume_id),
            format!("path {}", target.display()),
        ];
        self.run(d, keys, move |csi| csi.publish(r, staging, target))
            .await?;
        Ok(Response::new(NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume(
        &self,
        req: Request<NodeUnpublishVolumeRequest>,
    ) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        let d = deadline(&req);
        let r = req.into_inner();
        if r.volume_id.is_empty() {
            return Err(missing("volume_id"));
        }
        let target = path_of("target_path", &r.target_path)?;
        let key = format!("path {}", target.display());
        self.run(d, vec![key], move |csi| csi.unpublish(&r.volume_id, target))
            .await?;
        Ok(Response::new(NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_volume_stats(
        &self,
        req: Request<NodeGetVolumeStatsRequest>,
    ) -> Result<Response<NodeGetVolumeStatsResponse>, Status> {
        let d = deadline(&req);
        let r = req.into_inner();
        if r.volume_id.is_empty() {
            return Err(missing("volume_id"));
        }
        if r.volume_path.is_empty() {
            return Err(missing("volume_path"));
        }
        self.run(d, Vec::new(), move |csi| {
            csi.stats(&r.volume_id, &r.volume_path)
        })
        .await
        .map(Response::new)
    }

    async fn node_expand_volume(
        &self,
        req: Request<NodeExpandVolumeRequest>,
    ) -> Result<Response<NodeExpandVolumeResponse>, Status> {
        let d = deadline(&req);
        let r = req.into_inner();
        if r.volume_id.is_empty() {
            return Err(missing("volume_id"));
        }
        if r.volume_path.is_empty() {
            return Err(missing("volume_path"));
        }
        let block = r.volume_capability.as_ref().is_some_and(is_block);
        let key = format!("volume {}", r.volume_id);
        self.run(d, vec![key], move |csi| {
            let v = csi.volume_here(&r.volume_id)?;
            let path = volume_path_of(&r.volume_path)?;
            if std::fs::symlink_metadata(&path).is_err() {
                return Err(Status::not_found(format!(
                    "{} does not exist",
                    path.display()
                )));
            }
            // Only a volume staged or published at the path (the spec's
            // "node-published or node-staged volumes on the given path").
            if !csi.is_at(&v, &path)? {
                return Err(Status::not_found(format!(
                    "volume {} is not staged or published at {}",
                    v.name,
                    path.display()
                )));
            }
            let range = r.capacity_range.as_ref();
            let limit = range.map_or(0, |c| c.limit_bytes.max(0) as u64);
            let required = range.map_or(0, |c| c.required_bytes.max(0) as u64);
            let size = v.size.saturating_mul(super::GIB);
            if limit > 0 && (limit < required || limit < size) {
                return Err(Status::out_of_range(format!(
                    "volume {} is {size} bytes: a limit of {limit} bytes (required {required}) cannot be met",
                    v.name
                )));
            }
            if block {
                return Ok(NodeExpandVolumeResponse {
                    capacity_bytes: bytes(v.size),
                });
            }
            // The volume's size is the controller's (ControllerExpandVolume,
            // which the endpoint advertises, comes first): the node only
            // grows the filesystem mounted here to it.
            if required > size {
                return Err(Status::out_of_range(format!(
                    "volume {} is {size} bytes, less than the {required} bytes required: ControllerExpandVolume grows the volume, the node only its filesystem",
                    v.name
                )));
            }
            // Growing to the current size grows the filesystem mounted
            // here to the volume's size.
            let (_, b) =
                csi.vols
                    .resize(VolumeRef::Id(&v.id), size)
                    .map_err(|e| match e.kind() {
                        Kind::InvalidInput => Status::out_of_range(e.to_string()),
                        _ => status(e),
                    })?;
            Ok(NodeExpandVolumeResponse {
                capacity_bytes: b.min(i64::MAX as u64) as i64,
            })
        })
        .await
        .map(Response::new)
    }

    async fn node_get_capabilities(
        &self,
        _req: Request<NodeGetCapabilitiesRequest>,
    ) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        use node_service_capability::rpc::Type as T;
        let caps = [
            (T::StageUnstageVolume, true),
            (T::GetVolumeStats, true),
            (T::ExpandVolume, self.offers().await?.resize),
            (T::VolumeCondition, true),
        ]
        .into_iter()
        .filter_map(|(t, offered)| offered.then_some(t))
        .map(|t| NodeServiceCapability {
            r#type: Some(node_service_capability::Type::Rpc(
                node_service_capability::Rpc { r#type: t as i32 },
            )),
        })
        .collect();
        Ok(Response::new(NodeGetCapabilitiesResponse {
            capabilities: caps,
        }))
    }

    async fn node_get_info(
        &self,
        _req: Request<NodeGetInfoRequest>,
    ) -> Result<Response<NodeGetInfoResponse>, Status> {
        // The id given here is the one a controller publishes to: it is
        // registered first (a backend with a registry, such as rbd's,
        // refuses ControllerPublishVolume to a node that never was).
        let csi = self.clone();
        tokio::task::spawn_blocking(move || csi.vols.register_node())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| {
                let s = status(e);
                Status::new(
                    s.code(),
                    format!("registering this node with the backend: {}", s.message()),
                )
            })?;
        let max = self.vols.config().number(keys::CSI_MAX_VOLUMES);
        Ok(Response::new(NodeGetInfoResponse {
            node_id: self.vols.instance().id.clone(),
            max_volumes_per_node: max.min(i64::MAX as u64) as i64,
            accessible_topology: self.node_local().then(|| self.topology()),
        }))
    }
}
