//! `vnctl completions SHELL`: shell completion scripts (clap_complete).

/// Print a shell completion script (e.g. `vnctl completions bash > /etc/bash_completion.d/vnctl`).
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

impl CompletionsArgs {
    /// `cmd` is vnctl's whole command tree.
    pub fn run(self, mut cmd: clap::Command) -> anyhow::Result<()> {
        let name = cmd.get_name().to_owned();
        clap_complete::generate(self.shell, &mut cmd, name, &mut std::io::stdout());
        Ok(())
    }
}
