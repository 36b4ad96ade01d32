//! Lookahead-CLM on the GGUF decoder: the model ([`model`]), training ([`train`]) and the
//! artifact as a scorer ([`scorer`]).

pub mod model;
pub mod scorer;
pub mod train;
