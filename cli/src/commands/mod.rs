//! One subcommand per file.

pub mod embed;
pub mod sim;

/// Global flags shared by the subcommands that talk to the controller.
// Read by the controller subcommands (apply, get, ...), which are wired in separately.
#[allow(dead_code)]
#[derive(Debug, Clone)]
pub struct GlobalOpts {
    /// `--controller` / `VNET_CONTROLLER`.
    pub controller: String,
    /// `--provider` / `VNET_PROVIDER`.
    pub provider: Option<String>,
}

/// The subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run the online embedding simulator on a trace, list the algorithms, or generate a trace.
    Sim(sim::SimArgs),
    /// Embed one request on a substrate (offline, no controller).
    Embed(embed::EmbedArgs),
}

impl Command {
    /// Runs the subcommand.
    pub fn run(self, _global: &GlobalOpts) -> anyhow::Result<()> {
        match self {
            Command::Sim(args) => args.run(),
            Command::Embed(args) => args.run(),
        }
    }
}
