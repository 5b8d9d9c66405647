//! Validation of wire messages into domain types, once, at the gRPC edge. Every error names the
//! item that is wrong (`spec.nodes[2] (c)`, `spec.links[0] (a-b)`) and what is wrong with it,
//! and quotes at most a bounded prefix of what the caller sent ([`text::quote`]).
//!
//! Numbers are bounded per item ([`MAX_CPU`], [`MAX_MEMORY_MB`], [`MAX_BANDWIDTH_MBPS`]) so that
//! no sum over a VN can overflow, and every sum formed here is checked all the same.

mod addr;
mod text;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use tonic::Status;
use vnet_proto::v1 as pb;

use crate::core::attributes::encap_name;
use crate::core::model::{
    Attributes, Encap, GuestReq, Impairment, Isolation, Kind, LinkReq, MAX_LINKS, MAX_NODES,
    NodeReq, ParentRef, ProviderId, RecoveryPolicy, VnReq,
};
use crate::core::nest::carrier_range;
use crate::core::substrate::{GuestImage, HostInfo, UnderlayIf};

use addr::NodeSubnets;
pub use text::{check_identifier, quote};
use text::{check_ifname, check_location, check_node_name, label};

/// Largest cpu demand of one node (in the hosts' cpu units).
pub const MAX_CPU: u64 = 1_000_000_000;
/// Largest memory of one node, MiB.
pub const MAX_MEMORY_MB: u64 = 1_000_000_000;
/// Largest bandwidth of one link, Mbit/s.
pub const MAX_BANDWIDTH_MBPS: u64 = 1_000_000_000;
/// Most routes of one node.
pub const MAX_ROUTES: usize = 256;
/// Most providers in a VN's `share_with`.
pub const MAX_SHARE_WITH: usize = 64;

/// Why a request was refused at the edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Permission(String),
    #[error("{0}")]
    Precondition(String),
}

impl From<SpecError> for Status {
    fn from(e: SpecError) -> Self {
        match e {
            SpecError::Invalid(m) => Status::invalid_argument(m),
            SpecError::Permission(m) => Status::permission_denied(m),
            SpecError::Precondition(m) => Status::failed_precondition(m),
        }
    }
}

fn invalid(msg: impl Into<String>) -> SpecError {
    SpecError::Invalid(msg.into())
}

fn encap(value: i32, what: &str) -> Result<Option<Encap>, SpecError> {
    match pb::Encapsulation::try_from(value) {
        Ok(pb::Encapsulation::Unspecified) => Ok(None),
        Ok(pb::Encapsulation::Auto | pb::Encapsulation::Vxlan) => Ok(Some(Encap::Vxlan)),
        Ok(pb::Encapsulation::Vlan) => Ok(Some(Encap::Vlan)),
        Err(_) => Err(invalid(format!("{what}: unknown encapsulation {value}"))),
    }
}

fn kind(value: i32, what: &str) -> Result<Kind, SpecError> {
    match pb::NodeKind::try_from(value) {
        Ok(pb::NodeKind::Unspecified | pb::NodeKind::Netns) => Ok(Kind::Netns),
        Ok(pb::NodeKind::Vm) => Ok(Kind::Vm),
        Err(_) => Err(invalid(format!(
            "{what}: unknown kind {value} (use netns or vm)"
        ))),
    }
}

/// A signed wire number as a quantity in `0..=max`.
fn quantity(v: i64, max: u64, field: &str, what: &str) -> Result<u64, SpecError> {
    let q = u64::try_from(v).map_err(|_| invalid(format!("{what}: {field} {v} must be >= 0")))?;
    if q > max {
        return Err(invalid(format!(
            "{what}: {field} {q} exceeds the limit of {max}"
        )));
    }
    Ok(q)
}

/// The sum of `values`, refused rather than wrapped when it overflows.
fn checked_total(values: impl IntoIterator<Item = u64>, what: &str) -> Result<u64, SpecError> {
    values
        .into_iter()
        .try_fold(0u64, u64::checked_add)
        .ok_or_else(|| invalid(format!("{what}: the total overflows")))
}

fn node(n: &pb::NodeSpec, what: &str) -> Result<NodeReq, SpecError> {
    check_node_name(&n.name).map_err(|e| invalid(format!("{what}: {e}")))?;
    let k = kind(n.kind, what)?;
    let cpu = quantity(n.cpu, MAX_CPU, "cpu", what)?;
    let memory_mb = quantity(n.memory_mb, MAX_MEMORY_MB, "memory_mb", what)?;
    let pin = (!n.host.is_empty()).then(|| n.host.clone());
    if let Some(p) = &pin {
        check_identifier(p).map_err(|e| invalid(format!("{what}: host {} {e}", quote(p))))?;
    }
    let location = (!n.location.is_empty()).then(|| n.location.clone());
    if let Some(l) = &location {
        check_location(l).map_err(|e| invalid(format!("{what}: {e}")))?;
    }
    if n.routes.len() > MAX_ROUTES {
        return Err(invalid(format!(
            "{what}: {} routes exceed the limit of {MAX_ROUTES}",
            n.routes.len()
        )));
    }
    let routes = n
        .routes
        .iter()
        .map(|r| addr::route(r, what))
        .collect::<Result<Vec<_>, _>>()?;
    let guest = match k {
        Kind::Netns => {
            if !n.image.is_empty()
                || n.nic != 0
                || n.accel != 0
                || n.vcpus != 0
                || !n.arch.is_empty()
            {
                return Err(invalid(format!(
                    "{what}: image, nic, accel, vcpus and arch apply to vm nodes only"
                )));
            }
            None
        }
        Kind::Vm => Some(guest(n, memory_mb, what)?),
    };
    Ok(NodeReq {
        name: n.name.clone(),
        kind: k,
        cpu,
        memory_mb,
        pin,
        location,
        routes,
        guest,
    })
}

/// The guest part of a `vm` node.
fn guest(n: &pb::NodeSpec, memory_mb: u64, what: &str) -> Result<GuestReq, SpecError> {
    if memory_mb < vnet_proto::VM_MIN_MEMORY_MB {
        return Err(invalid(format!(
            "{what}: a vm needs memory_mb >= {}, got {memory_mb}",
            vnet_proto::VM_MIN_MEMORY_MB,
        )));
    }
    if pb::NicModel::try_from(n.nic).is_err() {
        return Err(invalid(format!("{what}: unknown nic model {}", n.nic)));
    }
    if pb::Acceleration::try_from(n.accel).is_err() {
        return Err(invalid(format!("{what}: unknown accel {}", n.accel)));
    }
    if n.vcpus > 64 {
        return Err(invalid(format!("{what}: vcpus {} exceeds 64", n.vcpus)));
    }
    let image = if n.image.is_empty() {
        "default".to_string()
    } else {
        check_node_name(&n.image).map_err(|e| invalid(format!("{what}: image {e}")))?;
        n.image.clone()
    };
    let arch = match n.arch.as_str() {
        "" => crate::core::model::DEFAULT_ARCH.to_string(),
        a @ ("x86_64" | "aarch64") => a.to_string(),
        other => {
            return Err(invalid(format!(
                "{what}: arch {} is not x86_64 or aarch64",
                quote(other)
            )));
        }
    };
    Ok(GuestReq {
        vcpus: n.vcpus.max(1),
        image,
        arch,
        nic: if n.nic == 0 {
            pb::NicModel::Virtio as i32
        } else {
            n.nic
        },
        accel: if n.accel == 0 {
            pb::Acceleration::Auto as i32
        } else {
            n.accel
        },
    })
}

/// The spec's own name, its provider (filled in with the caller) and its parent.
fn identity(spec: &mut pb::VnSpec, caller: &ProviderId) -> Result<Option<ParentRef>, SpecError> {
    check_identifier(&spec.name)
        .map_err(|e| invalid(format!("spec.name {}: {e}", quote(&spec.name))))?;
    if !spec.provider.is_empty() && spec.provider != caller.0 {
        return Err(SpecError::Permission(format!(
            "spec.provider {} does not match the caller {caller}",
            quote(&spec.provider)
        )));
    }
    spec.provider = caller.0.clone();
    if spec.parent.is_empty() {
        if !spec.parent_provider.is_empty() {
            return Err(invalid("spec.parent_provider is set without spec.parent"));
        }
        return Ok(None);
    }
    check_identifier(&spec.parent)
        .map_err(|e| invalid(format!("spec.parent {}: {e}", quote(&spec.parent))))?;
    let provider = if spec.parent_provider.is_empty() {
        caller.clone()
    } else {
        check_identifier(&spec.parent_provider).map_err(|e| {
            invalid(format!(
                "spec.parent_provider {}: {e}",
                quote(&spec.parent_provider)
            ))
        })?;
        ProviderId(spec.parent_provider.clone())
    };
    Ok(Some(ParentRef {
        provider,
        name: spec.parent.clone(),
    }))
}

/// Whether an encapsulation value is a choice (not unspecified, not AUTO).
fn chosen(v: i32) -> bool {
    !matches!(
        pb::Encapsulation::try_from(v),
        Ok(pb::Encapsulation::Unspecified | pb::Encapsulation::Auto)
    )
}

/// The VN-wide settings that shape every node and link.
struct VnWide {
    attrs: pb::VnAttributes,
    /// The encapsulation attribute (AUTO as an attribute constrains nothing).
    attr_encap: Option<Encap>,
    /// The default encapsulation of the VN's links.
    encap: Encap,
    /// Whether the VN's encapsulation was chosen rather than defaulted.
    encap_explicit: bool,
    allowed: BTreeSet<Kind>,
    isolation: Option<Isolation>,
}

/// The encapsulation and the attributes of a spec.
fn vn_wide(spec: &pb::VnSpec) -> Result<VnWide, SpecError> {
    let attrs = spec.attributes.clone().unwrap_or_default();
    let attr_encap = match pb::Encapsulation::try_from(attrs.encapsulation) {
        Ok(pb::Encapsulation::Auto) => None,
        _ => encap(attrs.encapsulation, "spec.attributes.encapsulation")?,
    };
    let spec_encap = encap(spec.encapsulation, "spec.encapsulation")?;
    if let (Some(a), Some(s)) = (attr_encap, spec_encap)
        && chosen(spec.encapsulation)
        && a != s
    {
        return Err(invalid(format!(
            "spec.encapsulation {} contradicts spec.attributes.encapsulation {}",
            encap_name(s),
            encap_name(a)
        )));
    }
    if let Some(mtu) = attrs.mtu
        && !(68..=65535).contains(&mtu)
    {
        return Err(invalid(format!(
            "spec.attributes.mtu {mtu} is outside 68..65535"
        )));
    }
    let allowed: BTreeSet<Kind> = attrs
        .allowed_node_kinds
        .iter()
        .map(|k| kind(*k, "spec.attributes.allowed_node_kinds"))
        .collect::<Result<_, _>>()?;
    let isolation = match pb::IsolationLevel::try_from(attrs.isolation) {
        Ok(pb::IsolationLevel::Unspecified) => None,
        Ok(pb::IsolationLevel::Standard) => Some(Isolation::Standard),
        Ok(pb::IsolationLevel::DedicatedHosts) => Some(Isolation::DedicatedHosts),
        Err(_) => {
            return Err(invalid(format!(
                "spec.attributes.isolation: unknown level {}",
                attrs.isolation
            )));
        }
    };
    Ok(VnWide {
        encap: attr_encap.or(spec_encap).unwrap_or(Encap::Vxlan),
        encap_explicit: attr_encap.is_some() || chosen(spec.encapsulation),
        attr_encap,
        allowed,
        isolation,
        attrs,
    })
}

/// The number of nodes and links against the limits.
fn sizes(spec: &pb::VnSpec, wide: &VnWide) -> Result<(), SpecError> {
    if spec.nodes.is_empty() {
        return Err(invalid("spec.nodes: a VN needs at least one node"));
    }
    if spec.nodes.len() > MAX_NODES {
        return Err(invalid(format!(
            "spec.nodes: {} nodes exceed the limit of {MAX_NODES}",
            spec.nodes.len()
        )));
    }
    if spec.links.len() > MAX_LINKS {
        return Err(invalid(format!(
            "spec.links: {} links exceed the limit of {MAX_LINKS}",
            spec.links.len()
        )));
    }
    if let Some(max) = wide.attrs.max_nodes
        && spec.nodes.len() > max as usize
    {
        return Err(invalid(format!(
            "spec.nodes: {} nodes exceed spec.attributes.max_nodes {max}",
            spec.nodes.len()
        )));
    }
    Ok(())
}

/// The nodes of a spec, and each node's index by name.
fn nodes<'s>(
    spec: &'s pb::VnSpec,
    wide: &VnWide,
) -> Result<(Vec<NodeReq>, BTreeMap<&'s str, usize>), SpecError> {
    let mut nodes = Vec::with_capacity(spec.nodes.len());
    let mut by_name: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, n) in spec.nodes.iter().enumerate() {
        let what = format!("spec.nodes[{i}] ({})", label(&n.name));
        let nr = node(n, &what)?;
        if let Some(prev) = by_name.insert(n.name.as_str(), i) {
            return Err(invalid(format!(
                "{what}: duplicate node name {} (also spec.nodes[{prev}])",
                n.name
            )));
        }
        if !wide.allowed.is_empty() && !wide.allowed.contains(&nr.kind) {
            return Err(invalid(format!(
                "{what}: kind {} is not in spec.attributes.allowed_node_kinds",
                nr.kind.as_str()
            )));
        }
        nodes.push(nr);
    }
    let total_cpu = checked_total(nodes.iter().map(|n| n.cpu), "spec.nodes: cpu")?;
    checked_total(nodes.iter().map(|n| n.memory_mb), "spec.nodes: memory_mb")?;
    if let Some(max) = wide.attrs.max_total_cpu
        && total_cpu > max
    {
        return Err(invalid(format!(
            "spec.nodes: total cpu {total_cpu} exceeds spec.attributes.max_total_cpu {max}"
        )));
    }
    Ok((nodes, by_name))
}

/// What the links of one spec must not share, filled in link by link.
struct LinkChecker<'s> {
    spec: &'s pb::VnSpec,
    wide: &'s VnWide,
    by_name: &'s BTreeMap<&'s str, usize>,
    pairs: BTreeMap<(usize, usize), usize>,
    addresses: BTreeMap<IpAddr, String>,
    ifnames: BTreeMap<(usize, String), String>,
    subnets: NodeSubnets,
    carrier: IpNet,
}

impl<'s> LinkChecker<'s> {
    fn new(spec: &'s pb::VnSpec, wide: &'s VnWide, by_name: &'s BTreeMap<&'s str, usize>) -> Self {
        LinkChecker {
            spec,
            wide,
            by_name,
            pairs: BTreeMap::new(),
            addresses: BTreeMap::new(),
            ifnames: BTreeMap::new(),
            subnets: NodeSubnets::new(spec.nodes.len()),
            carrier: carrier_range(),
        }
    }

    /// Link `i` of the spec.
    fn link(&mut self, i: usize, l: &pb::LinkSpec) -> Result<LinkReq, SpecError> {
        if l.endpoints.len() != 2 {
            return Err(invalid(format!(
                "spec.links[{i}]: a link needs exactly two endpoints, got {}",
                l.endpoints.len()
            )));
        }
        let what = format!(
            "spec.links[{i}] ({}-{})",
            label(&l.endpoints[0]),
            label(&l.endpoints[1])
        );
        let end = |name: &str| {
            self.by_name
                .get(name)
                .copied()
                .ok_or_else(|| invalid(format!("{what}: unknown endpoint {}", quote(name))))
        };
        let (a, b) = (end(&l.endpoints[0])?, end(&l.endpoints[1])?);
        if a == b {
            return Err(invalid(format!(
                "{what}: both endpoints are node {}",
                l.endpoints[0]
            )));
        }
        if let Some(prev) = self.pairs.insert((a.min(b), a.max(b)), i) {
            return Err(invalid(format!(
                "{what}: duplicate link between {} and {} (also spec.links[{prev}])",
                l.endpoints[0], l.endpoints[1]
            )));
        }
        let max_bw = self
            .wide
            .attrs
            .max_link_bandwidth_mbps
            .unwrap_or(MAX_BANDWIDTH_MBPS)
            .min(MAX_BANDWIDTH_MBPS);
        if l.bandwidth_mbps <= 0 {
            return Err(invalid(format!(
                "{what}: bandwidth_mbps must be > 0, got {}",
                l.bandwidth_mbps
            )));
        }
        let bandwidth_mbps = l.bandwidth_mbps as u64;
        if bandwidth_mbps > max_bw {
            let limit = match self.wide.attrs.max_link_bandwidth_mbps {
                Some(m) if m <= MAX_BANDWIDTH_MBPS => {
                    format!("spec.attributes.max_link_bandwidth_mbps {m}")
                }
                _ => format!("the limit of {MAX_BANDWIDTH_MBPS}"),
            };
            return Err(invalid(format!(
                "{what}: bandwidth_mbps {bandwidth_mbps} exceeds {limit}"
            )));
        }
        let addresses = self.addresses(l, [a, b], &what)?;
        let interfaces = self.interfaces(l, [a, b], &what)?;
        let link_encap = encap(l.encapsulation, &what)?.unwrap_or(self.wide.encap);
        if let Some(want) = self.wide.attr_encap
            && link_encap != want
        {
            return Err(invalid(format!(
                "{what}: encapsulation {} contradicts spec.attributes.encapsulation {}",
                encap_name(link_encap),
                encap_name(want)
            )));
        }
        let (impair, max_delay_us) = impairment(l, &what)?;
        Ok(LinkReq {
            a,
            b,
            bandwidth_mbps,
            addresses,
            interfaces,
            encap: link_encap,
            encap_explicit: self.wide.encap_explicit || chosen(l.encapsulation),
            impair,
            max_delay_us,
        })
    }

    /// The two interface addresses of a link, if given.
    fn addresses(
        &mut self,
        l: &pb::LinkSpec,
        ends: [usize; 2],
        what: &str,
    ) -> Result<Option<[IpNet; 2]>, SpecError> {
        let pair = match l.addresses.len() {
            0 => return Ok(None),
            2 => [
                addr::cidr(&l.addresses[0], what)?,
                addr::cidr(&l.addresses[1], what)?,
            ],
            n => {
                return Err(invalid(format!(
                    "{what}: give zero or two addresses, got {n}"
                )));
            }
        };
        let [x, y] = pair;
        if x.addr().is_ipv4() != y.addr().is_ipv4() {
            return Err(invalid(format!(
                "{what}: addresses {x} and {y} mix address families"
            )));
        }
        for (side, net) in pair.into_iter().enumerate() {
            addr::interface_address(net, what)?;
            if let Some(prev) = self.addresses.insert(net.addr(), what.to_string()) {
                return Err(invalid(format!(
                    "{what}: address {} is used twice (also {prev})",
                    net.addr()
                )));
            }
            if self.spec.nestable
                && (self.carrier.contains(&net.addr()) || net.contains(&self.carrier.addr()))
            {
                return Err(invalid(format!(
                    "{what}: address {net} overlaps {}, the range the controller assigns to the links of nestable VNs",
                    self.carrier
                )));
            }
            self.subnets
                .claim(ends[side], &l.endpoints[side], net, what)?;
        }
        Ok(Some(pair))
    }

    /// The two interface names of a link, if given.
    fn interfaces(
        &mut self,
        l: &pb::LinkSpec,
        ends: [usize; 2],
        what: &str,
    ) -> Result<[Option<String>; 2], SpecError> {
        match l.interfaces.len() {
            0 => Ok([None, None]),
            2 => {
                for (side, (node_ix, name)) in ends.into_iter().zip(&l.interfaces).enumerate() {
                    check_ifname(name).map_err(|e| invalid(format!("{what}: {e}")))?;
                    if let Some(prev) = self.ifnames.insert((node_ix, name.clone()), what.into()) {
                        return Err(invalid(format!(
                            "{what}: interface {name} of node {} is used twice (also {prev})",
                            l.endpoints[side]
                        )));
                    }
                }
                Ok([Some(l.interfaces[0].clone()), Some(l.interfaces[1].clone())])
            }
            n => Err(invalid(format!(
                "{what}: give zero or two interface names, got {n}"
            ))),
        }
    }
}

/// A link's delay, jitter, loss and path delay bound, each checked by name.
fn impairment(l: &pb::LinkSpec, what: &str) -> Result<(Impairment, Option<u64>), SpecError> {
    let max = Impairment::MAX_DELAY_US;
    let micros = |v: i64, field: &str| -> Result<u64, SpecError> {
        if !(0..=max as i64).contains(&v) {
            return Err(invalid(format!(
                "{what}: {field} {v} is outside 0..={max} microseconds"
            )));
        }
        Ok(v as u64)
    };
    let delay_us = micros(l.delay_us, "delay_us")?;
    let jitter_us = micros(l.jitter_us, "jitter_us")?;
    if jitter_us > delay_us {
        return Err(invalid(format!(
            "{what}: jitter_us {jitter_us} exceeds delay_us {delay_us} (a frame's delay is delay +- jitter)"
        )));
    }
    let loss = l.loss_percent;
    if !loss.is_finite() || !(0.0..100.0).contains(&loss) {
        return Err(invalid(format!(
            "{what}: loss_percent {loss} is outside [0, 100)"
        )));
    }
    let max_delay_us = micros(l.max_delay_us, "max_delay_us")?;
    let impair = Impairment {
        delay_us,
        jitter_us,
        loss_ppm: (loss * 10_000.0).round() as u32,
    };
    Ok((impair, (max_delay_us > 0).then_some(max_delay_us)))
}

/// The links of a spec.
fn links(
    spec: &pb::VnSpec,
    wide: &VnWide,
    by_name: &BTreeMap<&str, usize>,
) -> Result<Vec<LinkReq>, SpecError> {
    let mut check = LinkChecker::new(spec, wide, by_name);
    let links = spec
        .links
        .iter()
        .enumerate()
        .map(|(i, l)| check.link(i, l))
        .collect::<Result<Vec<_>, _>>()?;
    checked_total(
        links.iter().map(|l| l.bandwidth_mbps),
        "spec.links: bandwidth_mbps",
    )?;
    Ok(links)
}

/// The embedding algorithm asked for, if any.
fn algorithm(spec: &pb::VnSpec, algorithms: &[&str]) -> Result<Option<String>, SpecError> {
    if spec.algorithm.is_empty() {
        Ok(None)
    } else if algorithms.contains(&spec.algorithm.as_str()) {
        Ok(Some(spec.algorithm.clone()))
    } else {
        Err(invalid(format!(
            "spec.algorithm: unknown algorithm {} (known: {})",
            quote(&spec.algorithm),
            algorithms.join(", ")
        )))
    }
}

/// The recovery policy (unspecified: re-embed).
fn recovery(spec: &pb::VnSpec) -> Result<RecoveryPolicy, SpecError> {
    match pb::RecoveryPolicy::try_from(spec.recovery) {
        Ok(pb::RecoveryPolicy::Unspecified | pb::RecoveryPolicy::Reembed) => {
            Ok(RecoveryPolicy::Reembed)
        }
        Ok(pb::RecoveryPolicy::Wait) => Ok(RecoveryPolicy::Wait),
        Err(_) => Err(invalid(format!(
            "spec.recovery: unknown policy {} (known: reembed, wait)",
            spec.recovery
        ))),
    }
}

/// The providers a nestable VN is shared with.
fn share_with(spec: &pb::VnSpec) -> Result<BTreeSet<String>, SpecError> {
    if spec.share_with.len() > MAX_SHARE_WITH {
        return Err(invalid(format!(
            "spec.share_with: {} providers exceed the limit of {MAX_SHARE_WITH}",
            spec.share_with.len()
        )));
    }
    let share_with = spec
        .share_with
        .iter()
        .map(|p| {
            check_identifier(p)
                .map(|()| p.clone())
                .map_err(|e| invalid(format!("spec.share_with {}: {e}", quote(p))))
        })
        .collect::<Result<BTreeSet<_>, _>>()?;
    if !spec.nestable && !share_with.is_empty() {
        return Err(invalid(
            "spec.share_with is set but spec.nestable is false (only a nestable VN can be shared)",
        ));
    }
    Ok(share_with)
}

/// Validates a spec for `caller` and returns the domain request and the spec to store (with the
/// provider filled in). `algorithms` are the known embedding algorithm names.
pub fn vn_spec(
    spec: Option<pb::VnSpec>,
    caller: &ProviderId,
    algorithms: &[&str],
) -> Result<(VnReq, pb::VnSpec), SpecError> {
    let mut spec = spec.ok_or_else(|| invalid("spec is required"))?;
    let parent = identity(&mut spec, caller)?;
    let wide = vn_wide(&spec)?;
    sizes(&spec, &wide)?;
    let (nodes, by_name) = nodes(&spec, &wide)?;
    let links = links(&spec, &wide, &by_name)?;
    let algorithm = algorithm(&spec, algorithms)?;
    let share_with = share_with(&spec)?;
    let attrs = &wide.attrs;
    let req = VnReq {
        name: spec.name.clone(),
        provider: caller.clone(),
        allow_revisitation: spec.allow_revisitation,
        nodes,
        links,
        algorithm,
        max_path_hops: (spec.max_path_hops > 0).then_some(spec.max_path_hops),
        attributes: Attributes {
            mtu: attrs.mtu,
            dedicated_hosts: wide.isolation == Some(Isolation::DedicatedHosts),
            isolation: wide.isolation,
            encap: wide.attr_encap,
            max_link_bandwidth_mbps: attrs.max_link_bandwidth_mbps,
            allowed_kinds: (!wide.allowed.is_empty()).then(|| wide.allowed.clone()),
            max_nodes: attrs.max_nodes,
            max_total_cpu: attrs.max_total_cpu,
        },
        nestable: spec.nestable,
        share_with,
        parent,
        recovery: recovery(&spec)?,
        max_nodes_per_host: (spec.max_nodes_per_host > 0).then_some(spec.max_nodes_per_host),
        spread: spec.spread,
    };
    if req.spread && req.max_nodes_per_host.is_some() {
        return Err(invalid(
            "spec.spread and spec.max_nodes_per_host are both set: give one (spread finds the smallest bound itself)",
        ));
    }
    Ok((req, spec))
}

/// A VN name in Get/Delete/Watch/Exec.
pub fn vn_name(name: &str, what: &str) -> Result<(), Status> {
    check_identifier(name)
        .map_err(|e| Status::invalid_argument(format!("{what} {}: {e}", quote(name))))
}

/// An agent's hello, into the host it describes.
/// The largest generation an agent may report: far above any real count (one per change of a
/// host's desired state), far below where adding one wraps.
pub const MAX_GENERATION: u64 = 1 << 48;

pub fn hello(h: &pb::AgentHello, now_ms: u64) -> Result<HostInfo, Status> {
    let bad = |m: String| Status::invalid_argument(format!("hello: {m}"));
    check_identifier(&h.host_id).map_err(|e| bad(format!("host_id {}: {e}", quote(&h.host_id))))?;
    let underlay_address: IpAddr = h.underlay_address.parse().map_err(|_| {
        bad(format!(
            "underlay_address {} is not an IP address",
            quote(&h.underlay_address)
        ))
    })?;
    let underlay = h
        .underlay
        .iter()
        .map(|u| {
            Ok(UnderlayIf {
                name: u.name.clone(),
                addresses: u
                    .addresses
                    .iter()
                    .map(|a| {
                        a.parse::<IpNet>().map_err(|_| {
                            bad(format!(
                                "underlay {}: address {} is not a CIDR",
                                quote(&u.name),
                                quote(a)
                            ))
                        })
                    })
                    .collect::<Result<_, _>>()?,
                mtu: u.mtu,
                mac: u.mac.clone(),
            })
        })
        .collect::<Result<Vec<_>, Status>>()?;
    if h.applied_generation > MAX_GENERATION {
        return Err(bad(format!(
            "applied_generation {} is out of range (at most {MAX_GENERATION})",
            h.applied_generation
        )));
    }
    let cap = h.capacity.unwrap_or_default();
    let kinds = h
        .node_kinds
        .iter()
        .filter_map(|k| match pb::NodeKind::try_from(*k) {
            Ok(pb::NodeKind::Netns) => Some(Kind::Netns),
            Ok(pb::NodeKind::Vm) => Some(Kind::Vm),
            _ => None,
        })
        .collect();
    Ok(HostInfo {
        id: h.host_id.clone(),
        underlay_address,
        underlay,
        cpu: cap.cpu,
        memory_mb: cap.memory_mb,
        kinds,
        labels: h.labels.iter().cloned().collect(),
        capabilities_pb: h
            .capabilities
            .as_ref()
            .map(prost::Message::encode_to_vec)
            .unwrap_or_default(),
        agent_version: h.agent_version.clone(),
        boot_id: h.boot_id.clone(),
        last_seen_unix_ms: now_ms,
        images: images(&h.images).map_err(|m| bad(format!("images: {m}")))?,
        cordoned: false,
        guest_archs: guest_archs(h.capabilities.as_ref())
            .map_err(|m| bad(format!("capabilities.guest_archs: {m}")))?,
    })
}

/// The guest architectures a host runs: known names, each once.
fn guest_archs(c: Option<&pb::Capabilities>) -> Result<BTreeSet<String>, String> {
    let mut out = BTreeSet::new();
    for a in c.map(|c| c.guest_archs.as_slice()).unwrap_or_default() {
        if !matches!(a.as_str(), "x86_64" | "aarch64") {
            return Err(format!("{} is not x86_64 or aarch64", quote(a)));
        }
        if !out.insert(a.clone()) {
            return Err(format!("{a} is listed twice"));
        }
    }
    Ok(out)
}

/// Most images one host may report.
pub const MAX_HOST_IMAGES: usize = 256;

/// The images an agent reports: names as node names, format and architecture short words, the
/// digest short printable text; no name twice.
fn images(list: &[pb::GuestImage]) -> Result<Vec<GuestImage>, String> {
    if list.len() > MAX_HOST_IMAGES {
        return Err(format!(
            "{} images exceed the limit of {MAX_HOST_IMAGES}",
            list.len()
        ));
    }
    let word = |s: &str| {
        (1..=32).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'))
    };
    let mut names = BTreeSet::new();
    let mut out = Vec::with_capacity(list.len());
    for i in list {
        check_node_name(&i.name).map_err(|e| format!("image {}: {e}", quote(&i.name)))?;
        if !names.insert(i.name.as_str()) {
            return Err(format!("image {} is listed twice", i.name));
        }
        if !word(&i.format) || !word(&i.arch) {
            return Err(format!(
                "image {}: format {} and arch {} must be short words ([a-z0-9_-], 1 to 32)",
                i.name,
                quote(&i.format),
                quote(&i.arch)
            ));
        }
        if i.digest.len() > 128 || !i.digest.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "image {}: digest {} is not up to 128 printable characters",
                i.name,
                quote(&i.digest)
            ));
        }
        out.push(GuestImage {
            name: i.name.clone(),
            format: i.format.clone(),
            arch: i.arch.clone(),
            size_bytes: i.size_bytes,
            digest: i.digest.clone(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller() -> ProviderId {
        ProviderId("red".into())
    }

    fn n(name: &str) -> pb::NodeSpec {
        pb::NodeSpec {
            name: name.into(),
            kind: pb::NodeKind::Netns as i32,
            cpu: 10,
            memory_mb: 64,
            ..Default::default()
        }
    }

    fn l(a: &str, b: &str, bw: i64) -> pb::LinkSpec {
        pb::LinkSpec {
            endpoints: vec![a.into(), b.into()],
            bandwidth_mbps: bw,
            ..Default::default()
        }
    }

    fn spec() -> pb::VnSpec {
        pb::VnSpec {
            name: "red-net".into(),
            nodes: vec![n("a"), n("b"), n("c")],
            links: vec![l("a", "b", 50), l("b", "c", 10)],
            ..Default::default()
        }
    }

    fn err(s: pb::VnSpec) -> SpecError {
        vn_spec(Some(s), &caller(), &["grc"]).unwrap_err()
    }

    #[test]
    fn accepts_a_good_spec_and_fills_the_provider() {
        let mut s = spec();
        s.links[0].addresses = vec!["10.0.0.1/24".into(), "10.0.0.2/24".into()];
        s.links[0].interfaces = vec!["up".into(), "down".into()];
        s.encapsulation = pb::Encapsulation::Vlan as i32;
        s.links[1].encapsulation = pb::Encapsulation::Vxlan as i32;
        let (req, stored) = vn_spec(Some(s), &caller(), &["grc"]).unwrap();
        assert_eq!(stored.provider, "red");
        assert_eq!(req.nodes.len(), 3);
        assert_eq!(req.links[0].encap, Encap::Vlan);
        assert_eq!(req.links[1].encap, Encap::Vxlan);
        assert_eq!(req.links[0].interfaces[1].as_deref(), Some("down"));
    }

    #[test]
    fn point_to_point_prefixes_use_every_address() {
        // RFC 3021 /31 and /32 have no network or broadcast address; IPv6 /127 no anycast.
        for (x, y, z, w) in [
            ("10.0.0.0/31", "10.0.0.1/31", "10.0.0.2/31", "10.0.0.3/31"),
            ("10.0.0.0/32", "10.0.0.1/32", "10.0.0.255/32", "10.0.1.0/32"),
            (
                "2001:db8::/127",
                "2001:db8::1/127",
                "2001:db8::2/127",
                "2001:db8::3/127",
            ),
        ] {
            let mut s = spec();
            s.links[0].addresses = vec![x.into(), y.into()];
            s.links[1].addresses = vec![z.into(), w.into()];
            vn_spec(Some(s), &caller(), &[]).unwrap();
        }
    }

    #[test]
    fn impairments_become_domain_values() {
        let mut s = spec();
        s.links[0].delay_us = 20_000;
        s.links[0].jitter_us = 5_000;
        s.links[0].loss_percent = 5.0;
        s.links[0].max_delay_us = 30_000;
        s.max_nodes_per_host = 3;
        let (req, _) = vn_spec(Some(s), &caller(), &["grc"]).unwrap();
        assert_eq!(
            req.links[0].impair,
            Impairment {
                delay_us: 20_000,
                jitter_us: 5_000,
                loss_ppm: 50_000
            }
        );
        assert_eq!(req.links[0].max_delay_us, Some(30_000));
        assert!(req.links[1].impair.is_none());
        assert_eq!(req.links[1].max_delay_us, None);
        assert_eq!(req.max_nodes_per_host, Some(3));
    }

    #[test]
    fn each_bad_input_names_the_item() {
        type Mutate = Box<dyn Fn(&mut pb::VnSpec)>;
        let cases: Vec<(Mutate, &str)> = vec![
            (
                Box::new(|s| s.links[1].endpoints[1] = "z".into()),
                "spec.links[1] (b-z): unknown endpoint \"z\"",
            ),
            (
                Box::new(|s| s.nodes[2].name = "a".into()),
                "spec.nodes[2] (a): duplicate node name a",
            ),
            (
                Box::new(|s| s.links[0].bandwidth_mbps = 0),
                "spec.links[0] (a-b): bandwidth_mbps must be > 0",
            ),
            (
                Box::new(|s| s.links[0].bandwidth_mbps = -5),
                "bandwidth_mbps must be > 0, got -5",
            ),
            (
                Box::new(|s| s.links[0].delay_us = -1),
                "spec.links[0] (a-b): delay_us -1 is outside 0..=10000000 microseconds",
            ),
            (
                Box::new(|s| s.links[1].delay_us = 10_000_001),
                "spec.links[1] (b-c): delay_us 10000001 is outside",
            ),
            (
                Box::new(|s| {
                    s.links[0].delay_us = 5_000;
                    s.links[0].jitter_us = 6_000;
                }),
                "spec.links[0] (a-b): jitter_us 6000 exceeds delay_us 5000",
            ),
            (
                Box::new(|s| s.links[0].loss_percent = 100.0),
                "spec.links[0] (a-b): loss_percent 100 is outside [0, 100)",
            ),
            (
                Box::new(|s| s.links[0].loss_percent = -0.5),
                "loss_percent -0.5 is outside [0, 100)",
            ),
            (
                Box::new(|s| s.links[0].loss_percent = f64::NAN),
                "loss_percent NaN is outside [0, 100)",
            ),
            (
                Box::new(|s| s.links[0].max_delay_us = -3),
                "spec.links[0] (a-b): max_delay_us -3 is outside",
            ),
            (
                Box::new(|s| {
                    s.spread = true;
                    s.max_nodes_per_host = 2;
                }),
                "spec.spread and spec.max_nodes_per_host are both set",
            ),
            (
                Box::new(|s| {
                    s.links[0].addresses = vec!["10.0.0.300/24".into(), "10.0.0.2/24".into()]
                }),
                "address \"10.0.0.300/24\" is not a valid CIDR",
            ),
            (
                Box::new(|s| s.links[0].addresses = vec!["10.0.0.1".into(), "10.0.0.2/24".into()]),
                "not in CIDR notation",
            ),
            (
                Box::new(|s| s.links[0].addresses = vec!["10.0.0.1/24".into()]),
                "zero or two addresses",
            ),
            (
                Box::new(|s| {
                    s.links[0].addresses = vec!["10.0.0.1/24".into(), "10.0.0.2/24".into()];
                    s.links[1].addresses = vec!["10.0.0.1/24".into(), "10.0.0.3/24".into()];
                }),
                "spec.links[1] (b-c): address 10.0.0.1 is used twice (also spec.links[0] (a-b))",
            ),
            (
                Box::new(|s| s.nodes[1].kind = 9),
                "spec.nodes[1] (b): unknown kind 9",
            ),
            (
                Box::new(|s| s.nodes[0].cpu = -1),
                "spec.nodes[0] (a): cpu -1 must be >= 0",
            ),
            (
                Box::new(|s| s.nodes = (0..300).map(|i| n(&format!("n{i}"))).collect()),
                "300 nodes exceed the limit of 256",
            ),
            (
                Box::new(|s| s.links.push(l("b", "a", 5))),
                "spec.links[2] (b-a): duplicate link between b and a",
            ),
            (
                Box::new(|s| s.links.push(l("a", "a", 5))),
                "both endpoints are node a",
            ),
            (
                Box::new(|s| {
                    s.links[0].interfaces = vec!["this-is-far-too-long".into(), "x".into()]
                }),
                "1 to 15 characters",
            ),
            (
                Box::new(|s| {
                    s.links[0].interfaces = vec!["e".into(), "x".into()];
                    s.links[1].interfaces = vec!["x".into(), "y".into()];
                }),
                "interface x of node b is used twice",
            ),
            (
                Box::new(|s| s.name = "Red Net".into()),
                "spec.name \"Red Net\"",
            ),
            (Box::new(|s| s.nodes.clear()), "at least one node"),
            (
                Box::new(|s| s.algorithm = "magic".into()),
                "unknown algorithm \"magic\" (known: grc)",
            ),
            (
                Box::new(|s| {
                    s.nodes[0].routes = vec![pb::Route {
                        destination: "10.1.0.5/16".into(),
                        via: "10.0.0.1".into(),
                    }]
                }),
                "has host bits set",
            ),
            (
                Box::new(|s| {
                    s.nodes[0].routes = vec![pb::Route {
                        destination: "default".into(),
                        via: "gw".into(),
                    }]
                }),
                "route via \"gw\" is not an IP address",
            ),
            (
                Box::new(|s| s.links[0].encapsulation = 7),
                "spec.links[0] (a-b): unknown encapsulation 7",
            ),
            (
                Box::new(|s| {
                    s.nodes[0].kind = pb::NodeKind::Vm as i32;
                    s.nodes[0].memory_mb = 16;
                }),
                "a vm needs memory_mb >= 96, got 16",
            ),
            (
                Box::new(|s| s.nodes[0].image = "debian".into()),
                "apply to vm nodes only",
            ),
            (
                Box::new(|s| {
                    s.attributes = Some(pb::VnAttributes {
                        max_link_bandwidth_mbps: Some(20),
                        ..Default::default()
                    })
                }),
                "exceeds spec.attributes.max_link_bandwidth_mbps 20",
            ),
            (
                Box::new(|s| {
                    s.attributes = Some(pb::VnAttributes {
                        allowed_node_kinds: vec![pb::NodeKind::Vm as i32],
                        ..Default::default()
                    })
                }),
                "kind netns is not in spec.attributes.allowed_node_kinds",
            ),
        ];
        for (mutate, needle) in cases {
            let mut s = spec();
            mutate(&mut s);
            let e = err(s);
            assert!(matches!(e, SpecError::Invalid(_)), "{e:?}");
            assert!(
                e.to_string().contains(needle),
                "{e} does not contain {needle}"
            );
        }
    }

    #[test]
    fn provider_mismatch_and_parent() {
        let mut s = spec();
        s.provider = "blue".into();
        assert!(matches!(err(s), SpecError::Permission(m) if m.contains("\"blue\"")));
        let mut s = spec();
        s.parent = "base".into();
        let (r, _) = vn_spec(Some(s.clone()), &caller(), &[]).unwrap();
        assert_eq!(
            r.parent,
            Some(ParentRef {
                provider: caller(),
                name: "base".into()
            })
        );
        s.parent_provider = "green".into();
        let (r, _) = vn_spec(Some(s.clone()), &caller(), &[]).unwrap();
        assert_eq!(r.parent.unwrap().to_string(), "green/base");
        s.parent = String::new();
        assert!(matches!(err(s), SpecError::Invalid(m) if m.contains("without spec.parent")));
        assert_eq!(
            vn_spec(None, &caller(), &[]).unwrap_err(),
            SpecError::Invalid("spec is required".into())
        );
    }

    #[test]
    fn recursion_fields_and_attributes() {
        let mut s = spec();
        s.share_with = vec!["blue".into()];
        assert!(matches!(err(s.clone()), SpecError::Invalid(m) if m.contains("nestable is false")));
        s.nestable = true;
        s.attributes = Some(pb::VnAttributes {
            encapsulation: pb::Encapsulation::Vxlan as i32,
            mtu: Some(1400),
            max_link_bandwidth_mbps: Some(100),
            allowed_node_kinds: vec![pb::NodeKind::Netns as i32],
            isolation: pb::IsolationLevel::DedicatedHosts as i32,
            max_nodes: Some(10),
            max_total_cpu: Some(500),
        });
        let (r, _) = vn_spec(Some(s.clone()), &caller(), &[]).unwrap();
        let a = &r.attributes;
        assert_eq!(a.encap, Some(Encap::Vxlan));
        assert_eq!(a.isolation, Some(Isolation::DedicatedHosts));
        assert!(a.dedicated_hosts);
        assert_eq!(a.allowed_kinds, Some([Kind::Netns].into()));
        assert_eq!((a.max_nodes, a.max_total_cpu), (Some(10), Some(500)));
        assert!(r.links.iter().all(|l| l.encap_explicit));
        // An attribute fixes the encapsulation of every link.
        let mut bad = s.clone();
        bad.links[1].encapsulation = pb::Encapsulation::Vlan as i32;
        assert!(
            matches!(err(bad), SpecError::Invalid(m) if m == "spec.links[1] (b-c): encapsulation vlan contradicts spec.attributes.encapsulation vxlan")
        );
        // Explicit addresses of a nestable VN stay out of the carrier range.
        let mut bad = s.clone();
        bad.links[0].addresses = vec!["100.64.0.1/24".into(), "100.64.0.2/24".into()];
        assert!(matches!(err(bad), SpecError::Invalid(m) if m.contains("overlaps 100.64.0.0/21")));
        // Without an attribute nothing is explicit: a child may inherit the encapsulation.
        let (r, _) = vn_spec(Some(spec()), &caller(), &[]).unwrap();
        assert!(r.links.iter().all(|l| !l.encap_explicit));
        assert_eq!(r.attributes.isolation, None);
    }

    #[test]
    fn hello_is_checked() {
        let mut h = pb::AgentHello {
            host_id: "h1".into(),
            underlay_address: "10.0.0.1".into(),
            node_kinds: vec![pb::NodeKind::Netns as i32],
            capacity: Some(pb::Resources {
                cpu: 400,
                memory_mb: 4096,
            }),
            ..Default::default()
        };
        h.images = vec![pb::GuestImage {
            name: "default".into(),
            format: "kernel".into(),
            arch: "x86_64".into(),
            size_bytes: 9,
            digest: "sha256:00".into(),
        }];
        let info = hello(&h, 5).unwrap();
        assert_eq!(info.cpu, 400);
        assert!(info.has_image("default"));
        let mut twice = h.clone();
        twice.images.push(h.images[0].clone());
        assert!(
            hello(&twice, 5)
                .unwrap_err()
                .message()
                .contains("listed twice")
        );
        let mut odd = h.clone();
        odd.images[0].arch = "x86 64".into();
        assert!(
            hello(&odd, 5)
                .unwrap_err()
                .message()
                .contains("short words")
        );
        let mut long = h.clone();
        long.images[0].name = "i".repeat(1_000_000);
        let m = hello(&long, 5).unwrap_err().message().to_string();
        assert!(m.contains("images: image \"iii") && m.len() < 300, "{m}");
        assert!(info.kinds.contains(&Kind::Netns));
        h.underlay_address = "nope".into();
        assert!(
            hello(&h, 5)
                .unwrap_err()
                .message()
                .contains("underlay_address")
        );
    }
}
