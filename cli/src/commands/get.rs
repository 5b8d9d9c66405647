//! `vnctl get vns|hosts|links|images|quota [NAME] [-o table|json|yaml]`.

use std::time::SystemTime;

use vnet_proto::v1 as pb;

use crate::client::{Controller, ControllerOpts, block_on, rpc_error};
use crate::output::{self, Format, HostView, ImageView, SubstrateLinkView, VnView};

/// What `get` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Resource {
    /// The caller's virtual networks.
    #[value(alias = "vn")]
    Vns,
    /// Substrate hosts (registered agents).
    #[value(alias = "host")]
    Hosts,
    /// Substrate links.
    #[value(alias = "link")]
    Links,
    /// Guest images the hosts hold, with the hosts that hold each.
    #[value(alias = "image")]
    Images,
    /// The quota and usage of your provider (NAME: another provider's, for an admin).
    #[value(alias = "quotas")]
    Quota,
}

/// List virtual networks, substrate hosts, substrate links or guest images.
#[derive(Debug, clap::Args)]
pub struct GetArgs {
    #[arg(value_enum)]
    pub resource: Resource,
    /// Only this one (VN name, host id, link id or image name).
    pub name: Option<String>,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// VNs only: show the hierarchy of parents and children (a table).
    #[arg(long)]
    pub tree: bool,
}

impl GetArgs {
    pub fn run(self, opts: &ControllerOpts) -> anyhow::Result<()> {
        block_on(self.execute(opts))
    }

    pub async fn execute(&self, opts: &ControllerOpts) -> anyhow::Result<()> {
        if self.tree {
            anyhow::ensure!(self.resource == Resource::Vns, "--tree applies to vns only");
            anyhow::ensure!(
                self.output == Format::Table,
                "--tree prints a table; -o json/yaml show each VN's depth and children"
            );
        }
        let ctl = Controller::connect(opts).await?;
        let text = match self.resource {
            Resource::Vns => self.vns(&ctl).await?,
            Resource::Hosts => self.hosts(&ctl).await?,
            Resource::Links => self.links(&ctl).await?,
            Resource::Images => self.images(&ctl).await?,
            Resource::Quota => self.quota(&ctl).await?,
        };
        if let Some(text) = text {
            print!("{text}");
        }
        Ok(())
    }

    /// Each of these returns a table to print, or `None` when it printed JSON or YAML itself.
    async fn quota(&self, ctl: &Controller) -> anyhow::Result<Option<String>> {
        let q = ctl
            .admin()
            .get_quota(pb::GetQuotaRequest {
                provider: self.name.clone().unwrap_or_default(),
            })
            .await
            .map_err(|s| rpc_error("get quota", s))?
            .into_inner();
        match self.output {
            Format::Table => Ok(Some(quota_table(&q))),
            f => output::print_structured(f, &QuotaView::from_proto(&q)).map(|()| None),
        }
    }

    async fn vns(&self, ctl: &Controller) -> anyhow::Result<Option<String>> {
        let vns = match &self.name {
            Some(name) => vec![
                ctl.vns()
                    .get(pb::GetVnRequest { name: name.clone() })
                    .await
                    .map_err(|s| rpc_error(&format!("get vn {name}"), s))?
                    .into_inner(),
            ],
            None => {
                let mut vns = ctl.list_vns("list vns").await?;
                vns.sort_by(|a, b| a.name.cmp(&b.name));
                vns
            }
        };
        Ok(Some(match self.output {
            Format::Table if vns.is_empty() => {
                format!(
                    "no virtual networks of provider {}\n",
                    ctl.provider().unwrap_or("-")
                )
            }
            Format::Table if self.tree => output::vns_tree(&vns, SystemTime::now()),
            Format::Table => output::vns_table(&vns, SystemTime::now()),
            f => {
                let views: Vec<VnView> = vns.iter().map(VnView::from_proto).collect();
                return one_or_many(f, views, self.name.is_some()).map(|()| None);
            }
        }))
    }

    async fn hosts(&self, ctl: &Controller) -> anyhow::Result<Option<String>> {
        let mut hosts = ctl.hosts().await.map_err(|s| rpc_error("list hosts", s))?;
        hosts.sort_by(|a, b| a.id.cmp(&b.id));
        if let Some(name) = &self.name {
            hosts.retain(|h| &h.id == name);
            anyhow::ensure!(!hosts.is_empty(), "no host {name:?} is registered");
        }
        Ok(Some(match self.output {
            Format::Table if hosts.is_empty() => "no hosts registered\n".into(),
            Format::Table => output::hosts_table(&hosts),
            f => {
                let views: Vec<HostView> = hosts.iter().map(HostView::from_proto).collect();
                return one_or_many(f, views, self.name.is_some()).map(|()| None);
            }
        }))
    }

    async fn links(&self, ctl: &Controller) -> anyhow::Result<Option<String>> {
        let mut links = ctl.links().await?;
        links.sort_by(|a, b| (&a.a, &a.b, &a.id).cmp(&(&b.a, &b.b, &b.id)));
        if let Some(name) = &self.name {
            links.retain(|l| &l.id == name);
            anyhow::ensure!(!links.is_empty(), "no substrate link {name:?}");
        }
        Ok(Some(match self.output {
            Format::Table if links.is_empty() => "no substrate links\n".into(),
            Format::Table => output::links_table(&links),
            f => {
                let views: Vec<SubstrateLinkView> =
                    links.iter().map(SubstrateLinkView::from_proto).collect();
                return one_or_many(f, views, self.name.is_some()).map(|()| None);
            }
        }))
    }

    async fn images(&self, ctl: &Controller) -> anyhow::Result<Option<String>> {
        let mut images = ctl
            .substrate()
            .list_images(pb::ListImagesRequest {})
            .await
            .map_err(|s| rpc_error("list images", s))?
            .into_inner()
            .images;
        if let Some(name) = &self.name {
            images.retain(|o| o.image.as_ref().is_some_and(|i| &i.name == name));
            anyhow::ensure!(!images.is_empty(), "no host holds an image {name:?}");
        }
        Ok(Some(match self.output {
            Format::Table if images.is_empty() => "no host holds a guest image\n".into(),
            Format::Table => output::images_table(&images),
            f => {
                let views: Vec<ImageView> = images.iter().map(ImageView::from_proto).collect();
                return one_or_many(f, views, self.name.is_some()).map(|()| None);
            }
        }))
    }
}

/// A named object prints as itself, a listing as a list.
fn one_or_many<T: serde::Serialize>(f: Format, mut views: Vec<T>, one: bool) -> anyhow::Result<()> {
    if one && views.len() == 1 {
        output::print_structured(f, &views.remove(0))
    } else {
        output::print_structured(f, &views)
    }
}

/// A provider's quota and usage, for `-o json|yaml`.
#[derive(Debug, serde::Serialize)]
struct QuotaView {
    provider: String,
    limits: std::collections::BTreeMap<&'static str, Option<u64>>,
    usage: std::collections::BTreeMap<&'static str, u64>,
}

fn quota_rows(q: &pb::QuotaStatus) -> Vec<(&'static str, Option<u64>, u64)> {
    let l = q.quota.unwrap_or_default();
    let u = q.usage.unwrap_or_default();
    vec![
        ("vns", l.vns, u.vns),
        ("nodes", l.nodes, u.nodes),
        ("cpu", l.cpu, u.cpu),
        ("memory_mb", l.memory_mb, u.memory_mb),
        ("bandwidth_mbps", l.bandwidth_mbps, u.bandwidth_mbps),
    ]
}

impl QuotaView {
    fn from_proto(q: &pb::QuotaStatus) -> Self {
        let rows = quota_rows(q);
        QuotaView {
            provider: q.provider.clone(),
            limits: rows.iter().map(|(k, l, _)| (*k, *l)).collect(),
            usage: rows.iter().map(|(k, _, u)| (*k, *u)).collect(),
        }
    }
}

fn quota_table(q: &pb::QuotaStatus) -> String {
    let rows: Vec<Vec<String>> = quota_rows(q)
        .into_iter()
        .map(|(k, l, u)| {
            vec![
                k.to_string(),
                l.map_or("unlimited".into(), |v| v.to_string()),
                u.to_string(),
            ]
        })
        .collect();
    format!(
        "provider {}\n{}",
        q.provider,
        output::table(&["RESOURCE", "LIMIT", "USED"], &rows)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{FakeController, Outcome};

    #[tokio::test]
    async fn images_lists_the_offer_and_names_an_unknown_image() {
        let (_, opts) = FakeController::serving(Outcome::Ready, None).await;
        let get = |name: Option<&str>| GetArgs {
            resource: Resource::Images,
            name: name.map(str::to_owned),
            output: Format::Table,
            tree: false,
        };
        let ctl = Controller::connect(&opts).await.unwrap();
        let table = get(None).images(&ctl).await.unwrap().unwrap();
        assert!(
            table.lines().nth(1).unwrap().starts_with("default "),
            "{table}"
        );
        assert!(table.contains("h1,h2"), "{table}");
        let e = get(Some("windows")).images(&ctl).await.unwrap_err();
        assert_eq!(e.to_string(), "no host holds an image \"windows\"");
    }
}
