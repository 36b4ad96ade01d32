//! tower-test mock API server scenarios for the reconcile steps: each scenario lists the requests
//! a reconcile must make, in order, checks their method, path and body, and answers them.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use kube::api::ApiResource;
use kube::client::Body;
use kube::core::GroupVersionKind;
use kube::Client;
use serde_json::{json, Value};

use crate::context::{Context, Settings};
use crate::metrics::Metrics;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// One expected request: method, path (without query), a check on the body, and the answer.
struct Expect {
    method: Method,
    path: String,
    /// Query parameters that must be present (`k=v`).
    query: Vec<String>,
    check: Box<dyn Fn(&Value) + Send>,
    status: u16,
    answer: Value,
    /// Answer with the request body (what a create or apply returns, give or take defaults).
    echo: bool,
}

fn expect(method: Method, path: impl Into<String>, answer: Value) -> Expect {
    Expect {
        method,
        path: path.into(),
        query: vec![],
        check: Box::new(|_| {}),
        status: 200,
        answer,
        echo: false,
    }
}

impl Expect {
    fn query(mut self, q: impl Into<String>) -> Self {
        self.query.push(q.into());
        self
    }
    fn check(mut self, f: impl Fn(&Value) + Send + 'static) -> Self {
        self.check = Box::new(f);
        self
    }
    fn echo(mut self) -> Self {
        self.echo = true;
        self
    }
    fn status(mut self, code: u16) -> Self {
        self.status = code;
        self
    }
}

/// Answers `script` in order; panics (failing the test) on any deviation.
async fn serve(mut handle: Handle, script: Vec<Expect>) {
    for (i, e) in script.into_iter().enumerate() {
        let (request, send) = handle.next_request().await.expect("a request");
        let uri = request.uri().clone();
        assert_eq!(
            (request.method(), uri.path()),
            (&e.method, e.path.as_str()),
            "request #{i}"
        );
        let query = uri.query().unwrap_or_default().to_string();
        for q in &e.query {
            assert!(
                query.split('&').any(|p| p == q.as_str()),
                "request #{i} ({}): {q} not in {query}",
                e.path
            );
        }
        let bytes = request.into_body().collect_bytes().await.expect("body");
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("JSON body")
        };
        (e.check)(&body);
        let answer = if e.echo { &body } else { &e.answer };
        let response = Response::builder()
            .status(e.status)
            .body(Body::from(serde_json::to_vec(answer).expect("json")))
            .expect("response");
        send.send_response(response);
    }
}

fn test_context() -> (Arc<Context>, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "ns");
    let gvk = GroupVersionKind::gvk("autoscaling", "v2beta2", "HorizontalPodAutoscaler");
    let settings = Settings {
        image: "lookahead:test".into(),
        hpa: ApiResource::from_gvk_with_plural(&gvk, "horizontalpodautoscalers"),
        pdb: None,
        namespace: Some("ns".into()),
        telemetry: Default::default(),
        image_pull_secrets: Vec::new(),
    };
    let ctx = Context::new(client, settings, Arc::new(Metrics::default()));
    (Arc::new(ctx), handle)
}

/// A policy without `serving.autoscaling`: its router's (absent) autoscaler is deleted.
fn no_router_autoscaler() -> Expect {
    let not_found = json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure",
                            "message": "not found", "reason": "NotFound", "code": 404 });
    expect(
        Method::DELETE,
        "/apis/autoscaling/v2beta2/namespaces/ns/horizontalpodautoscalers/rp-router",
        not_found,
    )
    .status(404)
}

fn event_answer() -> Value {
    json!({ "apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": { "name": "e", "namespace": "ns" }, "eventTime": "2026-01-01T00:00:00.000000Z" })
}

fn metadata_list(names: &[(&str, &str)]) -> Value {
    let items: Vec<Value> = names
        .iter()
        .map(|(name, member)| json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": { "name": name, "namespace": "ns", "labels": { "lookahead.dev/pool": "pool", "lookahead.dev/member": member } },
        }))
        .collect();
    json!({ "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList", "metadata": {}, "items": items })
}

/// The `routing-data` ConfigMap of `testdata::policy`, with records for the yi and phi members.
fn dataset_config_map() -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "routing-data", "namespace": "ns" },
        "data": { "manifest.json": r#"{"GSM8K": {"models": ["Yi-model", "Phi-model"]}}"# },
    })
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .unwrap_or(&Value::Null)
}

async fn run<F: std::future::Future>(
    reconcile: F,
    handle: Handle,
    script: Vec<Expect>,
) -> F::Output {
    let server = tokio::spawn(serve(handle, script));
    let out = tokio::time::timeout(Duration::from_secs(5), reconcile)
        .await
        .expect("reconcile finished");
    tokio::time::timeout(Duration::from_secs(1), server)
        .await
        .expect("every expected request was made")
        .expect("mock server");
    out
}

/// An invalid pool gets a status (server-side apply, forced) and a Warning event, nothing else.
#[tokio::test]
async fn invalid_pool_reports_and_creates_nothing() {
    let (ctx, handle) = test_context();
    let mut pool = crate::testdata::pool("pool", &["yi"]);
    pool.spec.members[0].replicas.min = 3;
    pool.spec.members[0].replicas.max = 2;
    let answer = serde_json::to_value(&pool).expect("json");
    let script = vec![
        expect(
            Method::PATCH,
            "/apis/lookahead.dev/v1alpha1/namespaces/ns/llmpools/pool/status",
            answer,
        )
        .query("fieldManager=lookahead-operator")
        .query("force=true")
        .check(|body| {
            let ready = condition(body, "Ready");
            assert_eq!(ready["status"], "False");
            assert_eq!(ready["reason"], "InvalidReplicas");
        }),
        expect(
            Method::POST,
            "/apis/events.k8s.io/v1/namespaces/ns/events",
            event_answer(),
        )
        .check(|body| {
            assert_eq!(body["type"], "Warning");
            assert_eq!(body["reason"], "InvalidReplicas");
        }),
    ];
    let action = run(crate::pool::reconcile(Arc::new(pool), ctx), handle, script).await;
    assert!(action.is_ok());
}

/// A valid pool: the template member's Deployment and Service are applied, the endpoint member
/// gets none, a removed member's leftovers are pruned (with an Event), then the status.
#[tokio::test]
async fn pool_applies_children_prunes_and_writes_status() {
    let (ctx, handle) = test_context();
    let mut pool = crate::testdata::pool("pool", &["yi", "ext"]);
    pool.spec.members[1].template = None;
    pool.spec.members[1].endpoint = Some("http://ext.example/v1".into());
    let answer = serde_json::to_value(&pool).expect("json");
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": "pool-yi", "namespace": "ns" },
        "spec": { "replicas": 1, "selector": {}, "template": {} },
        "status": { "readyReplicas": 1 },
    });
    let service = json!({ "apiVersion": "v1", "kind": "Service", "metadata": { "name": "pool-yi", "namespace": "ns" } });
    let script = vec![
        expect(Method::PATCH, "/apis/apps/v1/namespaces/ns/deployments/pool-yi", deployment)
            .query("fieldManager=lookahead-operator")
            .check(|d| {
                assert_eq!(d["metadata"]["labels"]["lookahead.dev/member"], "yi");
                assert_eq!(d["metadata"]["ownerReferences"][0]["kind"], "LLMPool");
                let model = &d["spec"]["template"]["spec"]["containers"][0];
                assert_eq!(model["image"], "vllm/vllm-openai:v0.6.0");
                assert_eq!(model["startupProbe"]["httpGet"]["path"], "/v1/models");
                assert_eq!(model["readinessProbe"]["httpGet"]["path"], "/v1/models");
            }),
        expect(Method::PATCH, "/api/v1/namespaces/ns/services/pool-yi", service),
        expect(Method::GET, "/apis/apps/v1/namespaces/ns/deployments", metadata_list(&[("pool-yi", "yi"), ("pool-old", "old")]))
            .query("labelSelector=lookahead.dev%2Fpool%3Dpool%2Capp.kubernetes.io%2Fmanaged-by%3Dlookahead-operator"),
        expect(Method::DELETE, "/apis/apps/v1/namespaces/ns/deployments/pool-old", json!({ "apiVersion": "v1", "kind": "Status", "status": "Success" })),
        expect(Method::GET, "/api/v1/namespaces/ns/services", metadata_list(&[("pool-yi", "yi")])),
        expect(Method::GET, "/apis/autoscaling/v2beta2/namespaces/ns/horizontalpodautoscalers", metadata_list(&[])),
        expect(Method::POST, "/apis/events.k8s.io/v1/namespaces/ns/events", event_answer())
            .check(|e| assert_eq!(e["reason"], "MembersRemoved")),
        expect(Method::PATCH, "/apis/lookahead.dev/v1alpha1/namespaces/ns/llmpools/pool/status", answer).check(|s| {
            assert_eq!(s["status"]["readyMembers"], "2/2");
            assert_eq!(s["status"]["memberCount"], 2);
            assert_eq!(s["status"]["members"][1]["endpoint"], "http://ext.example/v1");
            assert_eq!(condition(s, "Ready")["status"], "True");
            assert_eq!(s["status"]["fingerprint"].as_str().map(str::len), Some(16));
        }),
    ];
    let action = run(crate::pool::reconcile(Arc::new(pool), ctx), handle, script).await;
    assert!(action.is_ok());
}

/// A policy whose pool does not exist: `Ready=False/PoolNotFound`, a Warning, no children.
#[tokio::test]
async fn policy_without_pool_reports_pool_not_found() {
    let (ctx, handle) = test_context();
    let policy = crate::testdata::policy("rp", Some("yi"));
    let answer = serde_json::to_value(&policy).expect("json");
    let not_found = json!({ "apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found" });
    let script = vec![
        expect(
            Method::GET,
            "/apis/lookahead.dev/v1alpha1/namespaces/ns/llmpools/pool",
            not_found,
        )
        .status(404),
        expect(
            Method::PATCH,
            "/apis/lookahead.dev/v1alpha1/namespaces/ns/routingpolicies/rp/status",
            answer,
        )
        .check(|s| {
            assert_eq!(condition(s, "Ready")["reason"], "PoolNotFound");
            assert_eq!(s["status"]["phase"], "Failed");
        }),
        expect(
            Method::POST,
            "/apis/events.k8s.io/v1/namespaces/ns/events",
            event_answer(),
        )
        .check(|e| assert_eq!(e["reason"], "PoolNotFound")),
    ];
    let action = run(
        crate::policy::reconcile(Arc::new(policy), ctx),
        handle,
        script,
    )
    .await;
    assert!(action.is_ok());
}

/// A failing API call surfaces as an error with a metric label (the controller requeues it).
#[tokio::test]
async fn api_errors_carry_a_metric_label() {
    let (ctx, handle) = test_context();
    let policy = crate::testdata::policy("rp", Some("yi"));
    let boom = json!({ "apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "InternalError", "code": 500, "message": "boom" });
    let script = vec![expect(
        Method::GET,
        "/apis/lookahead.dev/v1alpha1/namespaces/ns/llmpools/pool",
        boom,
    )
    .status(500)];
    let result = run(
        crate::policy::reconcile(Arc::new(policy), ctx.clone()),
        handle,
        script,
    )
    .await;
    let error = result.expect_err("a 500 fails the reconcile");
    assert_eq!(error.metric_label(), "api_error");
}

/// A policy whose reconcile keeps failing (the API server answers 500) is retried later each
/// time: 1 s, 2 s, 4 s, 8 s before jitter (per-object exponential backoff, not a fixed pause);
/// one reconcile that succeeds (here: reporting the pool missing) starts the streak over.
#[tokio::test]
async fn a_failing_policy_is_retried_later_each_time_until_it_succeeds() {
    use crate::backoff::BASE;
    let (ctx, handle) = test_context();
    let policy = Arc::new(crate::testdata::policy("rp", Some("yi")));
    let pool_path = "/apis/lookahead.dev/v1alpha1/namespaces/ns/llmpools/pool";
    let boom = || {
        expect(Method::GET, pool_path, json!({ "apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "InternalError", "code": 500, "message": "boom" }))
            .status(500)
    };
    let not_found = json!({ "apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found" });
    let mut script: Vec<Expect> = (0..4).map(|_| boom()).collect();
    script.extend([
        expect(Method::GET, pool_path, not_found).status(404),
        expect(
            Method::PATCH,
            "/apis/lookahead.dev/v1alpha1/namespaces/ns/routingpolicies/rp/status",
            serde_json::to_value(policy.as_ref()).expect("json"),
        ),
        expect(
            Method::POST,
            "/apis/events.k8s.io/v1/namespaces/ns/events",
            event_answer(),
        ),
        boom(),
    ]);
    let server = tokio::spawn(serve(handle, script));
    let reconcile = || {
        tokio::time::timeout(
            Duration::from_secs(5),
            crate::policy::reconcile(policy.clone(), ctx.clone()),
        )
    };

    let mut delays = Vec::new();
    for _ in 0..4 {
        let error = reconcile()
            .await
            .expect("finished")
            .expect_err("a 500 fails");
        delays.push(crate::controller::retry_delay(
            policy.as_ref(),
            &error,
            &ctx,
        ));
    }
    for (n, delay) in delays.iter().enumerate() {
        let low = BASE * 2u32.pow(u32::try_from(n).expect("small"));
        assert!(*delay >= low && *delay < low * 2, "retry {n}: {delay:?}");
    }
    assert!(delays.windows(2).all(|w| w[0] < w[1]), "{delays:?}");
    assert_eq!(ctx.backoff.failing(), 1);

    reconcile()
        .await
        .expect("finished")
        .expect("reported as invalid");
    assert_eq!(ctx.backoff.failing(), 0, "a success forgets the streak");
    let error = reconcile()
        .await
        .expect("finished")
        .expect_err("a 500 fails");
    let action = crate::controller::error_policy(policy.clone(), &error, ctx.clone());
    assert_ne!(action, kube::runtime::controller::Action::await_change());
    assert!(crate::controller::retry_delay(policy.as_ref(), &error, &ctx) >= BASE * 2);
    tokio::time::timeout(Duration::from_secs(1), server)
        .await
        .expect("every expected request was made")
        .expect("mock server");
    assert!(ctx.metrics.render().contains(
        "lookahead_operator_reconcile_failures_total{controller=\"routingpolicy\",error=\"api_error\"} 6"
    ));
}

/// A valid policy over a pool without an artifact: it reads the pool and the dataset, creates
/// the one training Job (with an Event), applies the router's ConfigMap, Deployment and Service,
/// and reports `Training` with the fail-open behaviour in status.
#[tokio::test]
async fn policy_starts_training_and_runs_the_router() {
    let (ctx, handle) = test_context();
    let policy = crate::testdata::policy("rp", Some("yi"));
    let pool = crate::testdata::pool("pool", &["yi", "phi"]);
    let fingerprint = pool.spec.fingerprint();
    let dataset = dataset_config_map();
    let job_name = format!("rp-train-{fingerprint}");
    let answer = serde_json::to_value(&policy).expect("json");
    let job_check = {
        let job_name = job_name.clone();
        move |j: &Value| {
            assert_eq!(j["metadata"]["name"], job_name.as_str());
            assert_eq!(j["metadata"]["ownerReferences"][0]["kind"], "RoutingPolicy");
            let args = &j["spec"]["template"]["spec"]["containers"][0]["args"];
            assert_eq!(args[0], "train");
            assert!(args.to_string().contains(r#""--device","cpu""#), "{args}");
            assert_eq!(j["spec"]["backoffLimit"], 2);
            assert_eq!(j["spec"]["activeDeadlineSeconds"], 7200);
            assert_eq!(
                j["spec"]["template"]["spec"]["automountServiceAccountToken"],
                false
            );
        }
    };
    let script = vec![
        expect(Method::GET, "/apis/lookahead.dev/v1alpha1/namespaces/ns/llmpools/pool", serde_json::to_value(&pool).expect("json")),
        expect(Method::GET, "/api/v1/namespaces/ns/configmaps/routing-data", dataset),
        expect(Method::GET, "/apis/batch/v1/namespaces/ns/jobs", json!({ "apiVersion": "batch/v1", "kind": "JobList", "metadata": {}, "items": [] }))
            .query("labelSelector=lookahead.dev%2Fpolicy%3Drp%2Capp.kubernetes.io%2Fmanaged-by%3Dlookahead-operator"),
        expect(Method::POST, "/apis/batch/v1/namespaces/ns/jobs", Value::Null).echo().check(job_check),
        expect(Method::POST, "/apis/events.k8s.io/v1/namespaces/ns/events", event_answer())
            .check(|e| assert_eq!(e["reason"], "TrainingStarted")),
        expect(Method::PATCH, "/api/v1/namespaces/ns/configmaps/rp-router", Value::Null).echo().check(|cm| {
            let config: lookahead_api::RouterConfig =
                serde_yaml::from_str(cm["data"]["config.yaml"].as_str().unwrap_or_default()).expect("router config");
            assert_eq!(config.members.len(), 2);
            assert_eq!(config.policy.method, lookahead_api::policy::RouterMethod::Fixed, "fails open until trained");
        }),
        expect(Method::PATCH, "/apis/apps/v1/namespaces/ns/deployments/rp-router", Value::Null).echo().check(|d| {
            let pod = &d["spec"]["template"];
            assert_eq!(pod["spec"]["containers"][0]["name"], "router");
            assert!(pod["metadata"]["annotations"]["lookahead.dev/config-hash"].is_string());
            assert_eq!(pod["spec"]["automountServiceAccountToken"], false, "the router needs no API token");
        }),
        expect(Method::PATCH, "/api/v1/namespaces/ns/services/rp-router", Value::Null).echo(),
        no_router_autoscaler(),
        expect(Method::PATCH, "/apis/lookahead.dev/v1alpha1/namespaces/ns/routingpolicies/rp/status", answer).check(|s| {
            assert_eq!(s["status"]["phase"], "Training");
            assert_eq!(condition(s, "Training")["status"], "True");
            assert_eq!(condition(s, "MissingData")["reason"], "AllMembersHaveData");
            assert_eq!(s["status"]["endpoint"], "http://rp-router.ns.svc:8080/v1");
        }),
    ];
    let action = run(
        crate::policy::reconcile(Arc::new(policy), ctx),
        handle,
        script,
    )
    .await;
    assert!(action.is_ok());
}

/// A training Job that failed for good (backoff exhausted): `TrainingFailed=True` with the Job's
/// reason, phase `Failed` (no older artifact), no new Job, and the router is still applied.
#[tokio::test]
async fn failed_training_job_is_reported_and_not_recreated() {
    let (ctx, handle) = test_context();
    let policy = crate::testdata::policy("rp", Some("yi"));
    let pool = crate::testdata::pool("pool", &["yi", "phi"]);
    let fingerprint = pool.spec.fingerprint();
    let dataset = dataset_config_map();
    let failed_job = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": { "name": format!("rp-train-{fingerprint}"), "namespace": "ns",
                      "labels": { "lookahead.dev/artifact-version": fingerprint } },
        "spec": { "template": { "spec": { "containers": [] } } },
        "status": { "failed": 3, "conditions": [{ "type": "Failed", "status": "True",
                    "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit" }] },
    });
    let answer = serde_json::to_value(&policy).expect("json");
    let script = vec![
        expect(
            Method::GET,
            "/apis/lookahead.dev/v1alpha1/namespaces/ns/llmpools/pool",
            serde_json::to_value(&pool).expect("json"),
        ),
        expect(
            Method::GET,
            "/api/v1/namespaces/ns/configmaps/routing-data",
            dataset,
        ),
        expect(
            Method::GET,
            "/apis/batch/v1/namespaces/ns/jobs",
            json!({ "apiVersion": "batch/v1", "kind": "JobList", "metadata": {}, "items": [failed_job] }),
        ),
        // What its container said last (its log tail, as the termination message).
        expect(Method::GET, "/api/v1/namespaces/ns/pods", failed_train_pod())
            .query(format!("labelSelector=job-name%3Drp-train-{fingerprint}")),
        // No POST of a Job, no Event: straight to the router objects.
        expect(
            Method::PATCH,
            "/api/v1/namespaces/ns/configmaps/rp-router",
            Value::Null,
        )
        .echo(),
        expect(
            Method::PATCH,
            "/apis/apps/v1/namespaces/ns/deployments/rp-router",
            Value::Null,
        )
        .echo(),
        expect(
            Method::PATCH,
            "/api/v1/namespaces/ns/services/rp-router",
            Value::Null,
        )
        .echo(),
        no_router_autoscaler(),
        expect(
            Method::PATCH,
            "/apis/lookahead.dev/v1alpha1/namespaces/ns/routingpolicies/rp/status",
            answer,
        )
        .check(|s| {
            let failed = condition(s, "TrainingFailed");
            assert_eq!(failed["status"], "True");
            let message = failed["message"].as_str().unwrap_or_default();
            assert!(message.contains("BackoffLimitExceeded"), "{message}");
            assert!(
                message.contains("container train said: Error: --device cuda: this binary was built without CUDA support"),
                "{message}"
            );
            assert_eq!(condition(s, "Training")["status"], "False");
            assert_eq!(s["status"]["phase"], "Failed");
        }),
    ];
    let action = run(
        crate::policy::reconcile(Arc::new(policy), ctx),
        handle,
        script,
    )
    .await;
    assert!(action.is_ok());
}

/// The pods of a failed training Job: the train container exited 1 with its error as the
/// termination message.
fn failed_train_pod() -> Value {
    json!({ "apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [{
        "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "p", "namespace": "ns" },
        "status": { "containerStatuses": [{ "name": "train", "image": "i", "imageID": "", "ready": false,
            "restartCount": 0, "state": { "terminated": { "exitCode": 1,
                "message": "Error: --device cuda: this binary was built without CUDA support (cargo build --features cuda)\n" } } }] } }] })
}

/// The router objects of a policy reconcile, answered with what was applied, and no autoscaler.
fn router_objects() -> Vec<Expect> {
    vec![
        expect(
            Method::PATCH,
            "/api/v1/namespaces/ns/configmaps/rp-router",
            Value::Null,
        )
        .echo(),
        expect(
            Method::PATCH,
            "/apis/apps/v1/namespaces/ns/deployments/rp-router",
            Value::Null,
        )
        .echo(),
        expect(
            Method::PATCH,
            "/api/v1/namespaces/ns/services/rp-router",
            Value::Null,
        )
        .echo(),
        no_router_autoscaler(),
    ]
}

/// A policy reconcile's first reads: its pool, the dataset, and its training Jobs (`jobs`).
fn policy_reads(pool: &lookahead_api::LLMPool, jobs: Vec<Value>) -> Vec<Expect> {
    vec![
        expect(
            Method::GET,
            "/apis/lookahead.dev/v1alpha1/namespaces/ns/llmpools/pool",
            serde_json::to_value(pool).expect("json"),
        ),
        expect(
            Method::GET,
            "/api/v1/namespaces/ns/configmaps/routing-data",
            dataset_config_map(),
        ),
        expect(
            Method::GET,
            "/apis/batch/v1/namespaces/ns/jobs",
            json!({ "apiVersion": "batch/v1", "kind": "JobList", "metadata": {}, "items": jobs }),
        ),
    ]
}

/// A training Job stopped by Kubernetes at `activeDeadlineSeconds`: `TrainingFailed=True` says
/// `DeadlineExceeded` and which setting gives training longer; no new Job.
#[tokio::test]
async fn a_job_past_its_deadline_is_reported_as_training_failed_with_the_reason() {
    let (ctx, handle) = test_context();
    let policy = crate::testdata::policy("rp", Some("yi"));
    let pool = crate::testdata::pool("pool", &["yi", "phi"]);
    let fingerprint = pool.spec.fingerprint();
    let job = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": { "name": format!("rp-train-{fingerprint}"), "namespace": "ns",
                      "labels": { "lookahead.dev/artifact-version": fingerprint } },
        "spec": { "activeDeadlineSeconds": 7200, "template": { "spec": { "containers": [] } } },
        "status": { "failed": 1, "conditions": [{ "type": "Failed", "status": "True",
                    "reason": "DeadlineExceeded", "message": "Job was active longer than specified deadline" }] },
    });
    let mut script = policy_reads(&pool, vec![job]);
    // Its pods went with the deadline: nothing more to say.
    script.push(expect(
        Method::GET,
        "/api/v1/namespaces/ns/pods",
        json!({ "apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [] }),
    ));
    script.extend(router_objects());
    script.push(
        expect(
            Method::PATCH,
            "/apis/lookahead.dev/v1alpha1/namespaces/ns/routingpolicies/rp/status",
            serde_json::to_value(&policy).expect("json"),
        )
        .check(|s| {
            let failed = condition(s, "TrainingFailed");
            assert_eq!(failed["status"], "True");
            assert_eq!(failed["reason"], "JobFailed");
            let message = failed["message"].as_str().unwrap_or_default();
            assert!(
                message.contains("DeadlineExceeded: Job was active longer than specified deadline")
                    && message.contains("activeDeadlineSeconds 7200")
                    && message.contains("spec.training.activeDeadline"),
                "{message}"
            );
            assert_eq!(s["status"]["phase"], "Failed");
        }),
    );
    let action = run(
        crate::policy::reconcile(Arc::new(policy), ctx),
        handle,
        script,
    )
    .await;
    assert!(action.is_ok());
}

/// An mlm policy whose training asks for a GPU, and its running GPU Job.
fn gpu_policy_and_job(
    action: lookahead_api::policy::NoGpuNodeAction,
) -> (
    lookahead_api::RoutingPolicy,
    lookahead_api::LLMPool,
    String,
    Value,
) {
    let mut policy = crate::testdata::policy("rp", Some("yi"));
    policy.spec.router.method = lookahead_api::policy::RouterMethod::LookaheadMlm;
    if let Some(t) = policy.spec.training.as_mut() {
        t.resources = Some(k8s_openapi::api::core::v1::ResourceRequirements {
            limits: Some(std::collections::BTreeMap::from([(
                crate::objects::GPU_RESOURCE.to_string(),
                k8s_openapi::apimachinery::pkg::api::resource::Quantity("1".into()),
            )])),
            ..Default::default()
        });
        t.node_selector = std::collections::BTreeMap::from([("gpu".into(), "yes".into())]);
        t.no_gpu_node.action = action;
    }
    let pool = crate::testdata::pool("pool", &["yi", "phi"]);
    let fingerprint = pool.spec.fingerprint();
    let name = format!("rp-train-{fingerprint}");
    let job = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": { "name": name, "namespace": "ns", "labels": { "lookahead.dev/artifact-version": fingerprint } },
        "spec": { "template": { "spec": { "containers": [] } } },
        "status": { "active": 1 },
    });
    (policy, pool, name, job)
}

/// The GPU Job's pod, unschedulable since `since`.
fn unschedulable_pods(since: &str) -> Value {
    json!({ "apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [{
        "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "p", "namespace": "ns" },
        "status": { "phase": "Pending", "conditions": [{ "type": "PodScheduled", "status": "False",
            "reason": "Unschedulable", "lastTransitionTime": since,
            "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu." }] } }] })
}

/// A GPU training pod unschedulable for longer than `noGpuNode.after` (2m): a CPU Job replaces
/// the GPU Job (no GPU, no nodeSelector, `--device cpu`), a `NoGpuNode` Warning says why with
/// the scheduler's words, and the `Training` condition says training runs on the CPU instead.
#[tokio::test]
async fn a_gpu_job_no_node_can_take_falls_back_to_the_cpu_and_says_so() {
    let (ctx, handle) = test_context();
    let (policy, pool, gpu_job, job) =
        gpu_policy_and_job(lookahead_api::policy::NoGpuNodeAction::TrainOnCpu);
    let cpu_job = format!("{gpu_job}-cpu");
    let mut script = policy_reads(&pool, vec![job]);
    let pods_query = format!("labelSelector=job-name%3D{gpu_job}");
    script.extend([
        expect(
            Method::GET,
            "/api/v1/namespaces/ns/pods",
            unschedulable_pods("2020-01-01T00:00:00Z"),
        )
        .query(pods_query),
        expect(
            Method::POST,
            "/apis/batch/v1/namespaces/ns/jobs",
            Value::Null,
        )
        .echo()
        .check({
            let cpu_job = cpu_job.clone();
            move |j| {
                assert_eq!(j["metadata"]["name"], cpu_job.as_str());
                let pod = &j["spec"]["template"]["spec"];
                let args = pod["containers"][0]["args"].to_string();
                assert!(
                    args.contains(r#""--device","cpu""#) && !args.contains("cuda"),
                    "{args}"
                );
                assert!(pod["containers"][0]["resources"]
                    .to_string()
                    .find("nvidia.com/gpu")
                    .is_none());
                assert!(pod["nodeSelector"].is_null());
                let why = j["metadata"]["annotations"]["lookahead.dev/cpu-fallback"]
                    .as_str()
                    .unwrap_or_default();
                assert!(why.contains("Insufficient nvidia.com/gpu"), "{why}");
            }
        }),
        expect(
            Method::DELETE,
            format!("/apis/batch/v1/namespaces/ns/jobs/{gpu_job}"),
            json!({ "apiVersion": "v1", "kind": "Status", "status": "Success" }),
        )
        .check(|body| {
            assert_eq!(
                body["propagationPolicy"], "Background",
                "its pending pod goes too"
            )
        }),
        expect(
            Method::POST,
            "/apis/events.k8s.io/v1/namespaces/ns/events",
            event_answer(),
        )
        .check({
            let cpu_job = cpu_job.clone();
            move |e| {
                assert_eq!(
                    (e["type"].as_str(), e["reason"].as_str()),
                    (Some("Warning"), Some("NoGpuNode"))
                );
                let note = e["note"].as_str().unwrap_or_default();
                assert!(
                    note.contains("no node could take it for 2m") && note.contains(&cpu_job),
                    "{note}"
                );
            }
        }),
    ]);
    script.extend(router_objects());
    script.push(
        expect(
            Method::PATCH,
            "/apis/lookahead.dev/v1alpha1/namespaces/ns/routingpolicies/rp/status",
            serde_json::to_value(&policy).expect("json"),
        )
        .check(move |s| {
            let training = condition(s, "Training");
            assert_eq!(
                (training["status"].as_str(), training["reason"].as_str()),
                (Some("True"), Some("CpuFallback"))
            );
            let message = training["message"].as_str().unwrap_or_default();
            assert!(
                message.starts_with(&format!("Job {cpu_job} trains artifact")),
                "{message}"
            );
            assert!(
                message.contains("on the CPU") && message.contains("Insufficient nvidia.com/gpu"),
                "{message}"
            );
            assert_eq!(s["status"]["phase"], "Training");
        }),
    );
    let action = run(
        crate::policy::reconcile(Arc::new(policy.clone()), ctx),
        handle,
        script,
    )
    .await;
    assert!(action.is_ok());

    // Later reconciles follow the CPU Job (its annotation says why; no pods are read), and a
    // GPU Job a failed reconcile left behind is deleted.
    let (ctx, handle) = test_context();
    let fingerprint = pool.spec.fingerprint();
    let stand_in = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": { "name": format!("rp-train-{fingerprint}-cpu"), "namespace": "ns",
                      "labels": { "lookahead.dev/artifact-version": fingerprint },
                      "annotations": { "lookahead.dev/cpu-fallback": "no GPU node for 2m" } },
        "spec": { "template": { "spec": { "containers": [] } } },
        "status": { "active": 1 },
    });
    let (_, _, _, left_behind) =
        gpu_policy_and_job(lookahead_api::policy::NoGpuNodeAction::TrainOnCpu);
    let mut script = policy_reads(&pool, vec![left_behind, stand_in]);
    script.push(expect(
        Method::DELETE,
        format!("/apis/batch/v1/namespaces/ns/jobs/{gpu_job}"),
        json!({ "apiVersion": "v1", "kind": "Status", "status": "Success" }),
    ));
    script.extend(router_objects());
    script.push(
        expect(
            Method::PATCH,
            "/apis/lookahead.dev/v1alpha1/namespaces/ns/routingpolicies/rp/status",
            serde_json::to_value(&policy).expect("json"),
        )
        .check(|s| {
            let training = condition(s, "Training");
            assert_eq!(training["reason"], "CpuFallback");
            assert!(training["message"]
                .as_str()
                .unwrap_or_default()
                .contains("no GPU node for 2m"));
        }),
    );
    let action = run(
        crate::policy::reconcile(Arc::new(policy), ctx),
        handle,
        script,
    )
    .await;
    assert!(action.is_ok());
}

/// With `noGpuNode.action: Wait` the GPU Job stays (no new Job, nothing deleted); the status
/// says it waits for a GPU node, with a `NoGpuNode` Warning. A pod unschedulable for less than
/// the bound is not reported at all.
#[tokio::test]
async fn a_gpu_job_left_waiting_is_reported_and_kept() {
    let (ctx, handle) = test_context();
    let (policy, pool, _, job) = gpu_policy_and_job(lookahead_api::policy::NoGpuNodeAction::Wait);
    let mut script = policy_reads(&pool, vec![job.clone()]);
    script.extend([
        expect(
            Method::GET,
            "/api/v1/namespaces/ns/pods",
            unschedulable_pods("2020-01-01T00:00:00Z"),
        ),
        expect(
            Method::POST,
            "/apis/events.k8s.io/v1/namespaces/ns/events",
            event_answer(),
        )
        .check(|e| {
            assert_eq!(e["reason"], "NoGpuNode");
            let note = e["note"].as_str().unwrap_or_default();
            assert!(note.contains("waiting for a GPU node"), "{note}");
        }),
    ]);
    script.extend(router_objects());
    script.push(
        expect(
            Method::PATCH,
            "/apis/lookahead.dev/v1alpha1/namespaces/ns/routingpolicies/rp/status",
            serde_json::to_value(&policy).expect("json"),
        )
        .check(|s| {
            let training = condition(s, "Training");
            assert_eq!(training["reason"], "NoGpuNode");
            let message = training["message"].as_str().unwrap_or_default();
            assert!(
                message.contains("once a GPU node takes it")
                    && message.contains("noGpuNode.action is Wait"),
                "{message}"
            );
        }),
    );
    let action = run(
        crate::policy::reconcile(Arc::new(policy.clone()), ctx.clone()),
        handle,
        script,
    )
    .await;
    assert!(action.is_ok());

    // Already reported (the status says so): no second Event on the next reconcile.
    let (ctx, handle) = test_context();
    let mut reported = policy.clone();
    reported.status = Some(lookahead_api::policy::RoutingPolicyStatus {
        conditions: vec![crate::conditions::condition(
            &[],
            "Training",
            true,
            "NoGpuNode",
            "waiting",
            Some(1),
        )],
        ..Default::default()
    });
    let mut script = policy_reads(&pool, vec![job.clone()]);
    script.push(expect(
        Method::GET,
        "/api/v1/namespaces/ns/pods",
        unschedulable_pods("2020-01-01T00:00:00Z"),
    ));
    script.extend(router_objects());
    script.push(
        expect(
            Method::PATCH,
            "/apis/lookahead.dev/v1alpha1/namespaces/ns/routingpolicies/rp/status",
            serde_json::to_value(&policy).expect("json"),
        )
        .check(|s| assert_eq!(condition(s, "Training")["reason"], "NoGpuNode")),
    );
    let action = run(
        crate::policy::reconcile(Arc::new(reported), ctx),
        handle,
        script,
    )
    .await;
    assert!(action.is_ok());

    // Pending for a few seconds only: training as usual.
    let (ctx, handle) = test_context();
    let just_now = k8s_openapi::jiff::Timestamp::now().to_string();
    let mut script = policy_reads(&pool, vec![job]);
    script.push(expect(
        Method::GET,
        "/api/v1/namespaces/ns/pods",
        unschedulable_pods(&just_now),
    ));
    script.extend(router_objects());
    script.push(
        expect(
            Method::PATCH,
            "/apis/lookahead.dev/v1alpha1/namespaces/ns/routingpolicies/rp/status",
            serde_json::to_value(&policy).expect("json"),
        )
        .check(|s| assert_eq!(condition(s, "Training")["reason"], "MembershipChanged")),
    );
    let action = run(
        crate::policy::reconcile(Arc::new(policy), ctx),
        handle,
        script,
    )
    .await;
    assert!(action.is_ok());
}

/// A training Job finished, but its router did not beat the best single model: the artifact is
/// recorded with its acceptance verdict (read from the train container's termination message),
/// a `BelowBaseline` Warning Event follows `TrainingSucceeded`, the router is rolled to the
/// artifact (it serves the fallback model itself), and `RouterAccepted=False` carries the figures.
#[tokio::test]
async fn a_finished_job_below_the_baseline_sets_router_accepted_false_with_a_warning() {
    let (ctx, handle) = test_context();
    let policy = crate::testdata::policy("rp", Some("yi"));
    let pool = crate::testdata::pool("pool", &["yi", "phi"]);
    let fingerprint = pool.spec.fingerprint();
    let job_name = format!("rp-train-{fingerprint}");
    let finished = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": { "name": job_name, "namespace": "ns",
                      "labels": { "lookahead.dev/artifact-version": fingerprint },
                      "annotations": { "lookahead.dev/fingerprint": fingerprint, "lookahead.dev/members": "yi,phi" } },
        "spec": { "template": { "spec": { "containers": [] } } },
        "status": { "succeeded": 1, "completionTime": "2026-01-01T00:00:00Z",
                    "conditions": [{ "type": "Complete", "status": "True" }] },
    });
    let summary = json!({ "examples": 84, "router": 51.0, "bestSingle": 52.0, "oracle": 70.0,
        "acceptance": { "gain": -0.56, "lowerBound": -5.99, "accepted": false, "fallbackModel": "phi",
                        "minGain": 0.0, "level": 0.95, "resamples": 2000, "examples": 84 } });
    let pods = json!({ "apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [{
        "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "p", "namespace": "ns" },
        "status": { "containerStatuses": [{ "name": "train", "image": "i", "imageID": "", "ready": false,
            "restartCount": 0, "state": { "terminated": { "exitCode": 0, "message": summary.to_string() } } }] } }] });
    let answer = serde_json::to_value(&policy).expect("json");
    let script = vec![
        expect(
            Method::GET,
            "/apis/lookahead.dev/v1alpha1/namespaces/ns/llmpools/pool",
            serde_json::to_value(&pool).expect("json"),
        ),
        expect(
            Method::GET,
            "/api/v1/namespaces/ns/configmaps/routing-data",
            dataset_config_map(),
        ),
        expect(
            Method::GET,
            "/apis/batch/v1/namespaces/ns/jobs",
            json!({ "apiVersion": "batch/v1", "kind": "JobList", "metadata": {}, "items": [finished] }),
        ),
        expect(Method::GET, "/api/v1/namespaces/ns/pods", pods),
        expect(
            Method::POST,
            "/apis/events.k8s.io/v1/namespaces/ns/events",
            event_answer(),
        )
        .check(|e| assert_eq!(e["reason"], "TrainingSucceeded")),
        expect(
            Method::POST,
            "/apis/events.k8s.io/v1/namespaces/ns/events",
            event_answer(),
        )
        .check(|e| {
            assert_eq!(e["reason"], "BelowBaseline");
            assert_eq!(e["type"], "Warning");
            let note = e["note"].as_str().unwrap_or_default();
            assert!(
                note.contains("-0.56")
                    && note.contains("-5.99")
                    && note.contains("every request goes to phi"),
                "{note}"
            );
        }),
        expect(
            Method::PATCH,
            "/api/v1/namespaces/ns/configmaps/rp-router",
            Value::Null,
        )
        .echo()
        .check(|cm| {
            let config: lookahead_api::RouterConfig =
                serde_yaml::from_str(cm["data"]["config.yaml"].as_str().unwrap_or_default())
                    .expect("router config");
            assert_eq!(
                config.policy.method,
                lookahead_api::policy::RouterMethod::LookaheadLite,
                "rolled to the artifact"
            );
        }),
        expect(
            Method::PATCH,
            "/apis/apps/v1/namespaces/ns/deployments/rp-router",
            Value::Null,
        )
        .echo(),
        expect(
            Method::PATCH,
            "/api/v1/namespaces/ns/services/rp-router",
            Value::Null,
        )
        .echo(),
        no_router_autoscaler(),
        expect(
            Method::PATCH,
            "/apis/lookahead.dev/v1alpha1/namespaces/ns/routingpolicies/rp/status",
            answer,
        )
        .check(|s| {
            let accepted = condition(s, "RouterAccepted");
            assert_eq!(accepted["status"], "False");
            assert_eq!(accepted["reason"], "BelowBaseline");
            let message = accepted["message"].as_str().unwrap_or_default();
            assert!(
                message.contains("-0.56") && message.contains("-5.99") && message.contains("phi"),
                "{message}"
            );
            assert_eq!(s["status"]["artifact"]["acceptance"]["accepted"], false);
            assert_eq!(
                s["status"]["artifact"]["acceptance"]["fallbackModel"],
                "phi"
            );
            let ready = condition(s, "Training")["message"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert!(
                ready.contains("not accepted: every routed request goes to phi"),
                "{ready}"
            );
        }),
    ];
    let action = run(
        crate::policy::reconcile(Arc::new(policy), ctx),
        handle,
        script,
    )
    .await;
    assert!(action.is_ok());
}

/// The pool changed again while a Job trained: that Job is deleted (its artifact would be stale)
/// with a `TrainingSuperseded` event and one Job is created for the new pool. The Job that trained
/// the serving artifact stays, even when its status still reads running (a Job controller that
/// has not caught up), and the router keeps serving that artifact meanwhile.
#[tokio::test]
async fn a_job_for_an_older_pool_is_superseded_and_the_serving_one_kept() {
    let (ctx, handle) = test_context();
    let mut policy = crate::testdata::policy("rp", Some("yi"));
    policy.status = Some(lookahead_api::policy::RoutingPolicyStatus {
        artifact: Some(lookahead_api::policy::ArtifactStatus {
            fingerprint: "served".into(),
            version: "served".into(),
            members: vec!["yi".into()],
            trained_at: None,
            labelled_prompts: None,
            validation: Default::default(),
            acceptance: None,
        }),
        ..Default::default()
    });
    let pool = crate::testdata::pool("pool", &["yi", "phi"]);
    let fingerprint = pool.spec.fingerprint();
    let dataset = dataset_config_map();
    let running = |version: &str| {
        json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": { "name": format!("rp-train-{version}"), "namespace": "ns",
                          "labels": { "lookahead.dev/artifact-version": version } },
            "spec": { "template": { "spec": { "containers": [] } } },
            "status": { "active": 1 },
        })
    };
    let jobs = json!({ "apiVersion": "batch/v1", "kind": "JobList", "metadata": {},
                       "items": [running("older"), running("served")] });
    let new_job = format!("rp-train-{fingerprint}");
    let answer = serde_json::to_value(&policy).expect("json");
    let script = vec![
        expect(
            Method::GET,
            "/apis/lookahead.dev/v1alpha1/namespaces/ns/llmpools/pool",
            serde_json::to_value(&pool).expect("json"),
        ),
        expect(
            Method::GET,
            "/api/v1/namespaces/ns/configmaps/routing-data",
            dataset,
        ),
        expect(Method::GET, "/apis/batch/v1/namespaces/ns/jobs", jobs),
        // Only the older Job goes; the one behind the serving artifact is not touched.
        expect(
            Method::DELETE,
            "/apis/batch/v1/namespaces/ns/jobs/rp-train-older",
            running("older"),
        ),
        expect(
            Method::POST,
            "/apis/events.k8s.io/v1/namespaces/ns/events",
            event_answer(),
        )
        .check(|e| assert_eq!(e["reason"], "TrainingSuperseded")),
        expect(
            Method::POST,
            "/apis/batch/v1/namespaces/ns/jobs",
            Value::Null,
        )
        .echo()
        .check(move |j| assert_eq!(j["metadata"]["name"], new_job.as_str())),
        expect(
            Method::POST,
            "/apis/events.k8s.io/v1/namespaces/ns/events",
            event_answer(),
        )
        .check(|e| assert_eq!(e["reason"], "TrainingStarted")),
        expect(
            Method::PATCH,
            "/api/v1/namespaces/ns/configmaps/rp-router",
            Value::Null,
        )
        .echo()
        .check(|cm| {
            let config: lookahead_api::RouterConfig =
                serde_yaml::from_str(cm["data"]["config.yaml"].as_str().unwrap_or_default())
                    .expect("router config");
            assert_eq!(
                config.policy.method,
                lookahead_api::policy::RouterMethod::LookaheadLite,
                "serves the artifact it has"
            );
        }),
        expect(
            Method::PATCH,
            "/apis/apps/v1/namespaces/ns/deployments/rp-router",
            Value::Null,
        )
        .echo(),
        expect(
            Method::PATCH,
            "/api/v1/namespaces/ns/services/rp-router",
            Value::Null,
        )
        .echo(),
        no_router_autoscaler(),
        expect(
            Method::PATCH,
            "/apis/lookahead.dev/v1alpha1/namespaces/ns/routingpolicies/rp/status",
            answer,
        )
        .check(|s| {
            assert_eq!(condition(s, "Training")["status"], "True");
            assert_eq!(s["status"]["artifact"]["version"], "served");
        }),
    ];
    let action = run(
        crate::policy::reconcile(Arc::new(policy), ctx),
        handle,
        script,
    )
    .await;
    assert!(action.is_ok());
}

/// Start-up discovery against an API server that first answers 503 (not reachable yet): the
/// operator retries instead of exiting, then finds autoscaling/v2beta2 (mock API server).
#[tokio::test]
async fn startup_discovery_retries_until_the_api_server_answers() {
    let (ctx, handle) = test_context();
    let groups = json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": [{
        "name": "autoscaling",
        "versions": [{ "groupVersion": "autoscaling/v2beta2", "version": "v2beta2" }],
        "preferredVersion": { "groupVersion": "autoscaling/v2beta2", "version": "v2beta2" },
    }]});
    let resources = json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "autoscaling/v2beta2",
        "resources": [{ "name": "horizontalpodautoscalers", "singularName": "", "namespaced": true,
                        "kind": "HorizontalPodAutoscaler", "verbs": ["create", "delete", "get", "list", "patch"] }] });
    let unavailable = json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure",
                              "message": "the server is starting", "reason": "ServiceUnavailable", "code": 503 });
    let script = vec![
        expect(Method::GET, "/apis", unavailable).status(503),
        expect(Method::GET, "/apis", groups),
        expect(Method::GET, "/apis/autoscaling/v2beta2", resources),
    ];
    let found = run(
        crate::autoscaling::discover_retrying(
            &ctx.client,
            Duration::from_millis(10),
            Duration::from_secs(2),
        ),
        handle,
        script,
    )
    .await
    .expect("discovered after one retry");
    assert_eq!(found.api_version, "autoscaling/v2beta2");
    assert_eq!(found.plural, "horizontalpodautoscalers");
}
