//! `lookahead router`: the OpenAI-compatible routing front (see docs/router.md).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use lookahead_api::RouterConfig;
use lookahead_router::{serve, Router, ScorerLoader};

#[derive(Args, Debug)]
pub struct RouterArgs {
    /// Router configuration (YAML or JSON; the operator renders it into a ConfigMap).
    #[arg(long)]
    config: PathBuf,
    /// Override the config's `listen` address.
    #[arg(long)]
    listen: Option<String>,
    /// Backbone directory for in-process scoring (default: $LOOKAHEAD_BACKBONE or the cache).
    #[arg(long)]
    backbone: Option<PathBuf>,
    /// Weight precision for scoring: `f32` (the trained weights), `int8` (lite, MLC and kNN on
    /// the CPU: about 2–4× faster with AVX-512 VNNI, decisions agree with f32 on most prompts) or
    /// `auto`: int8 where the CPU has AVX-512 VNNI and training measured int8 deciding as f32 on
    /// at least 99% of the validation prompts, else f32.
    #[arg(long, env = "LOOKAHEAD_PRECISION", default_value = "auto")]
    precision: lookahead_model::Precision,
    /// Longest to wait for in-flight requests on SIGTERM / ctrl-c, e.g. `30s`.
    #[arg(long, default_value = "30s", value_parser = lookahead_api::config::parse_duration)]
    grace: std::time::Duration,
    /// How long a stopping router, already unready, keeps accepting new connections before it
    /// drains: the time for the endpoint change to reach every node's Service NAT (kube-proxy),
    /// during which new connections still arrive. `0s` stops accepting at once.
    #[arg(long, default_value = "5s", value_parser = lookahead_api::config::parse_duration)]
    drain_delay: std::time::Duration,
}

/// The production loader: an artifact directory through `lookahead_model`.
pub fn artifact_loader(
    backbone: Option<PathBuf>,
    precision: lookahead_model::Precision,
) -> ScorerLoader {
    let options = lookahead_model::ScorerOptions {
        backbone,
        precision,
        ..Default::default()
    };
    Arc::new(move |dir: &Path| {
        lookahead_model::load_scorer(dir, &options).map_err(|e| e.to_string())
    })
}

pub fn run(args: RouterArgs) -> anyhow::Result<()> {
    let mut config = RouterConfig::from_file(&args.config)?;
    if let Some(l) = args.listen {
        config.listen = l;
    }
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let router = Arc::new(Router::from_config(
            &config,
            Some(artifact_loader(args.backbone, args.precision)),
        )?);
        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        tracing::info!(
            listen = %listener.local_addr()?,
            members = config.members.len(),
            method = ?config.policy.method,
            "router serving"
        );
        let drain = lookahead_router::Drain {
            delay: args.drain_delay,
            grace: args.grace,
        };
        serve(listener, router, crate::signal::shutdown(), drain).await;
        Ok(())
    })
}
