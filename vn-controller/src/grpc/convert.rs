//! Domain -> wire conversions for responses.

use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;
use vnet_proto::v1 as pb;

use crate::core::alloc::mac_string;
use crate::core::index::{EventKind, Index};
use crate::core::model::{Attributes, Encap, Isolation, Kind};
use crate::core::record::{VnRecord, VnStatus};
use crate::core::replan::{Action, Diff};
use crate::core::substrate::{GuestImage, HostInfo, Registry, SubstrateLink};
use crate::core::usage::Usage;
use crate::store::StoredEvent;

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn state(s: VnStatus) -> pb::VnState {
    match s {
        VnStatus::Provisioning => pb::VnState::Provisioning,
        VnStatus::Ready => pb::VnState::Ready,
        VnStatus::Degraded => pb::VnState::Degraded,
        VnStatus::Failed => pb::VnState::Failed,
        VnStatus::Updating => pb::VnState::Updating,
    }
}

fn encap(e: Encap) -> i32 {
    match e {
        Encap::Vxlan => pb::Encapsulation::Vxlan as i32,
        Encap::Vlan => pb::Encapsulation::Vlan as i32,
    }
}

/// Effective attributes (after inheritance) on the wire.
pub fn attributes(a: &Attributes) -> pb::VnAttributes {
    let isolation = match a.isolation {
        Some(Isolation::DedicatedHosts) => pb::IsolationLevel::DedicatedHosts,
        _ if a.dedicated_hosts => pb::IsolationLevel::DedicatedHosts,
        Some(Isolation::Standard) => pb::IsolationLevel::Standard,
        None => pb::IsolationLevel::Unspecified,
    };
    pb::VnAttributes {
        encapsulation: a.encap.map_or(pb::Encapsulation::Unspecified as i32, encap),
        mtu: a.mtu,
        max_link_bandwidth_mbps: a.max_link_bandwidth_mbps,
        allowed_node_kinds: a.allowed_kinds.iter().flatten().map(|k| kind(*k)).collect(),
        isolation: isolation as i32,
        max_nodes: a.max_nodes,
        max_total_cpu: a.max_total_cpu,
    }
}

fn kind(k: Kind) -> i32 {
    match k {
        Kind::Netns => pb::NodeKind::Netns as i32,
        Kind::Vm => pb::NodeKind::Vm as i32,
    }
}

/// How each guest of `rec` runs (`NodePlacement.guest`): the machine type from its architecture
/// and NIC model, the accelerator from its host's probe (KVM only for the host's own architecture
/// when the probe proved it usable and the spec does not ask for TCG; empty when the host is not
/// a substrate host, e.g. a child VN's parent node).
pub fn guest_placements(vn: &mut pb::VirtualNetwork, rec: &VnRecord, registry: &Registry) {
    for ((n, node), p) in vn
        .nodes
        .iter_mut()
        .zip(&rec.req.nodes)
        .zip(&rec.placement.nodes)
    {
        let Some(g) = &node.guest else { continue };
        let nic = pb::NicModel::try_from(g.nic).unwrap_or(pb::NicModel::Virtio);
        let host = registry.host(&p.host);
        let accel = host.map_or(String::new(), |h| {
            let c = pb::Capabilities::decode(h.capabilities_pb.as_slice()).unwrap_or_default();
            let kvm = c.kvm_usable && c.host_arch == g.arch;
            let tcg_asked = g.accel == pb::Acceleration::Tcg as i32;
            if kvm && !tcg_asked { "kvm" } else { "tcg" }.to_string()
        });
        let format = host
            .and_then(|h| {
                h.images
                    .iter()
                    .find(|i| i.name == g.image && i.arch == g.arch)
            })
            .map_or(String::new(), |i| i.format.clone());
        n.guest = Some(pb::GuestPlacement {
            accel,
            arch: g.arch.clone(),
            machine: vnet_proto::guest_machine(&g.arch, nic).into(),
            nic: match nic {
                pb::NicModel::E1000 => "e1000",
                _ => "virtio",
            }
            .into(),
            image: if format.is_empty() {
                g.image.clone()
            } else {
                format!("{} ({format})", g.image)
            },
        });
    }
}

/// Fills in what the children of the nestable VN `rec` use of each of its nodes and links (the
/// residual its children's embeddings see is the spec's capacity minus this).
pub fn children_use(vn: &mut pb::VirtualNetwork, rec: &VnRecord, used: &Usage) {
    for (n, node) in vn.nodes.iter_mut().zip(&rec.req.nodes) {
        n.children_cpu = used.host_cpu(&node.name);
        n.children_memory_mb = used.host_memory(&node.name);
    }
    for (l, pl) in vn.links.iter_mut().zip(&rec.placement.links) {
        l.children_bandwidth_mbps = used.link_bandwidth(&pl.link_id);
    }
}

/// A VN on the wire (without `children` and their use of it, which need the index: see the
/// service).
pub fn vn(rec: &VnRecord) -> pb::VirtualNetwork {
    let spec = pb::VnSpec::decode(rec.spec_pb.as_slice()).ok();
    let req = &rec.req;
    let nodes = req
        .nodes
        .iter()
        .zip(&rec.placement.nodes)
        .map(|(n, p)| pb::NodePlacement {
            node: n.name.clone(),
            host: p.host.clone(),
            parent_node: p.parent_node.clone().unwrap_or_default(),
            node_id: p.node_id.clone(),
            // filled by the service for nestable VNs (needs the index)
            children_cpu: 0,
            children_memory_mb: 0,
            // filled by the service (needs the hosts)
            guest: None,
        })
        .collect();
    let links = req
        .links
        .iter()
        .zip(&rec.placement.links)
        .map(|(l, p)| pb::LinkPlacement {
            endpoints: vec![req.nodes[l.a].name.clone(), req.nodes[l.b].name.clone()],
            bandwidth_mbps: l.bandwidth_mbps,
            path: p.path.clone(),
            hops: p
                .hops
                .iter()
                .map(|h| pb::HopPlacement {
                    from: h.from.clone(),
                    to: h.to.clone(),
                    encapsulation: encap(h.encap),
                    vni: h.vni.unwrap_or(0),
                    vlan_id: h.vlan_id.map_or(0, u32::from),
                    // the UDP port is VXLAN's; a VLAN hop has none to show
                    udp_port: match h.encap {
                        Encap::Vxlan => u32::from(h.udp_port),
                        Encap::Vlan => 0,
                    },
                })
                .collect(),
            mtu: p.mtu,
            addresses: l
                .addresses
                .or(p.carrier)
                .map(|a| a.iter().map(ToString::to_string).collect())
                .unwrap_or_default(),
            interfaces: p.ifnames.to_vec(),
            macs: p.macs.iter().map(|m| mac_string(*m)).collect(),
            children_bandwidth_mbps: 0,
            delay_us: crate::core::nest::effective_delay_us(l, p),
            jitter_us: l.impair.jitter_us,
            loss_percent: l.impair.loss_percent(),
            path_delay_us: p.path_delay_us,
        })
        .collect();
    pb::VirtualNetwork {
        name: req.name.clone(),
        provider: req.provider.0.clone(),
        spec,
        state: state(rec.status) as i32,
        reason: rec.reason.clone(),
        nodes,
        links,
        attributes: Some(attributes(&req.attributes)),
        algorithm: rec.placement.algorithm.clone(),
        revenue: rec.placement.revenue,
        cost: rec.placement.cost,
        created_unix_ms: rec.created_unix_ms,
        depth: rec.depth(),
        children: vec![],
        hosts: rec
            .hosts
            .iter()
            .map(|(h, p)| (h.clone(), p.phase.describe()))
            .collect(),
        recoveries: rec
            .recoveries
            .iter()
            .map(|r| pb::RecoveryRecord {
                cause: r.cause.clone(),
                moved: r.moved.clone(),
                fault_unix_ms: r.fault_unix_ms,
                reembedded_unix_ms: r.reembedded_unix_ms,
                ready_unix_ms: r.ready_unix_ms.unwrap_or(0),
            })
            .collect(),
        generation: rec.generation,
    }
}

pub fn host(ix: &Index, h: &HostInfo) -> pb::Host {
    let u = ix.usage();
    pb::Host {
        id: h.id.clone(),
        underlay_address: h.underlay_address.to_string(),
        underlay: h
            .underlay
            .iter()
            .map(|i| pb::UnderlayInterface {
                name: i.name.clone(),
                addresses: i.addresses.iter().map(ToString::to_string).collect(),
                mtu: i.mtu,
                mac: i.mac.clone(),
            })
            .collect(),
        capacity: Some(pb::Resources {
            cpu: h.cpu,
            memory_mb: h.memory_mb,
        }),
        residual: Some(pb::Resources {
            cpu: h.cpu.saturating_sub(u.host_cpu(&h.id)),
            memory_mb: h.memory_mb.saturating_sub(u.host_memory(&h.id)),
        }),
        node_kinds: h.kinds.iter().map(|k| kind(*k)).collect(),
        labels: h.labels.iter().cloned().collect(),
        capabilities: pb::Capabilities::decode(h.capabilities_pb.as_slice()).ok(),
        connected: ix.registry.is_connected(&h.id),
        desired_generation: ix.generation(&h.id),
        observed_generation: ix.observed_generation(&h.id),
        last_seen_unix_ms: h.last_seen_unix_ms,
        images: h.images.iter().map(image).collect(),
        cordoned: h.cordoned,
    }
}

pub fn image(i: &GuestImage) -> pb::GuestImage {
    pb::GuestImage {
        name: i.name.clone(),
        format: i.format.clone(),
        arch: i.arch.clone(),
        size_bytes: i.size_bytes,
        digest: i.digest.clone(),
    }
}

pub fn link(ix: &Index, l: &SubstrateLink) -> pb::SubstrateLink {
    let addr = |h: &str| {
        ix.registry
            .address_on(l, h)
            .map(|a| a.to_string())
            .unwrap_or_default()
    };
    pb::SubstrateLink {
        id: l.id.clone(),
        a: l.a.clone(),
        b: l.b.clone(),
        bandwidth_mbps: l.bandwidth_mbps,
        residual_mbps: l
            .bandwidth_mbps
            .saturating_sub(ix.usage().link_bandwidth(&l.id)),
        latency_ms: l.latency_ms,
        a_address: addr(&l.a),
        b_address: addr(&l.b),
        segment: l.segment.clone(),
        down: ix.registry.is_link_down(&l.id),
    }
}

pub fn event(stored: &StoredEvent) -> pb::VnEvent {
    let e = &stored.event;
    let kind = match e.kind {
        EventKind::Accepted => pb::VnEventKind::Accepted,
        EventKind::HostProgress => pb::VnEventKind::HostProgress,
        EventKind::Ready => pb::VnEventKind::Ready,
        EventKind::Degraded => pb::VnEventKind::Degraded,
        EventKind::Failed => pb::VnEventKind::Failed,
        EventKind::Deleted => pb::VnEventKind::Deleted,
        EventKind::Updated => pb::VnEventKind::Updated,
    };
    pb::VnEvent {
        kind: kind as i32,
        name: e.name.clone(),
        state: e.status.map_or(pb::VnState::Deleted, state) as i32,
        host: e.host.clone(),
        message: e.message.clone(),
        unix_ms: now_ms(),
        seq: stored.seq,
    }
}

/// A VN's current state at the start of a watch; `seq`: the last event it reflects.
pub fn snapshot(rec: &VnRecord, seq: u64) -> pb::VnEvent {
    pb::VnEvent {
        kind: pb::VnEventKind::Snapshot as i32,
        name: rec.name().to_string(),
        state: state(rec.status) as i32,
        host: String::new(),
        message: rec.reason.clone(),
        unix_ms: now_ms(),
        seq,
    }
}

pub fn embedded(rec: &VnRecord) -> pb::EmbeddedVn {
    let req = &rec.req;
    pb::EmbeddedVn {
        name: req.name.clone(),
        provider: req.provider.0.clone(),
        parent: rec
            .nesting
            .as_ref()
            .map(|n| n.parent_label.clone())
            .unwrap_or_default(),
        placement: req
            .nodes
            .iter()
            .zip(&rec.placement.nodes)
            .map(|(n, p)| {
                let at = p.parent_node.as_ref().unwrap_or(&p.host);
                (n.name.clone(), at.clone())
            })
            .collect(),
        link_paths: req
            .links
            .iter()
            .zip(&rec.placement.links)
            .map(|(l, p)| {
                (
                    format!("{}-{}", req.nodes[l.a].name, req.nodes[l.b].name),
                    p.path.join(","),
                )
            })
            .collect(),
        links: req
            .links
            .iter()
            .zip(&rec.placement.links)
            .map(|(l, p)| pb::EmbeddedLink {
                a: req.nodes[l.a].name.clone(),
                b: req.nodes[l.b].name.clone(),
                bandwidth_mbps: l.bandwidth_mbps,
                path: p.path.clone(),
                hops: p
                    .hops
                    .iter()
                    .map(|h| match (h.vni, h.vlan_id) {
                        (Some(v), _) => format!("vni {v}"),
                        (None, Some(v)) => format!("vlan {v}"),
                        (None, None) => String::new(),
                    })
                    .collect(),
                delay_us: crate::core::nest::effective_delay_us(l, p),
                jitter_us: l.impair.jitter_us,
                loss_percent: l.impair.loss_percent(),
            })
            .collect(),
        depth: rec.depth(),
    }
}

/// What an update does to every node and link, on the wire.
pub fn plan(d: &Diff) -> Vec<pb::PlanItem> {
    let action = |a: Action| match a {
        Action::Keep => pb::PlanAction::Keep,
        Action::Change => pb::PlanAction::Change,
        Action::Move => pb::PlanAction::Move,
        Action::Add => pb::PlanAction::Add,
        Action::Remove => pb::PlanAction::Remove,
    } as i32;
    let nodes = d.nodes.iter().map(|n| pb::PlanItem {
        node: n.name.clone(),
        endpoints: vec![],
        action: action(n.action),
        from: n.from.iter().cloned().collect(),
        to: n.to.iter().cloned().collect(),
        detail: n.detail.clone(),
    });
    let links = d.links.iter().map(|l| pb::PlanItem {
        node: String::new(),
        endpoints: l.ends.to_vec(),
        action: action(l.action),
        from: l.from.clone(),
        to: l.to.clone(),
        detail: l.detail.clone(),
    });
    nodes.chain(links).collect()
}
