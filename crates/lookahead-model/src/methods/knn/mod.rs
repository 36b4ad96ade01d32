//! kNN baseline: the index ([`model`]), building it ([`train`]), scoring with it ([`scorer`]).

pub mod model;
pub mod scorer;
pub mod train;
