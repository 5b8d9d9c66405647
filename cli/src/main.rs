//! vnctl: operate vnet from the command line.
//!
//! Subcommands live one per file under `commands/`. Errors are printed as one line (the error and
//! its whole chain of causes) and give a non-zero exit status.

mod client;
mod commands;
mod config;
mod error;
mod experiment;
mod output;
mod probe;
mod spec;
mod testbed;
#[cfg(test)]
mod testing;
mod wait;
mod which;

use std::process::ExitCode;

use clap::Parser;

/// vnctl: virtual networks on a shared substrate.
#[derive(Debug, Parser)]
#[command(name = "vnctl", version, about, propagate_version = true)]
struct Cli {
    /// Address of the vn-controller's gRPC endpoint (default: the config file's current
    /// context, else http://127.0.0.1:7000).
    #[arg(long, global = true, env = "VNET_CONTROLLER")]
    controller: Option<String>,
    /// Act for this provider: an admin may act for any (logged by the controller); a provider
    /// only for itself. Without it, a provider credential acts for its own provider.
    #[arg(
        long = "as",
        visible_alias = "provider",
        global = true,
        env = "VNET_PROVIDER"
    )]
    provider: Option<String>,
    /// Config file with the controller, its CA and the token (default: $VNET_CONFIG, else
    /// ~/.vnet/config).
    #[arg(long, global = true)]
    config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: commands::Command,
}

fn main() -> ExitCode {
    // Like other Unix tools, end quietly when the reader of our output goes away
    // (`vnctl get vns | head -1`) instead of panicking on EPIPE.
    // SAFETY: restoring the default disposition of one signal before any thread is started.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        );
    }
    let cli = Cli::parse();
    let global = commands::GlobalOpts {
        controller: cli.controller,
        provider: cli.provider,
        config: cli.config,
    };
    match cli.command.run(&global) {
        Ok(()) => ExitCode::SUCCESS,
        // One line; exit 2 when the controller is unreachable, the remote code for `exec`.
        Err(e) => error::report(&e),
    }
}

/// vnctl's whole command tree (for `vnctl completions`).
pub(crate) fn cli_command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}
