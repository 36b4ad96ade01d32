//! `lookahead eval`: judge a router (a trained artifact, or a baseline that needs no training) on a
//! routing dataset, next to every baseline on the same records. All routers go through one path:
//! a prediction matrix (or decisions) -> `lookahead_data::Evaluation`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use lookahead_data::metrics::{
    cost_aware_decisions, decisions_from_predictions, random_decisions, win_loss_scores,
};
use lookahead_data::progress::{self, ProgressBar};
use lookahead_data::report::{comparison_table, singles_table, summary_table, write_report};
use lookahead_data::{
    honest_comparisons, matched_scores, prediction_lines, read_predictions, write_predictions,
    BootstrapOptions, Comparison, ComparisonKind, Dataset, EvalExtras, EvalSet, Evaluation,
    Holdout, KFold, Pool, PoolRecord, SkipCounts, Split,
};
use lookahead_model::Scorer;

use crate::calibrate::{self, CalibrateArgs, Calibration};
use crate::holdout::HoldoutArgs;

#[derive(Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["router", "artifact"])))]
pub struct EvalArgs {
    /// Routing dataset directory (manifest.json + one .jsonl[.gz] per source).
    #[arg(long, env = "LOOKAHEAD_DATA")]
    data: PathBuf,
    /// Sources to evaluate (default: every source in the manifest).
    #[arg(long, value_delimiter = ',')]
    sources: Option<Vec<String>>,
    /// The pool, in order (default: the artifact's models, else the models common to all
    /// sources). Records lacking a member are skipped and counted.
    #[arg(long, value_delimiter = ',')]
    models: Option<Vec<String>>,
    /// Baseline router: oracle | random | fixed:MODEL.
    #[arg(long)]
    router: Option<String>,
    /// Trained router artifact directory (router.json + router.safetensors). K of them, with
    /// commas, and --folds K: cross-validation, each record scored by the artifact trained
    /// without its fold (artifact i held out fold i).
    #[arg(long, value_delimiter = ',')]
    artifact: Option<Vec<PathBuf>>,
    /// Backbone directory for the artifact (default: $LOOKAHEAD_BACKBONE or the set-up's cache).
    #[arg(long)]
    backbone: Option<PathBuf>,
    /// Records to evaluate: test | validation | train | all (80/10/10 by record-id hash, the
    /// split `lookahead train` holds out).
    #[arg(long, default_value = "test")]
    split: String,
    /// The held-out records (`--fold` evaluates fold FOLD of `--folds` instead of --split;
    /// `--split-salt`): give the flags `lookahead train` was given.
    #[command(flatten)]
    pub(crate) holdout: HoldoutArgs,
    /// Price per query of each model, `MODEL=PRICE,...`: adds cost and a quality–cost curve.
    #[arg(long, value_delimiter = ',')]
    prices: Option<Vec<String>>,
    /// Route by `prediction − weight × price` (needs --prices).
    #[arg(long, default_value_t = 0.0, requires = "prices")]
    cost_weight: f64,
    /// Also compare with another router, record by record: a predictions file of another run
    /// (`--predictions-out`, matched by record id; it must cover exactly these records) or a
    /// baseline (oracle, random, fixed:MODEL). Gives wins / losses / ties and router − it with
    /// its paired bootstrap interval. Repeat the flag for several. With `--split all` and one
    /// artifact, its acceptance gate's fallback model is compared by default.
    #[arg(long)]
    versus: Vec<String>,
    /// Write the per-record predictions here (JSON Lines: id, source, fold under CV, each
    /// model's predicted score when the router has predictions, the decision, each model's
    /// scaled score); another run reads it with `--versus`.
    #[arg(long)]
    predictions_out: Option<PathBuf>,
    /// Bootstrap resamples of the intervals (paired, records resampled within sources).
    #[arg(long, default_value_t = lookahead_data::bootstrap::DEFAULT_RESAMPLES)]
    resamples: usize,
    /// Seed of `--router random` (and `--versus random`).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Prompts per scorer call.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Print exactly one JSON object instead of tables.
    #[arg(long)]
    json: bool,
    /// Also write the `--json` object to this file (the tables still go to stdout).
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// Also write report.md + SVG plots into this directory.
    #[arg(long)]
    report: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Weight precision of the artifacts' scorers: `f32` (the trained weights) or `int8`.
    #[arg(long, default_value = "f32")]
    precision: lookahead_model::Precision,
    /// `--calibrate` and its targets and prices.
    #[command(flatten)]
    pub(crate) calibrate: CalibrateArgs,
}

/// Which records of the selection are evaluated.
pub(crate) enum Subset {
    All,
    /// One part of the holdout: `--split`'s, or with `--fold` the held-out fold.
    Part(Holdout, Split),
    /// Every record, scored by the router of its fold.
    CrossValidation(KFold),
}

impl Subset {
    pub(crate) fn from_args(args: &EvalArgs, routers: usize) -> anyhow::Result<Self> {
        let (fold, folds) = (args.holdout.fold, args.holdout.folds);
        if routers > 1 {
            let Some(k) = folds.filter(|&k| k == routers) else {
                bail!("{routers} artifacts need --folds {routers} (artifact i held out fold i)");
            };
            if fold.is_some() {
                bail!("--fold selects one fold; with one artifact per fold, leave it out");
            }
            return Ok(Subset::CrossValidation(args.holdout.kfold(k)?));
        }
        if folds.is_some() && fold.is_none() {
            bail!("--folds needs --fold, or one artifact per fold");
        }
        let holdout = args.holdout.holdout()?;
        Ok(match holdout {
            Holdout::Fold { .. } => Subset::Part(holdout, Split::Test),
            Holdout::Split(_) if args.split == "all" => Subset::All,
            Holdout::Split(_) => Subset::Part(holdout, args.split.parse()?),
        })
    }

    #[cfg(test)]
    pub(crate) fn keeps(&self, id: &str) -> bool {
        matches!(self.mark(id), Some(Some(_)))
    }

    /// How a record takes part: `Some(Some(g))` judged, scored by artifact `g` (its fold under
    /// cross-validation, else 0); `Some(None)` a record the artifact trained or selected on (the
    /// train and validation parts), judged by none; `None` left out.
    pub(crate) fn mark(&self, id: &str) -> Option<Option<usize>> {
        match self {
            Subset::All => Some(Some(0)),
            Subset::CrossValidation(kfold) => Some(Some(kfold.fold_of(id))),
            Subset::Part(holdout, part) => match holdout.assign(id) {
                p if p == *part => Some(Some(0)),
                Split::Test => None,
                Split::Train | Split::Validation => Some(None),
            },
        }
    }

    fn describe(&self) -> String {
        let (text, salt) = match self {
            Subset::All => return "all records".into(),
            Subset::Part(Holdout::Split(spec), split) => (
                format!("{split} split (80/10/10 by record-id hash)"),
                spec.salt(),
            ),
            Subset::Part(Holdout::Fold { kfold, fold }, _) => (
                format!("held-out fold {fold} of {} (by record-id hash)", kfold.k()),
                kfold.salt(),
            ),
            Subset::CrossValidation(kfold) => (
                format!(
                    "{}-fold cross-validation: every record, scored by the artifact that held out its fold",
                    kfold.k()
                ),
                kfold.salt(),
            ),
        };
        match salt {
            "" => text,
            salt => format!("{text}, salt {salt:?}"),
        }
    }
}

fn parse_prices(pool: &Pool, specs: &[String]) -> anyhow::Result<Vec<f64>> {
    let mut given = BTreeMap::new();
    for spec in specs {
        let (model, price) = spec
            .split_once('=')
            .with_context(|| format!("--prices entry {spec:?} is not MODEL=PRICE"))?;
        let price: f64 = price
            .trim()
            .parse()
            .with_context(|| format!("--prices entry {spec:?}: price is not a number"))?;
        given.insert(model.trim().to_string(), price);
    }
    pool.models()
        .iter()
        .map(|m| {
            given
                .get(m)
                .copied()
                .with_context(|| format!("--prices has no price for pool member {m:?}"))
        })
        .collect()
}

/// Scores every prompt with `scorer` (in batches, with a progress bar) and returns prediction rows
/// in `pool` order. The scorer's pool must contain every member of `pool`.
pub fn scorer_predictions(
    scorer: &dyn Scorer,
    pool: &Pool,
    prompts: &[&str],
    batch_size: usize,
    progress: &ProgressBar,
) -> anyhow::Result<Vec<Vec<f64>>> {
    let columns: Vec<usize> = pool
        .models()
        .iter()
        .map(|m| {
            scorer
                .models()
                .iter()
                .position(|s| s == m)
                .with_context(|| {
                    format!(
                        "the router does not score pool member {m:?} (it scores: {})",
                        scorer.models().join(", ")
                    )
                })
        })
        .collect::<anyhow::Result<_>>()?;
    let mut out = Vec::with_capacity(prompts.len());
    for chunk in prompts.chunks(batch_size.max(1)) {
        let scores = scorer.score_batch(chunk)?;
        if scores.len() != chunk.len() {
            bail!(
                "scorer returned {} score vectors for {} prompts",
                scores.len(),
                chunk.len()
            );
        }
        for row in scores {
            if row.len() != scorer.models().len() {
                bail!(
                    "scorer returned {} scores for {} models",
                    row.len(),
                    scorer.models().len()
                );
            }
            out.push(columns.iter().map(|&c| f64::from(row[c])).collect());
        }
        progress.inc(chunk.len() as u64);
    }
    Ok(out)
}

/// A router's prediction rows (when it has them) and its decisions.
type RouterOutput = (Option<Vec<Vec<f64>>>, Vec<usize>);

/// Predictions (when the router has them) and decisions of a baseline router.
fn baseline(name: &str, set: &EvalSet, pool: &Pool, seed: u64) -> anyhow::Result<RouterOutput> {
    if name == "oracle" {
        let pred: Vec<Vec<f64>> = set.items().iter().map(|i| i.scaled.clone()).collect();
        let d = decisions_from_predictions(&pred)?;
        return Ok((Some(pred), d));
    }
    if name == "random" {
        return Ok((None, random_decisions(set, seed)));
    }
    if let Some(model) = name.strip_prefix("fixed:") {
        let m = pool.index_of(model).with_context(|| {
            format!(
                "fixed:{model}: not in the pool ({})",
                pool.models().join(", ")
            )
        })?;
        return Ok((None, vec![m; set.len()]));
    }
    bail!("unknown --router {name:?} (oracle, random, fixed:MODEL; or use --artifact DIR)")
}

/// Everything `run` computed, for printing and tests.
pub struct EvalOutcome {
    pub evaluation: Evaluation,
    pub notes: Vec<String>,
    pub json: serde_json::Value,
}

/// A trained router to evaluate: one scorer, or one per fold (scorer i held out fold i).
pub struct ScoredRouter<'a> {
    pub name: String,
    pub scorers: Vec<&'a dyn Scorer>,
}

/// Predictions of `router` for every record, in `pool` order; with one scorer per fold, each
/// record is scored by the scorer of its fold.
fn router_predictions(
    router: &ScoredRouter<'_>,
    subset: &Subset,
    pool: &Pool,
    records: &[PoolRecord],
    batch_size: usize,
    progress: &ProgressBar,
) -> anyhow::Result<Vec<Vec<f64>>> {
    let fold_of = |r: &PoolRecord| match subset {
        Subset::CrossValidation(kfold) => kfold.fold_of(&r.id),
        _ => 0,
    };
    let mut out = vec![Vec::new(); records.len()];
    for (fold, scorer) in router.scorers.iter().enumerate() {
        let index: Vec<usize> = (0..records.len())
            .filter(|&i| fold_of(&records[i]) == fold)
            .collect();
        let prompts: Vec<&str> = index.iter().map(|&i| records[i].prompt.as_str()).collect();
        let pred = scorer_predictions(*scorer, pool, &prompts, batch_size, progress)?;
        for (i, row) in index.into_iter().zip(pred) {
            out[i] = row;
        }
    }
    progress.finish_and_clear();
    Ok(out)
}

/// The evaluated router's name, predictions (when it has them) and decisions: a trained router
/// scores `records`, a baseline decides on `set`; `--cost-weight` then trades quality for price.
fn decide(
    args: &EvalArgs,
    router: Option<&ScoredRouter<'_>>,
    subset: &Subset,
    (pool, records, set): (&Pool, &[PoolRecord], &EvalSet),
    prices: Option<&[f64]>,
) -> anyhow::Result<(String, RouterOutput)> {
    let (name, predictions, mut decisions) = match (router, &args.router) {
        (Some(r), _) => {
            let bar = progress::bar(records.len() as u64, "scoring", !(args.quiet || args.json));
            let pred = router_predictions(r, subset, pool, records, args.batch_size, &bar)?;
            let d = decisions_from_predictions(&pred)?;
            (r.name.clone(), Some(pred), d)
        }
        (None, Some(name)) => {
            let (pred, d) = baseline(name, set, pool, args.seed)?;
            (name.clone(), pred, d)
        }
        (None, None) => bail!("pass --router or --artifact"),
    };
    if args.cost_weight > 0.0 {
        match (prices, &predictions) {
            (Some(p), Some(pred)) => decisions = cost_aware_decisions(pred, p, args.cost_weight)?,
            _ => bail!(
                "--cost-weight needs --prices and a router with predictions (an artifact or oracle)"
            ),
        }
    }
    Ok((name, (predictions, decisions)))
}

/// The router against another one (`--versus`): a baseline name or a predictions file. Adds a
/// note and returns the JSON entry (wins / losses / ties) and the comparison with its interval.
fn versus(
    spec: &str,
    args: &EvalArgs,
    (set, pool): (&EvalSet, &Pool),
    router: &[f64],
    notes: &mut Vec<String>,
) -> anyhow::Result<(serde_json::Value, Comparison)> {
    let options = bootstrap_options(args);
    let kind = (ComparisonKind::Versus, spec);
    let (comparison, other) = if spec == "oracle" || spec == "random" || spec.starts_with("fixed:")
    {
        let (_, decisions) = baseline(spec, set, pool, args.seed)?;
        let c = Comparison::of_decisions(set, kind, router, &decisions, &options)?;
        (c, set.scores_of(&decisions)?)
    } else {
        let path = Path::new(spec);
        let lines = read_predictions(path).with_context(|| {
            format!(
                "--versus {spec}: neither a baseline (oracle, random, fixed:MODEL) nor a \
                 readable predictions file"
            )
        })?;
        let other = matched_scores(set, &lines, path)?;
        (Comparison::new(set, kind, router, &other, &options)?, other)
    };
    let (per_source, total) = win_loss_scores(set, router, &other)?;
    notes.push(format!(
        "versus {spec}: {} wins, {} losses, {} ties; router − it {} (95% CI)",
        total.wins, total.losses, total.ties, comparison.gain
    ));
    let json = serde_json::json!({"router": spec, "wins": total.wins, "losses": total.losses,
        "ties": total.ties, "sources": per_source});
    Ok((json, comparison))
}

fn bootstrap_options(args: &EvalArgs) -> BootstrapOptions {
    BootstrapOptions {
        resamples: args.resamples,
        ..BootstrapOptions::default()
    }
}

/// `--models`, else the router's models, else the models common to the sources.
fn eval_pool(
    args: &EvalArgs,
    data: &Dataset,
    sources: &[String],
    scorer: Option<&dyn Scorer>,
) -> anyhow::Result<Pool> {
    Ok(match (&args.models, scorer) {
        (Some(models), _) => Pool::new(models.iter().cloned())?,
        (None, Some(s)) => Pool::new(s.models().iter().cloned())?,
        (None, None) => Pool::new(data.manifest().common_models(sources))
            .context("the selected sources share no model; pass --models")?,
    })
}

/// The records an evaluation reads: the judged ones first, then the ones its artifact(s) trained
/// or selected on; `marks` as `lookahead_data::honest` reads them (`Subset::mark`).
struct Participants {
    records: Vec<PoolRecord>,
    marks: Vec<Option<usize>>,
    judged: usize,
}

impl Participants {
    fn new(records: Vec<PoolRecord>, subset: &Subset) -> Self {
        let (mut judged, mut trained) = (Vec::new(), Vec::new());
        for r in records {
            match subset.mark(&r.id) {
                Some(Some(g)) => judged.push((r, Some(g))),
                Some(None) => trained.push((r, None)),
                None => {}
            }
        }
        let n = judged.len();
        let (records, marks) = judged.into_iter().chain(trained).unzip();
        Self {
            records,
            marks,
            judged: n,
        }
    }

    /// Each judged record's fold under cross-validation.
    fn folds(&self, subset: &Subset) -> Option<Vec<usize>> {
        matches!(subset, Subset::CrossValidation(_))
            .then(|| self.marks.iter().map_while(|m| *m).collect())
    }
}

/// The honest baselines (chosen on the records each artifact trained on) and every `--versus`,
/// into `evaluation.comparisons`; returns the `--versus` JSON entries.
fn compare(
    args: &EvalArgs,
    (subset, pool): (&Subset, &Pool),
    (full, marks, set): (&EvalSet, &[Option<usize>], &EvalSet),
    decisions: &[usize],
    (evaluation, notes): (&mut Evaluation, &mut Vec<String>),
) -> anyhow::Result<Vec<serde_json::Value>> {
    if matches!(subset, Subset::All) {
        notes.push(
            "no honest baselines: with --split all no record is left that the router trained on"
                .into(),
        );
    } else {
        let choices = full.trained_choices(marks)?;
        evaluation.comparisons =
            honest_comparisons(set, decisions, &choices, &bootstrap_options(args))?;
    }
    let router = set.scores_of(decisions)?;
    let mut entries = Vec::new();
    for spec in &args.versus {
        let (entry, comparison) = versus(spec, args, (set, pool), &router, notes)?;
        entries.push(entry);
        evaluation.comparisons.push(comparison);
    }
    Ok(entries)
}

/// The lines under the router's name: data, records, skips, cost weight.
fn base_notes(
    args: &EvalArgs,
    data: &Dataset,
    sources: &[String],
    (n, subset): (usize, &Subset),
    skipped: &SkipCounts,
) -> Vec<String> {
    let mut notes = vec![
        format!("data: {} ({})", data.dir().display(), sources.join(", ")),
        format!("records: {n} ({})", subset.describe()),
    ];
    if skipped.total() > 0 {
        notes.push(format!(
            "skipped (lacking a pool member, before the split): {} {:?}",
            skipped.total(),
            skipped.by_source
        ));
    }
    if args.cost_weight > 0.0 {
        notes.push(format!(
            "cost-aware routing, cost weight {}",
            args.cost_weight
        ));
    }
    notes
}

/// What an evaluation (or a calibration) reads: the selected records of the pool, split into
/// the judged ones and those the router trained on, as evaluation sets.
struct Selected {
    data: Dataset,
    sources: Vec<String>,
    pool: Pool,
    subset: Subset,
    skipped: SkipCounts,
    part: Participants,
    /// Every participant's items (the honest comparisons read the training folds).
    full: EvalSet,
    /// The judged records' items.
    set: EvalSet,
}

impl Selected {
    /// The records `args` select for `router` (or the `--router` baseline); an error naming
    /// `purpose` when none is left to judge.
    fn read(
        args: &EvalArgs,
        router: Option<&ScoredRouter<'_>>,
        purpose: &str,
    ) -> anyhow::Result<Self> {
        let data = Dataset::open(&args.data)?;
        let sources = data.resolve_sources(args.sources.as_deref())?;
        let first_scorer = router.and_then(|r| r.scorers.first().copied());
        let pool = eval_pool(args, &data, &sources, first_scorer)?;
        let subset = Subset::from_args(args, router.map_or(1, |r| r.scorers.len()))?;
        let selection = data.select_pool(&sources, &pool)?;
        let part = Participants::new(selection.records, &subset);
        if part.judged == 0 {
            let what = subset.describe();
            bail!("no records {purpose} ({what} of {sources:?})");
        }
        let full = EvalSet::new(&pool, &part.records, data.manifest(), &data.manifest_path())?;
        let set = full.judged(&part.marks)?;
        Ok(Self {
            data,
            sources,
            pool,
            subset,
            skipped: selection.skipped,
            part,
            full,
            set,
        })
    }
}

/// Evaluates a trained router (`Some`; already loaded, so tests can pass a test scorer) or the
/// baseline router of `--router` (`None`).
pub fn evaluate(args: &EvalArgs, router: Option<ScoredRouter<'_>>) -> anyhow::Result<EvalOutcome> {
    let Selected {
        data,
        sources,
        pool,
        subset,
        skipped,
        part,
        full,
        set,
    } = Selected::read(args, router.as_ref(), "to evaluate")?;
    let records = &part.records[..part.judged];
    let prices = args
        .prices
        .as_ref()
        .map(|p| parse_prices(&pool, p))
        .transpose()?;
    let (router_name, (predictions, decisions)) = decide(
        args,
        router.as_ref(),
        &subset,
        (&pool, records, &set),
        prices.as_deref(),
    )?;
    let extras = EvalExtras {
        predictions: predictions.as_deref(),
        prices: prices.as_deref(),
    };
    let mut evaluation = Evaluation::compute(&set, &router_name, &decisions, extras)?;
    let mut notes = base_notes(args, &data, &sources, (set.len(), &subset), &skipped);
    let versus = compare(
        args,
        (&subset, &pool),
        (&full, &part.marks, &set),
        &decisions,
        (&mut evaluation, &mut notes),
    )?;
    if let Some(path) = &args.predictions_out {
        let folds = part.folds(&subset);
        let lines = prediction_lines(&set, &decisions, predictions.as_deref(), folds.as_deref())?;
        write_predictions(path, &lines)?;
        notes.push(format!("per-record predictions: {}", path.display()));
    }
    let mut json = serde_json::to_value(&evaluation)?;
    if let Some(obj) = json.as_object_mut() {
        if !versus.is_empty() {
            obj.insert("versus".into(), versus.into());
        }
        obj.insert("subset".into(), subset.describe().into());
        obj.insert("skipped".into(), serde_json::to_value(&skipped)?);
    }
    Ok(EvalOutcome {
        evaluation,
        notes,
        json,
    })
}

fn router_method(dir: &Path) -> String {
    lookahead_model::artifact::RouterMeta::read(dir)
        .map(|m| m.method.to_string())
        .unwrap_or_else(|_| "artifact".into())
}

fn router_label(dir: &Path) -> String {
    match lookahead_model::artifact::RouterMeta::read(dir) {
        Ok(meta) => format!("{} ({})", meta.method, dir.display()),
        Err(_) => dir.display().to_string(),
    }
}

/// `--calibrate`: the evaluated records scored once (the same selection, split and scoring as
/// [`evaluate`]), then the costWeight search on them.
pub fn run_calibration(
    args: &EvalArgs,
    router: Option<ScoredRouter<'_>>,
) -> anyhow::Result<Calibration> {
    let Selected {
        pool,
        subset,
        part,
        set,
        ..
    } = Selected::read(args, router.as_ref(), "to calibrate on")?;
    let records = &part.records[..part.judged];
    let (router, (predictions, _)) =
        decide(args, router.as_ref(), &subset, (&pool, records, &set), None)?;
    let predictions = predictions.context(
        "--calibrate needs a router that predicts a score per model: --artifact DIR (or --router oracle)",
    )?;
    let input = calibrate::Input {
        router,
        subset: subset.describe(),
        set: &set,
        records,
        predictions,
    };
    calibrate::run(&args.calibrate, input)
}

/// Loads the `--artifact` scorers and evaluates them as one router (one per fold: CV).
fn evaluate_artifacts(args: &EvalArgs, dirs: &[PathBuf]) -> anyhow::Result<EvalOutcome> {
    let args = with_fallback_versus(args, dirs);
    with_artifacts(&args, dirs, |router| evaluate(&args, Some(router)))
}

/// With `--split all` no record is left that the artifact trained on (the records are another
/// dataset's, or of sources it never saw), so no honest baseline can be chosen; the model the
/// artifact itself serves when its router is not accepted can: its gate's fallback is added to
/// `--versus` (once; a single artifact with a verdict only).
fn with_fallback_versus(args: &EvalArgs, dirs: &[PathBuf]) -> EvalArgs {
    let mut args = args.clone();
    let fallback = match dirs {
        [one] if args.split == "all" && args.holdout.fold.is_none() => {
            lookahead_model::artifact::RouterMeta::read(one)
                .ok()
                .and_then(|m| m.acceptance)
                .map(|a| format!("fixed:{}", a.fallback_model))
        }
        _ => None,
    };
    let in_pool = |spec: &str| {
        let model = spec.trim_start_matches("fixed:");
        args.models
            .as_ref()
            .is_none_or(|m| m.iter().any(|x| x == model))
    };
    if let Some(spec) = fallback.filter(|s| !args.versus.contains(s) && in_pool(s)) {
        args.versus.push(spec);
    }
    args
}

/// Loads the `--artifact` scorers as one router (one per fold: CV) and hands it to `then`.
fn with_artifacts<T>(
    args: &EvalArgs,
    dirs: &[PathBuf],
    then: impl FnOnce(ScoredRouter<'_>) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let options = lookahead_model::ScorerOptions {
        backbone: args.backbone.clone(),
        precision: args.precision,
        ..Default::default()
    };
    let loaded = dirs
        .iter()
        .map(|dir| {
            lookahead_model::load_scorer(dir, &options)
                .with_context(|| format!("loading router artifact {}", dir.display()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let name = match dirs {
        [one] => router_label(one),
        many => format!(
            "{} ({}-fold: {})",
            many.first().map_or_else(String::new, |d| router_method(d)),
            many.len(),
            many.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let router = ScoredRouter {
        name,
        scorers: loaded.iter().map(|s| s.as_ref()).collect(),
    };
    then(router)
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    if args.calibrate.calibrate {
        let found = match &args.artifact {
            Some(dirs) => {
                with_artifacts(&args, dirs, |router| run_calibration(&args, Some(router)))?
            }
            None => run_calibration(&args, None)?,
        };
        print!("{}", found.render());
        return Ok(());
    }
    let outcome = match &args.artifact {
        Some(dirs) => evaluate_artifacts(&args, dirs)?,
        None => evaluate(&args, None)?,
    };
    let eval = &outcome.evaluation;
    if args.json {
        println!("{}", serde_json::to_string(&outcome.json)?);
    } else {
        println!("router: {}", eval.router);
        for note in &outcome.notes {
            println!("{note}");
        }
        println!("\n{}", summary_table(eval));
        println!("{}", singles_table(eval));
        if !eval.comparisons.is_empty() {
            println!("{}", comparison_table(eval));
        }
        if let Some(cost) = eval.cost {
            println!("mean price per query: router {cost:.3}");
        }
    }
    if let Some(path) = &args.json_out {
        std::fs::write(path, serde_json::to_string_pretty(&outcome.json)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(dir) = &args.report {
        let written = write_report(dir, eval, &outcome.notes)?;
        for path in written {
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use lookahead_model::ScoreError;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        eval: EvalArgs,
    }

    fn args(extra: &[&str], data: &Path) -> EvalArgs {
        let mut argv = vec!["eval", "--data", data.to_str().unwrap(), "--split", "all"];
        argv.extend_from_slice(extra);
        Cli::parse_from(argv).eval
    }

    /// Two sources, models m1 m2 m3 (scaled scores in comments); q4 lacks m3.
    fn dataset(dir: &Path) {
        std::fs::write(
            dir.join("manifest.json"),
            r#"{"A": {"score_range": [0, 1], "models": ["m1", "m2", "m3"]},
                "B": {"score_range": [0, 10], "models": ["m1", "m2", "m3"]}}"#,
        )
        .unwrap();
        let rec = |id: &str, src: &str, s: [f64; 3]| {
            format!(
                r#"{{"id": "{id}", "source": "{src}", "prompt": "prompt {id}", "responses": {{"m1": {{"text": "", "score": {}}}, "m2": {{"text": "", "score": {}}}, "m3": {{"text": "", "score": {}}}}}}}"#,
                s[0], s[1], s[2]
            )
        };
        // A: q1 [100, 0, 0], q2 [0, 100, 0]; B: q3 [20, 50, 90]
        std::fs::write(
            dir.join("A.jsonl"),
            [rec("q1", "A", [1.0, 0.0, 0.0]), rec("q2", "A", [0.0, 1.0, 0.0])].join("\n")
                + "\n"
                + r#"{"id": "q4", "source": "A", "prompt": "p", "responses": {"m1": {"text": "", "score": 1}}}"#,
        )
        .unwrap();
        std::fs::write(dir.join("B.jsonl"), rec("q3", "B", [2.0, 5.0, 9.0])).unwrap();
    }

    /// A test scorer (pool in a different order than the eval pool): prefers m2 on prompts
    /// mentioning q2, else m1.
    struct PreferScorer(Vec<String>);

    impl Scorer for PreferScorer {
        fn models(&self) -> &[String] {
            &self.0
        }
        fn score_batch(&self, prompts: &[&str]) -> Result<Vec<Vec<f32>>, ScoreError> {
            // self.0 = [m3, m2, m1]
            Ok(prompts
                .iter()
                .map(|p| {
                    if p.contains("q2") {
                        vec![0.0, 0.9, 0.1]
                    } else {
                        vec![0.0, 0.1, 0.9]
                    }
                })
                .collect())
        }
    }

    #[test]
    fn test_scorer_runs_through_the_same_path_as_baselines() {
        let dir = tempfile::tempdir().unwrap();
        dataset(dir.path());
        let scorer = PreferScorer(vec!["m3".into(), "m2".into(), "m1".into()]);
        // --artifact satisfies the CLI's "router or artifact"; `evaluate` uses the given scorer.
        let a = args(
            &[
                "--artifact",
                "unused",
                "--models",
                "m1,m2,m3",
                "--batch-size",
                "2",
                "--quiet",
            ],
            dir.path(),
        );
        let router = ScoredRouter {
            name: "prefer".into(),
            scorers: vec![&scorer],
        };
        let out = evaluate(&a, Some(router)).unwrap();
        let e = &out.evaluation;
        // decisions m1, m2, m1: A (100 + 100)/2 = 100, B 20 -> 60
        assert_eq!(e.sources["A"].router, 100.0);
        assert_eq!(e.sources["B"].router, 20.0);
        assert_eq!(e.average, 60.0);
        // oracle A 100, B 90 -> 95; random A 100/3, B 160/3 -> 43.33
        assert_eq!(e.oracle, 95.0);
        assert!((e.random - 130.0 / 3.0).abs() < 1e-9);
        assert_eq!(out.json["skipped"]["by_source"]["A"], 1);
        assert_eq!(e.sources["A"].share["m2"], 0.5);

        let oracle = evaluate(&args(&["--router", "oracle"], dir.path()), None).unwrap();
        assert_eq!(oracle.evaluation.average, 95.0);
        let fixed = evaluate(&args(&["--router", "fixed:m3"], dir.path()), None).unwrap();
        assert_eq!(fixed.evaluation.average, 45.0);
        // fixed:m3 vs fixed:m1: q1 0<100 loss, q2 0=0 tie, q3 90>20 win
        let vs = evaluate(
            &args(
                &["--router", "fixed:m3", "--versus", "fixed:m1"],
                dir.path(),
            ),
            None,
        )
        .unwrap();
        assert_eq!(vs.json["versus"][0]["wins"], 1);
        assert_eq!(vs.json["versus"][0]["losses"], 1);
        assert_eq!(vs.json["versus"][0]["ties"], 1);
        assert_eq!(vs.json["versus"][0]["sources"]["B"]["wins"], 1);
        assert!(evaluate(&args(&["--router", "fixed:nope"], dir.path()), None).is_err());
        assert!(evaluate(&args(&["--router", "best"], dir.path()), None).is_err());
    }

    /// Always prefers pool member `self.1` of `self.0`.
    struct ConstScorer(Vec<String>, usize);

    impl Scorer for ConstScorer {
        fn models(&self) -> &[String] {
            &self.0
        }
        fn score_batch(&self, prompts: &[&str]) -> Result<Vec<Vec<f32>>, ScoreError> {
            let mut row = vec![0.0; self.0.len()];
            row[self.1] = 1.0;
            Ok(vec![row; prompts.len()])
        }
    }

    #[test]
    fn one_artifact_per_fold_scores_each_record_with_its_folds_router() {
        let dir = tempfile::tempdir().unwrap();
        dataset(dir.path());
        let models: Vec<String> = ["m1", "m2", "m3"].iter().map(|s| s.to_string()).collect();
        let (s0, s1) = (
            ConstScorer(models.clone(), 0),
            ConstScorer(models.clone(), 2),
        );
        let a = args(
            &["--artifact", "a0,a1", "--folds", "2", "--quiet"],
            dir.path(),
        );
        let router = ScoredRouter {
            name: "cv".into(),
            scorers: vec![&s0, &s1],
        };
        let e = evaluate(&a, Some(router)).unwrap().evaluation;
        // expected: fold 0 -> m1, fold 1 -> m3; scaled scores q1 [100,0,0], q2 [0,100,0], q3 [20,50,90]
        let kfold = KFold::new(2).unwrap();
        let pick = |id: &str, s: [f64; 3]| if kfold.fold_of(id) == 0 { s[0] } else { s[2] };
        let a_score = (pick("q1", [100.0, 0.0, 0.0]) + pick("q2", [0.0, 100.0, 0.0])) / 2.0;
        assert_eq!(e.sources["A"].router, a_score);
        assert_eq!(e.sources["B"].router, pick("q3", [20.0, 50.0, 90.0]));
        assert_eq!(e.n, 3);

        let wrong = args(&["--artifact", "a0,a1", "--folds", "3"], dir.path());
        let router = ScoredRouter {
            name: "cv".into(),
            scorers: vec![&s0, &s1],
        };
        assert!(evaluate(&wrong, Some(router)).is_err());
    }

    #[test]
    fn predictions_out_is_read_back_by_versus_matched_by_record_id() {
        let dir = tempfile::tempdir().unwrap();
        dataset(dir.path());
        let file = dir.path().join("m3.jsonl");
        let file_arg = file.to_str().unwrap();
        let m3 = evaluate(
            &args(
                &["--router", "fixed:m3", "--predictions-out", file_arg],
                dir.path(),
            ),
            None,
        )
        .unwrap();
        assert!(m3.notes.iter().any(|n| n.contains("m3.jsonl")));
        let lines = lookahead_data::read_predictions(&file).unwrap();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].decision, "m3");
        assert_eq!(lines[0].fold, None);
        assert!(
            lines[0].predicted.is_none(),
            "a fixed router predicts nothing"
        );

        // fixed:m1 (A 50, B 20: 35) against the m3 run (A 0, B 90: 45), record by record.
        let vs = evaluate(
            &args(&["--router", "fixed:m1", "--versus", file_arg], dir.path()),
            None,
        )
        .unwrap();
        assert_eq!(vs.json["versus"][0]["wins"], 1);
        assert_eq!(vs.json["versus"][0]["losses"], 1);
        let c = &vs.evaluation.comparisons[0];
        assert_eq!(c.kind, ComparisonKind::Versus);
        assert_eq!(c.score, 45.0);
        assert_eq!(c.gain.gain, -10.0);
        assert!(vs.notes.iter().any(|n| n.contains("router − it -10.00 [")));

        // Another set of records: a clear error naming the file.
        let only_a = args(
            &[
                "--router",
                "fixed:m1",
                "--sources",
                "A",
                "--versus",
                file_arg,
            ],
            dir.path(),
        );
        let err = format!("{:#}", evaluate(&only_a, None).err().unwrap());
        assert!(
            err.contains("m3.jsonl") && err.contains("record ids do not match"),
            "{err}"
        );
        let missing = args(
            &["--router", "fixed:m1", "--versus", "nope.jsonl"],
            dir.path(),
        );
        let err = format!("{:#}", evaluate(&missing, None).err().unwrap());
        assert!(err.contains("neither a baseline"), "{err}");
    }

    #[test]
    fn cross_validation_reports_the_honest_baselines_and_writes_folds() {
        let dir = tempfile::tempdir().unwrap();
        dataset(dir.path());
        let models: Vec<String> = ["m1", "m2", "m3"].iter().map(|s| s.to_string()).collect();
        let (s0, s1) = (ConstScorer(models.clone(), 1), ConstScorer(models, 1));
        let file = dir.path().join("cv.jsonl");
        let a = args(
            &[
                "--artifact",
                "a0,a1",
                "--folds",
                "2",
                "--quiet",
                "--predictions-out",
                file.to_str().unwrap(),
            ],
            dir.path(),
        );
        let router = ScoredRouter {
            name: "cv".into(),
            scorers: vec![&s0, &s1],
        };
        let out = evaluate(&a, Some(router)).unwrap();
        let kinds: Vec<&str> = out.json["comparisons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["honest_bar", "best_single"]);
        let lines = lookahead_data::read_predictions(&file).unwrap();
        let kfold = KFold::new(2).unwrap();
        for line in &lines {
            assert_eq!(line.fold, Some(kfold.fold_of(&line.id)));
            assert_eq!(line.decision, "m2");
            assert_eq!(line.predicted.as_ref().unwrap()["m2"], 1.0);
        }
        let table = comparison_table(&out.evaluation);
        assert!(
            table.contains("best model per source, chosen on the training records"),
            "{table}"
        );
    }

    #[test]
    fn prices_give_cost_and_a_cost_aware_oracle() {
        let dir = tempfile::tempdir().unwrap();
        dataset(dir.path());
        let a = args(
            &[
                "--router",
                "oracle",
                "--prices",
                "m1=1,m2=2,m3=10",
                "--cost-weight",
                "10",
            ],
            dir.path(),
        );
        let e = evaluate(&a, None).unwrap().evaluation;
        // weight 10: q1 m1 (100-10), q2 m2 (100-20), q3: m1 20-10=10, m2 50-20=30, m3 90-100 -> m2
        assert_eq!(e.average, (100.0 + 50.0) / 2.0);
        assert_eq!(e.cost, Some((1.5 + 2.0) / 2.0));
        assert!(!e.quality_cost.is_empty());
        let missing = args(&["--router", "oracle", "--prices", "m1=1"], dir.path());
        assert!(evaluate(&missing, None).is_err());
        let no_predictions = args(
            &[
                "--router",
                "random",
                "--prices",
                "m1=1,m2=2,m3=3",
                "--cost-weight",
                "1",
            ],
            dir.path(),
        );
        assert!(evaluate(&no_predictions, None).is_err());
    }

    #[test]
    fn calibrate_finds_the_smallest_weight_on_the_evaluated_records_and_prints_a_snippet() {
        let dir = tempfile::tempdir().unwrap();
        dataset(dir.path());
        // Oracle predictions (the scaled scores): q3 [20, 50, 90] leaves m3 for m2 at exactly
        // w = (90 - 50) / (10 - 2) = 5, where the tie goes to m2 (first in the pool).
        let prices = ["--price", "m1=1", "--price", "m2=1/3", "--price", "m3=10"];
        let mut argv = vec!["--router", "oracle", "--calibrate", "--max-share", "m3=0"];
        argv.extend(prices);
        let found = run_calibration(&args(&argv, dir.path()), None).unwrap();
        assert_eq!(found.found.weight, 5.0);
        assert_eq!(found.found.share, vec![1.0 / 3.0, 2.0 / 3.0, 0.0]);
        assert_eq!(found.found.equal_weight, 75.0);
        assert_eq!(found.records, 3);
        let zero = &found.rows[0];
        assert_eq!((zero.weight, zero.equal_weight), (0.0, 95.0));
        let text = found.render();
        assert!(
            text.contains("spec:\n  objective:\n    costWeight: 5\n"),
            "{text}"
        );
        assert!(text.contains("| 5 ◀ | 75.00 | 83.33 |"), "{text}");
        assert!(
            text.contains("expected equal-weight score 75.00 (95.00 at costWeight 0)"),
            "{text}"
        );

        argv.extend(["--profile", "economy"]);
        let text = run_calibration(&args(&argv, dir.path()), None)
            .unwrap()
            .render();
        assert!(text.contains("    profiles:\n      economy: 5\n"), "{text}");

        // m1 is the best and cheapest answer to q1 at every weight: a third stays on it.
        let mut argv = vec!["--router", "oracle", "--calibrate", "--max-share", "m1=0"];
        argv.extend(prices);
        let e = format!(
            "{:#}",
            run_calibration(&args(&argv, dir.path()), None).unwrap_err()
        );
        assert!(
            e.contains("share of m1 <= 0.0%: the best any costWeight reaches is 33.3%"),
            "{e}"
        );
        let mut argv = vec!["--router", "oracle", "--calibrate", "--max-share", "m1=0"];
        argv.extend(["--price", "m1=1"]);
        let e = format!(
            "{:#}",
            run_calibration(&args(&argv, dir.path()), None).unwrap_err()
        );
        assert!(e.contains("missing: m2, m3"), "{e}");
        let random = args(
            &["--router", "random", "--calibrate", "--max-mean-price", "1"],
            dir.path(),
        );
        let e = format!("{:#}", run_calibration(&random, None).unwrap_err());
        assert!(e.contains("predicts a score per model"), "{e}");
    }
}
