//! Constructors shared by the core's unit tests: a host as its agent reports it, and the parts
//! of a request with every field a test does not set at its plain default.

use std::collections::BTreeSet;

use crate::model::{Attributes, Encap, Kind, LinkReq, NodeReq, ProviderId, VnReq};
use crate::substrate::{HostInfo, UnderlayIf};

/// Host `id` at 10.0.0.`n` with one underlay interface of `mtu`, 100 CPU and 1000 MB.
pub(crate) fn host(id: &str, n: u8, mtu: u32) -> HostInfo {
    HostInfo {
        id: id.into(),
        underlay_address: format!("10.0.0.{n}").parse().unwrap(),
        underlay: vec![UnderlayIf {
            name: "eth0".into(),
            addresses: vec![format!("10.0.0.{n}/24").parse().unwrap()],
            mtu,
            mac: String::new(),
        }],
        cpu: 100,
        memory_mb: 1000,
        kinds: [Kind::Netns].into(),
        labels: BTreeSet::new(),
        capabilities_pb: vec![],
        agent_version: String::new(),
        boot_id: String::new(),
        last_seen_unix_ms: 0,
        images: Vec::new(),
        cordoned: false,
        guest_archs: BTreeSet::new(),
    }
}

/// A namespace node, unpinned, with no routes.
pub(crate) fn node(name: &str, cpu: u64, memory_mb: u64) -> NodeReq {
    NodeReq {
        name: name.into(),
        kind: Kind::Netns,
        cpu,
        memory_mb,
        pin: None,
        location: None,
        routes: vec![],
        guest: None,
    }
}

/// A VXLAN link between nodes `a` and `b`, unimpaired, with no addresses.
pub(crate) fn link(a: usize, b: usize, bandwidth_mbps: u64) -> LinkReq {
    LinkReq {
        a,
        b,
        bandwidth_mbps,
        addresses: None,
        interfaces: [None, None],
        encap: Encap::Vxlan,
        encap_explicit: false,
        impair: Default::default(),
        max_delay_us: None,
    }
}

/// A top-level request of provider `red` with default attributes and recovery.
pub(crate) fn vn_req(name: &str, nodes: Vec<NodeReq>, links: Vec<LinkReq>) -> VnReq {
    VnReq {
        name: name.into(),
        provider: ProviderId("red".into()),
        allow_revisitation: false,
        nodes,
        links,
        algorithm: None,
        max_path_hops: None,
        attributes: Attributes::default(),
        nestable: false,
        share_with: Default::default(),
        parent: None,
        recovery: Default::default(),
        max_nodes_per_host: None,
        spread: false,
    }
}
