//! Docker: the Volume Plugin v1 endpoints served by `rexray service start`,
//! one per Docker module (`rexray.modules.<name>`).

pub mod api;
pub mod conns;
pub mod modules;
pub mod queue;
pub mod server;
pub mod service;
