//! The `s3fs` driver: a volume is a bucket on an S3 endpoint
//! (`s3fs.endpoint`, any S3 service: AWS, Ceph radosgw, MinIO), reached
//! over the S3 REST API with Signature Version 4 ([`sigv4`]).
//!
//! - Volume id and name are the bucket's name; buckets have no size, so
//!   a volume's size is 0.
//! - Who holds a volume is recorded in the bucket itself, as the object
//!   [`HOLDER_OBJECT`] whose content is the holder's instance id, so every
//!   node and the controller see the same holder. Attaching a bucket
//!   another instance holds is refused unless forced; there is no fencing
//!   (S3 has no client to cut off), so force only moves the record.
//! - The node side ([`node::S3fsExecutor`]) mounts the bucket with
//!   s3fs-fuse; there is no device and nothing is formatted.

pub mod node;
pub mod sigv4;

use super::controller::{Attached, Controller, NextDeviceInfo, ServiceInfo, StorageType};
use crate::model::{Attachment, CreateSpec, InstanceId, Volume};
use crate::{Error, Kind, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The object in a bucket that names the instance holding it.
pub const HOLDER_OBJECT: &str = ".rexray-holder";

/// Check a bucket name by S3's rules (3–63 characters of lower-case
/// letters, digits, `-` and `.`, starting and ending with a letter or
/// digit, not an IP address); the error says why.
pub fn bucket_name(name: &str) -> Result<&str> {
    let fail = |why: &str| {
        Err(Error::invalid(format!(
            "invalid bucket name {name:?} for the s3fs driver: {why} (bucket names have 3 to 63 characters: lower-case letters, digits, '-' and '.', starting and ending with a letter or digit)"
        )))
    };
    if name.len() < 3 {
        return fail("it is shorter than 3 characters");
    }
    if name.len() > 63 {
        return fail("it is longer than 63 characters");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.'))
    {
        return fail(&format!("it has the character {c:?}"));
    }
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !edge(name.chars().next()) || !edge(name.chars().last()) {
        return fail("it must start and end with a letter or digit");
    }
    if name.contains("..") {
        return fail("it has two dots in a row");
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return fail("it is an IP address");
    }
    Ok(name)
}

/// An S3 time (`2026-12-05T07:30:00.000Z`) as the volumes' creation
/// times are answered (RFC 3339 to the second, UTC: `…T07:30:00Z`).
fn rfc3339(t: &str) -> String {
    match t.split_once('.') {
        Some((secs, rest)) if rest.ends_with('Z') => format!("{secs}Z"),
        _ => t.to_string(),
    }
}

/// An S3 endpoint and the credentials for it.
#[derive(Clone)]
pub struct S3 {
    /// `http(s)://host[:port]`, without a trailing slash.
    pub endpoint: String,
    host: String,
    /// The PEM file of the CA certificates trusted for an https endpoint
    /// besides the system's (`s3fs.caFile`).
    pub ca_file: Option<PathBuf>,
    /// The signing region.
    pub region: String,
    /// The access key id.
    pub access_key: String,
    /// The secret access key.
    pub secret_key: String,
    /// How often a request that got no answer, or a 5xx, is retried
    /// (`s3fs.maxRetries`).
    pub max_retries: u32,
    agent: ureq::Agent,
}

/// The most retries `s3fs.maxRetries` may ask for.
pub const MAX_RETRIES: u64 = 100;

/// Refuse the original's s3fs settings this driver does not implement,
/// and a retry count out of bounds, naming the key.
pub fn check_settings(max_retries: u64, disable_path_style: bool, tag: &str) -> Result<()> {
    use crate::config::keys;
    if max_retries > MAX_RETRIES {
        return Err(Error::invalid(format!(
            "{} is {max_retries}: at most {MAX_RETRIES} retries are allowed",
            keys::S3FS_MAX_RETRIES
        )));
    }
    if disable_path_style {
        return Err(Error::invalid(format!(
            "{} true is not supported: this driver and s3fs address buckets path-style (http://endpoint/bucket); leave it false",
            keys::S3FS_DISABLE_PATH_STYLE
        )));
    }
    if !tag.trim().is_empty() {
        return Err(Error::invalid(format!(
            "{} {tag:?} is not supported: buckets are not tagged or filtered by tag here; leave it empty",
            keys::S3FS_TAG
        )));
    }
    Ok(())
}

/// The wait before retry `attempt` (1, 2, ...): 100 ms more each time,
/// at most 1 s.
fn retry_delay(attempt: u32) -> Duration {
    Duration::from_millis((100 * u64::from(attempt)).min(1000))
}

/// Whether an answer of `status` is worth asking again (the endpoint is
/// busy or briefly unwell; 501 never changes).
fn retryable(status: u16) -> bool {
    (500..600).contains(&status) && status != 501
}

/// What an S3 request answered.
struct Answer {
    status: u16,
    body: String,
}

impl Answer {
    fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
    /// The `<Code>` of an S3 error answer.
    fn code(&self) -> String {
        tag_values(&self.body, "Code")
            .into_iter()
            .next()
            .unwrap_or_default()
    }
}

/// The text of every `<tag>…</tag>` of `xml`, in order (S3's answers
/// are flat enough for this).
fn tag_values(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(xml_unescape(&after[..j]));
        rest = &after[j + close.len()..];
    }
    out
}

/// Text of an XML element: the five named entities and character
/// references (`&#10;`, `&#xA;`: S3 writes control characters in keys so).
/// Anything else is kept as it is.
fn xml_unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let decoded = after.find(';').and_then(|j| {
            let ent = &after[..j];
            let c = match ent {
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "amp" => Some('&'),
                _ => {
                    let n = if let Some(h) = ent.strip_prefix("#x").or(ent.strip_prefix("#X")) {
                        u32::from_str_radix(h, 16).ok()
                    } else {
                        ent.strip_prefix('#').and_then(|d| d.parse().ok())
                    };
                    n.and_then(char::from_u32)
                }
            }?;
            Some((c, j))
        });
        match decoded {
            Some((c, j)) => {
                out.push(c);
                rest = &after[j + 1..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The certificates of the PEM file `p` (`s3fs.caFile`), each checked
/// to be usable as a trust anchor.
fn ca_certs(p: &Path) -> Result<Vec<ureq::tls::Certificate<'static>>> {
    let key = crate::config::keys::S3FS_CA_FILE;
    let pem = std::fs::read(p)
        .map_err(|e| Error::from_io(format!("reading {key} {}", p.display()), &e))?;
    let mut out = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        let item = item.map_err(|e| Error::invalid(format!("{key} {}: {e}", p.display())))?;
        if let ureq::tls::PemItem::Certificate(c) = item {
            let mut store = rustls::RootCertStore::empty();
            store
                .add(rustls::pki_types::CertificateDer::from(c.der()))
                .map_err(|e| {
                    Error::invalid(format!(
                        "{key} {}: a certificate cannot be a trust anchor: {e}",
                        p.display()
                    ))
                })?;
            out.push(c);
        }
    }
    if out.is_empty() {
        return Err(Error::invalid(format!(
            "{key} {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            p.display()
        )));
    }
    Ok(out)
}

/// The TLS settings of an https client: the system's trusted CAs (its
/// certificate store, as `openssl`, curl and s3fs read it:
/// `SSL_CERT_FILE`, `/etc/ssl/certs`; Mozilla's CA list when the system
/// has none) plus those of `ca_file`. Certificates are always verified.
fn tls_config(ca_file: Option<&Path>) -> Result<ureq::tls::TlsConfig> {
    use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};
    let system = rustls_native_certs::load_native_certs();
    let mut roots: Vec<Certificate<'static>> = system
        .certs
        .iter()
        .map(|c| Certificate::from_der(c.as_ref()).to_owned())
        .collect();
    let extra = match ca_file {
        Some(p) => ca_certs(p)?,
        None => Vec::new(),
    };
    let roots = if roots.is_empty() && extra.is_empty() {
        tracing::debug!(errors = ?system.errors, "no system CA certificates: trusting Mozilla's CA list");
        RootCerts::WebPki
    } else {
        roots.extend(extra);
        RootCerts::from(roots)
    };
    Ok(TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .root_certs(roots)
        .build())
}

/// What TLS found wrong with an https endpoint (its certificate, most
/// often), when `e` is a TLS failure.
fn tls_problem(e: &ureq::Error) -> Option<String> {
    let tls = match e {
        ureq::Error::Rustls(t) => Some(t),
        ureq::Error::Io(io) => io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()),
        _ => None,
    }?;
    use rustls::{CertificateError as C, Error as T};
    let ca = crate::config::keys::S3FS_CA_FILE;
    let why = match tls {
        T::InvalidCertificate(C::UnknownIssuer) => format!(
            "its certificate is not signed by a trusted CA (unknown issuer): set {ca} to the PEM file of the CA that signed it, or add that CA to the system's store"
        ),
        T::InvalidCertificate(C::BadSignature) => format!(
            "its certificate's signature does not verify with the trusted CAs (bad signature): check {ca}"
        ),
        T::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            "its certificate is not valid for the endpoint's host name (not valid for name): use the name or address the certificate was made for".to_string()
        }
        T::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            "its certificate has expired".to_string()
        }
        T::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
            "its certificate is not valid yet (check the clocks)".to_string()
        }
        T::InvalidCertificate(c) => format!("its certificate was refused: {c:?}"),
        T::InvalidMessage(_) => format!(
            "the TLS handshake failed: {tls} (does it serve plain http? then write http://)"
        ),
        other => format!("the TLS handshake failed: {other}"),
    };
    Some(why)
}

impl S3 {
    /// A client of `endpoint` (`http://host:port` or `https://host:port`);
    /// an https endpoint's certificate must be signed by a CA of the
    /// system's store or of `ca_file` (PEM).
    pub fn new(
        endpoint: &str,
        region: &str,
        access_key: &str,
        secret_key: &str,
        timeout: Duration,
        ca_file: Option<&Path>,
    ) -> Result<S3> {
        let endpoint = endpoint.trim().trim_end_matches('/');
        let what = crate::config::keys::S3FS_ENDPOINT;
        if endpoint.is_empty() {
            return Err(Error::invalid(format!(
                "{what} is not set: the s3fs driver needs the URL of an S3 endpoint (e.g. http://127.0.0.1:7480)"
            )));
        }
        let (https, rest) = if let Some(r) = endpoint.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = endpoint.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(Error::invalid(format!(
                "{what} {endpoint:?}: expected an http:// or https:// URL"
            )));
        };
        let host = rest.split('/').next().unwrap_or_default();
        // As the Host header goes out: without the scheme's own port
        // (the HTTP client drops it, and the signature covers the header).
        let default_port = if https { ":443" } else { ":80" };
        let host = host.strip_suffix(default_port).unwrap_or(host).to_string();
        if host.is_empty() || rest.contains('/') {
            return Err(Error::invalid(format!(
                "{what} {endpoint:?}: expected http(s)://host[:port] with no path"
            )));
        }
        let ca = crate::config::keys::S3FS_CA_FILE;
        if let Some(p) = ca_file {
            if !p.is_absolute() {
                return Err(Error::invalid(format!(
                    "{ca} {}: expected an absolute path",
                    p.display()
                )));
            }
            if !https {
                return Err(Error::invalid(format!(
                    "{ca} is set but {what} {endpoint:?} is not https: a CA file is only for https endpoints"
                )));
            }
        }
        if access_key.is_empty() || secret_key.is_empty() {
            return Err(Error::invalid(
                "the s3fs driver has no credentials: set s3fs.accessKey and s3fs.secretKey, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
            ));
        }
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(timeout))
            .user_agent(concat!("rexray-rs/", env!("CARGO_PKG_VERSION")));
        if https {
            config = config.https_only(true).tls_config(tls_config(ca_file)?);
        }
        let config = config.build();
        Ok(S3 {
            endpoint: endpoint.to_string(),
            host,
            ca_file: ca_file.map(Path::to_path_buf),
            region: if region.is_empty() {
                "us-east-1"
            } else {
                region
            }
            .to_string(),
            access_key: access_key.to_string(),
            secret_key: secret_key.to_string(),
            max_retries: 0,
            agent: ureq::Agent::new_with_config(config),
        })
    }

    /// This client, retrying a request that got no answer or a 5xx up to
    /// `n` times (a request that timed out is not sent again).
    pub fn with_max_retries(mut self, n: u32) -> S3 {
        self.max_retries = n;
        self
    }

    /// [`send_once`](Self::send_once), again after a short wait while the
    /// endpoint is unreachable or answers 5xx, up to `max_retries` times.
    fn send(
        &self,
        method: &str,
        bucket: &str,
        key: &str,
        query: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Answer> {
        self.send_with(method, bucket, key, query, body, &[])
    }

    /// [`send`](Self::send) with more (unsigned) request headers.
    fn send_with(
        &self,
        method: &str,
        bucket: &str,
        key: &str,
        query: &[(&str, &str)],
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> Result<Answer> {
        let mut attempt = 0;
        loop {
            let r = self.send_once(method, bucket, key, query, body, headers);
            let again = match &r {
                Ok(a) => retryable(a.status),
                Err((_, pointless)) => !pointless,
            };
            if !again || attempt >= self.max_retries {
                return r.map_err(|(e, _)| e);
            }
            attempt += 1;
            tracing::debug!(method, bucket, attempt, "retrying an S3 request");
            std::thread::sleep(retry_delay(attempt));
        }
    }

    /// Send a signed path-style request for `bucket`/`key` (either may be
    /// empty) once. An error comes with whether sending it again is
    /// pointless (it timed out, or TLS refused the endpoint).
    fn send_once(
        &self,
        method: &str,
        bucket: &str,
        key: &str,
        query: &[(&str, &str)],
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> std::result::Result<Answer, (Error, bool)> {
        let mut path = String::from("/");
        if !bucket.is_empty() {
            path.push_str(&sigv4::uri_encode(bucket, false));
            if !key.is_empty() {
                path.push('/');
                path.push_str(&sigv4::uri_encode(key, true));
            }
        }
        let q = sigv4::canonical_query(query);
        let date = sigv4::amz_date_now();
        let hash = sigv4::sha256_hex(body);
        let creds = sigv4::Credentials {
            access_key: &self.access_key,
            secret_key: &self.secret_key,
            region: &self.region,
        };
        let auth = sigv4::authorization(
            &creds,
            method,
            &path,
            &q,
            &[
                ("host", &self.host),
                ("x-amz-content-sha256", &hash),
                ("x-amz-date", &date),
            ],
            &hash,
            &date,
        );
        let url = if q.is_empty() {
            format!("{}{path}", self.endpoint)
        } else {
            format!("{}{path}?{q}", self.endpoint)
        };
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("x-amz-content-sha256", &hash)
            .header("x-amz-date", &date)
            .header("authorization", auth);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(body).map_err(|e| {
            (
                Error::invalid(format!("S3 request {method} {url}: {e}")),
                true,
            )
        })?;
        let unreachable = |e: ureq::Error| {
            if let Some(why) = tls_problem(&e) {
                // Never better when asked again: not retried.
                return (
                    Error::backend(format!(
                        "the S3 endpoint {} failed TLS verification ({method} {path}): {why}",
                        self.endpoint
                    )),
                    true,
                );
            }
            let timed_out = matches!(e, ureq::Error::Timeout(_));
            (
                Error::backend(format!(
                    "the S3 endpoint {} did not answer {method} {path}: {e}",
                    self.endpoint
                )),
                timed_out,
            )
        };
        let resp = self.agent.run(req).map_err(unreachable)?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .with_config()
            .limit(16 << 20)
            .read_to_string()
            .map_err(unreachable)?;
        Ok(Answer { status, body })
    }

    /// The error an answer stands for.
    fn error(&self, a: &Answer, what: &str) -> Error {
        let code = a.code();
        let msg = format!(
            "{what}: the S3 endpoint {} answered {} {code}",
            self.endpoint, a.status
        );
        match (a.status, code.as_str()) {
            (404, _) => Error::not_found(msg),
            (409, "BucketNotEmpty") => Error::in_use(msg),
            (409, _) => Error::exists(msg),
            (400, _) => Error::invalid(msg),
            _ => Error::backend(msg),
        }
    }

    fn must(&self, a: Answer, what: &str) -> Result<Answer> {
        if a.ok() {
            Ok(a)
        } else {
            Err(self.error(&a, what))
        }
    }

    /// `(name, creation date)` of every bucket.
    fn buckets(&self) -> Result<Vec<(String, String)>> {
        let a = self.send("GET", "", "", &[], b"")?;
        let a = self.must(a, "listing buckets")?;
        let names = tag_values(&a.body, "Name");
        let dates = tag_values(&a.body, "CreationDate");
        Ok(names
            .into_iter()
            .enumerate()
            .map(|(i, n)| (n, dates.get(i).cloned().unwrap_or_default()))
            .collect())
    }

    /// Whether `bucket` exists.
    fn exists(&self, bucket: &str) -> Result<bool> {
        let a = self.send("HEAD", bucket, "", &[], b"")?;
        match a.status {
            200..=299 => Ok(true),
            404 => Ok(false),
            _ => Err(self.error(&a, &format!("looking up bucket {bucket}"))),
        }
    }

    /// The content of object `key`, or `None`.
    fn get(&self, bucket: &str, key: &str) -> Result<Option<String>> {
        let a = self.send("GET", bucket, key, &[], b"")?;
        match a.status {
            200..=299 => Ok(Some(a.body)),
            404 => Ok(None),
            _ => Err(self.error(&a, &format!("reading {bucket}/{key}"))),
        }
    }

    fn put(&self, bucket: &str, key: &str, body: &[u8]) -> Result<()> {
        let a = self.send("PUT", bucket, key, &[], body)?;
        self.must(a, &format!("writing {bucket}/{key}")).map(|_| ())
    }

    /// Write `bucket`/`key` only if no such object exists
    /// (`If-None-Match: *`): `Ok(false)` when one does (412).
    fn put_new(&self, bucket: &str, key: &str, body: &[u8]) -> Result<bool> {
        let a = self.send_with("PUT", bucket, key, &[], body, &[("if-none-match", "*")])?;
        if a.status == 412 {
            return Ok(false);
        }
        self.must(a, &format!("writing {bucket}/{key}"))
            .map(|_| true)
    }

    fn delete(&self, bucket: &str, key: &str) -> Result<()> {
        let a = self.send("DELETE", bucket, key, &[], b"")?;
        if a.ok() || a.status == 404 {
            Ok(())
        } else {
            Err(self.error(&a, &format!("removing {bucket}/{key}")))
        }
    }

    /// Every object key of `bucket`.
    fn keys(&self, bucket: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut marker = String::new();
        loop {
            let a = self.send("GET", bucket, "", &[("marker", &marker)], b"")?;
            let a = self.must(a, &format!("listing the objects of bucket {bucket}"))?;
            let keys = tag_values(&a.body, "Key");
            let more = tag_values(&a.body, "IsTruncated")
                .first()
                .map(String::as_str)
                == Some("true");
            let last = keys.last().cloned();
            out.extend(keys);
            match (more, last) {
                (true, Some(l)) => marker = l,
                _ => return Ok(out),
            }
        }
    }
}

/// The s3fs driver's controller side.
pub struct S3fsDriver {
    s3: S3,
    info: ServiceInfo,
}

impl S3fsDriver {
    /// The driver for the endpoint of `s3`.
    pub fn new(s3: S3, service: &str) -> S3fsDriver {
        S3fsDriver {
            s3,
            info: ServiceInfo {
                service: if service.is_empty() { "s3fs" } else { service }.to_string(),
                driver: "s3fs".into(),
                storage_type: StorageType::Object,
                next_device: NextDeviceInfo {
                    ignore: true,
                    ..Default::default()
                },
            },
        }
    }

    fn holder(&self, bucket: &str) -> Result<Option<String>> {
        Ok(self
            .s3
            .get(bucket, HOLDER_OBJECT)?
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty()))
    }

    fn volume(&self, bucket: &str, created: &str, holder: Option<&str>) -> Volume {
        let mut v = Volume {
            id: bucket.to_string(),
            name: bucket.to_string(),
            size: 0,
            volume_type: "s3fs".into(),
            ..Default::default()
        };
        v.fields.insert("endpoint".into(), self.s3.endpoint.clone());
        if !created.is_empty() {
            v.fields
                .insert("createTimestamp".into(), created.to_string());
            // The bucket's creation time (ISO 8601, UTC) is the volume's.
            v.fields.insert("createdAt".into(), rfc3339(created));
        }
        if let Some(h) = holder {
            v.attachments.push(Attachment {
                instance_id: InstanceId {
                    id: h.to_string(),
                    driver: "s3fs".into(),
                    service: self.info.service.clone(),
                },
                status: "attached".into(),
                volume_id: bucket.to_string(),
                ..Default::default()
            });
        }
        v
    }

    fn must_volume(&self, id: &str) -> Result<Volume> {
        self.inspect(id)?
            .ok_or_else(|| Error::not_found(format!("volume {id} not found")))
    }
}

impl Controller for S3fsDriver {
    fn info(&self) -> &ServiceInfo {
        &self.info
    }

    fn list(&self) -> Result<Vec<Volume>> {
        let mut out = Vec::new();
        for (b, created) in self.s3.buckets()? {
            let h = self.holder(&b)?;
            out.push(self.volume(&b, &created, h.as_deref()));
        }
        Ok(out)
    }

    fn list_metadata(&self) -> Result<std::sync::Arc<[Volume]>> {
        Ok(self
            .s3
            .buckets()?
            .iter()
            .map(|(b, c)| self.volume(b, c, None))
            .collect::<Vec<_>>()
            .into())
    }

    fn inspect(&self, id: &str) -> Result<Option<Volume>> {
        if bucket_name(id).is_err() || !self.s3.exists(id)? {
            return Ok(None);
        }
        let h = self.holder(id)?;
        Ok(Some(self.volume(id, "", h.as_deref())))
    }

    fn check_name(&self, name: &str) -> Result<()> {
        bucket_name(name).map(|_| ())
    }

    fn create(&self, name: &str, spec: &CreateSpec) -> Result<Volume> {
        // A bucket has no size or filesystem; encryption is the
        // endpoint's (server-side), not asked per volume here.
        if spec.encrypted {
            return Err(Error::unsupported(
                "the s3fs driver cannot encrypt volumes: create it without the encrypted option (use the S3 endpoint's server-side encryption)",
            ));
        }
        bucket_name(name)?;
        if self.s3.exists(name)? {
            return Err(Error::exists(format!("volume {name} already exists")));
        }
        let body = if self.s3.region == "us-east-1" {
            String::new()
        } else {
            format!(
                "<CreateBucketConfiguration><LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
                self.s3.region
            )
        };
        let a = self.s3.send("PUT", name, "", &[], body.as_bytes())?;
        self.s3
            .must(a, &format!("creating bucket {name}"))
            .map_err(|e| {
                if e.kind() == Kind::AlreadyExists {
                    Error::exists(format!(
                        "volume {name} already exists (bucket names are shared by every user of the endpoint): {}",
                        e.message()
                    ))
                } else {
                    e
                }
            })?;
        tracing::info!(
            volume = name,
            endpoint = self.s3.endpoint,
            "created a bucket"
        );
        let mut v = self.must_volume(name)?;
        v.fields
            .entry("createdAt".into())
            .or_insert_with(super::now_rfc3339);
        Ok(v)
    }

    fn remove(&self, id: &str, force: bool) -> Result<()> {
        let v = self.must_volume(id)?;
        if let (Some(a), false) = (v.attachments.first(), force) {
            return Err(Error::in_use(format!(
                "volume {id} is attached to {}; detach it first, or remove it with force",
                a.instance_id.id
            )));
        }
        for k in self.s3.keys(id)? {
            self.s3.delete(id, &k)?;
        }
        let a = self.s3.send("DELETE", id, "", &[], b"")?;
        self.s3.must(a, &format!("removing bucket {id}"))?;
        tracing::info!(volume = id, "removed a bucket and its objects");
        Ok(())
    }

    fn attach(
        &self,
        id: &str,
        who: &InstanceId,
        force: bool,
        _next_device: Option<&str>,
    ) -> Result<Attached> {
        let v = self.must_volume(id)?;
        if let Some(a) = v.attachments.first() {
            let holder = &a.instance_id.id;
            if !holder.eq_ignore_ascii_case(&who.id) && !force {
                return Err(Error::in_use(format!(
                    "volume {id} is attached to {holder}; detach it there first, or attach with force (preempt) to take it over"
                )));
            }
        }
        let record = format!("{}\n", who.id);
        match v.attachments.first() {
            // Its own already: nothing to write.
            Some(a) if a.instance_id.id.eq_ignore_ascii_case(&who.id) => {}
            // A takeover: written over the other's.
            Some(_) => self.s3.put(id, HOLDER_OBJECT, record.as_bytes())?,
            // Free when looked at: written only if it still is, so of two
            // instances attaching at once one wins and the other is told.
            None => {
                if !self.s3.put_new(id, HOLDER_OBJECT, record.as_bytes())? {
                    let now = self.must_volume(id)?;
                    let holder = now
                        .attachments
                        .first()
                        .map(|a| a.instance_id.id.clone())
                        .unwrap_or_default();
                    // (Its own: an earlier try of this request landed.)
                    if !holder.eq_ignore_ascii_case(&who.id) {
                        return Err(Error::in_use(format!(
                            "volume {id} was attached to {holder} at the same time; detach it there first, or attach with force (preempt) to take it over"
                        )));
                    }
                }
            }
        }
        fail::fail_point!("s3fs::attach-after-holder", |_| crate::crash_here());
        Ok(Attached {
            volume: self.must_volume(id)?,
            token: id.to_string(),
        })
    }

    fn detach(&self, id: &str, who: &InstanceId, force: bool) -> Result<Volume> {
        let v = self.must_volume(id)?;
        if let Some(a) = v.attachments.first() {
            if !a.instance_id.id.eq_ignore_ascii_case(&who.id) && !force {
                return Err(Error::in_use(format!(
                    "volume {id} is attached to {}; detach it there, or with force",
                    a.instance_id.id
                )));
            }
            self.s3.delete(id, HOLDER_OBJECT)?;
        }
        self.must_volume(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_follow_the_s3_rules() {
        for ok in ["abc", "my-bucket.1", "0ab"] {
            bucket_name(ok).unwrap();
        }
        for bad in ["bk", "Abc", "a_b", "-ab", "ab-", "a..b", "192.168.1.1"] {
            let e = bucket_name(bad).unwrap_err();
            assert_eq!(e.kind(), Kind::InvalidInput, "{bad}");
            assert!(e.message().contains("invalid bucket name"), "{e}");
        }
        assert!(bucket_name(&"a".repeat(64)).is_err());
    }

    #[test]
    fn xml_values_are_read_in_order() {
        let x = "<R><Bucket><Name>a</Name></Bucket><Bucket><Name>b&amp;c</Name></Bucket></R>";
        assert_eq!(tag_values(x, "Name"), ["a", "b&c"]);
        assert!(tag_values(x, "Key").is_empty());
        // Character references, as S3 writes control characters in keys;
        // anything not an entity is kept.
        let x = "<K>a&#xA;b&#13;c&#x1F600;&lt;&gt;&quot;&apos;</K><K>&bogus; & &#;</K>";
        assert_eq!(
            tag_values(x, "K"),
            ["a\nb\rc\u{1F600}<>\"'", "&bogus; & &#;"]
        );
    }

    #[test]
    fn the_signed_host_is_the_host_header_sent() {
        // The HTTP client drops a scheme's own port from the Host header;
        // the signature must cover the same text.
        let host = |ep: &str| {
            S3::new(ep, "", "ak", "sk", Duration::from_secs(1), None)
                .unwrap()
                .host
        };
        assert_eq!(host("https://s3.example.com:443"), "s3.example.com");
        assert_eq!(host("http://s3.example.com:80"), "s3.example.com");
        assert_eq!(host("http://127.0.0.1:7480"), "127.0.0.1:7480");
        assert_eq!(host("https://s3.example.com:80"), "s3.example.com:80");
    }

    #[test]
    fn unsupported_settings_are_refused_by_key() {
        check_settings(10, false, "").unwrap();
        check_settings(0, false, " ").unwrap();
        check_settings(100, false, "").unwrap();
        let e = check_settings(101, false, "").unwrap_err();
        assert_eq!(e.kind(), Kind::InvalidInput);
        assert!(e.message().contains("s3fs.maxRetries"), "{e}");
        let e = check_settings(10, true, "").unwrap_err();
        assert!(e.message().contains("s3fs.disablePathStyle"), "{e}");
        let e = check_settings(10, false, "t1").unwrap_err();
        assert!(e.message().contains("s3fs.tag"), "{e}");
    }

    #[test]
    fn busy_answers_are_retried_with_a_growing_bounded_wait() {
        assert!(retryable(500) && retryable(503) && retryable(504));
        assert!(!retryable(501) && !retryable(404) && !retryable(200));
        assert_eq!(retry_delay(1), Duration::from_millis(100));
        assert_eq!(retry_delay(3), Duration::from_millis(300));
        assert_eq!(retry_delay(50), Duration::from_secs(1));
    }

    #[test]
    fn endpoints_and_ca_files_are_checked_naming_the_key() {
        let new = |ep: &str, ca: Option<&Path>| {
            S3::new(ep, "", "ak", "sk", Duration::from_secs(1), ca).map(|_| ())
        };
        new("http://127.0.0.1:7480", None).unwrap();
        new("https://s3.example.com", None).unwrap();
        new("https://127.0.0.1:7443/", None).unwrap();
        for bad in ["ftp://h", "127.0.0.1:7480", "https://h/bucket", "https://"] {
            let e = new(bad, None).unwrap_err();
            assert_eq!(e.kind(), Kind::InvalidInput, "{bad}");
            assert!(e.message().contains("s3fs.endpoint"), "{bad}: {e}");
        }
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = new("https://h", Some(&missing)).unwrap_err();
        assert!(
            e.message().contains("s3fs.caFile") && e.message().contains("missing.pem"),
            "{e}"
        );
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "no certificate here\n").unwrap();
        let e = new("https://h", Some(&junk)).unwrap_err();
        assert!(e.message().contains("holds no PEM certificate"), "{e}");
        let e = new("https://h", Some(Path::new("ca.pem"))).unwrap_err();
        assert!(e.message().contains("absolute"), "{e}");
        let ca = dir.path().join("ca.pem");
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        std::fs::write(&ca, p.self_signed(&key).unwrap().pem()).unwrap();
        let s3 = S3::new(
            "https://h",
            "",
            "ak",
            "sk",
            Duration::from_secs(1),
            Some(&ca),
        )
        .unwrap();
        assert_eq!(s3.ca_file.as_deref(), Some(ca.as_path()));
        let e = new("http://h", Some(&ca)).unwrap_err();
        assert!(
            e.message().contains("s3fs.caFile") && e.message().contains("only for https"),
            "{e}"
        );
    }

    #[test]
    fn a_tls_failure_is_named_and_not_retried() {
        // A plain-http server behind an https URL: the handshake fails.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let mut served = 0;
            for c in l.incoming().take(1) {
                use std::io::Write;
                let mut c = c.unwrap();
                let _ = c.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
                served += 1;
            }
            served
        });
        let ep = format!("https://127.0.0.1:{port}");
        let s3 = S3::new(&ep, "", "ak", "sk", Duration::from_secs(5), None)
            .unwrap()
            .with_max_retries(3);
        let t = std::time::Instant::now();
        let e = s3.buckets().unwrap_err();
        assert!(
            e.message().contains(&ep)
                && e.message().contains("failed TLS verification")
                && e.message().contains("plain http"),
            "{e}"
        );
        // Once: no retry waits.
        assert!(
            t.elapsed() < Duration::from_millis(100),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(server.join().unwrap(), 1);
    }

    #[test]
    fn an_unreachable_endpoint_is_retried_max_retries_times() {
        // A port nothing listens on: connection refused at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let s3 = S3::new(
            &format!("http://127.0.0.1:{port}"),
            "",
            "ak",
            "sk",
            Duration::from_secs(5),
            None,
        )
        .unwrap()
        .with_max_retries(2);
        let t = std::time::Instant::now();
        let e = s3.buckets().unwrap_err();
        assert!(e.message().contains("did not answer"), "{e}");
        // Two waits: 100 ms + 200 ms.
        assert!(
            t.elapsed() >= Duration::from_millis(300),
            "{:?}",
            t.elapsed()
        );
    }
}
