//! Kubernetes FlexVolume: the protocol model behind the `flexrex` binary
//! and `rexray flexrex install|uninstall|status`.

pub mod install;
