//! Fitting the n-gram router: count rows once, then one convex fit per regularisation strength,
//! keeping the one with the best validation BCE (the validation split is what it is for).

use std::time::Instant;

use crate::artifact::{BackboneInfo, BackboneKind, Metrics};
use crate::fit::{metrics, Example, Fitted, TrainError, TrainRequest, Trained};
use crate::wide::{mean_bce, sigmoid, FitOptions, NgramHasher, WideModel};

/// Regularisation strengths tried (scikit-learn's `C`; 1 is its default).
const C_GRID: [f32; 4] = [0.5, 1.0, 2.0, 4.0];

/// Tensor-name prefix of the n-gram weights in an artifact.
pub const PREFIX: &str = "wide.";

/// The record an n-gram artifact keeps in place of a backbone: it has none.
pub fn no_backbone() -> BackboneInfo {
    BackboneInfo {
        sha256: String::new(),
        hidden_size: 0,
        layers: 0,
        kind: BackboneKind::Bert,
    }
}

fn logits(model: &WideModel, examples: &[Example]) -> Vec<Vec<f32>> {
    examples.iter().map(|e| model.logits(&e.prompt)).collect()
}

fn labels(examples: &[Example]) -> Vec<Vec<f32>> {
    examples.iter().map(|e| e.labels.clone()).collect()
}

/// Router metrics of `model` on `examples` (probabilities decide, BCE reported).
pub fn evaluate(model: &WideModel, examples: &[Example], models: &[String]) -> Metrics {
    if examples.is_empty() {
        return Metrics::default();
    }
    let z = logits(model, examples);
    let bce = mean_bce(&z, &labels(examples));
    let probs: Vec<Vec<f32>> = z
        .iter()
        .map(|row| row.iter().map(|&v| sigmoid(v)).collect())
        .collect();
    metrics(&probs, examples, models, Some(bce))
}

/// The wide model fitted on `train` and its strength `C`, picked on `valid` (`C = 1` when there
/// is no validation data).
pub fn fit_wide(train: &[Example], valid: &[Example], buckets: usize) -> (WideModel, f32) {
    let hasher = NgramHasher::new(buckets);
    let texts: Vec<&str> = train.iter().map(|e| e.prompt.as_str()).collect();
    let counts = WideModel::count_rows(hasher, &texts);
    let y = labels(train);
    let fit = |c| {
        WideModel::fit(
            hasher,
            &counts,
            &y,
            FitOptions {
                c,
                ..FitOptions::default()
            },
        )
    };
    if valid.is_empty() {
        return (fit(1.0), 1.0);
    }
    let valid_labels = labels(valid);
    let mut best: Option<(f64, WideModel, f32)> = None;
    for c in C_GRID {
        let model = fit(c);
        let bce = mean_bce(&logits(&model, valid), &valid_labels);
        tracing::debug!(c, bce, "n-gram router fitted");
        if best.as_ref().is_none_or(|(b, _, _)| bce < *b) {
            best = Some((bce, model, c));
        }
    }
    best.map_or_else(|| (fit(1.0), 1.0), |(_, m, c)| (m, c))
}

/// Trains the n-gram router of `req`.
pub fn train(req: &TrainRequest) -> Result<Trained, TrainError> {
    req.check_examples()?;
    let started = Instant::now();
    let (model, _) = fit_wide(req.train, req.valid, req.hyper.ngram_buckets);
    let validation = evaluate(&model, req.valid, &req.models);
    let test = req.test.map(|t| evaluate(&model, t, &req.models));
    let tensors = model
        .to_tensors(PREFIX)
        .map_err(|e| TrainError::Hyper(e.to_string()))?;
    let fitted = Fitted {
        tensors,
        validation,
        test,
        best_epoch: 0,
    };
    Ok(Trained::new(
        req,
        req.hyper.clone(),
        no_backbone(),
        fitted,
        started,
    ))
}
