//! Integration tests: the binaries driven as their real callers drive them,
//! as root, on real loop devices, filesystems and mounts.

mod common;
mod volume_cli;
