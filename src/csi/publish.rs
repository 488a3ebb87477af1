//! ControllerPublishVolume and ControllerUnpublishVolume: the controller
//! attaches a volume to a node (records the node's instance as its holder,
//! through the driver's controller: the loop catalog, an rbd lock, a
//! libStorage server) and hands the node the attach token in the publish
//! context (`attachToken`); NodeStageVolume resolves that token on the
//! node instead of attaching by itself.
//!
//! Node ids are instance ids (NodeGetInfo's `node_id`). A node-local
//! driver's only node is this one. What each publication asked for
//! (read-only, access mode) is kept in `<lib>/csi/published/<volume-id>.json`
//! so that publishing again with other options is told apart
//! (ALREADY_EXISTS) from a retry (the same answer).

use super::proto::*;
use super::{check_capability, missing, status, Csi};
use crate::config::keys;
use crate::model::{InstanceId, Volume as RexVolume};
use crate::volume::VolumeRef;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use tonic::Status;

/// The publish context key of the attach token.
pub const ATTACH_TOKEN: &str = "attachToken";

/// What one publication of a volume asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Publication {
    node_id: String,
    readonly: bool,
    access_mode: i32,
    block: bool,
}

impl Csi {
    fn publication_path(&self, id: &str) -> PathBuf {
        self.vols
            .front_end_dir("csi")
            .join("published")
            .join(format!("{id}.json"))
    }

    fn publications(&self, id: &str) -> Vec<Publication> {
        std::fs::read(self.publication_path(id))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn save_publications(&self, id: &str, all: &[Publication]) -> Result<(), Status> {
        let p = self.publication_path(id);
        if all.is_empty() {
            return match std::fs::remove_file(&p) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(Status::internal(format!("removing {}: {e}", p.display()))),
            };
        }
        let dir = p.parent().expect("has a parent");
        crate::files::own_dir(dir, crate::files::PRIVATE_DIR, crate::files::Link::Refuse)
            .map_err(status)?;
        let bytes = serde_json::to_vec(all).expect("publications serialise");
        crate::state::atomic::write(&p, &bytes).map_err(status)
    }

    /// Drop the publication records of a volume that is gone.
    pub(super) fn forget_publications(&self, id: &str) -> Result<(), Status> {
        self.save_publications(id, &[])
    }

    /// The instance a node id names, or NOT_FOUND for a node this
    /// controller cannot attach to (a node-local driver's only node is
    /// this one).
    fn node_of(&self, node_id: &str) -> Result<InstanceId, Status> {
        let me = self.vols.instance();
        if self.node_local() && !node_id.eq_ignore_ascii_case(&me.id) {
            return Err(Status::not_found(format!(
                "node {node_id} not found: the {} driver's volumes are attached on this node only ({})",
                self.vols.config().driver_name(),
                me.id
            )));
        }
        if crate::input::consumer(node_id).is_err() {
            return Err(Status::not_found(format!("node {node_id} not found")));
        }
        // Ids are compared without case everywhere; this node's own is
        // kept as it spells it, so that records agree.
        let id = if node_id.eq_ignore_ascii_case(&me.id) {
            me.id.clone()
        } else {
            node_id.to_string()
        };
        Ok(InstanceId { id, ..me.clone() })
    }

    /// `who` spelled as the volume's holder spells it, when that is the
    /// same node (ids compare without case).
    fn as_held(v: &RexVolume, mut who: InstanceId) -> InstanceId {
        if let Some(a) = v
            .attachments
            .iter()
            .find(|a| a.instance_id.id.eq_ignore_ascii_case(&who.id))
        {
            who.id = a.instance_id.id.clone();
        }
        who
    }

    pub(super) fn publish_now(
        &self,
        r: ControllerPublishVolumeRequest,
    ) -> Result<ControllerPublishVolumeResponse, Status> {
        let cap = r.volume_capability.as_ref().expect("checked");
        let v: RexVolume = self
            .lookup_id(&r.volume_id)?
            .ok_or_else(|| Status::not_found(format!("volume {} not found", r.volume_id)))?;
        let who = Self::as_held(&v, self.node_of(&r.node_id)?);
        // A backend that registers its nodes knows this one, or it is not
        // one (a mistyped id would hold the volume for a node that never
        // comes). Only here: a release is never refused for it.
        if !who.id.eq_ignore_ascii_case(&self.vols.instance().id)
            && self.vols.node_known(&who.id).map_err(super::status)? == Some(false)
        {
            return Err(Status::not_found(format!(
                "node {} not found: no CSI node service of that id has registered with the {} backend (its NodeGetInfo registers it)",
                who.id,
                self.vols.config().driver_name()
            )));
        }
        let asked = Publication {
            node_id: who.id.clone(),
            readonly: r.readonly,
            access_mode: cap.access_mode.as_ref().map(|m| m.mode).unwrap_or(0),
            block: super::is_block(cap),
        };
        let holds = |v: &RexVolume, node: &str| -> bool {
            v.attachments
                .iter()
                .any(|a| a.instance_id.id.eq_ignore_ascii_case(node))
        };
        let mut pubs = self.publications(&v.id);
        // Records of publications whose hold is gone (released by hand,
        // or taken over) say nothing any more.
        pubs.retain(|p| holds(&v, p.node_id.as_str()));
        if holds(&v, who.id.as_str()) {
            if let Some(p) = pubs
                .iter()
                .find(|p| p.node_id.eq_ignore_ascii_case(&who.id))
            {
                if !(p.node_id.eq_ignore_ascii_case(&asked.node_id)
                    && (p.readonly, p.access_mode, p.block)
                        == (asked.readonly, asked.access_mode, asked.block))
                {
                    return Err(Status::already_exists(format!(
                        "volume {} is already published to node {} with other options (readonly {}, access mode {}, {}); unpublish it first",
                        v.name,
                        who.id,
                        p.readonly,
                        p.access_mode,
                        if p.block { "block" } else { "mount" }
                    )));
                }
            }
        } else if let Some(a) = v.attachments.first() {
            return Err(Status::failed_precondition(format!(
                "volume {} is published to (attached to) another node, {}; unpublish it there first",
                v.name, a.instance_id.id
            )));
        } else {
            let max = self.vols.config().number(keys::CSI_MAX_VOLUMES);
            if max > 0 {
                let n = self
                    .vols
                    .list()
                    .map_err(status)?
                    .iter()
                    .filter(|o| holds(o, who.id.as_str()))
                    .count() as u64;
                if n >= max {
                    return Err(Status::resource_exhausted(format!(
                        "node {} has {n} volumes attached, its maximum ({}); volume {} was not published",
                        who.id,
                        keys::CSI_MAX_VOLUMES,
                        v.name
                    )));
                }
            }
        }
        let (_, token) = self
            .vols
            .publish_to(VolumeRef::Id(&v.id), &who)
            .map_err(status)?;
        if !pubs.contains(&asked) {
            pubs.retain(|p| !p.node_id.eq_ignore_ascii_case(&who.id));
            pubs.push(asked);
            self.save_publications(&v.id, &pubs)?;
        }
        tracing::info!(volume = %v.name, node = %who.id, "csi: published to node");
        Ok(ControllerPublishVolumeResponse {
            publish_context: [(ATTACH_TOKEN.to_string(), token)].into(),
        })
    }

    pub(super) fn unpublish_now(&self, r: ControllerUnpublishVolumeRequest) -> Result<(), Status> {
        let Some(v) = self.lookup_id(&r.volume_id)? else {
            return Ok(());
        };
        let nodes: Vec<String> = if r.node_id.is_empty() {
            v.attachments
                .iter()
                .map(|a| a.instance_id.id.clone())
                .collect()
        } else {
            vec![r.node_id.clone()]
        };
        let mut pubs = self.publications(&v.id);
        for node in nodes {
            // A node this controller cannot attach to holds nothing of it.
            let Ok(who) = self.node_of(&node) else {
                continue;
            };
            let who = Self::as_held(&v, who);
            self.vols
                .unpublish_from(VolumeRef::Id(&v.id), &who)
                .map_err(status)?;
            pubs.retain(|p| !p.node_id.eq_ignore_ascii_case(&who.id));
            tracing::info!(volume = %v.name, node = %who.id, "csi: unpublished from node");
        }
        self.save_publications(&v.id, &pubs)
    }
}

/// The checks of a ControllerPublishVolume before any work.
pub(super) fn check_publish(r: &ControllerPublishVolumeRequest) -> Result<(), Status> {
    if r.volume_id.is_empty() {
        return Err(missing("volume_id"));
    }
    if r.node_id.is_empty() {
        return Err(missing("node_id"));
    }
    let cap = r
        .volume_capability
        .as_ref()
        .ok_or_else(|| missing("volume_capability"))?;
    check_capability(cap)
}
