//! Training shared by every method: the request and its result ([`request`]), the one epoch
//! loop ([`epochs`]), the learning-rate schedule and masking curriculum ([`schedule`]), early
//! stopping ([`stopping`]), held-out metrics ([`metrics`]) and the acceptance gate against the best
//! single model ([`acceptance`]).

pub mod acceptance;
pub mod epochs;
pub mod metrics;
pub mod request;
pub mod schedule;
pub mod stopping;

pub use acceptance::{accept, best_single};
pub use epochs::{fit, BatchLoss, FitSettings, Step, Trainee};
pub use metrics::{metrics, scored_metrics};
pub use request::{Example, Fitted, TrainError, TrainRequest, Trained};
pub use schedule::{mask_rate, Decay, LrSchedule};
pub use stopping::{snapshot, to_device, BestEpoch, EarlyStopping};
