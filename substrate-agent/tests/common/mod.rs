//! Harness of the root integration tests: host namespaces joined by underlay veths, a fake
//! controller (a real tonic `AgentControl` server) in its own namespace with a management veth to
//! every host, and the real `substrate-agent` binary started with `--netns` into each host.
//!
//! Every name carries a per-test tag (test letter + pid), so tests run in parallel with each
//! other and with other people's tests. Everything is removed by `Drop`, also on panic.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use vnet_proto::v1 as pb;
use vnet_proto::v1::agent_control_server::{AgentControl, AgentControlServer};

/// True when the calling test may run; prints SKIP with the test's name otherwise (fails under
/// VNET_REQUIRE_ROOT=1). The test harness names each test's thread after the test.
pub fn root_or_skip() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let current = std::thread::current();
    let test = current.name().unwrap_or("a root test");
    if std::env::var("VNET_REQUIRE_ROOT").as_deref() == Ok("1") {
        panic!("{test}: needs root (VNET_REQUIRE_ROOT=1)");
    }
    println!("SKIP {test}: not root");
    false
}

/// Runs a shell command, panicking with its output when it fails.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().expect("sh");
    if !out.status.success() {
        panic!(
            "command failed: {cmd}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a shell command, returning success and combined output.
pub fn sh_ok(cmd: &str) -> (bool, String) {
    let out = Command::new("sh").arg("-c").arg(cmd).output().expect("sh");
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), s)
}

// ---------------------------------------------------------------- fake controller

#[derive(Default)]
struct HostState {
    desired: Option<pb::DesiredState>,
    tx: Option<mpsc::Sender<Result<pb::ControllerMessage, Status>>>,
    hello: Option<pb::AgentHello>,
    attaches: u32,
    observed: Vec<pb::ObservedState>,
    exec: HashMap<u64, ExecResult>,
    /// stdin of commands sent, by request id, until their stream opens.
    exec_stdin: HashMap<u64, Vec<u8>>,
}

/// A command's outcome as the fake controller collected it from the agent's exec stream.
#[derive(Clone, Debug, Default)]
pub struct ExecResult {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub error: String,
}

#[derive(Default)]
struct Shared {
    hosts: Mutex<HashMap<String, HostState>>,
    cv: Condvar,
}

#[derive(Clone)]
struct Svc(Arc<Shared>);

#[tonic::async_trait]
impl AgentControl for Svc {
    type AttachStream = ReceiverStream<Result<pb::ControllerMessage, Status>>;

    async fn attach(
        &self,
        req: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let mut inbound = req.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty stream"))?;
        let Some(pb::agent_message::Msg::Hello(hello)) = first.msg else {
            return Err(Status::invalid_argument("first message must be a hello"));
        };
        let host = hello.host_id.clone();
        let (tx, rx) = mpsc::channel(16);
        {
            let mut hosts = self.0.hosts.lock().unwrap();
            let h = hosts.entry(host.clone()).or_default();
            h.hello = Some(hello);
            h.attaches += 1;
            h.tx = Some(tx.clone());
            if let Some(d) = &h.desired {
                let _ = tx.try_send(Ok(pb::ControllerMessage {
                    msg: Some(pb::controller_message::Msg::Desired(d.clone())),
                }));
            }
        }
        self.0.cv.notify_all();
        let shared = self.0.clone();
        tokio::spawn(async move {
            while let Ok(Some(m)) = inbound.message().await {
                let mut hosts = shared.hosts.lock().unwrap();
                let h = hosts.entry(host.clone()).or_default();
                if let Some(pb::agent_message::Msg::Observed(o)) = m.msg {
                    h.observed.push(o);
                }
                drop(hosts);
                shared.cv.notify_all();
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type ExecStream = ReceiverStream<Result<pb::ExecDown, Status>>;

    /// Sends the command's stdin and end of file, collects its output until the exit.
    async fn exec(
        &self,
        req: Request<Streaming<pb::ExecUp>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        let mut inbound = req.into_inner();
        let Some(pb::ExecUp {
            msg: Some(pb::exec_up::Msg::Open(open)),
        }) = inbound.message().await?
        else {
            return Err(Status::invalid_argument("first message must be an open"));
        };
        let stdin = {
            let mut hosts = self.0.hosts.lock().unwrap();
            let h = hosts.entry(open.host_id.clone()).or_default();
            h.exec_stdin.remove(&open.request_id)
        }
        .ok_or_else(|| Status::not_found("no such command"))?;
        let (tx, rx) = mpsc::channel(4);
        let down = |m| Ok(pb::ExecDown { msg: Some(m) });
        if !stdin.is_empty() {
            tx.send(down(pb::exec_down::Msg::Stdin(stdin)))
                .await
                .unwrap();
        }
        tx.send(down(pb::exec_down::Msg::StdinEof(true)))
            .await
            .unwrap();
        let shared = self.0.clone();
        tokio::spawn(async move {
            let _keep = tx;
            let mut r = ExecResult::default();
            loop {
                match inbound.message().await {
                    Ok(Some(pb::ExecUp { msg: Some(m) })) => match m {
                        pb::exec_up::Msg::Stdout(d) => r.stdout.extend(d),
                        pb::exec_up::Msg::Stderr(d) => r.stderr.extend(d),
                        pb::exec_up::Msg::Exit(e) => {
                            r.exit_code = e.exit_code;
                            r.error = e.error;
                            break;
                        }
                        pb::exec_up::Msg::Open(_) => {}
                    },
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => {
                        r.exit_code = -1;
                        r.error = "the agent's exec stream ended without an exit".into();
                        break;
                    }
                }
            }
            let mut hosts = shared.hosts.lock().unwrap();
            hosts
                .entry(open.host_id)
                .or_default()
                .exec
                .insert(open.request_id, r);
            drop(hosts);
            shared.cv.notify_all();
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// The fake controller, serving in its own namespace.
pub struct FakeController {
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    next_exec: Mutex<u64>,
}

/// Whether `o` is the outcome of applying `generation` (not the notice that the agent started).
fn is_final(o: &pb::ObservedState, generation: u64) -> bool {
    o.generation == generation && o.applied
}

impl FakeController {
    /// Serves on `addr` inside the named namespace `netns`.
    pub fn start(netns: &str, addr: SocketAddr) -> Self {
        let shared = Arc::new(Shared::default());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let svc = Svc(shared.clone());
        let ns = netns.to_string();
        let thread = std::thread::spawn(move || {
            let f = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let l = std::net::TcpListener::bind(addr).unwrap();
            l.set_nonblocking(true).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let l = tokio::net::TcpListener::from_std(l).unwrap();
                ready_tx.send(()).unwrap();
                let server = tonic::transport::Server::builder()
                    .add_service(AgentControlServer::new(svc))
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l));
                // Stop at once, like a crashed controller: open Attach streams are cut (a
                // graceful shutdown would wait for the agents to hang up).
                tokio::select! {
                    r = server => r.unwrap(),
                    _ = stop_rx => {}
                }
            });
            // Dropping the runtime cancels every connection task.
            drop(rt);
        });
        ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        FakeController {
            shared,
            stop: Some(stop_tx),
            thread: Some(thread),
            next_exec: Mutex::new(1),
        }
    }

    /// Sets a host's desired state and sends it if the agent is attached.
    pub fn set_desired(&self, host: &str, d: pb::DesiredState) {
        let mut hosts = self.shared.hosts.lock().unwrap();
        let h = hosts.entry(host.to_string()).or_default();
        h.desired = Some(d.clone());
        if let Some(tx) = &h.tx {
            let _ = tx.try_send(Ok(pb::ControllerMessage {
                msg: Some(pb::controller_message::Msg::Desired(d)),
            }));
        }
    }

    fn wait<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut(&mut HashMap<String, HostState>) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        let mut hosts = self.shared.hosts.lock().unwrap();
        loop {
            if let Some(t) = f(&mut hosts) {
                return t;
            }
            let now = Instant::now();
            if now >= deadline {
                let seen: Vec<String> = hosts
                    .iter()
                    .map(|(k, h)| {
                        format!(
                            "{k}: attaches {} observed {:?}",
                            h.attaches,
                            h.observed.last()
                        )
                    })
                    .collect();
                panic!("timed out waiting for {what}; {seen:#?}");
            }
            hosts = self
                .shared
                .cv
                .wait_timeout(hosts, deadline - now)
                .unwrap()
                .0;
        }
    }

    /// Waits until the host has attached `n` times.
    pub fn wait_attached(&self, host: &str, n: u32, timeout: Duration) -> pb::AgentHello {
        self.wait(&format!("{host} attach #{n}"), timeout, |h| {
            let s = h.get(host)?;
            (s.attaches >= n).then(|| s.hello.clone().unwrap())
        })
    }

    /// Waits for the outcome of applying `generation` (READY or FAILED slices, never the
    /// PROVISIONING notice).
    pub fn wait_report(&self, host: &str, generation: u64, timeout: Duration) -> pb::ObservedState {
        self.wait(
            &format!("{host} report of generation {generation}"),
            timeout,
            |h| {
                let s = h.get(host)?;
                s.observed
                    .iter()
                    .rev()
                    .find(|o| is_final(o, generation))
                    .cloned()
            },
        )
    }

    /// Number of reports received from `host` so far.
    pub fn report_count(&self, host: &str) -> usize {
        self.shared
            .hosts
            .lock()
            .unwrap()
            .get(host)
            .map_or(0, |h| h.observed.len())
    }

    /// Like `wait_report`, among the reports after the first `since`.
    pub fn wait_report_since(
        &self,
        host: &str,
        generation: u64,
        since: usize,
        timeout: Duration,
    ) -> pb::ObservedState {
        self.wait(
            &format!("{host} new report of {generation}"),
            timeout,
            |h| {
                let s = h.get(host)?;
                s.observed
                    .iter()
                    .skip(since)
                    .find(|o| is_final(o, generation))
                    .cloned()
            },
        )
    }

    /// Waits until `generation` converged on `host`.
    pub fn wait_converged(
        &self,
        host: &str,
        generation: u64,
        timeout: Duration,
    ) -> pb::ObservedState {
        let o = self.wait_report(host, generation, timeout);
        assert!(o.converged, "{host} did not converge: {o:#?}");
        o
    }

    /// Runs a command in a node through the agent (ExecCommand, then its own stream).
    pub fn exec(&self, host: &str, node: &str, argv: &[&str], timeout: Duration) -> ExecResult {
        self.exec_io(host, node, argv, b"", timeout)
    }

    /// [`FakeController::exec`] with `stdin` for the command.
    pub fn exec_io(
        &self,
        host: &str,
        node: &str,
        argv: &[&str],
        stdin: &[u8],
        timeout: Duration,
    ) -> ExecResult {
        let id = {
            let mut n = self.next_exec.lock().unwrap();
            *n += 1;
            *n
        };
        {
            let mut hosts = self.shared.hosts.lock().unwrap();
            let h = hosts.get_mut(host).expect("attached");
            h.exec_stdin.insert(id, stdin.to_vec());
            let tx = h.tx.clone().expect("attached");
            tx.try_send(Ok(pb::ControllerMessage {
                msg: Some(pb::controller_message::Msg::Exec(pb::ExecCommand {
                    request_id: id,
                    node_id: node.into(),
                    argv: argv.iter().map(|s| s.to_string()).collect(),
                    timeout_ms: timeout.as_millis() as u32,
                    ..Default::default()
                })),
            }))
            .unwrap();
        }
        self.wait(
            &format!("exec {id} on {host}"),
            timeout + Duration::from_secs(5),
            |h| h.get_mut(host)?.exec.remove(&id),
        )
    }
}

impl Drop for FakeController {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------- testbed

/// One host namespace with its agent.
pub struct Host {
    pub id: String,
    pub ns: String,
    pub mgmt_ip: String,
    pub ctl_ip: String,
    pub underlay_ip: String,
    pub state_dir: PathBuf,
    pub agent: Option<Child>,
}

/// Host namespaces, links between them, the controller namespace, agents.
pub struct Testbed {
    pub tag: String,
    pub prefix: String,
    pub ctl_ns: String,
    pub hosts: Vec<Host>,
    pub ctl: Option<FakeController>,
    pub dir: tempfile::TempDir,
    /// The VLAN datapath every agent is started with (`--vlan-datapath`; the agent's default,
    /// `auto`, picks BPF here).
    pub vlan_datapath: &'static str,
}

pub const PORT: u16 = 7000;

impl Testbed {
    /// `n` hosts whose agents use the VLAN datapath `mode`; `None` (SKIP) without root.
    pub fn on_datapath(letter: &str, n: usize, mode: &'static str) -> Option<Self> {
        if !root_or_skip() {
            return None;
        }
        let mut tb = Testbed::new(letter, n);
        tb.vlan_datapath = mode;
        Some(tb)
    }

    /// `n` hosts. `letter` distinguishes tests of one binary.
    pub fn new(letter: &str, n: usize) -> Self {
        let tag = format!("{letter}{}", std::process::id() % 100_000);
        let ctl_ns = format!("vt{tag}c");
        let dir = tempfile::tempdir().unwrap();
        let mut tb = Testbed {
            prefix: "vt".into(),
            vlan_datapath: "auto",
            ctl_ns: ctl_ns.clone(),
            hosts: Vec::new(),
            ctl: None,
            dir,
            tag: tag.clone(),
        };
        sh(&format!(
            "ip netns add {ctl_ns} && ip -n {ctl_ns} link set lo up"
        ));
        for i in 1..=n {
            let id = format!("{tag}h{i}");
            let ns = format!("vt{tag}h{i}");
            sh(&format!("ip netns add {ns} && ip -n {ns} link set lo up"));
            // Management link to the controller namespace.
            let (c, h) = (format!("m{tag}c{i}"), format!("m{tag}h{i}"));
            sh(&format!(
                "ip link add {c} netns {ctl_ns} type veth peer name {h} netns {ns} && \
                 ip -n {ctl_ns} addr add 10.254.{i}.1/24 dev {c} && ip -n {ctl_ns} link set {c} up && \
                 ip -n {ns} addr add 10.254.{i}.2/24 dev {h} && ip -n {ns} link set {h} up"
            ));
            let state_dir = tb.dir.path().join(&id);
            tb.hosts.push(Host {
                id,
                ns,
                mgmt_ip: format!("10.254.{i}.2"),
                ctl_ip: format!("10.254.{i}.1"),
                underlay_ip: String::new(),
                state_dir,
                agent: None,
            });
        }
        let ctl = FakeController::start(&ctl_ns, format!("0.0.0.0:{PORT}").parse().unwrap());
        tb.ctl = Some(ctl);
        tb
    }

    pub fn ctl(&self) -> &FakeController {
        self.ctl.as_ref().unwrap()
    }

    /// An underlay veth between hosts `a` and `b` (1-based) with 10.255.<ab>.<a|b>/24; returns the
    /// device names (in a, in b).
    pub fn underlay(&mut self, a: usize, b: usize) -> (String, String) {
        let (da, db) = (
            format!("u{}{a}{b}", self.tag),
            format!("u{}{b}{a}", self.tag),
        );
        let (na, nb) = (self.hosts[a - 1].ns.clone(), self.hosts[b - 1].ns.clone());
        sh(&format!(
            "ip link add {da} netns {na} type veth peer name {db} netns {nb} && \
             ip -n {na} addr add 10.255.{a}{b}.{a}/24 dev {da} && ip -n {na} link set {da} up && \
             ip -n {nb} addr add 10.255.{a}{b}.{b}/24 dev {db} && ip -n {nb} link set {db} up"
        ));
        if self.hosts[a - 1].underlay_ip.is_empty() {
            self.hosts[a - 1].underlay_ip = format!("10.255.{a}{b}.{a}");
        }
        if self.hosts[b - 1].underlay_ip.is_empty() {
            self.hosts[b - 1].underlay_ip = format!("10.255.{a}{b}.{b}");
        }
        (da, db)
    }

    /// Starts (or restarts) the agent of host `i` (1-based).
    pub fn start_agent(&mut self, i: usize) {
        self.start_agent_env(i, &[]);
    }

    /// Starts the agent of host `i` with extra environment variables.
    pub fn start_agent_env(&mut self, i: usize, env: &[(&str, &str)]) {
        let exe = env!("CARGO_BIN_EXE_substrate-agent");
        let h = &mut self.hosts[i - 1];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{}.log", h.id)))
            .unwrap();
        let child = Command::new(exe)
            // The fake controller serves plain text (the real one's TLS is covered by the e2e
            // tests on the testbed).
            .arg("--insecure")
            .args([
                "--host-id",
                &h.id,
                "--controller",
                &format!("http://{}:{PORT}", h.ctl_ip),
                "--underlay-address",
                if h.underlay_ip.is_empty() {
                    &h.mgmt_ip
                } else {
                    &h.underlay_ip
                },
                "--state-dir",
                h.state_dir.to_str().unwrap(),
                "--netns",
                &h.ns,
                "--name-prefix",
                &self.prefix,
                "--resync-s",
                "5",
                "--guest-run-dir",
                h.state_dir.join("guests").to_str().unwrap(),
            ])
            .env("RUST_LOG", "info")
            .env("VNET_VLAN_DATAPATH", self.vlan_datapath)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start agent");
        h.agent = Some(child);
    }

    /// SIGKILLs the agent of host `i`.
    pub fn kill_agent(&mut self, i: usize) {
        if let Some(mut c) = self.hosts[i - 1].agent.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERMs the agent and waits for it.
    pub fn stop_agent(&mut self, i: usize) {
        if let Some(mut c) = self.hosts[i - 1].agent.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(10) {
                if c.try_wait().unwrap().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The agent's log, for failure messages.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(
            self.dir
                .path()
                .join(format!("{}.log", self.hosts[i - 1].id)),
        )
        .unwrap_or_default()
    }

    /// Name of a node's namespace on host `i`.
    pub fn node_ns(&self, i: usize, node: &str) -> String {
        format!("{}-{}-{node}", self.prefix, self.hosts[i - 1].id)
    }

    /// Named namespaces carrying this test's tag.
    pub fn namespaces(&self) -> Vec<String> {
        let mut v: Vec<String> = sh("ip netns list")
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.contains(&self.tag))
            .map(str::to_string)
            .collect();
        v.sort();
        v
    }

    /// Processes whose command line mentions this test's state directory (agents' datapaths).
    pub fn processes(&self) -> Vec<u32> {
        let needle = self.dir.path().to_string_lossy().into_owned();
        let mut v = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if let Ok(c) = std::fs::read(format!("/proc/{pid}/cmdline"))
                && String::from_utf8_lossy(&c).contains(&needle)
                && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .unwrap_or_default()
                    .contains(") Z ")
            {
                v.push(pid);
            }
        }
        v
    }

    /// [`Testbed::processes`] besides the running agents (datapaths, QEMU).
    pub fn processes_besides_agents(&self) -> Vec<u32> {
        let agents: Vec<u32> = self
            .hosts
            .iter()
            .filter_map(|h| h.agent.as_ref().map(Child::id))
            .collect();
        let mut procs = self.processes();
        procs.retain(|p| !agents.contains(p));
        procs
    }

    /// Live VLAN datapath processes of host `i`'s agent.
    pub fn datapaths(&self, i: usize) -> Vec<u32> {
        let dir = self.hosts[i - 1].state_dir.to_string_lossy().into_owned();
        self.processes()
            .into_iter()
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                    let c = String::from_utf8_lossy(&c);
                    c.contains("vlan-datapath") && c.contains(&dir)
                })
            })
            .collect()
    }

    /// Links (with qdiscs) of host `i`'s own namespace, as text.
    /// The BPF datapath's pin directory of host `i`'s agent.
    pub fn bpf_pins(&self, i: usize) -> std::path::PathBuf {
        std::path::Path::new("/sys/fs/bpf/vnet").join(format!(
            "{}-{}",
            self.prefix,
            self.hosts[i - 1].id
        ))
    }

    /// A drop/forward counter of host `i`'s BPF datapath (agent namespace), summed over CPUs:
    /// slot 0 unknown VLAN ID, 1 foreign TPID, 2 tag errors, 3 forwarded.
    pub fn bpf_counter(&self, i: usize, slot: u32) -> u64 {
        let path = self.bpf_pins(i).join("_agent/vnet_vlan_cnt");
        let out = sh(&format!("bpftool -j map dump pinned {}", path.display()));
        let v: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| &e["formatted"])
            .find(|e| e["key"].as_u64() == Some(slot as u64))
            .map(|e| {
                e["values"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c["value"].as_u64().unwrap())
                    .sum()
            })
            .unwrap_or_else(|| panic!("no slot {slot}: {out}"))
    }

    /// Our BPF classifiers on host `i`'s devices: `dev ... id N ...` lines, sorted.
    pub fn bpf_filters(&self, i: usize) -> String {
        let ns = &self.hosts[i - 1].ns;
        sh(&format!(
            "for d in $(ip -n {ns} -o link show | awk -F': ' '{{print $2}}' | cut -d@ -f1); do \
             tc -n {ns} filter show dev $d ingress 2>/dev/null | grep 'pref 48 bpf' | grep vnet_vlan | \
             sed \"s/^/$d /\"; done | sort"
        ))
    }

    pub fn host_view(&self, i: usize) -> String {
        let ns = &self.hosts[i - 1].ns;
        // Names, kinds and promiscuity (carrier flags flap transiently and are not state).
        let links = sh(&format!(
            "ip -n {ns} -d -o link show | sed 's/^[0-9]*: //' | \
             awk '{{n=$1; p=\"\"; for(i=1;i<=NF;i++) if ($i==\"promiscuity\") p=$(i+1); print n, p}}' | sort"
        ));
        let qdiscs = sh(&format!("tc -n {ns} qdisc show | sort"));
        format!("{links}\n{qdiscs}")
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        for i in 1..=self.hosts.len() {
            self.kill_agent(i);
        }
        for pid in self.processes() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        self.ctl.take();
        for i in 1..=self.hosts.len() {
            let _ = std::fs::remove_dir_all(self.bpf_pins(i));
        }
        for ns in self.namespaces() {
            let _ = sh_ok(&format!("ip netns delete {ns}"));
        }
    }
}

/// Node endpoint helper.
pub fn nif(node: &str, ifname: &str, addr: &str, mac: &str) -> pb::Endpoint {
    pb::Endpoint {
        kind: Some(pb::endpoint::Kind::Node(pb::NodeInterface {
            node_id: node.into(),
            ifname: ifname.into(),
            addresses: vec![addr.into()],
            mac: mac.into(),
        })),
    }
}

/// Tunnel hop helper.
pub fn hop(encap: pb::Encapsulation, id: u32, local: &str, remote: &str) -> pb::Endpoint {
    pb::Endpoint {
        kind: Some(pb::endpoint::Kind::Tunnel(pb::TunnelHop {
            encapsulation: encap as i32,
            vni: if encap == pb::Encapsulation::Vxlan {
                id
            } else {
                0
            },
            vlan_id: if encap == pb::Encapsulation::Vlan {
                id
            } else {
                0
            },
            udp_port: 0,
            local_address: local.into(),
            remote_address: remote.into(),
            neighbor: String::new(),
        })),
    }
}

pub fn seg(id: &str, mtu: u32, mbps: u64, a: pb::Endpoint, b: pb::Endpoint) -> pb::LinkSegment {
    pb::LinkSegment {
        link_id: id.into(),
        mtu,
        bandwidth_mbps: mbps,
        a: Some(a),
        b: Some(b),
        context_node_id: String::new(),
        ..Default::default()
    }
}

pub fn netns_node(id: &str) -> pb::VirtualNodeSpec {
    pb::VirtualNodeSpec {
        node_id: id.into(),
        name: id.into(),
        kind: pb::NodeKind::Netns as i32,
        routes: vec![],
        guest: None,
    }
}

pub fn slice(vn: &str, nodes: &[&str], links: Vec<pb::LinkSegment>) -> pb::VnSlice {
    pb::VnSlice {
        vn_id: vn.into(),
        label: format!("test/{vn}"),
        context_node_id: String::new(),
        depth: 0,
        nodes: nodes.iter().map(|n| netns_node(n)).collect(),
        links,
    }
}

/// Runs a command inside a named namespace.
pub fn in_ns(ns: &str, cmd: &str) -> (bool, String) {
    sh_ok(&format!("ip netns exec {ns} {cmd}"))
}

/// rx packets of a device in a namespace.
pub fn rx_packets(ns: &str, dev: &str) -> u64 {
    let s = sh(&format!("cat /dev/null; ip -n {ns} -s -j link show {dev}"));
    let v: serde_json::Value = serde_json::from_str(&s).unwrap();
    v[0]["stats64"]["rx"]["packets"].as_u64().unwrap()
}

/// tx packets of a device in a namespace.
pub fn tx_packets(ns: &str, dev: &str) -> u64 {
    let s = sh(&format!("ip -n {ns} -s -j link show {dev}"));
    let v: serde_json::Value = serde_json::from_str(&s).unwrap();
    v[0]["stats64"]["tx"]["packets"].as_u64().unwrap()
}
