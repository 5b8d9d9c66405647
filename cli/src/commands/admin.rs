//! `vnctl admin credentials create|revoke`, `vnctl admin quota set` and host maintenance:
//! `vnctl admin cordon|uncordon|drain HOST`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use vnet_proto::v1 as pb;

use crate::client::{Controller, ControllerOpts, block_on, rpc_error};
use crate::config::{Config, Context};

#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    #[command(subcommand)]
    pub cmd: AdminCmd,
}

#[derive(Debug, clap::Subcommand)]
pub enum AdminCmd {
    /// Bearer tokens of providers and admins.
    #[command(subcommand)]
    Credentials(CredentialsCmd),
    /// Per-provider limits.
    #[command(subcommand)]
    Quota(QuotaCmd),
    /// Place nothing new on HOST (what it holds stays); durable.
    Cordon { host: String },
    /// Let HOST take new nodes again.
    Uncordon { host: String },
    /// Cordon HOST and re-embed every VN that holds anything on it elsewhere (pinned nodes and
    /// VNs with children stay; they are listed).
    Drain { host: String },
}

#[derive(Debug, clap::Subcommand)]
pub enum CredentialsCmd {
    /// Issue a token and write a ready config file for it (the token is shown nowhere else).
    Create {
        /// The provider the token names.
        #[arg(long)]
        provider: String,
        /// Make it an admin token (named --provider) instead of a provider's.
        #[arg(long)]
        admin: bool,
        /// Lifetime, e.g. 30d, 12h (default: never expires).
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
        /// Where to write the config file (mode 0600); it must not exist.
        #[arg(long)]
        out: PathBuf,
    },
    /// Revoke one token (--id) or every token of a provider (--provider).
    Revoke {
        #[arg(
            long,
            conflicts_with = "provider",
            required_unless_present = "provider"
        )]
        id: Option<String>,
        #[arg(long)]
        provider: Option<String>,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum QuotaCmd {
    /// Set a provider's limits (a limit not given is no limit).
    Set {
        provider: String,
        #[arg(long)]
        vns: Option<u64>,
        /// Virtual nodes, whatever their demands.
        #[arg(long)]
        nodes: Option<u64>,
        /// CPU in 1/100 core, as in specs.
        #[arg(long)]
        cpu: Option<u64>,
        /// Memory in MiB.
        #[arg(long)]
        memory: Option<u64>,
        /// Link bandwidth in Mbit/s.
        #[arg(long)]
        bandwidth: Option<u64>,
    },
}

impl AdminArgs {
    pub fn run(self, opts: &ControllerOpts) -> anyhow::Result<()> {
        block_on(async {
            let ctl = Controller::connect(opts).await?;
            match self.cmd {
                AdminCmd::Credentials(CredentialsCmd::Create {
                    provider,
                    admin,
                    ttl,
                    out,
                }) => create(&ctl, opts, &provider, admin, ttl, &out).await,
                AdminCmd::Credentials(CredentialsCmd::Revoke { id, provider }) => {
                    let r = ctl
                        .admin()
                        .revoke_credential(pb::RevokeCredentialRequest {
                            token_id: id.unwrap_or_default(),
                            provider: provider.unwrap_or_default(),
                        })
                        .await
                        .map_err(|s| rpc_error("revoke credentials", s))?
                        .into_inner();
                    println!("revoked {}", r.revoked.join(", "));
                    Ok(())
                }
                AdminCmd::Cordon { host } => maintenance(&ctl, Maintenance::Cordon, &host).await,
                AdminCmd::Uncordon { host } => {
                    maintenance(&ctl, Maintenance::Uncordon, &host).await
                }
                AdminCmd::Drain { host } => maintenance(&ctl, Maintenance::Drain, &host).await,
                AdminCmd::Quota(QuotaCmd::Set {
                    provider,
                    vns,
                    nodes,
                    cpu,
                    memory,
                    bandwidth,
                }) => {
                    let q = pb::Quota {
                        vns,
                        nodes,
                        cpu,
                        memory_mb: memory,
                        bandwidth_mbps: bandwidth,
                    };
                    ctl.admin()
                        .set_quota(pb::SetQuotaRequest {
                            provider: provider.clone(),
                            quota: Some(q),
                        })
                        .await
                        .map_err(|s| rpc_error(&format!("set quota of {provider}"), s))?;
                    println!("quota of provider {provider} set");
                    Ok(())
                }
            }
        })
    }
}

#[derive(Debug, Clone, Copy)]
enum Maintenance {
    Cordon,
    Uncordon,
    Drain,
}

/// Cordon, uncordon or drain `host`; a drain prints what moved and what stays.
async fn maintenance(ctl: &Controller, what: Maintenance, host: &str) -> anyhow::Result<()> {
    let req = pb::HostRequest {
        host: host.to_string(),
    };
    let mut admin = ctl.admin();
    let (r, verb) = match what {
        Maintenance::Cordon => (admin.cordon(req).await, "cordon"),
        Maintenance::Uncordon => (admin.uncordon(req).await, "uncordon"),
        Maintenance::Drain => (admin.drain(req).await, "drain"),
    };
    let r = r
        .map_err(|s| rpc_error(&format!("{verb} host {host}"), s))?
        .into_inner();
    match what {
        Maintenance::Cordon => println!("host {host} cordoned: nothing new is placed on it"),
        Maintenance::Uncordon => println!("host {host} uncordoned"),
        Maintenance::Drain => {
            println!(
                "host {host} drained (cordoned): {} VN(s) moved, {} remain",
                r.moved.len(),
                r.remaining.len()
            );
            for m in &r.moved {
                println!("  moved   {m}");
            }
            for m in &r.remaining {
                println!("  remains {m}");
            }
        }
    }
    Ok(())
}

/// Issues the token and writes a config file with one context: this controller, its CA
/// inline, the token.
async fn create(
    ctl: &Controller,
    opts: &ControllerOpts,
    provider: &str,
    admin: bool,
    ttl: Option<Duration>,
    out: &Path,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        !out.exists(),
        "{} exists: choose another --out (vnctl does not overwrite credentials)",
        out.display()
    );
    let r = ctl
        .admin()
        .create_credential(pb::CreateCredentialRequest {
            provider: provider.to_string(),
            role: if admin {
                pb::Role::Admin
            } else {
                pb::Role::Provider
            } as i32,
            ttl_secs: ttl.map_or(0, |d| d.as_secs().max(1)),
        })
        .await
        .map_err(|s| rpc_error(&format!("create credential for {provider}"), s))?
        .into_inner();
    let ca = opts
        .ca_pem
        .as_ref()
        .map(|p| String::from_utf8(p.clone()))
        .transpose()
        .context("the CA is not PEM text")?;
    let mut file = Config::default();
    file.upsert_current(Context {
        name: provider.to_string(),
        controller: ctl.addr().to_string(),
        certificate_authority: None,
        certificate_authority_data: ca,
        token: Some(r.token),
    });
    file.save(out)?;
    let expiry = if r.expires_unix_ms == 0 {
        "never expires".to_string()
    } else {
        format!(
            "expires {}",
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + Duration::from_millis(r.expires_unix_ms)
            )
        )
    };
    println!(
        "credential {} for {} {provider} ({expiry}) written to {}",
        r.token_id,
        if admin { "admin" } else { "provider" },
        out.display()
    );
    Ok(())
}
