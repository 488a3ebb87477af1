//! `--volumeopts` for the in-process rexray driver: the keys
//! mesos-module-dvdi documents, checked by name and value.

use crate::model::{CreateOptions, FsType, MountOptions};
use crate::options;
use crate::Result;
use std::collections::BTreeMap;

/// Checked options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeOpts {
    /// `size`: GiB, for a volume this call creates.
    pub size: Option<u64>,
    /// `iops`, for a volume this call creates.
    pub iops: Option<i64>,
    /// `volumetype`, for a volume this call creates.
    pub volume_type: Option<String>,
    /// `newfstype`: the filesystem made on a volume this call creates or
    /// finds blank.
    pub new_fs_type: Option<FsType>,
    /// `overwritefs`: format a volume this call created even if the
    /// backend handed it over with a signature.
    pub overwrite_fs: bool,
}

impl VolumeOpts {
    /// Check `(key, value)` pairs by [`options::DVDCLI`]: keys
    /// case-insensitive, a key given twice (in any case) refused.
    pub fn parse(pairs: &[(String, String)]) -> Result<VolumeOpts> {
        let p = options::DVDCLI.parse(pairs)?;
        Ok(VolumeOpts {
            size: p.create.size,
            iops: p.create.iops,
            volume_type: p.create.volume_type,
            new_fs_type: p.create.fs_type,
            overwrite_fs: p.overwrite_fs,
        })
    }

    /// What to create a missing volume with.
    pub fn create_options(&self) -> CreateOptions {
        CreateOptions {
            size: self.size,
            iops: self.iops,
            volume_type: self.volume_type.clone(),
            fs_type: self.new_fs_type,
            ..CreateOptions::default()
        }
    }

    /// How to mount. `overwritefs` counts only when the caller says so —
    /// for a volume this very call created: schedulers repeat the same
    /// options on every launch, and honouring it on a remount would wipe
    /// the data each time.
    pub fn mount_options(&self, overwrite_allowed: bool) -> MountOptions {
        MountOptions {
            fs_type: self.new_fs_type,
            overwrite_fs: overwrite_allowed && self.overwrite_fs,
            force_attach: false,
        }
    }
}

/// Pairs as a plugin's `Opts` object: keys and values verbatim (a key is
/// given once: [`split_opts`](super::args::split_opts) refuses repeats).
pub fn as_plugin_opts(pairs: &[(String, String)]) -> BTreeMap<String, String> {
    pairs.iter().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::quote;
    use proptest::prelude::*;

    fn pairs(s: &[(&str, &str)]) -> Vec<(String, String)> {
        s.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_seed_options() {
        let o = VolumeOpts::parse(&pairs(&[
            ("size", "5"),
            ("iops", "150"),
            ("volumetype", "io1"),
            ("newfstype", "xfs"),
            ("overwritefs", "true"),
        ]))
        .unwrap();
        assert_eq!(o.size, Some(5));
        assert_eq!(o.iops, Some(150));
        assert_eq!(o.volume_type.as_deref(), Some("io1"));
        assert_eq!(o.new_fs_type, Some(FsType::Xfs));
        assert!(o.overwrite_fs);
        assert!(o.mount_options(true).overwrite_fs);
        assert!(!o.mount_options(false).overwrite_fs);
        assert_eq!(o.mount_options(false).fs_type, Some(FsType::Xfs));
        assert_eq!(o.create_options().fs_type, Some(FsType::Xfs));
    }

    #[test]
    fn keys_are_case_insensitive_and_given_once() {
        let o = VolumeOpts::parse(&pairs(&[("SIZE", "2"), ("volumeType", "gp2")])).unwrap();
        assert_eq!(o.size, Some(2));
        assert_eq!(o.volume_type.as_deref(), Some("gp2"));
        let e = VolumeOpts::parse(&pairs(&[("SIZE", "1"), ("Size", "2")])).unwrap_err();
        assert!(e.to_string().contains("\"Size\" is given twice"), "{e}");
    }

    #[test]
    fn errors_name_the_field() {
        for (k, v, want) in [
            ("size", "abc", "--volumeopts size \"abc\""),
            ("size", "0", "--volumeopts size"),
            ("iops", "-3", "--volumeopts iops"),
            ("newfstype", "btrfs", "--volumeopts newfstype \"btrfs\""),
            ("overwritefs", "perhaps", "--volumeopts overwritefs"),
            ("colour", "red", "unknown --volumeopts key \"colour\""),
        ] {
            let e = VolumeOpts::parse(&pairs(&[(k, v)])).unwrap_err();
            assert!(e.to_string().contains(want), "{k}={v}: {e}");
        }
        let e = VolumeOpts::parse(&pairs(&[("x", "1")])).unwrap_err();
        assert!(
            e.to_string()
                .contains("size, iops, volumetype, newfstype, overwritefs"),
            "{e}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]
        #[test]
        fn never_panics_and_errors_name_the_key(
            kvs in proptest::collection::vec(
                (prop_oneof![
                    Just("size".to_string()), Just("IOPS".to_string()), Just("volumetype".to_string()),
                    Just("newFsType".to_string()), Just("overwritefs".to_string()), "\\PC{1,8}"
                ], "\\PC{0,12}"),
                0..6)
        ) {
            match VolumeOpts::parse(&kvs) {
                Ok(o) => {
                    if let Some(s) = o.size { prop_assert!(s >= 1); }
                    if let Some(i) = o.iops { prop_assert!(i >= 0); }
                }
                Err(e) => {
                    let named = kvs.iter().any(|(k, _)| e.to_string().contains(&quote(k)) || e.to_string().contains(&format!("--volumeopts {k}")));
                    prop_assert!(named, "{}", e);
                }
            }
        }
    }
}
