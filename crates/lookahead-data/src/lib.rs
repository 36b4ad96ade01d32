//! The routing-dataset format, its streaming reader, pool selection, deterministic splits, the
//! paper's labels, evaluation metrics and reports. Everything a router is trained on and judged by.
//!
//! # Stable API (used by `lookahead-model` and `lookahead eval`)
//! - [`Record`] / [`Response`] / [`Reference`]: one JSONL line (`docs/dataset.md`).
//! - [`Manifest`] / [`SourceInfo`] / [`ScoreRange`]: `manifest.json`, per-source `score_range`.
//! - [`Dataset::open`] (a directory), [`Dataset::resolve_sources`], [`Dataset::records`] (one
//!   source, streaming), [`Dataset::records_of`], [`Dataset::select_pool`],
//!   [`Dataset::scaled_scores`]; [`RecordReader`] for a single `.jsonl(.gz)` file, bounded by
//!   [`ReaderOptions::max_line_bytes`]. Errors ([`DataError`]) name the file and line.
//! - [`Pool`] (ordered models; index `i` = `models()[i]` everywhere), [`Pool::select`] ->
//!   [`PoolSelection`] { `records`: [`PoolRecord`] with `responses` in pool order, `skipped`:
//!   [`SkipCounts`] per source and per missing model }. [`PAPER_POOL`], [`BENCHMARK_SOURCES`].
//! - [`SplitSpec`] (`assign(id) -> Split`), [`KFold`] (`fold_of(id)`), [`unit_hash`]: SHA-256 of
//!   the id, so splits reproduce on every machine. [`Holdout`] (`assign(id)`, `is_held_out(id)`):
//!   the one definition of the held-out records that `train`, `eval`, `demo` and `scripts/cv.sh`
//!   share (`--split-salt`, `--folds`, `--fold`).
//! - [`labels`]: [`normalise`], [`positive_labels`], [`label_targets`] (threshold
//!   [`DEFAULT_LABEL_THRESHOLD`] = 0.8; all-equal scores -> all positive), [`scaled_scores`].
//! - [`metrics`] over *decisions* (per record, the chosen pool index): [`EvalSet::new`],
//!   `router_score`, `oracle_score`, `random_expected_score`, `single_model_scores`,
//!   `best_single`, `routing_share`, `win_loss`, `argmax_accuracy`, `mean_cost`,
//!   `quality_cost_curve`; [`Evaluation::compute`] bundles them (the `lookahead eval --json` form).
//!   [`metrics::percentile`] for the latency columns of bench and demo reports.
//! - [`report`]: Markdown tables and SVG plots of an [`Evaluation`] (`write_report`).
//! - [`bootstrap`]: [`paired_bootstrap`] (source-stratified, paired) -> [`Interval`] of a gain.
//! - [`honest`]: the baselines chosen on each artifact's training records
//!   ([`EvalSet::trained_choices`] over a `held_out_by` marking, [`EvalSet::judged`]) and the
//!   router's [`Comparison`] with them ([`honest_comparisons`]) or with another run.
//! - [`predictions`]: the per-record predictions file ([`write_predictions`],
//!   [`read_predictions`], [`matched_scores`] by record id).
//! - [`locate::shared_dataset`]: where the real dataset is (tests skip with its reason).
//! - [`progress`]: the one progress-bar look (`progress::bar(len, label, visible)`).
//!
//! # Example
//! ```no_run
//! use lookahead_data::{Dataset, Pool, SplitSpec, Split, label_targets, DEFAULT_LABEL_THRESHOLD};
//! # fn main() -> Result<(), lookahead_data::DataError> {
//! let data = Dataset::open(std::path::Path::new("../shared/data/routing"))?;
//! let sources = data.resolve_sources(Some(&["GSM8K", "MBPP"]))?;
//! let selection = data.select_pool(&sources, &Pool::paper())?;
//! let split = SplitSpec::default();
//! for r in selection.records.iter().filter(|r| split.assign(&r.id) == Split::Train) {
//!     let _targets = label_targets(&r.scores(), DEFAULT_LABEL_THRESHOLD);
//! }
//! # Ok(()) }
//! ```

pub mod bootstrap;
pub mod error;
pub mod evaluation;
pub mod honest;
pub mod labels;
pub mod locate;
pub mod manifest;
pub mod metrics;
pub mod pool;
pub mod predictions;
pub mod progress;
pub mod reader;
pub mod record;
pub mod report;
pub mod split;

pub use bootstrap::{paired_bootstrap, BootstrapOptions, Interval, Weighting};
pub use error::DataError;
pub use evaluation::{BestSingleSummary, EvalExtras, Evaluation, SourceEvaluation};
pub use honest::{honest_comparisons, Comparison, ComparisonKind, TrainedChoices};
pub use labels::{
    label_targets, normalise, positive_labels, scaled_scores, DEFAULT_LABEL_THRESHOLD,
};
pub use manifest::{check_source_name, Manifest, ScoreRange, SourceInfo, MANIFEST_FILE};
pub use metrics::{EvalItem, EvalSet, PerSource};
pub use pool::{Pool, PoolRecord, PoolSelection, SkipCounts, BENCHMARK_SOURCES, PAPER_POOL};
pub use predictions::{
    matched_scores, prediction_lines, read_predictions, write_predictions, PredictionLine,
};
pub use reader::{
    read_records, reader_from, Dataset, ReaderOptions, RecordReader, DEFAULT_MAX_LINE_BYTES,
};
pub use record::{Record, Reference, Response};
pub use split::{unit_hash, Holdout, KFold, Split, SplitSpec, FOLD_VALIDATION_FRACTION};
