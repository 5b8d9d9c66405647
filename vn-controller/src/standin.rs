//! A stand-in substrate agent for tests and benchmarks: it speaks `AgentControl` as a real agent
//! does (dials in, sends a hello, receives desired states, reports observed states and answers
//! exec commands on their own streams), but builds nothing. It reports every slice READY, or FAILED on demand, or
//! stays silent. Console sessions get one line naming the node and the tail asked for, end at
//! once unless they follow, and echo what is typed. It is a test double, never a substitute for
//! `substrate-agent`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use vnet_proto::v1 as pb;
use vnet_proto::v1::agent_control_client::AgentControlClient;

/// How the stand-in answers desired states.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Every slice READY.
    Ready,
    /// Every slice FAILED with this message.
    Fail(String),
    /// Slices whose label (`provider/name`) is listed fail with the message; others are READY.
    FailLabels(Vec<String>, String),
    /// No reports at all.
    Silent,
}

#[derive(Clone, Debug)]
pub struct StandInConfig {
    pub host_id: String,
    pub underlay_address: String,
    pub cpu: u64,
    pub memory_mb: u64,
    pub labels: Vec<String>,
    pub mtu: u32,
    pub applied_generation: u64,
    /// Guest images reported in the hello (default: one kernel image `default`).
    pub images: Vec<pb::GuestImage>,
    /// Guest architectures reported in the capabilities (default: `x86_64`).
    pub guest_archs: Vec<String>,
}

impl StandInConfig {
    pub fn new(host_id: &str, underlay_address: &str, cpu: u64, memory_mb: u64) -> Self {
        StandInConfig {
            host_id: host_id.into(),
            underlay_address: underlay_address.into(),
            cpu,
            memory_mb,
            labels: vec![],
            mtu: 1500,
            applied_generation: 0,
            images: vec![pb::GuestImage {
                name: "default".into(),
                format: "kernel".into(),
                arch: "x86_64".into(),
                size_bytes: 0,
                digest: String::new(),
            }],
            guest_archs: vec!["x86_64".into()],
        }
    }

    fn hello(&self) -> pb::AgentHello {
        pb::AgentHello {
            host_id: self.host_id.clone(),
            underlay_address: self.underlay_address.clone(),
            underlay: vec![pb::UnderlayInterface {
                name: "eth0".into(),
                addresses: vec![format!("{}/16", self.underlay_address)],
                mtu: self.mtu,
                mac: String::new(),
            }],
            capacity: Some(pb::Resources {
                cpu: self.cpu,
                memory_mb: self.memory_mb,
            }),
            node_kinds: vec![pb::NodeKind::Netns as i32, pb::NodeKind::Vm as i32],
            labels: self.labels.clone(),
            capabilities: Some(pb::Capabilities {
                netns: true,
                veth: true,
                vxlan: true,
                tc: true,
                vlan_datapath: "userspace".into(),
                impairment: "relay".into(),
                guest_archs: self.guest_archs.clone(),
                host_arch: "x86_64".into(),
                ..Default::default()
            }),
            agent_version: "stand-in".into(),
            applied_generation: self.applied_generation,
            boot_id: "stand-in".into(),
            images: self.images.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StandInError {
    #[error("cannot connect to {0}")]
    Connect(String, #[source] tonic::transport::Error),
    #[error("attach refused")]
    Attach(#[source] tonic::Status),
}

/// A running stand-in agent; dropping it closes its stream (the controller sees a detach).
pub struct StandIn {
    behaviour: Arc<Mutex<Behaviour>>,
    /// Messages to the controller on the current session (underlay reports sent by the test);
    /// weak, so that the session's request stream ends with the session.
    up: Arc<Mutex<Option<mpsc::WeakSender<pb::AgentMessage>>>>,
    /// The underlay probe configuration received.
    probe: Arc<Mutex<Option<pb::UnderlayProbe>>>,
    desired: watch::Receiver<Option<pb::DesiredState>>,
    attached: watch::Receiver<Option<String>>,
    consoles: Arc<Mutex<Vec<pb::controller_message::Msg>>>,
    task: tokio::task::JoinHandle<()>,
}

type StandInParts = (
    watch::Receiver<Option<pb::DesiredState>>,
    watch::Receiver<Option<String>>,
);

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn observed(d: &pb::DesiredState, b: &Behaviour) -> Option<pb::ObservedState> {
    let state = |label: &str| match b {
        Behaviour::Ready => (pb::SliceState::Ready, String::new()),
        Behaviour::Fail(m) => (pb::SliceState::Failed, m.clone()),
        Behaviour::FailLabels(labels, m) if labels.iter().any(|l| l == label) => {
            (pb::SliceState::Failed, m.clone())
        }
        Behaviour::FailLabels(..) => (pb::SliceState::Ready, String::new()),
        Behaviour::Silent => (pb::SliceState::Provisioning, String::new()),
    };
    if *b == Behaviour::Silent {
        return None;
    }
    let vns: Vec<pb::VnObserved> = d
        .vns
        .iter()
        .map(|s| {
            let (st, message) = state(&s.label);
            pb::VnObserved {
                vn_id: s.vn_id.clone(),
                state: st as i32,
                message,
            }
        })
        .collect();
    Some(pb::ObservedState {
        generation: d.generation,
        converged: vns.iter().all(|v| v.state == pb::SliceState::Ready as i32),
        vns,
        errors: vec![],
        applied: true,
        warnings: vec![],
    })
}

/// Serves an exec command: opens its stream, writes the node id and the command line (so that
/// tests can see it arrived intact), echoes stdin to stdout until end of file, exits 0.
async fn exec(
    mut client: AgentControlClient<tonic::transport::Channel>,
    host_id: String,
    c: pb::ExecCommand,
) {
    let (tx, rx) = mpsc::channel::<pb::ExecUp>(4);
    let up = |m| pb::ExecUp { msg: Some(m) };
    let _ = tx
        .send(up(pb::exec_up::Msg::Open(pb::ExecAgentOpen {
            host_id,
            request_id: c.request_id,
        })))
        .await;
    let _ = tx
        .send(up(pb::exec_up::Msg::Stdout(
            format!("{} {}\n", c.node_id, c.argv.join(" ")).into_bytes(),
        )))
        .await;
    let Ok(down) = client.exec(ReceiverStream::new(rx)).await else {
        return;
    };
    let mut down = down.into_inner();
    while let Ok(Some(m)) = down.message().await {
        let sent = match m.msg {
            Some(pb::exec_down::Msg::Stdin(d)) => {
                tx.send(up(pb::exec_up::Msg::Stdout(d))).await.is_ok()
            }
            Some(pb::exec_down::Msg::StdinEof(_)) => break,
            _ => true,
        };
        if !sent {
            return;
        }
    }
    let _ = tx
        .send(up(pb::exec_up::Msg::Exit(pb::ExecExit::default())))
        .await;
    // The controller ends the call after the exit.
    while let Ok(Some(_)) = down.message().await {}
}

/// What one session of a stand-in shares with the test.
#[derive(Clone)]
struct Shared {
    cfg: StandInConfig,
    behaviour: Arc<Mutex<Behaviour>>,
    desired: watch::Sender<Option<pb::DesiredState>>,
    consoles: Arc<Mutex<Vec<pb::controller_message::Msg>>>,
    up: Arc<Mutex<Option<mpsc::WeakSender<pb::AgentMessage>>>>,
    probe: Arc<Mutex<Option<pb::UnderlayProbe>>>,
    /// The controller the current session is attached to.
    attached: watch::Sender<Option<String>>,
}

/// Dials `endpoint` and attaches; the stream of the controller's messages.
async fn attach(
    endpoint: &str,
    cfg: &StandInConfig,
) -> Result<
    (
        AgentControlClient<tonic::transport::Channel>,
        mpsc::Sender<pb::AgentMessage>,
        tonic::Streaming<pb::ControllerMessage>,
    ),
    StandInError,
> {
    let mut client = AgentControlClient::connect(endpoint.to_string())
        .await
        .map_err(|e| StandInError::Connect(endpoint.to_string(), e))?;
    let (tx, rx) = mpsc::channel::<pb::AgentMessage>(16);
    tx.send(pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Hello(cfg.hello())),
    })
    .await
    .expect("receiver alive");
    let inbound = client
        .attach(ReceiverStream::new(rx))
        .await
        .map_err(StandInError::Attach)?
        .into_inner();
    Ok((client, tx, inbound))
}

/// Answers the controller's messages until the session ends.
async fn serve(
    sh: &Shared,
    client: AgentControlClient<tonic::transport::Channel>,
    tx: mpsc::Sender<pb::AgentMessage>,
    mut inbound: tonic::Streaming<pb::ControllerMessage>,
) {
    *sh.up.lock().expect("lock") = Some(tx.downgrade());
    while let Ok(Some(msg)) = inbound.message().await {
        match msg.msg {
            Some(pb::controller_message::Msg::Desired(d)) => {
                let report = observed(&d, &sh.behaviour.lock().expect("lock"));
                sh.desired.send_replace(Some(d));
                if let Some(o) = report {
                    let m = pb::AgentMessage {
                        msg: Some(pb::agent_message::Msg::Observed(o)),
                    };
                    if tx.send(m).await.is_err() {
                        break;
                    }
                }
            }
            Some(pb::controller_message::Msg::Exec(c)) => {
                tokio::spawn(exec(client.clone(), sh.cfg.host_id.clone(), c));
            }
            Some(pb::controller_message::Msg::Probe(p)) => {
                *sh.probe.lock().expect("lock") = Some(p);
            }
            Some(c @ pb::controller_message::Msg::ConsoleStart(_))
            | Some(c @ pb::controller_message::Msg::ConsoleInput(_))
            | Some(c @ pb::controller_message::Msg::ConsoleStop(_)) => {
                sh.consoles.lock().expect("lock").push(c.clone());
                for m in console_answers(c) {
                    if tx.send(m).await.is_err() {
                        return;
                    }
                }
            }
            None => {}
        }
    }
}

/// What the stand-in answers to a console message: a line naming the node, an echo of input.
fn console_answers(c: pb::controller_message::Msg) -> Vec<pb::AgentMessage> {
    let out = |session_id, data: Vec<u8>, end| pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::ConsoleOutput(pb::ConsoleOutput {
            session_id,
            data,
            end,
            error: String::new(),
        })),
    };
    match c {
        pb::controller_message::Msg::ConsoleStart(s) => {
            let line = format!("console of {} (tail {})\n", s.node_id, s.tail_bytes);
            let mut v = vec![out(s.session_id, line.into_bytes(), false)];
            if !s.follow {
                v.push(out(s.session_id, vec![], true));
            }
            v
        }
        pb::controller_message::Msg::ConsoleInput(i) => vec![out(i.session_id, i.data, false)],
        _ => vec![],
    }
}

impl StandIn {
    fn shared(cfg: StandInConfig, behaviour: Behaviour) -> (Shared, StandInParts) {
        let (dtx, drx) = watch::channel(None);
        let (atx, arx) = watch::channel(None);
        let sh = Shared {
            cfg,
            behaviour: Arc::new(Mutex::new(behaviour)),
            desired: dtx,
            consoles: Arc::new(Mutex::new(Vec::new())),
            up: Arc::new(Mutex::new(None)),
            probe: Arc::new(Mutex::new(None)),
            attached: atx,
        };
        (sh, (drx, arx))
    }

    fn assemble(sh: &Shared, parts: StandInParts, task: tokio::task::JoinHandle<()>) -> StandIn {
        StandIn {
            behaviour: sh.behaviour.clone(),
            up: sh.up.clone(),
            probe: sh.probe.clone(),
            desired: parts.0,
            attached: parts.1,
            consoles: sh.consoles.clone(),
            task,
        }
    }

    /// Dials `endpoint` (`http://host:port`) and attaches (one session: it does not reconnect).
    pub async fn connect(
        endpoint: &str,
        cfg: StandInConfig,
        behaviour: Behaviour,
    ) -> Result<StandIn, StandInError> {
        let (client, tx, inbound) = attach(endpoint, &cfg).await?;
        let (sh, parts) = Self::shared(cfg, behaviour);
        sh.attached.send_replace(Some(endpoint.to_string()));
        let sh2 = sh.clone();
        let task = tokio::spawn(async move { serve(&sh2, client, tx, inbound).await });
        Ok(Self::assemble(&sh, parts, task))
    }

    /// Like the real agent with several controller replicas (comma-separated `endpoints`):
    /// attaches to the leader, and after a refusal or the end of a session moves to the leader
    /// a follower named, else to the next replica, and attaches again.
    pub fn follow(endpoints: &str, cfg: StandInConfig, behaviour: Behaviour) -> StandIn {
        let replicas = vnet_proto::replicas::Replicas::parse(endpoints);
        let (sh, parts) = Self::shared(cfg, behaviour);
        let sh2 = sh.clone();
        let task = tokio::spawn(async move {
            loop {
                let at = replicas.current().to_string();
                let hint = match attach(&at, &sh2.cfg).await {
                    Ok((client, tx, inbound)) => {
                        sh2.attached.send_replace(Some(at.clone()));
                        serve(&sh2, client, tx, inbound).await;
                        sh2.attached.send_replace(None);
                        None
                    }
                    Err(StandInError::Attach(st)) => vnet_proto::replicas::leader_hint(&st),
                    Err(StandInError::Connect(..)) => None,
                };
                let to_leader = replicas.after_failure(hint.as_deref());
                let pause = if to_leader { 20 } else { 200 };
                tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
            }
        });
        Self::assemble(&sh, parts, task)
    }

    /// The controller this stand-in is attached to now.
    pub fn attached(&self) -> Option<String> {
        self.attached.borrow().clone()
    }

    /// Reports the state of underlay links as a real agent's probes would (`(link, up)`).
    pub async fn report_underlay(&self, links: &[(&str, bool)]) {
        let rep = pb::UnderlayReport {
            links: links
                .iter()
                .map(|(l, up)| pb::UnderlayLinkState {
                    link_id: l.to_string(),
                    up: *up,
                    detail: String::new(),
                })
                .collect(),
        };
        let m = pb::AgentMessage {
            msg: Some(pb::agent_message::Msg::Underlay(rep)),
        };
        let up = self
            .up
            .lock()
            .expect("lock")
            .as_ref()
            .and_then(|w| w.upgrade());
        // No session, or a closed one (the test dropped it): the test's business.
        if let Some(up) = up {
            let _ = up.send(m).await;
        }
    }

    /// The underlay probe configuration the controller sent.
    pub fn probe(&self) -> Option<pb::UnderlayProbe> {
        self.probe.lock().expect("lock").clone()
    }

    pub fn set_behaviour(&self, b: Behaviour) {
        *self.behaviour.lock().expect("lock") = b;
    }

    /// Every console message received (start, input, stop), in order.
    pub fn console_messages(&self) -> Vec<pb::controller_message::Msg> {
        self.consoles.lock().expect("lock").clone()
    }

    /// The last desired state received.
    pub fn desired(&self) -> Option<pb::DesiredState> {
        self.desired.borrow().clone()
    }

    /// Waits until a desired state satisfying `f` arrived (or `timeout` passed).
    pub async fn wait_desired(
        &self,
        timeout: Duration,
        f: impl Fn(&pb::DesiredState) -> bool,
    ) -> Option<pb::DesiredState> {
        let mut rx = self.desired.clone();
        let r = tokio::time::timeout(timeout, async {
            rx.wait_for(|d| d.as_ref().is_some_and(&f))
                .await
                .ok()
                .and_then(|d| d.clone())
        })
        .await;
        r.ok().flatten()
    }
}
