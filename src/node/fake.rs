//! A node in memory, for unit tests of the workflows without root: a mount
//! table, block devices with their signatures, and a log of every action.
//!
//! Each device's filesystem is a real directory (a test's temporary one, so
//! the content-dir check runs for real, symbolic links included); mounting
//! only records the mount. Devices appear when the test's driver attaches
//! a volume ([`FakeNode::plug`]) and go when it detaches it.
//!
//! Freezes are kept in a set of frozen mount points; a test says how the
//! next ones go ([`FakeNode::set_freeze_outcome`]): they hold, fail, or
//! break before the copy is checked, as a real freeze can.

use super::freeze::Broken;
use super::fs::{NewUuid, Probe};
use super::{FreezeGuard, Mount, Node};
use crate::model::FsType;
use crate::{Error, Result};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// A fake block device.
#[derive(Debug, Clone)]
pub struct Device {
    /// Its (major, minor) numbers.
    pub numbers: (u32, u32),
    /// What it holds.
    pub signature: Probe,
    /// The directory standing for its filesystem's root.
    pub root: PathBuf,
}

/// How the fake's freezes go.
#[derive(Debug, Clone, Default)]
pub enum FreezeOutcome {
    /// The freeze holds until the copy thaws it.
    #[default]
    Holds,
    /// Freezing fails with this error; nothing is frozen.
    Fails(Error),
    /// The freeze is made, then breaks before the copy is checked: the
    /// bound passes and the guard thaws ([`Broken::TimedOut`]), someone
    /// else thaws ([`Broken::ThawedElsewhere`]), or the guard dies and
    /// leaves the filesystem frozen ([`Broken::GuardLost`]).
    Breaks(Broken),
}

#[derive(Default)]
struct Inner {
    devices: BTreeMap<PathBuf, Device>,
    mounts: Vec<Mount>,
    busy: HashSet<PathBuf>,
    frozen: HashSet<PathBuf>,
    freeze_outcome: FreezeOutcome,
    calls: Vec<String>,
    next_minor: u32,
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|e| e.into_inner())
}

/// The fake node: no devices and no mounts until a test makes them.
#[derive(Default)]
pub struct FakeNode {
    inner: Arc<Mutex<Inner>>,
}

impl FakeNode {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// Make device `dev` appear holding `signature` (a backend attaching
    /// a volume); its filesystem's contents are kept in `content` (made if
    /// missing), so a volume attached again shows what it held.
    pub fn plug(&self, dev: &Path, signature: Probe, content: &Path) {
        std::fs::create_dir_all(content).unwrap();
        let mut i = self.lock();
        i.next_minor += 1;
        let numbers = (7, i.next_minor);
        i.devices.insert(
            dev.to_path_buf(),
            Device {
                numbers,
                signature,
                root: content.to_path_buf(),
            },
        );
    }

    /// Make device `dev` go (a backend detaching it). Refused while its
    /// filesystem is mounted, as the kernel keeps such a device busy.
    pub fn unplug(&self, dev: &Path) -> Result<()> {
        let mut i = self.lock();
        if let Some(d) = i.devices.get(dev) {
            let n = d.numbers;
            if i.mounts.iter().any(|m| m.dev == n) {
                return Err(Error::in_use(format!(
                    "fake: {} is mounted; cannot detach it",
                    dev.display()
                )));
            }
        }
        i.devices.remove(dev);
        Ok(())
    }

    /// The device `dev`, if present.
    pub fn device(&self, dev: &Path) -> Option<Device> {
        self.lock().devices.get(dev).cloned()
    }

    /// Set what `dev` holds.
    pub fn set_signature(&self, dev: &Path, signature: Probe) {
        if let Some(d) = self.lock().devices.get_mut(dev) {
            d.signature = signature;
        }
    }

    /// Mount `dev` at `target` behind the workflows' back (another
    /// instance, an administrator), without logging it.
    pub fn add_mount(&self, dev: &Path, target: &Path) {
        let mut i = self.lock();
        let d = i.devices[dev].clone();
        let fs_type = match &d.signature {
            Probe::Filesystem(t) => t.clone(),
            _ => "none".into(),
        };
        i.mounts.push(Mount {
            dev: d.numbers,
            root: "/".into(),
            mount_point: target.to_path_buf(),
            fs_type,
            source: dev.display().to_string(),
            read_only: false,
        });
    }

    /// Every mount now.
    pub fn mount_table(&self) -> Vec<Mount> {
        self.lock().mounts.clone()
    }

    /// Make unmounts of `target` fail as busy (`true`) or succeed again.
    pub fn set_busy(&self, target: &Path, busy: bool) {
        let mut i = self.lock();
        if busy {
            i.busy.insert(target.to_path_buf());
        } else {
            i.busy.remove(target);
        }
    }

    /// Say how the next freezes go (until said otherwise).
    pub fn set_freeze_outcome(&self, outcome: FreezeOutcome) {
        self.lock().freeze_outcome = outcome;
    }

    /// Whether the filesystem mounted at `mp` is frozen now.
    pub fn is_frozen(&self, mp: &Path) -> bool {
        self.lock().frozen.contains(mp)
    }

    /// Log a step of the test's backend among the node's actions, so a
    /// test sees their order (a copy made while the source was frozen).
    pub fn note(&self, call: String) {
        self.lock().calls.push(call);
    }

    /// Every action so far (`mkfs DEV FS`, `mount DEV TARGET`, `bind SRC
    /// TARGET`, `unmount TARGET`, `grow DEV`, ...), and clear the log.
    pub fn take_calls(&self) -> Vec<String> {
        std::mem::take(&mut self.lock().calls)
    }

    /// Where the filesystem mounted at `mp` keeps its contents.
    fn backing(&self, mp: &Path) -> Option<PathBuf> {
        let i = self.lock();
        let m = i.mounts.iter().rev().find(|m| m.mount_point == mp)?;
        let rel = m.root.trim_start_matches('/');
        if m.dev.0 == 0 {
            // A bind of a directory of no device of ours.
            return Some(PathBuf::from(&m.root));
        }
        let d = i.devices.values().find(|d| d.numbers == m.dev)?;
        Some(if rel.is_empty() {
            d.root.clone()
        } else {
            d.root.join(rel)
        })
    }
}

impl Node for FakeNode {
    fn require_privileges(&self, _what: &str) -> Result<()> {
        Ok(())
    }
    fn mounts(&self) -> Result<Vec<Mount>> {
        Ok(self.mount_table())
    }
    fn is_mounted(&self, path: &Path) -> Result<bool> {
        Ok(self.lock().mounts.iter().any(|m| m.mount_point == path))
    }
    fn mounted_under(&self, base: &Path) -> Result<HashSet<String>> {
        Ok(self
            .lock()
            .mounts
            .iter()
            .filter(|m| m.mount_point.parent() == Some(base))
            .filter_map(|m| Some(m.mount_point.file_name()?.to_str()?.to_owned()))
            .collect())
    }
    fn device_numbers(&self, dev: &Path) -> Result<(u32, u32)> {
        self.device(dev).map(|d| d.numbers).ok_or_else(|| {
            Error::system(format!("stat {}: No such file or directory", dev.display()))
        })
    }
    fn wait_for_device(&self, dev: &Path, timeout: Duration) -> Result<(u32, u32)> {
        self.device_numbers(dev).map_err(|_| {
            Error::system(format!(
                "device {} did not appear within {}",
                dev.display(),
                humantime::format_duration(timeout)
            ))
        })
    }
    fn probe_tags(&self, dev: &Path, _timeout: Duration) -> Result<(Probe, Vec<(String, String)>)> {
        let mut i = self.lock();
        i.calls.push(format!("probe {}", dev.display()));
        let d = i
            .devices
            .get(dev)
            .ok_or_else(|| Error::system(format!("fake: no device {}", dev.display())))?;
        Ok((d.signature.clone(), Vec::new()))
    }
    fn resolve(&self, path: &Path) -> Option<PathBuf> {
        Some(path.to_path_buf())
    }
    fn sync_device(&self, dev: &Path) -> Result<()> {
        self.lock().calls.push(format!("sync {}", dev.display()));
        Ok(())
    }
    fn mkfs(&self, dev: &Path, fs: FsType, overwrite: bool, _timeout: Duration) -> Result<()> {
        let mut i = self.lock();
        let d = i
            .devices
            .get_mut(dev)
            .ok_or_else(|| Error::system(format!("fake: no device {}", dev.display())))?;
        if d.signature != Probe::Blank && !overwrite {
            return Err(Error::system(format!(
                "fake mkfs: {} holds {:?}; refusing without force",
                dev.display(),
                d.signature
            )));
        }
        d.signature = Probe::Filesystem(fs.as_str().to_string());
        let root = d.root.clone();
        i.calls
            .push(format!("mkfs {} {}", dev.display(), fs.as_str()));
        drop(i);
        // A fresh filesystem holds nothing.
        for e in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            let p = e.path();
            let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
        }
        Ok(())
    }
    fn regenerate_uuid(&self, image: &Path, _fs: &str, _timeout: Duration) -> Result<NewUuid> {
        self.lock().calls.push(format!("uuid {}", image.display()));
        Ok(NewUuid::Changed("fake".into()))
    }
    fn grow(&self, dev: &Path, mp: &Path, _fs: &str, _timeout: Duration) -> Result<()> {
        let mut i = self.lock();
        if !i.mounts.iter().any(|m| m.mount_point == mp) {
            return Err(Error::system(format!("fake: {} not mounted", mp.display())));
        }
        i.calls.push(format!("grow {}", dev.display()));
        Ok(())
    }
    fn ensure_dir(&self, dir: &Path) -> Result<()> {
        super::ensure_dir(dir)
    }
    fn mount_device(&self, dev: &Path, target: &Path, fs_type: &str, ro: bool) -> Result<()> {
        let mut i = self.lock();
        let d = i
            .devices
            .get(dev)
            .cloned()
            .ok_or_else(|| Error::system(format!("fake: no device {}", dev.display())))?;
        if d.signature != Probe::Filesystem(fs_type.to_string()) {
            return Err(Error::system(format!(
                "mounting {} ({fs_type}) on {}: wrong fs type (it holds {:?})",
                dev.display(),
                target.display(),
                d.signature
            )));
        }
        if !target.is_dir() {
            return Err(Error::system(format!(
                "mounting on {}: no such directory",
                target.display()
            )));
        }
        i.calls
            .push(format!("mount {} {}", dev.display(), target.display()));
        i.mounts.push(Mount {
            dev: d.numbers,
            root: "/".into(),
            mount_point: target.to_path_buf(),
            fs_type: fs_type.to_string(),
            source: dev.display().to_string(),
            read_only: ro,
        });
        Ok(())
    }
    fn bind(&self, source: &Path, target: &Path, ro: bool) -> Result<()> {
        let mut i = self.lock();
        // The mount the source lies in, as the kernel resolves it.
        let under = i
            .mounts
            .iter()
            .filter(|m| source.starts_with(&m.mount_point))
            .max_by_key(|m| m.mount_point.as_os_str().len())
            .cloned();
        let m = match under {
            Some(m) => {
                let rel = source.strip_prefix(&m.mount_point).unwrap_or(Path::new(""));
                Mount {
                    root: Path::new(&m.root).join(rel).display().to_string(),
                    mount_point: target.to_path_buf(),
                    read_only: ro,
                    ..m
                }
            }
            None => Mount {
                dev: (0, 0),
                root: source.display().to_string(),
                mount_point: target.to_path_buf(),
                fs_type: "none".into(),
                source: source.display().to_string(),
                read_only: ro,
            },
        };
        i.calls
            .push(format!("bind {} {}", source.display(), target.display()));
        i.mounts.push(m);
        Ok(())
    }
    fn unmount_all(&self, target: &Path) -> Result<()> {
        let mut i = self.lock();
        if !i.mounts.iter().any(|m| m.mount_point == target) {
            return Ok(());
        }
        if i.busy.contains(target) {
            return Err(Error::in_use(format!(
                "cannot unmount {}: it is busy",
                target.display()
            )));
        }
        i.calls.push(format!("unmount {}", target.display()));
        i.mounts.retain(|m| m.mount_point != target);
        Ok(())
    }
    fn content_dir(&self, volume: &str, mp: &Path, rel: &str, create: bool) -> Result<PathBuf> {
        // Check the device's directory for real, then say where it shows.
        let Some(real) = self.backing(mp) else {
            return super::content_dir(volume, mp, rel, create);
        };
        let found = super::content_dir(volume, &real, rel, create).map_err(|e| {
            let m = e
                .message()
                .replace(&*real.to_string_lossy(), &mp.to_string_lossy());
            Error::new(e.kind(), m)
        })?;
        Ok(mp.join(found.strip_prefix(&real).unwrap_or(Path::new(""))))
    }
    fn freeze(&self, mp: &Path, bound: Duration) -> Result<Box<dyn FreezeGuard>> {
        let mut i = self.lock();
        i.calls.push(format!("freeze {}", mp.display()));
        if i.frozen.contains(mp) {
            return Err(Error::in_use(format!(
                "the filesystem at {} is already frozen; thaw it (fsfreeze -u) and retry",
                mp.display()
            )));
        }
        let broken = match i.freeze_outcome.clone() {
            FreezeOutcome::Fails(e) => return Err(e),
            FreezeOutcome::Holds => None,
            FreezeOutcome::Breaks(b) => Some(b),
        };
        // Broken by a thaw, unless the guard died first.
        if matches!(broken, None | Some(Broken::GuardLost)) {
            i.frozen.insert(mp.to_path_buf());
        }
        Ok(Box::new(FakeFreeze {
            inner: self.inner.clone(),
            mp: mp.to_path_buf(),
            bound,
            broken,
            done: false,
        }))
    }
    fn thaw(&self, mp: &Path) -> Result<bool> {
        Ok(thaw(&mut self.lock(), mp))
    }
}

/// Thaw `mp` if it is frozen, and log it.
fn thaw(i: &mut Inner, mp: &Path) -> bool {
    let was = i.frozen.remove(mp);
    if was {
        i.calls.push(format!("thaw {}", mp.display()));
    }
    was
}

/// A freeze of the fake node.
struct FakeFreeze {
    inner: Arc<Mutex<Inner>>,
    mp: PathBuf,
    bound: Duration,
    broken: Option<Broken>,
    done: bool,
}

impl FakeFreeze {
    fn broken(&self, b: Broken) -> Error {
        Error::system(b.why(&self.mp, self.bound))
    }
}

impl FreezeGuard for FakeFreeze {
    fn intact(&self) -> Result<()> {
        if let Some(b) = self.broken {
            return Err(self.broken(b));
        }
        if !lock(&self.inner).frozen.contains(&self.mp) {
            return Err(self.broken(Broken::ThawedElsewhere));
        }
        Ok(())
    }
    fn finish(mut self: Box<Self>) -> Result<()> {
        self.done = true;
        let thawed = thaw(&mut lock(&self.inner), &self.mp);
        match self.broken {
            Some(b) => Err(self.broken(b)),
            None if !thawed => Err(self.broken(Broken::ThawedElsewhere)),
            None => Ok(()),
        }
    }
}

impl Drop for FakeFreeze {
    fn drop(&mut self) {
        if !self.done {
            thaw(&mut lock(&self.inner), &self.mp);
        }
    }
}
