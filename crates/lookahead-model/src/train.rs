//! The one training entry point: [`train`] loads the request's backbone (or CLM decoder), runs
//! the method's training and puts the trained router through the acceptance gate
//! ([`crate::fit::acceptance`]), whatever the method.

use crate::artifact::Method;
use crate::backbones::encoder_dir::{default_backbone_dir, Backbone};
use crate::backbones::gguf::{default_decoder_dir, Decoder};
use crate::fit::{accept, TrainError, TrainRequest, Trained};
use crate::methods::{clm, knn, lite, mlm, ngram};

/// Trains the router `req.method` names on `req.backbone` (or the method's default), on
/// `req.device`, and records whether it beat the best single model (`meta.acceptance`).
pub fn train(req: &TrainRequest) -> Result<Trained, TrainError> {
    let mut trained = match req.method {
        Method::Lite | Method::Mlc => lite::train::train(&encoder(req)?, req),
        Method::Knn => knn::train::train(&encoder(req)?, req),
        // End to end on token ids (no state cache).
        Method::Mlm => mlm::train::train(&encoder(req)?, req),
        Method::Clm => clm::train::train(&decoder(req)?, req),
        // Text features only: no backbone.
        Method::Ngram => ngram::train::train(req),
    }?;
    // The per-example choices are for the gate only: once read, the metadata is what
    // `router.json` reads back.
    let choices = std::mem::take(&mut trained.meta.validation.choices);
    if let Some(test) = trained.meta.test.as_mut() {
        test.choices.clear();
    }
    let acceptance = accept(req.train, req.valid, &choices, &req.models, req.min_gain)?;
    match &acceptance {
        Some(a) if a.accepted => tracing::info!(
            gain = a.gain,
            lower_bound = a.lower_bound,
            fallback_model = %a.fallback_model,
            "router accepted: the lower bound of its gain over the best single model reaches minGain"
        ),
        Some(a) => tracing::warn!(
            gain = a.gain,
            lower_bound = a.lower_bound,
            min_gain = a.min_gain,
            fallback_model = %a.fallback_model,
            "router not accepted: the lower bound of its gain over the best single model is below minGain; routers serve that model instead"
        ),
        None => tracing::warn!("no validation records: the acceptance gate was not applied"),
    }
    trained.meta.acceptance = acceptance;
    Ok(trained)
}

fn encoder(req: &TrainRequest) -> Result<Backbone, TrainError> {
    let dir = req.backbone.clone().unwrap_or_else(default_backbone_dir);
    Ok(Backbone::load(&dir, &req.device)?)
}

fn decoder(req: &TrainRequest) -> Result<Decoder, TrainError> {
    let dir = req.backbone.clone().unwrap_or_else(default_decoder_dir);
    Ok(Decoder::load(&dir, &req.device)?)
}
