//! `lookahead`: the one binary. Each subcommand is a thin shell over a library crate.

use clap::{Parser, Subcommand};

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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crdgen { docs: false } => print!("{}", lookahead_api::crds_yaml()?),
        Command::Crdgen { docs: true } => print!("{}", lookahead_api::crds_markdown()?),
    }
    Ok(())
}
