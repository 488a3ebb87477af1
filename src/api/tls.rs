//! TLS for the libStorage API's tcp endpoints (rustls with the `ring`
//! provider; nothing to build but Rust and C).
//!
//! Server: a tcp endpoint serves HTTPS only when a certificate and its
//! key are configured (`libstorage.server.tls.certFile`/`keyFile`, read
//! from `libstorage.tls.*` too, defaults `<etc>/tls/rexray.{crt,key}`
//! used only when they exist) and TLS is not disabled; with
//! `clientCertRequired`, a client must present a certificate signed by
//! one in `trustedCertsFile`.
//!
//! Client: the server is trusted either by the certificates of
//! `trustedCertsFile` (the usual chain and name checks, the name being
//! `serverName` or the host of `libstorage.host`), or, as the original's
//! `known_hosts`, by the SHA-256 fingerprint of its certificate: a line
//! `HOST sha256 FINGERPRINT` in `knownHosts` (or pinned in
//! `libstorage.tls`). A host that is not known is refused with the line
//! to add: nothing is ever asked on a terminal.

use crate::config::{keys, Config, Source};
use crate::{Error, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The crypto provider: ring's.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The SHA-256 fingerprint of a DER certificate, as lower-case hex.
pub fn fingerprint(der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    let mut s = String::with_capacity(64);
    for b in d.as_ref() {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// One trusted host: `HOST ALG FINGERPRINT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownHost {
    /// The host as the client names it (without the port).
    pub host: String,
    /// The digest (`sha256`; lines with another are never matched).
    pub alg: String,
    /// The fingerprint, lower-case hex without colons.
    pub fingerprint: String,
}

impl KnownHost {
    /// Parse a line; `None` for a blank line or a comment.
    pub fn parse(line: &str) -> Result<Option<KnownHost>> {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            return Ok(None);
        }
        let mut it = l.split_whitespace();
        let (Some(host), Some(alg), Some(fp), None) = (it.next(), it.next(), it.next(), it.next())
        else {
            return Err(Error::invalid(format!(
                "invalid known host {}: expected `HOST sha256 FINGERPRINT`",
                crate::input::quote(l)
            )));
        };
        let fp: String = fp
            .chars()
            .filter(|c| *c != ':')
            .collect::<String>()
            .to_ascii_lowercase();
        if fp.is_empty()
            || !fp.len().is_multiple_of(2)
            || !fp.chars().all(|c| c.is_ascii_hexdigit())
        {
            return Err(Error::invalid(format!(
                "invalid known host {}: the fingerprint is not hex",
                crate::input::quote(l)
            )));
        }
        Ok(Some(KnownHost {
            host: host.to_string(),
            alg: alg.to_ascii_lowercase(),
            fingerprint: fp,
        }))
    }

    /// The line that trusts `der` for `host`.
    pub fn line(host: &str, der: &[u8]) -> String {
        format!("{host} sha256 {}", fingerprint(der))
    }
}

/// The lines of a known_hosts file (none when it does not exist).
pub fn read_known_hosts(p: &Path) -> Result<Vec<KnownHost>> {
    let text = match std::fs::read_to_string(p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Error::from_io(
                format!("reading known_hosts file {}", p.display()),
                &e,
            ))
        }
    };
    let mut out = Vec::new();
    for (n, l) in text.lines().enumerate() {
        match KnownHost::parse(l) {
            Ok(Some(k)) => out.push(k),
            Ok(None) => {}
            Err(e) => return Err(e.context(format!("{} line {}", p.display(), n + 1))),
        }
    }
    Ok(out)
}

/// Whether `certs` (the server's chain, its own certificate first) is
/// trusted for `host` by `known`: `Ok(0)` when a line for the host has the
/// fingerprint of the server's own certificate; `Ok(i)` when it has that
/// of the issuer `certs[i]` — which only says what the chain must lead to:
/// anyone can present a public CA certificate after their own, so the
/// caller must then check that the chain really is signed by it. Else why
/// not.
pub fn check_known(
    host: &str,
    certs: &[&[u8]],
    known: &[KnownHost],
) -> std::result::Result<usize, Untrusted> {
    let fps: Vec<String> = certs.iter().map(|c| fingerprint(c)).collect();
    let mine: Vec<&KnownHost> = known
        .iter()
        .filter(|k| k.host.eq_ignore_ascii_case(host) && k.alg == "sha256")
        .collect();
    // The server's own certificate first: pinned, it is enough.
    if let Some(i) = fps
        .iter()
        .position(|fp| mine.iter().any(|k| &k.fingerprint == fp))
    {
        return Ok(i);
    }
    let presented = fps.first().cloned().unwrap_or_default();
    if known.iter().any(|k| k.host.eq_ignore_ascii_case(host)) {
        Err(Untrusted::Changed {
            host: host.to_string(),
            fingerprint: presented,
        })
    } else {
        Err(Untrusted::Unknown {
            host: host.to_string(),
            fingerprint: presented,
        })
    }
}

/// Why a server's certificate was not trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Untrusted {
    /// No known_hosts line names the host.
    Unknown {
        /// The host.
        host: String,
        /// The SHA-256 fingerprint of the certificate it presented.
        fingerprint: String,
    },
    /// Lines name the host with other fingerprints.
    Changed {
        /// The host.
        host: String,
        /// The SHA-256 fingerprint of the certificate it presented.
        fingerprint: String,
    },
    /// The chain or name checks against the trusted certificates failed.
    Chain {
        /// What rustls said.
        why: String,
        /// The SHA-256 fingerprint of the certificate it presented.
        fingerprint: String,
    },
}

impl std::fmt::Display for Untrusted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Untrusted::Unknown { host, fingerprint } => write!(
                f,
                "the server {host} is not a known host: its certificate's SHA-256 fingerprint is {fingerprint}"
            ),
            Untrusted::Changed { host, fingerprint } => write!(
                f,
                "the certificate of {host} does not match its known_hosts entry: it presented SHA-256 fingerprint {fingerprint}. The server's certificate changed, or another machine answers in its place (man-in-the-middle)"
            ),
            Untrusted::Chain { why, fingerprint } => write!(
                f,
                "the server's certificate (SHA-256 fingerprint {fingerprint}) is not trusted: {why}"
            ),
        }
    }
}

impl std::error::Error for Untrusted {}

/// A configured file: `Some` when set explicitly (it must exist) or when
/// the default path exists; `None` when left at a default that does not.
fn configured_file(cfg: &Config, key: &str) -> Result<Option<PathBuf>> {
    let s = cfg.setting(key);
    let p = PathBuf::from(s.value.as_ref());
    if p.exists() {
        return Ok(Some(p));
    }
    if matches!(s.source, Source::Default) {
        return Ok(None);
    }
    Err(Error::invalid(format!(
        "{key} {} (from {}) does not exist",
        p.display(),
        s.source
    )))
}

fn explicitly(cfg: &Config, key: &str) -> bool {
    !matches!(cfg.setting(key).source, Source::Default)
}

fn load_certs(p: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs: std::result::Result<Vec<_>, _> = CertificateDer::pem_file_iter(p)
        .map_err(|e| Error::invalid(format!("reading {key} {}: {e}", p.display())))?
        .collect();
    let certs = certs.map_err(|e| Error::invalid(format!("reading {key} {}: {e}", p.display())))?;
    if certs.is_empty() {
        return Err(Error::invalid(format!(
            "{key} {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            p.display()
        )));
    }
    Ok(certs)
}

fn load_key(p: &Path, key: &str) -> Result<PrivateKeyDer<'static>> {
    use std::os::unix::fs::MetadataExt;
    if let Ok(m) = std::fs::metadata(p) {
        if m.mode() & 0o077 != 0 {
            tracing::warn!(file = %p.display(), "{key}: the private key is readable by others than its owner; run `chmod 600 {}`", p.display());
        }
    }
    PrivateKeyDer::from_pem_file(p).map_err(|e| {
        Error::invalid(format!(
            "reading {key} {}: {e} (expected a PEM private key: PKCS#8, PKCS#1 RSA or SEC1 EC)",
            p.display()
        ))
    })
}

fn roots(p: &Path, key: &str) -> Result<Arc<rustls::RootCertStore>> {
    let mut store = rustls::RootCertStore::empty();
    for c in load_certs(p, key)? {
        store.add(c).map_err(|e| {
            Error::invalid(format!(
                "{key} {}: a certificate cannot be a trust anchor: {e}",
                p.display()
            ))
        })?;
    }
    Ok(Arc::new(store))
}

/// What a server endpoint serves TLS with.
#[derive(Debug)]
pub struct ServerTls {
    /// The rustls configuration.
    pub config: Arc<rustls::ServerConfig>,
    /// Whether clients must present a certificate.
    pub client_certs: bool,
}

/// The server's TLS, when its tcp endpoints are to serve HTTPS.
pub fn server_config(cfg: &Config) -> Result<Option<ServerTls>> {
    if cfg.boolean(keys::SERVER_TLS_DISABLED) {
        return Ok(None);
    }
    let cert = configured_file(cfg, keys::SERVER_TLS_CERT_FILE)?;
    let key = configured_file(cfg, keys::SERVER_TLS_KEY_FILE)?;
    let required = cfg.boolean(keys::SERVER_TLS_CLIENT_CERT_REQUIRED);
    let (cert, key) = match (cert, key) {
        (None, None) if required => {
            return Err(Error::invalid(format!(
                "{} needs TLS: set {} and {}",
                keys::SERVER_TLS_CLIENT_CERT_REQUIRED,
                keys::SERVER_TLS_CERT_FILE,
                keys::SERVER_TLS_KEY_FILE
            )))
        }
        (None, None) => return Ok(None),
        (Some(_), None) => {
            return Err(Error::invalid(format!(
                "{} is set but {} is not (or {} does not exist): the server needs the certificate's private key",
                keys::SERVER_TLS_CERT_FILE,
                keys::SERVER_TLS_KEY_FILE,
                cfg.string(keys::SERVER_TLS_KEY_FILE)
            )))
        }
        (None, Some(_)) => {
            return Err(Error::invalid(format!(
                "{} is set but {} is not (or {} does not exist)",
                keys::SERVER_TLS_KEY_FILE,
                keys::SERVER_TLS_CERT_FILE,
                cfg.string(keys::SERVER_TLS_CERT_FILE)
            )))
        }
        (Some(c), Some(k)) => (c, k),
    };
    let certs = load_certs(&cert, keys::SERVER_TLS_CERT_FILE)?;
    let pkey = load_key(&key, keys::SERVER_TLS_KEY_FILE)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::system(format!("TLS: {e}")))?;
    let builder = if required {
        let ca = configured_file(cfg, keys::SERVER_TLS_TRUSTED_CERTS_FILE)?.ok_or_else(|| {
            Error::invalid(format!(
                "{} needs {} (the certificates client certificates must be signed by); {} does not exist",
                keys::SERVER_TLS_CLIENT_CERT_REQUIRED,
                keys::SERVER_TLS_TRUSTED_CERTS_FILE,
                cfg.string(keys::SERVER_TLS_TRUSTED_CERTS_FILE)
            ))
        })?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots(&ca, keys::SERVER_TLS_TRUSTED_CERTS_FILE)?,
            provider(),
        )
        .build()
        .map_err(|e| Error::invalid(format!("{}: {e}", keys::SERVER_TLS_TRUSTED_CERTS_FILE)))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut sc = builder.with_single_cert(certs, pkey).map_err(|e| {
        Error::invalid(format!(
            "{} {} and {} {} do not make a usable pair: {e}",
            keys::SERVER_TLS_CERT_FILE,
            cert.display(),
            keys::SERVER_TLS_KEY_FILE,
            key.display()
        ))
    })?;
    sc.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(ServerTls {
        config: Arc::new(sc),
        client_certs: required,
    }))
}

/// How a client trusts the server.
#[derive(Debug)]
enum Trust {
    /// Not at all (`insecure`).
    Insecure,
    /// By the chain to the certificates of a file.
    Chain {
        inner: Arc<rustls::client::WebPkiServerVerifier>,
        /// The fingerprints of the file's certificates: one presented
        /// as it is there is trusted as it is (a self-signed certificate,
        /// often marked as a CA, which the chain checks refuse as a
        /// server's).
        exact: Vec<String>,
    },
    /// By fingerprint.
    Known {
        pinned: Vec<KnownHost>,
        file: PathBuf,
    },
}

/// Checks the server's certificate as configured.
#[derive(Debug)]
struct Verifier {
    trust: Trust,
    /// Fingerprints trusted for any host: this host's own server
    /// certificate (whoever presents it holds its private key).
    own: Vec<String>,
    /// The host as `libstorage.host` names it (known_hosts lookups).
    host: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

fn untrusted(u: Untrusted) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(u))))
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        if self.own.contains(&fingerprint(end_entity)) {
            return Ok(ServerCertVerified::assertion());
        }
        match &self.trust {
            Trust::Insecure => Ok(ServerCertVerified::assertion()),
            Trust::Chain { exact, .. } if exact.contains(&fingerprint(end_entity)) => {
                Ok(ServerCertVerified::assertion())
            }
            Trust::Chain { inner, .. } => inner
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                .map_err(|e| {
                    untrusted(Untrusted::Chain {
                        why: match e {
                            rustls::Error::InvalidCertificate(c) => format!("{c:?}"),
                            e => e.to_string(),
                        },
                        fingerprint: fingerprint(end_entity),
                    })
                }),
            Trust::Known { pinned, file } => {
                let mut known = pinned.clone();
                known.extend(
                    read_known_hosts(file).map_err(|e| rustls::Error::General(e.to_string()))?,
                );
                let chain: Vec<&[u8]> = std::iter::once(end_entity.as_ref())
                    .chain(intermediates.iter().map(|c| c.as_ref()))
                    .collect();
                match check_known(&self.host, &chain, &known).map_err(untrusted)? {
                    0 => Ok(ServerCertVerified::assertion()),
                    // A pinned issuer (a CA's line, as the original
                    // allows): the chain must be signed up to it, and the
                    // name valid, as with a CA file holding it alone.
                    i => {
                        let mut anchor = rustls::RootCertStore::empty();
                        anchor
                            .add(intermediates[i - 1].clone())
                            .map_err(|e| rustls::Error::General(e.to_string()))?;
                        rustls::client::WebPkiServerVerifier::builder_with_provider(
                            Arc::new(anchor),
                            self.provider.clone(),
                        )
                        .build()
                        .map_err(|e| rustls::Error::General(e.to_string()))?
                        .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                        .map_err(|e| {
                            untrusted(Untrusted::Chain {
                                why: format!(
                                    "its chain does not lead to the issuer pinned in known_hosts ({})",
                                    match e {
                                        rustls::Error::InvalidCertificate(c) => format!("{c:?}"),
                                        e => e.to_string(),
                                    }
                                ),
                                fingerprint: fingerprint(end_entity),
                            })
                        })
                    }
                }
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// What a client speaks TLS with.
#[derive(Debug, Clone)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
    /// How the server is trusted, for error messages.
    how: String,
    known_hosts: Option<PathBuf>,
}

/// The host part of `host:port` (brackets of an IPv6 address removed).
pub fn host_of(addr: &str) -> &str {
    let h = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
    h.trim_start_matches('[').trim_end_matches(']')
}

/// Whether `libstorage.tls` and friends turn TLS on for a `tcp://` host
/// (an `https://` or `tcp+tls://` host always speaks TLS).
pub fn client_wants_tls(cfg: &Config) -> Result<bool> {
    if cfg.boolean(keys::CLIENT_TLS_DISABLED) {
        return Ok(false);
    }
    match cfg
        .string(keys::CLIENT_TLS)
        .trim()
        .to_ascii_lowercase()
        .as_str()
    {
        "false" => return Ok(false),
        "" => {}
        _ => return Ok(true),
    }
    Ok(cfg.boolean(keys::CLIENT_TLS_INSECURE)
        || cfg.boolean(keys::CLIENT_TLS_VERIFY_PEERS)
        || explicitly(cfg, keys::CLIENT_TLS_SERVER_NAME)
        || configured_file(cfg, keys::CLIENT_TLS_KNOWN_HOSTS)?.is_some()
        || configured_file(cfg, keys::CLIENT_TLS_TRUSTED_CERTS_FILE)?.is_some())
}

/// The client's TLS for the server at `addr` (`host:port`). Besides what
/// is configured, the certificate of this host's own server
/// (`libstorage.server.tls.certFile`, when it exists) is trusted.
pub fn client_config(cfg: &Config, addr: &str) -> Result<ClientTls> {
    let host = host_of(addr).to_string();
    let mut pinned: Vec<KnownHost> = Vec::new();
    let own: Vec<String> = configured_file(cfg, keys::SERVER_TLS_CERT_FILE)
        .ok()
        .flatten()
        .and_then(|p| load_certs(&p, keys::SERVER_TLS_CERT_FILE).ok())
        .and_then(|c| c.first().map(|c| vec![fingerprint(c)]))
        .unwrap_or_default();
    let mut verify_peers = cfg.boolean(keys::CLIENT_TLS_VERIFY_PEERS);
    let mut insecure = cfg.boolean(keys::CLIENT_TLS_INSECURE);
    let one = cfg.string(keys::CLIENT_TLS).trim();
    match one.to_ascii_lowercase().as_str() {
        "" | "true" | "false" => {}
        "insecure" => insecure = true,
        "verifypeers" => verify_peers = true,
        _ => {
            if let Some(k) = KnownHost::parse(one)
                .map_err(|e| e.context(format!("reading {}", keys::CLIENT_TLS)))?
            {
                pinned.push(k);
                verify_peers = true;
            }
        }
    }
    let p = provider();
    let known_file = PathBuf::from(cfg.string(keys::CLIENT_TLS_KNOWN_HOSTS));
    let ca = configured_file(cfg, keys::CLIENT_TLS_TRUSTED_CERTS_FILE)?;
    let (trust, how, known_hosts) = if insecure {
        tracing::warn!(
            "{} is set: the libStorage server's certificate is not verified; anyone on the path can read and change the requests",
            keys::CLIENT_TLS_INSECURE
        );
        (Trust::Insecure, "not verified (insecure)".to_string(), None)
    } else if let (Some(ca), false) = (&ca, verify_peers) {
        let exact = load_certs(ca, keys::CLIENT_TLS_TRUSTED_CERTS_FILE)?
            .iter()
            .map(|c| fingerprint(c))
            .collect();
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots(ca, keys::CLIENT_TLS_TRUSTED_CERTS_FILE)?,
            p.clone(),
        )
        .build()
        .map_err(|e| Error::invalid(format!("{}: {e}", keys::CLIENT_TLS_TRUSTED_CERTS_FILE)))?;
        (
            Trust::Chain { inner, exact },
            format!(
                "by the certificates of {} {}",
                keys::CLIENT_TLS_TRUSTED_CERTS_FILE,
                ca.display()
            ),
            None,
        )
    } else {
        // Checked now, so that a bad line is reported as such.
        read_known_hosts(&known_file)?;
        (
            Trust::Known {
                pinned,
                file: known_file.clone(),
            },
            format!(
                "by fingerprint ({} {})",
                keys::CLIENT_TLS_KNOWN_HOSTS,
                known_file.display()
            ),
            Some(known_file),
        )
    };
    let name = match cfg.string(keys::CLIENT_TLS_SERVER_NAME).trim() {
        "" => host.clone(),
        n => n.to_string(),
    };
    let server_name = ServerName::try_from(name.clone()).map_err(|_| {
        Error::invalid(format!(
            "invalid TLS server name {} (set {} to a DNS name or an IP address)",
            crate::input::quote(&name),
            keys::CLIENT_TLS_SERVER_NAME
        ))
    })?;
    let verifier = Arc::new(Verifier {
        trust,
        own,
        host,
        provider: p.clone(),
    });
    let builder = rustls::ClientConfig::builder_with_provider(p)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::system(format!("TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let cert = configured_file(cfg, keys::CLIENT_TLS_CERT_FILE)?;
    let key = configured_file(cfg, keys::CLIENT_TLS_KEY_FILE)?;
    let mut cc = match (cert, key) {
        (Some(c), Some(k)) => {
            let certs = load_certs(&c, keys::CLIENT_TLS_CERT_FILE)?;
            let pkey = load_key(&k, keys::CLIENT_TLS_KEY_FILE)?;
            builder.with_client_auth_cert(certs, pkey).map_err(|e| {
                Error::invalid(format!(
                    "{} {} and {} {} do not make a usable pair: {e}",
                    keys::CLIENT_TLS_CERT_FILE,
                    c.display(),
                    keys::CLIENT_TLS_KEY_FILE,
                    k.display()
                ))
            })?
        }
        _ => builder.with_no_client_auth(),
    };
    cc.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(ClientTls {
        config: Arc::new(cc),
        server_name,
        how,
        known_hosts,
    })
}

impl ClientTls {
    /// The rustls configuration.
    pub fn config(&self) -> &Arc<rustls::ClientConfig> {
        &self.config
    }

    /// The name sent and checked.
    pub fn server_name(&self) -> &ServerName<'static> {
        &self.server_name
    }

    /// What a failed handshake with `addr` means, for the operator.
    pub fn explain(&self, addr: &str, e: &std::io::Error) -> Error {
        let inner = e
            .get_ref()
            .and_then(|i| i.downcast_ref::<rustls::Error>())
            .and_then(|r| match r {
                rustls::Error::InvalidCertificate(CertificateError::Other(o)) => {
                    o.0.downcast_ref::<Untrusted>().cloned()
                }
                _ => None,
            });
        match inner {
            Some(u @ Untrusted::Unknown { .. }) => {
                let Untrusted::Unknown { host, fingerprint } = &u else { unreachable!() };
                let file = self
                    .known_hosts
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                Error::invalid(format!(
                    "refusing the libStorage server at {addr}: {u}. If that is the server's certificate (compare with `openssl x509 -noout -fingerprint -sha256 -in <its certFile>` on the server), trust it by adding the line\n  {host} sha256 {fingerprint}\nto {file} ({}), or set {} to the certificate of the CA that signed it",
                    keys::CLIENT_TLS_KNOWN_HOSTS,
                    keys::CLIENT_TLS_TRUSTED_CERTS_FILE
                ))
            }
            Some(u @ Untrusted::Changed { .. }) => Error::invalid(format!(
                "refusing the libStorage server at {addr}: {u}. If the certificate was replaced on purpose, replace its line in {}",
                self.known_hosts
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            )),
            Some(u) => Error::invalid(format!(
                "refusing the libStorage server at {addr}: {u} (trusted {}); check {} or set {} to the name its certificate is valid for",
                self.how,
                keys::CLIENT_TLS_TRUSTED_CERTS_FILE,
                keys::CLIENT_TLS_SERVER_NAME
            )),
            None => Error::system(format!(
                "TLS handshake with the libStorage server at {addr} failed: {e} (does it serve HTTPS on that port? for a server without TLS use tcp:// with {}: true)",
                keys::CLIENT_TLS_DISABLED
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_host_lines() {
        let k = KnownHost::parse("127.0.0.1 SHA256 AB:cd:01")
            .unwrap()
            .unwrap();
        assert_eq!(
            k,
            KnownHost {
                host: "127.0.0.1".into(),
                alg: "sha256".into(),
                fingerprint: "abcd01".into()
            }
        );
        assert_eq!(KnownHost::parse("  # comment").unwrap(), None);
        assert_eq!(KnownHost::parse("").unwrap(), None);
        for bad in [
            "host sha256",
            "host sha256 zz",
            "host sha256 abc",
            "a b c d",
        ] {
            assert!(KnownHost::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            KnownHost::line("h", b"x"),
            format!("h sha256 {}", fingerprint(b"x"))
        );
        // The well-known digest of "abc".
        assert_eq!(
            fingerprint(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(host_of("127.0.0.1:7979"), "127.0.0.1");
        assert_eq!(host_of("[::1]:7979"), "::1");
        assert_eq!(host_of("srv.example:1"), "srv.example");
    }

    #[test]
    fn fingerprints_are_checked() {
        let cert: &[u8] = b"a certificate";
        let other: &[u8] = b"another certificate";
        let good = KnownHost::parse(&KnownHost::line("srv", cert))
            .unwrap()
            .unwrap();
        let known = vec![good.clone()];
        assert_eq!(check_known("srv", &[cert], &known), Ok(0));
        assert_eq!(check_known("SRV", &[cert], &known), Ok(0));
        // An issuer's line is found too, by its place in the chain (the
        // verifier then checks the chain's signatures up to it).
        assert_eq!(check_known("srv", &[other, cert], &known), Ok(1));
        assert_eq!(
            check_known("srv", &[other], &known),
            Err(Untrusted::Changed {
                host: "srv".into(),
                fingerprint: fingerprint(other)
            })
        );
        assert_eq!(
            check_known("elsewhere", &[cert], &known),
            Err(Untrusted::Unknown {
                host: "elsewhere".into(),
                fingerprint: fingerprint(cert)
            })
        );
        // Another digest never matches.
        let md5 = KnownHost {
            alg: "md5".into(),
            ..good
        };
        assert!(check_known("srv", &[cert], &[md5]).is_err());
        // A file: missing is empty; a bad line names the file and line.
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("known_hosts");
        assert!(read_known_hosts(&f).unwrap().is_empty());
        std::fs::write(
            &f,
            format!("# trusted\n{}\n\nbad line\n", KnownHost::line("srv", cert)),
        )
        .unwrap();
        let e = read_known_hosts(&f).unwrap_err();
        assert!(e.to_string().contains("line 4"), "{e}");
        std::fs::write(&f, format!("# trusted\n{}\n", KnownHost::line("srv", cert))).unwrap();
        assert_eq!(read_known_hosts(&f).unwrap().len(), 1);
    }
}
