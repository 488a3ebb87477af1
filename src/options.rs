//! The one parser for volume options, whichever front-end they come in by:
//! Docker's create `Opts`, dvdcli's `--volumeopts`, the CLI's flags. Each
//! front-end says how it spells them (a [`Spelling`]: the keys it accepts,
//! whether case matters, how it names a key in a message); the rules are
//! the same for all:
//!
//! - a key not in the front-end's list is refused, naming it and listing
//!   the accepted ones;
//! - a key given twice (in any case, where case does not matter) is refused,
//!   naming it: which value was meant is a guess;
//! - two spellings of one option (`fsType` and `newFsType`) are refused
//!   together, unless the front-end ranks one above the other (Docker's
//!   `type` over `volumeType`, as in the original);
//! - at most one copy source (`volumeName`, `volumeID`, `snapshotName`,
//!   `snapshotID`);
//! - values are checked the same way everywhere: `invalid FIELD "VALUE":
//!   why`, FIELD being the key as the caller typed it, in the front-end's
//!   words (`option size`, `--volumeopts size`, `--size`).

use crate::input::quote;
use crate::model::{CreateOptions, FsType};
use crate::volume::CopySource;
use crate::{Error, Result};

/// What an option sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opt {
    /// Size in GiB.
    Size,
    /// IOPS.
    Iops,
    /// Volume type.
    VolumeType,
    /// Availability zone.
    AvailabilityZone,
    /// Filesystem to make on a blank volume.
    FsType,
    /// Encrypt the volume.
    Encrypted,
    /// Format over an existing filesystem (where the front-end allows).
    OverwriteFs,
    /// Copy from a volume, by name.
    FromVolumeName,
    /// Copy from a volume, by id.
    FromVolumeId,
    /// Copy from a snapshot, by name.
    FromSnapshotName,
    /// Copy from a snapshot, by id.
    FromSnapshotId,
}

/// One accepted key: its spelling, what it sets, and its rank among the
/// spellings of the same option (a higher rank wins; equal ranks given
/// together are refused).
#[derive(Debug, Clone, Copy)]
pub struct Key {
    /// The key as the front-end documents it.
    pub name: &'static str,
    /// What it sets.
    pub opt: Opt,
    /// Rank among spellings of the same option.
    pub rank: u8,
}

const fn key(name: &'static str, opt: Opt) -> Key {
    Key { name, opt, rank: 0 }
}

/// How a front-end spells options.
#[derive(Debug, Clone, Copy)]
pub struct Spelling {
    /// The keys accepted.
    pub keys: &'static [Key],
    /// Whether `SIZE` is `size`.
    pub fold_case: bool,
    /// How a key is named in a message: `{}` is replaced by the key.
    pub field: &'static str,
    /// The refusal of an unknown key: `{key}` is the quoted key, `{keys}`
    /// the accepted ones.
    pub unknown: &'static str,
    /// The refusal of a repeated key: `{key}` is the quoted key.
    pub twice: &'static str,
}

/// Docker's `docker volume create -o KEY=VALUE` (and the plugin API's
/// `Opts`): case-insensitive, as Go decodes them.
pub const DOCKER: Spelling = Spelling {
    keys: &[
        key("size", Opt::Size),
        key("iops", Opt::Iops),
        key("volumeType", Opt::VolumeType),
        Key {
            name: "type",
            opt: Opt::VolumeType,
            rank: 1,
        },
        key("availabilityZone", Opt::AvailabilityZone),
        key("volumeName", Opt::FromVolumeName),
        key("volumeID", Opt::FromVolumeId),
        key("snapshotName", Opt::FromSnapshotName),
        key("snapshotID", Opt::FromSnapshotId),
        key("fsType", Opt::FsType),
        key("newFsType", Opt::FsType),
        key("encrypted", Opt::Encrypted),
        key("overwriteFs", Opt::OverwriteFs),
    ],
    fold_case: true,
    field: "option {}",
    unknown: "unknown option {key}: valid options are {keys} (case-insensitive)",
    twice: "option {key} is given twice: give each key once",
};

/// dvdcli's `--volumeopts` for the rexray driver: the keys
/// mesos-module-dvdi documents, case-insensitive.
pub const DVDCLI: Spelling = Spelling {
    keys: &[
        key("size", Opt::Size),
        key("iops", Opt::Iops),
        key("volumetype", Opt::VolumeType),
        key("newfstype", Opt::FsType),
        key("overwritefs", Opt::OverwriteFs),
    ],
    fold_case: true,
    field: "--volumeopts {}",
    unknown: "unknown --volumeopts key {key}: the rexray driver knows {keys}",
    twice: "--volumeopts key {key} is given twice: give each key once",
};

/// A CSI CreateVolume's `parameters` (a StorageClass's): the create
/// options Docker users know, case-insensitive. The copy source comes in
/// the request's content source instead, and the keys Kubernetes reserves
/// (`csi.storage.k8s.io/…`) are dropped before parsing.
pub const CSI: Spelling = Spelling {
    keys: &[
        key("size", Opt::Size),
        key("iops", Opt::Iops),
        key("volumeType", Opt::VolumeType),
        Key {
            name: "type",
            opt: Opt::VolumeType,
            rank: 1,
        },
        key("availabilityZone", Opt::AvailabilityZone),
        key("fsType", Opt::FsType),
        key("encrypted", Opt::Encrypted),
    ],
    fold_case: true,
    field: "parameter {}",
    unknown: "unknown parameter {key}: valid parameters are {keys} (case-insensitive)",
    twice: "parameter {key} is given twice: give each key once",
};

/// `rexray volume create`'s flags (the argument parser has already
/// refused unknown and repeated flags).
pub const CLI: Spelling = Spelling {
    keys: &[
        key("size", Opt::Size),
        key("iops", Opt::Iops),
        key("volumeType", Opt::VolumeType),
        key("availabilityZone", Opt::AvailabilityZone),
        key("fsType", Opt::FsType),
        key("encrypted", Opt::Encrypted),
        key("overwriteFS", Opt::OverwriteFs),
    ],
    fold_case: false,
    field: "--{}",
    unknown: "unknown flag {key}: valid flags are {keys}",
    twice: "flag {key} is given twice: give it once",
};

/// Whether two keys are the same key: equal, or equal but for case when
/// case does not matter.
pub fn same_key(a: &str, b: &str, fold_case: bool) -> bool {
    if fold_case {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

/// Parsed options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    /// What to create a volume with.
    pub create: CreateOptions,
    /// Copy from a volume or a snapshot.
    pub source: Option<CopySource>,
    /// `overwriteFs`: format over an existing filesystem, where the
    /// front-end honours it.
    pub overwrite_fs: bool,
}

impl Spelling {
    /// The accepted keys, for messages.
    pub fn key_list(&self) -> String {
        self.keys
            .iter()
            .map(|k| k.name)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The accepted key `typed` spells, if any.
    pub fn key(&self, typed: &str) -> Option<&'static Key> {
        self.keys
            .iter()
            .find(|c| same_key(c.name, typed.trim(), self.fold_case))
    }

    /// The refusal of an unknown key, naming it and the accepted ones.
    pub fn unknown_key(&self, typed: &str) -> Error {
        Error::invalid(
            self.unknown
                .replace("{key}", &quote(typed))
                .replace("{keys}", &self.key_list()),
        )
    }

    fn field(&self, typed: &str) -> String {
        self.field.replace("{}", typed)
    }

    /// Check `(key, value)` pairs, in the order given.
    pub fn parse(&self, pairs: &[(String, String)]) -> Result<Parsed> {
        // (key as typed, value, its Key)
        let mut given: Vec<(&str, &str, Key)> = Vec::new();
        for (i, (k, v)) in pairs.iter().enumerate() {
            // Matched without surrounding blanks; named as given.
            let typed = k.trim();
            if pairs[..i]
                .iter()
                .any(|(o, _)| same_key(o.trim(), typed, self.fold_case))
            {
                return Err(Error::invalid(self.twice.replace("{key}", &quote(k))));
            }
            let Some(known) = self.key(typed) else {
                return Err(self.unknown_key(k));
            };
            if let Some((other, _, o)) = given.iter().find(|(_, _, o)| o.opt == known.opt) {
                if o.rank == known.rank {
                    return Err(Error::invalid(format!(
                        "give {} or {}, not both",
                        self.field(other),
                        self.field(k)
                    )));
                }
            }
            given.push((k.as_str(), v.as_str(), *known));
        }
        // Of two spellings of one option, the higher rank counts.
        given.sort_by_key(|(_, _, k)| k.rank);
        let mut p = Parsed::default();
        let mut source: Option<(&str, CopySource)> = None;
        for (typed, v, k) in given {
            let field = self.field(typed);
            match k.opt {
                Opt::Size => p.create.size = Some(crate::input::size_gib(&field, v)?),
                Opt::Iops => p.create.iops = Some(crate::input::iops(&field, v)?),
                Opt::VolumeType => p.create.volume_type = text(&field, v, "a volume type")?,
                Opt::AvailabilityZone => {
                    p.create.availability_zone = text(&field, v, "an availability zone")?
                }
                Opt::FsType => p.create.fs_type = Some(fs_type(&field, v)?),
                Opt::Encrypted => p.create.encrypted = crate::input::boolean(&field, v)?,
                Opt::OverwriteFs => p.overwrite_fs = crate::input::boolean(&field, v)?,
                Opt::FromVolumeName => {
                    source = self.source(source, typed, v, CopySource::VolumeName)?
                }
                Opt::FromVolumeId => {
                    source = self.source(source, typed, v, CopySource::VolumeId)?
                }
                Opt::FromSnapshotName => {
                    source = self.source(source, typed, v, CopySource::SnapshotName)?
                }
                Opt::FromSnapshotId => {
                    source = self.source(source, typed, v, CopySource::SnapshotId)?
                }
            }
        }
        p.source = source.map(|(_, s)| s);
        Ok(p)
    }

    /// The copy source `typed` names, refused if `before` named one.
    fn source<'a>(
        &self,
        before: Option<(&'a str, CopySource)>,
        typed: &'a str,
        value: &str,
        make: fn(String) -> CopySource,
    ) -> Result<Option<(&'a str, CopySource)>> {
        if let Some((first, _)) = before {
            return Err(Error::invalid(format!(
                "give at most one of volumeName, volumeID, snapshotName, snapshotID: {} and {} are both given",
                quote(first),
                quote(typed)
            )));
        }
        // A snapshot id may name its volume (`<pool>.<image>@<snap>`).
        match make(String::new()) {
            CopySource::SnapshotId(_) => crate::input::snapshot_id(value),
            _ => crate::input::volume_name(value),
        }
        .map_err(|e| e.context(self.field(typed)))?;
        Ok(Some((typed, make(value.to_string()))))
    }
}

/// A filesystem type: ext4 or xfs.
pub fn fs_type(field: &str, value: &str) -> Result<FsType> {
    value
        .parse::<FsType>()
        .map_err(|_| Error::invalid(format!("invalid {field} {}: use ext4 or xfs", quote(value))))
}

/// Free text (a type, a zone): empty means not given; else 1 to 255
/// printable characters.
fn text(field: &str, value: &str, what: &str) -> Result<Option<String>> {
    if value.is_empty() {
        Ok(None)
    } else if value.len() > 255 || value.chars().any(|c| c.is_control()) {
        Err(Error::invalid(format!(
            "invalid {field} {}: {what} is 1 to 255 printable characters",
            quote(value)
        )))
    } else {
        Ok(Some(value.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pairs(s: &[(&str, &str)]) -> Vec<(String, String)> {
        s.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_front_end_refuses_a_repeated_key_naming_it() {
        for (sp, a, b) in [
            (DOCKER, "size", "Size"),
            (DVDCLI, "SIZE", "size"),
            (CLI, "size", "size"),
        ] {
            let e = sp.parse(&pairs(&[(a, "1"), (b, "2")])).unwrap_err();
            assert!(
                e.message()
                    .contains(&format!("{} is given twice", quote(b))),
                "{e}"
            );
        }
        // Case matters where the front-end says so: `Size` is unknown to the CLI.
        let e = CLI.parse(&pairs(&[("Size", "1")])).unwrap_err();
        assert!(e.message().contains("unknown flag \"Size\""), "{e}");
    }

    #[test]
    fn unknown_keys_are_named_with_the_accepted_ones() {
        let e = DOCKER.parse(&pairs(&[("color", "red")])).unwrap_err();
        assert!(
            e.message().starts_with("unknown option \"color\": valid options are size, iops, volumeType, type, availabilityZone"),
            "{e}"
        );
        let e = DVDCLI.parse(&pairs(&[("colour", "red")])).unwrap_err();
        assert_eq!(
            e.message(),
            "unknown --volumeopts key \"colour\": the rexray driver knows size, iops, volumetype, newfstype, overwritefs"
        );
        // Docker's copy sources are not dvdcli's.
        assert!(DVDCLI.parse(&pairs(&[("volumeName", "a")])).is_err());
    }

    #[test]
    fn values_are_checked_alike_in_each_front_ends_words() {
        for (sp, k, v, want) in [
            (
                DOCKER,
                "SIZE",
                "abc",
                "invalid option SIZE \"abc\": a size is a whole number",
            ),
            (
                DVDCLI,
                "size",
                "abc",
                "invalid --volumeopts size \"abc\": a size is a whole number",
            ),
            (
                CLI,
                "size",
                "abc",
                "invalid --size \"abc\": a size is a whole number",
            ),
            (
                DOCKER,
                "fsType",
                "ntfs",
                "invalid option fsType \"ntfs\": use ext4 or xfs",
            ),
            (
                DVDCLI,
                "newFsType",
                "btrfs",
                "invalid --volumeopts newFsType \"btrfs\": use ext4 or xfs",
            ),
            (
                CLI,
                "fsType",
                "zfs",
                "invalid --fsType \"zfs\": use ext4 or xfs",
            ),
            (DOCKER, "iops", "-1", "invalid option iops \"-1\": IOPS"),
            (
                DOCKER,
                "volumeType",
                "a\nb",
                "invalid option volumeType \"a\\nb\": a volume type is 1 to 255",
            ),
            (
                CLI,
                "availabilityZone",
                "a\u{7}",
                "invalid --availabilityZone",
            ),
            (
                DOCKER,
                "encrypted",
                "maybe",
                "invalid option encrypted \"maybe\": expected true or false",
            ),
            (
                DVDCLI,
                "overwritefs",
                "perhaps",
                "invalid --volumeopts overwritefs \"perhaps\"",
            ),
        ] {
            let e = sp.parse(&pairs(&[(k, v)])).unwrap_err();
            assert!(e.message().starts_with(want), "{k}={v}: {e}");
            assert_eq!(e.kind(), crate::Kind::InvalidInput);
        }
    }

    #[test]
    fn aliases_of_one_option() {
        // Docker: `type` outranks `volumeType`, in either order.
        for p in [
            pairs(&[("volumeType", "a"), ("type", "b")]),
            pairs(&[("TYPE", "b"), ("volumetype", "a")]),
        ] {
            let o = DOCKER.parse(&p).unwrap();
            assert_eq!(o.create.volume_type.as_deref(), Some("b"));
        }
        let e = DOCKER
            .parse(&pairs(&[("fsType", "xfs"), ("newFsType", "xfs")]))
            .unwrap_err();
        assert_eq!(
            e.message(),
            "give option fsType or option newFsType, not both"
        );
        let e = DOCKER
            .parse(&pairs(&[("volumeName", "a"), ("snapshotID", "b")]))
            .unwrap_err();
        assert!(e.message().starts_with("give at most one of"), "{e}");
        let o = DOCKER.parse(&pairs(&[("volumeID", "abc")])).unwrap();
        assert_eq!(o.source, Some(CopySource::VolumeId("abc".into())));
        assert!(DOCKER.parse(&pairs(&[("volumeName", "../x")])).is_err());
    }

    #[test]
    fn the_parsed_values() {
        let o = DVDCLI
            .parse(&pairs(&[
                ("size", "5"),
                ("iops", "150"),
                ("volumetype", "io1"),
                ("newfstype", "XFS"),
                ("overwritefs", "true"),
            ]))
            .unwrap();
        assert_eq!(o.create.size, Some(5));
        assert_eq!(o.create.iops, Some(150));
        assert_eq!(o.create.volume_type.as_deref(), Some("io1"));
        assert_eq!(o.create.fs_type, Some(FsType::Xfs));
        assert!(o.overwrite_fs);
        // An empty type or zone is not given.
        let o = DOCKER
            .parse(&pairs(&[("volumeType", ""), ("availabilityZone", "")]))
            .unwrap();
        assert_eq!(o.create, CreateOptions::default());
        assert_eq!(DOCKER.parse(&[]).unwrap(), Parsed::default());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]
        #[test]
        fn errors_name_a_key_as_typed(
            kvs in proptest::collection::vec(
                (prop_oneof![
                    Just("size".to_string()), Just("IOPS".to_string()), Just("type".to_string()),
                    Just("fsType".to_string()), Just("newFsType".to_string()),
                    Just("volumeName".to_string()), Just("snapshotID".to_string()), "\\PC{1,8}"
                ], "\\PC{0,12}"),
                0..6),
            which in 0..3usize,
        ) {
            let sp = [DOCKER, DVDCLI, CLI][which];
            if let Err(e) = sp.parse(&kvs) {
                let m = e.message();
                let named = kvs.iter().any(|(k, _)| m.contains(&quote(k)) || m.contains(&sp.field(k)));
                prop_assert!(named, "{}", m);
            }
        }
    }
}
