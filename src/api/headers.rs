//! The libStorage request headers and the `attachments` query mask, as the
//! original 0.11 client and server write and read them:
//!
//! | header | form |
//! |---|---|
//! | `Libstorage-Instanceid` | `DRIVER[:SERVICE]=ID[,urlencoded-fields][,base64-json-metadata]`, one per driver or service |
//! | `Libstorage-Localdevices` | `DRIVER=DEV::VALUE[,DEV::VALUE…]`, devices sorted |
//! | `Libstorage-Tx` | `txID=<uuid>, txCR=<unix seconds>` |
//!
//! Parsers refuse what the original refuses (and a little more where the
//! original would go on with garbage: a metadata blob that is not JSON,
//! a device entry without `::`), with the original's error message.

use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

/// `Libstorage-Instanceid`.
pub const INSTANCE_ID: &str = "Libstorage-Instanceid";
/// `Libstorage-Localdevices`.
pub const LOCAL_DEVICES: &str = "Libstorage-Localdevices";
/// `Libstorage-Tx`.
pub const TX: &str = "Libstorage-Tx";
/// `Libstorage-Servername` (responses).
pub const SERVER_NAME: &str = "Libstorage-Servername";
/// `Rexray-Usage: omit` (requests; this server's own): list volumes
/// without the bytes each one's backing store takes, which cost a `stat`
/// per volume and which the table of `rexray volume ls` does not show.
/// The original server ignores the header and answers in full.
pub const USAGE: &str = "Rexray-Usage";
/// The value of [`USAGE`] that asks for less.
pub const USAGE_OMIT: &str = "omit";

/// A header value the original would refuse; `what` is the original's
/// message (`invalid InstanceID`, `invalid LocalDevices`, `invalid
/// transaction`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadHeader {
    /// The original's message.
    pub what: &'static str,
    /// The value as received.
    pub value: String,
    /// Why, for logs.
    pub why: String,
}

impl fmt::Display for BadHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}: {}", self.what, self.value, self.why)
    }
}

/// An instance id as it travels: who the caller is for one driver (or
/// one service), with the driver's fields and metadata.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct InstanceId {
    /// The id; empty when the server is to work it out from `metadata`.
    #[serde(default)]
    pub id: String,
    /// The driver.
    #[serde(default)]
    pub driver: String,
    /// The service; empty in the `DRIVER=ID` form, which applies to every
    /// service of the driver.
    #[serde(default)]
    pub service: String,
    /// Driver-specific facts.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, String>,
    /// Driver-specific JSON, e.g. the vfs executor's host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

impl InstanceId {
    /// The library's instance id (id, driver, service).
    pub fn to_model(&self) -> crate::model::InstanceId {
        crate::model::InstanceId {
            id: self.id.clone(),
            driver: self.driver.clone(),
            service: self.service.clone(),
        }
    }
    /// From the library's instance id.
    pub fn from_model(m: &crate::model::InstanceId) -> InstanceId {
        InstanceId {
            id: m.id.clone(),
            driver: m.driver.clone(),
            service: m.service.clone(),
            ..Default::default()
        }
    }

    /// Parse a `Libstorage-Instanceid` value.
    pub fn parse(value: &str) -> Result<InstanceId, BadHeader> {
        let bad = |why: &str| BadHeader {
            what: "invalid InstanceID",
            value: value.to_string(),
            why: why.to_string(),
        };
        let Some((who, rest)) = value.split_once('=') else {
            return Err(bad("no '='"));
        };
        if who.is_empty() {
            return Err(bad("no driver before '='"));
        }
        let (driver, service) = match who.split_once(':') {
            Some((d, s)) => (d, s.split(':').next().unwrap_or("")),
            None => (who, ""),
        };
        // ID, then fields up to the next comma, then metadata (the
        // original's `^([^=]+)=([^,]*)(?:,(.*?))?(?:,(.+))?$`).
        let (id, tail) = match rest.split_once(',') {
            Some((id, tail)) => (id, Some(tail)),
            None => (rest, None),
        };
        let (fields, meta) = match tail {
            None => ("", ""),
            Some(t) => match t.split_once(',') {
                Some((f, m)) if !m.is_empty() => (f, m),
                _ => (t, ""),
            },
        };
        let fields = parse_query(fields).map_err(|e| bad(&e))?;
        let metadata = if meta.is_empty() {
            None
        } else {
            use base64::Engine;
            let raw = base64::engine::general_purpose::STANDARD
                .decode(meta)
                .map_err(|e| bad(&format!("metadata is not base64: {e}")))?;
            Some(
                serde_json::from_slice(&raw)
                    .map_err(|e| bad(&format!("metadata is not JSON: {e}")))?,
            )
        };
        Ok(InstanceId {
            id: id.to_string(),
            driver: driver.to_string(),
            service: service.to_string(),
            fields,
            metadata,
        })
    }

    /// The `Libstorage-Instanceid` value.
    pub fn header(&self) -> String {
        let mut out = self.driver.clone();
        if !self.service.is_empty() {
            out.push(':');
            out.push_str(&self.service);
        }
        out.push('=');
        out.push_str(&self.id);
        if self.fields.is_empty() && self.metadata.is_none() {
            return out;
        }
        out.push(',');
        out.push_str(&format_query(&self.fields));
        if let Some(m) = &self.metadata {
            use base64::Engine;
            out.push(',');
            out.push_str(
                &base64::engine::general_purpose::STANDARD
                    .encode(serde_json::to_vec(m).expect("JSON serialises")),
            );
        }
        out
    }

    /// The id the server uses: the id itself, or, when it is empty, the
    /// metadata's string (what the vfs executor sends: its host name, as
    /// the original vfs driver's InstanceInspect reads it).
    pub fn resolved(&self) -> Option<String> {
        if !self.id.is_empty() {
            return Some(self.id.clone());
        }
        match &self.metadata {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        }
    }
}

/// Go's `url.Values.Encode`: keys sorted, `QueryEscape`d (space as `+`).
fn format_query(fields: &BTreeMap<String, String>) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", query_escape(k), query_escape(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn query_unescape(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))
                    .ok_or_else(|| format!("bad escape in {s:?}"))?;
                out.push(u8::from_str_radix(hex, 16).expect("two hex digits"));
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8 once unescaped"))
}

/// Go's `url.ParseQuery`, keeping the first value of a repeated key.
fn parse_query(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for part in s.split('&').filter(|p| !p.is_empty()) {
        if part.contains(';') {
            return Err("invalid semicolon separator in fields".into());
        }
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let k = query_unescape(k)?;
        let v = query_unescape(v)?;
        out.entry(k).or_insert(v);
    }
    Ok(out)
}

/// A node's devices for one driver (`Libstorage-Localdevices`): device →
/// mount point or other value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LocalDevices {
    /// The driver.
    pub driver: String,
    /// Device → value (empty when not mounted).
    pub devices: BTreeMap<String, String>,
}

impl LocalDevices {
    /// Parse a `Libstorage-Localdevices` value.
    pub fn parse(value: &str) -> Result<LocalDevices, BadHeader> {
        let bad = |why: &str| BadHeader {
            what: "invalid LocalDevices",
            value: value.to_string(),
            why: why.to_string(),
        };
        let Some((driver, rest)) = value.split_once('=') else {
            return Err(bad("no '='"));
        };
        if driver.is_empty() {
            return Err(bad("no driver before '='"));
        }
        let mut devices = BTreeMap::new();
        if !rest.is_empty() {
            if rest.chars().any(char::is_whitespace) {
                return Err(bad("white space in the device list"));
            }
            for entry in rest.split(',') {
                let Some((dev, val)) = entry.split_once("::") else {
                    return Err(bad(&format!("{entry:?} is not DEVICE::VALUE")));
                };
                if dev.is_empty() {
                    return Err(bad(&format!("{entry:?} has no device")));
                }
                devices.insert(dev.to_string(), val.to_string());
            }
        }
        Ok(LocalDevices {
            driver: driver.to_string(),
            devices,
        })
    }

    /// The `Libstorage-Localdevices` value, devices sorted.
    pub fn header(&self) -> String {
        let list: Vec<String> = self
            .devices
            .iter()
            .filter(|(k, _)| !k.is_empty())
            .map(|(k, v)| format!("{k}::{v}"))
            .collect();
        format!("{}={}", self.driver, list.join(","))
    }
}

/// A transaction (`Libstorage-Tx`): an id and its creation time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tx {
    /// The id, a UUID in its 8-4-4-4-12 hex form (any version or
    /// variant: the original client's are not RFC 4122 ones).
    pub id: String,
    /// Created, in seconds since the epoch.
    pub created: i64,
}

impl Tx {
    /// A fresh transaction: a random (version 4) UUID, created now.
    pub fn new() -> Tx {
        let mut b = [0u8; 16];
        if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
            use std::io::Read;
            let _ = f.read_exact(&mut b);
        }
        if b == [0u8; 16] {
            // No random source: unique enough from the clock and pid.
            let n = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            b.copy_from_slice(&(n ^ (u128::from(std::process::id()) << 64)).to_le_bytes());
        }
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
        Tx {
            id: format!(
                "{}-{}-{}-{}-{}",
                &h[0..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..32]
            ),
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0),
        }
    }

    /// Parse a `Libstorage-Tx` value (`txID=<uuid>, txCR=<digits>`, the
    /// names in any case).
    pub fn parse(value: &str) -> Result<Tx, BadHeader> {
        let bad = |why: &str| BadHeader {
            what: "invalid transaction",
            value: value.to_string(),
            why: why.to_string(),
        };
        let lower = value.to_ascii_lowercase();
        if !lower.starts_with("txid=") {
            return Err(bad("it does not start with txID="));
        }
        let Some(comma) = value.rfind(',') else {
            return Err(bad("no ', txCR='"));
        };
        let id = &value[5..comma];
        let cr = value[comma + 1..].trim_start_matches([' ', '\t']);
        if !cr.to_ascii_lowercase().starts_with("txcr=") {
            return Err(bad("no txCR= after the comma"));
        }
        let digits = &cr[5..];
        if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad("txCR is not a number of seconds"));
        }
        let created: i64 = digits.parse().map_err(|_| bad("txCR is out of range"))?;
        if !is_uuid(id) {
            return Err(bad("txID is not a UUID"));
        }
        Ok(Tx {
            id: id.to_string(),
            created,
        })
    }

    /// The `Libstorage-Tx` value.
    pub fn header(&self) -> String {
        format!("txID={}, txCR={}", self.id, self.created)
    }
}

impl Default for Tx {
    fn default() -> Self {
        Tx::new()
    }
}

/// Whether `s` is a UUID in the 8-4-4-4-12 hex form.
fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|c| c.is_ascii_hexdigit()))
}

/// The `attachments` query mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Attachments(pub u32);

impl Attachments {
    /// Include attachment information.
    pub const REQUESTED: u32 = 1;
    /// Only the caller's attachments (needs its instance id).
    pub const MINE: u32 = 2;
    /// Map the caller's local devices (needs its instance id).
    pub const DEVICES: u32 = 4;
    /// Only attached volumes.
    pub const ATTACHED: u32 = 8;
    /// Only unattached volumes.
    pub const UNATTACHED: u32 = 16;

    /// Parse the query value: a number, `true` (15) or `false` (0); a
    /// bare `attachments` means `true`.
    pub fn parse(v: &str) -> Option<Attachments> {
        if let Ok(n) = v.parse::<u32>() {
            return Some(Attachments(n));
        }
        match v.to_ascii_lowercase().as_str() {
            "" | "true" | "t" => Some(Attachments(15)),
            "false" | "f" => Some(Attachments(0)),
            _ => None,
        }
    }
    fn has(self, bit: u32) -> bool {
        self.0 & bit != 0
    }
    /// Attachment information is wanted.
    pub fn requested(self) -> bool {
        self.0 != 0
    }
    /// Only the caller's attachments.
    pub fn mine(self) -> bool {
        self.has(Self::MINE)
    }
    /// Map local devices.
    pub fn devices(self) -> bool {
        self.has(Self::DEVICES)
    }
    /// Only attached volumes.
    pub fn attached(self) -> bool {
        self.has(Self::ATTACHED)
    }
    /// Only unattached volumes.
    pub fn unattached(self) -> bool {
        self.has(Self::UNATTACHED)
    }
    /// The caller's instance id is needed (mine or devices).
    pub fn requires_instance_id(self) -> bool {
        self.mine() || self.devices()
    }
    /// Whether a volume in state `s` is listed (the original server's
    /// filter).
    pub fn includes(self, s: crate::model::AttachmentState) -> bool {
        use crate::model::AttachmentState::*;
        if s == Available && self.attached() && !self.unattached() {
            return false;
        }
        if matches!(s, Attached | Unavailable) && !self.attached() && self.unattached() {
            return false;
        }
        if self.mine()
            && self.attached()
            && ((s == Available && !self.unattached()) || s == Unavailable)
        {
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_captured_values_parse() {
        let h = InstanceId::parse("vfs=,,InZtIg==").unwrap();
        assert_eq!(
            (h.id.as_str(), h.driver.as_str(), h.service.as_str()),
            ("", "vfs", "")
        );
        assert_eq!(h.metadata, Some(Value::String("vm".into())));
        assert_eq!(h.resolved().as_deref(), Some("vm"));
        assert_eq!(h.header(), "vfs=,,InZtIg==");
        let h = InstanceId::parse("vfs:vfs=vm").unwrap();
        assert_eq!((h.id.as_str(), h.service.as_str()), ("vm", "vfs"));
        assert_eq!(h.header(), "vfs:vfs=vm");
        let h = InstanceId::parse("ebs=i-1234,region=west").unwrap();
        assert_eq!(h.fields["region"], "west");
        assert_eq!(h.metadata, None);
        assert_eq!(h.header(), "ebs=i-1234,region=west");
        let e = InstanceId::parse("garbage").unwrap_err();
        assert_eq!(e.what, "invalid InstanceID");

        let d = LocalDevices::parse("vfs=/dev/xvda::,/dev/xvdb::,/dev/xvdc::,/dev/xvdd::").unwrap();
        assert_eq!(d.devices.len(), 4);
        assert_eq!(d.devices["/dev/xvda"], "");
        assert_eq!(
            d.header(),
            "vfs=/dev/xvda::,/dev/xvdb::,/dev/xvdc::,/dev/xvdd::"
        );
        let d = LocalDevices::parse("vfs=/dev/xvdc::/mnt/x").unwrap();
        assert_eq!(d.devices["/dev/xvdc"], "/mnt/x");
        assert!(LocalDevices::parse("vfs=").unwrap().devices.is_empty());

        // The original client's non-RFC variant nibble, and an RFC one.
        let t = Tx::parse("txID=c0a7bfc9-62fc-4426-75e9-8b497c3dcb0e, txCR=1796312870").unwrap();
        assert_eq!(t.created, 1796312870);
        assert_eq!(
            t.header(),
            "txID=c0a7bfc9-62fc-4426-75e9-8b497c3dcb0e, txCR=1796312870"
        );
        Tx::parse("txID=3f2c1b8e-9d4a-4e5b-8c7d-112233445566, txCR=1").unwrap();
        Tx::parse("TXID=3f2c1b8e-9d4a-4e5b-8c7d-112233445566,txcr=1").unwrap();
        for bad in [
            "garbage",
            "txID=, txCR=1",
            "txID=3f2c1b8e-9d4a-4e5b-8c7d-112233445566",
            "txID=3f2c1b8e-9d4a-4e5b-8c7d-112233445566, txCR=",
            "txID=3f2c1b8e-9d4a-4e5b-8c7d-112233445566, txCR=-1",
            "txID=3f2c1b8e9d4a4e5b8c7d112233445566, txCR=1",
            "txID=3f2c1b8e-9d4a-4e5b-8c7d-11223344556g, txCR=1",
        ] {
            assert_eq!(
                Tx::parse(bad).unwrap_err().what,
                "invalid transaction",
                "{bad}"
            );
        }
        let fresh = Tx::new();
        assert_eq!(Tx::parse(&fresh.header()).unwrap(), fresh);
        assert_ne!(Tx::new().id, fresh.id);
    }

    #[test]
    fn attachment_masks() {
        assert_eq!(Attachments::parse("true"), Some(Attachments(15)));
        assert_eq!(Attachments::parse(""), Some(Attachments(15)));
        assert_eq!(Attachments::parse("false"), Some(Attachments(0)));
        assert_eq!(Attachments::parse("1"), Some(Attachments(1)));
        assert_eq!(Attachments::parse("31"), Some(Attachments(31)));
        assert_eq!(Attachments::parse("x"), None);
        assert_eq!(Attachments::parse("-1"), None);
        use crate::model::AttachmentState::*;
        // ls (1) lists everything; attach (17) only unattached; detach (9)
        // only attached; mount (27) mine or unattached.
        for s in [Attached, Available, Unavailable] {
            assert!(Attachments(1).includes(s));
        }
        assert!(Attachments(17).includes(Available));
        assert!(!Attachments(17).includes(Attached) && !Attachments(17).includes(Unavailable));
        assert!(Attachments(9).includes(Attached) && Attachments(9).includes(Unavailable));
        assert!(!Attachments(9).includes(Available));
        assert!(Attachments(27).includes(Attached) && Attachments(27).includes(Available));
        assert!(!Attachments(27).includes(Unavailable));
        assert!(!Attachments(11).includes(Available) && !Attachments(11).includes(Unavailable));
        assert!(Attachments(31).requires_instance_id() && Attachments(7).requires_instance_id());
        assert!(!Attachments(9).requires_instance_id());
    }

    fn token() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9_.:/-]{0,12}"
    }

    fn instance_id() -> impl Strategy<Value = InstanceId> {
        (
            "[a-z][a-z0-9]{0,6}",
            "([a-z][a-z0-9]{0,6})?",
            "[a-zA-Z0-9_.:/-]{0,12}",
            proptest::collection::btree_map("[a-z]{1,4}", "[ -~]{0,8}", 0..3),
            proptest::option::of(prop_oneof![
                "[ -~]{0,10}".prop_map(Value::String),
                any::<i32>().prop_map(Value::from),
                Just(serde_json::json!({"a": [1, "b"]})),
            ]),
        )
            .prop_map(|(driver, service, id, fields, metadata)| InstanceId {
                id,
                driver,
                service,
                fields,
                metadata,
            })
    }

    proptest! {
        #[test]
        fn instance_ids_round_trip(i in instance_id()) {
            let h = i.header();
            prop_assert_eq!(InstanceId::parse(&h).unwrap(), i);
        }

        #[test]
        fn local_devices_round_trip(
            driver in "[a-z][a-z0-9]{0,6}",
            devices in proptest::collection::btree_map("/dev/[a-z0-9]{1,6}", token(), 0..5),
        ) {
            let l = LocalDevices { driver, devices };
            let h = l.header();
            prop_assert_eq!(LocalDevices::parse(&h).unwrap(), l);
            // Sorted by device.
            let listed: Vec<&str> = h.split_once('=').unwrap().1.split(',')
                .filter(|e| !e.is_empty()).map(|e| e.split("::").next().unwrap()).collect();
            let mut sorted = listed.clone();
            sorted.sort();
            prop_assert_eq!(listed, sorted);
        }

        #[test]
        fn transactions_round_trip(bytes in proptest::array::uniform16(any::<u8>()), cr in 0i64..i64::MAX) {
            let h: String = bytes.iter().map(|x| format!("{x:02x}")).collect();
            let id = format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32]);
            let t = Tx { id, created: cr };
            prop_assert_eq!(Tx::parse(&t.header()).unwrap(), t);
        }

        #[test]
        fn values_without_an_equals_sign_are_refused(s in "[^=]{0,30}") {
            prop_assert!(InstanceId::parse(&s).is_err());
            prop_assert!(LocalDevices::parse(&s).is_err());
            prop_assert!(Tx::parse(&s).is_err());
        }

        #[test]
        fn bad_metadata_and_escapes_are_refused(id in "[a-z0-9]{0,6}", junk in "[!-+]{1,6}") {
            // Not base64 (the characters !"#$%&'()*+ are outside its alphabet but '+').
            let not_b64 = format!("vfs={id},,{junk}!");
            prop_assert!(InstanceId::parse(&not_b64).is_err());
            // base64 of something that is not JSON.
            { let v = format!("vfs={id},,bm90IGpzb24="); prop_assert!(InstanceId::parse(&v).is_err()); }
            { let v = format!("vfs={id},a=%zz"); prop_assert!(InstanceId::parse(&v).is_err()); }
        }

        #[test]
        fn device_lists_need_device_and_separator(dev in "/dev/[a-z]{1,4}") {
            { let v = format!("vfs={dev}"); prop_assert!(LocalDevices::parse(&v).is_err()); }
            prop_assert!(LocalDevices::parse("vfs=::/mnt").is_err());
            { let v = format!("vfs={dev}:: /mnt"); prop_assert!(LocalDevices::parse(&v).is_err()); }
            { let v = format!("vfs={dev}::,{dev}x"); prop_assert!(LocalDevices::parse(&v).is_err()); }
        }

        #[test]
        fn bad_transaction_ids_are_refused(id in "[0-9a-f-]{0,40}", cr in "[0-9]{1,5}") {
            let ok = is_uuid(&id);
            prop_assert_eq!(Tx::parse(&format!("txID={id}, txCR={cr}")).is_ok(), ok);
        }
    }
}
