//! A replica on etcd: campaign, follow the store while another leads, take over from the
//! stored state when elected, step down when the lease is lost.
//!
//! A follower's index is the store's: on every change etcd reports it reads the whole state
//! again (one consistent revision) and replaces its index, then publishes the stored events the
//! change carried, so its watchers see what the leader's see, numbered the same. A new leader
//! reads the state again (every write of the old leader is in etcd or was refused by its fence),
//! begins a new event epoch, and starts the timers a restarted controller starts; agents attach
//! to it as they find it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::store::{EtcdStore, Role, StoredEvent};

use super::{Controller, lock, restore};

/// Changes gathered into one reload.
const SETTLE: Duration = Duration::from_millis(50);
/// After a takeover, creates wait at most this long for the agents to re-attach.
const SETTLE_AGENTS: Duration = Duration::from_secs(2);

impl Controller {
    pub(super) fn spawn_replica(&self, etcd: Arc<EtcdStore>) {
        let advertise = self.shared.cfg.advertise.clone();
        etcd.campaign(advertise);
        let weak = Arc::downgrade(&self.shared);
        let mut role = self.shared.role.clone();
        let mut stop = self.shutdown_signal();
        tokio::spawn(async move {
            loop {
                let now = role.borrow_and_update().clone();
                let Some(shared) = weak.upgrade() else { return };
                let ctl = Controller { shared };
                match now {
                    Role::Leader { fence } => ctl.take_over(fence).await,
                    Role::Follower { .. } => ctl.step_down(),
                }
                let follower = !ctl.leading();
                let etcd = etcd.clone();
                drop(ctl);
                tokio::select! {
                    changed = role.changed() => if changed.is_err() { return },
                    _ = follow(weak.clone(), etcd), if follower => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        });
    }

    /// Elected: read the state again, begin an epoch, start the timers, accept writes.
    async fn take_over(&self, fence: i64) {
        if self.leading() {
            return;
        }
        let this = self.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            let loaded = this.shared.store.load()?;
            let (epoch, last, vns) = (loaded.epoch, loaded.last_seq, loaded.records.len());
            let ix = restore(&this.shared.cfg, loaded).map_err(|e| {
                crate::store::StoreError::Backend {
                    location: "stored state".into(),
                    source: Box::new(e),
                }
            })?;
            *lock(&this.shared.index) = ix;
            this.begin_epoch(epoch, last)?;
            Ok::<_, crate::store::StoreError>((epoch + 1, vns))
        })
        .await;
        match loaded {
            Ok(Ok((epoch, vns))) => {
                *lock(&self.shared.settle_until) = Some(Instant::now() + SETTLE_AGENTS);
                self.shared.leading.send_replace(true);
                tracing::info!(fence, vns, epoch, "took over as leader");
                self.start_timers();
            }
            Ok(Err(e)) => {
                tracing::error!(error = %format!("{:#}", anyhow::Error::new(e)), "cannot take over; staying a follower")
            }
            Err(_) => {}
        }
    }

    /// Not (or no longer) the leader: refuse writes and end the agents' sessions, so they find
    /// the leader.
    fn step_down(&self) {
        if self.shared.leading.send_replace(false) {
            tracing::warn!("no longer the leader; agents' sessions end");
        }
        // Dropping a slot ends its session (its command channel closes).
        lock(&self.shared.agents).clear();
    }

    /// Reads the store again into the index; publishes `seen` events afterwards.
    async fn reload(&self, seen: Vec<StoredEvent>) {
        let this = self.clone();
        let res = tokio::task::spawn_blocking(move || {
            let loaded = this.shared.store.load()?;
            if this.leading() {
                return Ok(());
            }
            match restore(&this.shared.cfg, loaded) {
                Ok(ix) => *lock(&this.shared.index) = ix,
                Err(e) => tracing::error!(error = %e, "the stored state does not restore"),
            }
            Ok::<_, crate::store::StoreError>(())
        })
        .await;
        if let Ok(Err(e)) = res {
            tracing::warn!(error = %format!("{:#}", anyhow::Error::new(e)), "cannot read the store");
        }
        self.shared.publisher.events(seen);
    }
}

/// A follower's loop: read the state, then again at every change, until the watch ends (then
/// the caller starts over).
async fn follow(weak: std::sync::Weak<super::Shared>, etcd: Arc<EtcdStore>) {
    let Some(shared) = weak.upgrade() else { return };
    Controller { shared }.reload(vec![]).await;
    let mut changes = etcd.follow();
    loop {
        let Some(first) = changes.recv().await else {
            break;
        };
        tokio::time::sleep(SETTLE).await;
        let mut seen = Vec::new();
        let mut failed = None;
        for msg in std::iter::once(first).chain(std::iter::from_fn(|| changes.try_recv().ok())) {
            match msg {
                Ok(s) => seen.extend(s),
                Err(e) => failed = Some(e),
            }
        }
        let Some(shared) = weak.upgrade() else { return };
        Controller { shared }.reload(seen).await;
        if let Some(e) = failed {
            tracing::warn!(error = %e, "watching the store");
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
}
