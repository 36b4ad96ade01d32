//! `lookahead route`: score one prompt with a trained router artifact and print the ranking.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use lookahead_model::{load_scorer, rank, ScorerOptions};

#[derive(Args, Debug)]
pub struct RouteArgs {
    /// Artifact directory (router.json + router.safetensors).
    #[arg(long)]
    artifact: PathBuf,
    /// Backbone directory (default: $LOOKAHEAD_BACKBONE or ~/.cache/lookahead/backbones/minilm-l6).
    #[arg(long)]
    backbone: Option<PathBuf>,
    /// Per-model prices `MODEL=PRICE,...` for cost-aware ranking (quality - cost-weight x price).
    #[arg(long, value_delimiter = ',')]
    prices: Vec<String>,
    #[arg(long, default_value_t = 0.0)]
    cost_weight: f64,
    /// Weight precision for scoring: `f32` (the trained weights), `int8` (lite, MLC and kNN on
    /// the CPU: about 2–4× faster with AVX-512 VNNI, decisions agree with f32 on most prompts) or
    /// `auto`: int8 where the CPU has AVX-512 VNNI and training measured int8 deciding as f32 on
    /// at least 99% of the validation prompts, else f32.
    #[arg(long, env = "LOOKAHEAD_PRECISION", default_value = "auto")]
    precision: lookahead_model::Precision,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// The prompt.
    prompt: String,
}

pub fn run(args: RouteArgs) -> anyhow::Result<()> {
    let options = ScorerOptions {
        backbone: args.backbone.clone(),
        precision: args.precision,
        ..ScorerOptions::default()
    };
    let scorer = load_scorer(&args.artifact, &options)
        .with_context(|| format!("loading {}", args.artifact.display()))?;
    let models = scorer.models().to_vec();
    let prices = if args.prices.is_empty() {
        None
    } else {
        let mut p = vec![0.0; models.len()];
        for item in &args.prices {
            let (m, v) = item.split_once('=').context("--prices wants MODEL=PRICE")?;
            let Some(i) = models.iter().position(|x| x == m) else {
                bail!("--prices names {m:?}, which is not in the artifact's pool {models:?}");
            };
            p[i] = v.parse().with_context(|| format!("price of {m}"))?;
        }
        Some(p)
    };
    let scores = scorer.score_batch(&[args.prompt.as_str()])?;
    let Some(scores) = scores.into_iter().next() else {
        bail!("the scorer returned nothing");
    };
    let order = rank(&scores, prices.as_deref(), args.cost_weight);
    if args.json {
        let ranked: Vec<serde_json::Value> = order
            .iter()
            .map(|&i| {
                let mut v = serde_json::json!({"model": models[i], "score": scores[i]});
                if let Some(p) = &prices {
                    v["price"] = serde_json::json!(p[i]);
                }
                v
            })
            .collect();
        let out = serde_json::json!({
            "selected": order.first().map(|&i| models[i].clone()),
            "ranking": ranked,
        });
        println!("{out}");
    } else {
        for (rank, &i) in order.iter().enumerate() {
            println!("{:>2}. {:<32} {:.4}", rank + 1, models[i], scores[i]);
        }
    }
    Ok(())
}
