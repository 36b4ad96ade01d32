//! Whether every member has records in the training dataset (read from a ConfigMap dataset's
//! `manifest.json`; a dataset on a PersistentVolumeClaim is not readable by the operator).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use lookahead_api::{LLMPool, RoutingPolicy};

use crate::context::Context;
use crate::error::Result;

/// Whether every member has records in the training dataset.
#[derive(Debug, Clone, PartialEq)]
pub enum DataCheck {
    NotRequired,
    Complete,
    Lacking(Vec<String>),
    /// The dataset cannot be inspected by the operator (a PVC, or a malformed manifest).
    Unknown(String),
}

/// Checks the policy's dataset against the pool's members.
pub async fn check(
    ctx: &Context,
    policy: &RoutingPolicy,
    pool: &LLMPool,
    ns: &str,
) -> Result<DataCheck> {
    let Some(training) = policy.spec.training.as_ref() else {
        return Ok(DataCheck::NotRequired);
    };
    if !policy.spec.router.method.needs_training() {
        return Ok(DataCheck::NotRequired);
    }
    let Some(cm_ref) = &training.dataset.config_map else {
        return Ok(DataCheck::Unknown(
            "the dataset is on a PersistentVolumeClaim, which the operator does not read".into(),
        ));
    };
    let api: Api<ConfigMap> = ctx.api(ns);
    let Some(cm) = api.get_opt(&cm_ref.name).await? else {
        return Ok(DataCheck::Unknown(format!(
            "dataset ConfigMap {:?} not found",
            cm_ref.name
        )));
    };
    Ok(match members_without_data(pool, &cm) {
        Some(names) if names.is_empty() => DataCheck::Complete,
        Some(names) => DataCheck::Lacking(names),
        None => DataCheck::Unknown(format!(
            "dataset ConfigMap {:?} has no readable manifest.json",
            cm_ref.name
        )),
    })
}

/// Members whose model has no records in a ConfigMap dataset (by its `manifest.json`, which
/// lists each source's models). `None` when the dataset cannot be inspected.
pub fn members_without_data(pool: &LLMPool, dataset: &ConfigMap) -> Option<Vec<String>> {
    let manifest = dataset.data.as_ref()?.get("manifest.json")?;
    let manifest: serde_json::Value = serde_json::from_str(manifest).ok()?;
    let known: BTreeSet<&str> = manifest
        .as_object()?
        .values()
        .filter_map(|source| source.get("models")?.as_array())
        .flatten()
        .filter_map(|m| m.as_str())
        .collect();
    Some(
        pool.spec
            .members
            .iter()
            .filter(|m| !known.contains(m.model_id.as_str()))
            .map(|m| m.name.clone())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::testdata;

    #[test]
    fn finds_members_lacking_dataset_records() {
        let pool = testdata::pool("pool", &["yi", "phi"]);
        let cm = ConfigMap {
            data: Some(BTreeMap::from([(
                "manifest.json".to_string(),
                r#"{"GSM8K": {"models": ["Yi-model"]}}"#.to_string(),
            )])),
            ..Default::default()
        };
        assert_eq!(
            members_without_data(&pool, &cm),
            Some(vec!["phi".to_string()])
        );
    }
}
