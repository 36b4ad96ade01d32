//! Status conditions: built fresh each reconcile, keeping `lastTransitionTime` from the previous
//! condition of the same type while its status is unchanged (as `meta.SetStatusCondition` does).

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
}
