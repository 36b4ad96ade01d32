//! Lookahead-CLM as published: a small decoder reads `prompt <Model_t> response EOS`, one
//! sequence per candidate; the routing logit is `Linear(hidden -> 1)` on the (final-normed)
//! hidden state at `<Model_t>`; loss = BCE + 0.5 x next-token CE on the response (and its EOS).
//! Inference needs no response: the prompt is prefilled once, then every candidate's `<Model_t>`
//! is one decoding step from a copy of that KV cache (all candidates in one batched step).
//!
//! `<Model_t>` tokens are new embedding rows (`model_tokens`, `[P, H]`). With frozen lower
//! blocks (`--trainable-layers N` below the depth) the frozen blocks see a fixed placeholder token
//! at that position and the row is added to the residual stream where the trainable blocks start,
//! so the frozen blocks run without a backward pass; with every block trainable that is exactly a
//! new input embedding (placeholder embedding + learned row).

use std::collections::HashMap;

use candle_core::{DType, Device, Module, Result, Tensor, Var, D};
use candle_nn::{VarBuilder, VarMap};

use crate::backbones::llama::{KvCache, Llama, LlamaBlock};
use crate::kernels::ops::{self, Mode};
use crate::nn::Linear;

/// Weight of the next-token loss (paper: 0.5).
pub const CLM_LOSS_WEIGHT: f64 = 0.5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClmShape {
    pub models: usize,
    /// Response tokens kept per candidate (EOS appended after them).
    pub response_tokens: usize,
    /// Upper decoder blocks that train; all of them = the token embeddings train too.
    pub trainable_layers: usize,
}

/// Token ids the layout needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClmSpecial {
    pub eos: u32,
    /// What frozen blocks see at the `<Model_t>` position.
    pub placeholder: u32,
}

/// The CLM router: frozen lower blocks, trainable upper blocks, `<Model_t>` rows, routing head.
pub struct ClmModel {
    pub shape: ClmShape,
    pub special: ClmSpecial,
    base: Llama,
    frozen: usize,
    upper: Vec<LlamaBlock>,
    embeddings: Tensor,
    norm: Tensor,
    model_tokens: Tensor,
    route: Linear,
}

/// Copies the trainable part of the decoder into `varmap`: blocks `layers - N..layers`, the final
/// norm, and (when every block trains) the token embeddings.
pub fn seed_from_decoder(
    varmap: &VarMap,
    tensors: &HashMap<String, Tensor>,
    layers: usize,
    shape: ClmShape,
) -> Result<()> {
    let frozen = layers.checked_sub(shape.trainable_layers).ok_or_else(|| {
        candle_core::Error::Msg("more trainable layers than the decoder has".into())
    })?;
    let mut data = varmap
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("varmap lock poisoned".into()))?;
    for (name, t) in tensors {
        let block = name
            .strip_prefix("blk.")
            .and_then(|r| r.split('.').next())
            .and_then(|i| i.parse::<usize>().ok());
        let trainable = match block {
            Some(i) => i >= frozen,
            None => name == "output_norm.weight" || (frozen == 0 && name == "token_embd.weight"),
        };
        if trainable {
            data.insert(name.clone(), Var::from_tensor(&t.copy()?)?);
        }
    }
    Ok(())
}

/// One training batch: `B * P` sequences, candidate-major within each prompt.
pub struct ClmBatch {
    /// `[B * P, S]` token ids (right-padded with EOS).
    pub ids: Tensor,
    /// `[B * P]` position of `<Model_t>` in each sequence.
    pub model_pos: Vec<usize>,
    /// Flat `row * S + pos` of the states that predict a response token (or its EOS), and those
    /// tokens.
    pub lm_rows: Tensor,
    pub lm_targets: Tensor,
    pub prompts: usize,
}

/// Lays out `prompt <Model_t> response[..K] EOS` for every candidate of every prompt.
pub fn build_batch(
    prompts: &[&[u32]],
    responses: &[Vec<Vec<u32>>],
    shape: ClmShape,
    special: ClmSpecial,
    device: &Device,
) -> Result<ClmBatch> {
    let mut seqs: Vec<Vec<u32>> = Vec::new();
    let mut model_pos = Vec::new();
    let mut lm: Vec<(usize, usize, u32)> = Vec::new();
    for (prompt, resp) in prompts.iter().zip(responses) {
        for t in 0..shape.models {
            let r = resp.get(t).map(Vec::as_slice).unwrap_or(&[]);
            let r = &r[..r.len().min(shape.response_tokens)];
            let mut s = prompt.to_vec();
            let m = s.len();
            s.push(special.placeholder);
            s.extend_from_slice(r);
            s.push(special.eos);
            let row = seqs.len();
            for (j, &tok) in r.iter().chain(std::iter::once(&special.eos)).enumerate() {
                lm.push((row, m + j, tok));
            }
            model_pos.push(m);
            seqs.push(s);
        }
    }
    let len = seqs.iter().map(Vec::len).max().unwrap_or(1);
    let flat: Vec<u32> = seqs
        .iter()
        .flat_map(|s| (0..len).map(|i| s.get(i).copied().unwrap_or(special.eos)))
        .collect();
    let rows: Vec<u32> = lm.iter().map(|&(r, p, _)| (r * len + p) as u32).collect();
    let targets: Vec<u32> = lm.iter().map(|&(.., t)| t).collect();
    Ok(ClmBatch {
        ids: Tensor::from_vec(flat, (seqs.len(), len), device)?,
        model_pos,
        lm_rows: Tensor::from_vec(rows.clone(), rows.len(), device)?,
        lm_targets: Tensor::from_vec(targets.clone(), targets.len(), device)?,
        prompts: prompts.len(),
    })
}

impl ClmModel {
    /// `base`: the (frozen) decoder; `vb`: trainable tensors (seeded varmap or artifact).
    pub fn new(base: &Llama, vb: VarBuilder, shape: ClmShape, special: ClmSpecial) -> Result<Self> {
        let cfg = &base.config;
        if shape.trainable_layers > cfg.layers || shape.models == 0 {
            candle_core::bail!(
                "CLM router: {} trainable blocks of {}, {} models",
                shape.trainable_layers,
                cfg.layers,
                shape.models
            );
        }
        let frozen = cfg.layers - shape.trainable_layers;
        let h = cfg.hidden_size;
        let embeddings = if frozen == 0 {
            vb.get((cfg.vocab_size, h), "token_embd.weight")?
        } else {
            base.embeddings.detach()
        };
        Ok(Self {
            shape,
            special,
            base: base.clone(),
            frozen,
            upper: (frozen..cfg.layers)
                .map(|i| LlamaBlock::load(vb.pp(format!("blk.{i}")), cfg))
                .collect::<Result<Vec<_>>>()?,
            embeddings,
            norm: vb.get(h, "output_norm.weight")?,
            model_tokens: vb.get_with_hints(
                (shape.models, h),
                "model_tokens",
                candle_nn::Init::Randn {
                    mean: 0.,
                    stdev: 0.02,
                },
            )?,
            route: Linear::init(vb.pp("route"), h, 1)?,
        })
    }

    fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        self.embeddings
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t, ()))
    }

    /// Runs every block over `ids` `[n, t]` at `offset`; `marks` = `(row, position, candidate)`
    /// where the `<Model_t>` row joins the stream. Returns final-normed states `[n, t, H]`.
    fn run(
        &self,
        ids: &Tensor,
        offset: usize,
        marks: &[(usize, usize, usize)],
        mut cache: Option<&mut KvCache>,
        mode: Mode,
    ) -> Result<Tensor> {
        let (n, t) = ids.dims2()?;
        let h = self.base.config.hidden_size;
        let mut x = self.embed(ids)?;
        if self.frozen > 0 {
            x = self
                .base
                .run_blocks(
                    x,
                    0..self.frozen,
                    offset,
                    cache.as_deref_mut(),
                    Mode::Inference,
                )?
                .detach();
        }
        if !marks.is_empty() {
            // Scatter the candidates' rows into an otherwise-zero `[n, t, H]` addend.
            let mut sel = vec![0f32; n * t * marks.len()];
            for (k, &(r, p, _)) in marks.iter().enumerate() {
                sel[(r * t + p) * marks.len() + k] = 1.0;
            }
            let sel = Tensor::from_vec(sel, (n * t, marks.len()), ids.device())?;
            let cand: Vec<u32> = marks.iter().map(|m| m.2 as u32).collect();
            let rows = self
                .model_tokens
                .index_select(&Tensor::from_vec(cand, marks.len(), ids.device())?, 0)?;
            x = (x + sel.matmul(&rows)?.reshape((n, t, h))?)?;
        }
        for (j, block) in self.upper.iter().enumerate() {
            let slot = match cache.as_deref_mut() {
                Some(c) => c.slot(self.frozen + j),
                None => None,
            };
            x = block.forward(&x, &self.base.rotary, offset, slot, mode)?;
        }
        ops::rms_norm(&x, &self.norm, self.base.config.rms_eps, mode)
    }

    /// Routing logits `[B, P]` and the next-token loss of a training batch.
    pub fn forward_train(&self, batch: &ClmBatch) -> Result<(Tensor, Tensor)> {
        let p = self.shape.models;
        let marks: Vec<(usize, usize, usize)> = batch
            .model_pos
            .iter()
            .enumerate()
            .map(|(r, &pos)| (r, pos, r % p))
            .collect();
        let states = self.run(&batch.ids, 0, &marks, None, Mode::Train)?;
        let (n, t, h) = states.dims3()?;
        let flat = states.reshape((n * t, h))?;
        let at: Vec<u32> = marks
            .iter()
            .map(|&(r, pos, _)| (r * t + pos) as u32)
            .collect();
        let at = Tensor::from_vec(at, n, states.device())?;
        let logits = self
            .route
            .forward(&flat.index_select(&at, 0)?)?
            .reshape((batch.prompts, p))?;
        let lm = if batch.lm_rows.dim(0)? == 0 {
            Tensor::zeros((), DType::F32, states.device())?
        } else {
            let picked = flat.index_select(&batch.lm_rows, 0)?;
            let vocab = picked.matmul(&self.embeddings.t()?)?;
            ops::cross_entropy(&vocab, &batch.lm_targets)?
        };
        Ok((logits, lm))
    }

    /// BCE + 0.5 x next-token CE, and the two parts.
    pub fn loss(&self, batch: &ClmBatch, labels: &Tensor) -> Result<(Tensor, f32, f32)> {
        let (logits, lm) = self.forward_train(batch)?;
        let bce = ops::bce_with_logits(&logits, labels)?;
        let (b, c) = (bce.to_scalar::<f32>()?, lm.to_scalar::<f32>()?);
        Ok(((bce + (lm * CLM_LOSS_WEIGHT)?)?, b, c))
    }

    /// Routing logits `[P]` of one prompt: prefill once, then one batched `<Model_t>` step for all
    /// candidates from copies of the prompt's KV cache. Needs no response.
    pub fn score_cached(&self, prompt: &[u32]) -> Result<Tensor> {
        let dev = self.embeddings.device();
        let layers = self.base.config.layers;
        let mut cache = KvCache::new(layers);
        let ids = Tensor::from_vec(prompt.to_vec(), (1, prompt.len()), dev)?;
        self.run(&ids, 0, &[], Some(&mut cache), Mode::Inference)?;
        let p = self.shape.models;
        let mut step_cache = cache.repeat(p)?;
        let step = Tensor::from_vec(vec![self.special.placeholder; p], (p, 1), dev)?;
        let marks: Vec<_> = (0..p).map(|t| (t, 0, t)).collect();
        let states = self.run(
            &step,
            prompt.len(),
            &marks,
            Some(&mut step_cache),
            Mode::Inference,
        )?;
        self.route.forward(&states.squeeze(1)?)?.squeeze(D::Minus1)
    }

    /// The same logits by full recomputation of `prompt <Model_t>` per candidate (reference).
    pub fn score_full(&self, prompt: &[u32]) -> Result<Tensor> {
        let dev = self.embeddings.device();
        let p = self.shape.models;
        let mut seq = prompt.to_vec();
        seq.push(self.special.placeholder);
        let t = seq.len();
        let ids = Tensor::from_vec(seq.repeat(p), (p, t), dev)?;
        let marks: Vec<_> = (0..p).map(|c| (c, t - 1, c)).collect();
        let states = self.run(&ids, 0, &marks, None, Mode::Inference)?;
        self.route
            .forward(&states.narrow(1, t - 1, 1)?.squeeze(1)?)?
            .squeeze(D::Minus1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backbones::llama::LlamaConfig;
    use candle_nn::Optimizer;

    const V: usize = 40;
    const SPECIAL: ClmSpecial = ClmSpecial {
        eos: 2,
        placeholder: 1,
    };

    fn tiny() -> (VarMap, Llama) {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let llama = Llama::load(vb, &LlamaConfig::tiny(V)).expect("tiny llama");
        for (name, var) in vm.data().lock().expect("lock").iter() {
            let mean = if name.ends_with("norm.weight") {
                1f32
            } else {
                0f32
            };
            let t = Tensor::randn(mean, 0.2, var.shape(), &Device::Cpu).expect("randn");
            var.set(&t).expect("set");
        }
        (vm, llama)
    }

    fn model(n: usize, p: usize) -> (VarMap, VarMap, ClmModel) {
        let (base_vm, base) = tiny();
        let tensors: HashMap<String, Tensor> = base_vm
            .data()
            .lock()
            .expect("lock")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().copy().expect("copy")))
            .collect();
        let shape = ClmShape {
            models: p,
            response_tokens: 4,
            trainable_layers: n,
        };
        let vm = VarMap::new();
        seed_from_decoder(&vm, &tensors, base.config.layers, shape).expect("seed");
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let m = ClmModel::new(&base, vb, shape, SPECIAL).expect("model");
        (base_vm, vm, m)
    }

    fn toy(p: usize) -> (ClmBatch, Tensor) {
        let prompts: Vec<Vec<u32>> = (0..6u32).map(|i| vec![3, 5 + i % p as u32, 9]).collect();
        let refs: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
        let responses: Vec<Vec<Vec<u32>>> = (0..6u32)
            .map(|i| {
                (0..p as u32)
                    .map(|t| vec![10 + t, 5 + i % p as u32, 20])
                    .collect()
            })
            .collect();
        let shape = ClmShape {
            models: p,
            response_tokens: 4,
            trainable_layers: 1,
        };
        let b = build_batch(&refs, &responses, shape, SPECIAL, &Device::Cpu).expect("batch");
        let labels: Vec<f32> = (0..6u32)
            .flat_map(|i| (0..p as u32).map(move |t| f32::from(u8::from(t == i % p as u32))))
            .collect();
        (
            b,
            Tensor::from_vec(labels, (6, p), &Device::Cpu).expect("labels"),
        )
    }

    #[test]
    fn layout_is_prompt_model_token_response_eos() -> Result<()> {
        let shape = ClmShape {
            models: 2,
            response_tokens: 2,
            trainable_layers: 1,
        };
        let b = build_batch(
            &[&[3, 4]],
            &[vec![vec![10, 11, 12], vec![13]]],
            shape,
            SPECIAL,
            &Device::Cpu,
        )?;
        assert_eq!(
            b.ids.to_vec2::<u32>()?,
            vec![vec![3, 4, 1, 10, 11, 2], vec![3, 4, 1, 13, 2, 2]]
        );
        assert_eq!(b.model_pos, vec![2, 2]);
        // States at <Model_t> and each response token predict the next token, EOS included.
        assert_eq!(b.lm_rows.to_vec1::<u32>()?, vec![2, 3, 4, 6 + 2, 6 + 3]);
        assert_eq!(b.lm_targets.to_vec1::<u32>()?, vec![10, 11, 2, 13, 2]);
        Ok(())
    }

    #[test]
    fn cached_kv_inference_equals_full_recomputation() -> Result<()> {
        for n in [1, 3] {
            let (_, _, m) = model(n, 3);
            let prompt = [3u32, 7, 8, 9, 12];
            let cached = m.score_cached(&prompt)?.to_vec1::<f32>()?;
            let full = m.score_full(&prompt)?.to_vec1::<f32>()?;
            assert_eq!(cached.len(), 3);
            for (a, b) in cached.iter().zip(&full) {
                assert!((a - b).abs() < 1e-4, "cached {cached:?} vs full {full:?}");
            }
            // Candidates differ only by their <Model_t> row: the scores are not all equal.
            assert!((cached[0] - cached[1]).abs() > 1e-7);
        }
        Ok(())
    }

    #[test]
    fn gradients_reach_every_trainable_tensor_and_no_frozen_one() -> Result<()> {
        for n in [1, 3] {
            let (frozen, trainable, m) = model(n, 3);
            let (batch, labels) = toy(3);
            let (loss, ..) = m.loss(&batch, &labels)?;
            let grads = loss.backward()?;
            for (name, var) in trainable.data().lock().expect("lock").iter() {
                let g = grads
                    .get(var)
                    .unwrap_or_else(|| panic!("{name} (trainable, n={n}) got no gradient"));
                assert!(g.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0, "{name} zero");
            }
            for (name, var) in frozen.data().lock().expect("lock").iter() {
                assert!(
                    grads.get(var).is_none(),
                    "{name} is frozen but got a gradient"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn loss_decreases_on_a_toy_task() -> Result<()> {
        let (_, vm, m) = model(2, 3);
        let mut opt = candle_nn::AdamW::new(
            vm.all_vars(),
            candle_nn::ParamsAdamW {
                lr: 3e-3,
                ..Default::default()
            },
        )?;
        let (batch, labels) = toy(3);
        let (_, b0, c0) = m.loss(&batch, &labels)?;
        for _ in 0..100 {
            let (l, ..) = m.loss(&batch, &labels)?;
            opt.backward_step(&l)?;
        }
        let (_, b1, c1) = m.loss(&batch, &labels)?;
        assert!(b1 < 0.6 * b0, "bce {b0} -> {b1}");
        assert!(c1 < c0, "lm {c0} -> {c1}");
        Ok(())
    }
}
