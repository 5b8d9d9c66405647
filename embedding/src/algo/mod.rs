//! The embedding algorithms and the building blocks they share.
//!
//! Every algorithm works on dense indices: substrate hosts `0..n`, links `0..m`, virtual nodes
//! `0..k`. [`Work`] is a private copy of the residual capacities that an algorithm consumes while
//! it builds one embedding, so a failed attempt never touches the caller's state.

pub mod grc;
pub mod lace;
pub mod mip;
pub mod noderank;
pub mod paths;

use petgraph::graph::{EdgeIndex, NodeIndex};

use crate::mapping::{Embedding, Flow, LinkEmbedding, check_node_constraints};
use crate::rejection::{Rejection, Resource};
use crate::request::VnRequest;
use crate::residual::Residual;
use crate::substrate::Substrate;

/// Hosts that satisfy the static constraints of every virtual node (kind, pin, candidates,
/// location) and currently have the node's CPU and memory free, or a rejection naming the node
/// and what is lacking. Also rejects a request with more nodes than hosts when revisitation is
/// off.
pub fn candidate_hosts(
    residual: &Residual,
    request: &VnRequest,
) -> Result<Vec<Vec<NodeIndex>>, Rejection> {
    let s = residual.substrate();
    if s.is_empty() {
        return Err(Rejection::Infeasible {
            resource: Resource::Cpu,
            reason: "the substrate has no node".into(),
        });
    }
    if !request.options().allow_revisitation && request.nodes().len() > s.node_count() {
        return Err(Rejection::Infeasible {
            resource: Resource::DistinctHosts,
            reason: format!(
                "{} virtual nodes need distinct hosts but the substrate has {} nodes",
                request.nodes().len(),
                s.node_count()
            ),
        });
    }
    request
        .nodes()
        .iter()
        .map(|vn| {
            let mut static_ok = 0usize;
            let mut first_static_reason: Option<String> = None;
            let mut best_cpu: Option<(u64, NodeIndex)> = None;
            let mut best_mem: Option<(u64, NodeIndex)> = None;
            let mut out = Vec::new();
            for h in s.node_indices() {
                if let Err(why) = check_node_constraints(vn, s.node(h)) {
                    first_static_reason.get_or_insert(why);
                    continue;
                }
                static_ok += 1;
                let (c, m) = (residual.cpu(h), residual.memory(h));
                if best_cpu.is_none_or(|(b, _)| c > b) {
                    best_cpu = Some((c, h));
                }
                if c >= vn.cpu && best_mem.is_none_or(|(b, _)| m > b) {
                    best_mem = Some((m, h));
                }
                if c >= vn.cpu && m >= vn.memory_mb {
                    out.push(h);
                }
            }
            if !out.is_empty() {
                return Ok(out);
            }
            let (resource, reason) = if static_ok == 0 {
                let why = first_static_reason.unwrap_or_default();
                let resource = if vn.pinned_host.is_some() || vn.candidates.is_some() {
                    Resource::Host
                } else if vn.location.is_some() && why.contains("location") {
                    Resource::Location
                } else {
                    Resource::NodeKind
                };
                (resource, format!("no host satisfies its constraints ({why})"))
            } else if best_cpu.is_some_and(|(c, _)| c < vn.cpu) {
                let (c, h) = best_cpu.expect("checked");
                (
                    Resource::Cpu,
                    format!(
                        "needs {} cpu, the most any eligible host has free is {c} (on `{}`)",
                        vn.cpu,
                        s.node(h).id
                    ),
                )
            } else {
                let (m, h) = best_mem.unwrap_or((0, NodeIndex::new(0)));
                (
                    Resource::Memory,
                    format!(
                        "needs {} MiB of memory, the most any eligible host with enough cpu has free is {m} (on `{}`)",
                        vn.memory_mb,
                        s.node(h).id
                    ),
                )
            };
            Err(Rejection::Node {
                node: vn.id.clone(),
                resource,
                reason,
            })
        })
        .collect()
}

/// The candidate lists of [`candidate_hosts`] as a matrix: `allowed[v][h]` is true when host `h`
/// is a candidate for virtual node `v` (`host_count` hosts).
pub(crate) fn allowed_matrix(host_count: usize, cands: &[Vec<NodeIndex>]) -> Vec<Vec<bool>> {
    let mut allowed = vec![vec![false; host_count]; cands.len()];
    for (row, c) in allowed.iter_mut().zip(cands) {
        for h in c {
            row[h.index()] = true;
        }
    }
    allowed
}

/// A private copy of residual capacities consumed while one embedding is built.
#[derive(Clone, Debug)]
pub struct Work {
    /// Residual CPU per host.
    pub cpu: Vec<u64>,
    /// Residual memory per host.
    pub memory: Vec<u64>,
    /// Residual bandwidth per link.
    pub bandwidth: Vec<u64>,
    /// Number of this request's virtual nodes on each host.
    pub hosted: Vec<u32>,
}

impl Work {
    /// A copy of `residual`'s capacities.
    pub fn new(residual: &Residual) -> Self {
        Work {
            cpu: residual.cpus().to_vec(),
            memory: residual.memories().to_vec(),
            bandwidth: residual.bandwidths().to_vec(),
            hosted: vec![0; residual.cpus().len()],
        }
    }

    /// True when virtual node `i` of `request` can go on `h` now (capacity and revisitation;
    /// static constraints are the caller's business, see [`candidate_hosts`]).
    pub fn fits(&self, request: &VnRequest, i: usize, h: NodeIndex) -> bool {
        let vn = &request.nodes()[i];
        let k = h.index();
        self.cpu[k] >= vn.cpu
            && self.memory[k] >= vn.memory_mb
            && (self.hosted[k] == 0 || request.options().allow_revisitation)
            && self.below_cap(request, k)
    }

    /// True when host `k` holds fewer of the request's nodes than `max_nodes_per_host`.
    fn below_cap(&self, request: &VnRequest, k: usize) -> bool {
        request
            .options()
            .max_nodes_per_host
            .is_none_or(|cap| self.hosted[k] < cap)
    }

    /// Why virtual node `i` fits on none of its `eligible` hosts now, counting per host the first
    /// thing that excludes it: CPU, then memory left after this request's nodes placed so far,
    /// then (revisitation off) another node of this request already there. The resource named
    /// is [`Resource::DistinctHosts`] when any host is excluded only by that, else whichever of
    /// CPU and memory excludes more hosts.
    pub fn no_host_for(
        &self,
        request: &VnRequest,
        i: usize,
        eligible: impl IntoIterator<Item = NodeIndex>,
    ) -> Rejection {
        let vn = &request.nodes()[i];
        let (mut total, mut cpu, mut memory, mut taken) = (0usize, 0usize, 0usize, 0usize);
        let mut full = 0usize;
        for h in eligible {
            let k = h.index();
            total += 1;
            if self.cpu[k] < vn.cpu {
                cpu += 1;
            } else if self.memory[k] < vn.memory_mb {
                memory += 1;
            } else if self.hosted[k] > 0 && !request.options().allow_revisitation {
                taken += 1;
            } else if !self.below_cap(request, k) {
                full += 1;
            }
        }
        let resource = if taken > 0 {
            Resource::DistinctHosts
        } else if full > 0 {
            Resource::NodesPerHost
        } else if memory > cpu {
            Resource::Memory
        } else {
            Resource::Cpu
        };
        let mut parts = vec![
            format!("{cpu} lack {} CPU", vn.cpu),
            format!("{memory} lack {} MiB of memory", vn.memory_mb),
        ];
        if !request.options().allow_revisitation {
            parts.push(format!(
                "{taken} already hold another node of this request (revisitation is off)"
            ));
        }
        if let Some(cap) = request.options().max_nodes_per_host {
            parts.push(format!(
                "{full} already hold {cap} nodes of this request (max_nodes_per_host)"
            ));
        }
        Rejection::Node {
            node: vn.id.clone(),
            resource,
            reason: format!(
                "of {total} eligible hosts, once this request's other nodes are placed: {}",
                parts.join(", ")
            ),
        }
    }

    /// Places virtual node `i` on `h` (caller checked [`Work::fits`]).
    pub fn place(&mut self, request: &VnRequest, i: usize, h: NodeIndex) {
        let vn = &request.nodes()[i];
        let k = h.index();
        self.cpu[k] -= vn.cpu;
        self.memory[k] -= vn.memory_mb;
        self.hosted[k] += 1;
    }

    /// Reserves `bw` on every link of `edges` (caller checked the residuals).
    pub fn route(&mut self, edges: &[EdgeIndex], bw: u64) {
        for e in edges {
            self.bandwidth[e.index()] -= bw;
        }
    }

    /// Undoes [`Work::place`] of virtual node `i` on `h`.
    pub fn unplace(&mut self, request: &VnRequest, i: usize, h: NodeIndex) {
        let vn = &request.nodes()[i];
        let k = h.index();
        self.cpu[k] += vn.cpu;
        self.memory[k] += vn.memory_mb;
        self.hosted[k] -= 1;
    }

    /// Undoes [`Work::route`] of `bw` on `edges`.
    pub fn unroute(&mut self, edges: &[EdgeIndex], bw: u64) {
        for e in edges {
            self.bandwidth[e.index()] += bw;
        }
    }
}

/// Builds the [`Embedding`] from unsplit paths; a structural error here is a bug in the
/// algorithm and is reported as [`Rejection::Solver`].
pub fn assemble(
    substrate: &Substrate,
    request: &VnRequest,
    hosts: Vec<NodeIndex>,
    paths: Vec<(Vec<NodeIndex>, Vec<EdgeIndex>)>,
) -> Result<Embedding, Rejection> {
    let links = paths
        .into_iter()
        .zip(request.links())
        .map(|((h, e), vl)| LinkEmbedding::unsplit(Flow::new(h, e, vl.bandwidth)))
        .collect();
    Embedding::new(substrate, request, hosts, links)
        .map_err(|e| Rejection::Solver(format!("internal: invalid embedding built: {e}")))
}

/// The rejection for a virtual link that found no path between the hosts chosen for its ends.
pub fn no_path(
    substrate: &Substrate,
    request: &VnRequest,
    l: usize,
    from: NodeIndex,
    to: NodeIndex,
    resource: Resource,
) -> Rejection {
    let vl = &request.links()[l];
    Rejection::Link {
        link: request.link_name(l),
        bandwidth: vl.bandwidth,
        resource,
        reason: match resource {
            _ if from == to => format!(
                "no host that fits the other end is reachable from `{}` over links with {} bandwidth free{}",
                substrate.node(from).id,
                vl.bandwidth,
                match request.options().max_path_hops {
                    Some(m) if resource == Resource::Hops => format!(" within {m} hops"),
                    _ => String::new(),
                }
            ),
            Resource::Delay => format!(
                "no path with {} bandwidth free and a delay of at most {} us between `{}` and `{}`",
                vl.bandwidth,
                vl.max_delay_us.unwrap_or(0),
                substrate.node(from).id,
                substrate.node(to).id
            ),
            Resource::Hops => format!(
                "no path of at most {} hops with enough bandwidth between `{}` and `{}`",
                request.options().max_path_hops.unwrap_or(0),
                substrate.node(from).id,
                substrate.node(to).id
            ),
            _ => format!(
                "no path with {} bandwidth free between `{}` and `{}`",
                vl.bandwidth,
                substrate.node(from).id,
                substrate.node(to).id
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::algo::grc::Grc;
    use crate::algo::lace::Lace;
    use crate::algo::noderank::{RwBfs, RwMaxMatch};
    use crate::embedder::Embedder;
    use crate::mapping::tests::line;
    use crate::rejection::{Rejection, Resource};
    use crate::request::{RequestOptions, VirtualNode, VnRequest};
    use crate::residual::Residual;

    /// `x` pinned to host a, `y` allowed only on a: `y` finds no host once `x` is placed.
    fn crowded(cpu: u64, revisit: bool) -> VnRequest {
        let mut r =
            VnRequest::new("r").with_options(RequestOptions::default().with_revisitation(revisit));
        r.add_node(VirtualNode::new("x", cpu).pinned_to("a"))
            .unwrap();
        r.add_node(VirtualNode::new("y", cpu).with_candidates(["a"]))
            .unwrap();
        r
    }

    fn heuristics() -> Vec<Box<dyn Embedder>> {
        vec![
            Box::new(Grc::default()),
            Box::new(RwMaxMatch::default()),
            Box::new(RwBfs::default()),
            Box::new(Lace::default()),
        ]
    }

    #[test]
    fn a_node_left_without_capacity_is_blamed_on_cpu_not_on_distinct_hosts() {
        let res = Residual::new(Arc::new(line()));
        for algo in heuristics() {
            let err = algo.embed(&res, &crowded(6, true)).unwrap_err();
            match &err {
                Rejection::Node {
                    node,
                    resource: Resource::Cpu,
                    reason,
                } if node == "y" => {
                    assert!(reason.contains("1 lack 6 CPU"), "{}: {err}", algo.name());
                    assert!(!reason.contains("revisitation"), "{}: {err}", algo.name());
                }
                _ => panic!("{}: {err}", algo.name()),
            }
        }
    }

    #[test]
    fn a_node_left_without_a_free_host_is_blamed_on_distinct_hosts() {
        let res = Residual::new(Arc::new(line()));
        for algo in heuristics() {
            let err = algo.embed(&res, &crowded(1, false)).unwrap_err();
            match &err {
                Rejection::Node {
                    node,
                    resource: Resource::DistinctHosts,
                    reason,
                } if node == "y" => assert!(
                    reason.contains("1 already hold another node of this request"),
                    "{}: {err}",
                    algo.name()
                ),
                _ => panic!("{}: {err}", algo.name()),
            }
        }
        // With revisitation both fit on a.
        for algo in heuristics() {
            let e = algo.embed(&res, &crowded(1, true)).unwrap();
            assert_eq!(e.host(0), e.host(1), "{}", algo.name());
        }
    }
}
