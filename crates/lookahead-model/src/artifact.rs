//! Router artifacts: a directory with `router.safetensors` (trained tensors) and `router.json`
//! ([`RouterMeta`]: method, ordered models, pool fingerprint, backbone hash, hyper-parameters,
//! validation metrics, format version): the format every method reads and writes. Loading one as
//! a scorer is `load_scorer`.

use std::collections::{BTreeMap, HashMap};
use std::io::Read as _;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::backbones::encoder::EncoderKind;
use crate::backbones::encoder_dir::{Backbone, BackboneError, PromptWindow, Truncation};
use crate::backbones::gguf::GgufError;
use crate::backbones::mlm_tokens::MlmTokenError;
use crate::names::setting_names;
use crate::wide::{NgramHasher, NgramTokens};

pub const FORMAT_VERSION: u32 = 1;
pub const META_FILE: &str = "router.json";
/// Largest accepted `router.json` (real ones are a few kB): a bigger file is refused before it is
/// read into memory.
pub const MAX_META_BYTES: u64 = 4 << 20;
pub const TENSORS_FILE: &str = "router.safetensors";

/// Which router an artifact holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Lookahead-lite: frozen lower layers, trained upper layers over prompt + candidate slots.
    Lite,
    /// Multi-label classifier: the same trained upper layers over the prompt only.
    Mlc,
    /// Cosine k nearest neighbours over pooled prompt embeddings.
    Knn,
    /// Paper Lookahead-MLM: prompt + one masked slot per candidate in one encoder sequence.
    Mlm,
    /// Paper Lookahead-CLM: a decoder reads `prompt <Model_t>`; one cached step per candidate.
    Clm,
    /// Logistic regression over hashed word n-grams of the whole prompt; no encoder.
    Ngram,
    /// The mean of trained member routers' scores (`hyper.members`, e.g. n-gram + lite: the
    /// whole prompt's words and an encoder's reading of its head and tail), each member a whole
    /// artifact under `members/<method>/`.
    Ensemble,
}

setting_names!(Method, "method", {
    Lite => "lite",
    Mlc => "mlc",
    Knn => "knn",
    Mlm => "mlm",
    Clm => "clm",
    Ngram => "ngram",
    Ensemble => "ensemble",
});

/// How lite's candidate slots meet the prompt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlotDesign {
    /// One sequence, full attention: prompt tokens attend to the constant slot tokens too, and
    /// the slot head (random start) reads each slot's identity position. What artifacts written
    /// before this setting existed use.
    #[default]
    Joint,
    /// Prompt tokens attend to the prompt only (exactly MLC's pass), slots attend to prompt and
    /// slots; the slot head starts at zero and reads the mean of each slot's response positions
    /// (the ones trained to foresee the response). At initialisation lite *is* MLC; the slots
    /// can only add what the response objective teaches them.
    Asymmetric,
}

setting_names!(SlotDesign, "slot design", {
    Joint => "joint",
    Asymmetric => "asymmetric",
});

/// What lite's K response slots are trained to foresee.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResponseTarget {
    /// The frozen layers' states of the response's first K tokens (artifacts written before this
    /// setting existed).
    #[default]
    FirstTokens,
    /// The mean-pooled states of K successive windows spread over the whole response
    /// ([`crate::states::response_windows`]): what the answer says throughout, not how it opens.
    Windows,
}

setting_names!(ResponseTarget, "response target", {
    FirstTokens => "first-tokens",
    Windows => "windows",
});

/// The validation metric early stopping selects the epoch on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SelectOn {
    /// The pooled routing score (BCE breaking ties): what artifacts written before this
    /// setting used. A step function of a few hundred decisions: a 0.02-point move on 562
    /// prompts can decide the epoch (docs/results.md, "Learning curves").
    #[default]
    Router,
    /// The validation BCE of the routing labels: smooth in the weights, so it moves with what
    /// training changes rather than with which few decisions flip.
    Bce,
}

setting_names!(SelectOn, "selection metric", {
    Router => "router",
    Bce => "bce",
});

fn is_default<T: Default + PartialEq>(t: &T) -> bool {
    *t == T::default()
}

/// Training settings, recorded in the artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HyperParams {
    /// L: frozen backbone layers whose states are cached.
    pub frozen_layers: usize,
    pub trainable_layers: usize,
    /// K: response positions per candidate slot.
    pub slot_tokens: usize,
    /// Lite: how slots and prompt attend (`joint` for artifacts written before it existed).
    #[serde(default)]
    pub slot_design: SlotDesign,
    /// Lite: what the slots reconstruct.
    #[serde(default, skip_serializing_if = "is_default")]
    pub response_target: ResponseTarget,
    /// Prompt tokens kept, `[CLS]` and `[SEP]` included.
    pub max_prompt_tokens: usize,
    /// Which of a long prompt's tokens are kept (`head` for artifacts written before it existed).
    #[serde(default)]
    pub prompt_truncation: Truncation,
    /// Weight of the reconstruction loss (0 = no response objective).
    pub lambda: f64,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub batch_size: usize,
    pub max_epochs: usize,
    /// Epochs without validation improvement before stopping.
    pub patience: usize,
    /// The validation metric that decides the best epoch and when to stop.
    #[serde(default, skip_serializing_if = "is_default")]
    pub selection: SelectOn,
    pub seed: u64,
    /// Curriculum: mask rate at step 0, rising linearly to 1.0 over `mask_warm_fraction` of steps.
    pub mask_start: f64,
    pub mask_warm_fraction: f64,
    /// Paper labels: positive if normalised score >= threshold x best.
    pub label_threshold: f64,
    pub knn_k: usize,
    /// Lite/MLC: add the n-gram router's logits (a wide head over the whole prompt) to the
    /// encoder's; `false` for artifacts written before it existed.
    #[serde(default)]
    pub wide: bool,
    /// Hash buckets of the n-gram features (the `ngram` router and the wide head).
    #[serde(default = "default_ngram_buckets")]
    pub ngram_buckets: usize,
    /// Which tokens the n-grams are made of (`words-and-punctuation` for artifacts written
    /// before it existed).
    #[serde(default)]
    pub ngram_tokens: NgramTokens,
    /// N-gram fits drop the buckets fewer training prompts have (1 = keep every bucket, what
    /// artifacts written before it did).
    #[serde(default = "keep_every_bucket")]
    pub ngram_min_df: u32,
    /// N-gram router: once validation has picked the strength, fit again at it on the training
    /// and validation examples together (the router still gains with data), and serve that.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refit: bool,
    /// N-gram fits: how much harder each model's weights are shrunk towards the models' mean
    /// than the mean towards zero ([`crate::wide::FitOptions::coupling`]; 1 = plain L2, what
    /// artifacts written before it used).
    #[serde(default = "plain_l2", skip_serializing_if = "is_plain_l2")]
    pub coupling: f64,
    /// N-gram fits learn each model's scaled score (0..1, a soft BCE target, so the fitted
    /// probability estimates the expected score the route is chosen on) instead of the paper's
    /// 0/1 labels (within `label_threshold` of the prompt's best after min–max normalisation).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub score_targets: bool,
    /// With cross-fitted acceptance: re-score with the within-source calibration fitted on the
    /// cross-fitted scores ([`crate::calibration`]); `false` for artifacts written before it.
    #[serde(default)]
    pub source_calibration: bool,
    /// The calibration fits one slope per source and model instead of one per source.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub per_model_slopes: bool,
    /// N-gram router: each feature also gets a copy per source (its weight learned on that
    /// source's prompts), served through a source classifier ([`crate::wide::features::conjoin`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub source_features: bool,
    /// The shuffled-target control: each training example was given the responses of another
    /// example of its source, so a response objective saw real responses that were not its
    /// prompt's (`lookahead train --shuffle-responses`; an experiment, never served).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shuffled_responses: bool,
    /// Ensemble: the member methods, trained in this order (cheapest first, so a time budget
    /// leaves the rest to the slow one); empty for every other method.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<Method>,
}

impl HyperParams {
    /// The n-gram feature map these settings fit and serve with.
    pub fn ngram_hasher(&self) -> NgramHasher {
        NgramHasher::new(self.ngram_buckets, self.ngram_tokens)
    }

    /// The part of each prompt the encoder reads.
    pub fn prompt_window(&self) -> PromptWindow {
        PromptWindow {
            max_tokens: self.max_prompt_tokens,
            truncation: self.prompt_truncation,
        }
    }
}

fn default_ngram_buckets() -> usize {
    1 << 18
}

fn keep_every_bucket() -> u32 {
    1
}

fn plain_l2() -> f64 {
    1.0
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_plain_l2(coupling: &f64) -> bool {
    *coupling == 1.0
}

impl Default for HyperParams {
    fn default() -> Self {
        Self {
            frozen_layers: 4,
            trainable_layers: 2,
            slot_tokens: 16,
            slot_design: SlotDesign::Joint,
            response_target: ResponseTarget::FirstTokens,
            max_prompt_tokens: 64,
            prompt_truncation: Truncation::Head,
            lambda: 0.5,
            learning_rate: 2e-4,
            weight_decay: 0.01,
            batch_size: 16,
            max_epochs: 4,
            patience: 1,
            selection: SelectOn::Router,
            seed: 17,
            mask_start: 0.3,
            mask_warm_fraction: 0.2,
            label_threshold: 0.8,
            knn_k: 20,
            wide: false,
            ngram_buckets: default_ngram_buckets(),
            ngram_tokens: NgramTokens::MultilingualWords,
            ngram_min_df: 2,
            refit: false,
            coupling: plain_l2(),
            score_targets: false,
            source_calibration: true,
            per_model_slopes: false,
            source_features: false,
            shuffled_responses: false,
            members: Vec::new(),
        }
    }
}

/// Held-out quality of the trained router (scaled scores, 0..100).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub examples: usize,
    /// Mean scaled score of the chosen model.
    pub router: f64,
    /// Mean of the per-prompt best model's score.
    pub oracle: f64,
    /// The single model with the best mean, and that mean.
    pub best_single_model: String,
    pub best_single: f64,
    /// Routing BCE (lite/mlc).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bce: Option<f64>,
    /// Per source: router score, examples.
    #[serde(default)]
    pub per_source: BTreeMap<String, SourceMetrics>,
    /// Lite with a response objective: how well it foresees the held-out responses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub foresight: Option<Foresight>,
    /// The router's choice (pool index) for each example, in example order: what the acceptance
    /// gate compares with the best single model. Not written to `router.json`, and emptied by
    /// `train()` once the gate has read it.
    #[serde(skip)]
    pub choices: Vec<usize>,
    /// The router's scores behind `choices` (one row per example, pool order): what the
    /// within-source calibration re-scores. Not written to `router.json` either.
    #[serde(skip)]
    pub predictions: Vec<Vec<f32>>,
}

/// Lite's reconstruction of fully masked held-out responses (`1 − cos`, lower is better) and the
/// same for the per-(source, model, position) training mean: below the constant means the
/// slots carry something about this prompt's answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Foresight {
    pub reconstruction: f64,
    pub constant: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceMetrics {
    pub examples: usize,
    pub router: f64,
    pub oracle: f64,
    pub best_single: f64,
}

/// What the backbone was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackboneInfo {
    /// Hex SHA-256 of `model.safetensors`.
    pub sha256: String,
    pub hidden_size: usize,
    pub layers: usize,
    /// Backbone family (`bert`, `modernbert`, `llama`); artifacts written before it existed are
    /// BERT.
    #[serde(default)]
    pub kind: BackboneKind,
}

/// The backbone family an artifact was trained on: an encoder's (lite, MLC, kNN, MLM) or the
/// Llama-family decoder of CLM.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackboneKind {
    #[default]
    Bert,
    ModernBert,
    Llama,
}

impl From<EncoderKind> for BackboneKind {
    fn from(kind: EncoderKind) -> Self {
        match kind {
            EncoderKind::Bert => Self::Bert,
            EncoderKind::ModernBert => Self::ModernBert,
        }
    }
}

impl std::fmt::Display for BackboneKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Bert => "bert",
            Self::ModernBert => "modernbert",
            Self::Llama => "llama",
        })
    }
}

/// `router.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouterMeta {
    pub format_version: u32,
    pub method: Method,
    /// The pool, in score order.
    pub models: Vec<String>,
    /// `lookahead_api::pool_fingerprint` of the pool. CLI-trained artifacts use each model id as
    /// its member name too; the operator passes the LLMPool member names.
    pub pool_fingerprint: String,
    pub backbone: BackboneInfo,
    pub hyper: HyperParams,
    pub sources: Vec<String>,
    /// Validation split (early stopping), and the test split/fold when one was held out.
    pub validation: Metrics,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<Metrics>,
    #[serde(default)]
    pub best_epoch: usize,
    /// Epochs trained (0: a method fitted without an epoch loop, or an older artifact).
    #[serde(default)]
    pub epochs_run: usize,
    #[serde(default)]
    pub train_examples: usize,
    #[serde(default)]
    pub train_seconds: f64,
    /// Which records were held out (`"fold 2/5"`, `"split 80/10/10"`).
    #[serde(default)]
    pub holdout: String,
    /// The acceptance gate's verdict; absent in artifacts written before the gate existed (and
    /// when there were no validation records), which are served as accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acceptance: Option<Acceptance>,
    /// Share of the validation prompts on which the int8 scorer picks the model the f32 one
    /// picks (`lookahead train` measures it for lite, MLC and kNN); `auto` precision serves
    /// int8 only when it reaches [`crate::precision::INT8_AGREEMENT_FLOOR`]. Absent: not
    /// measured (older artifacts, other methods), served at f32 under `auto`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub int8_agreement: Option<f64>,
    /// The n-gram fit's regularisation strength (scikit-learn's `C`) picked on validation: the
    /// n-gram router's, or the wide head's. Absent for other methods and older artifacts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ngram_strength: Option<f64>,
}

/// The acceptance gate (never lose to the best single model): the router against the single
/// model that was best on the training examples, on the validation split, equal weight over
/// sources, with a paired, source-stratified bootstrap lower bound of the gain. A router that is
/// not accepted serves `fallback_model` for every request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Acceptance {
    /// Router minus `fallback_model` on the examples judged (mean scaled score, 0..100 points).
    pub gain: f64,
    /// One-sided lower confidence bound of `gain` at `level`.
    pub lower_bound: f64,
    /// `lower_bound >= min_gain`.
    pub accepted: bool,
    /// The single model with the best mean scaled score on the training examples (equal weight
    /// over sources): what a router that is not accepted serves.
    pub fallback_model: String,
    /// The gain the lower bound had to reach.
    pub min_gain: f64,
    /// One-sided confidence level of `lower_bound` (0.95).
    pub level: f64,
    /// Bootstrap resamples behind `lower_bound`.
    pub resamples: usize,
    /// Examples compared: the validation split's, or with `folds` every training and
    /// validation example.
    pub examples: usize,
    /// 0: the router trained here judged on the validation split. K > 1: the same training
    /// fitted K more times, each without one of K folds of the training and validation examples
    /// and judged on that fold (cross-fitting: every example judged by a router that never saw
    /// it, about ten times the evidence of a 10% validation split).
    #[serde(default)]
    pub folds: usize,
}

impl std::fmt::Display for Acceptance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (gain over {} {:+.2}, {:.0}% lower bound {:+.2}, min gain {:+.2}, n={}{})",
            if self.accepted {
                "accepted"
            } else {
                "not accepted"
            },
            self.fallback_model,
            self.gain,
            self.level * 100.0,
            self.lower_bound,
            self.min_gain,
            self.examples,
            match self.folds {
                0 => String::new(),
                k => format!(", cross-fitted over {k} folds"),
            }
        )
    }
}

/// Pool fingerprint for a CLI-trained pool: member name = model id.
pub fn fingerprint_models(models: &[String]) -> String {
    lookahead_api::pool_fingerprint(models.iter().map(|m| lookahead_api::MemberIdentity {
        name: m,
        model_id: m,
    }))
}

/// Why an artifact could not be saved or loaded.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("artifact {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("artifact {path}: invalid router.json: {source}")]
    Meta {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("artifact {path}: format version {found} is not supported (this build reads {FORMAT_VERSION})")]
    Version { path: PathBuf, found: u32 },
    #[error("artifact was trained on backbone {expected}, but {dir} holds {found}: pass --backbone with the backbone it was trained on, or retrain")]
    BackboneMismatch {
        expected: String,
        found: String,
        dir: PathBuf,
    },
    #[error(
        "artifact was trained on a {expected} backbone, but the backbone holds a {found} encoder"
    )]
    BackboneKind {
        expected: BackboneKind,
        found: BackboneKind,
    },
    #[error(transparent)]
    Tokens(#[from] MlmTokenError),
    #[error(
        "artifact was trained for models [{trained}], not [{requested}]: retrain for this pool"
    )]
    ModelsMismatch { trained: String, requested: String },
    #[error(transparent)]
    Backbone(#[from] BackboneError),
    #[error("CLM decoder: {0}")]
    Decoder(#[from] GgufError),
    #[error("artifact tensors: {0}")]
    Tensor(#[from] candle_core::Error),
    #[error("{0}")]
    Unsupported(String),
}

impl ArtifactError {
    /// Short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ArtifactError::Io { .. } => "io",
            ArtifactError::Meta { .. } => "meta",
            ArtifactError::Version { .. } => "version",
            ArtifactError::BackboneMismatch { .. } => "backbone_mismatch",
            ArtifactError::BackboneKind { .. } => "backbone_kind",
            ArtifactError::Tokens(_) => "tokens",
            ArtifactError::ModelsMismatch { .. } => "models_mismatch",
            ArtifactError::Backbone(_) => "backbone",
            ArtifactError::Decoder(_) => "decoder",
            ArtifactError::Tensor(_) => "tensor",
            ArtifactError::Unsupported(_) => "unsupported",
        }
    }
}

impl RouterMeta {
    /// Writes this metadata as `dir`'s `router.json` (the tensors stay as they are).
    pub fn write(&self, dir: &Path) -> Result<(), ArtifactError> {
        let path = dir.join(META_FILE);
        let json = serde_json::to_string_pretty(self).map_err(|source| ArtifactError::Meta {
            path: path.clone(),
            source,
        })?;
        std::fs::write(&path, json + "\n").map_err(|source| ArtifactError::Io { path, source })
    }

    /// Reads and checks `router.json` of an artifact directory.
    pub fn read(dir: &Path) -> Result<Self, ArtifactError> {
        let path = dir.join(META_FILE);
        let io = |source| ArtifactError::Io {
            path: path.clone(),
            source,
        };
        let mut text = String::new();
        std::io::Read::take(std::fs::File::open(&path).map_err(io)?, MAX_META_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(io)?;
        if text.len() as u64 > MAX_META_BYTES {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{META_FILE} is larger than the {MAX_META_BYTES}-byte limit"),
            )));
        }
        // Check the version before the full schema, so old/new formats get the right message.
        #[derive(Deserialize)]
        struct Version {
            format_version: u32,
        }
        let v: Version = serde_json::from_str(&text).map_err(|source| ArtifactError::Meta {
            path: path.clone(),
            source,
        })?;
        if v.format_version != FORMAT_VERSION {
            return Err(ArtifactError::Version {
                path,
                found: v.format_version,
            });
        }
        serde_json::from_str(&text).map_err(|source| ArtifactError::Meta { path, source })
    }

    /// Whether the router may route: its acceptance says so, or it has none (an artifact from
    /// before the gate, or trained without validation records).
    pub fn accepted(&self) -> bool {
        self.acceptance.as_ref().is_none_or(|a| a.accepted)
    }

    /// Errors unless `models` is exactly this artifact's pool, in order.
    pub fn check_models(&self, models: &[String]) -> Result<(), ArtifactError> {
        if self.models != models {
            return Err(ArtifactError::ModelsMismatch {
                trained: self.models.join(", "),
                requested: models.join(", "),
            });
        }
        Ok(())
    }
}

/// Writes an artifact directory (created if needed).
pub fn save_artifact(
    dir: &Path,
    meta: &RouterMeta,
    tensors: &HashMap<String, Tensor>,
) -> Result<(), ArtifactError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ArtifactError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    candle_core::safetensors::save(tensors, dir.join(TENSORS_FILE))?;
    meta.write(dir)
}

/// Where an ensemble artifact in `dir` keeps its `member` artifact.
pub fn member_dir(dir: &Path, member: Method) -> PathBuf {
    dir.join("members").join(member.to_string())
}

/// The artifact's tensors in `dir`, loaded onto `device`.
pub fn load_tensors(dir: &Path, device: &Device) -> Result<HashMap<String, Tensor>, ArtifactError> {
    Ok(candle_core::safetensors::load(
        dir.join(TENSORS_FILE),
        device,
    )?)
}

/// The encoder backbone in `backbone_dir` on `device`; rejects one whose hash differs from the
/// one `meta` was trained on.
pub fn load_backbone(
    meta: &RouterMeta,
    backbone_dir: &Path,
    device: &Device,
) -> Result<Backbone, ArtifactError> {
    let backbone = Backbone::load(backbone_dir, device)?;
    if backbone.hash != meta.backbone.sha256 {
        return Err(ArtifactError::BackboneMismatch {
            expected: meta.backbone.sha256.clone(),
            found: backbone.hash.clone(),
            dir: backbone_dir.to_path_buf(),
        });
    }
    Ok(backbone)
}

impl BackboneInfo {
    /// What `backbone` is, for the artifact.
    pub fn of(backbone: &Backbone) -> Self {
        Self {
            sha256: backbone.hash.clone(),
            hidden_size: backbone.encoder.hidden_size(),
            layers: backbone.encoder.num_layers(),
            kind: backbone.encoder.kind().into(),
        }
    }
}
