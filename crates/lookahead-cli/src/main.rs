//! `lookahead`: the one binary. Each subcommand is a thin shell over a library crate.

// Printing results is the CLI's job (the workspace denies it in libraries).
#![allow(clippy::print_stdout)]

use clap::{Parser, Subcommand};

mod bench;
mod bench_proxy;
mod calibrate;
mod check;
mod demo;
mod device;
mod eval;
mod holdout;
mod label;
mod logging;
mod operator;
mod replay;
mod route;
mod router;
mod scorer;
mod signal;
mod train;

#[derive(Parser)]
#[command(
    name = "lookahead",
    version,
    about = "Route each LLM request to the model most likely to answer it best"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines as `text` or `json` (one object per line, with the request's `trace_id`) for
    /// the subcommands that log (router, operator, scorer, replay, train).
    #[arg(
        long,
        global = true,
        env = "LOOKAHEAD_LOG_FORMAT",
        value_enum,
        default_value_t
    )]
    log_format: logging::LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Run the LLMPool / RoutingPolicy controllers (docs/operator.md).
    Operator(operator::OperatorArgs),
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
    /// Train (or load) the lite router and route held-out prompts through replay members.
    Demo(demo::DemoArgs),
    /// Evaluate a router (artifact or baseline) against all baselines on a routing dataset.
    Eval(eval::EvalArgs),
    /// Train a router on a routing dataset and write its artifact.
    Train(train::TrainArgs),
    /// Collect routing labels for pool members that lack them (ask, grade, merge).
    Label(label::LabelArgs),
    /// Score one prompt with a trained router artifact and print the ranking.
    Route(route::RouteArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// One HTTP check with an exit status: a GET (e.g. /readyz), or with --chat one chat
    /// completion through a router (the chart's `helm test`).
    Check(check::CheckArgs),
}

impl Command {
    /// How the subcommand logs through tracing (colour, and the `service.name` of its spans), or
    /// `None` when it does not set tracing up (its output is its report).
    fn logging(&self, format: logging::LogFormat) -> Option<logging::Logging> {
        use logging::Colour;
        let (colour, service) = match self {
            Command::Router(_) => (Colour::IfTerminal, "lookahead-router"),
            Command::Scorer(_) => (Colour::IfTerminal, "lookahead-scorer"),
            Command::Replay(_) => (Colour::IfTerminal, "lookahead-replay"),
            Command::Operator(_) => (Colour::Default, "lookahead-operator"),
            // train: per-epoch progress goes through tracing (visible in logs, not only on a
            // terminal).
            Command::Train(_) => (Colour::Default, "lookahead-train"),
            // The bench's router logs as `lookahead router` does only when asked: its report
            // is the table on stdout.
            Command::Bench(bench::BenchCommand::Proxy(args)) if args.log => {
                (Colour::IfTerminal, "lookahead-router")
            }
            _ => return None,
        };
        Some(logging::Logging {
            colour,
            format,
            service,
        })
    }
}

/// Keeps freed tensor buffers in the heap instead of returning them to the kernel.
///
/// Why: glibc serves large allocations with mmap and unmaps them on free, so every encoder pass
/// faulted its activation buffers (MBs per layer) in afresh: page faults were 15–30% of a scorer
/// call under `perf`. A fixed mmap threshold of 32 MiB (glibc's maximum) and a high trim
/// threshold make those buffers reusable.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator parameters; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
    }
}

fn main() -> anyhow::Result<()> {
    keep_freed_memory();
    let cli = Cli::parse();
    // Held to the end of main: dropping it flushes the spans not yet exported.
    let _logging = match cli.command.logging(cli.log_format) {
        Some(l) => Some(logging::init(l)?),
        None => None,
    };
    match cli.command {
        Command::Operator(args) => operator::run(args, cli.log_format)?,
        Command::Crdgen { docs: false } => print!("{}", lookahead_api::crds_yaml()?),
        Command::Crdgen { docs: true } => print!("{}", lookahead_api::crds_markdown()?),
        Command::Router(args) => router::run(args)?,
        Command::Scorer(args) => scorer::run(args)?,
        Command::Replay(args) => replay::run(args)?,
        Command::Demo(args) => demo::run(args)?,
        Command::Eval(args) => eval::run(args)?,
        Command::Train(args) => train::run(args)?,
        Command::Label(args) => label::run(args)?,
        Command::Route(args) => route::run(args)?,
        Command::Bench(cmd) => bench::run(cmd)?,
        Command::Check(args) => check::run(args)?,
    }
    Ok(())
}
