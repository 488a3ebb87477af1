//! The libStorage server's tcp endpoint with TLS and bearer tokens:
//! `rexray service start` with a certificate made at test time (rcgen),
//! driven by raw HTTPS, by the library's client and by `rexray volume` in
//! client mode. Whatever is refused changes nothing.

use crate::common::*;
use crate::docker::Service;
use rexray::api::auth::{self, Alg};
use rexray::api::client::{Client, Security};
use rexray::storage::controller::Controller;
use rustls::pki_types::pem::PemObject;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const KEY: &str = "test-secret-0123456789abcdef0123456789";

/// A CA and what it signed, as PEM files in a directory.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }
}

/// `ca.pem`; `server.{pem,key}` for 127.0.0.1 and localhost signed by it;
/// `client.{pem,key}` signed by it; `chain.pem`, the server's certificate
/// followed by the CA's; `other-ca.pem`, a CA that signed nothing here;
/// `self.{pem,key}`, a self-signed server certificate.
fn pki(dir: PathBuf) -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    };
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: String| {
        std::fs::write(dir.join(name), text).unwrap();
        if name.ends_with(".key") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(0o600))
                .unwrap();
        }
    };
    let ca = |cn: &str| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, cn);
        (p.self_signed(&key).unwrap(), key)
    };
    let (ca_cert, ca_key) = ca("rexray test CA");
    write("ca.pem", ca_cert.pem());
    let (other, _) = ca("another CA");
    write("other-ca.pem", other.pem());
    let key = KeyPair::generate().unwrap();
    let mut p =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, "127.0.0.1");
    let cert = p.signed_by(&key, &ca_cert, &ca_key).unwrap();
    write("server.pem", cert.pem());
    write("chain.pem", format!("{}{}", cert.pem(), ca_cert.pem()));
    write("server.key", key.serialize_pem());
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, "node-a");
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = p.signed_by(&key, &ca_cert, &ca_key).unwrap();
    write("client.pem", cert.pem());
    write("client.key", key.serialize_pem());
    let key = KeyPair::generate().unwrap();
    let p = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    write("self.pem", p.self_signed(&key).unwrap().pem());
    write("self.key", key.serialize_pem());
    Pki { dir }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server home serving vfs on a unix socket and a tcp port with `tls`
/// and `auth` YAML under `libstorage:` / `libstorage.server:`.
struct Server {
    home: Home,
    svc: Service,
    addr: String,
    sock: PathBuf,
    pki: Pki,
}

fn server(tls: &str, auth: &str) -> Server {
    let home = Home::new();
    let pki = pki(home.dir.join("pki"));
    let sock = home.dir.join("ls.sock");
    let port = free_port();
    let tls = tls.replace("$PKI", &pki.dir.to_string_lossy());
    home.config(&format!(
        "libstorage:\n  service: vfs\n{tls}  server:\n{auth}    endpoints:\n      a:\n        address: unix://{}\n      b:\n        address: tcp://127.0.0.1:{port}\n    services:\n      vfs:\n        driver: vfs\n",
        sock.display()
    ));
    let (host, _) = unix_host(&home);
    let svc = Service::start(&home, &host, &[]);
    Server {
        addr: format!("127.0.0.1:{port}"),
        sock,
        pki,
        svc,
        home,
    }
}

const TLS: &str = "  tls:\n    certFile: $PKI/server.pem\n    keyFile: $PKI/server.key\n";
const AUTH: &str =
    "    auth:\n      key: test-secret-0123456789abcdef0123456789\n      allow: [alice, carol]\n";

/// A client configuration: a home of its own with `env` set.
fn client_cfg(env: &[(&str, String)]) -> (Home, rexray::config::Config) {
    let home = Home::new();
    let mut m: std::collections::HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    m.insert(
        "REXRAY_HOME".into(),
        home.dir.to_string_lossy().into_owned(),
    );
    m.insert("LIBSTORAGE_SERVICE".into(), "vfs".into());
    let cfg = rexray::config::Config::load(rexray::config::LoadOptions {
        env: Some(m),
        ..Default::default()
    })
    .unwrap();
    (home, cfg)
}

fn connect(url: &str, env: &[(&str, String)]) -> rexray::Result<Client> {
    let (_home, cfg) = client_cfg(env);
    let sec = Security::from_config(&cfg, url)?;
    Client::connect_with(url, "vfs", None, Duration::from_secs(30), &sec)
}

fn token(sub: &str) -> String {
    auth::sign(Alg::HS256, KEY.as_bytes(), sub, auth::now(), 3600)
}

/// One HTTPS exchange trusting `ca` (or plain HTTP without): status and body.
fn https(
    addr: &str,
    ca: Option<&str>,
    method: &str,
    path: &str,
    authz: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(a) = authz {
        req.push_str(&format!("Authorization: {a}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let raw = match ca {
        None => {
            let mut tcp = tcp;
            tcp.write_all(req.as_bytes()).unwrap();
            read_all(&mut tcp)
        }
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
                roots.add(c.unwrap()).unwrap();
            }
            let cc = rustls::ClientConfig::builder_with_provider(rexray::api::tls::provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            let conn = rustls::ClientConnection::new(Arc::new(cc), "127.0.0.1".try_into().unwrap())
                .unwrap();
            let mut s = rustls::StreamOwned::new(conn, tcp);
            s.write_all(req.as_bytes()).unwrap();
            read_all(&mut s)
        }
    };
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .unwrap_or("0")
        .parse()
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn read_all(r: &mut impl Read) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            // A peer that closes without close_notify: what came is all.
            Err(_) => break,
        }
    }
    out
}

/// The volume names the server has (through a good client).
fn names(s: &Server) -> Vec<String> {
    let c = connect(
        &format!("https://{}", s.addr),
        &[
            ("LIBSTORAGE_TLS_TRUSTEDCERTSFILE", s.pki.path("ca.pem")),
            ("LIBSTORAGE_CLIENT_AUTH_TOKEN", token("alice")),
        ],
    )
    .unwrap();
    let mut n: Vec<String> = c.list().unwrap().into_iter().map(|v| v.name).collect();
    n.sort();
    n
}

const REFUSED: &str =
    r#"{"message":"invalid security token","status":401,"error":"invalid security token: "#;

#[test]
fn tokens_are_required_and_refusals_change_nothing() {
    let s = server(TLS, AUTH);
    let ca = s.pki.path("ca.pem");
    let create = r#"{"name":"nope","size":1}"#;
    let good = format!("Bearer {}", token("alice"));
    // A good token works.
    let (st, body) = https(
        &s.addr,
        Some(&ca),
        "POST",
        "/volumes/vfs",
        Some(&good),
        r#"{"name":"v1","size":1}"#,
    );
    assert_eq!(st, 201, "{body}");
    // No token, a bad one, one signed with another key, an expired one,
    // one for a subject not allowed, alg none: 401 with the original's
    // body, and nothing made.
    let now = auth::now();
    let claims = serde_json::json!({"sub": "alice", "iat": now, "nbf": now, "exp": now + 60});
    let none = format!(
        "{}.{}.",
        base64_url(br#"{"alg":"none","typ":"JWT"}"#),
        base64_url(&serde_json::to_vec(&claims).unwrap())
    );
    let refused = [
        (None, "no Authorization"),
        (Some("Bearer garbage".to_string()), "not a JWT"),
        (
            Some(format!(
                "Bearer {}",
                auth::sign(Alg::HS256, b"other key", "alice", now, 60)
            )),
            "signature",
        ),
        (
            Some(format!(
                "Bearer {}",
                auth::sign(Alg::HS256, KEY.as_bytes(), "alice", now - 7200, 3600)
            )),
            "expired",
        ),
        (Some(format!("Bearer {}", token("bob"))), "not allowed"),
        (Some(format!("Bearer {none}")), "\\\"none\\\""),
        (
            Some(format!("Basic {}", base64_url(b"alice:pw"))),
            "no Authorization",
        ),
    ];
    for (authz, why) in &refused {
        for (method, path, body) in [
            ("POST", "/volumes/vfs", create),
            ("GET", "/volumes", ""),
            ("GET", "/", ""),
            ("DELETE", "/volumes/vfs/whatever", ""),
        ] {
            let (st, b) = https(&s.addr, Some(&ca), method, path, authz.as_deref(), body);
            assert_eq!(st, 401, "{method} {path} {why}: {b}");
            assert!(b.starts_with(REFUSED), "{b}");
            assert!(b.contains(why), "{why}: {b}");
        }
        // The unix socket checks tokens too, as the original's server.
        let mut u = std::os::unix::net::UnixStream::connect(&s.sock).unwrap();
        let mut req =
            String::from("POST /volumes/vfs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
        if let Some(a) = authz {
            req.push_str(&format!("Authorization: {a}\r\n"));
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n{create}", create.len()));
        u.write_all(req.as_bytes()).unwrap();
        let got = String::from_utf8_lossy(&read_all(&mut u)).into_owned();
        assert!(got.starts_with("HTTP/1.1 401"), "{got}");
    }
    assert_eq!(names(&s), vec!["v1"]);
    // The log names why, never the token.
    let log = s.svc.log_text();
    assert!(log.contains("the token expired at"), "{log}");
    assert!(
        !log.contains(&token("alice")[..40]) && !log.contains(KEY),
        "{log}"
    );
    // Plain HTTP to the TLS port: told so, as the original's server.
    let (st, b) = https(&s.addr, None, "GET", "/services", Some(&good), "");
    assert_eq!(
        (st, b.as_str()),
        (400, "Client sent an HTTP request to an HTTPS server.\n")
    );
    // `rexray env` does not print the secret.
    let env = s.home.rexray(&["env"]);
    assert!(!env.ok().contains(KEY), "{env:?}");
    assert!(
        env.ok().contains("LIBSTORAGE_SERVER_AUTH_KEY='(secret)'"),
        "{env:?}"
    );
    // The unix socket is root's and its group's only.
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(&s.sock).unwrap();
    assert_eq!(m.mode() & 0o777, 0o660);
    // The exposure note: TLS and tokens.
    assert!(
        log.contains("serves HTTPS and requires authentication"),
        "{log}"
    );
    assert!(!log.contains("neither TLS nor authentication"), "{log}");
}

fn base64_url(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

#[test]
fn the_client_trusts_only_the_configured_server() {
    let s = server(TLS, AUTH);
    let url = format!("tcp://{}", s.addr);
    let tok = ("LIBSTORAGE_CLIENT_AUTH_TOKEN", token("carol"));
    // The right CA: works (tcp:// speaks TLS since a CA file is set).
    let c = connect(
        &url,
        &[
            ("LIBSTORAGE_TLS_TRUSTEDCERTSFILE", s.pki.path("ca.pem")),
            tok.clone(),
        ],
    )
    .unwrap();
    assert_eq!(c.host(), format!("https://{}", s.addr));
    c.create("good", &Default::default()).unwrap();
    // The wrong CA: refused at the handshake, nothing sent.
    let e = connect(
        &url,
        &[
            (
                "LIBSTORAGE_TLS_TRUSTEDCERTSFILE",
                s.pki.path("other-ca.pem"),
            ),
            tok.clone(),
        ],
    )
    .unwrap_err();
    assert!(
        e.message().contains("is not trusted") && e.message().contains("UnknownIssuer"),
        "{e}"
    );
    // A name the certificate is not valid for.
    let e = connect(
        &url,
        &[
            ("LIBSTORAGE_TLS_TRUSTEDCERTSFILE", s.pki.path("ca.pem")),
            ("LIBSTORAGE_TLS_SERVERNAME", "elsewhere.example".into()),
            tok.clone(),
        ],
    )
    .unwrap_err();
    assert!(e.message().contains("NotValidForName"), "{e}");
    // By fingerprint: unknown first, with the line to add; then known.
    let (home, _) = client_cfg(&[]);
    let kh = home.dir.join("known_hosts");
    let by_fp = [
        ("LIBSTORAGE_TLS_VERIFYPEERS", "true".to_string()),
        (
            "LIBSTORAGE_TLS_KNOWNHOSTS",
            kh.to_string_lossy().into_owned(),
        ),
        tok.clone(),
    ];
    std::fs::write(&kh, "").unwrap();
    let e = connect(&url, &by_fp).unwrap_err();
    let der = rustls::pki_types::CertificateDer::from_pem_file(s.pki.path("server.pem")).unwrap();
    let line = rexray::api::tls::KnownHost::line("127.0.0.1", &der);
    assert!(e.message().contains("is not a known host"), "{e}");
    assert!(e.message().contains(&format!("\n  {line}\n")), "{e}");
    assert!(
        e.message().contains(&kh.to_string_lossy().into_owned()),
        "{e}"
    );
    // Another host's line does not do; a changed certificate is called so.
    std::fs::write(&kh, format!("{}\n", line.replace("127.0.0.1", "10.9.9.9"))).unwrap();
    assert!(connect(&url, &by_fp)
        .unwrap_err()
        .message()
        .contains("is not a known host"));
    let other = rustls::pki_types::CertificateDer::from_pem_file(s.pki.path("self.pem")).unwrap();
    std::fs::write(
        &kh,
        format!(
            "{}\n",
            rexray::api::tls::KnownHost::line("127.0.0.1", &other)
        ),
    )
    .unwrap();
    let e = connect(&url, &by_fp).unwrap_err();
    assert!(
        e.message().contains("does not match its known_hosts entry"),
        "{e}"
    );
    // The line as `openssl x509 -fingerprint -sha256` prints it (colons,
    // upper case) is accepted.
    let fp = rexray::api::tls::fingerprint(&der).to_ascii_uppercase();
    let colons: Vec<String> = fp
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    std::fs::write(
        &kh,
        format!("# ours\n127.0.0.1 SHA256 {}\n", colons.join(":")),
    )
    .unwrap();
    let c = connect(&url, &by_fp).unwrap();
    c.create("by-fingerprint", &Default::default()).unwrap();
    // Pinned in one value, as the original's libstorage.tls.
    let c = connect(&url, &[("LIBSTORAGE_TLS", line.clone()), tok.clone()]).unwrap();
    assert_eq!(c.list().unwrap().len(), 2);
    // No TLS settings at all with https://: an unknown host too.
    let e = connect(&format!("https://{}", s.addr), std::slice::from_ref(&tok)).unwrap_err();
    assert!(e.message().contains("is not a known host"), "{e}");
    // Plain tcp:// without TLS settings: told the port serves HTTPS.
    let e = connect(&url, std::slice::from_ref(&tok)).unwrap_err();
    assert!(
        e.message().contains(&format!("use https://{}", s.addr)),
        "{e}"
    );
    // Refusals sent nothing.
    assert_eq!(names(&s), vec!["by-fingerprint", "good"]);
}

/// A known_hosts line may pin the CA that signed the server's
/// certificate; then the chain must really be signed up to it. A
/// man-in-the-middle presenting his own certificate followed by that
/// (public) CA certificate is refused before anything is sent.
#[test]
fn a_pinned_issuer_is_trusted_only_through_its_signatures() {
    let tls = "  tls:\n    certFile: $PKI/chain.pem\n    keyFile: $PKI/server.key\n";
    let s = server(tls, AUTH);
    let tok = ("LIBSTORAGE_CLIENT_AUTH_TOKEN", token("carol"));
    let ca = rustls::pki_types::CertificateDer::from_pem_file(s.pki.path("ca.pem")).unwrap();
    let (home, _) = client_cfg(&[]);
    let kh = home.dir.join("known_hosts");
    std::fs::write(
        &kh,
        format!("{}\n", rexray::api::tls::KnownHost::line("127.0.0.1", &ca)),
    )
    .unwrap();
    let by_fp = [
        ("LIBSTORAGE_TLS_VERIFYPEERS", "true".to_string()),
        (
            "LIBSTORAGE_TLS_KNOWNHOSTS",
            kh.to_string_lossy().into_owned(),
        ),
        tok.clone(),
    ];
    // The real server: its chain leads to the pinned CA.
    let c = connect(&format!("tcp://{}", s.addr), &by_fp).unwrap();
    c.create("through-the-ca", &Default::default()).unwrap();

    // The impostor: a self-signed certificate for 127.0.0.1, then the CA's.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let chain = vec![
        rustls::pki_types::CertificateDer::from_pem_file(s.pki.path("self.pem")).unwrap(),
        ca.clone(),
    ];
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(s.pki.path("self.key")).unwrap();
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap(),
    );
    let impostor = std::thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut conn = rustls::ServerConnection::new(config).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        // Handshake, then whatever the client sends, until it goes.
        loop {
            match conn.complete_io(&mut tcp) {
                Ok((0, 0)) | Err(_) => break,
                Ok(_) => {}
            }
            match conn.reader().read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
        }
        got
    });
    let e = connect(&format!("tcp://{addr}"), &by_fp).unwrap_err();
    assert!(
        e.message()
            .contains("does not lead to the issuer pinned in known_hosts"),
        "{e}"
    );
    let got = impostor.join().unwrap();
    assert!(
        got.is_empty(),
        "the impostor received {:?}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(names(&s), vec!["through-the-ca"]);
}

#[test]
fn client_mode_over_tls_with_a_token() {
    let s = server(TLS, AUTH);
    let node = Home::new();
    node.config(&format!(
        "libstorage:\n  host: tcp://{}\n  service: vfs\n  tls:\n    trustedCertsFile: {}\n  client:\n    auth:\n      token: {}\n",
        s.addr,
        s.pki.path("ca.pem"),
        token("alice")
    ));
    node.rexray(&["volume", "create", "cv1", "--size", "2"])
        .ok();
    let ls = node.rexray(&["volume", "ls", "--format", "json"]);
    assert!(ls.ok().contains("\"cv1\""), "{ls:?}");
    assert_eq!(names(&s), vec!["cv1"]);
    // The token in a file works as well.
    let tf = node.dir.join("token");
    std::fs::write(&tf, format!("{}\n", token("carol"))).unwrap();
    let mut c = node.command("rexray");
    c.env("LIBSTORAGE_CLIENT_AUTH_TOKEN", &tf)
        .args(["volume", "rm", "cv1"]);
    run_cmd(&mut c).ok();
    assert!(names(&s).is_empty());
    // Without a token (empty), or with a subject not allowed: refused,
    // with a hint, and nothing made.
    let bob = token("bob");
    for (tok, hint) in [
        ("", "set libstorage.client.auth.token"),
        (bob.as_str(), r#"subject "bob" is not allowed"#),
    ] {
        let mut c = node.command("rexray");
        c.env("LIBSTORAGE_CLIENT_AUTH_TOKEN", tok)
            .args(["volume", "create", "cv2"]);
        let o = run_cmd(&mut c);
        assert_ne!(o.code, 0, "{o:?}");
        assert!(o.stderr.contains("invalid security token"), "{o:?}");
        assert!(o.stderr.contains(hint), "{hint}: {o:?}");
    }
    assert!(names(&s).is_empty());
    // A known_hosts entry made from the refusal's line, with no CA file.
    let node2 = Home::new();
    node2.config(&format!(
        "libstorage:\n  host: https://{}\n  service: vfs\n  client:\n    auth:\n      token: {}\n",
        s.addr,
        token("alice")
    ));
    let o = node2.rexray(&["volume", "ls"]);
    assert_ne!(o.code, 0, "{o:?}");
    let line = o
        .stderr
        .lines()
        .find(|l| l.starts_with("  127.0.0.1 sha256 "))
        .unwrap_or_else(|| panic!("{o:?}"))
        .trim()
        .to_string();
    std::fs::create_dir_all(node2.etc().join("tls")).unwrap();
    std::fs::write(node2.etc().join("tls/known_hosts"), format!("{line}\n")).unwrap();
    node2
        .rexray(&["volume", "create", "cv3", "--size", "1"])
        .ok();
    assert_eq!(names(&s), vec!["cv3"]);
    // `rexray token` makes tokens the server takes.
    let t = s.home.rexray(&["token", "new", "alice", "--exp", "1h"]);
    let made = t.ok().trim().to_string();
    let d = s.home.rexray(&["token", "decode", "--verify", &made]);
    assert!(d.ok().contains("\"sub\":\"alice\""), "{d:?}");
    let mut c = node.command("rexray");
    c.env("LIBSTORAGE_CLIENT_AUTH_TOKEN", &made)
        .args(["volume", "ls", "--format", "json"]);
    assert!(run_cmd(&mut c).ok().contains("cv3"));
}

#[test]
fn client_certificates_when_required() {
    let tls = format!("{TLS}    trustedCertsFile: $PKI/ca.pem\n    clientCertRequired: true\n");
    let s = server(&tls, "");
    let url = format!("https://{}", s.addr);
    let ca = ("LIBSTORAGE_TLS_TRUSTEDCERTSFILE", s.pki.path("ca.pem"));
    // No client certificate: the handshake fails, nothing is made.
    let e = connect(&url, std::slice::from_ref(&ca)).unwrap_err();
    assert!(
        e.message().contains("TLS handshake") || e.message().contains("did not answer"),
        "{e}"
    );
    // With one signed by the CA: served (no token needed here).
    let c = connect(
        &url,
        &[
            ca.clone(),
            ("LIBSTORAGE_TLS_CERTFILE", s.pki.path("client.pem")),
            ("LIBSTORAGE_TLS_KEYFILE", s.pki.path("client.key")),
        ],
    )
    .unwrap();
    c.create("certified", &Default::default()).unwrap();
    // One not signed by the CA (the self-signed server certificate).
    let e = connect(
        &url,
        &[
            ca.clone(),
            ("LIBSTORAGE_TLS_CERTFILE", s.pki.path("self.pem")),
            ("LIBSTORAGE_TLS_KEYFILE", s.pki.path("self.key")),
        ],
    );
    if let Ok(c) = e {
        // TLS 1.3 reports the refusal on the first read.
        assert!(c.list().is_err());
    }
    assert_eq!(c.list().unwrap().len(), 1);
    let log = s.svc.log_text();
    assert!(
        log.contains("serves HTTPS and requires authentication"),
        "{log}"
    );
}

#[test]
fn a_self_signed_certificate_and_the_exposure_notes() {
    // The server's certificate is its own CA (as `openssl req -x509`
    // makes); a client trusting that file takes it as it is.
    let tls = "  tls:\n    certFile: $PKI/self.pem\n    keyFile: $PKI/self.key\n";
    let s = server(tls, "");
    let c = connect(
        &format!("tcp://{}", s.addr),
        &[("LIBSTORAGE_TLS_TRUSTEDCERTSFILE", s.pki.path("self.pem"))],
    )
    .unwrap();
    c.create("selfsigned", &Default::default()).unwrap();
    let log = s.svc.log_text();
    assert!(log.contains("has TLS but no authentication"), "{log}");
    drop(c);
    drop(s);
    // Neither: the full warning; a token only: the note.
    let s = server("", "");
    let log = s.svc.log_text();
    assert!(log.contains("has neither TLS nor authentication"), "{log}");
    let s2 = server("", AUTH);
    let log = s2.svc.log_text();
    assert!(log.contains("requires a token but has no TLS"), "{log}");
    assert!(!log.contains("neither TLS nor authentication"), "{log}");
    // A certificate file that does not exist stops the server.
    let home = Home::new();
    home.config(&format!(
        "libstorage:\n  service: vfs\n  tls:\n    certFile: {0}/none.pem\n    keyFile: {0}/none.key\n  server:\n    endpoints:\n      b:\n        address: tcp://127.0.0.1:{1}\n    services:\n      vfs:\n        driver: vfs\n",
        home.dir.display(),
        free_port()
    ));
    let o = home.rexray(&["service", "start"]);
    assert_ne!(o.code, 0, "{o:?}");
    assert!(
        o.stderr.contains("none.pem") && o.stderr.contains("does not exist"),
        "{o:?}"
    );
}

/// A service's own token is needed however the path is spelled: the
/// check reads the path as the router decodes it, so `/%76olumes/vfs`
/// (which the router serves as `/volumes/vfs`) is refused without it, as
/// is a path no route has; nothing is made or listed.
#[test]
fn a_service_token_is_needed_however_the_path_is_spelled() {
    let home = Home::new();
    let port = free_port();
    home.config(&format!(
        "libstorage:\n  service: vfs\n  server:\n    endpoints:\n      b:\n        address: tcp://127.0.0.1:{port}\n    services:\n      vfs:\n        driver: vfs\n        auth:\n          key: {KEY}\n          allow: [alice]\n"
    ));
    let (host, _) = unix_host(&home);
    let svc = Service::start(&home, &host, &[]);
    let addr = format!("127.0.0.1:{port}");
    let create = r#"{"name":"sneak","size":1}"#;
    let bob = format!("Bearer {}", token("bob"));
    for authz in [None, Some(bob.as_str())] {
        for path in [
            "/volumes/vfs",
            "/%76olumes/vfs",
            "/%76olumes/%76fs",
            "/%56olumes/vfs",
            "//volumes//vfs",
        ] {
            let (st, b) = https(&addr, None, "POST", path, authz, create);
            assert_eq!(st, 401, "POST {path} {authz:?}: {b}");
        }
        for path in [
            "/%76olumes",
            "/%73ervices",
            "/%73ervices/vfs",
            "/%74asks",
            "/nope",
        ] {
            let (st, b) = https(&addr, None, "GET", path, authz, "");
            assert_eq!(st, 401, "GET {path} {authz:?}: {b}");
        }
    }
    // The open routes stay open.
    let (st, b) = https(&addr, None, "GET", "/help/version", None, "");
    assert_eq!(st, 200, "{b}");
    // With the service's token, any spelling works.
    let alice = format!("Bearer {}", token("alice"));
    let (st, b) = https(
        &addr,
        None,
        "POST",
        "/%76olumes/vfs",
        Some(&alice),
        r#"{"name":"ok1","size":1}"#,
    );
    assert_eq!(st, 201, "{b}");
    let (st, b) = https(&addr, None, "GET", "/volumes/vfs", Some(&alice), "");
    assert_eq!(st, 200, "{b}");
    assert!(b.contains("ok1") && !b.contains("sneak"), "{b}");
    // A flood of refused requests with long paths: a bounded log.
    let long = format!("/volumes/vfs/{}", "A".repeat(8000));
    for _ in 0..300 {
        let (st, _) = https(&addr, None, "GET", &long, None, "");
        assert_eq!(st, 401);
    }
    let log = svc.log_text();
    let refused: Vec<&str> = log.lines().filter(|l| l.contains("refused:")).collect();
    assert!(
        !refused.is_empty() && refused.len() <= 2 * 20 + 20,
        "{} refusal lines for 320 refusals",
        refused.len()
    );
    assert!(refused.iter().all(|l| l.len() < 1000), "{refused:?}");
    assert!(log.len() < 100_000, "{} bytes of log", log.len());
}
