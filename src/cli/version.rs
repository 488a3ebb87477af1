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
    }
}

/// `rexray version -f <format>`: the facts as the original's text block,
/// or as JSON or YAML.
pub(crate) fn render(v: &VersionInfo, format: &str) -> Result<String> {
    match format.to_ascii_lowercase().as_str() {
        "text" | "tmpl" | "" => Ok(format!(
            "REX-Ray (rexray-rs)\n-------------------\nBinary: {}\nSemVer: {}\nOsArch: {}\nBranch: {}\nCommit: {}\nFormed: {}\nDrivers: {}\n",
            v.binary,
            v.sem_ver,
            v.os_arch,
            v.branch,
            v.commit,
            v.formed,
            v.drivers.join(", ")
        )),
        f => Ok(output::structured(v, f.parse()?)),
    }
}
