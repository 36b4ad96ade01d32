//! Lookahead-MLM as published: one encoder sequence holds the prompt and one slot per candidate.
//!
//! Layout: `[CLS] prompt [SEP]` then, for each candidate `t`, `K` response positions and `[SEP]`.
//! Shown positions hold candidate `t`'s response tokens; masked positions (the response's
//! suffix, curriculum-masked) and padding positions hold `t`'s identity token (`[unused_t]`), so
//! every slot says whose it is. At inference every slot is fully masked: the sequence depends on
//! the prompt only and one pass scores the whole pool.
//!
//! The encoder is a BERT or a ModernBERT ([`crate::backbones::encoder`]). Heads: routing on `[CLS]` (dense +
//! GELU + LayerNorm, then `Linear(hidden -> |pool|)`) and the masked-token head (dense + act +
//! LayerNorm, decoder tied to the word embeddings; a ModernBERT checkpoint's own `head.*` and
//! `decoder.bias` seed it). Loss = BCE + 0.2 x masked-token CE. The lower `layers - N` encoder
//! layers (and the embeddings, unless every layer trains) are frozen: they run with the fused
//! kernels and are detached. ModernBERT's final norm sits above every layer and trains.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{VarBuilder, VarMap};

use crate::backbones::encoder::{Encoder, EncoderEmbeddings, EncoderLayer};
use crate::backbones::encoder_dir::pad_batch_with;
pub use crate::backbones::mlm_tokens::{MlmSpecial, MlmTokenError};
use crate::backbones::modernbert::{Activation, Linear, Norm};
use crate::kernels::ops::{self, Mode};
use crate::nn::Linear as BiasedLinear;

/// Weight of the masked-token loss (paper: 0.2).
pub const MLM_LOSS_WEIGHT: f64 = 0.2;

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

/// Pads `layouts` with `pad` (the tokenizer's `[PAD]`) into one batch.
pub fn stack_layouts(layouts: &[MlmLayout], pad: u32, device: &Device) -> Result<MlmBatch> {
    let ids: Vec<Vec<u32>> = layouts.iter().map(|l| l.ids.clone()).collect();
    let tb = pad_batch_with(&ids, pad, device)?;
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

/// dense + activation + LayerNorm (the prediction-head transform of BERT and ModernBERT),
/// differentiable; created fresh unless `vb` already holds it.
struct Transform {
    dense: Linear,
    norm: Norm,
    act: Activation,
}

/// Biases and activation of a head transform.
#[derive(Debug, Clone, Copy)]
struct HeadSpec {
    bias: bool,
    norm_bias: bool,
    act: Activation,
}

impl HeadSpec {
    /// Our own heads (routing; BERT's masked-token head): biases and exact GELU.
    const PLAIN: Self = Self {
        bias: true,
        norm_bias: true,
        act: Activation::GeluErf,
    };

    /// The masked-token head: ModernBERT's `head` as its config says, so a checkpoint's
    /// pretrained head loads into it.
    fn masked_token(encoder: &Encoder) -> Result<Self> {
        match encoder {
            Encoder::Bert(_) => Ok(Self::PLAIN),
            Encoder::ModernBert(e) => Ok(Self {
                bias: e.config.classifier_bias,
                norm_bias: e.config.norm_bias,
                act: Activation::parse(&e.config.classifier_activation)?,
            }),
        }
    }
}

impl Transform {
    fn new(vb: VarBuilder, h: usize, eps: f64, spec: HeadSpec) -> Result<Self> {
        Ok(Self {
            dense: Linear::init(vb.pp("dense"), h, h, spec.bias)?,
            norm: Norm::init(vb.pp("norm"), h, eps, spec.norm_bias)?,
            act: spec.act,
        })
    }

    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        self.norm
            .forward(&self.act.apply(&self.dense.forward(x)?)?, mode)
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
    frozen: Encoder,
    frozen_layers: usize,
    /// Trainable embeddings (only when every layer trains).
    embeddings: Option<EncoderEmbeddings>,
    upper: Vec<EncoderLayer>,
    /// ModernBERT's final norm (trainable: it sits above the trainable layers); none in BERT.
    final_norm: Option<Norm>,
    /// Word embeddings `[V, H]`: the MLM decoder is tied to them.
    word: Tensor,
    route: Transform,
    route_out: BiasedLinear,
    mlm: Transform,
    mlm_bias: Tensor,
    passes: AtomicUsize,
}

fn backbone_tensor<'a>(tensors: &'a HashMap<String, Tensor>, name: &str) -> Result<&'a Tensor> {
    tensors
        .get(name)
        .or_else(|| tensors.get(&format!("bert.{name}")))
        .ok_or_else(|| candle_core::Error::Msg(format!("backbone has no {name}")))
}

/// Inserts trainable copies (own storage: the optimiser updates them in place, and the frozen
/// encoder shares storage with the checkpoint tensors).
fn insert_copies(varmap: &VarMap, named: Vec<(String, Tensor)>) -> Result<()> {
    let mut data = varmap
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("varmap lock poisoned".into()))?;
    for (name, t) in named {
        data.insert(name, candle_core::Var::from_tensor(&t.copy()?)?);
    }
    Ok(())
}

/// Seeds `varmap` with the trainable copies of the backbone: the upper layers as `upper.{i}.*`,
/// when every layer trains the embeddings as `embeddings.*` and, for ModernBERT, the final norm
/// as `final_norm.*` and the checkpoint's masked-token head (`head.*`, `decoder.bias`) as
/// `mlm.*` / `mlm_bias` when it has one.
pub fn seed_from_backbone(
    varmap: &VarMap,
    tensors: &HashMap<String, Tensor>,
    encoder: &Encoder,
    shape: MlmShape,
) -> Result<()> {
    let layers = encoder.num_layers();
    let frozen = layers.checked_sub(shape.trainable_layers).ok_or_else(|| {
        candle_core::Error::Msg("more trainable layers than the backbone has".into())
    })?;
    if let Encoder::Bert(_) = encoder {
        crate::methods::lite::model::seed_upper_from_backbone(
            varmap,
            tensors,
            frozen,
            shape.trainable_layers,
        )?;
        if frozen == 0 {
            // Named one by one: some BERT exports also hold an integer `position_ids` buffer.
            let named = [
                "word_embeddings.weight",
                "position_embeddings.weight",
                "token_type_embeddings.weight",
                "LayerNorm.weight",
                "LayerNorm.bias",
            ]
            .iter()
            .map(|part| {
                let name = format!("embeddings.{part}");
                Ok((name.clone(), backbone_tensor(tensors, &name)?.clone()))
            })
            .collect::<Result<Vec<_>>>()?;
            insert_copies(varmap, named)?;
        }
        return Ok(());
    }
    let mut named = Vec::new();
    for i in 0..shape.trainable_layers {
        let layer = encoder.copy_prefixed(
            tensors,
            &encoder.layer_prefix(frozen + i),
            &format!("upper.{i}."),
        );
        if layer.is_empty() {
            candle_core::bail!(
                "backbone has no layer {} to initialise upper layer {i}",
                frozen + i
            );
        }
        named.extend(layer);
    }
    named.extend(encoder.copy_prefixed(tensors, "final_norm.", "final_norm."));
    if frozen == 0 {
        named.extend(encoder.copy_prefixed(tensors, "embeddings.", "embeddings."));
    }
    named.extend(encoder.copy_prefixed(tensors, "head.", "mlm."));
    if let Some(b) = tensors.get("decoder.bias") {
        named.push(("mlm_bias".into(), b.clone()));
    }
    insert_copies(varmap, named)
}

impl MlmModel {
    /// `encoder`: the (frozen) backbone; `vb`: the trainable tensors (a seeded [`VarMap`] when
    /// training, the artifact when loading). Fresh heads are created when absent.
    pub fn new(encoder: &Encoder, vb: VarBuilder, shape: MlmShape) -> Result<Self> {
        let layers = encoder.num_layers();
        if shape.trainable_layers > layers || shape.models == 0 {
            candle_core::bail!(
                "MLM router: {} trainable layers of {layers}, {} models",
                shape.trainable_layers,
                shape.models
            );
        }
        let frozen_layers = layers - shape.trainable_layers;
        let (h, eps) = (encoder.hidden_size(), encoder.eps());
        let (embeddings, word) = if frozen_layers == 0 {
            let e = encoder.load_embeddings(vb.pp("embeddings"))?;
            let word = e.word_weight().clone();
            (Some(e), word)
        } else {
            (None, encoder.word_weight().detach())
        };
        let upper = (0..shape.trainable_layers)
            .map(|i| encoder.load_layer(vb.pp("upper").pp(i), frozen_layers + i))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            shape,
            frozen: encoder.clone(),
            frozen_layers,
            embeddings,
            upper,
            final_norm: encoder.load_final_norm(vb.pp("final_norm"))?,
            word,
            route: Transform::new(vb.pp("route"), h, eps, HeadSpec::PLAIN)?,
            route_out: BiasedLinear::init(vb.pp("route_out"), h, shape.models)?,
            mlm: Transform::new(vb.pp("mlm"), h, eps, HeadSpec::masked_token(encoder)?)?,
            mlm_bias: vb.get_with_hints(
                encoder.vocab_size(),
                "mlm_bias",
                candle_nn::Init::Const(0.),
            )?,
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
        let masks = self.frozen.masks(keep)?;
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
            x = layer.forward(&x, &masks, mode)?;
        }
        if let Some(norm) = &self.final_norm {
            x = norm.forward(&x, mode)?;
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
        ops::cross_entropy(&logits, targets)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backbones::bert::{BertConfig, BertEncoder};
    use crate::backbones::encoder::EncoderKind;
    use crate::backbones::modernbert::{ModernBertConfig, ModernBertEncoder};
    use crate::fit::mask_rate;
    use candle_core::Var;
    use candle_nn::Optimizer;

    const V: usize = 40;
    const KINDS: [EncoderKind; 2] = [EncoderKind::Bert, EncoderKind::ModernBert];

    fn special(p: usize) -> MlmSpecial {
        MlmSpecial {
            cls: 2,
            sep: 3,
            pad: 0,
            identity: (0..p as u32).map(|t| 30 + t).collect(),
        }
    }

    /// A tiny random encoder whose every tensor is a `Var` (so a test can see which got
    /// gradients). The ModernBERT one also has a pretrained-style masked-token head
    /// (`head.*`, `decoder.bias`) for the MLM head to start from.
    fn tiny_encoder(kind: EncoderKind) -> (VarMap, Encoder) {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let enc = match kind {
            EncoderKind::Bert => {
                Encoder::Bert(BertEncoder::load(vb, &BertConfig::tiny(V)).expect("tiny bert"))
            }
            EncoderKind::ModernBert => {
                let cfg = ModernBertConfig::tiny(V);
                let h = cfg.hidden_size;
                vb.get((h, h), "head.dense.weight").expect("head");
                vb.get(h, "head.norm.weight").expect("head");
                vb.get(V, "decoder.bias").expect("head");
                Encoder::ModernBert(ModernBertEncoder::load(vb, &cfg).expect("tiny modernbert"))
            }
        };
        // Random non-trivial weights everywhere (VarMap's default init would make norms 0).
        for (name, var) in vm.data().lock().expect("lock").iter() {
            let norm = name.ends_with("LayerNorm.weight") || name.ends_with("norm.weight");
            let mean = if norm { 1f32 } else { 0f32 };
            let t = Tensor::randn(mean, 0.3, var.shape(), &Device::Cpu).expect("randn");
            var.set(&t).expect("set");
        }
        (vm, enc)
    }

    fn tensors(vm: &VarMap) -> HashMap<String, Tensor> {
        vm.data()
            .lock()
            .expect("lock")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().copy().expect("copy")))
            .collect()
    }

    fn model(kind: EncoderKind, n: usize, p: usize, k: usize) -> (VarMap, VarMap, MlmModel) {
        let (frozen_vm, enc) = tiny_encoder(kind);
        let shape = MlmShape {
            models: p,
            slot_tokens: k,
            trainable_layers: n,
        };
        let vm = VarMap::new();
        seed_from_backbone(&vm, &tensors(&frozen_vm), &enc, shape).expect("seed");
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
        let b = stack_layouts(&layouts, sp.pad, &Device::Cpu).expect("stack");
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
        assert!(sp.check_prompt(&prompt).is_ok());
        assert_eq!(
            sp.check_prompt(&[7, 3]),
            Err(MlmTokenError::NoLeadingCls {
                cls: 2,
                found: Some(7)
            })
        );
    }

    #[test]
    fn padding_uses_the_tokenizers_pad_id() -> Result<()> {
        let short = MlmLayout {
            ids: vec![2, 3],
            targets: vec![],
        };
        let long = MlmLayout {
            ids: vec![2, 5, 6, 3],
            targets: vec![],
        };
        let b = stack_layouts(&[short, long], 39, &Device::Cpu)?;
        assert_eq!(b.ids.to_vec2::<u32>()?[0], vec![2, 3, 39, 39]);
        assert_eq!(b.keep.to_vec2::<u8>()?[0], vec![1, 1, 0, 0]);
        Ok(())
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
        // ModernBERT: 1 = global layer 3; 2 = local layer 2 too; 4 = layer 0 (no attn_norm)
        // and the embeddings.
        for (kind, ns) in [
            (EncoderKind::Bert, vec![1, 3]),
            (EncoderKind::ModernBert, vec![1, 2, 4]),
        ] {
            for n in ns {
                let (frozen, trainable, m) = model(kind, n, 3, 4);
                let (batch, labels) = toy_batch(3, 4, 0.5);
                let (loss, _, ce) = m.loss(&batch, &labels)?;
                assert!(ce > 0.0);
                let grads = loss.backward()?;
                let data = trainable.data().lock().expect("lock");
                for (name, var) in data.iter() {
                    let g = grads.get(var).unwrap_or_else(|| {
                        panic!("{name} (trainable, {kind} n={n}) got no gradient")
                    });
                    let s = g.abs()?.sum_all()?.to_scalar::<f32>()?;
                    assert!(s > 0.0, "{name} gradient is zero ({kind} n={n})");
                    // Fused weights: each block has its own path (q and k through rope, the
                    // GeGLU input through the activation), so each must get a gradient.
                    let blocks = if name.ends_with("Wqkv.weight") {
                        3
                    } else if name.ends_with("Wi.weight") {
                        2
                    } else {
                        1
                    };
                    for (i, block) in g.chunk(blocks, 0)?.iter().enumerate() {
                        let s = block.abs()?.sum_all()?.to_scalar::<f32>()?;
                        assert!(s > 0.0, "{name} block {i} gradient is zero ({kind} n={n})");
                    }
                }
                // Every upper layer weight is trainable: count them against the backbone's.
                let per_layer = frozen
                    .data()
                    .lock()
                    .expect("lock")
                    .keys()
                    .filter(|k| k.starts_with("encoder.layer.1.") || k.starts_with("layers.1."))
                    .count();
                let upper = data.keys().filter(|k| k.starts_with("upper.")).count();
                let first_has_no_attn_norm = usize::from(kind == EncoderKind::ModernBert && n == 4);
                assert_eq!(
                    upper,
                    n * per_layer - first_has_no_attn_norm,
                    "{kind} n={n}"
                );
                assert_eq!(
                    data.keys().any(|k| k.starts_with("embeddings.")),
                    n == m.frozen.num_layers()
                );
                for (name, var) in frozen.data().lock().expect("lock").iter() {
                    assert!(
                        grads.get(var).is_none(),
                        "{name} is frozen but got a gradient ({kind} n={n})"
                    );
                }
            }
        }
        Ok(())
    }

    #[test]
    fn modernbert_seeds_final_norm_and_the_checkpoints_masked_token_head() -> Result<()> {
        let (frozen, trainable, _) = model(EncoderKind::ModernBert, 1, 2, 3);
        let f = tensors(&frozen);
        let t = tensors(&trainable);
        let same = |a: &str, b: &str| -> Result<f32> {
            (&t[a] - &f[b])?.abs()?.max_all()?.to_scalar::<f32>()
        };
        assert_eq!(same("mlm.dense.weight", "head.dense.weight")?, 0.0);
        assert_eq!(same("mlm.norm.weight", "head.norm.weight")?, 0.0);
        assert_eq!(same("mlm_bias", "decoder.bias")?, 0.0);
        assert_eq!(same("final_norm.weight", "final_norm.weight")?, 0.0);
        assert_eq!(
            same("upper.0.attn.Wqkv.weight", "layers.3.attn.Wqkv.weight")?,
            0.0
        );
        // No biases where the config has none (norm_bias, classifier_bias, attention_bias false).
        assert!(!t.contains_key("mlm.dense.bias") && !t.contains_key("mlm.norm.bias"));
        assert!(!t
            .keys()
            .any(|k| k.starts_with("upper.") && k.ends_with(".bias")));
        Ok(())
    }

    #[test]
    fn whole_pool_is_scored_in_one_pass_without_responses() -> Result<()> {
        for kind in KINDS {
            for n in [1, 3] {
                let (_, _, m) = model(kind, n, 4, 3);
                let sp = special(4);
                let layouts: Vec<_> = [[2u32, 5, 3].as_slice(), &[2, 6, 7, 8, 3]]
                    .iter()
                    .map(|p| layout(p, None, 3, 1.0, &sp))
                    .collect();
                let b = stack_layouts(&layouts, sp.pad, &Device::Cpu)?;
                // 21 positions: longer than the tiny ModernBERT's window of 8.
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
                assert!(diff < 1e-4, "{kind} n={n}: {diff}");
            }
        }
        Ok(())
    }

    #[test]
    fn loss_decreases_on_a_toy_task() -> Result<()> {
        for kind in KINDS {
            let (_, vm, m) = model(kind, 2, 3, 4);
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
            assert!(b1 < 0.6 * b0, "{kind}: bce {b0} -> {b1}");
            assert!(c1 < c0, "{kind}: ce {c0} -> {c1}");
        }
        Ok(())
    }

    #[test]
    fn cross_entropy_matches_closed_form() -> Result<()> {
        let logits = Tensor::new(&[[1f32, 2., 3.], [0., 0., 0.]], &Device::Cpu)?;
        let t = Tensor::new(&[2u32, 0], &Device::Cpu)?;
        let got = ops::cross_entropy(&logits, &t)?.to_scalar::<f32>()?;
        let l0 = (1f32.exp() + 2f32.exp() + 3f32.exp()).ln() - 3.0;
        let l1 = 3f32.ln();
        assert!((got - (l0 + l1) / 2.0).abs() < 1e-5);
        let _ = Var::from_tensor(&logits)?;
        Ok(())
    }
}
