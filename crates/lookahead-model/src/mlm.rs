//! Lookahead-MLM as published: one encoder sequence holds the prompt and one slot per candidate.
//!
//! Layout: `[CLS] prompt [SEP]` then, for each candidate `t`, `K` response positions and `[SEP]`.
//! Shown positions hold candidate `t`'s response tokens; masked positions (the response's
//! suffix, curriculum-masked) and padding positions hold `t`'s identity token (`[unused_t]`), so
//! every slot says whose it is. At inference every slot is fully masked: the sequence depends on
//! the prompt only and one pass scores the whole pool.
//!
//! Heads: routing on `[CLS]` (dense + GELU + LayerNorm, then `Linear(hidden -> |pool|)`) and the
//! masked-token head (dense + GELU + LayerNorm, decoder tied to the word embeddings).
//! Loss = BCE + 0.2 x masked-token CE. The lower `layers - N` encoder layers (and the embeddings,
//! unless every layer trains) are frozen: they run with the fused kernels and are detached.

use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{VarBuilder, VarMap};
use tokenizers::Tokenizer;

use crate::backbone::pad_batch;
use crate::bert::{
    additive_mask, BertConfig, BertEncoder, BertLayer, Embeddings, LayerNorm, Linear,
};
use crate::ops::{self, Mode};

/// Weight of the masked-token loss (paper: 0.2).
pub const MLM_LOSS_WEIGHT: f64 = 0.2;

/// Token ids the layout needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MlmSpecial {
    pub sep: u32,
    /// Identity token of candidate `t` (`[unused_t]`).
    pub identity: Vec<u32>,
}

impl MlmSpecial {
    /// `[SEP]` and `[unused_0..P]` from a BERT tokenizer's vocabulary.
    pub fn from_tokenizer(tok: &Tokenizer, models: usize) -> std::result::Result<Self, String> {
        let id = |t: &str| {
            tok.token_to_id(t)
                .ok_or_else(|| format!("the backbone's vocabulary has no {t} token"))
        };
        Ok(Self {
            sep: id("[SEP]")?,
            identity: (0..models)
                .map(|t| id(&format!("[unused{t}]")))
                .collect::<std::result::Result<_, _>>()?,
        })
    }
}

/// Shape of an MLM router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MlmShape {
    pub models: usize,
    /// K: positions per candidate slot (the slot's `[SEP]` not included).
    pub slot_tokens: usize,
    /// Upper encoder layers that train; all of them = embeddings train too.
    pub trainable_layers: usize,
}

/// One example's token sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MlmLayout {
    pub ids: Vec<u32>,
    /// `(position, response token)` of every masked real response token (the MLM targets).
    pub targets: Vec<(usize, u32)>,
}

/// Number of masked tokens at the end of a response of `n` tokens at mask rate `rate`.
pub fn masked_suffix(n: usize, rate: f64) -> usize {
    ((rate * n as f64).ceil() as usize).min(n)
}

/// Lays out `prompt` (`[CLS] ... [SEP]` ids) and the slots. `responses[t]`: candidate `t`'s
/// response ids (no special tokens), cut to K; `None` = fully masked (inference).
pub fn layout(
    prompt: &[u32],
    responses: Option<&[Vec<u32>]>,
    slot_tokens: usize,
    rate: f64,
    special: &MlmSpecial,
) -> MlmLayout {
    let p = special.identity.len();
    let mut ids = Vec::with_capacity(prompt.len() + p * (slot_tokens + 1));
    ids.extend_from_slice(prompt);
    let mut targets = Vec::new();
    for (t, &ident) in special.identity.iter().enumerate() {
        let resp: &[u32] = match responses.and_then(|r| r.get(t)) {
            Some(r) => &r[..r.len().min(slot_tokens)],
            None => &[],
        };
        let shown = resp.len() - masked_suffix(resp.len(), rate);
        for i in 0..slot_tokens {
            if i < shown {
                ids.push(resp[i]);
            } else {
                if let Some(&tok) = resp.get(i) {
                    targets.push((ids.len(), tok));
                }
                ids.push(ident);
            }
        }
        ids.push(special.sep);
    }
    MlmLayout { ids, targets }
}

/// A padded batch of layouts.
pub struct MlmBatch {
    pub ids: Tensor,
    pub keep: Tensor,
    /// Flat `b * seq + pos` indices of the MLM targets, and their token ids.
    pub target_rows: Tensor,
    pub target_ids: Tensor,
}

pub fn stack_layouts(layouts: &[MlmLayout], device: &Device) -> Result<MlmBatch> {
    let ids: Vec<Vec<u32>> = layouts.iter().map(|l| l.ids.clone()).collect();
    let tb = pad_batch(&ids, device)?;
    let seq = tb.ids.dim(1)?;
    let (mut rows, mut tgt) = (Vec::new(), Vec::new());
    for (b, l) in layouts.iter().enumerate() {
        for &(pos, tok) in &l.targets {
            rows.push((b * seq + pos) as u32);
            tgt.push(tok);
        }
    }
    Ok(MlmBatch {
        ids: tb.ids,
        keep: tb.keep,
        target_rows: Tensor::from_vec(rows.clone(), rows.len(), device)?,
        target_ids: Tensor::from_vec(tgt.clone(), tgt.len(), device)?,
    })
}

/// dense + GELU + LayerNorm (BERT's prediction-head transform), differentiable.
struct Transform {
    dense: Linear,
    norm: LayerNorm,
}

impl Transform {
    fn new(vb: VarBuilder, h: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            dense: Linear::init(vb.pp("dense"), h, h)?,
            norm: LayerNorm::init(vb.pp("norm"), h, eps)?,
        })
    }

    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        self.norm.forward(&self.dense.forward(x)?.gelu_erf()?, mode)
    }
}

/// What one encoder pass returns.
pub struct MlmOutput {
    /// `[B, P]` routing logits.
    pub logits: Tensor,
    /// `[B, S, H]` last-layer states.
    pub states: Tensor,
}

/// The MLM router: frozen lower encoder, trainable upper layers and heads.
pub struct MlmModel {
    pub shape: MlmShape,
    frozen: BertEncoder,
    frozen_layers: usize,
    /// Trainable embeddings (only when every layer trains).
    embeddings: Option<Embeddings>,
    upper: Vec<BertLayer>,
    /// Word embeddings `[V, H]`: the MLM decoder is tied to them.
    word: Tensor,
    route: Transform,
    route_out: Linear,
    mlm: Transform,
    mlm_bias: Tensor,
    passes: AtomicUsize,
}

fn backbone_tensor<'a>(
    tensors: &'a std::collections::HashMap<String, Tensor>,
    name: &str,
) -> Result<&'a Tensor> {
    tensors
        .get(name)
        .or_else(|| tensors.get(&format!("bert.{name}")))
        .ok_or_else(|| candle_core::Error::Msg(format!("backbone has no {name}")))
}

/// Seeds `varmap` with the trainable copies of the backbone: the upper layers as `upper.{i}.*`
/// and, when every layer trains, the embeddings as `embeddings.*`.
pub fn seed_from_backbone(
    varmap: &VarMap,
    tensors: &std::collections::HashMap<String, Tensor>,
    layers: usize,
    shape: MlmShape,
) -> Result<()> {
    let frozen = layers.checked_sub(shape.trainable_layers).ok_or_else(|| {
        candle_core::Error::Msg("more trainable layers than the backbone has".into())
    })?;
    crate::lite::seed_upper_from_backbone(varmap, tensors, frozen, shape.trainable_layers)?;
    if frozen == 0 {
        let mut data = varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("varmap lock poisoned".into()))?;
        for part in [
            "word_embeddings.weight",
            "position_embeddings.weight",
            "token_type_embeddings.weight",
            "LayerNorm.weight",
            "LayerNorm.bias",
        ] {
            let t = backbone_tensor(tensors, &format!("embeddings.{part}"))?;
            data.insert(
                format!("embeddings.{part}"),
                candle_core::Var::from_tensor(&t.copy()?)?,
            );
        }
    }
    Ok(())
}

impl MlmModel {
    /// `encoder`: the (frozen) backbone; `vb`: the trainable tensors (a seeded [`VarMap`] when
    /// training, the artifact when loading). Fresh heads are created when absent.
    pub fn new(encoder: &BertEncoder, vb: VarBuilder, shape: MlmShape) -> Result<Self> {
        let cfg: &BertConfig = &encoder.config;
        let layers = encoder.layers.len();
        if shape.trainable_layers > layers || shape.models == 0 {
            candle_core::bail!(
                "MLM router: {} trainable layers of {layers}, {} models",
                shape.trainable_layers,
                shape.models
            );
        }
        let frozen_layers = layers - shape.trainable_layers;
        let h = cfg.hidden_size;
        let (embeddings, word) = if frozen_layers == 0 {
            (
                Some(Embeddings::load(vb.pp("embeddings"), cfg)?),
                vb.get((cfg.vocab_size, h), "embeddings.word_embeddings.weight")?,
            )
        } else {
            (None, encoder.embeddings.word_weight().detach())
        };
        let upper = (0..shape.trainable_layers)
            .map(|i| BertLayer::load(vb.pp("upper").pp(i), cfg))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            shape,
            frozen: encoder.clone(),
            frozen_layers,
            embeddings,
            upper,
            word,
            route: Transform::new(vb.pp("route"), h, cfg.layer_norm_eps)?,
            route_out: Linear::init(vb.pp("route_out"), h, shape.models)?,
            mlm: Transform::new(vb.pp("mlm"), h, cfg.layer_norm_eps)?,
            mlm_bias: vb.get_with_hints(cfg.vocab_size, "mlm_bias", candle_nn::Init::Const(0.))?,
            passes: AtomicUsize::new(0),
        })
    }

    /// Encoder passes run so far (each scores a whole batch and the whole pool).
    pub fn passes(&self) -> usize {
        self.passes.load(Ordering::Relaxed)
    }

    /// One encoder pass over `ids`/`keep` (`[B, S]`).
    pub fn forward(&self, ids: &Tensor, keep: &Tensor, mode: Mode) -> Result<MlmOutput> {
        self.passes.fetch_add(1, Ordering::Relaxed);
        let mask = additive_mask(keep)?;
        let mut x = match &self.embeddings {
            Some(e) => e.forward(ids, mode)?,
            None => {
                // Frozen: fused kernels, no graph.
                self.frozen
                    .forward_lower(ids, keep, self.frozen_layers, Mode::Inference)?
                    .detach()
            }
        };
        for layer in &self.upper {
            x = layer.forward(&x, Some(&mask), mode)?;
        }
        let cls = x.narrow(1, 0, 1)?.squeeze(1)?;
        let logits = self.route_out.forward(&self.route.forward(&cls, mode)?)?;
        Ok(MlmOutput { logits, states: x })
    }

    /// Mean cross-entropy of the masked-token head at `rows` (flat `b * S + pos`) against
    /// `targets`; zero when there is none.
    pub fn masked_token_loss(
        &self,
        states: &Tensor,
        rows: &Tensor,
        targets: &Tensor,
        mode: Mode,
    ) -> Result<Tensor> {
        if rows.dim(0)? == 0 {
            return Tensor::zeros((), DType::F32, states.device());
        }
        let h = states.dim(D::Minus1)?;
        let picked = states.reshape(((), h))?.index_select(rows, 0)?;
        let z = self.mlm.forward(&picked, mode)?;
        let logits = z.matmul(&self.word.t()?)?.broadcast_add(&self.mlm_bias)?;
        cross_entropy(&logits, targets)
    }

    /// Routing BCE + 0.2 x masked-token CE of a batch, and the two parts.
    pub fn loss(&self, batch: &MlmBatch, labels: &Tensor) -> Result<(Tensor, f32, f32)> {
        let out = self.forward(&batch.ids, &batch.keep, Mode::Train)?;
        let bce = ops::bce_with_logits(&out.logits, labels)?;
        let ce = self.masked_token_loss(
            &out.states,
            &batch.target_rows,
            &batch.target_ids,
            Mode::Train,
        )?;
        let (b, c) = (bce.to_scalar::<f32>()?, ce.to_scalar::<f32>()?);
        Ok(((bce + (ce * MLM_LOSS_WEIGHT)?)?, b, c))
    }
}

/// Mean cross-entropy of `logits` `[N, V]` against `targets` `[N]` u32, from differentiable ops
/// (log-sum-exp shifted by the detached row max).
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let lse = (logits
        .broadcast_sub(&max)?
        .exp()?
        .sum_keepdim(D::Minus1)?
        .log()?
        + &max)?;
    let picked = logits.gather(&targets.unsqueeze(1)?, 1)?;
    (lse - picked)?.mean_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lite::mask_rate;
    use candle_core::Var;
    use candle_nn::Optimizer;

    const V: usize = 40;

    fn special(p: usize) -> MlmSpecial {
        MlmSpecial {
            sep: 3,
            identity: (0..p as u32).map(|t| 30 + t).collect(),
        }
    }

    /// A tiny random BERT whose every tensor is a `Var` (so a test can see which got gradients).
    fn tiny_encoder() -> (VarMap, BertEncoder) {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let enc = BertEncoder::load(vb, &BertConfig::tiny(V)).expect("tiny encoder");
        // Random non-trivial weights everywhere (VarMap's default init would make layer norms 0).
        for (name, var) in vm.data().lock().expect("lock").iter() {
            let mean = if name.ends_with("LayerNorm.weight") {
                1f32
            } else {
                0f32
            };
            let t = Tensor::randn(mean, 0.3, var.shape(), &Device::Cpu).expect("randn");
            var.set(&t).expect("set");
        }
        (vm, enc)
    }

    fn tensors(vm: &VarMap) -> std::collections::HashMap<String, Tensor> {
        vm.data()
            .lock()
            .expect("lock")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().copy().expect("copy")))
            .collect()
    }

    fn model(n: usize, p: usize, k: usize) -> (VarMap, VarMap, MlmModel) {
        let (frozen_vm, enc) = tiny_encoder();
        let shape = MlmShape {
            models: p,
            slot_tokens: k,
            trainable_layers: n,
        };
        let vm = VarMap::new();
        seed_from_backbone(&vm, &tensors(&frozen_vm), enc.layers.len(), shape).expect("seed");
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let m = MlmModel::new(&enc, vb, shape).expect("model");
        (frozen_vm, vm, m)
    }

    fn toy_batch(p: usize, k: usize, rate: f64) -> (MlmBatch, Tensor) {
        let sp = special(p);
        let mut layouts = Vec::new();
        let mut labels = Vec::new();
        for i in 0..6u32 {
            // Prompt word decides the best model; responses echo it.
            let word = 5 + (i % p as u32);
            let prompt = [2, word, 6, 3];
            let responses: Vec<Vec<u32>> =
                (0..p as u32).map(|t| vec![10 + t, word, 12, 13]).collect();
            layouts.push(layout(&prompt, Some(&responses), k, rate, &sp));
            labels.extend((0..p as u32).map(|t| f32::from(u8::from(t == i % p as u32))));
        }
        let b = stack_layouts(&layouts, &Device::Cpu).expect("stack");
        let labels = Tensor::from_vec(labels, (6, p), &Device::Cpu).expect("labels");
        (b, labels)
    }

    #[test]
    fn slot_layout_shows_prefix_and_fills_masked_and_padding_with_identity() {
        let sp = special(3);
        let prompt = [2, 7, 8, 3];
        let responses = vec![
            vec![10, 11, 12, 13],
            vec![14, 15],
            vec![16, 17, 18, 19, 20, 21, 22],
        ];
        // K = 5, rate 0.5: response 0 (4 tokens) shows 2, masks 2, pads 1.
        let l = layout(&prompt, Some(&responses), 5, 0.5, &sp);
        assert_eq!(l.ids.len(), 4 + 3 * 6);
        assert_eq!(&l.ids[..4], &prompt);
        assert_eq!(&l.ids[4..10], &[10, 11, 30, 30, 30, 3]);
        // response 1 (2 tokens): ceil(1.0) = 1 masked.
        assert_eq!(&l.ids[10..16], &[14, 31, 31, 31, 31, 3]);
        // response 2 cut to K = 5: 3 masked.
        assert_eq!(&l.ids[16..22], &[16, 17, 32, 32, 32, 3]);
        assert_eq!(
            l.targets,
            vec![(6, 12), (7, 13), (11, 15), (18, 18), (19, 19), (20, 20)]
        );
        // Fully masked (inference): identity tokens only, no targets, same length.
        let inf = layout(&prompt, None, 5, 1.0, &sp);
        assert_eq!(inf.ids.len(), l.ids.len());
        assert_eq!(&inf.ids[4..10], &[30, 30, 30, 30, 30, 3]);
        assert!(inf.targets.is_empty());
        // Rate 1.0 with responses: same ids as inference.
        assert_eq!(layout(&prompt, Some(&responses), 5, 1.0, &sp).ids, inf.ids);
    }

    #[test]
    fn curriculum_rises_from_0_3_to_1_over_the_first_fifth() {
        let total = 100;
        let r = |s| mask_rate(s, total, 0.3, 0.2);
        assert!((r(0) - 0.3).abs() < 1e-9);
        assert!((r(10) - 0.65).abs() < 1e-9);
        assert!((r(20) - 1.0).abs() < 1e-9);
        assert!((r(60) - 1.0).abs() < 1e-9);
        assert!(r(5) < r(6));
        assert_eq!(masked_suffix(10, 0.3), 3);
        assert_eq!(masked_suffix(10, 1.0), 10);
    }

    #[test]
    fn gradients_reach_every_trainable_tensor_and_no_frozen_one() -> Result<()> {
        for n in [1, 3] {
            let (frozen, trainable, m) = model(n, 3, 4);
            let (batch, labels) = toy_batch(3, 4, 0.5);
            let (loss, _, ce) = m.loss(&batch, &labels)?;
            assert!(ce > 0.0);
            let grads = loss.backward()?;
            for (name, var) in trainable.data().lock().expect("lock").iter() {
                let g = grads
                    .get(var)
                    .unwrap_or_else(|| panic!("{name} (trainable, n={n}) got no gradient"));
                let s = g.abs()?.sum_all()?.to_scalar::<f32>()?;
                assert!(s > 0.0, "{name} gradient is zero (n={n})");
            }
            for (name, var) in frozen.data().lock().expect("lock").iter() {
                assert!(
                    grads.get(var).is_none(),
                    "{name} is frozen but got a gradient (n={n})"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn whole_pool_is_scored_in_one_pass_without_responses() -> Result<()> {
        let (_, _, m) = model(1, 4, 3);
        let sp = special(4);
        let layouts: Vec<_> = [[2u32, 5, 3].as_slice(), &[2, 6, 7, 8, 3]]
            .iter()
            .map(|p| layout(p, None, 3, 1.0, &sp))
            .collect();
        let b = stack_layouts(&layouts, &Device::Cpu)?;
        assert_eq!(b.ids.dims(), &[2, 5 + 4 * 4]);
        let before = m.passes();
        let out = m.forward(&b.ids, &b.keep, Mode::Inference)?;
        assert_eq!(m.passes() - before, 1);
        assert_eq!(out.logits.dims(), &[2, 4]);
        // Inference kernels and training kernels agree.
        let train = m.forward(&b.ids, &b.keep, Mode::Train)?;
        let diff = (out.logits - train.logits)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-3, "{diff}");
        Ok(())
    }

    #[test]
    fn loss_decreases_on_a_toy_task() -> Result<()> {
        let (_, vm, m) = model(2, 3, 4);
        let mut opt = candle_nn::AdamW::new(
            vm.all_vars(),
            candle_nn::ParamsAdamW {
                lr: 3e-3,
                ..Default::default()
            },
        )?;
        let (batch, labels) = toy_batch(3, 4, 0.5);
        let first = m.loss(&batch, &labels)?;
        let (b0, c0) = (first.1, first.2);
        for _ in 0..100 {
            let (l, ..) = m.loss(&batch, &labels)?;
            opt.backward_step(&l)?;
        }
        let (_, b1, c1) = m.loss(&batch, &labels)?;
        assert!(b1 < 0.6 * b0, "bce {b0} -> {b1}");
        assert!(c1 < c0, "ce {c0} -> {c1}");
        Ok(())
    }

    #[test]
    fn cross_entropy_matches_closed_form() -> Result<()> {
        let logits = Tensor::new(&[[1f32, 2., 3.], [0., 0., 0.]], &Device::Cpu)?;
        let t = Tensor::new(&[2u32, 0], &Device::Cpu)?;
        let got = cross_entropy(&logits, &t)?.to_scalar::<f32>()?;
        let l0 = (1f32.exp() + 2f32.exp() + 3f32.exp()).ln() - 3.0;
        let l1 = 3f32.ln();
        assert!((got - (l0 + l1) / 2.0).abs() < 1e-5);
        let _ = Var::from_tensor(&logits)?;
        Ok(())
    }
}
