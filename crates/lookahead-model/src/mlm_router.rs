//! Training and serving the Lookahead-MLM router ([`crate::mlm`]): tokenised examples, the
//! curriculum loop (AdamW, warm-up + cosine, early stopping on validation routing quality) and
//! the artifact as a [`Scorer`]. Same artifact format as the lite router; `router.safetensors`
//! holds the trainable tensors only, the frozen ones come from the (hash-checked) backbone.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::artifact::{
    fingerprint_models, ArtifactError, BackboneInfo, BackboneKind, Metrics, RouterMeta,
    FORMAT_VERSION, TENSORS_FILE,
};
use crate::backbone::Backbone;
use crate::fit::{progress_bar, to_device, Decay, EarlyStopping, LrSchedule};
use crate::lite::mask_rate;
use crate::mlm::{
    layout, seed_from_backbone, stack_layouts, MlmLayout, MlmModel, MlmShape, MlmSpecial,
    MLM_LOSS_WEIGHT,
};
use crate::ops::Mode;
use crate::scorer::{ScoreError, Scorer};
use crate::train::{metrics, Example, TrainError, TrainRequest, Trained};

/// Prompts and responses as token ids.
struct Tokenised {
    prompt: Vec<u32>,
    responses: Vec<Vec<u32>>,
}

fn tokenise(
    backbone: &Backbone,
    special: &MlmSpecial,
    e: &Example,
    max_prompt: usize,
    k: usize,
    with_responses: bool,
) -> Result<Tokenised, TrainError> {
    let msg = |m: String| TrainError::Tensor(candle_core::Error::Msg(format!("tokenizer: {m}")));
    let prompt = backbone.token_ids(&e.prompt, max_prompt).map_err(msg)?;
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
fn predict(
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

fn evaluate(
    model: &MlmModel,
    data: &[Tokenised],
    examples: &[Example],
    models: &[String],
    special: &MlmSpecial,
    device: &Device,
) -> Result<Metrics, TrainError> {
    if examples.is_empty() {
        return Ok(Metrics::default());
    }
    let prompts: Vec<&[u32]> = data.iter().map(|t| t.prompt.as_slice()).collect();
    let (probs, logits) = predict(model, &prompts, special, device)?;
    let labels: Vec<f32> = examples.iter().flat_map(|e| e.labels.clone()).collect();
    let labels = Tensor::from_vec(labels, logits.shape(), &Device::Cpu)?;
    let bce = crate::ops::bce_with_logits(&logits, &labels)?.to_scalar::<f32>()?;
    Ok(metrics(&probs, examples, models, Some(f64::from(bce))))
}

/// Trains Lookahead-MLM on `device` (the backbone must live there too).
pub fn train_mlm(
    backbone: &Backbone,
    req: &TrainRequest,
    device: &Device,
) -> Result<Trained, TrainError> {
    if req.train.is_empty() {
        return Err(TrainError::Empty);
    }
    let started = Instant::now();
    let shape = shape_of(backbone, req)?;
    let mut hp = req.hyper.clone();
    let layers = backbone.encoder.num_layers();
    hp.frozen_layers = layers - hp.trainable_layers;
    hp.lambda = MLM_LOSS_WEIGHT;
    let p = shape.models;
    for e in req
        .train
        .iter()
        .chain(req.valid)
        .chain(req.test.unwrap_or(&[]))
    {
        if e.labels.len() != p || e.quality.len() != p || e.responses.len() != p {
            return Err(TrainError::Shape {
                id: e.id.clone(),
                got: e.labels.len(),
                want: p,
            });
        }
    }
    let special = MlmSpecial::from_tokenizer(&backbone.tokenizer, p)?;
    let tok = |examples: &[Example], resp: bool| -> Result<Vec<Tokenised>, TrainError> {
        examples
            .iter()
            .map(|e| {
                tokenise(
                    backbone,
                    &special,
                    e,
                    hp.max_prompt_tokens,
                    hp.slot_tokens,
                    resp,
                )
            })
            .collect()
    };
    let train = tok(req.train, true)?;
    let valid = tok(req.valid, false)?;
    let test = tok(req.test.unwrap_or(&[]), false)?;

    let varmap = VarMap::new();
    seed_from_backbone(&varmap, &backbone.tensors, &backbone.encoder, shape)?;
    {
        // Routing bias = logit of each model's positive rate: training starts at the prior.
        let n = req.train.len() as f32;
        let bias: Vec<f32> = (0..p)
            .map(|j| {
                let rate =
                    (req.train.iter().map(|e| e.labels[j]).sum::<f32>() / n).clamp(0.02, 0.98);
                (rate / (1.0 - rate)).ln()
            })
            .collect();
        let mut data = varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("varmap lock poisoned".into()))?;
        data.insert(
            "route_out.bias".into(),
            candle_core::Var::from_tensor(&Tensor::from_vec(bias, p, device)?)?,
        );
    }
    let model = MlmModel::new(
        &backbone.encoder,
        VarBuilder::from_varmap(&varmap, DType::F32, device),
        shape,
    )?;
    let mut opt = AdamW::new(
        varmap.all_vars(),
        ParamsAdamW {
            lr: hp.learning_rate,
            weight_decay: hp.weight_decay,
            ..Default::default()
        },
    )?;
    let steps_per_epoch = train.len().div_ceil(hp.batch_size);
    let total = steps_per_epoch * hp.max_epochs.max(1);
    let schedule = LrSchedule::new(hp.learning_rate, total, Decay::Cosine);
    let bar = progress_bar(req.progress, total, "mlm");
    let mut rng = StdRng::seed_from_u64(hp.seed);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut stopping = EarlyStopping::new(hp.patience);
    let mut step = 0usize;
    for epoch in 1..=hp.max_epochs.max(1) {
        order.shuffle(&mut rng);
        let (mut sum_bce, mut sum_ce, mut n) = (0f64, 0f64, 0usize);
        for idx in order.chunks(hp.batch_size) {
            opt.set_learning_rate(schedule.at(step));
            let rate = mask_rate(step, total, hp.mask_start, hp.mask_warm_fraction);
            let layouts: Vec<MlmLayout> = idx
                .iter()
                .map(|&i| {
                    layout(
                        &train[i].prompt,
                        Some(&train[i].responses),
                        hp.slot_tokens,
                        rate,
                        &special,
                    )
                })
                .collect();
            let batch = stack_layouts(&layouts, special.pad, device)?;
            let labels: Vec<f32> = idx
                .iter()
                .flat_map(|&i| req.train[i].labels.clone())
                .collect();
            let labels = Tensor::from_vec(labels, (idx.len(), p), device)?;
            let (loss, bce, ce) = model.loss(&batch, &labels)?;
            opt.backward_step(&loss)?;
            sum_bce += f64::from(bce);
            sum_ce += f64::from(ce);
            n += 1;
            step += 1;
            bar.inc(1);
            bar.set_message(format!(
                "epoch {epoch} bce {:.4} mlm {:.3} mask {rate:.2}",
                sum_bce / n as f64,
                sum_ce / n as f64
            ));
        }
        let v = evaluate(&model, &valid, req.valid, &req.models, &special, device)?;
        tracing::info!(
            epoch,
            train_bce = sum_bce / n.max(1) as f64,
            train_mlm_ce = sum_ce / n.max(1) as f64,
            valid_router = v.router,
            valid_bce = v.bce,
            "mlm epoch done"
        );
        bar.println(format!(
            "epoch {epoch}: train bce {:.4} mlm ce {:.3} | valid router {:.2} (oracle {:.2}, best single {:.2}) bce {:.4}",
            sum_bce / n.max(1) as f64,
            sum_ce / n.max(1) as f64,
            v.router,
            v.oracle,
            v.best_single,
            v.bce.unwrap_or(f64::NAN)
        ));
        if !stopping.observe(epoch, v, &varmap)? {
            break;
        }
    }
    bar.finish_and_clear();
    let best = stopping.into_best()?;
    let (best_epoch, tensors, validation) = (best.epoch, best.tensors, best.validation);
    let test_metrics = match req.test {
        Some(t) if !t.is_empty() => {
            let vb = VarBuilder::from_tensors(to_device(&tensors, device)?, DType::F32, device);
            let best_model = MlmModel::new(&backbone.encoder, vb, shape)?;
            Some(evaluate(
                &best_model,
                &test,
                t,
                &req.models,
                &special,
                device,
            )?)
        }
        _ => None,
    };
    let meta = RouterMeta {
        format_version: FORMAT_VERSION,
        method: req.method,
        models: req.models.clone(),
        pool_fingerprint: fingerprint_models(&req.models),
        backbone: BackboneInfo {
            sha256: backbone.hash.clone(),
            hidden_size: backbone.encoder.hidden_size(),
            layers,
            kind: backbone.encoder.kind().into(),
        },
        hyper: hp,
        sources: req.sources.clone(),
        validation,
        test: test_metrics,
        best_epoch,
        train_examples: req.train.len(),
        train_seconds: started.elapsed().as_secs_f64(),
        holdout: req.holdout.clone(),
    };
    Ok(Trained { meta, tensors })
}

/// A loaded MLM artifact: scores prompts (fully masked slots) in one pass per batch.
pub struct MlmScorer {
    pub meta: RouterMeta,
    backbone: Backbone,
    model: MlmModel,
    special: MlmSpecial,
}

impl MlmScorer {
    pub fn load(dir: &Path, backbone_dir: &Path) -> Result<Self, ArtifactError> {
        Self::load_on(dir, backbone_dir, &Device::Cpu)
    }

    /// Loads onto `device`.
    pub fn load_on(
        dir: &Path,
        backbone_dir: &Path,
        device: &Device,
    ) -> Result<Self, ArtifactError> {
        let meta = RouterMeta::read(dir)?;
        let device = device.clone();
        let backbone = Backbone::load(backbone_dir, &device)?;
        if backbone.hash != meta.backbone.sha256 {
            return Err(ArtifactError::BackboneMismatch {
                expected: meta.backbone.sha256.clone(),
                found: backbone.hash.clone(),
                dir: backbone_dir.to_path_buf(),
            });
        }
        let found = BackboneKind::from(backbone.encoder.kind());
        if found != meta.backbone.kind {
            return Err(ArtifactError::BackboneKind {
                expected: meta.backbone.kind,
                found,
            });
        }
        let tensors = candle_core::safetensors::load(dir.join(TENSORS_FILE), &device)?;
        Self::from_parts(meta, backbone, tensors)
    }

    /// Builds a scorer from in-memory tensors (right after training).
    pub fn from_parts(
        meta: RouterMeta,
        backbone: Backbone,
        tensors: HashMap<String, Tensor>,
    ) -> Result<Self, ArtifactError> {
        let device = backbone.encoder.device().clone();
        let shape = MlmShape {
            models: meta.models.len(),
            slot_tokens: meta.hyper.slot_tokens,
            trainable_layers: meta.hyper.trainable_layers,
        };
        let special = MlmSpecial::from_tokenizer(&backbone.tokenizer, shape.models)?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
        let model = MlmModel::new(&backbone.encoder, vb, shape)?;
        Ok(Self {
            meta,
            backbone,
            model,
            special,
        })
    }

    /// Encoder passes run so far.
    pub fn passes(&self) -> usize {
        self.model.passes()
    }
}

impl Scorer for MlmScorer {
    fn models(&self) -> &[String] {
        &self.meta.models
    }

    fn score_batch(&self, prompts: &[&str]) -> Result<Vec<Vec<f32>>, ScoreError> {
        if prompts.is_empty() {
            return Ok(Vec::new());
        }
        let ids = prompts
            .iter()
            .map(|p| {
                self.backbone
                    .token_ids(p, self.meta.hyper.max_prompt_tokens)
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(ScoreError::Tokenizer)?;
        for p in &ids {
            self.special
                .check_prompt(p)
                .map_err(|e| ScoreError::Tokenizer(e.to_string()))?;
        }
        let refs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
        let device = self.backbone.encoder.device().clone();
        predict(&self.model, &refs, &self.special, &device)
            .map(|(p, _)| p)
            .map_err(|e| ScoreError::Model(e.to_string()))
    }
}
