//! The `vfs` driver: a volume is a directory. There is no device; a mount
//! bind-mounts the directory. Listing, creating and removing need no root.
//!
//! ```text
//! <vfs.root>/vol/<id>.json   metadata (and the attachment, if any)
//! <vfs.root>/vol/<id>/       the data
//! ```

use super::{now_rfc3339, StorageDriver};
use crate::error::IoContext;
use crate::model::{Attachment, AttachmentState, CreateSpec, InstanceId, MountSource, Volume};
use crate::state::atomic;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    volume: Volume,
    #[serde(default)]
    attached_to: Option<InstanceId>,
}

/// The vfs driver.
pub struct VfsDriver {
    dir: PathBuf,
    me: InstanceId,
}

impl VfsDriver {
    /// Open (and create) the vfs root.
    pub fn open(root: &Path, me: InstanceId) -> Result<VfsDriver> {
        use crate::files::{own_dir, Link, PRIVATE_DIR};
        // Only root enters: the directories are the volumes' data.
        let ctx = |e: Error| e.context("preparing the vfs directory (vfs.root)");
        own_dir(root, PRIVATE_DIR, Link::Follow).map_err(ctx)?;
        let dir = root.join("vol");
        own_dir(&dir, PRIVATE_DIR, Link::Refuse).map_err(ctx)?;
        Ok(VfsDriver { dir, me })
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

    fn present(&self, m: Meta) -> Volume {
        let mut v = m.volume;
        v.attachments.clear();
        v.attachment_state = match &m.attached_to {
            None => AttachmentState::Available as u8,
            Some(i) if i.id == self.me.id => AttachmentState::Attached as u8,
            Some(_) => AttachmentState::Unavailable as u8,
        };
        if let Some(i) = m.attached_to {
            v.attachments.push(Attachment {
                device_name: String::new(),
                instance_id: i,
                status: "attached".into(),
                volume_id: v.id.clone(),
                ..Default::default()
            });
        }
        v
    }
}

impl StorageDriver for VfsDriver {
    fn name(&self) -> &str {
        "vfs"
    }

    fn list(&self) -> Result<Vec<Volume>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.dir).ctx(|| format!("reading {}", self.dir.display()))? {
            let e = e.ctx(|| format!("reading {}", self.dir.display()))?;
            let n = e.file_name().to_string_lossy().into_owned();
            if let Some(id) = n.strip_suffix(".json") {
                if let Some(m) = self.read(id)? {
                    out.push(self.present(m));
                }
            }
        }
        Ok(out)
    }

    fn tidy(&self) {
        crate::files::sweep_temporaries(&self.dir);
    }

    fn inspect(&self, id: &str) -> Result<Option<Volume>> {
        Ok(self.read(id)?.map(|m| self.present(m)))
    }

    fn create(&self, name: &str, spec: &CreateSpec) -> Result<Volume> {
        crate::input::volume_name(name)?;
        // The caller holds the name lock: nothing is created meanwhile.
        let all = self.list()?;
        if all.iter().any(|v| v.name == name) {
            return Err(Error::exists(format!("volume {name} already exists")));
        }
        super::refuse_name_that_is_an_id(
            "volume",
            name,
            all.iter().map(|v| (v.id.as_str(), v.name.as_str())),
        )?;
        let id = super::fresh_id(|id| {
            id == name
                || all.iter().any(|v| v.id == id || v.name == id)
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
            fields: spec.fields.clone(),
            ..Default::default()
        };
        v.fields.insert("createdAt".into(), now_rfc3339());
        let m = Meta {
            volume: v,
            attached_to: None,
        };
        self.write(&m)?;
        Ok(self.present(m))
    }

    fn remove(&self, id: &str) -> Result<()> {
        let m = self
            .read(id)?
            .ok_or_else(|| Error::not_found(format!("volume {id} not found")))?;
        if m.attached_to.is_some() {
            return Err(Error::in_use(format!(
                "volume {} is attached; detach it first",
                m.volume.name
            )));
        }
        atomic::remove(&self.meta_path(id)?)?;
        let data = self.dir.join(id);
        std::fs::remove_dir_all(&data).ctx(|| format!("removing {}", data.display()))
    }

    fn attach(&self, id: &str, force: bool) -> Result<MountSource> {
        let mut m = self
            .read(id)?
            .ok_or_else(|| Error::not_found(format!("volume {id} not found")))?;
        match &m.attached_to {
            Some(i) if i.id != self.me.id && !force => {
                return Err(Error::in_use(format!(
                    "volume {} is attached to another instance ({}); use preempt or --force",
                    m.volume.name, i.id
                )))
            }
            Some(i) if i.id == self.me.id => {}
            _ => {
                m.attached_to = Some(self.me.clone());
                self.write(&m)?;
            }
        }
        Ok(MountSource::Directory(self.dir.join(id)))
    }

    fn detach(&self, id: &str, force: bool) -> Result<()> {
        let mut m = self
            .read(id)?
            .ok_or_else(|| Error::not_found(format!("volume {id} not found")))?;
        match &m.attached_to {
            None => Ok(()),
            Some(i) if i.id != self.me.id && !force => Err(Error::in_use(format!(
                "volume {} is attached to another instance ({}); use --force",
                m.volume.name, i.id
            ))),
            Some(_) => {
                m.attached_to = None;
                self.write(&m)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let d = VfsDriver::open(t.path(), me("a")).unwrap();
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
        let src = d.attach(&v.id, false).unwrap();
        assert!(matches!(src, MountSource::Directory(_)));
        assert_eq!(
            d.inspect(&v.id).unwrap().unwrap().state(),
            AttachmentState::Attached
        );
        let other = VfsDriver::open(t.path(), me("b")).unwrap();
        assert_eq!(
            other.inspect(&v.id).unwrap().unwrap().state(),
            AttachmentState::Unavailable
        );
        assert_eq!(
            other.attach(&v.id, false).unwrap_err().kind(),
            crate::Kind::InUse
        );
        assert_eq!(d.remove(&v.id).unwrap_err().kind(), crate::Kind::InUse);
        d.detach(&v.id, false).unwrap();
        d.detach(&v.id, false).unwrap();
        d.remove(&v.id).unwrap();
        assert!(d.list().unwrap().is_empty());
    }
}
