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

use crate::store::{EtcdStore, Role, Seq};

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
            this.shared
                .credentials
                .reload()
                .map_err(|e| crate::store::StoreError::Backend {
                    location: "credentials".into(),
                    source: Box::new(e),
                })?;
            // The old leader's last events may not have reached this follower's watchers yet.
            this.catch_up(last)?;
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

    /// Reads the store again into the index, then publishes the stored events this replica has
    /// not published yet.
    async fn reload(&self) {
        let this = self.clone();
        let res = tokio::task::spawn_blocking(move || {
            let loaded = this.shared.store.load()?;
            if this.leading() {
                return Ok(());
            }
            let last = loaded.last_seq;
            match restore(&this.shared.cfg, loaded) {
                Ok(ix) => *lock(&this.shared.index) = ix,
                Err(e) => tracing::error!(error = %e, "the stored state does not restore"),
            }
            if let Err(e) = this.shared.credentials.reload() {
                tracing::error!(error = %e, "cannot read the credentials; keeping the last read");
            }
            this.catch_up(last)
        })
        .await;
        if let Ok(Err(e)) = res {
            tracing::warn!(error = %format!("{:#}", anyhow::Error::new(e)), "cannot read the store");
        }
    }

    /// Publishes, in order, the stored events after the last one this replica published, up to
    /// `last` (read from the store, not from the watch: a watch that ends or a takeover drops
    /// what it carried). If the store trimmed some already, watchers of this replica could not
    /// resume from them: they get a snapshot, as watchers that lag do.
    fn catch_up(&self, last: Seq) -> Result<(), crate::store::StoreError> {
        let publisher = &self.shared.publisher;
        if let Some(events) = self
            .shared
            .store
            .events_between(publisher.last_seq(), last)?
        {
            publisher.events(events);
        }
        if publisher.last_seq() < last {
            tracing::warn!(
                from = publisher.last_seq(),
                to = last,
                "stored events trimmed before this replica published them; watchers restart"
            );
            publisher.resync(last);
        }
        Ok(())
    }
}

/// A follower's loop: read the state, then again at every change, until the watch ends (then
/// the caller starts over).
async fn follow(weak: std::sync::Weak<super::Shared>, etcd: Arc<EtcdStore>) {
    let Some(shared) = weak.upgrade() else { return };
    Controller { shared }.reload().await;
    let mut changes = etcd.follow();
    loop {
        let Some(first) = changes.recv().await else {
            break;
        };
        tokio::time::sleep(SETTLE).await;
        let mut failed = None;
        for msg in std::iter::once(first).chain(std::iter::from_fn(|| changes.try_recv().ok())) {
            if let Err(e) = msg {
                failed = Some(e);
            }
        }
        let Some(shared) = weak.upgrade() else { return };
        Controller { shared }.reload().await;
        if let Some(e) = failed {
            tracing::warn!(error = %e, "watching the store");
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
}
