//! Copies and snapshots of volume images: reflinks (FICLONE) where the
//! filesystem under volumePath shares extents, else sparse copies that
//! skip holes; each copy is made under a temporary name and published
//! (claimed, renamed, marked ready) only once complete.

use super::kernel_loops;
use super::{catalog, new_id, now_rfc3339, Kind, LoopDriver, Record, SnapRecord, GIB};
use crate::error::IoContext;
use crate::model::{CreateSpec, Snapshot, Volume};
use crate::state::{atomic, FileLock};
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;

nix::ioctl_write_int!(ficlone, 0x94, 9);

impl LoopDriver {
    /// Publish the finished copy `tmp` as a new volume or snapshot named
    /// `name`: claim the name (the row made by `insert`), move the copy to
    /// its image path, mark the row ready. Every failure undoes what was
    /// done — the copy, the image and the claim go — so nothing half-made
    /// is ever listed. Returns the id and the row's lock.
    pub(super) fn publish_copy(
        &self,
        kind: Kind,
        name: &str,
        tmp: &Path,
        insert: impl Fn(&rusqlite::Transaction<'_>, &str) -> rusqlite::Result<()>,
        after_rename: &str,
    ) -> Result<(String, FileLock)> {
        let (id, lock) = self.claim(kind, name, insert).inspect_err(|_| {
            let _ = std::fs::remove_file(tmp);
        })?;
        let img = match kind {
            Kind::Volume => self.image(&id),
            Kind::Snapshot => self.snap_image(&id),
        };
        if let Err(e) = std::fs::rename(tmp, &img) {
            let _ = std::fs::remove_file(tmp);
            self.unclaim(kind, &id, lock);
            return Err(Error::from_io(format!("renaming {}", tmp.display()), &e));
        }
        let _ = after_rename; // a failpoint name, unused without the feature
        fail::fail_point!(after_rename, |_| crate::crash_here());
        if let Err(e) = self.publish(kind, &id, name) {
            let _ = std::fs::remove_file(&img);
            self.unclaim(kind, &id, lock);
            return Err(e);
        }
        Ok((id, lock))
    }

    /// Copy `src` into a new volume image sized `bytes`, then record it
    /// under `name`. The copy goes to a temporary name first: a process
    /// killed meanwhile leaves a temporary file for the sweep, never a
    /// published one.
    fn create_copy(
        &self,
        src: &Path,
        name: &str,
        spec: &CreateSpec,
        fields: BTreeMap<String, String>,
        intact: &dyn Fn() -> Result<()>,
        prepare: crate::storage::Prepare<'_>,
    ) -> Result<Volume> {
        crate::input::volume_name(name)?;
        if spec.encrypted {
            return Err(Error::unsupported(
                "the loop driver cannot encrypt volumes: create it without the encrypted option",
            ));
        }
        // What killed copies left (their writers' flocks are gone).
        crate::files::sweep_temporaries(&self.root);
        let tmp_id = new_id()?;
        let tmp = self.root.join(format!("{tmp_id}.copying"));
        // Whether it can be made, before anything is copied.
        self.check_room(name, spec.size, &tmp)?;
        // Held until the copy is published: a sweep leaves it alone.
        let (how, tmp_file) = clone_file(src, &tmp)
            .map_err(|e| e.context(format!("creating volume {name} as a copy")))?;
        fail::fail_point!("loop::copy-after-clone", |_| crate::crash_here());
        if let Err(e) = intact() {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        if let Err(e) = prepare(&tmp) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        fail::fail_point!("loop::copy-after-prepare", |_| crate::crash_here());
        let bytes = spec
            .size
            .checked_mul(GIB)
            .ok_or_else(|| Error::invalid(format!("size {} GiB is too large", spec.size)))?;
        let grow = (|| {
            if self.preallocate {
                self.allocate(&tmp_file, &tmp, name, bytes)?;
            }
            let sized = || -> std::io::Result<()> {
                if tmp_file.metadata()?.len() < bytes {
                    tmp_file.set_len(bytes)?;
                }
                tmp_file.sync_all()
            };
            sized().map_err(|e| Error::from_io(format!("sizing {}", tmp.display()), &e))
        })();
        if let Err(e) = grow {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let created_at = now_rfc3339();
        let rec_of = |id: &str| Record {
            id: id.to_string(),
            name: name.to_string(),
            size: spec.size,
            volume_type: spec.volume_type.clone(),
            iops: spec.iops,
            availability_zone: spec.availability_zone.clone(),
            created_at: created_at.clone(),
            fields: fields.clone(),
        };
        let (id, lock) = self.publish_copy(
            Kind::Volume,
            name,
            &tmp,
            |tx, id| catalog::insert_volume(tx, &rec_of(id), "creating"),
            "loop::copy-after-rename",
        )?;
        drop(lock);
        let rec = rec_of(&id);
        tracing::info!(volume = name, source = %src.display(), how, "created a volume from a copy");
        self.warn_overcommit(&rec, "created");
        Ok(self.to_volume(rec, &kernel_loops()))
    }

    pub(super) fn copy_volume(
        &self,
        id: &str,
        new_name: &str,
        spec: &CreateSpec,
        intact: &dyn Fn() -> Result<()>,
        prepare: crate::storage::Prepare<'_>,
    ) -> Result<Volume> {
        let src = self.record(id)?;
        if spec.size < src.size {
            return Err(Error::invalid(format!(
                "a copy of volume {} must be at least its size, {} GiB",
                src.name, src.size
            )));
        }
        let mut fields = src.fields.clone();
        // A copy holds its source's filesystem: an fsType asked for it
        // would record what it is not.
        fields.extend(
            spec.fields
                .iter()
                .filter(|(k, _)| k.as_str() != "fsType")
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        fields.insert("copiedFrom".into(), src.id.clone());
        self.create_copy(&self.image(id), new_name, spec, fields, intact, prepare)
    }

    pub(super) fn snapshot_volume(
        &self,
        id: &str,
        snap_name: &str,
        intact: &dyn Fn() -> Result<()>,
    ) -> Result<Snapshot> {
        crate::input::name_of("snapshot", snap_name)?;
        let src = self.record(id)?;
        let dir = self.snap_dir();
        crate::files::own_dir(&dir, crate::files::PRIVATE_DIR, crate::files::Link::Refuse)?;
        crate::files::sweep_temporaries(&dir);
        let tmp_id = new_id()?;
        let tmp = dir.join(format!("{tmp_id}.copying"));
        let (_, _tmp_lock) = clone_file(&self.image(id), &tmp)?;
        fail::fail_point!("loop::snapshot-after-clone", |_| crate::crash_here());
        if let Err(e) = intact() {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let created_at = now_rfc3339();
        let rec_of = |sid: &str| SnapRecord {
            id: sid.to_string(),
            name: snap_name.to_string(),
            volume_id: src.id.clone(),
            volume_size: src.size,
            created_at: created_at.clone(),
            fields: src
                .fields
                .iter()
                .filter(|(k, _)| k.as_str() == "fsType")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        let (sid, lock) = self.publish_copy(
            Kind::Snapshot,
            snap_name,
            &tmp,
            |tx, sid| catalog::insert_snapshot(tx, &rec_of(sid), "creating"),
            "loop::snapshot-after-rename",
        )?;
        lock.remove_file();
        Ok(rec_of(&sid).to_snapshot())
    }

    pub(super) fn list_snapshots(&self) -> Result<Vec<Snapshot>> {
        Ok(self
            .catalog
            .snapshots()?
            .iter()
            .map(SnapRecord::to_snapshot)
            .collect())
    }

    pub(super) fn remove_snapshot_image(&self, snap_id: &str) -> Result<()> {
        crate::input::volume_id(snap_id)?;
        let lock = FileLock::acquire(
            &self.row_lock_path(Kind::Snapshot, snap_id),
            self.lock_timeout,
            &format!("snapshot {snap_id}"),
        )?;
        let step = format!("removing snapshot {snap_id}");
        let marked = self.mark_removing("snapshots", snap_id, &step, &self.snap_image(snap_id))?;
        if !marked {
            return Err(Error::not_found(format!("snapshot {snap_id} not found")));
        }
        atomic::remove(&self.snap_image(snap_id))?;
        self.catalog.write(&step, |tx| {
            catalog::delete(tx, "snapshots", snap_id).map_err(self.catalog.sql(&step))
        })?;
        lock.remove_file();
        Ok(())
    }

    pub(super) fn restore_snapshot(
        &self,
        snap_id: &str,
        new_name: &str,
        spec: &CreateSpec,
        prepare: crate::storage::Prepare<'_>,
    ) -> Result<Volume> {
        crate::input::volume_id(snap_id)?;
        let snap = self
            .catalog
            .snapshot(snap_id)?
            .ok_or_else(|| Error::not_found(format!("snapshot {snap_id} not found")))?;
        if spec.size < snap.volume_size {
            return Err(Error::invalid(format!(
                "a volume from snapshot {} must be at least {} GiB",
                snap.name, snap.volume_size
            )));
        }
        let mut fields = snap.fields.clone();
        fields.extend(spec.fields.clone());
        fields.insert("snapshotID".into(), snap.id.clone());
        self.create_copy(
            &self.snap_image(snap_id),
            new_name,
            spec,
            fields,
            &|| Ok(()),
            prepare,
        )
    }
}

/// Copy `src` to the new file `dst`: a reflink when the filesystem can
/// share extents, else a sparse copy that writes only the data regions.
/// Returns which one it did and `dst` open and flocked, so that a sweep
/// of files crashed copies left behind can tell a live copy from a dead one.
fn clone_file(src: &Path, dst: &Path) -> Result<(&'static str, std::fs::File)> {
    use std::os::fd::AsRawFd;
    let from = std::fs::File::open(src).ctx(|| format!("opening {}", src.display()))?;
    // New (never through a link), 0600 and flocked while the copy lives.
    let to = crate::files::create_locked(dst, crate::files::PRIVATE_FILE, "copy")?;
    let result = (|| {
        // SAFETY: both descriptors are open for the duration of the call.
        let how = if unsafe { ficlone(to.as_raw_fd(), from.as_raw_fd() as _) }.is_ok() {
            "reflink"
        } else {
            sparse_copy(&from, &to)?;
            "sparse copy"
        };
        to.sync_all()?;
        Ok(how)
    })();
    let result = result.map(|how| (how, to));
    result.map_err(|e: std::io::Error| {
        let _ = std::fs::remove_file(dst);
        Error::from_io(
            format!("copying {} to {}", src.display(), dst.display()),
            &e,
        )
    })
}

/// Copy the data regions of `from` (found with SEEK_DATA/SEEK_HOLE) and
/// leave holes, and all-zero blocks, as holes.
fn sparse_copy(from: &std::fs::File, to: &std::fs::File) -> std::io::Result<()> {
    use nix::unistd::{lseek, Whence};
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;
    let len = from.metadata()?.len();
    to.set_len(len)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut pos: u64 = 0;
    while pos < len {
        let start = match lseek(from.as_raw_fd(), pos as i64, Whence::SeekData) {
            Ok(o) => o as u64,
            Err(nix::errno::Errno::ENXIO) => break,
            // No hole support: treat everything as data.
            Err(nix::errno::Errno::EINVAL) => pos,
            Err(e) => return Err(e.into()),
        };
        let end = match lseek(from.as_raw_fd(), start as i64, Whence::SeekHole) {
            Ok(o) => o as u64,
            Err(_) => len,
        };
        let mut off = start;
        while off < end {
            let n = ((end - off) as usize).min(buf.len());
            from.read_exact_at(&mut buf[..n], off)?;
            if buf[..n].iter().any(|&b| b != 0) {
                to.write_all_at(&buf[..n], off)?;
            }
            off += n as u64;
        }
        pos = end.max(start + 1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use super::*;
    use std::os::unix::fs::{FileExt, MetadataExt};

    #[test]
    fn copies_keep_data_and_holes() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("a.img");
        let f = std::fs::File::create(&src).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(b"head", 0).unwrap();
        f.write_all_at(b"middle", 40 << 20).unwrap();
        f.write_all_at(&[0u8; 1 << 20], 50 << 20).unwrap();
        drop(f);
        let dst = t.path().join("b.img");
        clone_file(&src, &dst).unwrap();
        assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&dst).unwrap());
        // Only the two data blocks (and at most a few more) are allocated.
        let m = std::fs::metadata(&dst).unwrap();
        assert_eq!(m.len(), 64 << 20);
        assert!(
            m.blocks() * 512 < 4 << 20,
            "{} bytes allocated",
            m.blocks() * 512
        );
        // An existing destination is never overwritten.
        assert!(clone_file(&src, &dst).is_err());
    }

    #[test]
    fn snapshots_and_copies_in_the_catalog() {
        let t = tempfile::tempdir().unwrap();
        let d = LoopDriver::open(t.path(), "loop", Duration::from_secs(5)).unwrap();
        let spec = CreateSpec {
            size: 1,
            ..Default::default()
        };
        let v = d.create("src", &spec).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(d.image(&v.id))
            .unwrap()
            .write_all_at(b"data", 4096)
            .unwrap();
        let s = d.snapshot(&v.id, "snap", &|| Ok(())).unwrap();
        assert_eq!(s.volume_id, v.id);
        assert!(
            d.snapshot(&v.id, "snap", &|| Ok(())).is_err(),
            "names are unique"
        );
        let torn = d.snapshot(&v.id, "torn", &|| Err(Error::system("torn")));
        assert_eq!(torn.unwrap_err().message(), "torn");
        assert!(d.snapshots().unwrap().iter().all(|s| s.name != "torn"));
        let small = CreateSpec {
            size: 0,
            ..Default::default()
        };
        assert!(d
            .create_from_snapshot(&s.id, "tiny", &small, &|_| Ok(()))
            .is_err());
        let spec2 = CreateSpec {
            size: 2,
            ..Default::default()
        };
        let c = d
            .create_from_snapshot(&s.id, "restored", &spec2, &|_| Ok(()))
            .unwrap();
        assert_eq!(c.size, 2);
        let mut buf = [0u8; 4];
        std::fs::File::open(d.image(&c.id))
            .unwrap()
            .read_exact_at(&mut buf, 4096)
            .unwrap();
        assert_eq!(&buf, b"data");
        let k = d
            .copy(&v.id, "copy", &spec, &|| Ok(()), &|_| Ok(()))
            .unwrap();
        assert_eq!(k.fields.get("copiedFrom"), Some(&v.id));
        assert!(
            d.copy(&v.id, "copy", &spec, &|| Ok(()), &|_| Ok(()))
                .is_err(),
            "name taken"
        );
        let torn = d.copy(
            &v.id,
            "torn",
            &spec,
            &|| Err(Error::system("torn")),
            &|_| Ok(()),
        );
        assert_eq!(torn.unwrap_err().message(), "torn");
        assert!(d.list().unwrap().iter().all(|v| v.name != "torn"));
        // The image is prepared before it is published: a failed step
        // publishes nothing and leaves nothing behind.
        let seen = std::cell::RefCell::new(None);
        let unprepared = d.copy(&v.id, "unprepared", &spec, &|| Ok(()), &|img| {
            *seen.borrow_mut() = Some(img.to_path_buf());
            Err(Error::system("prepare"))
        });
        assert_eq!(unprepared.unwrap_err().message(), "prepare");
        assert!(d.list().unwrap().iter().all(|v| v.name != "unprepared"));
        let img = seen.into_inner().expect("prepare was called");
        assert!(img.to_string_lossy().ends_with(".copying"), "{img:?}");
        assert!(!img.exists());
        assert_eq!(d.lookup_name("copy").unwrap().unwrap().id, k.id);
        assert_eq!(d.inspect(&k.id).unwrap().unwrap().name, "copy");
        assert!(d.lookup_name(&k.id).unwrap().is_none(), "names only");
        assert!(d.lookup_name("nope").unwrap().is_none());
        assert_eq!(d.list().unwrap().len(), 3);
        d.remove_snapshot(&s.id).unwrap();
        assert!(d.snapshots().unwrap().is_empty());
        assert!(!d.snap_image(&s.id).exists());
    }
}
