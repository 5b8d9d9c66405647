//! `vnet.v1.VirtualNetworks`: the service providers' API.

use std::pin::Pin;

use futures::Stream;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use vnet_proto::v1 as pb;
use vnet_proto::v1::virtual_networks_server::VirtualNetworks;

use crate::core::model::ProviderId;
use crate::core::record::VnRecord;
use crate::runtime::controller::{Controller, UpdateOpts};

use super::{convert, identity, status, validate};

#[derive(Clone, Debug)]
pub struct VnService {
    ctl: Controller,
}

impl VnService {
    pub fn new(ctl: Controller) -> Self {
        VnService { ctl }
    }

    /// A VN as `caller` sees it: its record, its children, and for a nestable VN what they use
    /// of each of its nodes and links.
    fn present(&self, rec: &VnRecord, caller: &ProviderId) -> pb::VirtualNetwork {
        let mut vn = convert::vn(rec);
        self.ctl.with_index(|ix| {
            vn.children = ix.children_of(&rec.vn_id, caller);
            convert::guest_placements(&mut vn, rec, &ix.registry);
            if rec.req.nestable {
                convert::children_use(&mut vn, rec, ix.nests().usage(&rec.vn_id));
            }
        });
        vn
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::VnEvent, Status>> + Send>>;

/// The caller's VNs now (`name`: only that one), each standing for the events up to `seq`.
fn snapshot(ctl: &Controller, provider: &ProviderId, name: &str, seq: u64) -> Vec<pb::VnEvent> {
    ctl.list(provider)
        .iter()
        .filter(|r| name.is_empty() || r.name() == name)
        .map(|r| convert::snapshot(r, seq))
        .collect()
}

/// Sends `events` in order to a watcher; false once it is gone.
async fn send_all(
    tx: &mpsc::Sender<Result<pb::VnEvent, Status>>,
    events: Vec<pb::VnEvent>,
) -> bool {
    for e in events {
        if tx.send(Ok(e)).await.is_err() {
            return false;
        }
    }
    true
}

/// Where a watch starts: a snapshot (`after` 0, or events after it trimmed already), or the
/// stored events after `after` up to the last published one. Returns them and the number of the
/// last event they cover.
async fn watch_start(
    ctl: &Controller,
    caller: &ProviderId,
    name: &str,
    after: u64,
) -> Result<(Vec<pb::VnEvent>, u64), Status> {
    if after > 0 {
        let c = ctl.clone();
        let stored = tokio::task::spawn_blocking(move || c.events_after(after))
            .await
            .map_err(|e| Status::internal(format!("reading stored events: {e}")))?
            .map_err(status)?;
        match stored {
            Some(events) => {
                let last = events.last().map_or(after, |e| e.seq);
                let mine = events
                    .iter()
                    .filter(|e| {
                        e.event.provider == *caller && (name.is_empty() || e.event.name == name)
                    })
                    .map(convert::event)
                    .collect();
                return Ok((mine, last));
            }
            None => tracing::debug!(
                after,
                "events after the resume point were trimmed, sending a snapshot"
            ),
        }
    }
    let seq = ctl.last_seq();
    Ok((snapshot(ctl, caller, name, seq), seq))
}

#[tonic::async_trait]
impl VirtualNetworks for VnService {
    #[tracing::instrument(skip_all)]
    async fn create(
        &self,
        req: Request<pb::CreateVnRequest>,
    ) -> Result<Response<pb::VirtualNetwork>, Status> {
        let caller = identity::provider(&self.ctl, &req)?;
        let algorithms = self.ctl.algorithms();
        let (vn, spec) = validate::vn_spec(req.into_inner().spec, &caller, &algorithms)?;
        let rec = self.ctl.create(vn, spec).await.map_err(status)?;
        Ok(Response::new(convert::vn(&rec)))
    }

    #[tracing::instrument(skip_all)]
    async fn get(
        &self,
        req: Request<pb::GetVnRequest>,
    ) -> Result<Response<pb::VirtualNetwork>, Status> {
        let caller = identity::provider(&self.ctl, &req)?;
        let name = req.into_inner().name;
        validate::vn_name(&name, "name")?;
        let rec = self.ctl.get(&caller, &name).map_err(status)?;
        Ok(Response::new(self.present(&rec, &caller)))
    }

    #[tracing::instrument(skip_all)]
    async fn list(
        &self,
        req: Request<pb::ListVnsRequest>,
    ) -> Result<Response<pb::ListVnsResponse>, Status> {
        let caller = identity::provider(&self.ctl, &req)?;
        let vns = self
            .ctl
            .list(&caller)
            .iter()
            .map(|rec| self.present(rec, &caller))
            .collect();
        Ok(Response::new(pb::ListVnsResponse { vns }))
    }

    #[tracing::instrument(skip_all)]
    async fn delete(
        &self,
        req: Request<pb::DeleteVnRequest>,
    ) -> Result<Response<pb::DeleteVnResponse>, Status> {
        let caller = identity::provider(&self.ctl, &req)?;
        let pb::DeleteVnRequest { name, cascade } = req.into_inner();
        validate::vn_name(&name, "name")?;
        let deleted = self
            .ctl
            .delete(&caller, &name, cascade)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeleteVnResponse { deleted }))
    }

    type WatchStream = EventStream;

    #[tracing::instrument(skip_all)]
    async fn watch(
        &self,
        req: Request<pb::WatchVnsRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let caller = identity::provider(&self.ctl, &req)?;
        let pb::WatchVnsRequest { name, after_seq } = req.into_inner();
        if !name.is_empty() {
            // A name the caller does not have (yet) is watched for its creation: only the
            // caller's own events ever flow, so another provider's VN of that name shows nothing.
            validate::vn_name(&name, "name")?;
        }
        // Subscribe before the snapshot (or the stored events) so that nothing falls between;
        // what both hold is skipped by number.
        let mut events = self.ctl.subscribe();
        let mut resync = self.ctl.resync_signal();
        let mut shutdown = self.ctl.shutdown_signal();
        let (initial, mut last) = watch_start(&self.ctl, &caller, &name, after_seq).await?;
        let (tx, rx) = mpsc::channel(256);
        let ctl = self.ctl.clone();
        tokio::spawn(async move {
            if !send_all(&tx, initial).await {
                return;
            }
            loop {
                tokio::select! {
                    ev = events.recv() => match ev {
                        Ok(e) => {
                            if e.seq <= last {
                                continue;
                            }
                            last = e.seq;
                            let ev = &e.event;
                            if ev.provider != caller || (!name.is_empty() && ev.name != name) {
                                continue;
                            }
                            if tx.send(Ok(convert::event(&e))).await.is_err() {
                                return;
                            }
                        }
                        // Too slow: start over from a fresh snapshot rather than miss events.
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::debug!(missed = n, "watcher lagged, sending a snapshot");
                            last = ctl.last_seq();
                            if !send_all(&tx, snapshot(&ctl, &caller, &name, last)).await {
                                return;
                            }
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    // This replica skipped events it could not read: the same as a lag.
                    Ok(()) = resync.changed() => {
                        last = ctl.last_seq();
                        if !send_all(&tx, snapshot(&ctl, &caller, &name, last)).await {
                            return;
                        }
                    }
                    _ = async { let _ = shutdown.wait_for(|s| *s).await; } => {
                        let _ = tx.send(Err(Status::unavailable("controller is shutting down"))).await;
                        return;
                    }
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type ExecStream = super::exec::ExecStream;

    #[tracing::instrument(skip_all)]
    async fn exec(
        &self,
        req: Request<tonic::Streaming<pb::ExecRequest>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        super::exec::serve(&self.ctl, req).await
    }

    type ConsoleStream = super::console::ConsoleStream;

    #[tracing::instrument(skip_all)]
    async fn console(
        &self,
        req: Request<tonic::Streaming<pb::ConsoleRequest>>,
    ) -> Result<Response<Self::ConsoleStream>, Status> {
        super::console::serve(&self.ctl, req).await
    }

    #[tracing::instrument(skip_all)]
    async fn update(
        &self,
        req: Request<pb::UpdateVnRequest>,
    ) -> Result<Response<pb::UpdateVnResponse>, Status> {
        let caller = identity::provider(&self.ctl, &req)?;
        let algorithms = self.ctl.algorithms();
        let pb::UpdateVnRequest {
            spec,
            generation,
            dry_run,
        } = req.into_inner();
        let (vn, spec) = validate::vn_spec(spec, &caller, &algorithms)?;
        let opts = UpdateOpts {
            generation: (generation > 0).then_some(generation),
            dry_run,
        };
        let out = self.ctl.update(vn, spec, opts).await.map_err(status)?;
        Ok(Response::new(pb::UpdateVnResponse {
            vn: Some(self.present(&out.rec, &caller)),
            plan: convert::plan(&out.diff),
            changed: out.changed,
        }))
    }
}
