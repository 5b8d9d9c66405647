//! The substrate registry: hosts (from the agents' hellos) and substrate links (from a topology
//! file, or a full mesh over the registered hosts' underlay addresses).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::model::Kind;
use crate::topology::TopologyHost;

pub use crate::topology::SubstrateLink;

/// Name of the single segment of the default full mesh.
pub const MESH_SEGMENT: &str = "mesh";
/// MTU assumed for an underlay interface the agent did not describe.
pub const DEFAULT_UNDERLAY_MTU: u32 = 1500;

/// An underlay interface of a host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnderlayIf {
    pub name: String,
    pub addresses: Vec<IpNet>,
    pub mtu: u32,
    pub mac: String,
}

/// A guest image a host holds, as its agent reported it (checked at the edge).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GuestImage {
    pub name: String,
    pub format: String,
    pub arch: String,
    pub size_bytes: u64,
    pub digest: String,
}

/// What an agent reported about its host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostInfo {
    pub id: String,
    pub underlay_address: IpAddr,
    pub underlay: Vec<UnderlayIf>,
    pub cpu: u64,
    pub memory_mb: u64,
    pub kinds: BTreeSet<Kind>,
    pub labels: BTreeSet<String>,
    /// The agent's `Capabilities`, protobuf-encoded (kept opaque: reported back as is).
    pub capabilities_pb: Vec<u8>,
    pub agent_version: String,
    pub boot_id: String,
    pub last_seen_unix_ms: u64,
    /// The guest images it holds (a `vm` node goes only to a host that holds its image).
    #[serde(default)]
    pub images: Vec<GuestImage>,
    /// Cordoned by an operator: no new node or transit is placed on it. Kept by the registry
    /// across the agent's hellos (which never set it) and persisted with the host.
    #[serde(default)]
    pub cordoned: bool,
    /// Guest CPU architectures it runs (a `vm` node goes only to a host that runs its arch).
    #[serde(default)]
    pub guest_archs: BTreeSet<String>,
}

impl HostInfo {
    /// Whether the host holds image `name`.
    pub fn has_image(&self, name: &str) -> bool {
        self.images.iter().any(|i| i.name == name)
    }

    /// Whether the host can run a guest of image `name` and architecture `arch`: it holds the
    /// image, of that architecture, and runs that architecture.
    pub fn runs_image(&self, name: &str, arch: &str) -> bool {
        self.guest_archs.contains(arch)
            && self.images.iter().any(|i| i.name == name && i.arch == arch)
    }
}

impl HostInfo {
    /// MTU of the underlay interface that carries `addr` (the interface holding it, else the
    /// first interface, else the default).
    pub fn mtu_for(&self, addr: IpAddr) -> u32 {
        self.underlay
            .iter()
            .find(|i| i.addresses.iter().any(|a| a.addr() == addr))
            .or_else(|| {
                self.underlay.iter().find(|i| {
                    i.addresses
                        .iter()
                        .any(|a| a.addr() == self.underlay_address)
                })
            })
            .or(self.underlay.first())
            .map(|i| i.mtu)
            .filter(|m| *m > 0)
            .unwrap_or(DEFAULT_UNDERLAY_MTU)
    }
}

/// Where substrate links come from.
#[derive(Clone, Debug, PartialEq)]
pub enum LinkSource {
    /// Fixed links from a topology file.
    Topology(Vec<SubstrateLink>),
    /// A full mesh over every registered host, with this bandwidth (Mbit/s).
    FullMesh { bandwidth_mbps: u64 },
}

/// Registered hosts, attachment, extra labels and substrate links.
#[derive(Clone, Debug)]
pub struct Registry {
    hosts: BTreeMap<String, HostInfo>,
    connected: BTreeSet<String>,
    extra_labels: BTreeMap<String, BTreeSet<String>>,
    source: LinkSource,
    /// Shared with embedding views, which take it without copying.
    links: Arc<Vec<SubstrateLink>>,
    link_index: HashMap<String, usize>,
    /// Links the agents' probes found down (debounced by the runtime): not usable.
    down_links: BTreeSet<String>,
}

impl Registry {
    pub fn new(source: LinkSource, topology_hosts: &[TopologyHost]) -> Self {
        let extra_labels = topology_hosts
            .iter()
            .map(|h| (h.id.clone(), h.labels.iter().cloned().collect()))
            .collect();
        let mut r = Registry {
            hosts: BTreeMap::new(),
            connected: BTreeSet::new(),
            extra_labels,
            source,
            links: Arc::new(Vec::new()),
            link_index: HashMap::new(),
            down_links: BTreeSet::new(),
        };
        r.rebuild_links();
        r
    }

    fn rebuild_links(&mut self) {
        let links = match &self.source {
            LinkSource::Topology(links) => links.clone(),
            LinkSource::FullMesh { bandwidth_mbps } => {
                let ids: Vec<&String> = self.hosts.keys().collect();
                let mut links = Vec::new();
                for (i, a) in ids.iter().enumerate() {
                    for b in &ids[i + 1..] {
                        links.push(SubstrateLink {
                            id: format!("{a}-{b}"),
                            a: (*a).clone(),
                            b: (*b).clone(),
                            bandwidth_mbps: *bandwidth_mbps,
                            latency_ms: None,
                            a_address: None,
                            b_address: None,
                            segment: MESH_SEGMENT.to_string(),
                        });
                    }
                }
                links
            }
        };
        self.link_index = links
            .iter()
            .enumerate()
            .map(|(i, l)| (l.id.clone(), i))
            .collect();
        self.links = Arc::new(links);
    }

    /// Registers or refreshes a host. Returns true when the set of hosts changed.
    pub fn upsert_host(&mut self, mut info: HostInfo) -> bool {
        if let Some(extra) = self.extra_labels.get(&info.id) {
            info.labels.extend(extra.iter().cloned());
        }
        let new = !self.hosts.contains_key(&info.id);
        if let Some(old) = self.hosts.get(&info.id) {
            info.cordoned |= old.cordoned;
        }
        self.hosts.insert(info.id.clone(), info);
        if new {
            self.rebuild_links();
        }
        new
    }

    pub fn set_connected(&mut self, host: &str, connected: bool) {
        if connected {
            self.connected.insert(host.to_string());
        } else {
            self.connected.remove(host);
        }
    }

    pub fn is_connected(&self, host: &str) -> bool {
        self.connected.contains(host)
    }

    /// Cordons or uncordons a known host; returns its record (to persist), `None` when unknown.
    pub fn set_cordoned(&mut self, host: &str, cordoned: bool) -> Option<&HostInfo> {
        let h = self.hosts.get_mut(host)?;
        h.cordoned = cordoned;
        Some(h)
    }

    pub fn is_cordoned(&self, host: &str) -> bool {
        self.hosts.get(host).is_some_and(|h| h.cordoned)
    }

    /// Attached and not cordoned: may receive new nodes and transits.
    pub fn is_schedulable(&self, host: &str) -> bool {
        self.is_connected(host) && !self.is_cordoned(host)
    }

    /// Marks a link down or up; returns whether that changed anything.
    pub fn set_link_down(&mut self, link: &str, down: bool) -> bool {
        if down {
            self.down_links.insert(link.to_string())
        } else {
            self.down_links.remove(link)
        }
    }

    pub fn is_link_down(&self, link: &str) -> bool {
        self.down_links.contains(link)
    }

    pub fn host(&self, id: &str) -> Option<&HostInfo> {
        self.hosts.get(id)
    }

    pub fn hosts(&self) -> impl Iterator<Item = &HostInfo> {
        self.hosts.values()
    }

    /// Every image some host holds, with the ids of the hosts that hold it (in id order).
    pub fn image_offers(&self) -> BTreeMap<&GuestImage, Vec<&str>> {
        let mut offers: BTreeMap<&GuestImage, Vec<&str>> = BTreeMap::new();
        for h in self.hosts.values() {
            for i in &h.images {
                offers.entry(i).or_default().push(&h.id);
            }
        }
        offers
    }

    /// The architectures hosts run, as people read them: `aarch64 on h2; x86_64 on h1, h2`.
    pub fn arch_offer_summary(&self) -> String {
        let mut archs: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for h in self.hosts.values() {
            for a in &h.guest_archs {
                archs.entry(a).or_default().push(&h.id);
            }
        }
        if archs.is_empty() {
            return "no host runs guests".into();
        }
        archs
            .iter()
            .map(|(a, hosts)| format!("{a} on {}", hosts.join(", ")))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The offer as people read it: `default (kernel, x86_64) on h1, h2; ...`.
    pub fn image_offer_summary(&self) -> String {
        let offers = self.image_offers();
        if offers.is_empty() {
            return "no host offers any image".into();
        }
        offers
            .iter()
            .map(|(i, hosts)| {
                format!(
                    "{} ({}, {}) on {}",
                    i.name,
                    i.format,
                    i.arch,
                    hosts.join(", ")
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub fn links(&self) -> &[SubstrateLink] {
        &self.links
    }

    /// The links, shared.
    pub fn links_arc(&self) -> Arc<Vec<SubstrateLink>> {
        self.links.clone()
    }

    pub fn link(&self, id: &str) -> Option<&SubstrateLink> {
        self.link_index.get(id).map(|i| &self.links[*i])
    }

    /// Whether a link can carry new virtual links: both ends registered and attached, and its
    /// probes do not find it down.
    pub fn link_usable(&self, l: &SubstrateLink) -> bool {
        self.is_connected(&l.a) && self.is_connected(&l.b) && !self.is_link_down(&l.id)
    }

    /// The tunnel address of `host` on link `l`.
    pub fn address_on(&self, l: &SubstrateLink, host: &str) -> Option<IpAddr> {
        let explicit = if l.a == host {
            l.a_address
        } else {
            l.b_address
        };
        explicit.or_else(|| self.hosts.get(host).map(|h| h.underlay_address))
    }

    /// MTU of the underlay that carries `host`'s end of `l`.
    pub fn mtu_on(&self, l: &SubstrateLink, host: &str) -> u32 {
        match (self.hosts.get(host), self.address_on(l, host)) {
            (Some(h), Some(addr)) => h.mtu_for(addr),
            _ => DEFAULT_UNDERLAY_MTU,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::host;

    #[test]
    fn full_mesh_grows_with_hosts() {
        let mut r = Registry::new(
            LinkSource::FullMesh {
                bandwidth_mbps: 100,
            },
            &[],
        );
        assert!(r.upsert_host(host("h1", 1, 9000)));
        assert!(r.links().is_empty());
        assert!(r.upsert_host(host("h2", 2, 9000)));
        assert!(r.upsert_host(host("h3", 3, 9000)));
        assert!(!r.upsert_host(host("h3", 3, 9000)));
        let ids: Vec<_> = r.links().iter().map(|l| l.id.as_str()).collect();
        assert_eq!(ids, ["h1-h2", "h1-h3", "h2-h3"]);
        let l = r.link("h1-h3").unwrap().clone();
        assert_eq!(r.address_on(&l, "h3"), Some("10.0.0.3".parse().unwrap()));
        assert_eq!(r.mtu_on(&l, "h3"), 9000);
        assert!(!r.link_usable(&l));
        r.set_connected("h1", true);
        r.set_connected("h3", true);
        assert!(r.link_usable(&l));
    }

    #[test]
    fn topology_file_parses_and_rejects_bad_links() {
        use crate::topology::TopologyFile;
        let yaml = "hosts: [{id: h1, labels: [eu]}]\nlinks:\n  - {a: h1, b: h2, bandwidth: 1000, latency_ms: 1, a_address: 10.255.12.1, b_address: 10.255.12.2, segment: h1-h2}\n  - {a: h2, b: h3, bandwidth: 10}\n";
        let t: TopologyFile = serde_yaml_ng::from_str(yaml).unwrap();
        let links = t.links().unwrap();
        assert_eq!(links[0].id, "h1-h2");
        assert_eq!(links[1].segment, "h2-h3");
        let mut r = Registry::new(LinkSource::Topology(links), &t.hosts);
        r.upsert_host(host("h1", 1, 9000));
        assert!(r.host("h1").unwrap().labels.contains("eu"));
        let l = r.link("h1-h2").unwrap().clone();
        assert_eq!(r.address_on(&l, "h1"), Some("10.255.12.1".parse().unwrap()));

        for (bad, needle) in [
            (
                "links: [{a: h1, b: h1, bandwidth: 1}]",
                "two different hosts",
            ),
            (
                "links: [{a: h1, b: h2, bandwidth: 0}]",
                "bandwidth must be > 0",
            ),
            (
                "links: [{a: h1, b: h2, bandwidth: 1}, {a: h2, b: h1, bandwidth: 1}]",
                "same hosts",
            ),
        ] {
            let t: TopologyFile = serde_yaml_ng::from_str(bad).unwrap();
            let e = t.links().unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
        assert!(serde_yaml_ng::from_str::<TopologyFile>("links: [{a: h1, b: h2, bw: 1}]").is_err());
    }

    #[test]
    fn the_deploy_topology_files_load() {
        use crate::topology::TopologyFile;
        for (name, text) in [
            (
                "topology.yaml",
                include_str!("../../../deploy/config/topology.yaml"),
            ),
            (
                "testbed-line.yaml",
                include_str!("../../../deploy/config/testbed-line.yaml"),
            ),
        ] {
            let t: TopologyFile =
                serde_yaml_ng::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            t.links().unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
