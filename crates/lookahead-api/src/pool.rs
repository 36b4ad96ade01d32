//! `LLMPool`: the candidate models a router chooses between.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, LocalObjectReference, ResourceRequirements, Toleration,
    TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::fingerprint::{pool_fingerprint, MemberIdentity};

/// A pool of candidate LLMs. Members either point at an existing OpenAI-compatible endpoint or
/// carry a template from which the operator creates a Deployment, Service and autoscaler.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "lookahead.dev",
    version = "v1alpha1",
    kind = "LLMPool",
    plural = "llmpools",
    shortname = "llmp",
    namespaced,
    status = "LLMPoolStatus",
    printcolumn = r#"{"name":"Members","type":"integer","jsonPath":".status.memberCount"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.readyMembers"}"#,
    printcolumn = r#"{"name":"Fingerprint","type":"string","jsonPath":".status.fingerprint"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct LLMPoolSpec {
    /// The candidate models. Names are unique within the pool.
    #[schemars(length(min = 1, max = 64))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub members: Vec<PoolMember>,
    /// How the router (and labelling) verify `https://` member endpoints: the system's root
    /// certificates, plus the CAs of `caBundle`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<PoolTls>,
}

/// TLS to `https://` members.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolTls {
    /// Extra CA certificates (PEM) trusted besides the system roots (the private CA of
    /// self-hosted members), from one key of a ConfigMap or of a Secret in the pool's namespace,
    /// mounted read-only into the router and labelling pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<CaBundleSource>,
}

/// Where a CA bundle comes from: exactly one of `configMapRef` and `secretRef`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::config_map_xor_secret)]
pub struct CaBundleSource {
    /// The ConfigMap key holding the PEM bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<KeyRef>,
    /// The Secret key holding the PEM bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<KeyRef>,
}

/// One key of a ConfigMap or Secret in the pool's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyRef {
    /// The object's name.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
    /// The key within it.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// One candidate model.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::endpoint_xor_template)]
pub struct PoolMember {
    /// Member name (DNS-1035 label): names the Deployment/Service and is what clients may pass
    /// as `model` to bypass routing.
    #[schemars(
        length(min = 1, max = 52),
        regex(pattern = r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// The OpenAI `model` string the backend serves; requests are rewritten to it.
    #[schemars(length(min = 1, max = 253))]
    pub model_id: String,
    /// Base URL of an existing OpenAI-compatible server (e.g. `http://vllm.models:8000/v1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https?://"))]
    pub endpoint: Option<String>,
    /// Pod template the operator runs the model from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<MemberTemplate>,
    /// Replica range; the operator autoscales between `min` and `max`.
    #[serde(default)]
    pub replicas: Replicas,
    /// Price in currency units per million tokens, for cost-aware routing.
    #[serde(default)]
    pub price: Price,
    /// The member's API key (a hosted API), from one key of a Secret in the pool's namespace,
    /// mounted read-only into the router and labelling pods and sent to this member only, as
    /// `Authorization: Bearer <key>`, in place of the client's credentials. A rotated Secret is
    /// picked up without a restart; until the Secret exists the router pods wait to start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret_ref: Option<KeyRef>,
    /// Longest prompt plus answer the model takes, in tokens. The router never routes a request
    /// here whose prompt (counted conservatively) and `max_tokens` cannot fit. Absent: unknown,
    /// never filtered on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub context_window: Option<u32>,
    /// Longest answer the model gives, in tokens: a request asking for more (`max_tokens`,
    /// `max_completion_tokens`, `max_output_tokens`) is not routed here. Absent: unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_output_tokens: Option<u32>,
    /// What the model supports: `chat`, `tools`, `vision`, `json_schema`, `embeddings`. A
    /// request using tools, images or `response_format` is routed only to members supporting
    /// it; `/v1/embeddings` only to members with `embeddings`. `tools`, `vision` and
    /// `json_schema` imply `chat`. Absent: a chat model with every chat capability (no
    /// embeddings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supports: Option<Vec<Capability>>,
}

/// A request feature a member may support.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// Chat and text completions.
    Chat,
    /// Tool (function) calling: `tools`, `functions`.
    Tools,
    /// Image inputs.
    Vision,
    /// Structured output: `response_format` of type `json_schema` or `json_object`.
    JsonSchema,
    /// `/v1/embeddings`.
    Embeddings,
}

impl Capability {
    /// Whether a member declaring `declared` takes requests using this capability: as
    /// declared, or, undeclared, every chat capability (not embeddings). `tools`, `vision` and
    /// `json_schema` imply `chat`.
    pub fn supported_by(self, declared: Option<&[Capability]>) -> bool {
        let implies_chat = |c: &Capability| {
            matches!(
                c,
                Capability::Tools | Capability::Vision | Capability::JsonSchema
            )
        };
        match declared {
            None => self != Capability::Embeddings,
            Some(list) => {
                list.contains(&self) || (self == Capability::Chat && list.iter().any(implies_chat))
            }
        }
    }

    /// The name used in specs, configs and error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Chat => "chat",
            Capability::Tools => "tools",
            Capability::Vision => "vision",
            Capability::JsonSchema => "json_schema",
            Capability::Embeddings => "embeddings",
        }
    }
}

/// How the operator runs a member.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberTemplate {
    /// Container image serving an OpenAI-compatible API (vLLM, TGI, llama.cpp, ...).
    #[schemars(length(min = 1))]
    pub image: String,
    /// Container arguments (e.g. vLLM's `--model`, `--served-model-name`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Container environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Container port of the OpenAI-compatible API.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Path prefix of the OpenAI API on that port.
    #[serde(default = "default_api_path")]
    pub api_path: String,
    /// Container resources; GPUs as `nvidia.com/gpu` limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Node labels the model's pods must match (e.g. a GPU node pool).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the model's pods tolerate (e.g. `nvidia.com/gpu`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// PersistentVolumeClaims mounted into the model's container (weights, caches, data).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<ClaimMount>,
    /// How the kubelet tells the server has started and is ready for requests.
    #[serde(default)]
    pub probes: MemberProbes,
    /// Size of an in-memory `/dev/shm` (emptyDir of medium Memory, counted against the memory
    /// limit), like `16Gi` for vLLM with `--tensor-parallel-size` > 1; absent: the runtime's 64Mi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$"))]
    pub shm_size: Option<String>,
    /// Scheduling constraints of the model's pods (node, pod affinity and anti-affinity), as in a
    /// pod spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// How the model's replicas spread across zones or nodes, as in a pod spec; its
    /// `labelSelector` should match the member's pod labels (`lookahead.dev/pool`,
    /// `lookahead.dev/member`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    /// ServiceAccount the model's pods run as (same namespace); absent: the namespace's
    /// `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub service_account_name: Option<String>,
    /// Secrets (same namespace) with the registry credentials to pull `image`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
}

/// The model server's startup and readiness probes. By default both GET `<apiPath>/models`,
/// which OpenAI-compatible servers (vLLM, SGLang, llama.cpp's server) answer once the model is
/// loaded: a pod is ready when it can serve, not merely when its port opens.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberProbes {
    /// `HTTP`: GET `path` must answer 2xx or 3xx. `TCP`: the port accepting connections is
    /// enough (servers without such a path).
    #[serde(default, rename = "type")]
    pub type_: ProbeType,
    /// Path of the HTTP probe; absent: `<apiPath>/models` (`/v1/models`). A server that asks
    /// for an API key on it needs an open path here instead (vLLM: `/health`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^/[^\s?#]*$"))]
    pub path: Option<String>,
    /// How long the server may take to answer the first probe (weights loading) before the
    /// kubelet restarts its container; checked every 5s (so rounded up to 5s). `90s`, `10m`, `1h`.
    #[serde(default = "default_startup_timeout")]
    #[schemars(length(max = 16), regex(pattern = r"^[0-9]+(s|m|h)$"))]
    pub startup_timeout: String,
    /// How often readiness is probed once started; three failures in a row take the replica out
    /// of its Service until it answers again.
    #[serde(default = "default_readiness_period")]
    #[schemars(length(max = 16), regex(pattern = r"^[0-9]+(s|m)$"))]
    pub readiness_period: String,
}

/// What a member probe checks.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ProbeType {
    #[default]
    #[serde(rename = "HTTP")]
    Http,
    #[serde(rename = "TCP")]
    Tcp,
}

fn default_startup_timeout() -> String {
    "10m".to_string()
}

fn default_readiness_period() -> String {
    "5s".to_string()
}

impl Default for MemberProbes {
    fn default() -> Self {
        MemberProbes {
            type_: ProbeType::default(),
            path: None,
            startup_timeout: default_startup_timeout(),
            readiness_period: default_readiness_period(),
        }
    }
}

impl MemberProbes {
    /// `startupTimeout` in seconds, or why it is not a duration of at least one second.
    pub fn startup_timeout_seconds(&self) -> Result<u64, String> {
        crate::duration::parse_seconds(&self.startup_timeout)
    }

    /// `readinessPeriod` in seconds, or why it is not a duration of at least one second.
    pub fn readiness_period_seconds(&self) -> Result<u64, String> {
        crate::duration::parse_seconds(&self.readiness_period)
    }

    /// The HTTP probe's path: `path`, else `<apiPath>/models`.
    pub fn http_path(&self, api_path: &str) -> String {
        match &self.path {
            Some(p) => p.clone(),
            None => {
                let prefix = api_path.trim_matches('/');
                if prefix.is_empty() {
                    "/models".to_string()
                } else {
                    format!("/{prefix}/models")
                }
            }
        }
    }
}

/// A PersistentVolumeClaim mounted into a member's container.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimMount {
    /// Claim in the pool's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub claim_name: String,
    /// Absolute path in the container.
    #[schemars(regex(pattern = r"^/[^:]*$"))]
    pub mount_path: String,
    /// Mount read-only (the default: model servers only read their weights).
    #[serde(default = "default_read_only")]
    pub read_only: bool,
}

fn default_read_only() -> bool {
    true
}

fn default_port() -> i32 {
    8000
}

fn default_api_path() -> String {
    "/v1".to_string()
}

/// Replica range of a member.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::replicas_min_le_max)]
pub struct Replicas {
    /// Fewest replicas. 0 lets the operator scale an idle member to zero (after `idleAfter`
    /// without requests) and wake it when a request ranks it first (docs/autoscaling.md).
    #[schemars(range(min = 0, max = 1000))]
    pub min: i32,
    /// Most replicas.
    #[schemars(range(min = 1, max = 1000))]
    pub max: i32,
    /// What the autoscaler tracks between 1 and `max`; absent means a fixed `min` replicas
    /// (with `min: 0`, one replica while there is demand).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<AutoscalingTarget>,
    /// With `min: 0`: how long a member goes without requests before it is scaled to zero.
    #[serde(default = "default_idle_after")]
    #[schemars(regex(pattern = r"^[0-9]+(ms|s|m)$"))]
    pub idle_after: String,
}

fn default_idle_after() -> String {
    "5m".to_string()
}

impl Default for Replicas {
    fn default() -> Self {
        Replicas {
            min: 1,
            max: 1,
            target: None,
            idle_after: default_idle_after(),
        }
    }
}

/// What a member's HorizontalPodAutoscaler tracks. Several may be set: the autoscaler follows
/// whichever asks for the most replicas. At least one is required.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingTarget {
    /// Requests in flight per replica, as every router of the pool sees them (served to the
    /// autoscaler as the external metric `lookahead_member_in_flight`). The signal LLM servers
    /// scale on: a replica is busy when its batch is full, whatever its CPU says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub in_flight_per_replica: Option<u32>,
    /// A metric another external-metrics server serves (for example vLLM's
    /// `num_requests_waiting` through a Prometheus adapter), as an average per replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalTarget>,
    /// Resource whose utilisation `averageUtilization` tracks (needs a metrics-server).
    #[serde(default)]
    pub resource: ScalingResource,
    /// Target average utilisation of `resource`, percent of the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub average_utilization: Option<i32>,
}

impl AutoscalingTarget {
    /// Why the target tracks nothing, if it does not.
    pub fn problem(&self) -> Option<&'static str> {
        let none = self.in_flight_per_replica.is_none()
            && self.external.is_none()
            && self.average_utilization.is_none();
        none.then_some("replicas.target needs inFlightPerReplica, external or averageUtilization")
    }
}

/// An external metric the autoscaler reads per replica.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalTarget {
    /// Metric name, as the external metrics API serves it.
    #[schemars(length(min = 1))]
    pub metric: String,
    /// Labels that select the member's series.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Target value per replica, a Kubernetes quantity (`"4"`, `"500m"`).
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(m|k|M|G)?$"))]
    pub average_value: String,
}

/// Resource an autoscaler tracks.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ScalingResource {
    #[default]
    Cpu,
    Memory,
}

/// Token prices per million tokens.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Price {
    /// Price of a million prompt tokens.
    #[serde(default)]
    #[schemars(range(min = 0.0))]
    pub input_per_m_tok: f64,
    /// Price of a million completion tokens.
    #[serde(default)]
    #[schemars(range(min = 0.0))]
    pub output_per_m_tok: f64,
}

/// Observed state of a pool.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LLMPoolStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Fingerprint of the membership (see `lookahead_api::pool_fingerprint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// Number of members in the spec.
    #[serde(default)]
    pub member_count: i32,
    /// `ready/total`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_members: Option<String>,
    /// Per-member readiness.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberStatus>,
    /// `Ready`, `Degraded` (with a reason).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Observed state of one member.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// Member name.
    pub name: String,
    /// Whether the member can take requests.
    pub ready: bool,
    /// Ready replicas of its Deployment (template members).
    #[serde(default)]
    pub ready_replicas: i32,
    /// Replicas its Deployment wants now.
    #[serde(default)]
    pub desired_replicas: i32,
    /// Base URL the router uses for this member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

impl LLMPoolSpec {
    /// Fingerprint of this spec's membership.
    pub fn fingerprint(&self) -> String {
        pool_fingerprint(self.members.iter().map(|m| MemberIdentity {
            name: &m.name,
            model_id: &m.model_id,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_written_before_probes_gets_the_http_models_probe() {
        let t: MemberTemplate =
            serde_json::from_str(r#"{"image": "vllm/vllm-openai:v0.8.5"}"#).expect("template");
        assert_eq!(t.probes, MemberProbes::default());
        assert_eq!(t.probes.type_, ProbeType::Http);
        assert_eq!(t.probes.http_path(&t.api_path), "/v1/models");
        assert_eq!(t.probes.startup_timeout_seconds(), Ok(600));
        assert_eq!(t.probes.readiness_period_seconds(), Ok(5));
        assert_eq!(
            (t.shm_size, t.affinity, t.service_account_name),
            (None, None, None)
        );
    }

    #[test]
    fn the_probe_path_follows_the_api_path_unless_set() {
        let p = MemberProbes::default();
        assert_eq!(p.http_path("/openai/v1/"), "/openai/v1/models");
        assert_eq!(p.http_path(""), "/models");
        assert_eq!(p.http_path("v1"), "/v1/models");
        let p = MemberProbes {
            path: Some("/health".into()),
            ..MemberProbes::default()
        };
        assert_eq!(p.http_path("/v1"), "/health");
        let tcp: MemberProbes = serde_json::from_str(r#"{"type": "TCP"}"#).expect("probes");
        assert_eq!(tcp.type_, ProbeType::Tcp);
    }
}
