//! Lookahead-MLM: the model ([`model`]), training end to end ([`train`]) and the artifact as a
//! scorer ([`scorer`]).

pub mod model;
pub mod scorer;
pub mod train;
