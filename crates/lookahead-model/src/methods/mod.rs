//! The routing methods, each as a model, its training and its artifact as a scorer: Lookahead-
//! lite with the MLC baseline ([`lite`]), the kNN baseline ([`knn`]), the paper's Lookahead-MLM
//! ([`mlm`]) and Lookahead-CLM ([`clm`]); an [`ensemble`] scores with the mean of trained
//! members. Lite, MLC and kNN train on cached frozen-layer states ([`cached`]); every trained
//! method runs the shared epoch loop in [`crate::fit`].

pub mod cached;
pub mod clm;
pub mod ensemble;
pub mod knn;
pub mod lite;
pub mod mlm;
pub mod ngram;

use crate::artifact::Method;
use crate::backbones::encoder_dir::{default_backbone_dir, Backbone};
use crate::backbones::gguf::{default_decoder_dir, Decoder};
use crate::fit::{Example, TrainError, TrainRequest, Trained};

/// Trains the method `req.method` names (no acceptance gate: see [`crate::train`]).
pub fn train(req: &TrainRequest) -> Result<Trained, TrainError> {
    match req.method {
        Method::Lite | Method::Mlc => lite::train::train(&encoder(req)?, req),
        Method::Knn => knn::train::train(&encoder(req)?, req),
        // End to end on token ids (no state cache).
        Method::Mlm => mlm::train::train(&encoder(req)?, req),
        Method::Clm => clm::train::train(&decoder(req)?, req),
        // Text features only: no backbone.
        Method::Ngram => ngram::train::train(req),
        // Its members are whole training runs, each through its own acceptance gate.
        Method::Ensemble => Err(TrainError::Hyper(
            "an ensemble trains its members through lookahead_model::train".into(),
        )),
    }
}

/// Whether `method`'s acceptance gate is cross-fitted unless asked otherwise (and, with it, its
/// scores calibrated): the n-gram router refits in seconds; an encoder method would train K more
/// times (minutes to hours on a CPU), so it is judged on the validation split.
pub fn cross_fits_by_default(method: Method) -> bool {
    matches!(method, Method::Ngram | Method::Ensemble)
}

/// Whether K fits of `method` may run side by side (cross-fitting): the n-gram router's fits are
/// convex fits of a few MB, mostly on one core each; the encoder methods already use every core
/// and hold a backbone each.
pub fn fits_side_by_side(method: Method) -> bool {
    matches!(method, Method::Ngram)
}

fn encoder(req: &TrainRequest) -> Result<Backbone, TrainError> {
    let dir = req.backbone.clone().unwrap_or_else(default_backbone_dir);
    Ok(Backbone::load(&dir, &req.device)?)
}

fn decoder(req: &TrainRequest) -> Result<Decoder, TrainError> {
    let dir = req.backbone.clone().unwrap_or_else(default_decoder_dir);
    Ok(Decoder::load(&dir, &req.device)?)
}

/// Logit of each pool member's positive rate in `train` (clamped to 2..98%): a routing bias
/// that starts training at the prior.
pub fn prior_logits(train: &[Example], models: usize) -> Vec<f32> {
    let n = train.len() as f32;
    (0..models)
        .map(|j| {
            let rate = (train.iter().map(|e| e.labels[j]).sum::<f32>() / n).clamp(0.02, 0.98);
            (rate / (1.0 - rate)).ln()
        })
        .collect()
}
