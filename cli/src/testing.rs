//! A stand-in controller for vnctl's in-process tests: the `VirtualNetworks` and `Substrate`
//! services on 127.0.0.1:0 with scripted behaviour (provisioning that becomes READY or FAILED,
//! deletion that hosts apply a little later, exec with a chosen exit code, a console that
//! prints one line of "boot log" and echoes what is typed, node `ns` being a netns node whose
//! console is refused). It records the provider metadata of every call, so tests can check that
//! identity travels.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status};
use vnet_proto::ACT_AS_METADATA_KEY;
use vnet_proto::v1 as pb;
use vnet_proto::v1::substrate_server::{Substrate, SubstrateServer};
use vnet_proto::v1::virtual_networks_server::{VirtualNetworks, VirtualNetworksServer};

/// How a created VN ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ready,
    Fail,
    /// Stays PROVISIONING forever.
    Hang,
    /// The first Create fails as `Fail`, every later one is `Ready`.
    FailOnce,
}

#[derive(Default)]
struct State {
    vns: BTreeMap<(String, String), pb::VirtualNetwork>,
    /// host -> (desired, observed)
    generations: BTreeMap<String, (u64, u64)>,
    providers_seen: Vec<Option<String>>,
    /// Bytes typed into consoles, in order.
    console_input: Vec<u8>,
    /// Creates accepted so far.
    creates: usize,
}

/// The stand-in. Cheap to clone; all clones share state.
#[derive(Clone)]
pub struct FakeController {
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<(String, pb::VnEvent)>,
    pub outcome: Outcome,
}

fn provider_of<T>(req: &Request<T>) -> Option<String> {
    req.metadata()
        .get(ACT_AS_METADATA_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

impl FakeController {
    pub fn new(outcome: Outcome) -> Self {
        let (events, _) = broadcast::channel(64);
        let mut state = State::default();
        for h in ["h1", "h2"] {
            state.generations.insert(h.into(), (1, 1));
        }
        FakeController {
            state: Arc::new(Mutex::new(state)),
            events,
            outcome,
        }
    }

    /// Serves on 127.0.0.1:0 until the test's runtime ends; returns the address.
    pub async fn serve(self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(VirtualNetworksServer::new(self.clone()))
                .add_service(SubstrateServer::new(self))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        addr
    }

    /// A new fake of `outcome`, served (see [`FakeController::serve`]), and the options of a
    /// client of it acting as `provider`.
    pub async fn serving(
        outcome: Outcome,
        provider: Option<&str>,
    ) -> (FakeController, crate::client::ControllerOpts) {
        let fake = FakeController::new(outcome);
        let controller = fake.clone().serve().await;
        let opts = crate::client::ControllerOpts {
            controller,
            provider: provider.map(str::to_owned),
            ..Default::default()
        };
        (fake, opts)
    }

    /// Everything typed into consoles so far.
    pub fn console_input(&self) -> Vec<u8> {
        self.state.lock().unwrap().console_input.clone()
    }

    /// Provider metadata of every call so far.
    /// Creates accepted so far.
    pub fn creates(&self) -> usize {
        self.state.lock().unwrap().creates
    }

    pub fn providers_seen(&self) -> Vec<Option<String>> {
        self.state.lock().unwrap().providers_seen.clone()
    }

    pub fn vn(&self, provider: &str, name: &str) -> Option<pb::VirtualNetwork> {
        self.state
            .lock()
            .unwrap()
            .vns
            .get(&(provider.into(), name.into()))
            .cloned()
    }

    fn identity<T>(&self, req: &Request<T>) -> Result<String, Status> {
        let p = provider_of(req);
        self.state.lock().unwrap().providers_seen.push(p.clone());
        p.ok_or_else(|| Status::unauthenticated("missing x-vnet-as"))
    }

    fn emit(
        &self,
        provider: &str,
        kind: pb::VnEventKind,
        name: &str,
        state: pb::VnState,
        msg: &str,
    ) {
        let ev = pb::VnEvent {
            kind: kind as i32,
            name: name.into(),
            state: state as i32,
            host: String::new(),
            message: msg.into(),
            unix_ms: 0,
            seq: 0,
        };
        let _ = self.events.send((provider.into(), ev));
    }

    fn set_state(&self, provider: &str, name: &str, state: pb::VnState, reason: &str) {
        if let Some(vn) = self
            .state
            .lock()
            .unwrap()
            .vns
            .get_mut(&(provider.into(), name.into()))
        {
            vn.state = state as i32;
            vn.reason = reason.into();
        }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::VnEvent, Status>> + Send>>;
type ConsoleStream = Pin<Box<dyn Stream<Item = Result<pb::ConsoleResponse, Status>> + Send>>;
type ExecStream = Pin<Box<dyn Stream<Item = Result<pb::ExecResponse, Status>> + Send>>;

#[tonic::async_trait]
impl VirtualNetworks for FakeController {
    async fn create(
        &self,
        req: Request<pb::CreateVnRequest>,
    ) -> Result<Response<pb::VirtualNetwork>, Status> {
        let provider = self.identity(&req)?;
        let spec = req
            .into_inner()
            .spec
            .ok_or_else(|| Status::invalid_argument("no spec"))?;
        if spec.nodes.iter().any(|n| n.cpu < 0) {
            return Err(Status::invalid_argument("nodes[0].cpu: must be >= 0"));
        }
        let name = spec.name.clone();
        let mut stored = spec.clone();
        stored.provider = provider.clone();
        let vn = pb::VirtualNetwork {
            name: name.clone(),
            provider: provider.clone(),
            spec: Some(stored),
            state: pb::VnState::Provisioning as i32,
            ..Default::default()
        };
        let nth = {
            let mut st = self.state.lock().unwrap();
            let key = (provider.clone(), name.clone());
            if st.vns.contains_key(&key) {
                return Err(Status::already_exists(format!("vn {name} exists")));
            }
            st.vns.insert(key, vn.clone());
            st.creates += 1;
            st.creates
        };
        let me = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            me.emit(
                &provider,
                pb::VnEventKind::HostProgress,
                &name,
                pb::VnState::Provisioning,
                "h1 ready",
            );
            let outcome = match me.outcome {
                Outcome::FailOnce if nth == 1 => Outcome::Fail,
                Outcome::FailOnce => Outcome::Ready,
                Outcome::Ready => Outcome::Ready,
                Outcome::Fail => Outcome::Fail,
                Outcome::Hang => Outcome::Hang,
            };
            match outcome {
                Outcome::Ready => {
                    me.set_state(&provider, &name, pb::VnState::Ready, "");
                    me.emit(
                        &provider,
                        pb::VnEventKind::Ready,
                        &name,
                        pb::VnState::Ready,
                        "",
                    );
                }
                Outcome::Fail => {
                    me.set_state(&provider, &name, pb::VnState::Failed, "h2: no tap");
                    me.emit(
                        &provider,
                        pb::VnEventKind::Failed,
                        &name,
                        pb::VnState::Failed,
                        "h2: no tap",
                    );
                }
                Outcome::Hang | Outcome::FailOnce => {}
            }
        });
        Ok(Response::new(vn))
    }

    /// Updates the stored spec (generation + 1); the plan compares nodes and links by name.
    async fn update(
        &self,
        req: Request<pb::UpdateVnRequest>,
    ) -> Result<Response<pb::UpdateVnResponse>, Status> {
        let provider = self.identity(&req)?;
        let r = req.into_inner();
        let mut spec = r.spec.ok_or_else(|| Status::invalid_argument("no spec"))?;
        spec.provider = provider.clone();
        let mut st = self.state.lock().unwrap();
        let vn = st
            .vns
            .get_mut(&(provider, spec.name.clone()))
            .ok_or_else(|| Status::not_found(format!("vn {} not found", spec.name)))?;
        if vn.generation == 0 {
            vn.generation = 1;
        }
        if r.generation != 0 && r.generation != vn.generation {
            return Err(Status::aborted(format!(
                "VN {} changed meanwhile (it is at generation {}): read it again",
                spec.name, vn.generation
            )));
        }
        let old = vn.spec.clone().unwrap_or_default();
        let item = |node: &str, ends: &[String], action: pb::PlanAction| pb::PlanItem {
            node: node.into(),
            endpoints: ends.to_vec(),
            action: action as i32,
            ..Default::default()
        };
        let mut plan = Vec::new();
        for n in &spec.nodes {
            let action = match old.nodes.iter().find(|o| o.name == n.name) {
                None => pb::PlanAction::Add,
                Some(o) if o == n => pb::PlanAction::Keep,
                Some(_) => pb::PlanAction::Change,
            };
            plan.push(item(&n.name, &[], action));
        }
        for o in old
            .nodes
            .iter()
            .filter(|o| !spec.nodes.iter().any(|n| n.name == o.name))
        {
            plan.push(item(&o.name, &[], pb::PlanAction::Remove));
        }
        for l in &spec.links {
            let action = match old.links.iter().find(|o| o.endpoints == l.endpoints) {
                None => pb::PlanAction::Add,
                Some(o) if o == l => pb::PlanAction::Keep,
                Some(_) => pb::PlanAction::Change,
            };
            plan.push(item("", &l.endpoints, action));
        }
        let changed = old != spec;
        let mut after = vn.clone();
        if changed {
            after.generation += 1;
            after.spec = Some(spec);
        }
        if changed && !r.dry_run {
            *vn = after.clone();
        }
        Ok(Response::new(pb::UpdateVnResponse {
            vn: Some(after),
            plan,
            changed,
        }))
    }

    async fn get(
        &self,
        req: Request<pb::GetVnRequest>,
    ) -> Result<Response<pb::VirtualNetwork>, Status> {
        let provider = self.identity(&req)?;
        let name = req.into_inner().name;
        // As the controller: a name is one provider's, never "provider/name".
        if name.contains('/') {
            return Err(Status::invalid_argument(format!(
                "name {name:?}: character '/' is not allowed"
            )));
        }
        self.vn(&provider, &name)
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("vn {name} not found")))
    }

    async fn list(
        &self,
        req: Request<pb::ListVnsRequest>,
    ) -> Result<Response<pb::ListVnsResponse>, Status> {
        let provider = self.identity(&req)?;
        let vns = self
            .state
            .lock()
            .unwrap()
            .vns
            .iter()
            .filter(|((p, _), _)| *p == provider)
            .map(|(_, v)| v.clone())
            .collect();
        Ok(Response::new(pb::ListVnsResponse { vns }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteVnRequest>,
    ) -> Result<Response<pb::DeleteVnResponse>, Status> {
        let provider = self.identity(&req)?;
        let name = req.into_inner().name;
        {
            let mut st = self.state.lock().unwrap();
            if st.vns.remove(&(provider.clone(), name.clone())).is_none() {
                return Err(Status::not_found(format!("vn {name} not found")));
            }
            // New desired state for every host; the hosts apply it a little later.
            for g in st.generations.values_mut() {
                g.0 += 1;
            }
        }
        self.emit(
            &provider,
            pb::VnEventKind::Deleted,
            &name,
            pb::VnState::Deleted,
            "",
        );
        let st = self.state.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            for g in st.lock().unwrap().generations.values_mut() {
                g.1 = g.0;
            }
        });
        Ok(Response::new(pb::DeleteVnResponse {
            deleted: vec![name],
        }))
    }

    type WatchStream = EventStream;

    async fn watch(
        &self,
        req: Request<pb::WatchVnsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let provider = self.identity(&req)?;
        let only = req.into_inner().name;
        let mut rx = self.events.subscribe();
        let (tx, out) = mpsc::channel(64);
        let snapshot: Vec<pb::VnEvent> = self
            .state
            .lock()
            .unwrap()
            .vns
            .iter()
            .filter(|((p, n), _)| *p == provider && (only.is_empty() || *n == only))
            .map(|(_, v)| pb::VnEvent {
                kind: pb::VnEventKind::Snapshot as i32,
                name: v.name.clone(),
                state: v.state,
                ..Default::default()
            })
            .collect();
        tokio::spawn(async move {
            for ev in snapshot {
                if tx.send(Ok(ev)).await.is_err() {
                    return;
                }
            }
            while let Ok((p, ev)) = rx.recv().await {
                if p == provider
                    && (only.is_empty() || ev.name == only)
                    && tx.send(Ok(ev)).await.is_err()
                {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }

    type ExecStream = ExecStream;

    /// Writes "VN/NODE: ARGV" to stdout, "to stderr" to stderr, echoes stdin to stdout until end
    /// of file, and exits with N for an argument `exit=N`.
    async fn exec(
        &self,
        req: Request<tonic::Streaming<pb::ExecRequest>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        self.identity(&req)?;
        let mut inbound = req.into_inner();
        let Some(pb::ExecRequest {
            msg: Some(pb::exec_request::Msg::Start(r)),
        }) = inbound.message().await?
        else {
            return Err(Status::invalid_argument(
                "the first message must be an ExecStart",
            ));
        };
        let code = r
            .argv
            .iter()
            .find_map(|a| a.strip_prefix("exit="))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let msg = |m| Ok(pb::ExecResponse { msg: Some(m) });
            let line = format!("{}/{}: {}\n", r.vn, r.node, r.argv.join(" "));
            let _ = tx
                .send(msg(pb::exec_response::Msg::Stdout(line.into_bytes())))
                .await;
            let _ = tx
                .send(msg(pb::exec_response::Msg::Stderr(b"to stderr\n".to_vec())))
                .await;
            while let Ok(Some(m)) = inbound.message().await {
                if let Some(pb::exec_request::Msg::Stdin(d)) = m.msg {
                    let _ = tx.send(msg(pb::exec_response::Msg::Stdout(d))).await;
                }
            }
            let exit = pb::ExecExit {
                exit_code: code,
                ..Default::default()
            };
            let _ = tx.send(msg(pb::exec_response::Msg::Exit(exit))).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type ConsoleStream = ConsoleStream;

    async fn console(
        &self,
        req: Request<tonic::Streaming<pb::ConsoleRequest>>,
    ) -> Result<Response<Self::ConsoleStream>, Status> {
        self.identity(&req)?;
        let mut inbound = req.into_inner();
        let Some(pb::ConsoleRequest {
            msg: Some(pb::console_request::Msg::Open(open)),
        }) = inbound.message().await?
        else {
            return Err(Status::invalid_argument("the first message must open"));
        };
        if open.node == "ns" {
            return Err(Status::failed_precondition(format!(
                "console is for vm nodes: node ns of VN {} is a netns node (use exec)",
                open.vn
            )));
        }
        let (tx, rx) = mpsc::channel(16);
        let line = format!(
            "boot log of {}/{} (tail {})\n",
            open.vn,
            open.node,
            open.tail_bytes.unwrap_or(65536)
        );
        tx.send(Ok(pb::ConsoleResponse {
            data: line.into_bytes(),
        }))
        .await
        .expect("fresh channel");
        let state = self.state.clone();
        tokio::spawn(async move {
            if !(open.follow || open.interactive) {
                return;
            }
            // Echo what is typed; keep the session open after the caller's half-close.
            while let Ok(Some(m)) = inbound.message().await {
                if let Some(pb::console_request::Msg::Input(data)) = m.msg {
                    state.lock().unwrap().console_input.extend_from_slice(&data);
                    if tx.send(Ok(pb::ConsoleResponse { data })).await.is_err() {
                        return;
                    }
                }
            }
            tx.closed().await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[tonic::async_trait]
impl Substrate for FakeController {
    async fn list_hosts(
        &self,
        _req: Request<pb::ListHostsRequest>,
    ) -> Result<Response<pb::ListHostsResponse>, Status> {
        let hosts = self
            .state
            .lock()
            .unwrap()
            .generations
            .iter()
            .map(|(id, (d, o))| pb::Host {
                id: id.clone(),
                connected: true,
                desired_generation: *d,
                observed_generation: *o,
                ..Default::default()
            })
            .collect();
        Ok(Response::new(pb::ListHostsResponse { hosts }))
    }

    async fn list_links(
        &self,
        _req: Request<pb::ListLinksRequest>,
    ) -> Result<Response<pb::ListLinksResponse>, Status> {
        Ok(Response::new(pb::ListLinksResponse::default()))
    }

    async fn get_topology(
        &self,
        _req: Request<pb::GetTopologyRequest>,
    ) -> Result<Response<pb::Topology>, Status> {
        Ok(Response::new(pb::Topology::default()))
    }

    /// One image, `default`, on every host.
    async fn list_images(
        &self,
        _req: Request<pb::ListImagesRequest>,
    ) -> Result<Response<pb::ListImagesResponse>, Status> {
        let hosts = self
            .state
            .lock()
            .unwrap()
            .generations
            .keys()
            .cloned()
            .collect();
        Ok(Response::new(pb::ListImagesResponse {
            images: vec![pb::ImageOffer {
                image: Some(pb::GuestImage {
                    name: "default".into(),
                    format: "kernel".into(),
                    arch: "x86_64".into(),
                    size_bytes: 4096,
                    digest: "sha256:0123".into(),
                }),
                hosts,
            }],
        }))
    }
}

/// Host generations as the stand-in reports them (desired, observed).
pub fn generations(fake: &FakeController) -> BTreeMap<String, (u64, u64)> {
    fake.state.lock().unwrap().generations.clone()
}
