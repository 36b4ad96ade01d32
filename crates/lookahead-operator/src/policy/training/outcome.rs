//! What a training Job reports back: its state (from its conditions), and from its pods'
//! termination messages the labelling count, validation scores and acceptance verdict; the
//! artifact it wrote.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use lookahead_api::policy::{AcceptanceStatus, ArtifactStatus};

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

/// The most a failure's log tail adds to the `TrainingFailed` message.
const FAILURE_DETAIL_CHARS: usize = 600;

/// What a failed Job's `label` or `train` container said last: its termination message, which
/// after a failure is the tail of its log (`FallbackToLogsOnError`), on one line and at most
/// [`FAILURE_DETAIL_CHARS`] (the end kept: the error is last). `None` when no container failed
/// with one (the pods are gone, or the Job was stopped from outside, as by its deadline).
pub fn failure_detail(pods: &[Pod]) -> Option<String> {
    let (container, message) = pods.iter().find_map(|pod| {
        let status = pod.status.as_ref()?;
        let init = status.init_container_statuses.iter().flatten();
        let containers = init.chain(status.container_statuses.iter().flatten());
        containers
            .filter(|c| c.name == LABEL_CONTAINER || c.name == TRAIN_CONTAINER)
            .find_map(|c| {
                let t = c.state.as_ref()?.terminated.as_ref()?;
                let message = t.message.as_deref().filter(|_| t.exit_code != 0)?;
                Some((c.name.clone(), message.to_string()))
            })
    })?;
    let line = message.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.is_empty() {
        return None;
    }
    let start = line
        .char_indices()
        .rev()
        .nth(FAILURE_DETAIL_CHARS - 1)
        .map_or(0, |(i, _)| i);
    let ellipsis = if start > 0 { "…" } else { "" };
    Some(format!(
        "container {container} said: {ellipsis}{}",
        &line[start..]
    ))
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

/// The acceptance verdict from the training container's summary (`acceptance`: gain,
/// lowerBound, accepted, fallbackModel, minGain); `None` when the pods are gone, the message is
/// not that JSON, or training recorded no verdict.
pub fn acceptance(pods: &[Pod]) -> Option<AcceptanceStatus> {
    let summary = container_summary(pods, TRAIN_CONTAINER, false)?;
    let a = summary.get("acceptance")?;
    Some(AcceptanceStatus {
        accepted: a.get("accepted")?.as_bool()?,
        gain: a.get("gain")?.as_f64()?,
        lower_bound: a.get("lowerBound")?.as_f64()?,
        min_gain: a
            .get("minGain")
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(0.0),
        fallback_model: a.get("fallbackModel")?.as_str()?.to_string(),
        examples: a
            .get("examples")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0),
        folds: a
            .get("folds")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0),
    })
}

/// `RouterAccepted` reasons (and the Events' reasons) of an accepted and a rejected artifact.
pub const ACCEPTED: &str = "Accepted";
pub const BELOW_BASELINE: &str = "BelowBaseline";

/// The verdict in words, with its figures, for the condition and the Event.
pub fn acceptance_message(a: &AcceptanceStatus) -> String {
    let figures = format!(
        "gain over the best single model {} {:+.2} points, 95% lower bound {:+.2}, minGain {:+.2}",
        a.fallback_model, a.gain, a.lower_bound, a.min_gain
    );
    let evidence = match (a.folds, a.examples) {
        (0, 0) => "on validation".to_string(),
        (0, n) => format!("on {n} validation records"),
        (k, n) => format!("on {n} records cross-fitted over {k} folds"),
    };
    if a.accepted {
        format!("the router's gain over the best single model reaches minGain {evidence} ({figures}): it routes")
    } else {
        format!(
            "the router does not beat the best single model {evidence} ({figures}): every request goes to {}",
            a.fallback_model
        )
    }
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
        let reason = c.reason.clone().unwrap_or_default();
        let mut message = format!("{reason}: {}", c.message.clone().unwrap_or_default());
        if reason == DEADLINE_EXCEEDED {
            let deadline = job.spec.as_ref().and_then(|s| s.active_deadline_seconds);
            if let Some(secs) = deadline {
                message.push_str(&format!(
                    " (activeDeadlineSeconds {secs}; spec.training.activeDeadline gives training longer)"
                ));
            }
        }
        return JobState::Failed { message };
    }
    JobState::Running
}

/// The reason of a Job's `Failed` condition when it ran past `activeDeadlineSeconds`.
pub const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";

/// What a finished Job's pods reported: labelled prompts, validation scores, acceptance.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reported {
    pub labelled_prompts: Option<i64>,
    pub validation: BTreeMap<String, f64>,
    pub acceptance: Option<AcceptanceStatus>,
}

/// The artifact a finished Job wrote.
pub fn artifact_of(
    job: &Job,
    plan_version: &str,
    finished: Option<String>,
    reported: Reported,
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
        labelled_prompts: reported.labelled_prompts,
        validation: reported.validation,
        acceptance: reported.acceptance,
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

    /// Sets the exit code of every terminated container of `pod`.
    fn exit(pod: &mut Pod, code: i32) {
        let status = pod.status.as_mut();
        let statuses = status.into_iter().flat_map(|s| {
            let init = s.init_container_statuses.iter_mut().flatten();
            init.chain(s.container_statuses.iter_mut().flatten())
        });
        for c in statuses {
            if let Some(t) = c.state.as_mut().and_then(|s| s.terminated.as_mut()) {
                t.exit_code = code;
            }
        }
    }

    #[test]
    fn a_failed_containers_log_tail_is_the_failure_detail() {
        let log = "loading data\nError: --device cuda: this binary was built without CUDA support (cargo build --features cuda)\n";
        let mut pod = terminated(TRAIN_CONTAINER, false, log);
        exit(&mut pod, 1);
        assert_eq!(
            failure_detail(std::slice::from_ref(&pod)).as_deref(),
            Some("container train said: loading data Error: --device cuda: this binary was built without CUDA support (cargo build --features cuda)")
        );
        // A successful container's message is its summary, not a failure.
        exit(&mut pod, 0);
        assert_eq!(failure_detail(&[pod]), None);
        // A long tail keeps its end.
        let long = format!("{} the end", "x".repeat(2000));
        let mut pod = terminated(LABEL_CONTAINER, true, &long);
        exit(&mut pod, 2);
        let detail = failure_detail(&[pod]).expect("detail");
        assert!(detail.starts_with("container label said: …") && detail.ends_with("the end"));
        assert!(
            detail.chars().count() < FAILURE_DETAIL_CHARS + 40,
            "{detail}"
        );
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

    #[test]
    fn the_acceptance_verdict_comes_from_the_train_containers_termination_message() {
        let pod = |message: &str| terminated(TRAIN_CONTAINER, false, message);
        let summary = r#"{"examples":84,"router":51.0,"bestSingle":52.0,"oracle":70.0,
            "acceptance":{"gain":-0.56,"lowerBound":-5.99,"accepted":false,
            "fallbackModel":"Phi-3-medium-4k-instruct","minGain":0.0,"level":0.95,
            "resamples":2000,"examples":84}}"#;
        let a = acceptance(&[pod(summary)]).expect("a verdict");
        assert!(!a.accepted);
        assert_eq!((a.gain, a.lower_bound, a.min_gain), (-0.56, -5.99, 0.0));
        assert_eq!(a.fallback_model, "Phi-3-medium-4k-instruct");
        assert_eq!((a.examples, a.folds), (84, 0));
        assert!(
            acceptance_message(&a).contains("on 84 validation records"),
            "{}",
            acceptance_message(&a)
        );
        let crossed = r#"{"examples":562,"acceptance":{"gain":4.67,"lowerBound":3.19,
            "accepted":true,"fallbackModel":"Yi-1.5-34B-Chat","minGain":0.0,"examples":5117,
            "folds":5}}"#;
        let a = acceptance(&[pod(crossed)]).expect("a verdict");
        assert_eq!((a.examples, a.folds), (5117, 5));
        let message = acceptance_message(&a);
        assert!(
            message.contains("reaches minGain on 5117 records cross-fitted over 5 folds"),
            "{message}"
        );
        let older = r#"{"examples":540,"router":61.5,"bestSingle":58.25,"oracle":70.0}"#;
        assert_eq!(
            acceptance(&[pod(older)]),
            None,
            "a trainer without the gate"
        );
        assert_eq!(acceptance(&[]), None);
    }
}
