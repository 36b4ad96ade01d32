//! What a training run takes ([`TrainRequest`] of [`Example`]s) and gives back ([`Trained`]: the
//! artifact's meta and tensors), and why it can fail ([`TrainError`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};

use crate::artifact::{
    fingerprint_models, member_dir, save_artifact, ArtifactError, BackboneInfo, HyperParams,
    Method, Metrics, RouterMeta, FORMAT_VERSION,
};
use crate::backbones::encoder_dir::BackboneError;
use crate::backbones::gguf::GgufError;
use crate::backbones::mlm_tokens::MlmTokenError;
use crate::states::StateCacheError;

/// One training prompt projected on the pool (vectors in pool order).
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub id: String,
    pub source: String,
    pub prompt: String,
    pub responses: Vec<String>,
    /// Paper labels (0/1).
    pub labels: Vec<f32>,
    /// Scores scaled to 0..100 with the source's range (metrics, kNN targets).
    pub quality: Vec<f32>,
}

impl Example {
    /// A record projected on the pool as a training example: the paper's labels (positive if the
    /// min–max normalised score >= `threshold` x best) and the scores scaled to 0..100 with the
    /// source's `score_range`.
    pub fn from_record(
        data: &lookahead_data::Dataset,
        record: &lookahead_data::PoolRecord,
        threshold: f64,
    ) -> Result<Self, lookahead_data::DataError> {
        let scores = record.scores();
        Ok(Self {
            id: record.id.clone(),
            source: record.source.clone(),
            prompt: record.prompt.clone(),
            responses: record.responses.iter().map(|r| r.text.clone()).collect(),
            labels: lookahead_data::label_targets(&scores, threshold),
            quality: data
                .scaled_scores(record)?
                .into_iter()
                .map(|q| q as f32)
                .collect(),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("no training examples")]
    Empty,
    #[error("example {id} has {got} responses/labels for a pool of {want}")]
    Shape { id: String, got: usize, want: usize },
    #[error("invalid hyper-parameters: {0}")]
    Hyper(String),
    #[error(transparent)]
    States(#[from] StateCacheError),
    #[error(transparent)]
    Backbone(#[from] BackboneError),
    #[error("CLM decoder: {0}")]
    Decoder(#[from] GgufError),
    #[error(transparent)]
    Tokens(#[from] MlmTokenError),
    #[error("training: {0}")]
    Tensor(#[from] candle_core::Error),
    #[error("acceptance gate: {0}")]
    Acceptance(#[from] lookahead_data::DataError),
    #[error("acceptance gate, cross-fitting: {0}")]
    CrossFit(String),
}

impl TrainError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            TrainError::Empty => "empty",
            TrainError::Shape { .. } => "shape",
            TrainError::Hyper(_) => "hyper",
            TrainError::States(_) => "states",
            TrainError::Backbone(_) => "backbone",
            TrainError::Decoder(_) => "decoder",
            TrainError::Tokens(_) => "tokens",
            TrainError::Tensor(_) => "tensor",
            TrainError::Acceptance(_) | TrainError::CrossFit(_) => "acceptance",
        }
    }
}

/// Everything one training run needs, for every method.
pub struct TrainRequest<'a> {
    pub method: Method,
    pub hyper: HyperParams,
    pub models: Vec<String>,
    pub sources: Vec<String>,
    pub train: &'a [Example],
    pub valid: &'a [Example],
    /// Held-out records scored after training (a CV fold or the test split), if any.
    pub test: Option<&'a [Example]>,
    pub holdout: String,
    /// The gain over the best single model the acceptance gate asks for: the router is accepted
    /// when the gain's one-sided 95% lower bound on validation reaches it (0: never worse).
    pub min_gain: f64,
    /// Cross-fitting folds of the acceptance gate's evidence (0: judge on the validation split
    /// only; K > 1: train K more times, each judged on a fold of the training and validation
    /// examples it did not see; see [`crate::artifact::Acceptance::folds`]).
    pub acceptance_folds: usize,
    /// The backbone directory: a HF encoder (lite, MLC, kNN, MLM) or the GGUF decoder (CLM).
    /// `None`: the method's default ([`crate::default_backbone_dir`], or
    /// [`crate::backbones::gguf::default_decoder_dir`] for CLM).
    pub backbone: Option<PathBuf>,
    /// Where training runs (MLM and CLM; lite, MLC and kNN train on cached states on the CPU).
    pub device: Device,
    pub states_root: PathBuf,
    pub progress: bool,
    /// The time budget's end (`lookahead train --time-budget`): no epoch starts that would, at
    /// the last epoch's pace, end after it. The first epoch always runs; `None`: no budget.
    pub deadline: Option<Instant>,
}

impl<'a> TrainRequest<'a> {
    /// This request with other examples (and no progress bars): the same method, pool,
    /// hyper-parameters, backbone and device.
    pub fn with_examples<'b>(
        &self,
        train: &'b [Example],
        valid: &'b [Example],
        test: Option<&'b [Example]>,
    ) -> TrainRequest<'b> {
        TrainRequest {
            method: self.method,
            hyper: self.hyper.clone(),
            models: self.models.clone(),
            sources: self.sources.clone(),
            train,
            valid,
            test,
            holdout: self.holdout.clone(),
            min_gain: self.min_gain,
            acceptance_folds: 0,
            backbone: self.backbone.clone(),
            device: self.device.clone(),
            states_root: self.states_root.clone(),
            progress: false,
            deadline: self.deadline,
        }
    }

    /// This request for one member of an ensemble: the member's method and
    /// `acceptance_folds`, the same examples, settings and time budget.
    pub fn for_member(&self, member: Method, acceptance_folds: usize) -> TrainRequest<'a> {
        let mut req = self.with_examples(self.train, self.valid, self.test);
        req.method = member;
        req.hyper.members.clear();
        req.acceptance_folds = acceptance_folds;
        req.progress = self.progress;
        req
    }

    /// Every train, validation and test example, in that order.
    pub fn all_examples(&self) -> impl Iterator<Item = &Example> {
        self.train
            .iter()
            .chain(self.valid)
            .chain(self.test.unwrap_or(&[]))
    }

    /// Errors unless there is training data and every example has one response, label and
    /// score per pool member.
    pub fn check_examples(&self) -> Result<(), TrainError> {
        if self.train.is_empty() {
            return Err(TrainError::Empty);
        }
        let p = self.models.len();
        for e in self.all_examples() {
            let got = e.labels.len().min(e.quality.len()).min(e.responses.len());
            if got != p || e.labels.len() != p || e.quality.len() != p || e.responses.len() != p {
                return Err(TrainError::Shape {
                    id: e.id.clone(),
                    got,
                    want: p,
                });
            }
        }
        Ok(())
    }
}

/// What a method's training settled on: the best epoch's weights (on the CPU) and metrics.
pub struct Fitted {
    pub tensors: HashMap<String, Tensor>,
    pub validation: Metrics,
    pub test: Option<Metrics>,
    pub best_epoch: usize,
    /// Epochs the loop ran (0 for methods fitted without one): fewer than `max_epochs` when
    /// early stopping or the time budget ended it.
    pub epochs_run: usize,
}

/// A trained router: what goes into the artifact.
pub struct Trained {
    pub meta: RouterMeta,
    pub tensors: HashMap<String, Tensor>,
    /// An ensemble's trained members, in `meta.hyper.members` order (empty otherwise).
    pub members: Vec<Trained>,
}

impl Trained {
    /// The artifact of a finished run: `fitted` weights and metrics, trained with `hyper` (the
    /// request's, as the method settled them) on `backbone`, since `started`.
    pub fn new(
        req: &TrainRequest,
        hyper: HyperParams,
        backbone: BackboneInfo,
        fitted: Fitted,
        started: Instant,
    ) -> Self {
        let meta = RouterMeta {
            format_version: FORMAT_VERSION,
            method: req.method,
            models: req.models.clone(),
            pool_fingerprint: fingerprint_models(&req.models),
            backbone,
            hyper,
            sources: req.sources.clone(),
            validation: fitted.validation,
            test: fitted.test,
            best_epoch: fitted.best_epoch,
            epochs_run: fitted.epochs_run,
            train_examples: req.train.len(),
            train_seconds: started.elapsed().as_secs_f64(),
            holdout: req.holdout.clone(),
            acceptance: None,
            int8_agreement: None,
            ngram_strength: None,
        };
        Self {
            meta,
            tensors: fitted.tensors,
            members: Vec::new(),
        }
    }

    /// Writes the artifact to `dir`, an ensemble's members each under
    /// [`crate::artifact::member_dir`].
    pub fn save(&self, dir: &Path) -> Result<(), ArtifactError> {
        save_artifact(dir, &self.meta, &self.tensors)?;
        for member in &self.members {
            member.save(&member_dir(dir, member.meta.method))?;
        }
        Ok(())
    }

    /// Drops the per-example choices and scores the acceptance gate, the calibration and an
    /// ensemble's combination read, so the metadata is what `router.json` reads back.
    pub fn forget_examples(&mut self) {
        let meta = &mut self.meta;
        for m in std::iter::once(&mut meta.validation).chain(meta.test.as_mut()) {
            m.choices.clear();
            m.predictions.clear();
        }
        self.members.iter_mut().for_each(Trained::forget_examples);
    }
}
