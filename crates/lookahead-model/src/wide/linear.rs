//! A multi-label logistic regression over [`super::features`]: one logit per pool member,
//! `bias + Σ x_k · W[k]`. Fitted full-batch (the problem is convex and small: a few thousand
//! prompts of a few hundred non-zero features) with Adam and a cosine-decayed step, L2 on the
//! weights. Plain Rust: sparse rows make a dense tensor library the slower tool here.

use std::collections::HashMap;

use candle_core::{Device, Tensor};

use super::features::{inverse_document_frequency, weigh, NgramHasher, NgramTokens, SparseRow};

/// The fitted weights and the feature map they read.
#[derive(Debug, Clone, PartialEq)]
pub struct WideModel {
    pub hasher: NgramHasher,
    /// Per-bucket inverse document frequency of the training prompts.
    pub idf: Vec<f32>,
    /// `[buckets, models]`, row-major.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub models: usize,
}

/// How hard to fit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitOptions {
    /// Inverse regularisation strength in scikit-learn's sense: the objective is
    /// `C · Σ logloss + ½‖W‖²`, i.e. `mean logloss + ‖W‖² / (2 C n)`.
    pub c: f32,
    /// How much harder each model's weights are pulled towards the models' mean weights than
    /// that mean is pulled towards zero: the penalty is `M‖w̄‖² + κ Σₘ‖wₘ − w̄‖²` (halved,
    /// scaled as above). 1 is plain L2. Above 1, the n-grams that predict every model alike
    /// (how hard the prompt is) stay free while the differences between models, which alone
    /// decide the route and are learned from far fewer effective examples, are shrunk more.
    pub coupling: f32,
    pub iterations: usize,
    pub learning_rate: f32,
    /// Buckets fewer training prompts have are dropped ([`inverse_document_frequency`]).
    pub min_df: u32,
}

impl Default for FitOptions {
    fn default() -> Self {
        Self {
            c: 1.0,
            coupling: 1.0,
            iterations: 300,
            learning_rate: 0.1,
            min_df: 1,
        }
    }
}

/// Why tensors do not make a wide model.
#[derive(Debug, thiserror::Error)]
pub enum WideError {
    #[error("wide head: missing tensor {0}")]
    Missing(&'static str),
    #[error("wide head: {0}")]
    Shape(String),
    #[error("wide head: {0}")]
    Tensor(#[from] candle_core::Error),
}

/// The logistic function: a logit as a probability.
pub fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// Mean binary cross-entropy of `logits` against `labels` (one row per example).
pub fn mean_bce(logits: &[Vec<f32>], labels: &[Vec<f32>]) -> f64 {
    let mut total = 0f64;
    let mut n = 0usize;
    for (z, y) in logits.iter().zip(labels) {
        for (&z, &y) in z.iter().zip(y) {
            // log(1 + e^-|z|) + max(z, 0) - z y: stable for large |z|.
            let l = (-z.abs()).exp().ln_1p() + z.max(0.0) - z * y;
            total += f64::from(l);
            n += 1;
        }
    }
    total / n.max(1) as f64
}

impl WideModel {
    /// Count rows of `texts` (before IDF): what [`WideModel::fit`] and IDF are computed from.
    pub fn count_rows(hasher: NgramHasher, texts: &[&str]) -> Vec<SparseRow> {
        texts.iter().map(|t| hasher.counts(t)).collect()
    }

    /// Fits on `counts` (from [`WideModel::count_rows`]) and `labels` (0/1 per model).
    pub fn fit(
        hasher: NgramHasher,
        counts: &[SparseRow],
        labels: &[Vec<f32>],
        options: FitOptions,
    ) -> Self {
        let models = labels.first().map_or(0, Vec::len);
        let idf = inverse_document_frequency(counts, hasher.buckets, options.min_df);
        let rows: Vec<SparseRow> = counts.iter().map(|c| weigh(c.clone(), &idf)).collect();
        let mut model = Self {
            hasher,
            idf,
            weight: vec![0.0; hasher.buckets * models],
            bias: prior_logits(labels, models),
            models,
        };
        Adam::new(&rows, models).run(&mut model, &rows, labels, options);
        model
    }

    /// The weighted, normalised features of `text`.
    pub fn features(&self, text: &str) -> SparseRow {
        weigh(self.hasher.counts(text), &self.idf)
    }

    /// Logits of a feature row.
    pub fn logits_of(&self, row: &SparseRow) -> Vec<f32> {
        let mut z = self.bias.clone();
        for &(b, x) in row {
            let w = &self.weight[b as usize * self.models..(b as usize + 1) * self.models];
            for (zj, wj) in z.iter_mut().zip(w) {
                *zj += x * wj;
            }
        }
        z
    }

    /// Logits of a prompt.
    pub fn logits(&self, text: &str) -> Vec<f32> {
        self.logits_of(&self.features(text))
    }

    /// The artifact tensors, names under `prefix` (e.g. `wide.`).
    pub fn to_tensors(&self, prefix: &str) -> Result<HashMap<String, Tensor>, WideError> {
        let dev = Device::Cpu;
        let b = self.hasher.buckets;
        Ok(HashMap::from([
            (
                format!("{prefix}idf"),
                Tensor::from_slice(&self.idf, b, &dev)?,
            ),
            (
                format!("{prefix}weight"),
                Tensor::from_slice(&self.weight, (b, self.models), &dev)?,
            ),
            (
                format!("{prefix}bias"),
                Tensor::from_slice(&self.bias, self.models, &dev)?,
            ),
        ]))
    }

    /// Reads the tensors [`WideModel::to_tensors`] wrote; `tokens` is what the artifact's
    /// settings say the weights were fitted on.
    pub fn from_tensors(
        tensors: &HashMap<String, Tensor>,
        prefix: &str,
        models: usize,
        tokens: NgramTokens,
    ) -> Result<Self, WideError> {
        let get = |name: &'static str| {
            tensors
                .get(&format!("{prefix}{name}"))
                .ok_or(WideError::Missing(name))
        };
        let idf = get("idf")?.flatten_all()?.to_vec1::<f32>()?;
        let weight = get("weight")?.flatten_all()?.to_vec1::<f32>()?;
        let bias = get("bias")?.flatten_all()?.to_vec1::<f32>()?;
        if bias.len() != models || weight.len() != idf.len() * models {
            return Err(WideError::Shape(format!(
                "{} buckets, {} weights and {} biases for {models} models",
                idf.len(),
                weight.len(),
                bias.len()
            )));
        }
        Ok(Self {
            hasher: NgramHasher::new(idf.len(), tokens),
            idf,
            weight,
            bias,
            models,
        })
    }
}

/// Logit of each model's positive rate (clamped to 1..99%): where the fit starts.
fn prior_logits(labels: &[Vec<f32>], models: usize) -> Vec<f32> {
    let n = labels.len().max(1) as f32;
    (0..models)
        .map(|j| {
            let rate = (labels.iter().map(|y| y[j]).sum::<f32>() / n).clamp(0.01, 0.99);
            (rate / (1.0 - rate)).ln()
        })
        .collect()
}

/// Full-batch Adam state over the buckets the training rows touch (the others have no data
/// gradient and start at zero, so L2 keeps them there).
struct Adam {
    active: Vec<usize>,
    m: Vec<f32>,
    v: Vec<f32>,
    mb: Vec<f32>,
    vb: Vec<f32>,
}

impl Adam {
    fn new(rows: &[SparseRow], models: usize) -> Self {
        let mut active: Vec<usize> = rows.iter().flatten().map(|&(b, _)| b as usize).collect();
        active.sort_unstable();
        active.dedup();
        let n = active.len() * models;
        Self {
            active,
            m: vec![0.0; n],
            v: vec![0.0; n],
            mb: vec![0.0; models],
            vb: vec![0.0; models],
        }
    }

    fn run(
        &mut self,
        model: &mut WideModel,
        rows: &[SparseRow],
        labels: &[Vec<f32>],
        o: FitOptions,
    ) {
        let p = model.models;
        let l2 = 1.0 / (o.c.max(1e-6) * rows.len().max(1) as f32);
        let mut grad = vec![0f32; model.weight.len()];
        for t in 0..o.iterations {
            for &b in &self.active {
                grad[b * p..(b + 1) * p].fill(0.0);
            }
            let gb = data_gradient(model, rows, labels, &mut grad);
            let progress = t as f32 / o.iterations.max(1) as f32;
            let lr = o.learning_rate * 0.5 * (1.0 + (std::f32::consts::PI * progress).cos());
            let step = AdamStep::at(t + 1, lr);
            for (i, &b) in self.active.iter().enumerate() {
                let m = &mut self.m[i * p..(i + 1) * p];
                let v = &mut self.v[i * p..(i + 1) * p];
                let w = &mut model.weight[b * p..(b + 1) * p];
                let g = &grad[b * p..(b + 1) * p];
                let mean = w.iter().sum::<f32>() / p as f32;
                for (((w, g), m), v) in w.iter_mut().zip(g).zip(m).zip(v) {
                    let penalty = l2 * (mean + o.coupling * (*w - mean));
                    *w -= step.update(m, v, g + penalty);
                }
            }
            let moments = self.mb.iter_mut().zip(&mut self.vb);
            for ((b, g), (m, v)) in model.bias.iter_mut().zip(gb).zip(moments) {
                *b -= step.update(m, v, g);
            }
        }
    }
}

/// Adds the mean BCE's gradient for the weights into `grad` and returns the bias gradient.
fn data_gradient(
    model: &WideModel,
    rows: &[SparseRow],
    labels: &[Vec<f32>],
    grad: &mut [f32],
) -> Vec<f32> {
    let p = model.models;
    let n = rows.len().max(1) as f32;
    let mut gb = vec![0f32; p];
    for (row, y) in rows.iter().zip(labels) {
        let residual: Vec<f32> = model
            .logits_of(row)
            .iter()
            .zip(y)
            .map(|(&z, &y)| (sigmoid(z) - y) / n)
            .collect();
        for (acc, r) in gb.iter_mut().zip(&residual) {
            *acc += r;
        }
        for &(b, x) in row {
            let acc = &mut grad[b as usize * p..(b as usize + 1) * p];
            for (a, r) in acc.iter_mut().zip(&residual) {
                *a += r * x;
            }
        }
    }
    gb
}

/// Adam (β = 0.9, 0.999) at one step: the learning rate and the bias corrections, computed once
/// per step rather than once per parameter (the powers were most of a fit's time).
struct AdamStep {
    lr: f32,
    correction1: f32,
    correction2: f32,
}

impl AdamStep {
    fn at(t: usize, lr: f32) -> Self {
        let t = i32::try_from(t).unwrap_or(i32::MAX);
        Self {
            lr,
            correction1: 1.0 - 0.9f32.powi(t),
            correction2: 1.0 - 0.999f32.powi(t),
        }
    }

    /// One parameter's update with gradient `g`: the step to subtract.
    fn update(&self, m: &mut f32, v: &mut f32, g: f32) -> f32 {
        *m = 0.9 * *m + 0.1 * g;
        *v = 0.999 * *v + 0.001 * g * g;
        let mh = *m / self.correction1;
        let vh = *v / self.correction2;
        self.lr * mh / (vh.sqrt() + 1e-8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> (Vec<&'static str>, Vec<Vec<f32>>) {
        // Model 0 is good at arithmetic prompts, model 1 at code prompts.
        let texts = vec![
            "what is 3 plus 4",
            "compute 12 times 7",
            "what is 9 minus 2",
            "write a python function to sort a list",
            "write a python function that reverses a string",
            "implement a function returning the max",
        ];
        let labels = vec![
            vec![1.0, 0.0],
            vec![1.0, 0.0],
            vec![1.0, 0.0],
            vec![0.0, 1.0],
            vec![0.0, 1.0],
            vec![0.0, 1.0],
        ];
        (texts, labels)
    }

    #[test]
    fn a_fitted_wide_model_separates_what_its_words_separate() {
        let (texts, labels) = toy();
        let hasher = NgramHasher::new(1 << 12, NgramTokens::Words);
        let counts = WideModel::count_rows(hasher, &texts);
        let options = FitOptions {
            c: 100.0,
            ..FitOptions::default()
        };
        let model = WideModel::fit(hasher, &counts, &labels, options);
        let fitted: Vec<Vec<f32>> = texts.iter().map(|t| model.logits(t)).collect();
        assert!(
            mean_bce(&fitted, &labels) < 0.2,
            "{}",
            mean_bce(&fitted, &labels)
        );
        let math = model.logits("what is 5 plus 6");
        let code = model.logits("write a python function to add numbers");
        assert!(math[0] > math[1], "{math:?}");
        assert!(code[1] > code[0], "{code:?}");
    }

    #[test]
    fn stronger_regularisation_keeps_logits_nearer_the_prior() {
        let (texts, labels) = toy();
        let hasher = NgramHasher::new(1 << 12, NgramTokens::Words);
        let counts = WideModel::count_rows(hasher, &texts);
        let fit = |c| {
            WideModel::fit(
                hasher,
                &counts,
                &labels,
                FitOptions {
                    c,
                    ..Default::default()
                },
            )
        };
        let spread = |m: &WideModel| {
            let z = m.logits("what is 3 plus 4");
            (z[0] - z[1]).abs()
        };
        assert!(spread(&fit(0.01)) < spread(&fit(100.0)));
    }

    /// `coupling` shrinks what tells the models apart and leaves what moves them together: on
    /// prompts whose difficulty word moves both models' labels and whose topic word moves them
    /// apart, a strong coupling narrows the gap between the models' logits and keeps the gap
    /// between easy and hard prompts.
    #[test]
    fn coupling_shrinks_the_differences_between_models_not_their_mean() {
        let mut texts = Vec::new();
        let mut labels = Vec::new();
        for (level, shift) in [("easy", 0.25f32), ("hard", -0.25)] {
            for (topic, diff) in [("sum", 0.15f32), ("loop", -0.15)] {
                for filler in ["one", "two", "three", "four"] {
                    texts.push(format!("{level} {topic} {filler}"));
                    labels.push(vec![0.5 + shift + diff, 0.5 + shift - diff]);
                }
            }
        }
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        let hasher = NgramHasher::new(1 << 12, NgramTokens::Words);
        let counts = WideModel::count_rows(hasher, &texts);
        let fit = |coupling| {
            let options = FitOptions {
                coupling,
                ..FitOptions::default()
            };
            WideModel::fit(hasher, &counts, &labels, options)
        };
        let apart = |m: &WideModel| {
            let z = m.logits("easy sum two");
            z[0] - z[1]
        };
        let together = |m: &WideModel| {
            let (e, h) = (m.logits("easy sum two"), m.logits("hard sum two"));
            (e[0] + e[1] - h[0] - h[1]) / 2.0
        };
        let (plain, coupled) = (fit(1.0), fit(25.0));
        assert!(apart(&plain) > 0.0, "{}", apart(&plain));
        assert!(
            apart(&coupled) < 0.7 * apart(&plain),
            "models apart: {} coupled vs {} plain",
            apart(&coupled),
            apart(&plain)
        );
        assert!(
            together(&coupled) > 0.9 * together(&plain),
            "easy vs hard: {} coupled vs {} plain",
            together(&coupled),
            together(&plain)
        );
    }

    #[test]
    fn tensors_round_trip() {
        let (texts, labels) = toy();
        let hasher = NgramHasher::new(1 << 10, NgramTokens::Words);
        let model = WideModel::fit(
            hasher,
            &WideModel::count_rows(hasher, &texts),
            &labels,
            FitOptions::default(),
        );
        let t = model.to_tensors("wide.").unwrap();
        assert_eq!(
            WideModel::from_tensors(&t, "wide.", 2, NgramTokens::Words).unwrap(),
            model
        );
        assert!(WideModel::from_tensors(&t, "wide.", 3, NgramTokens::Words).is_err());
        assert!(WideModel::from_tensors(&t, "other.", 2, NgramTokens::Words).is_err());
    }
}
