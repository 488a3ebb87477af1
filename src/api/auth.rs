//! Bearer-token authentication of the libStorage API, as the original's
//! (`libstorage/api/server/auth`): a JSON Web Token signed with a shared
//! HMAC secret (`libstorage.server.auth.key`, algorithm
//! `libstorage.server.auth.alg`, HS256 by default), sent by clients as
//! `Authorization: Bearer <token>` (`libstorage.client.auth.token`).
//!
//! A token is accepted when its header names the configured algorithm,
//! its signature verifies with the key, it carries the four claims the
//! original requires (`sub`, `iat`, `exp`, `nbf`), it has not expired and
//! is already valid, its subject is not in the `deny` list and, when the
//! `allow` list is not empty, is in it. Anything else is refused with the
//! original's 401 body, before the request is looked at.
//!
//! The signature is checked here with `ring`'s HMAC (constant-time), which
//! the TLS stack brings anyway: no JWT crate is needed for three HMAC
//! algorithms and four claims, and the rules above are the original's,
//! not a library's defaults.

use crate::config::{keys, Config};
use crate::{Error, Result};
use base64::Engine;
use serde_json::Value;
use std::time::{SystemTime, UNIX_EPOCH};

/// How far a token's `nbf` may be ahead of this host's clock (the clocks
/// of the host that made the token and of the server differ a little).
pub const NBF_LEEWAY_SECS: i64 = 60;

/// The body of a refused request: the original's, byte for byte in its
/// `message` and `status`.
pub const INVALID_TOKEN: &str = "invalid security token";

/// A signing algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    /// HMAC with SHA-256.
    HS256,
    /// HMAC with SHA-384.
    HS384,
    /// HMAC with SHA-512.
    HS512,
}

impl Alg {
    /// Parse a configured name (case-insensitive, as the original).
    pub fn parse(s: &str) -> Result<Alg> {
        match s.trim().to_ascii_uppercase().as_str() {
            "" | "HS256" => Ok(Alg::HS256),
            "HS384" => Ok(Alg::HS384),
            "HS512" => Ok(Alg::HS512),
            _ => Err(Error::invalid(format!(
                "invalid {} {}: only HS256, HS384 and HS512 are supported",
                keys::SERVER_AUTH_ALG,
                crate::input::quote(s)
            ))),
        }
    }

    /// The name a token's header carries.
    pub fn name(self) -> &'static str {
        match self {
            Alg::HS256 => "HS256",
            Alg::HS384 => "HS384",
            Alg::HS512 => "HS512",
        }
    }

    fn ring(self) -> ring::hmac::Algorithm {
        match self {
            Alg::HS256 => ring::hmac::HMAC_SHA256,
            Alg::HS384 => ring::hmac::HMAC_SHA384,
            Alg::HS512 => ring::hmac::HMAC_SHA512,
        }
    }
}

/// The claims of an accepted token (times in seconds since the epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// Who the token stands for.
    pub sub: String,
    /// Issued at.
    pub iat: i64,
    /// Expires at.
    pub exp: i64,
    /// Not valid before.
    pub nbf: i64,
}

/// Why a token was refused (for the server's log and the 401's `error`;
/// never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization: Bearer …` header.
    Missing,
    /// Not three base64url parts of JSON.
    Malformed(&'static str),
    /// The header names another algorithm (`none` included).
    WrongAlg(String),
    /// The signature does not verify with the key.
    BadSignature,
    /// A required claim is missing or not of its type.
    MissingClaim(&'static str),
    /// `exp` has passed.
    Expired(i64),
    /// `nbf` has not come yet.
    NotYetValid(i64),
    /// The subject is in the deny list.
    Denied(String),
    /// The allow list does not have the subject.
    NotAllowed(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Missing => write!(f, "no Authorization: Bearer token was sent"),
            Refusal::Malformed(why) => write!(f, "the token is not a JWT: {why}"),
            Refusal::WrongAlg(a) => write!(
                f,
                "the token is signed with {} (the server accepts only its configured algorithm)",
                crate::input::quote(a)
            ),
            Refusal::BadSignature => write!(
                f,
                "the token's signature does not verify with the server's key"
            ),
            Refusal::MissingClaim(c) => write!(f, "the token has no {c} claim"),
            Refusal::Expired(t) => write!(f, "the token expired at {}", when(*t)),
            Refusal::NotYetValid(t) => write!(f, "the token is not valid before {}", when(*t)),
            Refusal::Denied(s) => write!(f, "subject {} is denied", crate::input::quote(s)),
            Refusal::NotAllowed(s) => {
                write!(f, "subject {} is not allowed", crate::input::quote(s))
            }
        }
    }
}

fn when(t: i64) -> String {
    u64::try_from(t)
        .ok()
        .map(|s| {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + std::time::Duration::from_secs(s))
                .to_string()
        })
        .unwrap_or_else(|| t.to_string())
}

/// Seconds since the epoch, now.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

/// Decode a base64url part (padding tolerated).
fn unb64(s: &str) -> Option<Vec<u8>> {
    b64().decode(s.trim_end_matches('=')).ok()
}

/// Make a token for `sub`, valid from `now` for `valid_secs` seconds.
pub fn sign(alg: Alg, key: &[u8], sub: &str, now: i64, valid_secs: i64) -> String {
    let header = serde_json::json!({ "alg": alg.name(), "typ": "JWT" });
    let claims = serde_json::json!({
        "exp": now + valid_secs,
        "iat": now,
        "nbf": now,
        "sub": sub,
    });
    sign_raw(alg, key, &header, &claims)
}

/// Sign any header and claims (tests make odd tokens with it).
pub fn sign_raw(alg: Alg, key: &[u8], header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        b64().encode(serde_json::to_vec(header).expect("JSON")),
        b64().encode(serde_json::to_vec(claims).expect("JSON"))
    );
    let tag = ring::hmac::sign(&ring::hmac::Key::new(alg.ring(), key), input.as_bytes());
    format!("{input}.{}", b64().encode(tag.as_ref()))
}

/// The claims of a token whose signature is not checked (the subject of
/// an allow-list entry written as a token, as the original allows).
fn unverified_claims(token: &str) -> Option<Value> {
    let mut parts = token.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    serde_json::from_slice(&unb64(payload)?).ok()
}

fn claim_i64(claims: &serde_json::Map<String, Value>, name: &'static str) -> Result<i64, Refusal> {
    match claims.get(name) {
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .ok_or(Refusal::MissingClaim(name)),
        _ => Err(Refusal::MissingClaim(name)),
    }
}

/// Check a token's form, algorithm, signature and times (not the lists).
pub fn verify(token: &str, alg: Alg, key: &[u8], now: i64) -> Result<Claims, Refusal> {
    let parts: Vec<&str> = token.trim().split('.').collect();
    let [h, p, s] = parts[..] else {
        return Err(Refusal::Malformed("it does not have three parts"));
    };
    let header: Value = unb64(h)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(Refusal::Malformed("its header is not base64url JSON"))?;
    let named = header.get("alg").and_then(Value::as_str).unwrap_or("");
    if named != alg.name() {
        return Err(Refusal::WrongAlg(named.to_string()));
    }
    let sig = unb64(s).ok_or(Refusal::Malformed("its signature is not base64url"))?;
    let input = &token.trim()[..h.len() + 1 + p.len()];
    ring::hmac::verify(
        &ring::hmac::Key::new(alg.ring(), key),
        input.as_bytes(),
        &sig,
    )
    .map_err(|_| Refusal::BadSignature)?;
    let claims: Value = unb64(p)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(Refusal::Malformed("its claims are not base64url JSON"))?;
    let Value::Object(claims) = claims else {
        return Err(Refusal::Malformed("its claims are not a JSON object"));
    };
    let sub = match claims.get("sub") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(Refusal::MissingClaim("sub")),
    };
    let iat = claim_i64(&claims, "iat")?;
    let exp = claim_i64(&claims, "exp")?;
    let nbf = claim_i64(&claims, "nbf")?;
    if now >= exp {
        return Err(Refusal::Expired(exp));
    }
    if now + NBF_LEEWAY_SECS < nbf {
        return Err(Refusal::NotYetValid(nbf));
    }
    Ok(Claims { sub, iat, exp, nbf })
}

/// The claims of a token, its signature and times not checked (for
/// `rexray token decode`); the four claims must be there.
pub fn decode(token: &str) -> Result<Claims, Refusal> {
    let c = unverified_claims(token.trim())
        .ok_or(Refusal::Malformed("not three base64url parts of JSON"))?;
    let Value::Object(c) = c else {
        return Err(Refusal::Malformed("its claims are not a JSON object"));
    };
    let sub = match c.get("sub") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(Refusal::MissingClaim("sub")),
    };
    Ok(Claims {
        sub,
        iat: claim_i64(&c, "iat")?,
        exp: claim_i64(&c, "exp")?,
        nbf: claim_i64(&c, "nbf")?,
    })
}

/// The token of an `Authorization` header value (`Bearer <token>`).
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let h = header?.trim();
    let (scheme, tok) = h.split_once(' ')?;
    let tok = tok.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !tok.is_empty()).then_some(tok)
}

/// One authentication setting: the key, the algorithm, the lists.
#[derive(Clone)]
pub struct AuthConfig {
    alg: Alg,
    key: Vec<u8>,
    allow: Vec<String>,
    deny: Vec<String>,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("AuthConfig")
            .field("alg", &self.alg)
            .field("allow", &self.allow)
            .field("deny", &self.deny)
            .finish_non_exhaustive()
    }
}

/// The subject an allow or deny entry names: the entry itself, or the
/// subject of a token written there (`[name:]<jwt>`), as the original.
fn entry_subject(entry: &str) -> String {
    let tok = entry.rsplit(':').next().unwrap_or(entry);
    if tok.matches('.').count() == 2 {
        if let Some(sub) = unverified_claims(tok)
            .as_ref()
            .and_then(|c| c.get("sub"))
            .and_then(Value::as_str)
        {
            return sub.to_string();
        }
    }
    entry.to_string()
}

fn list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(entry_subject)
        .collect()
}

/// The raw values of one auth section.
#[derive(Debug, Default, Clone)]
pub struct Section {
    /// `key`: the secret, or the path of a file holding it.
    pub key: Option<String>,
    /// `alg`.
    pub alg: Option<String>,
    /// `allow`, comma-separated.
    pub allow: Option<String>,
    /// `deny`, comma-separated.
    pub deny: Option<String>,
    /// `disabled`.
    pub disabled: Option<String>,
}

impl Section {
    /// Each value of `self`, else `outer`'s (a service's section inherits
    /// the server's, as the original's scopes).
    pub fn or(self, outer: &Section) -> Section {
        Section {
            key: self.key.or_else(|| outer.key.clone()),
            alg: self.alg.or_else(|| outer.alg.clone()),
            allow: self.allow.or_else(|| outer.allow.clone()),
            deny: self.deny.or_else(|| outer.deny.clone()),
            disabled: self.disabled.or_else(|| outer.disabled.clone()),
        }
    }

    /// Whether any value is set.
    pub fn is_set(&self) -> bool {
        self.key.is_some()
            || self.alg.is_some()
            || self.allow.is_some()
            || self.deny.is_some()
            || self.disabled.is_some()
    }

    /// The server's section, `libstorage.server.auth.*`.
    pub fn server(cfg: &Config) -> Section {
        let get = |k: &str| {
            let s = cfg.setting(k);
            (!matches!(s.source, crate::config::Source::Default) && !s.value.trim().is_empty())
                .then(|| s.value.to_string())
        };
        Section {
            key: get(keys::SERVER_AUTH_KEY),
            alg: get(keys::SERVER_AUTH_ALG),
            allow: get(keys::SERVER_AUTH_ALLOW),
            deny: get(keys::SERVER_AUTH_DENY),
            disabled: get(keys::SERVER_AUTH_DISABLED),
        }
    }

    /// A service's own section, `libstorage.server.services.<svc>.auth.*`
    /// (config files only, as the original bound no variable to it).
    pub fn service(cfg: &Config, svc: &str) -> Section {
        let get = |k: &str| {
            cfg.file_value(&format!(
                "libstorage.server.services.{}.auth.{k}",
                svc.to_ascii_lowercase()
            ))
            .filter(|v| !v.trim().is_empty())
            .map(str::to_string)
        };
        Section {
            key: get("key"),
            alg: get("alg"),
            allow: get("allow"),
            deny: get("deny"),
            disabled: get("disabled"),
        }
    }

    /// The setting these values make: `None` when authentication is off
    /// (nothing set, or `disabled`). `scope` names the section in errors.
    pub fn build(&self, scope: &str) -> Result<Option<AuthConfig>> {
        let disabled = match self.disabled.as_deref() {
            None => false,
            Some(v) => crate::input::boolean(&format!("{scope}.disabled"), v)?,
        };
        let lists_set = self.allow.is_some() || self.deny.is_some();
        if disabled || (self.key.is_none() && !lists_set) {
            return Ok(None);
        }
        let Some(key) = self.key.as_deref() else {
            return Err(Error::invalid(format!(
                "{scope}.allow or .deny is set but {scope}.key is not: the server cannot check tokens without the key (set {scope}.key to the secret, or to the path of a file holding it)"
            )));
        };
        let key = read_secret(key, &format!("{scope}.key"))?;
        if key.is_empty() {
            return Err(Error::invalid(format!("{scope}.key is empty")));
        }
        if key.len() < 32 {
            tracing::warn!(
                "{scope}.key is {} bytes long: a secret of at least 32 random bytes is recommended (e.g. `head -c 32 /dev/urandom | base64`)",
                key.len()
            );
        }
        Ok(Some(AuthConfig {
            alg: Alg::parse(self.alg.as_deref().unwrap_or("HS256"))?,
            key,
            allow: self.allow.as_deref().map(list).unwrap_or_default(),
            deny: self.deny.as_deref().map(list).unwrap_or_default(),
        }))
    }
}

/// A secret given inline or as the path of a file holding it (the
/// file's bytes as they are, as the original reads them); a relative
/// path is taken from the working directory. A value that is a path
/// (it starts with `/`, `./`, `../` or `~/`) but names no file is an
/// error: taken as the secret itself, the text of a path would be a
/// secret anyone who reads the configuration could sign with.
pub fn read_secret(v: &str, key: &str) -> Result<Vec<u8>> {
    use std::os::unix::fs::MetadataExt;
    let p = std::path::Path::new(v.trim());
    let looks_like_a_path = ["/", "./", "../", "~/"]
        .iter()
        .any(|s| v.trim().starts_with(s));
    if looks_like_a_path && !p.is_file() {
        return Err(Error::invalid(format!(
            "{key} names no readable file ({}): give the path of the file holding the secret, or the secret itself (a secret cannot start with `/`, `./`, `../` or `~/`)",
            p.display()
        )));
    }
    if p.is_file() {
        let meta = std::fs::metadata(p)
            .map_err(|e| Error::from_io(format!("reading {key} {}", p.display()), &e))?;
        if meta.mode() & 0o077 != 0 {
            tracing::warn!(file = %p.display(), "{key}: the file is readable by others than its owner; run `chmod 600 {}`", p.display());
        }
        return std::fs::read(p)
            .map_err(|e| Error::from_io(format!("reading {key} {}", p.display()), &e));
    }
    Ok(v.as_bytes().to_vec())
}

impl AuthConfig {
    /// A setting from its parts (tests).
    pub fn new(alg: Alg, key: &[u8], allow: &[&str], deny: &[&str]) -> AuthConfig {
        AuthConfig {
            alg,
            key: key.to_vec(),
            allow: allow.iter().map(|s| entry_subject(s)).collect(),
            deny: deny.iter().map(|s| entry_subject(s)).collect(),
        }
    }

    /// Check the `Authorization` header value of a request.
    pub fn check(&self, authorization: Option<&str>, now: i64) -> Result<Claims, Refusal> {
        let tok = bearer(authorization).ok_or(Refusal::Missing)?;
        let c = verify(tok, self.alg, &self.key, now)?;
        if self.deny.iter().any(|d| d.eq_ignore_ascii_case(&c.sub)) {
            return Err(Refusal::Denied(c.sub));
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|a| a.eq_ignore_ascii_case(&c.sub)) {
            return Err(Refusal::NotAllowed(c.sub));
        }
        Ok(c)
    }
}

/// The client's token, `libstorage.client.auth.token`: inline, or the
/// path of a file holding it; `None` when unset.
pub fn client_token(cfg: &Config) -> Result<Option<String>> {
    let v = cfg.string(keys::CLIENT_AUTH_TOKEN).trim();
    if v.is_empty() {
        return Ok(None);
    }
    let raw = read_secret(v, keys::CLIENT_AUTH_TOKEN)?;
    let tok = String::from_utf8(raw)
        .map_err(|_| Error::invalid(format!("{} is not text", keys::CLIENT_AUTH_TOKEN)))?;
    let tok = tok.trim().to_string();
    if tok.is_empty() || tok.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::invalid(format!(
            "{} is not a token (a JWT has no spaces or line breaks)",
            keys::CLIENT_AUTH_TOKEN
        )));
    }
    Ok(Some(tok))
}

/// What the server checks: its own setting, on every route, and each
/// service's, on the routes of that service (and those of every
/// service), as the original's handlers.
#[derive(Debug, Default)]
pub struct Auth {
    global: Option<AuthConfig>,
    services: std::collections::BTreeMap<String, AuthConfig>,
}

/// Which services a request path concerns.
enum Scope {
    /// None (`/`, `/help`).
    None,
    /// All of them (`/services`, `/volumes`, `/snapshots`; and `/tasks`,
    /// whose results hold any service's volumes and attach tokens).
    All,
    /// One.
    One(String),
}

/// The services whose auth a request for `path` needs, read from the
/// segments the router matches ([`super::routes::segments`]: decoded the
/// same way, so `/%76olumes/loop` is `/volumes/loop` here too). Only the
/// root and `help` are open; a path no route has needs every service's
/// token, as a path that cannot be decoded does (the router refuses it).
fn scope(path: &str) -> Scope {
    let Ok(segs) = super::routes::segments(path) else {
        return Scope::All;
    };
    match segs.first().map(|s| s.to_ascii_lowercase()).as_deref() {
        None | Some("help") => Scope::None,
        Some("services" | "volumes" | "snapshots") => match segs.get(1) {
            Some(s) => Scope::One(s.to_ascii_lowercase()),
            None => Scope::All,
        },
        _ => Scope::All,
    }
}

impl Auth {
    /// The server's settings for `services`.
    pub fn from_config(cfg: &Config, services: &[String]) -> Result<Auth> {
        let outer = Section::server(cfg);
        let global = outer.build("libstorage.server.auth")?;
        let mut out = Auth {
            global,
            services: Default::default(),
        };
        for svc in services {
            let own = Section::service(cfg, svc);
            if !own.is_set() {
                continue;
            }
            let scope = format!("libstorage.server.services.{svc}.auth");
            if let Some(c) = own.or(&outer).build(&scope)? {
                out.services.insert(svc.to_ascii_lowercase(), c);
            }
        }
        Ok(out)
    }

    /// Whether any request needs a token.
    pub fn is_on(&self) -> bool {
        self.global.is_some() || !self.services.is_empty()
    }

    /// Check the `Authorization` header of a request for `path`: the
    /// subject of the token when one was needed and is good, `None` when
    /// none was needed.
    pub fn check(
        &self,
        path: &str,
        authorization: Option<&str>,
        now: i64,
    ) -> Result<Option<Claims>, Refusal> {
        let mut seen = None;
        if let Some(g) = &self.global {
            seen = Some(g.check(authorization, now)?);
        }
        let svcs: Vec<&AuthConfig> = match scope(path) {
            Scope::None => Vec::new(),
            Scope::All => self.services.values().collect(),
            Scope::One(s) => self.services.get(&s).into_iter().collect(),
        };
        for c in svcs {
            seen = Some(c.check(authorization, now)?);
        }
        Ok(seen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn hdr(tok: &str) -> String {
        format!("Bearer {tok}")
    }

    #[test]
    fn a_good_token_passes() {
        let now = 1_700_000_000;
        let t = sign(Alg::HS256, KEY, "alice", now, 3600);
        let a = AuthConfig::new(Alg::HS256, KEY, &[], &[]);
        let c = a.check(Some(&hdr(&t)), now + 10).unwrap();
        assert_eq!(
            c,
            Claims {
                sub: "alice".into(),
                iat: now,
                exp: now + 3600,
                nbf: now
            }
        );
        // Other algorithms, when configured.
        for alg in [Alg::HS384, Alg::HS512] {
            let t = sign(alg, KEY, "bob", now, 60);
            assert_eq!(verify(&t, alg, KEY, now).unwrap().sub, "bob");
            assert_eq!(
                verify(&t, Alg::HS256, KEY, now),
                Err(Refusal::WrongAlg(alg.name().into()))
            );
        }
        // The scheme is case-insensitive, as HTTP's.
        assert!(a.check(Some(&format!("bearer {t}")), now).is_ok());
    }

    /// A token the original's `rexray token new --key sekrit alice` made.
    #[test]
    fn the_originals_tokens_verify() {
        let t = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOjE4Mjc4NjQ4NjAsImlhdCI6MTc5NjMyODg2MCwibmJmIjoxNzk2MzI4ODYwLCJzdWIiOiJhbGljZSJ9.17PASDnXGQKxTSiMqc1Eewklo14mpobr6O0H4U-tt8M";
        let c = verify(t, Alg::HS256, b"sekrit", 1_796_328_900).unwrap();
        assert_eq!(
            (c.sub.as_str(), c.exp, c.nbf),
            ("alice", 1_827_864_860, 1_796_328_860)
        );
        assert_eq!(
            verify(t, Alg::HS256, b"sekrit!", 1_796_328_900),
            Err(Refusal::BadSignature)
        );
    }

    #[test]
    fn a_wrong_key_is_refused() {
        let now = 1_700_000_000;
        let t = sign(Alg::HS256, b"another key", "alice", now, 3600);
        let a = AuthConfig::new(Alg::HS256, KEY, &[], &[]);
        assert_eq!(a.check(Some(&hdr(&t)), now), Err(Refusal::BadSignature));
        // A changed claim breaks the signature.
        let good = sign(Alg::HS256, KEY, "alice", now, 3600);
        let parts: Vec<&str> = good.split('.').collect();
        let evil = b64().encode(br#"{"exp":9999999999,"iat":1,"nbf":1,"sub":"root"}"#);
        let forged = format!("{}.{evil}.{}", parts[0], parts[2]);
        assert_eq!(
            a.check(Some(&hdr(&forged)), now),
            Err(Refusal::BadSignature)
        );
    }

    #[test]
    fn expired_and_early_tokens_are_refused() {
        let now = 1_700_000_000;
        let a = AuthConfig::new(Alg::HS256, KEY, &[], &[]);
        let t = sign(Alg::HS256, KEY, "alice", now - 7200, 3600);
        assert_eq!(
            a.check(Some(&hdr(&t)), now),
            Err(Refusal::Expired(now - 3600))
        );
        // Expired at the very second of exp.
        let t = sign(Alg::HS256, KEY, "alice", now - 60, 60);
        assert_eq!(a.check(Some(&hdr(&t)), now), Err(Refusal::Expired(now)));
        // nbf ahead beyond the leeway; within it, accepted.
        let t = sign(Alg::HS256, KEY, "alice", now + 3600, 7200);
        assert_eq!(
            a.check(Some(&hdr(&t)), now),
            Err(Refusal::NotYetValid(now + 3600))
        );
        let t = sign(Alg::HS256, KEY, "alice", now + 30, 7200);
        assert!(a.check(Some(&hdr(&t)), now).is_ok());
    }

    #[test]
    fn alg_none_and_other_algorithms_are_refused() {
        let now = 1_700_000_000;
        let a = AuthConfig::new(Alg::HS256, KEY, &[], &[]);
        let claims = serde_json::json!({"exp": now + 60, "iat": now, "nbf": now, "sub": "alice"});
        let none = format!(
            "{}.{}.",
            b64().encode(br#"{"alg":"none","typ":"JWT"}"#),
            b64().encode(serde_json::to_vec(&claims).unwrap())
        );
        assert_eq!(
            a.check(Some(&hdr(&none)), now),
            Err(Refusal::WrongAlg("none".into()))
        );
        // The header's alg must be the configured one even when the MAC
        // would verify (no algorithm confusion).
        let t = sign_raw(
            Alg::HS256,
            KEY,
            &serde_json::json!({"alg": "hs256"}),
            &claims,
        );
        assert_eq!(
            a.check(Some(&hdr(&t)), now),
            Err(Refusal::WrongAlg("hs256".into()))
        );
        let t = sign_raw(Alg::HS256, KEY, &serde_json::json!({"typ": "JWT"}), &claims);
        assert_eq!(
            a.check(Some(&hdr(&t)), now),
            Err(Refusal::WrongAlg(String::new()))
        );
    }

    #[test]
    fn malformed_tokens_and_headers_are_refused() {
        let now = 1_700_000_000;
        let a = AuthConfig::new(Alg::HS256, KEY, &[], &[]);
        assert_eq!(a.check(None, now), Err(Refusal::Missing));
        for h in ["", "Bearer", "Bearer ", "Basic YWxpY2U6cHc=", "token abc"] {
            assert_eq!(a.check(Some(h), now), Err(Refusal::Missing), "{h:?}");
        }
        for t in ["abc", "a.b", "a.b.c.d", "!!.??.**", "e30.e30.e30"] {
            assert!(
                matches!(
                    a.check(Some(&hdr(t)), now),
                    Err(Refusal::Malformed(_) | Refusal::WrongAlg(_))
                ),
                "{t}"
            );
        }
        // Claims missing or of the wrong type, each named.
        for (claims, missing) in [
            (
                serde_json::json!({"iat": now, "exp": now + 9, "nbf": now}),
                "sub",
            ),
            (
                serde_json::json!({"sub": "a", "exp": now + 9, "nbf": now}),
                "iat",
            ),
            (
                serde_json::json!({"sub": "a", "iat": now, "nbf": now}),
                "exp",
            ),
            (
                serde_json::json!({"sub": "a", "iat": now, "exp": now + 9}),
                "nbf",
            ),
            (
                serde_json::json!({"sub": "a", "iat": now, "exp": "soon", "nbf": now}),
                "exp",
            ),
            (
                serde_json::json!({"sub": 7, "iat": now, "exp": now + 9, "nbf": now}),
                "sub",
            ),
        ] {
            let t = sign_raw(
                Alg::HS256,
                KEY,
                &serde_json::json!({"alg": "HS256"}),
                &claims,
            );
            assert_eq!(
                a.check(Some(&hdr(&t)), now),
                Err(Refusal::MissingClaim(missing))
            );
        }
        let t = sign_raw(
            Alg::HS256,
            KEY,
            &serde_json::json!({"alg": "HS256"}),
            &serde_json::json!([1]),
        );
        assert!(matches!(
            a.check(Some(&hdr(&t)), now),
            Err(Refusal::Malformed(_))
        ));
    }

    #[test]
    fn allow_and_deny_lists() {
        let now = 1_700_000_000;
        let alice = sign(Alg::HS256, KEY, "alice", now, 60);
        let bob = sign(Alg::HS256, KEY, "Bob", now, 60);
        // An entry may be a token (optionally `name:`-prefixed): its subject.
        let carol_tok = sign(Alg::HS256, b"any", "carol", now, 60);
        let a = AuthConfig::new(Alg::HS256, KEY, &["alice", &format!("c:{carol_tok}")], &[]);
        assert!(a.check(Some(&hdr(&alice)), now).is_ok());
        assert_eq!(
            a.check(Some(&hdr(&bob)), now),
            Err(Refusal::NotAllowed("Bob".into()))
        );
        let carol = sign(Alg::HS256, KEY, "carol", now, 60);
        assert!(a.check(Some(&hdr(&carol)), now).is_ok());
        let d = AuthConfig::new(Alg::HS256, KEY, &["alice", "bob"], &["BOB"]);
        assert_eq!(
            d.check(Some(&hdr(&bob)), now),
            Err(Refusal::Denied("Bob".into()))
        );
        assert!(d.check(Some(&hdr(&alice)), now).is_ok());
        assert_eq!(list(" a, b ,,c"), vec!["a", "b", "c"]);
    }

    #[test]
    fn scopes_of_paths() {
        let now = 1_700_000_000;
        let svc = AuthConfig::new(Alg::HS256, b"svc-key", &[], &[]);
        let auth = Auth {
            global: None,
            services: [("vfs".to_string(), svc)].into(),
        };
        let tok = sign(Alg::HS256, b"svc-key", "a", now, 60);
        let good = Some(format!("Bearer {tok}"));
        for p in [
            "/",
            "/help/version",
            "/services/loop",
            "/volumes/other/x",
            "//volumes//other",
        ] {
            assert_eq!(auth.check(p, None, now), Ok(None), "{p}");
        }
        // Every spelling the router takes for a route is checked as that
        // route; a path no route has is checked as all of them.
        for p in [
            "/services",
            "/volumes",
            "/volumes/",
            "/snapshots",
            "/volumes/VFS/v1",
            "/services/vfs",
            "/volumes/%76fs",
            "/%76olumes/vfs",
            "/%76olumes",
            "/%73ervices/%76fs",
            "/%74asks",
            "//volumes//vfs",
            "/tasks",
            "/tasks/7",
            "/nosuchroute",
            "/volumes%2fvfs",
            "/%ff",
        ] {
            assert_eq!(auth.check(p, None, now), Err(Refusal::Missing), "{p}");
            assert!(
                auth.check(p, good.as_deref(), now).unwrap().is_some(),
                "{p}"
            );
        }
        let both = Auth {
            global: Some(AuthConfig::new(Alg::HS256, KEY, &[], &[])),
            ..auth
        };
        assert_eq!(
            both.check("/help", good.as_deref(), now),
            Err(Refusal::BadSignature)
        );
    }

    #[test]
    fn sections_build() {
        assert!(Section::default().build("s").unwrap().is_none());
        let only_lists = Section {
            allow: Some("a".into()),
            ..Default::default()
        };
        let e = only_lists.build("libstorage.server.auth").unwrap_err();
        assert!(
            e.message().contains("libstorage.server.auth.key is not"),
            "{e}"
        );
        let on = Section {
            key: Some("k".repeat(32)),
            ..Default::default()
        };
        assert!(on.build("s").unwrap().is_some());
        let off = Section {
            disabled: Some("true".into()),
            ..on.clone()
        };
        assert!(off.build("s").unwrap().is_none());
        let bad = Section {
            alg: Some("RS256".into()),
            ..on.clone()
        };
        assert!(bad.build("s").unwrap_err().message().contains("HS256"));
        // A service inherits what it does not set.
        let svc = Section {
            allow: Some("x".into()),
            ..Default::default()
        }
        .or(&on);
        let c = svc.build("s").unwrap().unwrap();
        assert_eq!((c.allow.clone(), c.key.len()), (vec!["x".to_string()], 32));
        assert!(!format!("{c:?}").contains("kkkk"));
        // A key file: its bytes as they are.
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("key");
        std::fs::write(&f, b"file-secret\n").unwrap();
        assert_eq!(
            read_secret(&f.to_string_lossy(), "k").unwrap(),
            b"file-secret\n"
        );
        assert_eq!(read_secret("inline", "k").unwrap(), b"inline");
        // A relative path, from the working directory.
        let rel = f.strip_prefix("/").unwrap();
        let here = std::env::current_dir().unwrap();
        let up = here
            .components()
            .skip(1)
            .map(|_| "..")
            .collect::<Vec<_>>()
            .join("/");
        let relative = format!(
            "{}/{}",
            if up.is_empty() { "." } else { &up },
            rel.display()
        );
        assert_eq!(read_secret(&relative, "k").unwrap(), b"file-secret\n");
        // A path that names no file is never the secret itself.
        for missing in [
            "/etc/secrets/libstorage-auth.key",
            "./nope.key",
            "../nope",
            "~/k",
        ] {
            let e = read_secret(missing, "libstorage.server.auth.key").unwrap_err();
            assert!(
                e.to_string()
                    .contains("libstorage.server.auth.key names no readable file"),
                "{e}"
            );
        }
        let e = read_secret(&t.path().to_string_lossy(), "k").unwrap_err();
        assert!(e.to_string().contains("names no readable file"), "{e}");
    }
}
