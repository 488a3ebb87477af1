//! The `vfs` driver: a volume is a directory. There is no device; a mount
//! bind-mounts the directory. Listing, creating and removing need no root.
//!
//! ```text
//! <vfs.root>/vol/<id>.json   metadata (and the attachment, if any)
//! <vfs.root>/vol/<id>/       the data
//! <vfs.root>/dev             the node's device list (as the original vfs
//!                            executor's: /dev/xvda../dev/xvdd, one a line)
//! ```
//!
//! One instance holds a volume at a time. The controller side
//! ([`Controller`]) records the holder and the device name it proposed;
//! the node side ([`VfsExecutor`]) resolves an attach token to the
//! volume's directory, which it finds under its own `vfs.root` (so vfs
//! shares data only between nodes that see the same directory).

use super::controller::{Attached, Controller, Executor, NextDeviceInfo, ServiceInfo, StorageType};
use super::now_rfc3339;
use crate::error::IoContext;
use crate::model::{Attachment, CreateSpec, InstanceId, MountSource, Volume};
use crate::state::atomic;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    volume: Volume,
    #[serde(default)]
    attached_to: Option<InstanceId>,
    /// The device name the holder proposed at attach (may be empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    device: String,
}

/// The vfs driver.
pub struct VfsDriver {
    dir: PathBuf,
    info: ServiceInfo,
    /// Serialises the controller's changes in this process (the records
    /// are rewritten whole).
    changes: Mutex<()>,
}

/// How the vfs driver describes itself (as the original's: object
/// storage whose device names the node proposes and the driver ignores).
fn service_info(service: &str) -> ServiceInfo {
    ServiceInfo {
        service: service.to_string(),
        driver: "vfs".into(),
        storage_type: StorageType::Object,
        next_device: NextDeviceInfo {
            ignore: true,
            ..Default::default()
        },
    }
}

impl VfsDriver {
    /// Open (and create) the vfs root.
    pub fn open(root: &Path, service: &str) -> Result<VfsDriver> {
        use crate::files::{own_dir, Link, PRIVATE_DIR};
        // Only root enters: the directories are the volumes' data.
        let ctx = |e: Error| e.context("preparing the vfs directory (vfs.root)");
        own_dir(root, PRIVATE_DIR, Link::Follow).map_err(ctx)?;
        let dir = root.join("vol");
        own_dir(&dir, PRIVATE_DIR, Link::Refuse).map_err(ctx)?;
        let info = service_info(if service.is_empty() { "vfs" } else { service });
        Ok(VfsDriver {
            dir,
            info,
            changes: Mutex::new(()),
        })
    }

    fn changing(&self) -> MutexGuard<'_, ()> {
        self.changes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn must_read(&self, id: &str) -> Result<Meta> {
        self.read(id)?
            .ok_or_else(|| Error::not_found(format!("volume {id} not found")))
    }

    /// Every record.
    fn records(&self) -> Result<Vec<Meta>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.dir).ctx(|| format!("reading {}", self.dir.display()))? {
            let e = e.ctx(|| format!("reading {}", self.dir.display()))?;
            let n = e.file_name().to_string_lossy().into_owned();
            if let Some(id) = n.strip_suffix(".json") {
                if crate::files::is_temporary(&n) {
                    continue;
                }
                if let Some(m) = self.read(id)? {
                    out.push(m);
                }
            }
        }
        Ok(out)
    }

    /// Make a new volume's directory and record (the name checked free).
    fn create_record(&self, name: &str, spec: &CreateSpec) -> Result<Meta> {
        crate::input::volume_name(name)?;
        let all = self.records()?;
        if all.iter().any(|m| m.volume.name == name) {
            return Err(Error::exists(format!("volume {name} already exists")));
        }
        super::refuse_name_that_is_an_id(
            "volume",
            name,
            all.iter()
                .map(|m| (m.volume.id.as_str(), m.volume.name.as_str())),
        )?;
        let id = super::fresh_id(|id| {
            id == name
                || all.iter().any(|m| m.volume.id == id || m.volume.name == id)
                || self.dir.join(id).exists()
        })?;
        let data = self.dir.join(&id);
        // The volume's root as applications see it through the bind
        // mount, like a fresh filesystem's root: 0755.
        {
            use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
            std::fs::DirBuilder::new()
                .mode(0o755)
                .create(&data)
                .ctx(|| format!("creating {}", data.display()))?;
            std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755))
                .ctx(|| format!("setting the mode of {}", data.display()))?;
        }
        let mut v = Volume {
            id: id.clone(),
            name: name.into(),
            size: spec.size,
            iops: spec.iops,
            volume_type: spec.volume_type.clone(),
            availability_zone: spec.availability_zone.clone(),
            encrypted: spec.encrypted,
            fields: spec.fields.clone(),
            ..Default::default()
        };
        v.fields.insert("createdAt".into(), now_rfc3339());
        let m = Meta {
            volume: v,
            attached_to: None,
            device: String::new(),
        };
        self.write(&m)?;
        Ok(m)
    }

    fn remove_record(&self, m: &Meta) -> Result<()> {
        let id = &m.volume.id;
        atomic::remove(&self.meta_path(id)?)?;
        let data = self.dir.join(id);
        std::fs::remove_dir_all(&data).ctx(|| format!("removing {}", data.display()))
    }

    /// A volume with its attachments listed and no state: the
    /// controller's view ([`super::controller::derive_state`] decides).
    fn held(m: Meta) -> Volume {
        let mut v = m.volume;
        v.attachments.clear();
        v.attachment_state = 0;
        if let Some(i) = m.attached_to {
            v.attachments.push(Attachment {
                device_name: m.device,
                instance_id: i,
                status: "attached".into(),
                volume_id: v.id.clone(),
                ..Default::default()
            });
        }
        v
    }

    fn meta_path(&self, id: &str) -> Result<PathBuf> {
        crate::input::volume_id(id)?;
        Ok(self.dir.join(format!("{id}.json")))
    }

    fn read(&self, id: &str) -> Result<Option<Meta>> {
        let p = self.meta_path(id)?;
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| Error::backend(format!("unreadable vfs record {}: {e}", p.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::from_io(format!("reading {}", p.display()), &e)),
        }
    }

    fn write(&self, m: &Meta) -> Result<()> {
        atomic::write(
            &self.meta_path(&m.volume.id)?,
            &serde_json::to_vec_pretty(m).expect("meta serialises"),
        )
    }
}

/// Whether `a` and `b` are one instance (ids compare case-insensitively,
/// as the original server compares them).
fn same(a: &InstanceId, b: &InstanceId) -> bool {
    a.id.eq_ignore_ascii_case(&b.id)
}

impl Controller for VfsDriver {
    fn info(&self) -> &ServiceInfo {
        &self.info
    }

    fn list(&self) -> Result<Vec<Volume>> {
        Ok(self.records()?.into_iter().map(Self::held).collect())
    }

    fn inspect(&self, id: &str) -> Result<Option<Volume>> {
        if crate::input::volume_id(id).is_err() {
            return Ok(None);
        }
        Ok(self.read(id)?.map(Self::held))
    }

    fn create(&self, name: &str, spec: &CreateSpec) -> Result<Volume> {
        let _g = self.changing();
        Ok(Self::held(self.create_record(name, spec)?))
    }

    fn remove(&self, id: &str, force: bool) -> Result<()> {
        let _g = self.changing();
        let m = self.must_read(id)?;
        if let (Some(i), false) = (&m.attached_to, force) {
            return Err(Error::in_use(format!(
                "volume {} is attached to instance {}; detach it first, or remove it with force",
                m.volume.name, i.id
            )));
        }
        self.remove_record(&m)
    }

    fn attach(
        &self,
        id: &str,
        who: &InstanceId,
        force: bool,
        next_device: Option<&str>,
    ) -> Result<Attached> {
        let _g = self.changing();
        let mut m = self.must_read(id)?;
        match &m.attached_to {
            Some(i) if same(i, who) => {}
            Some(i) if !force => {
                return Err(Error::in_use(format!(
                    "volume {} is attached to another instance ({}); detach it there first, or attach with force (preempt) to take it over",
                    m.volume.name, i.id
                )))
            }
            _ => {
                m.attached_to = Some(who.clone());
                m.device = next_device.unwrap_or("").to_string();
                self.write(&m)?;
            }
        }
        // The token is the device the node proposed (what the original
        // vfs answers, and what its clients wait for), else the id.
        let token = if m.device.is_empty() {
            m.volume.id.clone()
        } else {
            m.device.clone()
        };
        Ok(Attached {
            volume: Self::held(m),
            token,
        })
    }

    fn detach(&self, id: &str, who: &InstanceId, force: bool) -> Result<Volume> {
        let _g = self.changing();
        let mut m = self.must_read(id)?;
        match &m.attached_to {
            None => {}
            Some(i) if !same(i, who) && !force => {
                return Err(Error::in_use(format!(
                "volume {} is attached to another instance ({}); detach it there, or with force",
                m.volume.name, i.id
            )))
            }
            Some(_) => {
                m.attached_to = None;
                m.device.clear();
                self.write(&m)?;
            }
        }
        Ok(Self::held(m))
    }

    fn tidy(&self) {
        crate::files::sweep_temporaries(&self.dir);
    }
}

/// The device list a new node starts with, as the original vfs executor's.
const INITIAL_DEVICES: &str = "/dev/xvda\n/dev/xvdb\n/dev/xvdc\n/dev/xvdd\n";

/// How often [`VfsExecutor::resolve`] looks for a volume's directory.
const RESOLVE_POLL: Duration = Duration::from_millis(100);

/// The vfs node side: this node's id, its device list, and a volume's
/// directory under its `vfs.root`.
pub struct VfsExecutor {
    dir: PathBuf,
    dev_file: PathBuf,
    me: InstanceId,
}

impl VfsExecutor {
    /// Open (and create) the node's vfs root and device list.
    pub fn open(root: &Path, me: InstanceId) -> Result<VfsExecutor> {
        use crate::files::{own_dir, Link, PRIVATE_DIR};
        let ctx = |e: Error| e.context("preparing the vfs directory (vfs.root)");
        own_dir(root, PRIVATE_DIR, Link::Follow).map_err(ctx)?;
        let dev_file = root.join("dev");
        if !dev_file.exists() {
            atomic::write(&dev_file, INITIAL_DEVICES.as_bytes()).map_err(ctx)?;
        }
        Ok(VfsExecutor {
            dir: root.join("vol"),
            dev_file,
            me,
        })
    }

    /// `(device, value)` of every `/dev/xvd?[=value]` line of the list.
    fn devices(&self) -> Result<Vec<(String, String)>> {
        let text = std::fs::read_to_string(&self.dev_file)
            .ctx(|| format!("reading the vfs device list {}", self.dev_file.display()))?;
        Ok(text
            .lines()
            .filter_map(|l| {
                let (dev, val) = l.split_once('=').unwrap_or((l, ""));
                let b = dev.as_bytes();
                let ok = dev.len() == 9 && dev.starts_with("/dev/xvd") && b[8].is_ascii_lowercase();
                ok.then(|| (dev.to_string(), val.to_string()))
            })
            .collect())
    }
}

impl Executor for VfsExecutor {
    fn instance_id(&self) -> &InstanceId {
        &self.me
    }

    fn next_device(&self) -> Result<Option<String>> {
        // As the original: the first device with no value after it.
        Ok(self
            .devices()?
            .into_iter()
            .find(|(_, v)| v.is_empty())
            .map(|(d, _)| d))
    }

    fn local_devices(&self) -> Result<BTreeMap<String, String>> {
        Ok(self.devices()?.into_iter().collect())
    }

    fn present(&self, volume: &Volume) -> Result<Option<MountSource>> {
        let mine = volume
            .attachments
            .iter()
            .any(|a| same(&a.instance_id, &self.me));
        let dir = self.dir.join(crate::input::volume_id(&volume.id)?);
        Ok((mine && dir.is_dir()).then_some(MountSource::Directory(dir)))
    }

    fn resolve(&self, volume: &Volume, token: &str, timeout: Duration) -> Result<MountSource> {
        let _ = token;
        let dir = self.dir.join(crate::input::volume_id(&volume.id)?);
        let deadline = Instant::now() + timeout;
        loop {
            if dir.is_dir() {
                return Ok(MountSource::Directory(dir));
            }
            if Instant::now() >= deadline {
                return Err(Error::system(format!(
                    "the directory of vfs volume {} ({}) did not appear on this host within {}: vfs shares data only between nodes that see the same vfs.root",
                    volume.name,
                    dir.display(),
                    humantime::format_duration(timeout)
                )));
            }
            std::thread::sleep(
                RESOLVE_POLL.min(deadline.saturating_duration_since(Instant::now())),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AttachmentState;
    use crate::storage::controller::derive_state;

    fn me(id: &str) -> InstanceId {
        InstanceId {
            id: id.into(),
            driver: "vfs".into(),
            service: "vfs".into(),
        }
    }

    #[test]
    fn lifecycle_without_root() {
        let t = tempfile::tempdir().unwrap();
        let d = VfsDriver::open(t.path(), "vfs").unwrap();
        let (a, b) = (me("a"), me("b"));
        let spec = CreateSpec {
            size: 1,
            ..Default::default()
        };
        let v = d.create("v1", &spec).unwrap();
        assert_eq!(
            d.create("v1", &spec).unwrap_err().kind(),
            crate::Kind::AlreadyExists
        );
        assert_eq!(d.list().unwrap().len(), 1);
        d.attach(&v.id, &a, false, None).unwrap();
        let seen = d.inspect(&v.id).unwrap().unwrap();
        assert_eq!(derive_state(&seen, Some(&a)), AttachmentState::Attached);
        assert_eq!(derive_state(&seen, Some(&b)), AttachmentState::Unavailable);
        assert_eq!(
            d.attach(&v.id, &b, false, None).unwrap_err().kind(),
            crate::Kind::InUse
        );
        assert_eq!(
            d.remove(&v.id, false).unwrap_err().kind(),
            crate::Kind::InUse
        );
        d.detach(&v.id, &a, false).unwrap();
        d.detach(&v.id, &a, false).unwrap();
        d.remove(&v.id, false).unwrap();
        assert!(d.list().unwrap().is_empty());
    }

    /// The controller records who holds a volume for any caller, one at
    /// a time; the executor finds the directory.
    #[test]
    fn controller_holds_for_callers_and_executor_resolves() {
        let t = tempfile::tempdir().unwrap();
        let drv = VfsDriver::open(t.path(), "vfs").unwrap();
        let c: &dyn Controller = &drv;
        assert_eq!(c.info().driver, "vfs");
        assert_eq!(c.info().service, "vfs");
        let spec = CreateSpec {
            size: 2,
            ..Default::default()
        };
        let v = c.create("v1", &spec).unwrap();
        assert_eq!(v.attachment_state, 0);
        assert!(v.attachments.is_empty());
        assert_eq!(
            c.create("v1", &spec).unwrap_err().kind(),
            crate::Kind::AlreadyExists
        );
        assert_eq!(
            c.create(&v.id, &spec).unwrap_err().kind(),
            crate::Kind::InvalidInput
        );
        let (a, b) = (me("node-a"), me("node-b"));
        let at = c.attach(&v.id, &a, false, Some("/dev/xvda")).unwrap();
        assert_eq!(at.token, "/dev/xvda");
        assert_eq!(at.volume.attachments[0].device_name, "/dev/xvda");
        assert_eq!(
            derive_state(&at.volume, Some(&a)),
            AttachmentState::Attached
        );
        assert_eq!(
            derive_state(&at.volume, Some(&b)),
            AttachmentState::Unavailable
        );
        // Again by the holder: the same token; by another: refused.
        assert_eq!(
            c.attach(&v.id, &me("NODE-A"), false, None).unwrap().token,
            "/dev/xvda"
        );
        let e = c.attach(&v.id, &b, false, None).unwrap_err();
        assert_eq!(e.kind(), crate::Kind::InUse);
        assert!(
            e.message().contains("node-a") && e.message().contains("force"),
            "{e}"
        );
        assert_eq!(
            c.detach(&v.id, &b, false).unwrap_err().kind(),
            crate::Kind::InUse
        );
        assert_eq!(
            c.remove(&v.id, false).unwrap_err().kind(),
            crate::Kind::InUse
        );
        // Force takes it over; no device proposed: the token is the id.
        let at = c.attach(&v.id, &b, true, None).unwrap();
        assert_eq!(at.token, v.id);
        assert_eq!(at.volume.attachments.len(), 1);
        assert_eq!(at.volume.attachments[0].instance_id, b);

        let x = VfsExecutor::open(t.path(), b.clone()).unwrap();
        assert_eq!(x.next_device().unwrap().as_deref(), Some("/dev/xvda"));
        assert_eq!(x.local_devices().unwrap().len(), 4);
        let src = x
            .resolve(&at.volume, &at.token, Duration::from_millis(10))
            .unwrap();
        assert_eq!(
            src,
            MountSource::Directory(t.path().join("vol").join(&v.id))
        );
        assert_eq!(x.present(&at.volume).unwrap(), Some(src));
        let xa = VfsExecutor::open(t.path(), a.clone()).unwrap();
        assert_eq!(xa.present(&at.volume).unwrap(), None);

        let v2 = c.detach(&v.id, &b, false).unwrap();
        assert!(v2.attachments.is_empty());
        c.detach(&v.id, &b, false).unwrap();
        let held = c.attach(&v.id, &a, false, None).unwrap();
        c.remove(&v.id, true).unwrap();
        assert_eq!(c.inspect(&v.id).unwrap(), None);
        assert_eq!(c.inspect("no such/id").unwrap(), None);
        let e = x
            .resolve(&held.volume, &held.token, Duration::from_millis(50))
            .unwrap_err();
        assert!(e.message().contains("did not appear"), "{e}");
        assert_eq!(
            c.remove(&v.id, false).unwrap_err().kind(),
            crate::Kind::NotFound
        );
    }
}
