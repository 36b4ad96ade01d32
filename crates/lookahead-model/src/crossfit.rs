//! Cross-fitting: a request's training repeated K times, each without one of K folds of its
//! training and validation examples (fitted on the rest of the training examples, validated on
//! the rest of the validation ones), so that every one of those examples gets a router's scores
//! made without it. The acceptance gate judges on them (about ten times the evidence of a 10%
//! validation split) and the within-source calibration ([`crate::calibration`]) is fitted on
//! them.

use lookahead_data::KFold;
use rayon::prelude::*;

use crate::artifact::Acceptance;
use crate::calibration::{source_claims, Slopes, SourceCalibration, WithinSource};
use crate::fit::acceptance::Judged;
use crate::fit::{best_single, Example, TrainError, TrainRequest};
use crate::methods;
use crate::select::select;

/// Salt of the folds' id hash: independent of every holdout split.
const SALT: &str = "acceptance";

/// Every training and validation example with what was made without it.
pub struct CrossFitted<'a> {
    pub folds: usize,
    pub examples: Vec<&'a Example>,
    /// The fold each example was held out in.
    pub fold: Vec<usize>,
    /// The router's scores from the fold's fit (pool order).
    pub scores: Vec<Vec<f32>>,
    /// Each source's claim on the example from the fold's source classifier, over the
    /// request's sources ([`source_claims`]).
    pub source_claims: Vec<Vec<f32>>,
    /// The single model best on the examples the fold's router was fitted and validated on.
    pub single: Vec<usize>,
}

/// Fits the request's method `folds` times; `None` when no fold had both training examples
/// and examples to judge.
pub fn cross_fit<'a>(
    req: &TrainRequest<'a>,
    folds: usize,
) -> Result<Option<CrossFitted<'a>>, TrainError> {
    let kfold = KFold::new(folds)
        .map_err(|e| TrainError::CrossFit(e.to_string()))?
        .with_salt(SALT);
    let mut out = CrossFitted {
        folds,
        examples: Vec::new(),
        fold: Vec::new(),
        scores: Vec::new(),
        source_claims: Vec::new(),
        single: Vec::new(),
    };
    let all: Vec<&'a Example> = req.train.iter().chain(req.valid).collect();
    let run = |fold| fit_fold(req, &kfold, &all, fold);
    // Folds are independent; each keeps its place in the output, so the result is the same
    // either way.
    let fitted: Vec<Result<Option<Fold<'a>>, TrainError>> =
        if methods::fits_side_by_side(req.method) {
            (0..folds).into_par_iter().map(run).collect()
        } else {
            (0..folds).map(run).collect()
        };
    for (fold, part) in fitted.into_iter().enumerate() {
        let Some(part) = part? else { continue };
        tracing::info!(fold, folds, judged = part.held.len(), "cross-fitted a fold");
        for (e, (row, claims)) in part
            .held
            .iter()
            .zip(part.scores.into_iter().zip(part.source_claims))
        {
            out.source_claims.push(claims);
            out.examples.push(e);
            out.fold.push(fold);
            out.scores.push(row);
            out.single.push(part.single);
        }
    }
    Ok((!out.examples.is_empty()).then_some(out))
}

/// One fold's fit: its held-out examples with the scores and source probabilities made without
/// them, and the single model best on what it saw.
struct Fold<'a> {
    held: Vec<&'a Example>,
    scores: Vec<Vec<f32>>,
    source_claims: Vec<Vec<f32>>,
    single: usize,
}

/// Fits `req`'s method without `fold` of `kfold`; `None` when the fold leaves no training
/// examples or holds none out.
fn fit_fold<'a>(
    req: &TrainRequest<'a>,
    kfold: &KFold,
    all: &[&'a Example],
    fold: usize,
) -> Result<Option<Fold<'a>>, TrainError> {
    let kept = |part: &[Example]| -> Vec<Example> {
        part.iter()
            .filter(|e| kfold.fold_of(&e.id) != fold)
            .cloned()
            .collect()
    };
    let (train, valid) = (kept(req.train), kept(req.valid));
    let held: Vec<&'a Example> = all
        .iter()
        .copied()
        .filter(|e| kfold.fold_of(&e.id) == fold)
        .collect();
    if train.is_empty() || held.is_empty() {
        return Ok(None);
    }
    let held_owned: Vec<Example> = held.iter().map(|e| (*e).clone()).collect();
    let fitted = methods::train(&req.with_examples(&train, &valid, Some(&held_owned)))?;
    let scores = fitted.meta.test.map(|t| t.predictions).unwrap_or_default();
    if scores.len() != held.len() {
        return Err(TrainError::CrossFit(format!(
            "fold {fold}: {} scores for {} held-out examples",
            scores.len(),
            held.len()
        )));
    }
    let seen: Vec<&Example> = train.iter().chain(&valid).collect();
    let classifier =
        SourceCalibration::fit_classifier(&seen, &req.sources, req.hyper.ngram_hasher());
    let claims = held
        .iter()
        .map(|e| source_claims(&classifier, &e.prompt))
        .collect();
    Ok(Some(Fold {
        single: best_single(seen.iter().copied(), req.models.len()).unwrap_or(0),
        held,
        scores,
        source_claims: claims,
    }))
}

impl CrossFitted<'_> {
    /// The within-source calibration fitted on every cross-fitted score, served with
    /// `classifier`; `None` without scores.
    pub fn calibration(
        &self,
        sources: &[String],
        classifier: crate::wide::WideModel,
        slopes: Slopes,
    ) -> Option<SourceCalibration> {
        let within = WithinSource::fit(&self.examples, &self.scores, sources, slopes)?;
        Some(SourceCalibration { within, classifier })
    }

    /// The router's choice for each example: the argmax of its scores, or with `calibrated`
    /// slopes, of its scores re-scored by the calibration fitted on the *other* folds' scores
    /// (so the calibration is judged on examples it was not fitted on either).
    pub fn choices(&self, sources: &[String], calibrated: Option<Slopes>) -> Vec<usize> {
        let Some(slopes) = calibrated else {
            return self
                .scores
                .iter()
                .map(|row| select(row, None, 0.0).unwrap_or(0))
                .collect();
        };
        let mut choices = vec![0; self.examples.len()];
        for fold in 0..self.folds {
            let others: Vec<usize> = (0..self.examples.len())
                .filter(|&i| self.fold[i] != fold)
                .collect();
            let examples: Vec<&Example> = others.iter().map(|&i| self.examples[i]).collect();
            let scores: Vec<Vec<f32>> = others.iter().map(|&i| self.scores[i].clone()).collect();
            let within = WithinSource::fit(&examples, &scores, sources, slopes);
            for i in (0..self.examples.len()).filter(|&i| self.fold[i] == fold) {
                let row = match &within {
                    Some(w) => w.apply_with(&self.source_claims[i], &self.scores[i]),
                    None => self.scores[i].clone(),
                };
                choices[i] = select(&row, None, 0.0).unwrap_or(0);
            }
        }
        choices
    }

    /// The acceptance gate's verdict on the cross-fitted `choices` against each fold's best
    /// single model; a router that is not accepted serves `fallback`.
    pub fn verdict(
        &self,
        choices: Vec<usize>,
        models: &[String],
        fallback: usize,
        min_gain: f64,
    ) -> Result<Acceptance, TrainError> {
        let judged = Judged {
            examples: self.examples.clone(),
            router: choices,
            single: self.single.clone(),
            folds: self.folds,
        };
        judged.verdict(models, fallback, min_gain)
    }
}
