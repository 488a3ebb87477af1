//! The libStorage routes: what each request asks of which service's
//! [`Controller`], and the status, body and error the original server
//! answers with (`reference/rexray.md` §3.1–3.3 and the captured
//! exchanges of `reference/libstorage-wire.md`).
//!
//! [`route`] checks everything it can without touching a backend (the
//! route, the headers, the body's schema, that the service exists and
//! that the caller named itself where it must) and answers at once when
//! something is wrong; otherwise it hands back the work, which the server
//! runs as a task, queued per volume.
//!
//! Where our drivers are stricter than the original's vfs (a name unique
//! per service and across the services of the server; a volume held by
//! one instance at a time unless force), the refusal has the original's
//! error shape: status 500, our message, and `error.kind`.

use super::headers::{Attachments, BadHeader, InstanceId, LocalDevices};
use super::wire::{self, ErrorBody, Type};
use crate::docker::api::Reply;
use crate::docker::queue::Ticket;
use crate::model::{AttachmentState, CreateSpec, Volume};
use crate::storage::controller::{derive_state, Controller};
use crate::{Error, Result};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The libStorage API version this server speaks (`/help/version`).
pub const API_VERSION: &str = "0.11.4";

/// One served service.
pub struct Service {
    /// Its name (lower case, as configured).
    pub name: String,
    /// Its backend.
    pub ctrl: Arc<dyn Controller>,
    /// Size in GiB of a volume created without one.
    pub default_size: u64,
}

/// The services of a server, by name.
pub type Services = BTreeMap<String, Service>;

/// A request, as the routes need it.
#[derive(Debug, Default, Clone)]
pub struct Call {
    /// `GET`, `POST`, `DELETE`, ...
    pub method: String,
    /// The path, e.g. `/volumes/vfs/vfs-000`.
    pub path: String,
    /// The query, decoded, in order (`?attach` is `("attach", "")`).
    pub query: Vec<(String, String)>,
    /// Every `Libstorage-Instanceid` value.
    pub instance_ids: Vec<String>,
    /// Every `Libstorage-Localdevices` value.
    pub local_devices: Vec<String>,
    /// `Rexray-Usage: omit`: a listing may leave out each volume's
    /// allocated bytes.
    pub omit_usage: bool,
    /// The body.
    pub body: Vec<u8>,
    /// `http://<Host>` for the absolute URLs of `GET /`.
    pub base_url: String,
}

impl Call {
    /// Whether the query has `k` (with or without a value).
    pub fn has(&self, k: &str) -> bool {
        self.query.iter().any(|(q, _)| q.eq_ignore_ascii_case(k))
    }
    /// The value of query `k`, if present.
    pub fn get(&self, k: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(q, _)| q.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    }
}

/// Work to run on the blocking pool, as a task.
pub struct Work {
    /// The queues it waits in (per volume, per new name).
    pub ticket: Ticket,
    /// What it does.
    pub run: Box<dyn FnOnce() -> Reply + Send>,
}

/// What [`route`] decided.
pub enum Routed {
    /// The answer, at once.
    Now(Reply),
    /// Work for a task.
    Later(Work),
}

/// A JSON reply.
pub fn json<T: Serialize>(status: u16, v: &T) -> Reply {
    Reply {
        status,
        body: serde_json::to_vec(v).expect("JSON serialises"),
    }
}

/// An error reply.
pub fn error(e: &ErrorBody) -> Reply {
    json(e.status, e)
}

fn not_found(what: &str) -> Reply {
    error(&ErrorBody::not_found(what))
}

fn method_not_allowed(call: &Call) -> Reply {
    error(&ErrorBody {
        message: format!("{} is not served on {}", call.method, call.path),
        status: 405,
        error: Value::Null,
    })
}

/// The callers named by the request's instance-id headers, per service:
/// a header naming the service wins over one naming its driver.
struct Callers {
    by_service: BTreeMap<String, InstanceId>,
    by_driver: BTreeMap<String, InstanceId>,
}

impl Callers {
    fn parse(call: &Call) -> std::result::Result<Callers, BadHeader> {
        let mut c = Callers {
            by_service: BTreeMap::new(),
            by_driver: BTreeMap::new(),
        };
        for h in &call.instance_ids {
            let i = InstanceId::parse(h)?;
            if i.service.is_empty() {
                c.by_driver.insert(i.driver.to_ascii_lowercase(), i);
            } else {
                c.by_service.insert(i.service.to_ascii_lowercase(), i);
            }
        }
        Ok(c)
    }

    /// The header for `svc`, as sent.
    fn header_for(&self, svc: &Service) -> Option<&InstanceId> {
        self.by_service.get(&svc.name).or_else(|| {
            self.by_driver
                .get(&svc.ctrl.info().driver.to_ascii_lowercase())
        })
    }

    /// The caller for `svc`, its id resolved (an empty id is read from the
    /// metadata, as the original vfs driver's InstanceInspect does).
    fn who(&self, svc: &Service) -> std::result::Result<Option<InstanceId>, Reply> {
        let Some(h) = self.header_for(svc) else {
            return Ok(None);
        };
        match h.resolved() {
            Some(id) => Ok(Some(InstanceId {
                id,
                metadata: None,
                ..h.clone()
            })),
            None => Err(error(&ErrorBody::bad_header(&BadHeader {
                what: "invalid InstanceID",
                value: h.header(),
                why: "neither an id nor a host name in its metadata".into(),
            }))),
        }
    }
}

/// The caller's attachments shown per the mask: none (mask 0), only the
/// caller's (mine), and the state derived for the caller if the driver
/// left it unset. Returns whether the volume is listed.
fn shape(v: &mut Volume, mask: Attachments, who: Option<&InstanceId>) -> bool {
    if !mask.requested() {
        v.attachments.clear();
        v.attachment_state = 0;
        return true;
    }
    let me = who.map(InstanceId::to_model);
    if mask.mine() {
        if let Some(me) = &me {
            v.attachments
                .retain(|a| a.instance_id.id.eq_ignore_ascii_case(&me.id));
        }
    }
    if v.attachment_state == 0 {
        v.attachment_state = derive_state(v, me.as_ref()) as u8;
    }
    mask.includes(v.state())
}

/// Settle a volume for a caller (mask 1: everything, state for them).
fn settled(mut v: Volume, who: Option<&InstanceId>) -> Volume {
    shape(&mut v, Attachments(Attachments::REQUESTED), who);
    v
}

fn mask_of(call: &Call) -> std::result::Result<Attachments, Reply> {
    match call.get("attachments") {
        None => Ok(Attachments(0)),
        Some(v) => Attachments::parse(v).ok_or_else(|| {
            error(&ErrorBody {
                message: format!(
                    "invalid attachments value {}: use a mask from 0 to 31, true or false",
                    crate::input::quote(v)
                ),
                status: 500,
                error: Value::Null,
            })
        }),
    }
}

/// The `(name=X)` filter (the only one the original acts on), lower case.
fn name_filter(call: &Call) -> Option<String> {
    let f = call.get("filter")?.trim();
    let inner = f.strip_prefix('(')?.strip_suffix(')')?;
    let (k, v) = inner.split_once('=')?;
    k.trim()
        .eq_ignore_ascii_case("name")
        .then(|| v.trim().to_ascii_lowercase())
}

fn ticket(names: Vec<String>, name_table: bool) -> Ticket {
    Ticket { names, name_table }
}

/// The queue of one volume of one service.
fn vol_key(svc: &str, id: &str) -> String {
    format!("{svc}/{id}")
}
/// The queue of one new name, across services.
fn name_key(name: &str) -> String {
    format!("\0name/{name}")
}

fn later(
    names: Vec<String>,
    name_table: bool,
    run: impl FnOnce() -> Reply + Send + 'static,
) -> Routed {
    Routed::Later(Work {
        ticket: ticket(names, name_table),
        run: Box::new(run),
    })
}

fn reply_of(r: Result<Reply>, resource: &str) -> Reply {
    r.unwrap_or_else(|e| error(&ErrorBody::from_error(&e, Some(resource))))
}

/// The segments of a request path, each percent-decoded, empty ones
/// skipped: what the router matches, and what the auth scope reads (one
/// decoding for both, so no spelling of a path reaches a route past the
/// check of another). `Err` names a segment that decodes to a `/`, a NUL
/// or no UTF-8.
pub(super) fn segments(path: &str) -> std::result::Result<Vec<std::borrow::Cow<'_, str>>, &str> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(
            |raw| match percent_encoding::percent_decode_str(raw).decode_utf8() {
                Ok(d) if !d.contains(['/', '\0']) => Ok(d),
                _ => Err(raw),
            },
        )
        .collect()
}

/// Route a request. `services` is shared with the work it returns.
pub fn route(services: &Arc<Services>, tasks: &super::tasks::Tasks, call: &Call) -> Routed {
    // Each segment percent-decoded, as the original's router matches
    // them (and as the auth scope reads them): `rbd.v1%40s1` is the
    // snapshot `rbd.v1@s1`. One that decodes to a `/`, a NUL or no UTF-8
    // names nothing this server has.
    let owned = match segments(&call.path) {
        Ok(s) => s,
        Err(raw) => {
            return Routed::Now(error(&ErrorBody::from_error(
                &crate::Error::invalid(format!(
                    "invalid path segment {}: it decodes to a slash, a NUL or no UTF-8",
                    crate::input::quote(raw)
                )),
                None,
            )))
        }
    };
    let segs: Vec<&str> = owned.iter().map(|c| c.as_ref()).collect();
    // Headers first, as the original's middleware.
    let callers = match Callers::parse(call) {
        Ok(c) => c,
        Err(e) => return Routed::Now(error(&ErrorBody::bad_header(&e))),
    };
    for h in &call.local_devices {
        if let Err(e) = LocalDevices::parse(h) {
            return Routed::Now(error(&ErrorBody::bad_header(&e)));
        }
    }
    let get = call.method == "GET";
    match segs.as_slice() {
        [] if get => Routed::Now(json(
            200,
            &["services", "snapshots", "tasks", "help", "volumes"]
                .iter()
                .map(|r| format!("{}/{r}", call.base_url))
                .collect::<Vec<_>>(),
        )),
        ["help"] if get => Routed::Now(json(200, &[format!("{}/help/version", call.base_url)])),
        ["help", "version"] if get => Routed::Now(json(200, &API_VERSION)),
        ["tasks"] if get => Routed::Now(json(200, &tasks.all())),
        ["tasks", id] if get => match id.parse::<u64>().ok().and_then(|n| tasks.get(n)) {
            Some(t) => Routed::Now(json(200, &t)),
            None => Routed::Now(not_found(id)),
        },
        ["services"] if get => services_all(services, &callers, call),
        // This crate's node registry: the calling instance registers as a
        // node of the service's backend; `?extensions&node=ID` asks about
        // one.
        ["services", s] if call.method == "POST" && call.has("registerNode") => {
            let Some(svc) = services.get(&s.to_ascii_lowercase()) else {
                return Routed::Now(not_found(s));
            };
            let who = match callers.who(svc) {
                Ok(Some(w)) => w,
                Ok(None) => return Routed::Now(error(&ErrorBody::missing_instance_id(&svc.name))),
                Err(r) => return Routed::Now(r),
            };
            let ctrl = svc.ctrl.clone();
            later(Vec::new(), false, move || {
                reply_of(
                    ctrl.register_node(&who.to_model())
                        .map(|()| json(200, &serde_json::json!({}))),
                    &who.id,
                )
            })
        }
        ["services", s] if get && call.has("extensions") && call.get("node").is_some() => {
            let Some(svc) = services.get(&s.to_ascii_lowercase()) else {
                return Routed::Now(not_found(s));
            };
            let mut out = match service_json(svc, &callers, call) {
                Ok(o) => o,
                Err(r) => return Routed::Now(r),
            };
            let ctrl = svc.ctrl.clone();
            let node = call.get("node").unwrap_or_default().to_string();
            later(Vec::new(), false, move || {
                reply_of(
                    ctrl.node_known(&node).map(|known| {
                        if let Some(x) = &mut out.rexray {
                            x.node_known = known;
                        }
                        json(200, &out)
                    }),
                    &node,
                )
            })
        }
        ["services", s] if get => match services.get(&s.to_ascii_lowercase()) {
            None => Routed::Now(not_found(s)),
            Some(svc) => Routed::Now(service_one(svc, &callers, call)),
        },
        ["volumes"] if get => volumes_all(services, callers, call),
        ["volumes"] if call.method == "POST" && call.has("detach") => {
            detach_all(services, callers, call, None)
        }
        ["volumes", s, rest @ ..] => {
            let Some(svc) = services.get(&s.to_ascii_lowercase()) else {
                return Routed::Now(not_found(s));
            };
            volumes_of(services, svc, callers, call, rest)
        }
        ["snapshots"] if get => {
            let services = services.clone();
            later(Vec::new(), false, move || {
                let mut out = BTreeMap::new();
                for (name, svc) in services.iter() {
                    match snapshots_of(svc) {
                        Ok(m) => {
                            out.insert(name.clone(), m);
                        }
                        Err(e) => return error(&ErrorBody::from_error(&e, None)),
                    }
                }
                json(200, &out)
            })
        }
        ["snapshots", s, rest @ ..] => {
            let Some(svc) = services.get(&s.to_ascii_lowercase()) else {
                return Routed::Now(not_found(s));
            };
            snapshot_routes(services, svc, call, rest)
        }
        [] | ["help", ..] | ["tasks", ..] | ["services", ..] | ["volumes"] | ["snapshots"]
            if !get =>
        {
            Routed::Now(method_not_allowed(call))
        }
        _ => Routed::Now(not_found(call.path.trim_start_matches('/'))),
    }
}

fn instance_of(svc: &Service, who: &InstanceId) -> wire::Instance {
    wire::Instance {
        instance_id: InstanceId {
            metadata: None,
            ..who.clone()
        },
        name: format!("{}Instance", svc.ctrl.info().driver),
        provider_name: String::new(),
        region: String::new(),
    }
}

fn service_json(
    svc: &Service,
    callers: &Callers,
    call: &Call,
) -> std::result::Result<wire::Service, Reply> {
    let mut s = wire::Service::from_info(svc.ctrl.info());
    s.name = svc.name.clone();
    if call.has("instance") {
        match callers.who(svc)? {
            Some(who) => s.instance = Some(instance_of(svc, &who)),
            None => return Err(error(&ErrorBody::missing_instance_id(&svc.name))),
        }
    }
    if call.has("extensions") {
        s.rexray = Some(wire::Extensions {
            available_bytes: svc.ctrl.available_bytes(),
            resize: true,
            live_snapshots: svc.ctrl.offers().live_snapshots,
            node_known: None,
        });
    }
    Ok(s)
}

fn services_all(services: &Services, callers: &Callers, call: &Call) -> Routed {
    let mut out = BTreeMap::new();
    for (name, svc) in services {
        let mut s = wire::Service::from_info(svc.ctrl.info());
        s.name = name.clone();
        if call.has("instance") {
            match callers.who(svc) {
                Ok(Some(who)) => s.instance = Some(instance_of(svc, &who)),
                Ok(None) => {}
                Err(r) => return Routed::Now(r),
            }
        }
        out.insert(name.clone(), s);
    }
    Routed::Now(json(200, &out))
}

fn service_one(svc: &Service, callers: &Callers, call: &Call) -> Reply {
    match service_json(svc, callers, call) {
        Ok(s) => json(200, &s),
        Err(r) => r,
    }
}

/// The volumes of a service as the caller may see them.
fn list_volumes(
    svc: &Service,
    mask: Attachments,
    who: Option<&InstanceId>,
    filter: Option<&str>,
    omit_usage: bool,
) -> Result<BTreeMap<String, Volume>> {
    let mut out = BTreeMap::new();
    let all = match filter {
        // The names from the metadata (kept in memory by the loop driver),
        // then only the matches in full: a client resolving one name must
        // not cost a listing of every volume with its attachments.
        Some(f) => {
            let mut found = Vec::new();
            for m in svc.ctrl.list_metadata()?.iter() {
                if m.name.eq_ignore_ascii_case(f) {
                    found.extend(svc.ctrl.inspect(&m.id)?);
                }
            }
            found
        }
        None if omit_usage => svc.ctrl.list_without_usage()?,
        None => svc.ctrl.list()?,
    };
    for mut v in all {
        if shape(&mut v, mask, who) {
            out.insert(v.id.clone(), v);
        }
    }
    Ok(out)
}

fn volumes_all(services: &Arc<Services>, callers: Callers, call: &Call) -> Routed {
    let mask = match mask_of(call) {
        Ok(m) => m,
        Err(r) => return Routed::Now(r),
    };
    let mut whos = BTreeMap::new();
    for (name, svc) in services.iter() {
        match callers.who(svc) {
            Ok(Some(w)) => {
                whos.insert(name.clone(), w);
            }
            Ok(None) if mask.requires_instance_id() => {
                return Routed::Now(error(&ErrorBody::missing_instance_id(name)))
            }
            Ok(None) => {}
            Err(r) => return Routed::Now(r),
        }
    }
    let filter = name_filter(call);
    let omit_usage = call.omit_usage;
    let services = services.clone();
    later(Vec::new(), false, move || {
        let mut out = BTreeMap::new();
        for (name, svc) in services.iter() {
            match list_volumes(svc, mask, whos.get(name), filter.as_deref(), omit_usage) {
                Ok(m) => {
                    out.insert(name.clone(), m);
                }
                Err(e) => return error(&ErrorBody::from_error(&e, None)),
            }
        }
        json(200, &out)
    })
}

/// The routes under `/volumes/{service}`.
fn volumes_of(
    services: &Arc<Services>,
    svc: &Service,
    callers: Callers,
    call: &Call,
    rest: &[&str],
) -> Routed {
    let who = match callers.who(svc) {
        Ok(w) => w,
        Err(r) => return Routed::Now(r),
    };
    let name = svc.name.clone();
    let ctrl = svc.ctrl.clone();
    let services2 = services.clone();
    match (call.method.as_str(), rest) {
        ("GET", []) => {
            let mask = match mask_of(call) {
                Ok(m) => m,
                Err(r) => return Routed::Now(r),
            };
            if mask.requires_instance_id() && who.is_none() {
                return Routed::Now(error(&ErrorBody::missing_instance_id(&name)));
            }
            let filter = name_filter(call);
            let omit_usage = call.omit_usage;
            later(Vec::new(), false, move || {
                let svc = &services2[&name];
                match list_volumes(svc, mask, who.as_ref(), filter.as_deref(), omit_usage) {
                    Ok(m) => json(200, &m),
                    Err(e) => error(&ErrorBody::from_error(&e, None)),
                }
            })
        }
        ("POST", []) if call.has("detach") => detach_all(services, callers, call, Some(svc)),
        ("POST", []) => create(services, svc, call),
        ("GET", [id]) => {
            let mask = match mask_of(call) {
                Ok(m) => m,
                Err(r) => return Routed::Now(r),
            };
            if mask.requires_instance_id() && who.is_none() {
                return Routed::Now(error(&ErrorBody::missing_instance_id(&name)));
            }
            let id = id.to_string();
            let by_name = call.has("byName");
            later(Vec::new(), false, move || {
                let found = if by_name {
                    ctrl.lookup_name(&id).and_then(|v| match v {
                        Some(v) => Ok(Some(v)),
                        None => Ok(ctrl
                            .list()?
                            .into_iter()
                            .find(|v| v.name.eq_ignore_ascii_case(&id))),
                    })
                } else {
                    ctrl.inspect(&id)
                };
                match found {
                    Ok(Some(mut v)) => {
                        if shape(&mut v, mask, who.as_ref()) {
                            json(200, &v)
                        } else {
                            not_found(&id)
                        }
                    }
                    Ok(None) => not_found(&id),
                    Err(e) => error(&ErrorBody::from_error(&e, Some(&id))),
                }
            })
        }
        ("POST", [id]) if call.has("attach") => {
            let Some(who) = who else {
                return Routed::Now(error(&ErrorBody::missing_instance_id(&name)));
            };
            let body = match wire::parse_body(
                &call.body,
                &[],
                &[
                    ("force", Type::Bool),
                    ("nextDeviceName", Type::String),
                    ("opts", Type::Object),
                ],
            ) {
                Ok(b) => b,
                Err(e) => return Routed::Now(error(&e)),
            };
            let id = id.to_string();
            let force = wire::boolean(&body, "force");
            let next = Some(wire::string(&body, "nextDeviceName")).filter(|s| !s.is_empty());
            later(vec![vol_key(&name, &id)], false, move || {
                let r = ctrl
                    .attach(&id, &who.to_model(), force, next.as_deref())
                    .map(|a| {
                        json(
                            200,
                            &wire::AttachResponse {
                                volume: settled(a.volume, Some(&who)),
                                attach_token: a.token,
                            },
                        )
                    });
                reply_of(r, &id)
            })
        }
        ("POST", [id]) if call.has("detach") => {
            let body = match wire::parse_body(
                &call.body,
                &[],
                &[("force", Type::Bool), ("opts", Type::Object)],
            ) {
                Ok(b) => b,
                Err(e) => return Routed::Now(error(&e)),
            };
            let force = wire::boolean(&body, "force");
            if who.is_none() && !force {
                return Routed::Now(error(&ErrorBody::missing_instance_id(&name)));
            }
            let id = id.to_string();
            later(vec![vol_key(&name, &id)], false, move || {
                let me = who.as_ref().map(InstanceId::to_model).unwrap_or_default();
                let r = ctrl
                    .detach(&id, &me, force)
                    .map(|v| json(205, &settled(v, who.as_ref())));
                reply_of(r, &id)
            })
        }
        ("POST", [id]) if call.has("copy") => {
            // `size` (GiB) is this server's own: the original API has no
            // size for a copy. Without it the copy has the source's size.
            let body = match wire::parse_body(
                &call.body,
                &["volumeName"],
                &[
                    ("volumeName", Type::String),
                    ("size", Type::Integer),
                    ("opts", Type::Object),
                ],
            ) {
                Ok(b) => b,
                Err(e) => return Routed::Now(error(&e)),
            };
            let id = id.to_string();
            let new_name = wire::string(&body, "volumeName");
            let size = match body_size(&body) {
                Ok(s) => s,
                Err(r) => return Routed::Now(r),
            };
            let mut spec = CreateSpec {
                fields: wire::opts_fields(&body),
                ..Default::default()
            };
            later(
                vec![vol_key(&name, &id), name_key(&new_name)],
                false,
                move || {
                    let r = name_free(&services2, &name, &new_name).and_then(|_| {
                        spec.size = match size {
                            Some(s) => s,
                            // A source that is not there: the copy says so.
                            None => ctrl.inspect(&id)?.map(|v| v.size).unwrap_or(0),
                        };
                        ctrl.copy(&id, &new_name, &spec, &|| Ok(()), &|img| {
                            fresh_uuid(&new_name, img)
                        })
                        .map(|v| json(201, &created(v)))
                    });
                    reply_of(r, &id)
                },
            )
        }
        ("POST", [id]) if call.has("resize") => {
            // This server's own (see `GET /services/{svc}?extensions`):
            // the original API has no resize.
            let body = match wire::parse_body(
                &call.body,
                &["size"],
                &[("size", Type::Integer), ("opts", Type::Object)],
            ) {
                Ok(b) => b,
                Err(e) => return Routed::Now(error(&e)),
            };
            let size = match body_size(&body) {
                Ok(Some(s)) => s,
                Ok(None) => {
                    return Routed::Now(error(&ErrorBody::from_error(
                        &crate::Error::invalid("size must be a positive number of GiB"),
                        None,
                    )))
                }
                Err(r) => return Routed::Now(r),
            };
            let id = id.to_string();
            later(vec![vol_key(&name, &id)], false, move || {
                let r = ctrl.resize(&id, size).and_then(|_| {
                    ctrl.inspect(&id)?
                        .ok_or_else(|| crate::Error::not_found(format!("volume {id} not found")))
                        .map(|v| json(200, &settled(v, who.as_ref())))
                });
                reply_of(r, &id)
            })
        }
        ("POST", [id]) if call.has("snapshot") => {
            let body = match wire::parse_body(
                &call.body,
                &["snapshotName"],
                &[("snapshotName", Type::String), ("opts", Type::Object)],
            ) {
                Ok(b) => b,
                Err(e) => return Routed::Now(error(&e)),
            };
            let id = id.to_string();
            let snap = wire::string(&body, "snapshotName");
            later(vec![vol_key(&name, &id)], false, move || {
                let r = ctrl
                    .snapshot(&id, &snap, &|| Ok(()))
                    .map(|s| json(201, &wire::Snapshot::from_model(&s)));
                reply_of(r, &id)
            })
        }
        ("DELETE", [id]) => {
            let id = id.to_string();
            let force = call.has("force");
            later(vec![vol_key(&name, &id)], true, move || {
                reply_of(ctrl.remove(&id, force).map(|_| no_content()), &id)
            })
        }
        (_, [_, _, ..]) => Routed::Now(not_found(call.path.trim_start_matches('/'))),
        ("POST", [_]) => Routed::Now(error(&ErrorBody {
            message:
                "a POST to a volume needs one of ?attach, ?detach, ?copy, ?snapshot or ?resize"
                    .into(),
            status: 405,
            error: Value::Null,
        })),
        _ => Routed::Now(method_not_allowed(call)),
    }
}

/// 204: no body (the server still says it is JSON, as the original).
fn no_content() -> Reply {
    Reply {
        status: 204,
        body: Vec::new(),
    }
}

/// A new volume as the original answers it: state 3 unless set.
fn created(mut v: Volume) -> Volume {
    if v.attachment_state == 0 {
        v.attachment_state = AttachmentState::Available as u8;
    }
    v
}

/// Refuse a new name another service of this server has: names are
/// unique across services, so a node never mistakes one for the other.
fn name_free(services: &Services, own: &str, name: &str) -> Result<()> {
    for (other, svc) in services {
        if other != own && svc.ctrl.lookup_metadata_name(name)?.is_some() {
            return Err(Error::exists(format!(
                "volume {name} already exists in service {other}; volume names are unique across the services of a server"
            )));
        }
    }
    Ok(())
}

/// The `size` of a request's body, in GiB: `None` when absent or 0 (the
/// service's default, as the original has it); refused when negative or
/// past the largest size, before anything is done.
fn body_size(body: &Map<String, Value>) -> std::result::Result<Option<u64>, Reply> {
    let max = crate::input::MAX_SIZE_GIB;
    match body.get("size") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(0) => Ok(None),
            Some(n) if n <= max => Ok(Some(n)),
            _ => Err(error(&ErrorBody::from_error(
                &crate::Error::invalid(format!(
                    "invalid size {v}: a size is a whole number of GiB, at most {max}"
                )),
                None,
            ))),
        },
    }
}

fn create_spec(svc: &Service, body: &Map<String, Value>) -> std::result::Result<CreateSpec, Reply> {
    Ok(CreateSpec {
        size: body_size(body)?.unwrap_or(svc.default_size),
        iops: body.get("iops").and_then(Value::as_i64).unwrap_or(0),
        volume_type: wire::string(body, "type"),
        availability_zone: wire::string(body, "availabilityZone"),
        encrypted: wire::boolean(body, "encrypted"),
        fields: wire::opts_fields(body),
    })
}

const CREATE_TYPES: &[(&str, Type)] = &[
    ("name", Type::String),
    ("availabilityZone", Type::String),
    ("encrypted", Type::Bool),
    ("encryptionKey", Type::String),
    ("iops", Type::Integer),
    ("size", Type::Integer),
    ("type", Type::String),
    ("opts", Type::Object),
];

fn create(services: &Arc<Services>, svc: &Service, call: &Call) -> Routed {
    let body = match wire::parse_body(&call.body, &["name"], CREATE_TYPES) {
        Ok(b) => b,
        Err(e) => return Routed::Now(error(&e)),
    };
    let vol = wire::string(&body, "name");
    let spec = match create_spec(svc, &body) {
        Ok(s) => s,
        Err(r) => return Routed::Now(r),
    };
    let (name, ctrl, services) = (svc.name.clone(), svc.ctrl.clone(), services.clone());
    later(vec![name_key(&vol)], true, move || {
        let r = name_free(&services, &name, &vol)
            .and_then(|_| ctrl.create(&vol, &spec))
            .map(|v| json(201, &created(v)));
        r.unwrap_or_else(|e| error(&ErrorBody::from_error(&e, None)))
    })
}

/// Detach the caller from every volume it holds, in one service or all
/// (with force, every holder): 205 with what was detached.
fn detach_all(
    services: &Arc<Services>,
    callers: Callers,
    call: &Call,
    only: Option<&Service>,
) -> Routed {
    let body = match wire::parse_body(
        &call.body,
        &[],
        &[("force", Type::Bool), ("opts", Type::Object)],
    ) {
        Ok(b) => b,
        Err(e) => return Routed::Now(error(&e)),
    };
    let force = wire::boolean(&body, "force");
    let mut whos = BTreeMap::new();
    for (name, svc) in services.iter() {
        if only.is_some_and(|o| o.name != *name) {
            continue;
        }
        match callers.who(svc) {
            Ok(Some(w)) => {
                whos.insert(name.clone(), Some(w));
            }
            Ok(None) if force => {
                whos.insert(name.clone(), None);
            }
            Ok(None) if only.is_some() => {
                return Routed::Now(error(&ErrorBody::missing_instance_id(name)))
            }
            Ok(None) => {}
            Err(r) => return Routed::Now(r),
        }
    }
    let one = only.map(|s| s.name.clone());
    let services = services.clone();
    later(Vec::new(), false, move || {
        let mut out: BTreeMap<String, BTreeMap<String, Volume>> = BTreeMap::new();
        for (name, who) in &whos {
            let svc = &services[name];
            let me = who.as_ref().map(InstanceId::to_model);
            let r = (|| -> Result<BTreeMap<String, Volume>> {
                let mut done = BTreeMap::new();
                for v in svc.ctrl.list()? {
                    let held = match &me {
                        Some(me) => derive_state(&v, Some(me)) == AttachmentState::Attached,
                        None => !v.attachments.is_empty(),
                    };
                    if !held {
                        continue;
                    }
                    let by = me.clone().unwrap_or_default();
                    let d = svc.ctrl.detach(&v.id, &by, force)?;
                    done.insert(d.id.clone(), settled(d, who.as_ref()));
                }
                Ok(done)
            })();
            match r {
                Ok(m) => {
                    out.insert(name.clone(), m);
                }
                Err(e) => return error(&ErrorBody::from_error(&e, None)),
            }
        }
        match &one {
            Some(n) => json(205, &out.remove(n).unwrap_or_default()),
            None => json(205, &out),
        }
    })
}

fn snapshots_of(svc: &Service) -> Result<BTreeMap<String, wire::Snapshot>> {
    Ok(svc
        .ctrl
        .snapshots()?
        .iter()
        .map(|s| (s.id.clone(), wire::Snapshot::from_model(s)))
        .collect())
}

/// The routes under `/snapshots/{service}`.
fn snapshot_routes(services: &Arc<Services>, svc: &Service, call: &Call, rest: &[&str]) -> Routed {
    let name = svc.name.clone();
    let ctrl = svc.ctrl.clone();
    match (call.method.as_str(), rest) {
        ("GET", []) => {
            let services = services.clone();
            later(Vec::new(), false, move || {
                match snapshots_of(&services[&name]) {
                    Ok(m) => json(200, &m),
                    Err(e) => error(&ErrorBody::from_error(&e, None)),
                }
            })
        }
        ("GET", [id]) => {
            let id = id.to_string();
            later(Vec::new(), false, move || {
                let r = ctrl
                    .snapshots()
                    .map(|all| match all.iter().find(|s| s.id == id) {
                        Some(s) => json(200, &wire::Snapshot::from_model(s)),
                        None => not_found(&id),
                    });
                reply_of(r, &id)
            })
        }
        ("POST", [id]) if call.has("create") => {
            let body = match wire::parse_body(&call.body, &["name"], CREATE_TYPES) {
                Ok(b) => b,
                Err(e) => return Routed::Now(error(&e)),
            };
            let vol = wire::string(&body, "name");
            let spec = match create_spec(svc, &body) {
                Ok(s) => s,
                Err(r) => return Routed::Now(r),
            };
            let id = id.to_string();
            let services = services.clone();
            later(vec![name_key(&vol)], true, move || {
                let r = name_free(&services, &name, &vol)
                    .and_then(|_| {
                        ctrl.create_from_snapshot(&id, &vol, &spec, &|img| fresh_uuid(&vol, img))
                    })
                    .map(|v| json(201, &created(v)));
                reply_of(r, &id)
            })
        }
        ("POST", [_]) if call.has("copy") => Routed::Now(error(&ErrorBody::from_error(
            &ctrl.unsupported("copy snapshots"),
            None,
        ))),
        ("DELETE", [id]) => {
            let id = id.to_string();
            later(vec![format!("{name}/snapshot/{id}")], false, move || {
                reply_of(ctrl.remove_snapshot(&id).map(|_| no_content()), &id)
            })
        }
        (_, [_, _, ..]) => Routed::Now(not_found(call.path.trim_start_matches('/'))),
        _ => Routed::Now(method_not_allowed(call)),
    }
}

/// A new volume's image made on this host (a copy, a volume from a
/// snapshot) gets a filesystem UUID of its own before it is published, as
/// the workflow does for embedded copies (see [`crate::node::fresh_uuid`];
/// the default attach and format timeouts bound the tools).
fn fresh_uuid(name: &str, img: &std::path::Path) -> crate::Result<()> {
    crate::node::fresh_uuid(
        &crate::node::Kernel,
        name,
        img,
        std::time::Duration::from_secs(30),
        std::time::Duration::from_secs(600),
    )
}
