//! An ensemble's artifact from its trained members ([`crate::methods::ensemble`]): the members'
//! validation and test scores averaged as the ensemble serves them, and scored as one router,
//! so the acceptance gate judges the ensemble, not its parts.

use std::collections::HashMap;

use crate::artifact::{fingerprint_models, Method, Metrics, RouterMeta, FORMAT_VERSION};
use crate::fit::{metrics, Example, TrainError, TrainRequest, Trained};
use crate::methods::ensemble::average;

/// The ensemble of `members` (trained for `req`'s pool, in `req.hyper.members` order) with its
/// own validation and test metrics; its acceptance is left to the caller's gate.
pub fn combine(req: &TrainRequest, members: Vec<Trained>) -> Result<Trained, TrainError> {
    let validation =
        mean_metrics(req, &members, |t| Some(&t.meta.validation), req.valid)?.unwrap_or_default();
    let test = match req.test {
        Some(test) => mean_metrics(req, &members, |t| t.meta.test.as_ref(), test)?,
        None => None,
    };
    let Some(first) = members.first() else {
        return Err(TrainError::Hyper(
            "an ensemble needs at least one member".into(),
        ));
    };
    // The encoder's: what a router sidecar must mount to serve the ensemble.
    let backbone = members
        .iter()
        .map(|m| &m.meta.backbone)
        .find(|b| !b.sha256.is_empty())
        .unwrap_or(&first.meta.backbone)
        .clone();
    let meta = RouterMeta {
        format_version: FORMAT_VERSION,
        method: Method::Ensemble,
        models: req.models.clone(),
        pool_fingerprint: fingerprint_models(&req.models),
        backbone,
        hyper: req.hyper.clone(),
        sources: req.sources.clone(),
        validation,
        test,
        best_epoch: members.iter().map(|m| m.meta.best_epoch).max().unwrap_or(0),
        epochs_run: members.iter().map(|m| m.meta.epochs_run).max().unwrap_or(0),
        train_examples: req.train.len(),
        train_seconds: members.iter().map(|m| m.meta.train_seconds).sum(),
        holdout: req.holdout.clone(),
        acceptance: None,
        int8_agreement: None,
        ngram_strength: None,
    };
    Ok(Trained {
        meta,
        tensors: HashMap::new(),
        members,
    })
}

/// The metrics of the members' mean scores on `examples`, read from each member's `part`
/// (validation or test); `None` when a member did not score them.
fn mean_metrics(
    req: &TrainRequest,
    members: &[Trained],
    part: impl Fn(&Trained) -> Option<&Metrics>,
    examples: &[Example],
) -> Result<Option<Metrics>, TrainError> {
    let mut rows = Vec::with_capacity(members.len());
    for member in members {
        let Some(m) = part(member) else {
            return Ok(None);
        };
        if m.predictions.len() != examples.len() {
            return Err(TrainError::Hyper(format!(
                "ensemble member {} scored {} of {} examples",
                member.meta.method,
                m.predictions.len(),
                examples.len()
            )));
        }
        rows.push(m.predictions.as_slice());
    }
    if examples.is_empty() {
        return Ok(None);
    }
    let mean = average(&rows).map_err(TrainError::Hyper)?;
    Ok(Some(metrics(&mean, examples, &req.models, None)))
}
