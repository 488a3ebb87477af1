//! The CSI v1 endpoint: `rexray.modules.<name>.type: csi` in `rexray
//! service start` serves the Container Storage Interface's Identity,
//! Controller and Node services on a unix socket, for kubelet and the
//! Kubernetes CSI sidecars (external-provisioner, -resizer, -snapshotter,
//! node-driver-registrar).
//!
//! It is a front-end like the Docker plugin and flexrex: every call goes
//! through the volume workflows ([`Volumes`]): create (by name, with the
//! create options users know), copy and create-from-snapshot, resize,
//! snapshots, and mount/unmount with the staging path as the consumer
//! (`csi:<staging path>`), so a volume that Docker and kubelet both use on
//! one node keeps both consumers. Node work beyond the workflow (binding
//! the staged volume onto a pod's path, statvfs) goes through
//! [`crate::node`].
//!
//! ControllerPublishVolume attaches a volume to a node through the
//! driver's controller (the hold the driver records) and hands the node
//! the attach token (`attachToken` in the publish context); NodeStage then
//! resolves the token instead of attaching, and no node step releases the
//! controller's hold: ControllerUnpublishVolume does. Without a publish
//! context (a cluster that skips the attach step) NodeStage attaches by
//! itself, as every front-end does.
//!
//! `rexray.csi.mode` says which services a csi module serves: `controller`
//! (one per cluster, beside the sidecars), `node` (one per node, beside
//! kubelet) or `all` (both; a single-node cluster, or node-local drivers
//! where every node is its own controller). Identity is always served.
//!
//! Concurrency: a call for a volume (or a name, or a pod's path) that
//! another call of this endpoint is working on gets ABORTED at once, as
//! the spec recommends, and the caller retries; it never waits for the
//! other call first. Work for other processes on the volume (the Docker
//! plugin, the CLI) is waited for on the volume's file lock, bounded by
//! `rexray.lockTimeout`, and every call is bounded by its gRPC deadline
//! (DEADLINE_EXCEEDED; the work then finishes in the background and a
//! retry finds it done).

mod conns;
mod controller;
mod identity;
mod node;
mod publish;
mod serve;

pub use serve::{configured, Endpoint, Module, Servers};

/// The CSI v1 messages, servers and clients, generated from
/// `proto/csi.proto` at build time.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("csi.v1");
}

use crate::volume::Volumes;
use crate::{Error, Kind};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::{Code, Status};

/// The driver name rexray's CSI endpoint gives (GetPluginInfo), the name a
/// CSIDriver object, a StorageClass's provisioner and kubelet's plugin
/// directory use.
pub const DRIVER_NAME: &str = "rexray.rexray-rs.io";

/// The topology key of node-local volumes: the segment names the node (its
/// instance id) that holds the volume.
pub const TOPOLOGY_KEY: &str = "topology.rexray-rs.io/node";

/// One GiB.
const GIB: u64 = 1 << 30;

/// Which CSI services a module serves (`rexray.csi.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Identity and Controller.
    Controller,
    /// Identity and Node.
    Node,
    /// All three.
    All,
}

impl Mode {
    /// From `rexray.csi.mode` (checked by the configuration).
    pub fn parse(s: &str) -> Mode {
        match s.trim().to_ascii_lowercase().as_str() {
            "controller" => Mode::Controller,
            "node" => Mode::Node,
            _ => Mode::All,
        }
    }
    /// Whether the Controller service is served.
    pub fn controller(self) -> bool {
        matches!(self, Mode::Controller | Mode::All)
    }
    /// Whether the Node service is served.
    pub fn node(self) -> bool {
        matches!(self, Mode::Node | Mode::All)
    }
    /// As configured.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Controller => "controller",
            Mode::Node => "node",
            Mode::All => "all",
        }
    }
}

/// What the three services share: the module's volumes, its mode, and
/// the volumes (names, paths) calls are working on now.
#[derive(Clone)]
pub struct Csi {
    vols: Arc<Volumes>,
    mode: Mode,
    busy: Arc<Mutex<HashSet<String>>>,
    /// Calls whose work has not ended (a stop waits for them).
    active: Arc<std::sync::atomic::AtomicUsize>,
}

/// A claim on some keys (volume ids, names, paths) for one call; released
/// when the call's work ends (dropped), even after its caller gave up.
struct Claim {
    busy: Arc<Mutex<HashSet<String>>>,
    keys: Vec<String>,
    active: Arc<std::sync::atomic::AtomicUsize>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.active
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        let mut b = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        for k in &self.keys {
            b.remove(k);
        }
    }
}

impl Csi {
    /// Over a module's volumes.
    pub fn new(vols: Arc<Volumes>, mode: Mode) -> Csi {
        Csi {
            vols,
            mode,
            busy: Arc::default(),
            active: Arc::default(),
        }
    }

    /// The calls whose work has not ended.
    fn active(&self) -> usize {
        self.active.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// What the driver offers (see [`Controller::offers`]), asked off
    /// the async threads: a libStorage client asks its server.
    ///
    /// [`Controller::offers`]: crate::storage::controller::Controller::offers
    async fn offers(&self) -> Result<crate::storage::controller::Offers, Status> {
        let csi = self.clone();
        tokio::task::spawn_blocking(move || csi.vols.offers())
            .await
            .map_err(|e| Status::internal(e.to_string()))
    }

    /// Whether the driver's volumes live on one node (loop files, vfs
    /// directories): then the scheduler must place pods on that node, and
    /// the node attaches in NodeStage.
    fn node_local(&self) -> bool {
        matches!(self.vols.config().driver_name().as_str(), "loop" | "vfs")
    }

    /// This node's topology segment.
    fn topology(&self) -> proto::Topology {
        proto::Topology {
            segments: [(TOPOLOGY_KEY.to_string(), self.vols.instance().id.clone())].into(),
        }
    }

    /// The topologies a volume is reachable from.
    fn accessible(&self) -> Vec<proto::Topology> {
        if self.node_local() {
            vec![self.topology()]
        } else {
            Vec::new()
        }
    }

    /// Claim `keys` for one call, or ABORTED when another call holds one.
    fn claim(&self, keys: Vec<String>) -> Result<Claim, Status> {
        let mut b = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = keys.iter().find(|k| b.contains(*k)) {
            return Err(Status::aborted(format!(
                "an operation for {k} is already in progress; retry"
            )));
        }
        for k in &keys {
            b.insert(k.clone());
        }
        self.active
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(Claim {
            busy: self.busy.clone(),
            keys,
            active: self.active.clone(),
        })
    }

    /// Run blocking work `f` for a call with deadline `deadline`, holding
    /// the claim on `keys` for as long as the work runs.
    async fn run<T, F>(
        &self,
        deadline: Option<Duration>,
        keys: Vec<String>,
        f: F,
    ) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&Csi) -> Result<T, Status> + Send + 'static,
    {
        let claim = self.claim(keys)?;
        let me = self.clone();
        let work = tokio::task::spawn_blocking(move || {
            let _claim = claim;
            f(&me)
        });
        let joined = match deadline {
            Some(d) => match tokio::time::timeout(d, work).await {
                Ok(j) => j,
                Err(_) => return Err(Status::deadline_exceeded(
                    "the call's deadline passed; the operation goes on and a retry finds it done",
                )),
            },
            None => work.await,
        };
        joined.map_err(|e| Status::internal(format!("the operation failed: {e}")))?
    }
}

/// How long a call may work: the deadline it carries (`grpc-timeout`),
/// less a tenth (at most a second) so that the answer, DEADLINE_EXCEEDED,
/// reaches the caller before its deadline does (gRPC would otherwise
/// cancel the call, and the caller would not know the work goes on).
fn deadline<T>(req: &tonic::Request<T>) -> Option<Duration> {
    let d = grpc_timeout(req)?;
    Some(d.saturating_sub((d / 10).min(Duration::from_secs(1))))
}

/// The `grpc-timeout` of a call, if any.
fn grpc_timeout<T>(req: &tonic::Request<T>) -> Option<Duration> {
    let v = req.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (n, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The gRPC status of a library error, as the CSI spec names them.
fn status(e: Error) -> Status {
    let code = match e.kind() {
        Kind::InvalidInput => Code::InvalidArgument,
        Kind::NotFound => Code::NotFound,
        Kind::AlreadyExists => Code::AlreadyExists,
        Kind::InUse => Code::FailedPrecondition,
        // The volume's lock was held by another process for all of
        // rexray.lockTimeout: the caller retries.
        Kind::Busy => Code::DeadlineExceeded,
        Kind::Unsupported => Code::InvalidArgument,
        Kind::Backend | Kind::System => Code::Internal,
    };
    Status::new(code, e.to_string())
}

/// INVALID_ARGUMENT for a missing field.
fn missing(field: &str) -> Status {
    Status::invalid_argument(format!("{field} is required"))
}

/// A capability's access mode, checked: the modes a volume attached to
/// one node at a time supports.
fn check_capability(c: &proto::VolumeCapability) -> Result<(), Status> {
    use proto::volume_capability::access_mode::Mode as M;
    use proto::volume_capability::AccessType;
    match &c.access_type {
        None => return Err(missing("volume_capability.access_type (mount or block)")),
        Some(AccessType::Mount(m)) => {
            if !m.fs_type.is_empty() {
                crate::options::fs_type("volume_capability.mount.fs_type", &m.fs_type)
                    .map_err(status)?;
            }
            crate::node::bind_flags(&m.mount_flags).map_err(status)?;
        }
        Some(AccessType::Block(_)) => {}
    }
    let mode = c
        .access_mode
        .as_ref()
        .ok_or_else(|| missing("volume_capability.access_mode"))?
        .mode;
    match M::try_from(mode) {
        Ok(M::SingleNodeWriter) | Ok(M::SingleNodeReaderOnly) => Ok(()),
        // The spec allows these only to a plugin that advertises
        // SINGLE_NODE_MULTI_WRITER, which would promise to keep a single
        // writer to one pod: this one does not (a CO then asks for
        // SINGLE_NODE_WRITER).
        Ok(m @ (M::SingleNodeSingleWriter | M::SingleNodeMultiWriter)) => {
            Err(Status::invalid_argument(format!(
                "access mode {} needs the SINGLE_NODE_MULTI_WRITER capability, which this plugin does not offer; ask for SINGLE_NODE_WRITER",
                m.as_str_name()
            )))
        }
        Ok(M::Unknown) | Err(_) => Err(Status::invalid_argument(format!(
            "volume_capability.access_mode {mode} is not a known access mode"
        ))),
        Ok(m) => Err(Status::invalid_argument(format!(
            "access mode {} is not supported: a volume is attached to one node at a time",
            m.as_str_name()
        ))),
    }
}

/// Whether a capability asks for a raw block volume.
fn is_block(c: &proto::VolumeCapability) -> bool {
    matches!(
        c.access_type,
        Some(proto::volume_capability::AccessType::Block(_))
    )
}

/// Bytes of `gib` GiB.
fn bytes(gib: u64) -> i64 {
    i64::try_from(gib.saturating_mul(GIB)).unwrap_or(i64::MAX)
}
