//! The CSI endpoint of `rexray service start`, driven over its unix
//! socket by a gRPC client generated from the same protocol file, as
//! kubelet and the CSI sidecars drive it, on real loop devices and mounts.
//!
//! `sanity_*`: the checks a CSI conformance suite makes of each call (the
//! status codes for missing fields, unknown volumes, idempotent repeats,
//! capacity ranges, paging tokens); `kubelet_*`: kubelet's sequence with
//! the mount table checked between the steps; `docker_and_csi_*`: one
//! volume used through both front-ends keeps both consumers.

use crate::common::*;
use crate::docker::Service;
use crate::require_root;
use rexray::csi::proto::controller_client::ControllerClient;
use rexray::csi::proto::identity_client::IdentityClient;
use rexray::csi::proto::node_client::NodeClient;
use rexray::csi::proto::*;
use std::path::{Path, PathBuf};
use tonic::transport::Channel;
use tonic::Code;

pub(crate) const GIB: i64 = 1 << 30;

/// A service with a csi module on a private socket (and default-docker on
/// another), its clients, and a runtime to call them from tests.
pub(crate) struct Csi {
    pub(crate) rt: tokio::runtime::Runtime,
    id: IdentityClient<Channel>,
    pub(crate) ctl: ControllerClient<Channel>,
    pub(crate) node: NodeClient<Channel>,
    sock: PathBuf,
    // Dropped before the home: stops the service.
    svc: Service,
}

fn start(home: &Home, extra_yaml: &str) -> Csi {
    start_with(home, extra_yaml, &[])
}

/// [`start`] with more environment for the service (`FAILPOINTS`).
fn start_with(home: &Home, extra_yaml: &str, env: &[(&str, &str)]) -> Csi {
    start_on(home, "loop", extra_yaml, env)
}

/// [`start_with`] on libStorage service `service`.
pub(crate) fn start_on(home: &Home, service: &str, extra_yaml: &str, env: &[(&str, &str)]) -> Csi {
    let sock = home.dir.join("csi.sock");
    home.config(&format!(
        "libstorage:\n  service: {service}\nrexray:\n  modules:\n    kube:\n      type: csi\n      host: unix://{}\n{extra_yaml}",
        sock.display()
    ));
    let docker = format!("unix://{}", home.dir.join("docker.sock").display());
    let svc = Service::start(home, &docker, env);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ch = rt.block_on(channel(sock.clone()));
    Csi {
        id: IdentityClient::new(ch.clone()),
        ctl: ControllerClient::new(ch.clone()),
        node: NodeClient::new(ch),
        rt,
        sock,
        svc,
    }
}

/// A gRPC channel over a unix socket.
pub(crate) async fn channel(sock: PathBuf) -> Channel {
    tonic::transport::Endpoint::try_from("http://csi.invalid")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let p = sock.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(p).await?,
                ))
            }
        }))
        .await
        .expect("connect to the csi socket")
}

/// The code of a call's failure (or Ok).
pub(crate) fn code<T>(r: Result<tonic::Response<T>, tonic::Status>) -> Code {
    match r {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

pub(crate) fn mount_cap(fs: &str) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(volume_capability::AccessType::Mount(
            volume_capability::MountVolume {
                fs_type: fs.into(),
                mount_flags: vec![],
                volume_mount_group: String::new(),
            },
        )),
        access_mode: Some(volume_capability::AccessMode {
            mode: volume_capability::access_mode::Mode::SingleNodeWriter as i32,
        }),
    }
}

fn block_cap() -> VolumeCapability {
    VolumeCapability {
        access_type: Some(volume_capability::AccessType::Block(
            volume_capability::BlockVolume {},
        )),
        access_mode: Some(volume_capability::AccessMode {
            mode: volume_capability::access_mode::Mode::SingleNodeWriter as i32,
        }),
    }
}

pub(crate) fn create_req(name: &str, required: i64) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(CapacityRange {
            required_bytes: required,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![mount_cap("")],
        ..Default::default()
    }
}

impl Csi {
    pub(crate) fn create(&mut self, r: CreateVolumeRequest) -> Result<Volume, tonic::Status> {
        let c = &mut self.ctl;
        self.rt
            .block_on(c.create_volume(r))
            .map(|r| r.into_inner().volume.unwrap())
    }

    fn stage(&mut self, id: &str, staging: &Path, cap: VolumeCapability) -> Code {
        let n = &mut self.node;
        code(
            self.rt
                .block_on(n.node_stage_volume(NodeStageVolumeRequest {
                    volume_id: id.into(),
                    staging_target_path: staging.to_string_lossy().into(),
                    volume_capability: Some(cap),
                    ..Default::default()
                })),
        )
    }

    fn unstage(&mut self, id: &str, staging: &Path) -> Code {
        let n = &mut self.node;
        code(
            self.rt
                .block_on(n.node_unstage_volume(NodeUnstageVolumeRequest {
                    volume_id: id.into(),
                    staging_target_path: staging.to_string_lossy().into(),
                })),
        )
    }

    fn publish(
        &mut self,
        id: &str,
        staging: &Path,
        target: &Path,
        cap: VolumeCapability,
        readonly: bool,
    ) -> Code {
        let n = &mut self.node;
        code(
            self.rt
                .block_on(n.node_publish_volume(NodePublishVolumeRequest {
                    volume_id: id.into(),
                    staging_target_path: staging.to_string_lossy().into(),
                    target_path: target.to_string_lossy().into(),
                    volume_capability: Some(cap),
                    readonly,
                    ..Default::default()
                })),
        )
    }

    fn unpublish(&mut self, id: &str, target: &Path) -> Code {
        let n = &mut self.node;
        code(
            self.rt
                .block_on(n.node_unpublish_volume(NodeUnpublishVolumeRequest {
                    volume_id: id.into(),
                    target_path: target.to_string_lossy().into(),
                })),
        )
    }

    pub(crate) fn delete(&mut self, id: &str) -> Code {
        let c = &mut self.ctl;
        code(self.rt.block_on(c.delete_volume(DeleteVolumeRequest {
            volume_id: id.into(),
            ..Default::default()
        })))
    }
}

#[test]
fn sanity_identity() {
    require_root!();
    let home = Home::new();
    let mut c = start(&home, "");
    let id = &mut c.id;
    let info =
        c.rt.block_on(id.get_plugin_info(GetPluginInfoRequest {}))
            .unwrap()
            .into_inner();
    assert_eq!(info.name, rexray::csi::DRIVER_NAME);
    assert_eq!(info.vendor_version, env!("CARGO_PKG_VERSION"));
    let caps =
        c.rt.block_on(id.get_plugin_capabilities(GetPluginCapabilitiesRequest {}))
            .unwrap()
            .into_inner();
    let services: Vec<i32> = caps
        .capabilities
        .iter()
        .filter_map(|c| match &c.r#type {
            Some(plugin_capability::Type::Service(s)) => Some(s.r#type),
            _ => None,
        })
        .collect();
    use plugin_capability::service::Type as S;
    assert!(services.contains(&(S::ControllerService as i32)));
    assert!(services.contains(&(S::VolumeAccessibilityConstraints as i32)));
    let probe =
        c.rt.block_on(id.probe(ProbeRequest {}))
            .unwrap()
            .into_inner();
    assert_eq!(probe.ready, Some(true));
    // The socket is the operator's only door: 0660.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&c.sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    // `rexray service status` names the csi module.
    let st = home.rexray(&["service", "status"]);
    assert!(
        st.ok().contains("module kube: unix://") && st.ok().contains("csi, all"),
        "{}",
        st.stdout
    );
}

/// Every capability the three services advertise, as (service, type).
fn advertised(c: &mut Csi) -> Vec<(&'static str, i32)> {
    let mut all = Vec::new();
    let id =
        c.rt.block_on(c.id.get_plugin_capabilities(GetPluginCapabilitiesRequest {}))
            .unwrap()
            .into_inner();
    for cap in id.capabilities {
        if let Some(plugin_capability::Type::VolumeExpansion(e)) = cap.r#type {
            all.push(("expansion", e.r#type));
        }
    }
    let ctl =
        c.rt.block_on(
            c.ctl
                .controller_get_capabilities(ControllerGetCapabilitiesRequest {}),
        )
        .unwrap()
        .into_inner();
    for cap in ctl.capabilities {
        if let Some(controller_service_capability::Type::Rpc(r)) = cap.r#type {
            all.push(("controller", r.r#type));
        }
    }
    let node =
        c.rt.block_on(c.node.node_get_capabilities(NodeGetCapabilitiesRequest {}))
            .unwrap()
            .into_inner();
    for cap in node.capabilities {
        if let Some(node_service_capability::Type::Rpc(r)) = cap.r#type {
            all.push(("node", r.r#type));
        }
    }
    all
}

#[test]
fn capabilities_are_what_the_driver_offers() {
    require_root!();
    use controller_service_capability::rpc::Type as C;
    use node_service_capability::rpc::Type as N;
    let optional = [
        (
            "expansion",
            plugin_capability::volume_expansion::Type::Online as i32,
        ),
        ("controller", C::CreateDeleteSnapshot as i32),
        ("controller", C::ListSnapshots as i32),
        ("controller", C::CloneVolume as i32),
        ("controller", C::ExpandVolume as i32),
        ("node", N::ExpandVolume as i32),
    ];
    // GetCapacity where the driver tells its free space: the loop
    // driver (itself or through a server); vfs cannot.
    let capacity = ("controller", C::GetCapacity as i32);
    let always = [
        ("controller", C::CreateDeleteVolume as i32),
        ("controller", C::PublishUnpublishVolume as i32),
        ("controller", C::GetVolume as i32),
        ("node", N::StageUnstageVolume as i32),
        ("node", N::GetVolumeStats as i32),
    ];
    // The loop driver offers snapshots, copies and growing.
    let home = Home::plain();
    let mut c = start_on(&home, "loop", "", &[]);
    let caps = advertised(&mut c);
    for want in optional.iter().chain(&always).chain([&capacity]) {
        assert!(caps.contains(want), "loop: {want:?} in {caps:?}");
    }
    drop(c);
    drop(home);
    // The vfs driver offers none of them: a CO must not be told it can
    // snapshot, clone or expand such volumes. (In client mode the
    // server's driver answers for itself: everything is advertised.)
    let home = Home::plain();
    let mut c = start_on(&home, "vfs", "", &[]);
    let caps = advertised(&mut c);
    for want in &always {
        assert!(caps.contains(want), "vfs: {want:?} in {caps:?}");
    }
    for opt in &optional {
        assert_eq!(
            caps.contains(opt),
            client_mode(),
            "vfs: {opt:?} in {caps:?}"
        );
    }
    assert!(!caps.contains(&capacity), "vfs: {caps:?}");
    // What is not offered is refused as unsupported, not half done.
    if !client_mode() {
        let v = c.create(create_req("caps-vfs", GIB)).unwrap();
        let snap = c.rt.block_on(c.ctl.create_snapshot(CreateSnapshotRequest {
            source_volume_id: v.volume_id.clone(),
            name: "s1".into(),
            ..Default::default()
        }));
        assert!(snap.is_err(), "{snap:?}");
        assert_eq!(c.delete(&v.volume_id), Code::Ok);
    }
}

#[test]
fn sanity_controller() {
    require_root!();
    let home = Home::new();
    let mut c = start(&home, "");
    // Missing fields.
    let mut r = create_req("", GIB);
    assert_eq!(
        c.create(r.clone()).unwrap_err().code(),
        Code::InvalidArgument
    );
    r.name = "sanity-a".into();
    r.volume_capabilities.clear();
    assert_eq!(c.create(r).unwrap_err().code(), Code::InvalidArgument);
    let mut r = create_req("sanity-a", GIB);
    r.parameters.insert("colour".into(), "red".into());
    let e = c.create(r).unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("colour"), "{}", e.message());
    // A limit below one GiB cannot be met.
    let mut r = create_req("sanity-a", 10 << 20);
    r.capacity_range.as_mut().unwrap().limit_bytes = 20 << 20;
    assert_eq!(c.create(r).unwrap_err().code(), Code::OutOfRange);
    assert!(home.volume_names().is_empty());
    // Created, rounded up to GiB, on this node; again by name: the same.
    let v = c.create(create_req("sanity-a", GIB / 2)).unwrap();
    assert_eq!(v.capacity_bytes, GIB);
    assert!(!v.volume_id.is_empty());
    assert_eq!(v.accessible_topology.len(), 1);
    assert!(v.accessible_topology[0]
        .segments
        .contains_key(rexray::csi::TOPOLOGY_KEY));
    let again = c.create(create_req("sanity-a", GIB)).unwrap();
    assert_eq!(again.volume_id, v.volume_id);
    assert_eq!(
        c.create(create_req("sanity-a", 2 * GIB))
            .unwrap_err()
            .code(),
        Code::AlreadyExists
    );
    // Parameters are the create options users know.
    let mut r = create_req("sanity-b", 0);
    r.capacity_range = None;
    r.parameters.insert("size".into(), "2".into());
    r.parameters.insert("fsType".into(), "xfs".into());
    let b = c.create(r.clone()).unwrap();
    assert_eq!(b.capacity_bytes, 2 * GIB);
    assert_eq!(
        b.volume_context.get("fsType").map(String::as_str),
        Some("xfs")
    );
    // Again with the same parameters: the same volume; with another
    // filesystem or type: ALREADY_EXISTS.
    assert_eq!(c.create(r.clone()).unwrap().volume_id, b.volume_id);
    for (k, v) in [
        ("fsType", "ext4"),
        ("type", "gold"),
        ("iops", "100"),
        ("size", "3"),
    ] {
        let mut o = r.clone();
        o.parameters.insert(k.into(), v.into());
        let e = c.create(o).unwrap_err();
        assert_eq!(e.code(), Code::AlreadyExists, "{k}={v}: {}", e.message());
    }
    // A content source that names nothing: refused, nothing made.
    let mut r = create_req("sanity-nothing", GIB);
    r.volume_content_source = Some(VolumeContentSource { r#type: None });
    assert_eq!(c.create(r).unwrap_err().code(), Code::InvalidArgument);
    let d = c.create(create_req("sanity-c", GIB)).unwrap();

    // ValidateVolumeCapabilities.
    let ctl = &mut c.ctl;
    let validate = |id: &str, caps: Vec<VolumeCapability>| ValidateVolumeCapabilitiesRequest {
        volume_id: id.into(),
        volume_capabilities: caps,
        ..Default::default()
    };
    assert_eq!(
        code(
            c.rt.block_on(ctl.validate_volume_capabilities(validate("nope", vec![mount_cap("")])))
        ),
        Code::NotFound
    );
    assert_eq!(
        code(c.rt.block_on(ctl.validate_volume_capabilities(validate(&v.volume_id, vec![])))),
        Code::InvalidArgument
    );
    let ok = c
        .rt
        .block_on(ctl.validate_volume_capabilities(validate(&v.volume_id, vec![mount_cap("ext4")])))
        .unwrap()
        .into_inner();
    assert!(ok.confirmed.is_some(), "{ok:?}");
    let mut multi = mount_cap("");
    multi.access_mode.as_mut().unwrap().mode =
        volume_capability::access_mode::Mode::MultiNodeMultiWriter as i32;
    let no =
        c.rt.block_on(ctl.validate_volume_capabilities(validate(&v.volume_id, vec![multi])))
            .unwrap()
            .into_inner();
    assert!(no.confirmed.is_none() && !no.message.is_empty(), "{no:?}");

    // Only what holds for the volume is confirmed: its fsType and size,
    // known parameters, no mutable ones.
    let checked = |caps: Vec<VolumeCapability>, params: &[(&str, &str)], mutable: bool| {
        let mut q = validate(&b.volume_id, caps);
        q.parameters = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if mutable {
            q.mutable_parameters.insert("x".into(), "y".into());
        }
        q
    };
    let yes = [
        checked(
            vec![mount_cap("xfs")],
            &[("size", "2"), ("fsType", "xfs")],
            false,
        ),
        checked(vec![mount_cap("")], &[], false),
    ];
    let no = [
        checked(vec![mount_cap("ext4")], &[], false),
        checked(vec![mount_cap("")], &[("size", "3")], false),
        checked(vec![mount_cap("")], &[("type", "gold")], false),
        checked(vec![mount_cap("")], &[("bogus", "1")], false),
        checked(vec![mount_cap("")], &[], true),
    ];
    for (q, want) in yes
        .into_iter()
        .map(|q| (q, true))
        .chain(no.into_iter().map(|q| (q, false)))
    {
        let shown = format!("{q:?}");
        let a =
            c.rt.block_on(ctl.validate_volume_capabilities(q))
                .unwrap()
                .into_inner();
        assert_eq!(a.confirmed.is_some(), want, "{shown}: {a:?}");
        assert_eq!(a.message.is_empty(), want, "{shown}: {a:?}");
    }

    // ListVolumes, two at a time; a token it did not give: ABORTED.
    let list = |max: i32, token: &str| ListVolumesRequest {
        max_entries: max,
        starting_token: token.into(),
    };
    let p1 =
        c.rt.block_on(ctl.list_volumes(list(2, "")))
            .unwrap()
            .into_inner();
    assert_eq!(p1.entries.len(), 2);
    assert!(!p1.next_token.is_empty());
    let p2 =
        c.rt.block_on(ctl.list_volumes(list(2, &p1.next_token)))
            .unwrap()
            .into_inner();
    assert_eq!(p2.entries.len(), 1);
    assert!(p2.next_token.is_empty());
    let mut ids: Vec<String> = p1
        .entries
        .iter()
        .chain(&p2.entries)
        .map(|e| e.volume.as_ref().unwrap().volume_id.clone())
        .collect();
    ids.sort();
    let mut want = vec![
        v.volume_id.clone(),
        b.volume_id.clone(),
        d.volume_id.clone(),
    ];
    want.sort();
    assert_eq!(ids, want);
    assert_eq!(
        code(c.rt.block_on(ctl.list_volumes(list(2, "bogus")))),
        Code::Aborted
    );
    assert_eq!(
        code(c.rt.block_on(ctl.list_volumes(list(-1, "")))),
        Code::InvalidArgument
    );
    // A token given before volumes were removed, now past the end: an
    // empty page.
    let past =
        c.rt.block_on(ctl.list_volumes(list(2, "7")))
            .unwrap()
            .into_inner();
    assert!(past.entries.is_empty() && past.next_token.is_empty());

    // GetCapacity, ControllerGetVolume, capabilities.
    let cap =
        c.rt.block_on(ctl.get_capacity(GetCapacityRequest::default()))
            .unwrap()
            .into_inner();
    // The driver's free space; a libStorage server does not report it.
    assert!(cap.available_capacity > 0, "{cap:?}");
    // Another node's: none (a node-local driver).
    let other =
        c.rt.block_on(
            ctl.get_capacity(GetCapacityRequest {
                accessible_topology: Some(Topology {
                    segments: [(
                        rexray::csi::TOPOLOGY_KEY.to_string(),
                        "other-node".to_string(),
                    )]
                    .into(),
                }),
                ..Default::default()
            }),
        )
        .unwrap()
        .into_inner();
    assert_eq!(other.available_capacity, 0, "{other:?}");
    let got =
        c.rt.block_on(ctl.controller_get_volume(ControllerGetVolumeRequest {
            volume_id: v.volume_id.clone(),
        }))
        .unwrap()
        .into_inner();
    assert_eq!(got.volume.unwrap().volume_id, v.volume_id);
    assert_eq!(
        code(
            c.rt.block_on(ctl.controller_get_volume(ControllerGetVolumeRequest {
                volume_id: "nope".into()
            }))
        ),
        Code::NotFound
    );
    let caps =
        c.rt.block_on(ctl.controller_get_capabilities(ControllerGetCapabilitiesRequest {}))
            .unwrap()
            .into_inner();
    use controller_service_capability::rpc::Type as T;
    let have: Vec<i32> = caps
        .capabilities
        .iter()
        .filter_map(|c| {
            c.r#type
                .as_ref()
                .map(|controller_service_capability::Type::Rpc(r)| r.r#type)
        })
        .collect();
    for t in [
        T::CreateDeleteVolume,
        T::ListVolumes,
        T::CreateDeleteSnapshot,
        T::ExpandVolume,
        T::PublishUnpublishVolume,
    ] {
        assert!(have.contains(&(t as i32)), "{t:?} in {have:?}");
    }

    // Snapshots: made, again by name, listed, a volume made from one.
    let snap_req = |name: &str, src: &str| CreateSnapshotRequest {
        name: name.into(),
        source_volume_id: src.into(),
        ..Default::default()
    };
    assert_eq!(
        code(c.rt.block_on(ctl.create_snapshot(snap_req("", &v.volume_id)))),
        Code::InvalidArgument
    );
    assert_eq!(
        code(c.rt.block_on(ctl.create_snapshot(snap_req("snap-x", "")))),
        Code::InvalidArgument
    );
    assert_eq!(
        code(c.rt.block_on(ctl.create_snapshot(snap_req("snap-x", "nope")))),
        Code::NotFound
    );
    let s =
        c.rt.block_on(ctl.create_snapshot(snap_req("snap-a", &v.volume_id)))
            .unwrap()
            .into_inner()
            .snapshot
            .unwrap();
    assert_eq!(s.source_volume_id, v.volume_id);
    assert!(s.ready_to_use);
    assert!(s.creation_time.is_some());
    let s2 =
        c.rt.block_on(ctl.create_snapshot(snap_req("snap-a", &v.volume_id)))
            .unwrap()
            .into_inner()
            .snapshot
            .unwrap();
    assert_eq!(s2.snapshot_id, s.snapshot_id);
    assert_eq!(
        code(c.rt.block_on(ctl.create_snapshot(snap_req("snap-a", &b.volume_id)))),
        Code::AlreadyExists
    );
    let listed =
        c.rt.block_on(ctl.list_snapshots(ListSnapshotsRequest {
            source_volume_id: v.volume_id.clone(),
            ..Default::default()
        }))
        .unwrap()
        .into_inner();
    assert_eq!(listed.entries.len(), 1);
    let mut from = create_req("sanity-from-snap", 0);
    from.capacity_range = None;
    from.volume_content_source = Some(VolumeContentSource {
        r#type: Some(volume_content_source::Type::Snapshot(
            volume_content_source::SnapshotSource {
                snapshot_id: s.snapshot_id.clone(),
            },
        )),
    });
    let restored = c.create(from.clone()).unwrap();
    assert_eq!(restored.capacity_bytes, GIB);
    assert!(restored.content_source.is_some());
    // Again: the same volume. The same name from another source, or from
    // none: ALREADY_EXISTS, naming the source it was made from.
    assert_eq!(
        c.create(from.clone()).unwrap().volume_id,
        restored.volume_id
    );
    let mut other = from.clone();
    other.volume_content_source = Some(VolumeContentSource {
        r#type: Some(volume_content_source::Type::Volume(
            volume_content_source::VolumeSource {
                volume_id: b.volume_id.clone(),
            },
        )),
    });
    let e = c.create(other).unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    assert!(
        e.message().contains(&s.snapshot_id),
        "names the snapshot: {}",
        e.message()
    );
    let mut blank = from.clone();
    blank.volume_content_source = None;
    assert_eq!(c.create(blank).unwrap_err().code(), Code::AlreadyExists);
    let mut clone = create_req("sanity-clone", 0);
    clone.capacity_range = None;
    clone.volume_content_source = Some(VolumeContentSource {
        r#type: Some(volume_content_source::Type::Volume(
            volume_content_source::VolumeSource {
                volume_id: b.volume_id.clone(),
            },
        )),
    });
    let cloned = c.create(clone.clone()).unwrap();
    assert_eq!(cloned.capacity_bytes, 2 * GIB);
    assert_eq!(c.create(clone.clone()).unwrap().volume_id, cloned.volume_id);
    let mut of_v = clone.clone();
    of_v.volume_content_source = Some(VolumeContentSource {
        r#type: Some(volume_content_source::Type::Volume(
            volume_content_source::VolumeSource {
                volume_id: v.volume_id.clone(),
            },
        )),
    });
    assert_eq!(c.create(of_v).unwrap_err().code(), Code::AlreadyExists);
    // A copy the capacity range cannot hold (the 2 GiB source under a
    // 1 GiB limit, or asked smaller than it): OUT_OF_RANGE, nothing made.
    for (req, lim) in [(0, GIB), (GIB, 0)] {
        let mut small = clone.clone();
        small.name = "sanity-clone-small".into();
        small.capacity_range = Some(CapacityRange {
            required_bytes: req,
            limit_bytes: lim,
        });
        assert_eq!(c.create(small).unwrap_err().code(), Code::OutOfRange);
    }
    assert!(!home
        .volume_names()
        .contains(&"sanity-clone-small".to_string()));
    let ctl = &mut c.ctl;
    let del_snap = |id: &str| DeleteSnapshotRequest {
        snapshot_id: id.into(),
        ..Default::default()
    };
    assert_eq!(
        code(c.rt.block_on(ctl.delete_snapshot(del_snap(&s.snapshot_id)))),
        Code::Ok
    );
    assert_eq!(
        code(c.rt.block_on(ctl.delete_snapshot(del_snap(&s.snapshot_id)))),
        Code::Ok
    );
    assert_eq!(
        code(c.rt.block_on(ctl.delete_snapshot(del_snap("")))),
        Code::InvalidArgument
    );

    // ControllerExpandVolume (through a server: its resize extension).
    let grown =
        c.rt.block_on(ctl.controller_expand_volume(ControllerExpandVolumeRequest {
            volume_id: d.volume_id.clone(),
            capacity_range: Some(CapacityRange {
                required_bytes: 2 * GIB,
                limit_bytes: 0,
            }),
            ..Default::default()
        }));
    assert_eq!(grown.unwrap().into_inner().capacity_bytes, 2 * GIB);
    // A limit the volume is already past: OUT_OF_RANGE (volumes only grow).
    assert_eq!(
        code(
            c.rt.block_on(ctl.controller_expand_volume(ControllerExpandVolumeRequest {
                volume_id: d.volume_id.clone(),
                capacity_range: Some(CapacityRange {
                    required_bytes: 0,
                    limit_bytes: GIB,
                }),
                ..Default::default()
            }))
        ),
        Code::OutOfRange
    );
    assert_eq!(
        code(
            c.rt.block_on(ctl.controller_expand_volume(ControllerExpandVolumeRequest {
                volume_id: "nope".into(),
                capacity_range: Some(CapacityRange {
                    required_bytes: GIB,
                    limit_bytes: 0,
                }),
                ..Default::default()
            }))
        ),
        Code::NotFound
    );

    // DeleteVolume: missing id refused; unknown and repeated: OK.
    assert_eq!(c.delete(""), Code::InvalidArgument);
    assert_eq!(c.delete("nope"), Code::Ok);
    for id in [&v.volume_id, &b.volume_id, &d.volume_id] {
        assert_eq!(c.delete(id), Code::Ok);
        assert_eq!(c.delete(id), Code::Ok);
    }
    assert_eq!(home.volume_names(), ["sanity-clone", "sanity-from-snap"]);
}

#[test]
fn sanity_node() {
    require_root!();
    let home = Home::new();
    let mut c = start(&home, "");
    let staging = home.dir.join("kubelet/staging/pv1");
    let target = home.dir.join("kubelet/pods/p1/mount");
    let v = c.create(create_req("sanity-node", GIB)).unwrap();
    let id = v.volume_id.clone();
    // Missing fields and unknown volumes.
    assert_eq!(c.stage("", &staging, mount_cap("")), Code::InvalidArgument);
    assert_eq!(
        c.stage(&id, Path::new(""), mount_cap("")),
        Code::InvalidArgument
    );
    let n = &mut c.node;
    assert_eq!(
        code(c.rt.block_on(n.node_stage_volume(NodeStageVolumeRequest {
            volume_id: id.clone(),
            staging_target_path: staging.to_string_lossy().into(),
            ..Default::default()
        }))),
        Code::InvalidArgument
    );
    assert_eq!(c.stage("nope", &staging, mount_cap("")), Code::NotFound);
    assert_eq!(
        c.publish(&id, &staging, Path::new(""), mount_cap(""), false),
        Code::InvalidArgument
    );
    assert_eq!(
        c.publish(&id, Path::new(""), &target, mount_cap(""), false),
        Code::InvalidArgument
    );
    assert_eq!(
        c.publish("nope", &staging, &target, mount_cap(""), false),
        Code::NotFound
    );
    // Not staged yet: a precondition.
    assert_eq!(
        c.publish(&id, &staging, &target, mount_cap(""), false),
        Code::FailedPrecondition
    );
    assert_eq!(c.unpublish("", &target), Code::InvalidArgument);
    assert_eq!(c.unpublish(&id, Path::new("")), Code::InvalidArgument);
    assert_eq!(c.unstage("", &staging), Code::InvalidArgument);
    assert_eq!(c.unstage(&id, Path::new("")), Code::InvalidArgument);
    // NodeGetInfo, NodeGetCapabilities.
    let n = &mut c.node;
    let info =
        c.rt.block_on(n.node_get_info(NodeGetInfoRequest {}))
            .unwrap()
            .into_inner();
    assert!(!info.node_id.is_empty());
    assert_eq!(
        info.accessible_topology.unwrap().segments[rexray::csi::TOPOLOGY_KEY],
        info.node_id
    );
    assert_eq!(
        v.accessible_topology[0].segments[rexray::csi::TOPOLOGY_KEY],
        info.node_id
    );
    let caps =
        c.rt.block_on(n.node_get_capabilities(NodeGetCapabilitiesRequest {}))
            .unwrap()
            .into_inner();
    assert!(caps.capabilities.iter().any(|c| matches!(
        &c.r#type,
        Some(node_service_capability::Type::Rpc(r))
            if r.r#type == node_service_capability::rpc::Type::StageUnstageVolume as i32
    )));
    // Stats need a volume and a path.
    assert_eq!(
        code(
            c.rt.block_on(n.node_get_volume_stats(NodeGetVolumeStatsRequest {
                volume_id: id.clone(),
                ..Default::default()
            }))
        ),
        Code::InvalidArgument
    );
    assert_eq!(
        code(
            c.rt.block_on(n.node_get_volume_stats(NodeGetVolumeStatsRequest {
                volume_id: "nope".into(),
                volume_path: target.to_string_lossy().into(),
                ..Default::default()
            }))
        ),
        Code::NotFound
    );
    // A path that cannot be where a volume is published (relative) is
    // NOT_FOUND whether or not the volume exists, after an unknown volume.
    for vol in ["nope", id.as_str()] {
        assert_eq!(
            code(
                c.rt.block_on(n.node_get_volume_stats(NodeGetVolumeStatsRequest {
                    volume_id: vol.into(),
                    volume_path: "some/path".into(),
                    ..Default::default()
                }))
            ),
            Code::NotFound,
            "{vol}"
        );
        assert_eq!(
            code(c.rt.block_on(n.node_expand_volume(NodeExpandVolumeRequest {
                volume_id: vol.into(),
                volume_path: "some/path".into(),
                ..Default::default()
            }))),
            Code::NotFound,
            "{vol}"
        );
    }
    // Expand needs a volume and a path.
    for (vol, path) in [("", "/x"), (id.as_str(), "")] {
        assert_eq!(
            code(c.rt.block_on(n.node_expand_volume(NodeExpandVolumeRequest {
                volume_id: vol.into(),
                volume_path: path.into(),
                ..Default::default()
            }))),
            Code::InvalidArgument,
            "{vol:?} {path:?}"
        );
    }
    assert_eq!(c.delete(&id), Code::Ok);
}

/// A call that names one volume and the path of another never undoes
/// the other's mount, nor reads or grows it as the one named.
#[test]
fn a_wrong_volume_id_never_touches_another_volumes_path() {
    require_root!();
    let home = Home::new();
    let mut c = start(&home, "");
    let dir = |p: &str| home.dir.join("kubelet").join(p);
    let (sa, sb, ta, tb) = (dir("s/a"), dir("s/b"), dir("p/a"), dir("p/b"));
    let a = c.create(create_req("wrong-a", GIB)).unwrap().volume_id;
    let b = c.create(create_req("wrong-b", GIB)).unwrap().volume_id;
    assert_eq!(c.stage(&a, &sa, mount_cap("ext4")), Code::Ok);
    assert_eq!(c.stage(&b, &sb, mount_cap("ext4")), Code::Ok);
    assert_eq!(c.publish(&a, &sa, &ta, mount_cap("ext4"), false), Code::Ok);
    assert_eq!(c.publish(&b, &sb, &tb, mount_cap("ext4"), false), Code::Ok);
    std::fs::write(tb.join("b"), b"b's").unwrap();
    let held = || {
        assert_eq!(count_mounts_at(&sb), 1, "{sb:?}");
        assert_eq!(count_mounts_at(&tb), 1, "{tb:?}");
        assert_eq!(std::fs::read(tb.join("b")).unwrap(), b"b's");
    };
    // Another volume's id: refused, nothing undone.
    assert_eq!(c.unpublish(&a, &tb), Code::FailedPrecondition);
    assert_eq!(c.unstage(&a, &sb), Code::FailedPrecondition);
    held();
    // An unknown id: NOT_FOUND, and the other volume's paths stay.
    assert_eq!(c.unpublish("nope", &tb), Code::NotFound);
    assert_eq!(c.unstage("nope", &sb), Code::NotFound);
    held();
    // Stats and expansion of A at B's path: NOT_FOUND.
    let n = &mut c.node;
    let stats = |n: &mut NodeClient<Channel>, rt: &tokio::runtime::Runtime, id: &str, p: &Path| {
        rt.block_on(n.node_get_volume_stats(NodeGetVolumeStatsRequest {
            volume_id: id.into(),
            volume_path: p.to_string_lossy().into(),
            ..Default::default()
        }))
        .map(|r| r.into_inner())
    };
    for p in [&tb, &sb] {
        assert_eq!(
            stats(n, &c.rt, &a, p).unwrap_err().code(),
            Code::NotFound,
            "{p:?}"
        );
    }
    let st = stats(n, &c.rt, &a, &ta).unwrap();
    assert_eq!(st.usage.len(), 2, "{st:?}");
    assert!(!st.volume_condition.unwrap().abnormal);
    // Paths the volume is not at, whatever they are (an existing
    // directory, a missing path, a file, a mount point of the host): one
    // NOT_FOUND that tells nothing about them.
    let plain_file = home.dir.join("a-file");
    std::fs::write(&plain_file, b"").unwrap();
    let mut said = std::collections::BTreeSet::new();
    for p in [
        home.dir.clone(),
        home.dir.join("missing"),
        plain_file.clone(),
        PathBuf::from("/proc"),
    ] {
        let e = stats(n, &c.rt, &a, &p).unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{p:?}");
        said.insert(e.message().to_string());
    }
    assert_eq!(said.len(), 1, "{said:?}");
    let expand = |n: &mut NodeClient<Channel>,
                  rt: &tokio::runtime::Runtime,
                  id: &str,
                  p: &Path,
                  required: i64,
                  limit: i64| {
        code(rt.block_on(n.node_expand_volume(NodeExpandVolumeRequest {
            volume_id: id.into(),
            volume_path: p.to_string_lossy().into(),
            capacity_range: Some(CapacityRange {
                required_bytes: required,
                limit_bytes: limit,
            }),
            ..Default::default()
        })))
    };
    let gib = GIB;
    assert_eq!(expand(n, &c.rt, &a, &tb, gib, 0), Code::NotFound);
    assert_eq!(expand(n, &c.rt, &a, &home.dir, gib, 0), Code::NotFound);
    // A limit the volume is already past, or below what is required.
    assert_eq!(expand(n, &c.rt, &a, &ta, gib, gib / 2), Code::OutOfRange);
    assert_eq!(expand(n, &c.rt, &a, &ta, 2 * gib, gib), Code::OutOfRange);
    assert_eq!(expand(n, &c.rt, &a, &ta, gib, gib), Code::Ok);
    assert_eq!(expand(n, &c.rt, &a, &sa, gib, 0), Code::Ok);
    // More than the volume has: the controller's to grow, not the node's.
    assert_eq!(expand(n, &c.rt, &a, &ta, 3 * gib, 0), Code::OutOfRange);
    assert_eq!(
        home.volumes()
            .lookup(rexray::volume::VolumeRef::Id(&a))
            .unwrap()
            .unwrap()
            .size,
        1
    );
    held();
    // A target that holds a filesystem mounted where a volume that is no
    // more was (removed behind rexray's back): an unknown id undoes it.
    let ghost = home.mount_point("wrong-ghost");
    let tg = dir("p/ghost");
    for d in [&ghost, &tg] {
        std::fs::create_dir_all(d).unwrap();
    }
    let run = |args: &[&std::ffi::OsStr]| {
        let st = std::process::Command::new(args[0])
            .args(&args[1..])
            .status()
            .unwrap();
        assert!(st.success(), "{args:?}");
    };
    let os = |p: &Path| p.as_os_str().to_owned();
    run(&[
        "mount".as_ref(),
        "-t".as_ref(),
        "tmpfs".as_ref(),
        "ghost".as_ref(),
        &os(&ghost),
    ]);
    run(&["mount".as_ref(), "--bind".as_ref(), &os(&ghost), &os(&tg)]);
    assert_eq!(c.unpublish("nope", &tg), Code::NotFound);
    assert_eq!(count_mounts_at(&tg), 0);
    run(&["umount".as_ref(), &os(&ghost)]);
    // An unknown volume with nothing mounted at the path: nothing there
    // is removed (an empty file or directory is not the plugin's), nor
    // through a link.
    let empty_dir = dir("p/empty");
    std::fs::create_dir_all(&empty_dir).unwrap();
    let link = home.dir.join("a-link");
    std::os::unix::fs::symlink(&plain_file, &link).unwrap();
    for p in [&empty_dir, &plain_file, &link] {
        assert_eq!(c.unpublish("nope", p), Code::NotFound);
        assert!(std::fs::symlink_metadata(p).is_ok(), "{p:?} removed");
    }
    assert_eq!(c.unpublish(&a, &link), Code::Ok);
    assert!(link.is_symlink() && plain_file.exists());
    // A staging path whose mount went behind rexray's back: the volume's
    // condition (abnormal), with no usage of what is underneath.
    assert_eq!(c.unpublish(&a, &ta), Code::Ok);
    run(&["umount".as_ref(), &os(&sa)]);
    let st = stats(&mut c.node, &c.rt, &a, &sa).unwrap();
    assert!(st.usage.is_empty(), "{st:?}");
    assert!(st.volume_condition.unwrap().abnormal);
    // The right ids undo it all.
    for (id, s, t) in [(&a, &sa, &ta), (&b, &sb, &tb)] {
        assert_eq!(c.unpublish(id, t), Code::Ok);
        assert_eq!(c.unstage(id, s), Code::Ok);
        assert_eq!(count_mounts_at(s) + count_mounts_at(t), 0);
    }
    assert!(mounts(&home).is_empty(), "{:?}", mounts(&home));
    assert_eq!(c.delete(&a), Code::Ok);
    assert_eq!(c.delete(&b), Code::Ok);
}

/// A kubelet root reached through a symbolic link (`/var/lib/kubelet` →
/// `/data/kubelet`): the kernel mounts on the real path and mountinfo
/// shows that; every retry and reverse still finds its mount.
#[test]
fn a_kubelet_root_behind_a_symlink_is_one_path() {
    require_root!();
    let home = Home::new();
    let mut c = start(&home, "");
    let real = home.dir.join("data-kubelet");
    std::fs::create_dir_all(&real).unwrap();
    let link = home.dir.join("kubelet");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let (s, t) = (link.join("staging/pv1"), link.join("pods/p1/mount"));
    let (rs, rt) = (real.join("staging/pv1"), real.join("pods/p1/mount"));
    let id = c.create(create_req("linked", GIB)).unwrap().volume_id;
    for _ in 0..2 {
        assert_eq!(c.stage(&id, &s, mount_cap("ext4")), Code::Ok);
        assert_eq!(c.publish(&id, &s, &t, mount_cap("ext4"), false), Code::Ok);
    }
    assert_eq!(count_mounts_at(&rs), 1);
    assert_eq!(count_mounts_at(&rt), 1);
    std::fs::write(t.join("f"), b"through the link").unwrap();
    assert_eq!(std::fs::read(rs.join("f")).unwrap(), b"through the link");
    assert_eq!(c.unpublish(&id, &t), Code::Ok);
    assert_eq!(c.unstage(&id, &s), Code::Ok);
    assert_eq!(count_mounts_at(&rs) + count_mounts_at(&rt), 0);
    assert!(mounts(&home).is_empty(), "{:?}", mounts(&home));
    assert!(home.loops().is_empty());
    assert_eq!(c.delete(&id), Code::Ok);
}

/// CSI names may be any Unicode but control characters: one that is not
/// a rexray name is kept under a name of its own (`csi-<hash>`), the same
/// one each time, and a snapshot likewise.
#[test]
fn any_csi_name_is_a_volume_and_the_same_one_again() {
    require_root!();
    let home = Home::new();
    let mut c = start(&home, "");
    let odd = "sanity vol+1/ü";
    let v = c.create(create_req(odd, GIB)).unwrap();
    assert_eq!(
        c.create(create_req(odd, GIB)).unwrap().volume_id,
        v.volume_id
    );
    let names = home.volume_names();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].starts_with("csi-"), "{names:?}");
    let other = c.create(create_req("sanity vol+2/ü", GIB)).unwrap();
    assert_ne!(other.volume_id, v.volume_id);
    // The name the odd one is kept under, asked for by a CSI name of its
    // own: another volume (two PVs never share one).
    let as_kept = c.create(create_req(&names[0], GIB)).unwrap();
    assert_ne!(as_kept.volume_id, v.volume_id);
    assert_eq!(c.delete(&as_kept.volume_id), Code::Ok);
    let ctl = &mut c.ctl;
    let snap = |name: &str| CreateSnapshotRequest {
        source_volume_id: v.volume_id.clone(),
        name: name.into(),
        ..Default::default()
    };
    let s1 =
        c.rt.block_on(ctl.create_snapshot(snap("nightly 1+1")))
            .unwrap()
            .into_inner()
            .snapshot
            .unwrap();
    let again =
        c.rt.block_on(ctl.create_snapshot(snap("nightly 1+1")))
            .unwrap()
            .into_inner()
            .snapshot
            .unwrap();
    assert_eq!(again.snapshot_id, s1.snapshot_id);
    // Control characters: refused, nothing made.
    assert_eq!(
        c.create(create_req("bad\u{1b}name", GIB))
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    assert_eq!(
        code(c.rt.block_on(c.ctl.delete_snapshot(DeleteSnapshotRequest {
            snapshot_id: s1.snapshot_id.clone(),
            ..Default::default()
        }))),
        Code::Ok
    );
    for id in [&v.volume_id, &other.volume_id] {
        assert_eq!(c.delete(id), Code::Ok);
    }
    assert!(home.volume_names().is_empty());
}

/// The mount points under `home` now, sorted.
fn mounts(home: &Home) -> Vec<PathBuf> {
    let mut m = home.mounts();
    m.sort();
    m
}

#[test]
fn kubelet_sequence_stage_publish_twice_and_back() {
    require_root!();
    let home = Home::new();
    let mut c = start(&home, "");
    let staging = home
        .dir
        .join("kubelet/plugins/kubernetes.io/csi/pv/pv1/globalmount");
    let t1 = home
        .dir
        .join("kubelet/pods/a/volumes/kubernetes.io~csi/pv1/mount");
    let t2 = home
        .dir
        .join("kubelet/pods/b/volumes/kubernetes.io~csi/pv1/mount");
    let v = c.create(create_req("pvc-kubelet", GIB)).unwrap();
    let id = v.volume_id.clone();
    assert!(mounts(&home).is_empty());
    assert!(home.loops().is_empty());

    // Stage: attached, formatted, mounted; the staging path shows it.
    assert_eq!(c.stage(&id, &staging, mount_cap("ext4")), Code::Ok);
    let mp = home.mount_point("pvc-kubelet");
    assert_eq!(mounts(&home), {
        let mut w = vec![mp.clone(), staging.clone()];
        w.sort();
        w
    });
    assert_eq!(home.loops().len(), 1);
    // Again: nothing more.
    assert_eq!(c.stage(&id, &staging, mount_cap("ext4")), Code::Ok);
    assert_eq!(count_mounts_at(&staging), 1);
    let cons = home
        .volumes()
        .consumers(rexray::volume::VolumeRef::Id(&id))
        .unwrap();
    assert_eq!(cons, [format!("csi:{}", staging.display())]);
    // Deleting a staged volume is refused.
    assert_eq!(c.delete(&id), Code::FailedPrecondition);

    // Publish to two pods; again: nothing more.
    assert_eq!(
        c.publish(&id, &staging, &t1, mount_cap("ext4"), false),
        Code::Ok
    );
    assert_eq!(
        c.publish(&id, &staging, &t2, mount_cap("ext4"), false),
        Code::Ok
    );
    assert_eq!(
        c.publish(&id, &staging, &t2, mount_cap("ext4"), false),
        Code::Ok
    );
    assert_eq!(count_mounts_at(&t1), 1);
    assert_eq!(count_mounts_at(&t2), 1);
    // Published read-only elsewhere than it is: refused.
    assert_eq!(
        c.publish(&id, &staging, &t2, mount_cap("ext4"), true),
        Code::AlreadyExists
    );
    // What one pod writes, the other reads, and it is on the volume.
    std::fs::write(t1.join("hello"), b"from a").unwrap();
    assert_eq!(std::fs::read(t2.join("hello")).unwrap(), b"from a");
    assert_eq!(std::fs::read(staging.join("hello")).unwrap(), b"from a");
    assert_eq!(
        std::fs::read(home.data("pvc-kubelet").join("hello")).unwrap(),
        b"from a"
    );
    // Stats of a published path: bytes and inodes, healthy.
    let n = &mut c.node;
    let st =
        c.rt.block_on(n.node_get_volume_stats(NodeGetVolumeStatsRequest {
            volume_id: id.clone(),
            volume_path: t1.to_string_lossy().into(),
            ..Default::default()
        }))
        .unwrap()
        .into_inner();
    assert_eq!(st.usage.len(), 2);
    assert!(st.usage.iter().all(|u| u.total > 0), "{st:?}");
    assert!(!st.volume_condition.unwrap().abnormal);

    // Unpublish one: the other stays.
    assert_eq!(c.unpublish(&id, &t1), Code::Ok);
    assert_eq!(c.unpublish(&id, &t1), Code::Ok);
    assert_eq!(count_mounts_at(&t1), 0);
    assert!(!t1.exists(), "the target is removed");
    assert_eq!(count_mounts_at(&t2), 1);
    assert_eq!(std::fs::read(t2.join("hello")).unwrap(), b"from a");
    assert_eq!(c.unpublish(&id, &t2), Code::Ok);
    assert_eq!(mounts(&home), {
        let mut w = vec![mp.clone(), staging.clone()];
        w.sort();
        w
    });
    // Unstage: unmounted and detached; again: OK.
    assert_eq!(c.unstage(&id, &staging), Code::Ok);
    assert!(mounts(&home).is_empty(), "{:?}", mounts(&home));
    assert!(home.loops().is_empty());
    assert_eq!(c.unstage(&id, &staging), Code::Ok);
    // Staged again: the data is still there (formatted only once).
    assert_eq!(c.stage(&id, &staging, mount_cap("ext4")), Code::Ok);
    assert_eq!(std::fs::read(staging.join("hello")).unwrap(), b"from a");
    assert_eq!(c.unstage(&id, &staging), Code::Ok);
    assert_eq!(c.delete(&id), Code::Ok);
    assert!(home.volume_names().is_empty());
}

/// Paths and flags as kubelet (or a hand) may spell them: a trailing `/`
/// names the same staging path (one consumer, released by the plain
/// spelling), `..` is refused; `ro` among the mount flags is read-only,
/// so a retry of that publication is the same one; a staging path that
/// holds another volume is not published as this one; and unpublishing
/// undoes this node's bind before the backend is asked.
#[test]
fn kubelet_paths_and_flags_are_taken_as_meant() {
    require_root!();
    let home = Home::new();
    let mut c = start(&home, "");
    let a = c.create(create_req("pvc-a", GIB)).unwrap();
    let b = c.create(create_req("pvc-b", GIB)).unwrap();
    let sa = home.dir.join("k/staging/a");
    let sb = home.dir.join("k/staging/b");
    let slash = PathBuf::from(format!("{}/", sa.display()));
    assert_eq!(c.stage(&a.volume_id, &slash, mount_cap("")), Code::Ok);
    assert_eq!(c.stage(&a.volume_id, &sa, mount_cap("")), Code::Ok);
    assert_eq!(c.stage(&b.volume_id, &sb, mount_cap("")), Code::Ok);
    let up = home.dir.join("k/staging/x/../a");
    assert_eq!(
        c.stage(&a.volume_id, &up, mount_cap("")),
        Code::InvalidArgument
    );
    // `ro` in the flags: read-only, and the same publication again.
    let mut ro = mount_cap("");
    if let Some(volume_capability::AccessType::Mount(m)) = &mut ro.access_type {
        m.mount_flags = vec!["ro".into()];
    }
    let ta = home.dir.join("k/pods/a/mount");
    for _ in 0..2 {
        assert_eq!(
            c.publish(&a.volume_id, &sa, &ta, ro.clone(), false),
            Code::Ok
        );
    }
    let e = std::fs::write(ta.join("x"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    // B's staging path is not A's volume.
    let tx = home.dir.join("k/pods/x/mount");
    assert_eq!(
        c.publish(&a.volume_id, &sb, &tx, mount_cap(""), false),
        Code::FailedPrecondition
    );
    assert_eq!(count_mounts_at(&tx), 0);
    // An unpublish naming a volume that is not there, of a target that
    // holds one that is: NOT_FOUND, and the bind stays.
    assert_eq!(c.unpublish("no-such-volume", &ta), Code::NotFound);
    assert_eq!(count_mounts_at(&ta), 1);
    assert_eq!(c.unpublish(&a.volume_id, &ta), Code::Ok);
    assert_eq!(count_mounts_at(&ta), 0);
    // Unstaged by the plain spelling: one consumer, released, detached.
    assert_eq!(c.unstage(&a.volume_id, &sa), Code::Ok);
    assert_eq!(c.unstage(&b.volume_id, &sb), Code::Ok);
    assert!(mounts(&home).is_empty(), "{:?}", mounts(&home));
    assert!(home.loops().is_empty());
    for id in [&a.volume_id, &b.volume_id] {
        assert_eq!(c.delete(id), Code::Ok);
    }
}

/// With remove.disable, DeleteVolume says the volume stays
/// (FAILED_PRECONDITION), as CreateVolume does for create.disable: an OK
/// would have the CO forget a volume whose data is still there.
#[test]
fn a_disabled_remove_is_refused_not_reported_done() {
    require_root!();
    let home = Home::new();
    let mut c = start_with(
        &home,
        "",
        &[(
            "LIBSTORAGE_INTEGRATION_VOLUME_OPERATIONS_REMOVE_DISABLE",
            "true",
        )],
    );
    let v = c.create(create_req("kept", GIB)).unwrap();
    assert_eq!(c.delete(&v.volume_id), Code::FailedPrecondition);
    assert_eq!(home.volume_names(), vec!["kept"]);
}

#[test]
fn kubelet_read_only_and_raw_block() {
    require_root!();
    let home = Home::new();
    let mut c = start(&home, "");
    // Read-only publication.
    let staging = home.dir.join("k/staging/ro");
    let target = home.dir.join("k/pods/ro/mount");
    let v = c.create(create_req("pvc-ro", GIB)).unwrap();
    assert_eq!(c.stage(&v.volume_id, &staging, mount_cap("")), Code::Ok);
    assert_eq!(
        c.publish(&v.volume_id, &staging, &target, mount_cap(""), true),
        Code::Ok
    );
    let e = std::fs::write(target.join("x"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    // The volume's mount is nosuid and nodev; its read-only bind too (a
    // remount naming only `ro` would have dropped them).
    let opts = |p: &std::path::Path| {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let line = info
            .lines()
            .rfind(|l| l.split(' ').nth(4) == Some(p.to_str().unwrap()))
            .unwrap_or_else(|| panic!("no mount at {}", p.display()))
            .to_string();
        line.split(' ')
            .nth(5)
            .unwrap()
            .split(',')
            .map(String::from)
            .collect::<Vec<_>>()
    };
    for p in [&staging, &target] {
        let o = opts(p);
        assert!(
            o.contains(&"nosuid".into()) && o.contains(&"nodev".into()),
            "{}: {o:?}",
            p.display()
        );
    }
    assert!(opts(&target).contains(&"ro".into()));
    // Mount flags of the capability apply to the bind.
    let mut noexec = mount_cap("");
    if let Some(volume_capability::AccessType::Mount(m)) = &mut noexec.access_type {
        m.mount_flags = vec!["noexec".into(), "nosuid".into()];
    }
    let t2 = home.dir.join("k/pods/noexec/mount");
    assert_eq!(
        c.publish(&v.volume_id, &staging, &t2, noexec.clone(), false),
        Code::Ok
    );
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(t2.to_str().unwrap()))
        .unwrap();
    assert!(line.contains("noexec") && line.contains("nosuid"), "{line}");
    assert!(opts(&t2).contains(&"nodev".into()), "{line}");
    // A flag a bind cannot apply: refused before anything is mounted.
    if let Some(volume_capability::AccessType::Mount(m)) = &mut noexec.access_type {
        m.mount_flags = vec!["data=journal".into()];
    }
    let t3 = home.dir.join("k/pods/bad/mount");
    assert_eq!(
        c.publish(&v.volume_id, &staging, &t3, noexec, false),
        Code::InvalidArgument
    );
    assert_eq!(count_mounts_at(&t3), 0);
    // Unstaged while still published: refused, nothing undone.
    let before = mounts(&home);
    assert_eq!(c.unstage(&v.volume_id, &staging), Code::FailedPrecondition);
    assert_eq!(mounts(&home), before);
    for t in [&target, &t2] {
        assert_eq!(c.unpublish(&v.volume_id, t), Code::Ok);
    }
    assert_eq!(c.unstage(&v.volume_id, &staging), Code::Ok);
    assert!(mounts(&home).is_empty());

    // A raw block volume: attached at stage, the device bound onto the
    // target file at publish.
    let b = c.create(create_req("pvc-block", GIB)).unwrap();
    let bstage = home.dir.join("k/staging/block");
    let btarget = home.dir.join("k/pods/block/dev/pvc-block");
    assert_eq!(c.stage(&b.volume_id, &bstage, block_cap()), Code::Ok);
    assert_eq!(home.loops().len(), 1);
    assert!(
        mounts(&home).is_empty(),
        "nothing mounted for a block volume"
    );
    assert_eq!(
        c.publish(&b.volume_id, &bstage, &btarget, block_cap(), false),
        Code::Ok
    );
    assert_eq!(
        c.publish(&b.volume_id, &bstage, &btarget, block_cap(), false),
        Code::Ok
    );
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let md = std::fs::metadata(&btarget).unwrap();
    assert!(md.file_type().is_block_device());
    let dev = std::fs::metadata(&home.loops()[0]).unwrap();
    assert_eq!(md.rdev(), dev.rdev());
    // Unstaged while published: refused, the device kept (detached, it
    // would be reused for another volume under the pod), and so is the
    // volume's removal.
    assert_eq!(c.unstage(&b.volume_id, &bstage), Code::FailedPrecondition);
    assert_eq!(home.loops().len(), 1);
    assert_eq!(c.delete(&b.volume_id), Code::FailedPrecondition);
    // Another block volume published where this one's device is bound:
    // the target holds another device, ALREADY_EXISTS.
    let b2 = c.create(create_req("pvc-block2", GIB)).unwrap();
    let bstage2 = home.dir.join("k/staging/block2");
    assert_eq!(c.stage(&b2.volume_id, &bstage2, block_cap()), Code::Ok);
    assert_eq!(
        c.publish(&b2.volume_id, &bstage2, &btarget, block_cap(), false),
        Code::AlreadyExists
    );
    assert_eq!(c.unstage(&b2.volume_id, &bstage2), Code::Ok);
    assert_eq!(c.delete(&b2.volume_id), Code::Ok);
    assert_eq!(c.unpublish(&b.volume_id, &btarget), Code::Ok);
    assert!(!btarget.exists());
    assert_eq!(c.unstage(&b.volume_id, &bstage), Code::Ok);
    assert!(home.loops().is_empty());
    for id in [&v.volume_id, &b.volume_id] {
        assert_eq!(c.delete(id), Code::Ok);
    }
}

#[test]
fn docker_and_csi_share_a_volume_and_keep_both_consumers() {
    require_root!();
    let home = Home::new();
    let mut c = start(&home, "");
    let v = c.create(create_req("shared", GIB)).unwrap();
    let id = v.volume_id.clone();
    // A container mounts it first, through the Docker plugin.
    let sock = home.dir.join("docker.sock");
    let mount = r#"{"Name":"shared","ID":"c0ffee"}"#;
    let m = crate::docker::ok(crate::docker::post(&sock, "/VolumeDriver.Mount", mount));
    let data = PathBuf::from(m["Mountpoint"].as_str().unwrap());
    assert_eq!(data, home.data("shared"));
    std::fs::write(data.join("a"), b"docker").unwrap();
    // Then kubelet stages and publishes it on the same node.
    let staging = home.dir.join("k/staging/shared");
    let target = home.dir.join("k/pods/s/mount");
    assert_eq!(c.stage(&id, &staging, mount_cap("")), Code::Ok);
    assert_eq!(
        c.publish(&id, &staging, &target, mount_cap(""), false),
        Code::Ok
    );
    assert_eq!(std::fs::read(target.join("a")).unwrap(), b"docker");
    let vols = home.volumes();
    let mut cons = vols.consumers(rexray::volume::VolumeRef::Id(&id)).unwrap();
    cons.sort();
    assert_eq!(cons.len(), 2, "{cons:?}");
    assert!(
        cons.contains(&format!("csi:{}", staging.display())),
        "{cons:?}"
    );
    // CSI lets go: the container's mount stays.
    assert_eq!(c.unpublish(&id, &target), Code::Ok);
    assert_eq!(c.unstage(&id, &staging), Code::Ok);
    assert_eq!(count_mounts_at(&home.mount_point("shared")), 1);
    assert_eq!(std::fs::read(data.join("a")).unwrap(), b"docker");
    assert_eq!(home.loops().len(), 1);
    // And the other way round: staged again, the container goes.
    assert_eq!(c.stage(&id, &staging, mount_cap("")), Code::Ok);
    crate::docker::ok(crate::docker::post(&sock, "/VolumeDriver.Unmount", mount));
    assert_eq!(count_mounts_at(&staging), 1);
    assert_eq!(std::fs::read(staging.join("a")).unwrap(), b"docker");
    assert_eq!(c.unstage(&id, &staging), Code::Ok);
    assert!(mounts(&home).is_empty());
    assert!(home.loops().is_empty());
    assert_eq!(c.delete(&id), Code::Ok);
}

#[test]
fn csi_modes_and_sockets() {
    require_root!();
    // A controller-only endpoint serves no Node service.
    let home = Home::new();
    let mut c = start(&home, "  csi:\n    mode: controller\n");
    let n = &mut c.node;
    assert_eq!(
        code(c.rt.block_on(n.node_get_info(NodeGetInfoRequest {}))),
        Code::Unimplemented
    );
    let ctl = &mut c.ctl;
    assert_eq!(
        code(c.rt.block_on(ctl.controller_get_capabilities(ControllerGetCapabilitiesRequest {}))),
        Code::Ok
    );
    let sock = c.sock.clone();
    // SIGTERM with the client's connection still open: the service
    // stops, and removes its socket.
    assert_eq!(c.svc.stop(), Some(0));
    drop(c);
    assert!(!sock.exists());
    // A stale socket (nothing serves it) is replaced; a file that is not
    // a socket is refused, and nothing starts.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let c = start(&home, "");
    drop(c);
    std::fs::write(&sock, b"not a socket").unwrap();
    let docker = format!("unix://{}", home.dir.join("docker.sock").display());
    let o = run_cmd(
        home.command("rexray")
            .env("REXRAY_MODULES_DEFAULT_DOCKER_HOST", &docker)
            .args(["service", "start"]),
    );
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("not a socket"), "{}", o.stderr);
    assert_eq!(std::fs::read(&sock).unwrap(), b"not a socket");
}

/// kubelet's retries finish what a service killed mid-call left: a crash
/// at every step of NodeStageVolume (attach, format, mount, the staging
/// bind, the record), then between NodeStage and NodePublish. The retry
/// after a restart stages it once (no stacked mounts, one loop device),
/// and the volume is released cleanly at the end.
#[cfg(feature = "failpoints")]
#[test]
fn kubelet_retries_finish_what_a_crashed_service_left() {
    require_root!();
    let home = Home::new();
    let staging = home.dir.join("k/staging/crash");
    let target = home.dir.join("k/pods/crash/mount");
    let mut fps: Vec<&str> = MOUNT_FAILPOINTS.to_vec();
    fps.push("csi::after-stage-bind");
    for (i, fp) in fps.iter().enumerate() {
        let name = format!("pvc-crash-{i}");
        let set = format!("{fp}=return");
        let mut c = start_with(&home, "", &[("FAILPOINTS", &set)]);
        let id = c.create(create_req(&name, GIB)).unwrap().volume_id;
        assert_ne!(c.stage(&id, &staging, mount_cap("")), Code::Ok, "{fp}");
        c.svc.wait_exit();
        drop(c);
        let mut c = start(&home, "");
        assert_eq!(c.stage(&id, &staging, mount_cap("")), Code::Ok, "{fp}");
        assert_eq!(count_mounts_at(&staging), 1, "{fp}");
        assert_eq!(count_mounts_at(&home.mount_point(&name)), 1, "{fp}");
        assert_eq!(home.loops().len(), 1, "{fp}");
        assert_eq!(
            c.publish(&id, &staging, &target, mount_cap(""), false),
            Code::Ok,
            "{fp}"
        );
        std::fs::write(target.join("f"), fp).unwrap();
        assert_eq!(c.unpublish(&id, &target), Code::Ok, "{fp}");
        assert_eq!(c.unstage(&id, &staging), Code::Ok, "{fp}");
        assert!(mounts(&home).is_empty(), "{fp}: {:?}", mounts(&home));
        assert!(home.loops().is_empty(), "{fp}");
        assert_eq!(c.delete(&id), Code::Ok, "{fp}");
    }
    // Killed between NodeStage and NodePublish: the publish after the
    // restart finds the staged volume.
    let mut c = start(&home, "");
    let id = c.create(create_req("pvc-between", GIB)).unwrap().volume_id;
    assert_eq!(c.stage(&id, &staging, mount_cap("")), Code::Ok);
    crate::docker::sigkill(c.svc.pid());
    c.svc.wait_exit();
    drop(c);
    let mut c = start(&home, "");
    assert_eq!(
        c.publish(&id, &staging, &target, mount_cap(""), false),
        Code::Ok
    );
    assert_eq!(count_mounts_at(&target), 1);
    assert_eq!(c.unpublish(&id, &target), Code::Ok);
    assert_eq!(c.unstage(&id, &staging), Code::Ok);
    assert!(mounts(&home).is_empty());
    assert!(home.loops().is_empty());
    assert_eq!(c.delete(&id), Code::Ok);
}

/// A call for a volume another call is working on is ABORTED at once
/// (never queued), and a call's deadline ends it with DEADLINE_EXCEEDED
/// while the work goes on: kubelet's retry then finds it done.
#[cfg(feature = "failpoints")]
#[test]
fn a_busy_volume_is_aborted_and_a_deadline_ends_the_call() {
    require_root!();
    let home = Home::new();
    let mut c = start_with(
        &home,
        "",
        &[("FAILPOINTS", "volume::mount-after-attach=sleep(3000)")],
    );
    let id = c.create(create_req("pvc-busy", GIB)).unwrap().volume_id;
    let staging = home.dir.join("k/staging/busy");
    let mut req = tonic::Request::new(NodeStageVolumeRequest {
        volume_id: id.clone(),
        staging_target_path: staging.to_string_lossy().into(),
        volume_capability: Some(mount_cap("")),
        ..Default::default()
    });
    req.set_timeout(std::time::Duration::from_millis(1000));
    let n = &mut c.node;
    assert_eq!(
        code(c.rt.block_on(n.node_stage_volume(req))),
        Code::DeadlineExceeded
    );
    // The stage goes on; a second call for the volume is refused.
    assert_eq!(c.stage(&id, &staging, mount_cap("")), Code::Aborted);
    assert_eq!(c.unstage(&id, &staging), Code::Aborted);
    // Other volumes are not held up by it.
    let other = c.create(create_req("pvc-other", GIB)).unwrap().volume_id;
    // kubelet retries (bounded): the stage finishes and the retry is OK.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match c.stage(&id, &staging, mount_cap("")) {
            Code::Ok => break,
            Code::Aborted => {}
            other => panic!("retry: {other:?}"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the stage never ended"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(count_mounts_at(&staging), 1);
    assert_eq!(c.unstage(&id, &staging), Code::Ok);
    assert!(mounts(&home).is_empty());
    assert!(home.loops().is_empty());
    for v in [&id, &other] {
        assert_eq!(c.delete(v), Code::Ok);
    }
}

/// A csi-only service (no Docker module, as the Kubernetes manifests run
/// it) cleans up at start the mount a stage killed before its record left.
#[cfg(feature = "failpoints")]
#[test]
fn a_csi_only_service_cleans_up_a_crashed_stage_at_start() {
    require_root!();
    let home = Home::new();
    let no_docker = "    default-docker:\n      disabled: true\n";
    let staging = home.dir.join("k/staging/alone");
    let mut c = start_with(
        &home,
        no_docker,
        &[("FAILPOINTS", "volume::mount-after-mount=return")],
    );
    let id = c.create(create_req("pvc-alone", GIB)).unwrap().volume_id;
    assert_ne!(c.stage(&id, &staging, mount_cap("")), Code::Ok);
    c.svc.wait_exit();
    drop(c);
    let mp = home.mount_point("pvc-alone");
    assert_eq!(count_mounts_at(&mp), 1, "left by the crash");
    let mut c = start(&home, no_docker);
    assert_eq!(count_mounts_at(&mp), 0, "cleaned up at start");
    assert!(home.loops().is_empty());
    assert_eq!(c.stage(&id, &staging, mount_cap("")), Code::Ok);
    assert_eq!(c.unstage(&id, &staging), Code::Ok);
    assert!(mounts(&home).is_empty());
    assert_eq!(c.delete(&id), Code::Ok);
}

// ---- ControllerPublishVolume / ControllerUnpublishVolume --------------------

impl Csi {
    fn node_id(&mut self) -> String {
        let n = &mut self.node;
        self.rt
            .block_on(n.node_get_info(NodeGetInfoRequest {}))
            .unwrap()
            .into_inner()
            .node_id
    }

    fn ctl_publish(
        &mut self,
        id: &str,
        node: &str,
        cap: Option<VolumeCapability>,
        readonly: bool,
    ) -> Result<std::collections::HashMap<String, String>, tonic::Status> {
        let c = &mut self.ctl;
        self.rt
            .block_on(c.controller_publish_volume(ControllerPublishVolumeRequest {
                volume_id: id.into(),
                node_id: node.into(),
                volume_capability: cap,
                readonly,
                ..Default::default()
            }))
            .map(|r| r.into_inner().publish_context)
    }

    fn ctl_unpublish(&mut self, id: &str, node: &str) -> Code {
        let c = &mut self.ctl;
        code(self.rt.block_on(
            c.controller_unpublish_volume(ControllerUnpublishVolumeRequest {
                volume_id: id.into(),
                node_id: node.into(),
                ..Default::default()
            }),
        ))
    }

    fn stage_published(
        &mut self,
        id: &str,
        staging: &Path,
        cap: VolumeCapability,
        ctx: &std::collections::HashMap<String, String>,
    ) -> Code {
        let n = &mut self.node;
        code(
            self.rt
                .block_on(n.node_stage_volume(NodeStageVolumeRequest {
                    volume_id: id.into(),
                    publish_context: ctx.clone(),
                    staging_target_path: staging.to_string_lossy().into(),
                    volume_capability: Some(cap),
                    ..Default::default()
                })),
        )
    }

    /// The nodes ControllerGetVolume says the volume is published to.
    fn published_nodes(&mut self, id: &str) -> Vec<String> {
        let c = &mut self.ctl;
        self.rt
            .block_on(c.controller_get_volume(ControllerGetVolumeRequest {
                volume_id: id.into(),
            }))
            .unwrap()
            .into_inner()
            .status
            .unwrap()
            .published_node_ids
    }
}

/// The holds this node's record of a volume has.
fn holds(home: &Home, id: &str) -> Vec<String> {
    home.volumes()
        .mount_record(rexray::volume::VolumeRef::Id(id))
        .unwrap()
        .map(|r| r.holds.into_iter().collect())
        .unwrap_or_default()
}

/// external-attacher's and kubelet's sequence with the attach step:
/// ControllerPublish → NodeStage (with the publish context) → NodePublish
/// ×2 → writes → NodeUnpublish → NodeUnstage → ControllerUnpublish →
/// DeleteVolume, with the mount table and the controller's hold checked
/// between the steps. A Docker unmount of the published volume, and
/// NodeUnstage, leave the controller's hold alone.
#[test]
fn kubelet_sequence_with_controller_publish() {
    require_root!();
    let home = Home::new();
    let mut c = start(&home, "");
    let caps = {
        let ctl = &mut c.ctl;
        c.rt.block_on(ctl.controller_get_capabilities(ControllerGetCapabilitiesRequest {}))
            .unwrap()
            .into_inner()
            .capabilities
    };
    let publish_cap = controller_service_capability::rpc::Type::PublishUnpublishVolume as i32;
    assert!(
        caps.iter().any(|c| matches!(&c.r#type,
            Some(controller_service_capability::Type::Rpc(r)) if r.r#type == publish_cap)),
        "{caps:?}"
    );
    let node = c.node_id();
    let staging = home.dir.join("k/staging/pub");
    let t1 = home.dir.join("k/pods/p1/mount");
    let t2 = home.dir.join("k/pods/p2/mount");
    let id = c.create(create_req("pvc-pub", GIB)).unwrap().volume_id;

    // Publish: the controller's hold, nothing on the node yet.
    let ctx = c
        .ctl_publish(&id, &node, Some(mount_cap("")), false)
        .unwrap();
    let token = ctx.get("attachToken").cloned().expect("attachToken");
    assert!(!token.is_empty());
    assert_eq!(c.published_nodes(&id), [node.as_str()]);
    assert!(home.loops().is_empty());
    assert!(mounts(&home).is_empty());
    // Again: the same answer.
    let again = c
        .ctl_publish(&id, &node, Some(mount_cap("")), false)
        .unwrap();
    assert_eq!(again, ctx);

    // Stage with the token: attached here, mounted, the hold recorded.
    assert_eq!(
        c.stage_published(&id, &staging, mount_cap(""), &ctx),
        Code::Ok
    );
    assert_eq!(
        c.stage_published(&id, &staging, mount_cap(""), &ctx),
        Code::Ok
    );
    let mp = home.mount_point("pvc-pub");
    assert_eq!(mounts(&home), {
        let mut w = vec![mp.clone(), staging.clone()];
        w.sort();
        w
    });
    assert_eq!(home.loops().len(), 1);
    assert_eq!(holds(&home, &id), [rexray::volume::PUBLISHED_HOLDER]);
    for t in [&t1, &t2, &t2] {
        assert_eq!(c.publish(&id, &staging, t, mount_cap(""), false), Code::Ok);
    }
    std::fs::write(t1.join("f"), b"published").unwrap();
    assert_eq!(std::fs::read(t2.join("f")).unwrap(), b"published");
    // Unpublished from the node while staged there: refused, nothing
    // changes.
    assert_eq!(c.ctl_unpublish(&id, &node), Code::FailedPrecondition);
    assert_eq!(count_mounts_at(&t1), 1);
    assert_eq!(c.published_nodes(&id), [node.as_str()]);

    // A container mounts it too and goes: the controller's hold stays.
    let sock = home.dir.join("docker.sock");
    let mount = r#"{"Name":"pvc-pub","ID":"feed"}"#;
    crate::docker::ok(crate::docker::post(&sock, "/VolumeDriver.Mount", mount));
    crate::docker::ok(crate::docker::post(&sock, "/VolumeDriver.Unmount", mount));
    assert_eq!(count_mounts_at(&staging), 1);
    assert_eq!(c.published_nodes(&id), [node.as_str()]);

    for t in [&t1, &t2] {
        assert_eq!(c.unpublish(&id, t), Code::Ok);
    }
    // Unstage: unmounted, the device let go of here, the hold kept.
    assert_eq!(c.unstage(&id, &staging), Code::Ok);
    assert!(mounts(&home).is_empty(), "{:?}", mounts(&home));
    assert!(home.loops().is_empty());
    assert_eq!(c.published_nodes(&id), [node.as_str()]);
    assert_eq!(c.unstage(&id, &staging), Code::Ok);
    // Deleting a published volume is refused.
    assert_eq!(c.delete(&id), Code::FailedPrecondition);
    // Staged again from the same publication: the data is there.
    assert_eq!(
        c.stage_published(&id, &staging, mount_cap(""), &ctx),
        Code::Ok
    );
    assert_eq!(std::fs::read(staging.join("f")).unwrap(), b"published");
    assert_eq!(c.unstage(&id, &staging), Code::Ok);

    // Unpublish: the hold goes; again: OK.
    assert_eq!(c.ctl_unpublish(&id, &node), Code::Ok);
    assert!(c.published_nodes(&id).is_empty());
    assert!(holds(&home, &id).is_empty(), "{:?}", holds(&home, &id));
    assert_eq!(c.ctl_unpublish(&id, &node), Code::Ok);
    assert!(home.loops().is_empty());
    assert_eq!(c.delete(&id), Code::Ok);
    // A volume that is gone unpublishes fine.
    assert_eq!(c.ctl_unpublish(&id, &node), Code::Ok);

    // Without a publish context NodeStage attaches by itself, as before.
    let id = c.create(create_req("pvc-nopub", GIB)).unwrap().volume_id;
    assert_eq!(c.stage(&id, &staging, mount_cap("")), Code::Ok);
    assert_eq!(c.published_nodes(&id), [node.as_str()]);
    assert_eq!(c.unstage(&id, &staging), Code::Ok);
    assert!(c.published_nodes(&id).is_empty());
    assert!(home.loops().is_empty());
    assert_eq!(c.delete(&id), Code::Ok);
}

/// The status codes of ControllerPublish and ControllerUnpublish, as the
/// CSI spec and csi-sanity state them, and a raw block volume staged from
/// a publication.
#[test]
fn sanity_controller_publish() {
    require_root!();
    let home = Home::new();
    let mut c = start(&home, "  csi:\n    maxVolumesPerNode: 2\n");
    let node = c.node_id();
    let id = c.create(create_req("pvc-codes", GIB)).unwrap().volume_id;
    let pc = |r: Result<std::collections::HashMap<String, String>, tonic::Status>| match r {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    };
    let cap = Some(mount_cap(""));
    assert_eq!(
        pc(c.ctl_publish("", &node, cap.clone(), false)),
        Code::InvalidArgument
    );
    assert_eq!(
        pc(c.ctl_publish(&id, "", cap.clone(), false)),
        Code::InvalidArgument
    );
    assert_eq!(
        pc(c.ctl_publish(&id, &node, None, false)),
        Code::InvalidArgument
    );
    assert_eq!(
        pc(c.ctl_publish("no-such-volume", &node, cap.clone(), false)),
        Code::NotFound
    );
    assert_eq!(
        pc(c.ctl_publish(&id, "some-fake-node-id", cap.clone(), false)),
        Code::NotFound
    );
    assert_eq!(c.ctl_unpublish("", &node), Code::InvalidArgument);
    assert_eq!(c.ctl_unpublish("no-such-volume", &node), Code::Ok);
    assert_eq!(c.ctl_unpublish(&id, &node), Code::Ok);
    assert!(c.published_nodes(&id).is_empty());

    // Published, then again with other options: ALREADY_EXISTS.
    assert_eq!(pc(c.ctl_publish(&id, &node, cap.clone(), false)), Code::Ok);
    assert_eq!(
        pc(c.ctl_publish(&id, &node, cap.clone(), true)),
        Code::AlreadyExists
    );
    assert_eq!(
        pc(c.ctl_publish(&id, &node, Some(block_cap()), false)),
        Code::AlreadyExists
    );
    assert_eq!(pc(c.ctl_publish(&id, &node, cap.clone(), false)), Code::Ok);
    assert_eq!(c.ctl_unpublish(&id, &node), Code::Ok);
    // Node ids compare without case, every step alike: published under
    // another spelling, it is the same node's, and unpublished as such.
    let upper = node.to_uppercase();
    if upper != node {
        assert_eq!(pc(c.ctl_publish(&id, &upper, cap.clone(), false)), Code::Ok);
        assert_eq!(pc(c.ctl_publish(&id, &node, cap.clone(), false)), Code::Ok);
        assert_eq!(c.published_nodes(&id), [node.as_str()]);
        assert_eq!(c.ctl_unpublish(&id, &upper), Code::Ok);
        assert!(c.published_nodes(&id).is_empty());
    }
    // Unpublished, it may be published read-only.
    assert_eq!(pc(c.ctl_publish(&id, &node, cap.clone(), true)), Code::Ok);
    assert_eq!(
        c.ctl_unpublish(&id, ""),
        Code::Ok,
        "no node: from every node"
    );
    assert!(c.published_nodes(&id).is_empty());

    // Held by another instance: FAILED_PRECONDITION, nothing changes.
    let other = rexray::model::InstanceId {
        id: "another-node".into(),
        ..home.volumes().instance().clone()
    };
    let vols = home.volumes();
    vols.publish_to(rexray::volume::VolumeRef::Id(&id), &other)
        .unwrap();
    assert_eq!(
        pc(c.ctl_publish(&id, &node, cap.clone(), false)),
        Code::FailedPrecondition
    );
    assert_eq!(c.published_nodes(&id), ["another-node"]);
    vols.unpublish_from(rexray::volume::VolumeRef::Id(&id), &other)
        .unwrap();

    // The node's maximum (2): a third volume is RESOURCE_EXHAUSTED.
    let ids: Vec<String> = (0..3)
        .map(|i| {
            c.create(create_req(&format!("pvc-max-{i}"), GIB))
                .unwrap()
                .volume_id
        })
        .collect();
    assert_eq!(
        pc(c.ctl_publish(&ids[0], &node, cap.clone(), false)),
        Code::Ok
    );
    assert_eq!(
        pc(c.ctl_publish(&ids[1], &node, cap.clone(), false)),
        Code::Ok
    );
    assert_eq!(
        pc(c.ctl_publish(&ids[2], &node, cap.clone(), false)),
        Code::ResourceExhausted
    );
    // Publishing one it holds again is not one more.
    assert_eq!(
        pc(c.ctl_publish(&ids[1], &node, cap.clone(), false)),
        Code::Ok
    );
    for i in &ids {
        assert_eq!(c.ctl_unpublish(i, &node), Code::Ok);
    }

    // A raw block volume staged from a publication.
    let ctx = c.ctl_publish(&id, &node, Some(block_cap()), false).unwrap();
    let staging = home.dir.join("k/staging/blk");
    let target = home.dir.join("k/pods/blk/dev");
    assert_eq!(
        c.stage_published(&id, &staging, block_cap(), &ctx),
        Code::Ok
    );
    assert_eq!(home.loops().len(), 1);
    assert_eq!(
        c.publish(&id, &staging, &target, block_cap(), false),
        Code::Ok
    );
    assert_eq!(c.ctl_unpublish(&id, &node), Code::FailedPrecondition);
    assert_eq!(c.unpublish(&id, &target), Code::Ok);
    assert_eq!(c.unstage(&id, &staging), Code::Ok);
    assert!(home.loops().is_empty());
    assert_eq!(c.published_nodes(&id), [node.as_str()]);
    assert_eq!(c.ctl_unpublish(&id, &node), Code::Ok);
    assert!(mounts(&home).is_empty());
    for i in ids.iter().chain([&id]) {
        assert_eq!(c.delete(i), Code::Ok);
    }
}

/// The service killed between ControllerPublish and NodeStage, and in the
/// middle of a NodeStage with the publish context: the clean-up at the
/// next start leaves the controller's hold alone, and kubelet's retry
/// stages the volume once.
#[cfg(feature = "failpoints")]
#[test]
fn a_crash_between_publish_and_stage_keeps_the_controllers_hold() {
    require_root!();
    let home = Home::new();
    let staging = home.dir.join("k/staging/pubcrash");
    let no_docker = "    default-docker:\n      disabled: true\n";
    let fps = [
        "",
        "volume::published-before-resolve",
        "volume::mount-after-attach",
        "volume::mount-after-mount",
        "csi::after-stage-bind",
    ];
    for (i, fp) in fps.iter().enumerate() {
        let name = format!("pvc-pubcrash-{i}");
        let set = format!("{fp}=return");
        let env: Vec<(&str, &str)> = if fp.is_empty() {
            Vec::new()
        } else {
            vec![("FAILPOINTS", set.as_str())]
        };
        let mut c = start_with(&home, no_docker, &env);
        let node = c.node_id();
        let id = c.create(create_req(&name, GIB)).unwrap().volume_id;
        let ctx = c
            .ctl_publish(&id, &node, Some(mount_cap("")), false)
            .unwrap();
        if fp.is_empty() {
            crate::docker::sigkill(c.svc.pid());
        } else {
            assert_ne!(
                c.stage_published(&id, &staging, mount_cap(""), &ctx),
                Code::Ok,
                "{fp}"
            );
        }
        c.svc.wait_exit();
        drop(c);
        // The start's clean-up: the hold stays.
        let mut c = start(&home, no_docker);
        assert_eq!(c.published_nodes(&id), [node.as_str()], "{fp}");
        assert_eq!(
            c.stage_published(&id, &staging, mount_cap(""), &ctx),
            Code::Ok,
            "{fp}"
        );
        assert_eq!(count_mounts_at(&staging), 1, "{fp}");
        assert_eq!(home.loops().len(), 1, "{fp}");
        assert_eq!(c.unstage(&id, &staging), Code::Ok, "{fp}");
        assert_eq!(c.published_nodes(&id), [node.as_str()], "{fp}");
        assert_eq!(c.ctl_unpublish(&id, &node), Code::Ok, "{fp}");
        assert!(mounts(&home).is_empty(), "{fp}: {:?}", mounts(&home));
        assert!(home.loops().is_empty(), "{fp}");
        assert_eq!(c.delete(&id), Code::Ok, "{fp}");
    }
}
