//! Failure detection and recovery, and maintenance (cordon, drain): the timers and bookkeeping
//! around the pure decisions of [`crate::core::failover`].
//!
//! - A host is lost when its agent's session stays away `host_grace` after it ended (a newer
//!   session of the host cancels that).
//! - A substrate link is down when one of its ends' agents reports it down (their ICMP probes,
//!   `UnderlayReport`) and that lasts `link_grace`; it is up again when no end reports it down
//!   for `link_grace`. A host's reports go with its session.
//! - Then [`Controller::recover`] re-embeds every VN the fault touches whose decision is to
//!   re-embed (keeping what the fault does not touch: [`crate::core::replan`]) and holds the
//!   others degraded. A drain is the same with the host cordoned first.
//! - A VN that could not be re-embedded stays DEGRADED and is tried again every
//!   `recovery_retry` while its fault lasts (a host or capacity may have come meanwhile).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use vnet_proto::v1 as pb;

use std::time::Instant;

use super::{ControlError, Controller, Shared, lock};
use crate::core::failover::{Affected, Decision, Fault, touches};
use crate::core::index::{Change, CoreError};
use crate::core::replan::replan;
use crate::core::update::ReplanCommit;

/// How a re-embedding attempt ended without success.
enum Retry {
    /// A concurrent change took what the plan needed: plan again.
    Again(String),
    No(String),
}

fn rec_label(shared: &Shared, vn_id: &str) -> String {
    lock(&shared.index)
        .record(vn_id)
        .map_or_else(|| vn_id.to_string(), |r| r.label())
}

/// What the runtime tracks about faults.
#[derive(Default)]
pub(super) struct Faults {
    /// Hosts whose session ended: the epoch of that session and when it ended (ms).
    detached: HashMap<String, (u64, u64)>,
    /// Per link, per reporting host: whether its probes find the link up.
    reports: HashMap<String, BTreeMap<String, bool>>,
    /// Per link, the state a pending debounce timer waits to confirm, and its token.
    pending: HashMap<String, (bool, u64)>,
    /// When each link was first reported down (ms), for the recovery's timing.
    down_since: HashMap<String, u64>,
    next_token: u64,
    /// VNs a recovery could not re-embed: the fault and when it happened (ms).
    unrecovered: BTreeMap<String, (Fault, u64)>,
}

/// What a drain did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DrainOutcome {
    /// `provider/name: what moved`.
    pub moved: Vec<String>,
    /// `provider/name: why it stays`.
    pub remaining: Vec<String>,
}

impl Controller {
    /// The `UnderlayProbe` of `host`: its substrate links (IPv4 ends only).
    pub fn probe_config(&self, host: &str) -> pb::UnderlayProbe {
        let neighbors = self.with_index(|ix| ix.probe_neighbors(host));
        pb::UnderlayProbe {
            neighbors: neighbors
                .into_iter()
                .filter(|(_, _, l, r)| l.is_ipv4() && r.is_ipv4())
                .map(|(link_id, neighbor, l, r)| pb::UnderlayNeighbor {
                    link_id,
                    neighbor,
                    local_address: l.to_string(),
                    remote_address: r.to_string(),
                })
                .collect(),
            interval_ms: self.shared.cfg.probe_interval_ms,
            misses: self.shared.cfg.probe_misses,
        }
    }

    /// A new session of `host`: it is not lost (a pending grace timer finds it back).
    pub(super) fn host_back(&self, host: &str) {
        lock(&self.shared.faults).detached.remove(host);
    }

    /// The session `epoch` of `host` ended at `now_ms`: its link reports go, and the host is
    /// lost unless a new session comes within the grace period.
    pub(super) fn host_gone(&self, host: &str, epoch: u64, now_ms: u64) {
        let links: Vec<String> = {
            let mut f = lock(&self.shared.faults);
            f.detached.insert(host.to_string(), (epoch, now_ms));
            f.reports
                .iter_mut()
                .filter_map(|(l, r)| r.remove(host).map(|_| l.clone()))
                .collect()
        };
        for l in links {
            self.consider_link(&l);
        }
        let grace = self.shared.cfg.host_grace;
        let h = host.to_string();
        self.after(grace, move |ctl| async move {
            let lost = lock(&ctl.shared.faults).detached.get(&h) == Some(&(epoch, now_ms));
            if lost && !*ctl.shared.shutdown.borrow() {
                tracing::warn!(host = %h, ?grace, "host lost: re-embedding its VNs");
                ctl.recover(Fault::HostLost(h), now_ms).await;
            }
        });
    }

    /// An agent's `UnderlayReport`: the state of its links (others' links are ignored).
    pub fn underlay_report(&self, host: &str, rep: &pb::UnderlayReport) {
        let mine: Vec<String> = self.with_index(|ix| {
            ix.probe_neighbors(host)
                .into_iter()
                .map(|(l, ..)| l)
                .collect()
        });
        let mut changed = Vec::new();
        {
            let mut f = lock(&self.shared.faults);
            let now = crate::grpc::convert::now_ms();
            for s in &rep.links {
                if !mine.contains(&s.link_id) {
                    tracing::warn!(%host, link = %s.link_id, "report about a link not of this host, ignored");
                    continue;
                }
                let r = f.reports.entry(s.link_id.clone()).or_default();
                if r.insert(host.to_string(), s.up) != Some(s.up) {
                    tracing::info!(%host, link = %s.link_id, up = s.up, detail = %s.detail, "underlay link report");
                    changed.push(s.link_id.clone());
                    if !s.up {
                        f.down_since.entry(s.link_id.clone()).or_insert(now);
                    }
                }
            }
        }
        for l in changed {
            self.consider_link(&l);
        }
    }

    /// Starts (or keeps) a debounce timer when the reports of `link` disagree with its state.
    fn consider_link(&self, link: &str) {
        let reported_down = {
            let f = lock(&self.shared.faults);
            f.reports
                .get(link)
                .is_some_and(|r| r.values().any(|up| !up))
        };
        let is_down = self.with_index(|ix| ix.registry.is_link_down(link));
        let mut f = lock(&self.shared.faults);
        if reported_down == is_down {
            f.pending.remove(link);
            if !is_down {
                f.down_since.remove(link);
            }
            return;
        }
        if f.pending
            .get(link)
            .is_some_and(|(d, _)| *d == reported_down)
        {
            return;
        }
        f.next_token += 1;
        let token = f.next_token;
        f.pending.insert(link.to_string(), (reported_down, token));
        drop(f);
        let grace = self.shared.cfg.link_grace;
        let l = link.to_string();
        self.after(grace, move |ctl| async move {
            let since = {
                let mut f = lock(&ctl.shared.faults);
                if f.pending.get(&l) != Some(&(reported_down, token)) {
                    return;
                }
                f.pending.remove(&l);
                f.down_since.get(&l).copied()
            };
            let l2 = l.clone();
            ctl.mutate(move |ix| ((), ix.set_link_down(&l2, reported_down)))
                .await;
            if reported_down {
                tracing::warn!(link = %l, ?grace, "substrate link down: rerouting what crosses it");
                let since = since.unwrap_or_else(crate::grpc::convert::now_ms);
                ctl.recover(Fault::LinkDown(l), since).await;
            } else {
                tracing::info!(link = %l, "substrate link up again");
            }
        });
    }

    /// Re-embeds what `fault` (which happened at `fault_ms`) touches, by each VN's decision;
    /// holds the others. Returns each VN's outcome: what moved, or why it stays.
    pub(super) async fn recover(&self, fault: Fault, fault_ms: u64) -> DrainOutcome {
        let f = fault.clone();
        let affected: Vec<Affected> = self
            .mutate(move |ix| {
                let a = ix.affected(&f);
                let change = ix.hold(&f, &a);
                (a, change)
            })
            .await
            .unwrap_or_default();
        let mut out = DrainOutcome::default();
        for a in affected {
            match a.decision {
                Decision::Wait(why) => out.remaining.push(format!("{}: {why}", a.label)),
                Decision::Reembed => match self.reembed(&a.vn_id, &fault, fault_ms).await {
                    Ok(moved) => {
                        lock(&self.shared.faults).unrecovered.remove(&a.vn_id);
                        out.moved.push(format!("{}: {moved}", a.label));
                    }
                    Err(why) => {
                        lock(&self.shared.faults)
                            .unrecovered
                            .insert(a.vn_id.clone(), (fault.clone(), fault_ms));
                        tracing::warn!(vn = %a.label, cause = %fault.cause(), %why, "cannot re-embed");
                        let reason = format!("{}: cannot re-embed: {why}", fault.cause());
                        let id = a.vn_id.clone();
                        self.mutate(move |ix| ((), ix.degrade_vn(&id, &reason)))
                            .await;
                        out.remaining.push(format!("{}: {why}", a.label));
                    }
                },
            }
        }
        out
    }

    /// Every `recovery_retry`, re-embeds again the VNs a recovery could not, while their fault
    /// lasts; a VN whose fault ended (the host or link is back) recovers in place and is dropped.
    pub(super) fn spawn_recovery_retry(&self) {
        let weak = Arc::downgrade(&self.shared);
        let every = self.shared.cfg.recovery_retry;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(shared) = weak.upgrade() else { return };
                let ctl = Controller { shared };
                if *ctl.shared.shutdown.borrow() {
                    return;
                }
                if ctl.leading() {
                    ctl.retry_unrecovered().await;
                }
            }
        });
    }

    async fn retry_unrecovered(&self) {
        let pending: Vec<(String, Fault, u64)> = lock(&self.shared.faults)
            .unrecovered
            .iter()
            .map(|(v, (f, ms))| (v.clone(), f.clone(), *ms))
            .collect();
        for (vn_id, fault, fault_ms) in pending {
            let lasts = self.fault_lasts(&fault);
            let done = lasts && self.reembed(&vn_id, &fault, fault_ms).await.is_ok();
            if !lasts || done {
                lock(&self.shared.faults).unrecovered.remove(&vn_id);
            }
            if done {
                tracing::info!(vn = %rec_label(&self.shared, &vn_id), cause = %fault.cause(), "re-embedded on a later attempt");
            }
        }
    }

    /// Whether `fault` still holds: the host still away (or cordoned, for a drain), the link
    /// still down.
    fn fault_lasts(&self, fault: &Fault) -> bool {
        match fault {
            Fault::HostLost(h) => lock(&self.shared.faults).detached.contains_key(h),
            Fault::LinkDown(l) => self.with_index(|ix| ix.registry.is_link_down(l)),
            Fault::Drain(h) => self.with_index(|ix| ix.registry.is_cordoned(h)),
        }
    }

    /// Re-embeds the VN `vn_id` away from `fault`, keeping what the fault does not touch: replan
    /// outside the lock on a view without the VN's own holdings, commit under it (again when a
    /// concurrent change took what the plan needed). Returns what moved.
    async fn reembed(&self, vn_id: &str, fault: &Fault, fault_ms: u64) -> Result<String, String> {
        const ATTEMPTS: usize = 3;
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            let (this, id, f) = (self.clone(), vn_id.to_string(), fault.clone());
            let out = tokio::task::spawn_blocking(move || this.reembed_attempt(&id, &f, fault_ms))
                .await
                .map_err(|e| format!("re-embedding task failed: {e}"))?;
            match out {
                Ok(moved) => return Ok(moved),
                Err(Retry::Again(why)) => {
                    tracing::debug!(vn = %vn_id, attempt, %why, "re-embedding conflict, again");
                    last = why;
                }
                Err(Retry::No(why)) => return Err(why),
            }
        }
        Err(last)
    }

    fn reembed_attempt(&self, vn_id: &str, fault: &Fault, fault_ms: u64) -> Result<String, Retry> {
        let shared = &self.shared;
        let (rec, frame, view) = {
            let ix = lock(&shared.index);
            let rec = ix
                .record(vn_id)
                .cloned()
                .ok_or_else(|| Retry::No("it was deleted meanwhile".into()))?;
            if !touches(&rec, fault) {
                return Ok("nothing left to move".into());
            }
            let frame = ix
                .frame_except(&rec.req, Some(vn_id))
                .map_err(|e| Retry::No(e.to_string()))?;
            let view = ix.replan_view(&frame, vn_id);
            (rec, frame, view)
        };
        let algorithm = rec
            .req
            .algorithm
            .clone()
            .or_else(|| shared.cfg.algorithm.clone())
            .unwrap_or_else(|| shared.planner.default_algorithm().to_string());
        let t = Instant::now();
        let plan = replan(
            &rec,
            &frame.req,
            &view,
            &fault.avoid(),
            shared.planner.as_ref(),
            &algorithm,
        )
        .map_err(Retry::No)?;
        shared.publisher.metrics.embedded(t.elapsed());
        let moved = plan.diff.moved();
        let commit = ReplanCommit {
            req: rec.req.clone(),
            spec_pb: rec.spec_pb.clone(),
            base_generation: rec.generation,
            cause: fault.cause(),
        };
        let mut ix = lock(&shared.index);
        let (_, mut change) = match ix.commit_replan(vn_id, commit, &plan) {
            Ok(x) => x,
            Err(CoreError::Conflict(why) | CoreError::Exhausted(why)) => {
                return Err(Retry::Again(why));
            }
            Err(e) => return Err(Retry::No(e.to_string())),
        };
        let now = crate::grpc::convert::now_ms();
        ix.note_recovery(vn_id, fault, moved.clone(), fault_ms, now, &mut change);
        let desired = super::desired_of(&ix, &change);
        let ack = shared.writer.send(change, None, desired);
        drop(ix);
        let persisted = ack
            .recv()
            .unwrap_or_else(|_| Err("the store writer is gone".to_string()));
        match persisted {
            Ok(()) => {}
            Err(e) => {
                lock(&shared.index).revert_replan(rec);
                return Err(Retry::No(format!("cannot persist the re-embedding: {e}")));
            }
        }
        tracing::info!(vn = %rec_label(&self.shared, vn_id), cause = %fault.cause(), ?moved, after_ms = now.saturating_sub(fault_ms), "re-embedded");
        Ok(if moved.is_empty() {
            "nothing moved".into()
        } else {
            moved.join("; ")
        })
    }

    /// Cordons (or uncordons) `host`: persisted with the host's record.
    pub async fn cordon(&self, host: &str, cordoned: bool) -> Result<(), ControlError> {
        let h = host.to_string();
        let this = self.clone();
        let r = tokio::task::spawn_blocking(move || {
            let mut ix = lock(&this.shared.index);
            let info = ix.cordon(&h, cordoned)?;
            let ack = this
                .shared
                .writer
                .send(Change::default(), Some(info), vec![]);
            drop(ix);
            ack.recv()
                .unwrap_or_else(|_| Err("the store writer is gone".into()))
                .map_err(|e| ControlError::Internal(format!("cannot persist host {h}: {e}")))
        })
        .await
        .map_err(|e| ControlError::Internal(format!("cordon task failed: {e}")))?;
        tracing::info!(%host, cordoned, "host cordon changed");
        r
    }

    /// Cordons `host` and moves every VN off it.
    pub async fn drain(&self, host: &str) -> Result<DrainOutcome, ControlError> {
        self.cordon(host, true).await?;
        tracing::info!(%host, "draining");
        Ok(self
            .recover(
                Fault::Drain(host.to_string()),
                crate::grpc::convert::now_ms(),
            )
            .await)
    }
}
