//! Virtual network embedding (VNE): the substrate and request model, exact residual accounting,
//! the embedding algorithms, an exact MIP reference, and an online simulator.
//!
//! The crate is pure: no async, no I/O except serde (trace and decision-log formats).
//!
//! - Model: [`Substrate`], [`VnRequest`] (+ [`RequestOptions`]); the result [`Embedding`] and its
//!   storable form [`Placement`]; [`Rejection`] says why not.
//! - State: [`Residual`], exact `u64` capacities with all-or-nothing [`Residual::commit`] and
//!   token-consuming [`Residual::release`].
//! - Algorithms, behind [`Embedder`] and the registry [`by_name`] / [`ALGORITHMS`]:
//!   [`algo::lace`] (LACE, the flagship and [`DEFAULT_ALGORITHM`]), [`algo::grc`] (GRC, the
//!   baseline), [`algo::noderank`] (RW-MaxMatch, RW-BFS), [`algo::mip`] (the exact MIP). Each
//!   module documents its input, output, complexity and the paper it follows.
//! - Workloads: [`trace`] (the shared JSON format), [`generator`] (Waxman workloads),
//!   [`sim`] (the online simulator and its decision log, as the referee `check_embedding.py`
//!   reads it).
//!
//! ```
//! use std::sync::Arc;
//! use embedding::{Residual, Substrate, SubstrateLink, SubstrateNode, VirtualNode, VnRequest};
//!
//! let mut s = Substrate::new();
//! s.add_node(SubstrateNode::new("h1", 100))?;
//! s.add_node(SubstrateNode::new("h2", 100))?;
//! s.add_link("h1", "h2", SubstrateLink::new(1000))?;
//! let mut residual = Residual::new(Arc::new(s));
//!
//! let mut vn = VnRequest::new("demo");
//! vn.add_node(VirtualNode::new("a", 10))?;
//! vn.add_node(VirtualNode::new("b", 10))?;
//! vn.add_link("a", "b", 100)?;
//!
//! let algo = embedding::by_name(embedding::DEFAULT_ALGORITHM).expect("registered");
//! let emb = algo.embed(&residual, &vn)?;            // pure: residual unchanged
//! let token = residual.commit(&vn, &emb)?;          // re-checks every capacity
//! assert_eq!(residual.substrate().total_cpu() - residual.cpus().iter().sum::<u64>(), 20);
//! residual.release(token)?;                         // consumes the token
//! assert!(residual.is_full());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod algo;
pub mod embedder;
pub mod generator;
pub mod mapping;
pub mod rejection;
pub mod request;
pub mod residual;
pub mod sim;
pub mod substrate;
pub mod trace;

pub use embedder::{
    ALGORITHMS, AlgorithmInfo, BoxedEmbedder, DEFAULT_ALGORITHM, Embedder, algorithm_names,
    by_name, embed_spread,
};
pub use generator::{GeneratorError, WaxmanConfig, generate};
pub use mapping::{
    Embedding, EmbeddingError, Flow, FlowPlacement, LinkEmbedding, LinkPlacement, Placement,
};
pub use rejection::{Rejection, Resource};
pub use request::{RequestError, RequestOptions, VirtualLink, VirtualNode, VnRequest};
pub use residual::{Allocation, CommitError, ReleaseError, Residual};
pub use sim::{Decision, SimReport, decision_json, simulate};
pub use substrate::{NodeKind, Substrate, SubstrateError, SubstrateLink, SubstrateNode};
pub use trace::{
    TimedRequest, Trace, TraceError, parse_request, parse_substrate, parse_trace, trace_json,
};

#[cfg(test)]
mod tests {
    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn public_state_is_send_and_sync() {
        assert_send_sync::<crate::Residual>();
        assert_send_sync::<crate::Substrate>();
        assert_send_sync::<crate::VnRequest>();
        assert_send_sync::<crate::Embedding>();
        assert_send_sync::<crate::Allocation>();
        assert_send_sync::<crate::BoxedEmbedder>();
    }
}
