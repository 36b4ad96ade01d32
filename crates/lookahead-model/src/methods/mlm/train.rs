//! Training Lookahead-MLM ([`super::model`]) end to end on token ids: tokenised examples, the
//! curriculum (mask rate rising over the steps) in the shared epoch loop ([`crate::fit::fit`],
//! warm-up + cosine). `router.safetensors` holds the trainable tensors only, the frozen ones come
//! from the (hash-checked) backbone.

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::model::{
    layout, seed_from_backbone, stack_layouts, MlmLayout, MlmModel, MlmShape, MlmSpecial,
    MLM_LOSS_WEIGHT,
};
use crate::artifact::{BackboneInfo, Metrics};
use crate::backbones::encoder_dir::{Backbone, PromptWindow};
use crate::fit::{
    fit, mask_rate, scored_metrics, to_device, BatchLoss, Decay, Example, FitSettings, Step,
    TrainError, TrainRequest, Trained, Trainee,
};
use crate::kernels::ops::Mode;
use crate::methods::prior_logits;

/// Prompts and responses as token ids.
struct Tokenised {
    prompt: Vec<u32>,
    responses: Vec<Vec<u32>>,
}

fn tokenise(
    backbone: &Backbone,
    special: &MlmSpecial,
    e: &Example,
    window: PromptWindow,
    k: usize,
    with_responses: bool,
) -> Result<Tokenised, TrainError> {
    let msg = |m: String| TrainError::Tensor(candle_core::Error::Msg(format!("tokenizer: {m}")));
    let prompt = backbone.window_ids(&e.prompt, window).map_err(msg)?;
    special.check_prompt(&prompt)?;
    let mut responses = Vec::new();
    if with_responses {
        for r in &e.responses {
            let enc = backbone
                .tokenizer
                .encode(r.as_str(), false)
                .map_err(|err| msg(err.to_string()))?;
            let ids = enc.get_ids();
            responses.push(ids[..ids.len().min(k)].to_vec());
        }
    }
    Ok(Tokenised { prompt, responses })
}

fn shape_of(backbone: &Backbone, req: &TrainRequest) -> Result<MlmShape, TrainError> {
    let layers = backbone.encoder.num_layers();
    let hp = &req.hyper;
    if hp.trainable_layers == 0 || hp.trainable_layers > layers {
        return Err(TrainError::Hyper(format!(
            "--trainable-layers must be 1..={layers} for this backbone, got {}",
            hp.trainable_layers
        )));
    }
    if hp.slot_tokens == 0 || hp.batch_size == 0 || hp.max_prompt_tokens < 2 {
        return Err(TrainError::Hyper(
            "need slot_tokens >= 1, batch_size >= 1, max_prompt_tokens >= 2".into(),
        ));
    }
    let p = req.models.len();
    let seq = hp.max_prompt_tokens + p * (hp.slot_tokens + 1);
    let max_pos = backbone.encoder.max_positions();
    if seq > max_pos {
        return Err(TrainError::Hyper(format!(
            "prompt ({}) + {p} slots of {} + [SEP] = {seq} positions exceed the backbone's {max_pos}",
            hp.max_prompt_tokens, hp.slot_tokens
        )));
    }
    Ok(MlmShape {
        models: p,
        slot_tokens: hp.slot_tokens,
        trainable_layers: hp.trainable_layers,
    })
}

/// Fully masked scores (sigmoid) and logits for tokenised prompts, in batches.
pub(super) fn predict(
    model: &MlmModel,
    prompts: &[&[u32]],
    special: &MlmSpecial,
    device: &Device,
) -> candle_core::Result<(Vec<Vec<f32>>, Tensor)> {
    let mut probs = Vec::with_capacity(prompts.len());
    let mut logits = Vec::new();
    for chunk in prompts.chunks(32) {
        let layouts: Vec<MlmLayout> = chunk
            .iter()
            .map(|p| layout(p, None, model.shape.slot_tokens, 1.0, special))
            .collect();
        let b = stack_layouts(&layouts, special.pad, device)?;
        let out = model.forward(&b.ids, &b.keep, Mode::Inference)?;
        probs.extend(candle_nn::ops::sigmoid(&out.logits)?.to_vec2::<f32>()?);
        logits.push(out.logits.to_device(&Device::Cpu)?);
    }
    Ok((probs, Tensor::cat(&logits, 0)?))
}

/// Trains Lookahead-MLM on the backbone's device.
pub fn train(backbone: &Backbone, req: &TrainRequest) -> Result<Trained, TrainError> {
    if req.train.is_empty() {
        return Err(TrainError::Empty);
    }
    let started = Instant::now();
    let shape = shape_of(backbone, req)?;
    let mut hp = req.hyper.clone();
    hp.frozen_layers = backbone.encoder.num_layers() - hp.trainable_layers;
    hp.lambda = MLM_LOSS_WEIGHT;
    req.check_examples()?;
    let special = MlmSpecial::from_tokenizer(&backbone.tokenizer, shape.models)?;
    let tok = |examples: &[Example], resp: bool| -> Result<Vec<Tokenised>, TrainError> {
        examples
            .iter()
            .map(|e| {
                tokenise(
                    backbone,
                    &special,
                    e,
                    hp.prompt_window(),
                    hp.slot_tokens,
                    resp,
                )
            })
            .collect()
    };
    let (train, valid, test) = (
        tok(req.train, true)?,
        tok(req.valid, false)?,
        tok(req.test.unwrap_or(&[]), false)?,
    );
    let device = backbone.encoder.device().clone();
    let varmap = VarMap::new();
    seed_from_backbone(&varmap, &backbone.tensors, &backbone.encoder, shape)?;
    // Routing bias = logit of each model's positive rate: training starts at the prior.
    let bias = Tensor::from_vec(prior_logits(req.train, shape.models), shape.models, &device)?;
    varmap
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("varmap lock poisoned".into()))?
        .insert(
            "route_out.bias".into(),
            candle_core::Var::from_tensor(&bias)?,
        );
    let model = MlmModel::new(
        &backbone.encoder,
        VarBuilder::from_varmap(&varmap, DType::F32, &device),
        shape,
    )?;
    let trainee = MlmTrainee {
        req,
        hyper: &hp,
        backbone,
        special,
        shape,
        device,
        varmap,
        model,
        data: [train, valid, test],
    };
    let settings = FitSettings {
        hyper: &hp,
        examples: req.train.len(),
        decay: Decay::Cosine,
        label: "mlm",
        auxiliary: "mlm ce",
        message_every: 1,
        progress: req.progress,
        deadline: req.deadline,
    };
    let fitted = fit(&trainee, &settings, &mut StdRng::seed_from_u64(hp.seed))?;
    Ok(Trained::new(
        req,
        hp.clone(),
        BackboneInfo::of(backbone),
        fitted,
        started,
    ))
}

/// The MLM model under training, over tokenised examples.
struct MlmTrainee<'a> {
    req: &'a TrainRequest<'a>,
    /// The request's settings as MLM settled them (frozen layers, loss weight).
    hyper: &'a crate::artifact::HyperParams,
    backbone: &'a Backbone,
    special: MlmSpecial,
    shape: MlmShape,
    device: Device,
    varmap: VarMap,
    model: MlmModel,
    /// Train (with responses), validation and test prompts.
    data: [Vec<Tokenised>; 3],
}

impl MlmTrainee<'_> {
    fn evaluate(
        &self,
        model: &MlmModel,
        data: &[Tokenised],
        examples: &[Example],
    ) -> Result<Metrics, TrainError> {
        if examples.is_empty() {
            return Ok(Metrics::default());
        }
        let prompts: Vec<&[u32]> = data.iter().map(|t| t.prompt.as_slice()).collect();
        let (probs, logits) = predict(model, &prompts, &self.special, &self.device)?;
        scored_metrics(&probs, &logits, examples, &self.req.models)
    }
}

impl Trainee for MlmTrainee<'_> {
    fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    fn batch_loss(&self, idx: &[usize], step: Step) -> Result<BatchLoss, TrainError> {
        let hp = self.hyper;
        let train = &self.data[0];
        let rate = mask_rate(step.index, step.total, hp.mask_start, hp.mask_warm_fraction);
        let layouts: Vec<MlmLayout> = idx
            .iter()
            .map(|&i| {
                let t = &train[i];
                layout(
                    &t.prompt,
                    Some(&t.responses),
                    hp.slot_tokens,
                    rate,
                    &self.special,
                )
            })
            .collect();
        let batch = stack_layouts(&layouts, self.special.pad, &self.device)?;
        let labels: Vec<f32> = idx
            .iter()
            .flat_map(|&i| self.req.train[i].labels.clone())
            .collect();
        let labels = Tensor::from_vec(labels, (idx.len(), self.shape.models), &self.device)?;
        let (total, bce, ce) = self.model.loss(&batch, &labels)?;
        Ok(BatchLoss {
            total,
            routing: bce,
            auxiliary: ce,
            mask_rate: Some(rate),
        })
    }

    fn validate(&self) -> Result<Metrics, TrainError> {
        self.evaluate(&self.model, &self.data[1], self.req.valid)
    }

    fn test(&self, best: &HashMap<String, Tensor>) -> Result<Option<Metrics>, TrainError> {
        let Some(test) = self.req.test.filter(|t| !t.is_empty()) else {
            return Ok(None);
        };
        let dev = &self.device;
        let vb = VarBuilder::from_tensors(to_device(best, dev)?, DType::F32, dev);
        let best_model = MlmModel::new(&self.backbone.encoder, vb, self.shape)?;
        Ok(Some(self.evaluate(&best_model, &self.data[2], test)?))
    }
}
