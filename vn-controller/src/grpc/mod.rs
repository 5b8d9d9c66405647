//! The gRPC edge: identity, validation into domain types, Status codes, and the services.
//! Health and reflection answer without a credential (they carry no tenant data).

pub mod admin;
pub mod agent;
pub mod console;
pub mod convert;
pub mod exec;
pub mod identity;
pub mod slice;
pub mod substrate;
pub mod validate;
pub mod vn;

use std::time::Duration;

use tokio::net::TcpListener;
use tonic::Status;
use tonic::transport::server::{Router, TcpIncoming};
use tonic::transport::{Server, ServerTlsConfig};
use vnet_proto::v1::admin_server::AdminServer;
use vnet_proto::v1::agent_control_server::AgentControlServer;
use vnet_proto::v1::substrate_server::SubstrateServer;
use vnet_proto::v1::virtual_networks_server::VirtualNetworksServer;

use crate::runtime::controller::{ControlError, Controller};

/// The status code of each controller error.
pub fn status(e: ControlError) -> Status {
    match e {
        ControlError::InvalidArgument(m) => Status::invalid_argument(m),
        ControlError::AlreadyExists(m) => Status::already_exists(m),
        ControlError::NotFound(m) => Status::not_found(m),
        ControlError::Exhausted(m) => Status::resource_exhausted(m),
        ControlError::Precondition(m) => Status::failed_precondition(m),
        ControlError::PermissionDenied(m) => Status::permission_denied(m),
        ControlError::Unavailable(m) => Status::unavailable(m),
        ControlError::Timeout(m) => Status::deadline_exceeded(m),
        ControlError::Internal(m) => Status::internal(m),
        ControlError::Aborted(m) => Status::aborted(m),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("cannot build the gRPC reflection service")]
    Reflection(#[source] tonic_reflection::server::Error),
    #[error("invalid TLS configuration")]
    Tls(#[source] tonic::transport::Error),
}

/// Every service of the controller (plus health and reflection) on one router; with `tls`,
/// TLS on every connection (`None` only for `--insecure`).
pub async fn router(ctl: &Controller, tls: Option<ServerTlsConfig>) -> Result<Router, RouterError> {
    let (health, health_svc) = tonic_health::server::health_reporter();
    health
        .set_serving::<VirtualNetworksServer<vn::VnService>>()
        .await;
    health
        .set_serving::<SubstrateServer<substrate::SubstrateService>>()
        .await;
    health
        .set_serving::<AgentControlServer<agent::AgentService>>()
        .await;
    // Both reflection versions: grpcurl and older tools still ask v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(vnet_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    health
        .set_serving::<AdminServer<admin::AdminService>>()
        .await;
    let reflection_v1 = reflection().build_v1().map_err(RouterError::Reflection)?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(RouterError::Reflection)?;
    let mut server = Server::builder();
    if let Some(tls) = tls {
        server = server.tls_config(tls).map_err(RouterError::Tls)?;
    }
    Ok(server
        // A dead agent's connection is noticed within half a minute.
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .add_service(health_svc)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(VirtualNetworksServer::new(vn::VnService::new(ctl.clone())))
        .add_service(SubstrateServer::new(substrate::SubstrateService::new(
            ctl.clone(),
        )))
        .add_service(AgentControlServer::new(agent::AgentService::new(
            ctl.clone(),
        )))
        .add_service(AdminServer::new(admin::AdminService::new(ctl.clone()))))
}

/// Accepted connections of `listener`, with TCP_NODELAY (without it, Nagle's algorithm and
/// delayed ACKs add about 40 ms to a unary call) and TCP keepalive.
pub fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(30)))
}
