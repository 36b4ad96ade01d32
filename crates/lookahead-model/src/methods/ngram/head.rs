//! The wide head lite and MLC carry beside their encoder (`HyperParams::wide`): the n-gram
//! router's logits are added to the encoder's, so the encoder learns what whole-prompt n-grams
//! miss instead of learning them again from a 64-token window. The encoder trains against
//! *cross-fitted* n-gram logits (each training prompt's come from a fit that did not see it):
//! in-sample logits are overfitted, so the encoder would see almost no residual on the training
//! set, and held-out prompts would then carry one it never learned.

use lookahead_data::unit_hash;

use super::train::{fit_options, fit_wide, targets};
use crate::fit::{Example, TrainRequest};
use crate::wide::WideModel;

/// Inner folds of the cross-fit.
const CROSS_FIT_FOLDS: usize = 5;

/// The fitted head and the training prompts' out-of-fold logits.
pub struct WideHead {
    /// Fitted on every training prompt: validation, test and serving use it.
    pub model: WideModel,
    /// Per training example, in order: logits of the fit that held it out.
    pub train_logits: Vec<Vec<f32>>,
    /// The regularisation strength picked on validation (every fit's).
    pub strength: f32,
}

impl WideHead {
    /// The head's logits for `examples` (not the training ones: those are `train_logits`).
    pub fn logits(&self, examples: &[Example]) -> Vec<Vec<f32>> {
        examples
            .iter()
            .map(|e| self.model.logits(&e.prompt))
            .collect()
    }
}

/// Fits the head on `req.train` (strength picked on `req.valid`) and cross-fits its training
/// logits with the same strength.
pub fn fit_head(req: &TrainRequest) -> WideHead {
    let (model, c) = fit_wide(req.train, req.valid, &req.hyper);
    let fold_of = |e: &Example| {
        ((unit_hash(&e.id, "wide-cross-fit") * CROSS_FIT_FOLDS as f64) as usize)
            .min(CROSS_FIT_FOLDS - 1)
    };
    let hasher = req.hyper.ngram_hasher();
    let mut train_logits = vec![Vec::new(); req.train.len()];
    for fold in 0..CROSS_FIT_FOLDS {
        let (inside, outside): (Vec<usize>, Vec<usize>) =
            (0..req.train.len()).partition(|&i| fold_of(&req.train[i]) == fold);
        if inside.is_empty() {
            continue;
        }
        let texts: Vec<&str> = outside
            .iter()
            .map(|&i| req.train[i].prompt.as_str())
            .collect();
        let labels: Vec<Vec<f32>> = outside
            .iter()
            .map(|&i| targets(&req.train[i], &req.hyper))
            .collect();
        let counts = WideModel::count_rows(hasher, &texts);
        let fold_model = WideModel::fit(hasher, &counts, &labels, fit_options(c, &req.hyper));
        for i in inside {
            train_logits[i] = fold_model.logits(&req.train[i].prompt);
        }
    }
    tracing::info!(
        c,
        buckets = hasher.buckets,
        "wide n-gram head fitted and cross-fitted"
    );
    WideHead {
        model,
        train_logits,
        strength: c,
    }
}
