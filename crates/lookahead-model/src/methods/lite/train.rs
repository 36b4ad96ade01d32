//! Training the lite router and the MLC baseline on cached frozen-layer states: upper layers
//! seeded from the backbone, fresh heads seeded from the data, then the shared epoch loop
//! ([`crate::fit::fit`]) with a linear-decay schedule.

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::foresight::{foresight, ResponseConstant};
use super::model::{
    loss, seed_upper_from_backbone, stack_states, visible_positions, RecLoss, UpperKind,
    UpperModel, UpperOutput, UpperShape,
};
use crate::artifact::{BackboneInfo, Method, Metrics, SlotDesign};
use crate::backbones::bert::BertConfig;
use crate::backbones::encoder_dir::Backbone;
use crate::fit::{
    fit, mask_rate, scored_metrics, to_device, BatchLoss, Decay, Example, FitSettings, Step,
    TrainError, TrainRequest, Trained, Trainee,
};
use crate::kernels::ops::Mode;
use crate::methods::cached::{
    cached_states, check_request, prompt_kind, prompt_states, response_kind,
};
use crate::methods::ngram::head::{fit_head, WideHead};
use crate::methods::ngram::model::PREFIX as WIDE_PREFIX;
use crate::methods::prior_logits;
use crate::states::{state_key, StateCache};

/// Trains a lite or MLC router (`req.method`); the frozen layers' states come from (and go to)
/// the on-disk cache.
pub fn train(backbone: &Backbone, req: &TrainRequest) -> Result<Trained, TrainError> {
    check_request(req, backbone)?;
    let started = Instant::now();
    let cache = cached_states(backbone, req)?;
    let hp = &req.hyper;
    let bert = backbone.bert("lite/MLC")?;
    let mut rng = StdRng::seed_from_u64(hp.seed);
    let varmap = VarMap::new();
    seed_upper_from_backbone(
        &varmap,
        &backbone.tensors,
        hp.frozen_layers,
        hp.trainable_layers,
    )?;
    let h = bert.config.hidden_size;
    let constant = (req.method == Method::Lite && hp.lambda > 0.0)
        .then(|| ResponseConstant::fit(req.train, &cache, response_kind(hp), h))
        .transpose()?;
    let fresh = FreshParams {
        cache: &cache,
        h,
        constant: constant.as_ref(),
    };
    seed_fresh_params(&varmap, req, &fresh, &mut rng)?;
    let wide = hp.wide.then(|| fit_head(req));
    let trainee = LiteTrainee::new(req, &cache, &bert.config, varmap, wide, constant)?;
    let settings = FitSettings {
        hyper: hp,
        examples: req.train.len(),
        decay: Decay::Linear { floor: 0.05 },
        label: "training",
        auxiliary: "rec",
        message_every: 10,
        progress: req.progress,
        deadline: req.deadline,
    };
    let mut fitted = fit(&trainee, &settings, &mut rng)?;
    if let Some(wide) = &trainee.wide {
        let tensors = wide
            .model
            .to_tensors(WIDE_PREFIX)
            .map_err(|e| TrainError::Hyper(e.to_string()))?;
        fitted.tensors.extend(tensors);
    }
    let mut trained = Trained::new(req, hp.clone(), BackboneInfo::of(backbone), fitted, started);
    trained.meta.ngram_strength = trainee.wide.as_ref().map(|w| f64::from(w.strength));
    Ok(trained)
}

/// The shape of the router `req` trains.
fn shape_of(req: &TrainRequest) -> UpperShape {
    let hp = &req.hyper;
    UpperShape {
        kind: if req.method == Method::Lite {
            UpperKind::Lite
        } else {
            UpperKind::Mlc
        },
        design: hp.slot_design,
        frozen_layers: hp.frozen_layers,
        trainable_layers: hp.trainable_layers,
        slot_tokens: hp.slot_tokens,
        models: req.models.len(),
    }
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

/// A `shape` tensor of `randn` samples.
fn randn_tensor(rng: &mut StdRng, shape: (usize, usize), std: f32) -> Result<Tensor, TrainError> {
    let v = randn(rng, shape.0 * shape.1, std);
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

/// Each model's identity embedding: the mean of its cached response states over (up to 512)
/// training examples, plus a little noise.
fn identity_embeddings(
    req: &TrainRequest,
    cache: &StateCache,
    h: usize,
    rng: &mut StdRng,
) -> Result<Tensor, TrainError> {
    let p = req.models.len();
    let kind = response_kind(&req.hyper);
    let mut identity = Vec::with_capacity(p * h);
    for j in 0..p {
        let mut sum = Tensor::zeros(h, DType::F32, &Device::Cpu)?;
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
    Ok(Tensor::from_vec(identity, (p, h), &Device::Cpu)?)
}

/// What the fresh parameters' starting points are computed from.
struct FreshParams<'a> {
    cache: &'a StateCache,
    h: usize,
    constant: Option<&'a ResponseConstant>,
}

/// Seeds the fresh (non-backbone) parameters deterministically, with informed starting points:
/// identity embeddings = each model's mean response state, routing bias = logit of its positive
/// rate.
fn seed_fresh_params(
    varmap: &VarMap,
    req: &TrainRequest,
    fresh: &FreshParams,
    rng: &mut StdRng,
) -> Result<(), TrainError> {
    let (cache, h) = (fresh.cache, fresh.h);
    let p = req.models.len();
    let dev = Device::Cpu;
    // With a wide head its bias already starts at the prior: the sum must start there too.
    let bias = if req.hyper.wide {
        Tensor::zeros(p, DType::F32, &dev)?
    } else {
        Tensor::from_vec(prior_logits(req.train, p), p, &dev)?
    };
    let mut init: Vec<(&str, Tensor)> = Vec::new();
    match req.method {
        Method::Lite => {
            let k = req.hyper.slot_tokens;
            init.push(("identity", identity_embeddings(req, cache, h, rng)?));
            // Asymmetric: positions at the scale of the states' variation, so masked positions
            // stay distinguishable (at 0.02 they were ~30x smaller than the states).
            let pos_std = match (req.hyper.slot_design, fresh.constant) {
                (SlotDesign::Asymmetric, Some(c)) => c.scale as f32,
                _ => 0.02,
            };
            init.push(("slot_pos", randn_tensor(rng, (1 + k, h), pos_std)?));
            init.push(("route.weight", randn_tensor(rng, (p, h), 0.02)?));
            init.push(("route.bias", bias));
            // Asymmetric: the slot head starts at zero, so lite starts as MLC.
            let slot_head = match req.hyper.slot_design {
                SlotDesign::Joint => randn_tensor(rng, (1, h), 0.02)?,
                SlotDesign::Asymmetric => Tensor::zeros((1, h), DType::F32, &dev)?,
            };
            init.push(("route_slot.weight", slot_head));
            init.push(("route_slot.bias", Tensor::zeros(1, DType::F32, &dev)?));
            // Asymmetric: the head starts at the per-(model, position) mean (zero, centred).
            let recon = match req.hyper.slot_design {
                SlotDesign::Joint => randn_tensor(rng, (h, h), (1.0 / h as f32).sqrt())?,
                SlotDesign::Asymmetric => Tensor::zeros((h, h), DType::F32, &dev)?,
            };
            init.push(("recon.weight", recon));
            init.push(("recon.bias", Tensor::zeros(h, DType::F32, &dev)?));
        }
        Method::Mlc => {
            init.push(("route.weight", randn_tensor(rng, (p, h), 0.02)?));
            init.push(("route.bias", bias));
        }
        Method::Knn | Method::Mlm | Method::Clm | Method::Ngram | Method::Ensemble => {}
    }
    let mut data = varmap
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("varmap lock poisoned".into()))?;
    for (name, t) in init {
        data.insert(name.to_string(), candle_core::Var::from_tensor(&t)?);
    }
    Ok(())
}

/// Scores examples from cached prompt states, fully masked (exactly the inference path), with
/// the wide head's logits (`[examples, P]`) added when there is one.
pub fn predict_cached(
    model: &UpperModel,
    states: &[&Tensor],
    wide: Option<&Tensor>,
) -> Result<(Vec<Vec<f32>>, Vec<Tensor>), TrainError> {
    let mut probs = Vec::with_capacity(states.len());
    let mut logits = Vec::new();
    for (i, chunk) in states.chunks(64).enumerate() {
        let batch = stack_states(chunk, None, 0, &Device::Cpu)?;
        let out = model.forward(&batch.prompt, &batch.prompt_keep, None, Mode::Inference)?;
        let z = match wide {
            Some(w) => (out.logits + w.narrow(0, i * 64, chunk.len())?)?,
            None => out.logits,
        };
        probs.extend(candle_nn::ops::sigmoid(&z)?.to_vec2::<f32>()?);
        logits.push(z);
    }
    Ok((probs, logits))
}

/// Rows of logits as a `[rows, P]` tensor.
fn logits_tensor(rows: &[Vec<f32>], p: usize) -> Result<Tensor, TrainError> {
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    Ok(Tensor::from_vec(flat, (rows.len(), p), &Device::Cpu)?)
}

/// The lite/MLC model under training, over cached states.
struct LiteTrainee<'a> {
    req: &'a TrainRequest<'a>,
    cache: &'a StateCache,
    config: &'a BertConfig,
    shape: UpperShape,
    varmap: VarMap,
    model: UpperModel,
    train_prompts: Vec<&'a Tensor>,
    /// Stands in for a response missing from the cache.
    empty: Tensor,
    /// The wide n-gram head, when the router has one, and its cross-fitted training logits.
    wide: Option<WideHead>,
    wide_train: Option<Tensor>,
    /// Lite with a response objective: the constant its foresight is measured against.
    constant: Option<ResponseConstant>,
}

impl<'a> LiteTrainee<'a> {
    fn new(
        req: &'a TrainRequest<'a>,
        cache: &'a StateCache,
        config: &'a BertConfig,
        varmap: VarMap,
        wide: Option<WideHead>,
        constant: Option<ResponseConstant>,
    ) -> Result<Self, TrainError> {
        let shape = shape_of(req);
        let wide_train = wide
            .as_ref()
            .map(|w| logits_tensor(&w.train_logits, req.models.len()))
            .transpose()?;
        let dev = Device::Cpu;
        let model = UpperModel::new(
            VarBuilder::from_varmap(&varmap, DType::F32, &dev),
            config,
            shape,
        )?;
        Ok(Self {
            req,
            cache,
            config,
            shape,
            varmap,
            model,
            train_prompts: prompt_states(cache, req.train, prompt_kind(req))?,
            empty: Tensor::zeros((0, config.hidden_size), DType::F16, &dev)?,
            wide,
            wide_train,
            constant,
        })
    }

    /// `out` with the batch's cross-fitted wide logits added.
    fn with_wide(&self, mut out: UpperOutput, idx: &[usize]) -> Result<UpperOutput, TrainError> {
        if let Some(w) = &self.wide_train {
            let rows: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
            let rows = Tensor::new(rows.as_slice(), &Device::Cpu)?;
            out.logits = (out.logits + w.index_select(&rows, 0)?)?;
        }
        Ok(out)
    }

    fn evaluate(&self, model: &UpperModel, examples: &[Example]) -> Result<Metrics, TrainError> {
        if examples.is_empty() {
            return Ok(Metrics::default());
        }
        let states = prompt_states(self.cache, examples, prompt_kind(self.req))?;
        let wide = self
            .wide
            .as_ref()
            .map(|w| logits_tensor(&w.logits(examples), self.req.models.len()))
            .transpose()?;
        let (probs, logits) = predict_cached(model, &states, wide.as_ref())?;
        let mut metrics = scored_metrics(
            &probs,
            &Tensor::cat(&logits, 0)?,
            examples,
            &self.req.models,
        )?;
        if let Some(constant) = &self.constant {
            let kind = prompt_kind(self.req);
            let rec = RecLoss::of(self.shape.design);
            let kinds = (kind, response_kind(&self.req.hyper));
            let f = foresight(model, self.cache, examples, kinds, constant, rec)?;
            metrics.foresight = Some(f);
        }
        Ok(metrics)
    }
}

impl Trainee for LiteTrainee<'_> {
    fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    fn batch_loss(&self, idx: &[usize], step: Step) -> Result<BatchLoss, TrainError> {
        let (req, hp, dev) = (self.req, &self.req.hyper, Device::Cpu);
        let resp_kind = response_kind(hp);
        let prompts: Vec<&Tensor> = idx.iter().map(|&i| self.train_prompts[i]).collect();
        let responses: Option<Vec<Vec<&Tensor>>> =
            (self.shape.kind == UpperKind::Lite).then(|| {
                idx.iter()
                    .map(|&i| {
                        req.train[i]
                            .responses
                            .iter()
                            .map(|r| {
                                let key = state_key(resp_kind, r);
                                self.cache.get(&key).unwrap_or(&self.empty)
                            })
                            .collect()
                    })
                    .collect()
            });
        let batch = stack_states(&prompts, responses.as_deref(), hp.slot_tokens, &dev)?;
        let labels: Vec<f32> = idx
            .iter()
            .flat_map(|&i| req.train[i].labels.clone())
            .collect();
        let labels = Tensor::from_vec(labels, (idx.len(), req.models.len()), &dev)?;
        let rate = mask_rate(step.index, step.total, hp.mask_start, hp.mask_warm_fraction);
        let (prompt, keep) = (&batch.prompt, &batch.prompt_keep);
        let l = match (&batch.responses, &batch.resp_keep) {
            (Some(resp), Some(resp_keep)) => {
                let visible = visible_positions(resp_keep, rate)?;
                let out = self
                    .model
                    .forward(prompt, keep, Some((resp, &visible)), Mode::Train)?;
                let out = self.with_wide(out, idx)?;
                let rec = RecLoss::of(self.shape.design);
                let target = match (&self.constant, rec) {
                    (Some(c), RecLoss::Mse) => c.centre(resp)?,
                    _ => resp.clone(),
                };
                let targets = Some((&target, resp_keep, &visible));
                loss(&out, &labels, targets, hp.lambda, rec)?
            }
            _ => {
                let out = self.model.forward(prompt, keep, None, Mode::Train)?;
                let out = self.with_wide(out, idx)?;
                loss(&out, &labels, None, 0.0, RecLoss::Cosine)?
            }
        };
        Ok(BatchLoss {
            total: l.total,
            routing: l.bce,
            auxiliary: l.reconstruction,
            mask_rate: Some(rate),
        })
    }

    fn validate(&self) -> Result<Metrics, TrainError> {
        self.evaluate(&self.model, self.req.valid)
    }

    fn test(&self, best: &HashMap<String, Tensor>) -> Result<Option<Metrics>, TrainError> {
        let Some(test) = self.req.test.filter(|t| !t.is_empty()) else {
            return Ok(None);
        };
        let dev = Device::Cpu;
        let vb = VarBuilder::from_tensors(to_device(best, &dev)?, DType::F32, &dev);
        let best_model = UpperModel::new(vb, self.config, self.shape)?;
        Ok(Some(self.evaluate(&best_model, test)?))
    }
}
