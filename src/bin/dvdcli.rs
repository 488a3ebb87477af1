//! `dvdcli`: the CLI Mesos' mesos-module-dvdi and docker/volume isolator
//! exec. stdout carries only the answer; one error line goes to stderr.
//! Exit codes: 0 success, 1 error, 2 usage error.
//!
//! Its own C `main` ([`rexray::cli::start`] says why and what it keeps of
//! Rust's start-up).

// (Under `cargo test` the harness brings its own `main`.)
#![cfg_attr(not(test), no_main)]

#[cfg(not(test))]
fn run() -> rexray::Result<u8> {
    use rexray::dvdi::{self, args};
    use std::io::Write;
    #[cfg(feature = "failpoints")]
    let _scenario = fail::FailScenario::setup();
    // Lossy, so a non-UTF-8 argument is refused by name instead of panicking.
    let argv: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let (argv, key_flags) = rexray::cli::take_key_flags(argv);
    let inv = match args::parse(&argv) {
        Ok(inv) => inv,
        Err(e) => {
            eprintln!("dvdcli: usage error: {e} (see `dvdcli help`)");
            return Ok(2);
        }
    };
    let out = match inv.command {
        args::Command::Version => dvdi::version_text(),
        args::Command::Help => args::USAGE.to_string(),
        _ => {
            let (cfg, target) = dvdi::Target::resolve(&inv.driver, &key_flags)?;
            rexray::cli::log_to_stderr("dvdcli", cfg.string(rexray::config::keys::LOG_LEVEL));
            for w in &cfg.warnings {
                tracing::warn!("{w}");
            }
            dvdi::execute(&inv, target)?
        }
    };
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_all(out.as_bytes())
        .and_then(|_| stdout.flush())
        .is_err()
    {
        return Ok(1);
    }
    Ok(0)
}

#[cfg(not(test))]
#[no_mangle]
extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    rexray::cli::start();
    rexray::cli::reset_inherited_signals();
    rexray::cli::quiet_panics();
    match rexray::cli::catch_panics(run) {
        Ok(code) => code.into(),
        Err(e) => {
            eprintln!("dvdcli: error: {e}");
            e.exit_code() as u8 as libc::c_int
        }
    }
}
