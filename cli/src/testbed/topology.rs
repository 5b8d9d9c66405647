//! The testbed's substrate: hosts and links, from `--hosts N` (a full mesh) or `--topology FILE`,
//! and the topology file it writes for the controller.
//!
//! The file is the one topology format ([`vn_core::topology`], which the controller reads too).
//! The testbed adds its own checks and defaults: host ids short and plain enough to name
//! namespaces, IPv4 link addresses whose two ends share a subnet (without a prefix length, a
//! /30), and addresses for links that give none (`10.255.<k>.1/30` and `.2/30` for the k-th, then
//! the next /30 of each /24 in turn: `10.255.<k mod 256>.<4 (k div 256) + 1>`, up to 16384 links).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use anyhow::Context;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use vn_core::topology::{LinkAddress, TopologyFile, TopologyHost, TopologyLink};

/// A checked substrate: hosts in order, links with both addresses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Substrate {
    pub hosts: Vec<TopologyHost>,
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
pub fn full_mesh(n: usize, bandwidth: u64) -> TopologyFile {
    let hosts: Vec<TopologyHost> = (1..=n)
        .map(|i| TopologyHost {
            id: format!("h{i}"),
            ..Default::default()
        })
        .collect();
    let mut links = Vec::new();
    for i in 0..n {
        for j in i + 1..n {
            links.push(TopologyLink {
                a: hosts[i].id.clone(),
                b: hosts[j].id.clone(),
                bandwidth,
                ..Default::default()
            });
        }
    }
    TopologyFile { hosts, links }
}

/// Reads `--topology FILE` (parsed and checked as every reader does).
pub fn load(path: &Path) -> anyhow::Result<TopologyFile> {
    Ok(TopologyFile::load(path)?)
}

/// An IPv4 link end, with its prefix length if it gives one.
fn ipv4_end(a: LinkAddress) -> anyhow::Result<(Ipv4Addr, Option<u8>)> {
    match a.addr {
        IpAddr::V4(v4) => Ok((v4, a.prefix_len)),
        IpAddr::V6(_) => anyhow::bail!("{a} is not an IPv4 address (the testbed's links are IPv4)"),
    }
}

/// Checks the topology and fills in what is missing: hosts named only by links, link ids,
/// segments, addresses.
pub fn resolve(t: &TopologyFile) -> anyhow::Result<Substrate> {
    // What every reader checks (and the ids and segments it defaults), then the testbed's own.
    let checked = t.links()?;
    let hosts = hosts(t)?;
    let mut links = Vec::new();
    let mut addresses = Addresses::default();
    for (k, (l, c)) in t.links.iter().zip(checked).enumerate() {
        let name = format!("link {k} ({}-{})", l.a, l.b);
        let (a_address, b_address) = addresses.of(l, &name)?;
        links.push(Link {
            segment: c.segment,
            id: c.id,
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

/// The listed hosts, then those named only by links; every id fit to name a namespace.
fn hosts(t: &TopologyFile) -> anyhow::Result<Vec<TopologyHost>> {
    let mut hosts = t.hosts.clone();
    let mut known: BTreeSet<String> = BTreeSet::new();
    for h in &hosts {
        check_host_id(&h.id)?;
        anyhow::ensure!(known.insert(h.id.clone()), "host {} is listed twice", h.id);
    }
    for l in &t.links {
        for end in [&l.a, &l.b] {
            if known.insert(end.clone()) {
                check_host_id(end)?;
                hosts.push(TopologyHost {
                    id: end.clone(),
                    ..Default::default()
                });
            }
        }
    }
    anyhow::ensure!(!hosts.is_empty(), "the topology has no hosts");
    Ok(hosts)
}

/// Links that get automatic addresses at most: every /30 of 10.255.0.0/16.
const AUTO_LINKS: u32 = 256 * 64;

/// The addresses of the links so far: each used once; the next automatic /30.
#[derive(Default)]
struct Addresses {
    used: BTreeSet<Ipv4Addr>,
    auto: u32,
}

impl Addresses {
    /// The two ends' addresses of `l` (called `name` in errors): the given ones, in one IPv4
    /// subnet, or the next free automatic pair.
    fn of(&mut self, l: &TopologyLink, name: &str) -> anyhow::Result<(Ipv4Net, Ipv4Net)> {
        let (a_address, b_address) = match (l.a_address, l.b_address) {
            (None, None) => {
                // The k-th automatic pair: /30 number k div 256 of the /24 10.255.<k mod 256>
                // (the first 256 links keep their addresses of old); pairs that a given address
                // already uses are skipped.
                let (a, b) = loop {
                    anyhow::ensure!(
                        self.auto < AUTO_LINKS,
                        "more than {AUTO_LINKS} links without addresses: give a_address/b_address"
                    );
                    let (net, quad) = ((self.auto % 256) as u8, (self.auto / 256) as u8 * 4);
                    let a = Ipv4Addr::new(10, 255, net, quad + 1);
                    let b = Ipv4Addr::new(10, 255, net, quad + 2);
                    self.auto += 1;
                    if !self.used.contains(&a) && !self.used.contains(&b) {
                        break (a, b);
                    }
                };
                (Ipv4Net::new(a, 30)?, Ipv4Net::new(b, 30)?)
            }
            (Some(a), Some(b)) => {
                let (a, pa) = ipv4_end(a).with_context(|| format!("{name}: a_address"))?;
                let (b, pb) = ipv4_end(b).with_context(|| format!("{name}: b_address"))?;
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
            anyhow::ensure!(
                self.used.insert(addr),
                "{name}: address {addr} is used twice"
            );
        }
        Ok((a_address, b_address))
    }
}

impl Substrate {
    /// The topology file for the controller (`vn-controller --topology`): hosts with their
    /// labels, links with every default filled in and plain addresses (the tunnel endpoints).
    pub fn controller_topology(&self) -> TopologyFile {
        let end = |a: Ipv4Net| Some(LinkAddress::from(IpAddr::V4(a.addr())));
        TopologyFile {
            hosts: self
                .hosts
                .iter()
                .map(|h| TopologyHost {
                    id: h.id.clone(),
                    labels: h.labels.clone(),
                    ..Default::default()
                })
                .collect(),
            links: self
                .links
                .iter()
                .map(|l| TopologyLink {
                    id: Some(l.id.clone()),
                    a: l.a.clone(),
                    b: l.b.clone(),
                    bandwidth: l.bandwidth,
                    latency_ms: l.latency_ms,
                    a_address: end(l.a_address),
                    b_address: end(l.b_address),
                    segment: Some(l.segment.clone()),
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
        let s = resolve(&full_mesh(3, 1000)).unwrap();
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
    fn a_full_mesh_of_fifty_hosts_gets_addresses_beyond_256_links() {
        let s = resolve(&full_mesh(50, 1000)).unwrap();
        assert_eq!(s.links.len(), 1225);
        assert_eq!(s.links[255].a_address.to_string(), "10.255.255.1/30");
        assert_eq!(s.links[256].a_address.to_string(), "10.255.0.5/30");
        assert_eq!(s.links[1224].b_address.to_string(), "10.255.200.18/30");
        let e = format!("{:#}", resolve(&full_mesh(182, 1)).unwrap_err());
        assert!(e.contains("more than 16384 links without addresses"), "{e}");
    }

    #[test]
    fn controller_file_has_the_controller_shape() {
        let s = resolve(&full_mesh(2, 500)).unwrap();
        let y = serde_yaml_ng::to_string(&s.controller_topology()).unwrap();
        assert_eq!(
            y,
            "hosts:\n- id: h1\n- id: h2\nlinks:\n- id: h1-h2\n  a: h1\n  b: h2\n  bandwidth: 500\n  \
             a_address: 10.255.0.1\n  b_address: 10.255.0.2\n  segment: h1-h2\n"
        );
    }

    #[test]
    fn file_with_given_addresses_and_implicit_hosts() {
        let t: TopologyFile = serde_yaml_ng::from_str(
            "hosts: [{id: h1, labels: [zone=a], cpu: 400, memory: 2048}]\n\
             links:\n  - {a: h1, b: h2, bandwidth: 100, latency_ms: 2, a_address: 10.9.0.1, b_address: 10.9.0.2}\n  \
             - {a: h2, b: h3, bandwidth: 100}\n",
        )
        .unwrap();
        let s = resolve(&t).unwrap();
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
            let t: TopologyFile = serde_yaml_ng::from_str(text).unwrap();
            let e = format!("{:#}", resolve(&t).unwrap_err());
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn example_topologies_resolve() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config");
        for f in ["topology.yaml", "testbed-line.yaml"] {
            let t = load(&dir.join(f)).unwrap();
            let s = resolve(&t).unwrap_or_else(|e| panic!("{f}: {e:#}"));
            assert!(s.hosts.len() >= 3, "{f}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let r: Result<TopologyFile, _> =
            serde_yaml_ng::from_str("links: [{a: h1, b: h2, bandwith: 1}]");
        assert!(r.is_err());
    }
}
