//! Docker: the Volume Plugin v1 endpoint served by `rexray service start`.

pub mod api;
pub mod conns;
pub mod queue;
pub mod server;
pub mod service;
