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

/// Groups units of writes (a change with its events) into transactions of at most `max` keys, in
/// order. etcd refuses a key twice in one transaction, so writes are merged per key (the last one
/// wins). A unit never straddles two transactions unless it alone has more than `max` writes
/// (then its events, written last, land in its last transaction), so that a leader killed
/// between two transactions leaves no change without its events.
fn chunked(units: Vec<Vec<KeyWrite>>, max: usize) -> Vec<BTreeMap<String, Option<Vec<u8>>>> {
    let mut chunks: Vec<BTreeMap<String, Option<Vec<u8>>>> = vec![BTreeMap::new()];
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
        let mut out = Loaded::default();
        for kv in &groups[0] {
            out.records.push(decode(rest(kv, p)?, kv.value())?);
        }
        for kv in &groups[1] {
            out.hosts.push(decode(rest(kv, p)?, kv.value())?);
        }
        for kv in &groups[2] {
            let k = rest(kv, p)?;
            let g: u64 = decode(k, kv.value())?;
            out.generations
                .insert(k.trim_start_matches("generations/").to_string(), g);
        }
        for kv in &groups[3] {
            match rest(kv, p)? {
                "meta/cursors" => out.cursors = decode("meta/cursors", kv.value())?,
                "meta/epoch" => out.epoch = decode("meta/epoch", kv.value())?,
                _ => {}
            }
        }
        if let Some(k) = last {
            let digits = String::from_utf8_lossy(&k[p.len() + "events/".len()..]).into_owned();
            out.last_seq = digits.parse().map_err(|_| StoreError::Backend {
                location: format!("etcd key {}", String::from_utf8_lossy(&k)),
                source: "an event key is not a number".into(),
            })?;
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
            let mut w: Vec<KeyWrite> = writes(change)
                .map(|w| match w {
                    Write::Vn(id, rec) => (format!("{p}vns/{id}"), rec),
                    Write::Generation(h, g) => (format!("{p}generations/{h}"), Some(encode(&g))),
                    Write::Cursors(c) => (format!("{p}meta/cursors"), Some(c)),
                })
                .collect();
            for e in *events {
                w.push((event_key(p, e.seq), Some(encode(e))));
            }
            units.push(w);
        }
        let chunks = chunked(units, MAX_OPS);
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
        if changes
            .iter()
            .flat_map(|(_, e)| *e)
            .any(|e| e.seq % 1000 == 0)
        {
            self.trim_events()?;
        }
        Ok(())
    }

    fn begin_epoch(&self, epoch: u64) -> Result<(), StoreError> {
        let p = &self.cfg.prefix;
        self.fenced(vec![TxnOp::put(
            format!("{p}meta/epoch"),
            encode(&epoch),
            None,
        )])
    }

    fn events_after(
        &self,
        after: Seq,
        limit: usize,
    ) -> Result<(Vec<StoredEvent>, bool), StoreError> {
        let mut c = self.client.clone();
        let p = self.cfg.prefix.clone();
        let (kvs, trimmed) = self.block(async move {
            let from = event_key(&p, after.saturating_add(1));
            let opts = GetOptions::new()
                .with_range(format!("{p}events0"))
                .with_limit(limit as i64)
                .with_sort(SortTarget::Key, SortOrder::Ascend);
            let r = timed(c.get(from, Some(opts))).await?;
            let rev = r.header().map(|h| h.revision()).unwrap_or_default();
            let t = timed(c.get(
                format!("{p}meta/events_trimmed"),
                Some(GetOptions::new().with_revision(rev)),
            ))
            .await?;
            Ok((
                r.kvs().to_vec(),
                t.kvs().first().map(|kv| kv.value().to_vec()),
            ))
        })?;
        let trimmed: Seq = match trimmed {
            Some(v) => decode("meta/events_trimmed", &v)?,
            None => 0,
        };
        let mut out = Vec::new();
        for kv in &kvs {
            out.push(decode(rest(kv, &self.cfg.prefix)?, kv.value())?);
        }
        Ok((out, trimmed > after))
    }
}

impl EtcdStore {
    /// One transaction of `ops`, only while this replica leads under its fence. A write that
    /// is fenced off or fails ends the leadership (see `lead_once`).
    fn fenced(&self, ops: Vec<TxnOp>) -> Result<(), StoreError> {
        let Some(fence) = *self.fence.borrow() else {
            return Err(backend(&self.cfg, EtcdError::Fenced));
        };
        let mut c = self.client.clone();
        let leader = self.key("leader");
        let ok = self.block(async move {
            let txn = Txn::new()
                .when([Compare::create_revision(leader, CompareOp::Equal, fence)])
                .and_then(ops);
            Ok(timed(c.txn(txn)).await?.succeeded())
        });
        match ok {
            Ok(true) => Ok(()),
            Ok(false) => {
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

    fn keys(c: &BTreeMap<String, Option<Vec<u8>>>) -> Vec<&str> {
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
