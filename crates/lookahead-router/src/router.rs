//! The OpenAI-compatible front: validation, authentication, the routing decision, dispatch with
//! retries on the next-best member, outlier ejection, response headers and metrics.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use lookahead_api::policy::RouterMethod;
use lookahead_api::RouterConfig;
use serde_json::{json, Value};
use tokio::time::Instant;
use tracing::Instrument;

use crate::auth::ApiKeys;
use crate::body::{full, json_response, RespBody};
use crate::grpc::GrpcScorer;
use crate::metrics::RouterMetrics;
use crate::openai::{self, CompletionRequest, Endpoint};
use crate::outlier::{FailureEffect, OutlierDetector, OutlierPolicy};
use crate::scoring::{load_slot, spawn_reloader, Decision, RankedMember, Ranker, ScoreSource};
use crate::upstream::{join_url, Answer, AttemptError, Upstream};
use crate::{ApiError, HttpHandler, RouterError, ScorerLoader};

pub const HEADER_MODEL: HeaderName = HeaderName::from_static("x-lookahead-model");
pub const HEADER_SCORES: HeaderName = HeaderName::from_static("x-lookahead-scores");
pub const HEADER_FALLBACK: HeaderName = HeaderName::from_static("x-lookahead-fallback");
pub const HEADER_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest a client may take to send a request body (slow-body protection).
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// One pool member with its resolved URLs.
#[derive(Debug, Clone)]
struct Member {
    name: String,
    model_id: String,
    chat_url: Uri,
    completions_url: Uri,
}

impl Member {
    fn url(&self, endpoint: Endpoint) -> &Uri {
        match endpoint {
            Endpoint::Chat => &self.chat_url,
            Endpoint::Completions => &self.completions_url,
        }
    }
}

/// The router. Build it with [`Router::from_config`] (or [`Router::new`] with a score source of
/// your own), then [`crate::serve`] it.
pub struct Router {
    members: Vec<Member>,
    alias: String,
    ranker: Ranker,
    upstream: Upstream,
    outlier: OutlierDetector,
    metrics: RouterMetrics,
    keys: ApiKeys,
    retries: u32,
    request_timeout: Duration,
    first_token_timeout: Duration,
    max_body_bytes: u64,
    draining: AtomicBool,
    request_seq: AtomicU64,
    reloader: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Router {
    fn drop(&mut self) {
        if let Some(r) = &self.reloader {
            r.abort();
        }
    }
}

/// Where a request goes: scored across the pool, or to one named member.
enum Target {
    Routed,
    Member(usize),
}

impl Router {
    /// Builds the router from its configuration. Trained methods score in-process with `loader`
    /// (hot-reloading the artifact directory) unless `policy.scorer` names a sidecar.
    pub fn from_config(
        config: &RouterConfig,
        loader: Option<ScorerLoader>,
    ) -> Result<Self, RouterError> {
        config.validate()?;
        let policy = &config.policy;
        let mut reloader = None;
        let source = match (policy.method, &policy.scorer) {
            (RouterMethod::Random, _) => ScoreSource::Random,
            (RouterMethod::Fixed, _) => ScoreSource::Fixed,
            (_, Some(addr)) => ScoreSource::Grpc(
                GrpcScorer::new(addr, Duration::from_secs(1))
                    .map_err(|e| RouterError::Scorer(e.to_string()))?,
            ),
            (_, None) => {
                let dir = policy
                    .artifact
                    .clone()
                    .ok_or_else(|| RouterError::Scorer("policy.artifact is required".into()))?;
                let loader = loader.ok_or_else(|| {
                    RouterError::Scorer("in-process scoring needs a scorer loader".into())
                })?;
                let slot = Arc::new(load_slot(&dir, &loader).map_err(RouterError::Scorer)?);
                reloader = Some(spawn_reloader(
                    slot.clone(),
                    dir,
                    loader,
                    Duration::from_secs(2),
                ));
                ScoreSource::InProcess(slot)
            }
        };
        let mut router = Self::new(config, source)?;
        router.reloader = reloader;
        Ok(router)
    }

    /// Builds the router with an explicit score source.
    pub fn new(config: &RouterConfig, source: ScoreSource) -> Result<Self, RouterError> {
        config.validate()?;
        let policy = &config.policy;
        let members = config
            .members
            .iter()
            .map(|m| {
                let url = |path| {
                    join_url(&m.base_url, path).map_err(|reason| RouterError::BaseUrl {
                        member: m.name.clone(),
                        url: m.base_url.clone(),
                        reason,
                    })
                };
                Ok(Member {
                    name: m.name.clone(),
                    model_id: m.model_id.clone(),
                    chat_url: url(Endpoint::Chat.upstream_path())?,
                    completions_url: url(Endpoint::Completions.upstream_path())?,
                })
            })
            .collect::<Result<Vec<_>, RouterError>>()?;
        let default_member = policy
            .default_model
            .as_ref()
            .and_then(|d| members.iter().position(|m| &m.name == d))
            .unwrap_or(0);
        let ranker = Ranker {
            source,
            members: config
                .members
                .iter()
                .map(|m| RankedMember {
                    name: m.name.clone(),
                    model_id: m.model_id.clone(),
                    price: (m.price.input_per_m_tok + m.price.output_per_m_tok) / 2.0,
                })
                .collect(),
            cost_weight: policy.cost_weight,
            default_member,
            timeout: policy.score_timeout,
        };
        let keys = match &policy.api_keys_file {
            Some(p) => ApiKeys::from_file(p)?,
            None => ApiKeys::default(),
        };
        Ok(Self {
            outlier: OutlierDetector::new(members.len(), OutlierPolicy::default()),
            members,
            alias: policy.alias.clone(),
            ranker,
            upstream: Upstream::default(),
            metrics: RouterMetrics::default(),
            keys,
            retries: policy.retries,
            request_timeout: policy.request_timeout,
            first_token_timeout: policy.first_token_timeout,
            max_body_bytes: policy.max_body_bytes,
            draining: AtomicBool::new(false),
            request_seq: AtomicU64::new(0),
            reloader: None,
        })
    }

    /// Replaces the outlier-ejection thresholds (tests and tuning).
    pub fn with_outlier_policy(mut self, policy: OutlierPolicy) -> Self {
        self.outlier = OutlierDetector::new(self.members.len(), policy);
        self
    }

    pub fn metrics(&self) -> &RouterMetrics {
        &self.metrics
    }

    /// The Prometheus exposition text.
    pub fn render_metrics(&self) -> String {
        let ejected: Vec<(&str, bool)> = self
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| (m.name.as_str(), self.outlier.is_ejected(i)))
            .collect();
        self.metrics.render(&ejected)
    }

    fn known_models(&self) -> String {
        let mut names = vec![self.alias.as_str()];
        names.extend(self.members.iter().map(|m| m.name.as_str()));
        names.join(", ")
    }

    fn resolve(&self, model: &str) -> Option<Target> {
        if model == self.alias {
            return Some(Target::Routed);
        }
        self.members
            .iter()
            .position(|m| m.name == model)
            .or_else(|| self.members.iter().position(|m| m.model_id == model))
            .map(Target::Member)
    }

    fn reject(&self, e: ApiError) -> http::Response<RespBody> {
        self.metrics.rejected.inc(&[e.code]);
        self.metrics.requests.inc(&["none", "rejected"]);
        e.into_response()
    }

    async fn route(self: Arc<Self>, req: http::Request<Incoming>) -> http::Response<RespBody> {
        let path = req.uri().path();
        let endpoint = match path {
            "/healthz" => return json_response(StatusCode::OK, &json!({"status": "ok"})),
            "/readyz" => return self.readyz(),
            "/metrics" => {
                let mut r = http::Response::new(full(self.render_metrics()));
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                return r;
            }
            "/v1/models" | "/models" => {
                if req.method() != Method::GET {
                    return self.reject(ApiError::method_not_allowed(req.method(), "GET"));
                }
                if !self.keys.is_empty() && !self.keys.accepts(req.headers()) {
                    return self.reject(ApiError::unauthorized());
                }
                return self.list_models();
            }
            "/v1/chat/completions" | "/chat/completions" => Endpoint::Chat,
            "/v1/completions" | "/completions" => Endpoint::Completions,
            _ => return self.reject(ApiError::path_not_found(path)),
        };
        if req.method() != Method::POST {
            return self.reject(ApiError::method_not_allowed(req.method(), "POST"));
        }
        self.completion(endpoint, req).await
    }

    fn readyz(&self) -> http::Response<RespBody> {
        if self.draining.load(Ordering::Relaxed) {
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"status": "draining"}),
            )
        } else {
            json_response(StatusCode::OK, &json!({"status": "ready"}))
        }
    }

    fn list_models(&self) -> http::Response<RespBody> {
        let mut data = vec![
            json!({"id": self.alias, "object": "model", "created": 0, "owned_by": "lookahead"}),
        ];
        data.extend(self.members.iter().map(|m| {
            json!({"id": m.name, "object": "model", "created": 0, "owned_by": "lookahead", "root": m.model_id})
        }));
        json_response(StatusCode::OK, &json!({"object": "list", "data": data}))
    }

    async fn read_body(
        &self,
        req: http::Request<Incoming>,
    ) -> Result<(HeaderMap, Bytes), ApiError> {
        let (parts, body) = req.into_parts();
        if !self.keys.is_empty() && !self.keys.accepts(&parts.headers) {
            return Err(ApiError::unauthorized());
        }
        let json_type = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !json_type {
            return Err(ApiError::unsupported_media_type());
        }
        let declared = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body_bytes) {
            return Err(ApiError::payload_too_large(self.max_body_bytes));
        }
        let limit = usize::try_from(self.max_body_bytes).unwrap_or(usize::MAX);
        let collected =
            tokio::time::timeout(BODY_READ_TIMEOUT, Limited::new(body, limit).collect()).await;
        match collected {
            Err(_) => Err(ApiError::body_timeout()),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                Err(ApiError::payload_too_large(self.max_body_bytes))
            }
            Ok(Err(e)) => Err(ApiError::bad_request(
                "invalid_body",
                format!("Could not read the request body: {e}"),
            )),
            Ok(Ok(c)) => Ok((parts.headers, c.to_bytes())),
        }
    }

    async fn completion(
        self: Arc<Self>,
        endpoint: Endpoint,
        req: http::Request<Incoming>,
    ) -> http::Response<RespBody> {
        let (client_headers, bytes) = match self.read_body(req).await {
            Ok(b) => b,
            Err(e) => return self.reject(e),
        };
        let request = match openai::parse(endpoint, &bytes) {
            Ok(r) => r,
            Err(e) => return self.reject(e),
        };
        let target = match self.resolve(&request.model) {
            Some(t) => t,
            None => {
                return self.reject(ApiError::model_not_found(
                    &request.model,
                    &self.known_models(),
                ))
            }
        };
        let span = tracing::Span::current();
        span.record("endpoint", endpoint.label());
        span.record("stream", request.stream);
        let decision = match target {
            Target::Member(i) => Decision {
                order: vec![i],
                utility: vec![None; self.members.len()],
                fail_open: None,
            },
            Target::Routed => {
                let t0 = Instant::now();
                let d = self.ranker.decide(&request.prompt).await;
                self.metrics.decision.observe(&[], t0.elapsed());
                if let Some(reason) = d.fail_open {
                    self.metrics.fail_opens.inc(&[reason]);
                    tracing::warn!(reason, "routing failed open to the default model");
                }
                d
            }
        };
        let attempts = self.attempt_order(&decision, matches!(target, Target::Member(_)));
        self.dispatch(endpoint, request, &client_headers, decision, attempts)
            .await
    }

    /// Members to try, in order: the decision's ranking without ejected members (unless every
    /// member is ejected: then all of them, ejection is advice, not a reason to fail), at most
    /// `1 + retries` attempts. A named member is tried alone, `1 + retries` times.
    fn attempt_order(&self, decision: &Decision, pinned: bool) -> Vec<usize> {
        let n = 1 + self.retries as usize;
        if pinned {
            return std::iter::repeat_n(decision.order[0], n).collect();
        }
        let now = std::time::Instant::now();
        let healthy: Vec<usize> = decision
            .order
            .iter()
            .copied()
            .filter(|&i| self.outlier.is_available(i, now))
            .collect();
        let mut order = if healthy.is_empty() {
            decision.order.clone()
        } else {
            healthy
        };
        order.truncate(n);
        order
    }

    fn upstream_headers(&self, client: &HeaderMap, request_id: &HeaderValue) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(a) = client.get(http::header::ACCEPT) {
            h.insert(http::header::ACCEPT, a.clone());
        }
        // Without router keys, the client's credentials are meant for the member.
        if self.keys.is_empty() {
            if let Some(a) = client.get(http::header::AUTHORIZATION) {
                h.insert(http::header::AUTHORIZATION, a.clone());
            }
        }
        h.insert(HEADER_REQUEST_ID, request_id.clone());
        h
    }

    async fn dispatch(
        self: Arc<Self>,
        endpoint: Endpoint,
        mut request: CompletionRequest,
        client_headers: &HeaderMap,
        decision: Decision,
        attempts: Vec<usize>,
    ) -> http::Response<RespBody> {
        let start = Instant::now();
        let deadline = start + self.request_timeout;
        let request_id = client_headers
            .get(HEADER_REQUEST_ID)
            .filter(|v| v.len() <= 128)
            .cloned()
            .unwrap_or_else(|| {
                let n = self.request_seq.fetch_add(1, Ordering::Relaxed);
                HeaderValue::from_str(&format!("lka-{n:x}"))
                    .unwrap_or(HeaderValue::from_static("lka"))
            });
        let headers = self.upstream_headers(client_headers, &request_id);
        let mut failures: Vec<String> = Vec::new();
        let mut last_error = None;
        for &i in &attempts {
            let member = &self.members[i];
            request
                .body
                .insert("model".into(), Value::String(member.model_id.clone()));
            let body = match serde_json::to_vec(&request.body) {
                Ok(b) => Bytes::from(b),
                Err(e) => return self.reject(ApiError::bad_request("invalid_json", e.to_string())),
            };
            let t0 = Instant::now();
            let result = if request.stream {
                let first = (t0 + self.first_token_timeout).min(deadline);
                let me = self.clone();
                let on_end = Box::new(move |ok: bool| {
                    if !ok {
                        me.metrics.stream_errors.inc(&[me.members[i].name.as_str()]);
                    }
                });
                self.upstream
                    .streamed(
                        member.url(endpoint),
                        body,
                        &headers,
                        first,
                        deadline,
                        on_end,
                    )
                    .await
            } else {
                self.upstream
                    .buffered(member.url(endpoint), body, &headers, deadline)
                    .await
            };
            self.metrics
                .upstream
                .observe(&[member.name.as_str()], t0.elapsed());
            match result {
                Ok(answer) => {
                    self.outlier.record_success(i, std::time::Instant::now());
                    let outcome = if answer.status.is_success() {
                        "ok"
                    } else {
                        "upstream_client_error"
                    };
                    self.metrics.requests.inc(&[member.name.as_str(), outcome]);
                    tracing::Span::current().record("member", member.name.as_str());
                    tracing::Span::current().record("status", answer.status.as_u16());
                    return self.respond(answer, i, &decision, &failures, request_id);
                }
                Err(e) => {
                    let reason = e.label();
                    tracing::warn!(member = %member.name, %reason, "upstream attempt failed");
                    self.metrics
                        .fallbacks
                        .inc(&[member.name.as_str(), reason.as_str()]);
                    if e.counts_against_member() {
                        if let FailureEffect::Ejected(d) =
                            self.outlier.record_failure(i, std::time::Instant::now())
                        {
                            tracing::warn!(member = %member.name, ejected_for = ?d, "member ejected");
                            self.metrics.ejections.inc(&[member.name.as_str()]);
                        }
                    }
                    failures.push(format!("{}:{reason}", member.name));
                    last_error = Some(e);
                    if Instant::now() >= deadline {
                        break;
                    }
                }
            }
        }
        let last = attempts
            .last()
            .map(|&i| self.members[i].name.as_str())
            .unwrap_or("none");
        self.metrics.requests.inc(&[last, "failed"]);
        let message = format!("No pool member could answer ({}).", failures.join(", "));
        let err = match last_error {
            Some(AttemptError::Timeout) => ApiError::upstream_timeout(message),
            _ => ApiError::upstream_failed(message),
        };
        let mut resp = err.into_response();
        if let Ok(v) = HeaderValue::from_str(&failures.join(",")) {
            resp.headers_mut().insert(HEADER_FALLBACK, v);
        }
        resp.headers_mut().insert(HEADER_REQUEST_ID, request_id);
        resp
    }

    fn respond(
        &self,
        answer: Answer,
        chosen: usize,
        decision: &Decision,
        failures: &[String],
        request_id: HeaderValue,
    ) -> http::Response<RespBody> {
        let mut resp = http::Response::new(answer.body);
        *resp.status_mut() = answer.status;
        let h = resp.headers_mut();
        if let Some(ct) = answer.content_type {
            if ct.as_bytes().starts_with(b"text/event-stream") {
                h.insert(
                    http::header::CACHE_CONTROL,
                    HeaderValue::from_static("no-cache"),
                );
            }
            h.insert(http::header::CONTENT_TYPE, ct);
        }
        if let Ok(v) = HeaderValue::from_str(&self.members[chosen].name) {
            h.insert(HEADER_MODEL, v);
        }
        let scores = self.compact_scores(decision);
        if !scores.is_empty() {
            if let Ok(v) = HeaderValue::from_str(&scores) {
                h.insert(HEADER_SCORES, v);
            }
        }
        let mut fallback: Vec<String> = Vec::new();
        if let Some(reason) = decision.fail_open {
            fallback.push(reason.to_string());
        }
        fallback.extend(failures.iter().cloned());
        if !fallback.is_empty() {
            if let Ok(v) = HeaderValue::from_str(&fallback.join(",")) {
                h.insert(HEADER_FALLBACK, v);
            }
        }
        h.insert(HEADER_REQUEST_ID, request_id);
        resp
    }

    /// `name=utility` for scored members, best first, three decimals.
    fn compact_scores(&self, d: &Decision) -> String {
        d.order
            .iter()
            .filter_map(|&i| {
                d.utility
                    .get(i)
                    .copied()
                    .flatten()
                    .map(|u| format!("{}={u:.3}", self.members[i].name))
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

struct InFlight<'a>(&'a RouterMetrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl HttpHandler for Router {
    fn handle(
        self: Arc<Self>,
        req: http::Request<Incoming>,
    ) -> Pin<Box<dyn Future<Output = http::Response<RespBody>> + Send>> {
        let span = tracing::info_span!(
            "request",
            method = %req.method(),
            path = %req.uri().path(),
            endpoint = tracing::field::Empty,
            stream = tracing::field::Empty,
            member = tracing::field::Empty,
            status = tracing::field::Empty,
        );
        Box::pin(
            async move {
                self.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
                let _guard = InFlight(&self.metrics);
                self.clone().route(req).await
            }
            .instrument(span),
        )
    }

    fn on_shutdown(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }
}
