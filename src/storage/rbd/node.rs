//! The rbd driver's node side: how an image becomes a block device here.
//!
//! - `krbd`: the kernel RBD client (`rbd device map`), when `/sys/bus/rbd`
//!   exists (after `modprobe rbd` when `rbd.testModule`).
//! - `nbd`: `rbd device map -t nbd` (the `rbd-nbd` daemon), when the nbd
//!   module is there and `rbd-nbd` is installed.
//! - `fuse`: one `rbd-fuse` process per attached image, in its own session,
//!   mounted at `<run>/rbd-fuse/<pool>.<image>` with its PID in
//!   `<run>/rbd-fuse/<pool>.<image>.pid`, and a loop device on the image
//!   file the mount shows. Needs no kernel module beyond fuse and loop.
//!
//! Release undoes exactly what attach made: the unmap, or the loop device,
//! the FUSE mount and the process whose PID was recorded.

use super::cli::Ceph;
use crate::error::IoContext;
use crate::model::{InstanceId, MountSource, Volume};
use crate::storage::controller::Executor;
use crate::storage::loopdev;
use crate::{Error, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How this node attaches images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// The kernel RBD client.
    Krbd,
    /// rbd-nbd.
    Nbd,
    /// rbd-fuse plus a loop device.
    Fuse,
}

impl Method {
    /// The name logs and `rexray env` show.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Krbd => "krbd (rbd device map)",
            Method::Nbd => "nbd (rbd-nbd)",
            Method::Fuse => "fuse (rbd-fuse + loop device)",
        }
    }

    /// The short name `rexray env` shows: `krbd`, `rbd-nbd` or
    /// `rbd-fuse+loop`.
    pub fn short_name(self) -> &'static str {
        match self {
            Method::Krbd => "krbd",
            Method::Nbd => "rbd-nbd",
            Method::Fuse => "rbd-fuse+loop",
        }
    }

    /// What this host offers: kernel RBD, else nbd, else rbd-fuse.
    /// `test_module` tries `modprobe` first.
    pub fn detect(test_module: bool) -> Method {
        let modprobe = |m: &str| {
            test_module
                && crate::node::cmd::run("modprobe", "kmod", &[m], Duration::from_secs(10))
                    .is_ok_and(|o| o.status.success())
        };
        if Path::new("/sys/bus/rbd").exists()
            || (modprobe("rbd") && Path::new("/sys/bus/rbd").exists())
        {
            return Method::Krbd;
        }
        let has_nbd_tool = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("rbd-nbd").is_file()));
        if has_nbd_tool && (Path::new("/sys/module/nbd").exists() || modprobe("nbd")) {
            return Method::Nbd;
        }
        Method::Fuse
    }
}

/// The rbd node side.
pub struct RbdExecutor {
    ceph: Ceph,
    pool: String,
    me: InstanceId,
    /// How this node attaches images: found out when first needed (a
    /// call that never reaches the node side, such as a lookup, never
    /// runs `modprobe`).
    method: std::sync::OnceLock<Method>,
    /// Whether finding it out may load the rbd or nbd module.
    test_module: bool,
    /// `<run>/rbd-fuse`.
    fuse_dir: PathBuf,
}

/// One line of `rbd device list --format json`: krbd calls the image
/// `name`, rbd-nbd `image`; `snap` is `-` (or absent) for the image
/// itself.
#[derive(Debug, Deserialize)]
struct Mapped {
    #[serde(default)]
    pool: String,
    #[serde(default, alias = "image")]
    name: String,
    #[serde(default)]
    snap: String,
    #[serde(default)]
    device: String,
}

impl Mapped {
    /// The device of `pool/image` itself (not of one of its snapshots).
    fn device_of(list: Vec<Mapped>, pool: &str, image: &str) -> Option<PathBuf> {
        list.into_iter()
            .find(|m| {
                m.pool == pool
                    && m.name == image
                    && (m.snap.is_empty() || m.snap == "-")
                    && !m.device.is_empty()
            })
            .map(|m| PathBuf::from(m.device))
    }
}

/// How long a released rbd-fuse process may take to exit.
const EXIT_WAIT: Duration = Duration::from_secs(10);
/// How long a detached loop device on an rbd-fuse image may take to go.
const LOOP_GONE_WAIT: Duration = Duration::from_secs(30);

impl RbdExecutor {
    /// The node side for `pool`, with `run` as this instance's run dir.
    pub fn new(
        ceph: Ceph,
        pool: &str,
        me: InstanceId,
        run: &Path,
        test_module: bool,
    ) -> RbdExecutor {
        RbdExecutor {
            ceph,
            pool: pool.to_string(),
            me,
            method: std::sync::OnceLock::new(),
            test_module,
            fuse_dir: run.join("rbd-fuse"),
        }
    }

    /// How this node attaches images.
    pub fn method(&self) -> Method {
        *self.method.get_or_init(|| {
            let m = Method::detect(self.test_module);
            tracing::debug!(method = m.as_str(), "rbd attach method");
            m
        })
    }

    fn image<'a>(&self, v: &'a Volume) -> Result<&'a str> {
        v.id.strip_prefix(self.pool.as_str())
            .and_then(|r| r.strip_prefix('.'))
            .filter(|i| crate::input::volume_name(i).is_ok())
            .ok_or_else(|| {
                Error::invalid(format!(
                    "volume id {} is not an image of pool {}",
                    v.id, self.pool
                ))
            })
    }

    fn device_type(&self) -> &'static str {
        match self.method() {
            Method::Nbd => "nbd",
            _ => "krbd",
        }
    }

    /// The kernel (or nbd) device of `image`, if mapped here.
    fn mapped(&self, image: &str) -> Result<Option<PathBuf>> {
        let out = self.ceph.run(
            "rbd",
            &[
                "device",
                "list",
                "-t",
                self.device_type(),
                "--format",
                "json",
            ],
        )?;
        // Output that cannot be read is an error: taken for "not mapped",
        // an attach would map the image again and a detach leave it.
        let list: Vec<Mapped> = match out.trim() {
            "" => Vec::new(),
            text => serde_json::from_str(text).map_err(|e| {
                Error::backend(format!(
                    "cannot read the answer of rbd device list -t {} ({e}): {}",
                    self.device_type(),
                    text.chars().take(200).collect::<String>()
                ))
            })?,
        };
        Ok(Mapped::device_of(list, &self.pool, image))
    }

    fn mount_dir(&self, image: &str) -> PathBuf {
        self.fuse_dir.join(format!("{}.{image}", self.pool))
    }

    fn pid_file(&self, image: &str) -> PathBuf {
        self.fuse_dir.join(format!("{}.{image}.pid", self.pool))
    }

    /// The image file the FUSE mount shows.
    fn fuse_file(&self, image: &str) -> PathBuf {
        self.mount_dir(image).join(image)
    }

    /// The recorded rbd-fuse PID of `image`, if that process still runs
    /// rbd-fuse on its mount point.
    fn fuse_pid(&self, image: &str) -> Option<i32> {
        helper_pid(&self.pid_file(image), &self.mount_dir(image))
    }

    /// Whether `dir` is a mount point (of /proc/self/mountinfo).
    pub(crate) fn is_mounted(dir: &Path) -> bool {
        std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|m| {
            m.lines().any(|l| {
                l.split(' ')
                    .nth(4)
                    .is_some_and(|t| Path::new(&unescape(t)) == dir)
            })
        })
    }

    /// Start rbd-fuse for `image` and wait for its image file.
    fn start_fuse(&self, image: &str, deadline: Instant) -> Result<()> {
        let mnt = self.mount_dir(image);
        if let Some(pid) = self.fuse_pid(image) {
            if !Self::is_mounted(&mnt) {
                // A process a killed attach left without its mount.
                stop_pid(pid, Duration::from_secs(2));
            }
        }
        // Set when the process started here exits: its end is known from
        // its exit, never guessed from /proc (whose command line reads
        // empty while `setsid` execs rbd-fuse).
        let mut exited: Option<Arc<AtomicBool>> = None;
        if !Self::is_mounted(&mnt) {
            use crate::files::{own_dir, Link, PRIVATE_DIR};
            own_dir(&self.fuse_dir, PRIVATE_DIR, Link::Refuse)
                .map_err(|e| e.context("preparing the rbd-fuse directory"))?;
            std::fs::create_dir_all(&mnt).ctx(|| format!("creating {}", mnt.display()))?;
            let log = self.fuse_dir.join(format!("{}.{image}.log", self.pool));
            let logf = std::fs::File::create(&log).ctx(|| format!("creating {}", log.display()))?;
            let mut cmd = self.ceph.command("setsid");
            cmd.arg(crate::node::cmd::find("rbd-fuse", "rbd-fuse")?)
                .arg("--conf")
                .arg(&self.ceph.conf)
                // No librbd write-back cache: a write is acknowledged once
                // the OSD has it, so a fenced node's writes fail at once
                // (the cache would acknowledge them and lose them later).
                .arg("--rbd_cache=false")
                .args(["-p", &self.pool, "-r", image])
                .arg(&mnt)
                .arg("-f")
                .stdout(
                    logf.try_clone()
                        .ctx(|| format!("opening {}", log.display()))?,
                )
                .stderr(logf);
            let child = cmd.spawn().map_err(|e| {
                Error::from_io("starting rbd-fuse (install the rbd-fuse package)", &e)
            })?;
            let pid = child.id();
            crate::state::atomic::write(&self.pid_file(image), format!("{pid}\n").as_bytes())?;
            tracing::info!(volume = image, pid, mount = %mnt.display(), "started rbd-fuse");
            // The child is reaped when it exits while this process runs.
            let flag = Arc::new(AtomicBool::new(false));
            exited = Some(flag.clone());
            std::thread::spawn(move || {
                let mut child = child;
                let _ = child.wait();
                flag.store(true, Ordering::SeqCst);
            });
        }
        let file = self.fuse_file(image);
        loop {
            // The file first: a stat in an empty directory until the
            // mount is there, then the mount table once.
            if file.is_file() && Self::is_mounted(&mnt) {
                return Ok(());
            }
            let gone = match &exited {
                Some(f) => f.load(Ordering::SeqCst),
                None => self.fuse_pid(image).is_none(),
            };
            if gone || Instant::now() >= deadline {
                let log = std::fs::read_to_string(
                    self.fuse_dir.join(format!("{}.{image}.log", self.pool)),
                )
                .unwrap_or_default();
                if let Some(pid) = self.fuse_pid(image) {
                    stop_pid(pid, Duration::from_secs(2));
                }
                let _ = nix::mount::umount2(&mnt, nix::mount::MntFlags::MNT_DETACH);
                return Err(Error::backend(format!(
                    "rbd-fuse for volume {image} {} (cluster of {}){}",
                    if gone {
                        "exited"
                    } else {
                        "did not show the image in time"
                    },
                    self.ceph.conf.display(),
                    log.lines()
                        .rev()
                        .find(|l| !l.trim().is_empty())
                        .map(|l| format!(": {l}"))
                        .unwrap_or_default()
                )));
            }
            // Often: rbd-fuse shows the image some 50-100 ms after it
            // starts, and each step of waiting is added to every attach.
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Whether another instance holds the volume now (this node was
    /// fenced, if it had the image open).
    fn taken_over(&self, volume: &Volume) -> bool {
        !volume.attachments.is_empty()
            && !volume
                .attachments
                .iter()
                .any(|a| a.instance_id.id.eq_ignore_ascii_case(&self.me.id))
    }

    /// Abort the FUSE connection of a fenced rbd-fuse: its client is on
    /// the blocklist and would retry forever, so every read, write and
    /// the unmount of the filesystem on it would hang; aborted, they fail
    /// at once and the node can let go.
    fn abort_fuse(&self, image: &str) {
        let mnt = self.mount_dir(image);
        let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
            return;
        };
        let Some(minor) = info.lines().find_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() > 4 && Path::new(&unescape(f[4])) == mnt)
                .then(|| f[2].split_once(':').map(|(_, m)| m.to_string()))
                .flatten()
        }) else {
            return;
        };
        let conns = Path::new("/sys/fs/fuse/connections");
        if std::fs::read_dir(conns).is_ok_and(|mut d| d.next().is_none()) {
            let _ = nix::mount::mount(
                Some("fusectl"),
                conns,
                Some("fusectl"),
                nix::mount::MsFlags::empty(),
                None::<&str>,
            );
        }
        let abort = conns.join(&minor).join("abort");
        match std::fs::write(&abort, b"1") {
            Ok(()) => tracing::warn!(volume = image, "another instance took this volume over and fenced this node: aborted its rbd-fuse connection"),
            Err(e) => tracing::warn!(volume = image, error = %e, "could not abort the rbd-fuse connection of a fenced volume"),
        }
    }

    fn fuse_loops(&self, image: &str) -> Vec<PathBuf> {
        loops_backed_by(&self.fuse_file(image))
    }

    /// Unmount the rbd-fuse mount of `image` and end its process (once
    /// nothing uses the image file).
    fn stop_fuse(&self, image: &str) -> Result<()> {
        let mnt = self.mount_dir(image);
        if Self::is_mounted(&mnt) {
            nix::mount::umount(&mnt).map_err(|e| {
                Error::from_io(
                    format!("unmounting {}", mnt.display()),
                    &std::io::Error::from(e),
                )
            })?;
        }
        if let Some(pid) = self.fuse_pid(image) {
            if !wait_gone(pid, EXIT_WAIT) {
                stop_pid(pid, Duration::from_secs(2));
            }
        }
        // A FUSE mount outlives its process ("transport endpoint is not
        // connected"): one still there now (its process was stopped, or
        // its connection aborted after a fence raced the unmount above)
        // is only a name, and goes.
        if Self::is_mounted(&mnt) {
            tracing::warn!(volume = image, mount = %mnt.display(), "the rbd-fuse mount was still there after its process ended; detached it");
            let _ = nix::mount::umount2(&mnt, nix::mount::MntFlags::MNT_DETACH);
        }
        fail::fail_point!("rbd::detach-after-fuse", |_| crate::crash_here());
        let _ = std::fs::remove_file(self.pid_file(image));
        let _ = std::fs::remove_file(self.fuse_dir.join(format!("{}.{image}.log", self.pool)));
        let _ = std::fs::remove_dir(&mnt);
        Ok(())
    }
}

/// A new image shown as a file for a moment, through rbd-fuse in a
/// scratch directory of the controller (no loop device, no lock): how a
/// copy gets a filesystem UUID of its own before it is published.
pub(crate) struct Scratch {
    fuse: RbdExecutor,
}

impl Scratch {
    /// rbd-fuse mounts of `pool` under `dir`.
    pub(crate) fn new(ceph: Ceph, pool: &str, dir: &Path) -> Scratch {
        Scratch {
            fuse: RbdExecutor {
                ceph,
                pool: pool.to_string(),
                me: InstanceId::default(),
                method: Method::Fuse.into(),
                test_module: false,
                fuse_dir: dir.to_path_buf(),
            },
        }
    }

    /// Call `f` with the file of `image`, then unmount it. `Ok(Err(why))`
    /// when the image could not be shown (nothing was called).
    pub(crate) fn with_image_file(
        &self,
        image: &str,
        timeout: Duration,
        f: &dyn Fn(&Path) -> Result<()>,
    ) -> Result<std::result::Result<(), String>> {
        // What a killed earlier call left of this image goes first.
        if let Err(e) = self.fuse.stop_fuse(image) {
            return Ok(Err(e.to_string()));
        }
        if let Err(e) = self.fuse.start_fuse(image, Instant::now() + timeout) {
            let _ = self.fuse.stop_fuse(image);
            return Ok(Err(e.to_string()));
        }
        let r = f(&self.fuse.fuse_file(image));
        let stopped = self.fuse.stop_fuse(image);
        r?;
        stopped.map(Ok)
    }
}

/// The PID recorded in `pid_file`, if that process is alive and serves
/// the FUSE mount point `mnt` (its command line names it): a PID reused by
/// another process is never taken for the helper.
pub(crate) fn helper_pid(pid_file: &Path, mnt: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let ours = String::from_utf8_lossy(&cmdline)
        .split('\0')
        .any(|a| Path::new(a) == mnt);
    (ours && alive(pid)).then_some(pid)
}

/// Whether `pid` runs (a zombie counts as gone).
pub(crate) fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(')')
            .and_then(|(_, r)| r.trim_start().chars().next())
            .is_some_and(|c| c != 'Z'),
        Err(_) => false,
    }
}

/// TERM `pid`, wait up to `wait`, then KILL it.
pub(crate) fn stop_pid(pid: i32, wait: Duration) {
    use nix::sys::signal::{kill, Signal};
    let p = nix::unistd::Pid::from_raw(pid);
    let _ = kill(p, Signal::SIGTERM);
    if !wait_gone(pid, wait) {
        let _ = kill(p, Signal::SIGKILL);
        wait_gone(pid, Duration::from_secs(2));
    }
}

/// Wait up to `wait` for `pid` to be gone; whether it is.
pub(crate) fn wait_gone(pid: i32, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    while alive(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// `\040` and friends of /proc/self/mountinfo.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let n = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(n);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The loop devices whose backing file is `file`.
fn loops_backed_by(file: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/sys/block") else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let Ok(b) = std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")) else {
            continue;
        };
        if Path::new(b.trim_end_matches('\n')) == file {
            out.push(PathBuf::from(format!("/dev/{name}")));
        }
    }
    out.sort();
    out
}

impl RbdExecutor {
    /// Make `pool/image` (`want`) a device here, as this node's method
    /// does.
    fn attach_here(&self, image: &str, want: &str, timeout: Duration) -> Result<MountSource> {
        let deadline = Instant::now() + timeout;
        match self.method() {
            Method::Krbd | Method::Nbd => {
                let out = self
                    .ceph
                    .run("rbd", &["device", "map", "-t", self.device_type(), want])
                    .map_err(|e| e.context(format!("mapping volume {image}")))?;
                let dev = out.trim().lines().last().unwrap_or("").trim().to_string();
                if !dev.starts_with("/dev/") {
                    return Err(Error::backend(format!(
                        "rbd device map of volume {image} answered {out:?}, not a device"
                    )));
                }
                tracing::info!(
                    volume = image,
                    device = dev,
                    method = self.method().as_str(),
                    "mapped an rbd image"
                );
                Ok(MountSource::Device(PathBuf::from(dev)))
            }
            Method::Fuse => {
                self.start_fuse(image, deadline)?;
                fail::fail_point!("rbd::attach-after-fuse", |_| crate::crash_here());
                let file = self.fuse_file(image);
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&file)
                    .ctx(|| format!("opening {}", file.display()))?;
                let dev = loopdev::attach(&f).map_err(|e| {
                    Error::from_io(format!("binding {} to a loop device", file.display()), &e)
                })?;
                // Direct I/O: a write of a fenced node must fail at once, not
                // sit in the FUSE file's page cache and be lost later.
                if let Err(e) = loopdev::set_direct_io(&dev, true) {
                    tracing::warn!(volume = image, device = %dev.display(), error = %e, "no direct I/O on the loop device: writes after a fence may fail only at writeback");
                }
                tracing::info!(volume = image, device = %dev.display(), method = self.method().as_str(), "attached an rbd image");
                fail::fail_point!("rbd::attach-after-loop", |_| crate::crash_here());
                Ok(MountSource::Device(dev))
            }
        }
    }

    /// Whether `image` is locked, and not by this instance (`rexray:<id>`).
    fn taken_by_another(&self, image: &str) -> Result<bool> {
        let spec = format!("{}/{image}", self.pool);
        let out = self
            .ceph
            .run("rbd", &["lock", "ls", "--format", "json", &spec])?;
        let mine = format!("{}{}", super::LOCK_PREFIX, self.me.id);
        let ids = lock_ids(&out)?;
        Ok(!ids.is_empty() && !ids.contains(&mine))
    }
}

/// The lock ids of `rbd lock ls --format json`: a list of locks, or (Ceph
/// before Octopus) an object keyed by lock id.
fn lock_ids(out: &str) -> Result<Vec<String>> {
    let v: serde_json::Value = match out.trim() {
        "" => serde_json::Value::Array(Vec::new()),
        t => serde_json::from_str(t).map_err(|e| {
            Error::backend(format!(
                "unreadable answer of rbd lock ls: {e}: {}",
                t.chars().take(200).collect::<String>()
            ))
        })?,
    };
    Ok(match v {
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|l| l.get("id").and_then(|i| i.as_str()).map(String::from))
            .collect(),
        serde_json::Value::Object(o) => o.keys().cloned().collect(),
        _ => Vec::new(),
    })
}

impl Executor for RbdExecutor {
    fn instance_id(&self) -> &InstanceId {
        &self.me
    }

    fn present(&self, volume: &Volume) -> Result<Option<MountSource>> {
        let image = self.image(volume)?;
        if self.method() == Method::Fuse && self.taken_over(volume) {
            self.abort_fuse(image);
        }
        Ok(match self.method() {
            Method::Fuse => self.fuse_loops(image).into_iter().next(),
            _ => self.mapped(image)?,
        }
        .map(MountSource::Device))
    }

    fn resolve(&self, volume: &Volume, token: &str, timeout: Duration) -> Result<MountSource> {
        let image = self.image(volume)?;
        let want = format!("{}/{image}", self.pool);
        if token != want {
            return Err(Error::backend(format!(
                "volume {}: the controller attached {token}, but this node uses pool {} (rbd.defaultPool): nodes and controller must name the same pool",
                volume.name, self.pool
            )));
        }
        if let Some(src) = self.present(volume)? {
            return Ok(src);
        }
        let src = self.attach_here(image, &want, timeout)?;
        // A preempt between the controller's attach and this device fenced
        // the clients it saw then, not the one just made: the lock must
        // not be another instance's now that the image is open here (from
        // now on, this node's client is a watcher that a preempt fences).
        // No lock at all is this instance's own detach racing this call,
        // which the workflow's records settle.
        match self.taken_by_another(image) {
            Ok(false) => Ok(src),
            Ok(true) => {
                let _ = self.release(volume, true);
                Err(Error::in_use(format!(
                    "volume {} was taken over by another instance while it was being attached here; this node let go of it",
                    volume.name
                )))
            }
            Err(e) => {
                tracing::warn!(volume = %volume.name, error = %e, "could not check that no other instance took the volume over while it was attached here");
                Ok(src)
            }
        }
    }

    fn grown(&self, volume: &Volume) -> Result<()> {
        // Kernel rbd and rbd-nbd devices follow a resize by themselves.
        if self.method() != Method::Fuse {
            return Ok(());
        }
        let image = self.image(volume)?;
        let file = self.fuse_file(image);
        for dev in self.fuse_loops(image) {
            // rbd-fuse shows the image's new size at once; the loop device
            // keeps its old capacity until told.
            let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
            loopdev::set_capacity(&dev).map_err(|e| {
                Error::from_io(format!("updating the capacity of {}", dev.display()), &e)
            })?;
            tracing::info!(volume = image, device = %dev.display(), bytes = size, "the loop device over rbd-fuse has the image's new size");
        }
        Ok(())
    }

    fn release(&self, volume: &Volume, force: bool) -> Result<()> {
        let _ = force; // what is here is this node's own, whoever holds the image now
        let image = self.image(volume)?;
        match self.method() {
            Method::Krbd | Method::Nbd => {
                if let Some(dev) = self.mapped(image)? {
                    let dev = dev.to_string_lossy().into_owned();
                    self.ceph
                        .run("rbd", &["device", "unmap", "-t", self.device_type(), &dev])
                        .map_err(|e| e.context(format!("unmapping volume {image}")))?;
                }
                Ok(())
            }
            Method::Fuse => {
                for dev in self.fuse_loops(image) {
                    loopdev::detach(&dev)
                        .map_err(|e| Error::from_io(format!("detaching {}", dev.display()), &e))?;
                }
                // The kernel lets go of a detached loop device once its
                // last opener does; under load that takes seconds.
                let deadline = Instant::now() + LOOP_GONE_WAIT;
                while !self.fuse_loops(image).is_empty() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
                if let Some(dev) = self.fuse_loops(image).first() {
                    return Err(Error::in_use(format!(
                        "volume {image}: its loop device {} was still open {}s after it was detached (a mount or a process outside rexray holds it; `fuser -vm {}` names it); the rbd-fuse process stays until it is closed, then unmount or detach the volume again",
                        dev.display(),
                        LOOP_GONE_WAIT.as_secs(),
                        dev.display()
                    )));
                }
                fail::fail_point!("rbd::detach-after-loop", |_| crate::crash_here());
                self.stop_fuse(image)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_read() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
    }

    #[test]
    fn mapped_devices_of_krbd_and_rbd_nbd_are_found() {
        // krbd (`name`, `snap` "-") and rbd-nbd (`image`), as each prints.
        let krbd = r#"[{"id":"0","pool":"rbd","namespace":"","name":"v1","snap":"-","device":"/dev/rbd0"},
            {"id":"1","pool":"rbd","namespace":"","name":"v2","snap":"s1","device":"/dev/rbd1"}]"#;
        let nbd = r#"[{"id":4242,"pool":"rbd","namespace":"","image":"v2","snap":"-","device":"/dev/nbd0"}]"#;
        let parse = |t: &str| serde_json::from_str::<Vec<Mapped>>(t).unwrap();
        assert_eq!(
            Mapped::device_of(parse(krbd), "rbd", "v1"),
            Some(PathBuf::from("/dev/rbd0"))
        );
        // A mapped snapshot is not its image.
        assert_eq!(Mapped::device_of(parse(krbd), "rbd", "v2"), None);
        assert_eq!(
            Mapped::device_of(parse(nbd), "rbd", "v2"),
            Some(PathBuf::from("/dev/nbd0"))
        );
        assert_eq!(Mapped::device_of(parse(nbd), "other", "v2"), None);
    }

    #[test]
    fn lock_ids_of_every_ceph_are_read() {
        let list = r#"[{"id":"rexray:vm:/var/lib/rexray","locker":"client.4151","address":"127.0.0.1:0/1"}]"#;
        assert_eq!(lock_ids(list).unwrap(), ["rexray:vm:/var/lib/rexray"]);
        // Ceph before Octopus: an object keyed by lock id.
        let keyed = r#"{"rexray:b:/x":{"locker":"client.1","address":"127.0.0.1:0/2"}}"#;
        assert_eq!(lock_ids(keyed).unwrap(), ["rexray:b:/x"]);
        assert!(lock_ids("").unwrap().is_empty());
        assert!(lock_ids("[]").unwrap().is_empty());
        assert!(lock_ids("not json").is_err());
    }

    #[test]
    fn the_attach_method_is_found_out_only_when_needed() {
        // Opening the node side (every flexrex or dvdcli call does) runs
        // no modprobe; a call that maps or lists devices finds out once.
        let ceph = Ceph::new("--conf /x/ceph.conf", Duration::from_secs(1)).unwrap();
        let t = tempfile::tempdir().unwrap();
        // (test_module off: the test loads no kernel module.)
        let exe = RbdExecutor::new(ceph, "rbd", InstanceId::default(), t.path(), false);
        assert!(exe.method.get().is_none());
        let m = exe.method();
        assert_eq!(exe.method.get(), Some(&m));
    }

    #[test]
    fn this_process_is_alive_and_pid_0_is_not() {
        assert!(alive(std::process::id() as i32));
        assert!(!alive(0));
    }
}
