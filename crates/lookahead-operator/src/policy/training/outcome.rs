//! What a training Job reports back: its state (from its conditions), and from its pods'
//! termination messages the labelling count and validation scores; the artifact it wrote.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use lookahead_api::policy::ArtifactStatus;

use super::job::{LABEL_CONTAINER, TRAIN_CONTAINER};
use crate::labels::{FINGERPRINT_ANNOTATION, MEMBERS_ANNOTATION};

/// The JSON summary a finished Job's container `name` (an init container when `init`) left in
/// its termination message (`lookahead label|train --summary-file /dev/termination-log`), from
/// the first of the Job's pods that has one.
fn container_summary(pods: &[Pod], name: &str, init: bool) -> Option<serde_json::Value> {
    pods.iter().find_map(|pod| {
        let status = pod.status.as_ref()?;
        let statuses = if init {
            status.init_container_statuses.as_ref()?
        } else {
            status.container_statuses.as_ref()?
        };
        let container = statuses.iter().find(|c| c.name == name)?;
        let message = container
            .state
            .as_ref()?
            .terminated
            .as_ref()?
            .message
            .as_ref()?;
        serde_json::from_str(message).ok()
    })
}

/// Prompts labelled by a finished Job, from its `label` init container's summary.
pub fn labelled_prompts(pods: &[Pod]) -> Option<i64> {
    container_summary(pods, LABEL_CONTAINER, true)?
        .get("promptsLabelled")?
        .as_i64()
}

/// Validation scores from the training container's summary: router, best single model and
/// oracle on the validation split, and its size. Empty when the pods are gone or the message is
/// not that JSON.
pub fn validation_scores(pods: &[Pod]) -> BTreeMap<String, f64> {
    let Some(summary) = container_summary(pods, TRAIN_CONTAINER, false) else {
        return BTreeMap::new();
    };
    ["router", "bestSingle", "oracle", "examples"]
        .iter()
        .filter_map(|k| Some((k.to_string(), summary.get(*k)?.as_f64()?)))
        .collect()
}

/// Where a training Job stands.
#[derive(Debug, Clone, PartialEq)]
pub enum JobState {
    Running,
    Succeeded { finished: Option<String> },
    Failed { message: String },
}

/// Reads a Job's outcome from its conditions (`Complete` / `Failed`).
pub fn job_state(job: &Job) -> JobState {
    let status = job.status.as_ref();
    let conditions = status.and_then(|s| s.conditions.as_ref());
    let find =
        |t: &str| conditions.and_then(|cs| cs.iter().find(|c| c.type_ == t && c.status == "True"));
    if find("Complete").is_some() {
        let finished = status
            .and_then(|s| s.completion_time.as_ref())
            .map(|t| t.0.to_string());
        return JobState::Succeeded { finished };
    }
    if let Some(c) = find("Failed") {
        return JobState::Failed {
            message: format!(
                "{}: {}",
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default()
            ),
        };
    }
    JobState::Running
}

/// The artifact a finished Job wrote.
pub fn artifact_of(
    job: &Job,
    plan_version: &str,
    finished: Option<String>,
    labelled_prompts: Option<i64>,
    validation: BTreeMap<String, f64>,
) -> ArtifactStatus {
    let annotations = job.metadata.annotations.clone().unwrap_or_default();
    ArtifactStatus {
        fingerprint: annotations
            .get(FINGERPRINT_ANNOTATION)
            .cloned()
            .unwrap_or_default(),
        version: plan_version.to_string(),
        members: annotations
            .get(MEMBERS_ANNOTATION)
            .map(|m| {
                m.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        trained_at: finished,
        labelled_prompts,
        validation,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStatus, PodStatus,
    };

    use super::*;

    /// A pod whose container `name` (an init container when `init`) terminated with `message`.
    fn terminated(name: &str, init: bool, message: &str) -> Pod {
        let statuses = Some(vec![ContainerStatus {
            name: name.into(),
            state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    message: Some(message.into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        let status = if init {
            PodStatus {
                init_container_statuses: statuses,
                ..Default::default()
            }
        } else {
            PodStatus {
                container_statuses: statuses,
                ..Default::default()
            }
        };
        Pod {
            status: Some(status),
            ..Default::default()
        }
    }

    #[test]
    fn labelled_prompts_come_from_the_label_containers_termination_message() {
        let pod = |message: &str| terminated(LABEL_CONTAINER, true, message);
        let summary = r#"{"promptsLabelled":412,"asked":900,"graded":880,"failed":20}"#;
        assert_eq!(labelled_prompts(&[pod(summary)]), Some(412));
        assert_eq!(labelled_prompts(&[pod("garbage")]), None);
        assert_eq!(labelled_prompts(&[]), None);
    }

    #[test]
    fn validation_scores_come_from_the_train_containers_termination_message() {
        let pod = |container: &str, message: &str| terminated(container, false, message);
        let summary = r#"{"examples":540,"router":61.5,"bestSingle":58.25,"oracle":70.0}"#;
        let scores = validation_scores(&[pod(TRAIN_CONTAINER, summary)]);
        assert_eq!(scores.get("router"), Some(&61.5));
        assert_eq!(scores.get("bestSingle"), Some(&58.25));
        assert_eq!(scores.get("oracle"), Some(&70.0));
        assert_eq!(scores.get("examples"), Some(&540.0));
        assert!(validation_scores(&[pod(TRAIN_CONTAINER, "not json")]).is_empty());
        assert!(validation_scores(&[pod("other", summary)]).is_empty());
        assert!(validation_scores(&[]).is_empty());
    }
}
