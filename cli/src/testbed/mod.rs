//! The local multi-host testbed: host namespaces `h1`..`hN` joined by a shaped, routed underlay,
//! a management network to the root namespace, and the real controller and agents as detached
//! processes. `up` is all-or-nothing; `down` removes exactly what `up` recorded, also after a
//! crash; `status` reports what is there.
//!
//! State directory (default `/var/lib/vnet/testbed`):
//! ```text
//! testbed.json        what was built: layout, owned objects (recorded before creation), binaries
//! topology.yaml       the controller's --topology
//! controller/         the controller's --state-dir
//! agents/hN/          each agent's --state-dir
//! run/*.pid           pidfiles
//! logs/*.log          daemon logs (kept by `down`, for post-mortems)
//! ```
//!
//! Metrics: the controller on `127.0.0.1:<metrics-port>`, each agent on `<its management
//! address>:<metrics-port>` (inside its host namespace; the root namespace reaches it over the
//! management bridge).

pub mod daemon;
pub mod faults;
pub mod layout;
pub mod net;
pub mod pki;
pub mod topology;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::Context;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use vnet_proto::v1 as pb;

use crate::client::{Controller, ControllerOpts};
use daemon::DaemonSpec;
use layout::{Layout, Naming, NetOp, Owned};
use net::{LinkState, Net};
use topology::Substrate;

/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/vnet/testbed";
const RECORD: &str = "testbed.json";
const CONTROLLER_BIN: &str = "vn-controller";
const AGENT_BIN: &str = "substrate-agent";

/// Everything `testbed up` is asked for.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub hosts: usize,
    pub topology: Option<PathBuf>,
    pub state_dir: PathBuf,
    pub naming: Naming,
    pub listen_port: u16,
    pub metrics_port: u16,
    /// Link bandwidth of the default full mesh, Mbit/s.
    pub bandwidth: u64,
    /// The agents' `--name-prefix` (names of virtual node namespaces), default: the agent's.
    pub node_prefix: Option<String>,
    /// How long to wait for the controller and every agent.
    pub timeout: Duration,
    /// Controller replicas (more than one needs the etcd store).
    pub controllers: usize,
    /// The controllers' store: `redb` (one file) or `etcd` (one etcd member, started here).
    pub store: String,
}

/// An object outside the host namespaces, recorded before it is created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OwnedEntry {
    pub object: Owned,
    /// For namespaces: the inode once created (a look-alike of someone else's differs).
    pub inode: Option<u64>,
}

/// `testbed.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub state_dir: PathBuf,
    pub layout: Layout,
    pub listen_port: u16,
    pub metrics_port: u16,
    pub node_prefix: Option<String>,
    pub controller_bin: PathBuf,
    pub agent_bin: PathBuf,
    pub owned: Vec<OwnedEntry>,
    /// Controller replicas: replica i listens on `listen_port + i` (metrics `metrics_port + i`).
    #[serde(default = "one")]
    pub controllers: usize,
    /// With the etcd store: etcd's client and peer ports (on 127.0.0.1, plain text: loopback
    /// only), and its binary.
    #[serde(default)]
    pub etcd: Option<EtcdRecord>,
}

/// The testbed's etcd member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EtcdRecord {
    pub client_port: u16,
    pub peer_port: u16,
    pub bin: PathBuf,
}

fn one() -> usize {
    1
}

impl Record {
    fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(RECORD)
    }

    pub fn load(state_dir: &Path) -> anyhow::Result<Option<Record>> {
        let p = Record::path(state_dir);
        match std::fs::read(&p) {
            Ok(bytes) => Ok(Some(
                serde_json::from_slice(&bytes)
                    .with_context(|| format!("reading {}", p.display()))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
        }
    }

    /// Written atomically (temp file + rename): a crash leaves the old or the new record.
    pub fn save(&self) -> anyhow::Result<()> {
        let p = Record::path(&self.state_dir);
        let tmp = p.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &p).with_context(|| format!("writing {}", p.display()))?;
        Ok(())
    }

    /// The controllers' URLs on 127.0.0.1, comma-separated (vnctl follows the leader).
    pub fn controller_url(&self) -> String {
        (0..self.controllers)
            .map(|i| format!("https://127.0.0.1:{}", self.port(i)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Replica `i`'s gRPC port.
    fn port(&self, i: usize) -> u16 {
        self.listen_port + i as u16
    }

    /// The etcd member, with the etcd store.
    pub fn etcd_daemon(&self) -> Option<DaemonSpec> {
        let e = self.etcd.as_ref()?;
        let data = self.state_dir.join("etcd");
        let client = format!("http://127.0.0.1:{}", e.client_port);
        let peer = format!("http://127.0.0.1:{}", e.peer_port);
        Some(DaemonSpec {
            name: "etcd".into(),
            program: e.bin.clone(),
            args: vec![
                "--name".into(),
                "vnet-testbed".into(),
                "--data-dir".into(),
                data.display().to_string(),
                "--listen-client-urls".into(),
                client.clone(),
                "--advertise-client-urls".into(),
                client,
                "--listen-peer-urls".into(),
                peer.clone(),
                "--initial-advertise-peer-urls".into(),
                peer.clone(),
                "--initial-cluster".into(),
                format!("vnet-testbed={peer}"),
                "--logger".into(),
                "zap".into(),
            ],
            log: self.state_dir.join("logs/etcd.log"),
            pidfile: self.state_dir.join("run/etcd.pid"),
            marker: data.display().to_string(),
        })
    }

    pub fn pki(&self) -> pki::Pki {
        pki::Pki::at(&self.state_dir)
    }

    /// The admin's connection settings (from `pki/admin.conf`).
    pub fn admin_opts(&self) -> anyhow::Result<ControllerOpts> {
        let file = crate::config::Config::load(&self.pki().admin_config())?;
        let ctx = file
            .current()?
            .with_context(|| format!("{} has no context", self.pki().admin_config().display()))?;
        Ok(ControllerOpts {
            controller: ctx.controller.clone(),
            provider: None,
            ca_pem: ctx.ca_pem()?,
            token: ctx.token.clone(),
        })
    }

    /// Creates the PKI and the admin's config file; returns the admin's context.
    fn create_pki(&self) -> anyhow::Result<crate::config::Context> {
        let pki = self.pki();
        let hosts: Vec<&str> = self.layout.hosts.iter().map(|h| h.id.as_str()).collect();
        let ips = [
            std::net::IpAddr::from([127, 0, 0, 1]),
            std::net::IpAddr::V4(self.layout.gateway.addr()),
        ];
        let token = pki
            .create(&ips, &hosts)
            .context("creating the testbed's PKI")?;
        let ctx = crate::config::Context {
            name: "testbed".into(),
            controller: self.controller_url(),
            certificate_authority: Some(pki.ca()),
            certificate_authority_data: None,
            token: Some(token),
        };
        let mut file = crate::config::Config::default();
        file.upsert_current(ctx.clone());
        file.save(&pki.admin_config())?;
        Ok(ctx)
    }

    fn alias(&self) -> String {
        layout::alias_tag(&self.state_dir)
    }

    /// Every controller replica.
    pub fn controller_daemons(&self) -> Vec<DaemonSpec> {
        (0..self.controllers)
            .map(|i| self.controller_daemon(i))
            .collect()
    }

    /// Controller replica `i` (0: the only one with redb, named as before).
    pub fn controller_daemon(&self, i: usize) -> DaemonSpec {
        let dir = &self.state_dir;
        let (name, state, log, pid) = if i == 0 {
            (
                "controller".to_string(),
                dir.join("controller"),
                dir.join("logs/controller.log"),
                dir.join("run/controller.pid"),
            )
        } else {
            (
                format!("controller {i}"),
                dir.join(format!("controller-{i}")),
                dir.join(format!("logs/controller-{i}.log")),
                dir.join(format!("run/controller-{i}.pid")),
            )
        };
        let gw = self.layout.gateway.addr();
        let port = self.port(i);
        let mut spec = DaemonSpec {
            name,
            program: self.controller_bin.clone(),
            args: vec![
                "--listen".into(),
                format!("127.0.0.1:{port}"),
                "--listen".into(),
                format!("{gw}:{port}"),
                "--state-dir".into(),
                state.display().to_string(),
                "--topology".into(),
                dir.join("topology.yaml").display().to_string(),
                "--metrics-listen".into(),
                format!("127.0.0.1:{}", self.metrics_port + i as u16),
                "--tls-cert".into(),
                self.pki().controller_cert().display().to_string(),
                "--tls-key".into(),
                self.pki().controller_key().display().to_string(),
                "--client-ca".into(),
                self.pki().ca().display().to_string(),
                "--admin-token-hash-file".into(),
                self.pki().admin_hash().display().to_string(),
            ],
            log,
            pidfile: pid,
            marker: state.display().to_string(),
        };
        if let Some(e) = &self.etcd {
            spec.args.extend([
                "--store".into(),
                "etcd".into(),
                "--etcd-endpoints".into(),
                format!("http://127.0.0.1:{}", e.client_port),
                // Followers name the leader by the address agents dial.
                "--advertise".into(),
                format!("{gw}:{port}"),
            ]);
        }
        spec
    }

    pub fn agent_state_dir(&self, host: &str) -> PathBuf {
        self.state_dir.join("agents").join(host)
    }

    /// Run directories of a host's QEMU guests: inside the testbed's state dir, so that two
    /// testbeds with the same host ids never share one, and `down` removes them.
    pub fn guest_run_dir(&self, host: &str) -> PathBuf {
        self.agent_state_dir(host).join("guests")
    }

    pub fn agent_daemon(&self, host: &layout::HostLayout) -> DaemonSpec {
        let dir = &self.state_dir;
        let state = self.agent_state_dir(&host.id);
        let mut args = vec![
            "--netns".into(),
            host.netns.clone(),
            "--host-id".into(),
            host.id.clone(),
            "--controller".into(),
            (0..self.controllers)
                .map(|i| format!("https://{}:{}", self.layout.gateway.addr(), self.port(i)))
                .collect::<Vec<_>>()
                .join(","),
            "--underlay-address".into(),
            host.primary.to_string(),
            "--ca".into(),
            self.pki().ca().display().to_string(),
            "--cert".into(),
            self.pki().host_cert(&host.id).display().to_string(),
            "--key".into(),
            self.pki().host_key(&host.id).display().to_string(),
            "--state-dir".into(),
            state.display().to_string(),
            "--guest-run-dir".into(),
            self.guest_run_dir(&host.id).display().to_string(),
            // In the host namespace, on its management address: reachable from the root one.
            "--metrics-listen".into(),
            format!("{}:{}", host.mgmt_address.addr(), self.metrics_port),
        ];
        if let Some(p) = &self.node_prefix {
            args.extend(["--name-prefix".into(), p.clone()]);
        }
        if let Some(c) = host.cpu {
            args.extend(["--cpu".into(), c.to_string()]);
        }
        if let Some(m) = host.memory {
            args.extend(["--memory-mb".into(), m.to_string()]);
        }
        for l in &host.labels {
            args.extend(["--label".into(), l.clone()]);
        }
        DaemonSpec {
            name: format!("agent {}", host.id),
            program: self.agent_bin.clone(),
            args,
            log: dir.join(format!("logs/agent-{}.log", host.id)),
            pidfile: dir.join(format!("run/agent-{}.pid", host.id)),
            marker: state.display().to_string(),
        }
    }

    /// `substrate-agent cleanup ...` for one host: removes everything that agent owns. Without
    /// `in_host_ns` (the host namespace is gone) the cleanup runs from the root namespace: the
    /// node namespaces under `/run/netns`, the ledger and the datapath process do not need it.
    pub fn agent_cleanup_argv(&self, host: &layout::HostLayout, in_host_ns: bool) -> Vec<String> {
        let mut v = vec![
            "cleanup".into(),
            "--state-dir".into(),
            self.agent_state_dir(&host.id).display().to_string(),
            "--host-id".into(),
            host.id.clone(),
        ];
        if in_host_ns {
            v.extend(["--netns".into(), host.netns.clone()]);
        }
        v.extend([
            "--guest-run-dir".into(),
            self.guest_run_dir(&host.id).display().to_string(),
        ]);
        if let Some(p) = &self.node_prefix {
            v.extend(["--name-prefix".into(), p.clone()]);
        }
        v
    }
}

impl Record {
    /// The namespace `name` exists and is the one this testbed created (same inode).
    fn owns_live_netns(&self, net: &dyn Net, name: &str) -> bool {
        let Some(now) = net.netns_inode(name) else {
            return false;
        };
        self.owned
            .iter()
            .any(|e| e.object == Owned::Netns(name.to_string()) && e.inode.is_none_or(|i| i == now))
    }
}

fn require_root(what: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "{what} needs root (it creates namespaces and links); run it with sudo"
    );
    Ok(())
}

fn find_binary(name: &str) -> anyhow::Result<PathBuf> {
    crate::which::beside_self_or_path(name).with_context(|| {
        let here = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.display().to_string()))
            .unwrap_or_else(|| "?".into());
        format!(
            "cannot find {name} next to vnctl ({here}) or on PATH: build it \
             (cargo build --release -p {name}) or install it"
        )
    })
}

/// Creates the network from `ops`, recording each owned object before creating it. On failure
/// everything recorded is removed again.
pub fn build_network(net: &mut dyn Net, record: &mut Record, ops: &[NetOp]) -> anyhow::Result<()> {
    let result = (|| -> anyhow::Result<()> {
        for op in ops {
            if let Some(obj) = op.creates() {
                record.owned.push(OwnedEntry {
                    object: obj.clone(),
                    inode: None,
                });
                record.save()?;
                net.apply(op)?;
                if let Owned::Netns(name) = &obj {
                    let inode = net.netns_inode(name);
                    if let Some(e) = record.owned.last_mut() {
                        e.inode = inode;
                    }
                    record.save()?;
                }
            } else {
                net.apply(op)?;
            }
        }
        Ok(())
    })();
    if let Err(e) = result {
        let problems = remove_network(net, record);
        let mut e = e.context("building the testbed network");
        if !problems.is_empty() {
            e = e.context(format!("and undoing it left: {}", problems.join("; ")));
        }
        return Err(e);
    }
    Ok(())
}

/// Removes the recorded objects that are still ours (namespaces by inode, root links by alias).
/// Returns what could not be removed.
pub fn remove_network(net: &mut dyn Net, record: &mut Record) -> Vec<String> {
    let alias = record.alias();
    let mut problems = Vec::new();
    // Namespaces first: their veths (and the root ends of management veths) go with them.
    let mut owned = record.owned.clone();
    owned.sort_by_key(|e| match e.object {
        Owned::Netns(_) => 0,
        Owned::RootLink(_) => 1,
    });
    for e in &owned {
        match &e.object {
            Owned::Netns(name) => match (net.netns_inode(name), e.inode) {
                (None, _) => {}
                (Some(now), Some(ours)) if now != ours => problems.push(format!(
                    "namespace {name} is not the one the testbed created (inode {now}, ours was \
                     {ours}); left alone"
                )),
                _ => {
                    if let Err(err) = net.delete_netns(name) {
                        problems.push(format!("{err:#}"));
                    }
                }
            },
            Owned::RootLink(name) => match net.root_link(name) {
                Ok(LinkState::Absent) => {}
                // Ours by its tag, or created but not yet tagged when we crashed (the record says
                // we made it).
                Ok(LinkState::Present { alias: a }) if a == alias || a.is_empty() => {
                    // The root end of a management veth vanishes on its own, a moment after its
                    // peer's namespace: a failed delete of a link that is gone by now is no
                    // problem.
                    if let Err(err) = net.delete_root_link(name)
                        && !matches!(net.root_link(name), Ok(LinkState::Absent))
                    {
                        problems.push(format!("{err:#}"));
                    }
                }
                Ok(LinkState::Present { alias: a }) => problems.push(format!(
                    "link {name} carries alias {a:?}, not this testbed's; left alone"
                )),
                Err(err) => problems.push(format!("{err:#}")),
            },
        }
    }
    if problems.is_empty() {
        record.owned.clear();
    }
    problems
}

/// Refuses to build over existing objects or a clashing subnet.
fn preflight(net: &dyn Net, layout: &Layout) -> anyhow::Result<()> {
    for h in &layout.hosts {
        anyhow::ensure!(
            net.netns_inode(&h.netns).is_none(),
            "namespace {} already exists (another testbed? take it down with `vnctl testbed \
             down --state-dir DIR`, or choose --netns-prefix)",
            h.netns
        );
        anyhow::ensure!(
            net.root_link(&h.mgmt_root_if)? == LinkState::Absent,
            "link {} already exists in the root namespace (choose --mgmt-bridge)",
            h.mgmt_root_if
        );
    }
    anyhow::ensure!(
        net.root_link(&layout.naming.mgmt_bridge)? == LinkState::Absent,
        "link {} already exists in the root namespace (another testbed? choose --mgmt-bridge)",
        layout.naming.mgmt_bridge
    );
    let subnet = layout.naming.mgmt_subnet;
    for a in net.root_addresses()? {
        anyhow::ensure!(
            !(subnet.contains(&a.addr()) || a.trunc().contains(&subnet.network())),
            "the management subnet {subnet} overlaps {a}, already configured in the root \
             namespace (choose --mgmt-subnet)"
        );
    }
    Ok(())
}

fn port_free(port: u16) -> anyhow::Result<()> {
    std::net::TcpListener::bind(("127.0.0.1", port))
        .map(drop)
        .with_context(|| {
            format!("port {port} on 127.0.0.1 is in use (another controller? choose another port)")
        })
}

/// The etcd member to start (with `--store etcd`): free loopback ports and the binary; checks
/// that several controllers have the store they need.
fn etcd_choice(opts: &UpOptions) -> anyhow::Result<Option<EtcdRecord>> {
    anyhow::ensure!(
        (1..=9).contains(&opts.controllers),
        "--controllers {} is not within 1..=9",
        opts.controllers
    );
    match opts.store.as_str() {
        "redb" => {
            anyhow::ensure!(
                opts.controllers == 1,
                "--controllers {} needs --store etcd (a redb file has one writer)",
                opts.controllers
            );
            Ok(None)
        }
        "etcd" => {
            let bin = crate::which::on_path("etcd").context(
                "`etcd` is not on PATH: install etcd-server (apt-get install etcd-server)",
            )?;
            let free = || -> anyhow::Result<u16> {
                Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
                    .local_addr()?
                    .port())
            };
            Ok(Some(EtcdRecord {
                client_port: free()?,
                peer_port: free()?,
                bin,
            }))
        }
        other => anyhow::bail!("--store {other}: unknown (known: redb, etcd)"),
    }
}

/// `vnctl testbed up`.
pub fn up(opts: &UpOptions) -> anyhow::Result<()> {
    require_root("testbed up")?;
    let input = match &opts.topology {
        Some(p) => topology::load(p)?,
        None => {
            anyhow::ensure!(opts.hosts >= 1, "--hosts must be at least 1");
            topology::full_mesh(opts.hosts, opts.bandwidth)
        }
    };
    let substrate = topology::resolve(&input).context("invalid topology")?;
    let layout = Layout::new(&substrate, &opts.naming)?;
    let state_dir = std::path::absolute(&opts.state_dir)
        .with_context(|| format!("state dir {}", opts.state_dir.display()))?;
    if let Some(old) = Record::load(&state_dir)? {
        return resume(&old, opts.timeout);
    }
    let controller_bin = find_binary(CONTROLLER_BIN)?;
    let agent_bin = find_binary(AGENT_BIN)?;
    for tool in ["ip", "tc"] {
        anyhow::ensure!(
            crate::which::on_path(tool).is_some(),
            "`{tool}` is not on PATH: install iproute2 (apt-get install iproute2)"
        );
    }
    let etcd = etcd_choice(opts)?;
    let mut net = net::IpRoute2;
    preflight(&net, &layout)?;
    for i in 0..opts.controllers {
        let i = u16::try_from(i).context("too many controllers")?;
        port_free(
            opts.listen_port
                .checked_add(i)
                .context("--listen-port too high")?,
        )?;
        port_free(
            opts.metrics_port
                .checked_add(i)
                .context("--metrics-port too high")?,
        )?;
    }

    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    let mut record = Record {
        state_dir: state_dir.clone(),
        layout,
        listen_port: opts.listen_port,
        metrics_port: opts.metrics_port,
        node_prefix: opts.node_prefix.clone(),
        controller_bin,
        agent_bin,
        owned: Vec::new(),
        controllers: opts.controllers,
        etcd,
    };
    record.save()?;
    eprintln!(
        "building {} host namespaces and {} underlay links",
        record.layout.hosts.len(),
        record.layout.links.len()
    );
    let ops = record.layout.up_ops(&record.alias());
    let started = Instant::now();
    if let Err(e) = build_network(&mut net, &mut record, &ops) {
        let _ = remove_runtime_files(&state_dir);
        return Err(e);
    }
    eprintln!(
        "network built in {:.1} s ({} kernel operations)",
        started.elapsed().as_secs_f64(),
        ops.len()
    );
    if let Err(e) = start_daemons(&record, &substrate, opts.timeout) {
        let problems = teardown(&mut record);
        let mut e = e.context("starting the testbed (everything it built was removed again)");
        if !problems.is_empty() {
            e = e.context(format!("cleanup problems: {}", problems.join("; ")));
        }
        return Err(e);
    }
    println!(
        "testbed up: {} hosts, controller at {} (state in {})",
        record.layout.hosts.len(),
        record.controller_url(),
        state_dir.display()
    );
    let config = make_current(&record)?;
    println!(
        "  vnctl uses it as the admin: context testbed of {} (current)",
        config.display()
    );
    print!("{}", hosts_summary(&record));
    println!(
        "take it down with: vnctl testbed down{}",
        if state_dir == Path::new(DEFAULT_STATE_DIR) {
            String::new()
        } else {
            format!(" --state-dir {}", state_dir.display())
        }
    );
    Ok(())
}

/// `testbed up` on a recorded testbed: starts the daemons that are not running (a killed agent,
/// a stopped controller) if its network is whole; the testbed keeps the options it was built
/// with.
fn resume(record: &Record, timeout: Duration) -> anyhow::Result<()> {
    let net = net::IpRoute2;
    for h in &record.layout.hosts {
        anyhow::ensure!(
            record.owns_live_netns(&net, &h.netns),
            "a testbed is recorded in {dir} but its namespace {} is gone: `vnctl testbed down \
             --state-dir {dir}` and up again",
            h.netns,
            dir = record.state_dir.display()
        );
    }
    let dead = dead_daemons(record);
    if dead.is_empty() {
        println!(
            "testbed in {} is up already (its options are those it was built with)",
            record.state_dir.display()
        );
        return Ok(());
    }
    eprintln!(
        "resuming the testbed in {}: starting {}",
        record.state_dir.display(),
        dead.join(", ")
    );
    run_daemons(record, timeout, true)?;
    println!(
        "testbed up (resumed): {} started, {} hosts connected",
        dead.join(", "),
        record.layout.hosts.len()
    );
    Ok(())
}

/// The names of the testbed's daemons that are not running ("controller", "agent h3").
fn dead_daemons(record: &Record) -> Vec<String> {
    record
        .etcd_daemon()
        .into_iter()
        .chain(record.controller_daemons())
        .chain(record.layout.hosts.iter().map(|h| record.agent_daemon(h)))
        .filter(|s| daemon::running(s).is_none())
        .map(|s| s.name)
        .collect()
}

/// Makes the testbed's admin context the current one of vnctl's config file (`VNET_CONFIG`,
/// else `~/.vnet/config`), keeping the file's other contexts.
fn make_current(record: &Record) -> anyhow::Result<PathBuf> {
    let path =
        crate::config::default_path(None).context("no config file: set VNET_CONFIG or HOME")?;
    let admin = crate::config::Config::load(&record.pki().admin_config())?;
    let ctx = admin
        .current()?
        .cloned()
        .context("the testbed's admin.conf has no context")?;
    let mut file = crate::config::Config::load(&path)?;
    file.upsert_current(ctx);
    file.save(&path)?;
    Ok(path)
}

fn hosts_summary(record: &Record) -> String {
    let rows: Vec<Vec<String>> = record
        .layout
        .hosts
        .iter()
        .map(|h| {
            vec![
                h.id.clone(),
                h.netns.clone(),
                h.mgmt_address.addr().to_string(),
                h.primary.to_string(),
            ]
        })
        .collect();
    crate::output::table(&["HOST", "NETNS", "MGMT", "UNDERLAY"], &rows)
}

fn start_daemons(record: &Record, substrate: &Substrate, timeout: Duration) -> anyhow::Result<()> {
    let dir = &record.state_dir;
    std::fs::write(
        dir.join("topology.yaml"),
        serde_yaml_ng::to_string(&substrate.controller_topology())?,
    )
    .context("writing topology.yaml")?;
    record.create_pki()?;
    run_daemons(record, timeout, false)
}

/// Starts the controller and the agents (with `only_missing`, those not running) and waits
/// until every host is registered and connected.
fn run_daemons(record: &Record, timeout: Duration, only_missing: bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let opts = record.admin_opts()?;
    let ctl_spec = record.controller_daemon(0);
    let mut children: Vec<(DaemonSpec, Child)> = Vec::new();
    let daemons = record
        .etcd_daemon()
        .into_iter()
        .chain(record.controller_daemons());
    for spec in daemons {
        if !only_missing || daemon::running(&spec).is_none() {
            children.push((spec.clone(), daemon::spawn(&spec)?));
        }
    }
    crate::client::block_on(async {
        // The controller must accept connections before agents dial it (they retry anyway).
        let ctl = loop {
            check_children(&mut children)?;
            match Controller::connect(&opts).await {
                Ok(c) => break c,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Err(e) => {
                    show_tail(&ctl_spec.log, 15);
                    let why = crate::client::unreachable_reason(&e);
                    anyhow::bail!(
                        "the controller did not come up within {} ({why}; its log tail is above)",
                        humantime::format_duration(timeout),
                    );
                }
            }
        };
        eprintln!("controller listening at {}", record.controller_url());
        let agents_started = Instant::now();
        for h in &record.layout.hosts {
            let spec = record.agent_daemon(h);
            if only_missing && daemon::running(&spec).is_some() {
                continue;
            }
            std::fs::create_dir_all(record.agent_state_dir(&h.id))?;
            let child = daemon::spawn(&spec)?;
            children.push((spec, child));
        }
        let want: Vec<&str> = record.layout.hosts.iter().map(|h| h.id.as_str()).collect();
        loop {
            check_children(&mut children)?;
            let hosts = ctl.hosts().await.unwrap_or_default();
            let missing: Vec<&str> = want
                .iter()
                .copied()
                .filter(|id| !hosts.iter().any(|h| h.id == *id && h.connected))
                .collect();
            if missing.is_empty() {
                eprintln!(
                    "all {} agents registered and connected ({:.1} s after their start)",
                    want.len(),
                    agents_started.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            if Instant::now() >= deadline {
                for h in missing.iter().filter_map(|id| record.layout.host(id)) {
                    show_tail(&record.agent_daemon(h).log, 10);
                }
                show_tail(&ctl_spec.log, 10);
                anyhow::bail!(
                    "hosts {} did not register with the controller within {} (log tails above)",
                    missing.join(", "),
                    humantime::format_duration(timeout),
                );
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .inspect_err(|_| {
        // Reap what we started; `teardown` stops them by pidfile.
        for (spec, child) in &mut children {
            let _ = daemon::stop(spec, Duration::from_secs(5));
            let _ = child.wait();
        }
    })
}

/// Prints the end of a daemon's log on stderr (errors themselves stay one line).
fn show_tail(log: &Path, n: usize) {
    eprintln!("--- last lines of {}:", log.display());
    eprintln!("{}", daemon::tail(log, n));
}

/// Fails when a daemon we started has already exited, after showing its log tail.
fn check_children(children: &mut [(DaemonSpec, Child)]) -> anyhow::Result<()> {
    for (spec, child) in children.iter_mut() {
        if let Some(status) = child.try_wait()? {
            show_tail(&spec.log, 15);
            anyhow::bail!(
                "{} exited during start-up ({status}; its log tail is above)",
                spec.name,
            );
        }
    }
    Ok(())
}

/// Stops daemons, has every agent remove what it owns, removes the network and runtime files.
/// Returns the problems met (empty: everything is gone).
fn teardown(record: &mut Record) -> Vec<String> {
    let mut problems = Vec::new();
    let grace = Duration::from_secs(10);
    for h in &record.layout.hosts {
        let spec = record.agent_daemon(h);
        match daemon::stop(&spec, grace) {
            Ok(daemon::Stopped::Killed) => {
                eprintln!("{} did not stop on SIGTERM; killed", spec.name)
            }
            Ok(_) => {}
            Err(e) => problems.push(format!("{e:#}")),
        }
    }
    for h in &record.layout.hosts {
        if !record.agent_state_dir(&h.id).exists() {
            continue;
        }
        let argv = record.agent_cleanup_argv(h, record.owns_live_netns(&net::IpRoute2, &h.netns));
        match std::process::Command::new(&record.agent_bin)
            .args(&argv)
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => problems.push(format!(
                "`{} {}` failed ({}): {}",
                record.agent_bin.display(),
                argv.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => problems.push(format!(
                "cannot run {} cleanup: {e}",
                record.agent_bin.display()
            )),
        }
    }
    for spec in record
        .controller_daemons()
        .into_iter()
        .chain(record.etcd_daemon())
    {
        match daemon::stop(&spec, grace) {
            Ok(daemon::Stopped::Killed) => {
                eprintln!("{} did not stop on SIGTERM; killed", spec.name)
            }
            Ok(_) => {}
            Err(e) => problems.push(format!("{e:#}")),
        }
    }
    problems.extend(remove_network(&mut net::IpRoute2, record));
    if problems.is_empty() {
        if let Err(e) = remove_runtime_files(&record.state_dir) {
            problems.push(format!("{e:#}"));
        }
    } else if let Err(e) = record.save() {
        problems.push(format!("{e:#}"));
    }
    problems
}

/// Everything in the state dir except `logs/`.
fn remove_runtime_files(dir: &Path) -> anyhow::Result<()> {
    for name in [RECORD, "testbed.json.tmp", "topology.yaml"] {
        match std::fs::remove_file(dir.join(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("removing {}", dir.join(name).display()));
            }
        }
    }
    let replicas = (1..10).map(|i| format!("controller-{i}"));
    let subs = ["run", "controller", "agents", "pki", "etcd"].map(String::from);
    for sub in subs.into_iter().chain(replicas) {
        match std::fs::remove_dir_all(dir.join(&sub)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("removing {}", dir.join(&sub).display()));
            }
        }
    }
    Ok(())
}

/// `vnctl testbed down`: idempotent; works after a crash.
pub fn down(state_dir: &Path) -> anyhow::Result<()> {
    require_root("testbed down")?;
    let state_dir = std::path::absolute(state_dir)?;
    let Some(mut record) = Record::load(&state_dir)? else {
        println!(
            "no testbed recorded in {}; nothing to do",
            state_dir.display()
        );
        return Ok(());
    };
    let problems = teardown(&mut record);
    anyhow::ensure!(
        problems.is_empty(),
        "testbed down left things behind: {} (state kept in {}; fix and run down again)",
        problems.join("; "),
        state_dir.display()
    );
    println!(
        "testbed down: {} hosts removed (logs kept in {})",
        record.layout.hosts.len(),
        state_dir.join("logs").display()
    );
    Ok(())
}

/// `vnctl testbed status`.
pub fn status(state_dir: &Path) -> anyhow::Result<()> {
    let state_dir = std::path::absolute(state_dir)?;
    let Some(record) = Record::load(&state_dir)? else {
        println!("no testbed recorded in {}", state_dir.display());
        return Ok(());
    };
    let net = net::IpRoute2;
    let pids: Vec<Option<i32>> = record
        .controller_daemons()
        .iter()
        .map(daemon::running)
        .collect();
    let hosts: Result<Vec<pb::Host>, String> = crate::client::block_on(async {
        let opts = record.admin_opts().map_err(|e| format!("{e:#}"))?;
        let ctl = Controller::connect(&opts)
            .await
            .map_err(|e| crate::client::unreachable_reason(&e))?;
        ctl.hosts().await.map_err(|s| s.message().to_owned())
    });
    println!("state dir:   {}", state_dir.display());
    println!(
        "controller:  {} ({}), {}",
        record.controller_url(),
        pids.iter()
            .map(|p| match p {
                Some(p) => format!("pid {p}"),
                None => "not running".into(),
            })
            .collect::<Vec<_>>()
            .join(", "),
        match &hosts {
            Ok(_) => "reachable".to_owned(),
            Err(e) => format!("unreachable: {e}"),
        }
    );
    println!(
        "management:  {} {}",
        record.layout.naming.mgmt_bridge, record.layout.gateway
    );
    let rows: Vec<Vec<String>> = record
        .layout
        .hosts
        .iter()
        .map(|h| {
            let agent = daemon::running(&record.agent_daemon(h));
            let reg = hosts
                .as_ref()
                .ok()
                .and_then(|hs| hs.iter().find(|x| x.id == h.id));
            vec![
                h.id.clone(),
                format!(
                    "{}{}",
                    h.netns,
                    if net.netns_inode(&h.netns).is_some() {
                        ""
                    } else {
                        " (missing)"
                    }
                ),
                h.mgmt_address.addr().to_string(),
                h.primary.to_string(),
                agent
                    .map(|p| format!("pid {p}"))
                    .unwrap_or_else(|| "not running".into()),
                match reg {
                    Some(x) if x.connected => "connected".into(),
                    Some(_) => "disconnected".into(),
                    None => "not registered".into(),
                },
            ]
        })
        .collect();
    print!(
        "{}",
        crate::output::table(
            &["HOST", "NETNS", "MGMT", "UNDERLAY", "AGENT", "CONTROLLER"],
            &rows
        )
    );
    let links: Vec<Vec<String>> = record
        .layout
        .links
        .iter()
        .map(|l| {
            vec![
                l.link.id.clone(),
                format!("{}:{} {}", l.link.a, l.a_if, l.link.a_address),
                format!("{}:{} {}", l.link.b, l.b_if, l.link.b_address),
                format!("{}Mbit/s", l.link.bandwidth),
            ]
        })
        .collect();
    if !links.is_empty() {
        print!(
            "{}",
            crate::output::table(&["LINK", "A", "B", "SHAPED"], &links)
        );
    }
    let dead = dead_daemons(&record);
    anyhow::ensure!(
        dead.is_empty(),
        "not running: {} (`vnctl testbed up --state-dir {}` starts them again)",
        dead.join(", "),
        state_dir.display()
    );
    Ok(())
}

/// The default management subnet, for the CLI.
pub fn default_mgmt_subnet() -> Ipv4Net {
    Naming::default().mgmt_subnet
}

#[cfg(test)]
mod tests {
    use super::net::FakeNet;
    use super::*;

    fn record(dir: &Path) -> Record {
        let s = topology::resolve(&topology::full_mesh(3, 100)).unwrap();
        Record {
            state_dir: dir.to_owned(),
            layout: Layout::new(&s, &Naming::default()).unwrap(),
            listen_port: 7000,
            metrics_port: 9100,
            node_prefix: Some("t1".into()),
            controller_bin: "/bin/vn-controller".into(),
            agent_bin: "/bin/substrate-agent".into(),
            owned: Vec::new(),
            controllers: 1,
            etcd: None,
        }
    }

    #[test]
    fn build_then_remove_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = record(dir.path());
        let mut net = FakeNet::default();
        let ops = r.layout.up_ops(&r.alias());
        build_network(&mut net, &mut r, &ops).unwrap();
        assert_eq!(net.netns.len(), 3);
        assert_eq!(net.links.len(), 4);
        // The record on disk knows every owned object, with inodes.
        let saved = Record::load(dir.path()).unwrap().unwrap();
        assert_eq!(saved.owned.len(), 7);
        assert!(
            saved
                .owned
                .iter()
                .all(|e| matches!(e.object, Owned::RootLink(_)) || e.inode.is_some())
        );
        let problems = remove_network(&mut net, &mut r);
        assert!(problems.is_empty(), "{problems:?}");
        assert!(net.netns.is_empty() && net.links.is_empty());
    }

    #[test]
    fn failure_midway_rolls_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = record(dir.path());
        let mut net = FakeNet {
            fail_on: Some("route add".into()),
            ..Default::default()
        };
        let ops = r.layout.up_ops(&r.alias());
        let e = build_network(&mut net, &mut r, &ops).unwrap_err();
        assert!(format!("{e:#}").contains("injected"), "{e:#}");
        assert!(net.netns.is_empty(), "{:?}", net.netns);
        assert!(net.links.is_empty(), "{:?}", net.links);
    }

    #[test]
    fn look_alikes_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = record(dir.path());
        let mut net = FakeNet::default();
        let ops = r.layout.up_ops(&r.alias());
        build_network(&mut net, &mut r, &ops).unwrap();
        // Someone replaced h2 by their own namespace of the same name, and re-tagged the bridge.
        net.netns.insert("h2".into(), 99);
        net.links.insert("vnmgmt0".into(), "someone else".into());
        let problems = remove_network(&mut net, &mut r);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(net.netns.get("h2"), Some(&99));
        assert!(net.links.contains_key("vnmgmt0"));
        assert!(!net.netns.contains_key("h1"));
    }

    #[test]
    fn a_link_that_vanishes_during_down_is_not_a_problem() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = record(dir.path());
        let mut net = FakeNet::default();
        let ops = r.layout.up_ops(&r.alias());
        build_network(&mut net, &mut r, &ops).unwrap();
        net.vanish_on_delete = Some("vnmgmt0-2".into());
        let problems = remove_network(&mut net, &mut r);
        assert!(problems.is_empty(), "{problems:?}");
        assert!(net.links.is_empty());
    }

    #[test]
    fn preflight_refuses_existing_objects_and_clashing_subnets() {
        let dir = tempfile::tempdir().unwrap();
        let r = record(dir.path());
        let mut net = FakeNet::default();
        preflight(&net, &r.layout).unwrap();
        net.netns.insert("h2".into(), 1);
        let e = preflight(&net, &r.layout).unwrap_err().to_string();
        assert!(e.contains("namespace h2 already exists"), "{e}");
        net.netns.clear();
        net.addresses.push("10.254.0.7/16".parse().unwrap());
        let e = preflight(&net, &r.layout).unwrap_err().to_string();
        assert!(e.contains("overlaps 10.254.0.7/16"), "{e}");
    }

    #[test]
    fn daemon_command_lines() {
        let dir = Path::new("/var/lib/vnet/testbed");
        let r = record(dir);
        let c = r.controller_daemon(0);
        assert_eq!(
            c.args.join(" "),
            "--listen 127.0.0.1:7000 --listen 10.254.0.1:7000 --state-dir \
             /var/lib/vnet/testbed/controller --topology /var/lib/vnet/testbed/topology.yaml \
             --metrics-listen 127.0.0.1:9100 --tls-cert /var/lib/vnet/testbed/pki/controller.crt \
             --tls-key /var/lib/vnet/testbed/pki/controller.key --client-ca \
             /var/lib/vnet/testbed/pki/ca.crt --admin-token-hash-file \
             /var/lib/vnet/testbed/pki/admin.sha256"
        );
        let a = r.agent_daemon(&r.layout.hosts[1]);
        assert_eq!(
            a.args.join(" "),
            "--netns h2 --host-id h2 --controller https://10.254.0.1:7000 --underlay-address \
             10.255.0.2 --ca /var/lib/vnet/testbed/pki/ca.crt --cert \
             /var/lib/vnet/testbed/pki/host-h2.crt --key /var/lib/vnet/testbed/pki/host-h2.key \
             --state-dir /var/lib/vnet/testbed/agents/h2 --guest-run-dir \
             /var/lib/vnet/testbed/agents/h2/guests --metrics-listen 10.254.0.3:9100 \
             --name-prefix t1"
        );
        assert_eq!(a.marker, "/var/lib/vnet/testbed/agents/h2");
        assert_eq!(
            r.agent_cleanup_argv(&r.layout.hosts[0], true).join(" "),
            "cleanup --state-dir /var/lib/vnet/testbed/agents/h1 --host-id h1 --netns h1 \
             --guest-run-dir /var/lib/vnet/testbed/agents/h1/guests --name-prefix t1"
        );
        assert_eq!(
            r.agent_cleanup_argv(&r.layout.hosts[0], false).join(" "),
            "cleanup --state-dir /var/lib/vnet/testbed/agents/h1 --host-id h1 \
             --guest-run-dir /var/lib/vnet/testbed/agents/h1/guests --name-prefix t1"
        );
    }

    #[test]
    fn runtime_files_go_logs_stay() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in ["run", "controller/db", "agents/h1", "logs"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        std::fs::write(d.join(RECORD), "{}").unwrap();
        std::fs::write(d.join("topology.yaml"), "").unwrap();
        std::fs::write(d.join("logs/controller.log"), "x").unwrap();
        remove_runtime_files(d).unwrap();
        let left: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, ["logs"]);
        remove_runtime_files(d).unwrap();
    }
}
