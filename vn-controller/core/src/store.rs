//! What the controller needs of a durable store, whatever keeps the bytes: load everything at
//! start, then write each [`Change`] (and the hosts' records) atomically, in order. Records are
//! JSON ([`encode`], [`decode`]) in every store, so that a backend only moves bytes.
//!
//! Events are stored too, each under its sequence number ([`Seq`]) in the transaction of the
//! change that made it, so a watcher can resume after the last one it saw, on this controller
//! after a restart or on another replica after a failover, without losing or repeating any.
//! Sequence numbers are `epoch << 32 | n`: each start (or takeover) of a writer begins a new
//! epoch, so an event lost with a commit that was not yet durable never has its number reused.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::alloc::Cursors;
use crate::index::{Change, Event};
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

/// An event's sequence number: `epoch << 32 | n`, growing in persistence order.
pub type Seq = u64;

/// Events kept for watchers that resume; older ones are trimmed (such a watcher gets a snapshot).
pub const EVENTS_KEPT: u64 = 20_000;

/// The first sequence number of `epoch`.
pub fn epoch_start(epoch: u64) -> Seq {
    epoch << 32
}

/// An event with its sequence number, as stored and published.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoredEvent {
    pub seq: Seq,
    pub event: Event,
}

/// Everything a store holds.
#[derive(Debug, Default)]
pub struct Loaded {
    pub records: Vec<VnRecord>,
    pub hosts: Vec<HostInfo>,
    pub generations: BTreeMap<String, u64>,
    pub cursors: Cursors,
    /// The writer epoch stored last (0: none yet).
    pub epoch: u64,
    /// The last stored event's sequence number (0: none).
    pub last_seq: Seq,
}

/// A durable store of the controller's state.
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Everything stored.
    fn load(&self) -> Result<Loaded, StoreError>;

    /// Writes several changes (in order), each with its events (numbered), and host records.
    /// A change and its events are stored together or not at all, changes in order; a store
    /// that cannot write the whole batch atomically may store a prefix of it. Without
    /// `durable`, the write may become durable only with the next durable one.
    fn apply_all(
        &self,
        changes: &[(&Change, &[StoredEvent])],
        hosts: &[&HostInfo],
        durable: bool,
    ) -> Result<(), StoreError>;

    /// Writes one change in one durable transaction (its events unnumbered, not stored).
    fn apply(&self, change: &Change) -> Result<(), StoreError> {
        self.apply_all(&[(change, &[])], &[], true)
    }

    /// Durably records that a writer starts epoch `epoch` (greater than every stored one).
    fn begin_epoch(&self, epoch: u64) -> Result<(), StoreError>;

    /// Stored events with a sequence number above `after`, oldest first, at most `limit`.
    /// The boolean says whether events after `after` were trimmed already (a gap).
    fn events_after(
        &self,
        after: Seq,
        limit: usize,
    ) -> Result<(Vec<StoredEvent>, bool), StoreError>;

    /// Every stored event above `after` up to `upto`, oldest first, read a page at a time;
    /// `None` when some of them were trimmed already.
    fn events_between(
        &self,
        after: Seq,
        upto: Seq,
    ) -> Result<Option<Vec<StoredEvent>>, StoreError> {
        const PAGE: usize = 1000;
        let mut out: Vec<StoredEvent> = Vec::new();
        loop {
            let from = out.last().map_or(after, |e| e.seq);
            if from >= upto {
                return Ok(Some(out));
            }
            let (page, gap) = self.events_after(from, PAGE)?;
            if gap {
                return Ok(None);
            }
            let full = page.len() == PAGE;
            out.extend(page.into_iter().take_while(|e| e.seq <= upto));
            if !full {
                return Ok(Some(out));
            }
        }
    }
}

/// Whether a change writes nothing to a store (events and hosts to notify are not stored).
/// One write of a change, for a store to map onto its own keys or tables.
#[derive(Debug, PartialEq)]
pub enum Write<'a> {
    /// A VN record (encoded), or its removal.
    Vn(&'a str, Option<Vec<u8>>),
    /// A host's generation.
    Generation(&'a str, u64),
    /// The identifier cursors (encoded).
    Cursors(Vec<u8>),
}

/// What `c` writes, in order: upserted and removed VN records, generations, cursors.
pub fn writes(c: &Change) -> impl Iterator<Item = Write<'_>> {
    let upserts = c
        .upserts
        .iter()
        .map(|(id, rec)| Write::Vn(id.as_str(), Some(encode(rec))));
    let removed = c.removed.iter().map(|id| Write::Vn(id.as_str(), None));
    let generations = c
        .generations
        .iter()
        .map(|(h, g)| Write::Generation(h.as_str(), *g));
    let cursors = c.cursors.iter().map(|k| Write::Cursors(encode(k)));
    upserts.chain(removed).chain(generations).chain(cursors)
}

pub fn writes_nothing(c: &Change) -> bool {
    c.upserts.is_empty() && c.removed.is_empty() && c.generations.is_empty() && c.cursors.is_none()
}

/// Whether a batch for [`Store::apply_all`] writes nothing: no host record, no write, no event.
pub fn batch_is_empty(changes: &[(&Change, &[StoredEvent])], hosts: &[&HostInfo]) -> bool {
    hosts.is_empty()
        && changes
            .iter()
            .all(|(c, e)| e.is_empty() && writes_nothing(c))
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
