//! The trainable part of the lite router (and of the MLC baseline): upper encoder layers over
//! cached lower-layer states, candidate identity slots, and the routing / reconstruction heads.
//!
//! Lite input layout (per prompt): `[prompt states ; slot_1 ; ... ; slot_P]`, where slot `t` is
//! `identity_t` followed by `K` positions holding candidate `t`'s cached response states, or
//! `identity_t` where masked (or padding). A learned per-position embedding is added to every slot
//! position so masked positions stay distinguishable. The reconstruction head predicts each masked response state
//! from that position's output. At inference every slot is fully masked, so the slots are the same
//! constant for every prompt and one pass scores the whole pool without any response.
//! The routing logits are `Linear(hidden -> P)` on `[CLS]` (the paper's MLM head, which sees the
//! slots through attention) plus a shared `Linear(hidden -> 1)` on each slot's first position.
//!
//! MLC: the same upper layers over the prompt only; logits = `Linear(hidden -> P)` on `[CLS]`.

use candle_core::{DType, Device, Module, Result, Tensor, Var, D};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

pub use crate::artifact::SlotDesign;
use crate::backbones::bert::{BertConfig, BertLayer};
use crate::kernels::attention::additive_mask;
use crate::kernels::ops::{self, Mode};
use crate::nn::Linear;

/// Which trainable model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpperKind {
    Lite,
    Mlc,
}

/// Shape of the trainable part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpperShape {
    pub kind: UpperKind,
    /// Lite: how slots and prompt attend (MLC ignores it).
    pub design: SlotDesign,
    /// Frozen backbone layers below (their states are the input).
    pub frozen_layers: usize,
    pub trainable_layers: usize,
    /// K: response positions per candidate slot (lite only).
    pub slot_tokens: usize,
    pub models: usize,
}

/// Upper layers and heads.
pub struct UpperModel {
    pub shape: UpperShape,
    layers: Vec<BertLayer>,
    /// `[P, H]` candidate identity embeddings (lite).
    identity: Option<Tensor>,
    /// `[1 + K, H]` slot position embeddings (lite).
    slot_pos: Option<Tensor>,
    /// `H -> P` on `[CLS]` (lite and MLC, as in the paper's MLM head).
    route: Linear,
    /// Lite: `H -> 1` shared over slots, added to the `[CLS]` logits: a direct path from each
    /// candidate's slot.
    route_slot: Option<Linear>,
    /// Lite: `H -> H`, predicts masked response states.
    recon: Option<Linear>,
}

/// What one forward pass returns.
pub struct UpperOutput {
    /// `[B, P]` routing logits.
    pub logits: Tensor,
    /// `[B, P, K, H]` predicted response states (lite).
    pub reconstruction: Option<Tensor>,
}

/// Copies the backbone's layers `frozen..frozen + n` into `varmap` as `upper.{i}.*` trainable
/// variables (the initialisation of the upper layers).
pub fn seed_upper_from_backbone(
    varmap: &VarMap,
    backbone_tensors: &std::collections::HashMap<String, Tensor>,
    frozen: usize,
    n: usize,
) -> Result<()> {
    let mut data = varmap
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("varmap lock poisoned".into()))?;
    for i in 0..n {
        let src_prefix = format!("encoder.layer.{}.", frozen + i);
        let mut found = false;
        for (name, t) in backbone_tensors {
            let rest = name
                .strip_prefix(&src_prefix)
                .or_else(|| name.strip_prefix(&format!("bert.{src_prefix}")));
            if let Some(rest) = rest {
                found = true;
                data.insert(format!("upper.{i}.{rest}"), Var::from_tensor(t)?);
            }
        }
        if !found {
            candle_core::bail!(
                "backbone has no layer {} to initialise upper layer {i}",
                frozen + i
            );
        }
    }
    Ok(())
}

impl UpperModel {
    /// Switches the upper layers to int8 weights for inference (see [`crate::kernels::quant`]).
    pub fn quantize(&mut self) -> Result<()> {
        self.layers.iter_mut().try_for_each(BertLayer::quantize)
    }

    /// Builds the model from `vb` (a seeded [`VarMap`] when training, the artifact when loading).
    /// Parameters absent from a `VarMap`-backed `vb` are created with a fresh initialisation.
    pub fn new(vb: VarBuilder, cfg: &BertConfig, shape: UpperShape) -> Result<Self> {
        let h = cfg.hidden_size;
        let layers = (0..shape.trainable_layers)
            .map(|i| BertLayer::load(vb.pp("upper").pp(i), cfg))
            .collect::<Result<Vec<_>>>()?;
        let p = shape.models;
        Ok(match shape.kind {
            UpperKind::Lite => Self {
                shape,
                layers,
                identity: Some(vb.get_with_hints(
                    (p, h),
                    "identity",
                    candle_nn::Init::Randn {
                        mean: 0.,
                        stdev: 0.5,
                    },
                )?),
                slot_pos: Some(vb.get_with_hints(
                    (1 + shape.slot_tokens, h),
                    "slot_pos",
                    candle_nn::Init::Randn {
                        mean: 0.,
                        stdev: 0.02,
                    },
                )?),
                route: Linear::init(vb.pp("route"), h, p)?,
                route_slot: Some(Linear::init(vb.pp("route_slot"), h, 1)?),
                recon: Some(Linear::init(vb.pp("recon"), h, h)?),
            },
            UpperKind::Mlc => Self {
                shape,
                layers,
                identity: None,
                slot_pos: None,
                route: Linear::init(vb.pp("route"), h, p)?,
                route_slot: None,
                recon: None,
            },
        })
    }

    /// The slot block `[B, P * (1 + K), H]`. `responses`: `[B, P, K, H]` states with `visible`
    /// `[B, P, K]` (1 = show the state, 0 = identity); `None` = fully masked (inference).
    fn slots(&self, batch: usize, responses: Option<(&Tensor, &Tensor)>) -> Result<Tensor> {
        let (identity, slot_pos) = match (&self.identity, &self.slot_pos) {
            (Some(i), Some(s)) => (i, s),
            _ => candle_core::bail!("slots are a lite-router feature"),
        };
        let (p, h) = identity.dims2()?;
        let k = self.shape.slot_tokens;
        let ident = identity.reshape((1, p, 1, h))?;
        let body = match responses {
            Some((states, visible)) => {
                let v = visible.to_dtype(DType::F32)?.unsqueeze(D::Minus1)?;
                let shown = states.broadcast_mul(&v)?;
                let hidden = ident.broadcast_mul(&(v.neg()? + 1.0)?)?;
                (shown + hidden)?
            }
            None => ident.broadcast_as((batch, p, k, h))?.contiguous()?,
        };
        let head = ident.broadcast_as((batch, p, 1, h))?.contiguous()?;
        let slots = Tensor::cat(&[&head, &body], 2)?;
        let slots = slots.broadcast_add(&slot_pos.reshape((1, 1, 1 + k, h))?)?;
        slots.reshape((batch, p * (1 + k), h))
    }

    /// All layers, then the output rows `rows`; at inference the last layer computes only those
    /// (training keeps the full pass: every row carries gradient to the layers below).
    fn run_layers(
        &self,
        mut x: Tensor,
        mask: &Tensor,
        rows: &Tensor,
        mode: Mode,
    ) -> Result<Tensor> {
        let n = self.layers.len();
        for (i, layer) in self.layers.iter().enumerate() {
            let last_inference = i + 1 == n && mode == Mode::Inference;
            x = layer.forward_rows(&x, last_inference.then_some(rows), Some(mask), mode)?;
        }
        if n == 0 || mode != Mode::Inference {
            x = x.index_select(rows, 1)?;
        }
        Ok(x)
    }

    /// `prompt`: `[B, T, H]` lower-layer states, `prompt_keep`: `[B, T]` 0/1.
    pub fn forward(
        &self,
        prompt: &Tensor,
        prompt_keep: &Tensor,
        responses: Option<(&Tensor, &Tensor)>,
        mode: Mode,
    ) -> Result<UpperOutput> {
        let (b, t, h) = prompt.dims3()?;
        let keep = prompt_keep.to_dtype(DType::F32)?;
        match self.shape.kind {
            UpperKind::Mlc => {
                let mask = additive_mask(&keep)?;
                // Only [CLS] of the last layer is read.
                let rows = Tensor::new(&[0u32], prompt.device())?;
                let x = self.run_layers(prompt.clone(), &mask, &rows, mode)?;
                let cls = x.narrow(1, 0, 1)?.squeeze(1)?;
                Ok(UpperOutput {
                    logits: self.route.forward(&cls)?,
                    reconstruction: None,
                })
            }
            UpperKind::Lite if self.shape.design == SlotDesign::Asymmetric => {
                self.forward_asymmetric(prompt, &keep, responses, mode)
            }
            UpperKind::Lite => {
                let p = self.shape.models;
                let k = self.shape.slot_tokens;
                let slots = self.slots(b, responses)?;
                let mut x = Tensor::cat(&[prompt, &slots], 1)?;
                let keep = Tensor::cat(
                    &[
                        &keep,
                        &Tensor::ones((b, p * (1 + k)), DType::F32, prompt.device())?,
                    ],
                    1,
                )?;
                let mask = additive_mask(&keep)?;
                if responses.is_none() && mode == Mode::Inference {
                    // Fully masked inference reads [CLS] and each slot's first position only:
                    // the last layer computes just those 1 + P rows.
                    let mut rows = vec![0u32];
                    rows.extend((0..p).map(|j| (t + j * (1 + k)) as u32));
                    let rows = Tensor::new(rows.as_slice(), prompt.device())?;
                    let y = self.run_layers(x, &mask, &rows, mode)?;
                    let cls = y.narrow(1, 0, 1)?.squeeze(1)?;
                    let mut logits = self.route.forward(&cls)?;
                    if let Some(slot_head) = &self.route_slot {
                        let first = y.narrow(1, 1, p)?;
                        logits = (logits + slot_head.forward(&first)?.squeeze(D::Minus1)?)?;
                    }
                    return Ok(UpperOutput {
                        logits,
                        reconstruction: None,
                    });
                }
                for layer in &self.layers {
                    x = layer.forward(&x, Some(&mask), mode)?;
                }
                let out = x.narrow(1, t, p * (1 + k))?.reshape((b, p, 1 + k, h))?;
                let cls = x.narrow(1, 0, 1)?.squeeze(1)?;
                let mut logits = self.route.forward(&cls)?;
                if let Some(slot_head) = &self.route_slot {
                    let first = out.narrow(2, 0, 1)?.squeeze(2)?;
                    logits = (logits + slot_head.forward(&first)?.squeeze(D::Minus1)?)?;
                }
                Ok(UpperOutput {
                    logits,
                    reconstruction: self.reconstruct(&out, responses.is_some())?,
                })
            }
        }
    }
}

impl UpperModel {
    /// Lite with [`SlotDesign::Asymmetric`]: per layer, the prompt rows attend to the prompt
    /// only and the slot rows to prompt and slots (a non-symmetric mask, computed as two row sets
    /// of the same layer). Logits = MLC's `[CLS]` head + the slot head on each slot's mean
    /// response position.
    fn forward_asymmetric(
        &self,
        prompt: &Tensor,
        keep: &Tensor,
        responses: Option<(&Tensor, &Tensor)>,
        mode: Mode,
    ) -> Result<UpperOutput> {
        let (b, t, h) = prompt.dims3()?;
        let (p, k) = (self.shape.models, self.shape.slot_tokens);
        let s = p * (1 + k);
        let prompt_mask = additive_mask(keep)?;
        let all_keep = Tensor::cat(
            &[keep, &Tensor::ones((b, s), DType::F32, prompt.device())?],
            1,
        )?;
        let all_mask = additive_mask(&all_keep)?;
        let slot_rows: Vec<u32> = (t..t + s).map(|i| i as u32).collect();
        let slot_rows = Tensor::new(slot_rows.as_slice(), prompt.device())?;
        let cls_row = Tensor::new(&[0u32], prompt.device())?;
        let (mut x, mut y) = (prompt.clone(), self.slots(b, responses)?);
        let n = self.layers.len();
        for (i, layer) in self.layers.iter().enumerate() {
            let both = Tensor::cat(&[&x, &y], 1)?;
            y = layer.forward_rows(&both, Some(&slot_rows), Some(&all_mask), mode)?;
            // The last layer's prompt rows matter only through [CLS] at inference.
            let rows = (i + 1 == n && mode == Mode::Inference).then_some(&cls_row);
            x = layer.forward_rows(&x, rows, Some(&prompt_mask), mode)?;
        }
        let cls = x.narrow(1, 0, 1)?.squeeze(1)?;
        let out = y.reshape((b, p, 1 + k, h))?;
        let mut logits = self.route.forward(&cls)?;
        if let Some(slot_head) = &self.route_slot {
            let foresight = out.narrow(2, 1, k)?.mean(2)?;
            logits = (logits + slot_head.forward(&foresight)?.squeeze(D::Minus1)?)?;
        }
        Ok(UpperOutput {
            logits,
            reconstruction: self.reconstruct(&out, responses.is_some())?,
        })
    }

    /// The reconstruction head over the slots' response positions of `out` (`[B, P, 1 + K, H]`),
    /// when the model has one and responses were given.
    fn reconstruct(&self, out: &Tensor, with_responses: bool) -> Result<Option<Tensor>> {
        let Some(recon) = self.recon.as_ref().filter(|_| with_responses) else {
            return Ok(None);
        };
        let (b, p, slot, h) = out.dims4()?;
        let k = slot - 1;
        let rows = out.narrow(2, 1, k)?.reshape((b, p * k, h))?;
        Ok(Some(recon.forward(&rows)?.reshape((b, p, k, h))?))
    }
}

/// `[B, P, K]` visibility (1 = shown) that masks the last `ceil(rate * K)` positions of every slot
/// (the response's suffix, as in the paper) and every padding position.
pub fn visible_positions(resp_keep: &Tensor, rate: f64) -> Result<Tensor> {
    let (_, _, k) = resp_keep.dims3()?;
    let masked = ((rate * k as f64).ceil() as usize).min(k);
    let shown = k - masked;
    let prefix: Vec<f32> = (0..k).map(|i| if i < shown { 1.0 } else { 0.0 }).collect();
    let prefix = Tensor::from_vec(prefix, (1, 1, k), resp_keep.device())?;
    resp_keep.to_dtype(DType::F32)?.broadcast_mul(&prefix)
}

/// Loss of one lite/MLC batch: `BCE + lambda * reconstruction`, and its two parts.
pub struct Loss {
    pub total: Tensor,
    pub bce: f32,
    pub reconstruction: f32,
}

/// How a reconstruction is scored against its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecLoss {
    /// `1 − cos` against the raw response state ([`SlotDesign::Joint`]).
    Cosine,
    /// Mean squared error against the centred, scaled state ([`SlotDesign::Asymmetric`]): the
    /// zero-started head begins at the per-(model, position) mean, and 1.0 is "no better than it".
    Mse,
}

impl RecLoss {
    pub fn of(design: SlotDesign) -> Self {
        match design {
            SlotDesign::Joint => Self::Cosine,
            SlotDesign::Asymmetric => Self::Mse,
        }
    }

    /// The mean loss over rows of `pred` / `target` (`[N, H]`) weighted by `weights` (`[N]`).
    pub fn masked(self, pred: &Tensor, target: &Tensor, weights: &Tensor) -> Result<Tensor> {
        match self {
            Self::Cosine => ops::masked_cosine_loss(pred, target, weights),
            Self::Mse => {
                let total = weights.sum_all()?.to_scalar::<f32>()?;
                if total <= 0.0 {
                    return Tensor::zeros((), DType::F32, pred.device());
                }
                let per_row = (pred - target)?.sqr()?.mean(D::Minus1)?;
                (per_row * weights)?.sum_all()? / f64::from(total)
            }
        }
    }
}

/// `labels` `[B, P]`; `resp` `[B, P, K, H]` targets (in `rec`'s space), `resp_keep` `[B, P, K]`,
/// `visible` as given to the forward pass. Reconstruction covers masked real response positions
/// only.
pub fn loss(
    out: &UpperOutput,
    labels: &Tensor,
    targets: Option<(&Tensor, &Tensor, &Tensor)>,
    lambda: f64,
    rec: RecLoss,
) -> Result<Loss> {
    let bce = ops::bce_with_logits(&out.logits, labels)?;
    let bce_value = bce.to_scalar::<f32>()?;
    match (&out.reconstruction, targets) {
        (Some(pred), Some((resp, resp_keep, visible))) if lambda > 0.0 => {
            let h = pred.dim(D::Minus1)?;
            let weights = (resp_keep.to_dtype(DType::F32)? - visible)?.flatten_all()?;
            let rec = rec.masked(&pred.reshape(((), h))?, &resp.reshape(((), h))?, &weights)?;
            let rec_value = rec.to_scalar::<f32>()?;
            Ok(Loss {
                total: (bce + (rec * lambda)?)?,
                bce: bce_value,
                reconstruction: rec_value,
            })
        }
        _ => Ok(Loss {
            total: bce,
            bce: bce_value,
            reconstruction: 0.0,
        }),
    }
}

/// Batch of cached states, padded and stacked for one step.
pub struct StateBatch {
    /// `[B, T, H]` f32.
    pub prompt: Tensor,
    /// `[B, T]` f32 0/1.
    pub prompt_keep: Tensor,
    /// `[B, P, K, H]` f32 (lite).
    pub responses: Option<Tensor>,
    /// `[B, P, K]` f32 0/1 (lite).
    pub resp_keep: Option<Tensor>,
}

/// Stacks `[t_i, H]` prompt states (any float dtype) and optional per-candidate `[k_ij <= K, H]`
/// response states into a padded batch on `device`.
pub fn stack_states(
    prompts: &[&Tensor],
    responses: Option<&[Vec<&Tensor>]>,
    k: usize,
    device: &Device,
) -> Result<StateBatch> {
    let h = prompts.first().map(|t| t.dim(1)).transpose()?.unwrap_or(0);
    let t_max = prompts
        .iter()
        .map(|t| t.dim(0))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .max()
        .unwrap_or(1);
    let mut rows = Vec::with_capacity(prompts.len());
    let mut keep = Vec::with_capacity(prompts.len() * t_max);
    for p in prompts {
        let n = p.dim(0)?;
        let p = p.to_dtype(DType::F32)?;
        rows.push(if n < t_max {
            Tensor::cat(
                &[&p, &Tensor::zeros((t_max - n, h), DType::F32, p.device())?],
                0,
            )?
        } else {
            p
        });
        keep.extend((0..t_max).map(|i| if i < n { 1f32 } else { 0. }));
    }
    let prompt = Tensor::stack(&rows, 0)?.to_device(device)?;
    let prompt_keep = Tensor::from_vec(keep, (prompts.len(), t_max), device)?;
    let (responses, resp_keep) = match responses {
        None => (None, None),
        Some(per_prompt) => {
            let p = per_prompt.first().map(Vec::len).unwrap_or(0);
            let mut all = Vec::with_capacity(per_prompt.len() * p);
            let mut keep = Vec::with_capacity(per_prompt.len() * p * k);
            for cands in per_prompt {
                for r in cands {
                    let n = r.dim(0)?.min(k);
                    let r = r.narrow(0, 0, n)?.to_dtype(DType::F32)?;
                    all.push(if n < k {
                        Tensor::cat(
                            &[&r, &Tensor::zeros((k - n, h), DType::F32, r.device())?],
                            0,
                        )?
                    } else {
                        r
                    });
                    keep.extend((0..k).map(|i| if i < n { 1f32 } else { 0. }));
                }
            }
            let b = per_prompt.len();
            (
                Some(
                    Tensor::stack(&all, 0)?
                        .reshape((b, p, k, h))?
                        .to_device(device)?,
                ),
                Some(Tensor::from_vec(keep, (b, p, k), device)?),
            )
        }
    };
    Ok(StateBatch {
        prompt,
        prompt_keep,
        responses,
        resp_keep,
    })
}
