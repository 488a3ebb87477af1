//! `flexrex`: the Kubernetes FlexVolume driver kubelet execs.
//!
//! Prints exactly one JSON object on stdout and nothing on stderr (kubelet
//! parses both streams together); logs go to `rexray.flexrex.logFile`.

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
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
    ExitCode::from(reply.exit_code() as u8)
}
