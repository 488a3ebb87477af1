//! One libStorage server and several nodes on this machine: each node has
//! its own `REXRAY_HOME`, instance id and mount namespace (a persistent
//! `unshare --mount` namespace its commands enter with `nsenter`), and
//! reaches the loop service only through the server's unix socket.

use crate::common::*;
use crate::docker::Service;
use crate::require_root;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The controller: a `rexray service start` serving one loop service on a
/// unix socket, its images in `shared` (which the nodes see at the same
/// path, as shared storage would be).
struct Server {
    home: Home,
    svc: Option<Service>,
    sock: PathBuf,
    shared: PathBuf,
    extra: Vec<(String, String)>,
}

impl Server {
    fn start(extra: &[(&str, &str)]) -> Server {
        let home = Home::new();
        let sock = home.dir.join("ls.sock");
        let shared = home.dir.join("shared");
        home.config(&format!(
            "libstorage:\n  service: loop\n  server:\n    endpoints:\n      local:\n        address: unix://{}\n    services:\n      loop:\n        driver: loop\nloop:\n  volumePath: {}\n",
            sock.display(),
            shared.display()
        ));
        let mut s = Server {
            home,
            svc: None,
            sock,
            shared,
            extra: extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let (host, _) = unix_host(&self.home);
        let extra: Vec<(&str, &str)> = self
            .extra
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.svc = Some(Service::start(&self.home, &host, &extra));
    }

    fn log(&self) -> String {
        self.svc.as_ref().map(|s| s.log_text()).unwrap_or_default()
    }

    /// Wait for the server to die by itself (a failpoint), then start it
    /// again without failpoints.
    #[cfg(feature = "failpoints")]
    fn restart_after_crash(&mut self) {
        let mut svc = self.svc.take().expect("running");
        svc.wait_exit();
        self.extra.clear();
        self.spawn();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut s) = self.svc.take() {
            s.stop();
        }
    }
}

/// A node: a home whose controller operations go to the server, in a
/// mount namespace of its own.
pub(crate) struct Node {
    pub(crate) home: Home,
    ns: PathBuf,
}

impl Node {
    fn new(server: &Server) -> Node {
        let home = Home::new();
        home.config(&format!(
            "libstorage:\n  host: unix://{}\n  service: loop\nloop:\n  volumePath: {}\n",
            server.sock.display(),
            server.shared.display()
        ));
        Node::in_namespace(home)
    }

    /// `home` as a node in a mount namespace of its own.
    pub(crate) fn in_namespace(home: Home) -> Node {
        // A persistent namespace is a bind mount of /proc/PID/ns/mnt on a
        // file, which needs a parent mount that is not shared: the node's
        // directory, bound onto itself and made private.
        let nsdir = home.dir.join("ns");
        std::fs::create_dir_all(&nsdir).unwrap();
        run_cmd(Command::new("mount").args(["--bind", s(&nsdir), s(&nsdir)])).ok();
        run_cmd(Command::new("mount").args(["--make-private", s(&nsdir)])).ok();
        let ns = nsdir.join("mnt");
        std::fs::write(&ns, b"").unwrap();
        run_cmd(Command::new("unshare").args([
            &format!("--mount={}", ns.display()),
            "--propagation",
            "private",
            "true",
        ]))
        .ok();
        Node { home, ns }
    }

    /// A command of this node, run inside its mount namespace.
    pub(crate) fn command(&self, program: &str) -> Command {
        let inner = self.home.command(program);
        let mut c = Command::new("nsenter");
        c.arg(format!("--mount={}", self.ns.display()))
            .arg("--")
            .arg(inner.get_program());
        c.args(inner.get_args());
        c.env_clear();
        for (k, v) in inner.get_envs() {
            if let Some(v) = v {
                c.env(k, v);
            }
        }
        c.stdin(std::process::Stdio::null());
        c
    }

    pub(crate) fn rexray(&self, args: &[&str]) -> Out {
        run_cmd(self.command("rexray").args(args))
    }

    pub(crate) fn rexray_env(&self, env: &[(&str, &str)], args: &[&str]) -> Out {
        let mut c = self.command("rexray");
        for (k, v) in env {
            c.env(k, v);
        }
        run_cmd(c.args(args))
    }

    /// Run a shell line inside this node's namespace.
    pub(crate) fn sh(&self, line: &str) -> Out {
        run_cmd(Command::new("nsenter").args([
            &format!("--mount={}", self.ns.display()),
            "--",
            "sh",
            "-c",
            line,
        ]))
    }

    /// Mount points in this node's namespace under its home.
    pub(crate) fn mounts(&self) -> Vec<String> {
        let out = self.sh("cat /proc/self/mountinfo");
        out.ok()
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| Path::new(p).starts_with(&self.home.dir) && !p.ends_with("/ns"))
            .filter(|p| !p.ends_with("/ns/mnt"))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Abort the FUSE connections a failed test left (a fenced
        // rbd-fuse would hang every later look at its loop device),
        // unmount what is left inside the namespace, then let it go.
        abort_fuse_under(&self.sh("cat /proc/self/mountinfo").stdout, &self.home.dir);
        for m in self.mounts().iter().rev() {
            self.sh(&format!("umount -l '{m}'"));
        }
        let _ = Command::new("umount").arg(&self.ns).status();
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.home.dir.join("ns"))
            .status();
    }
}

/// Node A mounts and writes; node B is refused, then takes the volume
/// with preempt and sees A's data; the holder record follows; nothing is
/// left when both let go.
#[test]
fn a_volume_moves_between_nodes_through_the_server() {
    require_root!();
    let server = Server::start(&[]);
    let a = Node::new(&server);
    let b = Node::new(&server);

    a.rexray(&["volume", "create", "mh1", "--size", "1"]).ok();
    // Both nodes list the volume the server holds.
    assert!(b
        .rexray(&["volume", "ls", "mh1"])
        .ok()
        .contains("available"));
    let out = a.rexray(&["volume", "mount", "mh1"]);
    let path = out
        .ok()
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .last()
        .unwrap()
        .to_string();
    assert!(path.starts_with(s(&a.home.dir)), "{out:?}");
    a.sh(&format!("echo from-a > {path}/token && sync")).ok();
    // The mount is in A's namespace only.
    assert_eq!(a.mounts().len(), 1, "{:?}", a.mounts());
    assert!(b.mounts().is_empty());
    assert!(
        count_mounts_at(&a.home.mount_point("mh1")) == 0,
        "mount leaked into the host"
    );

    assert!(a.rexray(&["volume", "ls", "mh1"]).ok().contains("attached"));
    assert!(b
        .rexray(&["volume", "ls", "mh1"])
        .ok()
        .contains("unavailable"));
    let e = b.rexray(&["volume", "mount", "mh1"]).fails(1).to_string();
    assert!(
        e.contains("another instance") && e.contains("preempt"),
        "{e}"
    );
    let e = b.rexray(&["volume", "rm", "mh1"]).fails(1).to_string();
    assert!(e.contains("attached"), "{e}");
    assert!(b.mounts().is_empty());

    let out = b.rexray_env(
        &[(
            "LIBSTORAGE_INTEGRATION_VOLUME_OPERATIONS_MOUNT_PREEMPT",
            "true",
        )],
        &["volume", "mount", "mh1"],
    );
    let bpath = out
        .ok()
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .last()
        .unwrap()
        .to_string();
    assert_eq!(b.sh(&format!("cat {bpath}/token")).ok().trim(), "from-a");
    assert!(b.rexray(&["volume", "ls", "mh1"]).ok().contains("attached"));
    assert!(a
        .rexray(&["volume", "ls", "mh1"])
        .ok()
        .contains("unavailable"));
    assert!(server
        .log()
        .contains("taking the volume from another instance"));

    // A's unmount leaves B's hold alone; B's releases it.
    a.rexray(&["volume", "unmount", "mh1"]).ok();
    assert!(a.mounts().is_empty());
    assert_eq!(b.mounts().len(), 1);
    assert!(b.rexray(&["volume", "ls", "mh1"]).ok().contains("attached"));
    b.rexray(&["volume", "unmount", "mh1"]).ok();
    assert!(b.mounts().is_empty());
    assert!(a
        .rexray(&["volume", "ls", "mh1"])
        .ok()
        .contains("available"));
    assert!(
        loops_under(&server.shared).is_empty(),
        "{:?}",
        loops_under(&server.shared)
    );
    a.rexray(&["volume", "rm", "mh1"]).ok();
    assert!(b.rexray(&["volume", "ls", "-q"]).ok().is_empty());
}

/// flexrex and dvdcli of a node are clients of the server too.
#[test]
fn flexrex_and_dvdcli_on_a_node_use_the_server() {
    require_root!();
    let server = Server::start(&[]);
    let a = Node::new(&server);
    let b = Node::new(&server);
    let d = run_cmd(a.command("dvdcli").args([
        "mount",
        "--volumedriver=rexray",
        "--volumename=mh2",
        "--volumeopts=size=1",
    ]));
    let path = d.ok().trim().to_string();
    assert!(path.ends_with("/mh2/data"), "{d:?}");
    assert!(b
        .rexray(&["volume", "ls", "mh2"])
        .ok()
        .contains("unavailable"));
    let f = run_cmd(b.command("flexrex").args([
        "attach",
        r#"{"volumeID":"mh2","kubernetes.io/fsType":"ext4","kubernetes.io/pvOrVolumeName":"pv-mh2"}"#,
        "nodeb",
    ]));
    assert!(
        f.stdout.contains("Failure") && f.stdout.contains("attached to another node"),
        "{f:?}"
    );
    run_cmd(
        a.command("dvdcli")
            .args(["unmount", "--volumedriver=rexray", "--volumename=mh2"]),
    )
    .ok();
    let f = run_cmd(b.command("flexrex").args([
        "attach",
        r#"{"volumeID":"mh2","kubernetes.io/fsType":"ext4","kubernetes.io/pvOrVolumeName":"pv-mh2"}"#,
        "nodeb",
    ]));
    assert!(f.stdout.contains("Success"), "{f:?}");
    assert!(a
        .rexray(&["volume", "ls", "mh2"])
        .ok()
        .contains("unavailable"));
    let f = run_cmd(b.command("flexrex").args(["detach", "pv-mh2", "nodeb"]));
    assert!(f.stdout.contains("Success"), "{f:?}");
    a.rexray(&["volume", "rm", "mh2"]).ok();
    assert!(loops_under(&server.shared).is_empty());
    assert!(server.log().contains("serving the libStorage API"));
}

/// The server dies in the middle of an attach (after recording the
/// holder): the node's mount fails, and once the server is back the same
/// mount converges to one device, one mount, one consumer.
#[cfg(feature = "failpoints")]
#[test]
fn a_server_killed_mid_attach_converges_on_restart() {
    require_root!();
    let mut server = Server::start(&[]);
    let a = Node::new(&server);
    a.rexray(&["volume", "create", "mh3", "--size", "1"]).ok();
    if let Some(mut s) = server.svc.take() {
        s.stop();
    }
    server.extra = vec![(
        "FAILPOINTS".into(),
        "loop::attach-after-owner=return".into(),
    )];
    server.spawn();
    let e = a.rexray(&["volume", "mount", "mh3"]).fails(1).to_string();
    assert!(
        e.contains("did not answer") || e.contains("reaching"),
        "{e}"
    );
    server.restart_after_crash();
    a.rexray(&["volume", "mount", "mh3"]).ok();
    a.rexray(&["volume", "mount", "mh3"]).ok();
    assert_eq!(a.mounts().len(), 1, "{:?}", a.mounts());
    assert_eq!(loops_under(&server.shared).len(), 1);
    let rec = a.rexray(&["volume", "ls", "mh3", "--format", "json"]);
    assert!(
        rec.ok().contains("\"attachmentState\": 2") || rec.ok().contains("\"attachmentState\":2"),
        "{rec:?}"
    );
    a.rexray(&["volume", "unmount", "mh3"]).ok();
    assert!(a.mounts().is_empty());
    assert!(loops_under(&server.shared).is_empty());
    a.rexray(&["volume", "rm", "mh3"]).ok();
}

/// Two nodes, sixteen callers each, race to attach one volume: the
/// winners are all of one node, the losers are told another instance
/// holds it, and one device backs it.
#[test]
fn racing_nodes_leave_exactly_one_holder() {
    require_root!();
    let server = Server::start(&[]);
    let a = Node::new(&server);
    let b = Node::new(&server);
    a.rexray(&["volume", "create", "mh4", "--size", "1"]).ok();
    let nodes = [&a, &b];
    let results: Vec<(usize, Out)> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..32)
            .map(|i| {
                let n = nodes[i % 2];
                sc.spawn(move || (i % 2, n.rexray(&["volume", "attach", "mh4"])))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners: std::collections::BTreeSet<usize> = results
        .iter()
        .filter(|(_, o)| o.code == 0)
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(winners.len(), 1, "winners on both nodes: {results:#?}");
    let w = *winners.iter().next().unwrap();
    for (n, o) in &results {
        if *n != w {
            assert_eq!(o.code, 1, "{o:?}");
            assert!(o.stderr.contains("another instance"), "{o:?}");
        }
    }
    assert_eq!(loops_under(&server.shared).len(), 1);
    assert!(nodes[w]
        .rexray(&["volume", "ls", "mh4"])
        .ok()
        .contains("attached"));
    assert!(nodes[1 - w]
        .rexray(&["volume", "ls", "mh4"])
        .ok()
        .contains("unavailable"));
    nodes[w].rexray(&["volume", "detach", "mh4"]).ok();
    assert!(loops_under(&server.shared).is_empty());
    a.rexray(&["volume", "rm", "mh4"]).ok();
}
