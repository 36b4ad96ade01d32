//! The "wide" half of a router: hashed word n-grams of the whole prompt ([`features`]) and a
//! logistic regression over them ([`linear`]). On its own it is the `ngram` router; beside a
//! trained encoder it adds what the encoder's truncated window cannot see.

pub mod features;
pub mod linear;

pub use features::{NgramHasher, NgramTokens, SparseRow};
pub use linear::{mean_bce, sigmoid, FitOptions, WideError, WideModel};
