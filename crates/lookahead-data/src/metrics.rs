//! Router metrics over "decisions": for each record, the index (into the pool) of the chosen model.
//! Any router plugs in by producing decisions (or a prediction matrix, argmax'ed by [`argmax`]).
//!
//! Every quality number is a mean *scaled* score (0–100 via the source's `score_range`), computed
//! per source and then averaged with equal weight over sources (so MATH's 3.5k prompts do not
//! drown MT-Bench's 60).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{DataError, Manifest, Pool, PoolRecord};

/// What routers are judged on: per record, its source and each pool model's scaled score.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalSet {
    models: Vec<String>,
    sources: Vec<String>,
    items: Vec<EvalItem>,
}

/// One record of an [`EvalSet`].
#[derive(Debug, Clone, PartialEq)]
pub struct EvalItem {
    pub id: String,
    /// Index into [`EvalSet::sources`].
    pub source: usize,
    /// Scaled (0–100) score of each pool model, in pool order.
    pub scaled: Vec<f64>,
}

impl EvalSet {
    /// Scales each record's pool scores with its source's range from the manifest.
    pub fn new(
        pool: &Pool,
        records: &[PoolRecord],
        manifest: &Manifest,
        manifest_path: &std::path::Path,
    ) -> Result<Self, DataError> {
        let mut rows = Vec::with_capacity(records.len());
        for r in records {
            let range = manifest.source(&r.source, manifest_path)?.score_range;
            if r.responses.len() != pool.len() {
                return Err(DataError::Eval(format!(
                    "record {} has {} responses for a pool of {}",
                    r.id,
                    r.responses.len(),
                    pool.len()
                )));
            }
            rows.push((
                r.id.clone(),
                r.source.clone(),
                crate::labels::scaled_scores(&r.scores(), range),
            ));
        }
        Self::from_scaled(pool.models().to_vec(), rows)
    }

    /// Builds a set from already scaled rows `(id, source, scores in model order)`.
    pub fn from_scaled(
        models: Vec<String>,
        rows: Vec<(String, String, Vec<f64>)>,
    ) -> Result<Self, DataError> {
        if models.is_empty() {
            return Err(DataError::Eval("no models".into()));
        }
        let mut sources: Vec<String> = rows.iter().map(|(_, s, _)| s.clone()).collect();
        sources.sort();
        sources.dedup();
        let mut items = Vec::with_capacity(rows.len());
        for (id, source, scaled) in rows {
            if scaled.len() != models.len() || scaled.iter().any(|s| !s.is_finite()) {
                return Err(DataError::Eval(format!(
                    "record {id}: needs {} finite scores, got {:?}",
                    models.len(),
                    scaled
                )));
            }
            let source = sources.binary_search(&source).map_err(|_| {
                DataError::Eval(format!("record {id}: source {source:?} not indexed"))
            })?;
            items.push(EvalItem { id, source, scaled });
        }
        Ok(Self {
            models,
            sources,
            items,
        })
    }

    pub fn models(&self) -> &[String] {
        &self.models
    }

    /// Sources present, sorted.
    pub fn sources(&self) -> &[String] {
        &self.sources
    }

    pub fn items(&self) -> &[EvalItem] {
        &self.items
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Records per source.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        let mut n = vec![0usize; self.sources.len()];
        for it in &self.items {
            n[it.source] += 1;
        }
        self.sources.iter().cloned().zip(n).collect()
    }

    fn check(&self, decisions: &[usize]) -> Result<(), DataError> {
        if decisions.len() != self.items.len() {
            return Err(DataError::Eval(format!(
                "{} decisions for {} records",
                decisions.len(),
                self.items.len()
            )));
        }
        if let Some(&d) = decisions.iter().find(|&&d| d >= self.models.len()) {
            return Err(DataError::Eval(format!(
                "decision {d} out of range for a pool of {}",
                self.models.len()
            )));
        }
        Ok(())
    }

    /// Per-source mean of `value(item)`, then the equal-weight average over sources.
    fn per_source(&self, value: impl Fn(usize, &EvalItem) -> f64) -> PerSource {
        let mut sum = vec![0.0; self.sources.len()];
        let mut n = vec![0usize; self.sources.len()];
        for (i, it) in self.items.iter().enumerate() {
            sum[it.source] += value(i, it);
            n[it.source] += 1;
        }
        let by_source: BTreeMap<String, f64> = self
            .sources
            .iter()
            .enumerate()
            .filter(|&(s, _)| n[s] > 0)
            .map(|(s, name)| (name.clone(), sum[s] / n[s] as f64))
            .collect();
        PerSource::from_map(by_source)
    }
}

/// A metric per source plus its equal-weight average over sources.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerSource {
    pub by_source: BTreeMap<String, f64>,
    pub average: f64,
}

impl PerSource {
    fn from_map(by_source: BTreeMap<String, f64>) -> Self {
        let average = if by_source.is_empty() {
            0.0
        } else {
            by_source.values().sum::<f64>() / by_source.len() as f64
        };
        Self { by_source, average }
    }

    pub fn get(&self, source: &str) -> Option<f64> {
        self.by_source.get(source).copied()
    }
}

/// Index of the largest value; the first one on ties (pool order breaks ties). `None` if empty
/// or all NaN.
pub fn argmax(values: &[f64]) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, &v) in values.iter().enumerate() {
        if v.is_nan() {
            continue;
        }
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i)
}

/// Argmax of each prediction row.
pub fn decisions_from_predictions(predictions: &[Vec<f64>]) -> Result<Vec<usize>, DataError> {
    predictions
        .iter()
        .enumerate()
        .map(|(i, row)| {
            argmax(row).ok_or_else(|| DataError::Eval(format!("prediction row {i} has no number")))
        })
        .collect()
}

/// Router score: mean scaled score of the chosen models.
pub fn router_score(set: &EvalSet, decisions: &[usize]) -> Result<PerSource, DataError> {
    set.check(decisions)?;
    Ok(set.per_source(|i, it| it.scaled[decisions[i]]))
}

/// Each single model's score (always choosing it), in pool order.
pub fn single_model_scores(set: &EvalSet) -> Vec<PerSource> {
    (0..set.models.len())
        .map(|m| set.per_source(|_, it| it.scaled[m]))
        .collect()
}

/// The oracle's decisions: a best model of each record.
pub fn oracle_decisions(set: &EvalSet) -> Vec<usize> {
    set.items
        .iter()
        .map(|it| argmax(&it.scaled).unwrap_or(0))
        .collect()
}

/// Oracle score: the best model's score on every record.
pub fn oracle_score(set: &EvalSet) -> PerSource {
    set.per_source(|_, it| it.scaled.iter().copied().fold(f64::NEG_INFINITY, f64::max))
}

/// The uniform random router's *expected* score (mean over models of each record): the exact
/// limit of averaging many seeds, without sampling noise.
pub fn random_expected_score(set: &EvalSet) -> PerSource {
    set.per_source(|_, it| it.scaled.iter().sum::<f64>() / it.scaled.len() as f64)
}

/// Decisions of a seeded uniform random router (SplitMix64; identical on every machine).
pub fn random_decisions(set: &EvalSet, seed: u64) -> Vec<usize> {
    let mut state = seed;
    let k = set.models.len() as u64;
    set.items
        .iter()
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            ((z as u128 * k as u128) >> 64) as usize
        })
        .collect()
}

/// Best single model per source, and the one model with the best equal-weight average.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BestSingle {
    /// Source -> (model, its score) of the best model on that source alone.
    pub per_source: BTreeMap<String, (String, f64)>,
    /// Equal-weight average of the per-source bests (an oracle over sources, not prompts).
    pub per_source_average: f64,
    /// The single model with the best average over sources, and that average.
    pub model: String,
    pub average: f64,
}

pub fn best_single(set: &EvalSet) -> BestSingle {
    let singles = single_model_scores(set);
    let mut per_source = BTreeMap::new();
    for source in &set.sources {
        let best = singles
            .iter()
            .enumerate()
            .filter_map(|(m, s)| s.get(source).map(|v| (m, v)))
            .fold(None::<(usize, f64)>, |acc, (m, v)| match acc {
                Some((_, b)) if b >= v => acc,
                _ => Some((m, v)),
            });
        if let Some((m, v)) = best {
            per_source.insert(source.clone(), (set.models[m].clone(), v));
        }
    }
    let averages: Vec<f64> = singles.iter().map(|s| s.average).collect();
    let m = argmax(&averages).unwrap_or(0);
    let per_source_average = if per_source.is_empty() {
        0.0
    } else {
        per_source.values().map(|(_, v)| v).sum::<f64>() / per_source.len() as f64
    };
    BestSingle {
        per_source,
        per_source_average,
        model: set.models[m].clone(),
        average: averages.get(m).copied().unwrap_or(0.0),
    }
}

/// Fraction of records routed to each model (pool order), per source and over all records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Share {
    pub by_source: BTreeMap<String, Vec<f64>>,
    pub overall: Vec<f64>,
}

pub fn routing_share(set: &EvalSet, decisions: &[usize]) -> Result<Share, DataError> {
    set.check(decisions)?;
    let k = set.models.len();
    let mut counts = vec![vec![0usize; k]; set.sources.len()];
    for (it, &d) in set.items.iter().zip(decisions) {
        counts[it.source][d] += 1;
    }
    let frac = |c: &[usize]| {
        let n: usize = c.iter().sum();
        c.iter()
            .map(|&x| if n == 0 { 0.0 } else { x as f64 / n as f64 })
            .collect::<Vec<f64>>()
    };
    let total: Vec<usize> = (0..k).map(|m| counts.iter().map(|c| c[m]).sum()).collect();
    Ok(Share {
        by_source: set
            .sources
            .iter()
            .cloned()
            .zip(counts.iter().map(|c| frac(c)))
            .collect(),
        overall: frac(&total),
    })
}

/// Records where router A's choice scores strictly higher (win) / lower (loss) than B's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WinLoss {
    pub wins: usize,
    pub losses: usize,
    pub ties: usize,
}

/// Win–loss of decisions `a` against `b`, per source and in total.
pub fn win_loss(
    set: &EvalSet,
    a: &[usize],
    b: &[usize],
) -> Result<(BTreeMap<String, WinLoss>, WinLoss), DataError> {
    set.check(a)?;
    set.check(b)?;
    let score = |d: &[usize]| -> Vec<f64> {
        set.items
            .iter()
            .zip(d)
            .map(|(it, &d)| it.scaled[d])
            .collect()
    };
    win_loss_scores(set, &score(a), &score(b))
}

/// Win–loss of per-record scores `a` against `b` (one each per record of `set`).
pub fn win_loss_scores(
    set: &EvalSet,
    a: &[f64],
    b: &[f64],
) -> Result<(BTreeMap<String, WinLoss>, WinLoss), DataError> {
    if a.len() != set.items.len() || b.len() != set.items.len() {
        return Err(DataError::Eval(format!(
            "win-loss: {} and {} scores for {} records",
            a.len(),
            b.len(),
            set.items.len()
        )));
    }
    let mut per = vec![WinLoss::default(); set.sources.len()];
    let mut total = WinLoss::default();
    for ((it, &sa), &sb) in set.items.iter().zip(a).zip(b) {
        for wl in [&mut per[it.source], &mut total] {
            if sa > sb {
                wl.wins += 1;
            } else if sa < sb {
                wl.losses += 1;
            } else {
                wl.ties += 1;
            }
        }
    }
    Ok((set.sources.iter().cloned().zip(per).collect(), total))
}

/// Fraction (0–1) of records where the chosen model is *an* argmax model (ties count as right).
pub fn argmax_accuracy(set: &EvalSet, decisions: &[usize]) -> Result<PerSource, DataError> {
    set.check(decisions)?;
    Ok(set.per_source(|i, it| {
        let best = it.scaled.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if it.scaled[decisions[i]] >= best {
            1.0
        } else {
            0.0
        }
    }))
}

/// Mean price per query of the chosen models (equal-weight over sources, like quality).
pub fn mean_cost(
    set: &EvalSet,
    decisions: &[usize],
    prices: &[f64],
) -> Result<PerSource, DataError> {
    set.check(decisions)?;
    check_prices(set, prices)?;
    Ok(set.per_source(|i, _| prices[decisions[i]]))
}

fn check_prices(set: &EvalSet, prices: &[f64]) -> Result<(), DataError> {
    if prices.len() != set.models.len() || prices.iter().any(|p| !p.is_finite() || *p < 0.0) {
        return Err(DataError::Eval(format!(
            "need one finite, non-negative price per model ({}), got {prices:?}",
            set.models.len()
        )));
    }
    Ok(())
}

/// Decisions maximising `prediction - weight × price` per record.
pub fn cost_aware_decisions(
    predictions: &[Vec<f64>],
    prices: &[f64],
    weight: f64,
) -> Result<Vec<usize>, DataError> {
    let adjusted: Vec<Vec<f64>> = predictions
        .iter()
        .map(|row| {
            row.iter()
                .zip(prices)
                .map(|(p, c)| p - weight * c)
                .collect()
        })
        .collect();
    decisions_from_predictions(&adjusted)
}

/// One point of a quality–cost curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CostPoint {
    pub weight: f64,
    pub quality: f64,
    pub cost: f64,
}

/// Sweeps the cost weight: for each weight, route by `prediction - weight × price` and measure
/// quality and mean cost (both equal-weight over sources).
pub fn quality_cost_curve(
    set: &EvalSet,
    predictions: &[Vec<f64>],
    prices: &[f64],
    weights: &[f64],
) -> Result<Vec<CostPoint>, DataError> {
    check_prices(set, prices)?;
    weights
        .iter()
        .map(|&weight| {
            let d = cost_aware_decisions(predictions, prices, weight)?;
            Ok(CostPoint {
                weight,
                quality: router_score(set, &d)?.average,
                cost: mean_cost(set, &d, prices)?.average,
            })
        })
        .collect()
}

/// Weights for [`quality_cost_curve`]: 0, then a geometric grid around the scale where the price
/// spread equals the typical spread of predictions across models (so the sweep spans "ignore
/// cost" to "always cheapest" whatever the prediction units).
pub fn default_cost_weights(predictions: &[Vec<f64>], prices: &[f64]) -> Vec<f64> {
    let price_spread = prices.iter().copied().fold(f64::NEG_INFINITY, f64::max)
        - prices.iter().copied().fold(f64::INFINITY, f64::min);
    let mut spreads: Vec<f64> = predictions
        .iter()
        .map(|r| {
            r.iter().copied().fold(f64::NEG_INFINITY, f64::max)
                - r.iter().copied().fold(f64::INFINITY, f64::min)
        })
        .filter(|s| s.is_finite() && *s > 0.0)
        .collect();
    spreads.sort_by(f64::total_cmp);
    let typical = spreads.get(spreads.len() / 2).copied().unwrap_or(1.0);
    if price_spread.is_nan() || price_spread <= 0.0 {
        return vec![0.0];
    }
    let scale = typical / price_spread;
    std::iter::once(0.0)
        .chain((-8..=8).map(|k| scale * 2f64.powf(k as f64 / 2.0)))
        .collect()
}

/// The `q`-quantile (`0..=1`, nearest rank) of `sorted` values, e.g. p50 / p99 of latencies in
/// the bench and demo reports; the default value (0, `Duration::ZERO`) when there are none.
pub fn percentile<T: Copy + Default>(sorted: &[T], q: f64) -> T {
    let Some(last) = sorted.len().checked_sub(1) else {
        return T::default();
    };
    sorted[((last as f64 * q).round() as usize).min(last)]
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::percentile;

    #[test]
    fn percentile_takes_the_nearest_rank_and_zero_when_empty() {
        let ms: Vec<f64> = (1..=101).map(f64::from).collect();
        assert_eq!(percentile(&ms, 0.5), 51.0);
        assert_eq!(percentile(&ms, 0.99), 100.0);
        assert_eq!(percentile(&ms, 1.0), 101.0);
        assert_eq!(percentile(&ms, 0.0), 1.0);
        assert_eq!(percentile::<f64>(&[], 0.5), 0.0);
        let lat = [Duration::from_millis(1), Duration::from_millis(3)];
        assert_eq!(percentile(&lat, 0.5), Duration::from_millis(3));
        assert_eq!(percentile::<Duration>(&[], 0.99), Duration::ZERO);
    }
}
