//! Training loop for the lite, MLC and kNN routers on cached frozen-layer states.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::artifact::{
    fingerprint_models, BackboneInfo, HyperParams, Method, Metrics, RouterMeta, SourceMetrics,
    FORMAT_VERSION,
};
use crate::backbone::Backbone;
use crate::bert::{additive_mask, mean_pool};
use crate::fit::{progress_bar, to_device, Decay, EarlyStopping, LrSchedule};
use crate::knn::KnnIndex;
use crate::lite::{
    loss, mask_rate, seed_upper_from_backbone, stack_states, UpperKind, UpperModel, UpperShape,
};
use crate::ops::Mode;
use crate::states::{state_key, StateCache, StateCacheError, TextKind};

/// One training prompt projected on the pool (vectors in pool order).
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub id: String,
    pub source: String,
    pub prompt: String,
    pub responses: Vec<String>,
    /// Paper labels (0/1).
    pub labels: Vec<f32>,
    /// Scores scaled to 0..100 with the source's range (metrics, kNN targets).
    pub quality: Vec<f32>,
}

impl Example {
    /// A record projected on the pool as a training example: the paper's labels (positive if the
    /// min–max normalised score >= `threshold` x best) and the scores scaled to 0..100 with the
    /// source's `score_range`.
    pub fn from_record(
        data: &lookahead_data::Dataset,
        record: &lookahead_data::PoolRecord,
        threshold: f64,
    ) -> Result<Self, lookahead_data::DataError> {
        let scores = record.scores();
        Ok(Self {
            id: record.id.clone(),
            source: record.source.clone(),
            prompt: record.prompt.clone(),
            responses: record.responses.iter().map(|r| r.text.clone()).collect(),
            labels: lookahead_data::label_targets(&scores, threshold),
            quality: data
                .scaled_scores(record)?
                .into_iter()
                .map(|q| q as f32)
                .collect(),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("no training examples")]
    Empty,
    #[error("example {id} has {got} responses/labels for a pool of {want}")]
    Shape { id: String, got: usize, want: usize },
    #[error("invalid hyper-parameters: {0}")]
    Hyper(String),
    #[error(transparent)]
    States(#[from] StateCacheError),
    #[error(transparent)]
    Backbone(#[from] crate::backbone::BackboneError),
    #[error(transparent)]
    Tokens(#[from] crate::mlm::MlmTokenError),
    #[error("training: {0}")]
    Tensor(#[from] candle_core::Error),
}

impl TrainError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            TrainError::Empty => "empty",
            TrainError::Shape { .. } => "shape",
            TrainError::Hyper(_) => "hyper",
            TrainError::States(_) => "states",
            TrainError::Backbone(_) => "backbone",
            TrainError::Tokens(_) => "tokens",
            TrainError::Tensor(_) => "tensor",
        }
    }
}

/// Everything one training run needs.
pub struct TrainRequest<'a> {
    pub method: Method,
    pub hyper: HyperParams,
    pub models: Vec<String>,
    pub sources: Vec<String>,
    pub train: &'a [Example],
    pub valid: &'a [Example],
    /// Held-out records scored after training (a CV fold or the test split), if any.
    pub test: Option<&'a [Example]>,
    pub holdout: String,
    pub states_root: PathBuf,
    pub progress: bool,
}

/// A trained router: what goes into the artifact.
pub struct Trained {
    pub meta: RouterMeta,
    pub tensors: HashMap<String, Tensor>,
}

fn check(req: &TrainRequest, backbone: &Backbone) -> Result<(), TrainError> {
    if req.train.is_empty() {
        return Err(TrainError::Empty);
    }
    let p = req.models.len();
    for e in req
        .train
        .iter()
        .chain(req.valid)
        .chain(req.test.unwrap_or(&[]))
    {
        let got = e.labels.len().min(e.quality.len()).min(e.responses.len());
        if got != p || e.labels.len() != p || e.quality.len() != p || e.responses.len() != p {
            return Err(TrainError::Shape {
                id: e.id.clone(),
                got,
                want: p,
            });
        }
    }
    let hp = &req.hyper;
    // Lite, MLC and kNN run on cached BERT states; ModernBERT backbones serve MLM.
    let layers = backbone
        .bert(match req.method {
            Method::Knn => "--method knn",
            Method::Mlc => "--method mlc",
            _ => "--method lite",
        })?
        .layers
        .len();
    if req.method != Method::Knn && hp.frozen_layers + hp.trainable_layers > layers {
        return Err(TrainError::Hyper(format!(
            "frozen ({}) + trainable ({}) layers exceed the backbone's {layers}",
            hp.frozen_layers, hp.trainable_layers
        )));
    }
    if hp.frozen_layers > layers || hp.batch_size == 0 || hp.max_prompt_tokens < 2 {
        return Err(TrainError::Hyper(
            "need frozen_layers <= backbone layers, batch_size >= 1, max_prompt_tokens >= 2".into(),
        ));
    }
    Ok(())
}

/// Trains a router; states of the frozen layers come from (and go to) the on-disk cache.
pub fn train_router(backbone: &Backbone, req: &TrainRequest) -> Result<Trained, TrainError> {
    if req.method == Method::Mlm {
        // End to end on token ids (no state cache).
        let device = backbone.encoder.device().clone();
        return crate::mlm_router::train_mlm(backbone, req, &device);
    }
    check(req, backbone)?;
    let started = Instant::now();
    let hp = &req.hyper;
    let mut cache = StateCache::open(&req.states_root, &backbone.hash, hp.frozen_layers)?;
    let prompt_kind = TextKind::Prompt {
        max_tokens: hp.max_prompt_tokens,
    };
    let resp_kind = TextKind::Response { k: hp.slot_tokens };
    let test = req.test.unwrap_or(&[]);
    let mut texts: Vec<(TextKind, &str)> = req
        .train
        .iter()
        .chain(req.valid)
        .chain(test)
        .map(|e| (prompt_kind, e.prompt.as_str()))
        .collect();
    if req.method == Method::Lite {
        // Only training responses are ever looked at.
        for e in req.train {
            texts.extend(e.responses.iter().map(|r| (resp_kind, r.as_str())));
        }
    }
    let encoded = cache.ensure(backbone, &texts, req.progress)?;
    tracing::info!(encoded, cached = cache.len(), "frozen-layer states ready");

    let (tensors, valid, test_metrics, best_epoch) = match req.method {
        Method::Knn => train_knn(backbone, &cache, req)?,
        Method::Lite | Method::Mlc => train_upper(backbone, &cache, req)?,
        Method::Mlm | Method::Clm => {
            return Err(TrainError::Hyper(
                "MLM/CLM train end to end (train_mlm / train_clm), without the state cache".into(),
            ))
        }
    };
    let meta = RouterMeta {
        format_version: FORMAT_VERSION,
        method: req.method,
        models: req.models.clone(),
        pool_fingerprint: fingerprint_models(&req.models),
        backbone: BackboneInfo {
            sha256: backbone.hash.clone(),
            hidden_size: backbone.encoder.hidden_size(),
            layers: backbone.encoder.num_layers(),
            kind: backbone.encoder.kind().into(),
        },
        hyper: hp.clone(),
        sources: req.sources.clone(),
        validation: valid,
        test: test_metrics,
        best_epoch,
        train_examples: req.train.len(),
        train_seconds: started.elapsed().as_secs_f64(),
        holdout: req.holdout.clone(),
    };
    Ok(Trained { meta, tensors })
}

type Outcome = (HashMap<String, Tensor>, Metrics, Option<Metrics>, usize);

fn prompt_states<'c>(
    cache: &'c StateCache,
    examples: &[Example],
    kind: TextKind,
) -> Result<Vec<&'c Tensor>, TrainError> {
    examples
        .iter()
        .map(|e| {
            cache.get(&state_key(kind, &e.prompt)).ok_or_else(|| {
                TrainError::Tensor(candle_core::Error::Msg(format!(
                    "state cache lost the prompt of {}",
                    e.id
                )))
            })
        })
        .collect()
}

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
        out.push(mean_pool(&x, &batch.prompt_keep)?);
    }
    Ok(Tensor::cat(&out, 0)?)
}

fn train_knn(
    backbone: &Backbone,
    cache: &StateCache,
    req: &TrainRequest,
) -> Result<Outcome, TrainError> {
    let hp = &req.hyper;
    let kind = TextKind::Prompt {
        max_tokens: hp.max_prompt_tokens,
    };
    let emb = pooled_embeddings(
        backbone,
        &prompt_states(cache, req.train, kind)?,
        hp.frozen_layers,
    )?;
    let p = req.models.len();
    let scores: Vec<f32> = req
        .train
        .iter()
        .flat_map(|e| e.quality.iter().map(|q| q / 100.0))
        .collect();
    let scores = Tensor::from_vec(scores, (req.train.len(), p), &Device::Cpu)?;
    let knn = KnnIndex::new(&emb, scores.clone(), hp.knn_k)?;
    let mut eval = |examples: &[Example]| -> Result<Metrics, TrainError> {
        if examples.is_empty() {
            return Ok(Metrics::default());
        }
        let e = pooled_embeddings(
            backbone,
            &prompt_states(cache, examples, kind)?,
            hp.frozen_layers,
        )?;
        Ok(metrics(&knn.predict(&e)?, examples, &req.models, None))
    };
    let valid = eval(req.valid)?;
    let test = req.test.map(&mut eval).transpose()?;
    let mut tensors = HashMap::new();
    tensors.insert("knn.embeddings".to_string(), knn.embeddings.clone());
    tensors.insert("knn.scores".to_string(), scores);
    Ok((tensors, valid, test, 0))
}

/// Standard normal samples (Box–Muller) from a seeded generator.
fn randn(rng: &mut StdRng, n: usize, std: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let u1: f32 = rng.random_range(f32::EPSILON..1.0);
            let u2: f32 = rng.random();
            std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
        })
        .collect()
}

/// Seeds the fresh (non-backbone) parameters deterministically, with informed starting points:
/// identity embeddings = each model's mean response state, routing bias = logit of its positive
/// rate.
fn seed_fresh_params(
    varmap: &VarMap,
    req: &TrainRequest,
    cache: &StateCache,
    h: usize,
    rng: &mut StdRng,
) -> Result<(), TrainError> {
    let hp = &req.hyper;
    let p = req.models.len();
    let dev = Device::Cpu;
    let mut init: Vec<(String, Tensor)> = Vec::new();
    let n = req.train.len() as f32;
    let bias: Vec<f32> = (0..p)
        .map(|j| {
            let rate = (req.train.iter().map(|e| e.labels[j]).sum::<f32>() / n).clamp(0.02, 0.98);
            (rate / (1.0 - rate)).ln()
        })
        .collect();
    match req.method {
        Method::Lite => {
            let kind = TextKind::Response { k: hp.slot_tokens };
            let mut identity = Vec::with_capacity(p * h);
            for j in 0..p {
                let mut sum = Tensor::zeros(h, DType::F32, &dev)?;
                let mut count = 0usize;
                for e in req.train.iter().take(512) {
                    if let Some(s) = cache.get(&state_key(kind, &e.responses[j])) {
                        if s.dim(0)? > 0 {
                            sum = (sum + s.to_dtype(DType::F32)?.sum(0)?)?;
                            count += s.dim(0)?;
                        }
                    }
                }
                let mean = (sum / count.max(1) as f64)?.to_vec1::<f32>()?;
                let noise = randn(rng, h, 0.02);
                identity.extend(mean.iter().zip(noise).map(|(m, z)| m + z));
            }
            let k = hp.slot_tokens;
            init.push(("identity".into(), Tensor::from_vec(identity, (p, h), &dev)?));
            init.push((
                "slot_pos".into(),
                Tensor::from_vec(randn(rng, (1 + k) * h, 0.02), (1 + k, h), &dev)?,
            ));
            init.push((
                "route.weight".into(),
                Tensor::from_vec(randn(rng, p * h, 0.02), (p, h), &dev)?,
            ));
            init.push(("route.bias".into(), Tensor::from_vec(bias, p, &dev)?));
            init.push((
                "route_slot.weight".into(),
                Tensor::from_vec(randn(rng, h, 0.02), (1, h), &dev)?,
            ));
            init.push((
                "route_slot.bias".into(),
                Tensor::zeros(1, DType::F32, &dev)?,
            ));
            let std = (1.0 / h as f32).sqrt();
            init.push((
                "recon.weight".into(),
                Tensor::from_vec(randn(rng, h * h, std), (h, h), &dev)?,
            ));
            init.push(("recon.bias".into(), Tensor::zeros(h, DType::F32, &dev)?));
        }
        Method::Mlc => {
            init.push((
                "route.weight".into(),
                Tensor::from_vec(randn(rng, p * h, 0.02), (p, h), &dev)?,
            ));
            init.push(("route.bias".into(), Tensor::from_vec(bias, p, &dev)?));
        }
        Method::Knn | Method::Mlm | Method::Clm => {}
    }
    let mut data = varmap
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("varmap lock poisoned".into()))?;
    for (name, t) in init {
        data.insert(name, candle_core::Var::from_tensor(&t)?);
    }
    Ok(())
}

/// Scores examples from cached prompt states, fully masked (exactly the inference path).
pub fn predict_cached(
    model: &UpperModel,
    states: &[&Tensor],
) -> Result<(Vec<Vec<f32>>, Vec<Tensor>), TrainError> {
    let mut probs = Vec::with_capacity(states.len());
    let mut logits = Vec::new();
    for chunk in states.chunks(64) {
        let batch = stack_states(chunk, None, 0, &Device::Cpu)?;
        let out = model.forward(&batch.prompt, &batch.prompt_keep, None, Mode::Inference)?;
        probs.extend(candle_nn::ops::sigmoid(&out.logits)?.to_vec2::<f32>()?);
        logits.push(out.logits);
    }
    Ok((probs, logits))
}

fn evaluate_upper(
    model: &UpperModel,
    cache: &StateCache,
    examples: &[Example],
    models: &[String],
    kind: TextKind,
) -> Result<Metrics, TrainError> {
    if examples.is_empty() {
        return Ok(Metrics::default());
    }
    let states = prompt_states(cache, examples, kind)?;
    let (probs, logits) = predict_cached(model, &states)?;
    let logits = Tensor::cat(&logits, 0)?;
    let labels: Vec<f32> = examples.iter().flat_map(|e| e.labels.clone()).collect();
    let labels = Tensor::from_vec(labels, logits.shape(), &Device::Cpu)?;
    let bce = crate::ops::bce_with_logits(&logits, &labels)?.to_scalar::<f32>()?;
    Ok(metrics(&probs, examples, models, Some(f64::from(bce))))
}

fn train_upper(
    backbone: &Backbone,
    cache: &StateCache,
    req: &TrainRequest,
) -> Result<Outcome, TrainError> {
    let hp = &req.hyper;
    let dev = Device::Cpu;
    let p = req.models.len();
    let bert = backbone.bert("lite/MLC")?;
    let h = bert.config.hidden_size;
    let mut rng = StdRng::seed_from_u64(hp.seed);
    let varmap = VarMap::new();
    seed_upper_from_backbone(
        &varmap,
        &backbone.tensors,
        hp.frozen_layers,
        hp.trainable_layers,
    )?;
    seed_fresh_params(&varmap, req, cache, h, &mut rng)?;
    let kind = if req.method == Method::Lite {
        UpperKind::Lite
    } else {
        UpperKind::Mlc
    };
    let shape = UpperShape {
        kind,
        frozen_layers: hp.frozen_layers,
        trainable_layers: hp.trainable_layers,
        slot_tokens: hp.slot_tokens,
        models: p,
    };
    let model = UpperModel::new(
        VarBuilder::from_varmap(&varmap, DType::F32, &dev),
        &bert.config,
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
    let prompt_kind = TextKind::Prompt {
        max_tokens: hp.max_prompt_tokens,
    };
    let resp_kind = TextKind::Response { k: hp.slot_tokens };
    let train_prompts = prompt_states(cache, req.train, prompt_kind)?;
    let empty = Tensor::zeros((0, h), DType::F16, &dev)?;
    let steps_per_epoch = req.train.len().div_ceil(hp.batch_size);
    let total_steps = steps_per_epoch * hp.max_epochs.max(1);
    let schedule = LrSchedule::new(hp.learning_rate, total_steps, Decay::Linear { floor: 0.05 });
    let bar = progress_bar(req.progress, total_steps, "training");
    let mut stopping = EarlyStopping::new(hp.patience);
    let mut step = 0usize;
    let mut order: Vec<usize> = (0..req.train.len()).collect();
    for epoch in 1..=hp.max_epochs.max(1) {
        order.shuffle(&mut rng);
        let (mut sum_bce, mut sum_rec, mut n) = (0f64, 0f64, 0usize);
        for idx in order.chunks(hp.batch_size) {
            opt.set_learning_rate(schedule.at(step));
            let prompts: Vec<&Tensor> = idx.iter().map(|&i| train_prompts[i]).collect();
            let responses: Option<Vec<Vec<&Tensor>>> = (kind == UpperKind::Lite).then(|| {
                idx.iter()
                    .map(|&i| {
                        req.train[i]
                            .responses
                            .iter()
                            .map(|r| cache.get(&state_key(resp_kind, r)).unwrap_or(&empty))
                            .collect()
                    })
                    .collect()
            });
            let batch = stack_states(&prompts, responses.as_deref(), hp.slot_tokens, &dev)?;
            let labels: Vec<f32> = idx
                .iter()
                .flat_map(|&i| req.train[i].labels.clone())
                .collect();
            let labels = Tensor::from_vec(labels, (idx.len(), p), &dev)?;
            let rate = mask_rate(step, total_steps, hp.mask_start, hp.mask_warm_fraction);
            let l = match (&batch.responses, &batch.resp_keep) {
                (Some(resp), Some(keep)) => {
                    let visible = crate::lite::visible_positions(keep, rate)?;
                    let out = model.forward(
                        &batch.prompt,
                        &batch.prompt_keep,
                        Some((resp, &visible)),
                        Mode::Train,
                    )?;
                    loss(&out, &labels, Some((resp, keep, &visible)), hp.lambda)?
                }
                _ => {
                    let out =
                        model.forward(&batch.prompt, &batch.prompt_keep, None, Mode::Train)?;
                    loss(&out, &labels, None, 0.0)?
                }
            };
            opt.backward_step(&l.total)?;
            sum_bce += f64::from(l.bce);
            sum_rec += f64::from(l.reconstruction);
            n += 1;
            step += 1;
            bar.inc(1);
            if step.is_multiple_of(10) {
                bar.set_message(format!(
                    "epoch {epoch} bce {:.4} rec {:.4} mask {rate:.2}",
                    sum_bce / n as f64,
                    sum_rec / n as f64
                ));
            }
        }
        let valid = evaluate_upper(&model, cache, req.valid, &req.models, prompt_kind)?;
        tracing::info!(
            epoch,
            train_bce = sum_bce / n.max(1) as f64,
            train_rec = sum_rec / n.max(1) as f64,
            valid_router = valid.router,
            valid_bce = valid.bce,
            "epoch done"
        );
        bar.println(format!(
            "epoch {epoch}: train bce {:.4} rec {:.4} | valid router {:.2} (oracle {:.2}, best single {:.2}) bce {:.4}",
            sum_bce / n.max(1) as f64,
            sum_rec / n.max(1) as f64,
            valid.router,
            valid.oracle,
            valid.best_single,
            valid.bce.unwrap_or(f64::NAN)
        ));
        if !stopping.observe(epoch, valid, &varmap)? {
            break;
        }
    }
    bar.finish_and_clear();
    let best = stopping.into_best()?;
    let (best_epoch, tensors, valid) = (best.epoch, best.tensors, best.validation);
    let test = match req.test {
        Some(test) if !test.is_empty() => {
            let vb = VarBuilder::from_tensors(to_device(&tensors, &dev)?, DType::F32, &dev);
            let best_model = UpperModel::new(vb, &bert.config, shape)?;
            Some(evaluate_upper(
                &best_model,
                cache,
                test,
                &req.models,
                prompt_kind,
            )?)
        }
        _ => None,
    };
    Ok((tensors, valid, test, best_epoch))
}

/// Router / oracle / best-single quality (0..100) of argmax decisions on `examples`.
pub fn metrics(
    predictions: &[Vec<f32>],
    examples: &[Example],
    models: &[String],
    bce: Option<f64>,
) -> Metrics {
    let mut per_source: std::collections::BTreeMap<String, (usize, f64, f64, Vec<f64>)> =
        Default::default();
    let p = examples.first().map(|e| e.quality.len()).unwrap_or(0);
    let mut totals = vec![0f64; p];
    let (mut router, mut oracle) = (0f64, 0f64);
    for (pred, e) in predictions.iter().zip(examples) {
        let chosen = crate::artifact::select(pred, None, 0.0).unwrap_or(0);
        let q = f64::from(e.quality[chosen]);
        let best = e.quality.iter().copied().fold(f32::MIN, f32::max) as f64;
        router += q;
        oracle += best;
        let s = per_source
            .entry(e.source.clone())
            .or_insert_with(|| (0, 0.0, 0.0, vec![0.0; p]));
        s.0 += 1;
        s.1 += q;
        s.2 += best;
        for (j, v) in e.quality.iter().enumerate() {
            totals[j] += f64::from(*v);
            s.3[j] += f64::from(*v);
        }
    }
    let n = examples.len().max(1) as f64;
    let (best_j, best_total) =
        totals.iter().enumerate().fold(
            (0, f64::MIN),
            |acc, (j, &t)| if t > acc.1 { (j, t) } else { acc },
        );
    Metrics {
        examples: examples.len(),
        router: router / n,
        oracle: oracle / n,
        best_single_model: models.get(best_j).cloned().unwrap_or_default(),
        best_single: if p == 0 { 0.0 } else { best_total / n },
        bce,
        per_source: per_source
            .into_iter()
            .map(|(k, (cnt, r, o, tot))| {
                let c = cnt as f64;
                let bs = tot.iter().copied().fold(f64::MIN, f64::max) / c;
                (
                    k,
                    SourceMetrics {
                        examples: cnt,
                        router: r / c,
                        oracle: o / c,
                        best_single: bs,
                    },
                )
            })
            .collect(),
    }
}
