//! Building the kNN index: pooled full-backbone embeddings of the training prompts (from their
//! cached lower-layer states) and their scaled scores. No optimiser, no epochs.

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{Device, Tensor};

use super::model::KnnIndex;
use crate::artifact::{BackboneInfo, Metrics};
use crate::backbones::encoder_dir::Backbone;
use crate::fit::{metrics, Example, Fitted, TrainError, TrainRequest, Trained};
use crate::kernels::attention::additive_mask;
use crate::kernels::ops::Mode;
use crate::methods::cached::{cached_states, check_request, prompt_kind, prompt_states};
use crate::methods::lite::model::stack_states;
use crate::states::StateCache;

/// Pooled full-backbone embeddings from cached lower states (runs the remaining layers).
fn pooled_embeddings(
    backbone: &Backbone,
    states: &[&Tensor],
    from_layer: usize,
) -> Result<Tensor, TrainError> {
    let mut out = Vec::new();
    for chunk in states.chunks(64) {
        let batch = stack_states(chunk, None, 0, &Device::Cpu)?;
        let mask = additive_mask(&batch.prompt_keep)?;
        let mut x = batch.prompt;
        for layer in &backbone.bert("kNN")?.layers[from_layer..] {
            x = layer.forward(&x, Some(&mask), Mode::Inference)?;
        }
        out.push(crate::nn::mean_pool(&x, &batch.prompt_keep)?);
    }
    Ok(Tensor::cat(&out, 0)?)
}

/// Embeddings of `examples`' prompts through the whole backbone.
fn embeddings(
    backbone: &Backbone,
    cache: &StateCache,
    req: &TrainRequest,
    examples: &[Example],
) -> Result<Tensor, TrainError> {
    let states = prompt_states(cache, examples, prompt_kind(req))?;
    pooled_embeddings(backbone, &states, req.hyper.frozen_layers)
}

/// Builds a kNN router over the training prompts; validation and test score through it.
pub fn train(backbone: &Backbone, req: &TrainRequest) -> Result<Trained, TrainError> {
    check_request(req, backbone)?;
    let started = Instant::now();
    let cache = cached_states(backbone, req)?;
    let emb = embeddings(backbone, &cache, req, req.train)?;
    let p = req.models.len();
    let scores: Vec<f32> = req
        .train
        .iter()
        .flat_map(|e| e.quality.iter().map(|q| q / 100.0))
        .collect();
    let scores = Tensor::from_vec(scores, (req.train.len(), p), &Device::Cpu)?;
    let knn = KnnIndex::new(&emb, scores.clone(), req.hyper.knn_k)?;
    let eval = |examples: &[Example]| -> Result<Metrics, TrainError> {
        if examples.is_empty() {
            return Ok(Metrics::default());
        }
        let e = embeddings(backbone, &cache, req, examples)?;
        Ok(metrics(&knn.predict(&e)?, examples, &req.models, None))
    };
    let validation = eval(req.valid)?;
    let test = req.test.map(eval).transpose()?;
    let mut tensors = HashMap::new();
    tensors.insert("knn.embeddings".to_string(), knn.embeddings.clone());
    tensors.insert("knn.scores".to_string(), scores);
    let fitted = Fitted {
        tensors,
        validation,
        test,
        best_epoch: 0,
        epochs_run: 0,
    };
    Ok(Trained::new(
        req,
        req.hyper.clone(),
        BackboneInfo::of(backbone),
        fitted,
        started,
    ))
}
