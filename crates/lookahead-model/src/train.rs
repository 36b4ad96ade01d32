//! The one training entry point: [`train`] runs the method's training ([`crate::methods`]) and
//! puts the trained router through the acceptance gate ([`crate::fit::acceptance`]), whatever
//! the method: on the validation split, or, when the request asks for folds, on cross-fitted
//! scores ([`crate::crossfit`]), which also fit the within-source calibration
//! ([`crate::calibration`]) the artifact then serves with.

use crate::artifact::{Acceptance, Method};
use crate::calibration::SourceCalibration;
use crate::crossfit::{cross_fit, CrossFitted};
use crate::fit::{accept, best_single, metrics, Example, TrainError, TrainRequest, Trained};
use crate::{compose, methods};

/// Trains the router `req.method` names on `req.backbone` (or the method's default), on
/// `req.device`, and records whether it beat the best single model (`meta.acceptance`).
pub fn train(req: &TrainRequest) -> Result<Trained, TrainError> {
    let mut trained = match req.method {
        Method::Ensemble => train_ensemble(req)?,
        _ => train_gated(req)?,
    };
    trained.forget_examples();
    Ok(trained)
}

/// One method's training and its acceptance gate, with the per-example scores kept.
fn train_gated(req: &TrainRequest) -> Result<Trained, TrainError> {
    let mut trained = methods::train(req)?;
    // Set again once a calibration is fitted and stored.
    trained.meta.hyper.source_calibration = false;
    let acceptance = match req.acceptance_folds {
        0 | 1 => {
            let choices = &trained.meta.validation.choices;
            accept(req.train, req.valid, choices, &req.models, req.min_gain)?
        }
        folds => match cross_fit(req, folds)? {
            Some(crossed) => Some(gate_and_calibrate(req, &crossed, &mut trained)?),
            None => None,
        },
    };
    log_verdict(acceptance.as_ref());
    trained.meta.acceptance = acceptance;
    Ok(trained)
}

/// Each member trained (cheapest first) through its own gate, the members combined, and the
/// ensemble judged on the validation split: cross-fitting it would train every member K more
/// times.
fn train_ensemble(req: &TrainRequest) -> Result<Trained, TrainError> {
    let members = &req.hyper.members;
    if members.is_empty() || members.contains(&Method::Ensemble) {
        return Err(TrainError::Hyper(format!(
            "an ensemble needs one or more member methods, none an ensemble (members: {members:?})"
        )));
    }
    let mut trained = Vec::with_capacity(members.len());
    for (i, &member) in members.iter().enumerate() {
        if members[..i].contains(&member) {
            return Err(TrainError::Hyper(format!(
                "ensemble member {member} given twice"
            )));
        }
        let folds = if methods::cross_fits_by_default(member) {
            req.acceptance_folds
        } else {
            0
        };
        let _span = tracing::info_span!("member", method = %member).entered();
        trained.push(train_gated(&req.for_member(member, folds))?);
    }
    let mut ensemble = compose::combine(req, trained)?;
    let choices = &ensemble.meta.validation.choices;
    let acceptance = accept(req.train, req.valid, choices, &req.models, req.min_gain)?;
    log_verdict(acceptance.as_ref());
    ensemble.meta.acceptance = acceptance;
    Ok(ensemble)
}

/// The gate on cross-fitted choices; with `source_calibration`, those choices are calibrated
/// (each fold by a calibration fitted on the others) and the artifact gets the calibration
/// fitted on all of them, its validation and test metrics re-scored through it.
fn gate_and_calibrate(
    req: &TrainRequest,
    crossed: &CrossFitted,
    trained: &mut Trained,
) -> Result<Acceptance, TrainError> {
    let calibrate = req.hyper.source_calibration;
    let slopes = crate::calibration::Slopes::of(&req.hyper);
    let fallback = best_single(req.train, req.models.len()).unwrap_or(0);
    let verdict = crossed.verdict(
        crossed.choices(&req.sources, calibrate.then_some(slopes)),
        &req.models,
        fallback,
        req.min_gain,
    )?;
    if !calibrate {
        return Ok(verdict);
    }
    let seen: Vec<&Example> = req.train.iter().chain(req.valid).collect();
    let classifier =
        SourceCalibration::fit_classifier(&seen, &req.sources, req.hyper.ngram_hasher());
    let Some(calibration) = crossed.calibration(&req.sources, classifier, slopes) else {
        return Ok(verdict);
    };
    let tensors = calibration
        .to_tensors()
        .map_err(|e| TrainError::CrossFit(e.to_string()))?;
    trained.tensors.extend(tensors);
    trained.meta.hyper.source_calibration = true;
    let rescore = |m: &mut crate::artifact::Metrics, examples: &[Example]| {
        let rows: Vec<Vec<f32>> = examples
            .iter()
            .zip(&m.predictions)
            .map(|(e, row)| calibration.apply(&e.prompt, row))
            .collect();
        if rows.len() == examples.len() && !rows.is_empty() {
            let foresight = m.foresight.take();
            *m = metrics(&rows, examples, &req.models, m.bce);
            m.foresight = foresight;
        }
    };
    rescore(&mut trained.meta.validation, req.valid);
    if let (Some(m), Some(test)) = (trained.meta.test.as_mut(), req.test) {
        rescore(m, test);
    }
    Ok(verdict)
}

fn log_verdict(acceptance: Option<&Acceptance>) {
    match acceptance {
        Some(a) if a.accepted => tracing::info!(
            gain = a.gain,
            lower_bound = a.lower_bound,
            folds = a.folds,
            fallback_model = %a.fallback_model,
            "router accepted: the lower bound of its gain over the best single model reaches minGain"
        ),
        Some(a) => tracing::warn!(
            gain = a.gain,
            lower_bound = a.lower_bound,
            min_gain = a.min_gain,
            folds = a.folds,
            fallback_model = %a.fallback_model,
            "router not accepted: the lower bound of its gain over the best single model is below minGain; routers serve that model instead"
        ),
        None => tracing::warn!("no validation records: the acceptance gate was not applied"),
    }
}
