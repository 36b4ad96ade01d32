//! Training Lookahead-CLM ([`super::model`]) on the GGUF decoder in the shared epoch loop
//! ([`crate::fit::fit`], warm-up + cosine). `router.safetensors` holds the trainable tensors, the
//! frozen ones come from the (hash-checked) GGUF file; `router.json` records the decoder's hash
//! as the backbone.

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::model::{
    build_batch, seed_from_decoder, ClmModel, ClmShape, ClmSpecial, CLM_LOSS_WEIGHT,
};
use crate::artifact::{BackboneInfo, BackboneKind, HyperParams, Metrics};
use crate::backbones::gguf::Decoder;
use crate::fit::{
    fit, scored_metrics, to_device, BatchLoss, Decay, Example, FitSettings, Step, TrainError,
    TrainRequest, Trained, Trainee,
};

pub(super) fn special(dec: &Decoder) -> ClmSpecial {
    ClmSpecial {
        eos: dec.eos,
        placeholder: dec.bos.unwrap_or(dec.eos),
    }
}

pub(super) fn encode(dec: &Decoder, text: &str, max: usize) -> Result<Vec<u32>, String> {
    let enc = dec
        .tokenizer
        .encode(text, false)
        .map_err(|e| e.to_string())?;
    let ids = enc.get_ids();
    Ok(ids[..ids.len().min(max)].to_vec())
}

fn tok_err(m: String) -> TrainError {
    TrainError::Tensor(candle_core::Error::Msg(format!("tokenizer: {m}")))
}

/// The settings CLM trains with: the request's, with the frozen layers and loss weight it
/// implies; an error for an impossible layer count or batch size.
fn settled_hyper(dec: &Decoder, req: &TrainRequest) -> Result<HyperParams, TrainError> {
    let layers = dec.llama.config.layers;
    let mut hp = req.hyper.clone();
    if hp.trainable_layers == 0 || hp.trainable_layers > layers || hp.batch_size == 0 {
        return Err(TrainError::Hyper(format!(
            "--trainable-layers must be 1..={layers} and batch size >= 1"
        )));
    }
    hp.frozen_layers = layers - hp.trainable_layers;
    hp.lambda = CLM_LOSS_WEIGHT;
    Ok(hp)
}

/// Trains Lookahead-CLM on the decoder's device. `slot_tokens` is the number of response tokens
/// kept per candidate.
pub fn train(dec: &Decoder, req: &TrainRequest) -> Result<Trained, TrainError> {
    if req.train.is_empty() {
        return Err(TrainError::Empty);
    }
    let started = Instant::now();
    let hp = settled_hyper(dec, req)?;
    req.check_examples()?;
    let device = dec.llama.embeddings.device().clone();
    let shape = ClmShape {
        models: req.models.len(),
        response_tokens: hp.slot_tokens,
        trainable_layers: hp.trainable_layers,
    };
    let sp = special(dec);
    let prompts = |ex: &[Example]| -> Result<Vec<Vec<u32>>, TrainError> {
        ex.iter()
            .map(|e| encode(dec, &e.prompt, hp.max_prompt_tokens).map_err(tok_err))
            .collect()
    };
    let prompts = [
        prompts(req.train)?,
        prompts(req.valid)?,
        prompts(req.test.unwrap_or(&[]))?,
    ];
    let responses: Vec<Vec<Vec<u32>>> = req
        .train
        .iter()
        .map(|e| {
            e.responses
                .iter()
                .map(|r| encode(dec, r, hp.slot_tokens).map_err(tok_err))
                .collect()
        })
        .collect::<Result<_, _>>()?;
    let varmap = VarMap::new();
    seed_from_decoder(&varmap, &dec.tensors, dec.llama.config.layers, shape)?;
    seed_routing_bias(&varmap, req, &device)?;
    let model = ClmModel::new(
        &dec.llama,
        VarBuilder::from_varmap(&varmap, DType::F32, &device),
        shape,
        sp,
    )?;
    let trainee = ClmTrainee {
        req,
        decoder: dec,
        special: sp,
        shape,
        device,
        varmap,
        model,
        prompts,
        responses,
    };
    let settings = FitSettings {
        hyper: &hp,
        examples: req.train.len(),
        decay: Decay::Cosine,
        label: "clm",
        auxiliary: "lm ce",
        message_every: 1,
        progress: req.progress,
        deadline: req.deadline,
    };
    let fitted = fit(&trainee, &settings, &mut StdRng::seed_from_u64(hp.seed))?;
    let backbone = BackboneInfo {
        sha256: dec.hash.clone(),
        hidden_size: dec.llama.config.hidden_size,
        layers: dec.llama.config.layers,
        // Recorded for readers; loading identifies the GGUF decoder by its hash.
        kind: BackboneKind::Llama,
    };
    Ok(Trained::new(req, hp, backbone, fitted, started))
}

/// The shared routing bias starts at the logit of the overall positive rate.
fn seed_routing_bias(
    varmap: &VarMap,
    req: &TrainRequest,
    device: &Device,
) -> Result<(), TrainError> {
    let total = (req.train.len() * req.models.len()).max(1) as f32;
    let rate = (req.train.iter().flat_map(|e| &e.labels).sum::<f32>() / total).clamp(0.02, 0.98);
    let bias = Tensor::from_vec(vec![(rate / (1.0 - rate)).ln()], 1, device)?;
    varmap
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("varmap lock poisoned".into()))?
        .insert("route.bias".into(), candle_core::Var::from_tensor(&bias)?);
    Ok(())
}

/// The CLM model under training, over tokenised prompts and responses.
struct ClmTrainee<'a> {
    req: &'a TrainRequest<'a>,
    decoder: &'a Decoder,
    special: ClmSpecial,
    shape: ClmShape,
    device: Device,
    varmap: VarMap,
    model: ClmModel,
    /// Train, validation and test prompts.
    prompts: [Vec<Vec<u32>>; 3],
    /// Training responses, per example and candidate.
    responses: Vec<Vec<Vec<u32>>>,
}

impl ClmTrainee<'_> {
    fn evaluate(
        &self,
        model: &ClmModel,
        prompts: &[Vec<u32>],
        examples: &[Example],
    ) -> Result<Metrics, TrainError> {
        if examples.is_empty() {
            return Ok(Metrics::default());
        }
        let mut probs = Vec::with_capacity(prompts.len());
        let mut logits = Vec::with_capacity(prompts.len());
        for p in prompts {
            let l = model.score_cached(p)?.to_device(&Device::Cpu)?;
            probs.push(candle_nn::ops::sigmoid(&l)?.to_vec1::<f32>()?);
            logits.push(l);
        }
        scored_metrics(
            &probs,
            &Tensor::stack(&logits, 0)?,
            examples,
            &self.req.models,
        )
    }
}

impl Trainee for ClmTrainee<'_> {
    fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    fn batch_loss(&self, idx: &[usize], _step: Step) -> Result<BatchLoss, TrainError> {
        let ps: Vec<&[u32]> = idx.iter().map(|&i| self.prompts[0][i].as_slice()).collect();
        let rs: Vec<Vec<Vec<u32>>> = idx.iter().map(|&i| self.responses[i].clone()).collect();
        let batch = build_batch(&ps, &rs, self.shape, self.special, &self.device)?;
        let labels: Vec<f32> = idx
            .iter()
            .flat_map(|&i| self.req.train[i].labels.clone())
            .collect();
        let labels = Tensor::from_vec(labels, (idx.len(), self.shape.models), &self.device)?;
        let (total, bce, lm) = self.model.loss(&batch, &labels)?;
        Ok(BatchLoss {
            total,
            routing: bce,
            auxiliary: lm,
            mask_rate: None,
        })
    }

    fn validate(&self) -> Result<Metrics, TrainError> {
        self.evaluate(&self.model, &self.prompts[1], self.req.valid)
    }

    fn test(&self, best: &HashMap<String, Tensor>) -> Result<Option<Metrics>, TrainError> {
        let Some(test) = self.req.test.filter(|t| !t.is_empty()) else {
            return Ok(None);
        };
        let dev = &self.device;
        let vb = VarBuilder::from_tensors(to_device(best, dev)?, DType::F32, dev);
        let model = ClmModel::new(&self.decoder.llama, vb, self.shape, self.special)?;
        Ok(Some(self.evaluate(&model, &self.prompts[2], test)?))
    }
}
