//! `vnet.v1.Substrate`: the operators' view of hosts, links and residual capacities. Every
//! call needs a credential; providers see capacities, never other providers' VNs.

use tonic::{Request, Response, Status};
use vnet_proto::v1 as pb;
use vnet_proto::v1::substrate_server::Substrate;

use crate::runtime::controller::Controller;

use super::{convert, identity};

#[derive(Clone, Debug)]
pub struct SubstrateService {
    ctl: Controller,
}

impl SubstrateService {
    pub fn new(ctl: Controller) -> Self {
        SubstrateService { ctl }
    }
}

#[tonic::async_trait]
impl Substrate for SubstrateService {
    #[tracing::instrument(skip_all)]
    async fn list_hosts(
        &self,
        req: Request<pb::ListHostsRequest>,
    ) -> Result<Response<pb::ListHostsResponse>, Status> {
        identity::caller(&self.ctl, &req)?;
        let hosts = self
            .ctl
            .with_index(|ix| ix.registry.hosts().map(|h| convert::host(ix, h)).collect());
        Ok(Response::new(pb::ListHostsResponse { hosts }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_links(
        &self,
        req: Request<pb::ListLinksRequest>,
    ) -> Result<Response<pb::ListLinksResponse>, Status> {
        identity::caller(&self.ctl, &req)?;
        let links = self.ctl.with_index(|ix| {
            ix.registry
                .links()
                .iter()
                .map(|l| convert::link(ix, l))
                .collect()
        });
        Ok(Response::new(pb::ListLinksResponse { links }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_images(
        &self,
        req: Request<pb::ListImagesRequest>,
    ) -> Result<Response<pb::ListImagesResponse>, Status> {
        identity::caller(&self.ctl, &req)?;
        let images = self.ctl.with_index(|ix| {
            ix.registry
                .image_offers()
                .into_iter()
                .map(|(i, hosts)| pb::ImageOffer {
                    image: Some(convert::image(i)),
                    hosts: hosts.into_iter().map(str::to_string).collect(),
                })
                .collect()
        });
        Ok(Response::new(pb::ListImagesResponse { images }))
    }

    /// Hosts, links and the caller's VNs (only the caller's: placements of other providers do
    /// not leak). An admin without `--as`: the substrate alone.
    #[tracing::instrument(skip_all)]
    async fn get_topology(
        &self,
        req: Request<pb::GetTopologyRequest>,
    ) -> Result<Response<pb::Topology>, Status> {
        let caller = identity::reader(&self.ctl, &req)?;
        let topo = self.ctl.with_index(|ix| pb::Topology {
            hosts: ix.registry.hosts().map(|h| convert::host(ix, h)).collect(),
            links: ix
                .registry
                .links()
                .iter()
                .map(|l| convert::link(ix, l))
                .collect(),
            // An admin (without --as) sees every provider's VNs.
            vns: match caller {
                Some(p) => ix
                    .list(&p)
                    .into_iter()
                    .filter(|r| r.status.holds_resources())
                    .map(convert::embedded)
                    .collect(),
                None => ix
                    .records()
                    .filter(|r| r.status.holds_resources())
                    .map(convert::embedded)
                    .collect(),
            },
        });
        Ok(Response::new(topo))
    }
}
