//! The honest baselines of an evaluation: "best model per benchmark" and "best single model"
//! chosen on the records each artifact *trained on*, never on the records it is judged on (the
//! in-sample choice of [`crate::metrics::best_single`] peeks at the answers), and the paired
//! bootstrap interval of the router's gain over each ([`Comparison`]).
//!
//! Who saw what is one slice, `held_out_by`, over the records of an [`EvalSet`]: `Some(g)` means
//! the record is judged and was scored by artifact `g`, which trained on every record of the set
//! that `g` did not hold out; `None` means a training record of every artifact, judged by none.
//! Cross-validation with K folds: every record is `Some(its fold)`. One 80/10/10 holdout: the test
//! records are `Some(0)`, the train and validation records `None`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::bootstrap::{paired_bootstrap, BootstrapOptions, Interval};
use crate::metrics::{argmax, router_score, EvalSet};
use crate::DataError;

/// The honest baselines' choices for the judged records (the `Some` records, in set order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainedChoices {
    /// The model with the best mean on the record's source among its artifact's training records.
    pub per_source: Vec<usize>,
    /// The model with the best equal-weight average over its artifact's training records.
    pub overall: Vec<usize>,
}

/// Per-source, per-model score sums and record counts.
#[derive(Clone)]
struct Sums {
    sum: Vec<Vec<f64>>,
    n: Vec<usize>,
}

impl Sums {
    fn new(sources: usize, models: usize) -> Self {
        Self {
            sum: vec![vec![0.0; models]; sources],
            n: vec![0; sources],
        }
    }

    fn add(&mut self, source: usize, scaled: &[f64]) {
        for (s, v) in self.sum[source].iter_mut().zip(scaled) {
            *s += v;
        }
        self.n[source] += 1;
    }

    /// Each source's per-model means (`None` for a source without records).
    fn means(&self) -> Vec<Option<Vec<f64>>> {
        self.sum
            .iter()
            .zip(&self.n)
            .map(|(sum, &n)| (n > 0).then(|| sum.iter().map(|s| s / n as f64).collect()))
            .collect()
    }

    /// (best model per source, best model on the equal-weight average) of these records; a source
    /// without records takes the overall choice.
    fn choices(&self, models: usize) -> Option<(Vec<usize>, usize)> {
        let means = self.means();
        let present: Vec<&Vec<f64>> = means.iter().flatten().collect();
        if present.is_empty() {
            return None;
        }
        let average: Vec<f64> = (0..models)
            .map(|m| present.iter().map(|v| v[m]).sum::<f64>() / present.len() as f64)
            .collect();
        let overall = first_best(&average).unwrap_or(0);
        let per_source = means
            .iter()
            .map(|m| m.as_deref().and_then(first_best).unwrap_or(overall))
            .collect();
        Some((per_source, overall))
    }
}

/// Means closer than this (on the 0–100 scale) are a tie: float rounding must not pick the model.
const TIE: f64 = 1e-9;

/// The first model (pool order) whose mean is within [`TIE`] of the best.
fn first_best(means: &[f64]) -> Option<usize> {
    let best = means[argmax(means)?];
    means.iter().position(|&m| m >= best - TIE)
}

impl EvalSet {
    /// Source index of every record, in set order (the strata of [`paired_bootstrap`]).
    pub fn source_indices(&self) -> Vec<usize> {
        self.items().iter().map(|it| it.source).collect()
    }

    /// The scaled score of the chosen model of every record.
    pub fn scores_of(&self, decisions: &[usize]) -> Result<Vec<f64>, DataError> {
        router_score(self, decisions)?;
        Ok(self
            .items()
            .iter()
            .zip(decisions)
            .map(|(it, &d)| it.scaled[d])
            .collect())
    }

    /// The judged records (`held_out_by[i]` is `Some`), in order: the set an evaluation scores.
    pub fn judged(&self, held_out_by: &[Option<usize>]) -> Result<EvalSet, DataError> {
        self.check_held_out(held_out_by)?;
        let rows = self
            .items()
            .iter()
            .zip(held_out_by)
            .filter(|(_, g)| g.is_some())
            .map(|(it, _)| {
                let source = self.sources()[it.source].clone();
                (it.id.clone(), source, it.scaled.clone())
            })
            .collect();
        EvalSet::from_scaled(self.models().to_vec(), rows)
    }

    fn check_held_out(&self, held_out_by: &[Option<usize>]) -> Result<(), DataError> {
        if held_out_by.len() != self.len() {
            return Err(DataError::Eval(format!(
                "{} held-out marks for {} records",
                held_out_by.len(),
                self.len()
            )));
        }
        Ok(())
    }

    /// The honest baselines' choices for each judged record (see the module docs): chosen on
    /// the records its artifact trained on. Ties (means within 1e-9) go to the first model in
    /// pool order.
    pub fn trained_choices(
        &self,
        held_out_by: &[Option<usize>],
    ) -> Result<TrainedChoices, DataError> {
        self.check_held_out(held_out_by)?;
        let (sources, models) = (self.sources().len(), self.models().len());
        let groups: std::collections::BTreeSet<usize> =
            held_out_by.iter().flatten().copied().collect();
        let mut by_artifact = BTreeMap::new();
        for g in groups {
            // Summed directly (not all minus held out), so equal means stay exactly equal.
            let mut trained = Sums::new(sources, models);
            for (it, mark) in self.items().iter().zip(held_out_by) {
                if *mark != Some(g) {
                    trained.add(it.source, &it.scaled);
                }
            }
            let choice = trained.choices(models).ok_or_else(|| {
                DataError::Eval(format!("artifact {g} has no training records in the set"))
            })?;
            by_artifact.insert(g, choice);
        }
        let mut out = TrainedChoices {
            per_source: Vec::new(),
            overall: Vec::new(),
        };
        for (it, g) in self.items().iter().zip(held_out_by) {
            if let Some((per_source, overall)) = g.and_then(|g| by_artifact.get(&g)) {
                out.per_source.push(per_source[it.source]);
                out.overall.push(*overall);
            }
        }
        Ok(out)
    }
}

/// What a [`Comparison`] compares the router with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComparisonKind {
    /// Best model per source, chosen on each artifact's training records.
    HonestBar,
    /// Best single model overall, chosen on each artifact's training records.
    BestSingle,
    /// Another router (`lookahead eval --versus`).
    Versus,
}

/// The router against one baseline on the same judged records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub kind: ComparisonKind,
    /// The baseline's name, e.g. a predictions file.
    pub name: String,
    /// The baseline's equal-weight score on the judged records.
    pub score: f64,
    pub sources: BTreeMap<String, f64>,
    /// Per source, the models the baseline chose and on how many judged records.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub picks: BTreeMap<String, BTreeMap<String, usize>>,
    /// Router − baseline (equal weight) with its paired, source-stratified bootstrap interval.
    pub gain: Interval,
}

impl Comparison {
    /// Compares the router's per-record scores `router` with the baseline's `baseline` on `set`.
    pub fn new(
        set: &EvalSet,
        (kind, name): (ComparisonKind, &str),
        router: &[f64],
        baseline: &[f64],
        options: &BootstrapOptions,
    ) -> Result<Self, DataError> {
        let strata = set.source_indices();
        let gain = paired_bootstrap(&strata, router, baseline, options)?;
        let mut sum = vec![(0.0, 0usize); set.sources().len()];
        for (&s, &b) in strata.iter().zip(baseline) {
            sum[s].0 += b;
            sum[s].1 += 1;
        }
        let sources: BTreeMap<String, f64> = set
            .sources()
            .iter()
            .cloned()
            .zip(sum.iter().map(|(s, n)| s / (*n).max(1) as f64))
            .collect();
        let score = sources.values().sum::<f64>() / sources.len().max(1) as f64;
        Ok(Self {
            kind,
            name: name.to_string(),
            score,
            sources,
            picks: BTreeMap::new(),
            gain,
        })
    }

    /// A baseline given by its decisions; `picks` records which models it chose.
    pub fn of_decisions(
        set: &EvalSet,
        (kind, name): (ComparisonKind, &str),
        router: &[f64],
        decisions: &[usize],
        options: &BootstrapOptions,
    ) -> Result<Self, DataError> {
        let baseline = set.scores_of(decisions)?;
        let mut out = Self::new(set, (kind, name), router, &baseline, options)?;
        for (it, &d) in set.items().iter().zip(decisions) {
            let source = set.sources()[it.source].clone();
            let model = set.models()[d].clone();
            *out.picks
                .entry(source)
                .or_default()
                .entry(model)
                .or_default() += 1;
        }
        Ok(out)
    }
}

/// The router (`decisions` on the judged set) against the two honest baselines.
pub fn honest_comparisons(
    judged: &EvalSet,
    decisions: &[usize],
    choices: &TrainedChoices,
    options: &BootstrapOptions,
) -> Result<Vec<Comparison>, DataError> {
    let router = judged.scores_of(decisions)?;
    Ok(vec![
        Comparison::of_decisions(
            judged,
            (
                ComparisonKind::HonestBar,
                "best model per source, chosen on the training records",
            ),
            &router,
            &choices.per_source,
            options,
        )?,
        Comparison::of_decisions(
            judged,
            (
                ComparisonKind::BestSingle,
                "best single model, chosen on the training records",
            ),
            &router,
            &choices.overall,
            options,
        )?,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(rows: &[(&str, &str, [f64; 2])]) -> EvalSet {
        EvalSet::from_scaled(
            vec!["a".into(), "b".into()],
            rows.iter()
                .map(|(id, s, v)| (id.to_string(), s.to_string(), v.to_vec()))
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn a_record_never_chooses_its_own_bar() {
        // One source; "a" wins r1 by a lot, "b" wins r2 and r3 by a little.
        let s = set(&[
            ("r1", "S", [100.0, 0.0]),
            ("r2", "S", [0.0, 10.0]),
            ("r3", "S", [0.0, 10.0]),
        ]);
        // CV with every record its own fold: r1's artifact saw r2, r3 -> b; the others saw r1 -> a.
        let c = s.trained_choices(&[Some(0), Some(1), Some(2)]).unwrap();
        assert_eq!(c.per_source, vec![1, 0, 0]);
        assert_eq!(c.overall, vec![1, 0, 0]);
        let held = s.judged(&[Some(0), None, Some(1)]).unwrap();
        assert_eq!(held.len(), 2);
    }

    #[test]
    fn float_rounding_does_not_break_a_tie() {
        // a: 0.3 + 0.0, b: 0.1 + 0.2 (0.30000000000000004): equal means, the first model wins.
        let s = set(&[
            ("r1", "S", [0.3, 0.1]),
            ("r2", "S", [0.0, 0.2]),
            ("r3", "S", [0.0, 9.0]),
        ]);
        let c = s.trained_choices(&[None, None, Some(0)]).unwrap();
        assert_eq!(c.per_source, vec![0]);
    }

    #[test]
    fn missing_marks_and_artifacts_without_training_records_are_errors() {
        let s = set(&[("r1", "S", [1.0, 0.0])]);
        assert!(s.trained_choices(&[]).is_err());
        assert!(s.trained_choices(&[Some(0)]).is_err());
    }
}
