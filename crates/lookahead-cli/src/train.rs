//! `lookahead train`: train a lite / MLC / kNN router on a routing dataset and write its artifact.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::Device;
use clap::Args;
use lookahead_data::{unit_hash, Dataset, Holdout, Pool, PoolRecord, Split};
use lookahead_model::artifact::{
    member_dir, Method, Metrics, ResponseTarget, RouterMeta, SelectOn, SlotDesign,
};
use lookahead_model::wide::NgramTokens;
use lookahead_model::{default_states_root, Example, HyperParams, TrainRequest, Truncation};

use crate::holdout::HoldoutArgs;

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// ngram | lite | mlc | knn | mlm | clm | ensemble (the mean of `--members`). The default, ngram, routes within noise of the best
    /// measured router (MLC) at a fiftieth of its training time, and its acceptance gate is
    /// cross-fitted, so it serves where the others' validation-only gate cannot tell (docs/results.md).
    #[arg(long, default_value = "ngram")]
    method: Method,
    /// Ensemble: the member methods, trained in this order, each through its own acceptance
    /// gate (cross-fitted and calibrated for ngram), then judged together on validation.
    #[arg(long, value_delimiter = ',', default_value = "ngram,lite")]
    members: Vec<Method>,
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
    /// The pool, in order (default: the paper's five models where the data has them, else every
    /// model the manifest lists for all the sources). Records lacking a member are skipped.
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
    /// The held-out records (`--fold`, `--folds`, `--split-salt`; the same flags as `eval`).
    #[command(flatten)]
    pub(crate) holdout: HoldoutArgs,
    /// Use at most this many training records (deterministic by id hash): for quick CPU runs.
    #[arg(long)]
    max_train: Option<usize>,
    #[arg(long, default_value_t = HyperParams::default().frozen_layers)]
    frozen_layers: usize,
    #[arg(long, default_value_t = HyperParams::default().trainable_layers)]
    trainable_layers: usize,
    #[arg(long, default_value_t = HyperParams::default().slot_tokens)]
    slot_tokens: usize,
    /// Lite: joint (one sequence, full attention) | asymmetric (prompt attends to the prompt only,
    /// zero-started slot head: lite starts as MLC).
    #[arg(long, default_value_t = HyperParams::default().slot_design)]
    slot_design: SlotDesign,
    /// Lite: what the slots reconstruct: first-tokens (the response's first K token states) |
    /// windows (K pooled windows spread over the whole response).
    #[arg(long, default_value_t = HyperParams::default().response_target)]
    response_target: ResponseTarget,
    #[arg(long, default_value_t = HyperParams::default().max_prompt_tokens)]
    max_prompt_tokens: usize,
    /// Which tokens of a longer prompt the encoder reads: head | head-tail.
    #[arg(long, default_value_t = HyperParams::default().prompt_truncation)]
    prompt_truncation: Truncation,
    /// Lite/MLC: add a wide head over the whole prompt's hashed n-grams to the encoder's logits.
    #[arg(long)]
    wide: bool,
    /// Hash buckets of the n-gram features (`--method ngram`, `--wide`).
    #[arg(long, default_value_t = HyperParams::default().ngram_buckets)]
    ngram_buckets: usize,
    /// Which tokens the n-gram features are made of (`--method ngram`, `--wide`, the source
    /// classifier): `multilingual-words` (two or more word characters; each character in the
    /// scripts written without spaces, such as Chinese and Japanese), `words` (two or more word
    /// characters in every script) or `words-and-punctuation` (what artifacts written before the
    /// setting read).
    #[arg(long, default_value_t = HyperParams::default().ngram_tokens)]
    ngram_tokens: NgramTokens,
    /// N-gram fits drop the hashed n-grams fewer training prompts than this have (1 keeps all).
    #[arg(long, default_value_t = HyperParams::default().ngram_min_df)]
    ngram_min_df: u32,
    /// N-gram router: once validation has picked the strength, fit again on the training and
    /// validation records together and serve that (its validation line is the first fit's).
    #[arg(long)]
    refit: bool,
    /// N-gram fits (`--method ngram`, `--wide`): how much harder each model's weights are
    /// shrunk towards the models' mean than the mean towards zero (1 = plain L2).
    #[arg(long, default_value_t = HyperParams::default().coupling)]
    coupling: f64,
    /// N-gram fits learn each model's scaled score (a soft target) instead of the paper's
    /// 0/1 labels.
    #[arg(long)]
    score_targets: bool,
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
    /// The validation metric that picks the best epoch and stops training: router (the pooled
    /// routing score) | bce (the routing labels' BCE, smooth where the pooled score jumps).
    #[arg(long, default_value_t = HyperParams::default().selection)]
    select_on: SelectOn,
    #[arg(long, default_value_t = HyperParams::default().seed)]
    seed: u64,
    #[arg(long, default_value_t = HyperParams::default().knn_k)]
    knn_k: usize,
    #[arg(long, default_value_t = HyperParams::default().label_threshold)]
    label_threshold: f64,
    /// The acceptance gate: the gain over the best single model (scaled score points, 0..100)
    /// whose one-sided 95% lower bound on validation the router must reach; below it, the
    /// artifact is written but marked not accepted, and routers serve that model instead.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    min_gain: f64,
    /// Judge the acceptance gate on K-fold cross-fitted choices over the training and
    /// validation records (the training repeated K times, each without one fold) instead of the
    /// validation split alone: about ten times the evidence, K times the training. 0: the
    /// validation split. Default: 5 for ngram (seconds per fit), 0 for the encoder methods.
    #[arg(long)]
    acceptance_folds: Option<usize>,
    /// With cross-fitted acceptance, serve the raw scores instead of the within-source
    /// calibration fitted on the cross-fitted ones (per source: each model's mean, and how far
    /// the router's differences between models are worth following).
    #[arg(long)]
    no_source_calibration: bool,
    /// ngram: give every n-gram a second, source-specific weight beside its shared one (learned
    /// on that source's prompts; served through a source classifier), so a word can point to
    /// different models in different kinds of prompt.
    #[arg(long)]
    source_features: bool,
    /// The calibration measures how far to follow the router's differences per source and
    /// model instead of per source.
    #[arg(long)]
    per_model_slopes: bool,
    /// The shuffled-target control (lite, MLM, CLM): give each training example the responses
    /// of another example of its source (a rotation in id-hash order under `--seed`), so the
    /// response objective sees real responses that are not its prompt's. Validation keeps its
    /// own, so the foresight line measures whether the slots still foresee this prompt's answer.
    #[arg(long)]
    shuffle_responses: bool,
    /// Stop training before an epoch that would, at the last epoch's pace, end more than this
    /// long after the command started (e.g. `4m`); the first epoch always runs, the best epoch
    /// so far is kept, and `router.json` records the epochs run (`epochs_run`). Encoder methods.
    #[arg(long, value_parser = lookahead_api::config::parse_duration)]
    time_budget: Option<std::time::Duration>,
    /// Do not score the test split: its records stay held out but are neither encoded nor
    /// evaluated (for a caller that scores them itself, as `lookahead demo` does).
    #[arg(long)]
    skip_test: bool,
    /// Do not measure how often int8 decides as f32 (lite, MLC, kNN): `auto` precision then
    /// serves the artifact at f32. For hosts whose CPU cannot serve int8 (no AVX-512 VNNI),
    /// where the int8 kernels' portable path makes the measurement slow and its result unused.
    #[arg(long)]
    no_int8_agreement: bool,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
    /// Also write the validation scores as one JSON object here (training Jobs pass their
    /// termination-message file, where the operator reads them into the policy's status).
    #[arg(long)]
    summary_file: Option<PathBuf>,
}

/// The pool's records of the training sources, and the train-only sources among them.
struct Selection {
    records: Vec<PoolRecord>,
    sources: Vec<String>,
    train_only: Vec<String>,
}

/// `--models`, or the default pool for the training sources (`Pool::for_sources`).
fn pool_of(args: &TrainArgs, data: &Dataset, sources: &[String]) -> anyhow::Result<Pool> {
    Ok(match &args.models {
        Some(m) => Pool::new(m.iter().cloned())?,
        None => Pool::for_sources(data.manifest(), sources)?,
    })
}

fn select(
    args: &TrainArgs,
    data: &Dataset,
    sources: Vec<String>,
    pool: &Pool,
) -> anyhow::Result<Selection> {
    let extra = data.resolve_sources(Some(&args.train_only_sources))?;
    let train_only: Vec<String> = extra.into_iter().filter(|s| !sources.contains(s)).collect();
    let mut all_sources = sources;
    all_sources.extend(train_only.iter().cloned());
    let selection = data.select_pool(&all_sources, pool)?;
    for (source, n) in &selection.skipped.by_source {
        eprintln!("skipped {n} {source} records lacking a pool member");
    }
    if selection.records.is_empty() {
        bail!(
            "no record of {:?} has a response from every pool member",
            all_sources
        );
    }
    Ok(Selection {
        records: selection.records,
        sources: all_sources,
        train_only,
    })
}

/// The part a record goes to: records of train-only sources always train, the others as
/// `holdout` assigns them (what `lookahead eval` holds out with the same flags).
pub(crate) fn part_of(record: &PoolRecord, holdout: &Holdout, train_only: &[String]) -> Split {
    if train_only.contains(&record.source) {
        Split::Train
    } else {
        holdout.assign(&record.id)
    }
}

fn hyper_params(args: &TrainArgs) -> HyperParams {
    HyperParams {
        frozen_layers: args.frozen_layers,
        trainable_layers: args.trainable_layers,
        slot_tokens: args.slot_tokens,
        slot_design: args.slot_design,
        response_target: args.response_target,
        max_prompt_tokens: args.max_prompt_tokens,
        prompt_truncation: args.prompt_truncation,
        wide: args.wide,
        ngram_buckets: args.ngram_buckets,
        ngram_tokens: args.ngram_tokens,
        ngram_min_df: args.ngram_min_df,
        refit: args.refit,
        coupling: args.coupling,
        score_targets: args.score_targets,
        lambda: args.lambda,
        learning_rate: args.lr,
        batch_size: args.batch_size,
        max_epochs: args.epochs,
        patience: args.patience,
        selection: args.select_on,
        seed: args.seed,
        knn_k: args.knn_k,
        label_threshold: args.label_threshold,
        source_calibration: !args.no_source_calibration,
        source_features: args.source_features,
        per_model_slopes: args.per_model_slopes,
        shuffled_responses: args.shuffle_responses,
        members: match args.method {
            Method::Ensemble => args.members.clone(),
            _ => Vec::new(),
        },
        ..HyperParams::default()
    }
}

/// Train, validation and test examples.
type Parts = (Vec<Example>, Vec<Example>, Vec<Example>);

fn examples(
    args: &TrainArgs,
    data: &Dataset,
    selection: &Selection,
    holdout: &Holdout,
    label_threshold: f64,
) -> anyhow::Result<Parts> {
    let (mut train, mut valid, mut test) = (Vec::new(), Vec::new(), Vec::new());
    for r in &selection.records {
        let e = Example::from_record(data, r, label_threshold)?;
        match part_of(r, holdout, &selection.train_only) {
            Split::Train => train.push(e),
            Split::Validation => valid.push(e),
            Split::Test => test.push(e),
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
    Ok((train, valid, test))
}

fn device(args: &TrainArgs) -> anyhow::Result<Device> {
    Ok(match (args.device.as_str(), args.method) {
        ("cpu", _) => Device::Cpu,
        ("cuda", Method::Mlm | Method::Clm) => crate::device::cuda()?,
        ("cuda", m) => bail!("--device cuda is for --method mlm|clm; {m} trains on the CPU"),
        (other, _) => bail!("--device must be cpu or cuda, not {other:?}"),
    })
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let data =
        Dataset::open(&args.data).with_context(|| format!("opening {}", args.data.display()))?;
    let sources = data.resolve_sources(args.sources.as_deref())?;
    let pool = pool_of(&args, &data, &sources)?;
    let selection = select(&args, &data, sources, &pool)?;
    let hp = hyper_params(&args);
    let holdout = args.holdout.holdout()?;
    let (mut train, valid, test) =
        examples(&args, &data, &selection, &holdout, hp.label_threshold)?;
    if args.shuffle_responses {
        shuffle_responses(&mut train, args.seed);
    }
    eprintln!(
        "{} on {} models: {} train, {} validation, {} test records ({})",
        args.method,
        pool.len(),
        train.len(),
        valid.len(),
        test.len(),
        holdout.describe()
    );
    let device = device(&args)?;
    let req = TrainRequest {
        method: args.method,
        hyper: hp,
        models: pool.models().to_vec(),
        sources: selection.sources,
        train: &train,
        valid: &valid,
        test: (!test.is_empty() && !args.skip_test).then_some(test.as_slice()),
        holdout: holdout.describe(),
        min_gain: args.min_gain,
        acceptance_folds: args
            .acceptance_folds
            .unwrap_or_else(|| default_acceptance_folds(args.method)),
        backbone: args.backbone.clone(),
        device,
        states_root: args.states.clone().unwrap_or_else(default_states_root),
        progress: !args.quiet,
        deadline: args.time_budget.map(|b| started + b),
    };
    let mut trained = lookahead_model::train(&req)?;
    trained.save(&args.out)?;
    if !args.no_int8_agreement {
        measure_int8(&args.out, &args, &valid, &mut trained.meta)?;
        for member in &mut trained.members {
            let dir = member_dir(&args.out, member.meta.method);
            measure_int8(&dir, &args, &valid, &mut member.meta)?;
        }
    }
    for member in &trained.members {
        print_metrics(
            &format!("member {} validation", member.meta.method),
            &member.meta.validation,
        );
    }
    print_metrics("validation", &trained.meta.validation);
    match &trained.meta.acceptance {
        Some(a) => println!("acceptance: {a}"),
        None => println!("acceptance: not measured (no validation records): served as accepted"),
    }
    if let Some(path) = &args.summary_file {
        write_summary(path, &trained.meta)?;
    }
    if let Some(t) = &trained.meta.test {
        print_metrics("test", t);
    }
    let mut details = match trained.meta.epochs_run {
        0 => String::new(),
        run => format!(", best epoch {} of {run} run", trained.meta.best_epoch),
    };
    if let Some(c) = trained.meta.ngram_strength {
        details.push_str(&format!(", n-gram C {c}"));
    }
    println!(
        "wrote {} ({} models, fingerprint {}{details}, train {:.1}s, total {:.1}s)",
        args.out.display(),
        trained.meta.models.len(),
        trained.meta.pool_fingerprint,
        trained.meta.train_seconds,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The shuffled-target control: within each source, the examples in id-hash order (salted with
/// the seed) each take the next one's responses (the last the first's), so no example keeps its
/// own (a source with one example keeps it) and the responses stay real ones of that source.
fn shuffle_responses(train: &mut [Example], seed: u64) {
    let salt = format!("shuffle-{seed}");
    let mut by_source: std::collections::BTreeMap<String, Vec<usize>> = Default::default();
    for (i, e) in train.iter().enumerate() {
        by_source.entry(e.source.clone()).or_default().push(i);
    }
    for order in by_source.values_mut() {
        order.sort_by(|&a, &b| {
            unit_hash(&train[a].id, &salt).total_cmp(&unit_hash(&train[b].id, &salt))
        });
        let responses: Vec<Vec<String>> =
            order.iter().map(|&i| train[i].responses.clone()).collect();
        for (k, &i) in order.iter().enumerate() {
            train[i].responses = responses[(k + 1) % responses.len()].clone();
        }
    }
}

/// Records in the artifact how often its int8 scorer decides as its f32 one on the validation
/// prompts (lite, MLC, kNN), which decides whether `auto` precision serves int8.
fn measure_int8(
    dir: &Path,
    args: &TrainArgs,
    valid: &[Example],
    meta: &mut RouterMeta,
) -> anyhow::Result<()> {
    let prompts: Vec<&str> = valid.iter().map(|e| e.prompt.as_str()).collect();
    let Some(agreement) =
        lookahead_model::measure_int8_agreement(dir, args.backbone.clone(), &prompts)?
    else {
        return Ok(());
    };
    meta.int8_agreement = Some(agreement);
    meta.write(dir)?;
    println!(
        "int8: decides as f32 on {:.1}% of {} validation prompts ({} {:.0}%: `auto` precision serves {} on CPUs with AVX-512 VNNI)",
        100.0 * agreement,
        prompts.len(),
        if agreement >= lookahead_model::INT8_AGREEMENT_FLOOR { "≥" } else { "<" },
        100.0 * lookahead_model::INT8_AGREEMENT_FLOOR,
        if agreement >= lookahead_model::INT8_AGREEMENT_FLOOR { "int8" } else { "f32" },
    );
    Ok(())
}

/// Cross-fitting folds of the acceptance gate when `--acceptance-folds` is not given: 5 for a
/// method that refits in seconds (an ensemble passes them to such members), none for an
/// encoder method (see `lookahead_model::methods::cross_fits_by_default`).
pub(crate) fn default_acceptance_folds(method: Method) -> usize {
    if lookahead_model::methods::cross_fits_by_default(method) {
        5
    } else {
        0
    }
}

/// The validation scores and the acceptance verdict as one JSON object, for the operator (a
/// training Job's termination message, capped at 4 KiB: scalar scores only).
fn write_summary(path: &Path, meta: &RouterMeta) -> anyhow::Result<()> {
    let v = &meta.validation;
    let summary = serde_json::json!({
        "examples": v.examples,
        "router": v.router,
        "bestSingle": v.best_single,
        "oracle": v.oracle,
        "acceptance": meta.acceptance,
    });
    std::fs::write(path, summary.to_string()).with_context(|| format!("writing {}", path.display()))
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
    if let Some(f) = &m.foresight {
        println!(
            "  foresight: masked-response reconstruction loss {:.4} (1-cos joint, MSE of centred states asymmetric) vs per-(source, model, position) constant {:.4}",
            f.reconstruction, f.constant
        );
    }
    for (source, s) in &m.per_source {
        println!(
            "  {source:<16} n={:<5} router {:6.2}  best single {:6.2}  oracle {:6.2}",
            s.examples, s.router, s.best_single, s.oracle
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(id: &str, source: &str) -> Example {
        Example {
            id: id.into(),
            source: source.into(),
            prompt: format!("prompt {id}"),
            responses: vec![format!("answer to {id}")],
            labels: vec![1.0],
            quality: vec![100.0],
        }
    }

    /// Every example of a source with others gets another example's responses of the same
    /// source (each response used once); prompts, labels and scores stay; a lone example keeps
    /// its own; the same seed gives the same shuffle.
    #[test]
    fn shuffled_responses_come_from_another_prompt_of_the_same_source() {
        let original: Vec<Example> = (0..6)
            .map(|i| example(&format!("a{i}"), "A"))
            .chain([example("b0", "B")])
            .collect();
        let mut shuffled = original.clone();
        shuffle_responses(&mut shuffled, 17);
        for (before, after) in original.iter().zip(&shuffled) {
            assert_eq!(
                (&before.prompt, &before.quality),
                (&after.prompt, &after.quality)
            );
            if before.source == "A" {
                assert_ne!(before.responses, after.responses, "{}", before.id);
                assert!(after.responses[0].starts_with("answer to a"));
            } else {
                assert_eq!(before.responses, after.responses);
            }
        }
        let mut used: Vec<&str> = shuffled.iter().map(|e| e.responses[0].as_str()).collect();
        used.sort();
        used.dedup();
        assert_eq!(used.len(), 7, "each response used once");
        let mut again = original.clone();
        shuffle_responses(&mut again, 17);
        assert_eq!(again, shuffled);
    }
}
