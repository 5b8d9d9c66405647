//! The pure planner: `plan(desired, observed) -> Plan`.
//!
//! In: the validated desired state of the host, what the agent observed of its own objects, and
//! what this agent supports. Out: the operations that turn the observed host into the desired one,
//! the VLAN wires the VLAN datapath (BPF or userspace) must serve, and the slices that cannot be built (with the
//! first error). The planner reads nothing and writes nothing; [`crate::reconcile::apply`] executes.
//!
//! Units of reconcile: a namespace (node or transit) is kept when its loopback tag matches the
//! desired one, else deleted and created anew; a segment is kept when every one of its interfaces
//! exists, carries the segment's tag, is up, has the segment's MTU, its addresses and (when
//! shaped) its qdisc; otherwise its remaining interfaces are deleted and it is built again. A kept
//! segment whose shaping rate changed gets its qdisc replaced in place (the tag does not cover the
//! rate), so a bandwidth change never interrupts the link. Links in our namespaces that no segment
//! wants are deleted. Routes are diffed one by one. A changed VN thus costs only the operations
//! of what changed: untouched namespaces, links and qdiscs are not in the plan.
//!
//! Cost: linear in the number of desired and observed objects.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::guest::{GuestConfig, GuestNic, GuestRoute};
use crate::host::kernel::{IfSpec, PortSpec};
use crate::impair::{RelayConfig, relay_tap};
use crate::reconcile::naming::{Naming, NsRole, slice_needs_transit_ns};
use crate::reconcile::observed::{LinkObs, Observed, RouteObs};
use crate::reconcile::spec::{
    Desired, Encap, GuestSpec, Hop, LinkId, Mac, NodeId, NodeIf, NodeKind, Route, Segment,
    SegmentShape, Slice, VnId,
};

/// What the agent can do beyond the basics (decided by the capability probe and the wiring).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanContext {
    /// A guest runtime is wired in: VM nodes can be built.
    pub guests_supported: bool,
    /// VLAN links use the BPF datapath: their node-side devices are veth ports, not TAPs.
    pub vlan_bpf: bool,
}

/// One NIC handed to a guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestNicSpec {
    pub ifname: String,
    pub mac: Option<Mac>,
    pub addresses: Vec<IpNet>,
    pub mtu: u32,
}

/// A guest to run in a node's sandbox namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestRequest {
    pub node: NodeId,
    pub name: String,
    pub netns: String,
    pub spec: GuestSpec,
    pub nics: Vec<GuestNicSpec>,
    pub routes: Vec<Route>,
}

impl GuestRequest {
    /// The guest runtime's configuration for this request: a NIC whose link carries no MAC gets
    /// one derived from the node and the interface name.
    pub fn config(&self) -> GuestConfig {
        GuestConfig {
            node_id: self.node.to_string(),
            name: self.name.clone(),
            netns: self.netns.clone(),
            vcpus: self.spec.vcpus,
            memory_mb: self.spec.memory_mb,
            image: self.spec.image.clone(),
            nic: self.spec.nic,
            accel: self.spec.accel,
            arch: self.spec.arch,
            nics: self
                .nics
                .iter()
                .map(|n| GuestNic {
                    ifname: n.ifname.clone(),
                    mac: n
                        .mac
                        .unwrap_or_else(|| Mac::derived(&format!("{}/{}", self.node, n.ifname))),
                    addresses: n.addresses.clone(),
                    mtu: n.mtu,
                })
                .collect(),
            routes: self
                .routes
                .iter()
                .map(|r| GuestRoute {
                    destination: r.destination,
                    via: r.via,
                })
                .collect(),
        }
    }
}

/// One operation on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Unmount and remove a namespace of ours (its links go with it).
    DeleteNetns {
        name: String,
    },
    /// Delete one link inside a namespace of ours.
    DeleteLink {
        ns: String,
        ifname: String,
    },
    /// Delete a link tagged by us in the agent's own namespace.
    DeleteHostLink {
        ifname: String,
    },
    DeleteRoute {
        ns: String,
        route: Route,
    },
    StopGuest {
        node: NodeId,
    },
    /// Create a named namespace, loopback up and tagged.
    CreateNetns {
        name: String,
        tag: String,
    },
    /// A veth pair with each end created directly in its namespace.
    CreateVeth {
        a: IfSpec,
        b: IfSpec,
        tag: String,
    },
    /// A VXLAN device created from the context namespace (`None`: the agent's own) directly into
    /// `dev.ns`; its UDP socket stays in the context namespace.
    CreateVxlan {
        ctx: Option<String>,
        dev: IfSpec,
        vni: u32,
        port: u16,
        local: IpAddr,
        remote: IpAddr,
        tag: String,
        link: LinkId,
    },
    /// A persistent TAP device served by the userspace VLAN datapath.
    CreateTap {
        dev: IfSpec,
        tag: String,
    },
    /// A veth port of the BPF VLAN datapath.
    CreatePort(PortSpec),
    /// Egress shaping (TBF) of an interface.
    Shape {
        ns: String,
        ifname: String,
        mbps: u64,
    },
    /// Join two devices of a transit namespace with tc (ingress u32 + mirred redirect, both ways).
    JoinTransit {
        ns: String,
        a: String,
        b: String,
    },
    /// Hand everything `from` sends to the impairment relay's TAP `to` (tc clsact egress).
    RedirectEgress {
        ns: String,
        from: String,
        to: String,
    },
    AddRoute {
        ns: String,
        route: Route,
    },
    EnsureGuest(Box<GuestRequest>),
}

impl Op {
    /// Ops run phase by phase; within a phase they are independent and may run in parallel.
    pub fn phase(&self) -> u8 {
        match self {
            Op::StopGuest { .. } => 0,
            Op::DeleteNetns { .. }
            | Op::DeleteLink { .. }
            | Op::DeleteHostLink { .. }
            | Op::DeleteRoute { .. } => 1,
            Op::CreateNetns { .. } => 2,
            Op::CreateVeth { .. }
            | Op::CreateVxlan { .. }
            | Op::CreateTap { .. }
            | Op::CreatePort(_) => 3,
            Op::Shape { .. } | Op::JoinTransit { .. } | Op::RedirectEgress { .. } => 4,
            Op::AddRoute { .. } => 5,
            Op::EnsureGuest(_) => 6,
        }
    }
}

/// An end of a VLAN wire, before the executor resolves the underlay device by route lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireEndSpec {
    Tap {
        ns: String,
        ifname: String,
    },
    Vlan {
        /// Namespace whose routing finds the underlay device (`None`: the agent's own).
        ctx: Option<String>,
        local: IpAddr,
        remote: IpAddr,
        vlan_id: u16,
    },
}

/// A wire of the userspace VLAN datapath.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireSpec {
    pub id: String,
    pub vn: VnId,
    pub a: WireEndSpec,
    pub b: WireEndSpec,
}

/// An impairment relay the datapath process must run (kept or new).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelaySpec {
    pub id: String,
    pub vn: VnId,
    pub cfg: RelayConfig,
}

/// The planner's result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Operations, each with the slice it belongs to (`None`: housekeeping).
    pub ops: Vec<(Option<VnId>, Op)>,
    /// Every VLAN wire the desired state needs (kept or new).
    pub wires: Vec<WireSpec>,
    /// Every impairment relay the desired state needs (kept or new).
    pub relays: Vec<RelaySpec>,
    /// A TAP was (re)created: the datapath must re-attach even if its config is unchanged.
    pub datapath_reattach: bool,
    /// Slices that cannot be built, with the first error.
    pub failed: BTreeMap<VnId, String>,
    /// Every namespace name of every desired slice (for teardown of a slice that fails later).
    pub slice_namespaces: BTreeMap<VnId, Vec<String>>,
    /// Slices being built or kept.
    pub building: BTreeSet<VnId>,
    /// Recursion depth of every desired slice (children are built after their parents).
    pub depth: BTreeMap<VnId, u32>,
}

impl Plan {
    fn push(&mut self, vn: Option<&VnId>, op: Op) {
        self.ops.push((vn.cloned(), op));
    }

    /// True when there is nothing to do.
    pub fn is_noop(&self) -> bool {
        self.ops.is_empty()
    }

    /// True when the datapath process serves something of slice `vn`.
    pub fn serves(&self, vn: &VnId) -> bool {
        self.wires.iter().any(|w| &w.vn == vn) || self.relays.iter().any(|r| &r.vn == vn)
    }
}

/// The link kind a VLAN hop's device must have: a veth port (BPF) or a TAP (userspace).
fn vlan_kind(hop: &Hop, ctx: PlanContext) -> Option<&'static str> {
    match (hop.encap, ctx.vlan_bpf) {
        (Encap::Vlan { .. }, true) => Some("veth"),
        (Encap::Vlan { .. }, false) => Some("tun"),
        (Encap::Vxlan { .. }, _) => None,
    }
}

/// The link kind that the device `ifname` of a segment must have, where it matters (a VLAN
/// hop's device: switching datapaths rebuilds the segment).
fn want_kind(seg: &Segment, ifname: &str, ctx: PlanContext) -> Option<&'static str> {
    match seg.shape() {
        SegmentShape::NodeTunnel(_, hop) => vlan_kind(hop, ctx),
        SegmentShape::Transit(a, b) => {
            if ifname == Naming::transit_dev(&seg.link_id, 'a') {
                vlan_kind(a, ctx)
            } else {
                vlan_kind(b, ctx)
            }
        }
        SegmentShape::NodeNode(..) => None,
    }
}

/// The interfaces a segment consists of on this host: (namespace, ifname).
fn segment_ifaces(naming: &Naming, vn: &VnId, seg: &Segment) -> Vec<(String, String)> {
    match seg.shape() {
        SegmentShape::NodeNode(a, b) => vec![
            (naming.node_ns(&a.node), a.ifname.to_string()),
            (naming.node_ns(&b.node), b.ifname.to_string()),
        ],
        SegmentShape::NodeTunnel(n, _) => vec![(naming.node_ns(&n.node), n.ifname.to_string())],
        SegmentShape::Transit(a, b) => {
            if matches!((a.encap, b.encap), (Encap::Vlan { .. }, Encap::Vlan { .. })) {
                vec![]
            } else {
                let ns = naming.transit_ns(vn);
                vec![
                    (ns.clone(), Naming::transit_dev(&seg.link_id, 'a')),
                    (ns, Naming::transit_dev(&seg.link_id, 'b')),
                ]
            }
        }
    }
}

/// The impaired node interfaces of a segment: (namespace, relay TAP, interface).
fn relay_ifaces(naming: &Naming, seg: &Segment) -> Vec<(String, String, String)> {
    if seg.impair.is_none() {
        return vec![];
    }
    seg.node_ifs()
        .map(|n| {
            (
                naming.node_ns(&n.node),
                relay_tap(seg.link_id.as_str()),
                n.ifname.to_string(),
            )
        })
        .collect()
}

/// The relays of an impaired segment are in place: each TAP carries the segment's tag and each
/// impaired interface has its clsact qdisc.
fn relays_ok(
    naming: &Naming,
    seg: &Segment,
    observed: &Observed,
    kept_ns: &BTreeSet<String>,
    tag: &str,
) -> bool {
    relay_ifaces(naming, seg).iter().all(|(ns, tap, dev)| {
        kept_ns.contains(ns) && {
            let links = &observed.namespaces[ns].links;
            links
                .get(tap)
                .is_some_and(|l| l.alias.as_deref() == Some(tag) && l.up)
                && links.get(dev).is_some_and(|l| l.ingress_qdisc)
        }
    })
}

/// Relays the datapath process serves for a segment.
fn collect_relays(naming: &Naming, s: &Slice, seg: &Segment, out: &mut Vec<RelaySpec>) {
    for (ns, tap, dev) in relay_ifaces(naming, seg) {
        out.push(RelaySpec {
            id: format!("{}:{}:{}", s.vn_id, seg.link_id, ns),
            vn: s.vn_id.clone(),
            cfg: RelayConfig {
                netns: ns,
                dev,
                tap,
                delay_us: seg.impair.delay_us,
                jitter_us: seg.impair.jitter_us,
                loss_ppm: seg.impair.loss_ppm,
            },
        });
    }
}

fn check_slice(slice: &Slice, ctx: PlanContext) -> Result<(), String> {
    if !ctx.guests_supported
        && let Some(n) = slice
            .nodes
            .iter()
            .find(|n| matches!(n.kind, NodeKind::Vm(_)))
    {
        return Err(format!(
            "vn {}: node {}: vm nodes not supported by this agent yet",
            slice.vn_id, n.id
        ));
    }
    // A vm's interface is joined to its TAP by tc ingress, which excludes the clsact hook the
    // relay needs.
    for seg in slice.links.iter().filter(|s| !s.impair.is_none()) {
        if let Some(n) = seg.node_ifs().find(|n| is_vm(slice, &n.node)) {
            return Err(format!(
                "vn {}: link {}: delay, jitter and loss are not supported on a vm node's link (node {})",
                slice.vn_id, seg.link_id, n.node
            ));
        }
    }
    Ok(())
}

fn is_vm(slice: &Slice, node: &NodeId) -> bool {
    slice
        .node(node)
        .is_some_and(|n| matches!(n.kind, NodeKind::Vm(_)))
}

fn if_spec(naming: &Naming, slice: &Slice, seg: &Segment, n: &NodeIf) -> IfSpec {
    IfSpec {
        ns: naming.node_ns(&n.node),
        ifname: n.ifname.to_string(),
        mtu: seg.mtu,
        mac: n.mac,
        // A VM node's addresses belong to the guest, not to the sandbox interface.
        addresses: if is_vm(slice, &n.node) {
            vec![]
        } else {
            n.addresses.clone()
        },
    }
}

fn link_ok(l: &LinkObs, tag: &str, mtu: u32, addrs: &[IpNet], shaped: bool) -> bool {
    l.alias.as_deref() == Some(tag)
        && l.up
        && l.mtu == mtu
        && addrs.iter().all(|a| l.addresses.contains(a))
        && (l.root_qdisc.as_deref() == Some("tbf")) == shaped
}

/// The node interfaces of a kept, shaped segment whose TBF rate is not the segment's: their
/// qdisc is replaced in place.
fn reshape(naming: &Naming, s: &Slice, seg: &Segment, observed: &Observed, p: &mut Plan) {
    if seg.bandwidth_mbps == 0 {
        return;
    }
    let want = crate::host::tc::TbfParams::for_mbps(seg.bandwidth_mbps).rate_bytes;
    // The node interfaces, and the relay TAPs of an impaired segment (which shape what the
    // relay sends on, bypassing the interface's own shaper).
    let shaped = seg
        .node_ifs()
        .map(|n| (naming.node_ns(&n.node), n.ifname.to_string()))
        .chain(
            relay_ifaces(naming, seg)
                .into_iter()
                .map(|(ns, tap, _)| (ns, tap)),
        );
    for (ns, ifname) in shaped {
        let rate = observed
            .namespaces
            .get(&ns)
            .and_then(|o| o.links.get(ifname.as_str()))
            .and_then(|l| l.root_rate);
        if rate != Some(want) {
            p.push(
                Some(&s.vn_id),
                Op::Shape {
                    ns,
                    ifname,
                    mbps: seg.bandwidth_mbps,
                },
            );
        }
    }
}

/// Computes the operations that take `observed` to `desired`.
pub fn plan(naming: &Naming, desired: &Desired, observed: &Observed, ctx: PlanContext) -> Plan {
    let mut p = Plan::default();
    let good = buildable(naming, desired, observed, ctx, &mut p);
    let (want_ns, kept_ns) = plan_namespaces(naming, &good, observed, &mut p);
    let touched_nodes = plan_segments(naming, &good, observed, &want_ns, &kept_ns, ctx, &mut p);
    plan_nodes(naming, &good, observed, &kept_ns, &touched_nodes, &mut p);
    p.ops.sort_by_key(|(_, op)| op.phase());
    p
}

/// Namespaces wanted by the slices being built: name -> (vn, tag).
type WantedNs = BTreeMap<String, (VnId, String)>;

/// Step 1: which slices can be built at all, parents before children; the others go to
/// `p.failed`.
fn buildable<'a>(
    naming: &Naming,
    desired: &'a Desired,
    observed: &Observed,
    ctx: PlanContext,
    p: &mut Plan,
) -> Vec<&'a Slice> {
    let mut good: Vec<&Slice> = Vec::new();
    for s in desired.slices.values() {
        let names = crate::reconcile::naming::slice_namespaces(naming, s);
        p.slice_namespaces.insert(s.vn_id.clone(), names.clone());
        if let Err(e) = check_slice(s, ctx) {
            p.failed.insert(s.vn_id.clone(), e);
            continue;
        }
        if let Some(f) = names.iter().find(|n| observed.foreign.contains(*n)) {
            p.failed.insert(
                s.vn_id.clone(),
                format!(
                    "vn {}: namespace {f} exists and is not owned by this agent",
                    s.vn_id
                ),
            );
            continue;
        }
        good.push(s);
    }
    // A child whose context node belongs to a failed slice cannot be built either.
    loop {
        let built: BTreeSet<&NodeId> = good
            .iter()
            .flat_map(|s| s.nodes.iter().map(|n| &n.id))
            .collect();
        let before = good.len();
        good.retain(
            |s| match s.contexts().into_iter().find(|c| !built.contains(c)) {
                Some(c) => {
                    p.failed.insert(
                        s.vn_id.clone(),
                        format!("vn {}: context node {c} is not being built", s.vn_id),
                    );
                    false
                }
                None => true,
            },
        );
        if good.len() == before {
            break;
        }
    }
    // Build order from the context chain itself (not the depth the controller claims); a cycle of
    // contexts cannot be built.
    let owner: BTreeMap<&NodeId, &VnId> = desired
        .slices
        .values()
        .flat_map(|s| s.nodes.iter().map(move |n| (&n.id, &s.vn_id)))
        .collect();
    let mut memo = BTreeMap::new();
    for s in desired.slices.values() {
        let d = depth_of(s, desired, &owner, &mut memo, &mut BTreeSet::new());
        if d.is_none() {
            p.failed.insert(
                s.vn_id.clone(),
                format!("vn {}: its context nodes form a cycle", s.vn_id),
            );
        }
        p.depth.insert(s.vn_id.clone(), d.unwrap_or(0));
    }
    good.retain(|s| !p.failed.contains_key(&s.vn_id));
    // Parents before children.
    good.sort_by_key(|s| (p.depth[&s.vn_id], s.vn_id.clone()));
    p.building = good.iter().map(|s| s.vn_id.clone()).collect();

    good
}

// depth = 1 + the deepest slice owning one of its context nodes; a slice met again while
// its own depth is being computed closes a cycle.
fn depth_of<'a>(
    s: &'a Slice,
    desired: &'a Desired,
    owner: &BTreeMap<&NodeId, &VnId>,
    memo: &mut BTreeMap<&'a VnId, Option<u32>>,
    visiting: &mut BTreeSet<&'a VnId>,
) -> Option<u32> {
    if let Some(d) = memo.get(&s.vn_id) {
        return *d;
    }
    if !visiting.insert(&s.vn_id) {
        return None;
    }
    let mut d = Some(0u32);
    for ctx in s.contexts() {
        let Some(parent) = owner.get(ctx).and_then(|v| desired.slices.get(*v)) else {
            d = d.map(|d| d.max(1));
            continue;
        };
        d = match (d, depth_of(parent, desired, owner, memo, visiting)) {
            (Some(d), Some(pd)) => Some(d.max(pd + 1)),
            _ => None,
        };
    }
    visiting.remove(&s.vn_id);
    memo.insert(&s.vn_id, d);
    d
}

/// Step 2, namespaces: which are wanted, which survive as they are (returned), which are deleted
/// (their guest stopped first) and created.
fn plan_namespaces(
    naming: &Naming,
    good: &[&Slice],
    observed: &Observed,
    p: &mut Plan,
) -> (WantedNs, BTreeSet<String>) {
    let mut want_ns: BTreeMap<String, (VnId, String)> = BTreeMap::new();
    for s in good {
        for n in &s.nodes {
            want_ns.insert(
                naming.node_ns(&n.id),
                (s.vn_id.clone(), naming.node_ns_tag(&s.vn_id, n)),
            );
        }
        if slice_needs_transit_ns(s) {
            want_ns.insert(
                naming.transit_ns(&s.vn_id),
                (s.vn_id.clone(), naming.transit_ns_tag(&s.vn_id)),
            );
        }
    }
    // Namespaces that survive this plan as they are.
    let mut kept_ns: BTreeSet<String> = BTreeSet::new();
    for (name, obs) in &observed.namespaces {
        let keep = want_ns.get(name).is_some_and(|(vn, tag)| {
            naming.parse_ns_tag(tag).as_ref() == Some(&obs.tag) && obs.tag.vn == vn.as_str()
        });
        if keep {
            kept_ns.insert(name.clone());
        } else {
            if let NsRole::Node(node) = &obs.tag.role
                && observed.guests.contains(node.as_str())
            {
                p.push(None, Op::StopGuest { node: node.clone() });
            }
            let vn = want_ns.get(name).map(|(v, _)| v);
            p.push(vn, Op::DeleteNetns { name: name.clone() });
        }
    }
    for l in &observed.host_links {
        p.push(
            None,
            Op::DeleteHostLink {
                ifname: l.name.clone(),
            },
        );
    }
    for (name, (vn, tag)) in &want_ns {
        if !kept_ns.contains(name) {
            p.push(
                Some(vn),
                Op::CreateNetns {
                    name: name.clone(),
                    tag: tag.clone(),
                },
            );
        }
    }
    (want_ns, kept_ns)
}

/// Step 3, segments: an unhealthy one is deleted and built again; links of ours that no segment
/// wants are deleted. Returns the nodes whose interfaces are rebuilt.
fn plan_segments(
    naming: &Naming,
    good: &[&Slice],
    observed: &Observed,
    want_ns: &WantedNs,
    kept_ns: &BTreeSet<String>,
    ctx: PlanContext,
    p: &mut Plan,
) -> BTreeSet<NodeId> {
    let mut wanted_ifaces: BTreeSet<(String, String)> = BTreeSet::new();
    let mut touched_nodes: BTreeSet<NodeId> = BTreeSet::new();
    let mut deletes: Vec<(VnId, Op)> = Vec::new();
    for s in good {
        let vn = &s.vn_id;
        for seg in &s.links {
            let ctx_ns = s.context_of(seg).map(|c| naming.node_ns(c));
            let tag = naming.link_tag(vn, seg);
            let ifaces = segment_ifaces(naming, vn, seg);
            wanted_ifaces.extend(ifaces.iter().cloned());
            // Wires of the userspace datapath (VLAN) and impairment relays, kept or new.
            collect_wires(naming, s, seg, ctx_ns.as_ref(), &mut p.wires);
            collect_relays(naming, s, seg, &mut p.relays);
            let relays = relay_ifaces(naming, seg);
            wanted_ifaces.extend(relays.iter().map(|(ns, tap, _)| (ns.clone(), tap.clone())));

            let healthy = ifaces.iter().all(|(ns, ifname)| {
                if !kept_ns.contains(ns) {
                    return false;
                }
                let Some(l) = observed.namespaces[ns].links.get(ifname) else {
                    return false;
                };
                let (addrs, shaped, transit) = match seg
                    .node_ifs()
                    .find(|n| &naming.node_ns(&n.node) == ns && n.ifname.as_str() == ifname)
                {
                    Some(n) => (
                        if is_vm(s, &n.node) {
                            vec![]
                        } else {
                            n.addresses.clone()
                        },
                        seg.bandwidth_mbps > 0,
                        false,
                    ),
                    None => (vec![], false, true),
                };
                link_ok(l, &tag, seg.mtu, &addrs, shaped)
                    && (!transit || l.ingress_qdisc)
                    && want_kind(seg, ifname, ctx).is_none_or(|k| l.kind == k)
            });
            if healthy && relays_ok(naming, seg, observed, kept_ns, &tag) {
                reshape(naming, s, seg, observed, p);
                continue;
            }
            let taps = relays.iter().map(|(ns, tap, _)| (ns.clone(), tap.clone()));
            for (ns, ifname) in ifaces
                .iter()
                .cloned()
                .chain(taps)
                .collect::<Vec<_>>()
                .iter()
            {
                if kept_ns.contains(ns) && observed.namespaces[ns].links.contains_key(ifname) {
                    deletes.push((
                        vn.clone(),
                        Op::DeleteLink {
                            ns: ns.clone(),
                            ifname: ifname.clone(),
                        },
                    ));
                }
            }
            for n in seg.node_ifs() {
                touched_nodes.insert(n.node.clone());
            }
            build_segment(naming, s, seg, &tag, ctx_ns.as_ref(), ctx.vlan_bpf, p);
        }
    }
    // Links of ours in our namespaces that no segment wants.
    for ns in kept_ns {
        for (name, l) in &observed.namespaces[ns].links {
            // Only what carries our tag: a tenant's own devices and a guest runtime's TAPs stay.
            let ours = l
                .alias
                .as_deref()
                .is_some_and(|a| naming.parse_link_tag(a).is_some());
            if ours && !wanted_ifaces.contains(&(ns.clone(), name.clone())) {
                let vn = want_ns.get(ns).map(|(v, _)| v.clone());
                p.ops.push((
                    vn,
                    Op::DeleteLink {
                        ns: ns.clone(),
                        ifname: name.clone(),
                    },
                ));
            }
        }
    }
    for (vn, op) in deletes {
        p.push(Some(&vn), op);
    }
    touched_nodes
}

/// Step 4: routes of netns nodes; guests of VM nodes; guests that run without being wanted.
fn plan_nodes(
    naming: &Naming,
    good: &[&Slice],
    observed: &Observed,
    kept_ns: &BTreeSet<String>,
    touched_nodes: &BTreeSet<NodeId>,
    p: &mut Plan,
) {
    for s in good {
        for n in &s.nodes {
            let ns = naming.node_ns(&n.id);
            match &n.kind {
                NodeKind::Netns => {
                    let fresh = !kept_ns.contains(&ns) || touched_nodes.contains(&n.id);
                    let have: Vec<RouteObs> = if fresh {
                        vec![]
                    } else {
                        observed.namespaces[&ns].routes.clone()
                    };
                    for r in &n.routes {
                        let o = RouteObs {
                            destination: r.destination,
                            via: r.via,
                        };
                        if !have.contains(&o) {
                            p.push(
                                Some(&s.vn_id),
                                Op::AddRoute {
                                    ns: ns.clone(),
                                    route: r.clone(),
                                },
                            );
                        }
                    }
                    for o in &have {
                        if !n
                            .routes
                            .iter()
                            .any(|r| r.destination == o.destination && r.via == o.via)
                        {
                            p.push(
                                Some(&s.vn_id),
                                Op::DeleteRoute {
                                    ns: ns.clone(),
                                    route: Route {
                                        destination: o.destination,
                                        via: o.via,
                                    },
                                },
                            );
                        }
                    }
                }
                NodeKind::Vm(spec) => {
                    let running = observed.guests.contains(n.id.as_str())
                        && kept_ns.contains(&ns)
                        && !touched_nodes.contains(&n.id);
                    if !running {
                        let nics = s
                            .links
                            .iter()
                            .flat_map(|seg| seg.node_ifs().map(move |i| (seg, i)))
                            .filter(|(_, i)| i.node == n.id)
                            .map(|(seg, i)| GuestNicSpec {
                                ifname: i.ifname.to_string(),
                                mac: i.mac,
                                addresses: i.addresses.clone(),
                                mtu: seg.mtu,
                            })
                            .collect();
                        p.push(
                            Some(&s.vn_id),
                            Op::EnsureGuest(Box::new(GuestRequest {
                                node: n.id.clone(),
                                name: n.name.clone(),
                                netns: ns,
                                spec: spec.clone(),
                                nics,
                                routes: n.routes.clone(),
                            })),
                        );
                    }
                }
            }
        }
    }
    // Guests that run without being wanted.
    let wanted_vms: BTreeSet<&str> = good
        .iter()
        .flat_map(|s| s.nodes.iter())
        .filter(|n| matches!(n.kind, NodeKind::Vm(_)))
        .map(|n| n.id.as_str())
        .collect();
    for g in &observed.guests {
        if !wanted_vms.contains(g.as_str())
            && !p
                .ops
                .iter()
                .any(|(_, o)| matches!(o, Op::StopGuest { node } if node.as_str() == g))
            && let Ok(node) = NodeId::parse(g)
        {
            p.push(None, Op::StopGuest { node });
        }
    }
}

fn build_segment(
    naming: &Naming,
    s: &Slice,
    seg: &Segment,
    tag: &str,
    ctx_ns: Option<&String>,
    bpf: bool,
    p: &mut Plan,
) {
    let vn = Some(&s.vn_id);
    let shape = |p: &mut Plan, ns: &str, ifname: &str| {
        if seg.bandwidth_mbps > 0 {
            p.push(
                vn,
                Op::Shape {
                    ns: ns.to_string(),
                    ifname: ifname.to_string(),
                    mbps: seg.bandwidth_mbps,
                },
            );
        }
    };
    for (ns, tap, dev) in relay_ifaces(naming, seg) {
        let r = IfSpec {
            ns: ns.clone(),
            ifname: tap.clone(),
            mtu: seg.mtu,
            mac: None,
            addresses: vec![],
        };
        p.push(
            vn,
            Op::CreateTap {
                dev: r,
                tag: tag.to_string(),
            },
        );
        // Frames pass the relay TAP's shaper before the delay line (the interface's own is
        // bypassed by the relay's sends).
        shape(p, &ns, &tap);
        p.push(
            vn,
            Op::RedirectEgress {
                ns,
                from: dev,
                to: tap,
            },
        );
    }
    match seg.shape() {
        SegmentShape::NodeNode(a, b) => {
            let a = if_spec(naming, s, seg, a);
            let b = if_spec(naming, s, seg, b);
            shape(p, &a.ns, &a.ifname);
            shape(p, &b.ns, &b.ifname);
            p.push(
                vn,
                Op::CreateVeth {
                    a,
                    b,
                    tag: tag.to_string(),
                },
            );
        }
        SegmentShape::NodeTunnel(n, hop) => {
            let dev = if_spec(naming, s, seg, n);
            shape(p, &dev.ns, &dev.ifname);
            p.push(vn, tunnel_op(seg, hop, dev, tag, ctx_ns, bpf));
            if matches!(hop.encap, Encap::Vlan { .. }) {
                p.datapath_reattach = true;
            }
        }
        SegmentShape::Transit(a, b) => {
            if matches!((a.encap, b.encap), (Encap::Vlan { .. }, Encap::Vlan { .. })) {
                return; // rewritten by the datapath; its wire is collected separately
            }
            let ns = naming.transit_ns(&s.vn_id);
            let mut names = Vec::new();
            for (hop, side) in [(a, 'a'), (b, 'b')] {
                let dev = IfSpec {
                    ns: ns.clone(),
                    ifname: Naming::transit_dev(&seg.link_id, side),
                    mtu: seg.mtu,
                    mac: None,
                    addresses: vec![],
                };
                names.push(dev.ifname.clone());
                if matches!(hop.encap, Encap::Vlan { .. }) {
                    p.datapath_reattach = true;
                }
                p.push(vn, tunnel_op(seg, hop, dev, tag, ctx_ns, bpf));
            }
            p.push(
                vn,
                Op::JoinTransit {
                    ns,
                    a: names[0].clone(),
                    b: names[1].clone(),
                },
            );
        }
    }
}

fn tunnel_op(
    seg: &Segment,
    hop: &Hop,
    dev: IfSpec,
    tag: &str,
    ctx_ns: Option<&String>,
    bpf: bool,
) -> Op {
    match hop.encap {
        Encap::Vxlan { vni, port } => Op::CreateVxlan {
            ctx: ctx_ns.cloned(),
            dev,
            vni,
            port,
            local: hop.local,
            remote: hop.remote,
            tag: tag.to_string(),
            link: seg.link_id.clone(),
        },
        Encap::Vlan { .. } if bpf => Op::CreatePort(PortSpec {
            outer: Naming::port_dev(&dev.ns, &dev.ifname),
            dev,
            ctx: ctx_ns.cloned(),
            tag: tag.to_string(),
        }),
        Encap::Vlan { .. } => Op::CreateTap {
            dev,
            tag: tag.to_string(),
        },
    }
}

fn vlan_end(hop: &Hop, ctx_ns: Option<&String>) -> Option<WireEndSpec> {
    match hop.encap {
        Encap::Vlan { vlan_id } => Some(WireEndSpec::Vlan {
            ctx: ctx_ns.cloned(),
            local: hop.local,
            remote: hop.remote,
            vlan_id,
        }),
        Encap::Vxlan { .. } => None,
    }
}

fn collect_wires(
    naming: &Naming,
    s: &Slice,
    seg: &Segment,
    ctx_ns: Option<&String>,
    out: &mut Vec<WireSpec>,
) {
    let id = |suffix: &str| format!("{}:{}{}", s.vn_id, seg.link_id, suffix);
    match seg.shape() {
        SegmentShape::NodeNode(..) => {}
        SegmentShape::NodeTunnel(n, hop) => {
            if let Some(v) = vlan_end(hop, ctx_ns) {
                out.push(WireSpec {
                    id: id(""),
                    vn: s.vn_id.clone(),
                    a: WireEndSpec::Tap {
                        ns: naming.node_ns(&n.node),
                        ifname: n.ifname.to_string(),
                    },
                    b: v,
                });
            }
        }
        SegmentShape::Transit(a, b) => match (vlan_end(a, ctx_ns), vlan_end(b, ctx_ns)) {
            (Some(va), Some(vb)) => out.push(WireSpec {
                id: id(""),
                vn: s.vn_id.clone(),
                a: va,
                b: vb,
            }),
            (va, vb) => {
                for (v, side) in [(va, 'a'), (vb, 'b')] {
                    if let Some(v) = v {
                        out.push(WireSpec {
                            id: id(&format!(":{side}")),
                            vn: s.vn_id.clone(),
                            a: WireEndSpec::Tap {
                                ns: naming.transit_ns(&s.vn_id),
                                ifname: Naming::transit_dev(&seg.link_id, side),
                            },
                            b: v,
                        });
                    }
                }
            }
        },
    }
}

#[cfg(test)]
mod tests;
