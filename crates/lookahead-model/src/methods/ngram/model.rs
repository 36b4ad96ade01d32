//! The n-gram router's model: a [`WideModel`] over the prompt's hashed n-grams, optionally with a
//! source-specific copy of each feature ([`conjoin`]) weighted by a source classifier's
//! probabilities (`HyperParams::source_features`).

use std::collections::HashMap;

use candle_core::Tensor;

use crate::calibration::source_probabilities;
use crate::wide::features::{conjoin, weigh};
use crate::wide::{NgramTokens, SparseRow, WideError, WideModel};

/// Tensor-name prefix of the n-gram weights in an artifact.
pub const PREFIX: &str = "wide.";
/// Tensor-name prefix of the source classifier of a source-aware n-gram router.
pub const SOURCE_PREFIX: &str = "ngram.source.";

/// A fitted n-gram router.
#[derive(Debug, Clone, PartialEq)]
pub struct NgramRouter {
    pub model: WideModel,
    /// With source features: the classifier whose `P(source | prompt)` weighs each source's
    /// copy of the features, sources in the artifact's order.
    pub source: Option<WideModel>,
}

impl NgramRouter {
    /// The count row of `prompt` as `model` was fitted on (before IDF and normalisation).
    pub fn counts(&self, prompt: &str) -> SparseRow {
        let counts = self.model.hasher.counts(prompt);
        match &self.source {
            None => counts,
            Some(classifier) => conjoin(
                counts,
                &source_probabilities(classifier, prompt),
                self.model.hasher.buckets,
            ),
        }
    }

    /// One logit per pool member.
    pub fn logits(&self, prompt: &str) -> Vec<f32> {
        let row = weigh(self.counts(prompt), &self.model.idf);
        self.model.logits_of(&row)
    }

    /// The artifact tensors: the weights under [`PREFIX`], the classifier under
    /// [`SOURCE_PREFIX`].
    pub fn to_tensors(&self) -> Result<HashMap<String, Tensor>, WideError> {
        let mut t = self.model.to_tensors(PREFIX)?;
        if let Some(classifier) = &self.source {
            t.extend(classifier.to_tensors(SOURCE_PREFIX)?);
        }
        Ok(t)
    }

    /// Reads what [`NgramRouter::to_tensors`] wrote; `sources` is `Some(count)` for a
    /// source-aware router, `tokens` what its settings say it was fitted on.
    pub fn from_tensors(
        tensors: &HashMap<String, Tensor>,
        models: usize,
        sources: Option<usize>,
        tokens: NgramTokens,
    ) -> Result<Self, WideError> {
        let model = WideModel::from_tensors(tensors, PREFIX, models, tokens)?;
        let source = sources
            .map(|n| WideModel::from_tensors(tensors, SOURCE_PREFIX, n, tokens))
            .transpose()?;
        Ok(Self { model, source })
    }
}
