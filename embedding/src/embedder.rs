//! The algorithm interface and the registry of algorithms by name.

use crate::algo;
use crate::mapping::Embedding;
use crate::rejection::Rejection;
use crate::request::VnRequest;
use crate::residual::Residual;

/// A virtual network embedding algorithm.
///
/// `embed` is a pure function of the residual state and the request: it never changes the
/// residual (commit the result with [`Residual::commit`]) and is deterministic. Implementations are
/// `Send + Sync` and keep no state between calls, so one instance can serve many threads.
pub trait Embedder: Send + Sync {
    /// Registry name (`grc`, `mip`, ...).
    fn name(&self) -> &str;

    /// Embeds `request` on the residual capacities of `residual`, honouring the request's
    /// options, or says why not.
    fn embed(&self, residual: &Residual, request: &VnRequest) -> Result<Embedding, Rejection>;
}

/// A boxed algorithm as returned by [`by_name`].
pub type BoxedEmbedder = Box<dyn Embedder + Send + Sync>;

/// Name of the algorithm used when none is given (the flagship).
pub const DEFAULT_ALGORITHM: &str = "lace";

/// One registry entry: name and one-line description.
#[derive(Clone, Copy, Debug)]
pub struct AlgorithmInfo {
    /// Registry name.
    pub name: &'static str,
    /// What it is, with the paper it follows.
    pub summary: &'static str,
}

/// Every registered algorithm, in display order.
pub const ALGORITHMS: &[AlgorithmInfo] = &[
    AlgorithmInfo {
        name: "lace",
        summary: "LACE: coordinated node+link beam search with load-balanced shortest paths (ours, the flagship)",
    },
    AlgorithmInfo {
        name: "grc",
        summary: "GRC node ranking + first feasible of the 10 shortest paths, as in Virne (Gong et al., INFOCOM 2014)",
    },
    AlgorithmInfo {
        name: "rw-maxmatch",
        summary: "NodeRank random-walk ranking, greedy max-match + k-shortest paths (Cheng et al., CCR 2011)",
    },
    AlgorithmInfo {
        name: "rw-bfs",
        summary: "NodeRank, BFS-order node+link mapping with backtracking (Cheng et al., CCR 2011)",
    },
    AlgorithmInfo {
        name: "mip",
        summary: "exact node-link MIP, unsplittable, CBC, LACE cutoff, 2 s limit (Melo et al., TNSM 2013)",
    },
    AlgorithmInfo {
        name: "mip-split",
        summary: "exact node-link MIP with path splitting when the request allows it (Melo et al., TNSM 2013)",
    },
    AlgorithmInfo {
        name: "grc-feasible",
        summary: "GRC node ranking + shortest path on the bandwidth-feasible graph",
    },
];

/// Names of every registered algorithm.
pub fn algorithm_names() -> Vec<&'static str> {
    ALGORITHMS.iter().map(|a| a.name).collect()
}

/// The algorithm called `name` with its default parameters.
pub fn by_name(name: &str) -> Option<BoxedEmbedder> {
    Some(match name {
        "lace" => Box::new(algo::lace::Lace::default()),
        "grc" => Box::new(algo::grc::Grc::default()),
        "rw-maxmatch" => Box::new(algo::noderank::RwMaxMatch::default()),
        "rw-bfs" => Box::new(algo::noderank::RwBfs::default()),
        "mip" => Box::new(algo::mip::Mip::default()),
        "mip-split" => Box::new(algo::mip::Mip::splittable()),
        "grc-feasible" => Box::new(algo::grc::Grc {
            links: algo::grc::LinkStrategy::Feasible,
            ..algo::grc::Grc::default()
        }),
        _ => return None,
    })
}

/// Embeds `request` with `algo`, honouring [`crate::RequestOptions::spread`]: as few nodes per
/// host as the hosts allow. With spreading on, tries `max_nodes_per_host` = ceil(nodes / hosts),
/// then one more, and so on up to the request's own bound (or the node count), and returns the
/// first embedding found; the rejection of the last attempt otherwise. Without spreading, one
/// call of `algo`. `O(nodes)` calls of the algorithm at worst.
pub fn embed_spread(
    algo: &dyn Embedder,
    residual: &Residual,
    request: &VnRequest,
) -> Result<Embedding, Rejection> {
    let opts = request.options();
    let n = request.nodes().len() as u32;
    let hosts = residual.substrate().node_count() as u32;
    if !opts.spread || n <= 1 || hosts == 0 || !opts.allow_revisitation {
        return algo.embed(residual, request);
    }
    let upper = opts.max_nodes_per_host.unwrap_or(n).min(n);
    let mut last = None;
    for cap in n.div_ceil(hosts).min(upper)..=upper {
        match algo.embed(residual, &request.with_nodes_per_host(cap)) {
            Ok(e) => return Ok(e),
            Err(r) => last = Some(r),
        }
    }
    Err(last.expect("at least one attempt"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_name_resolves() {
        for info in ALGORITHMS {
            let e = by_name(info.name).unwrap_or_else(|| panic!("{} not constructible", info.name));
            assert_eq!(e.name(), info.name);
        }
        assert!(by_name(DEFAULT_ALGORITHM).is_some());
        assert!(by_name("no-such-algorithm").is_none());
    }
}
