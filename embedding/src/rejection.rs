//! Why an algorithm did not embed a request: typed (which resource, which virtual node or link)
//! and printable for a user.

use serde::Serialize;

/// The resource or constraint that made a request fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Resource {
    /// CPU capacity of substrate nodes.
    Cpu,
    /// Memory capacity of substrate nodes.
    Memory,
    /// Bandwidth of substrate links.
    Bandwidth,
    /// No host supports the node kind.
    NodeKind,
    /// No host carries the location label.
    Location,
    /// The pinned host or candidate set.
    Host,
    /// The path length limit.
    Hops,
    /// Not enough distinct hosts (revisitation not allowed).
    DistinctHosts,
    /// Computation time.
    Time,
    /// The path delay bound of a link (`max_delay_us`).
    Delay,
    /// The bound on nodes per host (`max_nodes_per_host`, spreading).
    NodesPerHost,
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Resource::Cpu => "cpu",
            Resource::Memory => "memory",
            Resource::Bandwidth => "bandwidth",
            Resource::NodeKind => "node kind",
            Resource::Location => "location",
            Resource::Host => "host constraint",
            Resource::Hops => "path hops",
            Resource::Delay => "path delay",
            Resource::NodesPerHost => "nodes per host",
            Resource::DistinctHosts => "distinct hosts",
            Resource::Time => "time",
        })
    }
}

/// Why a request was not embedded.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// A virtual node fits on no substrate node.
    #[error("virtual node `{node}` fits on no substrate node ({resource}): {reason}")]
    Node {
        /// Virtual node id.
        node: String,
        /// What is lacking.
        resource: Resource,
        /// Details for a person.
        reason: String,
    },
    /// A virtual link found no feasible substrate path for the node placement(s) tried.
    #[error(
        "virtual link `{link}` ({bandwidth} bandwidth) has no feasible substrate path ({resource}): {reason}"
    )]
    Link {
        /// Virtual link as `u-v` with node ids.
        link: String,
        /// Its bandwidth demand.
        bandwidth: u64,
        /// What is lacking.
        resource: Resource,
        /// Details for a person.
        reason: String,
    },
    /// The request as a whole does not fit (no single node or link to blame).
    #[error("the request does not fit ({resource}): {reason}")]
    Infeasible {
        /// The main resource at fault.
        resource: Resource,
        /// Details for a person.
        reason: String,
    },
    /// The time limit was reached without a feasible embedding.
    #[error("no embedding found within the time limit of {limit_ms} ms")]
    TimeLimit {
        /// The limit.
        limit_ms: u64,
    },
    /// An internal solver failure (not a property of the request).
    #[error("the solver failed: {0}")]
    Solver(String),
}

impl Rejection {
    /// The resource at fault, when there is one.
    pub fn resource(&self) -> Option<Resource> {
        match self {
            Rejection::Node { resource, .. }
            | Rejection::Link { resource, .. }
            | Rejection::Infeasible { resource, .. } => Some(*resource),
            Rejection::TimeLimit { .. } => Some(Resource::Time),
            Rejection::Solver(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_culprit() {
        let r = Rejection::Node {
            node: "web".into(),
            resource: Resource::Cpu,
            reason: "needs 30, the largest residual is 20 (on h3)".into(),
        };
        let m = r.to_string();
        assert!(
            m.contains("`web`") && m.contains("cpu") && m.contains("h3"),
            "{m}"
        );
        assert_eq!(r.resource(), Some(Resource::Cpu));
    }
}
