//! Integration tests: the binaries driven as their real callers drive them,
//! as root, on real loop devices, filesystems and mounts.

mod catalog;
mod ceph;
mod client_mode;
mod cluster;
mod common;
#[cfg(feature = "failpoints")]
mod crash;
mod csi;
mod docker;
mod dvdcli;
mod errors;
mod files;
mod flexrex;
mod flood;
mod freeze_uuid;
mod hostile;
mod libstorage;
mod libstorage_security;
mod managed_plugin;
mod modules;
mod mount_safety;
mod multihost;
mod names;
mod options;
mod packaging;
mod props;
mod queue;
mod security;
mod stress;
mod volume_cli;
mod volume_state;
