//! The Lookahead variant's line beside the method the demo serves: when the served router is
//! not a Lookahead one (the n-gram router wins within the demo's CPU budget), a lite router
//! trained on a budget that fits the demo scores the same held-out prompts in-process, one prompt
//! per call, so the table shows how the paper's method does on the same prompts and how long
//! its decisions take.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::Device;
use lookahead_data::metrics::percentile;
use lookahead_data::PoolRecord;
use lookahead_model::artifact::Acceptance;
use lookahead_model::{select, Method, Precision, RouterMeta};

/// Training records of the line's lite router: with two epochs, a first run on two fast cores
/// trains it in about three minutes, frozen-layer states included.
pub const LINE_MAX_TRAIN: usize = 1000;
/// Epochs of the line's lite router, at most: on a slower CPU the demo's budget stops it after
/// the first (which 5-fold CV and the demo's split select at this size anyway: docs/results.md).
pub const LINE_EPOCHS: usize = 2;
/// The line's lite design: issue 15's levers (prompt tokens attend to the prompt only and the
/// slot head starts at zero, so lite starts as MLC; the question of a long prompt kept by a
/// head + tail window; 8 slots), which 5-fold CV at this budget measured above the default
/// joint design (docs/results.md).
pub const LINE_DESIGN: [&str; 6] = [
    "--slot-design",
    "asymmetric",
    "--prompt-truncation",
    "head-tail",
    "--slot-tokens",
    "8",
];

/// Where the line's lite router is kept between runs.
pub fn default_artifact() -> PathBuf {
    super::default_artifact_named("demo-lookahead-lite")
}

/// The Lookahead variant on the demo's held-out prompts.
pub struct LookaheadLine {
    pub method: Method,
    /// The precision it served at (`--precision` resolved for this artifact).
    pub precision: Precision,
    /// The precision served, with the int8 agreement training measured ([`super::served_precision`]).
    pub served: String,
    /// Pool index chosen for each held-out record (`None`: the scorer failed on it).
    pub choices: Vec<Option<usize>>,
    pub decisions: Vec<Duration>,
    pub acceptance: Option<Acceptance>,
    pub train_examples: usize,
    /// Epochs trained and asked for (the demo's time budget may stop it early; 0 run: an
    /// artifact that does not record it).
    pub epochs: (usize, usize),
}

impl LookaheadLine {
    /// Scores every record's prompt with the artifact in `dir`, one prompt per call, at
    /// `precision`.
    pub fn score(
        dir: &Path,
        backbone: &Path,
        precision: Precision,
        records: &[PoolRecord],
    ) -> anyhow::Result<Self> {
        let meta = RouterMeta::read(dir)?;
        let loader = crate::router::artifact_loader(Some(backbone.to_path_buf()), precision);
        let scorer = loader(dir).map_err(anyhow::Error::msg)?;
        let mut choices = Vec::with_capacity(records.len());
        let mut decisions = Vec::with_capacity(records.len());
        for r in records {
            let t0 = Instant::now();
            let scores = scorer.score_batch(&[r.prompt.as_str()]);
            decisions.push(t0.elapsed());
            let choice = match scores {
                Ok(rows) => rows.first().and_then(|row| select(row, None, 0.0)),
                Err(e) => {
                    tracing::warn!(id = %r.id, error = %e, "the Lookahead line's scorer failed");
                    None
                }
            };
            choices.push(choice);
        }
        decisions.sort();
        Ok(Self {
            method: meta.method,
            precision: lookahead_model::serving_precision(&meta, precision, &Device::Cpu),
            served: super::served_precision(&meta, precision),
            choices,
            decisions,
            epochs: (meta.epochs_run, meta.hyper.max_epochs),
            acceptance: meta.acceptance,
            train_examples: meta.train_examples,
        })
    }

    /// The row's name in the demo's table.
    pub fn label(&self) -> String {
        let epochs = match self.epochs {
            (0, _) => String::new(),
            (run, asked) if run < asked => format!(", {run} of {asked} epochs"),
            (run, _) => format!(", {run} epochs"),
        };
        format!(
            "{} ({} records{epochs}, in-process, {})",
            super::method_label(self.method),
            self.train_examples,
            self.precision
        )
    }

    /// What the line says under the table: its gate's verdict and its decision latency.
    pub fn summary(&self) -> String {
        let ms = |q: f64| percentile(&self.decisions, q).as_secs_f64() * 1e3;
        let gate = match &self.acceptance {
            Some(a) if a.accepted => format!("its gate: {a}"),
            Some(a) => format!(
                "its gate: {a}: a router serving it would send every request to {}",
                a.fallback_model
            ),
            None => "its gate did not run (no validation records)".into(),
        };
        format!(
            "{}: {gate}; decision latency ({}), one prompt per call: p50 {:.2} ms, p99 {:.2} ms over {} decisions",
            super::method_label(self.method),
            self.served,
            ms(0.5),
            ms(0.99),
            self.decisions.len()
        )
    }
}
