//! Fitting the n-gram router: count rows once, then one convex fit per regularisation strength,
//! keeping the one with the best validation BCE (the validation split is what it is for).

use std::time::Instant;

use rayon::prelude::*;

use super::model::NgramRouter;
use crate::artifact::{BackboneInfo, BackboneKind, HyperParams, Metrics};
use crate::calibration::{source_one_hot, SourceCalibration};
use crate::fit::{metrics, Example, Fitted, TrainError, TrainRequest, Trained};
use crate::wide::features::conjoin;
use crate::wide::{mean_bce, sigmoid, FitOptions, NgramHasher, SparseRow, WideModel};

/// Regularisation strengths tried (scikit-learn's `C`; 1 is its default).
const C_GRID: [f32; 4] = [0.5, 1.0, 2.0, 4.0];

/// The record an n-gram artifact keeps in place of a backbone: it has none.
pub fn no_backbone() -> BackboneInfo {
    BackboneInfo {
        sha256: String::new(),
        hidden_size: 0,
        layers: 0,
        kind: BackboneKind::Bert,
    }
}

/// What the n-gram fits learn per example ([`HyperParams::score_targets`]).
pub fn targets(example: &Example, hyper: &HyperParams) -> Vec<f32> {
    if hyper.score_targets {
        example.quality.iter().map(|q| q / 100.0).collect()
    } else {
        example.labels.clone()
    }
}

/// The fit's options at strength `c`, the rest from `hyper`.
pub fn fit_options(c: f32, hyper: &HyperParams) -> FitOptions {
    FitOptions {
        c,
        coupling: hyper.coupling as f32,
        min_df: hyper.ngram_min_df,
        ..FitOptions::default()
    }
}

fn labels(examples: &[Example], hyper: &HyperParams) -> Vec<Vec<f32>> {
    examples.iter().map(|e| targets(e, hyper)).collect()
}

/// Router metrics of `router` on `examples` (probabilities decide, BCE reported).
pub fn evaluate(
    router: &NgramRouter,
    examples: &[Example],
    models: &[String],
    hyper: &HyperParams,
) -> Metrics {
    if examples.is_empty() {
        return Metrics::default();
    }
    let z: Vec<Vec<f32>> = examples.iter().map(|e| router.logits(&e.prompt)).collect();
    let bce = mean_bce(&z, &labels(examples, hyper));
    let probs: Vec<Vec<f32>> = z
        .iter()
        .map(|row| row.iter().map(|&v| sigmoid(v)).collect())
        .collect();
    metrics(&probs, examples, models, Some(bce))
}

/// The wide model fitted on `train` and its strength `C`, picked on `valid` (`C = 1` when there
/// is no validation data).
pub fn fit_wide(train: &[Example], valid: &[Example], hyper: &HyperParams) -> (WideModel, f32) {
    let hasher = hyper.ngram_hasher();
    let texts: Vec<&str> = train.iter().map(|e| e.prompt.as_str()).collect();
    let counts = WideModel::count_rows(hasher, &texts);
    let (router, c) = fit_strength(hasher, &counts, train, valid, hyper, None);
    (router.model, c)
}

/// Fits on the training `counts` at each strength of [`C_GRID`], keeping the router (with
/// `source`, its classifier) whose validation BCE is lowest.
fn fit_strength(
    hasher: NgramHasher,
    counts: &[SparseRow],
    train: &[Example],
    valid: &[Example],
    hyper: &HyperParams,
    source: Option<WideModel>,
) -> (NgramRouter, f32) {
    let y = labels(train, hyper);
    let fit = |c| NgramRouter {
        model: WideModel::fit(hasher, counts, &y, fit_options(c, hyper)),
        source: source.clone(),
    };
    if valid.is_empty() {
        return (fit(1.0), 1.0);
    }
    let valid_labels = labels(valid, hyper);
    // The strengths are independent convex fits: one per core.
    let fitted: Vec<(f64, NgramRouter, f32)> = C_GRID
        .par_iter()
        .map(|&c| {
            let router = fit(c);
            let z: Vec<Vec<f32>> = valid.iter().map(|e| router.logits(&e.prompt)).collect();
            let bce = mean_bce(&z, &valid_labels);
            tracing::debug!(c, bce, "n-gram router fitted");
            (bce, router, c)
        })
        .collect();
    let best = fitted
        .into_iter()
        .min_by(|a, b| a.0.total_cmp(&b.0).then(a.2.total_cmp(&b.2)));
    best.map_or_else(|| (fit(1.0), 1.0), |(_, r, c)| (r, c))
}

/// The count rows `req`'s router fits on for `examples` and, with source features, the source
/// classifier fitted on their prompts (each row then conjoined with its example's own source).
fn design(examples: &[&Example], req: &TrainRequest) -> (Vec<SparseRow>, Option<WideModel>) {
    let hasher = req.hyper.ngram_hasher();
    if !req.hyper.source_features {
        let texts: Vec<&str> = examples.iter().map(|e| e.prompt.as_str()).collect();
        return (WideModel::count_rows(hasher, &texts), None);
    }
    let classifier = SourceCalibration::fit_classifier(examples, &req.sources, hasher);
    let rows = examples
        .iter()
        .map(|e| {
            conjoin(
                hasher.counts(&e.prompt),
                &source_one_hot(&req.sources, &e.source),
                hasher.buckets,
            )
        })
        .collect();
    (rows, Some(classifier))
}

/// The router of `req` fitted on its training examples, and the strength validation picked.
fn fit_picked(req: &TrainRequest) -> (NgramRouter, f32) {
    let refs: Vec<&Example> = req.train.iter().collect();
    let (counts, source) = design(&refs, req);
    let hasher = req.hyper.ngram_hasher();
    fit_strength(hasher, &counts, req.train, req.valid, &req.hyper, source)
}

/// The router of `req`'s settings fitted on `examples` at strength `c`, nothing held out: the
/// refit on training and validation examples once validation has picked `c`.
fn fit_at(examples: &[&Example], c: f32, req: &TrainRequest) -> NgramRouter {
    let (counts, source) = design(examples, req);
    let y: Vec<Vec<f32>> = examples.iter().map(|e| targets(e, &req.hyper)).collect();
    let options = fit_options(c, &req.hyper);
    NgramRouter {
        model: WideModel::fit(req.hyper.ngram_hasher(), &counts, &y, options),
        source,
    }
}

/// Trains the n-gram router of `req`. Its validation metrics (what the validation gate and
/// the calibration's re-scoring read) are those of the fit that validation picked the
/// strength for; with `refit`, the router served and tested is then fitted again at that
/// strength on the training and validation examples together.
pub fn train(req: &TrainRequest) -> Result<Trained, TrainError> {
    req.check_examples()?;
    let started = Instant::now();
    let (picked, strength) = fit_picked(req);
    let validation = evaluate(&picked, req.valid, &req.models, &req.hyper);
    let router = if req.hyper.refit && !req.valid.is_empty() {
        let all: Vec<&Example> = req.train.iter().chain(req.valid).collect();
        fit_at(&all, strength, req)
    } else {
        picked
    };
    let test = req
        .test
        .map(|t| evaluate(&router, t, &req.models, &req.hyper));
    let tensors = router
        .to_tensors()
        .map_err(|e| TrainError::Hyper(e.to_string()))?;
    let fitted = Fitted {
        tensors,
        validation,
        test,
        best_epoch: 0,
        epochs_run: 0,
    };
    let mut trained = Trained::new(req, req.hyper.clone(), no_backbone(), fitted, started);
    trained.meta.ngram_strength = Some(f64::from(strength));
    Ok(trained)
}
