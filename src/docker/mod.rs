//! Docker: the Volume Plugin v1 endpoint served by `rexray service start`.

pub mod service;
