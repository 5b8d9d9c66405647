//! Updates of a held VN in place ([`Controller::update`]).
//!
//! Like a create: under the index lock the VN is read (at the generation the caller names, if
//! any), the quota is checked for the VN as it would become, and the residual without the VN's
//! own holdings is taken; outside the lock [`crate::core::replan::replan`] embeds only what does
//! not stay; under the lock again [`crate::core::index::Index::commit_replan`] checks it against
//! current usage and commits. A concurrent commit that took the capacity, or (without a
//! generation) a concurrent update of the same VN, makes it plan again (twice optimistically,
//! the third time under the lock). Unlike a create, the lock is held until the change is
//! durable, so that a failed write can be undone exactly ([`Index::revert_replan`]).

use std::sync::Arc;
use std::time::Instant;

use vnet_proto::v1 as pb;

use super::{Attempt, ControlError, Controller, desired_of, lock};
use crate::core::index::{CoreError, Index};
use crate::core::model::{ProviderId, VnReq};
use crate::core::record::VnRecord;
use crate::core::replan::{self, Avoid, Diff, Replan};
use crate::core::update::ReplanCommit;

/// What an update did (or, for a dry run, would do).
#[derive(Clone, Debug)]
pub struct UpdateOutcome {
    /// The VN after the update (as it would be, for a dry run; as it is, when nothing changes).
    pub rec: VnRecord,
    pub diff: Diff,
    /// False when the new spec changes nothing.
    pub changed: bool,
}

/// How an update is asked for (validated at the edge).
#[derive(Clone, Debug, Default)]
pub struct UpdateOpts {
    /// Apply only to this generation of the VN.
    pub generation: Option<u64>,
    pub dry_run: bool,
}

impl Controller {
    /// Updates the caller's VN `req.name` to `req` in place (see the module docs).
    #[tracing::instrument(skip_all, fields(provider = %req.provider, vn = %req.name))]
    pub async fn update(
        &self,
        req: VnReq,
        spec: pb::VnSpec,
        opts: UpdateOpts,
    ) -> Result<UpdateOutcome, ControlError> {
        let started = Instant::now();
        let algorithm = self.algorithm_for(&req);
        let spec_pb = prost::Message::encode_to_vec(&spec);
        let req = Arc::new(req);
        let dry_run = opts.dry_run;
        let out = self
            .optimistic("update", move |this, serialised| {
                this.update_attempt(&req, &algorithm, spec_pb.clone(), &opts, serialised)
            })
            .await;
        match &out {
            Ok(o) if o.changed && !dry_run => {
                self.metrics().updated(started.elapsed(), "updated");
                tracing::info!(vn_id = %o.rec.vn_id, generation = o.rec.generation, "updated");
            }
            Ok(_) => {}
            Err(_) => self.metrics().updated(started.elapsed(), "rejected"),
        }
        out.map_err(ControlError::from)
    }

    /// The VN to update, at the generation the caller names.
    fn update_base(ix: &Index, req: &VnReq, opts: &UpdateOpts) -> Result<VnRecord, ControlError> {
        let rec = ix
            .find(&req.provider, &req.name)
            .cloned()
            .ok_or_else(|| ControlError::NotFound(format!("VN {} not found", req.name)))?;
        if let Some(g) = opts.generation
            && g != rec.generation
        {
            return Err(ControlError::Aborted(format!(
                "VN {} changed meanwhile (it is at generation {}, the update was made for generation {g}): read it again and apply again",
                req.name, rec.generation
            )));
        }
        Ok(rec)
    }

    fn update_attempt(
        &self,
        req: &VnReq,
        algorithm: &str,
        spec_pb: Vec<u8>,
        opts: &UpdateOpts,
        serialised: bool,
    ) -> Result<UpdateOutcome, Attempt> {
        let shared = &self.shared;
        let mut guard = lock(&shared.index);
        let rec = Self::update_base(&guard, req, opts)?;
        self.check_quota_replacing(&guard, req, Some(&rec.vn_id))?;
        if req.parent.is_none() {
            Self::check_images(&guard, req)?;
        }
        let frame = guard.frame_except(req, Some(&rec.vn_id))?;
        let view = guard.replan_view(&frame, &rec.vn_id);
        let plan = |rec: &VnRecord| {
            self.embedding(req, "update", "; it stays as it was", || {
                let planner = shared.planner.as_ref();
                replan::replan(
                    rec,
                    &frame.req,
                    &view,
                    &Avoid::default(),
                    planner,
                    algorithm,
                )
            })
        };
        let planned: Replan = if serialised {
            plan(&rec)?
        } else {
            drop(guard);
            let p = plan(&rec)?;
            guard = lock(&shared.index);
            p
        };
        if frame.req == rec.req && planned.diff.is_noop() {
            return Ok(UpdateOutcome {
                rec,
                diff: planned.diff,
                changed: false,
            });
        }
        let commit = ReplanCommit {
            req: req.clone(),
            spec_pb,
            base_generation: rec.generation,
            cause: "spec updated".into(),
        };
        let old = guard.record(&rec.vn_id).cloned();
        // A dry run commits on a copy of the index: every check of a real update, nothing kept.
        let mut scratch = opts.dry_run.then(|| guard.clone());
        let ix = scratch.as_mut().unwrap_or(&mut guard);
        let (new, change) = match ix.commit_replan(&rec.vn_id, commit, &planned) {
            Ok(x) => x,
            Err(CoreError::Exhausted(why)) => return Err(Attempt::Conflict(why)),
            // Changed by a concurrent update since it was read: the caller who named no
            // generation gets a plan on the new one; one who did is told to read it again.
            Err(CoreError::Conflict(why)) if opts.generation.is_none() => {
                return Err(Attempt::Conflict(why));
            }
            Err(e) => return Err(Attempt::Error(e.into())),
        };
        if opts.dry_run {
            return Ok(UpdateOutcome {
                rec: new,
                diff: planned.diff,
                changed: true,
            });
        }
        let desired = desired_of(&guard, &change);
        let ack = shared.writer.send(change, None, desired);
        // Held until durable: a failed write is undone before anyone sees the new record.
        let persisted = ack
            .recv()
            .unwrap_or_else(|_| Err("the store writer is gone".to_string()));
        if let Err(e) = persisted {
            if let Some(old) = old {
                guard.revert_replan(old);
            }
            return Err(Attempt::Error(ControlError::Internal(format!(
                "cannot persist the update of VN {}: {e}",
                req.name
            ))));
        }
        Ok(UpdateOutcome {
            rec: new,
            diff: planned.diff,
            changed: true,
        })
    }

    /// Refuses `req` beyond its provider's quota, counting the VN `replaces` (the one it
    /// updates) once, as it would become.
    pub(super) fn check_quota_replacing(
        &self,
        ix: &Index,
        req: &VnReq,
        replaces: Option<&str>,
    ) -> Result<(), ControlError> {
        let quota = self.shared.credentials.quota(&req.provider.0);
        let used = Self::usage_except(ix, &req.provider, replaces);
        match quota.exceeded(&req.provider.0, &used, &Self::demand(req)) {
            Some(why) => Err(ControlError::Exhausted(why)),
            None => Ok(()),
        }
    }

    /// What `provider` holds, without the VN `except`.
    pub fn usage_except(ix: &Index, provider: &ProviderId, except: Option<&str>) -> super::Usage {
        let mut u = super::Usage::default();
        for r in ix.list(provider) {
            if r.status.holds_resources() && Some(r.vn_id.as_str()) != except {
                u.add(&Self::demand(&r.req));
            }
        }
        u
    }
}
