//! The routing methods, each as a model, its training and its artifact as a scorer: Lookahead-
//! lite with the MLC baseline ([`lite`]), the kNN baseline ([`knn`]), the paper's Lookahead-MLM
//! ([`mlm`]) and Lookahead-CLM ([`clm`]). Lite, MLC and kNN train on cached frozen-layer states
//! ([`cached`]); every trained method runs the shared epoch loop in [`crate::fit`].

pub mod cached;
pub mod clm;
pub mod knn;
pub mod lite;
pub mod mlm;
pub mod ngram;

use crate::fit::Example;

/// Logit of each pool member's positive rate in `train` (clamped to 2..98%): a routing bias
/// that starts training at the prior.
pub fn prior_logits(train: &[Example], models: usize) -> Vec<f32> {
    let n = train.len() as f32;
    (0..models)
        .map(|j| {
            let rate = (train.iter().map(|e| e.labels[j]).sum::<f32>() / n).clamp(0.02, 0.98);
            (rate / (1.0 - rate)).ln()
        })
        .collect()
}
