//! The libStorage API: the REST server `rexray service start` serves for
//! other hosts, and the client that lets a node use a remote controller
//! through the same [`crate::storage::controller::Controller`] trait as a
//! local driver.
//!
//! The wire is the original REX-Ray 0.11 one (`reference/rexray.md` §3,
//! and the captured exchanges in `reference/libstorage-wire.md`), so the
//! original's CLI can use this server and this client the original's.
//!
//! - [`headers`]: `Libstorage-Instanceid`, `-Localdevices`, `-Tx` and the
//!   `attachments` mask.
//! - [`wire`]: the JSON bodies and the error body.
//! - [`routes`]: what each route asks of which controller.
//! - [`tasks`]: every operation as a task (`exeTimeout`, `?async`).
//! - [`server`]: endpoints, HTTP, the spec file.
//! - [`client`]: the controller over HTTP (unix socket or TCP).
//! - [`tls`]: TLS of tcp endpoints and hosts, known_hosts fingerprints.
//! - [`auth`]: bearer tokens (HMAC-signed JWTs).

pub mod auth;
pub mod client;
pub mod headers;
pub mod routes;
pub mod server;
pub mod tasks;
pub mod tls;
pub mod wire;
