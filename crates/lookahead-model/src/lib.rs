//! Routers that score candidate models for a prompt: Lookahead-lite, MLC and kNN, the paper's
//! Lookahead-MLM and -CLM, their candle backbones, training and on-disk artifacts.
//!
//! Layers, each using only those above it:
//! - [`kernels`]: AVX-512 element-wise code, int8 linear layers, fused attention, ops with a
//!   backward pass;
//! - [`nn`]: layers the models share (linear, layer norm, embedding lookup, pooling);
//! - [`backbones`]: BERT and ModernBERT encoders (picked from a HF directory's `config.json`),
//!   the Llama-family decoder read from GGUF;
//! - [`states`]: the on-disk cache of frozen-layer states; [`scorer`]: the [`Scorer`] trait;
//!   [`select`]: the routing decision; [`artifact`]: the artifact format;
//! - [`fit`]: the training request and result, the one epoch loop, schedule, early stopping,
//!   metrics;
//! - [`methods`]: lite (with MLC), kNN, MLM, CLM, n-gram, each as model, train and scorer, and
//!   the ensemble's mean of members; [`compose`]: an ensemble's artifact from trained members;
//! - [`crossfit`]: a request's training repeated without each of K folds (the acceptance gate's
//!   cross-fitted evidence); [`calibration`]: the within-source calibration fitted on it;
//!   [`precision`] / [`agreement`]: which precision `auto` serves, and the int8 agreement
//!   training measures for it;
//! - `names`: the text names of setting enums (one table each, for the CLI and `router.json`);
//! - entry points: [`train()`] (any method) and [`load_scorer`] (any artifact, as
//!   [`ScorerOptions`] say, calibrated when the artifact carries a calibration).

pub mod agreement;
pub mod artifact;
pub mod backbones;
pub mod calibration;
pub mod compose;
pub mod crossfit;
pub mod fit;
pub mod kernels;
pub mod load;
pub mod methods;
mod names;
pub mod nn;
pub mod precision;
pub mod scorer;
pub mod select;
pub mod states;
pub mod train;
pub mod wide;

pub use agreement::measure_int8_agreement;
pub use artifact::{
    save_artifact, Acceptance, ArtifactError, BackboneKind, HyperParams, Method, Metrics,
    RouterMeta,
};
pub use backbones::encoder_dir::{
    default_backbone_dir, Backbone, BackboneError, PromptWindow, Truncation,
};
pub use backbones::gguf::default_decoder_dir;
pub use backbones::mlm_tokens::MlmTokenError;
pub use fit::{Example, TrainError, TrainRequest, Trained};
pub use kernels::quant::Precision;
pub use load::{load_scorer, ScorerOptions};
pub use precision::{serving_precision, INT8_AGREEMENT_FLOOR};
pub use scorer::{ScoreError, Scorer};
pub use select::{rank, select};
pub use states::{default_states_root, StateCache};
pub use train::train;
