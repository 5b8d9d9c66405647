//! The replicated store: etcd (v3 API), for several controller replicas.
//!
//! Keys under a prefix (default `/vnet/`): `vns/<id>`, `hosts/<id>`, `generations/<host>`,
//! `meta/{schema,cursors,epoch,events_trimmed,credentials}`, `events/<seq, 20 digits>` and
//! `leader`.
//! Values are the same JSON as in redb. Leadership: a lease of `ttl` seconds kept alive, and the
//! key `leader` created under it only if absent (its value: the leader's advertised address).
//! Every write is one transaction that first compares the leader key's create revision with the
//! one this replica created: a deposed leader (lease expired, key re-created by another) cannot
//! write, whatever it believes.
//!
//! A change is atomic: its writes and its events go in one transaction, or, when it alone has
//! more than [`MAX_OPS`] writes (a cascade delete, a large update), in a journal first: its
//! writes in parts `meta/journal/<n>`, then the marker `meta/journal` naming them, whose
//! transaction commits the change; then the data transactions, then the journal is removed.
//! Every `load` (and the event reads) lays a committed journal over what it read, so that a
//! replica sees such a change whole or not at all, even if its leader died half-way through the
//! data; parts without a marker are ignored. The next leader applies and removes a committed
//! journal (and stray parts) in `begin_epoch`, before its first write.
//!
//! etcd-client is async; the store keeps a small runtime of its own so that the synchronous
//! [`Store`] methods (called from the writer thread and at start-up) never block the
//! controller's runtime on itself.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, KeyValue, PutOptions, SortOrder,
    SortTarget, Txn, TxnOp, WatchOptions,
};
use tokio::sync::{mpsc, watch};

use crate::core::index::Change;
use crate::core::store::{
    BackendError, EVENTS_KEPT, Loaded, Seq, Store, StoreError, StoredEvent, Write, batch_is_empty,
    decode, encode, writes,
};
use crate::core::substrate::HostInfo;

const SCHEMA: &[u8] = b"1";
/// Operations per transaction (etcd's default `--max-txn-ops` is 128); a larger group commit is
/// split between changes, each change staying atomic (see `chunked`).
const MAX_OPS: usize = 120;
/// Every call to etcd gives up after this long.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The marker of a committed journal (see the module comment); its parts are under
/// `meta/journal/`.
const JOURNAL: &str = "meta/journal";
/// The size of a journal part at most, bytes: one part per transaction, well under etcd's
/// default request limit (`--max-request-bytes`, 1.5 MiB).
const JOURNAL_PART_BYTES: usize = 512 * 1024;

/// How to reach etcd.
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    pub endpoints: Vec<String>,
    pub prefix: String,
    /// Lease time to live, seconds: a dead leader is replaced after about this long.
    pub lease_ttl: i64,
    /// TLS to etcd (the operator's CA and, when etcd asks for one, a client identity).
    pub tls: Option<etcd_client::TlsOptions>,
}

/// What this replica is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Writes go to the leader at this address (`None`: no leader known yet).
    Follower { leader: Option<String> },
    /// This replica writes; its writes are fenced by the leader key's create revision.
    Leader { fence: i64 },
}

pub struct EtcdStore {
    cfg: EtcdConfig,
    client: Client,
    rt: Option<tokio::runtime::Runtime>,
    /// The fence of this replica while it leads.
    fence: watch::Sender<Option<i64>>,
    /// The revision of the last `load`.
    loaded_at: AtomicI64,
    role: watch::Sender<Role>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.cfg.endpoints)
            .field("prefix", &self.cfg.prefix)
            .finish()
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        // Dropping a runtime blocks; this may run inside the controller's runtime.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum EtcdError {
    #[error(transparent)]
    Client(#[from] etcd_client::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("not the leader: the write is fenced off (another replica leads)")]
    Fenced,
    #[error("{0}")]
    Other(String),
}

async fn timed<T>(f: impl Future<Output = Result<T, etcd_client::Error>>) -> Result<T, EtcdError> {
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(EtcdError::Timeout(CALL_TIMEOUT)),
    }
}

impl EtcdStore {
    /// Connects to etcd (checking the schema marker, writing it on a fresh prefix).
    pub fn connect(cfg: EtcdConfig) -> Result<Self, StoreError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("etcd-store")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Backend {
                location: cfg.endpoints.join(","),
                source: Box::new(e),
            })?;
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(CALL_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
        if let Some(tls) = cfg.tls.clone() {
            opts = opts.with_tls(tls);
        }
        let endpoints = cfg.endpoints.clone();
        let client = run_on(&rt, async move {
            timed(Client::connect(endpoints, Some(opts))).await
        })
        .map_err(|e| backend(&cfg, e))?;
        let store = EtcdStore {
            cfg,
            client,
            rt: Some(rt),
            fence: watch::channel(None).0,
            loaded_at: AtomicI64::new(0),
            role: watch::channel(Role::Follower { leader: None }).0,
        };
        store.check_schema()?;
        Ok(store)
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.cfg.prefix)
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt
            .as_ref()
            .expect("the runtime lives as long as the store")
    }

    /// Runs `f` on the store's runtime and waits for it (from any thread, also a runtime's).
    fn block<T: Send + 'static>(
        &self,
        f: impl Future<Output = Result<T, EtcdError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        run_on(self.rt(), f).map_err(|e| backend(&self.cfg, e))
    }

    fn check_schema(&self) -> Result<(), StoreError> {
        let mut c = self.client.clone();
        let key = self.key("meta/schema");
        let found = self.block(async move {
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key.clone(), SCHEMA, None)])
                .or_else([TxnOp::get(key, None)]);
            let r = timed(c.txn(txn)).await?;
            Ok(first_kv(&r).map(|kv| kv.value().to_vec()))
        })?;
        match found {
            Some(v) if v != SCHEMA => Err(StoreError::Schema {
                found: String::from_utf8_lossy(&v).into_owned(),
                supported: String::from_utf8_lossy(SCHEMA).into_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// What this replica is now, and its changes.
    pub fn role(&self) -> watch::Receiver<Role> {
        self.role.subscribe()
    }

    /// Campaigns for leadership for as long as the store lives: `advertise` is the address
    /// written in the leader key for followers to name.
    pub fn campaign(self: &std::sync::Arc<Self>, advertise: String) {
        let weak = std::sync::Arc::downgrade(self);
        self.rt().spawn(async move {
            loop {
                let Some(store) = weak.upgrade() else { return };
                if let Err(e) = store.lead_once(&advertise).await {
                    tracing::warn!(error = %e, "leadership campaign");
                }
                drop(store);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }

    /// One lease: wait to lead under it, lead until it is lost.
    async fn lead_once(&self, advertise: &str) -> Result<(), EtcdError> {
        let mut c = self.client.clone();
        let lease = timed(c.lease_grant(self.cfg.lease_ttl, None)).await?.id();
        let (lost_tx, mut lost) = watch::channel(false);
        let keeper = tokio::spawn(keep_alive(c.clone(), lease, self.cfg.lease_ttl, lost_tx));
        let key = self.key("leader");
        let outcome = loop {
            if *lost.borrow() {
                break Err(EtcdError::Other("lease lost while campaigning".into()));
            }
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    key.clone(),
                    advertise,
                    Some(PutOptions::new().with_lease(lease)),
                )])
                .or_else([TxnOp::get(key.clone(), None)]);
            let r = match timed(c.txn(txn)).await {
                Ok(r) => r,
                Err(e) => break Err(e),
            };
            if r.succeeded() {
                let fence = r.header().map(|h| h.revision()).unwrap_or_default();
                break Ok(fence);
            }
            let leader = first_kv(&r).and_then(|kv| kv.value_str().ok().map(str::to_string));
            self.role.send_if_modified(|cur| {
                let new = Role::Follower { leader };
                let changed = *cur != new;
                *cur = new;
                changed
            });
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        let fence = match outcome {
            Ok(f) => f,
            Err(e) => {
                keeper.abort();
                return Err(e);
            }
        };
        tracing::info!(fence, lease, "leading");
        self.fence.send_replace(Some(fence));
        self.role.send_replace(Role::Leader { fence });
        // Until the lease is lost or a write fails (then the state in memory may be ahead of
        // the store: resigning makes the next leader, maybe this one, start from the store).
        let mut fenced = self.fence.subscribe();
        tokio::select! {
            _ = lost.wait_for(|l| *l) => {}
            _ = fenced.wait_for(|f| *f != Some(fence)) => {}
        }
        self.step_down(fence);
        keeper.abort();
        let _ = timed(c.lease_revoke(lease)).await;
        Ok(())
    }

    /// Gives up leadership under `fence` (lease lost or a write fenced off).
    fn step_down(&self, fence: i64) {
        let mine = self.fence.send_if_modified(|f| {
            let mine = *f == Some(fence);
            if mine {
                *f = None;
            }
            mine
        });
        if mine {
            tracing::warn!(fence, "leadership ends");
            self.role.send_replace(Role::Follower { leader: None });
        }
    }

    /// Watches every key from the revision after the last `load`; sends a message per change
    /// (a follower reloads on each, and reads the new events from the store). Ends when etcd
    /// ends the watch.
    pub fn follow(&self) -> mpsc::Receiver<Result<(), String>> {
        let (tx, rx) = mpsc::channel(64);
        let mut c = self.client.clone();
        let prefix = self.cfg.prefix.clone();
        let from = self.loaded_at.load(Ordering::SeqCst) + 1;
        self.rt().spawn(async move {
            let opts = WatchOptions::new().with_prefix().with_start_revision(from);
            let mut stream = match timed(c.watch(prefix, Some(opts))).await {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(Err(e.to_string())).await;
                    return;
                }
            };
            loop {
                let msg = tokio::select! {
                    m = stream.message() => m,
                    _ = tx.closed() => return,
                };
                let resp = match msg {
                    Ok(Some(r)) => r,
                    Ok(None) => return,
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string())).await;
                        return;
                    }
                };
                if resp.canceled() {
                    let why = format!("watch cancelled: {}", resp.cancel_reason());
                    let _ = tx.send(Err(why)).await;
                    return;
                }
                if tx.send(Ok(())).await.is_err() {
                    return;
                }
            }
        });
        rx
    }

    /// Trims the stored events to the newest [`EVENTS_KEPT`] (fenced, like every write).
    fn trim_events(&self) -> Result<(), StoreError> {
        let Some(fence) = *self.fence.borrow() else {
            return Ok(());
        };
        let mut c = self.client.clone();
        let events = self.key("events/");
        let leader = self.key("leader");
        let trimmed_key = self.key("meta/events_trimmed");
        self.block(async move {
            let n = timed(c.get(
                events.clone(),
                Some(GetOptions::new().with_prefix().with_count_only()),
            ))
            .await?
            .count();
            let excess = n - EVENTS_KEPT as i64;
            if excess < 1000 {
                return Ok(());
            }
            let oldest = timed(
                c.get(
                    events.clone(),
                    Some(
                        GetOptions::new()
                            .with_prefix()
                            .with_keys_only()
                            .with_limit(excess)
                            .with_sort(SortTarget::Key, SortOrder::Ascend),
                    ),
                ),
            )
            .await?;
            let Some(last) = oldest.kvs().last() else {
                return Ok(());
            };
            let last_seq: Seq = std::str::from_utf8(&last.key()[events.len()..])
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| EtcdError::Other("an event key is not a number".into()))?;
            let mut end = last.key().to_vec();
            end.push(0);
            let txn = Txn::new()
                .when([Compare::create_revision(leader, CompareOp::Equal, fence)])
                .and_then([
                    TxnOp::delete(
                        events.clone(),
                        Some(etcd_client::DeleteOptions::new().with_range(end)),
                    ),
                    TxnOp::put(trimmed_key, encode(&last_seq), None),
                ]);
            timed(c.txn(txn)).await?;
            Ok(())
        })
    }
}

/// Keeps `lease` alive: a request every quarter of its time to live, answers read as they come;
/// says `lost` once an answer says it expired or none came for a whole time to live (etcd may
/// have let it expire: a replica must not believe it leads longer than etcd does).
async fn keep_alive(mut c: Client, lease: i64, ttl: i64, lost: watch::Sender<bool>) {
    let ttl = Duration::from_secs(ttl.max(1) as u64);
    let mut last_ok = tokio::time::Instant::now();
    while last_ok.elapsed() < ttl {
        let Ok((mut keeper, mut answers)) = timed(c.lease_keep_alive(lease)).await else {
            tokio::time::sleep(ttl / 8).await;
            continue;
        };
        let mut tick = tokio::time::interval(ttl / 4);
        loop {
            let deadline = last_ok + ttl;
            tokio::select! {
                _ = tick.tick() => if keeper.keep_alive().await.is_err() { break },
                a = answers.message() => match a {
                    Ok(Some(r)) if r.ttl() > 0 => last_ok = tokio::time::Instant::now(),
                    Ok(Some(_)) => {
                        lost.send_replace(true);
                        return;
                    }
                    // The stream broke: open another.
                    _ => break,
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
    }
    lost.send_replace(true);
}

fn run_on<T: Send + 'static>(
    rt: &tokio::runtime::Runtime,
    f: impl Future<Output = Result<T, EtcdError>> + Send + 'static,
) -> Result<T, EtcdError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    rt.spawn(async move {
        let _ = tx.send(f.await);
    });
    rx.recv()
        .unwrap_or_else(|_| Err(EtcdError::Other("the etcd runtime stopped".into())))
}

fn backend(cfg: &EtcdConfig, e: EtcdError) -> StoreError {
    StoreError::Backend {
        location: format!("etcd {}", cfg.endpoints.join(",")),
        source: Box::new(e) as BackendError,
    }
}

fn first_kv(r: &etcd_client::TxnResponse) -> Option<KeyValue> {
    r.op_responses().into_iter().find_map(|op| match op {
        etcd_client::TxnOpResponse::Get(g) => g.kvs().first().cloned(),
        _ => None,
    })
}

fn rest<'a>(kv: &'a KeyValue, prefix: &str) -> Result<&'a str, StoreError> {
    let k = kv.key_str().map_err(|e| StoreError::Backend {
        location: "etcd key".into(),
        source: Box::new(e),
    })?;
    Ok(k.strip_prefix(prefix).unwrap_or(k))
}

/// The key of an event: its sequence number in 20 digits, so that keys sort as numbers.
/// One key's write: the key and its new value (`None`: delete it).
type KeyWrite = (String, Option<Vec<u8>>);
/// Key writes merged per key (the last one kept), in key order: one transaction's, or a change's.
type Writes = BTreeMap<String, Option<Vec<u8>>>;

/// Groups units of writes (a change with its events) into transactions of at most `max` keys, in
/// order. etcd refuses a key twice in one transaction, so writes are merged per key (the last one
/// wins). A unit never straddles two transactions unless it alone has more than `max` writes, so
/// that a leader killed between two transactions leaves no change without its events
/// (`apply_all` journals such a unit, and splits only its data transactions here).
fn chunked(units: Vec<Vec<KeyWrite>>, max: usize) -> Vec<Writes> {
    let mut chunks: Vec<Writes> = vec![BTreeMap::new()];
    for unit in units {
        let cur = chunks.last().expect("one at least");
        let new_keys = unit.iter().filter(|(k, _)| !cur.contains_key(k)).count();
        if !cur.is_empty() && cur.len() + new_keys > max {
            chunks.push(BTreeMap::new());
        }
        for (k, v) in unit {
            let cur = chunks.last_mut().expect("one at least");
            if cur.len() >= max && !cur.contains_key(&k) {
                chunks.push(BTreeMap::from([(k, v)]));
            } else {
                cur.insert(k, v);
            }
        }
    }
    chunks.retain(|c| !c.is_empty());
    chunks
}

fn event_key(prefix: &str, seq: Seq) -> String {
    format!("{prefix}events/{seq:020}")
}

/// The sequence number in an event's key (relative to the prefix: `events/<digits>`).
fn event_seq(key: &str) -> Result<Seq, StoreError> {
    key.strip_prefix("events/")
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| StoreError::Backend {
            location: format!("etcd key {key}"),
            source: "an event key is not a number".into(),
        })
}

/// The marker of a committed journal: the revision each part `meta/journal/<i>` was written at
/// (a part found at another revision is not this journal's).
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct JournalMarker {
    parts: Vec<i64>,
}

fn journal_part_key(i: usize) -> String {
    format!("{JOURNAL}/{i}")
}

/// Whether a journal may write `key` (relative to the prefix): the keys of a change and of host
/// records, nothing else (not the leader key, the epoch, the credentials or the journal).
fn journaled_key(key: &str) -> bool {
    ["vns/", "hosts/", "generations/", "events/"]
        .iter()
        .any(|area| key.strip_prefix(area).is_some_and(|rest| !rest.is_empty()))
        || key == "meta/cursors"
}

/// The values of the journal parts that hold `writes` (keys relative to the prefix), in order:
/// each a JSON array of `[key, value]` pairs (the value as text, every stored value being JSON;
/// `null`: delete), at most `max_bytes` unless a single write is larger (it gets a part alone).
fn journal_parts(writes: &Writes, max_bytes: usize) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut parts: Vec<Vec<u8>> = Vec::new();
    let mut cur: Vec<u8> = Vec::new();
    for (k, v) in writes {
        let text = match v {
            Some(v) => Some(std::str::from_utf8(v).map_err(|e| StoreError::Backend {
                location: format!("etcd key {k}"),
                source: format!("a value to journal is not text: {e}").into(),
            })?),
            None => None,
        };
        let entry = encode(&(k, text));
        // `[`, the entries with a comma between them, `]`.
        if !cur.is_empty() && cur.len() + entry.len() + 2 > max_bytes {
            cur.push(b']');
            parts.push(std::mem::take(&mut cur));
        }
        cur.push(if cur.is_empty() { b'[' } else { b',' });
        cur.extend_from_slice(&entry);
    }
    if !cur.is_empty() {
        cur.push(b']');
        parts.push(cur);
    }
    Ok(parts)
}

/// The writes of the committed journal (keys relative to the prefix, in the order written), or
/// `None` when there is no marker (parts without one are a journal never committed: ignored).
/// `get` gives a key's modification revision and value. A marker or part that does not decode,
/// a part missing or of another revision, or a key a journal may not write is an error naming it.
fn committed_journal<'a>(
    get: impl Fn(&str) -> Option<(i64, &'a [u8])>,
) -> Result<Option<Vec<KeyWrite>>, StoreError> {
    let Some((_, marker)) = get(JOURNAL) else {
        return Ok(None);
    };
    let marker: JournalMarker = decode(JOURNAL, marker)?;
    let mut out = Vec::new();
    for (i, rev) in marker.parts.iter().enumerate() {
        let key = journal_part_key(i);
        let bad = |why: String| StoreError::Backend {
            location: format!("etcd key {key}"),
            source: why.into(),
        };
        let (found, part) = get(&key).ok_or_else(|| {
            bad(format!(
                "the journal marker names this part (revision {rev}) but it is missing"
            ))
        })?;
        if found != *rev {
            return Err(bad(format!(
                "written at revision {found}, the journal marker names revision {rev}"
            )));
        }
        let writes: Vec<(String, Option<String>)> = decode(&key, part)?;
        for (k, v) in writes {
            if !journaled_key(&k) {
                return Err(bad(format!("a journal may not write the key {k:?}")));
            }
            out.push((k, v.map(String::into_bytes)));
        }
    }
    Ok(Some(out))
}

/// `journal` laid over `state` (both keyed relative to the prefix): the state once it is applied.
fn overlay(state: &mut BTreeMap<String, Vec<u8>>, journal: Vec<KeyWrite>) {
    for (k, v) in journal {
        match v {
            Some(v) => state.insert(k, v),
            None => state.remove(&k),
        };
    }
}

/// The events of a page read from etcd (`read`: above `after`, at most `limit`, oldest first)
/// with those of a committed journal above `after` (maybe written already): at most `limit`,
/// oldest first, each once. (When the page is full, the journal's events past its last fall
/// beyond `limit`: etcd's next ones, not read, come first.)
fn with_journal_events(
    mut read: Vec<StoredEvent>,
    journal: Vec<StoredEvent>,
    after: Seq,
    limit: usize,
) -> Vec<StoredEvent> {
    read.extend(journal.into_iter().filter(|e| e.seq > after));
    read.sort_by_key(|e| e.seq);
    read.dedup_by_key(|e| e.seq);
    read.truncate(limit);
    read
}

/// The events a committed journal writes, above `after`.
fn journal_events(journal: &[KeyWrite], after: Seq) -> Result<Vec<StoredEvent>, StoreError> {
    let mut out = Vec::new();
    for (k, v) in journal {
        if let (true, Some(v)) = (k.starts_with("events/"), v)
            && event_seq(k)? > after
        {
            out.push(decode(k, v)?);
        }
    }
    Ok(out)
}

impl Store for EtcdStore {
    fn load(&self) -> Result<Loaded, StoreError> {
        let mut c = self.client.clone();
        let p = self.cfg.prefix.clone();
        let (rev, groups, last) = self.block(async move {
            // One revision for every range, so the state read is one consistent cut.
            let first =
                timed(c.get(format!("{p}vns/"), Some(GetOptions::new().with_prefix()))).await?;
            let rev = first.header().map(|h| h.revision()).unwrap_or_default();
            let mut groups = vec![first.kvs().to_vec()];
            for part in ["hosts/", "generations/", "meta/"] {
                let opts = GetOptions::new().with_prefix().with_revision(rev);
                groups.push(
                    timed(c.get(format!("{p}{part}"), Some(opts)))
                        .await?
                        .kvs()
                        .to_vec(),
                );
            }
            let opts = GetOptions::new()
                .with_prefix()
                .with_revision(rev)
                .with_keys_only()
                .with_limit(1)
                .with_sort(SortTarget::Key, SortOrder::Descend);
            let last = timed(c.get(format!("{p}events/"), Some(opts))).await?;
            Ok((rev, groups, last.kvs().first().map(|kv| kv.key().to_vec())))
        })?;
        let p = &self.cfg.prefix;
        // Every key read (relative to the prefix), a committed journal laid over them.
        let mut state = BTreeMap::new();
        let mut journal_revs = BTreeMap::new();
        for kv in groups.into_iter().flatten() {
            let k = rest(&kv, p)?.to_string();
            if k.starts_with(JOURNAL) {
                journal_revs.insert(k.clone(), kv.mod_revision());
            }
            state.insert(k, kv.into_key_value().1);
        }
        let journal =
            committed_journal(|k| Some((*journal_revs.get(k)?, state.get(k)?.as_slice())))?;
        let mut out = Loaded::default();
        if let Some(k) = last {
            let k = String::from_utf8_lossy(&k);
            out.last_seq = event_seq(k.strip_prefix(p.as_str()).unwrap_or(&k))?;
        }
        if let Some(journal) = journal {
            for e in journal_events(&journal, out.last_seq)? {
                out.last_seq = out.last_seq.max(e.seq);
            }
            overlay(&mut state, journal);
        }
        for (k, v) in &state {
            if k.starts_with("vns/") {
                out.records.push(decode(k, v)?);
            } else if k.starts_with("hosts/") {
                out.hosts.push(decode(k, v)?);
            } else if let Some(host) = k.strip_prefix("generations/") {
                out.generations.insert(host.to_string(), decode(k, v)?);
            } else if k == "meta/cursors" {
                out.cursors = decode(k, v)?;
            } else if k == "meta/epoch" {
                out.epoch = decode(k, v)?;
            }
        }
        self.loaded_at.store(rev, Ordering::SeqCst);
        Ok(out)
    }

    fn apply_all(
        &self,
        changes: &[(&Change, &[StoredEvent])],
        hosts: &[&HostInfo],
        _durable: bool,
    ) -> Result<(), StoreError> {
        if batch_is_empty(changes, hosts) {
            return Ok(());
        }
        let p = &self.cfg.prefix;
        let mut units = vec![
            hosts
                .iter()
                .map(|h| (format!("{p}hosts/{}", h.id), Some(encode(*h))))
                .collect::<Vec<_>>(),
        ];
        for (change, events) in changes {
            units.push(self.change_writes(change, events));
        }
        // Units that fit a transaction are grouped as they come; one that does not is journaled
        // (after the units before it, before those after it).
        let mut fitting = Vec::with_capacity(units.len());
        for unit in units {
            if unit.len() > MAX_OPS {
                let merged: Writes = unit.into_iter().collect();
                if merged.len() > MAX_OPS {
                    self.write_chunks(chunked(std::mem::take(&mut fitting), MAX_OPS))?;
                    self.write_journaled(merged)?;
                } else {
                    fitting.push(merged.into_iter().collect());
                }
            } else {
                fitting.push(unit);
            }
        }
        self.write_chunks(chunked(fitting, MAX_OPS))?;
        if changes
            .iter()
            .flat_map(|(_, e)| *e)
            .any(|e| e.seq % 1000 == 0)
        {
            self.trim_events()?;
        }
        Ok(())
    }

    /// First finishes the journaled change of the last leader, if it committed one, and removes
    /// the parts of one it did not commit: every write of this leader comes after.
    fn begin_epoch(&self, epoch: u64) -> Result<(), StoreError> {
        let p = self.cfg.prefix.clone();
        let mut c = self.client.clone();
        let kvs = self.block(async move {
            let opts = GetOptions::new().with_range(format!("{p}{JOURNAL}0"));
            Ok(timed(c.get(format!("{p}{JOURNAL}"), Some(opts)))
                .await?
                .kvs()
                .to_vec())
        })?;
        let p = &self.cfg.prefix;
        let mut found = BTreeMap::new();
        for kv in &kvs {
            found.insert(rest(kv, p)?, (kv.mod_revision(), kv.value()));
        }
        if let Some(journal) = committed_journal(|k| found.get(k).copied())? {
            tracing::warn!(
                writes = journal.len(),
                "finishing the journaled change of the last leader"
            );
            let journal = journal
                .into_iter()
                .map(|(k, v)| (format!("{p}{k}"), v))
                .collect();
            self.write_chunks(chunked(vec![journal], MAX_OPS))?;
        }
        let [marker, parts] = self.journal_removal();
        self.fenced(vec![
            TxnOp::put(format!("{p}meta/epoch"), encode(&epoch), None),
            marker,
            parts,
        ])
    }

    fn events_after(
        &self,
        after: Seq,
        limit: usize,
    ) -> Result<(Vec<StoredEvent>, bool), StoreError> {
        let mut c = self.client.clone();
        let p = self.cfg.prefix.clone();
        let (kvs, meta) = self.block(async move {
            let from = event_key(&p, after.saturating_add(1));
            let opts = GetOptions::new()
                .with_range(format!("{p}events0"))
                .with_limit(limit as i64)
                .with_sort(SortTarget::Key, SortOrder::Ascend);
            let r = timed(c.get(from, Some(opts))).await?;
            let rev = r.header().map(|h| h.revision()).unwrap_or_default();
            // `meta/events_trimmed` and the journal (`meta/journal`, `meta/journal/<n>`), which
            // sort next to each other, in one range at the same revision.
            let opts = GetOptions::new()
                .with_range(format!("{p}{JOURNAL}0"))
                .with_revision(rev);
            let t = timed(c.get(format!("{p}meta/events_trimmed"), Some(opts))).await?;
            Ok((r.kvs().to_vec(), t.kvs().to_vec()))
        })?;
        let p = &self.cfg.prefix;
        let mut found = BTreeMap::new();
        for kv in &meta {
            found.insert(rest(kv, p)?, (kv.mod_revision(), kv.value()));
        }
        let trimmed: Seq = match found.get("meta/events_trimmed") {
            Some((_, v)) => decode("meta/events_trimmed", v)?,
            None => 0,
        };
        let mut out = Vec::new();
        for kv in &kvs {
            out.push(decode(rest(kv, p)?, kv.value())?);
        }
        if let Some(journal) = committed_journal(|k| found.get(k).copied())? {
            out = with_journal_events(out, journal_events(&journal, after)?, after, limit);
        }
        Ok((out, trimmed > after))
    }
}

impl EtcdStore {
    /// The key writes of a change and its events (its events last).
    fn change_writes(&self, change: &Change, events: &[StoredEvent]) -> Vec<KeyWrite> {
        let p = &self.cfg.prefix;
        let mut w: Vec<KeyWrite> = writes(change)
            .map(|w| match w {
                Write::Vn(id, rec) => (format!("{p}vns/{id}"), rec),
                Write::Generation(h, g) => (format!("{p}generations/{h}"), Some(encode(&g))),
                Write::Cursors(c) => (format!("{p}meta/cursors"), Some(c)),
            })
            .collect();
        for e in events {
            w.push((event_key(p, e.seq), Some(encode(e))));
        }
        w
    }

    /// One transaction per chunk, in order.
    fn write_chunks(&self, chunks: Vec<Writes>) -> Result<(), StoreError> {
        for chunk in chunks {
            let ops = chunk
                .into_iter()
                .map(|(k, v)| match v {
                    Some(v) => TxnOp::put(k, v, None),
                    None => TxnOp::delete(k, None),
                })
                .collect();
            self.fenced(ops)?;
        }
        Ok(())
    }

    /// Writes one change too large for a transaction (`writes`: full keys) atomically: through
    /// the journal (see the module comment).
    fn write_journaled(&self, writes: Writes) -> Result<(), StoreError> {
        let data = self.commit_journal(writes)?;
        self.write_chunks(data)?;
        self.fenced(self.journal_removal().into())
    }

    /// Writes the journal parts of `writes`, one transaction each, then the marker naming them:
    /// once its transaction succeeds the change is committed (every replica's `load` sees it
    /// whole). Returns the data transactions still to write.
    fn commit_journal(&self, writes: Writes) -> Result<Vec<Writes>, StoreError> {
        let p = &self.cfg.prefix;
        let relative = writes
            .iter()
            .map(|(k, v)| {
                (
                    k.strip_prefix(p.as_str()).unwrap_or(k).to_string(),
                    v.clone(),
                )
            })
            .collect();
        let parts = match journal_parts(&relative, JOURNAL_PART_BYTES) {
            Ok(parts) => parts,
            Err(e) => {
                // Like a write that fails: the state in memory is ahead of the store.
                let fence = *self.fence.borrow();
                if let Some(fence) = fence {
                    self.step_down(fence);
                }
                return Err(e);
            }
        };
        let mut marker = JournalMarker { parts: Vec::new() };
        for (i, part) in parts.into_iter().enumerate() {
            let rev =
                self.fenced_at(vec![TxnOp::put(self.key(&journal_part_key(i)), part, None)])?;
            marker.parts.push(rev);
        }
        self.fenced(vec![TxnOp::put(self.key(JOURNAL), encode(&marker), None)])?;
        tracing::debug!(
            writes = writes.len(),
            parts = marker.parts.len(),
            "change journaled"
        );
        Ok(chunked(vec![writes.into_iter().collect()], MAX_OPS))
    }

    /// The operations that remove the journal: its marker and every part.
    fn journal_removal(&self) -> [TxnOp; 2] {
        [
            TxnOp::delete(self.key(JOURNAL), None),
            TxnOp::delete(
                self.key(&format!("{JOURNAL}/")),
                Some(etcd_client::DeleteOptions::new().with_prefix()),
            ),
        ]
    }

    /// One transaction of `ops`, only while this replica leads under its fence. A write that
    /// is fenced off or fails ends the leadership (see `lead_once`).
    fn fenced(&self, ops: Vec<TxnOp>) -> Result<(), StoreError> {
        self.fenced_at(ops).map(drop)
    }

    /// [`Self::fenced`], giving the revision of the transaction.
    fn fenced_at(&self, ops: Vec<TxnOp>) -> Result<i64, StoreError> {
        let Some(fence) = *self.fence.borrow() else {
            return Err(backend(&self.cfg, EtcdError::Fenced));
        };
        let mut c = self.client.clone();
        let leader = self.key("leader");
        let ok = self.block(async move {
            let txn = Txn::new()
                .when([Compare::create_revision(leader, CompareOp::Equal, fence)])
                .and_then(ops);
            let r = timed(c.txn(txn)).await?;
            let rev = r.header().map(|h| h.revision()).unwrap_or_default();
            Ok(r.succeeded().then_some(rev))
        });
        match ok {
            Ok(Some(rev)) => Ok(rev),
            Ok(None) => {
                self.step_down(fence);
                Err(backend(&self.cfg, EtcdError::Fenced))
            }
            Err(e) => {
                self.step_down(fence);
                Err(e)
            }
        }
    }
}

/// The credentials (tokens and quotas) every replica reads: `meta/credentials`.
impl crate::runtime::credentials::SharedValue for EtcdStore {
    fn read(&self) -> Result<Option<Vec<u8>>, String> {
        let mut c = self.client.clone();
        let key = self.key("meta/credentials");
        self.block(async move {
            let r = timed(c.get(key, None)).await?;
            Ok(r.kvs().first().map(|kv| kv.value().to_vec()))
        })
        .map_err(|e| format!("{:#}", anyhow::Error::new(e)))
    }

    fn write(&self, body: &[u8]) -> Result<(), String> {
        self.fenced(vec![TxnOp::put(
            self.key("meta/credentials"),
            body.to_vec(),
            None,
        )])
        .map_err(|e| format!("{:#}", anyhow::Error::new(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(keys: &[&str]) -> Vec<KeyWrite> {
        keys.iter()
            .map(|k| (k.to_string(), Some(vec![1])))
            .collect()
    }

    fn keys(c: &Writes) -> Vec<&str> {
        c.keys().map(String::as_str).collect()
    }

    #[test]
    fn a_unit_that_does_not_fit_starts_the_next_transaction() {
        let chunks = chunked(vec![unit(&["a", "b", "c"]), unit(&["d", "e"])], 4);
        assert_eq!(chunks.len(), 2);
        assert_eq!(keys(&chunks[0]), ["a", "b", "c"]);
        assert_eq!(keys(&chunks[1]), ["d", "e"]);
    }

    #[test]
    fn keys_written_again_merge_and_the_last_write_wins() {
        let mut second = unit(&["a", "d"]);
        second[0].1 = None;
        let chunks = chunked(vec![unit(&["a", "b", "c"]), second], 4);
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0]["a"], None);
        assert_eq!(keys(&chunks[0]), ["a", "b", "c", "d"]);
    }

    #[test]
    fn a_unit_larger_than_a_transaction_is_split_and_none_exceeds_it() {
        let big: Vec<String> = (0..10).map(|i| format!("k{i:02}")).collect();
        let big: Vec<&str> = big.iter().map(String::as_str).collect();
        let chunks = chunked(vec![unit(&["x"]), unit(&big), unit(&[]), unit(&["y"])], 4);
        assert!(
            chunks.iter().all(|c| !c.is_empty() && c.len() <= 4),
            "{chunks:?}"
        );
        assert_eq!(keys(&chunks[0]), ["x"]);
        let all: usize = chunks.iter().map(BTreeMap::len).sum();
        assert_eq!(all, 12);
        assert_eq!(keys(chunks.last().unwrap()), ["k08", "k09", "y"]);
    }
}

/// Whether the `etcd` binary is here, for tests that need one: if not, they say SKIP, unless
/// `VNET_REQUIRE_ETCD=1` or `VNET_REQUIRE_ROOT=1` (CI), where that is a failure.
#[cfg(any(test, feature = "testing"))]
pub fn have_etcd(test: &str) -> bool {
    use std::process::{Command, Stdio};
    let found = Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        for var in ["VNET_REQUIRE_ETCD", "VNET_REQUIRE_ROOT"] {
            if std::env::var(var).as_deref() == Ok("1") {
                panic!("{test}: {var}=1 but etcd is not installed (deploy/setup.sh)");
            }
        }
        eprintln!("SKIP {test}: etcd is not installed (apt-get install etcd-server)");
    }
    found
}

/// The journal's pure parts, and the journal against a real etcd (`etcd` binary).
#[cfg(test)]
mod journal_tests {
    use std::process::{Command, Stdio};
    use std::sync::Arc;

    use super::*;
    use crate::core::index::{Event, EventKind};
    use crate::core::model::ProviderId;
    use crate::core::store::epoch_start;

    fn writes_of(n: usize) -> Writes {
        (0..n)
            .map(|i| {
                let v = (i % 5 != 0).then(|| format!("{{\"n\":{i}}}").into_bytes());
                (format!("generations/h{i:04}"), v)
            })
            .collect()
    }

    /// The writes in `parts`, in order (as `committed_journal` reads them).
    fn decoded(parts: &[Vec<u8>]) -> Vec<KeyWrite> {
        let revs: Vec<i64> = (0..parts.len() as i64).map(|i| 10 + i).collect();
        let marker = encode(&JournalMarker {
            parts: revs.clone(),
        });
        let kv: BTreeMap<String, (i64, &[u8])> = parts
            .iter()
            .enumerate()
            .map(|(i, p)| (journal_part_key(i), (revs[i], p.as_slice())))
            .chain([(JOURNAL.to_string(), (99, marker.as_slice()))])
            .collect();
        committed_journal(|k| kv.get(k).copied())
            .expect("decodes")
            .expect("committed")
    }

    #[test]
    fn a_journal_is_split_into_parts_within_the_size_and_reads_back_whole() {
        let writes = writes_of(300);
        let parts = journal_parts(&writes, 1000).unwrap();
        assert!(parts.len() > 5, "{} parts", parts.len());
        assert!(parts.iter().all(|p| p.len() <= 1000));
        assert_eq!(decoded(&parts), writes.into_iter().collect::<Vec<_>>());
        // Under the real limit, a few hundred small writes are one part.
        assert_eq!(
            journal_parts(&writes_of(300), JOURNAL_PART_BYTES)
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn a_write_larger_than_a_part_gets_one_alone() {
        let mut writes = writes_of(3);
        let big = format!("\"{}\"", "x".repeat(5000)).into_bytes();
        writes.insert("vns/big".into(), Some(big));
        let parts = journal_parts(&writes, 1000).unwrap();
        assert_eq!(parts.iter().filter(|p| p.len() > 1000).count(), 1);
        assert_eq!(decoded(&parts), writes.into_iter().collect::<Vec<_>>());
    }

    #[test]
    fn a_value_that_is_not_text_is_an_error_naming_its_key() {
        let writes = Writes::from([("vns/a".to_string(), Some(vec![0xff, 0xfe]))]);
        let e = journal_parts(&writes, 1000).unwrap_err();
        assert!(format!("{e:?}").contains("vns/a"), "{e:?}");
    }

    #[test]
    fn parts_without_a_marker_are_no_journal() {
        let parts = journal_parts(&writes_of(10), 1000).unwrap();
        let kv: BTreeMap<String, (i64, &[u8])> = parts
            .iter()
            .enumerate()
            .map(|(i, p)| (journal_part_key(i), (1, p.as_slice())))
            .collect();
        assert!(committed_journal(|k| kv.get(k).copied()).unwrap().is_none());
    }

    #[test]
    fn a_bad_journal_is_an_error_naming_the_key() {
        let part = journal_parts(&writes_of(2), 1000).unwrap().remove(0);
        let marker = encode(&JournalMarker { parts: vec![5] });
        let check = |kv: Vec<(&str, i64, &[u8])>, names: &str| {
            let kv: BTreeMap<String, (i64, &[u8])> = kv
                .into_iter()
                .map(|(k, r, v)| (k.to_string(), (r, v)))
                .collect();
            let e = committed_journal(|k| kv.get(k).copied()).unwrap_err();
            let text = format!("{:#}", anyhow::Error::new(e));
            assert!(text.contains(names), "{text}");
        };
        // A marker that does not decode.
        check(vec![(JOURNAL, 1, b"{".as_slice())], "meta/journal");
        // A part missing, of another revision, not decoding, writing a key it may not.
        check(vec![(JOURNAL, 9, &marker)], "meta/journal/0");
        check(
            vec![(JOURNAL, 9, &marker), ("meta/journal/0", 4, &part)],
            "meta/journal/0",
        );
        check(
            vec![(JOURNAL, 9, &marker), ("meta/journal/0", 5, b"[1]")],
            "meta/journal/0",
        );
        let leader = encode(&vec![("leader", Some("x"))]);
        check(
            vec![(JOURNAL, 9, &marker), ("meta/journal/0", 5, &leader)],
            "\"leader\"",
        );
    }

    #[test]
    fn a_journal_overlays_the_keys_read() {
        let mut state = BTreeMap::from([
            ("vns/a".to_string(), b"1".to_vec()),
            ("vns/b".to_string(), b"2".to_vec()),
        ]);
        overlay(
            &mut state,
            vec![
                ("vns/a".into(), None),
                ("vns/b".into(), Some(b"3".to_vec())),
                ("vns/c".into(), Some(b"4".to_vec())),
            ],
        );
        assert_eq!(
            state,
            BTreeMap::from([
                ("vns/b".to_string(), b"3".to_vec()),
                ("vns/c".to_string(), b"4".to_vec()),
            ])
        );
    }

    fn ev(seq: Seq) -> StoredEvent {
        StoredEvent {
            seq,
            event: Event {
                provider: ProviderId("red".into()),
                name: format!("vn{seq}"),
                kind: EventKind::Deleted,
                status: None,
                host: String::new(),
                message: String::new(),
            },
        }
    }

    fn seqs(e: &[StoredEvent]) -> Vec<Seq> {
        e.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn a_journal_s_events_join_a_page_in_order_once() {
        let journal: Vec<StoredEvent> = [3, 4, 6, 9].into_iter().map(ev).collect();
        // A page not full: every journal event above `after` joins, in order, each once.
        let page = with_journal_events(vec![ev(2), ev(3)], journal.clone(), 2, 10);
        assert_eq!(seqs(&page), [2, 3, 4, 6, 9]);
        let page = with_journal_events(vec![], journal.clone(), 4, 10);
        assert_eq!(seqs(&page), [6, 9]);
        // A full page: none past its last (etcd's next ones were not read), at most `limit`.
        let page = with_journal_events(vec![ev(3), ev(5)], journal.clone(), 2, 2);
        assert_eq!(seqs(&page), [3, 4]);
        let page = with_journal_events(vec![ev(7), ev(8)], journal, 6, 2);
        assert_eq!(seqs(&page), [7, 8]);
    }

    /// One etcd member on loopback in a temporary directory, killed on drop.
    struct TestEtcd {
        child: std::process::Child,
        endpoint: String,
        _dir: tempfile::TempDir,
    }

    impl Drop for TestEtcd {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port()
    }

    /// etcd, or `None` when the binary is missing (see [`have_etcd`]).
    fn start_etcd(test: &str) -> Option<TestEtcd> {
        if !have_etcd(test) {
            return None;
        }
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (client, peer) = (free_port(), free_port());
        let endpoint = format!("http://127.0.0.1:{client}");
        let peer = format!("http://127.0.0.1:{peer}");
        let child = Command::new("etcd")
            .args(["--name", "j"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &endpoint])
            .args(["--advertise-client-urls", &endpoint])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("j={peer}")])
            .args(["--logger", "zap", "--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn etcd");
        Some(TestEtcd {
            child,
            endpoint,
            _dir: dir,
        })
    }

    /// A store on `etcd` under `prefix`, once etcd answers.
    fn store(etcd: &TestEtcd, prefix: &str) -> Arc<EtcdStore> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let cfg = EtcdConfig {
                endpoints: vec![etcd.endpoint.clone()],
                prefix: prefix.into(),
                lease_ttl: 5,
                tls: None,
            };
            match EtcdStore::connect(cfg) {
                Ok(s) => return Arc::new(s),
                Err(e) if std::time::Instant::now() > deadline => panic!("etcd: {e:?}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Makes `s` the leader (the leader key created without a lease: no campaign to race with).
    fn lead(s: &EtcdStore) {
        let mut c = s.client.clone();
        let key = s.key("leader");
        let fence = s
            .block(async move {
                let txn = Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(key, "test", None)]);
                let r = timed(c.txn(txn)).await?;
                assert!(r.succeeded(), "another leads");
                Ok(r.header().map(|h| h.revision()).unwrap_or_default())
            })
            .unwrap();
        s.fence.send_replace(Some(fence));
    }

    /// Deposes whoever leads (as a lost lease would).
    fn depose(s: &EtcdStore) {
        let mut c = s.client.clone();
        let key = s.key("leader");
        s.block(async move { timed(c.delete(key, None)).await.map(drop) })
            .unwrap();
    }

    /// How many keys are under `rest` (after the store's prefix).
    fn count(s: &EtcdStore, rest: &str) -> i64 {
        let mut c = s.client.clone();
        let key = s.key(rest);
        s.block(async move {
            let opts = GetOptions::new().with_prefix().with_count_only();
            Ok(timed(c.get(key, Some(opts))).await?.count())
        })
        .unwrap()
    }

    /// etcd's current revision.
    fn revision(s: &EtcdStore) -> i64 {
        let mut c = s.client.clone();
        let key = s.key("meta/schema");
        s.block(async move {
            let r = timed(c.get(key, None)).await?;
            Ok(r.header().map(|h| h.revision()).unwrap_or_default())
        })
        .unwrap()
    }

    /// Whether a journal marker was there at revision `rev`.
    fn marker_at(s: &EtcdStore, rev: i64) -> bool {
        let mut c = s.client.clone();
        let key = s.key(JOURNAL);
        s.block(async move {
            let opts = GetOptions::new().with_revision(rev).with_count_only();
            Ok(timed(c.get(key, Some(opts))).await?.count() == 1)
        })
        .unwrap()
    }

    /// A change of `n` generations and `n` events (2n writes), numbered in epoch 1.
    fn big_change(n: usize) -> (Change, Vec<StoredEvent>) {
        let change = Change {
            generations: (0..n).map(|i| (format!("h{i:04}"), i as u64 + 1)).collect(),
            ..Change::default()
        };
        let events = (1..=n as u64).map(|i| ev(epoch_start(1) + i)).collect();
        (change, events)
    }

    /// Every stored event, read a few at a time (pages cut through the journal's events).
    fn all_events(s: &EtcdStore) -> Vec<StoredEvent> {
        let mut out: Vec<StoredEvent> = Vec::new();
        loop {
            let after = out.last().map_or(0, |e| e.seq);
            let (page, gap) = s.events_after(after, 7).unwrap();
            assert!(!gap);
            if page.is_empty() {
                return out;
            }
            out.extend(page);
        }
    }

    /// `got` is `want` (a failure says how, not every event).
    fn assert_events(got: &[StoredEvent], want: &[StoredEvent]) {
        let first_wrong = got.iter().zip(want).position(|(g, w)| g != w);
        assert!(
            got == want,
            "{} events, {} wanted; first wrong at {first_wrong:?}; got seqs {:?}..{:?}",
            got.len(),
            want.len(),
            got.first().map(|e| e.seq),
            got.last().map(|e| e.seq),
        );
    }

    fn assert_whole(loaded: &Loaded, events: &[StoredEvent], n: usize) {
        assert_eq!(loaded.generations.len(), n, "every generation");
        assert!(
            loaded
                .generations
                .iter()
                .enumerate()
                .all(|(i, (h, g))| *h == format!("h{i:04}") && *g == i as u64 + 1)
        );
        assert_eq!(loaded.last_seq, events.last().unwrap().seq);
    }

    #[test]
    fn an_oversized_change_is_whole_or_absent_on_every_replica() {
        let test = "an_oversized_change_is_whole_or_absent_on_every_replica";
        let Some(etcd) = start_etcd(test) else { return };
        const N: usize = 150;
        let (change, events) = big_change(N);

        // A normal write of a change of 300 writes leaves no journal behind.
        let a = store(&etcd, "/plain/");
        lead(&a);
        a.begin_epoch(1).unwrap();
        let before = revision(&a);
        a.apply_all(&[(&change, &events)], &[], true).unwrap();
        let journaled = (before + 1..=revision(&a)).any(|r| marker_at(&a, r));
        assert!(journaled, "the change was not journaled");
        assert_eq!(count(&a, JOURNAL), 0, "journal keys left");
        assert_eq!(count(&a, "generations/"), N as i64);
        assert_whole(&a.load().unwrap(), &events, N);
        assert_events(&all_events(&a), &events);

        // A leader deposed after its marker and the first of its three data transactions.
        let a = store(&etcd, "/killed/");
        lead(&a);
        a.begin_epoch(1).unwrap();
        let writes: Writes = a.change_writes(&change, &events).into_iter().collect();
        let mut data = a.commit_journal(writes).unwrap();
        assert_eq!(data.len(), 3);
        let rest = data.split_off(1);
        a.write_chunks(data).unwrap();
        depose(&a);
        assert!(a.write_chunks(rest).is_err(), "a deposed leader wrote");
        // Keys in order: some of the events, none of the generations.
        assert_eq!(count(&a, "events/"), MAX_OPS as i64);
        assert_eq!(count(&a, "generations/"), 0);

        // Another replica sees the change whole: state and events.
        let b = store(&etcd, "/killed/");
        assert_whole(&b.load().unwrap(), &events, N);
        assert_events(&all_events(&b), &events);
        assert_events(&b.events_between(0, Seq::MAX).unwrap().unwrap(), &events);
        // Elected, it finishes the journal before anything else.
        lead(&b);
        b.begin_epoch(2).unwrap();
        assert_eq!(count(&b, JOURNAL), 0, "journal keys left");
        assert_eq!(count(&b, "generations/"), N as i64);
        assert_eq!(count(&b, "events/"), N as i64);
        let loaded = b.load().unwrap();
        assert_whole(&loaded, &events, N);
        assert_eq!(loaded.epoch, 2);
        assert_events(&all_events(&b), &events);

        // Parts whose marker was never written: nothing of them is seen, the next leader
        // removes them.
        let a = store(&etcd, "/uncommitted/");
        lead(&a);
        a.begin_epoch(1).unwrap();
        let writes: Writes = a
            .change_writes(&change, &events)
            .into_iter()
            .map(|(k, v)| (k["/uncommitted/".len()..].to_string(), v))
            .collect();
        for (i, part) in journal_parts(&writes, 2000)
            .unwrap()
            .into_iter()
            .enumerate()
        {
            a.fenced(vec![TxnOp::put(a.key(&journal_part_key(i)), part, None)])
                .unwrap();
        }
        depose(&a);
        let b = store(&etcd, "/uncommitted/");
        let loaded = b.load().unwrap();
        assert!(loaded.generations.is_empty());
        assert_eq!(loaded.last_seq, 0);
        assert!(all_events(&b).is_empty());
        assert!(count(&b, JOURNAL) > 1);
        lead(&b);
        b.begin_epoch(2).unwrap();
        assert_eq!(count(&b, JOURNAL), 0, "stray parts left");
        assert!(b.load().unwrap().generations.is_empty());
    }
}
