//! The testbed's substrate: hosts and links, from `--hosts N` (a full mesh) or `--topology FILE`,
//! and the topology file it writes for the controller.
//!
//! The input file has the controller's shape (`links: [{a, b, bandwidth, latency_ms, a_address,
//! b_address, segment}]`, `hosts: [{id, labels}]`) plus, per host, optional `cpu` and `memory`
//! (MiB) handed to that host's agent. Addresses may carry a prefix length (`10.1.0.1/30`); without
//! one, the two ends of a link get a /30. Missing addresses are assigned (`10.255.<k>.1/30` and
//! `.2/30` for the k-th link).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::Context;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// `--topology FILE`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologyInput {
    #[serde(default)]
    pub hosts: Vec<HostInput>,
    #[serde(default)]
    pub links: Vec<LinkInput>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostInput {
    pub id: String,
    #[serde(default)]
    pub labels: Vec<String>,
    /// CPU capacity given to the agent (abstract units, 100 = one core); default: probed.
    #[serde(default)]
    pub cpu: Option<u64>,
    /// Memory capacity given to the agent (MiB); default: probed.
    #[serde(default)]
    pub memory: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkInput {
    #[serde(default)]
    pub id: Option<String>,
    pub a: String,
    pub b: String,
    /// Mbit/s.
    pub bandwidth: u64,
    #[serde(default)]
    pub latency_ms: Option<f64>,
    #[serde(default)]
    pub a_address: Option<String>,
    #[serde(default)]
    pub b_address: Option<String>,
    #[serde(default)]
    pub segment: Option<String>,
}

/// A checked substrate: hosts in order, links with both addresses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Substrate {
    pub hosts: Vec<HostInput>,
    pub links: Vec<Link>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Link {
    pub id: String,
    pub a: String,
    pub b: String,
    pub bandwidth: u64,
    pub latency_ms: Option<f64>,
    pub a_address: Ipv4Net,
    pub b_address: Ipv4Net,
    pub segment: String,
}

/// Host ids end up in namespace and interface names: keep them short and plain.
pub fn check_host_id(id: &str) -> anyhow::Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 12
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !id.starts_with('-');
    anyhow::ensure!(
        ok,
        "host id {id:?}: use 1 to 12 characters of a-z, 0-9 and '-' (it names a namespace)"
    );
    Ok(())
}

/// `h1`..`hN`, every pair joined by a `bandwidth` Mbit/s link.
pub fn full_mesh(n: usize, bandwidth: u64) -> TopologyInput {
    let hosts: Vec<HostInput> = (1..=n)
        .map(|i| HostInput {
            id: format!("h{i}"),
            ..Default::default()
        })
        .collect();
    let mut links = Vec::new();
    for i in 0..n {
        for j in i + 1..n {
            links.push(LinkInput {
                a: hosts[i].id.clone(),
                b: hosts[j].id.clone(),
                bandwidth,
                latency_ms: None,
                ..Default::default()
            });
        }
    }
    TopologyInput { hosts, links }
}

/// Reads `--topology FILE`.
pub fn load(path: &Path) -> anyhow::Result<TopologyInput> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read topology {}", path.display()))?;
    serde_yaml_ng::from_str(&text).map_err(|e| {
        let loc = e
            .location()
            .map(|l| format!(":{}:{}", l.line(), l.column()))
            .unwrap_or_default();
        anyhow::anyhow!("{}{loc}: {e}", path.display())
    })
}

fn parse_end(s: &str) -> anyhow::Result<(Ipv4Addr, Option<u8>)> {
    if let Ok(net) = s.parse::<Ipv4Net>() {
        return Ok((net.addr(), Some(net.prefix_len())));
    }
    let addr: Ipv4Addr = s
        .parse()
        .map_err(|_| anyhow::anyhow!("{s:?} is not an IPv4 address (a.b.c.d or a.b.c.d/len)"))?;
    Ok((addr, None))
}

impl TopologyInput {
    /// Checks the topology and fills in what is missing: hosts named only by links, link ids,
    /// segments, addresses.
    pub fn resolve(&self) -> anyhow::Result<Substrate> {
        let mut hosts = self.hosts.clone();
        let mut known: BTreeSet<String> = BTreeSet::new();
        for h in &hosts {
            check_host_id(&h.id)?;
            anyhow::ensure!(known.insert(h.id.clone()), "host {} is listed twice", h.id);
        }
        for l in &self.links {
            for end in [&l.a, &l.b] {
                if known.insert(end.clone()) {
                    check_host_id(end)?;
                    hosts.push(HostInput {
                        id: end.clone(),
                        ..Default::default()
                    });
                }
            }
        }
        anyhow::ensure!(!hosts.is_empty(), "the topology has no hosts");

        let mut links = Vec::new();
        let mut ids = BTreeSet::new();
        let mut pairs = BTreeSet::new();
        let mut used: BTreeSet<Ipv4Addr> = BTreeSet::new();
        let mut auto = 0u32;
        for (k, l) in self.links.iter().enumerate() {
            let name = format!("link {k} ({}-{})", l.a, l.b);
            anyhow::ensure!(l.a != l.b, "{name}: joins a host to itself");
            anyhow::ensure!(l.bandwidth > 0, "{name}: bandwidth must be > 0 Mbit/s");
            if let Some(lat) = l.latency_ms {
                anyhow::ensure!(
                    lat.is_finite() && lat >= 0.0,
                    "{name}: latency_ms must be >= 0"
                );
            }
            let pair = if l.a < l.b {
                (l.a.clone(), l.b.clone())
            } else {
                (l.b.clone(), l.a.clone())
            };
            anyhow::ensure!(
                pairs.insert(pair),
                "{name}: a second link between the same hosts"
            );
            let id = l.id.clone().unwrap_or_else(|| format!("{}-{}", l.a, l.b));
            anyhow::ensure!(ids.insert(id.clone()), "{name}: link id {id} is used twice");
            let (a_address, b_address) = match (&l.a_address, &l.b_address) {
                (None, None) => {
                    // Skip /24s that a given address already uses.
                    let (a, b) = loop {
                        anyhow::ensure!(
                            auto < 256,
                            "more than 256 links without addresses: give a_address/b_address"
                        );
                        let a = Ipv4Addr::new(10, 255, auto as u8, 1);
                        let b = Ipv4Addr::new(10, 255, auto as u8, 2);
                        auto += 1;
                        if !used.contains(&a) && !used.contains(&b) {
                            break (a, b);
                        }
                    };
                    (Ipv4Net::new(a, 30)?, Ipv4Net::new(b, 30)?)
                }
                (Some(a), Some(b)) => {
                    let (a, pa) = parse_end(a).with_context(|| format!("{name}: a_address"))?;
                    let (b, pb) = parse_end(b).with_context(|| format!("{name}: b_address"))?;
                    let len = pa.or(pb).unwrap_or(30);
                    anyhow::ensure!(
                        pa.unwrap_or(len) == len && pb.unwrap_or(len) == len,
                        "{name}: the two addresses have different prefix lengths"
                    );
                    let (a, b) = (Ipv4Net::new(a, len)?, Ipv4Net::new(b, len)?);
                    anyhow::ensure!(
                        a.network() == b.network() && a.addr() != b.addr() && len <= 30,
                        "{name}: {a} and {b} must be two different addresses of one subnet"
                    );
                    (a, b)
                }
                _ => anyhow::bail!("{name}: give both a_address and b_address, or neither"),
            };
            for addr in [a_address.addr(), b_address.addr()] {
                anyhow::ensure!(used.insert(addr), "{name}: address {addr} is used twice");
            }
            links.push(Link {
                segment: l.segment.clone().unwrap_or_else(|| id.clone()),
                id,
                a: l.a.clone(),
                b: l.b.clone(),
                bandwidth: l.bandwidth,
                latency_ms: l.latency_ms,
                a_address,
                b_address,
            });
        }
        // Every pair of auto links must not collide with a given address in the same /30.
        let nets: Vec<Ipv4Net> = links.iter().map(|l| l.a_address.trunc()).collect();
        for (i, n) in nets.iter().enumerate() {
            for (j, m) in nets.iter().enumerate().skip(i + 1) {
                anyhow::ensure!(
                    !(n.contains(&m.network()) || m.contains(&n.network())),
                    "links {} and {} use overlapping subnets {n} and {m}",
                    links[i].id,
                    links[j].id
                );
            }
        }
        Ok(Substrate { hosts, links })
    }
}

/// The controller's topology file (`vn-controller --topology`).
#[derive(Debug, Serialize)]
pub struct ControllerTopology {
    pub hosts: Vec<ControllerHost>,
    pub links: Vec<ControllerLink>,
}

#[derive(Debug, Serialize)]
pub struct ControllerHost {
    pub id: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct ControllerLink {
    pub id: String,
    pub a: String,
    pub b: String,
    pub bandwidth: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    pub a_address: Ipv4Addr,
    pub b_address: Ipv4Addr,
    pub segment: String,
}

impl Substrate {
    pub fn controller_topology(&self) -> ControllerTopology {
        ControllerTopology {
            hosts: self
                .hosts
                .iter()
                .map(|h| ControllerHost {
                    id: h.id.clone(),
                    labels: h.labels.clone(),
                })
                .collect(),
            links: self
                .links
                .iter()
                .map(|l| ControllerLink {
                    id: l.id.clone(),
                    a: l.a.clone(),
                    b: l.b.clone(),
                    bandwidth: l.bandwidth,
                    latency_ms: l.latency_ms,
                    a_address: l.a_address.addr(),
                    b_address: l.b_address.addr(),
                    segment: l.segment.clone(),
                })
                .collect(),
        }
    }

    /// Neighbours of every host, for routing.
    pub fn adjacency(&self) -> BTreeMap<&str, Vec<(&str, &Link)>> {
        let mut adj: BTreeMap<&str, Vec<(&str, &Link)>> = BTreeMap::new();
        for h in &self.hosts {
            adj.entry(h.id.as_str()).or_default();
        }
        for l in &self.links {
            adj.entry(l.a.as_str()).or_default().push((l.b.as_str(), l));
            adj.entry(l.b.as_str()).or_default().push((l.a.as_str(), l));
        }
        adj
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_mesh_of_three() {
        let s = full_mesh(3, 1000).resolve().unwrap();
        let ids: Vec<&str> = s.hosts.iter().map(|h| h.id.as_str()).collect();
        assert_eq!(ids, ["h1", "h2", "h3"]);
        let links: Vec<(&str, &str, String, String)> = s
            .links
            .iter()
            .map(|l| {
                (
                    l.a.as_str(),
                    l.b.as_str(),
                    l.a_address.to_string(),
                    l.b_address.to_string(),
                )
            })
            .collect();
        assert_eq!(
            links,
            [
                ("h1", "h2", "10.255.0.1/30".into(), "10.255.0.2/30".into()),
                ("h1", "h3", "10.255.1.1/30".into(), "10.255.1.2/30".into()),
                ("h2", "h3", "10.255.2.1/30".into(), "10.255.2.2/30".into()),
            ]
        );
        assert_eq!(s.links[0].segment, "h1-h2");
    }

    #[test]
    fn controller_file_has_the_controller_shape() {
        let s = full_mesh(2, 500).resolve().unwrap();
        let y = serde_yaml_ng::to_string(&s.controller_topology()).unwrap();
        assert_eq!(
            y,
            "hosts:\n- id: h1\n- id: h2\nlinks:\n- id: h1-h2\n  a: h1\n  b: h2\n  bandwidth: 500\n  \
             a_address: 10.255.0.1\n  b_address: 10.255.0.2\n  segment: h1-h2\n"
        );
    }

    #[test]
    fn file_with_given_addresses_and_implicit_hosts() {
        let t: TopologyInput = serde_yaml_ng::from_str(
            "hosts: [{id: h1, labels: [zone=a], cpu: 400, memory: 2048}]\n\
             links:\n  - {a: h1, b: h2, bandwidth: 100, latency_ms: 2, a_address: 10.9.0.1, b_address: 10.9.0.2}\n  \
             - {a: h2, b: h3, bandwidth: 100}\n",
        )
        .unwrap();
        let s = t.resolve().unwrap();
        assert_eq!(s.hosts.len(), 3);
        assert_eq!(s.hosts[0].cpu, Some(400));
        assert_eq!(s.links[0].a_address.to_string(), "10.9.0.1/30");
        assert_eq!(s.links[1].a_address.to_string(), "10.255.0.1/30");
    }

    #[test]
    fn bad_topologies_are_named() {
        let cases = [
            (
                "links: [{a: h1, b: h1, bandwidth: 1}]",
                "joins a host to itself",
            ),
            (
                "links: [{a: h1, b: h2, bandwidth: 0}]",
                "bandwidth must be > 0",
            ),
            (
                "links: [{a: h1, b: h2, bandwidth: 1}, {a: h2, b: h1, bandwidth: 1}]",
                "a second link between the same hosts",
            ),
            (
                "links: [{a: h1, b: h2, bandwidth: 1, a_address: 10.0.0.1}]",
                "give both a_address and b_address",
            ),
            (
                "links: [{a: h1, b: h2, bandwidth: 1, a_address: 10.0.0.1, b_address: 10.0.1.1}]",
                "must be two different addresses of one subnet",
            ),
            ("links: [{a: H1, b: h2, bandwidth: 1}]", "host id \"H1\""),
            ("hosts: [{id: h1}, {id: h1}]", "listed twice"),
            ("hosts: []", "no hosts"),
        ];
        for (text, want) in cases {
            let t: TopologyInput = serde_yaml_ng::from_str(text).unwrap();
            let e = format!("{:#}", t.resolve().unwrap_err());
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn example_topologies_resolve() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config");
        for f in ["topology.yaml", "testbed-line.yaml"] {
            let t = load(&dir.join(f)).unwrap();
            let s = t.resolve().unwrap_or_else(|e| panic!("{f}: {e:#}"));
            assert!(s.hosts.len() >= 3, "{f}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let r: Result<TopologyInput, _> =
            serde_yaml_ng::from_str("links: [{a: h1, b: h2, bandwith: 1}]");
        assert!(r.is_err());
    }
}
