//! Status conditions: built fresh each reconcile, keeping `lastTransitionTime` from the previous
//! condition of the same type while its status is unchanged (as `meta.SetStatusCondition` does).
//! [`Conditions`] is the one builder both controllers write their conditions with.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// Builds a condition, carrying the transition time over from `previous` when the status holds.
pub fn condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
) -> Condition {
    let status = if status { "True" } else { "False" };
    condition_with(previous, type_, status, reason, message, generation)
}

/// Like [`condition`], with the status as written (`True`, `False` or `Unknown`).
pub fn condition_with(
    previous: &[Condition],
    type_: &str,
    status: &str,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
) -> Condition {
    let status = status.to_string();
    // The API server rejects an empty message (it is serialized as null).
    let message = Some(message.into())
        .filter(|m: &String| !m.is_empty())
        .unwrap_or_else(|| reason.to_string());
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(Timestamp::now()));
    Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

/// Condition types the controllers write.
pub const READY: &str = "Ready";
pub const DEGRADED: &str = "Degraded";
pub const TRAINING: &str = "Training";
pub const TRAINING_FAILED: &str = "TrainingFailed";
pub const MISSING_DATA: &str = "MissingData";
/// Whether the served artifact passed the acceptance gate (beat the best single model).
pub const ROUTER_ACCEPTED: &str = "RouterAccepted";

/// The conditions of one status, in the order they are set, each stamped with the object's
/// generation and carrying its transition time over from the previous status.
pub struct Conditions<'a> {
    previous: &'a [Condition],
    generation: Option<i64>,
    built: Vec<Condition>,
}

impl<'a> Conditions<'a> {
    pub fn new(previous: &'a [Condition], generation: Option<i64>) -> Self {
        Conditions {
            previous,
            generation,
            built: Vec::new(),
        }
    }

    /// Sets `type_` to `True` or `False`.
    pub fn set(
        &mut self,
        type_: &str,
        status: bool,
        reason: &str,
        message: impl Into<String>,
    ) -> &mut Self {
        let c = condition(
            self.previous,
            type_,
            status,
            reason,
            message,
            self.generation,
        );
        self.built.push(c);
        self
    }

    /// Sets `type_` to `Unknown`.
    pub fn unknown(&mut self, type_: &str, reason: &str, message: impl Into<String>) -> &mut Self {
        let c = condition_with(
            self.previous,
            type_,
            "Unknown",
            reason,
            message,
            self.generation,
        );
        self.built.push(c);
        self
    }

    /// Keeps, as they were, the previous conditions of every type not set here.
    pub fn keep_the_rest(&mut self) -> &mut Self {
        let set: Vec<String> = self.built.iter().map(|c| c.type_.clone()).collect();
        self.built.extend(
            self.previous
                .iter()
                .filter(|c| !set.contains(&c.type_))
                .cloned(),
        );
        self
    }

    pub fn build(self) -> Vec<Condition> {
        self.built
    }
}

/// Whether `conditions` has `type_` with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// The condition of `type_`, if any.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_survives_while_status_holds() {
        let first = condition(&[], "Ready", false, "A", "m", Some(1));
        let again = condition(
            std::slice::from_ref(&first),
            "Ready",
            false,
            "B",
            "m2",
            Some(2),
        );
        assert_eq!(first.last_transition_time, again.last_transition_time);
        assert_eq!(again.reason, "B");
        let flipped = condition(&[again], "Ready", true, "C", "", Some(3));
        assert_eq!(flipped.status, "True");
        assert!(is_true(&[flipped], "Ready"));
    }

    #[test]
    fn the_builder_keeps_order_transition_times_and_the_rest() {
        let previous = vec![
            condition(&[], READY, true, "A", "m", Some(1)),
            condition(&[], TRAINING, false, "B", "m", Some(1)),
        ];
        let mut c = Conditions::new(&previous, Some(2));
        c.set(READY, true, "C", "")
            .unknown(MISSING_DATA, "D", "why");
        c.keep_the_rest();
        let built = c.build();
        let types: Vec<&str> = built.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, [READY, MISSING_DATA, TRAINING]);
        assert_eq!(
            built[0].last_transition_time,
            previous[0].last_transition_time
        );
        assert_eq!(built[0].message, "C", "an empty message becomes the reason");
        assert_eq!(built[0].observed_generation, Some(2));
        assert_eq!(built[1].status, "Unknown");
        assert_eq!(built[2], previous[1]);
    }
}
