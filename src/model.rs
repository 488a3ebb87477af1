//! The shapes the library hands out: volumes, attachments and the options
//! that create and mount them. JSON field names follow REX-Ray's
//! `types.Volume` so scripts written for the original keep working.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

fn is_zero_u8(v: &u8) -> bool {
    *v == 0
}
fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}
fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}
fn is_false(v: &bool) -> bool {
    !*v
}

/// Attachment state, as the original's `attachmentState` numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachmentState {
    /// Not known.
    Unknown = 1,
    /// Attached to this instance.
    Attached = 2,
    /// Attached nowhere.
    Available = 3,
    /// Attached to another instance.
    Unavailable = 4,
}

impl AttachmentState {
    /// The word shown in the `Status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            AttachmentState::Attached => "attached",
            AttachmentState::Available => "available",
            AttachmentState::Unavailable => "unavailable",
            AttachmentState::Unknown => "unknown",
        }
    }
    /// From the numeric form (0 and unknown numbers map to `Unknown`).
    pub fn from_u8(v: u8) -> Self {
        match v {
            2 => AttachmentState::Attached,
            3 => AttachmentState::Available,
            4 => AttachmentState::Unavailable,
            _ => AttachmentState::Unknown,
        }
    }
}

/// Who a volume is attached to: one host (and, for the loop driver, one
/// state directory on that host).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct InstanceId {
    /// The instance's id.
    pub id: String,
    /// The storage driver that issued it.
    pub driver: String,
    /// The service name.
    pub service: String,
}

/// One attachment of a volume to an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    /// The device the volume appears as on the instance (empty for
    /// backends without a block device).
    pub device_name: String,
    /// Where it is attached.
    #[serde(rename = "instanceID")]
    pub instance_id: InstanceId,
    /// `attached`.
    pub status: String,
    /// The volume's id.
    #[serde(rename = "volumeID")]
    pub volume_id: String,
    /// Where it is mounted, when known.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mount_point: String,
    /// Driver-specific facts.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, String>,
}

/// A volume, as `types.Volume` of the original.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    /// Attachments, one per instance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
    /// See [`AttachmentState`].
    #[serde(default, skip_serializing_if = "is_zero_u8")]
    pub attachment_state: u8,
    /// Availability zone.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub availability_zone: String,
    /// Whether the volume is encrypted.
    #[serde(default, skip_serializing_if = "is_false")]
    pub encrypted: bool,
    /// Provisioned IOPS.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub iops: i64,
    /// Unique name.
    pub name: String,
    /// Network name (unused by the local drivers).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub network_name: String,
    /// Size in GiB.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub size: u64,
    /// Backend status text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status: String,
    /// Stable unique id.
    pub id: String,
    /// Volume type.
    #[serde(rename = "type", default)]
    pub volume_type: String,
    /// Driver-specific facts (`createdAt`, backing file, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, String>,
}

impl Volume {
    /// The attachment state as an enum.
    pub fn state(&self) -> AttachmentState {
        AttachmentState::from_u8(self.attachment_state)
    }
    /// The creation time (RFC 3339) if the driver knows it.
    pub fn created_at(&self) -> Option<&str> {
        self.fields.get("createdAt").map(String::as_str)
    }
    /// What the volume was made from, when it says: the copy source
    /// recorded in [`CONTENT_SOURCE`] (`volume:<id>` or `snapshot:<id>`),
    /// else what earlier loop copies recorded (`copiedFrom`, `snapshotID`).
    /// `None` for a volume made blank, and for one whose driver or release
    /// recorded nothing.
    pub fn content_source(&self) -> Option<ContentSource> {
        if let Some(s) = self.fields.get(CONTENT_SOURCE) {
            return match s.split_once(':') {
                Some(("volume", id)) => Some(ContentSource::Volume(id.to_string())),
                Some(("snapshot", id)) => Some(ContentSource::Snapshot(id.to_string())),
                _ => None,
            };
        }
        if let Some(id) = self.fields.get("copiedFrom") {
            return Some(ContentSource::Volume(id.clone()));
        }
        self.fields
            .get("snapshotID")
            .map(|id| ContentSource::Snapshot(id.clone()))
    }
}

/// The field in which a volume made as a copy records its source (see
/// [`Volume::content_source`]).
pub const CONTENT_SOURCE: &str = "contentSource";

/// What a volume was copied from, by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentSource {
    /// A volume.
    Volume(String),
    /// A snapshot.
    Snapshot(String),
}

impl ContentSource {
    /// As [`CONTENT_SOURCE`] records it.
    pub fn field(&self) -> String {
        match self {
            ContentSource::Volume(id) => format!("volume:{id}"),
            ContentSource::Snapshot(id) => format!("snapshot:{id}"),
        }
    }
}

impl std::fmt::Display for ContentSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ContentSource::Volume(id) => write!(f, "volume {id}"),
            ContentSource::Snapshot(id) => write!(f, "snapshot {id}"),
        }
    }
}

/// A volume with the path it is mounted at on this host (the original's
/// "path variant": the volume object plus a capitalised `Path` key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeWithPath {
    /// The volume.
    #[serde(flatten)]
    pub volume: Volume,
    /// The path handed to applications, empty when not mounted here.
    #[serde(rename = "Path")]
    pub path: String,
}

/// What to create: every field optional, missing ones come from
/// `create.default.*`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateOptions {
    /// Size in GiB.
    pub size: Option<u64>,
    /// IOPS.
    pub iops: Option<i64>,
    /// Volume type.
    pub volume_type: Option<String>,
    /// Availability zone.
    pub availability_zone: Option<String>,
    /// Encrypt the volume (no local driver supports it).
    pub encrypted: bool,
    /// Filesystem to make at the first mount (stored with the volume).
    pub fs_type: Option<FsType>,
}

/// A fully resolved create request, as a driver receives it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateSpec {
    /// Size in GiB, > 0.
    pub size: u64,
    /// IOPS (0 = unset).
    pub iops: i64,
    /// Volume type.
    pub volume_type: String,
    /// Availability zone.
    pub availability_zone: String,
    /// Encrypted.
    pub encrypted: bool,
    /// Driver-independent facts stored with the volume (e.g. `fsType`).
    pub fields: BTreeMap<String, String>,
}

/// What an attach hands to the node: a block device to format and mount,
/// or a directory to bind-mount (backends without devices, like vfs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSource {
    /// A block device, e.g. `/dev/loop3`.
    Device(PathBuf),
    /// A directory that is bind-mounted as is.
    Directory(PathBuf),
}

impl MountSource {
    /// The path of the device or directory.
    pub fn path(&self) -> &std::path::Path {
        match self {
            MountSource::Device(p) | MountSource::Directory(p) => p,
        }
    }
}

/// Filesystems the node can make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsType {
    /// ext4 (default).
    Ext4,
    /// XFS.
    Xfs,
}

impl FsType {
    /// Name as `mkfs.<name>` and mount(2) know it.
    pub fn as_str(self) -> &'static str {
        match self {
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
        }
    }
}

impl std::str::FromStr for FsType {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "ext4" => Ok(FsType::Ext4),
            "xfs" => Ok(FsType::Xfs),
            _ => Err(crate::Error::invalid(format!(
                "unsupported filesystem type {s:?}: use ext4 or xfs"
            ))),
        }
    }
}

/// How a mount should treat the device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountOptions {
    /// Filesystem to make on a blank device (default `create.default.fsType`).
    pub fs_type: Option<FsType>,
    /// Format even if the device holds a filesystem. Destroys data.
    pub overwrite_fs: bool,
    /// Take the volume from another instance (attach with force).
    pub force_attach: bool,
}

/// A point-in-time copy of a volume, as `types.Snapshot` of the original.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// Unique name.
    pub name: String,
    /// Stable unique id.
    pub id: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// When it was taken (RFC 3339).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub start_time: String,
    /// `completed`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status: String,
    /// The volume it was taken of.
    #[serde(rename = "volumeID")]
    pub volume_id: String,
    /// Size of that volume in GiB.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub volume_size: u64,
    /// Driver-specific facts (e.g. `fsType` of the volume).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, String>,
}

/// What a backend knows of a volume's bytes, read from its own store
/// (a loop image's allocated ranges), not through the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// Every byte is zero: nothing to lose, no probe needed.
    Blank,
    /// A non-zero byte at this offset: whatever the probe finds, there is
    /// data here, and no signature means data no tool recognises, not a
    /// blank device.
    Written(u64),
    /// The backend cannot tell: the node's probe decides.
    Unknown,
}
