//! `lookahead train`: train a lite / MLC / kNN router on a routing dataset and write its artifact.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::Device;
use clap::Args;
use lookahead_data::{unit_hash, Dataset, KFold, Pool, Split, SplitSpec};
use lookahead_model::artifact::{save_artifact, Method, Metrics};
use lookahead_model::{default_states_root, Example, HyperParams, TrainRequest};

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// lite | mlc | knn | mlm | clm.
    #[arg(long, default_value = "lite")]
    method: Method,
    /// cpu | cuda (mlm, clm; cuda needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Routing dataset directory (manifest.json + one .jsonl[.gz] per source).
    #[arg(long)]
    data: PathBuf,
    /// Sources to train and evaluate on (default: every source in the manifest).
    #[arg(long, value_delimiter = ',')]
    sources: Option<Vec<String>>,
    /// Sources used for training only, never held out (e.g. SelfOSSInstruct).
    #[arg(long, value_delimiter = ',')]
    train_only_sources: Vec<String>,
    /// The pool, in order (default: the paper's five models). Records lacking a member are skipped.
    #[arg(long, value_delimiter = ',')]
    models: Option<Vec<String>>,
    /// Artifact directory to write (router.safetensors + router.json).
    #[arg(long)]
    out: PathBuf,
    /// Backbone directory (default: $LOOKAHEAD_BACKBONE or ~/.cache/lookahead/backbones/minilm-l6):
    /// a HF BERT directory; mlm: BERT or ModernBERT (config.json's model_type);
    /// clm: the GGUF decoder, $LOOKAHEAD_DECODER or ~/.cache/lookahead/backbones/smollm2-135m).
    #[arg(long)]
    backbone: Option<PathBuf>,
    /// Frozen-state cache root (default: ~/.cache/lookahead/states).
    #[arg(long)]
    states: Option<PathBuf>,
    /// Hold out fold `FOLD` of `--folds` (by record id hash) as the test set; else an 80/10/10 split.
    #[arg(long, requires = "folds")]
    fold: Option<usize>,
    #[arg(long)]
    folds: Option<usize>,
    /// Use at most this many training records (deterministic by id hash): for quick CPU runs.
    #[arg(long)]
    max_train: Option<usize>,
    #[arg(long, default_value_t = HyperParams::default().frozen_layers)]
    frozen_layers: usize,
    #[arg(long, default_value_t = HyperParams::default().trainable_layers)]
    trainable_layers: usize,
    #[arg(long, default_value_t = HyperParams::default().slot_tokens)]
    slot_tokens: usize,
    #[arg(long, default_value_t = HyperParams::default().max_prompt_tokens)]
    max_prompt_tokens: usize,
    /// Weight of the response-reconstruction loss (lite); 0 = no response objective.
    #[arg(long, default_value_t = HyperParams::default().lambda)]
    lambda: f64,
    #[arg(long, default_value_t = HyperParams::default().learning_rate)]
    lr: f64,
    #[arg(long, default_value_t = HyperParams::default().batch_size)]
    batch_size: usize,
    #[arg(long, default_value_t = HyperParams::default().max_epochs)]
    epochs: usize,
    #[arg(long, default_value_t = HyperParams::default().patience)]
    patience: usize,
    #[arg(long, default_value_t = HyperParams::default().seed)]
    seed: u64,
    #[arg(long, default_value_t = HyperParams::default().knn_k)]
    knn_k: usize,
    #[arg(long, default_value_t = HyperParams::default().label_threshold)]
    label_threshold: f64,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
    /// Also write the validation scores as one JSON object here (training Jobs pass their
    /// termination-message file, where the operator reads them into the policy's status).
    #[arg(long)]
    summary_file: Option<PathBuf>,
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    // Per-epoch progress goes through tracing (visible in logs, not only on a terminal).
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
    let started = Instant::now();
    let data =
        Dataset::open(&args.data).with_context(|| format!("opening {}", args.data.display()))?;
    let pool = match &args.models {
        Some(m) => Pool::new(m.iter().cloned())?,
        None => Pool::paper(),
    };
    let sources = data.resolve_sources(args.sources.as_deref())?;
    let extra = data.resolve_sources(Some(&args.train_only_sources))?;
    let mut all_sources = sources.clone();
    all_sources.extend(extra.iter().filter(|s| !sources.contains(s)).cloned());
    let selection = data.select_pool(&all_sources, &pool)?;
    for (source, n) in &selection.skipped.by_source {
        eprintln!("skipped {n} {source} records lacking a pool member");
    }
    if selection.records.is_empty() {
        bail!(
            "no record of {:?} has a response from every pool member",
            all_sources
        );
    }
    let hp = HyperParams {
        frozen_layers: args.frozen_layers,
        trainable_layers: args.trainable_layers,
        slot_tokens: args.slot_tokens,
        max_prompt_tokens: args.max_prompt_tokens,
        lambda: args.lambda,
        learning_rate: args.lr,
        batch_size: args.batch_size,
        max_epochs: args.epochs,
        patience: args.patience,
        seed: args.seed,
        knn_k: args.knn_k,
        label_threshold: args.label_threshold,
        ..HyperParams::default()
    };
    let (mut train, mut valid, mut test) = (Vec::new(), Vec::new(), Vec::new());
    let split = SplitSpec::default();
    let kfold = match (args.fold, args.folds) {
        (Some(f), Some(k)) => {
            if f >= k {
                bail!("--fold {f} must be below --folds {k}");
            }
            Some((KFold::new(k)?, f))
        }
        (None, Some(_)) => bail!("--folds needs --fold"),
        _ => None,
    };
    for r in &selection.records {
        let e = Example::from_record(&data, r, hp.label_threshold)?;
        if extra.contains(&r.source) && !sources.contains(&r.source) {
            train.push(e);
            continue;
        }
        match &kfold {
            Some((kf, fold)) => {
                if kf.fold_of(&r.id) == *fold {
                    test.push(e);
                } else if unit_hash(&r.id, "validation") < 0.1 {
                    valid.push(e);
                } else {
                    train.push(e);
                }
            }
            None => match split.assign(&r.id) {
                Split::Train => train.push(e),
                Split::Validation => valid.push(e),
                Split::Test => test.push(e),
            },
        }
    }
    if let Some(max) = args.max_train {
        if train.len() > max {
            train.sort_by(|a, b| {
                unit_hash(&a.id, "subsample").total_cmp(&unit_hash(&b.id, "subsample"))
            });
            train.truncate(max);
        }
    }
    let holdout = match &kfold {
        Some((kf, f)) => format!("fold {f}/{} (id hash); validation 10% of the rest", kf.k()),
        None => "split 80/10/10 (id hash)".to_string(),
    };
    eprintln!(
        "{} on {} models: {} train, {} validation, {} test records ({holdout})",
        args.method,
        pool.len(),
        train.len(),
        valid.len(),
        test.len()
    );
    let device = match (args.device.as_str(), args.method) {
        ("cpu", _) => Device::Cpu,
        ("cuda", Method::Mlm | Method::Clm) => crate::device::cuda()?,
        ("cuda", m) => bail!("--device cuda is for --method mlm|clm; {m} trains on the CPU"),
        (other, _) => bail!("--device must be cpu or cuda, not {other:?}"),
    };
    let req = TrainRequest {
        method: args.method,
        hyper: hp,
        models: pool.models().to_vec(),
        sources: all_sources,
        train: &train,
        valid: &valid,
        test: (!test.is_empty()).then_some(test.as_slice()),
        holdout,
        backbone: args.backbone.clone(),
        device,
        states_root: args.states.clone().unwrap_or_else(default_states_root),
        progress: !args.quiet,
    };
    let trained = lookahead_model::train(&req)?;
    save_artifact(&args.out, &trained.meta, &trained.tensors)?;
    print_metrics("validation", &trained.meta.validation);
    if let Some(path) = &args.summary_file {
        let v = &trained.meta.validation;
        // Termination messages are capped at 4 KiB: scalar scores only.
        let summary = serde_json::json!({
            "examples": v.examples,
            "router": v.router,
            "bestSingle": v.best_single,
            "oracle": v.oracle,
        });
        std::fs::write(path, summary.to_string())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(t) = &trained.meta.test {
        print_metrics("test", t);
    }
    println!(
        "wrote {} ({} models, fingerprint {}, best epoch {}, train {:.1}s, total {:.1}s)",
        args.out.display(),
        trained.meta.models.len(),
        trained.meta.pool_fingerprint,
        trained.meta.best_epoch,
        trained.meta.train_seconds,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn print_metrics(name: &str, m: &Metrics) {
    println!(
        "{name}: n={} router {:.2} | best single {:.2} ({}) | oracle {:.2}{}",
        m.examples,
        m.router,
        m.best_single,
        m.best_single_model,
        m.oracle,
        m.bce.map(|b| format!(" | bce {b:.4}")).unwrap_or_default()
    );
    for (source, s) in &m.per_source {
        println!(
            "  {source:<16} n={:<5} router {:6.2}  best single {:6.2}  oracle {:6.2}",
            s.examples, s.router, s.best_single, s.oracle
        );
    }
}
