//! `rexray version`: this build's facts (dvdcli prints them too).

use crate::output;
use crate::Result;
use serde::Serialize;

/// Build and version facts.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    /// The binary's path.
    pub binary: String,
    /// Semantic version.
    pub sem_ver: String,
    /// OS and architecture.
    pub os_arch: String,
    /// Git commit.
    pub commit: String,
    /// Git branch the build was made from (`HEAD` when detached).
    pub branch: String,
    /// Build time (RFC 3339).
    pub formed: String,
    /// Storage drivers compiled in.
    pub drivers: Vec<String>,
    /// How the rbd driver attaches images on this host (kernel RBD,
    /// rbd-nbd or rbd-fuse plus a loop device).
    pub rbd_attach: String,
    /// How the rbd driver reaches Ceph by default here: librbd (loaded
    /// at run time) or the tools (`rbd.library`).
    pub rbd_library: String,
}

/// This build's version facts.
pub fn version_info() -> VersionInfo {
    let epoch: u64 = env!("REXRAY_BUILD_EPOCH").parse().unwrap_or(0);
    VersionInfo {
        binary: std::env::current_exe()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default(),
        sem_ver: env!("CARGO_PKG_VERSION").into(),
        os_arch: format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH),
        commit: env!("REXRAY_COMMIT").into(),
        branch: env!("REXRAY_BRANCH").into(),
        formed: humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch),
        )
        .to_string(),
        drivers: crate::storage::DRIVERS
            .iter()
            .map(|s| s.to_string())
            .collect(),
        rbd_attach: crate::storage::rbd::node::Method::detect(false)
            .as_str()
            .to_string(),
        rbd_library: crate::storage::rbd::lib::Mode::Auto.describe(),
    }
}

/// `rexray version -f <format>`: the facts as the original's text block,
/// or as JSON or YAML.
pub(crate) fn render(v: &VersionInfo, format: &str) -> Result<String> {
    match format.to_ascii_lowercase().as_str() {
        "text" | "tmpl" | "" => Ok(format!(
            "REX-Ray (rexray-rs)\n-------------------\nBinary: {}\nSemVer: {}\nOsArch: {}\nBranch: {}\nCommit: {}\nFormed: {}\nDrivers: {}\nRbdAttach: {}\nRbdLibrary: {}\n",
            v.binary,
            v.sem_ver,
            v.os_arch,
            v.branch,
            v.commit,
            v.formed,
            v.drivers.join(", "),
            v.rbd_attach,
            v.rbd_library
        )),
        f => Ok(output::structured(v, f.parse()?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Kind;

    fn facts() -> VersionInfo {
        VersionInfo {
            binary: "/usr/bin/rexray".into(),
            sem_ver: "1.2.3".into(),
            os_arch: "linux-x86_64".into(),
            commit: "abc123".into(),
            branch: "main".into(),
            formed: "2024-01-02T03:04:05Z".into(),
            drivers: vec!["loop".into(), "vfs".into()],
            rbd_attach: "fuse (rbd-fuse + loop device)".into(),
            rbd_library: "tools (rbd.library off)".into(),
        }
    }

    #[test]
    fn text_is_one_fact_a_line_in_every_spelling() {
        let text = render(&facts(), "text").unwrap();
        assert_eq!(
            text,
            "REX-Ray (rexray-rs)\n-------------------\nBinary: /usr/bin/rexray\nSemVer: 1.2.3\n\
             OsArch: linux-x86_64\nBranch: main\nCommit: abc123\nFormed: 2024-01-02T03:04:05Z\n\
             Drivers: loop, vfs\nRbdAttach: fuse (rbd-fuse + loop device)\nRbdLibrary: tools (rbd.library off)\n"
        );
        for f in ["TEXT", "tmpl", ""] {
            assert_eq!(render(&facts(), f).unwrap(), text, "{f:?}");
        }
    }

    #[test]
    fn json_and_yaml_use_camel_case_names() {
        let json: serde_json::Value =
            serde_json::from_str(&render(&facts(), "json").unwrap()).unwrap();
        assert_eq!(json["semVer"], "1.2.3");
        assert_eq!(json["osArch"], "linux-x86_64");
        assert_eq!(json["drivers"], serde_json::json!(["loop", "vfs"]));
        let yaml = render(&facts(), "yaml").unwrap();
        assert!(yaml.contains("semVer: 1.2.3"), "{yaml}");
    }

    #[test]
    fn an_unknown_format_is_refused_by_name() {
        let e = render(&facts(), "xml").unwrap_err();
        assert_eq!(e.kind(), Kind::InvalidInput);
        assert!(e.message().contains("\"xml\""), "{e}");
    }

    #[test]
    fn this_build_names_its_version_and_drivers() {
        let v = version_info();
        assert_eq!(v.sem_ver, env!("CARGO_PKG_VERSION"));
        assert!(v.drivers.iter().any(|d| d == "loop"), "{:?}", v.drivers);
        assert!(v.formed.ends_with('Z'), "{}", v.formed);
    }
}
