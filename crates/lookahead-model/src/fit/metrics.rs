//! How good a router's choices are on held-out examples: router, oracle and best-single
//! quality (0..100), per source, and the routing BCE.

use candle_core::{Device, Tensor};

use super::request::{Example, TrainError};
use crate::artifact::{Metrics, SourceMetrics};
use crate::kernels::ops::bce_with_logits;
use crate::select::select;

/// Metrics of predicted probabilities `probs` (one row per example) whose logits are `logits`
/// (`[examples, models]`): [`metrics`] with the routing BCE against the paper labels.
pub fn scored_metrics(
    probs: &[Vec<f32>],
    logits: &Tensor,
    examples: &[Example],
    models: &[String],
) -> Result<Metrics, TrainError> {
    let labels: Vec<f32> = examples.iter().flat_map(|e| e.labels.clone()).collect();
    let labels = Tensor::from_vec(labels, logits.shape(), &Device::Cpu)?;
    let bce = bce_with_logits(&logits.to_device(&Device::Cpu)?, &labels)?.to_scalar::<f32>()?;
    Ok(metrics(probs, examples, models, Some(f64::from(bce))))
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
    let mut choices = Vec::with_capacity(examples.len());
    for (pred, e) in predictions.iter().zip(examples) {
        let chosen = select(pred, None, 0.0).unwrap_or(0);
        choices.push(chosen);
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
        foresight: None,
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
        choices,
        predictions: predictions.to_vec(),
    }
}
