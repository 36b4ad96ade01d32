//! Specs the unit tests share.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use lookahead_api::policy::{
    ConfigMapRef, DatasetSource, Objective, PoolRef, RouterMethod, RouterSpec, ServingSpec,
    TrainingSpec, TrainingTrigger, VolumePath,
};
use lookahead_api::pool::{
    AutoscalingTarget, MemberTemplate, PoolMember, Price, Replicas, ScalingResource,
};
use lookahead_api::{LLMPool, LLMPoolSpec, RoutingPolicy, RoutingPolicySpec};

/// Model id of member `name`: `yi` -> `Yi-model`.
pub fn model_id(name: &str) -> String {
    let mut c = name.chars();
    let first = c
        .next()
        .map(|f| f.to_ascii_uppercase().to_string())
        .unwrap_or_default();
    format!("{first}{}-model", c.as_str())
}

pub fn member(name: &str) -> PoolMember {
    PoolMember {
        name: name.into(),
        model_id: model_id(name),
        endpoint: None,
        template: Some(MemberTemplate {
            image: "vllm/vllm-openai:v0.6.0".into(),
            args: vec!["--model".into(), model_id(name)],
            env: vec![],
            port: 8000,
            api_path: "/v1".into(),
            resources: None,
            node_selector: Default::default(),
            tolerations: vec![],
            mounts: vec![],
            probes: Default::default(),
            shm_size: None,
            affinity: None,
            topology_spread_constraints: vec![],
            service_account_name: None,
            image_pull_secrets: vec![],
        }),
        replicas: Replicas::default(),
        price: Price::default(),
        context_window: None,
        max_output_tokens: None,
        supports: None,
        api_key_secret_ref: None,
    }
}

pub fn autoscaled(min: i32, max: i32) -> Replicas {
    Replicas {
        min,
        max,
        target: Some(AutoscalingTarget {
            in_flight_per_replica: Some(8),
            external: None,
            resource: ScalingResource::Cpu,
            average_utilization: None,
        }),
        ..Replicas::default()
    }
}

pub fn pool_spec(names: &[&str]) -> LLMPoolSpec {
    LLMPoolSpec {
        members: names.iter().map(|n| member(n)).collect(),
        tls: None,
    }
}

pub fn pool(name: &str, names: &[&str]) -> LLMPool {
    let mut p = LLMPool::new(name, pool_spec(names));
    p.metadata.namespace = Some("ns".into());
    p.metadata.uid = Some("pool-uid".into());
    p.metadata.generation = Some(1);
    p
}

pub fn policy_spec(name: &str, default_model: Option<&str>) -> RoutingPolicySpec {
    RoutingPolicySpec {
        pool_ref: PoolRef {
            name: "pool".into(),
        },
        router: RouterSpec {
            method: RouterMethod::LookaheadLite,
            backbone: "minilm-l6".into(),
        },
        objective: Objective {
            cost_weight: 0.0,
            default_model: default_model.map(str::to_string),
            ..Objective::default()
        },
        training: Some(TrainingSpec {
            dataset: DatasetSource {
                config_map: Some(ConfigMapRef {
                    name: "routing-data".into(),
                }),
                pvc: None,
            },
            trigger: TrainingTrigger::OnMembershipChange,
            artifacts: Some(VolumePath {
                claim_name: "artifacts".into(),
                path: format!("routers/{name}"),
            }),
            resources: None,
            node_selector: Default::default(),
            tolerations: vec![],
            active_deadline: "2h".into(),
            no_gpu_node: Default::default(),
            labelling: None,
            backoff_limit: 2,
            max_examples: None,
            epochs: None,
            acceptance: Default::default(),
        }),
        serving: ServingSpec::default(),
    }
}

pub fn policy(name: &str, default_model: Option<&str>) -> RoutingPolicy {
    let mut p = RoutingPolicy::new(name, policy_spec(name, default_model));
    p.metadata.namespace = Some("ns".into());
    p.metadata.uid = Some("policy-uid".into());
    p.metadata.generation = Some(1);
    p
}

pub fn owner() -> OwnerReference {
    OwnerReference {
        api_version: "lookahead.dev/v1alpha1".into(),
        kind: "LLMPool".into(),
        name: "pool".into(),
        uid: "pool-uid".into(),
        controller: Some(true),
        block_owner_deletion: None,
    }
}

#[allow(dead_code)]
pub fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some("ns".into()),
        ..Default::default()
    }
}
