//! The `vn-controller` daemon (all logic lives in the library).

use clap::Parser;
use vn_controller::runtime::daemon::{Args, init_tracing, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_tracing(args.log_format);
    run(args).await.inspect_err(|e| tracing::error!("{e:#}"))
}
