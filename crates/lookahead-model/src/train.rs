//! The one training entry point: [`train`] loads the request's backbone (or CLM decoder) and
//! runs the method's training.

use crate::artifact::Method;
use crate::backbones::encoder_dir::{default_backbone_dir, Backbone};
use crate::backbones::gguf::{default_decoder_dir, Decoder};
use crate::fit::{TrainError, TrainRequest, Trained};
use crate::methods::{clm, knn, lite, mlm, ngram};

/// Trains the router `req.method` names on `req.backbone` (or the method's default), on
/// `req.device`.
pub fn train(req: &TrainRequest) -> Result<Trained, TrainError> {
    match req.method {
        Method::Lite | Method::Mlc => lite::train::train(&encoder(req)?, req),
        Method::Knn => knn::train::train(&encoder(req)?, req),
        // End to end on token ids (no state cache).
        Method::Mlm => mlm::train::train(&encoder(req)?, req),
        Method::Clm => clm::train::train(&decoder(req)?, req),
        // Text features only: no backbone.
        Method::Ngram => ngram::train::train(req),
    }
}

fn encoder(req: &TrainRequest) -> Result<Backbone, TrainError> {
    let dir = req.backbone.clone().unwrap_or_else(default_backbone_dir);
    Ok(Backbone::load(&dir, &req.device)?)
}

fn decoder(req: &TrainRequest) -> Result<Decoder, TrainError> {
    let dir = req.backbone.clone().unwrap_or_else(default_decoder_dir);
    Ok(Decoder::load(&dir, &req.device)?)
}
