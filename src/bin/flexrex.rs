//! `flexrex`: the Kubernetes FlexVolume driver kubelet execs.
//!
//! Prints exactly one JSON object on stdout and nothing on stderr (kubelet
//! parses both streams together); logs go to `rexray.flexrex.logFile`.
//!
//! Its own C `main` ([`rexray::cli::start`] says why and what it keeps of
//! Rust's start-up): kubelet execs it several times per volume.

// (Under `cargo test` the harness brings its own `main`.)
#![cfg_attr(not(test), no_main)]

#[cfg(not(test))]
#[no_mangle]
extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    use std::io::Write;
    rexray::cli::start();
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let reply = rexray::flex::run(&args);
    let mut line = reply.to_json();
    line.push('\n');
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
    reply.exit_code()
}
