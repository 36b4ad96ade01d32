//! `lookahead scorer`: the gRPC scoring sidecar over a hot-reloaded router artifact.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use lookahead_router::scoring::{load_slot, spawn_reloader};

#[derive(Args, Debug)]
pub struct ScorerArgs {
    /// Artifact directory (router.json + router.safetensors); reloaded when its files change.
    #[arg(long)]
    artifact: PathBuf,
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: String,
    #[arg(long)]
    backbone: Option<PathBuf>,
    /// How often to check the artifact for changes, e.g. `2s`.
    #[arg(long, default_value = "2s", value_parser = lookahead_api::config::parse_duration)]
    reload_every: Duration,
    /// Where encoder-based routers (lite, MLC, MLM) run: `cpu`, or `cuda` (GPU 0; needs a build
    /// with `--features cuda`). kNN and CLM score on the CPU either way.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Weight precision for scoring: `f32` (the trained weights), `int8` (lite, MLC and kNN on
    /// the CPU: about 2–4× faster with AVX-512 VNNI, decisions agree with f32 on most prompts) or
    /// `auto`: int8 where the CPU has AVX-512 VNNI and training measured int8 deciding as f32 on
    /// at least 99% of the validation prompts, else f32.
    #[arg(long, env = "LOOKAHEAD_PRECISION", default_value = "auto")]
    precision: lookahead_model::Precision,
}

fn device(name: &str) -> anyhow::Result<candle_core::Device> {
    match name {
        "cpu" => Ok(candle_core::Device::Cpu),
        "cuda" => crate::device::cuda(),
        other => anyhow::bail!("--device must be cpu or cuda, not {other:?}"),
    }
}

pub fn run(args: ScorerArgs) -> anyhow::Result<()> {
    let device = device(&args.device)?;
    let options = lookahead_model::ScorerOptions {
        backbone: args.backbone.clone(),
        device,
        precision: args.precision,
        models: None,
    };
    let loader: lookahead_router::ScorerLoader = Arc::new(move |dir: &std::path::Path| {
        lookahead_model::load_scorer(dir, &options).map_err(|e| e.to_string())
    });
    let slot = Arc::new(
        load_slot(&args.artifact, &loader)
            .map_err(|e| anyhow::anyhow!("loading {}: {e}", args.artifact.display()))?,
    );
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let _reloader = spawn_reloader(slot.clone(), args.artifact.clone(), loader, args.reload_every);
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        tracing::info!(listen = %listener.local_addr()?, version = %slot.version(), "scorer serving");
        lookahead_router::grpc::serve_scorer(
            listener,
            slot,
            crate::signal::shutdown(),
        )
        .await?;
        Ok(())
    })
}
