//! The s3fs driver on radosgw over https: a certificate signed by the
//! cluster's own CA (`scripts/ceph.sh`, `CEPH_RGW_HTTPS=1`), trusted
//! through `s3fs.caFile` by the driver and by s3fs-fuse.

use super::{cluster, mounted_path, processes_under};
use crate::common::*;
use crate::require_root;
use std::path::Path;

/// Create, list, mount (s3fs with `url=https://…` and the CA), write,
/// unmount, mount again and read, remove: all over https, with the CA in
/// `s3fs.caFile`. The bucket and its data are the same seen over http.
#[test]
fn s3fs_https_volume_lifecycle() {
    require_root!();
    let Some(c) = cluster() else { return };
    let (endpoint, ca) = c.s3_https();
    let h = c.s3_https_home(Some(&ca));
    let v = "s3tls1";
    let out = h.rexray(&["volume", "create", v, "-f", "json"]);
    let made: serde_json::Value = serde_json::from_str(out.ok()).unwrap();
    assert_eq!(made[0]["id"], v, "{made}");
    assert_eq!(made[0]["fields"]["endpoint"], endpoint.as_str(), "{made}");
    assert!(h.rexray(&["volume", "ls", v]).ok().contains("available"));

    let path = mounted_path(h.rexray(&["volume", "mount", v]).ok());
    assert!(path.ends_with("/s3tls1/data"), "{path}");
    std::fs::write(Path::new(&path).join("f"), "over tls").unwrap();
    let procs = processes_under("s3fs", &h.dir);
    assert_eq!(procs.len(), 1, "{procs:?}");
    // s3fs is given the https URL and the CA (its libcurl reads the
    // bundle from the environment).
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", procs[0])).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline);
    assert!(cmdline.contains(&format!("url={endpoint},")), "{cmdline}");
    let environ = std::fs::read(format!("/proc/{}/environ", procs[0])).unwrap();
    let want = format!("CURL_CA_BUNDLE={}", ca.display());
    assert!(
        environ.split(|b| *b == 0).any(|e| e == want.as_bytes()),
        "{}",
        String::from_utf8_lossy(&environ)
    );
    assert!(h.rexray(&["volume", "ls", v]).ok().contains("attached"));
    h.rexray(&["volume", "unmount", v]).ok();
    assert!(
        mounts_under(&h.dir).is_empty(),
        "{:?}",
        mounts_under(&h.dir)
    );
    assert!(processes_under("s3fs", &h.dir).is_empty());

    // The same bucket over plain http: the data is in radosgw.
    let plain = c.s3_home();
    let p = mounted_path(plain.rexray(&["volume", "mount", v]).ok());
    assert_eq!(
        std::fs::read_to_string(Path::new(&p).join("f")).unwrap(),
        "over tls"
    );
    plain.rexray(&["volume", "unmount", v]).ok();

    super::s3_reads_back_then_removed(&h, v, "over tls");
    assert!(!plain.volume_names().contains(&v.to_string()));
}

/// A CA file of another CA, or none (the system's CAs only): every call
/// fails at once with an error naming the endpoint and what is wrong with
/// its certificate, and nothing is made. A CA file that is missing or
/// holds no certificate, or one set for an http endpoint, is refused
/// naming the key.
#[test]
fn s3fs_https_wrong_ca_is_a_clear_error_and_changes_nothing() {
    require_root!();
    let Some(c) = cluster() else { return };
    let (endpoint, _) = c.s3_https();
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other-ca.pem");
    {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, "another CA");
        std::fs::write(&other, p.self_signed(&key).unwrap().pem()).unwrap();
    }
    let plain = c.s3_home();
    let v = "s3tlsbad1";
    for h in [c.s3_https_home(Some(&other)), c.s3_https_home(None)] {
        for args in [
            &["volume", "create", v][..],
            &["volume", "ls"][..],
            &["volume", "mount", v][..],
        ] {
            let t = std::time::Instant::now();
            let e = h.rexray(args).fails(1).to_string();
            assert!(
                e.contains(&endpoint)
                    && e.contains("TLS")
                    && e.contains("not signed by a trusted CA"),
                "{args:?}: {e}"
            );
            assert!(e.contains("s3fs.caFile"), "{args:?}: {e}");
            // Not retried: a certificate does not get better.
            assert!(t.elapsed() < std::time::Duration::from_secs(5), "{args:?}");
        }
        assert!(mounts_under(&h.dir).is_empty());
        assert!(processes_under("s3fs", &h.dir).is_empty());
    }
    assert!(!plain.volume_names().contains(&v.to_string()));

    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let missing = dir.path().join("missing.pem");
    for (ca, want) in [
        (&missing, "missing.pem"),
        (&empty, "holds no PEM certificate"),
    ] {
        let h = c.s3_https_home(Some(ca));
        let e = h.rexray(&["volume", "create", v]).fails(1).to_string();
        assert!(e.contains("s3fs.caFile") && e.contains(want), "{e}");
    }
    let (http, _, _) = c.s3();
    let h = c.s3_home();
    h.config(&format!(
        "libstorage:\n  service: s3fs\ns3fs:\n  endpoint: {http}\n  caFile: {}\n",
        other.display()
    ));
    let e = h.rexray(&["volume", "create", v]).fails(1).to_string();
    assert!(
        e.contains("s3fs.caFile") && e.contains("only for https"),
        "{e}"
    );
    assert!(!plain.volume_names().contains(&v.to_string()));
}
