// Embeds the commit and build date shown by `rexray version`, compiles
// the CSI protocol (proto/csi.proto) into Rust with a pure-Rust protobuf
// compiler (building needs no protoc), and makes the binaries cheaper to
// start: see `static_unwinder` and `startup_order`.
use std::path::{Path, PathBuf};
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

/// On Linux with glibc, link the unwinder (libgcc_eh) into the binaries
/// instead of loading libgcc_s.so.1 at every start. The standard library
/// asks for `-lgcc_s` by name; a linker script of that name, found first,
/// hands the linker the static archive instead (what `-static-libgcc`
/// does for C programs). Each short-lived call then maps, relocates and
/// initialises one shared library less; libgcc_s's constructor alone runs
/// CPUID more than a dozen times, each a trap to the hypervisor in a VM.
/// Panics unwind as before (the flexrex and service handlers catch them);
/// a C++ library loaded later (librbd) brings its own libgcc_s, and no
/// exception crosses between the two. Skipped when cross-compiling and
/// where the C compiler has no libgcc_eh.a (the build then uses libgcc_s
/// as usual), and with `REXRAY_SHARED_LIBGCC` set.
fn static_unwinder(out: &Path) {
    // (Native builds only: the archive is asked of the host's compiler.)
    let gnu_linux = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu")
        && std::env::var("HOST").ok() == std::env::var("TARGET").ok();
    println!("cargo:rerun-if-env-changed=REXRAY_SHARED_LIBGCC");
    println!("cargo:rerun-if-env-changed=CC");
    if !gnu_linux || std::env::var_os("REXRAY_SHARED_LIBGCC").is_some() {
        return;
    }
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let archive = Command::new(&cc)
        .arg("-print-file-name=libgcc_eh.a")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|p| p.is_absolute() && p.is_file());
    let Some(archive) = archive else {
        println!("cargo:warning=no libgcc_eh.a from {cc}: the binaries load libgcc_s.so.1");
        return;
    };
    let dir = out.join("static-unwinder");
    let script = format!("INPUT({})\n", archive.display());
    std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::write(dir.join("libgcc_s.so"), script))
        .unwrap_or_else(|e| panic!("writing {}: {e}", dir.display()));
    println!("cargo:rustc-link-search=native={}", dir.display());
}

/// The binaries' start-up path laid out together: `link/startup.order`
/// lists, hottest first, the functions the short-lived calls run
/// (`scripts/order.sh` writes it from callgrind runs). Without it the
/// ~500 functions a call runs are spread over most of the 4 MB of code,
/// and each 64 KB of it touched is one more page fault per call. Names
/// the build does not have (another toolchain, other dependency
/// versions) are skipped: the layout then falls back to the linker's
/// own. Only with LLD, rustc's default linker on x86_64 Linux since 1.90.
fn startup_order() {
    println!("cargo:rerun-if-changed=link/startup.order");
    let dir = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from);
    let order = dir.unwrap_or_default().join("link/startup.order");
    println!("cargo:rerun-if-env-changed=REXRAY_NO_STARTUP_ORDER");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target != "x86_64-unknown-linux-gnu"
        || std::env::var_os("REXRAY_NO_STARTUP_ORDER").is_some()
        || std::env::var_os("RUSTC_LINKER").is_some()
        || !order.is_file()
    {
        return;
    }
    // Another linker asked for in the flags: leave the layout to it.
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if flags.contains("linker") || flags.contains("fuse-ld") {
        return;
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let minor = Command::new(rustc)
        .arg("-vV")
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            let release = text.lines().find_map(|l| l.strip_prefix("release: "))?;
            release.split('.').nth(1)?.parse::<u32>().ok()
        })
        .unwrap_or(0);
    if minor < 90 {
        return;
    }
    println!(
        "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
        order.display()
    );
    println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
}

fn main() {
    csi();
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    static_unwinder(&out);
    startup_order();
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
