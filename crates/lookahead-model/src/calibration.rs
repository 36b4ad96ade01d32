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
    let p: Vec<f32> = classifier.logits(prompt).into_iter().map(sigmoid).collect();
    let total: f32 = p.iter().sum();
    if total > 0.0 {
        p.iter().map(|v| v / total).collect()
    } else {
        vec![1.0 / p.len().max(1) as f32; p.len()]
    }
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
        let slope = Self::slopes(examples, scores, sources, (&quality, &centred), slopes);
        Some(Self {
            quality,
            centred,
            slope,
        })
    }

    /// Per source (or per source and model, [`Slopes::PerModel`]), the least-squares slope of centred
    /// quality on centred score (both measured from the source's per-model means), clamped at 0:
    /// a router whose differences go against the outcomes is not followed.
    fn slopes(
        examples: &[&Example],
        scores: &[Vec<f32>],
        sources: &[String],
        (quality, centred): (&[Vec<f32>], &[Vec<f32>]),
        slopes: Slopes,
    ) -> Vec<Vec<f32>> {
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
        let slope = |c: f64, s: f64| {
            if s > 0.0 {
                (c / s).max(0.0) as f32
            } else {
                0.0
            }
        };
        cross
            .iter()
            .zip(&square)
            .map(|(c, s)| {
                if slopes == Slopes::PerModel {
                    c.iter().zip(s).map(|(&c, &s)| slope(c, s)).collect()
                } else {
                    vec![slope(c.iter().sum(), s.iter().sum()); models]
                }
            })
            .collect()
    }

    /// The calibrated scores (expected quality, 0..1) of a router's `scores` for a prompt whose
    /// source probabilities are `source`.
    pub fn apply_with(&self, source: &[f32], scores: &[f32]) -> Vec<f32> {
        let c = centre(scores);
        let mut out = vec![0f32; scores.len()];
        let per_source = self.quality.iter().zip(&self.centred).zip(&self.slope);
        for (&w, ((q, cbar), b)) in source.iter().zip(per_source) {
            for ((((o, &c), &q), &cbar), &b) in out.iter_mut().zip(&c).zip(q).zip(cbar).zip(b) {
                *o += w * (q + b * (c - cbar));
            }
        }
        out
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
            .apply_with(&source_probabilities(&self.classifier, prompt), scores)
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
        let classifier = WideModel::from_tensors(tensors, SOURCE_PREFIX, sources, tokens)?;
        Ok(Some(Self {
            within: WithinSource {
                quality,
                centred,
                slope,
            },
            classifier,
        }))
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
        let back =
            SourceCalibration::from_tensors(&cal.to_tensors().unwrap(), 2, 2, NgramTokens::Words)
                .unwrap()
                .unwrap();
        assert_eq!(back, cal);
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
