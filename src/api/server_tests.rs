//! The routes against real vfs services in a temporary directory (and a
//! slow in-memory controller for the task timeouts), checked against the
//! original server's answers captured in `reference/libstorage-wire.md`.

use super::*;
use crate::model::{CreateSpec, InstanceId, Volume};
use crate::storage::controller::{Attached, NextDeviceInfo, ServiceInfo, StorageType};
use crate::storage::vfs::VfsDriver;
use serde_json::{json, Value};

struct Fixture {
    _dir: tempfile::TempDir,
    api: Arc<Api>,
    rt: tokio::runtime::Runtime,
}

fn config(home: &Path, env: &[(&str, &str)]) -> Config {
    let mut e: std::collections::HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    e.insert("REXRAY_HOME".into(), home.to_string_lossy().into_owned());
    Config::load(crate::config::LoadOptions {
        env: Some(e),
        ..Default::default()
    })
    .unwrap()
}

fn vfs(dir: &Path, service: &str) -> Service {
    Service {
        name: service.into(),
        ctrl: Arc::new(VfsDriver::open(&dir.join(service), service).unwrap()),
        default_size: 1,
    }
}

fn fixture(extra: Vec<Service>, env: &[(&str, &str)]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut services = Services::new();
    for s in [vfs(dir.path(), "vfs"), vfs(dir.path(), "vfs2")]
        .into_iter()
        .chain(extra)
    {
        services.insert(s.name.clone(), s);
    }
    let cfg = config(dir.path(), env);
    Fixture {
        api: Arc::new(Api::new(services, &cfg)),
        rt: tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap(),
        _dir: dir,
    }
}

/// What came back: status and body (JSON when there is one).
#[derive(Debug)]
struct Got {
    status: u16,
    raw: Vec<u8>,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.raw).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.raw).into_owned()
    }
}

impl Fixture {
    fn send(&self, method: &str, target: &str, iid: &[&str], ld: &[&str], body: &str) -> Got {
        self.send_usage(method, target, iid, ld, body, false)
    }
    fn send_usage(
        &self,
        method: &str,
        target: &str,
        iid: &[&str],
        ld: &[&str],
        body: &str,
        omit_usage: bool,
    ) -> Got {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let call = Call {
            method: method.into(),
            path: path.into(),
            query: query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (k.to_string(), v.to_string())
                })
                .collect(),
            instance_ids: iid.iter().map(|s| s.to_string()).collect(),
            local_devices: ld.iter().map(|s| s.to_string()).collect(),
            omit_usage,
            body: body.as_bytes().to_vec(),
            base_url: "http://127.0.0.1:7980".into(),
        };
        let r = self.rt.block_on(self.api.answer(call));
        Got {
            status: r.status,
            raw: r.body,
        }
    }
    fn get(&self, target: &str, iid: &[&str]) -> Got {
        self.send("GET", target, iid, &[], "")
    }
}

const VM: &str = "vfs:vfs=vm";
const DEVS: &str = "vfs=/dev/xvda::,/dev/xvdb::,/dev/xvdc::,/dev/xvdd::";
const VFS_SERVICE: &str = r#"{"name":"vfs","driver":{"name":"vfs","type":"object","nextDevice":{"ignore":true,"prefix":"","pattern":""}}}"#;

#[test]
fn the_handshake_and_root_answer_as_the_original() {
    let f = fixture(vec![], &[]);
    let g = f.get("/services", &[]);
    assert_eq!(g.status, 200);
    assert_eq!(
        g.json()["vfs"],
        serde_json::from_str::<Value>(VFS_SERVICE).unwrap()
    );
    let g = f.get("/services/vfs?instance", &["vfs=,,InZtIg=="]);
    assert_eq!(
        g.text(),
        r#"{"name":"vfs","instance":{"instanceID":{"id":"vm","driver":"vfs","service":""},"name":"vfsInstance","providerName":""},"driver":{"name":"vfs","type":"object","nextDevice":{"ignore":true,"prefix":"","pattern":""}}}"#
    );
    let g = f.get("/services/vfs?instance", &[VM]);
    assert_eq!(g.json()["instance"]["instanceID"]["service"], "vfs");
    assert_eq!(f.get("/services/vfs", &[]).text(), VFS_SERVICE);
    assert_eq!(f.get("/services/vfs?instance", &[]).status, 400);
    assert_eq!(f.get("/services/nosvc", &[]).status, 404);
    assert_eq!(
        f.get("/", &[]).text(),
        r#"["http://127.0.0.1:7980/services","http://127.0.0.1:7980/snapshots","http://127.0.0.1:7980/tasks","http://127.0.0.1:7980/help","http://127.0.0.1:7980/volumes"]"#
    );
    assert_eq!(f.get("/help/version", &[]).text(), r#""0.11.4""#);
    assert_eq!(f.get("/volumes", &[]).text(), r#"{"vfs":{},"vfs2":{}}"#);
    assert_eq!(
        f.get("/volumes?attachments=0", &[]).text(),
        r#"{"vfs":{},"vfs2":{}}"#
    );
    assert_eq!(f.get("/snapshots", &[]).text(), r#"{"vfs":{},"vfs2":{}}"#);
    assert_eq!(f.get("/tasks", &[]).text(), "{}");
}

#[test]
fn the_cli_life_cycle_answers_as_the_original() {
    let f = fixture(vec![], &[]);
    let h = [VM];
    let d = [DEVS];
    assert_eq!(
        f.send("GET", "/volumes/vfs?attachments=1", &h, &d, "")
            .text(),
        "{}"
    );
    // create (#2)
    let g = f.send(
        "POST",
        "/volumes/vfs",
        &h,
        &d,
        r#"{"name":"cvol1","availabilityZone":"","encrypted":false,"iops":0,"size":3,"type":""}"#,
    );
    assert_eq!(g.status, 201);
    let v = g.json();
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(
        (v["attachmentState"].as_u64(), v["size"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(
        (v["name"].as_str(), v["type"].as_str()),
        (Some("cvol1"), Some(""))
    );
    assert!(v.get("attachments").is_none());
    // ls (#3), attach's listing (#4)
    let l = f
        .send("GET", "/volumes/vfs?attachments=1", &h, &d, "")
        .json();
    assert_eq!(l[&id]["attachmentState"], 3);
    let l = f
        .send("GET", "/volumes/vfs?attachments=17", &h, &d, "")
        .json();
    assert_eq!(l.as_object().unwrap().len(), 1);
    // attach (#4)
    let g = f.send(
        "POST",
        &format!("/volumes/vfs/{id}?attach"),
        &h,
        &d,
        r#"{"nextDeviceName":"/dev/xvda"}"#,
    );
    assert_eq!(g.status, 200, "{g:?}");
    let a = g.json();
    assert_eq!(a["attachToken"], "/dev/xvda");
    assert_eq!(
        a["volume"]["attachments"],
        json!([{"deviceName":"/dev/xvda","instanceID":{"id":"vm","driver":"vfs","service":"vfs"},"status":"attached","volumeID":id}])
    );
    assert_eq!(a["volume"]["attachmentState"], 2);
    // attached volumes are no longer unattached (#19)
    assert_eq!(
        f.send("GET", "/volumes/vfs?attachments=17", &h, &d, "")
            .text(),
        "{}"
    );
    // mount (#5): 27 then 31 on the volume
    let l = f
        .send("GET", "/volumes/vfs?attachments=27", &h, &d, "")
        .json();
    assert_eq!(l[&id]["attachmentState"], 2);
    let one = f
        .send(
            "GET",
            &format!("/volumes/vfs/{id}?attachments=31"),
            &h,
            &d,
            "",
        )
        .json();
    assert_eq!(one["attachments"][0]["deviceName"], "/dev/xvda");
    // by name, case-insensitively
    let one = f.get("/volumes/vfs/CVOL1?byName&attachments=1", &h).json();
    assert_eq!(one["id"], id.as_str());
    // unmount's listing (#7) and detach
    let l = f
        .send("GET", "/volumes/vfs?attachments=11", &h, &d, "")
        .json();
    assert_eq!(l[&id]["attachmentState"], 2);
    let g = f.send("POST", &format!("/volumes/vfs/{id}?detach"), &h, &d, "{}");
    assert_eq!(g.status, 205);
    let v = g.json();
    assert_eq!(v["attachmentState"], 3);
    assert!(v.get("attachments").is_none());
    assert_eq!(
        f.send("GET", "/volumes/vfs?attachments=9", &h, &d, "")
            .text(),
        "{}"
    );
    // rm (#8): attachments=0 has no state
    let l = f
        .send("GET", "/volumes/vfs?attachments=0", &h, &d, "")
        .json();
    assert!(l[&id].get("attachmentState").is_none());
    let g = f.send("DELETE", &format!("/volumes/vfs/{id}"), &h, &[], "");
    assert_eq!((g.status, g.raw.len()), (204, 0));
    assert_eq!(
        f.send("GET", "/volumes/vfs?attachments=1", &h, &d, "")
            .text(),
        "{}"
    );
}

#[test]
fn errors_have_the_originals_shape() {
    let f = fixture(vec![], &[]);
    assert_eq!(
        f.get("/volumes/vfs/nosuch", &[]).text(),
        r#"{"message":"resource not found","status":404,"error":{"resourceID":"nosuch"}}"#
    );
    assert_eq!(
        f.get("/volumes/nosvc", &[]).text(),
        r#"{"message":"resource not found","status":404,"error":{"resourceID":"nosvc"}}"#
    );
    let g = f.send("DELETE", "/volumes/vfs/nosuch", &[], &[], "");
    assert_eq!(
        g.text(),
        r#"{"message":"resource not found","status":404,"error":{"resourceID":"nosuch"}}"#
    );
    let g = f.send("POST", "/volumes/vfs", &[], &[], "{}");
    assert_eq!(
        g.text(),
        r##"{"message":"validate req schema: validation error: \"#\" must have property \"name\"","status":500,"error":"validate req schema: validation error: \"#\" must have property \"name\""}"##
    );
    let g = f.send("POST", "/volumes/vfs", &[], &[], r#"{"name":"x","#);
    assert_eq!(g.status, 500);
    assert_eq!(
        g.json()["message"],
        "validate req schema: validation error: error parsing object at char 12"
    );
    let g = f.get("/volumes/vfs?attachments=31", &[]);
    assert_eq!(
        g.text(),
        r#"{"message":"missing instance ID","status":400,"error":{"service":"vfs"}}"#
    );
    let g = f.get("/volumes/vfs?attachments=31", &["garbage"]);
    assert_eq!(
        g.text(),
        r#"{"message":"invalid InstanceID","status":500,"error":{"value":"garbage"}}"#
    );
    // The devices bit without a Localdevices header is not refused (#50).
    assert_eq!(
        f.get("/volumes/vfs?attachments=7", &["vfs=vm"]).text(),
        "{}"
    );
    let g = f.send(
        "GET",
        "/volumes/vfs?attachments=1",
        &[VM],
        &["vfs=/dev/xvda"],
        "",
    );
    assert_eq!(g.json()["message"], "invalid LocalDevices");
    assert_eq!(f.get("/volumes/vfs?attachments=x", &[]).status, 500);
    assert_eq!(f.get("/volumes/vfs/a/b", &[]).status, 404);
    assert_eq!(f.get("/snapshots/vfs/a/b", &[]).status, 404);
    assert_eq!(f.get("/nosuch", &[]).status, 404);
    assert_eq!(f.get("/help/config", &[]).status, 404);
    assert_eq!(f.get("/services/vfs/x", &[]).status, 404);
    assert_eq!(f.send("POST", "/services", &[], &[], "").status, 405);
    assert_eq!(f.send("PUT", "/volumes/vfs", &[], &[], "").status, 405);
    // Create with opts (#32): the opts become fields.
    let g = f.send(
        "POST",
        "/volumes/vfs",
        &[],
        &[],
        r#"{"name":"curlvol","size":2,"opts":{"foo":"bar"}}"#,
    );
    assert_eq!(g.status, 201);
    let v = g.json();
    assert_eq!(v["fields"]["foo"], "bar");
    let id = v["id"].as_str().unwrap().to_string();
    let g = f.send("POST", &format!("/volumes/vfs/{id}?attach"), &[], &[], "{}");
    assert_eq!(
        g.text(),
        r#"{"message":"missing instance ID","status":400,"error":{"service":"vfs"}}"#
    );
    let g = f.send(
        "POST",
        &format!("/volumes/vfs/{id}?attach"),
        &["vfs=curlhost"],
        &[],
        r#"{"nextDeviceName":"/dev/xvdc"}"#,
    );
    assert_eq!(
        g.json()["volume"]["attachments"][0]["instanceID"],
        json!({"id":"curlhost","driver":"vfs","service":""})
    );
    let g = f.send(
        "GET",
        "/volumes/vfs?attachments=31",
        &["vfs=curlhost"],
        &["vfs=/dev/xvdc::/mnt/x"],
        "",
    );
    assert_eq!(g.json()[&id]["attachmentState"], 2);
    // Bulk detach (#37).
    let g = f.send("POST", "/volumes?detach", &["vfs=curlhost"], &[], "{}");
    assert_eq!(g.status, 205);
    let m = g.json();
    assert_eq!(m["vfs"][&id]["attachmentState"], 3);
    assert_eq!(m["vfs2"], json!({}));
    assert_eq!(
        f.send("DELETE", &format!("/volumes/vfs/{id}"), &[], &[], "")
            .status,
        204
    );
}

#[test]
fn a_volume_held_elsewhere_is_refused_and_names_are_unique_across_services() {
    let f = fixture(vec![], &[]);
    let v = f
        .send("POST", "/volumes/vfs", &[VM], &[], r#"{"name":"other1"}"#)
        .json();
    assert_eq!(v["size"], 1);
    let id = v["id"].as_str().unwrap().to_string();
    let g = f.send(
        "POST",
        &format!("/volumes/vfs/{id}?attach"),
        &["vfs=otherhost"],
        &[],
        r#"{"nextDeviceName":"/dev/xvdb"}"#,
    );
    assert_eq!(g.status, 200);
    // ls: unavailable (#43); with the mine bit the other's attachment is
    // not shown and the volume reads available (#44).
    let l = f.get("/volumes/vfs?attachments=1", &[VM]).json();
    assert_eq!(l[&id]["attachmentState"], 4);
    let l = f.get("/volumes/vfs?attachments=27", &[VM]).json();
    assert_eq!(l[&id]["attachmentState"], 3);
    assert!(l[&id].get("attachments").is_none());
    // Attaching it here is refused, with the original's error shape.
    let g = f.send(
        "POST",
        &format!("/volumes/vfs/{id}?attach"),
        &[VM],
        &[],
        r#"{"nextDeviceName":"/dev/xvda"}"#,
    );
    assert_eq!(g.status, 500);
    let e = g.json();
    assert_eq!(e["status"], 500);
    assert_eq!(e["error"]["kind"], "in-use");
    assert!(e["message"].as_str().unwrap().contains("otherhost"), "{e}");
    assert_eq!(
        f.send("DELETE", &format!("/volumes/vfs/{id}"), &[VM], &[], "")
            .json()["error"]["kind"],
        "in-use"
    );
    // Force takes it over.
    let g = f.send(
        "POST",
        &format!("/volumes/vfs/{id}?attach"),
        &[VM],
        &[],
        r#"{"nextDeviceName":"/dev/xvda","force":true}"#,
    );
    assert_eq!(g.json()["volume"]["attachmentState"], 2);
    assert_eq!(
        g.json()["volume"]["attachments"].as_array().unwrap().len(),
        1
    );
    // Names: unique in a service, and across services.
    let g = f.send("POST", "/volumes/vfs", &[], &[], r#"{"name":"other1"}"#);
    assert_eq!(
        (g.status, g.json()["error"]["kind"].as_str()),
        (500, Some("already-exists"))
    );
    let g = f.send("POST", "/volumes/vfs2", &[], &[], r#"{"name":"other1"}"#);
    assert_eq!(g.json()["error"]["kind"], "already-exists");
    assert!(
        g.json()["message"]
            .as_str()
            .unwrap()
            .contains("service vfs"),
        "{:?}",
        g.text()
    );
    assert_eq!(
        f.send("DELETE", &format!("/volumes/vfs/{id}?force"), &[], &[], "")
            .status,
        204
    );
    // A schema error in an attach body.
    let g = f.send(
        "POST",
        "/volumes/vfs/x?attach",
        &[VM],
        &[],
        r#"{"force":"yes"}"#,
    );
    assert!(g.json()["message"]
        .as_str()
        .unwrap()
        .starts_with("validate req schema"));
}

/// A controller whose listing takes `delay`.
struct Slow {
    info: ServiceInfo,
    delay: Duration,
}

impl Controller for Slow {
    fn info(&self) -> &ServiceInfo {
        &self.info
    }
    fn list(&self) -> crate::Result<Vec<Volume>> {
        std::thread::sleep(self.delay);
        Ok(Vec::new())
    }
    fn inspect(&self, _: &str) -> crate::Result<Option<Volume>> {
        Ok(None)
    }
    fn create(&self, _: &str, _: &CreateSpec) -> crate::Result<Volume> {
        Err(Error::unsupported("no"))
    }
    fn remove(&self, _: &str, _: bool) -> crate::Result<()> {
        Ok(())
    }
    fn attach(&self, _: &str, _: &InstanceId, _: bool, _: Option<&str>) -> crate::Result<Attached> {
        Err(Error::unsupported("no"))
    }
    fn detach(&self, _: &str, _: &InstanceId, _: bool) -> crate::Result<Volume> {
        Err(Error::unsupported("no"))
    }
}

#[test]
fn slow_tasks_answer_408_and_async_202() {
    let slow = Service {
        name: "slow".into(),
        ctrl: Arc::new(Slow {
            info: ServiceInfo {
                service: "slow".into(),
                driver: "slow".into(),
                storage_type: StorageType::Block,
                next_device: NextDeviceInfo::default(),
            },
            delay: Duration::from_millis(600),
        }),
        default_size: 1,
    };
    let f = fixture(
        vec![slow],
        &[
            ("LIBSTORAGE_SERVER_TASKS_EXETIMEOUT", "100ms"),
            ("LIBSTORAGE_SERVER_TASKS_LOGTIMEOUT", "1m"),
        ],
    );
    let g = f.get("/volumes/slow", &[]);
    assert_eq!(g.status, 408, "{g:?}");
    let t = g.json();
    assert!(
        matches!(t["state"].as_str(), Some("running" | "queued")),
        "{t}"
    );
    let id = t["id"].as_u64().unwrap();
    // It runs on, and is listed once done.
    std::thread::sleep(Duration::from_millis(900));
    let t = f.get(&format!("/tasks/{id}"), &[]).json();
    assert_eq!(t["state"], "success");
    assert_eq!(t["result"], json!({}));
    let g = f.get("/volumes/vfs?async", &[]);
    assert_eq!(g.status, 202);
    let id = g.json()["id"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let t = f.get(&format!("/tasks/{id}"), &[]).json();
        if t["state"] == "success" {
            assert_eq!(t["result"], json!({}));
            break;
        }
        assert!(Instant::now() < deadline, "{t}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(f.get("/tasks", &[]).json().as_object().unwrap().len() >= 2);
    assert_eq!(f.get("/tasks/999", &[]).status, 404);
    // Errors are tasks too.
    let g = f.send("POST", "/volumes/slow", &[], &[], r#"{"name":"a"}"#);
    assert_eq!(g.json()["error"]["kind"], "unsupported");
}

#[test]
fn addresses() {
    let k = "libstorage.server.endpoints.x.address";
    assert_eq!(
        Address::parse("unix:///run/rexray/ls.sock", k).unwrap(),
        Address::Unix("/run/rexray/ls.sock".into())
    );
    assert_eq!(
        Address::parse("tcp://:7979", k).unwrap(),
        Address::Tcp("0.0.0.0:7979".into())
    );
    for bad in ["", "unix://rel", "tcp://x", "https://x:1", "/run/x.sock"] {
        let e = Address::parse(bad, k).unwrap_err();
        assert!(e.message().contains(k), "{e}");
    }
    let n = server_name();
    assert_eq!(n.split('-').count(), 3, "{n}");
}

/// A controller with one volume, `src1` (3 GiB), whose copies are made
/// at the size they are asked for.
struct Copier {
    info: ServiceInfo,
    /// The nodes registered.
    nodes: std::sync::Mutex<Vec<String>>,
}

impl Controller for Copier {
    fn info(&self) -> &ServiceInfo {
        &self.info
    }
    fn offers(&self) -> crate::storage::controller::Offers {
        crate::storage::controller::Offers {
            copy: true,
            live_snapshots: true,
            ..Default::default()
        }
    }
    fn register_node(&self, who: &InstanceId) -> crate::Result<()> {
        self.nodes.lock().unwrap().push(who.id.clone());
        Ok(())
    }
    fn node_known(&self, node: &str) -> crate::Result<Option<bool>> {
        Ok(Some(self.nodes.lock().unwrap().iter().any(|n| n == node)))
    }
    fn list(&self) -> crate::Result<Vec<Volume>> {
        let mut all = self.list_without_usage()?;
        for v in &mut all {
            v.fields.insert("allocated".into(), "4096".into());
        }
        Ok(all)
    }
    fn list_without_usage(&self) -> crate::Result<Vec<Volume>> {
        Ok(self.inspect("src1")?.into_iter().collect())
    }
    fn inspect(&self, id: &str) -> crate::Result<Option<Volume>> {
        Ok((id == "src1").then(|| Volume {
            id: "src1".into(),
            name: "src".into(),
            size: 3,
            ..Default::default()
        }))
    }
    fn create(&self, _: &str, _: &CreateSpec) -> crate::Result<Volume> {
        Err(Error::unsupported("no"))
    }
    fn remove(&self, _: &str, _: bool) -> crate::Result<()> {
        Ok(())
    }
    fn attach(&self, _: &str, _: &InstanceId, _: bool, _: Option<&str>) -> crate::Result<Attached> {
        Err(Error::unsupported("no"))
    }
    fn detach(&self, _: &str, _: &InstanceId, _: bool) -> crate::Result<Volume> {
        Err(Error::unsupported("no"))
    }
    fn copy(
        &self,
        id: &str,
        new_name: &str,
        spec: &CreateSpec,
        _: &dyn Fn() -> crate::Result<()>,
        _: crate::storage::Prepare<'_>,
    ) -> crate::Result<Volume> {
        let src = self
            .inspect(id)?
            .ok_or_else(|| Error::not_found(format!("volume {id} not found")))?;
        if spec.size < src.size {
            return Err(Error::invalid(format!(
                "a copy of volume {} must be at least its size, {} GiB",
                src.name, src.size
            )));
        }
        Ok(Volume {
            id: format!("{new_name}-id"),
            name: new_name.into(),
            size: spec.size,
            fields: spec.fields.clone(),
            ..Default::default()
        })
    }
}

/// The extensions tell a client what the service's driver offers beyond
/// the libStorage API: growing, and snapshots of volumes attached
/// elsewhere.
#[test]
fn the_extensions_tell_what_the_driver_offers() {
    let f = fixture(vec![copier()], &[]);
    let x = f.get("/services/cp?extensions", &[]).json();
    assert_eq!(x["rexray"]["resize"], true, "{x}");
    assert_eq!(x["rexray"]["liveSnapshots"], true, "{x}");
    // Without asking: the original's answer, nothing more.
    let plain = f.get("/services/cp", &[]).json();
    assert!(plain.get("rexray").is_none(), "{plain}");
}

/// A client registers its instance as a node of the service's backend
/// (the instance header says which); the registry is asked by node id.
#[test]
fn nodes_register_and_are_asked_about() {
    let f = fixture(vec![copier()], &[]);
    let known = |node: &str| {
        let x = f
            .get(&format!("/services/cp?extensions&node={node}"), &[])
            .json();
        x["rexray"]["nodeKnown"].clone()
    };
    assert_eq!(known("node-a"), false);
    // Without an instance header there is no one to register.
    let g = f.send("POST", "/services/cp?registerNode", &[], &[], "");
    assert_eq!(g.status, 400, "{g:?}");
    let g = f.send(
        "POST",
        "/services/cp?registerNode",
        &["cp:cp=node-a"],
        &[],
        "",
    );
    assert_eq!(g.status, 200, "{g:?}");
    assert_eq!(known("node-a"), true);
    assert_eq!(known("node-b"), false);
    // A driver without a registry cannot tell: no answer, any node goes.
    let x = f.get("/services/vfs?extensions&node=node-a", &[]).json();
    assert!(x["rexray"].get("nodeKnown").is_none(), "{x}");
    let g = f.send("POST", "/services/vfs?registerNode", &[VM], &[], "");
    assert_eq!(g.status, 200, "{g:?}");
    // An unknown service: not found.
    let g = f.send("POST", "/services/nope?registerNode", &[VM], &[], "");
    assert_eq!(g.status, 404, "{g:?}");
}

/// `Rexray-Usage: omit` lists without each volume's allocated bytes;
/// without it (as the original client asks) the listing is in full.
#[test]
fn a_listing_may_omit_usage() {
    let f = fixture(vec![copier()], &[]);
    for target in ["/volumes/cp", "/volumes"] {
        let full = f.get(target, &[]).json();
        let lean = f.send_usage("GET", target, &[], &[], "", true).json();
        let (full, lean) = if target == "/volumes" {
            (full["cp"].clone(), lean["cp"].clone())
        } else {
            (full, lean)
        };
        assert_eq!(full["src1"]["fields"]["allocated"], "4096", "{full}");
        assert!(lean["src1"]["fields"].get("allocated").is_none(), "{lean}");
        assert_eq!(lean["src1"]["name"], "src");
    }
}

fn copier() -> Service {
    Service {
        name: "cp".into(),
        ctrl: Arc::new(Copier {
            info: ServiceInfo {
                service: "cp".into(),
                driver: "cp".into(),
                storage_type: StorageType::Block,
                next_device: NextDeviceInfo::default(),
            },
            nodes: Default::default(),
        }),
        default_size: 1,
    }
}

/// A copy without a size has the source's (the original API has no size
/// for a copy); this server's `size` makes it bigger.
#[test]
fn a_copy_has_the_sources_size_unless_asked_for_another() {
    let f = fixture(vec![copier()], &[]);
    let copy = |body: &str| f.send("POST", "/volumes/cp/src1?copy", &[], &[], body);
    let g = copy(r#"{"volumeName":"c1","opts":{"k":"v"}}"#);
    assert_eq!(g.status, 201, "{g:?}");
    assert_eq!(
        (g.json()["size"].as_u64(), g.json()["fields"]["k"].as_str()),
        (Some(3), Some("v"))
    );
    let g = copy(r#"{"volumeName":"c2","size":5}"#);
    assert_eq!(
        (g.status, g.json()["size"].as_u64()),
        (201, Some(5)),
        "{g:?}"
    );
    let g = copy(r#"{"volumeName":"c3","size":2}"#);
    assert_eq!(g.status, 500, "{g:?}");
    assert!(g.text().contains("at least its size"), "{g:?}");
    let g = copy(r#"{"volumeName":"c4","size":"big"}"#);
    assert!(
        g.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("validate req schema"),
        "{g:?}"
    );
    let g = f.send(
        "POST",
        "/volumes/cp/nosuch?copy",
        &[],
        &[],
        r#"{"volumeName":"c5"}"#,
    );
    assert_eq!(g.status, 404, "{g:?}");
}

#[test]
fn a_name_filter_answers_what_the_full_listing_has_for_that_name() {
    let f = fixture(vec![], &[]);
    let h = [VM];
    for name in ["Fvol", "fvol2", "other"] {
        let body = format!(r#"{{"name":"{name}"}}"#);
        assert_eq!(f.send("POST", "/volumes/vfs", &h, &[], &body).status, 201);
    }
    let all = f.get("/volumes/vfs?attachments=1", &h).json();
    let id = |name: &str| {
        all.as_object()
            .unwrap()
            .iter()
            .find(|(_, v)| v["name"] == name)
            .map(|(k, _)| k.clone())
            .unwrap()
    };
    // Case-insensitive, as the original; only the matches, each as listed.
    let one = f
        .get("/volumes/vfs?attachments=1&filter=(name=fVOL)", &h)
        .json();
    assert_eq!(one, json!({ id("Fvol"): all[id("Fvol")] }));
    let none = f.get("/volumes/vfs?attachments=1&filter=(name=fvo)", &h);
    assert_eq!((none.status, none.text()), (200, "{}".to_string()));
    // Every service, through /volumes.
    let every = f.get("/volumes?filter=(name=OTHER)", &h).json();
    assert_eq!(every["vfs"].as_object().unwrap().len(), 1);
    assert_eq!(every["vfs2"], json!({}));
}
