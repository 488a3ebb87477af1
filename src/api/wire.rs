//! The JSON bodies of the libStorage API, shaped as the original 0.11
//! server writes them (field names and order, what is left out when
//! empty), and the error body `{"message","status","error"}`.
//!
//! Volumes travel as [`crate::model::Volume`], whose JSON is already the
//! original's `types.Volume`. Snapshots differ: the original's
//! `startTime` is a number of seconds, ours an RFC 3339 time, so they
//! travel as [`Snapshot`].

use super::headers::InstanceId;
use crate::model::Volume;
use crate::storage::controller::{NextDeviceInfo, ServiceInfo, StorageType};
use crate::{Error, Kind};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

fn is_false(b: &bool) -> bool {
    !*b
}
fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

/// `{"name","driver":{…},"instance"?}` of `/services`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    /// The service name.
    pub name: String,
    /// The caller's instance, with `?instance`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<Instance>,
    /// The driver.
    pub driver: Driver,
    /// What this server offers beyond the original API, answered only to
    /// `GET /services/{svc}?extensions` (an original server ignores the
    /// query and answers without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rexray: Option<Extensions>,
}

/// The extensions of this crate's server (`"rexray"` in a service reply).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Extensions {
    /// The bytes the service's backend has free for new volumes, when it
    /// can tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_bytes: Option<u64>,
    /// `POST /volumes/{svc}/{id}?resize` with `{"size": GiB}` is served.
    #[serde(default)]
    pub resize: bool,
    /// The service's driver snapshots a volume attached to another
    /// instance, crash-consistent (see
    /// [`Offers::live_snapshots`](crate::storage::controller::Offers::live_snapshots)).
    #[serde(default)]
    pub live_snapshots: bool,
    /// Asked with `&node=<instance id>`: whether that instance is a node
    /// of the service's backend (see
    /// [`Controller::node_known`](crate::storage::controller::Controller::node_known));
    /// absent when the driver cannot tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_known: Option<bool>,
}

/// The driver part of [`Service`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Driver {
    /// The driver name.
    pub name: String,
    /// `block`, `nas` or `object`.
    #[serde(rename = "type")]
    pub storage_type: String,
    /// How nodes propose device names.
    #[serde(rename = "nextDevice")]
    pub next_device: NextDevice,
}

/// `{"ignore","prefix","pattern"}`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NextDevice {
    /// The driver ignores proposals.
    #[serde(default)]
    pub ignore: bool,
    /// Device name prefix.
    #[serde(default)]
    pub prefix: String,
    /// Pattern after the prefix.
    #[serde(default)]
    pub pattern: String,
}

/// `{"instanceID":…,"name":…,"providerName":…}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    /// The caller's resolved id.
    #[serde(rename = "instanceID")]
    pub instance_id: InstanceId,
    /// E.g. `vfsInstance`.
    #[serde(default)]
    pub name: String,
    /// The cloud provider, if any.
    #[serde(default)]
    pub provider_name: String,
    /// The region, if any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub region: String,
}

impl Service {
    /// The JSON of a controller's [`ServiceInfo`].
    pub fn from_info(info: &ServiceInfo) -> Service {
        Service {
            name: info.service.clone(),
            instance: None,
            driver: Driver {
                name: info.driver.clone(),
                storage_type: info.storage_type.as_str().to_string(),
                next_device: NextDevice {
                    ignore: info.next_device.ignore,
                    prefix: info.next_device.prefix.clone(),
                    pattern: info.next_device.pattern.clone(),
                },
            },
            rexray: None,
        }
    }
    /// Back to a [`ServiceInfo`] (an unknown type reads as block).
    pub fn to_info(&self) -> ServiceInfo {
        ServiceInfo {
            service: self.name.clone(),
            driver: self.driver.name.clone(),
            storage_type: StorageType::parse(&self.driver.storage_type)
                .unwrap_or(StorageType::Block),
            next_device: NextDeviceInfo {
                ignore: self.driver.next_device.ignore,
                prefix: self.driver.next_device.prefix.clone(),
                pattern: self.driver.next_device.pattern.clone(),
            },
        }
    }
}

/// A snapshot as the original's `types.Snapshot` (`startTime` in seconds).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// Free text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Encrypted.
    #[serde(default, skip_serializing_if = "is_false")]
    pub encrypted: bool,
    /// The id.
    pub id: String,
    /// When it was taken, seconds since the epoch.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub start_time: i64,
    /// Backend status.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status: String,
    /// The volume it was taken of.
    #[serde(rename = "volumeID", default, skip_serializing_if = "String::is_empty")]
    pub volume_id: String,
    /// That volume's size in GiB.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub volume_size: i64,
    /// Driver facts.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, String>,
}

impl Snapshot {
    /// From the library's snapshot.
    pub fn from_model(s: &crate::model::Snapshot) -> Snapshot {
        let start = humantime::parse_rfc3339_weak(&s.start_time)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        Snapshot {
            description: s.description.clone(),
            name: s.name.clone(),
            encrypted: false,
            id: s.id.clone(),
            start_time: start,
            status: s.status.clone(),
            volume_id: s.volume_id.clone(),
            volume_size: s.volume_size as i64,
            fields: s.fields.clone(),
        }
    }
    /// To the library's snapshot.
    pub fn to_model(&self) -> crate::model::Snapshot {
        let start = if self.start_time > 0 {
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(self.start_time as u64),
            )
            .to_string()
        } else {
            String::new()
        };
        crate::model::Snapshot {
            name: self.name.clone(),
            id: self.id.clone(),
            description: self.description.clone(),
            start_time: start,
            status: self.status.clone(),
            volume_id: self.volume_id.clone(),
            volume_size: self.volume_size.max(0) as u64,
            fields: self.fields.clone(),
        }
    }
}

/// `{"volume":…,"attachToken":…}`, the answer to `?attach`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachResponse {
    /// The volume with its new attachment.
    pub volume: Volume,
    /// What the node resolves.
    #[serde(default)]
    pub attach_token: String,
}

/// A task: every operation of the server runs as one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    /// Its number.
    pub id: u64,
    /// Who asked (unused without authentication).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// Finished, seconds since the epoch.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub complete_time: i64,
    /// Queued, seconds since the epoch.
    pub queue_time: i64,
    /// Started, seconds since the epoch.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub start_time: i64,
    /// `queued`, `running`, `success` or `error`.
    pub state: String,
    /// The operation's answer, once it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The operation's error body, once it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
}

/// An error as the original writes it:
/// `{"message":…,"status":…,"error":{…}}` (`error` left out when there
/// is nothing in it; a string for schema errors).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// One sentence.
    pub message: String,
    /// The HTTP status.
    pub status: u16,
    /// Details: an object of fields, or a string.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub error: Value,
}

impl ErrorBody {
    /// 404 `resource not found` with the id asked for.
    pub fn not_found(resource: &str) -> ErrorBody {
        ErrorBody {
            message: "resource not found".into(),
            status: 404,
            error: json!({ "resourceID": resource }),
        }
    }
    /// 400 `missing instance ID` for a service.
    pub fn missing_instance_id(service: &str) -> ErrorBody {
        ErrorBody {
            message: "missing instance ID".into(),
            status: 400,
            error: json!({ "service": service }),
        }
    }
    /// 500 with the original's message for a bad header, and the value.
    pub fn bad_header(e: &super::headers::BadHeader) -> ErrorBody {
        ErrorBody {
            message: e.what.into(),
            status: 500,
            error: json!({ "value": e.value }),
        }
    }
    /// 500 `validate req schema: validation error: …`.
    pub fn schema(why: &str) -> ErrorBody {
        let m = format!("validate req schema: validation error: {why}");
        ErrorBody {
            message: m.clone(),
            status: 500,
            error: Value::String(m),
        }
    }
    /// A library error: 404 for a missing volume (with its id), 500 for
    /// everything else as the original, with our message and kind.
    pub fn from_error(e: &Error, resource: Option<&str>) -> ErrorBody {
        match (e.kind(), resource) {
            (Kind::NotFound, Some(id)) => ErrorBody::not_found(id),
            (kind, _) => ErrorBody {
                message: e.message().to_string(),
                status: if kind == Kind::NotFound { 404 } else { 500 },
                error: json!({ "kind": kind.as_str() }),
            },
        }
    }
    /// The library error this body stands for (what a client raises).
    pub fn to_error(&self) -> Error {
        let kind = self
            .error
            .get("kind")
            .and_then(Value::as_str)
            .and_then(kind_of);
        let kind = match (self.status, kind) {
            (404, _) => Kind::NotFound,
            (_, Some(k)) => k,
            (400, None) => Kind::InvalidInput,
            (401 | 403, None) => Kind::InvalidInput,
            (408, None) => Kind::Busy,
            (_, None) if self.message.starts_with("validate req schema") => Kind::InvalidInput,
            (_, None) => Kind::Backend,
        };
        let msg = if self.status == 404 {
            match self.error.get("resourceID").and_then(Value::as_str) {
                Some(id) => format!("{id} not found (the server answered: resource not found)"),
                None => self.message.clone(),
            }
        } else {
            self.message.clone()
        };
        Error::new(kind, msg)
    }
}

fn kind_of(s: &str) -> Option<Kind> {
    [
        Kind::InvalidInput,
        Kind::NotFound,
        Kind::AlreadyExists,
        Kind::InUse,
        Kind::Busy,
        Kind::Backend,
        Kind::System,
        Kind::Unsupported,
    ]
    .into_iter()
    .find(|k| k.as_str() == s)
}

/// A request body, checked as the original's schema validator would
/// (before any work): an object, with the required string properties,
/// and the optional ones of the right type. An empty body is `{}`.
pub fn parse_body(
    body: &[u8],
    required: &[&str],
    types: &[(&str, Type)],
) -> Result<Map<String, Value>, ErrorBody> {
    let text = if body.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        body
    };
    let v: Value = serde_json::from_slice(text).map_err(|e| {
        // The original counts characters from the start of the body.
        let at: usize = std::str::from_utf8(text)
            .unwrap_or("")
            .split('\n')
            .take(e.line().saturating_sub(1))
            .map(|l| l.chars().count() + 1)
            .sum::<usize>()
            + e.column();
        ErrorBody::schema(&format!("error parsing object at char {at}"))
    })?;
    let Value::Object(m) = v else {
        return Err(ErrorBody::schema("\"#\" must be of type \"object\""));
    };
    for r in required {
        if !m.contains_key(*r) {
            return Err(ErrorBody::schema(&format!(
                "\"#\" must have property \"{r}\""
            )));
        }
    }
    for (name, ty) in types {
        if let Some(v) = m.get(*name) {
            let ok = match ty {
                Type::String => v.is_string(),
                Type::Integer => v.is_i64() || v.is_u64(),
                Type::Bool => v.is_boolean(),
                Type::Object => v.is_object(),
            };
            if !ok && !v.is_null() {
                return Err(ErrorBody::schema(&format!(
                    "\"#/{name}\" must be of type \"{}\"",
                    ty.name()
                )));
            }
        }
    }
    Ok(m)
}

/// A JSON type the validator checks.
#[derive(Debug, Clone, Copy)]
pub enum Type {
    /// A string.
    String,
    /// A whole number.
    Integer,
    /// true or false.
    Bool,
    /// An object.
    Object,
}

impl Type {
    fn name(self) -> &'static str {
        match self {
            Type::String => "string",
            Type::Integer => "integer",
            Type::Bool => "boolean",
            Type::Object => "object",
        }
    }
}

/// The `opts` of a request as text fields (the original copies them into
/// a new volume's `fields`): strings as they are, anything else as JSON.
pub fn opts_fields(m: &Map<String, Value>) -> BTreeMap<String, String> {
    match m.get("opts") {
        Some(Value::Object(o)) => o
            .iter()
            .map(|(k, v)| {
                let s = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), s)
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// A string property, empty when absent.
pub fn string(m: &Map<String, Value>, k: &str) -> String {
    m.get(k).and_then(Value::as_str).unwrap_or("").to_string()
}

/// A boolean property, false when absent.
pub fn boolean(m: &Map<String, Value>, k: &str) -> bool {
    m.get(k).and_then(Value::as_bool).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_json_is_the_originals() {
        let info = ServiceInfo {
            service: "vfs".into(),
            driver: "vfs".into(),
            storage_type: StorageType::Object,
            next_device: NextDeviceInfo {
                ignore: true,
                ..Default::default()
            },
        };
        let s = Service::from_info(&info);
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"name":"vfs","driver":{"name":"vfs","type":"object","nextDevice":{"ignore":true,"prefix":"","pattern":""}}}"#
        );
        assert_eq!(s.to_info(), info);
        let mut s = s;
        s.instance = Some(Instance {
            instance_id: InstanceId {
                id: "vm".into(),
                driver: "vfs".into(),
                ..Default::default()
            },
            name: "vfsInstance".into(),
            provider_name: String::new(),
            region: String::new(),
        });
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"name":"vfs","instance":{"instanceID":{"id":"vm","driver":"vfs","service":""},"name":"vfsInstance","providerName":""},"driver":{"name":"vfs","type":"object","nextDevice":{"ignore":true,"prefix":"","pattern":""}}}"#
        );
    }

    #[test]
    fn volumes_and_snapshots_keep_the_originals_shape() {
        let v: Volume = serde_json::from_str(r#"{"attachments":[{"deviceName":"/dev/xvda","instanceID":{"id":"vm","driver":"vfs","service":"vfs"},"status":"attached","volumeID":"vfs-000"}],"attachmentState":2,"name":"cvol1","size":3,"id":"vfs-000","type":""}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"attachments":[{"deviceName":"/dev/xvda","instanceID":{"id":"vm","driver":"vfs","service":"vfs"},"status":"attached","volumeID":"vfs-000"}],"attachmentState":2,"name":"cvol1","size":3,"id":"vfs-000","type":""}"#
        );
        let s = crate::model::Snapshot {
            name: "s".into(),
            id: "i".into(),
            start_time: "2026-12-03T19:00:00Z".into(),
            status: "completed".into(),
            volume_id: "v".into(),
            volume_size: 2,
            ..Default::default()
        };
        let w = Snapshot::from_model(&s);
        assert_eq!(w.start_time, 1796324400);
        assert_eq!(w.to_model(), s);
        assert_eq!(
            serde_json::to_string(&w).unwrap(),
            r#"{"name":"s","id":"i","startTime":1796324400,"status":"completed","volumeID":"v","volumeSize":2}"#
        );
    }

    #[test]
    fn schema_errors_read_as_the_originals() {
        let e = parse_body(b"{}", &["name"], &[]).unwrap_err();
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r##"{"message":"validate req schema: validation error: \"#\" must have property \"name\"","status":500,"error":"validate req schema: validation error: \"#\" must have property \"name\""}"##
        );
        let e = parse_body(br#"{"name":"x","#, &["name"], &[]).unwrap_err();
        assert_eq!(
            e.message,
            "validate req schema: validation error: error parsing object at char 12"
        );
        let e = parse_body(
            br#"{"name":"x","size":"3"}"#,
            &["name"],
            &[("size", Type::Integer)],
        )
        .unwrap_err();
        assert!(
            e.message.contains("\"#/size\" must be of type \"integer\""),
            "{e:?}"
        );
        assert!(parse_body(b"[]", &[], &[]).is_err());
        let m = parse_body(b"", &[], &[]).unwrap();
        assert!(m.is_empty());
        let m = parse_body(
            br#"{"name":"a","opts":{"foo":"bar","n":2}}"#,
            &["name"],
            &[],
        )
        .unwrap();
        let f = opts_fields(&m);
        assert_eq!((f["foo"].as_str(), f["n"].as_str()), ("bar", "2"));
    }

    #[test]
    fn errors_map_both_ways() {
        let nf = ErrorBody::from_error(&Error::not_found("volume x not found"), Some("x"));
        assert_eq!(
            serde_json::to_string(&nf).unwrap(),
            r#"{"message":"resource not found","status":404,"error":{"resourceID":"x"}}"#
        );
        assert_eq!(nf.to_error().kind(), Kind::NotFound);
        for e in [
            Error::in_use("held"),
            Error::exists("taken"),
            Error::invalid("bad"),
            Error::busy("slow"),
            Error::unsupported("no"),
        ] {
            let b = ErrorBody::from_error(&e, Some("x"));
            assert_eq!(b.status, 500);
            let back = b.to_error();
            assert_eq!((back.kind(), back.message()), (e.kind(), e.message()));
        }
        assert_eq!(
            ErrorBody::missing_instance_id("vfs").to_error().kind(),
            Kind::InvalidInput
        );
        assert_eq!(ErrorBody::schema("x").to_error().kind(), Kind::InvalidInput);
        let plain = ErrorBody {
            message: "volume already attached to a host".into(),
            status: 500,
            error: Value::Null,
        };
        assert_eq!(plain.to_error().kind(), Kind::Backend);
        assert_eq!(
            serde_json::to_string(&plain).unwrap(),
            r#"{"message":"volume already attached to a host","status":500}"#
        );
    }
}
