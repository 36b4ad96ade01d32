//! `RoutingPolicy`: which router scores a pool, its trade-offs, training and serving.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How requests to a pool are routed, and how the router is trained and served.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "lookahead.dev",
    version = "v1alpha1",
    kind = "RoutingPolicy",
    plural = "routingpolicies",
    shortname = "rp",
    namespaced,
    status = "RoutingPolicyStatus",
    printcolumn = r#"{"name":"Pool","type":"string","jsonPath":".spec.poolRef.name"}"#,
    printcolumn = r#"{"name":"Method","type":"string","jsonPath":".spec.router.method"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Artifact","type":"string","jsonPath":".status.artifact.version"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RoutingPolicySpec {
    /// The `LLMPool` (same namespace) this policy routes over.
    pub pool_ref: PoolRef,
    /// Which router scores requests (default: `ngram` on the default backbone).
    #[serde(default)]
    pub router: RouterSpec,
    /// Quality/cost trade-off and fail-open member.
    #[serde(default)]
    pub objective: Objective,
    /// How and when the router is trained (methods that need training).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<TrainingSpec>,
    /// How the router Deployment runs.
    #[serde(default)]
    pub serving: ServingSpec,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolRef {
    /// Name of the `LLMPool`.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Which router scores requests.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouterSpec {
    /// Routing method. Default: `ngram`, which routes within noise of the best measured router
    /// at a fiftieth of its training time and whose acceptance gate is cross-fitted
    /// (docs/results.md, issue 15).
    #[serde(default = "default_method")]
    pub method: RouterMethod,
    /// Backbone the router is built on (a directory name in the image's backbone cache).
    #[serde(default = "default_backbone")]
    pub backbone: String,
}

impl Default for RouterSpec {
    fn default() -> Self {
        Self {
            method: default_method(),
            backbone: default_backbone(),
        }
    }
}

fn default_method() -> RouterMethod {
    RouterMethod::Ngram
}

fn default_backbone() -> String {
    "minilm-l6".to_string()
}

/// Routing methods. `random` and `fixed` need no training and serve as baselines.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum RouterMethod {
    #[serde(rename = "lookahead-lite")]
    LookaheadLite,
    #[serde(rename = "lookahead-mlm")]
    LookaheadMlm,
    #[serde(rename = "lookahead-clm")]
    LookaheadClm,
    #[serde(rename = "mlc")]
    Mlc,
    #[serde(rename = "knn")]
    Knn,
    /// Logistic regression over hashed word n-grams of the whole prompt (no encoder).
    #[serde(rename = "ngram")]
    Ngram,
    /// The mean of an n-gram and a lookahead-lite router's scores (`lookahead train --method
    /// ensemble`): the whole prompt's words and an encoder's reading of its head and tail.
    #[serde(rename = "ensemble")]
    Ensemble,
    #[serde(rename = "random")]
    Random,
    #[serde(rename = "fixed")]
    Fixed,
}

impl RouterMethod {
    /// Whether this method needs a trained artifact.
    pub fn needs_training(self) -> bool {
        !matches!(self, RouterMethod::Random | RouterMethod::Fixed)
    }

    /// The name a RoutingPolicy spells it with (its serde name), for messages.
    pub fn name(self) -> &'static str {
        self.names().0
    }

    /// The `lookahead train --method` value that trains it.
    pub fn train_method(self) -> &'static str {
        self.names().1
    }

    /// Both names from one table, so a new method cannot get one without the other.
    fn names(self) -> (&'static str, &'static str) {
        match self {
            RouterMethod::LookaheadLite => ("lookahead-lite", "lite"),
            RouterMethod::LookaheadMlm => ("lookahead-mlm", "mlm"),
            RouterMethod::LookaheadClm => ("lookahead-clm", "clm"),
            RouterMethod::Mlc => ("mlc", "mlc"),
            RouterMethod::Knn => ("knn", "knn"),
            RouterMethod::Ngram => ("ngram", "ngram"),
            RouterMethod::Ensemble => ("ensemble", "ensemble"),
            RouterMethod::Random => ("random", "random"),
            RouterMethod::Fixed => ("fixed", "fixed"),
        }
    }
}

/// Quality/cost trade-off and fail-open behaviour.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Objective {
    /// Weight of price against predicted quality: the router picks
    /// argmax(quality - costWeight * price). 0 ignores price.
    #[serde(default)]
    #[schemars(range(min = 0.0))]
    pub cost_weight: f64,
    /// Member that serves requests when scoring is unavailable (fail-open), and the `fixed`
    /// method's choice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_model: Option<String>,
    /// Named cost profiles, name -> costWeight: a request for `model: "auto:NAME"` is ranked
    /// with that profile's weight (`auto` keeps `costWeight`); an unknown profile is answered 404
    /// `model_not_found`. Names are DNS labels (lowercase letters, digits and `-`, at most 63
    /// characters; no `:`), at most 32 profiles; checked by the operator (condition
    /// `InvalidCostProfile`). `lookahead eval --calibrate --profile NAME` prints an entry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "cost_profiles_schema")]
    pub profiles: BTreeMap<String, f64>,
    /// Largest costWeight a client may ask for per request with the `x-lookahead-cost-weight`
    /// header (`0 <= weight <= maxCostWeight`; the header wins over a profile). Absent: the
    /// header is refused (400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub max_cost_weight: Option<f64>,
}

/// Most cost profiles a policy may name (they are metric label values: bounded).
pub const MAX_COST_PROFILES: usize = 32;

/// `objective.profiles`: an object of non-negative numbers (names are checked by
/// [`check_cost_profiles`]: a CEL rule over map keys has no length bound to cost it by).
fn cost_profiles_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": MAX_COST_PROFILES,
        "additionalProperties": { "type": "number", "format": "double", "minimum": 0.0 }
    })
}

/// Why cost profiles or the override bound are unusable: a name that is not a DNS label (so
/// `auto:NAME` parses one way and metric labels stay tame), too many profiles, or a weight that is
/// negative or not finite. `path` prefixes the messages (`spec.objective` or `policy`).
pub fn check_cost_profiles(
    path: &str,
    profiles: &BTreeMap<String, f64>,
    max_cost_weight: Option<f64>,
) -> Result<(), String> {
    if profiles.len() > MAX_COST_PROFILES {
        return Err(format!(
            "{path}.profiles: {} profiles; at most {MAX_COST_PROFILES}",
            profiles.len()
        ));
    }
    for (name, weight) in profiles {
        if !is_dns_label(name) {
            return Err(format!(
                "{path}.profiles: {name:?} is not a profile name (lowercase letters, digits and '-', \
                 starting and ending with a letter or digit, at most 63 characters)"
            ));
        }
        if !(weight.is_finite() && *weight >= 0.0) {
            return Err(format!(
                "{path}.profiles.{name}: costWeight must be finite and >= 0"
            ));
        }
    }
    if max_cost_weight.is_some_and(|m| !(m.is_finite() && m >= 0.0)) {
        return Err(format!("{path}.maxCostWeight: must be finite and >= 0"));
    }
    Ok(())
}

/// An RFC 1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    let inner = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= 63
        && b.first().is_some_and(inner)
        && b.last().is_some_and(inner)
        && b.iter().all(|c| inner(c) || *c == b'-')
}

/// How and when the router is (re)trained.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrainingSpec {
    /// The routing dataset to train on.
    pub dataset: DatasetSource,
    /// When to retrain.
    #[serde(default)]
    pub trigger: TrainingTrigger,
    /// Where artifacts are written (versioned sub-directories) and read by the router.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<VolumePath>,
    /// Resources of the training container; an `nvidia.com/gpu` request trains on the GPU
    /// (`--device cuda`: lookahead-mlm and -clm, in a CUDA build of the image); see `noGpuNode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Node labels the training pod must match (e.g. a GPU node pool).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the training pod tolerates (`nvidia.com/gpu` is added when a GPU is requested).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// How long the training Job may run, labelling and retries included, before Kubernetes
    /// stops it (the Job fails with `DeadlineExceeded`, reported in `TrainingFailed`); whole
    /// seconds as `90s`, `30m`, `2h`. Training itself gets three quarters of it
    /// (`lookahead train --time-budget`): it stops before an epoch that would not fit and keeps
    /// its best epoch, so a slow run ends with an artifact rather than being killed.
    #[serde(default = "default_active_deadline")]
    #[schemars(length(max = 16), regex(pattern = r"^[0-9]+(s|m|h)$"))]
    pub active_deadline: String,
    /// What happens when the training pod asks for a GPU and no node can take it.
    #[serde(default)]
    pub no_gpu_node: NoGpuNode,
    /// Label members that lack data (`lookahead label`) before training; absent: members
    /// without records are left out of training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labelling: Option<LabellingSpec>,
    /// Retries of a failed training Job before `TrainingFailed`.
    #[serde(default = "default_backoff_limit")]
    #[schemars(range(min = 0, max = 10))]
    pub backoff_limit: i32,
    /// Train on at most this many records (a deterministic subset by record id) to bound
    /// retraining time on CPU; absent: the whole dataset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_examples: Option<i32>,
    /// Training epochs (early stopping may end sooner); absent: the method's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub epochs: Option<i32>,
    /// The acceptance gate: how much a trained router must beat the best single model by.
    #[serde(default)]
    pub acceptance: AcceptanceSpec,
}

fn default_backoff_limit() -> i32 {
    2
}

fn default_active_deadline() -> String {
    "2h".to_string()
}

impl TrainingSpec {
    /// `activeDeadline` in seconds, or why it is not a duration of at least one second.
    pub fn active_deadline_seconds(&self) -> Result<i64, String> {
        let secs = crate::duration::parse_seconds(&self.active_deadline)?;
        i64::try_from(secs).map_err(|_| format!("duration {:?} is too long", self.active_deadline))
    }
}

/// A training pod that asks for a GPU and stays unschedulable (no node has a free GPU, or none
/// matches its `nodeSelector`) for `after` is reported: a `NoGpuNode` Warning Event and the
/// `Training` condition's message, with the scheduler's words.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NoGpuNode {
    /// How long the pod may stay unschedulable first. Where a cluster autoscaler adds GPU nodes
    /// on demand, make it longer than a node takes to join.
    #[serde(default = "default_no_gpu_node_after")]
    #[schemars(length(max = 16), regex(pattern = r"^[0-9]+(s|m|h)$"))]
    pub after: String,
    /// Then: `TrainOnCpu` deletes the GPU Job and trains on the CPU instead (a Job without the
    /// GPU request and `nodeSelector`, with `--device cpu`); `Wait` keeps waiting for a GPU node.
    #[serde(default)]
    pub action: NoGpuNodeAction,
}

fn default_no_gpu_node_after() -> String {
    "2m".to_string()
}

impl Default for NoGpuNode {
    fn default() -> Self {
        NoGpuNode {
            after: default_no_gpu_node_after(),
            action: NoGpuNodeAction::default(),
        }
    }
}

impl NoGpuNode {
    /// `after` as a duration, or why it is not one of at least one second.
    pub fn after_duration(&self) -> Result<std::time::Duration, String> {
        crate::duration::parse_seconds(&self.after).map(std::time::Duration::from_secs)
    }
}

/// What the operator does about a GPU training pod no node can take.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum NoGpuNodeAction {
    /// Train on the CPU instead.
    #[default]
    TrainOnCpu,
    /// Keep the GPU Job waiting for a node (reported, not replaced).
    Wait,
}

/// The acceptance gate (never lose to the best single model): training compares the router with
/// the single model that was best on the training records, on the validation split or on
/// cross-fitted choices over the training and validation records (`folds`), and accepts it when
/// the one-sided 95% bootstrap lower bound of the gain reaches `minGain`. A router whose artifact
/// is not accepted sends every request to that model.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AcceptanceSpec {
    /// Gain over the best single model the lower bound must reach, in points of the scaled
    /// score (0..100); 0: the router must not be worse.
    #[serde(default)]
    #[schemars(range(min = -100.0, max = 100.0))]
    pub min_gain: f64,
    /// Judge on K-fold cross-fitted choices over the training and validation records (the
    /// training repeated K times, each without one fold; with them the artifact also gets the
    /// within-source calibration): about ten times the evidence of the validation split, K more
    /// trainings. 0: the validation split. Absent: the method's default (5 for `ngram`, which
    /// fits in seconds; 0 for the encoder methods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10))]
    pub folds: Option<u32>,
}

/// How the training Job labels members without data: it asks them the dataset's prompts through
/// the router's pool config, grades the answers (exact answer, sandboxed unit tests, or a judge)
/// and trains on the merged dataset. See docs/labelling.md.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LabellingSpec {
    /// At most this many prompts per source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub limit: Option<i32>,
    /// Member calls in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 256))]
    pub concurrency: Option<i32>,
    /// A ConfigMap whose `graders.yaml` key chooses graders per source and the judge endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graders: Option<ConfigMapRef>,
}

/// A routing dataset (see docs/dataset.md): from a ConfigMap or a PersistentVolumeClaim.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = dataset_one_source)]
pub struct DatasetSource {
    /// A ConfigMap whose keys are dataset files (small datasets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapRef>,
    /// A directory on a PersistentVolumeClaim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<VolumePath>,
}

fn dataset_one_source(schema: &mut schemars::Schema) {
    schema.insert(
        "oneOf".into(),
        serde_json::json!([{ "required": ["configMap"] }, { "required": ["pvc"] }]),
    );
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapRef {
    /// ConfigMap name (same namespace).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A path inside a PersistentVolumeClaim.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumePath {
    /// PersistentVolumeClaim name (same namespace).
    #[schemars(length(min = 1, max = 253))]
    pub claim_name: String,
    /// Path inside the volume: relative, no component starting with `.` (so no `..`).
    #[schemars(
        length(min = 1, max = 1024),
        regex(pattern = r"^[^/.][^/]*(/[^/.][^/]*)*$")
    )]
    pub path: String,
}

/// When the router is retrained.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum TrainingTrigger {
    /// Retrain whenever the pool's fingerprint differs from the artifact's.
    #[default]
    OnMembershipChange,
    /// Retrain only when asked (annotation `lookahead.dev/retrain`).
    Manual,
}

/// How the router Deployment runs.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServingSpec {
    /// Router pods.
    #[serde(default = "default_serving_replicas")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,
    /// Image with the `lookahead` binary; the operator's own image when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Scorer container resources; an `nvidia.com/gpu` limit schedules it on GPU nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Node labels the router pods must match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the router pods tolerate (`nvidia.com/gpu` is added when a GPU is requested).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Upstream timeouts.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Extra members tried after the chosen one fails before any byte reached the client.
    #[serde(default = "default_retries")]
    #[schemars(range(min = 0, max = 5))]
    pub retries: i32,
    /// Weight precision of the scoring sidecar: `auto` (int8 where the node's CPU has AVX-512
    /// VNNI and training measured int8 deciding as f32 on at least 99% of the validation
    /// prompts, else f32), `f32` (the trained weights) or `int8` (lite, MLC and kNN on CPU
    /// nodes: 2–4× faster scoring, decisions as f32 on most prompts).
    #[serde(default)]
    pub precision: ScoringPrecision,
    /// Scale the router pods on their own in-flight requests, from `replicas` (at least 1) up to
    /// `maxReplicas`; absent: a fixed `replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<RouterAutoscaling>,
    /// Tenants: the API keys clients must present (`Authorization: Bearer <key>`) and the
    /// per-key limits; absent: the router is open to anyone who can reach it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,
}

/// The router's API keys and per-key limits.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// Secret (same namespace) whose data entries are `<key id>: <api key>`. The entry name is
    /// the key id that metrics and logs show; the key itself never leaves the Secret and the
    /// router's memory (where only its SHA-256 digest is kept). Mounted read-only into the router
    /// pods and re-read while they run: a key added to the Secret starts working and a removed
    /// one stops, without a restart. Absent: no authentication (limits then apply to all
    /// clients together, as key id `anonymous`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<AuthSecretRef>,
    /// Limits every key gets, per router replica; absent fields: unlimited.
    #[serde(default, skip_serializing_if = "KeyLimits::is_unlimited")]
    pub limits: KeyLimits,
    /// Per-key-id overrides of `limits` (each field it sets replaces the default for that key).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<KeyLimitsOverride>,
}

/// The Secret holding the router's API keys.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthSecretRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Per-key rate limits (token buckets refilled continuously over a minute, per router replica).
/// Over a limit the router answers 429 `rate_limit_exceeded` with `Retry-After` before any
/// member is called.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyLimits {
    /// Requests per minute (bursts up to this many).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub requests_per_minute: Option<u32>,
    /// Tokens (prompt + completion, as the members report them in `usage`) per minute. A request
    /// is admitted while the key's bucket is not exhausted; its actual usage is debited after
    /// the answer, so one request may overdraw the bucket and the next waits longer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub tokens_per_minute: Option<u64>,
}

impl KeyLimits {
    pub fn is_unlimited(&self) -> bool {
        self.requests_per_minute.is_none() && self.tokens_per_minute.is_none()
    }
}

/// Limits for one key id, overriding `limits`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyLimitsOverride {
    /// The key id (the Secret's data entry name).
    #[schemars(regex(pattern = r"^[-._a-zA-Z0-9]+$"), length(min = 1, max = 253))]
    pub id: String,
    /// This key's requests per minute (absent: `limits.requestsPerMinute`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub requests_per_minute: Option<u32>,
    /// This key's tokens per minute (absent: `limits.tokensPerMinute`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub tokens_per_minute: Option<u64>,
}

/// The router's autoscaler (external metric `lookahead_router_in_flight`, served by the operator).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouterAutoscaling {
    /// Most router pods.
    #[schemars(range(min = 1, max = 100))]
    pub max_replicas: i32,
    /// Requests in flight per router pod the autoscaler aims for.
    #[serde(default = "default_router_in_flight")]
    #[schemars(range(min = 1, max = 100000))]
    pub in_flight_per_replica: u32,
}

fn default_router_in_flight() -> u32 {
    64
}

/// Weight precision of the scorer (see `docs/results.md` for speed and agreement).
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ScoringPrecision {
    #[default]
    Auto,
    F32,
    Int8,
}

impl ScoringPrecision {
    /// The `--precision` value of `lookahead scorer`.
    pub fn as_arg(self) -> &'static str {
        match self {
            ScoringPrecision::Auto => "auto",
            ScoringPrecision::F32 => "f32",
            ScoringPrecision::Int8 => "int8",
        }
    }
}

fn default_serving_replicas() -> i32 {
    1
}

fn default_retries() -> i32 {
    2
}

impl Default for ServingSpec {
    fn default() -> Self {
        ServingSpec {
            replicas: default_serving_replicas(),
            image: None,
            resources: None,
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            timeouts: Timeouts::default(),
            retries: default_retries(),
            precision: ScoringPrecision::default(),
            autoscaling: None,
            auth: None,
        }
    }
}

/// Durations as Go-style strings (`300ms`, `30s`, `2m`).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Timeouts {
    /// Whole upstream request.
    #[serde(default = "default_request_timeout")]
    #[schemars(regex(pattern = r"^[0-9]+(ms|s|m)$"))]
    pub request: String,
    /// Until the upstream's first response byte; a retry is still possible before it.
    #[serde(default = "default_first_token_timeout")]
    #[schemars(regex(pattern = r"^[0-9]+(ms|s|m)$"))]
    pub first_token: String,
    /// How long a request waits while no member has a ready replica (members scaled to zero
    /// are starting) before the router answers 503 with `Retry-After`.
    #[serde(default = "default_cold_start_timeout")]
    #[schemars(regex(pattern = r"^[0-9]+(ms|s|m)$"))]
    pub cold_start: String,
}

fn default_cold_start_timeout() -> String {
    "60s".to_string()
}

fn default_request_timeout() -> String {
    "300s".to_string()
}

fn default_first_token_timeout() -> String {
    "30s".to_string()
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            request: default_request_timeout(),
            first_token: default_first_token_timeout(),
            cold_start: default_cold_start_timeout(),
        }
    }
}

/// Observed state of a policy.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::strip_null_from_enums)]
pub struct RoutingPolicyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Where the policy stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<PolicyPhase>,
    /// The artifact the router serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<ArtifactStatus>,
    /// In-cluster URL of the router Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// `Ready`, `Training`, `TrainingFailed`, `MissingData`, `RouterAccepted` (with reasons).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Lifecycle phase of a policy.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PolicyPhase {
    Pending,
    Training,
    Serving,
    Degraded,
    Failed,
}

/// A trained router artifact.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactStatus {
    /// Pool fingerprint the artifact was trained for.
    pub fingerprint: String,
    /// Artifact version (its directory name under the artifacts path).
    pub version: String,
    /// Member names the artifact scores (the pool when it was trained); other members of the
    /// pool are reachable only when a client names them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
    /// RFC 3339 time training finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trained_at: Option<String>,
    /// Prompts that got new, graded responses from the labelling step of this training run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labelled_prompts: Option<i64>,
    /// Validation metrics recorded by training (name -> value).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub validation: BTreeMap<String, f64>,
    /// The acceptance gate's verdict recorded by training; absent for artifacts trained before
    /// the gate (served as accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acceptance: Option<AcceptanceStatus>,
}

/// Whether a trained router beat the best single model on held-out evidence (see [`AcceptanceSpec`]).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AcceptanceStatus {
    /// The lower bound reached `minGain`: the router routes. Otherwise every request goes to
    /// `fallbackModel`.
    pub accepted: bool,
    /// Router minus `fallbackModel` on the records judged (scaled score points).
    pub gain: f64,
    /// One-sided 95% bootstrap lower bound of `gain`.
    pub lower_bound: f64,
    /// The gain the lower bound had to reach.
    pub min_gain: f64,
    /// The single model that was best on the training records (a pool model id).
    pub fallback_model: String,
    /// Records judged: the validation split's, or with `folds` every training and validation
    /// record; 0 when the training Job did not say.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub examples: u64,
    /// 0: judged on the validation split; K: on K-fold cross-fitted choices.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub folds: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Messages and the training Job name each method as users wrote it, and the Job runs the
    /// CLI method that trains it.
    #[test]
    fn each_method_is_named_as_a_routing_policy_spells_it() {
        use RouterMethod::*;
        let all = [
            LookaheadLite,
            LookaheadMlm,
            LookaheadClm,
            Mlc,
            Knn,
            Ngram,
            Ensemble,
            Random,
            Fixed,
        ];
        for m in all {
            let spelled = serde_json::to_value(m).unwrap();
            assert_eq!(spelled, serde_json::json!(m.name()));
        }
        assert_eq!(LookaheadLite.train_method(), "lite");
        assert_eq!(LookaheadClm.train_method(), "clm");
        assert_eq!(Ensemble.train_method(), "ensemble");
    }

    #[test]
    fn training_written_before_deadlines_gets_two_hours_and_the_cpu_fallback() {
        let t: TrainingSpec =
            serde_json::from_str(r#"{"dataset": {"configMap": {"name": "d"}}}"#).expect("spec");
        assert_eq!(t.active_deadline_seconds(), Ok(7200));
        assert_eq!(t.no_gpu_node.after_duration().map(|d| d.as_secs()), Ok(120));
        assert_eq!(t.no_gpu_node.action, NoGpuNodeAction::TrainOnCpu);
        assert!(t.node_selector.is_empty() && t.tolerations.is_empty());
        let bad = TrainingSpec {
            active_deadline: "0s".into(),
            ..t
        };
        assert!(bad.active_deadline_seconds().is_err());
    }

    #[test]
    fn cost_profiles_are_dns_labels_with_finite_non_negative_weights() {
        let ok: BTreeMap<String, f64> = [("economy".to_string(), 0.5), ("q-2".to_string(), 0.0)]
            .into_iter()
            .collect();
        assert_eq!(check_cost_profiles("p", &ok, Some(2.0)), Ok(()));
        for bad in ["", "Economy", "auto:x", "-a", "a-", "a_b", &"a".repeat(64)] {
            let profiles: BTreeMap<String, f64> = [(bad.to_string(), 1.0)].into_iter().collect();
            let e = check_cost_profiles("p", &profiles, None).expect_err(bad);
            assert!(
                e.contains("p.profiles") && e.contains("not a profile name"),
                "{e}"
            );
        }
        let negative: BTreeMap<String, f64> = [("eco".to_string(), -1.0)].into_iter().collect();
        let e = check_cost_profiles("p", &negative, None).expect_err("negative");
        assert!(e.contains("p.profiles.eco"), "{e}");
        let e = check_cost_profiles("p", &ok, Some(f64::NAN)).expect_err("nan");
        assert!(e.contains("p.maxCostWeight"), "{e}");
        let many: BTreeMap<String, f64> = (0..=MAX_COST_PROFILES)
            .map(|i| (format!("p{i}"), 1.0))
            .collect();
        assert!(check_cost_profiles("p", &many, None).is_err());
    }
}
