//! What flexrex must remember between calls because neither kubelet nor
//! the kernel repeats it: which volume a PV or pod volume name means
//! (detach gets only that name).
//!
//! ```text
//! <lib>/flex/names/<name key>.json   { pvOrVolumeName, volumeID, name }
//! ```
//!
//! Which volume a mounted path holds needs no record of its own: the
//! consumer `flex:<path>` is in the volume's mount record, and the kernel
//! shows the device behind the bind.

use crate::files::atomic;
use crate::{Error, Result};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What a PV or pod volume name refers to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NameRecord {
    /// kubelet's name for the volume.
    pub pv_or_volume_name: String,
    /// Volume id.
    #[serde(rename = "volumeID")]
    pub volume_id: String,
    /// Volume name.
    pub name: String,
}

/// The flexrex records under `<lib>/flex`.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// A file name for any string: safe characters stay, the rest become
/// `%XX`; over-long keys keep a readable prefix plus a hash of the whole.
/// The full key is stored in the record, so a hash collision reads as
/// "no record", never as someone else's record.
pub fn file_key(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, b) in s.bytes().enumerate() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.len() > 200 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in s.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        let mut cut = 120;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out = format!("{}~{h:016x}", &out[..cut]);
    }
    out
}

impl Store {
    /// The store of a state directory (created on first write).
    pub fn new(lib: &Path) -> Store {
        Store {
            root: lib.join("flex"),
        }
    }

    fn file(&self, kind: &str, key: &str) -> PathBuf {
        self.root.join(kind).join(format!("{}.json", file_key(key)))
    }

    fn load<T: DeserializeOwned>(&self, kind: &str, key: &str) -> Result<Option<T>> {
        let p = self.file(kind, key);
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
                Error::system(format!(
                    "the flexrex record {} is unreadable ({e}); check which volume it was for, then delete it",
                    p.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::from_io(format!("reading {}", p.display()), &e)),
        }
    }

    fn save<T: Serialize>(&self, kind: &str, key: &str, rec: &T) -> Result<()> {
        let dir = self.root.join(kind);
        {
            use crate::files::{own_dir, Link, PRIVATE_DIR};
            own_dir(&self.root, PRIVATE_DIR, Link::Refuse)?;
            own_dir(&dir, PRIVATE_DIR, Link::Refuse)?;
        }
        let bytes = serde_json::to_vec_pretty(rec).expect("record serialises");
        atomic::write(&self.file(kind, key), &bytes)
    }

    /// The volume a PV or pod volume name refers to.
    pub fn name(&self, name: &str) -> Result<Option<NameRecord>> {
        Ok(self
            .load::<NameRecord>("names", name)?
            .filter(|r| r.pv_or_volume_name == name))
    }

    /// Remember what a PV or pod volume name refers to.
    pub fn save_name(&self, rec: &NameRecord) -> Result<()> {
        if self.name(&rec.pv_or_volume_name)?.as_ref() == Some(rec) {
            return Ok(());
        }
        self.save("names", &rec.pv_or_volume_name, rec)
    }

    /// Forget a name.
    pub fn remove_name(&self, name: &str) -> Result<()> {
        atomic::remove(&self.file("names", name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn records_round_trip() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::new(t.path());
        let n = NameRecord {
            pv_or_volume_name: "pv1".into(),
            volume_id: "abc".into(),
            name: "vol1".into(),
        };
        s.save_name(&n).unwrap();
        assert_eq!(s.name("pv1").unwrap(), Some(n));
        s.remove_name("pv1").unwrap();
        assert_eq!(s.name("pv1").unwrap(), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]
        #[test]
        fn keys_are_safe_file_names(s in "\\PC{0,400}") {
            let k = file_key(&s);
            prop_assert!(!k.is_empty() || s.is_empty());
            prop_assert!(!k.contains('/') && !k.starts_with('.') && k.len() <= 240);
        }

        #[test]
        fn short_keys_are_distinct(a in "\\PC{0,40}", b in "\\PC{0,40}") {
            if a != b {
                prop_assert_ne!(file_key(&a), file_key(&b));
            }
        }
    }
}
