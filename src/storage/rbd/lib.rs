//! librbd and librados, loaded at run time (`dlopen` of `librbd.so.1`
//! and `librados.so.2`, the libraries every host with the `rbd` tool
//! has), so that a build needs no Ceph headers or libraries and a host
//! without them uses the tools instead.
//!
//! One connection per process and cluster (the cluster's arguments, conf
//! and timeout), made at the first call and kept; one pool handle per
//! pool. An image is opened for one call and closed again (read-only for
//! lookups: no watch), so this process never shows as a user of an image.
//! Every call runs on a thread of its own and is waited for at most the
//! driver's timeout (the library's own timeouts are set to it too); one
//! that overruns is reported as the cluster not answering, like a tool
//! that does.
//!
//! The `extern "C"` signatures below are those of `rbd/librbd.h` and
//! `rados/librados.h` (Ceph 14 and later).

use super::cli::Ceph;
use crate::{Error, Kind, Result};
use std::collections::{BTreeMap, HashMap};
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

type RadosT = *mut c_void;
type IoctxT = *mut c_void;
type ImageT = *mut c_void;
type OpT = *mut c_void;
type IterT = *mut c_void;

/// The library file names (the ABI versions of Ceph 10 and later).
pub const LIBRBD: &str = "librbd.so.1";
/// See [`LIBRBD`].
pub const LIBRADOS: &str = "librados.so.2";

/// `RBD_FEATURE_LAYERING`: what `rbd create --image-feature layering`
/// gives an image.
pub const FEATURE_LAYERING: u64 = 1;

/// The functions used, resolved once.
struct Api {
    _rados: libloading::Library,
    _rbd: libloading::Library,
    rados_create2: unsafe extern "C" fn(*mut RadosT, *const c_char, *const c_char, u64) -> c_int,
    rados_conf_read_file: unsafe extern "C" fn(RadosT, *const c_char) -> c_int,
    rados_conf_parse_argv: unsafe extern "C" fn(RadosT, c_int, *const *const c_char) -> c_int,
    rados_conf_set: unsafe extern "C" fn(RadosT, *const c_char, *const c_char) -> c_int,
    rados_connect: unsafe extern "C" fn(RadosT) -> c_int,
    rados_shutdown: unsafe extern "C" fn(RadosT),
    rados_get_instance_id: unsafe extern "C" fn(RadosT) -> u64,
    rados_getaddrs: unsafe extern "C" fn(RadosT, *mut *mut c_char) -> c_int,
    rados_ioctx_create: unsafe extern "C" fn(RadosT, *const c_char, *mut IoctxT) -> c_int,
    rados_ioctx_destroy: unsafe extern "C" fn(IoctxT),
    rados_create_write_op: unsafe extern "C" fn() -> OpT,
    rados_release_write_op: unsafe extern "C" fn(OpT),
    rados_write_op_omap_set:
        unsafe extern "C" fn(OpT, *const *const c_char, *const *const c_char, *const usize, usize),
    rados_write_op_omap_rm_keys: unsafe extern "C" fn(OpT, *const *const c_char, usize),
    rados_write_op_operate:
        unsafe extern "C" fn(OpT, IoctxT, *const c_char, *mut libc::time_t, c_int) -> c_int,
    rados_create_read_op: unsafe extern "C" fn() -> OpT,
    rados_release_read_op: unsafe extern "C" fn(OpT),
    rados_read_op_omap_get_vals2: unsafe extern "C" fn(
        OpT,
        *const c_char,
        *const c_char,
        u64,
        *mut IterT,
        *mut u8,
        *mut c_int,
    ),
    rados_read_op_operate: unsafe extern "C" fn(OpT, IoctxT, *const c_char, c_int) -> c_int,
    rados_omap_get_next2: unsafe extern "C" fn(
        IterT,
        *mut *mut c_char,
        *mut *mut c_char,
        *mut usize,
        *mut usize,
    ) -> c_int,
    rados_omap_get_end: unsafe extern "C" fn(IterT),
    rbd_open: unsafe extern "C" fn(IoctxT, *const c_char, *mut ImageT, *const c_char) -> c_int,
    rbd_open_read_only:
        unsafe extern "C" fn(IoctxT, *const c_char, *mut ImageT, *const c_char) -> c_int,
    rbd_close: unsafe extern "C" fn(ImageT) -> c_int,
    rbd_get_size: unsafe extern "C" fn(ImageT, *mut u64) -> c_int,
    rbd_get_create_timestamp: unsafe extern "C" fn(ImageT, *mut libc::timespec) -> c_int,
    rbd_create2: unsafe extern "C" fn(IoctxT, *const c_char, u64, u64, *mut c_int) -> c_int,
    rbd_metadata_list: unsafe extern "C" fn(
        ImageT,
        *const c_char,
        u64,
        *mut c_char,
        *mut usize,
        *mut c_char,
        *mut usize,
    ) -> c_int,
    rbd_metadata_set: unsafe extern "C" fn(ImageT, *const c_char, *const c_char) -> c_int,
    #[allow(clippy::type_complexity)]
    rbd_list_lockers: unsafe extern "C" fn(
        ImageT,
        *mut c_int,
        *mut c_char,
        *mut usize,
        *mut c_char,
        *mut usize,
        *mut c_char,
        *mut usize,
        *mut c_char,
        *mut usize,
    ) -> isize,
    rbd_lock_exclusive: unsafe extern "C" fn(ImageT, *const c_char) -> c_int,
    rbd_unlock: unsafe extern "C" fn(ImageT, *const c_char) -> c_int,
    rbd_break_lock: unsafe extern "C" fn(ImageT, *const c_char, *const c_char) -> c_int,
}

impl Api {
    fn load() -> std::result::Result<Api, String> {
        // SAFETY: loading the Ceph client libraries runs their static
        // initialisers only (no threads start before rados_connect).
        let open = |name: &str| unsafe {
            libloading::Library::new(name).map_err(|e| format!("{name}: {e}"))
        };
        let rados = open(LIBRADOS)?;
        let rbd = open(LIBRBD)?;
        macro_rules! sym {
            ($lib:expr, $name:ident) => {
                // SAFETY: the type is the one of the header's declaration.
                *unsafe { $lib.get(concat!(stringify!($name), "\0").as_bytes()) }
                    .map_err(|e| format!("{}: {e}", stringify!($name)))?
            };
        }
        Ok(Api {
            rados_create2: sym!(rados, rados_create2),
            rados_conf_read_file: sym!(rados, rados_conf_read_file),
            rados_conf_parse_argv: sym!(rados, rados_conf_parse_argv),
            rados_conf_set: sym!(rados, rados_conf_set),
            rados_connect: sym!(rados, rados_connect),
            rados_shutdown: sym!(rados, rados_shutdown),
            rados_get_instance_id: sym!(rados, rados_get_instance_id),
            rados_getaddrs: sym!(rados, rados_getaddrs),
            rados_ioctx_create: sym!(rados, rados_ioctx_create),
            rados_ioctx_destroy: sym!(rados, rados_ioctx_destroy),
            rados_create_write_op: sym!(rados, rados_create_write_op),
            rados_release_write_op: sym!(rados, rados_release_write_op),
            rados_write_op_omap_set: sym!(rados, rados_write_op_omap_set),
            rados_write_op_omap_rm_keys: sym!(rados, rados_write_op_omap_rm_keys),
            rados_write_op_operate: sym!(rados, rados_write_op_operate),
            rados_create_read_op: sym!(rados, rados_create_read_op),
            rados_release_read_op: sym!(rados, rados_release_read_op),
            rados_read_op_omap_get_vals2: sym!(rados, rados_read_op_omap_get_vals2),
            rados_read_op_operate: sym!(rados, rados_read_op_operate),
            rados_omap_get_next2: sym!(rados, rados_omap_get_next2),
            rados_omap_get_end: sym!(rados, rados_omap_get_end),
            rbd_open: sym!(rbd, rbd_open),
            rbd_open_read_only: sym!(rbd, rbd_open_read_only),
            rbd_close: sym!(rbd, rbd_close),
            rbd_get_size: sym!(rbd, rbd_get_size),
            rbd_get_create_timestamp: sym!(rbd, rbd_get_create_timestamp),
            rbd_create2: sym!(rbd, rbd_create2),
            rbd_metadata_list: sym!(rbd, rbd_metadata_list),
            rbd_metadata_set: sym!(rbd, rbd_metadata_set),
            rbd_list_lockers: sym!(rbd, rbd_list_lockers),
            rbd_lock_exclusive: sym!(rbd, rbd_lock_exclusive),
            rbd_unlock: sym!(rbd, rbd_unlock),
            rbd_break_lock: sym!(rbd, rbd_break_lock),
            _rados: rados,
            _rbd: rbd,
        })
    }
}

static API: OnceLock<std::result::Result<Api, String>> = OnceLock::new();

fn api() -> std::result::Result<&'static Api, &'static str> {
    API.get_or_init(Api::load).as_ref().map_err(String::as_str)
}

/// Whether the libraries load here; `Err` says why not.
pub fn available() -> std::result::Result<(), String> {
    api().map(|_| ()).map_err(str::to_string)
}

/// How the rbd driver reaches Ceph (`rbd.library`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The libraries when they load, else the tools.
    Auto,
    /// The tools only.
    Off,
}

impl Mode {
    /// From the `rbd.library` setting.
    pub fn parse(s: &str) -> Result<Mode> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(Mode::Auto),
            "off" => Ok(Mode::Off),
            other => Err(Error::invalid(format!(
                "{} is {other:?}: give auto (librbd when it loads, else the rbd and rados tools) or off (the tools only)",
                crate::config::keys::RBD_LIBRARY
            ))),
        }
    }

    /// Whether this mode uses the libraries on this host.
    pub fn uses_library(self) -> bool {
        self == Mode::Auto && api().is_ok()
    }

    /// What `rexray env` and `rexray version` show.
    pub fn describe(self) -> String {
        match (self, api()) {
            (Mode::Off, _) => "tools (rbd.library off)".into(),
            (Mode::Auto, Ok(_)) => format!("librbd ({LIBRBD}, {LIBRADOS}, loaded at run time)"),
            (Mode::Auto, Err(why)) => format!("tools ({why})"),
        }
    }
}

/// Say once per process how the driver reaches Ceph.
pub fn log_choice(mode: Mode) {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        tracing::info!(
            rbd_library = %mode.describe(),
            "rbd: how this process reaches Ceph"
        )
    });
}

/// A raw handle that librados allows to be used from any thread.
struct Handle<T>(T);
// SAFETY: rados_t and rados_ioctx_t are thread-safe for the calls made
// here (operations, not configuration changes).
unsafe impl<T> Send for Handle<T> {}
unsafe impl<T> Sync for Handle<T> {}

/// One connection to a cluster.
struct Conn {
    cluster: Handle<RadosT>,
    pools: Mutex<HashMap<String, Arc<Handle<IoctxT>>>>,
    /// This connection's client (`client.<global id>`), as lock listings
    /// name it.
    client: String,
    /// Its addresses, as `rados_getaddrs` says them.
    addrs: String,
}

impl Drop for Conn {
    fn drop(&mut self) {
        let Ok(a) = api() else { return };
        let pools = std::mem::take(&mut *self.pools.lock().unwrap_or_else(|e| e.into_inner()));
        for (_, io) in pools {
            // SAFETY: no other owner is left (the connection is dropped).
            unsafe { (a.rados_ioctx_destroy)(io.0) };
        }
        // SAFETY: as above.
        unsafe { (a.rados_shutdown)(self.cluster.0) };
    }
}

/// Close this process's connections before the libraries' own static
/// destructors run (registered at `dlopen`, so run after this): a
/// connection left open at exit makes them crash. One still in use by a
/// call that overran is left alone.
extern "C" fn shut_down_at_exit() {
    let Some(all) = CONNS.get() else { return };
    let Ok(all) = all.try_lock() else { return };
    let conns: Vec<Arc<Conn>> = all
        .values()
        .filter_map(|slot| slot.try_lock().ok()?.conn.take())
        .collect();
    drop(all);
    drop(conns);
}

/// The key of one connection: the cluster's arguments, conf and timeout.
type Key = (String, String, Duration);

/// One cluster's connection, or how the last attempt to make it failed.
/// Its own lock is held while connecting, so a cluster that is slow to
/// answer holds up only the calls to that cluster, and the calls that
/// waited for a failed attempt share its failure instead of each trying
/// again in turn (threads piling up behind an unreachable cluster).
struct Slot<C> {
    conn: Option<Arc<C>>,
    /// When the last attempt failed, and why.
    failed: Option<(std::time::Instant, (String, i32))>,
}

impl<C> Default for Slot<C> {
    fn default() -> Self {
        Slot {
            conn: None,
            failed: None,
        }
    }
}

/// The connection of `slot`, made with `connect` when there is none,
/// unless an attempt that failed ended after this call began waiting.
fn get_or_connect<C>(
    slot: &Mutex<Slot<C>>,
    connect: impl FnOnce() -> std::result::Result<C, (String, i32)>,
) -> std::result::Result<Arc<C>, (String, i32)> {
    get_or_connect_since(slot, std::time::Instant::now(), connect)
}

/// [`get_or_connect`] for a call that began waiting at `asked`.
fn get_or_connect_since<C>(
    slot: &Mutex<Slot<C>>,
    asked: std::time::Instant,
    connect: impl FnOnce() -> std::result::Result<C, (String, i32)>,
) -> std::result::Result<Arc<C>, (String, i32)> {
    let mut s = slot.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(c) = &s.conn {
        return Ok(c.clone());
    }
    if let Some((at, e)) = &s.failed {
        if *at >= asked {
            return Err(e.clone());
        }
    }
    match connect() {
        Ok(c) => {
            let c = Arc::new(c);
            s.conn = Some(c.clone());
            s.failed = None;
            Ok(c)
        }
        Err(e) => {
            s.failed = Some((std::time::Instant::now(), e.clone()));
            Err(e)
        }
    }
}

/// A cluster's slot, shared by the calls to it.
type SharedSlot = Arc<Mutex<Slot<Conn>>>;

static CONNS: OnceLock<Mutex<HashMap<Key, SharedSlot>>> = OnceLock::new();

/// The slot of `key` (the table's lock is held only to find it).
fn slot(key: Key) -> SharedSlot {
    let mut all = CONNS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    all.entry(key).or_default().clone()
}

/// A C string of `s`, refused when it holds a NUL.
fn cstr(what: &str, s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::invalid(format!("{what} {s:?} holds a NUL byte")))
}

/// How `CEPH_ARGS`-style arguments name the client and the cluster, and
/// what is left for `rados_conf_parse_argv`.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Args {
    /// `client.admin`, `client.<id>` or the `--name` given.
    pub name: String,
    /// `ceph` or the `--cluster` given.
    pub cluster: String,
    /// Everything else but the conf file (read on its own).
    pub rest: Vec<String>,
}

pub(crate) fn split_args(args: &str) -> Args {
    let mut out = Args {
        name: "client.admin".into(),
        cluster: "ceph".into(),
        rest: Vec::new(),
    };
    let mut words = args.split_whitespace();
    while let Some(w) = words.next() {
        let (opt, inline) = match w.split_once('=') {
            Some((o, v)) if o.starts_with('-') => (o, Some(v.to_string())),
            _ => (w, None),
        };
        let mut value = || inline.clone().or_else(|| words.next().map(str::to_string));
        match opt {
            "--id" | "-i" | "--user" => {
                if let Some(v) = value() {
                    out.name = format!("client.{v}");
                }
            }
            "--name" | "-n" => {
                if let Some(v) = value() {
                    out.name = if v.contains('.') {
                        v
                    } else {
                        format!("client.{v}")
                    };
                }
            }
            "--cluster" => {
                if let Some(v) = value() {
                    out.cluster = v;
                }
            }
            // `-c FILE` or `--conf FILE` (spelt as in cli.rs for the
            // no-shell check).
            _ if opt == "--conf" || opt.strip_prefix('-') == Some("c") => {
                let _ = value();
            }
            _ => out.rest.push(w.to_string()),
        }
    }
    out
}

/// Split a buffer of NUL-terminated strings (the first `len` bytes).
pub(crate) fn split_nul(buf: &[u8], len: usize) -> Vec<String> {
    let buf = &buf[..len.min(buf.len())];
    let buf = buf.strip_suffix(&[0]).unwrap_or(buf);
    if buf.is_empty() {
        return Vec::new();
    }
    buf.split(|b| *b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// What [`with_buffers`] gives: the answer, the buffers and the lengths
/// filled in.
pub(crate) type Filled<R, const N: usize> = (R, [Vec<u8>; N], [usize; N]);

/// Call `f` with buffers of the sizes in `lens` (at least 1 byte each);
/// when it answers `-ERANGE` (having set the sizes it needs), again with
/// buffers that large, a few times at most.
pub(crate) fn with_buffers<const N: usize, R: Copy + Into<i64>>(
    mut lens: [usize; N],
    mut f: impl FnMut(&mut [Vec<u8>; N], &mut [usize; N]) -> R,
) -> std::result::Result<Filled<R, N>, i32> {
    for _ in 0..8 {
        let mut bufs: [Vec<u8>; N] = std::array::from_fn(|i| vec![0u8; lens[i].max(1)]);
        let mut got: [usize; N] = std::array::from_fn(|i| bufs[i].len());
        let r = f(&mut bufs, &mut got);
        let code: i64 = r.into();
        if code == -(libc::ERANGE as i64) {
            for i in 0..N {
                lens[i] = got[i].max(lens[i] * 2);
            }
            continue;
        }
        if code < 0 {
            return Err(code as i32);
        }
        return Ok((r, bufs, got));
    }
    Err(-libc::ERANGE)
}

/// An error of the library: `-errno` of `what`.
fn errno_error(ceph: &Ceph, what: &str, code: i32) -> Error {
    let errno = code.abs();
    if errno == libc::ETIMEDOUT {
        return ceph.unreachable(what);
    }
    let kind = match errno {
        libc::ENOENT => Kind::NotFound,
        libc::EBUSY => Kind::InUse,
        libc::EEXIST => Kind::AlreadyExists,
        _ => Kind::Backend,
    };
    let text = std::io::Error::from_raw_os_error(errno).to_string();
    let text = text.split(" (os error").next().unwrap_or(&text).to_string();
    Error::new(
        kind,
        format!(
            "{what} failed (cluster of {}): ({errno}) {text}",
            ceph.conf.display()
        ),
    )
}

/// One lock of an image, as `rbd lock ls --format json` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locker {
    /// The lock's id (its cookie).
    pub id: String,
    /// The client holding it (`client.<n>`).
    pub locker: String,
    /// That client's address.
    pub address: String,
}

/// The driver's way into the libraries, for one cluster.
#[derive(Debug, Clone)]
pub struct Rbd {
    ceph: Ceph,
}

impl Rbd {
    /// The libraries for the cluster of `ceph` (connected at the first
    /// call); `None` when they do not load.
    pub fn new(ceph: &Ceph) -> Option<Rbd> {
        api().ok()?;
        Some(Rbd { ceph: ceph.clone() })
    }

    fn key(&self) -> Key {
        (
            self.ceph.args().to_string(),
            self.ceph.conf.to_string_lossy().into_owned(),
            self.ceph.timeout,
        )
    }

    /// This process's connection, made now if there is none.
    fn conn(&self) -> std::result::Result<Arc<Conn>, (String, i32)> {
        let c = get_or_connect(&slot(self.key()), || connect(&self.ceph))?;
        static AT_EXIT: std::sync::Once = std::sync::Once::new();
        // SAFETY: registers a plain function with no arguments.
        AT_EXIT.call_once(|| unsafe {
            libc::atexit(shut_down_at_exit);
        });
        Ok(c)
    }

    /// Drop the connection (it was blocklisted: the next call makes a new
    /// one).
    fn drop_conn(&self, c: &Arc<Conn>) {
        let slot = slot(self.key());
        let mut s = slot.lock().unwrap_or_else(|e| e.into_inner());
        if s.conn.as_ref().is_some_and(|x| Arc::ptr_eq(x, c)) {
            s.conn = None;
        }
    }

    /// Run `f` with the connection on a thread of its own, waiting at
    /// most the timeout. A connection the cluster blocklisted (another
    /// instance fenced a lock this process took) is replaced once.
    fn call<T: Send + 'static>(
        &self,
        what: &str,
        f: impl Fn(&'static Api, &Conn) -> std::result::Result<T, (String, i32)> + Send + Sync + 'static,
    ) -> Result<T> {
        let me = self.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let f = Arc::new(f);
        std::thread::Builder::new()
            .name("rbd-lib".into())
            .spawn(move || {
                let run = || -> std::result::Result<T, (String, i32)> {
                    let a = api().map_err(|_| (String::new(), -libc::ENOSYS))?;
                    let c = me.conn()?;
                    match f(a, &c) {
                        Err((step, code)) if code == -libc::ESHUTDOWN => {
                            tracing::info!(
                                step,
                                "the Ceph connection of this process was blocklisted; connecting again"
                            );
                            me.drop_conn(&c);
                            let c = me.conn()?;
                            f(a, &c)
                        }
                        r => r,
                    }
                };
                let _ = tx.send(run());
            })
            .map_err(|e| Error::from_io(format!("starting {what}"), &e))?;
        match rx.recv_timeout(self.ceph.timeout) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err((step, code))) => {
                let what = if step.is_empty() {
                    what.to_string()
                } else {
                    format!("{what}: {step}")
                };
                Err(errno_error(&self.ceph, &what, code))
            }
            Err(_) => Err(self.ceph.unreachable(what)),
        }
    }

    /// This process's client and its addresses (`client.<n>`, `ip:port/nonce`
    /// list) once connected.
    pub fn own_client(&self) -> Option<(String, String)> {
        // (Waits while it is being made: a fence must never miss this
        // process's own connection.)
        let slot = slot(self.key());
        let s = slot.lock().unwrap_or_else(|e| e.into_inner());
        s.conn.as_ref().map(|c| (c.client.clone(), c.addrs.clone()))
    }

    /// The size and creation time (`ctime` text, as `rbd info` shows it)
    /// of `pool/image`.
    pub fn stat(&self, pool: &str, image: &str) -> Result<(u64, String)> {
        let (p, i) = (cstr("pool", pool)?, cstr("image", image)?);
        self.call(&format!("rbd info {pool}/{image} (librbd)"), move |a, c| {
            with_image(a, c, &p, &i, false, |img| {
                let mut size = 0u64;
                // SAFETY: an open image and a valid out pointer.
                check("get size", unsafe { (a.rbd_get_size)(img, &mut size) })?;
                let mut ts = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                // SAFETY: as above.
                let r = unsafe { (a.rbd_get_create_timestamp)(img, &mut ts) };
                let created = if r == 0 && ts.tv_sec > 0 {
                    ctime(ts.tv_sec)
                } else {
                    String::new()
                };
                Ok((size, created))
            })
        })
    }

    /// The image metadata of `pool/image`, every key.
    pub fn metadata(&self, pool: &str, image: &str) -> Result<BTreeMap<String, String>> {
        let (p, i) = (cstr("pool", pool)?, cstr("image", image)?);
        self.call(
            &format!("rbd image-meta list {pool}/{image} (librbd)"),
            move |a, c| {
                with_image(a, c, &p, &i, false, |img| {
                    let start = c"";
                    let (_, bufs, lens) = with_buffers([4096, 4096], |b, l| {
                        let [kb, vb] = b;
                        let [kl, vl] = l;
                        // SAFETY: buffers of the lengths given.
                        unsafe {
                            (a.rbd_metadata_list)(
                                img,
                                start.as_ptr(),
                                0,
                                kb.as_mut_ptr().cast(),
                                kl,
                                vb.as_mut_ptr().cast(),
                                vl,
                            )
                        }
                    })
                    .map_err(|e| ("list metadata".to_string(), e))?;
                    let keys = split_nul(&bufs[0], lens[0]);
                    let vals = split_nul(&bufs[1], lens[1]);
                    Ok(keys.into_iter().zip(vals).collect())
                })
            },
        )
    }

    /// Set `pairs` in the image metadata of `pool/image` (one open).
    pub fn set_metadata(&self, pool: &str, image: &str, pairs: &[(String, String)]) -> Result<()> {
        let (p, i) = (cstr("pool", pool)?, cstr("image", image)?);
        let pairs = pairs
            .iter()
            .map(|(k, v)| Ok((cstr("key", k)?, cstr("value", v)?)))
            .collect::<Result<Vec<_>>>()?;
        self.call(
            &format!("rbd image-meta set {pool}/{image} (librbd)"),
            move |a, c| {
                with_image(a, c, &p, &i, true, |img| {
                    for (k, v) in &pairs {
                        // SAFETY: an open image, NUL-terminated strings.
                        check(&format!("set {}", k.to_string_lossy()), unsafe {
                            (a.rbd_metadata_set)(img, k.as_ptr(), v.as_ptr())
                        })?;
                    }
                    Ok(())
                })
            },
        )
    }

    /// Make `pool/image` of `size` bytes with `features` (format 2, the
    /// default object size).
    pub fn create(&self, pool: &str, image: &str, size: u64, features: u64) -> Result<()> {
        let (p, i) = (cstr("pool", pool)?, cstr("image", image)?);
        self.call(
            &format!("rbd create {pool}/{image} (librbd)"),
            move |a, c| {
                let io = pool_of(a, c, &p)?;
                let mut order: c_int = 0;
                // SAFETY: a pool handle, a NUL-terminated name, an out pointer.
                check("create", unsafe {
                    (a.rbd_create2)(io.0, i.as_ptr(), size, features, &mut order)
                })
            },
        )
    }

    /// The locks of `pool/image`.
    pub fn lockers(&self, pool: &str, image: &str) -> Result<Vec<Locker>> {
        let (p, i) = (cstr("pool", pool)?, cstr("image", image)?);
        self.call(
            &format!("rbd lock ls {pool}/{image} (librbd)"),
            move |a, c| {
                with_image(a, c, &p, &i, false, |img| {
                    let mut exclusive: c_int = 0;
                    let (n, bufs, lens) = with_buffers([256, 1024, 1024, 1024], |b, l| {
                        let [tb, cb, kb, ab] = b;
                        let [tl, cl, kl, al] = l;
                        // SAFETY: buffers of the lengths given.
                        unsafe {
                            (a.rbd_list_lockers)(
                                img,
                                &mut exclusive,
                                tb.as_mut_ptr().cast(),
                                tl,
                                cb.as_mut_ptr().cast(),
                                cl,
                                kb.as_mut_ptr().cast(),
                                kl,
                                ab.as_mut_ptr().cast(),
                                al,
                            ) as i64
                        }
                    })
                    .map_err(|e| ("list lockers".to_string(), e))?;
                    if n == 0 {
                        return Ok(Vec::new());
                    }
                    let clients = split_nul(&bufs[1], lens[1]);
                    let cookies = split_nul(&bufs[2], lens[2]);
                    let addrs = split_nul(&bufs[3], lens[3]);
                    Ok(cookies
                        .into_iter()
                        .zip(clients)
                        .enumerate()
                        .map(|(n, (id, locker))| Locker {
                            id,
                            locker,
                            address: addrs.get(n).cloned().unwrap_or_default(),
                        })
                        .collect())
                })
            },
        )
    }

    /// Take the exclusive advisory lock `id` of `pool/image` (what `rbd
    /// lock add` does).
    pub fn lock(&self, pool: &str, image: &str, id: &str) -> Result<()> {
        let (p, i, k) = (
            cstr("pool", pool)?,
            cstr("image", image)?,
            cstr("lock", id)?,
        );
        self.call(
            &format!("rbd lock add {pool}/{image} {id} (librbd)"),
            move |a, c| {
                with_image(a, c, &p, &i, true, |img| {
                    // SAFETY: an open image, a NUL-terminated cookie.
                    check("lock", unsafe { (a.rbd_lock_exclusive)(img, k.as_ptr()) })
                })
            },
        )
    }

    /// Remove the lock `id` of `locker` from `pool/image` (what `rbd lock
    /// rm` does): released when this connection holds it, else broken.
    pub fn unlock(&self, pool: &str, image: &str, id: &str, locker: &str) -> Result<()> {
        let (p, i) = (cstr("pool", pool)?, cstr("image", image)?);
        let (k, l) = (cstr("lock", id)?, cstr("locker", locker)?);
        let locker = locker.to_string();
        self.call(
            &format!("rbd lock rm {pool}/{image} {id} {locker} (librbd)"),
            move |a, c| {
                with_image(a, c, &p, &i, true, |img| {
                    if locker == c.client {
                        // SAFETY: an open image, a NUL-terminated cookie.
                        check("unlock", unsafe { (a.rbd_unlock)(img, k.as_ptr()) })
                    } else {
                        // SAFETY: as above.
                        check("break lock", unsafe {
                            (a.rbd_break_lock)(img, l.as_ptr(), k.as_ptr())
                        })
                    }
                })
            },
        )
    }

    /// The omap of `pool/object`; `None` when the object does not exist.
    pub fn omap(&self, pool: &str, object: &str) -> Result<Option<BTreeMap<String, String>>> {
        let (p, o) = (cstr("pool", pool)?, cstr("object", object)?);
        let r = self.call(
            &format!("rados -p {pool} listomapvals {object} (librados)"),
            move |a, c| {
                let io = pool_of(a, c, &p)?;
                let mut map = BTreeMap::new();
                let mut after = CString::default();
                loop {
                    let (page, more) = omap_page(a, io.0, &o, &after)?;
                    let last = page.last().map(|(k, _)| k.clone());
                    map.extend(page);
                    match (more, last) {
                        (true, Some(k)) => after = CString::new(k).unwrap_or_default(),
                        _ => return Ok(map),
                    }
                }
            },
        );
        match r {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.kind() == Kind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Set `key` to `value` in the omap of `pool/object` (made if needed).
    pub fn omap_set(&self, pool: &str, object: &str, key: &str, value: &str) -> Result<()> {
        let (p, o) = (cstr("pool", pool)?, cstr("object", object)?);
        let (k, v) = (cstr("key", key)?, value.as_bytes().to_vec());
        self.call(
            &format!("rados -p {pool} setomapval {object} {key} (librados)"),
            move |a, c| {
                let io = pool_of(a, c, &p)?;
                let keys = [k.as_ptr()];
                let vals = [v.as_ptr().cast::<c_char>()];
                let lens = [v.len()];
                write_op(a, io.0, &o, |op| {
                    // SAFETY: arrays of one key, one value and its length,
                    // alive until the operation ran.
                    unsafe {
                        (a.rados_write_op_omap_set)(
                            op,
                            keys.as_ptr(),
                            vals.as_ptr(),
                            lens.as_ptr(),
                            1,
                        )
                    }
                })
            },
        )
    }

    /// Remove `key` from the omap of `pool/object`.
    pub fn omap_rm(&self, pool: &str, object: &str, key: &str) -> Result<()> {
        let (p, o, k) = (
            cstr("pool", pool)?,
            cstr("object", object)?,
            cstr("key", key)?,
        );
        self.call(
            &format!("rados -p {pool} rmomapkey {object} {key} (librados)"),
            move |a, c| {
                let io = pool_of(a, c, &p)?;
                let keys = [k.as_ptr()];
                write_op(a, io.0, &o, |op| {
                    // SAFETY: an array of one key, alive until the
                    // operation ran.
                    unsafe { (a.rados_write_op_omap_rm_keys)(op, keys.as_ptr(), 1) }
                })
            },
        )
    }
}

/// The addresses of a client as Ceph prints them: `ip:port/nonce`, or
/// a vector `[v2:ip:port/nonce,v1:...]` (`rados_getaddrs`).
fn client_addrs(s: &str) -> Vec<&str> {
    s.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .map(|a| {
            let a = a.trim();
            ["v1:", "v2:", "any:"]
                .iter()
                .find_map(|p| a.strip_prefix(p))
                .unwrap_or(a)
        })
        .filter(|a| !a.is_empty())
        .collect()
}

/// Whether the address `addr` (of a lock or a watcher) is one of the
/// client addresses `own`.
pub fn same_client_addr(addr: &str, own: &str) -> bool {
    let own = client_addrs(own);
    client_addrs(addr).iter().any(|a| own.contains(a))
}

/// `r` as a step result: `Err((step, r))` when negative.
fn check(step: &str, r: c_int) -> std::result::Result<(), (String, i32)> {
    if r < 0 {
        Err((step.to_string(), r))
    } else {
        Ok(())
    }
}

/// `ctime(3)` of `secs` without its newline: what `rbd info` shows as
/// `create_timestamp`.
fn ctime(secs: libc::time_t) -> String {
    let mut buf = [0 as c_char; 64];
    // SAFETY: ctime_r writes at most 26 bytes into a buffer of 64.
    let p = unsafe { libc::ctime_r(&secs, buf.as_mut_ptr()) };
    if p.is_null() {
        return String::new();
    }
    // SAFETY: ctime_r NUL-terminates what it wrote.
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .trim_end()
        .to_string()
}

/// Connect to the cluster of `ceph`.
fn connect(ceph: &Ceph) -> std::result::Result<Conn, (String, i32)> {
    let a = api().map_err(|_| ("loading librados".to_string(), -libc::ENOSYS))?;
    let args = split_args(ceph.args());
    let bad = |what: &str| (format!("{what} holds a NUL byte"), -libc::EINVAL);
    let cluster_name = CString::new(args.cluster.clone()).map_err(|_| bad("--cluster"))?;
    let name = CString::new(args.name.clone()).map_err(|_| bad("the client name"))?;
    let mut h: RadosT = std::ptr::null_mut();
    // SAFETY: an out pointer and NUL-terminated names.
    check("create a cluster handle", unsafe {
        (a.rados_create2)(&mut h, cluster_name.as_ptr(), name.as_ptr(), 0)
    })
    .map_err(|(s, r)| (format!("{s} for {}", args.name), r))?;
    // From here the handle is shut down on every way out.
    let mut conn = Conn {
        cluster: Handle(h),
        pools: Default::default(),
        client: String::new(),
        addrs: String::new(),
    };
    let set = |k: &str, v: &str| -> c_int {
        let (k, v) = (
            CString::new(k).unwrap_or_default(),
            CString::new(v).unwrap_or_default(),
        );
        // SAFETY: a handle not yet connected, NUL-terminated strings.
        unsafe { (a.rados_conf_set)(h, k.as_ptr(), v.as_ptr()) }
    };
    // Nothing on this process's stdout or stderr, no log file.
    let quiet = || {
        for (k, v) in [
            ("log_to_stderr", "false"),
            ("err_to_stderr", "false"),
            ("log_to_file", "false"),
            ("log_file", ""),
            ("log_to_syslog", "false"),
            ("err_to_syslog", "false"),
        ] {
            let _ = set(k, v);
        }
    };
    quiet();
    if ceph.conf.exists() {
        let conf = CString::new(ceph.conf.to_string_lossy().into_owned())
            .map_err(|_| bad("the conf path"))?;
        // SAFETY: as above.
        check(&format!("read {}", ceph.conf.display()), unsafe {
            (a.rados_conf_read_file)(h, conf.as_ptr())
        })?;
    }
    if !args.rest.is_empty() {
        let words = args
            .rest
            .iter()
            .map(|w| CString::new(w.as_str()))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|_| bad("the Ceph arguments"))?;
        let mut argv: Vec<*const c_char> = vec![c"rexray".as_ptr()];
        argv.extend(words.iter().map(|w| w.as_ptr()));
        // SAFETY: argc pointers to NUL-terminated strings, alive here.
        check("parse the Ceph arguments", unsafe {
            (a.rados_conf_parse_argv)(h, argv.len() as c_int, argv.as_ptr())
        })?;
    }
    quiet();
    let secs = ceph.timeout.as_secs_f64().max(1.0).ceil().to_string();
    for k in [
        "rados_osd_op_timeout",
        "rados_mon_op_timeout",
        "client_mount_timeout",
    ] {
        check(&format!("set {k}"), set(k, &secs))?;
    }
    // A lock this process breaks is only removed; fencing a holder is
    // the driver's explicit blocklist (see RbdDriver::fence), so no other
    // rexray process loses its connection to a lock removal.
    let _ = set("rbd_blocklist_on_break_lock", "false");
    // SAFETY: a configured handle.
    check("connect", unsafe { (a.rados_connect)(h) })?;
    // SAFETY: a connected handle.
    let id = unsafe { (a.rados_get_instance_id)(h) };
    let mut p: *mut c_char = std::ptr::null_mut();
    // SAFETY: an out pointer; the string is malloc'ed, freed here.
    let addrs = if unsafe { (a.rados_getaddrs)(h, &mut p) } == 0 && !p.is_null() {
        // SAFETY: a NUL-terminated string from librados.
        let s = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
        // SAFETY: malloc'ed by librados (strdup).
        unsafe { libc::free(p.cast()) };
        s
    } else {
        String::new()
    };
    conn.client = format!("client.{id}");
    conn.addrs = addrs;
    Ok(conn)
}

/// The pool handle of `pool`, made at its first use.
fn pool_of(
    a: &Api,
    c: &Conn,
    pool: &CStr,
) -> std::result::Result<Arc<Handle<IoctxT>>, (String, i32)> {
    let name = pool.to_string_lossy().into_owned();
    let mut pools = c.pools.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(io) = pools.get(&name) {
        return Ok(io.clone());
    }
    let mut io: IoctxT = std::ptr::null_mut();
    // SAFETY: a connected handle, a NUL-terminated name, an out pointer.
    check(&format!("open pool {name}"), unsafe {
        (a.rados_ioctx_create)(c.cluster.0, pool.as_ptr(), &mut io)
    })?;
    let io = Arc::new(Handle(io));
    pools.insert(name, io.clone());
    Ok(io)
}

/// Run `f` on `pool/image`, opened for this call (read-only: no watch)
/// and closed after.
fn with_image<T>(
    a: &Api,
    c: &Conn,
    pool: &CStr,
    image: &CStr,
    write: bool,
    f: impl FnOnce(ImageT) -> std::result::Result<T, (String, i32)>,
) -> std::result::Result<T, (String, i32)> {
    let io = pool_of(a, c, pool)?;
    let mut img: ImageT = std::ptr::null_mut();
    let open = if write {
        a.rbd_open
    } else {
        a.rbd_open_read_only
    };
    // SAFETY: a pool handle, a NUL-terminated name, no snapshot.
    check("open image", unsafe {
        open(io.0, image.as_ptr(), &mut img, std::ptr::null())
    })?;
    let r = f(img);
    // SAFETY: the image opened above, used by nothing else.
    unsafe { (a.rbd_close)(img) };
    r
}

/// Run a write operation that `add` fills on `object`.
fn write_op(
    a: &Api,
    io: IoctxT,
    object: &CStr,
    add: impl FnOnce(OpT),
) -> std::result::Result<(), (String, i32)> {
    // SAFETY: a new operation, released below.
    let op = unsafe { (a.rados_create_write_op)() };
    if op.is_null() {
        return Err(("create a write operation".into(), -libc::ENOMEM));
    }
    add(op);
    // SAFETY: a filled operation, a pool handle, a NUL-terminated name.
    let r = unsafe { (a.rados_write_op_operate)(op, io, object.as_ptr(), std::ptr::null_mut(), 0) };
    // SAFETY: the operation made above.
    unsafe { (a.rados_release_write_op)(op) };
    check("write omap", r)
}

/// One page of the omap of `object`, after the key `after`; whether
/// more follow.
#[allow(clippy::type_complexity)]
fn omap_page(
    a: &Api,
    io: IoctxT,
    object: &CStr,
    after: &CStr,
) -> std::result::Result<(Vec<(String, String)>, bool), (String, i32)> {
    // SAFETY: a new operation, released below.
    let op = unsafe { (a.rados_create_read_op)() };
    if op.is_null() {
        return Err(("create a read operation".into(), -libc::ENOMEM));
    }
    let mut iter: IterT = std::ptr::null_mut();
    let mut more: u8 = 0;
    let mut prval: c_int = 0;
    // SAFETY: out pointers alive until the operation ran.
    unsafe {
        (a.rados_read_op_omap_get_vals2)(
            op,
            after.as_ptr(),
            c"".as_ptr(),
            1000,
            &mut iter,
            &mut more,
            &mut prval,
        )
    };
    // SAFETY: a filled operation, a pool handle, a NUL-terminated name.
    let r = unsafe { (a.rados_read_op_operate)(op, io, object.as_ptr(), 0) };
    let mut out = Vec::new();
    if r >= 0 && prval >= 0 && !iter.is_null() {
        loop {
            let (mut k, mut v): (*mut c_char, *mut c_char) =
                (std::ptr::null_mut(), std::ptr::null_mut());
            let (mut kl, mut vl) = (0usize, 0usize);
            // SAFETY: the iterator of the operation that ran; the strings
            // stay valid until rados_omap_get_end.
            let n = unsafe { (a.rados_omap_get_next2)(iter, &mut k, &mut v, &mut kl, &mut vl) };
            if n < 0 || k.is_null() {
                break;
            }
            // SAFETY: key and value of the lengths librados gave.
            let key = unsafe { std::slice::from_raw_parts(k.cast::<u8>(), kl) };
            let val = if v.is_null() {
                &[][..]
            } else {
                // SAFETY: as above.
                unsafe { std::slice::from_raw_parts(v.cast::<u8>(), vl) }
            };
            out.push((
                String::from_utf8_lossy(key).into_owned(),
                String::from_utf8_lossy(val).into_owned(),
            ));
        }
    }
    if !iter.is_null() {
        // SAFETY: the iterator made by the operation, ended once.
        unsafe { (a.rados_omap_get_end)(iter) };
    }
    // SAFETY: the operation made above.
    unsafe { (a.rados_release_read_op)(op) };
    check("read omap", r)?;
    check("read omap values", prval)?;
    Ok((out, more != 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A cluster slow to connect holds up only its own calls; the calls
    /// that waited for a failed attempt share its failure (one attempt,
    /// not one each); a call after it tries again; a connection made is
    /// kept.
    #[test]
    fn one_attempt_per_cluster_at_a_time_and_none_across() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let slow: Arc<Mutex<Slot<u32>>> = Arc::default();
        let other: Arc<Mutex<Slot<u32>>> = Arc::default();
        let attempts = Arc::new(AtomicUsize::new(0));
        let (started_tx, started) = std::sync::mpsc::channel();
        let (go, go_rx) = std::sync::mpsc::channel::<()>();
        let first = {
            let (slow, attempts) = (slow.clone(), attempts.clone());
            std::thread::spawn(move || {
                get_or_connect(&slow, || {
                    attempts.fetch_add(1, SeqCst);
                    started_tx.send(()).unwrap();
                    go_rx.recv().unwrap();
                    Err(("connecting".to_string(), -libc::ETIMEDOUT))
                })
            })
        };
        started.recv().unwrap();
        // Another cluster answers at once meanwhile.
        assert_eq!(*get_or_connect(&other, || Ok(7)).unwrap(), 7);
        // Four more calls to the slow one wait for the attempt under way
        // (they began waiting before it failed, however late their
        // threads run).
        let asked = Instant::now();
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let (slow, attempts) = (slow.clone(), attempts.clone());
                std::thread::spawn(move || {
                    get_or_connect_since(&slow, asked, || {
                        attempts.fetch_add(1, SeqCst);
                        Ok(1)
                    })
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20));
        go.send(()).unwrap();
        assert_eq!(first.join().unwrap().unwrap_err().1, -libc::ETIMEDOUT);
        for w in waiters {
            assert_eq!(w.join().unwrap().unwrap_err().1, -libc::ETIMEDOUT);
        }
        assert_eq!(attempts.load(SeqCst), 1, "one attempt for five calls");
        // A call that comes after the failure tries again, and keeps it.
        assert_eq!(*get_or_connect(&slow, || Ok(2)).unwrap(), 2);
        assert_eq!(*get_or_connect(&slow, || Ok(3)).unwrap(), 2);
    }

    #[test]
    fn the_client_and_cluster_come_from_the_arguments() {
        let a = split_args("--conf /x/ceph.conf --id rexray --keyring /k -m 127.0.0.1:3300");
        assert_eq!(a.name, "client.rexray");
        assert_eq!(a.cluster, "ceph");
        assert_eq!(a.rest, ["--keyring", "/k", "-m", "127.0.0.1:3300"]);
        let a = split_args("--name=client.x --cluster=c2 -c=/y.conf --mon_host=h");
        assert_eq!(a.name, "client.x");
        assert_eq!(a.cluster, "c2");
        assert_eq!(a.rest, ["--mon_host=h"]);
        let a = split_args("");
        assert_eq!(a.name, "client.admin");
        assert!(a.rest.is_empty());
        assert_eq!(split_args("-n admin").name, "client.admin");
    }

    #[test]
    fn a_client_address_is_matched_in_either_form() {
        let own = "[v2:127.0.0.1:0/3211,v1:127.0.0.1:0/3211]";
        assert!(same_client_addr("127.0.0.1:0/3211", own));
        assert!(same_client_addr("127.0.0.1:0/3211", "127.0.0.1:0/3211"));
        assert!(!same_client_addr("127.0.0.1:0/3212", own));
        assert!(!same_client_addr("", own));
        assert!(!same_client_addr("127.0.0.1:0/3211", ""));
    }

    #[test]
    fn nul_separated_buffers_are_split() {
        // Each string ends in a NUL; the length counts what was filled.
        assert_eq!(split_nul(b"a\0bc\0\0\0\0", 5), ["a", "bc"]);
        assert_eq!(split_nul(b"a\0bc\0\0\0\0", 6), ["a", "bc", ""]);
        assert_eq!(split_nul(b"\0\0", 0), Vec::<String>::new());
        assert_eq!(split_nul(b"x\0", 2), ["x"]);
        // A length past the buffer is cut to it.
        assert_eq!(split_nul(b"x\0y\0", 99), ["x", "y"]);
        assert_eq!(split_nul(b"\0y\0", 3), ["", "y"]);
    }

    #[test]
    fn a_short_buffer_is_grown_to_the_size_asked_for() {
        let mut calls = 0;
        let (n, bufs, lens) = with_buffers([2, 1], |b, l| {
            calls += 1;
            if b[0].len() < 10 {
                l[0] = 10;
                l[1] = 0;
                return -(libc::ERANGE as i64);
            }
            b[0][..3].copy_from_slice(b"ab\0");
            l[0] = 3;
            l[1] = 0;
            1i64
        })
        .unwrap();
        assert_eq!((n, calls), (1, 2));
        assert_eq!(bufs[0].len(), 10);
        assert_eq!(split_nul(&bufs[0], lens[0]), ["ab"]);
        // Another error is returned as it is; an endless -ERANGE stops.
        assert_eq!(with_buffers([1], |_, _| -5i64).unwrap_err(), -5);
        assert_eq!(
            with_buffers([1], |_, _| -(libc::ERANGE as i64)).unwrap_err(),
            -libc::ERANGE
        );
    }

    #[test]
    fn errors_carry_errno_and_the_step() {
        let c = Ceph::new("--conf /c/ceph.conf", Duration::from_secs(1)).unwrap();
        let e = errno_error(&c, "rbd info rbd/x (librbd)", -libc::ENOENT);
        assert_eq!(e.kind(), Kind::NotFound);
        assert_eq!(
            e.message(),
            "rbd info rbd/x (librbd) failed (cluster of /c/ceph.conf): (2) No such file or directory"
        );
        assert_eq!(errno_error(&c, "x", -libc::EBUSY).kind(), Kind::InUse);
        assert_eq!(
            errno_error(&c, "x", -libc::EEXIST).kind(),
            Kind::AlreadyExists
        );
        assert_eq!(errno_error(&c, "x", -libc::EPERM).kind(), Kind::Backend);
        let e = errno_error(&c, "x", -libc::ETIMEDOUT);
        assert!(e.message().contains("did not answer"), "{e}");
        assert!(cstr("image", "a\0b").is_err());
        assert_eq!(Mode::parse("AUTO").unwrap(), Mode::Auto);
        assert_eq!(Mode::parse("off").unwrap(), Mode::Off);
        assert_eq!(
            Mode::parse("sometimes").unwrap_err().kind(),
            Kind::InvalidInput
        );
        assert!(!Mode::Off.uses_library());
    }

    #[test]
    fn ctime_is_what_rbd_info_shows() {
        let s = ctime(0);
        // `Thu Jan  1 00:00:00 1970` in UTC; another zone moves the time.
        assert_eq!(s.len(), 24, "{s:?}");
        assert!(s.ends_with("1970") || s.ends_with("1969"), "{s:?}");
    }

    /// A cluster that does not answer: the call ends within its bound,
    /// naming the cluster, and prints nothing.
    #[test]
    fn an_unreachable_cluster_is_reported_within_the_timeout() {
        if available().is_err() {
            eprintln!("skipped: {}", available().unwrap_err());
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("ceph.conf");
        // A monitor address nothing listens on; no keyring needed to fail.
        std::fs::write(
            &conf,
            "[global]\nmon_host = 127.0.0.1:9\nauth_client_required = none\n",
        )
        .unwrap();
        let ceph = Ceph::new(
            &format!("--conf {} --id nobody", conf.display()),
            Duration::from_secs(2),
        )
        .unwrap();
        let rbd = Rbd::new(&ceph).unwrap();
        let t = Instant::now();
        let e = rbd.stat("rbd", "x").unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());
        assert!(e.message().contains(&conf.display().to_string()), "{e}");
        assert!(rbd.own_client().is_none());
    }
}
