//! `rexray`: the operator CLI. Everything but argv lives in
//! [`rexray::cli`].

use std::process::ExitCode;

fn main() -> ExitCode {
    rexray::cli::main(std::env::args_os().collect())
}
