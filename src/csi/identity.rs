//! The Identity service: who this plugin is, what it offers, whether it
//! is ready.

use super::proto::identity_server::Identity;
use super::proto::plugin_capability::{self, service, volume_expansion};
use super::proto::*;
use super::{Csi, DRIVER_NAME};
use tonic::{Request, Response, Status};

#[tonic::async_trait]
impl Identity for Csi {
    async fn get_plugin_info(
        &self,
        _req: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        Ok(Response::new(GetPluginInfoResponse {
            name: DRIVER_NAME.to_string(),
            vendor_version: env!("CARGO_PKG_VERSION").to_string(),
            manifest: [
                (
                    "service".to_string(),
                    self.vols.config().service().to_string(),
                ),
                ("mode".to_string(), self.mode.as_str().to_string()),
            ]
            .into(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _req: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        let svc = |t: service::Type| PluginCapability {
            r#type: Some(plugin_capability::Type::Service(
                plugin_capability::Service { r#type: t as i32 },
            )),
        };
        let mut caps = Vec::new();
        if self.mode.controller() {
            caps.push(svc(service::Type::ControllerService));
        }
        if self.node_local() {
            caps.push(svc(service::Type::VolumeAccessibilityConstraints));
        }
        if self.offers().await?.resize {
            caps.push(PluginCapability {
                r#type: Some(plugin_capability::Type::VolumeExpansion(
                    plugin_capability::VolumeExpansion {
                        r#type: volume_expansion::Type::Online as i32,
                    },
                )),
            });
        }
        Ok(Response::new(GetPluginCapabilitiesResponse {
            capabilities: caps,
        }))
    }

    async fn probe(&self, _req: Request<ProbeRequest>) -> Result<Response<ProbeResponse>, Status> {
        Ok(Response::new(ProbeResponse { ready: Some(true) }))
    }
}
