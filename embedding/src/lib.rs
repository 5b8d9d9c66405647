//! Virtual network embedding (placeholder until the crate lands).
