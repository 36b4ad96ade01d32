//! Routers that score candidate models for a prompt: Lookahead-lite, MLC and kNN, the paper's
//! Lookahead-MLM and -CLM, their candle backbones, the frozen-layer state cache, training and
//! on-disk artifacts.
//!
//! Encoders: BERT ([`bert`], e.g. all-MiniLM-L6-v2) and ModernBERT ([`modernbert`]), picked from
//! a HF directory's `config.json` ([`encoder`]); every op on their training path has a backward
//! pass ([`ops`]). MLM runs on either family; lite, MLC and kNN on BERT.
//!
//! Entry points: [`train_router`] (training), [`load_scorer`] / [`load_scorer_with_backbone`]
//! (an artifact directory as a [`Scorer`]), [`select`] (argmax or cost-aware choice).

pub mod artifact;
pub mod attention;
pub mod backbone;
pub mod bert;
pub mod clm;
pub mod clm_router;
pub mod encoder;
pub mod fit;
pub mod gguf;
pub mod knn;
pub mod lite;
pub mod llama;
pub mod mlm;
pub mod mlm_router;
pub mod modernbert;
pub mod ops;
pub mod quant;
pub mod scorer;
pub mod simd;
pub mod states;
pub mod train;

pub use artifact::{
    load_scorer, load_scorer_for_models, load_scorer_on, load_scorer_with,
    load_scorer_with_backbone, rank, select, ArtifactError, HyperParams, Method, Metrics,
    RouterMeta, RouterScorer,
};
pub use backbone::{default_backbone_dir, Backbone, BackboneError};
pub use quant::Precision;
pub use scorer::{ScoreError, Scorer};
pub use states::{default_states_root, StateCache};
pub use train::{train_router, Example, TrainError, TrainRequest, Trained};
