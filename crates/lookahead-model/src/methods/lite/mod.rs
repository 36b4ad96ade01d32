//! Lookahead-lite, and the MLC baseline (the same trained upper layers over the prompt only,
//! [`model::UpperKind::Mlc`]): the model ([`model`]), training on cached states ([`train`]) and
//! the artifact as a scorer ([`scorer`]), and the check that its slots foresee responses
//! ([`foresight`]).

pub mod foresight;
pub mod model;
pub mod scorer;
pub mod train;
