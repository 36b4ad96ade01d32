//! Does lite foresee responses? On held-out prompts, with every response position masked (what
//! serving sees), the reconstruction head's loss against the real response states, next to the
//! loss of the best constant guess: the training mean state per (source, model, position). A
//! reconstruction no better than that constant has learnt nothing about *this* prompt's answer,
//! whatever its raw loss says (most of a raw `1 − cos` is the constant part). The same
//! statistics centre and scale the targets of the asymmetric design ([`ResponseConstant::centre`]).

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};

use super::model::{stack_states, RecLoss, UpperModel};
use crate::artifact::Foresight;
use crate::fit::{Example, TrainError};
use crate::kernels::ops::Mode;
use crate::methods::cached::prompt_states;
use crate::states::{state_key, StateCache, TextKind};

/// Training statistics of the response states: per-(source, model, position) and
/// per-(model, position) means, and the scale of the states around the latter.
pub struct ResponseConstant {
    by_source: HashMap<String, Tensor>,
    /// `[P, K, H]` over every source: the centre of the targets, and the constant for a source the
    /// training set lacks.
    overall: Tensor,
    /// Root mean square of `state − overall` over real positions and dimensions.
    pub scale: f64,
}

fn responses<'c>(
    cache: &'c StateCache,
    e: &Example,
    kind: TextKind,
    empty: &'c Tensor,
) -> Vec<&'c Tensor> {
    e.responses
        .iter()
        .map(|r| cache.get(&state_key(kind, r)).unwrap_or(empty))
        .collect()
}

/// `[B, P, K, H]` response states (entries of `kind`) and `[B, P, K]` keep of `examples`,
/// padded to the kind's K rows.
fn response_batch(
    cache: &StateCache,
    examples: &[Example],
    kind: TextKind,
    h: usize,
) -> Result<Option<(Tensor, Tensor)>, TrainError> {
    let k = kind.response_rows();
    let empty = Tensor::zeros((0, h), DType::F16, &Device::Cpu)?;
    let prompts: Vec<&Tensor> = vec![&empty; examples.len()];
    let resp: Vec<Vec<&Tensor>> = examples
        .iter()
        .map(|e| responses(cache, e, kind, &empty))
        .collect();
    let batch = stack_states(&prompts, Some(&resp), k, &Device::Cpu)?;
    Ok(batch.responses.zip(batch.resp_keep))
}

/// Per-source sums of states and of real positions.
type Sums = HashMap<String, (Tensor, Tensor)>;

fn source_sums(
    train: &[Example],
    cache: &StateCache,
    kind: TextKind,
    h: usize,
) -> Result<Sums, TrainError> {
    let mut sums: Sums = HashMap::new();
    for chunk in train.chunks(64) {
        let Some((states, keep)) = response_batch(cache, chunk, kind, h)? else {
            continue;
        };
        for (i, e) in chunk.iter().enumerate() {
            let (s, n) = (states.get(i)?, keep.get(i)?);
            match sums.get_mut(&e.source) {
                Some((sum, count)) => {
                    *sum = (&*sum + &s)?;
                    *count = (&*count + &n)?;
                }
                None => {
                    sums.insert(e.source.clone(), (s, n));
                }
            }
        }
    }
    Ok(sums)
}

fn mean((sum, count): &(Tensor, Tensor)) -> Result<Tensor, TrainError> {
    Ok(sum.broadcast_div(&(count.unsqueeze(2)? + 1e-6)?)?)
}

impl ResponseConstant {
    /// The statistics of `train`'s cached response states (entries of `kind`, width `h`).
    pub fn fit(
        train: &[Example],
        cache: &StateCache,
        kind: TextKind,
        h: usize,
    ) -> Result<Self, TrainError> {
        let sums = source_sums(train, cache, kind, h)?;
        let mut total: Option<(Tensor, Tensor)> = None;
        let mut by_source = HashMap::new();
        for (source, pair) in &sums {
            by_source.insert(source.clone(), mean(pair)?);
            total = Some(match total {
                None => pair.clone(),
                Some((s, n)) => ((s + &pair.0)?, (n + &pair.1)?),
            });
        }
        let Some(total) = total else {
            return Err(TrainError::Hyper(
                "no cached training response states".into(),
            ));
        };
        let overall = mean(&total)?;
        let (mut sq, mut n) = (0f64, 0f64);
        for chunk in train.chunks(64) {
            if let Some((states, keep)) = response_batch(cache, chunk, kind, h)? {
                let dev = states.broadcast_sub(&overall.unsqueeze(0)?)?;
                let dev = dev.broadcast_mul(&keep.unsqueeze(3)?)?;
                sq += f64::from(dev.sqr()?.sum_all()?.to_scalar::<f32>()?);
                n += f64::from(keep.sum_all()?.to_scalar::<f32>()?) * h as f64;
            }
        }
        let scale = (sq / n.max(1.0)).sqrt().max(1e-6);
        Ok(Self {
            by_source,
            overall,
            scale,
        })
    }

    fn of(&self, source: &str) -> &Tensor {
        self.by_source.get(source).unwrap_or(&self.overall)
    }

    /// `[B, P, K, H]` states as the asymmetric design's targets: minus the per-(model, position)
    /// mean, over the scale.
    pub fn centre(&self, states: &Tensor) -> Result<Tensor, TrainError> {
        Ok((states.broadcast_sub(&self.overall.unsqueeze(0)?)? / self.scale)?)
    }

    /// In `rec`'s target space.
    fn target(&self, states: &Tensor, rec: RecLoss) -> Result<Tensor, TrainError> {
        match rec {
            RecLoss::Cosine => Ok(states.clone()),
            RecLoss::Mse => self.centre(states),
        }
    }
}

/// Reconstruction loss of `examples`' fully masked responses by `model`, and the constant's, in
/// the space of `rec`.
pub fn foresight(
    model: &UpperModel,
    cache: &StateCache,
    examples: &[Example],
    (prompt_kind, kind): (TextKind, TextKind),
    constant: &ResponseConstant,
    rec: RecLoss,
) -> Result<Foresight, TrainError> {
    let (mut model_sum, mut const_sum, mut weight) = (0f64, 0f64, 0f64);
    for chunk in examples.chunks(64) {
        let prompts = prompt_states(cache, chunk, prompt_kind)?;
        let h = prompts.first().map(|t| t.dim(1)).transpose()?.unwrap_or(0);
        let Some((states, keep)) = response_batch(cache, chunk, kind, h)? else {
            continue;
        };
        let batch = stack_states(&prompts, None, 0, &Device::Cpu)?;
        let hidden = keep.zeros_like()?;
        let out = model.forward(
            &batch.prompt,
            &batch.prompt_keep,
            Some((&states, &hidden)),
            Mode::Inference,
        )?;
        let Some(pred) = out.reconstruction else {
            continue;
        };
        let constants: Vec<Tensor> = chunk
            .iter()
            .map(|e| constant.of(&e.source).clone())
            .collect();
        let constants = constant.target(&Tensor::stack(&constants, 0)?, rec)?;
        let targets = constant.target(&states, rec)?;
        let w = keep.flatten_all()?;
        let n = f64::from(w.sum_all()?.to_scalar::<f32>()?);
        let flat = |t: &Tensor| t.reshape(((), h));
        let m = rec.masked(&flat(&pred)?, &flat(&targets)?, &w)?;
        let c = rec.masked(&flat(&constants)?, &flat(&targets)?, &w)?;
        model_sum += f64::from(m.to_scalar::<f32>()?) * n;
        const_sum += f64::from(c.to_scalar::<f32>()?) * n;
        weight += n;
    }
    let w = weight.max(1.0);
    Ok(Foresight {
        reconstruction: model_sum / w,
        constant: const_sum / w,
    })
}
