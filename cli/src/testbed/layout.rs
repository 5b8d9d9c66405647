//! The testbed's names and addresses, and the kernel operations that build it: pure code.
//!
//! ```text
//!  root namespace                       host namespaces
//!  vnmgmt0 10.254.0.1/24 (bridge)
//!    |- vnmgmt0-1 ==veth== mgmt0 10.254.0.2/24  [h1]  to-h2 10.255.0.1/30 ==veth== to-h1 10.255.0.2/30 [h2]
//!    |- vnmgmt0-2 ==veth== mgmt0 10.254.0.3/24  [h2]  ...
//!    '- vnmgmt0-3 ==veth== mgmt0 10.254.0.4/24  [h3]
//! ```
//!
//! - Management: a bridge in the root namespace (the controller listens on its address) and one
//!   veth per host, so that agents inside host namespaces reach the controller.
//! - Underlay: one veth pair per substrate link between the two host namespaces, a /30 on it,
//!   egress shaped to the link's bandwidth with TBF at both ends.
//! - A host's primary underlay address is the address of its first link; every host has a /32
//!   route to every other host's primary address along a shortest path (BFS, so next hops are
//!   loop-free), with `src` its own primary so that replies find their way back; forwarding is on.

use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv4Addr;
use std::path::Path;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::topology::{Link, Substrate};

/// Settings that name things (so that several testbeds can coexist, e.g. a test's and yours).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Naming {
    /// Prepended to host namespace names (`h1` -> `<prefix>h1`).
    pub netns_prefix: String,
    /// The management bridge in the root namespace; its veths are `<bridge>-<i>`.
    pub mgmt_bridge: String,
    /// The management network; the bridge gets the first address, host i the (1+i)-th.
    pub mgmt_subnet: Ipv4Net,
    /// MTU of the underlay veths.
    pub underlay_mtu: u32,
}

/// The underlay MTU of a testbed unless told otherwise: 1500 plus the IPv4 VXLAN overhead (50), so
/// that a VXLAN link carries the same 1500-byte frames as a veth or an 802.1Q link (the controller
/// gives a VXLAN link the underlay MTU minus 50). Measured (interleaved A/B, 5-10 pairs of 3 s
/// iperf3 runs, medians, load 10-26 on 2 cores): one TCP stream over VXLAN at 1500 on a 1550
/// underlay beat 1450 on 1500 in 6 of 7 comparisons (+2..+12%, once -17%) and cost 3-10% less CPU
/// per byte in 3 of 4 (once +7%); a raw veth at 1450 and at 1500 did not differ.
pub const DEFAULT_UNDERLAY_MTU: u32 = 1550;

impl Default for Naming {
    fn default() -> Self {
        Naming {
            netns_prefix: String::new(),
            mgmt_bridge: "vnmgmt0".into(),
            mgmt_subnet: "10.254.0.0/24".parse().expect("static"),
            underlay_mtu: DEFAULT_UNDERLAY_MTU,
        }
    }
}

/// Where one host lives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostLayout {
    pub id: String,
    pub netns: String,
    /// Root-namespace end of the management veth.
    pub mgmt_root_if: String,
    /// Address of the host on the management network.
    pub mgmt_address: Ipv4Net,
    /// Primary underlay address (the agent's `--underlay-address`).
    pub primary: Ipv4Addr,
    pub routes: Vec<Route>,
    pub labels: Vec<String>,
    pub cpu: Option<u64>,
    pub memory: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: Ipv4Net,
    pub via: Ipv4Addr,
    pub src: Ipv4Addr,
}

/// One underlay veth pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkLayout {
    pub link: Link,
    pub a_netns: String,
    pub b_netns: String,
    pub a_if: String,
    pub b_if: String,
}

/// The whole testbed's names and addresses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Layout {
    pub naming: Naming,
    pub gateway: Ipv4Net,
    pub hosts: Vec<HostLayout>,
    pub links: Vec<LinkLayout>,
}

/// Interface names are at most 15 bytes.
pub const IFNAMSIZ: usize = 15;

/// Host-side name of the management veth.
pub const MGMT_IF: &str = "mgmt0";

/// One kernel operation. `netns: None` is the root namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetOp {
    AddNetns {
        name: String,
    },
    AddBridge {
        name: String,
    },
    /// A veth with one end in the root namespace and the other in `peer_netns`.
    AddVethToNetns {
        name: String,
        peer: String,
        peer_netns: String,
    },
    /// A veth between two namespaces.
    AddVethBetween {
        a_netns: String,
        a: String,
        b_netns: String,
        b: String,
    },
    /// Tags a root-namespace link as ours (ifalias).
    SetAlias {
        dev: String,
        alias: String,
    },
    SetMaster {
        dev: String,
        master: String,
    },
    SetMtu {
        netns: Option<String>,
        dev: String,
        mtu: u32,
    },
    AddAddress {
        netns: Option<String>,
        dev: String,
        cidr: Ipv4Net,
    },
    Up {
        netns: Option<String>,
        dev: String,
    },
    Sysctl {
        netns: String,
        key: String,
        value: String,
    },
    /// Egress shaping (TBF).
    Shape {
        netns: String,
        dev: String,
        mbit: u64,
    },
    AddRoute {
        netns: String,
        route: Route,
    },
    /// Takes a link down (a fault injected on the underlay).
    Down {
        netns: String,
        dev: String,
    },
    /// Adds or replaces a route (restoring it after a link came back up).
    ReplaceRoute {
        netns: String,
        route: Route,
    },
}

impl NetOp {
    /// What a recorded-before-created object this op makes, if any (for ownership).
    pub fn creates(&self) -> Option<Owned> {
        match self {
            NetOp::AddNetns { name } => Some(Owned::Netns(name.clone())),
            NetOp::AddBridge { name } => Some(Owned::RootLink(name.clone())),
            NetOp::AddVethToNetns { name, .. } => Some(Owned::RootLink(name.clone())),
            _ => None,
        }
    }
}

/// Objects outside host namespaces that the testbed creates (what `down` removes). Everything
/// else lives inside a host namespace and goes with it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Owned {
    Netns(String),
    RootLink(String),
}

/// The ifalias that marks root-namespace links as this testbed's.
pub fn alias_tag(state_dir: &Path) -> String {
    format!("vnet-testbed {}", state_dir.display())
}

/// Names of the underlay interface in `host` towards `peer`.
fn underlay_if(peer: &str, k: usize) -> String {
    let name = format!("to-{peer}");
    if name.len() <= IFNAMSIZ {
        name
    } else {
        format!("ul{k}")
    }
}

impl Layout {
    pub fn new(substrate: &Substrate, naming: &Naming) -> anyhow::Result<Self> {
        let n = substrate.hosts.len();
        let max_hosts = (naming.mgmt_subnet.hosts().count()).saturating_sub(1);
        anyhow::ensure!(
            n <= max_hosts && n <= 999,
            "{n} hosts do not fit the management network {} (at most {})",
            naming.mgmt_subnet,
            max_hosts.min(999)
        );
        anyhow::ensure!(
            !naming.mgmt_bridge.is_empty()
                && naming.mgmt_bridge.len() + 1 + n.to_string().len() <= IFNAMSIZ,
            "management bridge name {:?} is too long: its veths are named <bridge>-<i> and \
             interface names have at most {IFNAMSIZ} characters",
            naming.mgmt_bridge
        );
        let mut mgmt_hosts = naming.mgmt_subnet.hosts();
        let gw_addr = mgmt_hosts.next().expect("checked size");
        let gateway = Ipv4Net::new(gw_addr, naming.mgmt_subnet.prefix_len())?;

        // Primary: the address of the host's first link (or its management address when alone).
        let mut primary: BTreeMap<&str, Ipv4Addr> = BTreeMap::new();
        for l in &substrate.links {
            primary.entry(l.a.as_str()).or_insert(l.a_address.addr());
            primary.entry(l.b.as_str()).or_insert(l.b_address.addr());
        }
        let mut hosts = Vec::new();
        for (i, h) in substrate.hosts.iter().enumerate() {
            let mgmt = mgmt_hosts.next().expect("checked size");
            let mgmt_address = Ipv4Net::new(mgmt, naming.mgmt_subnet.prefix_len())?;
            anyhow::ensure!(
                n == 1 || primary.contains_key(h.id.as_str()),
                "host {} has no substrate link",
                h.id
            );
            hosts.push(HostLayout {
                id: h.id.clone(),
                netns: format!("{}{}", naming.netns_prefix, h.id),
                mgmt_root_if: format!("{}-{}", naming.mgmt_bridge, i + 1),
                mgmt_address,
                primary: primary.get(h.id.as_str()).copied().unwrap_or(mgmt),
                routes: Vec::new(),
                labels: h.labels.clone(),
                cpu: h.cpu,
                memory: h.memory,
            });
        }
        let netns_of: BTreeMap<String, String> = hosts
            .iter()
            .map(|h| (h.id.clone(), h.netns.clone()))
            .collect();
        let links: Vec<LinkLayout> = substrate
            .links
            .iter()
            .enumerate()
            .map(|(k, l)| LinkLayout {
                link: l.clone(),
                a_netns: netns_of[&l.a].clone(),
                b_netns: netns_of[&l.b].clone(),
                a_if: underlay_if(&l.b, k),
                b_if: underlay_if(&l.a, k),
            })
            .collect();
        let routes = routes(substrate, &primary);
        for h in &mut hosts {
            h.routes = routes.get(&h.id).cloned().unwrap_or_default();
        }
        Ok(Layout {
            naming: naming.clone(),
            gateway,
            hosts,
            links,
        })
    }

    /// Everything `testbed up` does to the kernel, in order.
    pub fn up_ops(&self, alias: &str) -> Vec<NetOp> {
        let bridge = &self.naming.mgmt_bridge;
        let mut ops = vec![
            NetOp::AddBridge {
                name: bridge.clone(),
            },
            NetOp::SetAlias {
                dev: bridge.clone(),
                alias: alias.into(),
            },
            NetOp::AddAddress {
                netns: None,
                dev: bridge.clone(),
                cidr: self.gateway,
            },
            NetOp::Up {
                netns: None,
                dev: bridge.clone(),
            },
        ];
        for h in &self.hosts {
            let ns = Some(h.netns.clone());
            ops.extend([
                NetOp::AddNetns {
                    name: h.netns.clone(),
                },
                NetOp::Up {
                    netns: ns.clone(),
                    dev: "lo".into(),
                },
                NetOp::Sysctl {
                    netns: h.netns.clone(),
                    key: "net.ipv4.ip_forward".into(),
                    value: "1".into(),
                },
                NetOp::AddVethToNetns {
                    name: h.mgmt_root_if.clone(),
                    peer: MGMT_IF.into(),
                    peer_netns: h.netns.clone(),
                },
                NetOp::SetAlias {
                    dev: h.mgmt_root_if.clone(),
                    alias: alias.into(),
                },
                NetOp::SetMaster {
                    dev: h.mgmt_root_if.clone(),
                    master: bridge.clone(),
                },
                NetOp::Up {
                    netns: None,
                    dev: h.mgmt_root_if.clone(),
                },
                NetOp::AddAddress {
                    netns: ns.clone(),
                    dev: MGMT_IF.into(),
                    cidr: h.mgmt_address,
                },
                NetOp::Up {
                    netns: ns,
                    dev: MGMT_IF.into(),
                },
            ]);
        }
        for l in &self.links {
            ops.push(NetOp::AddVethBetween {
                a_netns: l.a_netns.clone(),
                a: l.a_if.clone(),
                b_netns: l.b_netns.clone(),
                b: l.b_if.clone(),
            });
            for (ns, dev, addr) in [
                (&l.a_netns, &l.a_if, l.link.a_address),
                (&l.b_netns, &l.b_if, l.link.b_address),
            ] {
                if self.naming.underlay_mtu != 1500 {
                    ops.push(NetOp::SetMtu {
                        netns: Some(ns.clone()),
                        dev: dev.clone(),
                        mtu: self.naming.underlay_mtu,
                    });
                }
                ops.extend([
                    NetOp::AddAddress {
                        netns: Some(ns.clone()),
                        dev: dev.clone(),
                        cidr: addr,
                    },
                    NetOp::Shape {
                        netns: ns.clone(),
                        dev: dev.clone(),
                        mbit: l.link.bandwidth,
                    },
                    NetOp::Up {
                        netns: Some(ns.clone()),
                        dev: dev.clone(),
                    },
                ]);
            }
        }
        for h in &self.hosts {
            for r in &h.routes {
                ops.push(NetOp::AddRoute {
                    netns: h.netns.clone(),
                    route: r.clone(),
                });
            }
        }
        ops
    }

    pub fn host(&self, id: &str) -> Option<&HostLayout> {
        self.hosts.iter().find(|h| h.id == id)
    }
}

/// Per host, a /32 route to every other host's primary address that is not on one of its own
/// links, via the neighbour on a shortest path.
fn routes(
    substrate: &Substrate,
    primary: &BTreeMap<&str, Ipv4Addr>,
) -> BTreeMap<String, Vec<Route>> {
    let adj = substrate.adjacency();
    let mut out: BTreeMap<String, Vec<Route>> = BTreeMap::new();
    for src in substrate.hosts.iter().map(|h| h.id.as_str()) {
        let Some(&src_primary) = primary.get(src) else {
            continue;
        };
        // BFS from src; first_hop[h] = (neighbour's address on the first link of the path).
        let mut first_hop: BTreeMap<&str, Ipv4Addr> = BTreeMap::new();
        let mut queue = VecDeque::from([src]);
        let mut seen = std::collections::BTreeSet::from([src]);
        while let Some(cur) = queue.pop_front() {
            for (next, link) in &adj[cur] {
                if seen.insert(next) {
                    let hop = if cur == src {
                        if link.a == src {
                            link.b_address.addr()
                        } else {
                            link.a_address.addr()
                        }
                    } else {
                        first_hop[cur]
                    };
                    first_hop.insert(next, hop);
                    queue.push_back(next);
                }
            }
        }
        // Subnets of src's own links: destinations there are directly connected.
        let own: Vec<Ipv4Net> = adj[src].iter().map(|(_, l)| l.a_address.trunc()).collect();
        let mut routes = Vec::new();
        for dst in substrate.hosts.iter().map(|h| h.id.as_str()) {
            if dst == src {
                continue;
            }
            let (Some(&dst_primary), Some(&via)) = (primary.get(dst), first_hop.get(dst)) else {
                continue;
            };
            if own.iter().any(|n| n.contains(&dst_primary)) {
                continue;
            }
            routes.push(Route {
                dst: Ipv4Net::new(dst_primary, 32).expect("/32"),
                via,
                src: src_primary,
            });
        }
        out.insert(src.to_owned(), routes);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::topology::{full_mesh, resolve};
    use super::*;
    use vn_core::topology::TopologyFile;

    fn layout(t: &TopologyFile) -> Layout {
        Layout::new(&resolve(t).unwrap(), &Naming::default()).unwrap()
    }

    #[test]
    fn three_host_mesh_names_and_addresses() {
        let l = layout(&full_mesh(3, 1000));
        let h: Vec<(&str, &str, String, String, String)> = l
            .hosts
            .iter()
            .map(|h| {
                (
                    h.netns.as_str(),
                    h.mgmt_root_if.as_str(),
                    h.mgmt_address.to_string(),
                    h.primary.to_string(),
                    format!(
                        "{:?}",
                        h.routes
                            .iter()
                            .map(|r| r.dst.to_string())
                            .collect::<Vec<_>>()
                    ),
                )
            })
            .collect();
        assert_eq!(
            h,
            [
                (
                    "h1",
                    "vnmgmt0-1",
                    "10.254.0.2/24".into(),
                    "10.255.0.1".into(),
                    "[]".into()
                ),
                // h3's primary 10.255.1.2 is on link h1-h3, not on one of h2's links.
                (
                    "h2",
                    "vnmgmt0-2",
                    "10.254.0.3/24".into(),
                    "10.255.0.2".into(),
                    "[\"10.255.1.2/32\"]".into()
                ),
                (
                    "h3",
                    "vnmgmt0-3",
                    "10.254.0.4/24".into(),
                    "10.255.1.2".into(),
                    "[\"10.255.0.1/32\", \"10.255.0.2/32\"]".into()
                ),
            ]
        );
        assert_eq!(l.gateway.to_string(), "10.254.0.1/24");
        let r = &l.hosts[1].routes[0];
        assert_eq!(
            (r.via.to_string(), r.src.to_string()),
            ("10.255.2.2".into(), "10.255.0.2".into())
        );
        assert_eq!(
            (l.links[0].a_if.as_str(), l.links[0].b_if.as_str()),
            ("to-h2", "to-h1")
        );
    }

    #[test]
    fn line_topology_routes_through_the_middle() {
        let t: TopologyFile = serde_yaml_ng::from_str(
            "links: [{a: h1, b: h2, bandwidth: 10}, {a: h2, b: h3, bandwidth: 10}]",
        )
        .unwrap();
        let l = layout(&t);
        // h1 (10.255.0.1) reaches h3 (10.255.1.2) via h2's address on h1-h2, and back.
        let h1 = &l.hosts[0].routes;
        assert_eq!(h1.len(), 1);
        assert_eq!(h1[0].dst.to_string(), "10.255.1.2/32");
        assert_eq!(h1[0].via.to_string(), "10.255.0.2");
        let h3 = &l.hosts[2].routes;
        assert_eq!(h3[0].dst.to_string(), "10.255.0.1/32");
        assert_eq!(h3[0].via.to_string(), "10.255.1.1");
        assert_eq!(h3[0].src.to_string(), "10.255.1.2");
        // h2 is adjacent to both primaries.
        assert!(l.hosts[1].routes.is_empty());
    }

    #[test]
    fn up_ops_record_owned_objects_and_shape_both_ends() {
        let l = layout(&full_mesh(2, 50));
        let ops = l.up_ops("tag");
        // Both underlay ends carry a 1500-byte VXLAN frame.
        let mtus: Vec<(&str, u32)> = ops
            .iter()
            .filter_map(|o| match o {
                NetOp::SetMtu { dev, mtu, .. } => Some((dev.as_str(), *mtu)),
                _ => None,
            })
            .collect();
        assert_eq!(mtus, [("to-h2", 1550), ("to-h1", 1550)]);
        let owned: Vec<Owned> = ops.iter().filter_map(NetOp::creates).collect();
        assert_eq!(
            owned,
            [
                Owned::RootLink("vnmgmt0".into()),
                Owned::Netns("h1".into()),
                Owned::RootLink("vnmgmt0-1".into()),
                Owned::Netns("h2".into()),
                Owned::RootLink("vnmgmt0-2".into()),
            ]
        );
        let shaped: Vec<(String, String, u64)> = ops
            .iter()
            .filter_map(|o| match o {
                NetOp::Shape { netns, dev, mbit } => Some((netns.clone(), dev.clone(), *mbit)),
                _ => None,
            })
            .collect();
        assert_eq!(
            shaped,
            [
                ("h1".into(), "to-h2".into(), 50),
                ("h2".into(), "to-h1".into(), 50)
            ]
        );
        // A namespace exists before anything is put into it.
        let pos = |p: &dyn Fn(&NetOp) -> bool| ops.iter().position(p).unwrap();
        assert!(
            pos(&|o| matches!(o, NetOp::AddNetns { name } if name == "h2"))
                < pos(&|o| matches!(o, NetOp::AddVethBetween { .. }))
        );
    }

    #[test]
    fn prefix_and_bridge_names() {
        let naming = Naming {
            netns_prefix: "t42-".into(),
            mgmt_bridge: "vnt42".into(),
            mgmt_subnet: "10.254.42.0/24".parse().unwrap(),
            underlay_mtu: 9000,
        };
        let l = Layout::new(&resolve(&full_mesh(2, 10)).unwrap(), &naming).unwrap();
        assert_eq!(l.hosts[0].netns, "t42-h1");
        assert_eq!(l.hosts[0].id, "h1");
        assert_eq!(l.hosts[1].mgmt_root_if, "vnt42-2");
        assert_eq!(l.gateway.to_string(), "10.254.42.1/24");
        assert!(
            l.up_ops("x")
                .iter()
                .any(|o| matches!(o, NetOp::SetMtu { mtu: 9000, .. }))
        );
        let long = Naming {
            mgmt_bridge: "averyverylongbr".into(),
            ..Naming::default()
        };
        assert!(Layout::new(&resolve(&full_mesh(2, 10)).unwrap(), &long).is_err());
    }

    #[test]
    fn too_many_hosts_for_the_subnet() {
        let naming = Naming {
            mgmt_subnet: "10.254.0.0/30".parse().unwrap(),
            ..Naming::default()
        };
        let e = Layout::new(&resolve(&full_mesh(3, 10)).unwrap(), &naming).unwrap_err();
        assert!(e.to_string().contains("do not fit"), "{e}");
    }

    #[test]
    fn single_host_uses_its_management_address() {
        let l = layout(&full_mesh(1, 10));
        assert_eq!(l.hosts[0].primary.to_string(), "10.254.0.2");
        assert!(l.links.is_empty());
    }

    #[test]
    fn disconnected_host_is_refused() {
        let t: TopologyFile =
            serde_yaml_ng::from_str("hosts: [{id: h3}]\nlinks: [{a: h1, b: h2, bandwidth: 10}]")
                .unwrap();
        let e = Layout::new(&resolve(&t).unwrap(), &Naming::default()).unwrap_err();
        assert!(e.to_string().contains("h3 has no substrate link"), "{e}");
    }
}
