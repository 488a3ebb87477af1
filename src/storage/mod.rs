//! Storage drivers: the backends volumes live on. A driver creates,
//! lists, removes, attaches and detaches volumes; it never mounts.

pub mod r#loop;
pub mod loopdev;
pub mod vfs;

use crate::config::{keys, Config};
use crate::model::{CreateSpec, InstanceId, MountSource, Snapshot, Volume};
use crate::{Error, Result};
use std::path::Path;
use std::sync::Arc;

/// The workflow's step for a new volume's data before it is published
/// (a copy or a volume made from a snapshot): it is given a path of this
/// host where the new image is, unattached (a file or a block device),
/// and gives the filesystem in it a UUID of its own. An error means the
/// image must not be published.
pub type Prepare<'a> = &'a dyn Fn(&Path) -> Result<()>;

/// A storage backend.
pub trait StorageDriver: Send + Sync {
    /// Driver name (`loop`, `vfs`).
    fn name(&self) -> &str;
    /// Every volume, with attachments and attachment state.
    fn list(&self) -> Result<Vec<Volume>>;
    /// [`list`](Self::list) without what takes one more look at each
    /// volume's backing store (the loop driver's `allocated` field, a stat
    /// per image), for an answer that does not show it.
    fn list_without_usage(&self) -> Result<Vec<Volume>> {
        self.list()
    }
    /// One volume by id.
    fn inspect(&self, id: &str) -> Result<Option<Volume>>;
    /// Create a volume. The caller holds the name lock and has checked
    /// that the name is free.
    fn create(&self, name: &str, spec: &CreateSpec) -> Result<Volume>;
    /// Remove a volume (it must not be attached).
    fn remove(&self, id: &str) -> Result<()>;
    /// Attach the volume to this instance and return what to mount.
    /// Attaching an attached volume returns the same source. `force` takes
    /// it from another instance.
    fn attach(&self, id: &str, force: bool) -> Result<MountSource>;
    /// Detach from this instance. Detaching a detached volume succeeds;
    /// `force` detaches it from another instance too.
    fn detach(&self, id: &str, force: bool) -> Result<()>;
    /// Remove what killed writers left (temporary files no live process
    /// holds) and correct file modes: a full scan of the driver's
    /// directories, done at the service's start.
    fn tidy(&self) {}
    /// Whether the backend knows the volume has never been written (so it
    /// reads as zeros everywhere and cannot hold any signature). `false`
    /// means "not known", and the node probes the device.
    fn known_blank(&self, id: &str) -> bool {
        let _ = id;
        false
    }
    /// A note on the space behind a volume when it may be what made a
    /// write fail (the backing store is overcommitted), for error messages.
    fn space_note(&self, id: &str) -> Option<String> {
        let _ = id;
        None
    }
    /// Grow a volume to `size_gib`; returns the new size in bytes.
    fn resize(&self, id: &str, size_gib: u64) -> Result<u64> {
        let _ = (id, size_gib);
        Err(Error::unsupported(format!(
            "the {} driver cannot resize volumes",
            self.name()
        )))
    }
    /// Create volume `new_name` as a copy of volume `id`, sized by
    /// `spec.size` (never smaller than the source). The caller holds the
    /// source's lock and has made sure the source's filesystem is
    /// quiesced; `intact` is called once the data is copied and before
    /// the copy is published: an error there means the source did not
    /// stay quiesced, and nothing is published. Then `prepare` is called
    /// with the new image, before it is published (a driver that has no
    /// path of it on this host skips it: the copy keeps its source's
    /// filesystem UUID, and XFS mounts it with `nouuid`).
    fn copy(
        &self,
        id: &str,
        new_name: &str,
        spec: &CreateSpec,
        intact: &dyn Fn() -> Result<()>,
        prepare: Prepare<'_>,
    ) -> Result<Volume> {
        let _ = (id, new_name, spec, intact, prepare);
        Err(Error::unsupported(format!(
            "the {} driver cannot copy volumes (volumeName/volumeID)",
            self.name()
        )))
    }
    /// Take snapshot `snap_name` of volume `id` (same preconditions, and
    /// `intact`, as [`copy`](Self::copy)).
    fn snapshot(
        &self,
        id: &str,
        snap_name: &str,
        intact: &dyn Fn() -> Result<()>,
    ) -> Result<Snapshot> {
        let _ = (id, snap_name, intact);
        Err(Error::unsupported(format!(
            "the {} driver cannot take snapshots",
            self.name()
        )))
    }
    /// Every snapshot.
    fn snapshots(&self) -> Result<Vec<Snapshot>> {
        Ok(Vec::new())
    }
    /// Remove a snapshot.
    fn remove_snapshot(&self, snap_id: &str) -> Result<()> {
        let _ = snap_id;
        Err(Error::unsupported(format!(
            "the {} driver has no snapshots",
            self.name()
        )))
    }
    /// Create volume `new_name` from snapshot `snap_id`; `prepare` as
    /// for [`copy`](Self::copy). (Snapshots themselves are never mounted:
    /// they keep their source's filesystem UUID.)
    fn create_from_snapshot(
        &self,
        snap_id: &str,
        new_name: &str,
        spec: &CreateSpec,
        prepare: Prepare<'_>,
    ) -> Result<Volume> {
        let _ = (snap_id, new_name, spec, prepare);
        Err(Error::unsupported(format!(
            "the {} driver cannot create volumes from snapshots (snapshotName/snapshotID)",
            self.name()
        )))
    }
    /// Every volume without its attachments (state unknown, none listed):
    /// for callers that show names, sizes and fields only, so a driver
    /// need not ask the kernel or the backend about every volume.
    fn list_metadata(&self) -> Result<Arc<[Volume]>> {
        Ok(self.list()?.into())
    }
    /// [`lookup_name`](Self::lookup_name) without attachments, as
    /// [`list_metadata`](Self::list_metadata).
    fn lookup_metadata_name(&self, name: &str) -> Result<Option<Volume>> {
        self.lookup_name(name)
    }
    /// What [`list_metadata`](Self::list_metadata) would return, if the
    /// driver holds it in memory, already built, and a stat at most shows
    /// it is current; `None` otherwise, and also whenever answering could
    /// wait (another thread is reading the backend) or cost more than a
    /// few syscalls. Never blocks, so a server can answer from it without
    /// handing the request to a thread that may.
    fn cached_metadata(&self) -> Option<Arc<[Volume]>> {
        None
    }
    /// Find a volume by exact name (never by id: see
    /// [`crate::volume::VolumeRef`]), without listing every volume when
    /// the driver can do better.
    fn lookup_name(&self, name: &str) -> Result<Option<Volume>> {
        Ok(self.list()?.into_iter().find(|v| v.name == name))
    }
}

/// Refuse to name a new volume (or snapshot) after an existing one's id:
/// names and ids must never be ambiguous, or a request for the new name
/// could reach the other volume. `ids` yields `(id, name)` of the
/// existing ones; `what` is "volume" or "snapshot".
pub fn refuse_name_that_is_an_id<'a>(
    what: &str,
    name: &str,
    mut existing: impl Iterator<Item = (&'a str, &'a str)>,
) -> Result<()> {
    match existing.find(|(id, _)| *id == name) {
        Some((id, other)) => Err(Error::invalid(format!(
            "cannot create {what} {name}: {id} is the id of {what} {other}, and a name must never be another {what}'s id; choose another name"
        ))),
        None => Ok(()),
    }
}

/// A fresh id that `taken` does not refuse (an existing id or name):
/// drawn again until it is free, so an id never equals a name.
pub fn fresh_id(taken: impl Fn(&str) -> bool) -> Result<String> {
    fresh_id_from(new_id, taken)
}

fn fresh_id_from(
    mut draw: impl FnMut() -> Result<String>,
    taken: impl Fn(&str) -> bool,
) -> Result<String> {
    for _ in 0..64 {
        let id = draw()?;
        if !taken(&id) {
            return Ok(id);
        }
    }
    Err(Error::system(
        "could not draw a volume id that is not already an id or a name (64 tries)",
    ))
}

/// This instance's identity for a driver: the host name plus the state
/// directory, so two `REXRAY_HOME`s on one host are two instances.
pub fn instance_id(cfg: &Config, driver: &str) -> InstanceId {
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".into());
    InstanceId {
        id: format!("{host}:{}", cfg.dirs.lib.display()),
        driver: driver.to_string(),
        service: cfg.service().to_string(),
    }
}

/// The names of the drivers this build has.
pub const DRIVERS: &[&str] = &["loop", "vfs"];

/// Open the driver of the configured service.
pub fn open(cfg: &Config) -> Result<Box<dyn StorageDriver>> {
    let driver = cfg.driver_name();
    match driver.as_str() {
        "loop" => Ok(Box::new(r#loop::LoopDriver::open(
            &cfg.path(keys::LOOP_VOLUME_PATH),
            instance_id(cfg, "loop"),
            cfg.duration(keys::LOCK_TIMEOUT),
        )?
        .preallocating(cfg.boolean(keys::LOOP_PREALLOCATE)))),
        "vfs" => Ok(Box::new(vfs::VfsDriver::open(
            &cfg.path(keys::VFS_ROOT),
            instance_id(cfg, "vfs"),
        )?)),
        other => Err(Error::invalid(format!(
            "unknown service {:?} (driver {other:?}): available drivers are {}; declare services under libstorage.server.services",
            cfg.service(),
            DRIVERS.join(", ")
        ))),
    }
}

/// A fresh random volume id: 16 hex digits from the kernel's random pool.
pub fn new_id() -> Result<String> {
    let mut b = [0u8; 8];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| Error::from_io("reading /dev/urandom", &e))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// RFC 3339 time of now, to the second.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_id_is_never_a_taken_name() {
        let mut draws = ["00000000000000aa", "00000000000000bb", "00000000000000cc"].into_iter();
        let id = fresh_id_from(
            || Ok(draws.next().unwrap().to_string()),
            |id| id == "00000000000000aa" || id == "00000000000000bb",
        )
        .unwrap();
        assert_eq!(id, "00000000000000cc");
        assert!(fresh_id_from(|| Ok("x".into()), |_| true).is_err());
        let id = fresh_id(|_| false).unwrap();
        assert_eq!(id.len(), 16);
    }

    #[test]
    fn a_name_that_is_an_id_is_refused_naming_both() {
        let all = [("0123456789abcdef", "vol")];
        let e = refuse_name_that_is_an_id("volume", "0123456789abcdef", all.iter().copied())
            .unwrap_err();
        assert_eq!(e.kind(), crate::Kind::InvalidInput);
        assert!(
            e.message().contains("0123456789abcdef") && e.message().contains("volume vol"),
            "{e}"
        );
        refuse_name_that_is_an_id("volume", "vol2", all.iter().copied()).unwrap();
    }
}
