//! The Docker Volume Plugin v1 endpoints, over the volume workflows.
//!
//! Lenient on input, as dockerd, dvdcli and old clients need: any method
//! and content type, an empty body or `{}`, `Opts: null`, unknown fields
//! ignored, field names matched case-insensitively (as Go decodes them).
//! Strict on options: an unknown or bad option fails the request by name.

use crate::model::{CreateOptions, MountOptions, Volume};
use crate::volume::Consumer;
use crate::volume::{CopySource, Created, Unmounted, VolumeRef, Volumes};
use crate::{Error, Result};
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The media type of every reply.
pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";

/// Largest request body read (dockerd sends a few hundred bytes).
pub const MAX_BODY: u64 = 1 << 20;

/// An HTTP reply: status and JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// JSON body, one line with a trailing newline.
    pub body: Vec<u8>,
}

impl Reply {
    fn ok<T: Serialize>(v: &T) -> Reply {
        let mut body = serde_json::to_vec(v).expect("reply serialises");
        body.push(b'\n');
        Reply { status: 200, body }
    }
    /// An error as dockerd reads it: `{"Err": "..."}`. Status 500 like
    /// Docker's own plugin helpers; never 404, which dockerd takes for
    /// "endpoint not implemented".
    fn err(e: &Error) -> Reply {
        let mut r = Reply::ok(&json!({ "Err": e.message() }));
        r.status = 500;
        r
    }
}

/// The endpoints served.
pub const ENDPOINTS: &[&str] = &[
    "/Plugin.Activate",
    "/VolumeDriver.Create",
    "/VolumeDriver.Remove",
    "/VolumeDriver.Mount",
    "/VolumeDriver.Unmount",
    "/VolumeDriver.Path",
    "/VolumeDriver.Get",
    "/VolumeDriver.List",
    "/VolumeDriver.Capabilities",
];

/// Serve one request: `path` is the URL path, `body` the request body.
pub fn handle(vols: &Volumes, path: &str, body: &[u8]) -> Reply {
    handle_with(vols, None, path, body)
}

/// [`handle`], filling `cache` (the volume list in the driver's memory,
/// the kept List reply) for [`handle_in_memory`] to answer from.
pub fn handle_with(vols: &Volumes, cache: Option<&Cache>, path: &str, body: &[u8]) -> Reply {
    let path = path.split('?').next().unwrap_or_default();
    let res = match path {
        "/Plugin.Activate" => Ok(Reply::ok(&json!({ "Implements": ["VolumeDriver"] }))),
        "/VolumeDriver.Capabilities" => {
            Ok(Reply::ok(&json!({ "Capabilities": { "Scope": "global" } })))
        }
        "/VolumeDriver.List" => vols.list_metadata().and_then(|all| list(vols, all, cache)),
        "/VolumeDriver.Create" => parse(body).and_then(|r| create(vols, &r)),
        "/VolumeDriver.Remove" => parse(body).and_then(|r| remove(vols, &r)),
        "/VolumeDriver.Mount" => parse(body).and_then(|r| mount(vols, &r)),
        "/VolumeDriver.Unmount" => parse(body).and_then(|r| unmount(vols, &r)),
        "/VolumeDriver.Path" => parse(body).and_then(|r| path_of(vols, &r)),
        // From the whole list only when the driver keeps it in memory
        // (loop); one lookup otherwise (rbd: the image's metadata, which
        // its list leaves out).
        "/VolumeDriver.Get" if cache.is_some() && vols.keeps_metadata() => {
            parse(body).and_then(|r| {
                let all = vols.list_metadata()?;
                get(vols, &r, Some(&all))
            })
        }
        "/VolumeDriver.Get" => parse(body).and_then(|r| get(vols, &r, None)),
        other => {
            let mut r = Reply::err(&Error::not_found(format!(
                "unknown endpoint {}: this plugin serves {}",
                crate::input::quote(other),
                ENDPOINTS.join(", ")
            )));
            r.status = 404;
            return r;
        }
    };
    finish(path, res)
}

/// Serve a request that needs no more than a few metadata syscalls, as
/// [`handle`] would: Activate and Capabilities always; Get and List when
/// the driver holds the current catalog in memory. `None`: call
/// [`handle`] on a thread that may block. Get and List are the calls that
/// come in bursts (`docker volume ls`, every container start), and a
/// thread handoff would cost more than the answer.
pub fn handle_in_memory(vols: &Volumes, cache: &Cache, path: &str, body: &[u8]) -> Option<Reply> {
    let path = path.split('?').next().unwrap_or_default();
    let res = match path {
        "/Plugin.Activate" | "/VolumeDriver.Capabilities" => return Some(handle(vols, path, body)),
        "/VolumeDriver.Get" => {
            let all = vols.cached_metadata()?;
            parse(body).and_then(|r| get(vols, &r, Some(&all)))
        }
        "/VolumeDriver.List" => {
            let all = vols.cached_metadata()?;
            // Only a kept reply: rendering thousands of volumes is for a
            // thread that may take its time.
            mounted_names(vols, &all)
                .map(|key| kept_list(&all, &key, cache))
                .transpose()?
        }
        _ => return None,
    };
    Some(finish(path, res))
}

/// What a request must wait for before it runs ([`super::queue`]): the
/// volumes whose lock it takes, by name, the one it is about first.
/// `None`: it takes no volume's lock (Path, Get, List) or is malformed
/// (it fails without waiting for anything).
pub fn ticket(path: &str, body: &[u8]) -> Option<super::queue::Ticket> {
    let path = path.split('?').next().unwrap_or_default();
    let name_table = match path {
        "/VolumeDriver.Create" | "/VolumeDriver.Remove" => true,
        "/VolumeDriver.Mount" | "/VolumeDriver.Unmount" => false,
        _ => return None,
    };
    let r = parse(body).ok()?;
    let mut names = vec![r.name().ok()?.to_string()];
    let mut name_table = name_table;
    if path == "/VolumeDriver.Create" {
        match parse_create_opts(r.field("Opts")).map(|c| c.source) {
            // A copy holds its source's lock while it takes the copy,
            // and the name table's only at its start.
            Ok(Some(src)) => {
                name_table = false;
                if let CopySource::VolumeName(src) = src {
                    names.push(src);
                }
            }
            Ok(None) => {}
            // Fails at once.
            Err(_) => return None,
        }
    }
    Some(super::queue::Ticket { names, name_table })
}

/// The volume name of a request that acts on that volume's mount point
/// (Create, Remove, Mount, Unmount, Path); `None` for the others and for
/// a malformed one (it fails by itself).
pub fn mount_point_of(path: &str, body: &[u8]) -> Option<String> {
    match path.split('?').next().unwrap_or_default() {
        "/VolumeDriver.Create"
        | "/VolumeDriver.Remove"
        | "/VolumeDriver.Mount"
        | "/VolumeDriver.Unmount"
        | "/VolumeDriver.Path" => parse(body).ok()?.name().ok().map(str::to_string),
        _ => None,
    }
}

/// The reply to a request to `path` refused with `e` before it ran.
pub fn refused(path: &str, e: Error) -> Reply {
    finish(path, Err(e))
}

/// The reply to a request whose turn did not come within `waited`.
pub fn busy(name: &str, waited: std::time::Duration) -> Reply {
    Reply::err(&Error::busy(format!(
        "volume {} is busy: the requests for it before this one have not finished within {}; try again, or raise rexray.lockTimeout",
        crate::input::quote(name),
        humantime::format_duration(waited)
    )))
}

fn finish(path: &str, res: Result<Reply>) -> Reply {
    match res {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(endpoint = path, "request failed: {e}");
            Reply::err(&e)
        }
    }
}

/// A request body: a JSON object (empty body = `{}`), keys matched
/// case-insensitively.
#[derive(Debug, Default)]
struct Request(Map<String, Value>);

impl Request {
    fn field(&self, key: &str) -> Option<&Value> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
            .filter(|v| !v.is_null())
    }
    fn string(&self, key: &str) -> Result<Option<&str>> {
        match self.field(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(Error::invalid(format!(
                "field {key} must be a string, not {other}"
            ))),
        }
    }
    fn name(&self) -> Result<&str> {
        let n = self.string("Name")?.ok_or_else(|| {
            Error::invalid(
                "the request has no volume Name (an empty body is not enough for this endpoint)",
            )
        })?;
        crate::input::volume_name(n)
    }
    /// The caller's mount id, in Docker's consumer namespace; none
    /// (dvdcli, Mesos, Docker ≤ 1.11) is the shared anonymous consumer.
    fn consumer(&self) -> Result<Consumer<'_>> {
        match self.string("ID")? {
            Some(id) if !id.is_empty() => Ok(Consumer::Docker(crate::input::consumer(id)?)),
            _ => Ok(Consumer::Anonymous),
        }
    }
}

fn parse(body: &[u8]) -> Result<Request> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(Request::default());
    }
    // Keys are matched case-insensitively, so `size` and `Size` are the
    // same key twice.
    match crate::input::json_without_repeated_keys(body, true) {
        Ok(Value::Object(m)) => Ok(Request(m)),
        Ok(Value::Null) => Ok(Request::default()),
        Ok(other) => Err(Error::invalid(format!(
            "the request body must be a JSON object, not {}",
            match other {
                Value::Array(_) => "an array",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                _ => "a boolean",
            }
        ))),
        Err(e) => Err(Error::invalid(format!(
            "the request body is not valid JSON: {e}"
        ))),
    }
}

/// A parsed create request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateRequest {
    /// Size, IOPS, type, zone, fs type, encryption.
    pub opts: CreateOptions,
    /// Copy from a volume or a snapshot.
    pub source: Option<CopySource>,
    /// `overwriteFs`: accepted; a new volume (blank, or a copy) is never
    /// formatted over, so it changes nothing at create.
    pub overwrite_fs: bool,
}

/// Parse `Opts`: values strings (numbers and booleans are taken as their
/// text), checked by [`options::DOCKER`](crate::options::DOCKER): keys
/// case-insensitive, unknown keys refused with the list of valid ones.
pub fn parse_create_opts(opts: Option<&Value>) -> Result<CreateRequest> {
    let map = match opts {
        None | Some(Value::Null) => return Ok(CreateRequest::default()),
        Some(Value::Object(m)) => m,
        Some(other) => {
            return Err(Error::invalid(format!(
                "Opts must be an object of strings, not {other}"
            )))
        }
    };
    let mut pairs = Vec::with_capacity(map.len());
    for (k, v) in map {
        let v = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => {
                // An unknown key is named as such, whatever its value.
                let Some(known) = crate::options::DOCKER.key(k) else {
                    return Err(crate::options::DOCKER.unknown_key(k));
                };
                return Err(Error::invalid(format!(
                    "option {} must be a string, not {other}",
                    known.name
                )));
            }
        };
        pairs.push((k.clone(), v));
    }
    let p = crate::options::DOCKER.parse(&pairs)?;
    Ok(CreateRequest {
        opts: p.create,
        source: p.source,
        overwrite_fs: p.overwrite_fs,
    })
}

fn create(vols: &Volumes, r: &Request) -> Result<Reply> {
    let name = r.name()?;
    let req = parse_create_opts(r.field("Opts"))
        .map_err(|e| e.context(format!("volume {name} was not created")))?;
    let created = match &req.source {
        None => vols.create(name, &req.opts)?,
        Some(src) => vols.create_from(name, &req.opts, src)?,
    };
    match created {
        Created::New(v) => tracing::info!(volume = %v.name, id = %v.id, "created"),
        Created::Existing(_) => tracing::debug!(volume = name, "exists: nothing changed"),
        Created::Disabled => {}
    }
    Ok(Reply::ok(&json!({})))
}

fn remove(vols: &Volumes, r: &Request) -> Result<Reply> {
    let name = r.name()?;
    if vols.remove(VolumeRef::Name(name))?.is_some() {
        tracing::info!(volume = name, "removed");
    }
    Ok(Reply::ok(&json!({})))
}

fn mount(vols: &Volumes, r: &Request) -> Result<Reply> {
    let name = r.name()?;
    let consumer = r.consumer()?;
    let (_, path) = vols.mount(VolumeRef::Name(name), consumer, &MountOptions::default())?;
    tracing::info!(volume = name, consumer = ?consumer, path = %path.display(), "mounted");
    Ok(Reply::ok(&json!({ "Mountpoint": path })))
}

fn unmount(vols: &Volumes, r: &Request) -> Result<Reply> {
    let name = r.name()?;
    let consumer = r.consumer()?;
    match vols.unmount(VolumeRef::Name(name), consumer)? {
        Unmounted::Released => tracing::info!(volume = name, consumer = ?consumer, "unmounted"),
        Unmounted::StillUsed(n) => {
            tracing::info!(
                volume = name,
                consumer = ?consumer,
                "released; {n} consumer(s) still use it"
            )
        }
    }
    Ok(Reply::ok(&json!({})))
}

fn path_of(vols: &Volumes, r: &Request) -> Result<Reply> {
    let name = r.name()?;
    Ok(Reply::ok(&match vols.path(VolumeRef::Name(name))? {
        Some(p) => json!({ "Mountpoint": p }),
        None => json!({}),
    }))
}

/// A volume as dockerd shows it.
#[derive(Serialize)]
struct DockerVolume<'a> {
    #[serde(rename = "Name")]
    name: &'a str,
    /// Only when mounted on this host.
    #[serde(rename = "Mountpoint", skip_serializing_if = "Option::is_none")]
    mountpoint: Option<String>,
    #[serde(rename = "CreatedAt", skip_serializing_if = "Option::is_none")]
    created_at: Option<&'a str>,
    #[serde(rename = "Status")]
    status: Status<'a>,
}

/// REX-Ray's `Status` map (libStorage era), size in GiB.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Status<'a> {
    availability_zone: &'a str,
    fields: Option<&'a BTreeMap<String, String>>,
    iops: i64,
    name: &'a str,
    server: &'a str,
    service: &'a str,
    size: u64,
    #[serde(rename = "type")]
    volume_type: &'a str,
}

fn docker_volume<'a>(service: &'a str, v: &'a Volume, path: Option<String>) -> DockerVolume<'a> {
    DockerVolume {
        name: &v.name,
        mountpoint: path,
        created_at: v.created_at(),
        status: Status {
            availability_zone: &v.availability_zone,
            fields: Some(&v.fields).filter(|f| !f.is_empty()),
            iops: v.iops,
            name: &v.name,
            server: service,
            service,
            size: v.size,
            volume_type: &v.volume_type,
        },
    }
}

/// Get and List show no attachment state: they read the catalog (`cached`
/// when the caller has it) and ask the kernel only whether the mount point
/// is one.
fn get(vols: &Volumes, r: &Request, cached: Option<&[Volume]>) -> Result<Reply> {
    let name = r.name()?;
    let v = match cached {
        // Names only, as every Docker request: see `VolumeRef`.
        Some(all) => all.iter().find(|v| v.name == name).cloned(),
        None => vols.lookup_metadata(name)?,
    };
    let v = v.ok_or_else(|| {
        Error::not_found(format!(
            "volume {} not found (see `rexray volume ls`)",
            crate::input::quote(name)
        ))
    })?;
    let mp = vols.mount_point(&v.name);
    let path = if vols.node().is_mounted(&mp)? {
        Some(
            vols.content_path(&v.name, &mp, false)?
                .to_string_lossy()
                .into_owned(),
        )
    } else {
        None
    };
    #[derive(Serialize)]
    struct Get<'a> {
        #[serde(rename = "Volume")]
        volume: DockerVolume<'a>,
    }
    Ok(Reply::ok(&Get {
        volume: docker_volume(vols.config().service(), &v, path),
    }))
}

/// The last List reply, kept while neither the volumes nor the mounts
/// change: rendering thousands of volumes costs more than the rest of the
/// request.
#[derive(Default)]
pub struct Cache {
    list: std::sync::Mutex<Option<ListReply>>,
}

/// A List reply and what it was rendered from. Holding the volumes keeps
/// their allocation alive, so a pointer-equal slice is this same catalog.
struct ListReply {
    volumes: Arc<[Volume]>,
    mounted: Vec<(String, Option<String>)>,
    body: Vec<u8>,
}

/// The mounted volumes (names) under the mount path, sorted, each with the
/// path handed out, checked now (`None` when it would not be inside the
/// volume): what a kept List reply is checked against.
fn mounted_names(vols: &Volumes, all: &[Volume]) -> Result<Vec<(String, Option<String>)>> {
    if all.is_empty() {
        return Ok(Vec::new());
    }
    let base = vols.mount_point("");
    let mut key: Vec<(String, Option<String>)> = vols
        .node()
        .mounted_under(&base)?
        .into_iter()
        .map(|n| {
            let p = match vols.content_path(&n, &base.join(&n), false) {
                Ok(p) => Some(p.to_string_lossy().into_owned()),
                Err(e) => {
                    tracing::warn!("{e}");
                    None
                }
            };
            (n, p)
        })
        .collect();
    key.sort_unstable();
    Ok(key)
}

/// The kept List reply, if it was rendered from these very volumes and
/// the same mounts and paths (`key`, from [`mounted_names`]).
fn kept_list(
    all: &Arc<[Volume]>,
    key: &[(String, Option<String>)],
    cache: &Cache,
) -> Option<Reply> {
    let last = cache.list.lock().unwrap_or_else(|e| e.into_inner());
    last.as_ref()
        .filter(|l| Arc::ptr_eq(&l.volumes, all) && l.mounted == key)
        .map(|l| Reply {
            status: 200,
            body: l.body.clone(),
        })
}

/// Every volume: one catalog read and one listing of the mount points.
/// With a `cache`, the reply is kept (or the kept one reused).
fn list(vols: &Volumes, all: Arc<[Volume]>, cache: Option<&Cache>) -> Result<Reply> {
    let key = mounted_names(vols, &all)?;
    if let Some(r) = cache.and_then(|c| kept_list(&all, &key, c)) {
        return Ok(r);
    }
    let service = vols.config().service();
    #[derive(Serialize)]
    struct List<'a> {
        #[serde(rename = "Volumes")]
        volumes: Vec<DockerVolume<'a>>,
    }
    // By name in every mode: a driver's catalog is in name order, but a
    // libStorage server answers in id order.
    let mut by_name: Vec<&Volume> = all.iter().collect();
    by_name.sort_by(|a, b| a.name.cmp(&b.name));
    let out = List {
        volumes: by_name
            .into_iter()
            .map(|v| {
                let path = key
                    .binary_search_by(|(n, _)| n.as_str().cmp(&v.name))
                    .ok()
                    .and_then(|i| key[i].1.clone());
                docker_volume(service, v, path)
            })
            .collect(),
    };
    let reply = Reply::ok(&out);
    if let Some(cache) = cache {
        *cache.list.lock().unwrap_or_else(|e| e.into_inner()) = Some(ListReply {
            volumes: all.clone(),
            mounted: key,
            body: reply.body.clone(),
        });
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FsType;

    #[test]
    fn the_endpoints_read_mounts_through_the_node() {
        let w = crate::volume::tests::world();
        let call = |p: &str, body: &str| {
            let r = handle(&w.vols, p, body.as_bytes());
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(r.status, 200, "{p} {body}: {v}");
            v
        };
        call("/VolumeDriver.Create", r#"{"Name":"vol"}"#);
        let get = || call("/VolumeDriver.Get", r#"{"Name":"vol"}"#);
        let list = || call("/VolumeDriver.List", "{}");
        assert!(get()["Volume"].get("Mountpoint").is_none());
        let data = w.mp("vol").join("data").display().to_string();
        for id in ["a", "b"] {
            let m = call(
                "/VolumeDriver.Mount",
                &format!(r#"{{"Name":"vol","ID":"{id}"}}"#),
            );
            assert_eq!(m["Mountpoint"], json!(data));
        }
        assert_eq!(w.mounts_at("vol"), 1);
        assert_eq!(get()["Volume"]["Mountpoint"], json!(data));
        assert_eq!(list()["Volumes"][0]["Mountpoint"], json!(data));
        assert_eq!(
            call("/VolumeDriver.Path", r#"{"Name":"vol"}"#)["Mountpoint"],
            json!(data)
        );
        call("/VolumeDriver.Unmount", r#"{"Name":"vol","ID":"a"}"#);
        assert_eq!(
            get()["Volume"]["Mountpoint"],
            json!(data),
            "b still uses it"
        );
        let r = handle(&w.vols, "/VolumeDriver.Remove", br#"{"Name":"vol"}"#);
        assert_eq!(r.status, 500, "in use");
        call("/VolumeDriver.Unmount", r#"{"Name":"vol","ID":"b"}"#);
        assert!(get()["Volume"].get("Mountpoint").is_none());
        assert!(list()["Volumes"][0].get("Mountpoint").is_none());
        assert_eq!(w.state_of("vol"), crate::model::AttachmentState::Available);
        call("/VolumeDriver.Remove", r#"{"Name":"vol"}"#);
        assert_eq!(list()["Volumes"], json!([]));
    }

    fn opts(v: Value) -> Result<CreateRequest> {
        parse_create_opts(Some(&v))
    }

    #[test]
    fn create_options_are_case_insensitive_and_checked() {
        let r = opts(json!({"SIZE": "3", "IOPS": "100", "VolumeType": "gp2", "fstype": "xfs"}))
            .unwrap();
        assert_eq!(r.opts.size, Some(3));
        assert_eq!(r.opts.iops, Some(100));
        assert_eq!(r.opts.volume_type.as_deref(), Some("gp2"));
        assert_eq!(r.opts.fs_type, Some(FsType::Xfs));
        let r = opts(json!({"volumeType": "a", "type": "b"})).unwrap();
        assert_eq!(r.opts.volume_type.as_deref(), Some("b"));
        let e = opts(json!({"color": "red"})).unwrap_err().to_string();
        assert!(
            e.contains("\"color\"") && e.contains("availabilityZone"),
            "{e}"
        );
        for bad in [
            json!({"size": "abc"}),
            json!({"size": "-1"}),
            json!({"size": "0"}),
        ] {
            assert!(opts(bad).is_err());
        }
        assert!(opts(json!({"size": "1", "Size": "2"})).is_err());
        assert!(opts(json!({"volumeName": "a", "snapshotID": "b"})).is_err());
        assert!(opts(json!({"fsType": "ntfs"})).is_err());
        assert!(opts(json!({"encrypted": "maybe"})).is_err());
        assert_eq!(
            opts(json!({"volumeID": "abc"})).unwrap().source,
            Some(CopySource::VolumeId("abc".into()))
        );
        assert_eq!(
            parse_create_opts(Some(&Value::Null)).unwrap(),
            CreateRequest::default()
        );
        assert_eq!(parse_create_opts(None).unwrap(), CreateRequest::default());
        assert_eq!(opts(json!({"size": 5})).unwrap().opts.size, Some(5));
    }

    /// What is answered from memory (including the kept List reply) is
    /// byte for byte what the full path answers, and a change made through
    /// another instance is never answered from memory before it shows.
    #[test]
    fn answers_from_memory_match_the_full_path() {
        let t = tempfile::tempdir().unwrap();
        let open = || crate::volume::tests::open_at(t.path());
        let (svc, other) = (open(), open());
        let cache = Cache::default();
        for p in ["/Plugin.Activate", "/VolumeDriver.Capabilities"] {
            assert_eq!(
                handle_in_memory(&svc, &cache, p, b""),
                Some(handle(&svc, p, b""))
            );
        }
        assert_eq!(
            handle_in_memory(&svc, &cache, "/VolumeDriver.Mount", b"{}"),
            None
        );
        let calls: [(&str, &[u8]); 4] = [
            ("/VolumeDriver.List", b"{}"),
            ("/VolumeDriver.Get", br#"{"Name":"u0"}"#),
            ("/VolumeDriver.Get", br#"{"Name":"u2"}"#),
            ("/VolumeDriver.Get", br#"{"Name":"none"}"#),
        ];
        for i in 0..4 {
            other
                .create(&format!("u{i}"), &CreateOptions::default())
                .unwrap();
            for (p, body) in calls {
                let before = handle_in_memory(&svc, &cache, p, body);
                let full = handle_with(&svc, Some(&cache), p, body);
                assert_eq!(
                    full,
                    handle(&svc, p, body),
                    "{p}: the cache changes nothing"
                );
                assert!(
                    before.is_none() || before.as_ref() == Some(&full),
                    "{p} after u{i}"
                );
                for _ in 0..2 {
                    assert_eq!(
                        handle_in_memory(&svc, &cache, p, body).as_ref(),
                        Some(&full)
                    );
                }
            }
        }
        let l: Value =
            serde_json::from_slice(&handle(&svc, "/VolumeDriver.List", b"").body).unwrap();
        assert_eq!(l["Volumes"].as_array().unwrap().len(), 4);
    }

    #[test]
    fn bodies_are_lenient() {
        assert!(parse(b"").unwrap().0.is_empty());
        assert!(parse(b"  \n").unwrap().0.is_empty());
        assert!(parse(b"{}\n").unwrap().0.is_empty());
        assert!(parse(b"null").unwrap().0.is_empty());
        let r = parse(br#"{"name":"v1","Extra":[1,2],"id":"abc"}"#).unwrap();
        assert_eq!(r.name().unwrap(), "v1");
        assert_eq!(r.consumer().unwrap(), Consumer::Docker("abc"));
        let r = parse(br#"{"Name":"v1","ID":""}"#).unwrap();
        assert_eq!(r.consumer().unwrap(), Consumer::Anonymous);
        assert!(parse(b"{\"Name\":").is_err());
        assert!(parse(b"[1]").is_err());
        assert!(parse(b"{}").unwrap().name().is_err());
        assert!(parse(br#"{"Name":"../x"}"#).unwrap().name().is_err());
        assert!(parse(br#"{"Name":5}"#).unwrap().name().is_err());
        for twice in [
            &br#"{"Name":"a","Name":"b"}"#[..],
            br#"{"Name":"a","name":"b"}"#,
            br#"{"Name":"a","Opts":{"size":"1","size":"2"}}"#,
            br#"{"Name":"a","Opts":{"size":"1","Size":"2"}}"#,
        ] {
            let e = parse(twice).unwrap_err().to_string();
            assert!(e.contains("given twice"), "{e}");
        }
    }
}
