//! The errors of core operations; each variant says which kind of refusal it is, so that the
//! gRPC edge can answer with the right status code.

use crate::alloc::AllocError;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CoreError {
    #[error("VN {name} already exists (provider {provider})")]
    AlreadyExists { provider: String, name: String },
    #[error("VN {name} not found")]
    NotFound { name: String },
    /// The substrate cannot host the request (capacity or identifiers).
    #[error("{0}")]
    Exhausted(String),
    #[error("inconsistent store: {0}")]
    Restore(String),
    /// A state of things (a parent's, an attribute it imposes) does not allow the request.
    #[error("{0}")]
    Precondition(String),
    /// The caller may not do this (create a child of a VN not shared with it).
    #[error("{0}")]
    Permission(String),
    /// The request names something that does not exist (a child pinned to no parent node).
    #[error("{0}")]
    Invalid(String),
    /// A quota or a fixed capacity makes the request impossible (embedding again cannot help).
    #[error("{0}")]
    NoRoom(String),
    /// The VN changed since the caller read it (optimistic concurrency): read it again.
    #[error("{0}")]
    Conflict(String),
}

impl From<AllocError> for CoreError {
    fn from(e: AllocError) -> Self {
        CoreError::Exhausted(e.to_string())
    }
}
