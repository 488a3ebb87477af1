//! Naming volumes: by name, by id, or (the operator's CLI) either, and
//! the metadata lookups that need no attachments.

use super::Volumes;
use crate::model::{InstanceId, Volume};
use crate::storage::controller::settle_states;
use crate::{Error, Result};

impl Volumes {
    /// Who this node is, for the driver.
    pub fn instance(&self) -> &InstanceId {
        self.exe.instance_id()
    }

    /// `v` with its attachment state as this node sees it (the
    /// controller lists holders; "attached" means held by this instance).
    pub(super) fn settled(&self, mut v: Volume) -> Volume {
        settle_states(std::iter::once(&mut v), Some(self.instance()));
        v
    }

    /// One volume by id, as this node sees it.
    pub(super) fn inspect(&self, id: &str) -> Result<Option<Volume>> {
        Ok(self.ctl.inspect(id)?.map(|v| self.settled(v)))
    }

    /// One volume by exact name, as this node sees it.
    pub(super) fn lookup_name(&self, name: &str) -> Result<Option<Volume>> {
        Ok(self.ctl.lookup_name(name)?.map(|v| self.settled(v)))
    }

    /// Every volume without attachments (see
    /// [`Controller::list_metadata`]): names, sizes and fields only.
    ///
    /// [`Controller::list_metadata`]: crate::storage::controller::Controller::list_metadata
    pub fn list_metadata(&self) -> Result<std::sync::Arc<[Volume]>> {
        self.ctl.list_metadata()
    }

    /// Whether the driver keeps [`list_metadata`](Self::list_metadata)
    /// in memory (the loop driver's catalog), so a front-end may answer
    /// one volume from the whole list.
    pub fn keeps_metadata(&self) -> bool {
        self.ctl.cache().is_some()
    }

    /// [`list_metadata`](Self::list_metadata) when the driver holds it in
    /// memory and current; never blocks (see
    /// [`MetadataCache::cached_metadata`]).
    ///
    /// [`MetadataCache::cached_metadata`]: crate::storage::controller::MetadataCache::cached_metadata
    pub fn cached_metadata(&self) -> Option<std::sync::Arc<[Volume]>> {
        self.ctl.cache()?.cached_metadata()
    }

    /// One volume by exact name, without attachments.
    pub fn lookup_metadata(&self, name: &str) -> Result<Option<Volume>> {
        self.ctl.lookup_metadata_name(name)
    }

    /// What the backend knows of `v`'s bytes (see
    /// [`Controller::content`]).
    ///
    /// [`Controller::content`]: crate::storage::controller::Controller::content
    pub fn content(&self, v: &Volume) -> crate::model::Content {
        self.ctl.content(&v.id)
    }

    /// The id of the volume whose mount record lists consumer `key`.
    pub fn volume_of_consumer(&self, key: &str) -> Result<Option<String>> {
        for id in self.state.mount_record_ids()? {
            // One unreadable record must not block every other consumer;
            // the volume it belongs to reports it when it is unmounted.
            match self.state.load_mount(&id) {
                Ok(Some(rec)) if rec.consumers.contains(key) => return Ok(Some(id)),
                Ok(_) => {}
                Err(e) => tracing::warn!("{e}"),
            }
        }
        Ok(None)
    }

    /// Every volume.
    pub fn list(&self) -> Result<Vec<Volume>> {
        self.sorted(self.ctl.list()?)
    }

    /// [`list`](Self::list) without what takes one more look at each
    /// volume's backing store (see [`Controller::list_without_usage`]).
    ///
    /// [`Controller::list_without_usage`]: crate::storage::controller::Controller::list_without_usage
    pub fn list_without_usage(&self) -> Result<Vec<Volume>> {
        self.sorted(self.ctl.list_without_usage()?)
    }

    fn sorted(&self, mut v: Vec<Volume>) -> Result<Vec<Volume>> {
        settle_states(v.iter_mut(), Some(self.instance()));
        v.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        Ok(v)
    }

    /// Find a volume as `r` says: by exact name, exact id, or (the
    /// operator's CLI) either — refused when the argument is one volume's
    /// id and another's name.
    pub fn lookup(&self, r: VolumeRef<'_>) -> Result<Option<Volume>> {
        let arg = r.arg();
        if arg.is_empty() || arg.len() > crate::input::MAX_NAME_LEN || arg.contains(['/', '\0']) {
            crate::input::volume_name(arg)?;
        }
        match r {
            VolumeRef::Name(n) => self.lookup_name(n),
            VolumeRef::Id(i) => self.inspect(i),
            VolumeRef::IdOrName(a) => {
                let by_id = self.inspect(a)?;
                let by_name = self.lookup_name(a)?;
                match (by_id, by_name) {
                    (Some(i), Some(n)) if i.id != n.id => {
                        Err(ambiguous("volume", a, &i.name, &n.id))
                    }
                    (Some(v), _) | (None, Some(v)) => Ok(Some(v)),
                    (None, None) => Ok(None),
                }
            }
        }
    }

    /// Like [`lookup`](Self::lookup), but a missing volume is an error.
    pub fn find(&self, r: VolumeRef<'_>) -> Result<Volume> {
        if let Some(v) = self.lookup(r)? {
            return Ok(v);
        }
        let q = crate::input::quote(r.arg());
        // A name that is some volume's id: say so rather than act on it.
        if let VolumeRef::Name(n) = r {
            if let Ok(Some(v)) = self.ctl.inspect(n) {
                return Err(Error::not_found(format!(
                    "volume {q} not found: volumes are named here by name, and {n} is the id of volume {}; use that name",
                    v.name
                )));
            }
        }
        Err(Error::not_found(format!(
            "volume {q} not found (see `rexray volume ls`)"
        )))
    }
}

/// How a request names a volume. Docker, flexrex and dvdcli requests
/// carry names and match names only; the operator's CLI takes an id or a
/// name. Names and ids never overlap for volumes created by this release
/// (a name that is another volume's id is refused at create, and a new id
/// is never a name); a pair made earlier is refused by
/// [`IdOrName`](Self::IdOrName) rather than guessed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeRef<'a> {
    /// Exact name only.
    Name(&'a str),
    /// Exact id only (a volume already found, a recorded id).
    Id(&'a str),
    /// Exact id or exact name, refused when it is both, of two volumes.
    IdOrName(&'a str),
}

/// Snapshots are named the same ways as volumes.
pub type SnapshotRef<'a> = VolumeRef<'a>;

impl<'a> VolumeRef<'a> {
    /// The text given.
    pub fn arg(&self) -> &'a str {
        match *self {
            VolumeRef::Name(s) | VolumeRef::Id(s) | VolumeRef::IdOrName(s) => s,
        }
    }

    /// An operator's argument: `id:<ID>` or `name:<NAME>` say which (names
    /// and ids have no `:`), anything else is an id or a name.
    pub fn operator(arg: &'a str) -> VolumeRef<'a> {
        if let Some(id) = arg.strip_prefix("id:") {
            VolumeRef::Id(id)
        } else if let Some(name) = arg.strip_prefix("name:") {
            VolumeRef::Name(name)
        } else {
            VolumeRef::IdOrName(arg)
        }
    }
}

impl std::fmt::Display for VolumeRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.arg())
    }
}

/// The refusal of an argument that is the id of `id_owner` and the name
/// of the volume (or snapshot) with id `named_id`.
pub(super) fn ambiguous(what: &str, arg: &str, id_owner: &str, named_id: &str) -> Error {
    Error::invalid(format!(
        "{what} argument {q} is ambiguous: it is the id of {what} {id_owner} and the name of another {what} (id {named_id}); \
         refusing to guess. Say which: `id:{arg}` for {what} {id_owner}, `name:{arg}` for the {what} named {arg}",
        q = crate::input::quote(arg),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::keys;
    use crate::model::CreateOptions;
    use crate::volume::tests::open_at as open;
    use crate::volume::{CopySource, Created};
    use crate::Kind;

    fn new(vols: &Volumes, name: &str) -> Volume {
        match vols.create(name, &CreateOptions::default()).unwrap() {
            Created::New(v) => v,
            other => panic!("{other:?}"),
        }
    }

    /// Rename, behind the workflows' back, as a previous release allowed.
    fn rename_in_catalog(vols: &Volumes, from: &str, to: &str) {
        let p = vols
            .config()
            .path(keys::LOOP_VOLUME_PATH)
            .join("catalog.db");
        let c = rusqlite::Connection::open(p).unwrap();
        let n: usize = ["volumes", "snapshots"]
            .iter()
            .map(|t| {
                c.execute(
                    &format!("UPDATE {t} SET name = ?2 WHERE name = ?1"),
                    [from, to],
                )
                .unwrap()
            })
            .sum();
        assert_eq!(n, 1, "{from}");
    }

    #[test]
    fn a_name_that_is_another_volumes_id_is_refused_at_create() {
        let t = tempfile::tempdir().unwrap();
        let vols = open(t.path());
        let v = new(&vols, "vol");
        let e = vols.create(&v.id, &CreateOptions::default()).unwrap_err();
        assert_eq!(e.kind(), Kind::InvalidInput);
        assert!(
            e.message().contains(&v.id) && e.message().contains("volume vol"),
            "{e}"
        );
        let from = CopySource::VolumeName("vol".into());
        let e = vols
            .create_from(&v.id, &CreateOptions::default(), &from)
            .unwrap_err();
        assert_eq!(e.kind(), Kind::InvalidInput, "{e}");
        assert_eq!(vols.list().unwrap().len(), 1);
    }

    #[test]
    fn requests_match_names_only_and_the_cli_refuses_ambiguity() {
        let t = tempfile::tempdir().unwrap();
        let vols = open(t.path());
        let v = new(&vols, "vol");
        // By name only: an id is not a name.
        assert!(vols.lookup(VolumeRef::Name(&v.id)).unwrap().is_none());
        assert_eq!(vols.find(VolumeRef::Name("vol")).unwrap().id, v.id);
        assert_eq!(vols.find(VolumeRef::Id(&v.id)).unwrap().name, "vol");
        assert!(vols.lookup(VolumeRef::Id("vol")).unwrap().is_none());
        assert_eq!(vols.find(VolumeRef::IdOrName(&v.id)).unwrap().name, "vol");
        assert_eq!(vols.find(VolumeRef::IdOrName("vol")).unwrap().id, v.id);

        // A pair left by a previous release: "other" named after vol's id.
        let other = new(&vols, "other");
        rename_in_catalog(&vols, "other", &v.id);
        assert_eq!(vols.find(VolumeRef::Name(&v.id)).unwrap().id, other.id);
        let e = vols.find(VolumeRef::IdOrName(&v.id)).unwrap_err();
        assert_eq!(e.kind(), Kind::InvalidInput);
        let m = e.message();
        assert!(
            m.contains("ambiguous") && m.contains("volume vol") && m.contains(&other.id),
            "{m}"
        );
        assert!(vols.remove(VolumeRef::IdOrName(&v.id)).is_err());
        assert_eq!(vols.list().unwrap().len(), 2, "nothing was removed");
        // The operator says which.
        assert_eq!(
            vols.find(VolumeRef::operator(&format!("id:{}", v.id)))
                .unwrap()
                .name,
            "vol"
        );
        assert_eq!(
            vols.find(VolumeRef::operator(&format!("name:{}", v.id)))
                .unwrap()
                .id,
            other.id
        );
        vols.remove(VolumeRef::Name(&v.id)).unwrap();
        assert_eq!(vols.find(VolumeRef::IdOrName(&v.id)).unwrap().name, "vol");
    }

    #[test]
    fn snapshots_follow_the_same_rules() {
        let t = tempfile::tempdir().unwrap();
        let vols = open(t.path());
        new(&vols, "vol");
        let s1 = vols.snapshot(VolumeRef::Name("vol"), "s1").unwrap();
        let e = vols.snapshot(VolumeRef::Name("vol"), &s1.id).unwrap_err();
        assert_eq!(e.kind(), Kind::InvalidInput, "{e}");
        let s2 = vols.snapshot(VolumeRef::Name("vol"), "s2").unwrap();
        rename_in_catalog(&vols, "s2", &s1.id);
        let e = vols
            .remove_snapshot(SnapshotRef::IdOrName(&s1.id))
            .unwrap_err();
        assert!(
            e.message().contains("ambiguous") && e.message().contains("s1"),
            "{e}"
        );
        assert_eq!(vols.snapshots().unwrap().len(), 2);
        assert_eq!(
            vols.remove_snapshot(SnapshotRef::Name(&s1.id)).unwrap().id,
            s2.id
        );
        assert_eq!(
            vols.remove_snapshot(SnapshotRef::IdOrName(&s1.id))
                .unwrap()
                .name,
            "s1"
        );
    }
}
