//! The controller/node split of a storage driver, as libStorage splits a
//! storage driver from its executor.
//!
//! - [`Controller`]: everything that talks to the backend — list, inspect,
//!   create, remove, resize, copy, snapshot, and *who holds* a volume
//!   (attach records a holder and returns an attach token; detach releases
//!   it). A controller never touches a host's devices or mounts, so it can
//!   run on another host: every driver implements it, and so does the
//!   libStorage REST client ([`crate::api`]), so the workflow cannot tell
//!   a local backend from a remote one.
//! - [`Executor`]: what runs on the node that mounts — who this instance
//!   is, which device names are free, which devices are here, and how an
//!   attach token becomes something mountable (a block device after it
//!   appears, a directory). Always local.
//!
//! Attachment states are not decided by the controller: it lists who holds
//! what ([`Volume::attachments`]), and [`derive_state`] decides, for a given
//! caller, "attached" (to the caller), "available" or "unavailable" — the
//! original server's rule.

use crate::model::{
    AttachmentState, Content, CreateSpec, InstanceId, MountSource, Snapshot, Volume,
};
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub use super::Prepare;

/// What kind of storage a driver offers (libStorage `StorageType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageType {
    /// Block devices, formatted and mounted by the node.
    Block,
    /// Network-attached filesystems (a directory, a share).
    Nas,
    /// Object storage mounted through a helper (s3fs).
    Object,
}

impl StorageType {
    /// The wire name: `block`, `nas` or `object`.
    pub fn as_str(self) -> &'static str {
        match self {
            StorageType::Block => "block",
            StorageType::Nas => "nas",
            StorageType::Object => "object",
        }
    }
    /// From the wire name (case-insensitive).
    pub fn parse(s: &str) -> Option<StorageType> {
        match s.to_ascii_lowercase().as_str() {
            "block" => Some(StorageType::Block),
            "nas" => Some(StorageType::Nas),
            "object" => Some(StorageType::Object),
            _ => None,
        }
    }
}

/// How a node picks the device name it proposes at attach (libStorage
/// `NextDeviceInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NextDeviceInfo {
    /// The driver ignores the proposal (the backend picks the device).
    pub ignore: bool,
    /// Device name prefix, e.g. `xvd`.
    pub prefix: String,
    /// Pattern of the part after the prefix, e.g. `[a-z]`.
    pub pattern: String,
}

/// A service as a controller describes it: its name and its driver's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    /// The service name (`libstorage.server.services.<name>`).
    pub service: String,
    /// The driver name (`loop`, `vfs`, ...).
    pub driver: String,
    /// What the driver offers.
    pub storage_type: StorageType,
    /// How nodes propose device names.
    pub next_device: NextDeviceInfo,
}

/// What an attach answers: the volume as it now is, and the token the
/// node resolves into something mountable ([`Executor::resolve`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    /// The volume with its new attachment.
    pub volume: Volume,
    /// The attach token (libStorage `attachToken`): for a cloud block
    /// driver the device name the node waits for; for the loop driver the
    /// volume id, whose image the node binds to a loop device.
    pub token: String,
}

/// The optional operations a driver offers (what a CSI endpoint
/// advertises): the trait's defaults for them answer "unsupported".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offers {
    /// [`Controller::resize`].
    pub resize: bool,
    /// [`Controller::copy`].
    pub copy: bool,
    /// [`Controller::snapshot`], [`Controller::snapshots`],
    /// [`Controller::remove_snapshot`] and
    /// [`Controller::create_from_snapshot`].
    pub snapshots: bool,
    /// A snapshot is one point in time of the whole volume even while
    /// another host writes to it (an RBD snapshot; not a copy of a file
    /// being written): a volume attached to another instance may then be
    /// snapshotted, crash-consistent, since its filesystem cannot be
    /// frozen from here.
    pub live_snapshots: bool,
}

impl Offers {
    /// Resizing, copies and snapshots (of volumes that are not attached
    /// elsewhere).
    pub const ALL: Offers = Offers {
        resize: true,
        copy: true,
        snapshots: true,
        live_snapshots: false,
    };
}

/// The backend side of a driver. See the module documentation.
///
/// Every mutating call is serialised per volume by the implementation
/// (the loop driver by its lock files, a server by its per-volume locks);
/// the caller also holds the volume's lock on its own node.
pub trait Controller: Send + Sync {
    /// The service and its driver.
    fn info(&self) -> &ServiceInfo;
    /// The optional operations this driver implements (none unless it
    /// says so: a driver that overrides one of them says so here too).
    /// May ask the backend (a libStorage client asks its server): call
    /// it where blocking is allowed.
    fn offers(&self) -> Offers {
        Offers::default()
    }
    /// Every volume with its attachments (`attachment_state` left 0:
    /// see [`derive_state`]).
    fn list(&self) -> Result<Vec<Volume>>;
    /// [`list`](Self::list) without what takes one more look at each
    /// volume's backing store (the loop driver's `allocated` field, a stat
    /// per image), for an answer that does not show it.
    fn list_without_usage(&self) -> Result<Vec<Volume>> {
        self.list()
    }
    /// One volume by id, with its attachments.
    fn inspect(&self, id: &str) -> Result<Option<Volume>>;
    /// One volume by exact name (never by id), with its attachments.
    fn lookup_name(&self, name: &str) -> Result<Option<Volume>> {
        Ok(self.list()?.into_iter().find(|v| v.name == name))
    }
    /// Every volume without its attachments (names, sizes, fields): for
    /// callers that show no state, so the driver need not work it out.
    fn list_metadata(&self) -> Result<Arc<[Volume]>> {
        Ok(self.list()?.into())
    }
    /// [`lookup_name`](Self::lookup_name) without attachments.
    fn lookup_metadata_name(&self, name: &str) -> Result<Option<Volume>> {
        self.lookup_name(name)
    }
    /// Create a volume. Names are unique per service: a taken name, or a
    /// name that is another volume's id, is refused.
    fn create(&self, name: &str, spec: &CreateSpec) -> Result<Volume>;
    /// Remove a volume. One held by any instance is refused unless
    /// `force` (and a driver may refuse even then, when the data is
    /// in use where it can see it).
    fn remove(&self, id: &str, force: bool) -> Result<()>;
    /// Record that `who` holds the volume and return the token its node
    /// resolves. Attaching a volume `who` already holds answers the same
    /// token. Held by another instance: refused unless `force`, which
    /// takes it over (the previous holder's attachment is dropped).
    /// `next_device` is the node's proposal ([`Executor::next_device`]).
    fn attach(
        &self,
        id: &str,
        who: &InstanceId,
        force: bool,
        next_device: Option<&str>,
    ) -> Result<Attached>;
    /// Release `who`'s hold. Releasing a volume nobody holds succeeds;
    /// one held by another instance is refused unless `force`.
    fn detach(&self, id: &str, who: &InstanceId, force: bool) -> Result<Volume>;
    /// Grow a volume to `size_gib`; returns the new size in bytes.
    fn resize(&self, id: &str, size_gib: u64) -> Result<u64> {
        let _ = (id, size_gib);
        Err(self.unsupported("resize volumes"))
    }
    /// Create `new_name` as a copy of volume `id`,
    /// sized by `spec.size` (never smaller than the source). The caller
    /// holds the source's lock and has quiesced its filesystem; `intact`
    /// is called once the data is copied and before the copy is
    /// published (an error there means the source did not stay quiesced,
    /// and nothing is published); then `prepare` is called with the new
    /// image, unattached, before it is published (a controller with no
    /// path of it on this host skips it).
    fn copy(
        &self,
        id: &str,
        new_name: &str,
        spec: &CreateSpec,
        intact: &dyn Fn() -> Result<()>,
        prepare: Prepare<'_>,
    ) -> Result<Volume> {
        let _ = (id, new_name, spec, intact, prepare);
        Err(self.unsupported("copy volumes (volumeName/volumeID)"))
    }
    /// Take snapshot `snap_name` of volume `id`.
    fn snapshot(
        &self,
        id: &str,
        snap_name: &str,
        intact: &dyn Fn() -> Result<()>,
    ) -> Result<Snapshot> {
        let _ = (id, snap_name, intact);
        Err(self.unsupported("take snapshots"))
    }
    /// Every snapshot.
    fn snapshots(&self) -> Result<Vec<Snapshot>> {
        Ok(Vec::new())
    }
    /// Remove a snapshot.
    fn remove_snapshot(&self, snap_id: &str) -> Result<()> {
        let _ = snap_id;
        Err(self.unsupported("remove snapshots"))
    }
    /// Create `new_name` from snapshot `snap_id`.
    fn create_from_snapshot(
        &self,
        snap_id: &str,
        new_name: &str,
        spec: &CreateSpec,
        prepare: Prepare<'_>,
    ) -> Result<Volume> {
        let _ = (snap_id, new_name, spec, prepare);
        Err(self.unsupported("create volumes from snapshots (snapshotName/snapshotID)"))
    }
    /// Whether `name` can name a new volume of this driver, beyond the
    /// names every driver takes (an S3 bucket's are narrower: lower
    /// case, 3 to 63 characters); the error says why not.
    fn check_name(&self, name: &str) -> Result<()> {
        let _ = name;
        Ok(())
    }
    /// Record that instance `who` is a node of this backend, one that
    /// attaches its volumes (a CSI node service says so when it starts
    /// and in NodeGetInfo, the call that gives the CO the node's id): see
    /// [`node_known`](Self::node_known). A driver without a registry
    /// records nothing.
    fn register_node(&self, who: &InstanceId) -> Result<()> {
        let _ = who;
        Ok(())
    }
    /// Whether `node` is a node of this backend (registered, or holding a
    /// volume now; ids compared without case): `None` when the driver
    /// keeps no registry, or none was written yet, so that any id is
    /// taken.
    fn node_known(&self, node: &str) -> Result<Option<bool>> {
        let _ = node;
        Ok(None)
    }
    /// What the backend knows of the volume's bytes without a device:
    /// see [`Content`]. Its answer decides a format together with the
    /// node's probe ([`crate::node::ensure_filesystem`]).
    fn content(&self, id: &str) -> Content {
        let _ = id;
        Content::Unknown
    }
    /// A note on the space behind a volume when it may be what made a
    /// write fail, for error messages.
    fn space_note(&self, id: &str) -> Option<String> {
        let _ = id;
        None
    }
    /// The bytes free for new volumes, when the backend can tell (a CSI
    /// GetCapacity answer).
    fn available_bytes(&self) -> Option<u64> {
        None
    }
    /// [`available_bytes`](Self::available_bytes), or an error when the
    /// backend cannot be asked at all (a libStorage server without this
    /// crate's extensions): unknown (`None`) is an answer, this is not.
    fn capacity(&self) -> Result<Option<u64>> {
        Ok(self.available_bytes())
    }
    /// Remove what killed writers left (a full scan, at a server's start).
    fn tidy(&self) {}
    /// The driver's in-memory answers, when it keeps them.
    fn cache(&self) -> Option<&dyn MetadataCache> {
        None
    }
    /// The error for an operation this driver does not offer.
    fn unsupported(&self, what: &str) -> Error {
        Error::unsupported(format!("the {} driver cannot {what}", self.info().driver))
    }
}

/// In-memory answers a long-running front-end (the Docker endpoint) may
/// serve without taking a thread that could block.
pub trait MetadataCache: Send + Sync {
    /// What [`Controller::list_metadata`] would return, if it is held in
    /// memory, already built, and at most a stat shows it is current;
    /// `None` whenever answering could wait or cost more than a few
    /// syscalls.
    fn cached_metadata(&self) -> Option<Arc<[Volume]>>;
}

/// The node side of a driver. See the module documentation.
pub trait Executor: Send + Sync {
    /// Who this node is, for this driver.
    fn instance_id(&self) -> &InstanceId;
    /// The device name to propose at attach, if the driver uses one.
    fn next_device(&self) -> Result<Option<String>> {
        Ok(None)
    }
    /// The devices of this node the driver knows: device (or token) →
    /// mount point or other value (libStorage `LocalDevices`).
    fn local_devices(&self) -> Result<BTreeMap<String, String>> {
        Ok(BTreeMap::new())
    }
    /// What this node has for the volume now, without attaching anything:
    /// `None` when nothing is here.
    fn present(&self, volume: &Volume) -> Result<Option<MountSource>>;
    /// Turn an attach token into something mountable on this node, waiting
    /// up to `timeout` for it to appear (and, for the loop driver, binding
    /// the image to a loop device). Resolving twice answers the same source.
    fn resolve(&self, volume: &Volume, token: &str, timeout: Duration) -> Result<MountSource>;
    /// After the controller grew the volume: make what this node has of it
    /// show the new size (a loop device over a FUSE image file learns it
    /// with LOOP_SET_CAPACITY), before the filesystem on it is grown.
    /// Nothing of the volume here, or a device that follows by itself
    /// (kernel rbd): nothing to do.
    fn grown(&self, volume: &Volume) -> Result<()> {
        let _ = volume;
        Ok(())
    }
    /// Undo [`resolve`](Self::resolve) on this node before the controller
    /// releases the hold. Releasing what is not here succeeds; a device
    /// another instance has taken over since is left alone unless `force`.
    fn release(&self, volume: &Volume, force: bool) -> Result<()> {
        let _ = (volume, force);
        Ok(())
    }
}

/// The attachment state of `v` for caller `me` (the original server's rule
/// when a driver left it unset): no attachments → available; one whose
/// instance id equals `me`'s (case-insensitively) → attached; otherwise
/// unavailable. Without a caller, any attachment → unavailable.
pub fn derive_state(v: &Volume, me: Option<&InstanceId>) -> AttachmentState {
    if v.attachments.is_empty() {
        return AttachmentState::Available;
    }
    let mine = me.is_some_and(|me| {
        v.attachments
            .iter()
            .any(|a| a.instance_id.id.eq_ignore_ascii_case(&me.id))
    });
    if mine {
        AttachmentState::Attached
    } else {
        AttachmentState::Unavailable
    }
}

/// Set `attachment_state` of every volume that has none, for caller `me`.
pub fn settle_states<'a>(vols: impl IntoIterator<Item = &'a mut Volume>, me: Option<&InstanceId>) {
    for v in vols {
        if v.attachment_state == 0 {
            v.attachment_state = derive_state(v, me) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Attachment;

    fn at(id: &str) -> Attachment {
        Attachment {
            instance_id: InstanceId {
                id: id.into(),
                driver: "vfs".into(),
                service: "vfs".into(),
            },
            status: "attached".into(),
            ..Default::default()
        }
    }

    #[test]
    fn state_follows_the_original_servers_rule() {
        let me = InstanceId {
            id: "Node-A".into(),
            ..Default::default()
        };
        let mut v = Volume::default();
        assert_eq!(derive_state(&v, Some(&me)), AttachmentState::Available);
        v.attachments.push(at("node-a"));
        assert_eq!(derive_state(&v, Some(&me)), AttachmentState::Attached);
        assert_eq!(derive_state(&v, None), AttachmentState::Unavailable);
        v.attachments[0] = at("node-b");
        assert_eq!(derive_state(&v, Some(&me)), AttachmentState::Unavailable);
        let mut vs = [v.clone(), Volume::default()];
        vs[1].attachment_state = AttachmentState::Attached as u8;
        settle_states(vs.iter_mut(), Some(&me));
        assert_eq!(vs[0].state(), AttachmentState::Unavailable);
        assert_eq!(vs[1].state(), AttachmentState::Attached);
    }

    #[test]
    fn storage_types_round_trip() {
        for t in [StorageType::Block, StorageType::Nas, StorageType::Object] {
            assert_eq!(StorageType::parse(t.as_str()), Some(t));
        }
        assert_eq!(StorageType::parse("BLOCK"), Some(StorageType::Block));
        assert_eq!(StorageType::parse("tape"), None);
    }
}
