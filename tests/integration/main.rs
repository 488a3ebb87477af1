//! Integration tests: the binaries driven as their real callers drive them,
//! as root, on real loop devices, filesystems and mounts.

mod common;
#[cfg(feature = "failpoints")]
mod crash;
mod docker;
mod dvdcli;
mod errors;
mod flexrex;
mod managed_plugin;
mod names;
mod packaging;
mod props;
mod security;
mod stress;
mod volume_cli;
mod volume_state;
