//! `vnet.v1.Admin`: credentials, quotas and host maintenance (cordon, uncordon, drain).
//! Admin-only, except a provider reading its own quota.

use std::time::Duration;

use tonic::{Request, Response, Status};
use vnet_proto::v1 as pb;
use vnet_proto::v1::admin_server::Admin;

use crate::runtime::controller::Controller;
use crate::runtime::credentials::{CredentialsError, Principal, Quota, Role, Usage};

use super::{convert, identity, status, validate::check_identifier};

/// Longest lifetime of a token: ten years.
const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

#[derive(Clone, Debug)]
pub struct AdminService {
    ctl: Controller,
}

impl AdminService {
    pub fn new(ctl: Controller) -> Self {
        AdminService { ctl }
    }

    /// The admin behind `req`, on the leader: credentials and quotas are written by the leader
    /// only (a follower names it).
    fn credentials_writer<T>(&self, req: &Request<T>) -> Result<Principal, Status> {
        let admin = identity::admin(&self.ctl, req)?;
        self.ctl.require_leader().map_err(status)?;
        Ok(admin)
    }

    fn status_of(&self, provider: &str) -> pb::QuotaStatus {
        let q = self.ctl.credentials().quota(provider);
        let u = self.ctl.with_index(|ix| {
            Controller::usage(ix, &crate::core::model::ProviderId(provider.to_string()))
        });
        pb::QuotaStatus {
            provider: provider.to_string(),
            quota: Some(quota_pb(&q)),
            usage: Some(usage_pb(&u)),
        }
    }
}

fn internal(e: CredentialsError) -> Status {
    tracing::error!(error = %e, "credentials store");
    Status::internal(format!("cannot persist credentials: {e}"))
}

fn provider_name(p: &str, field: &str) -> Result<(), Status> {
    check_identifier(p).map_err(|why| Status::invalid_argument(format!("{field} {p:?}: {why}")))
}

fn quota_pb(q: &Quota) -> pb::Quota {
    pb::Quota {
        vns: q.vns,
        nodes: q.nodes,
        cpu: q.cpu,
        memory_mb: q.memory_mb,
        bandwidth_mbps: q.bandwidth_mbps,
    }
}

fn usage_pb(u: &Usage) -> pb::QuotaUsage {
    pb::QuotaUsage {
        vns: u.vns,
        nodes: u.nodes,
        cpu: u.cpu,
        memory_mb: u.memory_mb,
        bandwidth_mbps: u.bandwidth_mbps,
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    #[tracing::instrument(skip_all)]
    async fn create_credential(
        &self,
        req: Request<pb::CreateCredentialRequest>,
    ) -> Result<Response<pb::CreateCredentialResponse>, Status> {
        let admin = self.credentials_writer(&req)?;
        let r = req.into_inner();
        provider_name(&r.provider, "provider")?;
        let role = match pb::Role::try_from(r.role) {
            Ok(pb::Role::Provider) | Ok(pb::Role::Unspecified) => Role::Provider,
            Ok(pb::Role::Admin) => Role::Admin,
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "role {} is unknown",
                    r.role
                )));
            }
        };
        let ttl = Duration::from_secs(r.ttl_secs);
        if ttl > MAX_TTL {
            return Err(Status::invalid_argument(format!(
                "ttl_secs {} is above the limit of {} (ten years)",
                r.ttl_secs,
                MAX_TTL.as_secs()
            )));
        }
        let now = convert::now_ms();
        let expires = (r.ttl_secs > 0).then(|| now + ttl.as_millis() as u64);
        let (token, rec) = self
            .ctl
            .credentials()
            .issue(&r.provider, role, now, expires)
            .map_err(internal)?;
        tracing::info!(admin = %admin.name, token = %rec.id, name = %rec.name, %role, ?expires, "credential created");
        Ok(Response::new(pb::CreateCredentialResponse {
            token,
            token_id: rec.id,
            expires_unix_ms: expires.unwrap_or(0),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn revoke_credential(
        &self,
        req: Request<pb::RevokeCredentialRequest>,
    ) -> Result<Response<pb::RevokeCredentialResponse>, Status> {
        let admin = self.credentials_writer(&req)?;
        let r = req.into_inner();
        let (id, provider) = match (r.token_id.is_empty(), r.provider.is_empty()) {
            (false, true) => (Some(r.token_id.as_str()), None),
            (true, false) => {
                provider_name(&r.provider, "provider")?;
                (None, Some(r.provider.as_str()))
            }
            _ => {
                return Err(Status::invalid_argument(
                    "name exactly one of token_id and provider",
                ));
            }
        };
        let revoked = self
            .ctl
            .credentials()
            .revoke(id, provider)
            .map_err(internal)?;
        if revoked.is_empty() {
            return Err(Status::not_found(match (id, provider) {
                (Some(i), _) => format!("no active token with id {i}"),
                (_, p) => format!("no active token of provider {}", p.unwrap_or_default()),
            }));
        }
        tracing::info!(admin = %admin.name, ?revoked, "credentials revoked");
        Ok(Response::new(pb::RevokeCredentialResponse { revoked }))
    }

    #[tracing::instrument(skip_all)]
    async fn set_quota(
        &self,
        req: Request<pb::SetQuotaRequest>,
    ) -> Result<Response<pb::QuotaStatus>, Status> {
        let admin = self.credentials_writer(&req)?;
        let r = req.into_inner();
        provider_name(&r.provider, "provider")?;
        let q = r.quota.unwrap_or_default();
        let quota = Quota {
            vns: q.vns,
            nodes: q.nodes,
            cpu: q.cpu,
            memory_mb: q.memory_mb,
            bandwidth_mbps: q.bandwidth_mbps,
        };
        self.ctl
            .credentials()
            .set_quota(&r.provider, quota)
            .map_err(internal)?;
        tracing::info!(admin = %admin.name, provider = %r.provider, ?quota, "quota set");
        Ok(Response::new(self.status_of(&r.provider)))
    }

    #[tracing::instrument(skip_all)]
    async fn get_quota(
        &self,
        req: Request<pb::GetQuotaRequest>,
    ) -> Result<Response<pb::QuotaStatus>, Status> {
        let who = identity::caller(&self.ctl, &req)?;
        let asked = req.get_ref().provider.clone();
        let provider = if asked.is_empty() {
            identity::provider(&self.ctl, &req)?.0
        } else {
            provider_name(&asked, "provider")?;
            // A provider's own quota, or any for an admin; another's is not there for it.
            if who.role != Role::Admin && asked != who.name {
                return Err(Status::not_found(format!("no quota of provider {asked}")));
            }
            asked
        };
        Ok(Response::new(self.status_of(&provider)))
    }

    #[tracing::instrument(skip_all)]
    async fn cordon(
        &self,
        req: Request<pb::HostRequest>,
    ) -> Result<Response<pb::HostMaintenance>, Status> {
        self.set_cordon(req, true).await
    }

    #[tracing::instrument(skip_all)]
    async fn uncordon(
        &self,
        req: Request<pb::HostRequest>,
    ) -> Result<Response<pb::HostMaintenance>, Status> {
        self.set_cordon(req, false).await
    }

    #[tracing::instrument(skip_all)]
    async fn drain(
        &self,
        req: Request<pb::HostRequest>,
    ) -> Result<Response<pb::HostMaintenance>, Status> {
        let admin = identity::admin(&self.ctl, &req)?;
        let host = req.into_inner().host;
        host_name(&host)?;
        tracing::info!(admin = %admin.name, %host, "drain");
        let out = self.ctl.drain(&host).await.map_err(status)?;
        Ok(Response::new(pb::HostMaintenance {
            host,
            cordoned: true,
            moved: out.moved,
            remaining: out.remaining,
        }))
    }
}

impl AdminService {
    async fn set_cordon(
        &self,
        req: Request<pb::HostRequest>,
        cordoned: bool,
    ) -> Result<Response<pb::HostMaintenance>, Status> {
        let admin = identity::admin(&self.ctl, &req)?;
        let host = req.into_inner().host;
        host_name(&host)?;
        tracing::info!(admin = %admin.name, %host, cordoned, "cordon");
        self.ctl.cordon(&host, cordoned).await.map_err(status)?;
        Ok(Response::new(pb::HostMaintenance {
            host,
            cordoned,
            ..Default::default()
        }))
    }
}

fn host_name(h: &str) -> Result<(), Status> {
    check_identifier(h).map_err(|why| Status::invalid_argument(format!("host {h:?}: {why}")))
}
