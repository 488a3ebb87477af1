//! The workflows' decisions, over a fake node and a fake backend: no
//! root, no loop devices, no mounts. A crash is simulated by building the
//! state a killed process leaves (devices, mounts, records), then checking
//! that the next call converges.

use super::*;
use crate::model::{Attachment, AttachmentState, InstanceId, MountOptions, MountSource, Snapshot};
use crate::node::fake::{FakeNode, FreezeOutcome};
use crate::node::freeze::Broken;
use crate::node::fs::Probe;
use crate::state::Consumer;
use crate::storage::controller::{Attached, ServiceInfo, StorageType};
use std::collections::BTreeMap;
use std::sync::Mutex;

pub(crate) const ME: &str = "me";
const OTHER: &str = "other";

fn fake_instance(id: &str) -> InstanceId {
    InstanceId {
        id: id.into(),
        driver: "fake".into(),
        service: "fake".into(),
    }
}

static FAKE_INFO: std::sync::LazyLock<ServiceInfo> = std::sync::LazyLock::new(|| ServiceInfo {
    service: "fake".into(),
    driver: "fake".into(),
    storage_type: StorageType::Block,
    next_device: Default::default(),
});

struct FakeVol {
    v: Volume,
    attached_to: Option<String>,
    /// What the device holds while it is detached.
    signature: Probe,
}

/// A backend in memory: volumes appear as devices of the fake node when
/// attached (`/dev/fake-<name>`), and keep their contents when detached.
/// Copies and snapshots copy a volume's content and log their steps among
/// the node's (`copy ID`, `snapshot ID`, `publish NAME`).
pub(crate) struct FakeDriver {
    node: Arc<FakeNode>,
    me: InstanceId,
    /// The controller's and the executor's attach/detach steps, in order.
    steps: Mutex<Vec<&'static str>>,
    content: PathBuf,
    vols: Mutex<BTreeMap<String, FakeVol>>,
    snaps: Mutex<Vec<Snapshot>>,
    /// Offer snapshots of volumes attached elsewhere (as RBD does).
    live_snapshots: std::sync::atomic::AtomicBool,
}

impl FakeDriver {
    pub(crate) fn dev(name: &str) -> PathBuf {
        PathBuf::from(format!("/dev/fake-{name}"))
    }
    /// The controller's view: holders listed, the state left to the
    /// caller.
    fn view(&self, f: &FakeVol) -> Volume {
        let mut v = f.v.clone();
        v.attachment_state = 0;
        v.attachments.clear();
        if let Some(who) = &f.attached_to {
            let dev = Self::dev(&v.name);
            v.attachments.push(Attachment {
                device_name: if self.node.device(&dev).is_some() {
                    dev.display().to_string()
                } else {
                    String::new()
                },
                instance_id: fake_instance(who),
                status: "attached".into(),
                volume_id: v.id.clone(),
                ..Default::default()
            });
        }
        v
    }
    fn with<T>(&self, id: &str, f: impl FnOnce(&mut FakeVol) -> Result<T>) -> Result<T> {
        let mut all = self.vols.lock().unwrap();
        let v = all
            .get_mut(id)
            .ok_or_else(|| Error::not_found(format!("fake: no volume {id}")))?;
        f(v)
    }
    /// Attach `id` to `who` behind the workflows' back (another instance
    /// of this host, or a process killed right after attaching).
    pub(crate) fn attach_to(&self, id: &str, who: &str) {
        self.with(id, |f| {
            if f.attached_to.is_none() {
                let content = self.content.join(&f.v.id);
                self.node
                    .plug(&Self::dev(&f.v.name), f.signature.clone(), &content);
            }
            f.attached_to = Some(who.into());
            Ok(())
        })
        .unwrap();
    }
    /// What a detached volume's device will hold when attached.
    fn set_signature(&self, id: &str, p: Probe) {
        self.with(id, |f| {
            f.signature = p;
            Ok(())
        })
        .unwrap();
    }
    /// Where volume (or snapshot) `id` keeps its content.
    fn content_of(&self, id: &str) -> PathBuf {
        self.content.join(id)
    }
    /// Copy the content of volume `id` to a staging directory, log
    /// `what ID`, and check the copy with `intact`: a copy that is not
    /// intact is discarded. Returns the staging directory and what the
    /// copy holds.
    fn copy_content(
        &self,
        what: &str,
        id: &str,
        intact: &dyn Fn() -> Result<()>,
    ) -> Result<(tempfile::TempDir, Probe)> {
        let signature = self.with(id, |f| {
            let now = self.node.device(&Self::dev(&f.v.name));
            Ok(now.map_or_else(|| f.signature.clone(), |d| d.signature))
        })?;
        std::fs::create_dir_all(&self.content).unwrap();
        let staged = tempfile::tempdir_in(&self.content).unwrap();
        copy_tree(&self.content_of(id), staged.path());
        self.node.note(format!("{what} {id}"));
        intact()?;
        Ok((staged, signature))
    }
}

/// Copy the files and directories below `from` to `to`.
fn copy_tree(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).into_iter().flatten().flatten() {
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// The backend side: holders only; devices are the executor's.
impl Controller for FakeDriver {
    fn info(&self) -> &ServiceInfo {
        &FAKE_INFO
    }
    fn offers(&self) -> crate::storage::controller::Offers {
        crate::storage::controller::Offers {
            live_snapshots: self
                .live_snapshots
                .load(std::sync::atomic::Ordering::Relaxed),
            ..crate::storage::controller::Offers::ALL
        }
    }
    fn list(&self) -> Result<Vec<Volume>> {
        Ok(self
            .vols
            .lock()
            .unwrap()
            .values()
            .map(|f| self.view(f))
            .collect())
    }
    fn inspect(&self, id: &str) -> Result<Option<Volume>> {
        Ok(self.vols.lock().unwrap().get(id).map(|f| self.view(f)))
    }
    fn create(&self, name: &str, spec: &CreateSpec) -> Result<Volume> {
        let id = format!("id-{name}");
        let v = Volume {
            id: id.clone(),
            name: name.into(),
            size: spec.size,
            fields: spec.fields.clone(),
            ..Default::default()
        };
        let f = FakeVol {
            v: v.clone(),
            attached_to: None,
            signature: Probe::Blank,
        };
        self.vols.lock().unwrap().insert(id, f);
        Ok(v)
    }
    fn remove(&self, id: &str, force: bool) -> Result<()> {
        let mut all = self.vols.lock().unwrap();
        if all.get(id).is_some_and(|f| f.attached_to.is_some()) && !force {
            return Err(Error::in_use(format!("fake: {id} is attached")));
        }
        all.remove(id);
        Ok(())
    }
    fn attach(
        &self,
        id: &str,
        who: &InstanceId,
        force: bool,
        _next_device: Option<&str>,
    ) -> Result<Attached> {
        self.steps.lock().unwrap().push("controller attach");
        let name = self.with(id, |f| match f.attached_to.as_deref() {
            Some(holder) if holder != who.id && !force => Err(Error::in_use(format!(
                "fake: {} is attached to {holder}",
                f.v.name
            ))),
            _ => {
                f.attached_to = Some(who.id.clone());
                Ok(f.v.name.clone())
            }
        })?;
        Ok(Attached {
            volume: self.inspect(id)?.unwrap(),
            token: FakeDriver::dev(&name).display().to_string(),
        })
    }
    fn detach(&self, id: &str, who: &InstanceId, force: bool) -> Result<Volume> {
        self.steps.lock().unwrap().push("controller detach");
        self.with(id, |f| match f.attached_to.as_deref() {
            Some(holder) if holder != who.id && !force => Err(Error::in_use(format!(
                "fake: {} is attached to {holder}",
                f.v.name
            ))),
            _ => {
                f.attached_to = None;
                Ok(())
            }
        })?;
        Ok(self.inspect(id)?.unwrap())
    }
    fn resize(&self, id: &str, size_gib: u64) -> Result<u64> {
        self.with(id, |f| {
            f.v.size = size_gib;
            Ok(size_gib << 30)
        })
    }
    fn copy(
        &self,
        id: &str,
        new_name: &str,
        spec: &CreateSpec,
        intact: &dyn Fn() -> Result<()>,
        _prepare: storage::Prepare<'_>,
    ) -> Result<Volume> {
        let (staged, signature) = self.copy_content("copy", id, intact)?;
        let mut all = self.vols.lock().unwrap();
        if all.values().any(|f| f.v.name == new_name) {
            return Err(Error::exists(format!("fake: volume {new_name} exists")));
        }
        let v = Volume {
            id: format!("id-{new_name}"),
            name: new_name.into(),
            size: spec.size,
            fields: spec.fields.clone(),
            ..Default::default()
        };
        std::fs::rename(staged.keep(), self.content_of(&v.id)).unwrap();
        let f = FakeVol {
            v: v.clone(),
            attached_to: None,
            signature,
        };
        all.insert(v.id.clone(), f);
        self.node.note(format!("publish {new_name}"));
        Ok(v)
    }
    fn snapshot(
        &self,
        id: &str,
        snap_name: &str,
        intact: &dyn Fn() -> Result<()>,
    ) -> Result<Snapshot> {
        let (staged, _) = self.copy_content("snapshot", id, intact)?;
        let size = self.with(id, |f| Ok(f.v.size))?;
        let mut all = self.snaps.lock().unwrap();
        if all.iter().any(|s| s.name == snap_name) {
            return Err(Error::exists(format!("fake: snapshot {snap_name} exists")));
        }
        let s = Snapshot {
            name: snap_name.into(),
            id: format!("snap-{snap_name}"),
            status: "completed".into(),
            volume_id: id.into(),
            volume_size: size,
            ..Default::default()
        };
        std::fs::rename(staged.keep(), self.content_of(&s.id)).unwrap();
        all.push(s.clone());
        self.node.note(format!("publish {snap_name}"));
        Ok(s)
    }
    fn snapshots(&self) -> Result<Vec<Snapshot>> {
        Ok(self.snaps.lock().unwrap().clone())
    }
}

/// The node side: a held volume's device is plugged into the fake node
/// when resolved, unplugged (keeping what it holds) when released.
impl Executor for FakeDriver {
    fn instance_id(&self) -> &InstanceId {
        &self.me
    }
    fn present(&self, volume: &Volume) -> Result<Option<MountSource>> {
        let dev = FakeDriver::dev(&volume.name);
        Ok(self.node.device(&dev).map(|_| MountSource::Device(dev)))
    }
    fn resolve(
        &self,
        volume: &Volume,
        token: &str,
        _timeout: std::time::Duration,
    ) -> Result<MountSource> {
        self.steps.lock().unwrap().push("executor resolve");
        let dev = FakeDriver::dev(&volume.name);
        assert_eq!(Path::new(token), dev, "the token is the controller's");
        self.with(&volume.id, |f| {
            if self.node.device(&dev).is_none() {
                let content = self.content.join(&f.v.id);
                self.node.plug(&dev, f.signature.clone(), &content);
            }
            Ok(())
        })?;
        Ok(MountSource::Device(dev))
    }
    fn grown(&self, volume: &Volume) -> Result<()> {
        let dev = FakeDriver::dev(&volume.name);
        if self.node.device(&dev).is_some() {
            self.node.note(format!("grown {}", dev.display()));
        }
        Ok(())
    }
    fn release(&self, volume: &Volume, force: bool) -> Result<()> {
        self.steps.lock().unwrap().push("executor release");
        self.with(&volume.id, |f| {
            if let Some(holder) = f.attached_to.as_deref() {
                if holder != self.me.id && !force {
                    return Err(Error::in_use(format!(
                        "fake: {} is attached to {holder}",
                        f.v.name
                    )));
                }
            }
            let dev = FakeDriver::dev(&f.v.name);
            if let Some(d) = self.node.device(&dev) {
                f.signature = d.signature;
                self.node.unplug(&dev)?;
            }
            Ok(())
        })
    }
}

/// A fake node and backend, and the workflows over them.
pub(crate) struct World {
    pub(crate) _tmp: tempfile::TempDir,
    pub(crate) node: Arc<FakeNode>,
    pub(crate) driver: Arc<FakeDriver>,
    pub(crate) vols: Volumes,
}

/// The configuration of a home at `home`, with `extra` environment
/// variables.
pub(crate) fn config_at(home: &Path, extra: &[(&str, &str)]) -> Config {
    let mut env = vec![("REXRAY_HOME".to_string(), home.display().to_string())];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Config::load(crate::config::LoadOptions {
        env: Some(env.into_iter().collect()),
        ..Default::default()
    })
    .unwrap()
}

/// The workflows of a home at `home` as `Volumes::open` makes them: the
/// configured driver (the loop driver) and the real node.
pub(crate) fn open_at(home: &Path) -> Volumes {
    Volumes::open(config_at(home, &[])).unwrap()
}

fn world_with(extra: &[(&str, &str)]) -> World {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config_at(&tmp.path().join("home"), extra);
    let state = StateDir::open(&cfg.dirs.lib, cfg.duration(keys::LOCK_TIMEOUT)).unwrap();
    let node = Arc::new(FakeNode::default());
    let driver = Arc::new(FakeDriver {
        node: node.clone(),
        me: fake_instance(ME),
        steps: Mutex::default(),
        content: tmp.path().join("content"),
        vols: Mutex::default(),
        snaps: Mutex::default(),
        live_snapshots: Default::default(),
    });
    let vols = Volumes::with(cfg, state, driver.clone(), driver.clone(), node.clone());
    World {
        _tmp: tmp,
        node,
        driver,
        vols,
    }
}

pub(crate) fn world() -> World {
    world_with(&[])
}

impl World {
    /// Workflows over the same node, backend and state directory (as
    /// another process would see them).
    pub(crate) fn volumes(&self) -> Volumes {
        let cfg = self.vols.config().clone();
        let state =
            StateDir::open(self.vols.state().root(), cfg.duration(keys::LOCK_TIMEOUT)).unwrap();
        Volumes::with(
            cfg,
            state,
            self.driver.clone(),
            self.driver.clone(),
            self.node.clone(),
        )
    }
    pub(crate) fn create(&self, name: &str) -> Volume {
        match self.vols.create(name, &CreateOptions::default()).unwrap() {
            Created::New(v) => v,
            other => panic!("{other:?}"),
        }
    }
    pub(crate) fn mp(&self, name: &str) -> PathBuf {
        self.vols.mount_point(name)
    }
    pub(crate) fn mounts_at(&self, name: &str) -> usize {
        let mp = self.mp(name);
        self.node
            .mount_table()
            .iter()
            .filter(|m| m.mount_point == mp)
            .count()
    }
    pub(crate) fn state_of(&self, name: &str) -> AttachmentState {
        self.vols.find(VolumeRef::Name(name)).unwrap().state()
    }
    pub(crate) fn consumers(&self, name: &str) -> Vec<String> {
        self.vols.consumers(VolumeRef::Name(name)).unwrap()
    }
    fn mount(&self, name: &str, who: &str) -> Result<PathBuf> {
        self.mount_with(name, who, &MountOptions::default())
    }
    fn mount_with(&self, name: &str, who: &str, o: &MountOptions) -> Result<PathBuf> {
        self.vols
            .mount(VolumeRef::Name(name), Consumer::Docker(who), o)
            .map(|(_, p)| p)
    }
    fn unmount(&self, name: &str, who: &str) -> Result<Unmounted> {
        self.vols
            .unmount(VolumeRef::Name(name), Consumer::Docker(who))
    }
    /// A record as a killed process left it.
    fn record(&self, v: &Volume, consumers: &[&str], holds: &[&str]) {
        let rec = MountRecord {
            volume_id: v.id.clone(),
            name: v.name.clone(),
            consumers: consumers.iter().map(|s| s.to_string()).collect(),
            holds: holds.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        self.vols.state().save_mount(&v.id, &rec).unwrap();
    }
    /// Attached, formatted and mounted at its mount point, as the steps of
    /// a mount leave it.
    fn attached_and_mounted(&self, v: &Volume) {
        self.driver.attach_to(&v.id, ME);
        let dev = FakeDriver::dev(&v.name);
        self.node
            .set_signature(&dev, Probe::Filesystem("ext4".into()));
        std::fs::create_dir_all(self.mp(&v.name)).unwrap();
        self.node.add_mount(&dev, &self.mp(&v.name));
    }
    pub(crate) fn calls_like(&self, what: &str) -> Vec<String> {
        self.node
            .take_calls()
            .into_iter()
            .filter(|c| c.starts_with(what))
            .collect()
    }
}

fn docker(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|i| format!("docker:{i}")).collect()
}

/// The controller records the holder before the node makes a device of
/// the token; a volume this instance holds and has here is not attached
/// again; a detach lets go of the device before the hold.
#[test]
fn attach_goes_controller_then_node_and_detach_the_other_way() {
    let w = world();
    w.create("vol");
    let steps = || std::mem::take(&mut *w.driver.steps.lock().unwrap());
    w.vols.attach(VolumeRef::Name("vol"), false).unwrap();
    assert_eq!(steps(), ["controller attach", "executor resolve"]);
    w.vols.attach(VolumeRef::Name("vol"), false).unwrap();
    w.mount("vol", "a").unwrap();
    assert!(steps().is_empty(), "held and here: nothing to attach");
    w.unmount("vol", "a").unwrap();
    assert_eq!(steps(), ["executor release", "controller detach"]);
    // Held, but its device is gone (a crash after the hold, a reboot):
    // the controller is asked again, the node binds it again.
    w.vols.attach(VolumeRef::Name("vol"), false).unwrap();
    w.node.unplug(&FakeDriver::dev("vol")).unwrap();
    steps();
    w.vols.attach(VolumeRef::Name("vol"), false).unwrap();
    assert_eq!(steps(), ["controller attach", "executor resolve"]);
    assert!(w.node.device(&FakeDriver::dev("vol")).is_some());
    // Another instance holds it: refused before the node does anything.
    w.vols.detach(VolumeRef::Name("vol"), false).unwrap();
    w.driver.attach_to("id-vol", OTHER);
    steps();
    assert_eq!(
        w.vols
            .attach(VolumeRef::Name("vol"), false)
            .unwrap_err()
            .kind(),
        Kind::InUse
    );
    assert_eq!(steps(), ["controller attach"]);
}

#[test]
fn a_blank_device_is_formatted_once_and_the_mount_is_shared() {
    let w = world();
    w.create("vol");
    let p = w.mount("vol", "a").unwrap();
    assert_eq!(p, w.mp("vol").join("data"));
    let calls = w.node.take_calls();
    assert_eq!(
        calls.iter().filter(|c| c.starts_with("mkfs")).count(),
        1,
        "{calls:?}"
    );
    assert!(calls.contains(&format!("mount /dev/fake-vol {}", w.mp("vol").display())));
    // A second consumer shares the mount: no probe, no format, no mount.
    assert_eq!(w.mount("vol", "b").unwrap(), p);
    assert_eq!(w.mount("vol", "b").unwrap(), p, "repeated: idempotent");
    assert_eq!(w.calls_like("m"), Vec::<String>::new());
    assert_eq!(w.mounts_at("vol"), 1);
    assert_eq!(w.consumers("vol"), docker(&["a", "b"]));

    assert_eq!(w.unmount("vol", "a").unwrap(), Unmounted::StillUsed(1));
    assert_eq!(w.mounts_at("vol"), 1);
    assert_eq!(w.state_of("vol"), AttachmentState::Attached);
    assert_eq!(w.unmount("vol", "b").unwrap(), Unmounted::Released);
    assert_eq!(w.mounts_at("vol"), 0);
    assert_eq!(w.state_of("vol"), AttachmentState::Available);
    assert!(w.node.device(&FakeDriver::dev("vol")).is_none());
    assert!(w.consumers("vol").is_empty());
    // Unmounting what is not mounted succeeds and changes nothing.
    assert_eq!(w.unmount("vol", "b").unwrap(), Unmounted::Released);

    // Mounted again: the filesystem is found, not made again.
    w.mount("vol", "c").unwrap();
    assert_eq!(w.calls_like("mkfs"), Vec::<String>::new());
}

#[test]
fn a_device_with_a_signature_is_never_formatted_unless_overwrite_is_asked() {
    let w = world();
    let v = w.create("vol");
    // A filesystem of another type than requested is mounted as it is.
    w.driver
        .set_signature(&v.id, Probe::Filesystem("xfs".into()));
    w.mount("vol", "a").unwrap();
    assert_eq!(w.calls_like("mkfs"), Vec::<String>::new());
    assert_eq!(w.node.mount_table()[0].fs_type, "xfs");
    w.unmount("vol", "a").unwrap();

    // Anything else is refused, and the volume is left as it was found.
    w.driver
        .set_signature(&v.id, Probe::Other("dos partition table".into()));
    let e = w.mount("vol", "a").unwrap_err();
    assert_eq!(e.kind(), Kind::InUse, "{e}");
    assert!(e.message().contains("overwriteFS"), "{e}");
    assert_eq!(w.calls_like("mkfs"), Vec::<String>::new());
    assert_eq!(w.mounts_at("vol"), 0);
    assert_eq!(w.state_of("vol"), AttachmentState::Available);
    assert!(w.consumers("vol").is_empty());

    // overwriteFS formats it.
    let o = MountOptions {
        overwrite_fs: true,
        ..Default::default()
    };
    w.mount_with("vol", "a", &o).unwrap();
    assert_eq!(w.calls_like("mkfs"), vec!["mkfs /dev/fake-vol ext4"]);
    assert_eq!(w.mounts_at("vol"), 1);
}

#[test]
fn a_mount_resumes_after_a_crash_at_each_step() {
    // Killed after the attach: attached, nothing mounted, no record.
    let w = world();
    let v = w.create("vol");
    w.driver.attach_to(&v.id, ME);
    w.mount("vol", "a").unwrap();
    assert_eq!(w.mounts_at("vol"), 1);
    assert_eq!(w.consumers("vol"), docker(&["a"]));
    assert_eq!(w.unmount("vol", "a").unwrap(), Unmounted::Released);
    assert_eq!(w.state_of("vol"), AttachmentState::Available);

    // Killed after the format: formatted, not mounted.
    w.driver.attach_to(&v.id, ME);
    w.node.take_calls();
    w.mount("vol", "a").unwrap();
    assert_eq!(w.calls_like("mkfs"), Vec::<String>::new(), "formatted once");
    w.unmount("vol", "a").unwrap();

    // Killed after the mount: mounted, no consumer recorded. The next
    // mount adds the consumer to that mount, and stacks nothing.
    w.attached_and_mounted(&v);
    w.node.take_calls();
    w.mount("vol", "b").unwrap();
    assert_eq!(w.calls_like("mount"), Vec::<String>::new());
    assert_eq!(w.mounts_at("vol"), 1);
    assert_eq!(w.consumers("vol"), docker(&["b"]));
    assert_eq!(w.unmount("vol", "b").unwrap(), Unmounted::Released);
    assert_eq!(w.mounts_at("vol"), 0);
    assert_eq!(w.state_of("vol"), AttachmentState::Available);
}

#[test]
fn a_mount_left_without_consumers_is_cleaned_up_by_whoever_comes_next() {
    // Killed between dropping the last consumer and the unmount.
    for next in ["unmount", "release_unused", "reconcile", "remove"] {
        let w = world();
        let v = w.create("vol");
        w.attached_and_mounted(&v);
        w.record(&v, &[], &[]);
        match next {
            "unmount" => {
                assert_eq!(w.unmount("vol", "gone").unwrap(), Unmounted::Released);
            }
            "release_unused" => w.vols.release_unused(VolumeRef::Name("vol")).unwrap(),
            "reconcile" => assert_eq!(w.vols.reconcile().unwrap(), vec!["vol".to_string()]),
            _ => {
                w.vols.remove(VolumeRef::Name("vol")).unwrap();
                assert!(w.vols.list().unwrap().is_empty());
                assert!(w.node.mount_table().is_empty());
                continue;
            }
        }
        assert_eq!(w.mounts_at("vol"), 0, "{next}");
        assert_eq!(w.state_of("vol"), AttachmentState::Available, "{next}");
    }

    // Killed between the unmount and the detach: the next unmount detaches.
    let w = world();
    let v = w.create("vol");
    w.driver.attach_to(&v.id, ME);
    assert_eq!(w.unmount("vol", "x").unwrap(), Unmounted::Released);
    assert_eq!(w.state_of("vol"), AttachmentState::Available);

    // A mount that is in use is left alone by the clean-ups.
    let w = world();
    let v = w.create("vol");
    w.mount("vol", "a").unwrap();
    w.vols.release_unused(VolumeRef::Name("vol")).unwrap();
    assert!(w.vols.reconcile().unwrap().is_empty());
    assert_eq!(w.mounts_at("vol"), 1);
    assert_eq!(w.consumers("vol"), docker(&["a"]));
    let e = w.vols.remove(VolumeRef::Name("vol")).unwrap_err();
    assert_eq!(e.kind(), Kind::InUse, "{e}");
    assert_eq!(w.mounts_at("vol"), 1);
    assert!(w.driver.inspect(&v.id).unwrap().is_some());
}

#[test]
fn a_busy_unmount_drops_the_consumer_first_and_finishes_later() {
    let w = world();
    w.create("vol");
    w.mount("vol", "a").unwrap();
    w.node.set_busy(&w.mp("vol"), true);
    let e = w.unmount("vol", "a").unwrap_err();
    assert_eq!(e.kind(), Kind::InUse, "{e}");
    // Never a consumer without a mount: the record went first.
    assert!(w.consumers("vol").is_empty());
    assert_eq!(w.mounts_at("vol"), 1);
    assert_eq!(w.state_of("vol"), AttachmentState::Attached);
    w.node.set_busy(&w.mp("vol"), false);
    assert_eq!(w.unmount("vol", "a").unwrap(), Unmounted::Released);
    assert_eq!(w.mounts_at("vol"), 0);
    assert_eq!(w.state_of("vol"), AttachmentState::Available);
}

#[test]
fn a_stale_mount_of_another_device_is_replaced() {
    let w = world();
    let old = w.create("old");
    w.attached_and_mounted(&old);
    w.create("vol");
    // "vol"'s mount point shows another volume's filesystem.
    w.node.add_mount(&FakeDriver::dev("old"), &w.mp("vol"));
    w.mount("vol", "a").unwrap();
    let here: Vec<_> = w
        .node
        .mount_table()
        .into_iter()
        .filter(|m| m.mount_point == w.mp("vol"))
        .collect();
    assert_eq!(here.len(), 1);
    assert_eq!(here[0].source, "/dev/fake-vol");
}

#[test]
fn holds_keep_a_volume_attached_and_refuse_detach_and_remove() {
    let w = world();
    w.create("vol");
    w.vols
        .hold(VolumeRef::Name("vol"), "flexrex:pv1", false)
        .unwrap();
    assert_eq!(w.state_of("vol"), AttachmentState::Attached);
    w.mount("vol", "a").unwrap();

    // While mounted: detach and remove are refused.
    let e = w.vols.detach(VolumeRef::Name("vol"), false).unwrap_err();
    assert_eq!(e.kind(), Kind::InUse, "{e}");
    let e = w.vols.remove(VolumeRef::Name("vol")).unwrap_err();
    assert_eq!(e.kind(), Kind::InUse, "{e}");
    assert_eq!(w.mounts_at("vol"), 1);

    // The last unmount unmounts, and the hold keeps it attached.
    assert_eq!(w.unmount("vol", "a").unwrap(), Unmounted::Released);
    assert_eq!(w.mounts_at("vol"), 0);
    assert_eq!(w.state_of("vol"), AttachmentState::Attached);
    let e = w.vols.detach(VolumeRef::Name("vol"), false).unwrap_err();
    assert!(
        e.message().contains("held attached by kubelet for pv1"),
        "{e}"
    );
    let e = w.vols.remove(VolumeRef::Name("vol")).unwrap_err();
    assert_eq!(e.kind(), Kind::InUse, "{e}");
    assert_eq!(w.state_of("vol"), AttachmentState::Attached);

    // The holder lets go: detached.
    let r = w
        .vols
        .release_hold(VolumeRef::Name("vol"), &|h| h == "flexrex:pv1", &|_| false)
        .unwrap();
    assert_eq!(r, Unmounted::Released);
    assert_eq!(w.state_of("vol"), AttachmentState::Available);
    w.vols.remove(VolumeRef::Name("vol")).unwrap();

    // A forced detach drops the holders.
    let w = world();
    w.create("vol");
    w.vols.hold(VolumeRef::Name("vol"), "h", false).unwrap();
    w.vols.detach(VolumeRef::Name("vol"), true).unwrap();
    assert_eq!(w.state_of("vol"), AttachmentState::Available);
    assert!(w
        .vols
        .mount_record(VolumeRef::Name("vol"))
        .unwrap()
        .is_none_or(|r| r.holds.is_empty()));
}

#[test]
fn release_hold_keeps_a_volume_others_still_use() {
    let w = world();
    w.create("vol");
    w.vols.hold(VolumeRef::Name("vol"), "h", false).unwrap();
    w.mount("vol", "a").unwrap();
    let r = w
        .vols
        .release_hold(VolumeRef::Name("vol"), &|h| h == "h", &|_| false)
        .unwrap();
    assert_eq!(r, Unmounted::StillUsed(1));
    assert_eq!(w.mounts_at("vol"), 1);
    // A consumer whose mount is gone goes with the hold.
    w.vols.hold(VolumeRef::Name("vol"), "h", false).unwrap();
    let r = w
        .vols
        .release_hold(VolumeRef::Name("vol"), &|h| h == "h", &|c| c == "docker:a")
        .unwrap();
    assert_eq!(r, Unmounted::Released);
    assert_eq!(w.mounts_at("vol"), 0);
    assert_eq!(w.state_of("vol"), AttachmentState::Available);
}

#[test]
fn preempt_takes_a_volume_from_another_instance_and_evicts_its_mounts() {
    let w = world();
    let v = w.create("vol");
    w.driver.attach_to(&v.id, OTHER);
    let dev = FakeDriver::dev("vol");
    w.node.set_signature(&dev, Probe::Filesystem("ext4".into()));
    let elsewhere = w._tmp.path().join("other-instance/vol");
    std::fs::create_dir_all(&elsewhere).unwrap();
    w.node.add_mount(&dev, &elsewhere);

    // Without preempt: refused, nothing touched.
    let e = w.mount("vol", "a").unwrap_err();
    assert_eq!(e.kind(), Kind::InUse, "{e}");
    assert_eq!(w.state_of("vol"), AttachmentState::Unavailable);
    assert_eq!(w.node.mount_table().len(), 1);
    assert_eq!(w.node.mount_table()[0].mount_point, elsewhere);
    assert!(w.consumers("vol").is_empty());

    // With it: the other instance's mount goes, ours is made.
    let o = MountOptions {
        force_attach: true,
        ..Default::default()
    };
    w.mount_with("vol", "a", &o).unwrap();
    let table = w.node.mount_table();
    assert_eq!(table.len(), 1, "{table:?}");
    assert_eq!(table[0].mount_point, w.mp("vol"));
    assert_eq!(w.state_of("vol"), AttachmentState::Attached);
    assert_eq!(w.calls_like("mkfs"), Vec::<String>::new());
}

#[test]
fn mount_preempt_in_the_config_is_a_standing_force_attach() {
    let w = world_with(&[(
        "LIBSTORAGE_INTEGRATION_VOLUME_OPERATIONS_MOUNT_PREEMPT",
        "true",
    )]);
    let v = w.create("vol");
    w.driver.attach_to(&v.id, OTHER);
    w.mount("vol", "a").unwrap();
    assert_eq!(w.state_of("vol"), AttachmentState::Attached);
}

#[test]
fn a_refused_handout_undoes_the_mount() {
    let w = world();
    let v = w.create("vol");
    // The volume's rootPath is a symbolic link out of the volume.
    w.driver
        .set_signature(&v.id, Probe::Filesystem("ext4".into()));
    let content = w._tmp.path().join("content").join(&v.id);
    std::fs::create_dir_all(&content).unwrap();
    std::os::unix::fs::symlink("/etc", content.join("data")).unwrap();

    let e = w.mount("vol", "a").unwrap_err();
    assert!(e.message().contains("symbolic link"), "{e}");
    assert!(
        e.message()
            .contains(&*w.mp("vol").join("data").to_string_lossy()),
        "{e}"
    );
    assert_eq!(w.mounts_at("vol"), 0);
    assert_eq!(w.state_of("vol"), AttachmentState::Available);
    assert!(w.consumers("vol").is_empty());

    // Attached beforehand (held): it stays attached, only the mount goes.
    w.vols.hold(VolumeRef::Name("vol"), "h", false).unwrap();
    w.mount("vol", "a").unwrap_err();
    assert_eq!(w.mounts_at("vol"), 0);
    assert_eq!(w.state_of("vol"), AttachmentState::Attached);

    // A then-step that fails (flexrex's bind) undoes the same way, and a
    // mount other consumers use stays.
    std::fs::remove_file(content.join("data")).unwrap();
    w.mount("vol", "a").unwrap();
    let fail = |_: &Volume, _: &Path, _: &Path| Err(Error::system("bind failed"));
    w.vols
        .mount_and(
            VolumeRef::Name("vol"),
            Consumer::Docker("b"),
            &MountOptions::default(),
            &fail,
        )
        .unwrap_err();
    assert_eq!(w.mounts_at("vol"), 1);
    assert_eq!(w.consumers("vol"), docker(&["a"]));
}

#[test]
fn a_failed_mount_detaches_only_what_it_attached() {
    let w = world();
    let v = w.create("vol");
    // The filesystem cannot be mounted (the mount point is a file).
    std::fs::create_dir_all(w.mp("vol").parent().unwrap()).unwrap();
    std::fs::write(w.mp("vol"), "").unwrap();
    w.mount("vol", "a").unwrap_err();
    assert_eq!(w.state_of("vol"), AttachmentState::Available);
    w.driver.attach_to(&v.id, ME);
    w.mount("vol", "a").unwrap_err();
    assert_eq!(w.state_of("vol"), AttachmentState::Attached);
    assert!(w.consumers("vol").is_empty());
}

#[test]
fn ignore_used_count_releases_every_consumer() {
    let w = world_with(&[(
        "LIBSTORAGE_INTEGRATION_VOLUME_OPERATIONS_UNMOUNT_IGNOREUSEDCOUNT",
        "true",
    )]);
    w.create("vol");
    w.mount("vol", "a").unwrap();
    w.mount("vol", "b").unwrap();
    assert_eq!(w.unmount("vol", "a").unwrap(), Unmounted::Released);
    assert_eq!(w.mounts_at("vol"), 0);
    assert!(w.consumers("vol").is_empty());
}

#[test]
fn a_volume_mounted_by_someone_else_is_not_detached() {
    let w = world();
    w.create("vol");
    w.mount("vol", "a").unwrap();
    let by_hand = w._tmp.path().join("by-hand");
    std::fs::create_dir_all(&by_hand).unwrap();
    w.node.add_mount(&FakeDriver::dev("vol"), &by_hand);
    let e = w.unmount("vol", "a").unwrap_err();
    assert_eq!(e.kind(), Kind::InUse, "{e}");
    assert!(e.message().contains(&*by_hand.to_string_lossy()), "{e}");
    assert_eq!(w.mounts_at("vol"), 0);
    assert_eq!(w.state_of("vol"), AttachmentState::Attached);
}

#[test]
fn resize_grows_a_mounted_filesystem_and_paths_read_the_node() {
    let w = world();
    w.create("vol");
    assert_eq!(w.vols.path(VolumeRef::Name("vol")).unwrap(), None);
    w.vols.resize(VolumeRef::Name("vol"), 20 << 30).unwrap();
    assert_eq!(w.calls_like("grow"), Vec::<String>::new(), "not mounted");
    let p = w.mount("vol", "a").unwrap();
    assert_eq!(
        w.vols.path(VolumeRef::Name("vol")).unwrap(),
        Some(p.clone())
    );
    let listed = w.vols.list_with_paths().unwrap();
    assert_eq!(listed[0].1, p.to_string_lossy());
    w.node.take_calls();
    let (v, bytes) = w.vols.resize(VolumeRef::Name("vol"), 30 << 30).unwrap();
    assert_eq!((v.size, bytes), (30, 30 << 30));
    // The device here learns the new size first, then the filesystem grows.
    assert_eq!(
        w.calls_like("grow"),
        vec!["grown /dev/fake-vol", "grow /dev/fake-vol"]
    );
    assert!(w.vols.node().is_mounted(&w.mp("vol")).unwrap());
    assert_eq!(
        w.vols
            .node()
            .mounted_under(&w.vols.mount_point(""))
            .unwrap(),
        ["vol".to_string()].into()
    );
}

impl World {
    /// Volume `name`, mounted for consumer `a` and holding `data/file`.
    fn mounted_with_a_file(&self, name: &str) -> Volume {
        let v = self.create(name);
        self.mount(name, "a").unwrap();
        std::fs::write(self.driver.content_of(&v.id).join("data/file"), "x").unwrap();
        self.node.take_calls();
        v
    }
    fn copy(&self, from: &str, to: &str) -> Result<Created> {
        let from = CopySource::VolumeName(from.into());
        self.vols.create_from(to, &CreateOptions::default(), &from)
    }
    fn snapshot(&self, of: &str, name: &str) -> Result<Snapshot> {
        self.vols.snapshot(VolumeRef::Name(of), name)
    }
    /// Copy `of` to volume `copy` (`what` "copy"), or take its snapshot
    /// `s1`.
    fn copy_or_snapshot(&self, what: &str, of: &str) -> Result<()> {
        match what {
            "copy" => self.copy(of, "copy").map(drop),
            _ => self.snapshot(of, "s1").map(drop),
        }
    }
    /// Whether volume or snapshot `id` holds `data/file`.
    fn holds_the_file(&self, id: &str) -> bool {
        self.driver.content_of(id).join("data/file").is_file()
    }
    /// Nothing but volume `only` and no snapshot: no copy was published.
    fn nothing_published(&self, only: &str) {
        let names: Vec<String> = self
            .vols
            .list()
            .unwrap()
            .into_iter()
            .map(|v| v.name)
            .collect();
        assert_eq!(names, [only]);
        assert_eq!(self.vols.snapshots().unwrap(), []);
        let kept: Vec<_> = std::fs::read_dir(&self.driver.content).unwrap().collect();
        assert_eq!(kept.len(), 1, "only the source's content: {kept:?}");
    }
}

#[test]
fn a_copy_and_a_snapshot_of_an_unmounted_volume_freeze_nothing() {
    let w = world();
    let v = w.mounted_with_a_file("vol");
    assert_eq!(w.unmount("vol", "a").unwrap(), Unmounted::Released);
    w.node.take_calls();
    let Created::New(c) = w.copy("vol", "copy").unwrap() else {
        panic!("not a new volume")
    };
    assert_eq!(c.name, "copy");
    let s = w.snapshot("vol", "s1").unwrap();
    assert_eq!(
        w.node.take_calls(),
        [
            "copy id-vol",
            "publish copy",
            "snapshot id-vol",
            "publish s1"
        ]
    );
    assert!(w.holds_the_file(&c.id) && w.holds_the_file(&s.id));
    // The copy is a volume of its own, and mounts.
    w.mount("copy", "b").unwrap();
    assert_eq!(w.calls_like("mkfs"), Vec::<String>::new());

    // Attached but mounted nowhere: nothing to freeze either.
    w.driver.attach_to(&v.id, ME);
    w.snapshot("vol", "s2").unwrap();
    assert_eq!(w.calls_like("freeze"), Vec::<String>::new());
}

#[test]
fn a_copy_and_a_snapshot_of_a_mounted_volume_are_made_frozen() {
    let w = world();
    let v = w.mounted_with_a_file("vol");
    let mp = w.mp("vol").display().to_string();
    let Created::New(c) = w.copy("vol", "copy").unwrap() else {
        panic!("not a new volume")
    };
    let s = w.snapshot("vol", "s1").unwrap();
    // Frozen while the data is copied; checked and thawed before the copy
    // is published.
    let frozen = |what: &str, name: &str| {
        [
            format!("freeze {mp}"),
            format!("{what} {}", v.id),
            format!("thaw {mp}"),
            format!("publish {name}"),
        ]
    };
    let mut want = frozen("copy", "copy").to_vec();
    want.extend(frozen("snapshot", "s1"));
    assert_eq!(w.node.take_calls(), want);
    assert!(!w.node.is_frozen(&w.mp("vol")));
    assert!(w.holds_the_file(&c.id) && w.holds_the_file(&s.id));
    assert_eq!(s.volume_id, v.id);
    // The source stays mounted for its consumer.
    assert_eq!(w.mounts_at("vol"), 1);
    assert_eq!(w.consumers("vol"), docker(&["a"]));
    assert_eq!(w.state_of("vol"), AttachmentState::Attached);
}

#[test]
fn a_failed_freeze_copies_nothing() {
    let w = world();
    w.mounted_with_a_file("vol");
    let refused = Error::in_use("the filesystem is already frozen");
    w.node
        .set_freeze_outcome(FreezeOutcome::Fails(refused.clone()));
    for what in ["copy", "snapshot"] {
        let e = w.copy_or_snapshot(what, "vol").unwrap_err();
        assert_eq!(e.kind(), Kind::InUse, "{e}");
        assert_eq!(
            e.message(),
            format!("cannot {what} volume vol: {}", refused.message())
        );
    }
    // The driver was never asked to copy.
    let freeze = format!("freeze {}", w.mp("vol").display());
    assert_eq!(w.node.take_calls(), [freeze.clone(), freeze]);
    w.nothing_published("vol");
    assert!(!w.node.is_frozen(&w.mp("vol")));
}

#[test]
fn a_copy_whose_freeze_broke_is_discarded() {
    for (broken, says) in [
        (Broken::TimedOut, "raise rexray.freezeTimeout"),
        (Broken::ThawedElsewhere, "thawed by something else"),
        (Broken::GuardLost, "lost its freeze guard"),
    ] {
        let w = world_with(&[("REXRAY_FREEZETIMEOUT", "7s")]);
        let v = w.mounted_with_a_file("vol");
        let mp = w.mp("vol");
        w.node.set_freeze_outcome(FreezeOutcome::Breaks(broken));
        for what in ["copy", "snapshot"] {
            let e = w.copy_or_snapshot(what, "vol").unwrap_err();
            let m = e.message();
            assert!(
                m.starts_with(&format!(
                    "cannot {what} volume vol: the filesystem at {}",
                    mp.display()
                )) && m.contains(says)
                    && m.ends_with(&format!("; the {what} was discarded")),
                "{broken:?}: {e}"
            );
            if broken == Broken::TimedOut {
                assert!(m.contains("(7s)"), "{e}");
            }
            // Copied, found torn, never published; a freeze the dead guard
            // left is thawed.
            let mut want = vec![
                format!("freeze {}", mp.display()),
                format!("{what} {}", v.id),
            ];
            if broken == Broken::GuardLost {
                want.push(format!("thaw {}", mp.display()));
            }
            assert_eq!(w.node.take_calls(), want, "{broken:?}");
        }
        w.nothing_published("vol");
        assert!(!w.node.is_frozen(&mp), "{broken:?}");
        // Once the freeze holds again, the copy is made.
        w.node.set_freeze_outcome(FreezeOutcome::Holds);
        w.copy("vol", "copy").unwrap();
        assert!(w.vols.lookup(VolumeRef::Name("copy")).unwrap().is_some());
    }
}

#[test]
fn a_copy_of_a_volume_another_instance_holds_is_refused() {
    let w = world();
    let v = w.create("vol");
    w.driver.attach_to(&v.id, OTHER);
    let e = w.copy("vol", "copy").unwrap_err();
    assert_eq!(e.kind(), Kind::InUse, "{e}");
    assert!(
        e.message().contains("attached to another instance (other)"),
        "{e}"
    );
    let e = w.snapshot("vol", "s1").unwrap_err();
    assert_eq!(e.kind(), Kind::InUse, "{e}");
    w.nothing_published("vol");
}

#[test]
fn a_driver_of_point_in_time_snapshots_snapshots_a_volume_held_elsewhere() {
    let w = world();
    w.driver
        .live_snapshots
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let v = w.create("vol");
    w.driver.attach_to(&v.id, OTHER);
    w.node.take_calls();
    // The snapshot is taken, crash-consistent: nothing here to freeze.
    let s = w.snapshot("vol", "s1").unwrap();
    assert_eq!(s.volume_id, v.id);
    assert!(
        !w.node.take_calls().iter().any(|c| c.starts_with("freeze")),
        "nothing is frozen on this host"
    );
    // A copy reads the image over time: still refused.
    let e = w.copy("vol", "copy").unwrap_err();
    assert_eq!(e.kind(), Kind::InUse, "{e}");
    assert!(w.vols.lookup(VolumeRef::Name("copy")).unwrap().is_none());
}

#[test]
fn a_freeze_left_by_a_crashed_copy_is_thawed_by_reconcile() {
    let w = world();
    w.mounted_with_a_file("vol");
    let mp = w.mp("vol");
    // The copying process died: its freeze was never thawed.
    std::mem::forget(
        w.node
            .freeze(&mp, std::time::Duration::from_secs(1))
            .unwrap(),
    );
    assert!(w.node.is_frozen(&mp));
    assert_eq!(w.vols.reconcile().unwrap(), Vec::<String>::new());
    assert!(!w.node.is_frozen(&mp));
    // The mount in use stays.
    assert_eq!(w.mounts_at("vol"), 1);
}

/// A volume the controller published to this node (CSI
/// ControllerPublishVolume): staging resolves the token without asking
/// the controller, and no release on the node (the last unmount, a
/// Docker unmount, the clean-up after a crash) releases the controller's
/// hold; only unpublishing does, and not while the volume is used here.
#[test]
fn a_published_volume_keeps_the_controllers_hold_until_unpublished() {
    let w = world();
    w.create("vol");
    let steps = || std::mem::take(&mut *w.driver.steps.lock().unwrap());
    let staging = Path::new("/k/staging/vol");
    let me = w.vols.instance().clone();
    let stage = |token: &str| {
        w.vols.mount_published(
            VolumeRef::Name("vol"),
            Consumer::Csi(staging),
            &MountOptions::default(),
            Some(token),
            &|_, _, _| Ok(()),
        )
    };
    // Not published: a token is refused, nothing attached.
    let e = stage("/dev/fake-vol").unwrap_err();
    assert_eq!(e.kind(), Kind::InUse, "{e}");
    assert_eq!(w.state_of("vol"), AttachmentState::Available);
    let (_, token) = w.vols.publish_to(VolumeRef::Name("vol"), &me).unwrap();
    assert_eq!(steps(), ["controller attach"]);
    stage(&token).unwrap();
    assert_eq!(steps(), ["executor resolve"], "no second controller attach");
    assert_eq!(w.mounts_at("vol"), 1);
    // Used here: not unpublished.
    let e = w
        .vols
        .unpublish_from(VolumeRef::Name("vol"), &me)
        .unwrap_err();
    assert_eq!(e.kind(), Kind::InUse, "{e}");
    // A Docker mount and unmount beside it, then the last unmount: the
    // device goes, the hold stays.
    w.mount("vol", "a").unwrap();
    w.unmount("vol", "a").unwrap();
    w.vols
        .unmount(VolumeRef::Name("vol"), Consumer::Csi(staging))
        .unwrap();
    assert_eq!(steps(), ["executor release"]);
    assert_eq!(w.mounts_at("vol"), 0);
    assert_eq!(w.state_of("vol"), AttachmentState::Attached);
    // Killed after the mount, before its record: the clean-up unmounts,
    // and the hold stays.
    stage(&token).unwrap();
    let v = w.vols.find(VolumeRef::Name("vol")).unwrap();
    w.record(&v, &[], &[PUBLISHED_HOLDER]);
    steps();
    assert_eq!(w.vols.reconcile().unwrap(), ["vol"]);
    assert_eq!(w.mounts_at("vol"), 0);
    assert_eq!(w.state_of("vol"), AttachmentState::Attached);
    assert!(!steps().contains(&"controller detach"));
    // A remove is refused while the controller holds it.
    let e = w.vols.remove(VolumeRef::Name("vol")).unwrap_err();
    assert!(e.message().contains("CSI controller"), "{e}");
    // Unpublished: released, the record gone; again: nothing to do.
    w.vols.unpublish_from(VolumeRef::Name("vol"), &me).unwrap();
    assert_eq!(w.state_of("vol"), AttachmentState::Available);
    assert!(w
        .vols
        .mount_record(VolumeRef::Name("vol"))
        .unwrap()
        .is_none());
    w.vols.unpublish_from(VolumeRef::Name("vol"), &me).unwrap();
    // A node mount of its own afterwards detaches as usual.
    w.mount("vol", "b").unwrap();
    w.unmount("vol", "b").unwrap();
    assert_eq!(w.state_of("vol"), AttachmentState::Available);
    w.vols.remove(VolumeRef::Name("vol")).unwrap();
}
