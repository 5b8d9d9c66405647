//! The store writer: one thread that persists changes in the order they were made, groups the
//! changes queued behind a running commit into one transaction (group commit: one fsync for many
//! creates), and only then publishes their desired states and events.
//!
//! Changes are sent while the index lock is held, so the queue order is the order of the
//! in-memory changes; the lock is released before the fsync, so embeddings and reads go on
//! meanwhile. Changes that only record one host's progress are committed without an fsync of
//! their own (redb `Durability::None`): they become durable with the next durable commit, and
//! losing them in a crash only means agents report them again. VN state changes (accepted,
//! ready, degraded, failed, deleted) are durable before they are published.
//!
//! The writer numbers events (`epoch << 32 | n`) and stores them with their change, so that a
//! watcher can resume after the last number it saw.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use tokio::sync::{broadcast, watch};

use crate::core::desired::DesiredSnapshot;
use crate::core::index::{Change, Event};
use crate::core::substrate::HostInfo;
use crate::store::{Seq, Store, StoredEvent};

use super::metrics::Metrics;

/// Largest number of changes in one transaction.
const MAX_BATCH: usize = 512;

/// Where desired states and events go once persisted.
pub struct Publisher {
    desired: Mutex<HashMap<String, watch::Sender<Arc<DesiredSnapshot>>>>,
    pub events: broadcast::Sender<Arc<StoredEvent>>,
    pub metrics: Metrics,
    /// The number of the next event this replica's writer stores.
    next_seq: AtomicU64,
    /// The number of the last event published (the point a snapshot stands for).
    last_seq: AtomicU64,
    /// Bumped when events were skipped: watchers send a snapshot, as when they lag.
    pub resync: watch::Sender<u64>,
}

impl Publisher {
    /// `event_buffer`: events kept for slow watchers before they lag (and get a snapshot).
    pub fn new(event_buffer: usize) -> Self {
        Publisher {
            desired: Mutex::new(HashMap::new()),
            events: broadcast::channel(event_buffer.max(1)).0,
            metrics: Metrics::new(),
            next_seq: AtomicU64::new(crate::core::store::epoch_start(1) + 1),
            last_seq: AtomicU64::new(0),
            resync: watch::channel(0).0,
        }
    }

    /// Events stored from now on are numbered in `epoch`; `last` is the last number stored.
    pub fn begin_epoch(&self, epoch: u64, last: Seq) {
        self.next_seq
            .store(crate::core::store::epoch_start(epoch) + 1, Ordering::SeqCst);
        self.skip_to(last);
    }

    /// Counts the events up to `seq` as published without sending them (a state read from the
    /// store stands for them).
    pub fn skip_to(&self, seq: Seq) {
        self.last_seq.fetch_max(seq, Ordering::SeqCst);
    }

    /// Skips the unpublished events up to `seq` (they are gone from the store): every
    /// watcher gets a snapshot instead.
    pub fn resync(&self, seq: Seq) {
        self.skip_to(seq);
        self.resync.send_modify(|n| *n += 1);
    }

    /// The number of the last event published.
    pub fn last_seq(&self) -> Seq {
        self.last_seq.load(Ordering::SeqCst)
    }

    fn number(&self, events: &[Event]) -> Vec<StoredEvent> {
        events
            .iter()
            .map(|e| StoredEvent {
                seq: self.next_seq.fetch_add(1, Ordering::SeqCst),
                event: e.clone(),
            })
            .collect()
    }

    /// Replaces `host`'s desired state unless a newer generation was published already; returns
    /// a receiver of it.
    pub fn desired(&self, host: &str, d: DesiredSnapshot) -> watch::Receiver<Arc<DesiredSnapshot>> {
        let d = Arc::new(d);
        let mut chans = self.desired.lock().unwrap_or_else(|p| p.into_inner());
        let tx = chans
            .entry(host.to_string())
            .or_insert_with(|| watch::channel(d.clone()).0);
        tx.send_if_modified(|cur| {
            if d.generation > cur.generation || (d.generation == cur.generation && **cur != *d) {
                *cur = d.clone();
                true
            } else {
                false
            }
        });
        tx.subscribe()
    }

    /// Publishes stored events, in order, each once (a follower may see one twice).
    pub fn events(&self, events: Vec<StoredEvent>) {
        for e in events {
            if self.last_seq.fetch_max(e.seq, Ordering::SeqCst) >= e.seq {
                continue;
            }
            self.metrics.event(&e.event);
            // No watcher is not an error.
            let _ = self.events.send(Arc::new(e));
        }
    }
}

impl Default for Publisher {
    fn default() -> Self {
        Self::new(1024)
    }
}

/// One unit of work for the writer.
pub struct Commit {
    pub change: Change,
    pub host: Option<HostInfo>,
    pub desired: Vec<(String, DesiredSnapshot)>,
    pub ack: Option<mpsc::SyncSender<Result<(), String>>>,
}

impl Commit {
    fn durable(&self) -> bool {
        let c = &self.change;
        self.host.is_some()
            || c.status_changed
            || !c.generations.is_empty()
            || c.cursors.is_some()
            || !c.removed.is_empty()
    }
}

pub struct Writer {
    tx: Option<mpsc::Sender<Commit>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    pub fn spawn(store: Arc<dyn Store>, publisher: Arc<Publisher>) -> Writer {
        let (tx, rx) = mpsc::channel::<Commit>();
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(c) => batch.push(c),
                            Err(_) => break,
                        }
                    }
                    let durable = batch.iter().any(Commit::durable);
                    let hosts: Vec<&HostInfo> =
                        batch.iter().filter_map(|c| c.host.as_ref()).collect();
                    let t = std::time::Instant::now();
                    let numbered: Vec<Vec<StoredEvent>> = batch
                        .iter()
                        .map(|c| publisher.number(&c.change.events))
                        .collect();
                    let changes: Vec<(&Change, &[StoredEvent])> = batch
                        .iter()
                        .zip(&numbered)
                        .map(|(c, e)| (&c.change, e.as_slice()))
                        .collect();
                    let res = store
                        .apply_all(&changes, &hosts, durable)
                        .map_err(|e| format!("{:#}", anyhow::Error::new(e)));
                    publisher.metrics.store_committed(t.elapsed(), durable);
                    if let Err(e) = &res {
                        tracing::error!(error = %e, "cannot persist state changes");
                    }
                    for (c, events) in batch.into_iter().zip(numbered) {
                        if res.is_ok() {
                            for (h, d) in c.desired {
                                publisher.desired(&h, d);
                            }
                            publisher.events(events);
                        }
                        if let Some(ack) = c.ack {
                            let _ = ack.send(res.clone());
                        }
                    }
                }
            })
            .expect("spawn the store writer");
        Writer {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    /// Queues a commit; returns the receiver of its outcome.
    pub fn send(
        &self,
        change: Change,
        host: Option<HostInfo>,
        desired: Vec<(String, DesiredSnapshot)>,
    ) -> mpsc::Receiver<Result<(), String>> {
        let (ack, rx) = mpsc::sync_channel(1);
        let commit = Commit {
            change,
            host,
            desired,
            ack: Some(ack),
        };
        if let Some(tx) = &self.tx
            && tx.send(commit).is_err()
        {
            tracing::error!("the store writer is gone");
        }
        rx
    }
}

impl Drop for Writer {
    /// Finishes the queued commits and releases the store.
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
