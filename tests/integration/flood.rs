//! A flood of connections that never finish their headers, or never send
//! anything, against `rexray service start`: real requests are still
//! served, the service's descriptors stay bounded, and stalled and idle
//! connections are closed after their timeouts.
//!
//! The service starts with an open-files limit of 512, hard limit 1024 (it
//! raises its own to the hard limit) and is flooded with 2,000
//! connections, more than either.

use crate::common::*;
use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Connections in a flood.
const FLOOD: usize = 2000;
/// The service's connection cap in these tests.
const CAP: usize = 256;
/// Descriptors the service holds besides its connections (listener,
/// epoll, logs, pid file, stdio) plus connections being closed.
const OTHER_FDS: usize = 64;
/// The start of a request that never ends.
const SLOW: &[u8] = b"POST /VolumeDriver.List HTTP/1.1\r\nHost: plugin\r\nContent-Len";

/// Raise this process's open-files limit so it can hold a flood.
fn raise_own_nofile(want: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft >= want {
        return;
    }
    let hard = hard.max(want);
    setrlimit(Resource::RLIMIT_NOFILE, want, hard).unwrap_or_else(|e| {
        panic!(
            "raising the open-files limit to {want} (needs root above the hard limit {hard}): {e}"
        )
    });
}

/// `rexray service start` with an open-files limit of 512 (hard limit
/// 1024), stopped by its PID.
struct Svc {
    child: Option<Child>,
    log: PathBuf,
}

impl Svc {
    fn start(home: &Home, host: &str, extra: &[(&str, &str)]) -> Svc {
        let log = home.dir.join("service.log");
        let out = std::fs::File::create(&log).unwrap();
        let mut c = home.command("rexray");
        c.args(["service", "start", "-l", "info"])
            .env("REXRAY_MODULES_DEFAULT_DOCKER_HOST", host)
            .stdout(Stdio::null())
            .stderr(out);
        for (k, v) in extra {
            c.env(k, v);
        }
        // SAFETY: setrlimit is async-signal-safe.
        unsafe {
            c.pre_exec(|| {
                nix::sys::resource::setrlimit(
                    nix::sys::resource::Resource::RLIMIT_NOFILE,
                    512,
                    1024,
                )
                .map_err(std::io::Error::from)
            });
        }
        let mut child = c.spawn().expect("spawn rexray service");
        let url = home.dir.join("var/run/rexray.url");
        let deadline = Instant::now() + Duration::from_secs(60);
        let svc = loop {
            if let Some(st) = child.try_wait().unwrap() {
                panic!(
                    "service exited at start ({st}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if url.exists() {
                break Svc {
                    child: Some(child),
                    log,
                };
            }
            if Instant::now() > deadline {
                crate::docker::sigkill(child.id());
                let _ = child.wait();
                panic!("service not ready within 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        svc
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The service's soft open-files limit.
    fn nofile(&self) -> String {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.pid())).unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap()
            .to_string();
        line.split_whitespace().nth(3).unwrap().to_string()
    }

    /// Descriptors the service holds.
    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count()
    }

    /// SIGTERM, bounded wait, SIGKILL; the exit code.
    fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st.code();
            }
            if Instant::now() > deadline {
                crate::docker::sigkill(child.id());
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Svc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A connected stream of either kind.
trait Stream: Read + Write + AsRawFd {}
impl Stream for TcpStream {}
impl Stream for UnixStream {}

/// Connect to a unix socket without blocking past `deadline` (a full
/// listen queue makes a blocking connect wait until the server accepts).
fn connect_unix(path: &Path, deadline: Instant) -> Option<UnixStream> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: a zeroed sockaddr_un filled with a path shorter than sun_path.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let p = path.as_os_str().as_bytes();
    assert!(p.len() < addr.sun_path.len());
    for (d, s) in addr.sun_path.iter_mut().zip(p) {
        *d = *s as libc::c_char;
    }
    loop {
        // SAFETY: a new socket, owned at once.
        let fd = unsafe {
            libc::socket(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        // SAFETY: fd is ours.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: connect with a valid address of the given length.
        let r = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_un).cast(),
                std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
            )
        };
        if r == 0 {
            let s = UnixStream::from(fd);
            s.set_nonblocking(false).unwrap();
            return Some(s);
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EAGAIN) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        return None;
    }
}

/// Where the service listens.
#[derive(Clone)]
enum Addr {
    Tcp(String),
    Unix(PathBuf),
}

impl Addr {
    fn connect(&self, deadline: Instant) -> Option<Box<dyn Stream>> {
        match self {
            Addr::Tcp(a) => {
                let left = deadline.saturating_duration_since(Instant::now());
                let left = left.max(Duration::from_millis(100));
                TcpStream::connect_timeout(&a.parse().unwrap(), left)
                    .ok()
                    .map(|s| Box::new(s) as Box<dyn Stream>)
            }
            Addr::Unix(p) => connect_unix(p, deadline).map(|s| Box::new(s) as Box<dyn Stream>),
        }
    }
}

/// Open up to `n` connections within 60 s; every other one sends the start
/// of a request and stalls, the others send nothing.
fn flood(addr: &Addr, n: usize) -> Vec<Box<dyn Stream>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let Some(mut s) = addr.connect(deadline) else {
            break;
        };
        if i % 2 == 0 {
            // The server may already have closed it to make room.
            let _ = s.write_all(SLOW);
        }
        conns.push(s);
        if Instant::now() > deadline {
            break;
        }
    }
    conns
}

/// Send one request on `s` and read its reply (status, body) within 30 s.
fn request(s: &mut dyn Stream, path: &str, body: &str, close: bool) -> (u16, String) {
    set_read_timeout(s, Some(Duration::from_secs(30)));
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: plugin\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n{body}",
        body.len(),
        if close { "close" } else { "keep-alive" }
    )
    .unwrap_or_else(|e| panic!("sending {path}: {e}"));
    let mut r = BufReader::new(ReadOne(s));
    let (line, fields) =
        read_head(&mut r).unwrap_or_else(|e| panic!("reading the reply to {path}: {e}"));
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no reply to {path}: {line:?}"))
        .parse()
        .unwrap();
    let len: usize = header(&fields, "content-length").map_or(0, |v| v.parse().unwrap());
    let mut b = vec![0u8; len];
    r.read_exact(&mut b).unwrap();
    (status, String::from_utf8(b).unwrap())
}

/// Reads a byte at a time, so a keep-alive reply is read exactly and
/// nothing of the stream is left in a buffer.
struct ReadOne<'a>(&'a mut dyn Stream);
impl Read for ReadOne<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(1);
        self.0.read(&mut buf[..n])
    }
}

fn set_read_timeout(s: &dyn Stream, t: Option<Duration>) {
    // The same socket option for both kinds.
    let fd = s.as_raw_fd();
    // SAFETY: borrowed for the call; forgotten, not closed.
    let u = std::mem::ManuallyDrop::new(unsafe { UnixStream::from_raw_fd(fd) });
    u.set_read_timeout(t).unwrap();
}

/// Whether the server closed `s` (end of file or reset; not "no data yet").
fn closed(s: &mut dyn Stream) -> bool {
    let fd = s.as_raw_fd();
    let mut b = [0u8; 64];
    // SAFETY: a non-blocking peek into a local buffer.
    let n = unsafe {
        libc::recv(
            fd,
            b.as_mut_ptr().cast(),
            b.len(),
            libc::MSG_DONTWAIT | libc::MSG_PEEK,
        )
    };
    if n == 0 {
        return true;
    }
    if n > 0 {
        // A reply (a 408, say) arrived: read it, then look again.
        let _ = s.read(&mut b);
        return false;
    }
    let e = std::io::Error::last_os_error();
    e.kind() != std::io::ErrorKind::WouldBlock
}

/// Wait (at most `bound`) until the server closed every connection; the
/// number still open.
fn wait_closed(conns: &mut [Box<dyn Stream>], bound: Duration) -> usize {
    let deadline = Instant::now() + bound;
    loop {
        let open = conns
            .iter_mut()
            .map(|s| !closed(&mut **s))
            .filter(|o| *o)
            .count();
        if open == 0 || Instant::now() > deadline {
            return open;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The flood, a real request during it, the service's descriptors, and
/// the timeouts, on one endpoint.
fn flood_then_timeouts(svc: &Svc, addr: &Addr) {
    // The service raised its soft limit to the hard one.
    assert_eq!(svc.nofile(), "1024");
    let mut conns = flood(addr, FLOOD);
    eprintln!("flood: {} connections opened", conns.len());
    // (b) The service holds no more than the cap, whatever the flood.
    let fds = svc.fds();
    assert!(
        fds <= CAP + OTHER_FDS,
        "the service holds {fds} descriptors during a flood of {} connections (cap {CAP}): {}",
        conns.len(),
        svc.log_text()
    );
    // (a) A real request is served while the flood is open.
    let mut s = addr
        .connect(Instant::now() + Duration::from_secs(30))
        .unwrap_or_else(|| panic!("could not connect during the flood: {}", svc.log_text()));
    let (status, body) = request(&mut *s, "/VolumeDriver.List", "{}", true);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"Volumes\""), "{body}");
    let fds = svc.fds();
    assert!(fds <= CAP + OTHER_FDS, "{fds} descriptors after List");
    // Every flooding connection is closed by the server: made room for
    // newer ones, or timed out in its headers.
    let open = wait_closed(&mut conns, Duration::from_secs(30));
    assert_eq!(
        open,
        0,
        "{open} stalled connections still open: {}",
        svc.log_text()
    );
    drop(conns);

    // (c) Below the cap, connections stalled in their headers (or
    // sending nothing) are closed after the header timeout.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut few: Vec<Box<dyn Stream>> = (0..20)
        .map(|i| {
            let mut s = addr.connect(deadline).expect("connect");
            if i % 2 == 0 {
                s.write_all(SLOW).unwrap();
            }
            s
        })
        .collect();
    let open = wait_closed(&mut few, Duration::from_secs(30));
    assert_eq!(
        open, 0,
        "{open} of 20 stalled connections still open after 30 s (header timeout 1 s)"
    );

    // (d) A keep-alive connection outlives the header timeout while idle,
    // and is closed after the idle timeout; a new connection is served.
    let mut k = addr.connect(deadline).expect("connect");
    let (status, _) = request(&mut *k, "/Plugin.Activate", "", false);
    assert_eq!(status, 200);
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        !closed(&mut *k),
        "an idle keep-alive connection was closed at the header timeout, not the idle one"
    );
    let (status, _) = request(&mut *k, "/VolumeDriver.Capabilities", "", false);
    assert_eq!(status, 200);
    let mut ks = [k];
    let open = wait_closed(&mut ks, Duration::from_secs(40));
    assert_eq!(
        open, 0,
        "an idle keep-alive connection is still open after 40 s (idle timeout 8 s)"
    );
    let mut s = addr.connect(deadline).expect("connect");
    assert_eq!(request(&mut *s, "/Plugin.Activate", "", true).0, 200);
}

fn settings() -> [(&'static str, String); 3] {
    [
        ("REXRAY_MODULES_DEFAULT_DOCKER_HEADERTIMEOUT", "1s".into()),
        ("REXRAY_MODULES_DEFAULT_DOCKER_IDLETIMEOUT", "8s".into()),
        (
            "REXRAY_MODULES_DEFAULT_DOCKER_MAXCONNECTIONS",
            CAP.to_string(),
        ),
    ]
}

#[test]
fn a_tcp_flood_of_stalled_connections_starves_no_one_and_times_out() {
    raise_own_nofile(FLOOD as u64 + 512);
    let home = Home::new();
    let spec = home.dir.join("plugins/rexray.spec");
    let spec_s = spec.to_string_lossy().into_owned();
    let set = settings();
    let mut env: Vec<(&str, &str)> = set.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("REXRAY_MODULES_DEFAULT_DOCKER_SPEC", &spec_s));
    let mut svc = Svc::start(&home, "tcp://127.0.0.1:0", &env);
    let url = std::fs::read_to_string(&spec).unwrap();
    let addr = Addr::Tcp(url.trim().trim_start_matches("tcp://").to_string());
    flood_then_timeouts(&svc, &addr);
    assert_eq!(svc.stop(), Some(0), "{}", svc.log_text());
}

#[test]
fn a_unix_socket_flood_of_stalled_connections_starves_no_one_and_times_out() {
    raise_own_nofile(FLOOD as u64 + 512);
    let home = Home::new();
    let (host, sock) = unix_host(&home);
    let set = settings();
    let env: Vec<(&str, &str)> = set.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut svc = Svc::start(&home, &host, &env);
    flood_then_timeouts(&svc, &Addr::Unix(sock));
    assert_eq!(svc.stop(), Some(0), "{}", svc.log_text());
}

/// The service's CPU time so far, in clock ticks (user + system).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // After the command name (in parentheses, which may hold spaces):
    // state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn a_csi_socket_flood_of_idle_connections_evicts_itself_and_spares_calls_in_flight() {
    crate::require_root!();
    use rexray::csi::proto::controller_client::ControllerClient;
    raise_own_nofile(FLOOD as u64 + 512);
    let home = Home::new();
    let csi = home.dir.join("csi.sock");
    home.config(&format!(
        "libstorage:\n  service: loop\nrexray:\n  modules:\n    kube:\n      type: csi\n      host: unix://{}\n",
        csi.display()
    ));
    let (host, _) = unix_host(&home);
    // Each commit of the catalog takes 2 s (with the failpoints build), so
    // a create is in flight while the flood comes.
    let mut svc = Svc::start(
        &home,
        &host,
        &[("FAILPOINTS", "loop::catalog-before-commit=sleep(2000)")],
    );
    assert_eq!(svc.nofile(), "1024");
    // The cap: the open-files limit less the descriptors kept for calls.
    let cap = 1024 - 128;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let early = rt.block_on(crate::csi::channel(csi.clone()));
    let busy = rt.spawn(async move {
        ControllerClient::new(early)
            .create_volume(crate::csi::create_req("busy", 1 << 30))
            .await
    });
    std::thread::sleep(Duration::from_millis(300));
    // Connections that send nothing, more than the cap and the limit.
    let mut conns = Vec::new();
    let mut most = 0;
    for i in 0..FLOOD {
        match connect_unix(&csi, Instant::now() + Duration::from_secs(2)) {
            Some(s) => conns.push(s),
            None => break,
        }
        if i % 100 == 0 {
            most = most.max(svc.fds());
        }
    }
    assert_eq!(conns.len(), FLOOD, "a connection could not be made");
    most = most.max(svc.fds());
    assert!(
        most <= cap + OTHER_FDS,
        "the service held {most} descriptors (cap {cap})"
    );
    // Nothing spins: a spinning thread takes a whole core, 200 ticks in
    // 2 s. The flood's own work in that window (closing the connections
    // that sent nothing when their header timeout ends) measured up to
    // 64 on the shared 2-core machines, so the bound is half a core.
    let before = cpu_ticks(svc.pid());
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(svc.pid()) - before;
    assert!(used < 100, "the service used {used} ticks of CPU in 2 s");
    // A client that comes now is served (a flood connection makes room),
    // and the call in flight on the early connection was not cut.
    rt.block_on(async {
        let ch = tokio::time::timeout(Duration::from_secs(30), crate::csi::channel(csi.clone()))
            .await
            .expect("connecting to the csi socket within 30 s");
        let r = tokio::time::timeout(
            Duration::from_secs(60),
            ControllerClient::new(ch).create_volume(crate::csi::create_req("late", 1 << 30)),
        )
        .await
        .expect("a create answered within 60 s");
        assert!(r.is_ok(), "{r:?}");
        let r = tokio::time::timeout(Duration::from_secs(60), busy)
            .await
            .expect("the early create answered within 60 s")
            .unwrap();
        assert!(r.is_ok(), "the call in flight failed: {r:?}");
    });
    let log = svc.log_text();
    assert!(
        log.contains("closed the connection waiting the longest"),
        "{log}"
    );
    drop(conns);
    drop(rt);
    assert_eq!(svc.stop(), Some(0), "{}", svc.log_text());
    for v in ["busy", "late"] {
        home.rexray(&["volume", "rm", v]).ok();
    }
}
