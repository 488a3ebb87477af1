//! `rexray`: the operator CLI. Everything but argv lives in
//! [`rexray::cli`].
//!
//! Its own C `main` ([`rexray::cli::start`] says why and what it keeps of
//! Rust's start-up).

// (Under `cargo test` the harness brings its own `main`.)
#![cfg_attr(not(test), no_main)]

#[cfg(not(test))]
#[no_mangle]
extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    rexray::cli::start();
    rexray::cli::main(std::env::args_os().collect()).into()
}
