//! What the controller needs of a durable store, whatever keeps the bytes: load everything at
//! start, then write each [`Change`] (and the hosts' records) atomically, in order. Records are
//! JSON ([`encode`], [`decode`]) in every store, so that a backend only moves bytes.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::alloc::Cursors;
use crate::index::Change;
use crate::record::VnRecord;
use crate::substrate::HostInfo;

/// The error of a store backend, kept whole as the cause.
pub type BackendError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create state directory {path}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The backend failed; `location` names the store (a file, an endpoint).
    #[error("store {location}")]
    Backend {
        location: String,
        #[source]
        source: BackendError,
    },
    #[error("store record {key} is corrupt")]
    Decode {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("store schema {found:?} is not the supported {supported:?}")]
    Schema { found: String, supported: String },
}

/// Everything a store holds.
#[derive(Debug, Default)]
pub struct Loaded {
    pub records: Vec<VnRecord>,
    pub hosts: Vec<HostInfo>,
    pub generations: BTreeMap<String, u64>,
    pub cursors: Cursors,
}

/// A durable store of the controller's state.
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Everything stored.
    fn load(&self) -> Result<Loaded, StoreError>;

    /// Writes several changes (in order) and host records in one atomic transaction; without
    /// `durable`, the write may become durable only with the next durable one.
    fn apply_all(
        &self,
        changes: &[&Change],
        hosts: &[&HostInfo],
        durable: bool,
    ) -> Result<(), StoreError>;

    /// Writes one change in one durable transaction.
    fn apply(&self, change: &Change) -> Result<(), StoreError> {
        self.apply_all(&[change], &[], true)
    }
}

/// Whether a change writes nothing to a store (events and hosts to notify are not stored).
pub fn writes_nothing(c: &Change) -> bool {
    c.upserts.is_empty() && c.removed.is_empty() && c.generations.is_empty() && c.cursors.is_none()
}

/// A stored value as JSON.
pub fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("records serialise")
}

/// A stored value from JSON; `key` names it in the error.
pub fn decode<T: serde::de::DeserializeOwned>(key: &str, b: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(b).map_err(|source| StoreError::Decode {
        key: key.to_string(),
        source,
    })
}
