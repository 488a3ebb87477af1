//! Latency client for `scripts/bench-csi.sh`: N calls of one CSI
//! operation over the endpoint's unix socket (the gRPC client generated
//! in `rexray::csi::proto`), one at a time on one connection.
//!
//! ```text
//! csi_bench SOCKET OP N DIR PREFIX
//! ```
//! OP is one of
//! - `create`: CreateVolume of N fresh names `PREFIX-<i>` (1 GiB);
//! - `stage`: for each of N fresh volumes (created untimed), NodeStageVolume
//!   to a fresh staging path under DIR (attach, format of the blank
//!   device, mount); NodeUnstageVolume and DeleteVolume untimed;
//! - `publish`: one volume created and staged untimed, then N
//!   NodePublishVolume to fresh targets under DIR, each unpublished
//!   untimed; unstaged and deleted at the end;
//! - `probe`: N Identity Probe calls (the round trip alone, a baseline).
//!
//! Only the named call is timed. Any failed call stops the run (exit 1).
//! Prints one JSON line: op, n, p50/p99/mean/max latency in milliseconds.

use rexray::csi::proto::controller_client::ControllerClient;
use rexray::csi::proto::identity_client::IdentityClient;
use rexray::csi::proto::node_client::NodeClient;
use rexray::csi::proto::*;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

const GIB: i64 = 1 << 30;
/// Longest wait for one reply.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

type Failure = Box<dyn std::error::Error>;

async fn channel(sock: PathBuf) -> Result<Channel, Failure> {
    Ok(tonic::transport::Endpoint::try_from("http://csi.invalid")?
        .timeout(CALL_TIMEOUT)
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let p = sock.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(p).await?,
                ))
            }
        }))
        .await?)
}

fn mount_cap() -> VolumeCapability {
    VolumeCapability {
        access_type: Some(volume_capability::AccessType::Mount(
            volume_capability::MountVolume {
                fs_type: "ext4".into(),
                mount_flags: vec![],
                volume_mount_group: String::new(),
            },
        )),
        access_mode: Some(volume_capability::AccessMode {
            mode: volume_capability::access_mode::Mode::SingleNodeWriter as i32,
        }),
    }
}

struct Bench {
    id: IdentityClient<Channel>,
    ctl: ControllerClient<Channel>,
    node: NodeClient<Channel>,
    dir: PathBuf,
    prefix: String,
}

impl Bench {
    async fn create(&mut self, name: &str) -> Result<String, Failure> {
        let r = self
            .ctl
            .create_volume(CreateVolumeRequest {
                name: name.into(),
                capacity_range: Some(CapacityRange {
                    required_bytes: GIB,
                    limit_bytes: 0,
                }),
                volume_capabilities: vec![mount_cap()],
                ..Default::default()
            })
            .await?;
        let v = r.into_inner().volume.ok_or("CreateVolume: no volume")?;
        Ok(v.volume_id)
    }

    async fn delete(&mut self, id: &str) -> Result<(), Failure> {
        self.ctl
            .delete_volume(DeleteVolumeRequest {
                volume_id: id.into(),
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    async fn stage(&mut self, id: &str, staging: &str) -> Result<(), Failure> {
        self.node
            .node_stage_volume(NodeStageVolumeRequest {
                volume_id: id.into(),
                staging_target_path: staging.into(),
                volume_capability: Some(mount_cap()),
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    async fn unstage(&mut self, id: &str, staging: &str) -> Result<(), Failure> {
        self.node
            .node_unstage_volume(NodeUnstageVolumeRequest {
                volume_id: id.into(),
                staging_target_path: staging.into(),
            })
            .await?;
        Ok(())
    }

    async fn publish(&mut self, id: &str, staging: &str, target: &str) -> Result<(), Failure> {
        self.node
            .node_publish_volume(NodePublishVolumeRequest {
                volume_id: id.into(),
                staging_target_path: staging.into(),
                target_path: target.into(),
                volume_capability: Some(mount_cap()),
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    async fn unpublish(&mut self, id: &str, target: &str) -> Result<(), Failure> {
        self.node
            .node_unpublish_volume(NodeUnpublishVolumeRequest {
                volume_id: id.into(),
                target_path: target.into(),
            })
            .await?;
        Ok(())
    }

    fn path(&self, kind: &str, i: usize) -> String {
        self.dir
            .join(format!("{kind}-{}-{i}", self.prefix))
            .to_string_lossy()
            .into_owned()
    }

    /// The latency of each of `n` calls of `op`.
    async fn run(&mut self, op: &str, n: usize) -> Result<Vec<Duration>, Failure> {
        let mut lat = Vec::with_capacity(n);
        match op {
            "create" => {
                for i in 0..n {
                    let name = format!("{}-{i}", self.prefix);
                    let t = Instant::now();
                    self.create(&name).await?;
                    lat.push(t.elapsed());
                }
            }
            "stage" => {
                for i in 0..n {
                    let id = self.create(&format!("{}-{i}", self.prefix)).await?;
                    let staging = self.path("staging", i);
                    let t = Instant::now();
                    self.stage(&id, &staging).await?;
                    lat.push(t.elapsed());
                    self.unstage(&id, &staging).await?;
                    self.delete(&id).await?;
                }
            }
            "publish" => {
                let id = self.create(&self.prefix.clone()).await?;
                let staging = self.path("staging", 0);
                self.stage(&id, &staging).await?;
                for i in 0..n {
                    let target = self.path("target", i);
                    let t = Instant::now();
                    self.publish(&id, &staging, &target).await?;
                    lat.push(t.elapsed());
                    self.unpublish(&id, &target).await?;
                }
                self.unstage(&id, &staging).await?;
                self.delete(&id).await?;
            }
            "probe" => {
                for _ in 0..n {
                    let t = Instant::now();
                    self.id.probe(ProbeRequest {}).await?;
                    lat.push(t.elapsed());
                }
            }
            _ => {
                return Err(
                    format!("unknown operation {op:?} (create, stage, publish, probe)").into(),
                )
            }
        }
        Ok(lat)
    }
}

/// The `q` quantile (nearest rank) of sorted latencies, in ms.
fn quantile(sorted: &[Duration], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1000.0
}

async fn main_async(args: &[String]) -> Result<(), Failure> {
    let [sock, op, n, dir, prefix] = args else {
        return Err("usage: csi_bench SOCKET OP N DIR PREFIX".into());
    };
    let n: usize = n.parse().map_err(|_| format!("N: not a count: {n:?}"))?;
    if n == 0 {
        return Err("N: at least 1".into());
    }
    if !["create", "stage", "publish", "probe"].contains(&op.as_str()) {
        return Err(format!("unknown operation {op:?} (create, stage, publish, probe)").into());
    }
    let sock = PathBuf::from(sock.strip_prefix("unix://").unwrap_or(sock));
    let ch = channel(sock.clone())
        .await
        .map_err(|e| format!("connect to {}: {e}", sock.display()))?;
    let mut b = Bench {
        id: IdentityClient::new(ch.clone()),
        ctl: ControllerClient::new(ch.clone()),
        node: NodeClient::new(ch),
        dir: PathBuf::from(dir),
        prefix: prefix.clone(),
    };
    let mut lat = b.run(op, n).await?;
    lat.sort();
    let mean = lat.iter().map(|d| d.as_secs_f64()).sum::<f64>() / n as f64 * 1000.0;
    println!(
        "{{\"op\":\"{op}\",\"n\":{n},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"mean_ms\":{mean:.3},\"max_ms\":{:.3}}}",
        quantile(&lat, 0.5),
        quantile(&lat, 0.99),
        quantile(&lat, 1.0),
    );
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    if let Err(e) = rt.block_on(main_async(&args)) {
        eprintln!("csi_bench: {e}");
        std::process::exit(1);
    }
}
