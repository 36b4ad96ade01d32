//! The evaluation summary of one router on an [`EvalSet`]: the router's score with every baseline
//! on the same records. Its JSON form is what `lookahead eval --json` prints:
//! `{"average", "sources": {NAME: {"n", "router", "oracle", "random", "best_single", "share"}},
//!   "best_single": {"model", "average"}, "oracle", "random"}` plus the extra fields below.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::metrics::{
    argmax_accuracy, best_single, default_cost_weights, mean_cost, oracle_decisions, oracle_score,
    quality_cost_curve, random_expected_score, router_score, routing_share, single_model_scores,
    CostPoint, EvalSet,
};
use crate::{Comparison, DataError};

/// The router's results next to the baselines, per source and averaged (equal weight).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Router name (e.g. `oracle`, `fixed:MODEL`, an artifact's method).
    pub router: String,
    /// The pool, in decision order.
    pub models: Vec<String>,
    /// Records evaluated.
    pub n: usize,
    /// Router score: equal-weight average over sources of the mean scaled score (0–100).
    pub average: f64,
    pub sources: BTreeMap<String, SourceEvaluation>,
    /// The single model with the best average, and that average.
    pub best_single: BestSingleSummary,
    /// Equal-weight average of the per-source best single models.
    pub best_single_per_source: f64,
    pub oracle: f64,
    /// Expected score of uniform random routing.
    pub random: f64,
    /// Each single model's average.
    pub singles: BTreeMap<String, f64>,
    /// Fraction of all records routed to each model.
    pub share: BTreeMap<String, f64>,
    /// Fraction of records where the router picked a best model (equal weight over sources).
    pub accuracy: f64,
    /// Price per query of each model, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prices: Option<BTreeMap<String, f64>>,
    /// Mean price per query of the router's choices (equal weight over sources), when priced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
    /// Mean price per query of the oracle's choices, when priced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oracle_cost: Option<f64>,
    /// Router quality vs cost as the cost weight grows, when priced and predictions exist.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quality_cost: Vec<CostPoint>,
    /// The router against the honest baselines and other runs, with bootstrap intervals
    /// (filled by the caller, e.g. [`crate::honest_comparisons`]; empty from `compute`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub comparisons: Vec<Comparison>,
}

/// One source's numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceEvaluation {
    pub n: usize,
    pub router: f64,
    pub oracle: f64,
    pub random: f64,
    /// Score of the best single model on this source.
    pub best_single: f64,
    pub best_single_model: String,
    /// Fraction of this source's records routed to each model.
    pub share: BTreeMap<String, f64>,
    pub singles: BTreeMap<String, f64>,
    pub accuracy: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BestSingleSummary {
    pub model: String,
    pub average: f64,
}

/// Optional inputs beyond the decisions.
#[derive(Debug, Clone, Copy, Default)]
pub struct EvalExtras<'a> {
    /// The router's per-record prediction rows (pool order), for the quality–cost sweep.
    pub predictions: Option<&'a [Vec<f64>]>,
    /// Price per query of each model (pool order).
    pub prices: Option<&'a [f64]>,
}

impl Evaluation {
    /// Scores `decisions` (chosen model index per record of `set`) against all baselines.
    pub fn compute(
        set: &EvalSet,
        router: &str,
        decisions: &[usize],
        extras: EvalExtras<'_>,
    ) -> Result<Self, DataError> {
        if set.is_empty() {
            return Err(DataError::Eval("no records to evaluate".into()));
        }
        let models = set.models();
        let routed = router_score(set, decisions)?;
        let oracle = oracle_score(set);
        let random = random_expected_score(set);
        let singles = single_model_scores(set);
        let best = best_single(set);
        let share = routing_share(set, decisions)?;
        let accuracy = argmax_accuracy(set, decisions)?;
        let counts = set.counts();
        let by_model = |v: &[f64]| -> BTreeMap<String, f64> {
            models.iter().cloned().zip(v.iter().copied()).collect()
        };

        let mut sources = BTreeMap::new();
        for source in set.sources() {
            let get = |p: &crate::metrics::PerSource| p.get(source).unwrap_or(f64::NAN);
            let (best_model, best_score) = best
                .per_source
                .get(source)
                .cloned()
                .unwrap_or_else(|| (String::new(), f64::NAN));
            sources.insert(
                source.clone(),
                SourceEvaluation {
                    n: counts.get(source).copied().unwrap_or(0),
                    router: get(&routed),
                    oracle: get(&oracle),
                    random: get(&random),
                    best_single: best_score,
                    best_single_model: best_model,
                    share: by_model(share.by_source.get(source).map_or(&[][..], |v| v)),
                    singles: models
                        .iter()
                        .cloned()
                        .zip(singles.iter().map(get))
                        .collect(),
                    accuracy: get(&accuracy),
                },
            );
        }

        let (cost, oracle_cost, quality_cost) = match extras.prices {
            Some(prices) => {
                let cost = mean_cost(set, decisions, prices)?.average;
                let oracle_cost = mean_cost(set, &oracle_decisions(set), prices)?.average;
                let curve = match extras.predictions {
                    Some(pred) => {
                        quality_cost_curve(set, pred, prices, &default_cost_weights(pred, prices))?
                    }
                    None => Vec::new(),
                };
                (Some(cost), Some(oracle_cost), curve)
            }
            None => (None, None, Vec::new()),
        };

        Ok(Self {
            router: router.to_string(),
            models: models.to_vec(),
            n: set.len(),
            average: routed.average,
            sources,
            best_single: BestSingleSummary {
                model: best.model.clone(),
                average: best.average,
            },
            best_single_per_source: best.per_source_average,
            oracle: oracle.average,
            random: random.average,
            singles: models
                .iter()
                .cloned()
                .zip(singles.iter().map(|s| s.average))
                .collect(),
            share: by_model(&share.overall),
            accuracy: accuracy.average,
            prices: extras.prices.map(by_model),
            cost,
            oracle_cost,
            quality_cost,
            comparisons: Vec::new(),
        })
    }
}
