//! Paired bootstrap intervals for comparing two routers (or a router and a baseline) on the same
//! records: each resample draws records with replacement *within each source* (a stratified
//! bootstrap, so every resample keeps the sources' sizes), and the gain is recomputed on it with
//! the same weighting as the point estimate. Pairing (both routers scored on the same resampled
//! records) removes the between-record variance the two share, which is most of it.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::DataError;

/// Resamples used when a caller has no reason to pick another number.
pub const DEFAULT_RESAMPLES: usize = 2000;

/// How per-record differences become one number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Weighting {
    /// Mean over sources of each source's mean (the paper's metric; what `lookahead eval` reports).
    EqualWeight,
    /// Mean over all records.
    Pooled,
}

/// A gain `a − b` with its percentile bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interval {
    /// Point estimate on the records themselves.
    pub gain: f64,
    /// Lower end of the interval (the `(1 − level) / 2` quantile of the resampled gains).
    pub lower: f64,
    pub upper: f64,
    /// Confidence level, e.g. 0.95.
    pub level: f64,
    pub resamples: usize,
}

impl Interval {
    /// True when the whole interval lies above zero.
    pub fn excludes_zero_above(&self) -> bool {
        self.lower > 0.0
    }
}

impl std::fmt::Display for Interval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:+.2} [{:+.2}, {:+.2}]",
            self.gain, self.lower, self.upper
        )
    }
}

/// Settings of one bootstrap.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BootstrapOptions {
    pub weighting: Weighting,
    pub resamples: usize,
    /// Two-sided confidence level in (0, 1).
    pub level: f64,
    pub seed: u64,
}

impl Default for BootstrapOptions {
    fn default() -> Self {
        Self {
            weighting: Weighting::EqualWeight,
            resamples: DEFAULT_RESAMPLES,
            level: 0.95,
            seed: 0x5eed,
        }
    }
}

/// The per-record differences `a[i] − b[i]`, grouped by source (indices into `sources` give each
/// record's group).
struct Strata {
    groups: Vec<Vec<f64>>,
}

impl Strata {
    fn new(source_of: &[usize], a: &[f64], b: &[f64]) -> Result<Self, DataError> {
        if a.len() != source_of.len() || b.len() != source_of.len() {
            return Err(DataError::Eval(format!(
                "paired bootstrap: {} sources, {} and {} values",
                source_of.len(),
                a.len(),
                b.len()
            )));
        }
        if source_of.is_empty() {
            return Err(DataError::Eval("paired bootstrap: no records".into()));
        }
        let mut by_source: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
        for ((&s, x), y) in source_of.iter().zip(a).zip(b) {
            by_source.entry(s).or_default().push(x - y);
        }
        Ok(Self {
            groups: by_source.into_values().collect(),
        })
    }

    /// The statistic over group sums (`sums[g]` over `groups[g].len()` records).
    fn combine(&self, sums: impl Iterator<Item = f64>, weighting: Weighting) -> f64 {
        let sizes = self.groups.iter().map(Vec::len);
        match weighting {
            Weighting::EqualWeight => {
                let means: Vec<f64> = sums.zip(sizes).map(|(s, n)| s / n as f64).collect();
                means.iter().sum::<f64>() / means.len() as f64
            }
            Weighting::Pooled => {
                let total: usize = sizes.sum();
                sums.sum::<f64>() / total as f64
            }
        }
    }

    fn point(&self, weighting: Weighting) -> f64 {
        self.combine(self.groups.iter().map(|g| g.iter().sum()), weighting)
    }

    fn resample(&self, rng: &mut StdRng, weighting: Weighting) -> f64 {
        let sums = self.groups.iter().map(|g| {
            (0..g.len())
                .map(|_| g[rng.random_range(0..g.len())])
                .sum::<f64>()
        });
        // Collect first: the closure borrows rng mutably while combine iterates.
        let sums: Vec<f64> = sums.collect();
        self.combine(sums.into_iter(), weighting)
    }
}

/// Paired, source-stratified bootstrap of the gain `a − b`, where `a[i]` and `b[i]` are the two
/// routers' scores on record `i` and `source_of[i]` its source.
pub fn paired_bootstrap(
    source_of: &[usize],
    a: &[f64],
    b: &[f64],
    options: &BootstrapOptions,
) -> Result<Interval, DataError> {
    if !(options.level > 0.0 && options.level < 1.0) || options.resamples == 0 {
        return Err(DataError::Eval(format!(
            "paired bootstrap: level {} must be in (0, 1) and resamples ({}) > 0",
            options.level, options.resamples
        )));
    }
    let strata = Strata::new(source_of, a, b)?;
    let mut rng = StdRng::seed_from_u64(options.seed);
    let mut gains: Vec<f64> = (0..options.resamples)
        .map(|_| strata.resample(&mut rng, options.weighting))
        .collect();
    gains.sort_by(f64::total_cmp);
    let tail = (1.0 - options.level) / 2.0;
    Ok(Interval {
        gain: strata.point(options.weighting),
        lower: quantile(&gains, tail),
        upper: quantile(&gains, 1.0 - tail),
        level: options.level,
        resamples: options.resamples,
    })
}

/// Linear-interpolated quantile of sorted values.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    let w = pos - lo as f64;
    sorted[lo] * (1.0 - w) + sorted[hi] * w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_router_always_better_by_one_has_a_tight_interval_at_one() {
        let sources = vec![0, 0, 0, 1, 1];
        let b = vec![10.0, 20.0, 30.0, 40.0, 50.0];
        let a: Vec<f64> = b.iter().map(|x| x + 1.0).collect();
        let i = paired_bootstrap(&sources, &a, &b, &BootstrapOptions::default()).unwrap();
        assert!((i.gain - 1.0).abs() < 1e-12);
        assert!((i.lower - 1.0).abs() < 1e-12 && (i.upper - 1.0).abs() < 1e-12);
        assert!(i.excludes_zero_above());
    }

    #[test]
    fn equal_weight_and_pooled_differ_as_their_definitions_say() {
        // Source 0: three records, gain 3 each; source 1: one record, gain -1.
        let sources = vec![0, 0, 0, 1];
        let a = vec![3.0, 3.0, 3.0, 0.0];
        let b = vec![0.0, 0.0, 0.0, 1.0];
        let eq = paired_bootstrap(&sources, &a, &b, &BootstrapOptions::default()).unwrap();
        let pooled = paired_bootstrap(
            &sources,
            &a,
            &b,
            &BootstrapOptions {
                weighting: Weighting::Pooled,
                ..Default::default()
            },
        )
        .unwrap();
        assert!((eq.gain - 1.0).abs() < 1e-12, "(3 + -1) / 2");
        assert!((pooled.gain - 2.0).abs() < 1e-12, "(9 - 1) / 4");
    }

    #[test]
    fn a_coin_flip_difference_has_an_interval_around_zero() {
        let n = 400;
        let sources = vec![0; n];
        let a: Vec<f64> = (0..n).map(|i| if i % 2 == 0 { 1.0 } else { 0.0 }).collect();
        let b: Vec<f64> = (0..n).map(|i| if i % 2 == 1 { 1.0 } else { 0.0 }).collect();
        let i = paired_bootstrap(&sources, &a, &b, &BootstrapOptions::default()).unwrap();
        assert!(i.lower < 0.0 && i.upper > 0.0, "{i}");
        assert!(!i.excludes_zero_above());
        // sd of a mean of ±1 over 400 records is 0.05: the 95% interval is about ±0.1.
        assert!(i.upper - i.lower > 0.15 && i.upper - i.lower < 0.25, "{i}");
    }

    #[test]
    fn the_same_seed_gives_the_same_interval() {
        let sources: Vec<usize> = (0..50).map(|i| i % 3).collect();
        let a: Vec<f64> = (0..50).map(|i| (i * 7 % 11) as f64).collect();
        let b: Vec<f64> = (0..50).map(|i| (i * 5 % 13) as f64).collect();
        let o = BootstrapOptions::default();
        assert_eq!(
            paired_bootstrap(&sources, &a, &b, &o).unwrap(),
            paired_bootstrap(&sources, &a, &b, &o).unwrap()
        );
    }

    #[test]
    fn mismatched_lengths_and_bad_levels_are_errors() {
        let o = BootstrapOptions::default();
        assert!(paired_bootstrap(&[0, 1], &[1.0], &[1.0, 2.0], &o).is_err());
        assert!(paired_bootstrap(&[], &[], &[], &o).is_err());
        let bad = BootstrapOptions { level: 1.0, ..o };
        assert!(paired_bootstrap(&[0], &[1.0], &[0.0], &bad).is_err());
    }
}
