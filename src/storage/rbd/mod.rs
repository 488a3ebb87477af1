//! The `rbd` driver: a volume is a Ceph RBD image in one pool
//! (`rbd.defaultPool`), driven through the `rbd` and `ceph` tools with
//! `--format json` ([`cli`]).
//!
//! - Volume id `<pool>.<image>`, name `<image>` (the original's scheme).
//! - Who holds an image is recorded in Ceph itself, as an RBD advisory
//!   lock `rexray:<instance id>`, so every node and the controller see
//!   the same holder. Attaching an image another instance holds is
//!   refused; with force (preempt) the controller *fences* the old holder
//!   first — every client address of its lock and of the image's watchers
//!   goes on the OSD blocklist, so its writes fail instead of landing —
//!   then takes the lock over.
//! - Images are made with the `layering` feature only (what kernel RBD
//!   clients map, and no exclusive-lock to compete with the advisory
//!   lock).
//! - The node side ([`node::RbdExecutor`]) maps an image with kernel
//!   `rbd map`, else `rbd-nbd`, else `rbd-fuse` plus a loop device.

pub mod cli;
pub mod node;

use super::controller::{Attached, Controller, NextDeviceInfo, ServiceInfo, StorageType};
use super::{now_rfc3339, Prepare};
use crate::model::{Attachment, CreateSpec, InstanceId, Snapshot, Volume};
use crate::{Error, Kind, Result};
use cli::Ceph;
use serde::Deserialize;

/// The prefix of the advisory locks this driver takes.
pub const LOCK_PREFIX: &str = "rexray:";
const GIB: u64 = 1 << 30;
/// The prefix of the image metadata keys that hold a volume's fields
/// (`fsType`, ...).
const META_PREFIX: &str = "rexray.";
/// The image-meta prefix of the volume's own facts (type, IOPS, zone,
/// creation time); checked before [`META_PREFIX`], which it extends.
const META_VOLUME: &str = "rexray.volume.";

/// The rbd driver's controller side.
pub struct RbdDriver {
    ceph: Ceph,
    pool: String,
    info: ServiceInfo,
}

/// One entry of `rbd ls -l --format json`: an image or a snapshot.
#[derive(Debug, Deserialize)]
struct LsEntry {
    image: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    snapshot: Option<String>,
    #[serde(default)]
    lock_type: Option<String>,
}

/// One entry of `rbd lock ls --format json`.
#[derive(Debug, Deserialize)]
struct LockEntry {
    id: String,
    locker: String,
    #[serde(default)]
    address: String,
}

#[derive(Debug, Deserialize)]
struct Status {
    #[serde(default)]
    watchers: Vec<Watcher>,
}

#[derive(Debug, Deserialize)]
struct Watcher {
    address: String,
}

#[derive(Debug, Deserialize)]
struct Info {
    name: String,
    size: u64,
    #[serde(default)]
    create_timestamp: String,
}

fn parse<T: for<'de> Deserialize<'de>>(what: &str, s: &str) -> Result<T> {
    serde_json::from_str(s.trim())
        .map_err(|e| Error::backend(format!("unreadable answer of {what}: {e}: {s:.200}")))
}

/// Check an image or snapshot name: the volume name rule, which also
/// keeps out what RBD specs reserve (`/`, `@`).
fn image_name<'a>(what: &str, name: &'a str) -> Result<&'a str> {
    crate::input::name_of(what, name)
}

impl RbdDriver {
    /// The driver for `pool`, reaching the cluster through `ceph`.
    pub fn new(ceph: Ceph, pool: &str, service: &str) -> Result<RbdDriver> {
        image_name("pool", pool)
            .map_err(|e| e.context(format!("reading {}", crate::config::keys::RBD_DEFAULT_POOL)))?;
        Ok(RbdDriver {
            ceph,
            pool: pool.to_string(),
            info: ServiceInfo {
                service: if service.is_empty() { "rbd" } else { service }.to_string(),
                driver: "rbd".into(),
                storage_type: StorageType::Block,
                next_device: NextDeviceInfo {
                    ignore: true,
                    ..Default::default()
                },
            },
        })
    }

    fn id_of(&self, image: &str) -> String {
        format!("{}.{image}", self.pool)
    }

    /// The image of a volume id of this pool, or `None`.
    fn image_of<'a>(&self, id: &'a str) -> Option<&'a str> {
        id.strip_prefix(self.pool.as_str())
            .and_then(|r| r.strip_prefix('.'))
            .filter(|i| image_name("volume", i).is_ok())
    }

    fn must_image<'a>(&self, id: &'a str) -> Result<&'a str> {
        self.image_of(id)
            .ok_or_else(|| Error::not_found(format!("volume {id} not found")))
    }

    fn spec(&self, image: &str) -> String {
        format!("{}/{image}", self.pool)
    }

    fn rbd(&self, args: &[&str]) -> Result<String> {
        self.ceph.run("rbd", args)
    }

    fn ls(&self) -> Result<Vec<LsEntry>> {
        let out = self.rbd(&["ls", "-l", "--format", "json", "-p", &self.pool])?;
        parse("rbd ls", &out)
    }

    fn locks(&self, image: &str) -> Result<Vec<LockEntry>> {
        let out = self.rbd(&["lock", "ls", "--format", "json", &self.spec(image)])?;
        parse("rbd lock ls", &out)
    }

    fn watchers(&self, image: &str) -> Result<Vec<String>> {
        let out = self.rbd(&["status", "--format", "json", &self.spec(image)])?;
        let s: Status = parse("rbd status", &out)?;
        Ok(s.watchers.into_iter().map(|w| w.address).collect())
    }

    fn holder_of(&self, lock: &LockEntry) -> InstanceId {
        InstanceId {
            id: lock
                .id
                .strip_prefix(LOCK_PREFIX)
                .unwrap_or(&lock.id)
                .to_string(),
            driver: "rbd".into(),
            service: self.info.service.clone(),
        }
    }

    fn volume(&self, image: &str, size: u64, locks: &[LockEntry]) -> Volume {
        let id = self.id_of(image);
        let mut v = Volume {
            id: id.clone(),
            name: image.to_string(),
            size: size.div_ceil(GIB),
            volume_type: "rbd".into(),
            ..Default::default()
        };
        v.fields.insert("pool".into(), self.pool.clone());
        for l in locks {
            v.attachments.push(Attachment {
                instance_id: self.holder_of(l),
                status: "attached".into(),
                volume_id: id.clone(),
                ..Default::default()
            });
        }
        v
    }

    fn volumes(&self, entries: &[LsEntry], with_holders: bool) -> Result<Vec<Volume>> {
        let mut out = Vec::new();
        for e in entries.iter().filter(|e| e.snapshot.is_none()) {
            let locks = if with_holders && e.lock_type.is_some() {
                self.locks(&e.image)?
            } else {
                Vec::new()
            };
            out.push(self.volume(&e.image, e.size, &locks));
        }
        Ok(out)
    }

    /// `rbd info` of an image, or `None` when it does not exist.
    fn info_of(&self, image: &str) -> Result<Option<Info>> {
        match self.rbd(&["info", "--format", "json", &self.spec(image)]) {
            Ok(out) => Ok(Some(parse("rbd info", &out)?)),
            Err(e) if e.kind() == Kind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn must_volume(&self, id: &str) -> Result<Volume> {
        self.inspect(id)?
            .ok_or_else(|| Error::not_found(format!("volume {id} not found")))
    }

    /// A new image's name, checked free (and not another volume's id).
    fn check_new(&self, name: &str) -> Result<()> {
        image_name("volume", name)?;
        let all = self.ls()?;
        if all.iter().any(|e| e.snapshot.is_none() && e.image == name) {
            return Err(Error::exists(format!("volume {name} already exists")));
        }
        let ids: Vec<(String, String)> = all
            .iter()
            .filter(|e| e.snapshot.is_none())
            .map(|e| (self.id_of(&e.image), e.image.clone()))
            .collect();
        super::refuse_name_that_is_an_id(
            "volume",
            name,
            ids.iter().map(|(i, n)| (i.as_str(), n.as_str())),
        )
    }

    /// Put every client address of the old holder on the blocklist, so
    /// its writes fail from now on.
    fn fence(&self, image: &str, old: &[LockEntry]) -> Result<Vec<String>> {
        let mut addrs: Vec<String> = old
            .iter()
            .map(|l| l.address.clone())
            .chain(self.watchers(image)?)
            .filter(|a| !a.is_empty())
            .collect();
        addrs.sort();
        addrs.dedup();
        for a in &addrs {
            self.ceph
                .run("ceph", &["osd", "blocklist", "add", a])
                .map_err(|e| e.context(format!("fencing the old holder of volume {image}")))?;
        }
        tracing::info!(
            volume = image,
            fenced = addrs.join(","),
            "fenced the previous holder (blocklisted its clients)"
        );
        Ok(addrs)
    }

    fn unlock(&self, image: &str, l: &LockEntry) -> Result<()> {
        match self.rbd(&["lock", "rm", &self.spec(image), &l.id, &l.locker]) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == Kind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Add what the image's metadata keeps of volume `v` (see
    /// [`META_VOLUME`], [`META_PREFIX`]).
    fn read_meta(&self, image: &str, v: &mut Volume) -> Result<()> {
        let meta = self.rbd(&["image-meta", "list", "--format", "json", &self.spec(image)])?;
        let meta: std::collections::BTreeMap<String, String> = if meta.trim().is_empty() {
            Default::default()
        } else {
            parse("rbd image-meta list", &meta)?
        };
        for (k, val) in meta {
            if let Some(k) = k.strip_prefix(META_VOLUME) {
                match k {
                    "type" => v.volume_type = val,
                    "iops" => v.iops = val.parse().unwrap_or(0),
                    "availabilityZone" => v.availability_zone = val,
                    "createdAt" => {
                        v.fields.insert("createdAt".into(), val);
                    }
                    _ => {}
                }
            } else if let Some(k) = k.strip_prefix(META_PREFIX) {
                v.fields.insert(k.to_string(), val);
            }
        }
        Ok(())
    }

    fn snap_id(&self, image: &str, snap: &str) -> String {
        format!("{}@{snap}", self.id_of(image))
    }

    /// `(image, snapshot)` of a snapshot id of this pool.
    fn snap_of<'a>(&self, snap_id: &'a str) -> Result<(&'a str, &'a str)> {
        let bad = || Error::not_found(format!("snapshot {snap_id} not found"));
        let (vol, snap) = snap_id.split_once('@').ok_or_else(bad)?;
        let img = self.image_of(vol).ok_or_else(bad)?;
        image_name("snapshot", snap).map_err(|_| bad())?;
        Ok((img, snap))
    }
}

fn same(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

impl Controller for RbdDriver {
    fn info(&self) -> &ServiceInfo {
        &self.info
    }

    fn list(&self) -> Result<Vec<Volume>> {
        let entries = self.ls()?;
        self.volumes(&entries, true)
    }

    fn list_metadata(&self) -> Result<std::sync::Arc<[Volume]>> {
        let entries = self.ls()?;
        Ok(self.volumes(&entries, false)?.into())
    }

    fn inspect(&self, id: &str) -> Result<Option<Volume>> {
        let Some(image) = self.image_of(id) else {
            return Ok(None);
        };
        let Some(info) = self.info_of(image)? else {
            return Ok(None);
        };
        let locks = self.locks(image)?;
        let mut v = self.volume(&info.name, info.size, &locks);
        self.read_meta(image, &mut v)?;
        if !info.create_timestamp.is_empty() {
            v.fields
                .insert("createTimestamp".into(), info.create_timestamp.clone());
        }
        Ok(Some(v))
    }

    fn lookup_name(&self, name: &str) -> Result<Option<Volume>> {
        if image_name("volume", name).is_err() {
            return Ok(None);
        }
        self.inspect(&self.id_of(name))
    }

    fn lookup_metadata_name(&self, name: &str) -> Result<Option<Volume>> {
        if image_name("volume", name).is_err() {
            return Ok(None);
        }
        // Docker's Get shows the volume's type, IOPS, zone, fields and
        // creation time: they are in the image's metadata.
        let Some(i) = self.info_of(name)? else {
            return Ok(None);
        };
        let mut v = self.volume(&i.name, i.size, &[]);
        self.read_meta(&i.name, &mut v)?;
        Ok(Some(v))
    }

    fn create(&self, name: &str, spec: &CreateSpec) -> Result<Volume> {
        if spec.encrypted {
            return Err(Error::unsupported(
                "the rbd driver cannot encrypt volumes: create it without the encrypted option (encrypt below Ceph, e.g. OSDs on dm-crypt)",
            ));
        }
        self.check_new(name)?;
        let size = format!("{}G", spec.size.max(1));
        self.rbd(&[
            "create",
            "--size",
            &size,
            "--image-feature",
            "layering",
            &self.spec(name),
        ])?;
        // What Ceph does not keep for an image: the volume's type, IOPS,
        // zone and creation time (RFC 3339, as every driver answers it)
        // under `rexray.volume.`, the caller's fields under `rexray.`.
        let created_at = now_rfc3339();
        let iops = spec.iops.to_string();
        let mut meta: Vec<(String, &str)> = vec![(format!("{META_VOLUME}createdAt"), &created_at)];
        for (k, v) in [
            ("type", spec.volume_type.as_str()),
            ("iops", if spec.iops > 0 { iops.as_str() } else { "" }),
            ("availabilityZone", spec.availability_zone.as_str()),
        ] {
            if !v.is_empty() {
                meta.push((format!("{META_VOLUME}{k}"), v));
            }
        }
        for (k, v) in &spec.fields {
            meta.push((format!("{META_PREFIX}{k}"), v));
        }
        for (key, v) in &meta {
            if let Err(e) = self.rbd(&["image-meta", "set", &self.spec(name), key, v]) {
                let _ = self.rbd(&["rm", "--no-progress", &self.spec(name)]);
                return Err(e);
            }
        }
        tracing::info!(
            volume = name,
            pool = self.pool,
            size,
            "created an rbd image"
        );
        self.must_volume(&self.id_of(name))
    }

    fn remove(&self, id: &str, force: bool) -> Result<()> {
        let image = self.must_image(id)?;
        let v = self.must_volume(id)?;
        if let (Some(a), false) = (v.attachments.first(), force) {
            return Err(Error::in_use(format!(
                "volume {image} is attached to {}; detach it first, or remove it with force",
                a.instance_id.id
            )));
        }
        let open = self.watchers(image)?;
        if !open.is_empty() {
            return Err(Error::in_use(format!(
                "volume {image} is in use: the image is open by {} (a mapped device or rbd-fuse); detach it there first",
                open.join(", ")
            )));
        }
        for l in self.locks(image)? {
            self.unlock(image, &l)?;
        }
        self.rbd(&["rm", "--no-progress", &self.spec(image)])
            .map_err(|e| {
                if e.message().contains("snapshots") {
                    Error::in_use(format!(
                        "volume {image} has snapshots; remove them first (rexray snapshot rm)"
                    ))
                } else {
                    e
                }
            })?;
        Ok(())
    }

    fn attach(
        &self,
        id: &str,
        who: &InstanceId,
        force: bool,
        _next_device: Option<&str>,
    ) -> Result<Attached> {
        let image = self.must_image(id)?;
        if self.info_of(image)?.is_none() {
            return Err(Error::not_found(format!("volume {id} not found")));
        }
        let token = self.spec(image);
        let mine = format!("{LOCK_PREFIX}{}", who.id);
        let locks = self.locks(image)?;
        let (own, others): (Vec<_>, Vec<_>) = locks.into_iter().partition(|l| same(&l.id, &mine));
        if !others.is_empty() {
            let holder = self.holder_of(&others[0]).id;
            if !force {
                return Err(Error::in_use(format!(
                    "volume {image} is attached to {holder}; detach it there first, or attach with force (preempt) to take it over (the old holder is fenced)"
                )));
            }
            self.fence(image, &others)?;
            for l in &others {
                self.unlock(image, l)?;
            }
        }
        if own.is_empty() {
            self.rbd(&["lock", "add", &self.spec(image), &mine])
                .map_err(|e| {
                    if e.kind() == Kind::InUse {
                        Error::in_use(format!(
                            "volume {image} was attached by another instance at the same time; try again"
                        ))
                    } else {
                        e
                    }
                })?;
        }
        Ok(Attached {
            volume: self.must_volume(id)?,
            token,
        })
    }

    fn detach(&self, id: &str, who: &InstanceId, force: bool) -> Result<Volume> {
        let image = self.must_image(id)?;
        let mine = format!("{LOCK_PREFIX}{}", who.id);
        for l in self.locks(image)? {
            if !same(&l.id, &mine) && !force {
                return Err(Error::in_use(format!(
                    "volume {image} is attached to {}; detach it there, or with force",
                    self.holder_of(&l).id
                )));
            }
            self.unlock(image, &l)?;
        }
        self.must_volume(id)
    }

    fn resize(&self, id: &str, size_gib: u64) -> Result<u64> {
        let image = self.must_image(id)?;
        let size = format!("{size_gib}G");
        self.rbd(&[
            "resize",
            "--no-progress",
            "--size",
            &size,
            &self.spec(image),
        ])?;
        Ok(size_gib * GIB)
    }

    fn copy(
        &self,
        id: &str,
        new_name: &str,
        spec: &CreateSpec,
        intact: &dyn Fn() -> Result<()>,
        _prepare: Prepare<'_>,
    ) -> Result<Volume> {
        let image = self.must_image(id)?;
        let src = self.must_volume(id)?;
        self.check_new(new_name)?;
        self.rbd(&[
            "cp",
            "--no-progress",
            "--image-feature",
            "layering",
            &self.spec(image),
            &self.spec(new_name),
        ])?;
        if let Err(e) = intact() {
            let _ = self.rbd(&["rm", "--no-progress", &self.spec(new_name)]);
            return Err(e);
        }
        if spec.size > src.size {
            self.resize(&self.id_of(new_name), spec.size)?;
        }
        self.must_volume(&self.id_of(new_name))
    }

    fn snapshot(
        &self,
        id: &str,
        snap_name: &str,
        intact: &dyn Fn() -> Result<()>,
    ) -> Result<Snapshot> {
        let image = self.must_image(id)?;
        image_name("snapshot", snap_name)?;
        let v = self.must_volume(id)?;
        let spec = format!("{}@{snap_name}", self.spec(image));
        self.rbd(&["snap", "create", "--no-progress", &spec])?;
        if let Err(e) = intact() {
            let _ = self.rbd(&["snap", "rm", "--no-progress", &spec]);
            return Err(e);
        }
        Ok(Snapshot {
            name: snap_name.to_string(),
            id: self.snap_id(image, snap_name),
            start_time: now_rfc3339(),
            status: "completed".into(),
            volume_id: id.to_string(),
            volume_size: v.size,
            ..Default::default()
        })
    }

    fn snapshots(&self) -> Result<Vec<Snapshot>> {
        Ok(self
            .ls()?
            .into_iter()
            .filter_map(|e| {
                let snap = e.snapshot?;
                Some(Snapshot {
                    id: self.snap_id(&e.image, &snap),
                    name: snap,
                    status: "completed".into(),
                    volume_id: self.id_of(&e.image),
                    volume_size: e.size.div_ceil(GIB),
                    ..Default::default()
                })
            })
            .collect())
    }

    fn remove_snapshot(&self, snap_id: &str) -> Result<()> {
        let (image, snap) = self.snap_of(snap_id)?;
        let spec = format!("{}@{snap}", self.spec(image));
        self.rbd(&["snap", "rm", "--no-progress", &spec])
            .map(|_| ())
    }

    fn create_from_snapshot(
        &self,
        snap_id: &str,
        new_name: &str,
        spec: &CreateSpec,
        _prepare: Prepare<'_>,
    ) -> Result<Volume> {
        let (image, snap) = self.snap_of(snap_id)?;
        self.check_new(new_name)?;
        let from = format!("{}@{snap}", self.spec(image));
        self.rbd(&[
            "cp",
            "--no-progress",
            "--image-feature",
            "layering",
            &from,
            &self.spec(new_name),
        ])?;
        let v = self.must_volume(&self.id_of(new_name))?;
        if spec.size > v.size {
            self.resize(&v.id, spec.size)?;
            return self.must_volume(&v.id);
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn drv() -> RbdDriver {
        let ceph = Ceph::new("--conf /nonexistent/ceph.conf", Duration::from_secs(1)).unwrap();
        RbdDriver::new(ceph, "rbd", "").unwrap()
    }

    #[test]
    fn ids_are_pool_dot_image() {
        let d = drv();
        assert_eq!(d.id_of("v1"), "rbd.v1");
        assert_eq!(d.image_of("rbd.v1"), Some("v1"));
        assert_eq!(d.image_of("rbd.v1.x"), Some("v1.x"));
        assert_eq!(d.image_of("other.v1"), None);
        assert_eq!(d.image_of("rbd."), None);
        assert_eq!(d.snap_of("rbd.v1@s1").unwrap(), ("v1", "s1"));
        assert!(d.snap_of("rbd.v1").is_err());
        assert_eq!(d.info().driver, "rbd");
        assert!(RbdDriver::new(
            Ceph::new("", Duration::from_secs(1)).unwrap(),
            "bad/pool",
            ""
        )
        .is_err());
    }
}
