//! Training and serving Lookahead-CLM ([`crate::clm`]) on the GGUF decoder ([`crate::gguf`]).
//! Same artifact format as every router: `router.safetensors` holds the trainable tensors, the
//! frozen ones come from the (hash-checked) GGUF file; `router.json` records `method: clm` and the
//! decoder's hash as the backbone.

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
use crate::clm::{build_batch, seed_from_decoder, ClmModel, ClmShape, ClmSpecial, CLM_LOSS_WEIGHT};
use crate::fit::{progress_bar, to_device, Decay, EarlyStopping, LrSchedule};
use crate::gguf::{default_decoder_dir, gguf_path, Decoder};
use crate::scorer::{ScoreError, Scorer};
use crate::train::{metrics, Example, TrainError, TrainRequest, Trained};

fn special(dec: &Decoder) -> ClmSpecial {
    ClmSpecial {
        eos: dec.eos,
        placeholder: dec.bos.unwrap_or(dec.eos),
    }
}

fn encode(dec: &Decoder, text: &str, max: usize) -> Result<Vec<u32>, String> {
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

fn evaluate(
    model: &ClmModel,
    prompts: &[Vec<u32>],
    examples: &[Example],
    models: &[String],
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
    let logits = Tensor::stack(&logits, 0)?;
    let labels: Vec<f32> = examples.iter().flat_map(|e| e.labels.clone()).collect();
    let labels = Tensor::from_vec(labels, logits.shape(), &Device::Cpu)?;
    let bce = crate::ops::bce_with_logits(&logits, &labels)?.to_scalar::<f32>()?;
    Ok(metrics(&probs, examples, models, Some(f64::from(bce))))
}

/// Trains Lookahead-CLM on `device` (the decoder must live there too). `slot_tokens` is the
/// number of response tokens kept per candidate.
pub fn train_clm(
    dec: &Decoder,
    req: &TrainRequest,
    device: &Device,
) -> Result<Trained, TrainError> {
    if req.train.is_empty() {
        return Err(TrainError::Empty);
    }
    let started = Instant::now();
    let layers = dec.llama.config.layers;
    let mut hp = req.hyper.clone();
    if hp.trainable_layers == 0 || hp.trainable_layers > layers || hp.batch_size == 0 {
        return Err(TrainError::Hyper(format!(
            "--trainable-layers must be 1..={layers} and batch size >= 1"
        )));
    }
    hp.frozen_layers = layers - hp.trainable_layers;
    hp.lambda = CLM_LOSS_WEIGHT;
    let p = req.models.len();
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
    let shape = ClmShape {
        models: p,
        response_tokens: hp.slot_tokens,
        trainable_layers: hp.trainable_layers,
    };
    let sp = special(dec);
    let prompts = |ex: &[Example]| -> Result<Vec<Vec<u32>>, TrainError> {
        ex.iter()
            .map(|e| encode(dec, &e.prompt, hp.max_prompt_tokens).map_err(tok_err))
            .collect()
    };
    let train_p = prompts(req.train)?;
    let valid_p = prompts(req.valid)?;
    let test_p = prompts(req.test.unwrap_or(&[]))?;
    let train_r: Vec<Vec<Vec<u32>>> = req
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
    seed_from_decoder(&varmap, &dec.tensors, layers, shape)?;
    {
        // The shared routing bias starts at the logit of the overall positive rate.
        let total = (req.train.len() * p).max(1) as f32;
        let rate =
            (req.train.iter().flat_map(|e| &e.labels).sum::<f32>() / total).clamp(0.02, 0.98);
        let bias = Tensor::from_vec(vec![(rate / (1.0 - rate)).ln()], 1, device)?;
        varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("varmap lock poisoned".into()))?
            .insert("route.bias".into(), candle_core::Var::from_tensor(&bias)?);
    }
    let model = ClmModel::new(
        &dec.llama,
        VarBuilder::from_varmap(&varmap, DType::F32, device),
        shape,
        sp,
    )?;
    let mut opt = AdamW::new(
        varmap.all_vars(),
        ParamsAdamW {
            lr: hp.learning_rate,
            weight_decay: hp.weight_decay,
            ..Default::default()
        },
    )?;
    let total = train_p.len().div_ceil(hp.batch_size) * hp.max_epochs.max(1);
    let schedule = LrSchedule::new(hp.learning_rate, total, Decay::Cosine);
    let bar = progress_bar(req.progress, total, "clm");
    let mut rng = StdRng::seed_from_u64(hp.seed);
    let mut order: Vec<usize> = (0..train_p.len()).collect();
    let mut stopping = EarlyStopping::new(hp.patience);
    let mut step = 0usize;
    for epoch in 1..=hp.max_epochs.max(1) {
        order.shuffle(&mut rng);
        let (mut sum_bce, mut sum_lm, mut n) = (0f64, 0f64, 0usize);
        for idx in order.chunks(hp.batch_size) {
            opt.set_learning_rate(schedule.at(step));
            let ps: Vec<&[u32]> = idx.iter().map(|&i| train_p[i].as_slice()).collect();
            let rs: Vec<Vec<Vec<u32>>> = idx.iter().map(|&i| train_r[i].clone()).collect();
            let batch = build_batch(&ps, &rs, shape, sp, device)?;
            let labels: Vec<f32> = idx
                .iter()
                .flat_map(|&i| req.train[i].labels.clone())
                .collect();
            let labels = Tensor::from_vec(labels, (idx.len(), p), device)?;
            let (loss, bce, lm) = model.loss(&batch, &labels)?;
            opt.backward_step(&loss)?;
            sum_bce += f64::from(bce);
            sum_lm += f64::from(lm);
            n += 1;
            step += 1;
            bar.inc(1);
            bar.set_message(format!(
                "epoch {epoch} bce {:.4} lm {:.3}",
                sum_bce / n as f64,
                sum_lm / n as f64
            ));
        }
        let v = evaluate(&model, &valid_p, req.valid, &req.models)?;
        bar.println(format!(
            "epoch {epoch}: train bce {:.4} lm ce {:.3} | valid router {:.2} (oracle {:.2}, best single {:.2}) bce {:.4}",
            sum_bce / n.max(1) as f64,
            sum_lm / n.max(1) as f64,
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
    let test = match req.test {
        Some(t) if !t.is_empty() => {
            let vb = VarBuilder::from_tensors(to_device(&tensors, device)?, DType::F32, device);
            let m = ClmModel::new(&dec.llama, vb, shape, sp)?;
            Some(evaluate(&m, &test_p, t, &req.models)?)
        }
        _ => None,
    };
    let meta = RouterMeta {
        format_version: FORMAT_VERSION,
        method: req.method,
        models: req.models.clone(),
        pool_fingerprint: fingerprint_models(&req.models),
        backbone: BackboneInfo {
            sha256: dec.hash.clone(),
            hidden_size: dec.llama.config.hidden_size,
            layers,
            // Recorded for readers; loading identifies the GGUF decoder by its hash.
            kind: BackboneKind::Llama,
        },
        hyper: hp,
        sources: req.sources.clone(),
        validation,
        test,
        best_epoch,
        train_examples: req.train.len(),
        train_seconds: started.elapsed().as_secs_f64(),
        holdout: req.holdout.clone(),
    };
    Ok(Trained { meta, tensors })
}

/// A loaded CLM artifact: per prompt, one prefill and one batched `<Model_t>` step.
pub struct ClmScorer {
    pub meta: RouterMeta,
    decoder: Decoder,
    model: ClmModel,
}

impl ClmScorer {
    /// `decoder_dir`: a directory (or file) with the GGUF decoder; when it holds none (e.g. the
    /// BERT backbone directory every other router uses), [`default_decoder_dir`] is used.
    pub fn load(dir: &Path, decoder_dir: &Path) -> Result<Self, ArtifactError> {
        let meta = RouterMeta::read(dir)?;
        let device = Device::Cpu;
        let ddir = if gguf_path(decoder_dir).is_ok() {
            decoder_dir.to_path_buf()
        } else {
            default_decoder_dir()
        };
        let decoder = Decoder::load(&ddir, &device)?;
        if decoder.hash != meta.backbone.sha256 {
            return Err(ArtifactError::BackboneMismatch {
                expected: meta.backbone.sha256.clone(),
                found: decoder.hash.clone(),
                dir: ddir,
            });
        }
        let tensors = candle_core::safetensors::load(dir.join(TENSORS_FILE), &device)?;
        let shape = ClmShape {
            models: meta.models.len(),
            response_tokens: meta.hyper.slot_tokens,
            trainable_layers: meta.hyper.trainable_layers,
        };
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
        let model = ClmModel::new(&decoder.llama, vb, shape, special(&decoder))?;
        Ok(Self {
            meta,
            decoder,
            model,
        })
    }
}

impl Scorer for ClmScorer {
    fn models(&self) -> &[String] {
        &self.meta.models
    }

    fn score_batch(&self, prompts: &[&str]) -> Result<Vec<Vec<f32>>, ScoreError> {
        prompts
            .iter()
            .map(|p| {
                let ids = encode(&self.decoder, p, self.meta.hyper.max_prompt_tokens)
                    .map_err(ScoreError::Tokenizer)?;
                if ids.is_empty() {
                    return Err(ScoreError::Input("empty prompt".into()));
                }
                self.model
                    .score_cached(&ids)
                    .and_then(|l| candle_nn::ops::sigmoid(&l)?.to_vec1::<f32>())
                    .map_err(|e| ScoreError::Model(e.to_string()))
            })
            .collect()
    }
}
