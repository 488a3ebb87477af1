//! The Controller service: volumes and snapshots, by the workflows.
//!
//! Volume ids are rexray's volume ids; names are CSI's names (kubelet's
//! `pvc-…`), which are valid rexray names. ControllerPublish and
//! ControllerUnpublish are in [`super::publish`].

use super::proto::controller_server::Controller;
use super::proto::*;
use super::{bytes, check_capability, deadline, missing, status, Csi, GIB};
use crate::model::{ContentSource, CreateOptions, Snapshot as RexSnapshot, Volume as RexVolume};
use crate::volume::{CopySource, Created, VolumeRef};
use crate::Kind;
use tonic::{Request, Response, Status};

/// The size, in GiB, a capacity range asks for: the required bytes
/// rounded up to whole GiB; when none are required, `default`, or the
/// whole GiB under the limit when that is less; refused with OUT_OF_RANGE
/// when the limit is below that.
fn size_for(range: Option<&CapacityRange>, default: u64) -> Result<u64, Status> {
    let Some(r) = range else {
        return Ok(default);
    };
    if r.required_bytes < 0 || r.limit_bytes < 0 {
        return Err(Status::invalid_argument(
            "capacity_range: required_bytes and limit_bytes must not be negative",
        ));
    }
    if r.limit_bytes > 0 && r.required_bytes > r.limit_bytes {
        return Err(Status::invalid_argument(format!(
            "capacity_range: required_bytes {} is more than limit_bytes {}",
            r.required_bytes, r.limit_bytes
        )));
    }
    let gib = if r.required_bytes > 0 {
        (r.required_bytes as u64).div_ceil(GIB)
    } else if r.limit_bytes > 0 {
        default.min(r.limit_bytes as u64 / GIB)
    } else {
        default
    }
    .max(1);
    if r.limit_bytes > 0 && gib.saturating_mul(GIB) > r.limit_bytes as u64 {
        return Err(Status::out_of_range(format!(
            "capacity_range: volumes are sized in whole GiB; {gib} GiB is more than limit_bytes {}",
            r.limit_bytes
        )));
    }
    if gib > crate::input::MAX_SIZE_GIB {
        return Err(Status::out_of_range(format!(
            "capacity_range: the largest volume is {} GiB",
            crate::input::MAX_SIZE_GIB
        )));
    }
    Ok(gib)
}

/// The name a CSI volume or snapshot name is kept under. The spec lets a
/// CO name them with any Unicode string but control characters; rexray's
/// names are narrower, as they name files and mount points. A CSI name
/// that is a rexray name, and one the driver takes (`fits`: an S3
/// bucket's are lower case), is kept as it is (Kubernetes' `pvc-<uuid>`
/// and `snapshot-<uuid>` are); any other as `csi-` and the first 32 hex
/// digits of its SHA-256 (a name every driver takes), so the same name is
/// always the same volume and CreateVolume stays idempotent. A name of the
/// hashed form itself (`csi-` and 32 hex digits) is hashed too, so no CSI
/// name can be kept as what another was hashed to.
fn storage_name(what: &str, name: &str, fits: impl Fn(&str) -> bool) -> Result<String, Status> {
    let banned = |c: char| matches!(c as u32, 0..=0x8 | 0xB | 0xC | 0xE..=0x1F | 0x7F..=0x9F);
    if let Some(c) = name.chars().find(|c| banned(*c)) {
        return Err(Status::invalid_argument(format!(
            "{what} name {} contains the control character U+{:04X}, which CSI names may not",
            crate::input::quote(name),
            c as u32
        )));
    }
    let hashed_form = name
        .strip_prefix("csi-")
        .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    if crate::input::name_of(what, name).is_ok() && fits(name) && !hashed_form {
        return Ok(name.to_string());
    }
    let d = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    let hex: String = d.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(format!("csi-{hex}"))
}

/// Whether a volume of `gib` GiB meets a capacity range.
fn fits(range: Option<&CapacityRange>, gib: u64) -> bool {
    let b = bytes(gib);
    range.is_none_or(|r| b >= r.required_bytes && (r.limit_bytes == 0 || b <= r.limit_bytes))
}

/// The parameters of a CreateVolume, parsed by the one options parser;
/// the keys Kubernetes reserves (`csi.storage.k8s.io/…`) are dropped.
fn parameters(
    params: &std::collections::HashMap<String, String>,
) -> Result<crate::options::Parsed, Status> {
    let mut pairs: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| !k.starts_with("csi.storage.k8s.io/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    pairs.sort();
    crate::options::CSI.parse(&pairs).map_err(status)
}

/// How existing volume `v` differs from what a CreateVolume of its name
/// asks for (`opts`: the parameters and the capability's fs_type; `asked`:
/// the content source), if it does. Only what the request names and the
/// volume records is compared: a volume that records no source (made
/// blank, or by a driver or release that kept none) is not told apart
/// from a copy.
fn differs(v: &RexVolume, opts: &CreateOptions, asked: Option<&ContentSource>) -> Option<String> {
    if let Some(t) = opts.volume_type.as_deref().filter(|t| *t != v.volume_type) {
        return Some(format!("with type {:?}, not {t:?}", v.volume_type));
    }
    if let Some(i) = opts.iops.filter(|i| *i != v.iops) {
        return Some(format!("with {} IOPS, not {i}", v.iops));
    }
    if let Some(z) = opts
        .availability_zone
        .as_deref()
        .filter(|z| *z != v.availability_zone)
    {
        return Some(format!(
            "in availability zone {:?}, not {z:?}",
            v.availability_zone
        ));
    }
    if let (Some(f), Some(has)) = (opts.fs_type, v.fields.get("fsType")) {
        if f.as_str() != has {
            return Some(format!("with fsType {has}, not {}", f.as_str()));
        }
    }
    match (v.content_source(), asked) {
        (Some(made), Some(a)) if &made != a => Some(format!("as a copy of {made}, not of {a}")),
        (Some(made), None) => Some(format!(
            "as a copy of {made}, and no content source was asked for"
        )),
        _ => None,
    }
}

/// A volume as CSI shows it.
fn volume(csi: &Csi, v: &RexVolume, source: Option<VolumeContentSource>) -> Volume {
    let mut context = std::collections::HashMap::new();
    context.insert("name".to_string(), v.name.clone());
    if let Some(f) = v.fields.get("fsType") {
        context.insert("fsType".to_string(), f.clone());
    }
    Volume {
        capacity_bytes: bytes(v.size),
        volume_id: v.id.clone(),
        volume_context: context,
        content_source: source,
        accessible_topology: csi.accessible(),
    }
}

/// A snapshot as CSI shows it.
fn snapshot(s: &RexSnapshot) -> Snapshot {
    let creation_time = humantime::parse_rfc3339_weak(&s.start_time)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| prost_types::Timestamp {
            seconds: d.as_secs() as i64,
            nanos: d.subsec_nanos() as i32,
        });
    Snapshot {
        size_bytes: bytes(s.volume_size),
        snapshot_id: s.id.clone(),
        source_volume_id: s.volume_id.clone(),
        creation_time,
        ready_to_use: true,
        group_snapshot_id: String::new(),
    }
}

/// The page of `n` entries a token asks for: (start, end, next token).
fn page(n: usize, max_entries: i32, token: &str) -> Result<(usize, usize, String), Status> {
    if max_entries < 0 {
        return Err(Status::invalid_argument("max_entries must not be negative"));
    }
    let start = if token.is_empty() {
        0
    } else {
        // A token given before entries were removed may be past the end
        // now: an empty page, not an error.
        match token.parse::<usize>() {
            Ok(i) => i.min(n),
            _ => {
                return Err(Status::aborted(format!(
                    "starting_token {} is not a token this plugin gave",
                    crate::input::quote(token)
                )))
            }
        }
    };
    let end = if max_entries == 0 {
        n
    } else {
        (start + max_entries as usize).min(n)
    };
    let next = if end < n {
        end.to_string()
    } else {
        String::new()
    };
    Ok((start, end, next))
}

/// Whether `id` can be a volume id at all; one that cannot names nothing.
fn plausible_id(id: &str) -> bool {
    crate::input::volume_id(id).is_ok()
}

/// Whether `id` can be a snapshot id at all (rbd's are
/// `<pool>.<image>@<snap>`); one that cannot names nothing.
fn plausible_snapshot_id(id: &str) -> bool {
    crate::input::snapshot_id(id).is_ok()
}

impl Csi {
    pub(super) fn lookup_id(&self, id: &str) -> Result<Option<RexVolume>, Status> {
        if !plausible_id(id) {
            return Ok(None);
        }
        self.vols.lookup(VolumeRef::Id(id)).map_err(status)
    }

    fn create_volume_now(&self, r: CreateVolumeRequest) -> Result<CreateVolumeResponse, Status> {
        let parsed = parameters(&r.parameters)?;
        let mut opts = parsed.create;
        for c in &r.volume_capabilities {
            if let Some(volume_capability::AccessType::Mount(m)) = &c.access_type {
                if !m.fs_type.is_empty() {
                    let f = crate::options::fs_type("fs_type", &m.fs_type).map_err(status)?;
                    if opts.fs_type.is_some_and(|p| p != f) {
                        return Err(Status::invalid_argument(format!(
                            "parameter fsType and the volume capability's fs_type {} differ",
                            m.fs_type
                        )));
                    }
                    opts.fs_type = Some(f);
                }
            }
        }
        // Node-local volumes are made on this node: a requirement that
        // excludes it cannot be met.
        if self.node_local() {
            if let Some(req) = &r.accessibility_requirements {
                let me = self.topology();
                let ok = req.requisite.is_empty()
                    || req.requisite.iter().any(|t| {
                        t.segments
                            .get(super::TOPOLOGY_KEY)
                            .is_none_or(|n| Some(n) == me.segments.get(super::TOPOLOGY_KEY))
                    });
                if !ok {
                    return Err(Status::resource_exhausted(format!(
                        "the volume can only be made on node {} (this plugin's), which accessibility_requirements exclude",
                        self.vols.instance().id
                    )));
                }
            }
        }
        // A content source must name what to copy.
        if r.volume_content_source
            .as_ref()
            .is_some_and(|s| s.r#type.is_none())
        {
            return Err(Status::invalid_argument(
                "volume_content_source names neither a snapshot nor a volume",
            ));
        }
        // The `size` parameter as asked, before any default.
        let size_parameter = opts.size;
        // A copy is as large as its source unless a size is asked for.
        let copying = r.volume_content_source.is_some();
        let asked = r
            .capacity_range
            .as_ref()
            .is_some_and(|c| c.required_bytes > 0);
        if !copying || asked || opts.size.is_some() {
            let default = opts
                .size
                .unwrap_or_else(|| self.vols.create_spec(&opts).size);
            opts.size = Some(size_for(r.capacity_range.as_ref(), default)?);
        }
        let source = r
            .volume_content_source
            .as_ref()
            .and_then(|s| s.r#type.as_ref());
        let from = match source {
            Some(volume_content_source::Type::Snapshot(s)) => {
                if s.snapshot_id.is_empty() {
                    return Err(missing("volume_content_source.snapshot.snapshot_id"));
                }
                if !plausible_snapshot_id(&s.snapshot_id) {
                    return Err(Status::not_found(format!(
                        "snapshot {} not found",
                        s.snapshot_id
                    )));
                }
                Some(CopySource::SnapshotId(s.snapshot_id.clone()))
            }
            Some(volume_content_source::Type::Volume(v)) => {
                if v.volume_id.is_empty() {
                    return Err(missing("volume_content_source.volume.volume_id"));
                }
                if self.lookup_id(&v.volume_id)?.is_none() {
                    return Err(Status::not_found(format!(
                        "source volume {} not found",
                        v.volume_id
                    )));
                }
                Some(CopySource::VolumeId(v.volume_id.clone()))
            }
            None => None,
        };
        // A copy is at least as large as its source: one the range cannot
        // hold is OUT_OF_RANGE before anything is copied.
        if let Some(f) = &from {
            let src_gib = match f {
                CopySource::VolumeId(id) => self.lookup_id(id)?.map(|v| v.size),
                CopySource::SnapshotId(id) => self
                    .vols
                    .snapshots()
                    .map_err(status)?
                    .into_iter()
                    .find(|s| &s.id == id)
                    .map(|s| s.volume_size),
                _ => None,
            };
            if let Some(src_gib) = src_gib {
                let limit = r.capacity_range.as_ref().map_or(0, |c| c.limit_bytes);
                if limit > 0 && bytes(src_gib) > limit {
                    return Err(Status::out_of_range(format!(
                        "the source of the copy is {src_gib} GiB, more than limit_bytes {limit}"
                    )));
                }
                if let Some(n) = opts.size.filter(|n| *n < src_gib) {
                    return Err(Status::out_of_range(format!(
                        "a copy is at least as large as its source ({src_gib} GiB); {n} GiB was asked for"
                    )));
                }
            }
        }
        // Same name: the same volume when it meets the request, else
        // ALREADY_EXISTS.
        let asked = from.as_ref().and_then(|f| match f {
            CopySource::VolumeId(id) => Some(ContentSource::Volume(id.clone())),
            CopySource::SnapshotId(id) => Some(ContentSource::Snapshot(id.clone())),
            _ => None,
        });
        let compatible = |v: &RexVolume| -> Result<CreateVolumeResponse, Status> {
            // A volume of a driver without sizes (an s3fs bucket: 0) meets
            // any range, as it did when it was made.
            if v.size > 0 && !fits(r.capacity_range.as_ref(), v.size) {
                return Err(Status::already_exists(format!(
                    "volume {} exists with {} GiB, which the capacity range asked for does not match",
                    v.name, v.size
                )));
            }
            if r.capacity_range.is_none() {
                if let Some(n) = size_parameter.filter(|n| *n != v.size) {
                    return Err(Status::already_exists(format!(
                        "volume {} exists with {} GiB, not the {n} GiB the size parameter asks for",
                        v.name, v.size
                    )));
                }
            }
            if let Some(why) = differs(v, &opts, asked.as_ref()) {
                return Err(Status::already_exists(format!(
                    "volume {} exists, but {why}",
                    v.name
                )));
            }
            Ok(CreateVolumeResponse {
                volume: Some(volume(self, v, r.volume_content_source.clone())),
            })
        };
        if let Some(v) = self.vols.lookup(VolumeRef::Name(&r.name)).map_err(status)? {
            return compatible(&v);
        }
        let made = match &from {
            Some(f) => self.vols.create_from(&r.name, &opts, f),
            None => self.vols.create(&r.name, &opts),
        };
        match made {
            Ok(Created::New(v)) => {
                tracing::info!(volume = %v.name, id = %v.id, size = v.size, "csi: created");
                Ok(CreateVolumeResponse {
                    volume: Some(volume(self, &v, r.volume_content_source.clone())),
                })
            }
            Ok(Created::Existing(v)) => compatible(&v),
            Ok(Created::Disabled) => Err(Status::failed_precondition(format!(
                "{} is set: volumes are not created",
                crate::config::keys::CREATE_DISABLE
            ))),
            Err(e) if e.kind() == Kind::NotFound => Err(Status::not_found(e.to_string())),
            Err(e) => Err(status(e)),
        }
    }

    fn delete_volume_now(&self, id: &str) -> Result<(), Status> {
        if self.lookup_id(id)?.is_none() {
            return Ok(());
        }
        match self.vols.remove(VolumeRef::Id(id)) {
            Ok(Some(_)) => self.forget_publications(id),
            // Reporting success would have the CO forget a volume whose
            // data stays; say why it stays instead (as CreateVolume does
            // for create.disable).
            Ok(None) => Err(Status::failed_precondition(format!(
                "{} is set: volumes are not removed",
                crate::config::keys::REMOVE_DISABLE
            ))),
            Err(e) if e.kind() == Kind::NotFound => self.forget_publications(id),
            Err(e) => Err(status(e)),
        }
    }
}

#[tonic::async_trait]
impl Controller for Csi {
    async fn create_volume(
        &self,
        req: Request<CreateVolumeRequest>,
    ) -> Result<Response<CreateVolumeResponse>, Status> {
        let d = deadline(&req);
        let r = req.into_inner();
        if r.name.is_empty() {
            return Err(missing("name"));
        }
        let mut r = r;
        let vols = self.vols.clone();
        r.name = storage_name("volume", &r.name, |n| vols.check_name(n).is_ok())?;
        if r.volume_capabilities.is_empty() {
            return Err(missing("volume_capabilities"));
        }
        for c in &r.volume_capabilities {
            check_capability(c)?;
        }
        let key = format!("volume name {}", r.name);
        self.run(d, vec![key], move |csi| csi.create_volume_now(r))
            .await
            .map(Response::new)
    }

    async fn delete_volume(
        &self,
        req: Request<DeleteVolumeRequest>,
    ) -> Result<Response<DeleteVolumeResponse>, Status> {
        let d = deadline(&req);
        let id = req.into_inner().volume_id;
        if id.is_empty() {
            return Err(missing("volume_id"));
        }
        let key = format!("volume {id}");
        self.run(d, vec![key], move |csi| csi.delete_volume_now(&id))
            .await?;
        Ok(Response::new(DeleteVolumeResponse {}))
    }

    async fn controller_publish_volume(
        &self,
        req: Request<ControllerPublishVolumeRequest>,
    ) -> Result<Response<ControllerPublishVolumeResponse>, Status> {
        let d = deadline(&req);
        let r = req.into_inner();
        super::publish::check_publish(&r)?;
        let key = format!("volume {}", r.volume_id);
        self.run(d, vec![key], move |csi| csi.publish_now(r))
            .await
            .map(Response::new)
    }

    async fn controller_unpublish_volume(
        &self,
        req: Request<ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<ControllerUnpublishVolumeResponse>, Status> {
        let d = deadline(&req);
        let r = req.into_inner();
        if r.volume_id.is_empty() {
            return Err(missing("volume_id"));
        }
        let key = format!("volume {}", r.volume_id);
        self.run(d, vec![key], move |csi| csi.unpublish_now(r))
            .await?;
        Ok(Response::new(ControllerUnpublishVolumeResponse {}))
    }

    async fn validate_volume_capabilities(
        &self,
        req: Request<ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<ValidateVolumeCapabilitiesResponse>, Status> {
        let d = deadline(&req);
        let r = req.into_inner();
        if r.volume_id.is_empty() {
            return Err(missing("volume_id"));
        }
        if r.volume_capabilities.is_empty() {
            return Err(missing("volume_capabilities"));
        }
        self.run(d, Vec::new(), move |csi| {
            let v = csi
                .lookup_id(&r.volume_id)?
                .ok_or_else(|| Status::not_found(format!("volume {} not found", r.volume_id)))?;
            // Every capability, and the parameters, checked against the
            // volume: only what holds is confirmed.
            let bad = r
                .volume_capabilities
                .iter()
                .find_map(|c| {
                    check_capability(c)
                        .err()
                        .map(|e| e.message().to_string())
                        .or_else(|| match (&c.access_type, v.fields.get("fsType")) {
                            (Some(volume_capability::AccessType::Mount(m)), Some(has))
                                if !m.fs_type.is_empty() && m.fs_type != *has =>
                            {
                                Some(format!(
                                    "volume {} has fsType {has}, not {}",
                                    v.name, m.fs_type
                                ))
                            }
                            _ => None,
                        })
                })
                .or_else(|| match parameters(&r.parameters) {
                    Err(e) => Some(e.message().to_string()),
                    Ok(p) => p
                        .create
                        .size
                        .filter(|n| *n != v.size)
                        .map(|n| format!("volume {} has {} GiB, not {n}", v.name, v.size))
                        .or_else(|| {
                            differs(&v, &p.create, v.content_source().as_ref())
                                .map(|why| format!("volume {} exists, but {why}", v.name))
                        }),
                })
                .or_else(|| {
                    (!r.mutable_parameters.is_empty())
                        .then(|| "this plugin has no mutable parameters".to_string())
                });
            Ok(match bad {
                Some(message) => ValidateVolumeCapabilitiesResponse {
                    confirmed: None,
                    message,
                },
                None => ValidateVolumeCapabilitiesResponse {
                    confirmed: Some(validate_volume_capabilities_response::Confirmed {
                        volume_context: r.volume_context.clone(),
                        volume_capabilities: r.volume_capabilities.clone(),
                        parameters: r.parameters.clone(),
                        mutable_parameters: r.mutable_parameters.clone(),
                    }),
                    message: String::new(),
                },
            })
        })
        .await
        .map(Response::new)
    }

    async fn list_volumes(
        &self,
        req: Request<ListVolumesRequest>,
    ) -> Result<Response<ListVolumesResponse>, Status> {
        let d = deadline(&req);
        let r = req.into_inner();
        self.run(d, Vec::new(), move |csi| {
            let mut all: Vec<RexVolume> = csi.vols.list_metadata().map_err(status)?.to_vec();
            all.sort_by(|a, b| a.id.cmp(&b.id));
            let (start, end, next) = page(all.len(), r.max_entries, &r.starting_token)?;
            Ok(ListVolumesResponse {
                entries: all[start..end]
                    .iter()
                    .map(|v| list_volumes_response::Entry {
                        volume: Some(volume(csi, v, None)),
                        status: None,
                    })
                    .collect(),
                next_token: next,
            })
        })
        .await
        .map(Response::new)
    }

    async fn get_capacity(
        &self,
        req: Request<GetCapacityRequest>,
    ) -> Result<Response<GetCapacityResponse>, Status> {
        let r = req.into_inner();
        for c in &r.volume_capabilities {
            check_capability(c)?;
        }
        parameters(&r.parameters)?;
        // A node-local driver has no space on another node.
        let elsewhere = self.node_local()
            && r.accessible_topology.as_ref().is_some_and(|t| {
                t.segments
                    .get(super::TOPOLOGY_KEY)
                    .is_some_and(|n| *n != self.vols.instance().id)
            });
        if elsewhere {
            return Ok(Response::new(GetCapacityResponse {
                available_capacity: 0,
                maximum_volume_size: Some(0),
                minimum_volume_size: Some(bytes(1)),
            }));
        }
        let csi = self.clone();
        let avail = tokio::task::spawn_blocking(move || csi.vols.capacity())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| match e.kind() {
                // A libStorage server that cannot be asked.
                Kind::Unsupported => Status::failed_precondition(e.to_string()),
                _ => status(e),
            })?;
        Ok(Response::new(GetCapacityResponse {
            available_capacity: avail.map(|b| b.min(i64::MAX as u64) as i64).unwrap_or(0),
            maximum_volume_size: Some(bytes(crate::input::MAX_SIZE_GIB)),
            minimum_volume_size: Some(bytes(1)),
        }))
    }

    async fn controller_get_capabilities(
        &self,
        _req: Request<ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<ControllerGetCapabilitiesResponse>, Status> {
        use controller_service_capability::rpc::Type as T;
        // What every driver does, and what this one offers. GetCapacity
        // only where the backend tells its free space (the loop driver, a
        // libStorage server with this crate's extensions): for others an
        // answer would be a made-up 0, which a CO doing capacity tracking
        // reads as "full". A server that cannot be reached now is taken to
        // tell it (GetCapacity then fails as any call would).
        let offers = self.offers().await?;
        let csi = self.clone();
        let tells_capacity = tokio::task::spawn_blocking(move || csi.vols.capacity())
            .await
            .map_err(|e| Status::internal(e.to_string()))
            .map(|c| match c {
                Ok(known) => known.is_some(),
                Err(e) => e.kind() != Kind::Unsupported,
            })?;
        let caps = [
            (T::CreateDeleteVolume, true),
            (T::PublishUnpublishVolume, true),
            (T::ListVolumes, true),
            (T::GetCapacity, tells_capacity),
            (T::CreateDeleteSnapshot, offers.snapshots),
            (T::ListSnapshots, offers.snapshots),
            (T::CloneVolume, offers.copy),
            (T::ExpandVolume, offers.resize),
            (T::GetVolume, true),
            (T::VolumeCondition, true),
        ]
        .into_iter()
        .filter_map(|(t, offered)| offered.then_some(t))
        .map(|t| ControllerServiceCapability {
            r#type: Some(controller_service_capability::Type::Rpc(
                controller_service_capability::Rpc { r#type: t as i32 },
            )),
        })
        .collect();
        Ok(Response::new(ControllerGetCapabilitiesResponse {
            capabilities: caps,
        }))
    }

    async fn create_snapshot(
        &self,
        req: Request<CreateSnapshotRequest>,
    ) -> Result<Response<CreateSnapshotResponse>, Status> {
        let d = deadline(&req);
        let r = req.into_inner();
        if r.name.is_empty() {
            return Err(missing("name"));
        }
        if r.source_volume_id.is_empty() {
            return Err(missing("source_volume_id"));
        }
        let mut r = r;
        r.name = storage_name("snapshot", &r.name, |_| true)?;
        let keys = vec![
            format!("snapshot name {}", r.name),
            format!("volume {}", r.source_volume_id),
        ];
        self.run(d, keys, move |csi| {
            let existing = csi
                .vols
                .snapshots()
                .map_err(status)?
                .into_iter()
                .find(|s| s.name == r.name);
            if let Some(s) = existing {
                if s.volume_id != r.source_volume_id {
                    return Err(Status::already_exists(format!(
                        "snapshot {} exists, of another volume ({})",
                        r.name, s.volume_id
                    )));
                }
                return Ok(CreateSnapshotResponse {
                    snapshot: Some(snapshot(&s)),
                });
            }
            if csi.lookup_id(&r.source_volume_id)?.is_none() {
                return Err(Status::not_found(format!(
                    "source volume {} not found",
                    r.source_volume_id
                )));
            }
            let s = csi
                .vols
                .snapshot(VolumeRef::Id(&r.source_volume_id), &r.name)
                .map_err(status)?;
            Ok(CreateSnapshotResponse {
                snapshot: Some(snapshot(&s)),
            })
        })
        .await
        .map(Response::new)
    }

    async fn delete_snapshot(
        &self,
        req: Request<DeleteSnapshotRequest>,
    ) -> Result<Response<DeleteSnapshotResponse>, Status> {
        let d = deadline(&req);
        let id = req.into_inner().snapshot_id;
        if id.is_empty() {
            return Err(missing("snapshot_id"));
        }
        let key = format!("snapshot {id}");
        self.run(d, vec![key], move |csi| {
            if !plausible_snapshot_id(&id) {
                return Ok(());
            }
            match csi.vols.remove_snapshot(VolumeRef::Id(&id)) {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == Kind::NotFound => Ok(()),
                Err(e) => Err(status(e)),
            }
        })
        .await?;
        Ok(Response::new(DeleteSnapshotResponse {}))
    }

    async fn list_snapshots(
        &self,
        req: Request<ListSnapshotsRequest>,
    ) -> Result<Response<ListSnapshotsResponse>, Status> {
        let d = deadline(&req);
        let r = req.into_inner();
        self.run(d, Vec::new(), move |csi| {
            let mut all: Vec<RexSnapshot> = csi
                .vols
                .snapshots()
                .map_err(status)?
                .into_iter()
                .filter(|s| r.snapshot_id.is_empty() || s.id == r.snapshot_id)
                .filter(|s| r.source_volume_id.is_empty() || s.volume_id == r.source_volume_id)
                .collect();
            all.sort_by(|a, b| a.id.cmp(&b.id));
            let (start, end, next) = page(all.len(), r.max_entries, &r.starting_token)?;
            Ok(ListSnapshotsResponse {
                entries: all[start..end]
                    .iter()
                    .map(|s| list_snapshots_response::Entry {
                        snapshot: Some(snapshot(s)),
                    })
                    .collect(),
                next_token: next,
            })
        })
        .await
        .map(Response::new)
    }

    async fn controller_expand_volume(
        &self,
        req: Request<ControllerExpandVolumeRequest>,
    ) -> Result<Response<ControllerExpandVolumeResponse>, Status> {
        let d = deadline(&req);
        let r = req.into_inner();
        if r.volume_id.is_empty() {
            return Err(missing("volume_id"));
        }
        let Some(range) = r.capacity_range else {
            return Err(missing("capacity_range"));
        };
        let block = r.volume_capability.as_ref().is_some_and(super::is_block);
        let key = format!("volume {}", r.volume_id);
        self.run(d, vec![key], move |csi| {
            let v = csi
                .lookup_id(&r.volume_id)?
                .ok_or_else(|| Status::not_found(format!("volume {} not found", r.volume_id)))?;
            let gib = size_for(Some(&range), v.size)?;
            // Volumes only grow: one already past the limit cannot meet it.
            if range.limit_bytes > 0 && bytes(v.size) > range.limit_bytes {
                return Err(Status::out_of_range(format!(
                    "volume {} is {} GiB already, more than limit_bytes {}; volumes only grow",
                    v.name, v.size, range.limit_bytes
                )));
            }
            let (_, b) = csi
                .vols
                .resize(VolumeRef::Id(&v.id), gib.saturating_mul(GIB))
                .map_err(status)?;
            Ok(ControllerExpandVolumeResponse {
                capacity_bytes: b.min(i64::MAX as u64) as i64,
                node_expansion_required: !block,
            })
        })
        .await
        .map(Response::new)
    }

    async fn controller_get_volume(
        &self,
        req: Request<ControllerGetVolumeRequest>,
    ) -> Result<Response<ControllerGetVolumeResponse>, Status> {
        let d = deadline(&req);
        let id = req.into_inner().volume_id;
        if id.is_empty() {
            return Err(missing("volume_id"));
        }
        self.run(d, Vec::new(), move |csi| {
            let v = csi
                .lookup_id(&id)?
                .ok_or_else(|| Status::not_found(format!("volume {id} not found")))?;
            Ok(ControllerGetVolumeResponse {
                volume: Some(volume(csi, &v, None)),
                status: Some(controller_get_volume_response::VolumeStatus {
                    // The nodes it is attached to.
                    published_node_ids: v
                        .attachments
                        .iter()
                        .map(|a| a.instance_id.id.clone())
                        .collect(),
                    volume_condition: Some(VolumeCondition {
                        abnormal: false,
                        message: "the volume exists".into(),
                    }),
                }),
            })
        })
        .await
        .map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_ids_of_every_driver_are_plausible() {
        // rbd's `<pool>.<image>@<snap>` names a snapshot, not nothing.
        for id in ["snap1", "rbd.img@s1", "0123456789abcdef"] {
            assert!(plausible_snapshot_id(id), "{id}");
        }
        for id in ["", "a/b", "..", "a@b@c", "@s", "img@"] {
            assert!(!plausible_snapshot_id(id), "{id}");
        }
        assert!(!plausible_id("rbd.img@s1"));
    }

    #[test]
    fn capacity_ranges_round_up_to_gib_and_respect_the_limit() {
        let r = |req: i64, lim: i64| CapacityRange {
            required_bytes: req,
            limit_bytes: lim,
        };
        assert_eq!(size_for(None, 16).unwrap(), 16);
        assert_eq!(size_for(Some(&r(1, 0)), 16).unwrap(), 1);
        assert_eq!(size_for(Some(&r(GIB as i64 + 1, 0)), 16).unwrap(), 2);
        assert_eq!(size_for(Some(&r(0, 0)), 3).unwrap(), 3);
        // Only a limit: the default, or the whole GiB under the limit.
        assert_eq!(size_for(Some(&r(0, 5 << 30)), 16).unwrap(), 5);
        assert_eq!(size_for(Some(&r(0, (5 << 30) + 7)), 16).unwrap(), 5);
        assert_eq!(size_for(Some(&r(0, 20 << 30)), 16).unwrap(), 16);
        let e = size_for(Some(&r(0, 100 << 20)), 16).unwrap_err();
        assert_eq!(e.code(), tonic::Code::OutOfRange);
        let e = size_for(Some(&r(10 << 20, 20 << 20)), 1).unwrap_err();
        assert_eq!(e.code(), tonic::Code::OutOfRange);
        let e = size_for(Some(&r(2 << 30, 1 << 30)), 1).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(fits(Some(&r(1 << 30, 0)), 1));
        assert!(!fits(Some(&r(2 << 30, 0)), 1));
        assert!(!fits(Some(&r(0, 1 << 30)), 2));
    }

    #[test]
    fn csi_names_are_kept_as_they_are_or_hashed() {
        assert_eq!(
            storage_name("volume", "pvc-1a2b", |_| true).unwrap(),
            "pvc-1a2b"
        );
        let odd = storage_name("volume", "sanity vol+1/é", |_| true).unwrap();
        assert!(odd.starts_with("csi-") && odd.len() == 36, "{odd}");
        assert!(crate::input::volume_name(&odd).is_ok());
        // The same name is the same volume; another is another.
        assert_eq!(
            storage_name("volume", "sanity vol+1/é", |_| true).unwrap(),
            odd
        );
        assert_ne!(
            storage_name("volume", "sanity vol+2/é", |_| true).unwrap(),
            odd
        );
        // Whitespace CSI allows; control characters it does not.
        assert!(storage_name("volume", "a\tb\nc", |_| true).is_ok());
        // A rexray name the driver does not take (an S3 bucket's upper
        // case): hashed, to a name it does.
        let upper = storage_name("volume", "Sanity-1", |n| n == n.to_lowercase()).unwrap();
        assert!(upper.starts_with("csi-"), "{upper}");
        for bad in ["a\u{0}b", "a\u{7}", "\u{1b}[31m", "a\u{85}"] {
            let e = storage_name("volume", bad, |_| true).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad:?}");
        }
    }

    #[test]
    fn pages_and_tokens() {
        assert_eq!(page(5, 2, "").unwrap(), (0, 2, "2".into()));
        assert_eq!(page(5, 2, "4").unwrap(), (4, 5, String::new()));
        assert_eq!(page(5, 0, "").unwrap(), (0, 5, String::new()));
        assert_eq!(page(5, 2, "x").unwrap_err().code(), tonic::Code::Aborted);
        // Past the end (entries removed since the token was given): an
        // empty last page.
        assert_eq!(page(5, 2, "6").unwrap(), (5, 5, String::new()));
        assert_eq!(page(5, 2, "-1").unwrap_err().code(), tonic::Code::Aborted);
        assert_eq!(
            page(5, -1, "").unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }

    #[test]
    fn a_volume_differs_only_in_what_both_name() {
        let v = |fields: &[(&str, &str)]| RexVolume {
            name: "v".into(),
            volume_type: "fast".into(),
            fields: fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        let none = CreateOptions::default();
        let vol = |id: &str| ContentSource::Volume(id.into());
        let snap = |id: &str| ContentSource::Snapshot(id.into());
        // Nothing asked, nothing recorded: the same.
        assert_eq!(differs(&v(&[]), &none, None), None);
        // A source asked of a volume that records none: not told apart.
        assert_eq!(differs(&v(&[]), &none, Some(&vol("a"))), None);
        // Recorded now, and as earlier loop copies recorded it.
        for fields in [
            &[("contentSource", "volume:a")][..],
            &[("copiedFrom", "a")],
            &[("copiedFrom", "a"), ("snapshotID", "s")],
        ] {
            assert_eq!(differs(&v(fields), &none, Some(&vol("a"))), None);
            assert!(differs(&v(fields), &none, Some(&vol("b"))).is_some());
            assert!(differs(&v(fields), &none, Some(&snap("a"))).is_some());
            assert!(differs(&v(fields), &none, None).is_some());
        }
        let restored = v(&[("contentSource", "snapshot:s"), ("copiedFrom", "a")]);
        assert_eq!(differs(&restored, &none, Some(&snap("s"))), None);
        assert_eq!(
            differs(&v(&[("snapshotID", "s")]), &none, Some(&snap("s"))),
            None
        );
        // Parameters: only those asked.
        let xfs = v(&[("fsType", "xfs")]);
        let asked = |f: &str| CreateOptions {
            fs_type: Some(crate::options::fs_type("fsType", f).unwrap()),
            ..Default::default()
        };
        assert_eq!(differs(&xfs, &asked("xfs"), None), None);
        assert!(differs(&xfs, &asked("ext4"), None)
            .unwrap()
            .contains("fsType xfs"));
        assert_eq!(differs(&v(&[]), &asked("ext4"), None), None);
        let typed = |t: &str| CreateOptions {
            volume_type: Some(t.into()),
            ..Default::default()
        };
        assert_eq!(differs(&xfs, &typed("fast"), None), None);
        assert!(differs(&xfs, &typed("slow"), None).is_some());
    }

    #[test]
    fn parameters_are_the_create_options() {
        let p = |kv: &[(&str, &str)]| {
            parameters(
                &kv.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        let ok = p(&[
            ("size", "3"),
            ("FSTYPE", "xfs"),
            ("csi.storage.k8s.io/pvc/name", "x"),
        ])
        .unwrap();
        assert_eq!(ok.create.size, Some(3));
        assert_eq!(ok.create.fs_type, Some(crate::model::FsType::Xfs));
        let e = p(&[("colour", "red")]).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("colour"), "{}", e.message());
    }
}
