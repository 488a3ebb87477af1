//! Integration tests: the binaries driven as their real callers drive them,
//! as root, on real loop devices, filesystems and mounts.

mod common;
mod docker;
mod dvdcli;
mod flexrex;
mod volume_cli;
