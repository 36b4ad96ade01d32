//! Within-source calibration of a router's scores (issue 15). A router trained on several
//! sources (benchmarks, or a team's task types) learns two things at once: which source a
//! prompt comes from, and which model does best on *this* prompt within its source. The first is
//! easy and worth most of the gain; the second is weak on some sources (whether a model solves
//! one grade-school problem and not another is close to a coin flip) and real on others (a
//! coding question in a chat benchmark). Taking the argmax of the raw scores trusts both equally,
//! so on the weak sources the router leaves the source's best model on noise and loses to it.
//!
//! The calibration learns, from predictions made without each example (cross-fitting), per
//! source `s`: each model's mean quality `Q[s][m]` and how much the router's within-prompt
//! differences predict the quality differences, a least-squares slope `b[s] ≥ 0` on per-prompt
//! centred scores. It serves `Σ_s P(s | prompt) · (Q[s][m] + b[s] · (c_m − C̄[s][m]))`, where
//! `c_m` is the router's score centred over the pool and `C̄` its mean on the source: with
//! `b = 0` a source's prompts go to its best model, with a large `b` the router's differences
//! decide. `P(s | prompt)` comes from an n-gram source classifier fitted with it.
//!
//! A prompt no training source claims (a new benchmark, a new kind of traffic: no source's
//! one-vs-rest probability reaches [`CLAIM`]) is not forced onto the nearest source. Normalising
//! its low probabilities would turn "none of these" into a pick of whichever source shares a few
//! words, and that source's best model and slope would override what the router reads in the
//! prompt (measured, leaving one benchmark out: HumanEval's prompts went mostly to ArenaHard's
//! calibration, which sends them to a chat model, while the router's words said "the coder").
//! Such a prompt is decided by the router's own differences, in quality units through the
//! sources' pooled slope ([`Unclaimed`]).

use std::collections::HashMap;

use candle_core::{Device, Tensor};

use crate::fit::Example;
use crate::wide::{sigmoid, FitOptions, NgramHasher, NgramTokens, WideError, WideModel};

/// Tensor-name prefix of the calibration in an artifact.
pub const PREFIX: &str = "calibration.";
/// Prefix of its source classifier's tensors.
const SOURCE_PREFIX: &str = "calibration.source.";

/// How finely the calibration measures how far to follow the router's differences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slopes {
    /// One slope per source (shared by its models).
    PerSource,
    /// One per source and model: a router may predict one model's wins (a coding question in a
    /// chat benchmark goes to the coder) and not another's.
    PerModel,
}

impl Slopes {
    /// The slopes `hyper` asks for (`per_model_slopes`).
    pub fn of(hyper: &crate::artifact::HyperParams) -> Self {
        if hyper.per_model_slopes {
            Self::PerModel
        } else {
            Self::PerSource
        }
    }
}

/// The per-source statistics of a calibration, for sources in a fixed order.
#[derive(Debug, Clone, PartialEq)]
pub struct WithinSource {
    /// `[source][model]`: mean quality (0..1) on the source's examples.
    pub quality: Vec<Vec<f32>>,
    /// `[source][model]`: mean per-prompt-centred score on the source's examples.
    pub centred: Vec<Vec<f32>>,
    /// `[source][model]`: how much a centred score difference is worth in quality (≥ 0): one
    /// value per source repeated over its models, or one per model with
    /// `HyperParams::per_model_slopes`.
    pub slope: Vec<Vec<f32>>,
    /// How a prompt no source claims is scored; `None` in artifacts written before it, which
    /// share every prompt among the sources.
    pub unclaimed: Option<Unclaimed>,
}

/// A source's one-vs-rest probability at which the source classifier claims a prompt for it:
/// more likely from that source than not. Below it for every source, the prompt is
/// [`Unclaimed`]. Chosen by that reading, not tuned (docs/results.md reports 0.3 and 0.7 too).
pub const CLAIM: f32 = 0.5;

/// The scores of a prompt no training source claims: `level + slope · c_m`, the router's own
/// pool-centred scores `c` in quality units, so its order is the router's and a cost weight
/// reads it on the same scale as the calibrated scores.
#[derive(Debug, Clone, PartialEq)]
pub struct Unclaimed {
    /// The mean quality over sources (equal weight) and models.
    pub level: f32,
    /// Per model, the sources' least-squares slope pooled with equal weight per source (one
    /// value repeated unless the slopes are per model).
    pub slope: Vec<f32>,
}

/// A fitted within-source calibration with the source classifier that serves it.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceCalibration {
    pub within: WithinSource,
    /// One-vs-rest logistic regression over the prompt's hashed n-grams: a logit per source,
    /// in the artifact's source order.
    pub classifier: WideModel,
}

/// `P(source | prompt)`: a source classifier's one-vs-rest probabilities, normalised.
pub fn source_probabilities(classifier: &WideModel, prompt: &str) -> Vec<f32> {
    normalised(&source_claims(classifier, prompt))
}

/// `claims` scaled to sum to 1 (uniform when they are all 0), as scikit-learn's one-vs-rest
/// normalises its probabilities.
fn normalised(claims: &[f32]) -> Vec<f32> {
    let total: f32 = claims.iter().sum();
    if total > 0.0 {
        claims.iter().map(|v| v / total).collect()
    } else {
        vec![1.0 / claims.len().max(1) as f32; claims.len()]
    }
}

/// Each source's claim on `prompt`: the classifier's one-vs-rest probabilities, not normalised
/// (their sum says nothing; their maximum says whether any source claims the prompt).
pub fn source_claims(classifier: &WideModel, prompt: &str) -> Vec<f32> {
    classifier.logits(prompt).into_iter().map(sigmoid).collect()
}

/// `source` as a one-hot row over `sources` (all zero for a source not among them).
pub fn source_one_hot(sources: &[String], source: &str) -> Vec<f32> {
    sources
        .iter()
        .map(|s| if s == source { 1.0 } else { 0.0 })
        .collect()
}

/// Each value minus the row's mean.
fn centre(row: &[f32]) -> Vec<f32> {
    let mean = row.iter().sum::<f32>() / row.len().max(1) as f32;
    row.iter().map(|v| v - mean).collect()
}

impl WithinSource {
    /// Fits the means and slopes over `sources` on `examples` and the `scores` a router gave
    /// them without having seen them (one row per example, pool order); `None` without scores.
    pub fn fit(
        examples: &[&Example],
        scores: &[Vec<f32>],
        sources: &[String],
        slopes: Slopes,
    ) -> Option<Self> {
        let models = scores.first()?.len();
        let mut quality = vec![vec![0f32; models]; sources.len()];
        let mut centred = vec![vec![0f32; models]; sources.len()];
        let mut count = vec![0usize; sources.len()];
        let at = |e: &Example| sources.iter().position(|s| *s == e.source);
        for (e, row) in examples.iter().zip(scores) {
            let Some(s) = at(e) else { continue };
            count[s] += 1;
            for (m, c) in centre(row).into_iter().enumerate() {
                quality[s][m] += e.quality.get(m).copied().unwrap_or(0.0) / 100.0;
                centred[s][m] += c;
            }
        }
        for s in 0..sources.len() {
            let n = count[s].max(1) as f32;
            quality[s].iter_mut().for_each(|q| *q /= n);
            centred[s].iter_mut().for_each(|c| *c /= n);
        }
        let moments = Moments::of(examples, scores, sources, (&quality, &centred));
        let unclaimed = Unclaimed::of(&quality, &count, &moments, slopes);
        Some(Self {
            slope: moments.slopes(slopes),
            quality,
            centred,
            unclaimed,
        })
    }

    /// The calibrated scores (expected quality, 0..1) of a router's `scores` for a prompt the
    /// sources claim as `claims` says ([`source_claims`]): mixed over the sources in proportion
    /// to their claims, or, when no source claims it and the calibration has the row,
    /// [`Unclaimed`].
    pub fn apply_with(&self, claims: &[f32], scores: &[f32]) -> Vec<f32> {
        let c = centre(scores);
        let strongest = claims.iter().copied().fold(0f32, f32::max);
        if let Some(u) = self.unclaimed.as_ref().filter(|_| strongest < CLAIM) {
            return c
                .iter()
                .zip(&u.slope)
                .map(|(c, b)| u.level + b * c)
                .collect();
        }
        let mut out = vec![0f32; scores.len()];
        let per_source = self.quality.iter().zip(&self.centred).zip(&self.slope);
        for (w, ((q, cbar), b)) in normalised(claims).into_iter().zip(per_source) {
            for ((((o, &c), &q), &cbar), &b) in out.iter_mut().zip(&c).zip(q).zip(cbar).zip(b) {
                *o += w * (q + b * (c - cbar));
            }
        }
        out
    }
}

/// Per source and model, the sums a least-squares slope of centred quality on centred score is
/// made of (both measured from the source's per-model means).
struct Moments {
    cross: Vec<Vec<f64>>,
    square: Vec<Vec<f64>>,
}

impl Moments {
    fn of(
        examples: &[&Example],
        scores: &[Vec<f32>],
        sources: &[String],
        (quality, centred): (&[Vec<f32>], &[Vec<f32>]),
    ) -> Self {
        let models = quality.first().map_or(0, Vec::len);
        let mut cross = vec![vec![0f64; models]; sources.len()];
        let mut square = vec![vec![0f64; models]; sources.len()];
        for (e, row) in examples.iter().zip(scores) {
            let Some(s) = sources.iter().position(|x| *x == e.source) else {
                continue;
            };
            let q: Vec<f32> = e.quality.iter().map(|q| q / 100.0).collect();
            let q_mean_over_pool = q.iter().sum::<f32>() / q.len().max(1) as f32;
            let q_mean_of_source = quality[s].iter().sum::<f32>() / q.len().max(1) as f32;
            for (m, c) in centre(row).into_iter().enumerate().take(models) {
                let x = f64::from(c - centred[s][m]);
                let qc = q.get(m).copied().unwrap_or(0.0) - q_mean_over_pool;
                let y = f64::from(qc - (quality[s][m] - q_mean_of_source));
                cross[s][m] += x * y;
                square[s][m] += x * x;
            }
        }
        Self { cross, square }
    }

    /// Per source (or per source and model, [`Slopes::PerModel`]) the slope, clamped at 0: a
    /// router whose differences go against the outcomes is not followed.
    fn slopes(&self, slopes: Slopes) -> Vec<Vec<f32>> {
        self.cross
            .iter()
            .zip(&self.square)
            .map(|(c, s)| per_model_or_shared(c, s, slopes))
            .collect()
    }
}

/// The slope of summed moments `cross / square` (≥ 0), one per model or one shared by them.
fn per_model_or_shared(cross: &[f64], square: &[f64], slopes: Slopes) -> Vec<f32> {
    let slope = |c: f64, s: f64| {
        if s > 0.0 {
            (c / s).max(0.0) as f32
        } else {
            0.0
        }
    };
    if slopes == Slopes::PerModel {
        cross
            .iter()
            .zip(square)
            .map(|(&c, &s)| slope(c, s))
            .collect()
    } else {
        vec![slope(cross.iter().sum(), square.iter().sum()); cross.len()]
    }
}

impl Unclaimed {
    /// Every source with examples at equal weight: the mean of the sources' mean qualities, and
    /// the slope of the sources' moments each divided by its example count; `None` without
    /// sources.
    fn of(
        quality: &[Vec<f32>],
        count: &[usize],
        moments: &Moments,
        slopes: Slopes,
    ) -> Option<Self> {
        let seen: Vec<usize> = (0..count.len()).filter(|&s| count[s] > 0).collect();
        let models = quality.first()?.len();
        if seen.is_empty() || models == 0 {
            return None;
        }
        let level = seen
            .iter()
            .map(|&s| quality[s].iter().sum::<f32>() / models as f32)
            .sum::<f32>()
            / seen.len() as f32;
        let per_example = |rows: &[Vec<f64>]| -> Vec<f64> {
            (0..models)
                .map(|m| seen.iter().map(|&s| rows[s][m] / count[s] as f64).sum())
                .collect()
        };
        Some(Self {
            level,
            slope: per_model_or_shared(
                &per_example(&moments.cross),
                &per_example(&moments.square),
                slopes,
            ),
        })
    }
}

impl SourceCalibration {
    /// The source classifier: one-vs-rest logistic regression of the examples' source on their
    /// prompts' hashed n-grams, the n-gram router's features.
    pub fn fit_classifier(
        examples: &[&Example],
        sources: &[String],
        hasher: NgramHasher,
    ) -> WideModel {
        let texts: Vec<&str> = examples.iter().map(|e| e.prompt.as_str()).collect();
        let counts = WideModel::count_rows(hasher, &texts);
        let labels: Vec<Vec<f32>> = examples
            .iter()
            .map(|e| source_one_hot(sources, &e.source))
            .collect();
        WideModel::fit(hasher, &counts, &labels, FitOptions::default())
    }

    /// The calibrated scores (expected quality, 0..1) of a router's `scores` for `prompt`.
    pub fn apply(&self, prompt: &str, scores: &[f32]) -> Vec<f32> {
        self.within
            .apply_with(&source_claims(&self.classifier, prompt), scores)
    }

    /// The artifact tensors (names under [`PREFIX`]); the source names are the artifact's
    /// `sources` in `router.json`.
    pub fn to_tensors(&self) -> Result<HashMap<String, Tensor>, WideError> {
        let dev = Device::Cpu;
        let w = &self.within;
        let (s, m) = (w.quality.len(), w.quality.first().map_or(0, Vec::len));
        let mut t = self.classifier.to_tensors(SOURCE_PREFIX)?;
        t.insert(
            format!("{PREFIX}quality"),
            Tensor::from_slice(&w.quality.concat(), (s, m), &dev)?,
        );
        t.insert(
            format!("{PREFIX}centred"),
            Tensor::from_slice(&w.centred.concat(), (s, m), &dev)?,
        );
        t.insert(
            format!("{PREFIX}slope"),
            Tensor::from_slice(&w.slope.concat(), (s, m), &dev)?,
        );
        if let Some(u) = &w.unclaimed {
            let row = [&[u.level][..], &u.slope].concat();
            t.insert(
                format!("{PREFIX}unclaimed"),
                Tensor::from_slice(&row, 1 + m, &dev)?,
            );
        }
        Ok(t)
    }

    /// Reads what [`SourceCalibration::to_tensors`] wrote for `sources` sources and `models`
    /// models, its classifier reading `tokens`; `Ok(None)` when the artifact has no calibration.
    pub fn from_tensors(
        tensors: &HashMap<String, Tensor>,
        sources: usize,
        models: usize,
        tokens: NgramTokens,
    ) -> Result<Option<Self>, WideError> {
        let Some(slope) = tensors.get(&format!("{PREFIX}slope")) else {
            return Ok(None);
        };
        let slope = slope.flatten_all()?.to_vec1::<f32>()?;
        let matrix = |name: &'static str| -> Result<Vec<Vec<f32>>, WideError> {
            let flat = tensors
                .get(&format!("{PREFIX}{name}"))
                .ok_or(WideError::Missing(name))?
                .flatten_all()?
                .to_vec1::<f32>()?;
            if flat.len() != sources * models || models == 0 {
                return Err(WideError::Shape(format!(
                    "calibration {name}: {} values for {sources} sources × {models} models",
                    flat.len()
                )));
            }
            Ok(flat.chunks(models).map(<[f32]>::to_vec).collect())
        };
        let (quality, centred) = (matrix("quality")?, matrix("centred")?);
        // One slope per source (artifacts written before per-model slopes) or per source and
        // model.
        let slope: Vec<Vec<f32>> = if slope.len() == sources {
            slope.iter().map(|&b| vec![b; models]).collect()
        } else if slope.len() == sources * models && models > 0 {
            slope.chunks(models).map(<[f32]>::to_vec).collect()
        } else {
            return Err(WideError::Shape(format!(
                "calibration: {} slopes for {sources} sources × {models} models",
                slope.len()
            )));
        };
        let unclaimed = Self::unclaimed_from(tensors, models)?;
        let classifier = WideModel::from_tensors(tensors, SOURCE_PREFIX, sources, tokens)?;
        Ok(Some(Self {
            within: WithinSource {
                quality,
                centred,
                slope,
                unclaimed,
            },
            classifier,
        }))
    }

    /// The unclaimed prompts' scoring (`[level, slope per model]`); `None` in artifacts written
    /// before it.
    fn unclaimed_from(
        tensors: &HashMap<String, Tensor>,
        models: usize,
    ) -> Result<Option<Unclaimed>, WideError> {
        let Some(t) = tensors.get(&format!("{PREFIX}unclaimed")) else {
            return Ok(None);
        };
        let flat = t.flatten_all()?.to_vec1::<f32>()?;
        match flat.split_first() {
            Some((&level, slope)) if slope.len() == models => Ok(Some(Unclaimed {
                level,
                slope: slope.to_vec(),
            })),
            _ => Err(WideError::Shape(format!(
                "calibration unclaimed: {} values for 1 + {models} models",
                flat.len()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(i: usize, source: &str, quality: [f32; 2]) -> Example {
        Example {
            id: format!("{source}-{i}"),
            source: source.into(),
            prompt: format!("{source} question {i}"),
            responses: vec![String::new(); 2],
            labels: vec![0.0; 2],
            quality: quality.to_vec(),
        }
    }

    /// Source "chat": the router's differences say which model wins (it scores the winner
    /// higher). Source "math": model 0 is right 60% of the time and model 1 40%, independently of
    /// the router's scores, which lean to model 1 on half the prompts regardless.
    fn data() -> (Vec<Example>, Vec<Vec<f32>>) {
        let mut examples = Vec::new();
        let mut scores = Vec::new();
        for i in 0..100 {
            let first = i % 2 == 0;
            examples.push(example(
                i,
                "chat",
                if first { [100.0, 0.0] } else { [0.0, 100.0] },
            ));
            scores.push(if first {
                vec![0.7, 0.3]
            } else {
                vec![0.3, 0.7]
            });
            let right = if i % 5 < 3 {
                [100.0, 0.0]
            } else {
                [0.0, 100.0]
            };
            examples.push(example(i, "math", right));
            scores.push(if i % 4 < 2 {
                vec![0.45, 0.55]
            } else {
                vec![0.55, 0.45]
            });
        }
        (examples, scores)
    }

    fn sources() -> Vec<String> {
        vec!["chat".into(), "math".into()]
    }

    #[test]
    fn follows_the_router_where_it_predicts_and_the_source_best_where_it_does_not() {
        let (examples, scores) = data();
        let refs: Vec<&Example> = examples.iter().collect();
        let w = WithinSource::fit(&refs, &scores, &sources(), Slopes::PerSource).unwrap();
        assert!(w.slope[0][0] > 1.0, "chat slope {:?}", w.slope);
        assert!(w.slope[1][0] < 0.05, "math slope {:?}", w.slope);
        assert!((w.quality[1][0] - 0.6).abs() < 1e-6, "{:?}", w.quality);
        let pick = |source: [f32; 2], s: &[f32]| {
            let out = w.apply_with(&source, s);
            usize::from(out[1] > out[0])
        };
        // Chat: the router's preference decides.
        assert_eq!(pick([1.0, 0.0], &[0.3, 0.7]), 1);
        assert_eq!(pick([1.0, 0.0], &[0.7, 0.3]), 0);
        // Math: model 0, whatever the router leans to.
        assert_eq!(pick([0.0, 1.0], &[0.45, 0.55]), 0);
        assert_eq!(pick([0.0, 1.0], &[0.55, 0.45]), 0);
    }

    /// Three models on one source: the router's score of model 2 says whether model 2 wins;
    /// its scores of models 0 and 1 are noise (they swap at random while the outcome between
    /// them does not move). Per-model slopes follow model 2's differences only.
    #[test]
    fn per_model_slopes_follow_only_the_models_whose_differences_predict() {
        let mut examples = Vec::new();
        let mut scores = Vec::new();
        for i in 0..200 {
            let coder_wins = i % 2 == 0;
            let quality = if coder_wins {
                vec![0.0, 0.0, 100.0]
            } else {
                vec![100.0, 0.0, 0.0]
            };
            examples.push(Example {
                id: format!("chat-{i}"),
                source: "chat".into(),
                prompt: String::new(),
                responses: vec![String::new(); 3],
                labels: vec![0.0; 3],
                quality,
            });
            let noise = if i % 3 == 0 { 0.2 } else { -0.2 };
            let coder = if coder_wins { 0.8 } else { 0.2 };
            scores.push(vec![0.5 + noise, 0.5 - noise, coder]);
        }
        let refs: Vec<&Example> = examples.iter().collect();
        let sources = vec!["chat".to_string()];
        let shared = WithinSource::fit(&refs, &scores, &sources, Slopes::PerSource).unwrap();
        let per_model = WithinSource::fit(&refs, &scores, &sources, Slopes::PerModel).unwrap();
        assert!(
            shared.slope[0].windows(2).all(|w| w[0] == w[1]),
            "{:?}",
            shared.slope
        );
        let b = &per_model.slope[0];
        assert!(b[2] > 2.0 * b[0].max(b[1]), "{b:?}");
        // Tensors keep the per-model slopes; one slope per source (older artifacts) still loads.
        let classifier = SourceCalibration::fit_classifier(
            &refs,
            &sources,
            NgramHasher::new(1 << 8, NgramTokens::Words),
        );
        let cal = SourceCalibration {
            within: per_model,
            classifier,
        };
        let mut t = cal.to_tensors().unwrap();
        let back = SourceCalibration::from_tensors(&t, 1, 3, NgramTokens::Words)
            .unwrap()
            .unwrap();
        assert_eq!(back, cal);
        t.insert(
            format!("{PREFIX}slope"),
            Tensor::from_slice(&[0.5f32], 1, &Device::Cpu).unwrap(),
        );
        let old = SourceCalibration::from_tensors(&t, 1, 3, NgramTokens::Words)
            .unwrap()
            .unwrap();
        assert_eq!(old.within.slope, vec![vec![0.5; 3]]);
    }

    /// "chat" follows the router, "math" sends everything to model 0; a prompt neither source
    /// claims is decided by the router's own differences, on the sources' mean quality level.
    #[test]
    fn a_prompt_no_source_claims_is_decided_by_the_router_not_by_the_nearest_source() {
        let (examples, scores) = data();
        let refs: Vec<&Example> = examples.iter().collect();
        let w = WithinSource::fit(&refs, &scores, &sources(), Slopes::PerSource).unwrap();
        let u = w.unclaimed.clone().unwrap();
        assert!((u.level - 0.5).abs() < 1e-6, "{u:?}");
        assert!(
            u.slope[0] < w.slope[0][0] && u.slope[0] > w.slope[1][0],
            "{u:?} {w:?}"
        );
        let pick = |claims: &[f32], s: &[f32]| {
            let out = w.apply_with(claims, s);
            usize::from(out[1] > out[0])
        };
        // Unclaimed (no source reaches CLAIM): the router's order, even where "math" leans in.
        assert_eq!(pick(&[0.1, 0.45], &[0.45, 0.55]), 1);
        assert_eq!(pick(&[0.1, 0.45], &[0.55, 0.45]), 0);
        let out = w.apply_with(&[0.1, 0.45], &[0.45, 0.55]);
        assert!((out[0] + out[1] - 1.0).abs() < 1e-5, "{out:?}");
        // Claimed by "math": its best model, whatever the router leans to.
        assert_eq!(pick(&[0.1, 0.6], &[0.45, 0.55]), 0);
        // An artifact from before (no unclaimed row) shares every prompt among the sources.
        let old = WithinSource {
            unclaimed: None,
            ..w.clone()
        };
        let shared = old.apply_with(&[0.1, 0.45], &[0.45, 0.55]);
        let normalised = old.apply_with(&[0.1 / 0.55, 0.45 / 0.55], &[0.45, 0.55]);
        assert!(
            shared
                .iter()
                .zip(&normalised)
                .all(|(a, b)| (a - b).abs() < 1e-6),
            "{shared:?} {normalised:?}"
        );
        assert!(shared[0] > shared[1], "{shared:?}");
    }

    #[test]
    fn a_router_whose_differences_go_against_the_outcomes_is_not_followed() {
        let (examples, scores) = data();
        let flipped: Vec<Vec<f32>> = scores.iter().map(|r| vec![r[1], r[0]]).collect();
        let refs: Vec<&Example> = examples.iter().collect();
        let w = WithinSource::fit(&refs, &flipped, &sources(), Slopes::PerSource).unwrap();
        assert_eq!(w.slope[0][0], 0.0, "{:?}", w.slope);
        assert!(WithinSource::fit(&refs, &[], &sources(), Slopes::PerSource).is_none());
    }

    #[test]
    fn tensors_round_trip_with_the_source_classifier() {
        let (examples, scores) = data();
        let refs: Vec<&Example> = examples.iter().collect();
        let within = WithinSource::fit(&refs, &scores, &sources(), Slopes::PerSource).unwrap();
        let classifier = SourceCalibration::fit_classifier(
            &refs,
            &sources(),
            NgramHasher::new(1 << 10, NgramTokens::Words),
        );
        let cal = SourceCalibration { within, classifier };
        let mut t = cal.to_tensors().unwrap();
        let back = SourceCalibration::from_tensors(&t, 2, 2, NgramTokens::Words)
            .unwrap()
            .unwrap();
        assert_eq!(back, cal);
        assert!(back.within.unclaimed.is_some());
        // Written before the unclaimed row: reads without it; a row of the wrong size is an error.
        let unclaimed = t.remove(&format!("{PREFIX}unclaimed")).unwrap();
        let old = SourceCalibration::from_tensors(&t, 2, 2, NgramTokens::Words)
            .unwrap()
            .unwrap();
        assert_eq!(old.within.unclaimed, None);
        t.insert(
            format!("{PREFIX}unclaimed"),
            unclaimed.narrow(0, 0, 2).unwrap(),
        );
        assert!(SourceCalibration::from_tensors(&t, 2, 2, NgramTokens::Words).is_err());
        // The classifier tells the sources apart by their words.
        let p = source_probabilities(&back.classifier, "math question 7");
        assert!(p[1] > 0.75, "{p:?}");
        assert_eq!(cal.apply("math question 7", &[0.45, 0.55]).len(), 2);
        assert!(
            SourceCalibration::from_tensors(&HashMap::new(), 2, 2, NgramTokens::Words)
                .unwrap()
                .is_none()
        );
        assert!(SourceCalibration::from_tensors(
            &cal.to_tensors().unwrap(),
            3,
            2,
            NgramTokens::Words
        )
        .is_err());
    }
}
