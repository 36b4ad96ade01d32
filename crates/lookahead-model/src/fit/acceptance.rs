//! The acceptance gate (never lose to the best single model): after training, the router's
//! validation choices are compared with the single model that was best on the *training*
//! examples (chosen there, so validation stays an honest test of both), equal weight over
//! sources, with a paired, source-stratified bootstrap ([`lookahead_data::paired_bootstrap`],
//! seeded). The router is accepted when the one-sided lower bound of its gain reaches `minGain`.

use lookahead_data::bootstrap::{paired_bootstrap, BootstrapOptions, Weighting, DEFAULT_RESAMPLES};

use super::request::{Example, TrainError};
use crate::artifact::Acceptance;

/// One-sided confidence level of the lower bound (the lower end of a two-sided 90% interval).
pub const LEVEL: f64 = 0.95;
/// The bootstrap's seed: the same artifact always gets the same verdict.
pub const SEED: u64 = 0x00ac_ce97;

/// The pool index of the model with the best mean scaled score over `examples`, equal weight
/// over sources (ties: the first in pool order); `None` without examples.
pub fn best_single<'e>(
    examples: impl IntoIterator<Item = &'e Example>,
    models: usize,
) -> Option<usize> {
    let mut sources: Vec<(&str, usize, Vec<f64>)> = Vec::new();
    for e in examples {
        let at = match sources.iter().position(|s| s.0 == e.source) {
            Some(at) => at,
            None => {
                sources.push((&e.source, 0, vec![0.0; models]));
                sources.len() - 1
            }
        };
        let (_, n, totals) = &mut sources[at];
        *n += 1;
        for (t, q) in totals.iter_mut().zip(&e.quality) {
            *t += f64::from(*q);
        }
    }
    let mut means = vec![0.0; models];
    for (_, n, totals) in &sources {
        for (m, t) in means.iter_mut().zip(totals) {
            *m += t / *n as f64;
        }
    }
    if sources.is_empty() {
        return None;
    }
    let mut best: Option<(usize, f64)> = None;
    for (j, &m) in means.iter().enumerate() {
        if best.is_none_or(|(_, b)| m > b) {
            best = Some((j, m));
        }
    }
    best.map(|(j, _)| j)
}

/// The verdict for a router that chose model `choices[i]` for `valid[i]`, against the best
/// single model of `train`, asking for a lower bound of at least `min_gain`; `None` without
/// training or validation examples (nothing to compare).
pub fn accept(
    train: &[Example],
    valid: &[Example],
    choices: &[usize],
    models: &[String],
    min_gain: f64,
) -> Result<Option<Acceptance>, TrainError> {
    let Some(fallback) = best_single(train, models.len()) else {
        return Ok(None);
    };
    if valid.is_empty() {
        return Ok(None);
    }
    let judged = Judged {
        examples: valid.iter().collect(),
        router: choices.to_vec(),
        single: vec![fallback; valid.len()],
        folds: 0,
    };
    judged.verdict(models, fallback, min_gain).map(Some)
}

/// Examples with the router's and the best single model's choice for each, made without them:
/// the validation split (`folds` 0), or every training and validation example judged by the
/// router and best single model of the cross-fitting fold that left it out (`folds` K).
#[derive(Debug, Default)]
pub struct Judged<'a> {
    pub examples: Vec<&'a Example>,
    pub router: Vec<usize>,
    pub single: Vec<usize>,
    pub folds: usize,
}

impl Judged<'_> {
    /// The gain of the router's choices over the single models', equal weight over sources, with
    /// its one-sided lower bound; accepted when that reaches `min_gain`. The router serves
    /// `fallback` (a pool index) when it is not accepted.
    pub fn verdict(
        &self,
        models: &[String],
        fallback: usize,
        min_gain: f64,
    ) -> Result<Acceptance, TrainError> {
        let mut sources: Vec<&str> = Vec::new();
        let source_of: Vec<usize> = self
            .examples
            .iter()
            .map(|e| match sources.iter().position(|s| *s == e.source) {
                Some(i) => i,
                None => {
                    sources.push(&e.source);
                    sources.len() - 1
                }
            })
            .collect();
        let quality = |e: &Example, j: usize| e.quality.get(j).copied().map_or(0.0, f64::from);
        let scored = |picks: &[usize]| -> Vec<f64> {
            self.examples
                .iter()
                .zip(picks)
                .map(|(e, &c)| quality(e, c))
                .collect()
        };
        let options = BootstrapOptions {
            weighting: Weighting::EqualWeight,
            resamples: DEFAULT_RESAMPLES,
            level: 1.0 - 2.0 * (1.0 - LEVEL),
            seed: SEED,
        };
        let interval = paired_bootstrap(
            &source_of,
            &scored(&self.router),
            &scored(&self.single),
            &options,
        )?;
        Ok(Acceptance {
            gain: interval.gain,
            lower_bound: interval.lower,
            accepted: interval.lower >= min_gain,
            fallback_model: models.get(fallback).cloned().unwrap_or_default(),
            min_gain,
            level: LEVEL,
            resamples: interval.resamples,
            examples: self.examples.len(),
            folds: self.folds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn models() -> Vec<String> {
        vec!["small".into(), "large".into(), "coder".into()]
    }

    /// An example of `source` where the models score `quality`.
    fn example(i: usize, source: &str, quality: [f32; 3]) -> Example {
        Example {
            id: format!("{source}-{i}"),
            source: source.into(),
            prompt: String::new(),
            responses: vec![String::new(); 3],
            labels: vec![0.0; 3],
            quality: quality.to_vec(),
        }
    }

    /// Math prompts `large` answers and code prompts `coder` answers: `large` is the best single
    /// model overall (it also half-answers code), a router that knows the split beats it.
    fn split(n: usize) -> Vec<Example> {
        (0..n)
            .flat_map(|i| {
                [
                    example(i, "math", [0.0, 100.0, 0.0]),
                    example(i, "code", [0.0, 50.0, 100.0]),
                ]
            })
            .collect()
    }

    /// The router's choice per example: `coder` on code and `large` on math when `smart`,
    /// else always `small`.
    fn choices(valid: &[Example], smart: bool) -> Vec<usize> {
        valid
            .iter()
            .map(|e| match (smart, e.source.as_str()) {
                (true, "code") => 2,
                (true, _) => 1,
                (false, _) => 0,
            })
            .collect()
    }

    #[test]
    fn the_fallback_is_the_best_single_model_of_the_training_examples_equal_weight() {
        // Pooled, `a` wins (9 records at 60 vs 40); per source equally weighted, `b` wins.
        let mut train: Vec<Example> = (0..9)
            .map(|i| example(i, "big", [60.0, 40.0, 0.0]))
            .collect();
        train.push(example(0, "tiny", [0.0, 100.0, 0.0]));
        assert_eq!(best_single(&train, 3), Some(1));
        assert_eq!(best_single(&[], 3), None);
    }

    #[test]
    fn a_router_clearly_better_than_the_best_single_model_is_accepted() {
        let (train, valid) = (split(40), split(30));
        let a = accept(&train, &valid, &choices(&valid, true), &models(), 0.0)
            .unwrap()
            .unwrap();
        assert_eq!(a.fallback_model, "large");
        assert!((a.gain - 25.0).abs() < 1e-9, "code: +50, math: 0 -> {a}");
        assert!(a.lower_bound > 0.0 && a.accepted, "{a}");
        assert_eq!((a.level, a.examples, a.min_gain), (0.95, 60, 0.0));
    }

    #[test]
    fn a_router_worse_than_the_best_single_model_is_not_accepted() {
        let (train, valid) = (split(40), split(30));
        let a = accept(&train, &valid, &choices(&valid, false), &models(), 0.0)
            .unwrap()
            .unwrap();
        assert_eq!(a.fallback_model, "large");
        assert!(a.gain < 0.0 && a.lower_bound < 0.0 && !a.accepted, "{a}");
    }

    #[test]
    fn min_gain_is_honoured() {
        let (train, valid) = (split(40), split(30));
        let smart = choices(&valid, true);
        // The gain is exactly 25 on every resample (no variance within a source).
        let at = |min_gain| {
            accept(&train, &valid, &smart, &models(), min_gain)
                .unwrap()
                .unwrap()
        };
        assert!(at(25.0).accepted);
        let strict = at(25.5);
        assert!(!strict.accepted && strict.min_gain == 25.5, "{strict}");
    }

    #[test]
    fn no_validation_or_training_examples_means_no_verdict() {
        let train = split(5);
        assert_eq!(accept(&train, &[], &[], &models(), 0.0).unwrap(), None);
        assert_eq!(accept(&[], &train, &[0; 10], &models(), 0.0).unwrap(), None);
    }

    #[test]
    fn the_same_inputs_give_the_same_verdict() {
        let (train, valid) = (split(10), split(10));
        let noisy: Vec<usize> = (0..valid.len()).map(|i| i % 3).collect();
        let run = || accept(&train, &valid, &noisy, &models(), 0.0).unwrap();
        assert_eq!(run(), run());
    }
}
