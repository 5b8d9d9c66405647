//! The wire form of what agents are told and what they report: a host's desired state (the
//! core's [`DesiredSnapshot`] of [`Slice`]s) to `pb::DesiredState`, and an agent's `VnObserved`
//! to the core's [`SliceReport`].

use vnet_proto::v1 as pb;

use crate::core::alloc::mac_string;
use crate::core::desired::{DesiredSnapshot, Endpoint, Segment, Slice, SliceNode};
use crate::core::model::{Encap, Kind, RouteSpec};
use crate::core::record::{HostPhase, SliceReport};

fn encap(e: Encap) -> i32 {
    match e {
        Encap::Vxlan => pb::Encapsulation::Vxlan as i32,
        Encap::Vlan => pb::Encapsulation::Vlan as i32,
    }
}

fn kind(k: Kind) -> i32 {
    match k {
        Kind::Netns => pb::NodeKind::Netns as i32,
        Kind::Vm => pb::NodeKind::Vm as i32,
    }
}

/// A route as the agent reads it: `default` or a prefix, and the next hop.
pub fn route(r: &RouteSpec) -> pb::Route {
    pb::Route {
        destination: r
            .destination
            .map_or_else(|| "default".to_string(), |d| d.to_string()),
        via: r.via.to_string(),
    }
}

fn endpoint(e: &Endpoint) -> pb::Endpoint {
    let kind = match e {
        Endpoint::Node(n) => pb::endpoint::Kind::Node(pb::NodeInterface {
            node_id: n.node_id.clone(),
            ifname: n.ifname.clone(),
            addresses: n.address.iter().map(ToString::to_string).collect(),
            mac: mac_string(n.mac),
        }),
        Endpoint::Tunnel(t) => pb::endpoint::Kind::Tunnel(pb::TunnelHop {
            encapsulation: encap(t.encap),
            vni: t.vni.unwrap_or(0),
            vlan_id: t.vlan_id.map_or(0, u32::from),
            udp_port: u32::from(t.udp_port),
            local_address: t.local_address.to_string(),
            remote_address: t.remote_address.to_string(),
            neighbor: t.neighbor.clone(),
        }),
    };
    pb::Endpoint { kind: Some(kind) }
}

fn node(n: &SliceNode) -> pb::VirtualNodeSpec {
    pb::VirtualNodeSpec {
        node_id: n.node_id.clone(),
        name: n.name.clone(),
        kind: kind(n.kind),
        routes: n.routes.iter().map(route).collect(),
        guest: n.guest.as_ref().map(|g| pb::GuestSpec {
            vcpus: g.vcpus,
            memory_mb: n.memory_mb,
            image: g.image.clone(),
            nic: g.nic,
            accel: g.accel,
            arch: g.arch.clone(),
        }),
    }
}

fn segment(s: &Segment) -> pb::LinkSegment {
    pb::LinkSegment {
        link_id: s.link_id.clone(),
        mtu: s.mtu,
        bandwidth_mbps: s.bandwidth_mbps,
        a: Some(endpoint(&s.a)),
        b: Some(endpoint(&s.b)),
        context_node_id: s.context_node_id.clone(),
        delay_us: s.impair.delay_us,
        jitter_us: s.impair.jitter_us,
        loss_ppm: s.impair.loss_ppm,
    }
}

/// One VN's slice as the agent receives it.
pub fn slice(s: &Slice) -> pb::VnSlice {
    pb::VnSlice {
        vn_id: s.vn_id.clone(),
        label: s.label.clone(),
        context_node_id: s.context_node_id.clone(),
        depth: s.depth,
        nodes: s.nodes.iter().map(node).collect(),
        links: s.links.iter().map(segment).collect(),
    }
}

/// A host's desired state as the agent receives it.
pub fn desired_state(d: &DesiredSnapshot) -> pb::DesiredState {
    pb::DesiredState {
        generation: d.generation,
        vns: d.vns.iter().map(|s| slice(s)).collect(),
    }
}

/// An agent's report about one slice; a failure without a message says so.
pub fn report(r: &pb::VnObserved) -> SliceReport {
    let phase = match pb::SliceState::try_from(r.state) {
        Ok(pb::SliceState::Ready) => HostPhase::Ready,
        Ok(pb::SliceState::Failed) => HostPhase::Failed(if r.message.is_empty() {
            "failed without a message".into()
        } else {
            r.message.clone()
        }),
        _ => HostPhase::Pending,
    };
    SliceReport {
        vn_id: r.vn_id.clone(),
        phase,
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use crate::core::desired::{NodeInterface, TunnelEnd};

    use super::*;

    #[test]
    fn endpoints_take_the_agents_text_forms() {
        let node = endpoint(&Endpoint::Node(NodeInterface {
            node_id: "v1n000".into(),
            ifname: "eth0".into(),
            address: Some("10.0.0.1/24".parse().unwrap()),
            mac: 1,
        }));
        let Some(pb::endpoint::Kind::Node(n)) = node.kind else {
            panic!("a node interface: {node:?}")
        };
        assert_eq!(n.addresses, ["10.0.0.1/24"]);
        assert_eq!(n.mac, mac_string(1));
        let hop = endpoint(&Endpoint::Tunnel(TunnelEnd {
            encap: Encap::Vlan,
            vni: None,
            vlan_id: Some(7),
            udp_port: 4789,
            local_address: IpAddr::from([192, 0, 2, 1]),
            remote_address: IpAddr::from([192, 0, 2, 2]),
            neighbor: "h2".into(),
        }));
        let Some(pb::endpoint::Kind::Tunnel(t)) = hop.kind else {
            panic!("a tunnel hop: {hop:?}")
        };
        assert_eq!(
            (t.encapsulation, t.vni, t.vlan_id, t.udp_port),
            (pb::Encapsulation::Vlan as i32, 0, 7, 4789)
        );
        assert_eq!(
            (t.local_address.as_str(), t.remote_address.as_str()),
            ("192.0.2.1", "192.0.2.2")
        );
        let default = route(&RouteSpec {
            destination: None,
            via: IpAddr::from([10, 0, 0, 254]),
        });
        assert_eq!(
            (default.destination.as_str(), default.via.as_str()),
            ("default", "10.0.0.254")
        );
    }

    #[test]
    fn reports_become_phases() {
        let r = |state: pb::SliceState, message: &str| {
            report(&pb::VnObserved {
                vn_id: "v1".into(),
                state: state as i32,
                message: message.into(),
            })
            .phase
        };
        assert_eq!(r(pb::SliceState::Ready, ""), HostPhase::Ready);
        assert_eq!(
            r(pb::SliceState::Failed, "no vxlan"),
            HostPhase::Failed("no vxlan".into())
        );
        assert_eq!(
            r(pb::SliceState::Failed, ""),
            HostPhase::Failed("failed without a message".into())
        );
        assert_eq!(r(pb::SliceState::Unspecified, ""), HostPhase::Pending);
    }
}
