//! Routers that score candidate models for a prompt: Lookahead (lite, MLM, CLM), MLC and kNN,
//! their candle backbones, training loops and on-disk artifacts.

pub mod scorer;

pub use scorer::{ScoreError, Scorer};
