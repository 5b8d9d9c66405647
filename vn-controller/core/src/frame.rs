//! The frame of a request: what it is embedded in and with which effective attributes. One
//! computation serves both the attempt (before the embedding) and the commit (after it, again,
//! because the parent may have changed in between).
//!
//! At the top level the frame is the substrate: pins must name attached hosts, and the
//! attributes become the effective ones ([`attributes::top_level`]).
//!
//! A child is resolved against its parent, in this order: the parent exists (NOT_FOUND, checked
//! by the caller, which looks it up), the caller owns it or is in its `share_with`
//! (PERMISSION_DENIED), it is nestable and ready, the depth and the VXLAN port of the level fit,
//! `share_with` and the attributes only narrow the parent's, the request conforms to the
//! effective attributes (FAILED_PRECONDITION), the quotas of every ancestor hold and no link asks
//! for more than the parent's largest link (RESOURCE_EXHAUSTED), and pins name netns nodes of the
//! parent on attached hosts. The frame is then the parent's virtual topology
//! ([`nest::virtual_substrate`]).

use std::collections::{BTreeMap, BTreeSet};

use crate::attributes::{self, Kinds};
use crate::error::CoreError;
use crate::model::{Kind, VnReq};
use crate::nest::{self, ParentNode};
use crate::record::{VnRecord, VnStatus};
use crate::substrate::Registry;

/// Deepest nesting (a VN on the substrate has depth 0). Each level costs 50 bytes of MTU and
/// one UDP port above the base VXLAN port.
pub const MAX_DEPTH: u32 = 8;

/// What a request is embedded in.
#[derive(Clone, Debug)]
pub struct Frame {
    /// The request with its effective attributes (and, for a child, inherited encapsulations).
    pub req: VnReq,
    /// UDP port of the level's VXLAN hops (base + depth).
    pub port: u16,
    /// A child: its parent, whose virtual topology is the frame. `None`: the substrate.
    pub parent: Option<ParentFrame>,
}

/// A child's parent as its frame.
#[derive(Clone, Debug)]
pub struct ParentFrame {
    pub id: String,
    pub label: String,
    /// The child's depth.
    pub depth: u32,
    /// The parent's virtual topology as a substrate.
    pub registry: Registry,
    /// Where each parent node is.
    pub nodes: BTreeMap<String, ParentNode>,
}

/// An ancestor of a child request, with what it and all its descendants hold (for its quotas).
#[derive(Clone, Copy, Debug)]
pub struct Ancestor<'a> {
    pub rec: &'a VnRecord,
    pub nodes: u64,
    pub cpu: u64,
}

/// The frame of a top-level request on `registry`: every pin names an attached host.
pub fn top_level(req: &VnReq, registry: &Registry, port: u16) -> Result<Frame, CoreError> {
    for (i, n) in req.nodes.iter().enumerate() {
        let Some(pin) = &n.pin else { continue };
        let what = format!("spec.nodes[{i}] ({})", n.name);
        if registry.host(pin).is_none() {
            return Err(CoreError::Invalid(format!(
                "{what}: pinned to unknown host {pin}"
            )));
        }
        if !registry.is_connected(pin) {
            return Err(CoreError::Precondition(format!(
                "{what}: pinned host {pin} is not attached"
            )));
        }
    }
    Ok(Frame {
        req: VnReq {
            attributes: attributes::top_level(&req.attributes),
            ..req.clone()
        },
        port,
        parent: None,
    })
}

/// The frame of a child request inside `ancestors[0]` (its parent; then the parent's parent, up
/// to the top level), on the substrate `global`, with VXLAN port `base_port` at depth 0. See the
/// module docs for the order of checks.
pub fn child(
    req: &VnReq,
    ancestors: &[Ancestor<'_>],
    global: &Registry,
    base_port: u16,
) -> Result<Frame, CoreError> {
    let parent = ancestors.first().expect("a child has a parent").rec;
    let label = parent.label();
    let (depth, port) = check_parent(req, parent, &label, base_port)?;
    let child = narrow(req, parent, &label)?;
    for a in ancestors {
        check_quota(&child, a)?;
    }
    let (registry, nodes) = nest::virtual_substrate(parent, global);
    check_pins(&child, &registry, &nodes, &label)?;
    if !child.allow_revisitation {
        check_bandwidth(&child, &registry, &label)?;
    }
    Ok(Frame {
        req: child,
        port,
        parent: Some(ParentFrame {
            id: parent.vn_id.clone(),
            label,
            depth,
            registry,
            nodes,
        }),
    })
}

/// The caller may use the parent, which can carry children now, at a depth and port that fit.
/// Returns the child's depth and VXLAN port.
fn check_parent(
    req: &VnReq,
    parent: &VnRecord,
    label: &str,
    base_port: u16,
) -> Result<(u32, u16), CoreError> {
    // Another provider's VN that is not shared with the caller does not exist for it: the same
    // answer as an unknown parent, so that existence does not leak.
    if req.provider != *parent.provider() && !parent.req.share_with.contains(&req.provider.0) {
        let name = match &req.parent {
            Some(pref) => format!("{pref} (spec.parent)"),
            None => format!("{label} (spec.parent)"),
        };
        return Err(CoreError::NotFound { name });
    }
    if !parent.req.nestable {
        return Err(CoreError::Precondition(format!(
            "parent {label} is not nestable (create it with nestable: true to carry child VNs)"
        )));
    }
    if parent.status != VnStatus::Ready {
        let why = if parent.reason.is_empty() {
            String::new()
        } else {
            format!(": {}", parent.reason)
        };
        return Err(CoreError::Precondition(format!(
            "parent {label} is {}{why}; children can be created once it is ready",
            parent.status.as_str()
        )));
    }
    let depth = parent.depth() + 1;
    if depth > MAX_DEPTH {
        return Err(CoreError::Precondition(format!(
            "a child of {label} would be at depth {depth}, deeper than the limit of {MAX_DEPTH}"
        )));
    }
    let port = u16::try_from(u32::from(base_port) + depth).map_err(|_| {
        CoreError::Precondition(format!(
            "no VXLAN port for depth {depth} above the base port {base_port}"
        ))
    })?;
    Ok((depth, port))
}

fn list(set: &BTreeSet<String>) -> String {
    format!("[{}]", set.iter().cloned().collect::<Vec<_>>().join(", "))
}

/// The request with the effective attributes it inherits: `share_with` and every attribute may
/// only narrow the parent's, and the request must conform to the result.
fn narrow(req: &VnReq, parent: &VnRecord, label: &str) -> Result<VnReq, CoreError> {
    let mut allowed: BTreeSet<String> = parent.req.share_with.clone();
    allowed.insert(parent.provider().0.clone());
    let extra: BTreeSet<String> = req.share_with.difference(&allowed).cloned().collect();
    if !extra.is_empty() {
        return Err(CoreError::Precondition(format!(
            "spec.share_with: {} widens the parent's {} (owner and share_with of {label}; a child VN may only narrow its parent's attributes)",
            list(&extra),
            list(&allowed)
        )));
    }
    let eff = attributes::inherit(&parent.req.attributes, &req.attributes).map_err(|e| {
        CoreError::Precondition(format!(
            "spec.{e} (of {label}; a child VN may only narrow its parent's attributes)"
        ))
    })?;
    let mut child = req.clone();
    attributes::conform(&mut child, &eff, label).map_err(CoreError::Precondition)?;
    Ok(child)
}

/// The quotas of ancestor `a` (nodes and cpu of it and all its descendants) hold with `child`.
fn check_quota(child: &VnReq, a: &Ancestor<'_>) -> Result<(), CoreError> {
    let at = &a.rec.req.attributes;
    let (nodes, cpu) = (a.nodes, a.cpu);
    if let Some(max) = at.max_nodes
        && nodes.saturating_add(child.nodes.len() as u64) > u64::from(max)
    {
        return Err(CoreError::NoRoom(format!(
            "quota of {}: attributes.max_nodes {max} would be exceeded ({nodes} nodes in it and its descendants, {} more asked)",
            a.rec.label(),
            child.nodes.len()
        )));
    }
    if let Some(max) = at.max_total_cpu
        && cpu.saturating_add(child.total_cpu()) > max
    {
        return Err(CoreError::NoRoom(format!(
            "quota of {}: attributes.max_total_cpu {max} would be exceeded (cpu {cpu} in it and its descendants, {} more asked)",
            a.rec.label(),
            child.total_cpu()
        )));
    }
    Ok(())
}

/// Pins name netns nodes of the parent that can carry the pinned kind, on attached hosts.
fn check_pins(
    child: &VnReq,
    registry: &Registry,
    nodes: &BTreeMap<String, ParentNode>,
    label: &str,
) -> Result<(), CoreError> {
    for (i, n) in child.nodes.iter().enumerate() {
        let Some(pin) = &n.pin else { continue };
        let what = format!("spec.nodes[{i}] ({})", n.name);
        let Some(pn) = nodes.get(pin) else {
            return Err(CoreError::Invalid(format!(
                "{what}: pinned to {pin}, which is not a node of parent {label}"
            )));
        };
        if pn.kind != Kind::Netns {
            return Err(CoreError::Precondition(format!(
                "{what}: pinned to {pin}, a {} node of parent {label}: only netns nodes can carry child nodes",
                pn.kind.as_str()
            )));
        }
        let kinds = &registry.host(pin).expect("listed").kinds;
        if !kinds.contains(&n.kind) {
            return Err(CoreError::Precondition(format!(
                "{what}: parent node {pin} (on host {}) cannot carry {} nodes (it can carry {})",
                pn.host,
                n.kind.as_str(),
                Kinds(kinds)
            )));
        }
        if !registry.is_connected(pin) {
            return Err(CoreError::Precondition(format!(
                "{what}: pinned to {pin}, whose host {} is not attached",
                pn.host
            )));
        }
    }
    Ok(())
}

/// Every link needs at least one hop of the parent (no revisitation): none may exceed its
/// largest link.
fn check_bandwidth(child: &VnReq, registry: &Registry, label: &str) -> Result<(), CoreError> {
    let largest = registry
        .links()
        .iter()
        .filter(|l| registry.link_usable(l))
        .map(|l| l.bandwidth_mbps)
        .max();
    for (i, l) in child.links.iter().enumerate() {
        if largest.is_none_or(|m| l.bandwidth_mbps > m) {
            let what = format!(
                "spec.links[{i}] ({}-{})",
                child.nodes[l.a].name, child.nodes[l.b].name
            );
            return Err(CoreError::NoRoom(match largest {
                Some(m) => format!(
                    "{what}: bandwidth {} Mbit/s exceeds every link of parent {label} (the largest carries {m} Mbit/s)",
                    l.bandwidth_mbps
                ),
                None => format!(
                    "{what}: parent {label} has no link that can carry child links (links need addresses and netns nodes at both ends)"
                ),
            }));
        }
    }
    Ok(())
}
