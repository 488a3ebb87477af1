//! `rexray service start` as a libStorage server: a vfs service on a unix
//! socket and a TCP port, beside the Docker plugin socket, driven with raw
//! HTTP replaying the exchanges captured between the original 0.11.4 CLI
//! and server (`reference/libstorage-wire.md`, numbers in comments), and
//! with the library's own client.

use crate::common::*;
use crate::docker::{ok, post, Service};
use rexray::api::client::Client;
use rexray::storage::controller::{Controller, Executor};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The captured headers of the original CLI.
const VM: &str = "vfs:vfs=vm";
const DEVS: &str = "vfs=/dev/xvda::,/dev/xvdb::,/dev/xvdc::,/dev/xvdd::";
const TX: &str = "txID=c0a7bfc9-62fc-4426-75e9-8b497c3dcb0e, txCR=1796312870";
const VFS: &str = r#"{"vfs":{"name":"vfs","driver":{"name":"vfs","type":"object","nextDevice":{"ignore":true,"prefix":"","pattern":""}}}}"#;

/// Where the server listens.
#[derive(Clone)]
enum Target {
    Unix(PathBuf),
    Tcp(String),
}

/// One exchange's answer.
#[derive(Debug)]
struct Got {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Got {
    fn header(&self, k: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }
    #[track_caller]
    fn expect(&self, status: u16) -> &Self {
        assert_eq!(self.status, status, "{self:?}");
        if !self.body.is_empty() || status == 204 {
            let ct = self.header("content-type").unwrap_or("");
            assert!(
                ct == "application/json" || (status == 500 && ct.starts_with("text/plain")),
                "{self:?}"
            );
        }
        assert!(self.header("libstorage-servername").is_some(), "{self:?}");
        self
    }
}

/// One HTTP/1.1 exchange (connection closed after it).
fn http(t: &Target, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Got {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
        match t {
            Target::Unix(_) => "libstorage-server".to_string(),
            Target::Tcp(a) => a.clone(),
        }
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!("Content-Length: {}\r\n\r\n{b}", b.len()));
    } else {
        req.push_str("\r\n");
    }
    let raw = match t {
        Target::Unix(p) => exchange(std::os::unix::net::UnixStream::connect(p).unwrap(), &req),
        Target::Tcp(a) => exchange(std::net::TcpStream::connect(a).unwrap(), &req),
    };
    let mut r = BufReader::new(&raw[..]);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        if h.trim().is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').unwrap();
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let mut body = String::new();
    r.read_to_string(&mut body).unwrap();
    Got {
        status,
        headers,
        body,
    }
}

fn exchange<S: Read + Write>(mut s: S, req: &str) -> Vec<u8> {
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    out
}

/// A JSON value with our random ids and creation times taken out, to
/// compare with a captured one whose ids are the original's `vfs-NNN`.
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = serde_json::Map::new();
            for (k, x) in m {
                match k.as_str() {
                    "id" | "volumeID" if x.is_string() => {
                        out.insert(k.clone(), json!("<id>"));
                    }
                    "fields" => {
                        let mut f = x.as_object().cloned().unwrap_or_default();
                        f.remove("createdAt");
                        if !f.is_empty() {
                            out.insert(k.clone(), Value::Object(f));
                        }
                    }
                    _ => {
                        out.insert(k.clone(), shape(x));
                    }
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(shape).collect()),
        x => x.clone(),
    }
}

/// A volume map's one entry, shaped.
fn only(map: &Value) -> (String, Value) {
    let m = map.as_object().unwrap();
    assert_eq!(m.len(), 1, "{map}");
    let (id, v) = m.iter().next().unwrap();
    assert_eq!(v["id"], id.as_str());
    (id.clone(), shape(v))
}

fn captured(s: &str) -> Value {
    shape(&serde_json::from_str(s).unwrap())
}

/// A home whose service serves the libStorage API (vfs) on a unix socket
/// and a TCP port, and the Docker plugin on its own socket.
struct Server {
    home: Home,
    svc: Service,
    unix: Target,
    tcp: Target,
    tcp_addr: String,
    plugin: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn server() -> Server {
    let home = Home::new();
    let sock = home.dir.join("ls.sock");
    let port = free_port();
    home.config(&format!(
        "libstorage:\n  service: vfs\n  server:\n    endpoints:\n      a:\n        address: unix://{}\n      b:\n        address: tcp://127.0.0.1:{port}\n    services:\n      vfs:\n        driver: vfs\n",
        sock.display()
    ));
    let (host, plugin) = unix_host(&home);
    let svc = Service::start(&home, &host, &[]);
    let tcp_addr = format!("127.0.0.1:{port}");
    Server {
        unix: Target::Unix(sock),
        tcp: Target::Tcp(tcp_addr.clone()),
        tcp_addr,
        plugin,
        svc,
        home,
    }
}

fn spec(home: &Home) -> PathBuf {
    home.dir.join("var/run/rexray.spec")
}

/// The original CLI's exchanges (#1–#9, #10, #41–#46), replayed with its
/// headers on the unix socket.
#[test]
fn the_original_clis_exchanges_replay() {
    let s = server();
    let t = &s.unix;
    let h: &[(&str, &str)] = &[
        ("Libstorage-Instanceid", VM),
        ("Libstorage-Localdevices", DEVS),
        ("Libstorage-Tx", TX),
    ];
    let del: &[(&str, &str)] = &[("Libstorage-Instanceid", VM), ("Libstorage-Tx", TX)];
    // The handshake.
    let g = http(t, "GET", "/services", &[("Libstorage-Tx", TX)], None);
    assert_eq!(g.expect(200).body, VFS);
    let name = g.header("libstorage-servername").unwrap().to_string();
    let g = http(
        t,
        "GET",
        "/services/vfs?instance",
        &[
            ("Libstorage-Instanceid", "vfs=,,InZtIg=="),
            ("Libstorage-Tx", TX),
        ],
        None,
    );
    assert_eq!(
        g.expect(200).body,
        r#"{"name":"vfs","instance":{"instanceID":{"id":"vm","driver":"vfs","service":""},"name":"vfsInstance","providerName":""},"driver":{"name":"vfs","type":"object","nextDevice":{"ignore":true,"prefix":"","pattern":""}}}"#
    );
    assert_eq!(g.header("libstorage-servername"), Some(name.as_str()));
    let g = http(
        t,
        "GET",
        "/services/vfs?instance",
        &[("Libstorage-Instanceid", VM)],
        None,
    );
    assert_eq!(
        g.expect(200).json()["instance"]["instanceID"]["service"],
        "vfs"
    );
    // 1. ls
    assert_eq!(
        http(t, "GET", "/volumes/vfs?attachments=1", h, None)
            .expect(200)
            .body,
        "{}"
    );
    // 2. create
    let g = http(
        t,
        "POST",
        "/volumes/vfs",
        h,
        Some(
            r#"{"name":"cvol1","availabilityZone":"","encrypted":false,"iops":0,"size":3,"type":""}"#,
        ),
    );
    assert_eq!(
        shape(&g.expect(201).json()),
        captured(r#"{"attachmentState":3,"name":"cvol1","size":3,"id":"vfs-000","type":""}"#)
    );
    let id = g.json()["id"].as_str().unwrap().to_string();
    // 3. ls
    let (lid, v) = only(
        &http(t, "GET", "/volumes/vfs?attachments=1", h, None)
            .expect(200)
            .json(),
    );
    assert_eq!(lid, id);
    assert_eq!(
        v,
        captured(r#"{"attachmentState":3,"name":"cvol1","size":3,"id":"vfs-000","type":""}"#)
    );
    // 4. attach
    only(
        &http(t, "GET", "/volumes/vfs?attachments=17", h, None)
            .expect(200)
            .json(),
    );
    let g = http(
        t,
        "POST",
        &format!("/volumes/vfs/{id}?attach"),
        h,
        Some(r#"{"nextDeviceName":"/dev/xvda"}"#),
    );
    let attached = r#"{"attachments":[{"deviceName":"/dev/xvda","instanceID":{"id":"vm","driver":"vfs","service":"vfs"},"status":"attached","volumeID":"vfs-000"}],"attachmentState":2,"name":"cvol1","size":3,"id":"vfs-000","type":""}"#;
    assert_eq!(
        shape(&g.expect(200).json()),
        captured(&format!(
            r#"{{"volume":{attached},"attachToken":"/dev/xvda"}}"#
        ))
    );
    // 5. mount's listings, 6. ls --format json
    for mask in [27, 1] {
        let g = http(
            t,
            "GET",
            &format!("/volumes/vfs?attachments={mask}"),
            h,
            None,
        );
        assert_eq!(only(&g.expect(200).json()).1, captured(attached));
    }
    let g = http(
        t,
        "GET",
        &format!("/volumes/vfs/{id}?attachments=31"),
        h,
        None,
    );
    assert_eq!(shape(&g.expect(200).json()), captured(attached));
    // 19. attach again: nothing unattached
    assert_eq!(
        http(t, "GET", "/volumes/vfs?attachments=17", h, None)
            .expect(200)
            .body,
        "{}"
    );
    // 7. unmount: 11, 15, detach
    assert_eq!(
        only(
            &http(t, "GET", "/volumes/vfs?attachments=11", h, None)
                .expect(200)
                .json()
        )
        .1,
        captured(attached)
    );
    let g = http(
        t,
        "GET",
        &format!("/volumes/vfs/{id}?attachments=15"),
        h,
        None,
    );
    assert_eq!(shape(&g.expect(200).json()), captured(attached));
    let g = http(
        t,
        "POST",
        &format!("/volumes/vfs/{id}?detach"),
        h,
        Some("{}"),
    );
    assert_eq!(
        shape(&g.expect(205).json()),
        captured(r#"{"attachmentState":3,"name":"cvol1","size":3,"id":"vfs-000","type":""}"#)
    );
    // 21. detach's listing: nothing attached
    assert_eq!(
        http(t, "GET", "/volumes/vfs?attachments=9", h, None)
            .expect(200)
            .body,
        "{}"
    );
    // 8. rm
    let g = http(t, "GET", "/volumes/vfs?attachments=0", h, None);
    assert_eq!(
        only(&g.expect(200).json()).1,
        captured(r#"{"name":"cvol1","size":3,"id":"vfs-000","type":""}"#)
    );
    let g = http(t, "DELETE", &format!("/volumes/vfs/{id}"), del, None);
    g.expect(204);
    assert_eq!(
        (g.header("content-type"), g.body.as_str()),
        (Some("application/json"), "")
    );
    // 9. ls, 10. mount of an unknown name lists nothing
    assert_eq!(
        http(t, "GET", "/volumes/vfs?attachments=1", h, None)
            .expect(200)
            .body,
        "{}"
    );
    assert_eq!(
        http(t, "GET", "/volumes/vfs?attachments=27", h, None)
            .expect(200)
            .body,
        "{}"
    );

    // 41–46: a volume attached to another instance.
    let g = http(
        t,
        "POST",
        "/volumes/vfs",
        h,
        Some(
            r#"{"name":"other1","availabilityZone":"","encrypted":false,"iops":0,"size":1,"type":""}"#,
        ),
    );
    let id = g.expect(201).json()["id"].as_str().unwrap().to_string();
    let g = http(
        t,
        "POST",
        &format!("/volumes/vfs/{id}?attach"),
        &[
            ("Libstorage-Instanceid", "vfs=otherhost"),
            ("Content-Type", "application/json"),
        ],
        Some(r#"{"nextDeviceName":"/dev/xvdb"}"#),
    );
    let other = r#"{"attachments":[{"deviceName":"/dev/xvdb","instanceID":{"id":"otherhost","driver":"vfs","service":""},"status":"attached","volumeID":"vfs-005"}],"attachmentState":2,"name":"other1","size":1,"id":"vfs-005","type":""}"#;
    assert_eq!(
        shape(&g.expect(200).json()),
        captured(&format!(
            r#"{{"volume":{other},"attachToken":"/dev/xvdb"}}"#
        ))
    );
    let g = http(t, "GET", "/volumes/vfs?attachments=1", h, None);
    assert_eq!(
        only(&g.expect(200).json()).1,
        captured(&other.replace(r#""attachmentState":2"#, r#""attachmentState":4"#))
    );
    let avail = r#"{"attachmentState":3,"name":"other1","size":1,"id":"vfs-005","type":""}"#;
    assert_eq!(
        only(
            &http(t, "GET", "/volumes/vfs?attachments=27", h, None)
                .expect(200)
                .json()
        )
        .1,
        captured(avail)
    );
    let g = http(
        t,
        "GET",
        &format!("/volumes/vfs/{id}?attachments=31"),
        h,
        None,
    );
    assert_eq!(shape(&g.expect(200).json()), captured(avail));
    // Where the original attached it a second time, this server refuses,
    // in the original's error shape.
    let g = http(
        t,
        "POST",
        &format!("/volumes/vfs/{id}?attach"),
        h,
        Some(r#"{"nextDeviceName":"/dev/xvda"}"#),
    );
    let e = g.expect(500).json();
    assert_eq!(
        (e["status"].as_u64(), e["error"]["kind"].as_str()),
        (Some(500), Some("in-use"))
    );
    assert!(e["message"].as_str().unwrap().contains("otherhost"), "{e}");
    let g = http(t, "DELETE", &format!("/volumes/vfs/{id}"), del, None);
    assert_eq!(g.expect(500).json()["error"]["kind"], "in-use");
    // Taken over with force, then removed with force.
    let g = http(
        t,
        "POST",
        &format!("/volumes/vfs/{id}?attach"),
        h,
        Some(r#"{"nextDeviceName":"/dev/xvda","force":true}"#),
    );
    assert_eq!(g.expect(200).json()["volume"]["attachmentState"], 2);
    http(t, "DELETE", &format!("/volumes/vfs/{id}?force"), del, None).expect(204);
    assert_eq!(
        http(t, "GET", "/volumes/vfs?attachments=1", h, None)
            .expect(200)
            .body,
        "{}"
    );
    drop(s);
}

/// The direct probes (#23–#40, #47–#52), on the TCP port.
#[test]
fn the_direct_probes_replay() {
    let s = server();
    let t = &s.tcp;
    let base = format!("http://{}", s.tcp_addr);
    let g = http(t, "GET", "/", &[], None);
    assert_eq!(
        g.expect(200).json(),
        json!([
            format!("{base}/services"),
            format!("{base}/snapshots"),
            format!("{base}/tasks"),
            format!("{base}/help"),
            format!("{base}/volumes")
        ])
    );
    assert_eq!(
        http(t, "GET", "/help/version", &[], None).expect(200).body,
        r#""0.11.4""#
    );
    assert_eq!(
        http(t, "GET", "/volumes", &[], None).expect(200).body,
        r#"{"vfs":{}}"#
    );
    assert_eq!(
        http(t, "GET", "/volumes?attachments=0", &[], None)
            .expect(200)
            .body,
        r#"{"vfs":{}}"#
    );
    assert_eq!(
        http(t, "GET", "/volumes/vfs/nosuch", &[], None)
            .expect(404)
            .body,
        r#"{"message":"resource not found","status":404,"error":{"resourceID":"nosuch"}}"#
    );
    assert_eq!(
        http(t, "GET", "/volumes/nosvc", &[], None).expect(404).body,
        r#"{"message":"resource not found","status":404,"error":{"resourceID":"nosvc"}}"#
    );
    assert_eq!(
        http(t, "DELETE", "/volumes/vfs/nosuch", &[], None)
            .expect(404)
            .body,
        r#"{"message":"resource not found","status":404,"error":{"resourceID":"nosuch"}}"#
    );
    let ct = [("Content-Type", "application/json")];
    assert_eq!(
        http(t, "POST", "/volumes/vfs", &ct, Some("{}"))
            .expect(500)
            .body,
        r##"{"message":"validate req schema: validation error: \"#\" must have property \"name\"","status":500,"error":"validate req schema: validation error: \"#\" must have property \"name\""}"##
    );
    assert_eq!(
        http(t, "POST", "/volumes/vfs", &ct, Some(r#"{"name":"x","#))
            .expect(500)
            .body,
        r#"{"message":"validate req schema: validation error: error parsing object at char 12","status":500,"error":"validate req schema: validation error: error parsing object at char 12"}"#
    );
    // 32
    let g = http(
        t,
        "POST",
        "/volumes/vfs",
        &ct,
        Some(r#"{"name":"curlvol","size":2,"opts":{"foo":"bar"}}"#),
    );
    assert_eq!(
        shape(&g.expect(201).json()),
        captured(
            r#"{"attachmentState":3,"name":"curlvol","size":2,"id":"vfs-003","type":"","fields":{"foo":"bar"}}"#
        )
    );
    let id = g.json()["id"].as_str().unwrap().to_string();
    // 33, 34
    let missing = r#"{"message":"missing instance ID","status":400,"error":{"service":"vfs"}}"#;
    assert_eq!(
        http(t, "GET", "/volumes/vfs?attachments=31", &[], None)
            .expect(400)
            .body,
        missing
    );
    assert_eq!(
        http(
            t,
            "POST",
            &format!("/volumes/vfs/{id}?attach"),
            &ct,
            Some("{}")
        )
        .expect(400)
        .body,
        missing
    );
    // 35
    let curl = ("Libstorage-Instanceid", "vfs=curlhost");
    let g = http(
        t,
        "POST",
        &format!("/volumes/vfs/{id}?attach"),
        &[curl, ct[0]],
        Some(r#"{"nextDeviceName":"/dev/xvdc"}"#),
    );
    let held = r#"{"attachments":[{"deviceName":"/dev/xvdc","instanceID":{"id":"curlhost","driver":"vfs","service":""},"status":"attached","volumeID":"vfs-003"}],"attachmentState":2,"name":"curlvol","size":2,"id":"vfs-003","type":"","fields":{"foo":"bar"}}"#;
    assert_eq!(
        shape(&g.expect(200).json()),
        captured(&format!(r#"{{"volume":{held},"attachToken":"/dev/xvdc"}}"#))
    );
    // 36
    let g = http(
        t,
        "GET",
        "/volumes/vfs?attachments=31",
        &[curl, ("Libstorage-Localdevices", "vfs=/dev/xvdc::/mnt/x")],
        None,
    );
    assert_eq!(only(&g.expect(200).json()).1, captured(held));
    // 37
    let g = http(
        t,
        "POST",
        "/volumes?detach",
        &[curl, ("Content-Type", "application/x-www-form-urlencoded")],
        Some("{}"),
    );
    let m = g.expect(205).json();
    assert_eq!(
        only(&m["vfs"]).1,
        captured(
            r#"{"attachmentState":3,"name":"curlvol","size":2,"id":"vfs-003","type":"","fields":{"foo":"bar"}}"#
        )
    );
    // 38–40
    let g = http(t, "DELETE", &format!("/volumes/vfs/{id}"), &[], None);
    assert_eq!(
        (g.expect(204).body.as_str(), g.header("content-type")),
        ("", Some("application/json"))
    );
    assert_eq!(
        http(t, "GET", "/snapshots", &[], None).expect(200).body,
        r#"{"vfs":{}}"#
    );
    assert_eq!(http(t, "GET", "/tasks", &[], None).expect(200).body, "{}");
    // 47–50
    let g = http(t, "GET", "/services", &[("Libstorage-Tx", "garbage")], None);
    assert_eq!(
        (g.expect(500).header("content-type"), g.body.trim()),
        (Some("text/plain; charset=utf-8"), "invalid transaction")
    );
    let g = http(
        t,
        "GET",
        "/services",
        &[(
            "Libstorage-Tx",
            "txID=3f2c1b8e-9d4a-4e5b-8c7d-112233445566, txCR=1",
        )],
        None,
    );
    assert_eq!(g.expect(200).body, VFS);
    assert_eq!(
        http(
            t,
            "GET",
            "/volumes/vfs?attachments=31",
            &[("Libstorage-Instanceid", "garbage")],
            None
        )
        .expect(500)
        .body,
        r#"{"message":"invalid InstanceID","status":500,"error":{"value":"garbage"}}"#
    );
    assert_eq!(
        http(
            t,
            "GET",
            "/volumes/vfs?attachments=7",
            &[("Libstorage-Instanceid", "vfs=vm")],
            None
        )
        .expect(200)
        .body,
        "{}"
    );
    // 51: where the original made two volumes named dup, the second is refused.
    let g = http(t, "POST", "/volumes/vfs", &ct, Some(r#"{"name":"dup"}"#));
    assert_eq!(
        shape(&g.expect(201).json()),
        captured(r#"{"attachmentState":3,"name":"dup","size":1,"id":"vfs-006","type":""}"#)
    );
    let dup = g.json()["id"].as_str().unwrap().to_string();
    let e = http(t, "POST", "/volumes/vfs", &ct, Some(r#"{"name":"dup"}"#))
        .expect(500)
        .json();
    assert_eq!(e["error"]["kind"], "already-exists");
    // 52
    only(
        &http(t, "GET", "/volumes/vfs?attachments=0", &[], None)
            .expect(200)
            .json(),
    );
    http(t, "DELETE", &format!("/volumes/vfs/{dup}"), &[], None).expect(204);
    drop(s);
}

/// The library's client against the running service on both endpoints,
/// the Docker plugin serving beside it, the socket's mode, the spec file
/// and its removal at stop.
#[test]
fn the_client_and_the_docker_plugin_share_a_running_service() {
    let mut s = server();
    // The spec file names the first endpoint; the socket is 0660.
    let sp = spec(&s.home);
    let Target::Unix(sock) = s.unix.clone() else {
        unreachable!()
    };
    assert_eq!(
        std::fs::read_to_string(&sp).unwrap().trim(),
        format!("unix://{}", sock.display())
    );
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let m = std::fs::metadata(&sock).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o660);
        assert_eq!(m.uid(), nix::unistd::geteuid().as_raw());
    }
    assert_eq!(
        rexray::api::client::local_server(&sp),
        Some(format!("unix://{}", sock.display()))
    );
    assert!(
        s.svc.log_text().contains("neither TLS nor authentication"),
        "{}",
        s.svc.log_text()
    );
    let node = |id: &str| -> Arc<dyn Executor> {
        Arc::new(
            rexray::storage::vfs::VfsExecutor::open(
                &s.home.lib().join("vfs"),
                rexray::model::InstanceId {
                    id: id.into(),
                    driver: "vfs".into(),
                    service: String::new(),
                },
            )
            .unwrap(),
        )
    };
    let unix_url = format!("unix://{}", sock.display());
    let tcp_url = format!("tcp://{}", s.tcp_addr);
    let a = Client::connect(
        &unix_url,
        "vfs",
        Some(node("node-a")),
        Duration::from_secs(60),
    )
    .unwrap();
    let b = Client::connect(
        &tcp_url,
        "vfs",
        Some(node("node-b")),
        Duration::from_secs(60),
    )
    .unwrap();
    let spec = rexray::model::CreateSpec {
        size: 1,
        ..Default::default()
    };
    let v = a.create("shared1", &spec).unwrap();
    let me_a = a.instance().unwrap().to_model();
    let me_b = b.instance().unwrap().to_model();
    let at = a.attach(&v.id, &me_a, false, Some("/dev/xvda")).unwrap();
    // Node a's executor finds the directory (one vfs root on this host).
    let src = node("node-a")
        .resolve(&at.volume, &at.token, Duration::from_secs(5))
        .unwrap();
    assert!(src.path().is_dir());
    assert_eq!(
        b.attach(&v.id, &me_b, false, None).unwrap_err().kind(),
        rexray::Kind::InUse
    );
    assert_eq!(
        b.attach(&v.id, &me_b, true, None)
            .unwrap()
            .volume
            .attachments[0]
            .instance_id
            .id,
        "node-b"
    );
    b.detach(&v.id, &me_b, false).unwrap();
    // The Docker plugin on its socket sees the same vfs volumes.
    ok(post(&s.plugin, "/Plugin.Activate", ""));
    let l = ok(post(&s.plugin, "/VolumeDriver.List", "{}"));
    assert!(
        l["Volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["Name"] == "shared1"),
        "{l}"
    );
    ok(post(
        &s.plugin,
        "/VolumeDriver.Create",
        r#"{"Name":"fromdocker"}"#,
    ));
    assert!(a.lookup_name("fromdocker").unwrap().is_some());
    // A name is one volume: the API refuses the one Docker made.
    assert_eq!(
        a.create("fromdocker", &spec).unwrap_err().kind(),
        rexray::Kind::AlreadyExists
    );
    for n in ["shared1", "fromdocker"] {
        let v = a.lookup_name(n).unwrap().unwrap();
        a.remove(&v.id, false).unwrap();
    }
    assert!(a.list().unwrap().is_empty());
    // Stop: the sockets and the spec file go.
    assert_eq!(s.svc.stop(), Some(0));
    assert!(!sock.exists(), "the API socket is left");
    assert!(!sp.exists(), "the spec file is left");
    assert_eq!(rexray::api::client::local_server(&sp), None);
    let e = Client::connect(&tcp_url, "vfs", None, Duration::from_secs(5)).unwrap_err();
    assert_eq!(e.kind(), rexray::Kind::System, "{e}");
}

/// A configuration error in an endpoint stops the start with a clear
/// message and leaves nothing behind.
#[test]
fn a_bad_endpoint_fails_the_start() {
    let home = Home::new();
    home.config("libstorage:\n  service: vfs\n  server:\n    endpoints:\n      a:\n        address: https://127.0.0.1:1\n");
    let (host, plugin) = unix_host(&home);
    let out = run_cmd(
        home.command("rexray")
            .args(["service", "start"])
            .env("REXRAY_MODULES_DEFAULT_DOCKER_HOST", &host),
    );
    let err = out.fails(1);
    assert!(
        err.contains("libstorage.server.endpoints.a.address"),
        "{err}"
    );
    assert!(!plugin.exists());
    assert!(!spec(&home).exists());
}

/// `?async` requests are answered at once, so the operations they start
/// are bounded by `libstorage.server.tasks.maxInFlight`: past it such a
/// request is answered busy at once and starts nothing (a request that
/// waits for its answer still goes through); once some finish, the next
/// is accepted.
#[test]
fn operations_in_flight_are_bounded() {
    crate::require_root!();
    let home = Home::new();
    let sock = home.dir.join("ls.sock");
    home.config(&format!(
        "libstorage:\n  service: loop\n  server:\n    tasks:\n      maxInFlight: 2\n    endpoints:\n      a:\n        address: unix://{}\n",
        sock.display()
    ));
    let (host, _) = unix_host(&home);
    // Each commit of the catalog takes 2 s: the first two creates stay
    // in flight while the third comes.
    let _svc = Service::start(
        &home,
        &host,
        &[("FAILPOINTS", "loop::catalog-before-commit=sleep(2000)")],
    );
    let unix = Target::Unix(sock);
    let hdrs = [("Libstorage-Tx", TX), ("Libstorage-Instanceid", VM)];
    let create = |name: &str| {
        http(
            &unix,
            "POST",
            "/volumes/loop?async",
            &hdrs,
            Some(&format!("{{\"name\":\"{name}\",\"size\":1}}")),
        )
    };
    create("inflight-1").expect(202);
    create("inflight-2").expect(202);
    let busy = create("inflight-3");
    assert!(busy.status >= 400, "{busy:?}");
    assert!(busy.body.contains("maxInFlight"), "{busy:?}");
    http(&unix, "GET", "/volumes", &hdrs, None).expect(200);
    // Once the two are done, another is accepted; the refused one was
    // never made.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let names = home.volume_names();
        if names.len() == 2 {
            assert_eq!(names, vec!["inflight-1", "inflight-2"]);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{names:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // (A task leaves the count just after its commit shows: until then
    // the answer may still be busy, and only that.)
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = create("inflight-4");
        if r.status == 202 {
            break;
        }
        assert!(r.body.contains("maxInFlight"), "{r:?}");
        assert!(std::time::Instant::now() < deadline, "{r:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Path segments are percent-decoded before routing, as the original's
/// router does: an escaped service name or id finds what it names; one
/// that decodes to a slash or a NUL is refused, naming it.
#[test]
fn path_segments_are_percent_decoded() {
    let s = server();
    let hdrs = [("Libstorage-Tx", TX), ("Libstorage-Instanceid", VM)];
    let made = http(
        &s.unix,
        "POST",
        "/volumes/vfs",
        &hdrs,
        Some("{\"name\":\"pct-1\"}"),
    );
    made.expect(201);
    let id = made.json()["id"].as_str().unwrap().to_string();
    let escaped: String = id.bytes().map(|b| format!("%{b:02X}")).collect();
    let got = http(
        &s.unix,
        "GET",
        &format!("/volumes/v%66s/{escaped}"),
        &hdrs,
        None,
    );
    got.expect(200);
    assert_eq!(got.json()["name"], "pct-1", "{got:?}");
    for bad in [
        "/volumes/vfs/a%2Fb",
        "/volumes/vfs/a%00b",
        "/volumes/vfs/%FF",
    ] {
        let r = http(&s.unix, "GET", bad, &hdrs, None);
        assert!(r.status >= 400, "{bad}: {r:?}");
        assert!(r.body.contains("invalid path segment"), "{r:?}");
    }
}

/// This server's extensions: `GET /services/{svc}?extensions` answers
/// `"rexray": {"availableBytes", "resize"}` (and only when asked: the
/// plain reply stays the original's), `POST /volumes/{svc}/{id}?resize`
/// hands the resize to the service's driver.
#[test]
fn resize_extension_is_offered_only_when_asked() {
    let s = server();
    let plain = http(
        &s.unix,
        "GET",
        "/services/vfs",
        &[("Libstorage-Tx", TX)],
        None,
    );
    plain.expect(200);
    assert!(plain.json().get("rexray").is_none(), "{plain:?}");
    let ext = http(
        &s.unix,
        "GET",
        "/services/vfs?extensions",
        &[("Libstorage-Tx", TX)],
        None,
    );
    ext.expect(200);
    let x = ext.json();
    assert_eq!(x["rexray"]["resize"], true, "{x}");
    assert_eq!(x["name"], "vfs");
    // A resize without a size is refused, naming it; the driver's refusal
    // (vfs directories have no size) comes back as the driver says it.
    let c = Client::connect(
        &format!("unix://{}", s.home.dir.join("ls.sock").display()),
        "vfs",
        None,
        Duration::from_secs(30),
    )
    .unwrap();
    let spec = rexray::model::CreateSpec {
        size: 1,
        ..Default::default()
    };
    let v = c.create("grow1", &spec).unwrap();
    let bad = http(
        &s.unix,
        "POST",
        &format!("/volumes/vfs/{}?resize", v.id),
        &[("Libstorage-Tx", TX), ("Libstorage-Instanceid", VM)],
        Some("{}"),
    );
    // The schema check's answer, in the original's shape (500).
    assert_eq!(bad.status, 500, "{bad:?}");
    assert!(bad.body.contains("size"), "{bad:?}");
    // A size past the largest (whose bytes would not fit in 64 bits) is
    // refused before a driver sees it: resize and create alike.
    let huge = 1u64 << 34;
    for (path, body) in [
        (
            format!("/volumes/vfs/{}?resize", v.id),
            format!("{{\"size\":{huge}}}"),
        ),
        (
            "/volumes/vfs".to_string(),
            format!("{{\"name\":\"huge\",\"size\":{huge}}}"),
        ),
        (
            "/volumes/vfs".to_string(),
            "{\"name\":\"negative\",\"size\":-1}".to_string(),
        ),
    ] {
        let r = http(
            &s.unix,
            "POST",
            &path,
            &[("Libstorage-Tx", TX), ("Libstorage-Instanceid", VM)],
            Some(&body),
        );
        assert!(r.status >= 400, "{path} {body}: {r:?}");
        assert!(r.body.contains("invalid size"), "{r:?}");
    }
    let names: Vec<String> = c.list().unwrap().into_iter().map(|v| v.name).collect();
    assert_eq!(names, vec!["grow1"]);
    let e = c.resize(&v.id, 2).unwrap_err();
    assert!(e.to_string().contains("vfs"), "{e}");
    assert!(c.capacity().is_ok());
    // What the server's driver offers, from its extensions: growing is
    // served; vfs snapshots nothing attached elsewhere.
    let offers = c.offers();
    assert!(offers.resize && !offers.live_snapshots, "{offers:?}");
    c.remove(&v.id, false).unwrap();
}

/// A server that answers as the original REX-Ray 0.11 does (no
/// extensions: it ignores `?extensions`): the client refuses a resize
/// before sending it, and cannot tell the free space (a CSI endpoint over
/// it advertises neither EXPAND_VOLUME nor GET_CAPACITY, and GetCapacity
/// asked anyway answers FAILED_PRECONDITION).
#[test]
fn against_an_original_server_resize_is_refused_before_it_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("orig.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut r = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                continue;
            }
            let mut len = 0usize;
            loop {
                let mut h = String::new();
                r.read_line(&mut h).unwrap();
                if h.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
            }
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            let mut parts = line.split_whitespace();
            let (method, path) = (parts.next().unwrap(), parts.next().unwrap());
            log.lock().unwrap().push(format!("{method} {path}"));
            let one = r#"{"name":"vfs","driver":{"name":"vfs","type":"object","nextDevice":{"ignore":true,"prefix":"","pattern":""}}}"#;
            let (status, answer) = match (method, path.split('?').next().unwrap()) {
                ("GET", "/services") => (200, VFS.to_string()),
                ("GET", "/services/vfs") => (200, one.to_string()),
                _ => (404, r#"{"message":"not found","status":404}"#.to_string()),
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nLibstorage-Servername: original\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    let c = Client::connect(
        &format!("unix://{}", sock.display()),
        "vfs",
        None,
        Duration::from_secs(10),
    )
    .unwrap();
    seen.lock().unwrap().clear();
    let e = c.resize("vfs-000", 2).unwrap_err();
    assert_eq!(e.kind(), rexray::Kind::Unsupported, "{e}");
    assert!(e.to_string().contains("no resize"), "{e}");
    let e = c.capacity().unwrap_err();
    assert_eq!(e.kind(), rexray::Kind::Unsupported, "{e}");
    assert_eq!(c.available_bytes(), None);
    // So a CSI endpoint over it does not advertise growing (nor, by the
    // capacity above, GetCapacity); snapshots and copies the API has.
    let offers = c.offers();
    assert!(
        !offers.resize && offers.snapshots && offers.copy,
        "{offers:?}"
    );
    let calls = seen.lock().unwrap().clone();
    assert!(!calls.is_empty(), "the extensions are asked for");
    assert!(
        calls.iter().all(|c| c.starts_with("GET /services/vfs")),
        "only the service was asked, nothing was sent to a volume: {calls:?}"
    );
    // It keeps no node registry: registering is a no-op, and any node is
    // taken (nothing to tell).
    let me = rexray::model::InstanceId {
        id: "node-a".into(),
        ..Default::default()
    };
    c.register_node(&me).unwrap();
    assert_eq!(c.node_known("node-b").unwrap(), None);
}
