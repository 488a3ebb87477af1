// Embeds the commit and build date shown by `rexray version`, and compiles
// the CSI protocol (proto/csi.proto) into Rust with a pure-Rust protobuf
// compiler: building needs no protoc.
use std::process::Command;

fn git(args: &[&str]) -> String {
    Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// proto/csi.proto → $OUT_DIR/csi.v1.rs (messages, servers and clients).
fn csi() {
    println!("cargo:rerun-if-changed=proto/csi.proto");
    let fds = match protox::compile(["csi.proto"], ["proto"]) {
        Ok(f) => f,
        Err(e) => panic!("compiling proto/csi.proto: {e}"),
    };
    if let Err(e) = tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)
    {
        panic!("generating the CSI code: {e}");
    }
}

fn main() {
    csi();
    let commit = git(&["rev-parse", "--short=12", "HEAD"]);
    // "HEAD" when built from a detached checkout (a tag in CI).
    let branch = git(&["rev-parse", "--abbrev-ref", "HEAD"]);
    let date = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(|s| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s))
        .unwrap_or_else(std::time::SystemTime::now);
    let secs = date
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    println!("cargo:rustc-env=REXRAY_COMMIT={commit}");
    println!("cargo:rustc-env=REXRAY_BRANCH={branch}");
    println!("cargo:rustc-env=REXRAY_BUILD_EPOCH={secs}");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
}
