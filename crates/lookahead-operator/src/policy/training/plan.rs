//! Which artifact a policy should have: a plan per artifact version, narrowed to the members the
//! dataset (or a labelling step) can cover.

use lookahead_api::policy::{ArtifactStatus, TrainingTrigger};
use lookahead_api::{LLMPool, RoutingPolicy};

use super::data::DataCheck;
use crate::labels::{self, RETRAIN_ANNOTATION};

/// An artifact the policy should have but does not.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Pool fingerprint to train for.
    pub fingerprint: String,
    /// Artifact version = directory name = what names the Job.
    pub version: String,
    /// Member names (the pool now).
    pub members: Vec<String>,
    /// Model ids passed to `lookahead train --models`.
    pub models: Vec<String>,
    /// Members the Job labels before training (`lookahead label`); empty: no labelling step.
    pub label: Vec<String>,
}

/// Decides whether the policy needs a new artifact. `OnMembershipChange`: whenever the pool's
/// fingerprint differs from the served artifact's. `Manual`: when the `lookahead.dev/retrain`
/// annotation holds a value no artifact was trained for yet.
pub fn plan(
    policy: &RoutingPolicy,
    pool: &LLMPool,
    current: Option<&ArtifactStatus>,
) -> Option<Plan> {
    if !policy.spec.router.method.needs_training() {
        return None;
    }
    let training = policy.spec.training.as_ref()?;
    let fingerprint = pool.spec.fingerprint();
    let version = match training.trigger {
        TrainingTrigger::OnMembershipChange => {
            if current.is_some_and(|a| a.fingerprint == fingerprint) {
                return None;
            }
            fingerprint.clone()
        }
        TrainingTrigger::Manual => {
            let token = policy
                .metadata
                .annotations
                .as_ref()?
                .get(RETRAIN_ANNOTATION)?;
            let version = format!(
                "{fingerprint}-{}",
                &labels::short_hash(token.as_bytes())[..8]
            );
            if current.is_some_and(|a| a.version == version) {
                return None;
            }
            version
        }
    };
    Some(Plan {
        fingerprint,
        version,
        members: pool.spec.members.iter().map(|m| m.name.clone()).collect(),
        models: pool
            .spec
            .members
            .iter()
            .map(|m| m.model_id.clone())
            .collect(),
        label: Vec::new(),
    })
}

/// Name of the Job that trains `version` for `policy`.
pub fn job_name(policy: &str, version: &str) -> String {
    labels::object_name(&format!("{policy}-train-{version}"))
}

impl Plan {
    /// Fits the plan to the dataset: with a labelling step, the members without records are
    /// labelled first (all members when the operator cannot see the dataset: `lookahead label`
    /// asks only what the dataset lacks) and training covers the whole pool; without one, a
    /// member without records would make every record incomplete, so training leaves it out.
    pub fn account_for(&mut self, data: &DataCheck, labelling: bool) {
        match (data, labelling) {
            (DataCheck::Lacking(names), true) => self.label = names.clone(),
            (DataCheck::Unknown(_), true) => self.label = self.members.clone(),
            (DataCheck::Lacking(names), false) => {
                let keep: Vec<(String, String)> = self
                    .members
                    .iter()
                    .cloned()
                    .zip(self.models.iter().cloned())
                    .filter(|(n, _)| !names.contains(n))
                    .collect();
                self.members = keep.iter().map(|(n, _)| n.clone()).collect();
                self.models = keep.into_iter().map(|(_, m)| m).collect();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::testdata;

    #[test]
    fn membership_change_plans_one_version_per_fingerprint() {
        let policy = testdata::policy("p", Some("yi"));
        let pool = testdata::pool("pool", &["yi", "phi"]);
        let p = plan(&policy, &pool, None).expect("untrained policy needs an artifact");
        assert_eq!(p.version, pool.spec.fingerprint());
        assert_eq!(p, plan(&policy, &pool, None).expect("same plan again"));
        let done = ArtifactStatus {
            fingerprint: p.fingerprint.clone(),
            version: p.version.clone(),
            ..Default::default()
        };
        assert_eq!(plan(&policy, &pool, Some(&done)), None);
        let grown = testdata::pool("pool", &["yi", "phi", "gemma"]);
        let p2 = plan(&policy, &grown, Some(&done)).expect("membership changed");
        assert_ne!(job_name("p", &p2.version), job_name("p", &p.version));
    }

    #[test]
    fn manual_trigger_waits_for_the_annotation() {
        let mut policy = testdata::policy("p", Some("yi"));
        if let Some(t) = policy.spec.training.as_mut() {
            t.trigger = TrainingTrigger::Manual;
        }
        let pool = testdata::pool("pool", &["yi"]);
        assert_eq!(plan(&policy, &pool, None), None);
        policy.metadata.annotations = Some(BTreeMap::from([(
            RETRAIN_ANNOTATION.to_string(),
            "1".to_string(),
        )]));
        assert!(plan(&policy, &pool, None).is_some());
    }

    #[test]
    fn members_without_records_are_labelled_or_left_out() {
        let policy = testdata::policy("p", Some("yi"));
        let pool = testdata::pool("pool", &["yi", "phi"]);
        let fresh = plan(&policy, &pool, None).expect("plan");
        let lacking = DataCheck::Lacking(vec!["phi".into()]);
        let mut p = fresh.clone();
        p.account_for(&lacking, true);
        assert_eq!(
            (p.label, p.members),
            (vec!["phi".to_string()], fresh.members.clone())
        );
        let mut p = fresh.clone();
        p.account_for(&DataCheck::Unknown("pvc".into()), true);
        assert_eq!(p.label, fresh.members);
        let mut p = fresh.clone();
        p.account_for(&lacking, false);
        assert_eq!(
            (p.members, p.models),
            (vec!["yi".to_string()], vec!["Yi-model".to_string()])
        );
        assert!(p.label.is_empty());
        let mut p = fresh.clone();
        p.account_for(&DataCheck::Complete, true);
        assert_eq!(p, fresh);
    }
}
