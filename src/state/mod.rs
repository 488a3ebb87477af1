//! The state directory: locks and the records the kernel cannot tell us.
//!
//! ```text
//! <lib>/locks/names.lock        held while a name is created or removed
//! <lib>/locks/<id>.lock         held for every mutating step on a volume
//! <lib>/mounts/<id>.json        { device, mountpoint, fs_type, consumers, holds }
//! <lib>/volumes/<name>/         mount points (configurable: mount.path)
//! ```
//!
//! Whether a volume is attached or mounted is always read from the kernel;
//! a mount record only says *who* uses a mount (its consumers) or keeps
//! the device attached (its holders), which no kernel interface can tell.

pub mod atomic;
pub mod lock;

pub use lock::FileLock;

use crate::error::IoContext;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The consumer id shared by callers that carry none (the CLI, dvdcli,
/// Docker clients without a mount ID). Repeated anonymous mounts add
/// nothing; one anonymous unmount releases them.
pub const ANONYMOUS: &str = "anonymous";

/// Who uses a mount, named within its front-end's own namespace, so no
/// front-end can name (and release) another's consumer: a Docker mount ID
/// is recorded as `docker:<ID>`, a kubelet path as `flex:<path>`, the
/// CLI's `--consumer X` as `cli:X`; callers that carry no id share
/// [`ANONYMOUS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consumer<'a> {
    /// The shared consumer of callers without an id (the CLI without
    /// `--consumer`, dvdcli, Docker clients without a mount ID).
    Anonymous,
    /// A Docker mount ID.
    Docker(&'a str),
    /// A path kubelet mounts a volume at, through flexrex.
    Flex(&'a Path),
    /// The CLI's `--consumer` name.
    Cli(&'a str),
    /// A staging path kubelet stages a volume at, through a CSI endpoint.
    Csi(&'a Path),
}

/// The prefix of the holder id of kubelet's attach (through flexrex).
pub const KUBELET_HOLDER: &str = "flexrex";

/// The holder id of kubelet's attach of a volume under a PV (or pod
/// volume) name: `flexrex:<name>`, the name detach is called with; plain
/// `flexrex` when kubelet sent no name (Kubernetes 1.5 attaches, detached
/// by device).
pub fn kubelet_holder(pv_or_volume_name: Option<&str>) -> String {
    match pv_or_volume_name {
        Some(n) if !n.is_empty() => format!("{KUBELET_HOLDER}:{n}"),
        _ => KUBELET_HOLDER.to_string(),
    }
}

/// The holder id a node records when it stages a volume that a CSI
/// controller attached to it (ControllerPublishVolume): the attachment is
/// the controller's, so no step on the node releases it (the node lets go
/// of its device only); ControllerUnpublishVolume does, and drops this.
pub const PUBLISHED_HOLDER: &str = "csi:published";

/// The PV name of a kubelet holder id (`""` for plain `flexrex`), or
/// `None` for other holders.
pub fn pv_of_holder(h: &str) -> Option<&str> {
    match h.strip_prefix(KUBELET_HOLDER)? {
        "" => Some(""),
        rest => rest.strip_prefix(':'),
    }
}

/// The prefixes of the namespaced consumer ids.
pub const CONSUMER_NAMESPACES: &[&str] = &["docker:", "flex:", "cli:", "csi:"];

impl Consumer<'_> {
    /// The path a front-end mounts the volume on for this consumer (its
    /// hand-out: kubelet's path), for the consumers that are one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Consumer::Flex(p) | Consumer::Csi(p) => Some(p),
            _ => None,
        }
    }

    /// The id recorded for this consumer; the id given is checked first.
    pub fn key(&self) -> Result<String> {
        Ok(match self {
            Consumer::Anonymous => ANONYMOUS.to_string(),
            Consumer::Docker(id) => format!("docker:{}", crate::input::consumer(id)?),
            Consumer::Cli(name) => format!("cli:{}", crate::input::consumer(name)?),
            Consumer::Flex(path) => {
                let k = format!("flex:{}", path.display());
                crate::input::consumer(&k)?;
                k
            }
            Consumer::Csi(path) => {
                let k = format!("csi:{}", path.display());
                crate::input::consumer(&k)?;
                k
            }
        })
    }

    /// Whether `entry`, an id in a mount record, is this consumer (whose
    /// [`key`](Self::key) is `key`). A Docker or CLI consumer is also the
    /// bare id that a previous release recorded for either of them; a bare
    /// id never matches a namespaced entry or the anonymous one.
    pub fn matches(&self, key: &str, entry: &str) -> bool {
        entry == key
            || match self {
                Consumer::Docker(id) | Consumer::Cli(id) => entry == *id && is_unnamespaced(entry),
                _ => false,
            }
    }
}

/// Whether a recorded consumer id is in no namespace: one recorded by a
/// previous release for a Docker mount ID or a CLI `--consumer`.
pub fn is_unnamespaced(entry: &str) -> bool {
    entry != ANONYMOUS && !CONSUMER_NAMESPACES.iter().any(|p| entry.starts_with(p))
}

/// Who uses a mounted volume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRecord {
    /// Volume id.
    #[serde(default)]
    pub volume_id: String,
    /// Volume name.
    #[serde(default)]
    pub name: String,
    /// Device (or source directory) last mounted.
    #[serde(default)]
    pub device: String,
    /// Where it is mounted.
    #[serde(default)]
    pub mountpoint: String,
    /// Filesystem found or made.
    #[serde(default)]
    pub fs_type: String,
    /// Consumer ids; the used count is their number.
    #[serde(default)]
    pub consumers: BTreeSet<String>,
    /// Who attached the volume for later use without mounting it
    /// (kubelet's attach through flexrex): the device stays attached while
    /// any holder remains, even when no consumer is left.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub holds: BTreeSet<String>,
    /// The kernel boot the record belongs to: mounts do not survive a
    /// reboot, so neither do their consumers.
    #[serde(default)]
    pub boot_id: String,
    /// The last consumer is gone and the volume is being unmounted and
    /// detached: set before that starts, cleared when it is done. A
    /// process killed in between leaves it, so that the service's next
    /// start finishes the release (Docker never repeats an Unmount whose
    /// reply it did not get).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub releasing: bool,
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`).
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The state directory of one `REXRAY_HOME`.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
    lock_timeout: Duration,
}

impl StateDir {
    /// Open (and create) the state directory at `root` (the `lib` dir),
    /// mode 0700.
    pub fn open(root: &Path, lock_timeout: Duration) -> Result<StateDir> {
        Self::open_with_mode(root, lock_timeout, crate::files::PRIVATE_DIR)
    }

    /// [`StateDir::open`] with `root` given exactly `root_mode` (0711 when
    /// the mount path is inside it: applications pass through to their
    /// volumes). `locks` and `mounts` are 0700; wrong modes are corrected
    /// and the change logged.
    pub fn open_with_mode(root: &Path, lock_timeout: Duration, root_mode: u32) -> Result<StateDir> {
        use crate::files::{own_dir, Link, PRIVATE_DIR};
        own_dir(root, root_mode, Link::Follow)
            .map_err(|e| e.context("preparing the state directory"))?;
        for sub in ["locks", "mounts"] {
            own_dir(&root.join(sub), PRIVATE_DIR, Link::Refuse)
                .map_err(|e| e.context("preparing the state directory"))?;
        }
        Ok(StateDir {
            root: root.to_path_buf(),
            lock_timeout,
        })
    }

    /// The root (`lib`) directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Lock a volume for one operation.
    pub fn lock_volume(&self, id: &str) -> Result<FileLock> {
        let id = crate::input::volume_id(id)?;
        FileLock::acquire(
            &self.root.join("locks").join(format!("{id}.lock")),
            self.lock_timeout,
            &format!("volume {id}"),
        )
    }

    /// Lock the name space (create/remove).
    pub fn lock_names(&self) -> Result<FileLock> {
        FileLock::acquire(
            &self.root.join("locks/names.lock"),
            self.lock_timeout,
            "the volume name table",
        )
    }

    fn record_path(&self, id: &str) -> Result<PathBuf> {
        let id = crate::input::volume_id(id)?;
        Ok(self.root.join("mounts").join(format!("{id}.json")))
    }

    /// Read a volume's mount record; `None` if it has none.
    pub fn load_mount(&self, id: &str) -> Result<Option<MountRecord>> {
        let p = self.record_path(id)?;
        let bytes = match std::fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::from_io(format!("reading {}", p.display()), &e)),
        };
        let rec: MountRecord = serde_json::from_slice(&bytes).map_err(|e| {
            Error::system(format!(
                "the mount record {} of volume {id} is unreadable ({e}); its consumers are unknown, so nothing was unmounted. \
                 Check who uses the volume, then delete the file to let the next unmount proceed",
                p.display()
            ))
        })?;
        if rec.boot_id != boot_id() {
            tracing::info!(record = %p.display(), "ignoring a mount record from an earlier boot");
            return Ok(None);
        }
        Ok(Some(rec))
    }

    /// Write (or, with no consumers and no holders, delete) a volume's
    /// mount record.
    pub fn save_mount(&self, id: &str, rec: &MountRecord) -> Result<()> {
        let p = self.record_path(id)?;
        if rec.consumers.is_empty() && rec.holds.is_empty() && !rec.releasing {
            return atomic::remove_volatile(&p);
        }
        let mut rec = rec.clone();
        rec.boot_id = boot_id();
        let bytes = serde_json::to_vec_pretty(&rec).expect("record serialises");
        atomic::write_volatile(&p, &bytes)
    }

    /// Delete a volume's mount record.
    pub fn remove_mount(&self, id: &str) -> Result<()> {
        atomic::remove_volatile(&self.record_path(id)?)
    }

    /// Ids of every volume that has a mount record.
    pub fn mount_record_ids(&self) -> Result<Vec<String>> {
        let d = self.root.join("mounts");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&d).ctx(|| format!("reading {}", d.display()))? {
            let e = e.ctx(|| format!("reading {}", d.display()))?;
            let n = e.file_name().to_string_lossy().into_owned();
            if let Some(id) = n.strip_suffix(".json") {
                if !id.starts_with('.') {
                    out.push(id.to_string());
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_vanish_when_empty() {
        let t = tempfile::tempdir().unwrap();
        let s = StateDir::open(t.path(), Duration::from_secs(1)).unwrap();
        assert_eq!(s.load_mount("v1").unwrap(), None);
        let mut r = MountRecord {
            volume_id: "v1".into(),
            ..Default::default()
        };
        r.consumers.insert("a".into());
        s.save_mount("v1", &r).unwrap();
        r.boot_id = boot_id();
        assert_eq!(s.load_mount("v1").unwrap(), Some(r.clone()));
        assert_eq!(s.mount_record_ids().unwrap(), vec!["v1".to_string()]);
        r.consumers.clear();
        s.save_mount("v1", &r).unwrap();
        assert_eq!(s.load_mount("v1").unwrap(), None);
    }

    #[test]
    fn records_from_an_earlier_boot_are_void() {
        let t = tempfile::tempdir().unwrap();
        let s = StateDir::open(t.path(), Duration::from_secs(1)).unwrap();
        std::fs::write(
            t.path().join("mounts/v3.json"),
            br#"{"consumers":["old-container"],"boot_id":"not-this-boot"}"#,
        )
        .unwrap();
        assert_eq!(s.load_mount("v3").unwrap(), None);
    }

    #[test]
    fn corrupt_record_is_reported_not_guessed() {
        let t = tempfile::tempdir().unwrap();
        let s = StateDir::open(t.path(), Duration::from_secs(1)).unwrap();
        std::fs::write(t.path().join("mounts/v2.json"), b"{\"consu").unwrap();
        let e = s.load_mount("v2").unwrap_err().to_string();
        assert!(e.contains("unreadable") && e.contains("v2"), "{e}");
    }

    #[test]
    fn consumers_live_in_their_front_ends_namespace() {
        let flex = Path::new("/var/lib/kubelet/pods/p/volumes/rexray~flexrex/pv1");
        let fk = Consumer::Flex(flex).key().unwrap();
        assert_eq!(
            fk,
            "flex:/var/lib/kubelet/pods/p/volumes/rexray~flexrex/pv1"
        );
        // A Docker client sending kubelet's consumer id names its own.
        let forged = Consumer::Docker(&fk);
        let dk = forged.key().unwrap();
        assert_eq!(dk, format!("docker:{fk}"));
        assert!(!forged.matches(&dk, &fk));
        let anon = Consumer::Docker(ANONYMOUS);
        assert!(!anon.matches(&anon.key().unwrap(), ANONYMOUS));
        let cli = Consumer::Cli("docker:abc");
        assert!(!cli.matches(&cli.key().unwrap(), "docker:abc"));
        assert!(!Consumer::Cli("x").matches("cli:x", "flex:x"));
        // A previous release's bare Docker mount ID is still released.
        let d = Consumer::Docker("0123abc");
        assert!(d.matches(&d.key().unwrap(), "0123abc"));
        assert!(d.matches(&d.key().unwrap(), "docker:0123abc"));
        assert!(!d.matches(&d.key().unwrap(), "cli:0123abc"));
        assert!(Consumer::Anonymous.matches(ANONYMOUS, ANONYMOUS));
        assert!(!Consumer::Anonymous.matches(ANONYMOUS, "0123abc"));
        assert!(Consumer::Docker("").key().is_err());
        assert!(Consumer::Cli("a\nb").key().is_err());
    }

    #[test]
    fn ids_cannot_escape() {
        let t = tempfile::tempdir().unwrap();
        let s = StateDir::open(t.path(), Duration::from_secs(1)).unwrap();
        assert!(s.lock_volume("../x").is_err());
        assert!(s.load_mount("a/b").is_err());
    }
}
