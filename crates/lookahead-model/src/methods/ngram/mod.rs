//! The n-gram router: a logistic regression over hashed word n-grams of the whole prompt
//! ([`crate::wide`]), no encoder. A strong, cheap baseline (TF-IDF routers are in the routing
//! literature for a reason), and the same wide head lite and MLC can carry.

pub mod head;
pub mod model;
pub mod scorer;
pub mod train;
