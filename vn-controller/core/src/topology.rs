//! The topology file: the substrate's hosts and links in YAML, read by the controller
//! (`vn-controller --topology`) and by the testbed (`vnctl testbed up --topology`, which also
//! writes one for the controller). This is its only schema and its only parser.
//!
//! ```yaml
//! hosts:                      # optional; hosts register themselves
//!   - {id: h1, labels: [zone=a], cpu: 200, memory: 2048}
//! links:                      # one per host pair
//!   - {a: h1, b: h2, bandwidth: 1000, latency_ms: 1,
//!      a_address: 10.255.12.1, b_address: 10.255.12.2, segment: h1-h2}
//! ```
//!
//! - `hosts[].labels` add to what the host's agent reports. `cpu` (100 = one core) and `memory`
//!   (MiB) are the capacity a host's agent offers: the testbed starts the agent with them; the
//!   controller takes what the agent reports.
//! - `links[].bandwidth` in Mbit/s (> 0); `latency_ms` (>= 0) is used by the embedding;
//!   `a_address`/`b_address` are the tunnel endpoints on that link (default: the hosts' underlay
//!   addresses), optionally with a prefix length (`10.1.0.1/30`, which the testbed uses for the
//!   link's subnet); `segment`: links sharing an L2 segment share one VLAN ID space (default:
//!   the link's id); `id` defaults to `a-b`.
//!
//! Unknown keys are refused, so that a misspelt key is an error and not a silent default.
//! [`TopologyFile::links`] checks what every reader needs; the testbed adds its own checks
//! (host ids that fit namespace names, IPv4 subnets).

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("cannot read topology file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("topology file {path} is not valid")]
    Parse {
        path: String,
        #[source]
        source: serde_yaml_ng::Error,
    },
    #[error("topology link {index} ({a}-{b}): {reason}")]
    Link {
        index: usize,
        a: String,
        b: String,
        reason: String,
    },
    #[error("topology host {0}: listed twice")]
    DuplicateHost(String),
}

/// The topology file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologyFile {
    #[serde(default)]
    pub hosts: Vec<TopologyHost>,
    #[serde(default)]
    pub links: Vec<TopologyLink>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologyHost {
    pub id: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// CPU capacity the host's agent offers (100 = one core); default: what it probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u64>,
    /// Memory the host's agent offers (MiB); default: what it probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologyLink {
    /// Default `a-b`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub a: String,
    pub b: String,
    /// Mbit/s.
    pub bandwidth: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a_address: Option<LinkAddress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub b_address: Option<LinkAddress>,
    /// L2 segment (one VLAN ID space); default: the link's own id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<String>,
}

/// A link end's address, `a.b.c.d` or `a.b.c.d/len` (IPv6 likewise).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LinkAddress {
    pub addr: IpAddr,
    pub prefix_len: Option<u8>,
}

impl FromStr for LinkAddress {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(LinkAddress {
                addr: net.addr(),
                prefix_len: Some(net.prefix_len()),
            });
        }
        let addr = s
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address (a.b.c.d or a.b.c.d/len)"))?;
        Ok(LinkAddress {
            addr,
            prefix_len: None,
        })
    }
}

impl TryFrom<String> for LinkAddress {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl fmt::Display for LinkAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.prefix_len {
            Some(len) => write!(f, "{}/{len}", self.addr),
            None => write!(f, "{}", self.addr),
        }
    }
}

impl From<LinkAddress> for String {
    fn from(a: LinkAddress) -> String {
        a.to_string()
    }
}

impl From<IpAddr> for LinkAddress {
    fn from(addr: IpAddr) -> Self {
        LinkAddress {
            addr,
            prefix_len: None,
        }
    }
}

/// A substrate link between two hosts, as checked from a topology file (or made up by the
/// controller's full mesh).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubstrateLink {
    pub id: String,
    pub a: String,
    pub b: String,
    pub bandwidth_mbps: u64,
    pub latency_ms: Option<f64>,
    /// Tunnel endpoints on `a` and `b` (default: the hosts' underlay addresses).
    pub a_address: Option<IpAddr>,
    pub b_address: Option<IpAddr>,
    pub segment: String,
}

impl SubstrateLink {
    pub fn other(&self, host: &str) -> &str {
        if self.a == host { &self.b } else { &self.a }
    }
}

impl TopologyFile {
    /// Parses and checks a topology; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, TopologyError> {
        let topo: TopologyFile =
            serde_yaml_ng::from_str(text).map_err(|source| TopologyError::Parse {
                path: origin.to_string(),
                source,
            })?;
        topo.links()?;
        Ok(topo)
    }

    /// Reads, parses and checks a topology file.
    pub fn load(path: &Path) -> Result<Self, TopologyError> {
        let text = std::fs::read_to_string(path).map_err(|source| TopologyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The links, checked: hosts listed once, two distinct named ends, bandwidth > 0, latency
    /// >= 0, one link per host pair, unique ids; ids and segments defaulted.
    pub fn links(&self) -> Result<Vec<SubstrateLink>, TopologyError> {
        let mut hosts = BTreeSet::new();
        for h in &self.hosts {
            if !hosts.insert(h.id.clone()) {
                return Err(TopologyError::DuplicateHost(h.id.clone()));
            }
        }
        let mut out = Vec::new();
        let mut ids = BTreeSet::new();
        let mut pairs = BTreeSet::new();
        for (index, l) in self.links.iter().enumerate() {
            let err = |reason: String| TopologyError::Link {
                index,
                a: l.a.clone(),
                b: l.b.clone(),
                reason,
            };
            if l.a.is_empty() || l.b.is_empty() {
                return Err(err("both ends must name a host".into()));
            }
            if l.a == l.b {
                return Err(err(
                    "joins a host to itself (a link must join two different hosts)".into(),
                ));
            }
            if l.bandwidth == 0 {
                return Err(err("bandwidth must be > 0 Mbit/s".into()));
            }
            if let Some(lat) = l.latency_ms
                && !(lat.is_finite() && lat >= 0.0)
            {
                return Err(err(format!("latency_ms {lat} must be >= 0")));
            }
            let pair = if l.a < l.b {
                (l.a.clone(), l.b.clone())
            } else {
                (l.b.clone(), l.a.clone())
            };
            if !pairs.insert(pair) {
                return Err(err("a second link between the same hosts".into()));
            }
            let id = l.id.clone().unwrap_or_else(|| format!("{}-{}", l.a, l.b));
            if !ids.insert(id.clone()) {
                return Err(err(format!("link id {id} is used twice")));
            }
            out.push(SubstrateLink {
                segment: l.segment.clone().unwrap_or_else(|| id.clone()),
                id,
                a: l.a.clone(),
                b: l.b.clone(),
                bandwidth_mbps: l.bandwidth,
                latency_ms: l.latency_ms,
                a_address: l.a_address.map(|a| a.addr),
                b_address: l.b_address.map(|a| a.addr),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_checked_and_defaulted() {
        let yaml = "hosts: [{id: h1, labels: [eu], cpu: 200, memory: 2048}]\nlinks:\n  - {a: h1, b: h2, bandwidth: 1000, latency_ms: 1, a_address: 10.255.12.1, b_address: 10.255.12.2/30, segment: s12}\n  - {a: h2, b: h3, bandwidth: 10}\n";
        let t = TopologyFile::parse(yaml, "t.yaml").unwrap();
        assert_eq!((t.hosts[0].cpu, t.hosts[0].memory), (Some(200), Some(2048)));
        let links = t.links().unwrap();
        assert_eq!(links[0].id, "h1-h2");
        assert_eq!(links[0].segment, "s12");
        assert_eq!(links[0].b_address, Some("10.255.12.2".parse().unwrap()));
        assert_eq!(t.links[0].b_address.unwrap().prefix_len, Some(30));
        assert_eq!(
            (links[1].id.as_str(), links[1].segment.as_str()),
            ("h2-h3", "h2-h3")
        );
    }

    #[test]
    fn every_bad_topology_is_named() {
        for (bad, needle) in [
            (
                "links: [{a: h1, b: h1, bandwidth: 1}]",
                "link 0 (h1-h1): joins a host to itself",
            ),
            (
                "links: [{a: h1, b: '', bandwidth: 1}]",
                "both ends must name a host",
            ),
            (
                "links: [{a: h1, b: h2, bandwidth: 0}]",
                "bandwidth must be > 0",
            ),
            (
                "links: [{a: h1, b: h2, bandwidth: 1, latency_ms: -1}]",
                "latency_ms -1 must be >= 0",
            ),
            (
                "links: [{a: h1, b: h2, bandwidth: 1}, {a: h2, b: h1, bandwidth: 1}]",
                "link 1 (h2-h1): a second link between the same hosts",
            ),
            (
                "links: [{a: h1, b: h2, bandwidth: 1}, {id: h1-h2, a: h2, b: h3, bandwidth: 1}]",
                "link id h1-h2 is used twice",
            ),
            (
                "hosts: [{id: h1}, {id: h1}]",
                "topology host h1: listed twice",
            ),
        ] {
            let e = TopologyFile::parse(bad, "t.yaml").unwrap_err().to_string();
            assert!(e.contains(needle), "{bad}: {e}");
        }
        for bad in [
            "links: [{a: h1, b: h2, bw: 1}]",
            "hosts: [{id: h1, cores: 2}]",
            "links: [{a: h1, b: h2, bandwidth: 1, a_address: h2}]",
            "links: [{a: h1, b: h2, bandwidth: 1, a_address: 10.0.0.1/33}]",
        ] {
            let e = TopologyFile::parse(bad, "t.yaml").unwrap_err();
            assert!(matches!(e, TopologyError::Parse { .. }), "{bad}: {e}");
        }
    }

    #[test]
    fn written_files_read_back_the_same() {
        let t = TopologyFile {
            hosts: vec![TopologyHost {
                id: "h1".into(),
                ..Default::default()
            }],
            links: vec![TopologyLink {
                id: Some("h1-h2".into()),
                a: "h1".into(),
                b: "h2".into(),
                bandwidth: 500,
                a_address: Some("10.255.0.1".parse().unwrap()),
                b_address: Some("fd00::2/64".parse().unwrap()),
                ..Default::default()
            }],
        };
        let y = serde_yaml_ng::to_string(&t).unwrap();
        assert_eq!(
            y,
            "hosts:\n- id: h1\nlinks:\n- id: h1-h2\n  a: h1\n  b: h2\n  bandwidth: 500\n  \
             a_address: 10.255.0.1\n  b_address: fd00::2/64\n"
        );
        assert_eq!(TopologyFile::parse(&y, "t.yaml").unwrap(), t);
    }
}
