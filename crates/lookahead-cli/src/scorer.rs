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
}

pub fn run(args: ScorerArgs) -> anyhow::Result<()> {
    crate::router::init_tracing();
    let loader = crate::router::artifact_loader(args.backbone);
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
            lookahead_router::server::shutdown_signal(),
        )
        .await?;
        Ok(())
    })
}
