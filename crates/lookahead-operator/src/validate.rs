//! What the CRD schema cannot express (or what servers older than 1.25 do not enforce: CEL).
//! A spec that fails here gets `Ready=False` with a reason and an Event, and no children.

use std::collections::HashSet;

use lookahead_api::policy::{RouterMethod, ScoringPrecision};
use lookahead_api::pool::MemberProbes;
use lookahead_api::{LLMPoolSpec, RoutingPolicySpec};

/// A problem in a spec, with the field path it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub reason: &'static str,
    pub message: String,
}

impl Problem {
    fn new(reason: &'static str, message: String) -> Self {
        Problem { reason, message }
    }
}

/// Joins problems into one condition message.
pub fn summary(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| p.message.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Checks a pool spec.
pub fn pool(spec: &LLMPoolSpec) -> Vec<Problem> {
    let mut problems = Vec::new();
    if spec.members.is_empty() {
        problems.push(Problem::new(
            "NoMembers",
            "spec.members: at least one member is required".into(),
        ));
    }
    let mut seen = HashSet::new();
    for m in &spec.members {
        if !seen.insert(m.name.as_str()) {
            problems.push(Problem::new(
                "DuplicateMember",
                format!("spec.members: duplicate name {:?}", m.name),
            ));
        }
        if m.replicas.min > m.replicas.max {
            problems.push(Problem::new(
                "InvalidReplicas",
                format!(
                    "spec.members[{}].replicas: min {} > max {}",
                    m.name, m.replicas.min, m.replicas.max
                ),
            ));
        }
        if let Some(problem) = m.replicas.target.as_ref().and_then(|t| t.problem()) {
            problems.push(Problem::new(
                "InvalidReplicas",
                format!("spec.members[{}]: {problem}", m.name),
            ));
        }
        if let Err(e) = lookahead_api::config::parse_duration(&m.replicas.idle_after) {
            problems.push(Problem::new(
                "InvalidReplicas",
                format!("spec.members[{}].replicas.idleAfter: {e}", m.name),
            ));
        }
        if let Some(t) = &m.template {
            problems.extend(probe_problems(&m.name, &t.probes));
        }
        match (&m.endpoint, &m.template) {
            (Some(_), Some(_)) | (None, None) => problems.push(Problem::new(
                "InvalidMember",
                format!(
                    "spec.members[{}]: exactly one of endpoint and template is required",
                    m.name
                ),
            )),
            _ => {}
        }
    }
    // The schema's oneOf says the same; servers that prune it do not.
    if let Some(ca) = spec.tls.as_ref().and_then(|t| t.ca_bundle.as_ref()) {
        if ca.config_map_ref.is_some() == ca.secret_ref.is_some() {
            problems.push(Problem::new(
                "InvalidTls",
                "spec.tls.caBundle: exactly one of configMapRef and secretRef is required".into(),
            ));
        }
    }
    problems
}

/// What is wrong with a member's probe durations (the schema's pattern admits `0s`).
fn probe_problems(member: &str, probes: &MemberProbes) -> Vec<Problem> {
    [
        ("startupTimeout", probes.startup_timeout_seconds()),
        ("readinessPeriod", probes.readiness_period_seconds()),
    ]
    .into_iter()
    .filter_map(|(field, parsed)| {
        let e = parsed.err()?;
        Some(Problem::new(
            "InvalidProbe",
            format!("spec.members[{member}].template.probes.{field}: {e}"),
        ))
    })
    .collect()
}

/// What is wrong with a policy's training settings: durations the schema's pattern admits but
/// that are no duration (`0s`, a number too large), and a GPU for a method that trains on the
/// CPU (the GPU would sit idle while the Job holds it).
fn training_problems(spec: &RoutingPolicySpec) -> Vec<Problem> {
    let Some(t) = &spec.training else {
        return Vec::new();
    };
    let mut problems = Vec::new();
    if let Err(e) = t.active_deadline_seconds() {
        problems.push(Problem::new(
            "InvalidActiveDeadline",
            format!("spec.training.activeDeadline: {e}"),
        ));
    }
    if let Err(e) = t.no_gpu_node.after_duration() {
        problems.push(Problem::new(
            "InvalidNoGpuNode",
            format!("spec.training.noGpuNode.after: {e}"),
        ));
    }
    if crate::objects::wants_gpu(t.resources.as_ref()) && !trains_on_gpu(spec.router.method) {
        problems.push(Problem::new(
            "GpuTrainingUnsupported",
            format!(
                "spec.training.resources: asks for {}, but method {} trains on the CPU (GPU training: lookahead-mlm, lookahead-clm); drop the GPU request",
                crate::objects::GPU_RESOURCE,
                spec.router.method.name()
            ),
        ));
    }
    problems
}

/// Whether `lookahead train --device cuda` accepts the method.
pub fn trains_on_gpu(m: RouterMethod) -> bool {
    matches!(m, RouterMethod::LookaheadMlm | RouterMethod::LookaheadClm)
}

/// Checks a policy spec against its pool.
pub fn policy(spec: &RoutingPolicySpec, pool: &LLMPoolSpec) -> Vec<Problem> {
    let mut problems = Vec::new();
    if let Some(d) = &spec.objective.default_model {
        if !pool.members.iter().any(|m| &m.name == d) {
            problems.push(Problem::new(
                "UnknownDefaultModel",
                format!(
                    "spec.objective.defaultModel: {d:?} is not a member of pool {:?}",
                    spec.pool_ref.name
                ),
            ));
        }
    }
    if spec.router.method == RouterMethod::Fixed && spec.objective.default_model.is_none() {
        problems.push(Problem::new(
            "MissingDefaultModel",
            "spec.objective.defaultModel: required by the fixed method".into(),
        ));
    }
    let objective = &spec.objective;
    if let Err(e) = lookahead_api::policy::check_cost_profiles(
        "spec.objective",
        &objective.profiles,
        objective.max_cost_weight,
    ) {
        problems.push(Problem::new("InvalidCostProfile", e));
    }
    if spec.router.method.needs_training() {
        match &spec.training {
            None => problems.push(Problem::new(
                "MissingTraining",
                format!(
                    "spec.training: required by method {}",
                    spec.router.method.name()
                ),
            )),
            Some(t) if t.artifacts.is_none() => problems.push(Problem::new(
                "MissingArtifacts",
                "spec.training.artifacts: required so the router can read what training writes"
                    .into(),
            )),
            Some(_) => {}
        }
    }
    if spec.serving.precision == ScoringPrecision::Int8 {
        if matches!(
            spec.router.method,
            RouterMethod::LookaheadMlm | RouterMethod::LookaheadClm
        ) {
            problems.push(Problem::new(
                "PrecisionUnsupported",
                format!(
                    "spec.serving.precision: int8 applies to lookahead-lite, mlc and knn, not {}",
                    spec.router.method.name()
                ),
            ));
        }
        if crate::objects::wants_gpu(spec.serving.resources.as_ref()) {
            problems.push(Problem::new(
                "PrecisionUnsupported",
                "spec.serving.precision: int8 scoring runs on the CPU; drop the GPU request or use f32"
                    .into(),
            ));
        }
    }
    problems.extend(training_problems(spec));
    for (field, value) in [
        ("request", &spec.serving.timeouts.request),
        ("firstToken", &spec.serving.timeouts.first_token),
    ] {
        if let Err(e) = lookahead_api::config::parse_duration(value) {
            problems.push(Problem::new(
                "InvalidTimeout",
                format!("spec.serving.timeouts.{field}: {e}"),
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata;

    #[test]
    fn valid_specs_have_no_problems() {
        let pool = testdata::pool_spec(&["yi", "phi"]);
        assert!(super::pool(&pool).is_empty());
        assert!(policy(&testdata::policy_spec("p", Some("yi")), &pool).is_empty());
    }

    #[test]
    fn reports_duplicates_ranges_and_unknown_default() {
        let mut pool = testdata::pool_spec(&["yi", "yi"]);
        pool.members[0].replicas.min = 3;
        pool.members[0].replicas.max = 2;
        pool.members[1].replicas = crate::testdata::autoscaled(1, 2);
        if let Some(t) = pool.members[1].replicas.target.as_mut() {
            t.in_flight_per_replica = None;
        }
        let problems = super::pool(&pool);
        let reasons: Vec<_> = problems.iter().map(|p| p.reason).collect();
        assert_eq!(
            reasons,
            ["InvalidReplicas", "DuplicateMember", "InvalidReplicas"]
        );
        assert!(
            problems[2].message.contains("inFlightPerReplica"),
            "{}",
            problems[2].message
        );
        let p = policy(&testdata::policy_spec("p", Some("nope")), &pool);
        assert_eq!(p[0].reason, "UnknownDefaultModel");
        assert!(p[0].message.contains("\"nope\""));
    }

    #[test]
    fn a_cost_profile_that_is_not_a_dns_label_is_reported() {
        let pool = testdata::pool_spec(&["yi", "phi"]);
        let mut spec = testdata::policy_spec("p", Some("yi"));
        spec.objective.profiles =
            std::collections::BTreeMap::from([("auto:cheap".to_string(), 1.0)]);
        let p = policy(&spec, &pool);
        assert_eq!(p[0].reason, "InvalidCostProfile");
        assert!(
            p[0].message.contains("spec.objective.profiles"),
            "{}",
            p[0].message
        );
        spec.objective.profiles = std::collections::BTreeMap::from([("cheap".to_string(), 1.0)]);
        spec.objective.max_cost_weight = Some(3.0);
        assert!(policy(&spec, &pool).is_empty());
    }

    fn gpu(n: &str) -> k8s_openapi::api::core::v1::ResourceRequirements {
        k8s_openapi::api::core::v1::ResourceRequirements {
            limits: Some(std::collections::BTreeMap::from([(
                crate::objects::GPU_RESOURCE.to_string(),
                k8s_openapi::apimachinery::pkg::api::resource::Quantity(n.into()),
            )])),
            ..Default::default()
        }
    }

    #[test]
    fn training_durations_must_be_at_least_a_second_and_gpus_need_a_gpu_method() {
        let pool = testdata::pool_spec(&["yi", "phi"]);
        let mut spec = testdata::policy_spec("p", Some("yi"));
        let t = spec.training.as_mut().expect("training");
        t.active_deadline = "0h".into();
        t.no_gpu_node.after = "99999999999999999999m".into();
        t.resources = Some(gpu("1"));
        let p = policy(&spec, &pool);
        let reasons: Vec<_> = p.iter().map(|p| p.reason).collect();
        assert_eq!(
            reasons,
            [
                "InvalidActiveDeadline",
                "InvalidNoGpuNode",
                "GpuTrainingUnsupported"
            ]
        );
        assert!(
            p[0].message.contains("spec.training.activeDeadline")
                && p[0].message.contains("at least 1s"),
            "{}",
            p[0].message
        );
        assert!(
            p[1].message.contains("spec.training.noGpuNode.after"),
            "{}",
            p[1].message
        );
        assert!(
            p[2].message.contains("lookahead-lite trains on the CPU"),
            "{}",
            p[2].message
        );
        spec.router.method = RouterMethod::LookaheadMlm;
        let t = spec.training.as_mut().expect("training");
        t.active_deadline = "90m".into();
        t.no_gpu_node.after = "5m".into();
        assert!(policy(&spec, &pool).is_empty(), "mlm trains on a GPU");
        let t = spec.training.as_mut().expect("training");
        t.resources = Some(gpu("0"));
        spec.router.method = RouterMethod::LookaheadLite;
        assert!(
            policy(&spec, &pool).is_empty(),
            "a zero GPU limit asks for none"
        );
    }

    #[test]
    fn a_ca_bundle_names_exactly_one_source() {
        let key = |n: &str| lookahead_api::pool::KeyRef {
            name: n.into(),
            key: "ca.crt".into(),
        };
        let mut pool = testdata::pool_spec(&["yi"]);
        for (cm, secret, ok) in [
            (None, None, false),
            (Some(key("cm")), Some(key("s")), false),
            (Some(key("cm")), None, true),
            (None, Some(key("s")), true),
        ] {
            pool.tls = Some(lookahead_api::pool::PoolTls {
                ca_bundle: Some(lookahead_api::pool::CaBundleSource {
                    config_map_ref: cm,
                    secret_ref: secret,
                }),
            });
            let problems = super::pool(&pool);
            assert_eq!(problems.is_empty(), ok, "{problems:?}");
            if !ok {
                assert_eq!(problems[0].reason, "InvalidTls");
            }
        }
    }

    #[test]
    fn member_probe_durations_must_be_at_least_a_second() {
        let mut pool = testdata::pool_spec(&["yi"]);
        let t = pool.members[0].template.as_mut().expect("template");
        t.probes.startup_timeout = "0s".into();
        t.probes.readiness_period = "0m".into();
        let p = super::pool(&pool);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p.iter().all(|p| p.reason == "InvalidProbe"));
        assert!(
            p[0].message
                .contains("spec.members[yi].template.probes.startupTimeout"),
            "{}",
            p[0].message
        );
        assert!(p[1].message.contains("readinessPeriod"), "{}", p[1].message);
    }

    #[test]
    fn int8_precision_is_refused_for_mlm_and_gpu_scorers() {
        let pool = testdata::pool_spec(&["yi", "phi"]);
        let mut spec = testdata::policy_spec("p", Some("yi"));
        spec.serving.precision = ScoringPrecision::Int8;
        assert!(
            policy(&spec, &pool).is_empty(),
            "int8 with lite on CPU is fine"
        );
        spec.router.method = RouterMethod::LookaheadMlm;
        let p = policy(&spec, &pool);
        assert_eq!(p[0].reason, "PrecisionUnsupported");
        assert!(p[0].message.contains("lookahead-mlm"), "{}", p[0].message);
        spec.router.method = RouterMethod::LookaheadLite;
        spec.serving.resources = Some(k8s_openapi::api::core::v1::ResourceRequirements {
            limits: Some(std::collections::BTreeMap::from([(
                "nvidia.com/gpu".to_string(),
                k8s_openapi::apimachinery::pkg::api::resource::Quantity("1".into()),
            )])),
            ..Default::default()
        });
        let p = policy(&spec, &pool);
        assert_eq!(p[0].reason, "PrecisionUnsupported");
        assert!(p[0].message.contains("CPU"), "{}", p[0].message);
    }
}
