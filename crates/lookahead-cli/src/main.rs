//! `lookahead`: the one binary. Each subcommand is a thin shell over a library crate.

use clap::{Parser, Subcommand};

mod replay;
mod router;
mod scorer;

#[derive(Parser)]
#[command(
    name = "lookahead",
    version,
    about = "Route each LLM request to the model most likely to answer it best"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions (YAML) for `kubectl apply -f -`.
    Crdgen {
        /// Print the Markdown field reference (docs/crds.md) instead.
        #[arg(long)]
        docs: bool,
    },
    /// Serve the OpenAI-compatible routing front (docs/router.md).
    Router(router::RouterArgs),
    /// Serve the gRPC scoring sidecar over a hot-reloaded artifact.
    Scorer(scorer::ScorerArgs),
    /// Serve one model's recorded responses as an OpenAI-compatible backend.
    Replay(replay::ReplayArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crdgen { docs: false } => print!("{}", lookahead_api::crds_yaml()?),
        Command::Crdgen { docs: true } => print!("{}", lookahead_api::crds_markdown()?),
        Command::Router(args) => router::run(args)?,
        Command::Scorer(args) => scorer::run(args)?,
        Command::Replay(args) => replay::run(args)?,
    }
    Ok(())
}
