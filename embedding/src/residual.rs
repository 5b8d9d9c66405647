//! Residual capacities of a substrate, with exact (integer) commit and release of embeddings.
//!
//! A [`Residual`] owns an `Arc` of its immutable [`Substrate`] and one `u64` per host (CPU,
//! memory) and per link (bandwidth). [`Residual::commit`] re-checks the embedding's structure and
//! every capacity before it changes anything (all or nothing) and returns an [`Allocation`]: a
//! token that is neither `Clone` nor constructible outside this module, which
//! [`Residual::release`] consumes. Each token carries a process-unique id and the residual keeps
//! the set of ids it holds, so a token can only be released once, and only into a residual that
//! holds it (the one it was committed to, or a clone taken after the commit). Cloning is cheap
//! (three vectors and the id set), deterministic, and gives an independent snapshot: the
//! controller embeds against a snapshot and commits on its primary state, serialising commits.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use petgraph::graph::{EdgeIndex, NodeIndex};

use crate::mapping::{Embedding, EmbeddingError};
use crate::rejection::Resource;
use crate::request::VnRequest;
use crate::substrate::Substrate;

static NEXT_ALLOCATION: AtomicU64 = AtomicU64::new(1);

/// Why a commit failed. Nothing was changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError {
    /// The embedding does not fit the request or the substrate.
    #[error(transparent)]
    Invalid(#[from] EmbeddingError),
    /// A capacity would be exceeded.
    #[error("not enough {resource} on `{at}`: needs {needed}, {available} available")]
    Capacity {
        /// CPU, memory or bandwidth.
        resource: Resource,
        /// Host id, or `a-b` for a link.
        at: String,
        /// Total demand of this embedding there.
        needed: u64,
        /// Residual capacity there.
        available: u64,
    },
}

/// Why a release failed. Nothing was changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReleaseError {
    /// The allocation is not held by this residual (already released from it, or committed to
    /// another residual).
    #[error("allocation {} is not held by this residual state", .0.id())]
    NotHeld(Allocation),
}

/// Resources held by one committed embedding. Release it with [`Residual::release`].
#[derive(Debug, PartialEq, Eq)]
#[must_use = "an allocation must be kept to release its resources later"]
pub struct Allocation {
    id: u64,
    cpu: Vec<(NodeIndex, u64)>,
    memory: Vec<(NodeIndex, u64)>,
    bandwidth: Vec<(EdgeIndex, u64)>,
}

impl Allocation {
    /// Process-unique id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// CPU held per host (hosts with zero demand omitted).
    pub fn cpu(&self) -> &[(NodeIndex, u64)] {
        &self.cpu
    }

    /// Memory held per host (zero omitted).
    pub fn memory(&self) -> &[(NodeIndex, u64)] {
        &self.memory
    }

    /// Bandwidth held per link (zero omitted).
    pub fn bandwidth(&self) -> &[(EdgeIndex, u64)] {
        &self.bandwidth
    }
}

/// Residual capacities of one substrate.
#[derive(Clone, Debug)]
pub struct Residual {
    substrate: Arc<Substrate>,
    cpu: Vec<u64>,
    memory: Vec<u64>,
    bandwidth: Vec<u64>,
    held: BTreeSet<u64>,
}

impl Residual {
    /// Full capacities of `substrate`.
    pub fn new(substrate: Arc<Substrate>) -> Self {
        let g = substrate.graph();
        Residual {
            cpu: g.node_weights().map(|n| n.cpu).collect(),
            memory: g.node_weights().map(|n| n.memory_mb).collect(),
            bandwidth: g.edge_weights().map(|l| l.bandwidth).collect(),
            held: BTreeSet::new(),
            substrate,
        }
    }

    /// The substrate.
    pub fn substrate(&self) -> &Substrate {
        &self.substrate
    }

    /// The shared substrate handle.
    pub fn substrate_arc(&self) -> &Arc<Substrate> {
        &self.substrate
    }

    /// Residual CPU of host `n`.
    pub fn cpu(&self, n: NodeIndex) -> u64 {
        self.cpu[n.index()]
    }

    /// Residual memory of host `n`.
    pub fn memory(&self, n: NodeIndex) -> u64 {
        self.memory[n.index()]
    }

    /// Residual bandwidth of link `e`.
    pub fn bandwidth(&self, e: EdgeIndex) -> u64 {
        self.bandwidth[e.index()]
    }

    /// Residual CPU of every host, by index.
    pub fn cpus(&self) -> &[u64] {
        &self.cpu
    }

    /// Residual memory of every host, by index.
    pub fn memories(&self) -> &[u64] {
        &self.memory
    }

    /// Residual bandwidth of every link, by index.
    pub fn bandwidths(&self) -> &[u64] {
        &self.bandwidth
    }

    /// Number of allocations currently held.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// True when every capacity is back at the substrate's full capacity.
    pub fn is_full(&self) -> bool {
        let g = self.substrate.graph();
        g.node_weights()
            .zip(self.cpu.iter().zip(&self.memory))
            .all(|(n, (c, m))| n.cpu == *c && n.memory_mb == *m)
            && g.edge_weights()
                .zip(&self.bandwidth)
                .all(|(l, b)| l.bandwidth == *b)
    }

    /// Demands of `embedding` per host and link after checking its structure and capacities.
    fn demands(
        &self,
        request: &VnRequest,
        embedding: &Embedding,
    ) -> Result<Allocation, CommitError> {
        let s = &*self.substrate;
        embedding.validate(s, request)?;
        let mut cpu: Vec<(NodeIndex, u64)> = Vec::new();
        let mut memory: Vec<(NodeIndex, u64)> = Vec::new();
        for (vn, &h) in request.nodes().iter().zip(embedding.nodes()) {
            add(&mut cpu, h, vn.cpu);
            add(&mut memory, h, vn.memory_mb);
        }
        let mut bandwidth: Vec<(EdgeIndex, u64)> = Vec::new();
        for le in embedding.links() {
            for f in le.flows() {
                for &e in &f.edges {
                    add(&mut bandwidth, e, f.bandwidth);
                }
            }
        }
        cpu.retain(|(_, v)| *v > 0);
        memory.retain(|(_, v)| *v > 0);
        bandwidth.retain(|(_, v)| *v > 0);
        cpu.sort_unstable();
        memory.sort_unstable();
        bandwidth.sort_unstable();
        for &(h, need) in &cpu {
            if need > self.cpu[h.index()] {
                return Err(CommitError::Capacity {
                    resource: Resource::Cpu,
                    at: s.node(h).id.clone(),
                    needed: need,
                    available: self.cpu[h.index()],
                });
            }
        }
        for &(h, need) in &memory {
            if need > self.memory[h.index()] {
                return Err(CommitError::Capacity {
                    resource: Resource::Memory,
                    at: s.node(h).id.clone(),
                    needed: need,
                    available: self.memory[h.index()],
                });
            }
        }
        for &(e, need) in &bandwidth {
            if need > self.bandwidth[e.index()] {
                let (a, b) = s.endpoints(e);
                return Err(CommitError::Capacity {
                    resource: Resource::Bandwidth,
                    at: format!("{}-{}", s.node(a).id, s.node(b).id),
                    needed: need,
                    available: self.bandwidth[e.index()],
                });
            }
        }
        Ok(Allocation {
            id: 0,
            cpu,
            memory,
            bandwidth,
        })
    }

    /// Checks that `embedding` of `request` fits now, without changing anything.
    pub fn check(&self, request: &VnRequest, embedding: &Embedding) -> Result<(), CommitError> {
        self.demands(request, embedding).map(|_| ())
    }

    /// Reserves the resources of `embedding` for `request`, all or nothing.
    pub fn commit(
        &mut self,
        request: &VnRequest,
        embedding: &Embedding,
    ) -> Result<Allocation, CommitError> {
        let mut a = self.demands(request, embedding)?;
        for &(h, v) in &a.cpu {
            self.cpu[h.index()] -= v;
        }
        for &(h, v) in &a.memory {
            self.memory[h.index()] -= v;
        }
        for &(e, v) in &a.bandwidth {
            self.bandwidth[e.index()] -= v;
        }
        a.id = NEXT_ALLOCATION.fetch_add(1, Ordering::Relaxed);
        self.held.insert(a.id);
        Ok(a)
    }

    /// Returns the resources of `allocation`.
    pub fn release(&mut self, allocation: Allocation) -> Result<(), ReleaseError> {
        if !self.held.remove(&allocation.id) {
            return Err(ReleaseError::NotHeld(allocation));
        }
        for &(h, v) in &allocation.cpu {
            self.cpu[h.index()] += v;
        }
        for &(h, v) in &allocation.memory {
            self.memory[h.index()] += v;
        }
        for &(e, v) in &allocation.bandwidth {
            self.bandwidth[e.index()] += v;
        }
        Ok(())
    }
}

fn add<K: PartialEq + Copy>(acc: &mut Vec<(K, u64)>, k: K, v: u64) {
    match acc.iter_mut().find(|(x, _)| *x == k) {
        Some((_, s)) => *s += v,
        None => acc.push((k, v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::tests::{line, pair};
    use crate::mapping::{Flow, LinkEmbedding};

    fn n(i: usize) -> NodeIndex {
        NodeIndex::new(i)
    }

    fn embed_pair(s: &Substrate, r: &VnRequest, hosts: Vec<usize>) -> Embedding {
        let hosts: Vec<NodeIndex> = hosts.into_iter().map(n).collect();
        let f = Flow::from_hosts(s, hosts.clone(), r.links()[0].bandwidth).unwrap();
        let ends = vec![hosts[0], *hosts.last().unwrap()];
        Embedding::new(s, r, ends, vec![LinkEmbedding::unsplit(f)]).unwrap()
    }

    #[test]
    fn commit_and_release_are_exact() {
        let s = Arc::new(line());
        let mut res = Residual::new(s.clone());
        let r = pair(6);
        let e = embed_pair(&s, &r, vec![0, 1, 2]);
        let a = res.commit(&r, &e).unwrap();
        assert_eq!(res.cpu(n(0)), 8);
        assert_eq!(res.cpu(n(2)), 7);
        assert_eq!(res.bandwidths(), &[4, 4, 10]);
        // a second identical commit needs 12 bandwidth on a-b where 4 remain
        let err = res.commit(&r, &e).unwrap_err();
        assert!(matches!(
            err,
            CommitError::Capacity {
                resource: Resource::Bandwidth,
                needed: 6,
                available: 4,
                ..
            }
        ));
        assert!(err.to_string().contains("a-b"), "{err}");
        assert_eq!(
            res.bandwidths(),
            &[4, 4, 10],
            "a failed commit changes nothing"
        );
        res.release(a).unwrap();
        assert!(res.is_full());
        assert_eq!(res.held(), 0);
    }

    #[test]
    fn tokens_only_release_where_held() {
        let s = Arc::new(line());
        let mut primary = Residual::new(s.clone());
        let r = pair(1);
        let e = embed_pair(&s, &r, vec![0, 1]);
        let before = primary.commit(&r, &e).unwrap();
        let mut snapshot = primary.clone();
        let on_snapshot = snapshot.commit(&r, &e).unwrap();
        // the snapshot's token is foreign to the primary
        let back = match primary.release(on_snapshot) {
            Err(ReleaseError::NotHeld(a)) => a,
            other => panic!("expected NotHeld, got {other:?}"),
        };
        snapshot.release(back).unwrap();
        // a token committed before the snapshot is held by both
        primary.release(before).unwrap();
        assert!(primary.is_full());
    }

    #[test]
    fn no_drift_over_many_cycles() {
        let s = Arc::new(line());
        let mut res = Residual::new(s.clone());
        let r = pair(3);
        let e1 = embed_pair(&s, &r, vec![0, 1, 2, 3]);
        let e2 = embed_pair(&s, &r, vec![3, 2]);
        let mut held = std::collections::VecDeque::new();
        for i in 0..1_000_000u32 {
            let e = if i % 2 == 0 { &e1 } else { &e2 };
            match res.commit(&r, e) {
                Ok(a) => held.push_back(a),
                Err(_) => res.release(held.pop_front().unwrap()).unwrap(),
            }
            if i % 7 == 0
                && let Some(a) = held.pop_front()
            {
                res.release(a).unwrap();
            }
        }
        for a in held {
            res.release(a).unwrap();
        }
        assert!(res.is_full());
    }
}
