//! rexray-rs: storage orchestration for Docker, Kubernetes and Mesos.
//!
//! One library of storage drivers and mount logic; the `rexray`, `flexrex`
//! and `dvdcli` binaries are thin front-ends over [`volume::Volumes`].
//!
//! Data flows one way: binary → [`volume`] workflow → [`storage`] driver and
//! [`node`] operations → [`state`] directory. Drivers never mount; node
//! operations never talk to a backend.

pub mod api;
pub mod cli;
pub mod config;
pub mod csi;
pub mod docker;
pub mod dvdi;
pub mod error;
pub mod files;
pub mod flex;
pub mod httpd;
pub mod input;
pub mod model;

pub use error::{Error, Kind, Reason, Result};
pub mod node;
pub mod options;
pub mod output;
pub mod snapshot;
pub mod state;
pub mod storage;
pub mod volume;

/// Die at once, as `kill -9` would: used by failpoints to prove that every
/// step boundary is crash-safe. No destructors, no unwinding, no cleanup.
pub fn crash_here() -> ! {
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    std::process::abort()
}
