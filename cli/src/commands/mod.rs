//! One subcommand per file.

pub mod admin;
pub mod apply;
pub mod completions;
pub mod console;
pub mod delete;
pub mod describe;
pub mod diff;
pub mod embed;
pub mod exec;
pub mod experiment;
pub mod get;
pub mod iperf;
pub mod pingall;
pub mod sim;
pub mod testbed;
pub mod topology;
pub mod watch;

/// Global flags shared by the subcommands that talk to the controller.
#[derive(Debug, Clone)]
pub struct GlobalOpts {
    /// `--controller` / `VNET_CONTROLLER`.
    pub controller: Option<String>,
    /// `--as` / `--provider` / `VNET_PROVIDER`.
    pub provider: Option<String>,
    /// `--config`.
    pub config: Option<std::path::PathBuf>,
}

impl GlobalOpts {
    /// The connection settings: flags first, then the config file's current context.
    pub fn resolve(&self) -> anyhow::Result<crate::client::ControllerOpts> {
        let path = crate::config::default_path(self.config.as_deref());
        let file = match &path {
            Some(p) => crate::config::Config::load(p)?,
            None => crate::config::Config::default(),
        };
        let ctx = file.current()?;
        let controller = self
            .controller
            .clone()
            .or_else(|| ctx.map(|c| c.controller.clone()))
            .unwrap_or_else(|| crate::client::DEFAULT_CONTROLLER.to_string());
        Ok(crate::client::ControllerOpts {
            controller,
            provider: self.provider.clone(),
            ca_pem: ctx.map(|c| c.ca_pem()).transpose()?.flatten(),
            token: ctx.and_then(|c| c.token.clone()),
        })
    }
}

/// The subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run the online embedding simulator on a trace, list the algorithms, or generate a trace.
    Sim(sim::SimArgs),
    /// Embed one request on a substrate (offline, no controller).
    Embed(embed::EmbedArgs),
    /// Create virtual networks from YAML specs, or update existing ones in place.
    Apply(apply::ApplyArgs),
    /// Show what `apply -f` would change (the spec's differences and the controller's plan).
    Diff(diff::DiffArgs),
    /// List virtual networks, substrate hosts or substrate links.
    Get(get::GetArgs),
    /// Show one virtual network in detail: placement, paths, VNIs and VLAN IDs, state.
    Describe(describe::DescribeArgs),
    /// Delete a virtual network.
    Delete(delete::DeleteArgs),
    /// Follow the events of your virtual networks.
    Watch(watch::WatchArgs),
    /// Run a command inside a virtual node: vnctl exec VN NODE -- CMD...
    Exec(exec::ExecArgs),
    /// The serial console of a guest: its log (boot log), -f to follow, -i to type into it.
    Console(console::ConsoleArgs),
    /// The substrate and the embedded VNs as Graphviz DOT (or SVG with --svg).
    Topology(topology::TopologyArgs),
    /// A local multi-host testbed: host namespaces, underlay, controller and agents.
    Testbed(testbed::TestbedArgs),
    /// Print a shell completion script.
    Completions(completions::CompletionsArgs),
    /// Administration: credentials and quotas (needs an admin credential).
    Admin(admin::AdminArgs),
    /// Multi-provider experiments on the live testbed: run one, compare two.
    Experiment(experiment::ExperimentArgs),
    /// Ping over every link of a VN, both ways; non-zero exit if any fails.
    Pingall(pingall::PingallArgs),
    /// One iperf3 TCP stream between two linked nodes of a VN.
    Iperf(iperf::IperfArgs),
}

impl Command {
    /// Runs the subcommand.
    pub fn run(self, global: &GlobalOpts) -> anyhow::Result<()> {
        match self {
            Command::Sim(args) => return args.run(),
            Command::Embed(args) => return args.run(),
            Command::Testbed(args) => return args.run(),
            Command::Completions(args) => return args.run(crate::cli_command()),
            Command::Experiment(args) => return args.run(global),
            _ => {}
        }
        let ctl = global.resolve()?;
        match self {
            Command::Sim(_)
            | Command::Embed(_)
            | Command::Testbed(_)
            | Command::Completions(_)
            | Command::Experiment(_) => {
                unreachable!("run above")
            }
            Command::Admin(args) => args.run(&ctl),
            Command::Apply(args) => args.run(&ctl),
            Command::Diff(args) => args.run(&ctl),
            Command::Get(args) => args.run(&ctl),
            Command::Describe(args) => args.run(&ctl),
            Command::Delete(args) => args.run(&ctl),
            Command::Watch(args) => args.run(&ctl),
            Command::Exec(args) => args.run(&ctl),
            Command::Console(args) => args.run(&ctl),
            Command::Topology(args) => args.run(&ctl),
            Command::Pingall(args) => args.run(&ctl),
            Command::Iperf(args) => args.run(&ctl),
        }
    }
}
