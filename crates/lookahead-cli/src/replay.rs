//! `lookahead replay`: an OpenAI-compatible backend replaying one model's recorded responses.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use lookahead_replay::{ReplayBook, ReplayOptions, ReplayServer};

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// Routing dataset directory (default: $LOOKAHEAD_DATA or ../shared/data/routing).
    #[arg(long, env = "LOOKAHEAD_DATA", default_value = "../shared/data/routing")]
    data: PathBuf,
    /// The model whose recorded responses to serve (a model name in the dataset).
    #[arg(long)]
    model: String,
    #[arg(long, default_value = "127.0.0.1:9001")]
    listen: String,
    /// Delay before each response head, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Delay between streamed chunks, in milliseconds.
    #[arg(long, default_value_t = 0)]
    chunk_delay_ms: u64,
    /// Probability (0..1) of answering 503 instead.
    #[arg(long, default_value_t = 0.0)]
    failure_rate: f64,
    /// Wait this long before listening, e.g. `30s`: a model server loading its weights (what a
    /// member's startup probe must wait for).
    #[arg(long, default_value = "0s", value_parser = lookahead_api::config::parse_duration)]
    start_after: Duration,
    /// Refuse prompts longer than this many whitespace words (plus `max_tokens`) with vLLM's
    /// 400 "maximum context length" error, as a small-window model server does.
    #[arg(long)]
    context_window: Option<usize>,
}

pub fn run(args: ReplayArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.failure_rate),
        "--failure-rate must be within 0..1"
    );
    let book = ReplayBook::load(&args.data, &args.model)
        .with_context(|| format!("reading {}", args.data.display()))?;
    if book.is_empty() {
        anyhow::bail!(
            "the dataset in {} has no responses of model {:?}",
            args.data.display(),
            args.model
        );
    }
    let options = ReplayOptions {
        latency: Duration::from_millis(args.latency_ms),
        chunk_delay: Duration::from_millis(args.chunk_delay_ms),
        failure_rate: args.failure_rate,
        chunk_chars: 0,
        context_window: args.context_window,
        api_key: None,
    };
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        if !args.start_after.is_zero() {
            tracing::info!(start_after = ?args.start_after, "loading (simulated): not listening yet");
            tokio::time::sleep(args.start_after).await;
        }
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        tracing::info!(listen = %listener.local_addr()?, model = %args.model, prompts = book.len(), "replay serving");
        lookahead_replay::serve(
            listener,
            Arc::new(ReplayServer::new(book, options)),
            crate::signal::shutdown(),
            Duration::from_secs(10),
        )
        .await
        .context("serving")
    })
}
