//! `vnctl testbed up|down|status|host|link`: the local multi-host testbed and fault injection
//! on it (see `crate::testbed`).

use std::path::PathBuf;
use std::time::Duration;

use ipnet::Ipv4Net;

use crate::testbed::{self, DEFAULT_STATE_DIR, UpOptions, faults::HostAction, layout::Naming};

/// Build, remove or inspect a local multi-host testbed (host namespaces h1..hN, a shaped and
/// routed underlay, the controller and one agent per host).
#[derive(Debug, clap::Args)]
pub struct TestbedArgs {
    #[command(subcommand)]
    pub command: TestbedCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum TestbedCommand {
    /// Create host namespaces and the underlay, start the controller and the agents, and wait
    /// until every host is registered. On a testbed recorded already: start what is not
    /// running (a killed agent) and wait likewise.
    Up(UpArgs),
    /// Stop the daemons, remove everything the agents and the testbed created (also after a
    /// crash). Idempotent.
    Down(StateDirArg),
    /// Show hosts, processes and whether the controller answers; fails when a daemon is not
    /// running (naming it).
    Status(StateDirArg),
    /// Fault injection on a host's agent: stop (SIGTERM), start, kill (SIGKILL), restart.
    Host(HostArgs),
    /// Fault injection on the underlay: take the link between hosts A and B down, or up again.
    Link(LinkArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HostVerb {
    Stop,
    Start,
    Kill,
    Restart,
}

#[derive(Debug, clap::Args)]
pub struct HostArgs {
    #[arg(value_enum)]
    pub action: HostVerb,
    pub host: String,
    /// Also take every underlay link of the host down (stop, kill) or up (start, restart): the
    /// whole host gone from the network, not only its agent.
    #[arg(long)]
    pub links: bool,
    #[command(flatten)]
    pub dir: StateDirArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LinkVerb {
    Down,
    Up,
}

#[derive(Debug, clap::Args)]
pub struct LinkArgs {
    #[arg(value_enum)]
    pub action: LinkVerb,
    pub a: String,
    pub b: String,
    #[command(flatten)]
    pub dir: StateDirArg,
}

#[derive(Debug, clap::Args)]
pub struct StateDirArg {
    /// Where the testbed keeps its record, daemon state, pidfiles and logs.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Number of hosts h1..hN, joined as a full mesh.
    #[arg(long, default_value_t = 3, conflicts_with = "topology")]
    pub hosts: usize,
    /// Hosts and links from a YAML file (the controller's topology format, plus optional
    /// per-host cpu and memory).
    #[arg(long, value_name = "FILE")]
    pub topology: Option<PathBuf>,
    /// Where the testbed keeps its record, daemon state, pidfiles and logs.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Bandwidth of every link of the default full mesh, Mbit/s.
    #[arg(long, default_value_t = 1000, value_name = "MBIT")]
    pub bandwidth: u64,
    /// Prefix of host namespace names (host ids stay h1..hN), e.g. for tests next to a running
    /// testbed.
    #[arg(long, default_value = "", value_name = "PREFIX")]
    pub netns_prefix: String,
    /// Management bridge in the root namespace (at most 11 characters).
    #[arg(long, default_value = "vnmgmt0", value_name = "NAME")]
    pub mgmt_bridge: String,
    /// Management network: the bridge takes the first address, host i the (1+i)-th.
    #[arg(long, default_value_t = testbed::default_mgmt_subnet(), value_name = "CIDR")]
    pub mgmt_subnet: Ipv4Net,
    /// The controller's gRPC port (on 127.0.0.1 and on the management bridge).
    #[arg(long, default_value_t = 7000)]
    pub listen_port: u16,
    /// The controller's Prometheus port (127.0.0.1); every agent serves its own metrics on this
    /// port of its management address (inside its host namespace, reachable from the root one).
    #[arg(long, default_value_t = 9100)]
    pub metrics_port: u16,
    /// MTU of the underlay veths (the default lets VXLAN links carry 1500-byte frames).
    #[arg(long, default_value_t = crate::testbed::layout::DEFAULT_UNDERLAY_MTU)]
    pub underlay_mtu: u32,
    /// The agents' --name-prefix (names of virtual-node namespaces); default: the agent's own.
    #[arg(long, value_name = "PREFIX")]
    pub node_prefix: Option<String>,
    /// How long to wait for the controller and every agent to come up.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Controller replicas, on ports --listen-port, +1, ... (more than one needs --store etcd;
    /// one leads, the agents and vnctl follow it).
    #[arg(long, default_value_t = 1)]
    pub controllers: usize,
    /// The controllers' store: redb (a file per controller) or etcd (one etcd member on
    /// loopback, started and stopped with the testbed).
    #[arg(long, default_value = "redb", value_parser = ["redb", "etcd"])]
    pub store: String,
}

impl TestbedArgs {
    pub fn run(self) -> anyhow::Result<()> {
        match self.command {
            TestbedCommand::Up(a) => testbed::up(&UpOptions {
                hosts: a.hosts,
                topology: a.topology,
                state_dir: a.state_dir,
                naming: Naming {
                    netns_prefix: a.netns_prefix,
                    mgmt_bridge: a.mgmt_bridge,
                    mgmt_subnet: a.mgmt_subnet,
                    underlay_mtu: a.underlay_mtu,
                },
                listen_port: a.listen_port,
                metrics_port: a.metrics_port,
                bandwidth: a.bandwidth,
                node_prefix: a.node_prefix,
                timeout: a.timeout,
                controllers: a.controllers,
                store: a.store,
            }),
            TestbedCommand::Down(a) => testbed::down(&a.state_dir),
            TestbedCommand::Status(a) => testbed::status(&a.state_dir),
            TestbedCommand::Host(a) => testbed::faults::host(
                &a.dir.state_dir,
                &a.host,
                match a.action {
                    HostVerb::Stop => HostAction::Stop,
                    HostVerb::Start => HostAction::Start,
                    HostVerb::Kill => HostAction::Kill,
                    HostVerb::Restart => HostAction::Restart,
                },
                a.links,
            ),
            TestbedCommand::Link(a) => {
                testbed::faults::link(&a.dir.state_dir, &a.a, &a.b, a.action == LinkVerb::Up)
            }
        }
    }
}
