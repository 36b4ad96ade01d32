//! The OpenAI-compatible front, assembled from its stages: [`crate::ingest`] (auth, limits,
//! parse), [`crate::decide`] (resolve, rank, attempt order), [`crate::dispatch`] (attempts with
//! retries and outlier ejection) and [`crate::respond`] (decision headers). This module holds the
//! router's state, the path table and the plumbing between the stages.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use hyper::body::Incoming;
use lookahead_api::policy::RouterMethod;
use lookahead_api::RouterConfig;
use serde_json::json;
use tracing::Instrument;

use crate::acceptance::AcceptanceGate;
use crate::auth::{ApiKeys, KeySource, RELOAD_INTERVAL};
use crate::body::{full, json_response, RespBody};
use crate::cost::CostProfiles;
use crate::decide::{Attempts, Decider, Plan};
use crate::demand::{Demand, DemandCollector, COLD_PROBE_INTERVAL};
use crate::dispatch::{cold_label, Call, Dispatcher, Outcome};
use crate::grpc::GrpcScorer;
use crate::ingest::{Admitted, Gate};
use crate::limits::Limiter;
use crate::metrics::RouterMetrics;
use crate::openai::Endpoint;
use crate::outlier::{OutlierDetector, OutlierPolicy};
use crate::pool::{Pool, Target};
use crate::respond;
use crate::scoring::{load_slot, spawn_reloader, Decision, RankedMember, Ranker, ScoreSource};
use crate::upstream::Upstream;
use crate::usage::Metering;
use crate::{ApiError, RouterError, ScorerLoader};

pub use crate::respond::{HEADER_FALLBACK, HEADER_MODEL, HEADER_REQUEST_ID, HEADER_SCORES};

/// The router. Build it with [`Router::from_config`] (or [`Router::new`] with a score source of
/// your own), then [`crate::serve`] it.
pub struct Router {
    pool: Pool,
    gate: Gate,
    ranker: Ranker,
    /// The costWeight of each routed request: profiles and the override header.
    cost: CostProfiles,
    dispatcher: Dispatcher,
    retries: u32,
    /// Longest a request waits while no member has a ready replica.
    cold_start_timeout: Duration,
    /// The pool the members come from (reported at `/demand`).
    pool_name: Option<String>,
    metrics: Arc<RouterMetrics>,
    draining: AtomicBool,
    request_seq: AtomicU64,
    reloader: Option<tokio::task::JoinHandle<()>>,
    /// Each member's price (by pool index), for spend.
    prices: Arc<[lookahead_api::pool::Price]>,
    /// Re-reads the API keys ([`crate::auth`]).
    keys_reloader: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Router {
    fn drop(&mut self) {
        for r in [&self.reloader, &self.keys_reloader].into_iter().flatten() {
            r.abort();
        }
    }
}

/// What a path serves.
enum Route {
    Health,
    Ready,
    Metrics,
    Demand,
    Models,
    Completion(Endpoint),
    Unknown,
}

impl Route {
    fn of(path: &str) -> Self {
        match path {
            "/healthz" => Route::Health,
            "/readyz" => Route::Ready,
            "/metrics" => Route::Metrics,
            "/demand" => Route::Demand,
            "/v1/models" | "/models" => Route::Models,
            "/v1/chat/completions" | "/chat/completions" => Route::Completion(Endpoint::Chat),
            "/v1/completions" | "/completions" => Route::Completion(Endpoint::Completions),
            "/v1/responses" | "/responses" => Route::Completion(Endpoint::Responses),
            "/v1/embeddings" | "/embeddings" => Route::Completion(Endpoint::Embeddings),
            _ => Route::Unknown,
        }
    }
}

impl Router {
    /// Builds the router from its configuration. Trained methods score in-process with `loader`
    /// (hot-reloading the artifact directory) unless `policy.scorer` names a sidecar; either way
    /// the artifact's acceptance verdict (`router.json`) is read at load ([`crate::acceptance`]).
    pub fn from_config(
        config: &RouterConfig,
        loader: Option<ScorerLoader>,
    ) -> Result<Self, RouterError> {
        config.validate()?;
        let policy = &config.policy;
        let gate = Arc::new(AcceptanceGate::new(config, default_member(config)));
        let mut reloader = None;
        let source = match (policy.method, &policy.scorer) {
            (RouterMethod::Random, _) => ScoreSource::Random,
            (RouterMethod::Fixed, _) => ScoreSource::Fixed,
            (_, Some(addr)) => {
                // The sidecar serves the artifact; the router rolls when its directory changes.
                if let Some(dir) = &policy.artifact {
                    gate.apply_dir(dir)
                        .map_err(|e| RouterError::Scorer(e.to_string()))?;
                }
                ScoreSource::Grpc(
                    GrpcScorer::new(addr, Duration::from_secs(1))
                        .map_err(|e| RouterError::Scorer(e.to_string()))?,
                )
            }
            (_, None) => {
                let dir = policy
                    .artifact
                    .clone()
                    .ok_or_else(|| RouterError::Scorer("policy.artifact is required".into()))?;
                let loader = loader.ok_or_else(|| {
                    RouterError::Scorer("in-process scoring needs a scorer loader".into())
                })?;
                let loader = gate.clone().guard(loader);
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
        let mut router = Self::gated(config, source, gate)?;
        router.reloader = reloader;
        Ok(router)
    }

    /// Builds the router with an explicit score source (every artifact accepted).
    pub fn new(config: &RouterConfig, source: ScoreSource) -> Result<Self, RouterError> {
        let gate = Arc::new(AcceptanceGate::new(config, default_member(config)));
        Self::gated(config, source, gate)
    }

    /// Builds the router with an explicit score source behind acceptance gate `gate`.
    fn gated(
        config: &RouterConfig,
        source: ScoreSource,
        gate: Arc<AcceptanceGate>,
    ) -> Result<Self, RouterError> {
        config.validate()?;
        let policy = &config.policy;
        let pool = Pool::from_config(config)?;
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
            default_member: default_member(config),
            timeout: policy.score_timeout,
            gate,
        };
        let demand = Arc::new(Demand::new(pool.len(), COLD_PROBE_INTERVAL));
        let names: Vec<Arc<str>> = pool.members.iter().map(|m| m.name.clone()).collect();
        let mut metrics = RouterMetrics::new(&names);
        metrics.register_collector(DemandCollector::new(names.clone(), demand.clone()));
        metrics.register_collector(ranker.gate.clone());
        let cost = CostProfiles::from_policy(policy);
        cost.register(&mut metrics);
        let metrics = Arc::new(metrics);
        let (keys, limiter) = tenants(config)?;
        let keys_reloader = keys
            .authenticates()
            .then(|| spawn_keys_reloader(&keys, RELOAD_INTERVAL))
            .flatten();
        // TLS only when a member needs it: plain-http pools read no certificates.
        let upstream = if pool.any_https() {
            Upstream::with_tls(config.tls.ca_bundle_file.as_deref())?
        } else {
            Upstream::default()
        };
        Ok(Self {
            dispatcher: Dispatcher {
                upstream,
                outlier: OutlierDetector::new(pool.len(), OutlierPolicy::default()),
                demand,
                request_timeout: policy.request_timeout,
                first_token_timeout: policy.first_token_timeout,
            },
            pool,
            gate: Gate {
                keys,
                limiter,
                max_body_bytes: policy.max_body_bytes,
            },
            ranker,
            cost,
            retries: policy.retries,
            cold_start_timeout: policy.cold_start_timeout,
            pool_name: config.pool.clone(),
            metrics,
            draining: AtomicBool::new(false),
            request_seq: AtomicU64::new(0),
            reloader: None,
            prices: config.members.iter().map(|m| m.price.clone()).collect(),
            keys_reloader,
        })
    }

    /// Re-reads the API keys every `interval` instead of every [`RELOAD_INTERVAL`] (tests).
    pub fn with_keys_reload_interval(mut self, interval: Duration) -> Self {
        if let Some(r) = self.keys_reloader.take() {
            r.abort();
            self.keys_reloader = spawn_keys_reloader(&self.gate.keys, interval);
        }
        self
    }

    /// Replaces the outlier-ejection thresholds (tests and tuning).
    pub fn with_outlier_policy(mut self, policy: OutlierPolicy) -> Self {
        self.dispatcher.outlier = OutlierDetector::new(self.pool.len(), policy);
        self
    }

    /// The Prometheus exposition text.
    pub fn render_metrics(&self) -> String {
        let ejected: Vec<(&Arc<str>, bool)> = self
            .pool
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| (&m.name, self.dispatcher.outlier.is_ejected(i)))
            .collect();
        self.metrics.render(&ejected)
    }

    /// What each member is asked for through this replica (`/demand`, read by the operator).
    pub fn demand_report(&self) -> lookahead_api::demand::DemandReport {
        let names: Vec<&str> = self.pool.members.iter().map(|m| &*m.name).collect();
        self.dispatcher
            .demand
            .report(&names, self.pool_name.as_deref(), self.metrics.in_flight())
    }

    fn reject(&self, e: ApiError) -> http::Response<RespBody> {
        self.metrics.rejected(e.code);
        e.into_response()
    }

    /// The path table: operational endpoints answer here, completions go through the stages.
    async fn route(&self, req: http::Request<Incoming>) -> http::Response<RespBody> {
        match Route::of(req.uri().path()) {
            Route::Health => json_response(StatusCode::OK, &json!({"status": "ok"})),
            Route::Ready => self.readyz(),
            Route::Metrics => {
                let mut r = http::Response::new(full(self.render_metrics()));
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
                );
                r
            }
            Route::Demand => match serde_json::to_value(self.demand_report()) {
                Ok(v) => json_response(StatusCode::OK, &v),
                Err(e) => ApiError::unavailable(e.to_string()).into_response(),
            },
            Route::Models if req.method() != Method::GET => {
                self.reject(ApiError::method_not_allowed(req.method(), "GET"))
            }
            Route::Models => match self.gate.authorize(req.headers()) {
                Ok(_) => self.pool.list_models(),
                Err(e) => self.reject(e),
            },
            Route::Completion(_) if req.method() != Method::POST => {
                self.reject(ApiError::method_not_allowed(req.method(), "POST"))
            }
            Route::Completion(endpoint) => self.completion(endpoint, req).await,
            Route::Unknown => self.reject(ApiError::path_not_found(req.uri().path())),
        }
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

    /// A completion through the stages: admit, decide, dispatch, respond.
    async fn completion(
        &self,
        endpoint: Endpoint,
        req: http::Request<Incoming>,
    ) -> http::Response<RespBody> {
        let Admitted { head, request, key } = match self.gate.admit(endpoint, req).await {
            Ok(a) => a,
            Err(e) => return self.reject(e),
        };
        if let Err(refusal) = self.gate.limiter.admit(&key, Instant::now()) {
            self.metrics.rate_limited(&key, refusal.limit.label());
            return self.reject(ApiError::rate_limited(&key, &refusal));
        }
        let metering = Metering::new(
            self.metrics.key_series(&key),
            &self.gate.limiter,
            &self.prices,
            &request,
        );
        let span = tracing::Span::current();
        span.record("endpoint", endpoint.label());
        span.record("stream", request.stream);
        let planned = self.decider().plan(&request, &head.headers).await;
        let plan = match planned {
            Ok(p) => p,
            Err(e) => return self.reject(e),
        };
        let cost = plan.cost;
        let request_id = self.request_id(&head.headers);
        let call = Call {
            endpoint,
            request: &request,
            client_headers: &head.headers,
            request_id: &request_id,
            // The client's Authorization is the router's own key when it authenticates.
            forward_auth: !self.gate.keys.authenticates(),
            metering: &metering,
        };
        record_decision(&span, &self.pool, &plan.decision);
        let mut tried = 0;
        let mut resp = self.serve_plan(plan, call, &mut tried).await;
        span.record("attempts", tried);
        if let Some(cost) = cost {
            span.record("profile", cost.profile());
            span.record("cost_weight", cost.weight);
            cost.insert_headers(resp.headers_mut());
        }
        resp
    }

    fn decider(&self) -> Decider<'_> {
        Decider {
            pool: &self.pool,
            ranker: &self.ranker,
            outlier: &self.dispatcher.outlier,
            demand: &self.dispatcher.demand,
            metrics: &self.metrics,
            retries: self.retries,
            cost: &self.cost,
        }
    }

    /// Dispatches along the plan. While no planned member has a ready replica the request waits
    /// (re-trying cold members as their probes fall due) up to `coldStartTimeout`, then gets 503
    /// with `Retry-After`. A request whose best-ranked member is cold counts as wanted demand
    /// for it once, which is what wakes a member scaled to zero. `tried` counts the attempts sent.
    async fn serve_plan(
        &self,
        plan: Plan<'_>,
        call: Call<'_>,
        tried: &mut usize,
    ) -> http::Response<RespBody> {
        let Plan {
            target,
            decision,
            mut attempts,
            ..
        } = plan;
        let best = decision.order.first().copied();
        let demand = &self.dispatcher.demand;
        let hold_until = Instant::now() + self.cold_start_timeout;
        let mut passed_over: Vec<String> = Vec::new();
        let mut wanted = false;
        loop {
            self.note_cold(&attempts, best, &mut wanted, &mut passed_over);
            if !attempts.order.is_empty() {
                let outcome = self
                    .dispatcher
                    .dispatch(&self.pool, &self.metrics, &call, &attempts.order)
                    .await;
                *tried += attempts_sent(&outcome);
                wanted |= self.count_wanted(best, wanted, &outcome);
                match outcome {
                    Outcome::Delivered {
                        answer,
                        chosen,
                        failures,
                    } => {
                        merge_labels(&mut passed_over, failures);
                        let request_id = call.request_id.clone();
                        return respond::answered(
                            &self.pool,
                            answer,
                            chosen,
                            &decision,
                            &passed_over,
                            request_id,
                        );
                    }
                    Outcome::Exhausted {
                        failures,
                        last_error,
                        all_cold,
                    } if !all_cold || Instant::now() >= hold_until => {
                        merge_labels(&mut passed_over, failures);
                        let request_id = call.request_id.clone();
                        return respond::exhausted(&passed_over, last_error, request_id);
                    }
                    Outcome::Exhausted { failures, .. } => merge_labels(&mut passed_over, failures),
                    Outcome::Rejected(e) => return self.reject(e),
                }
            }
            let now = Instant::now();
            if now >= hold_until {
                self.metrics.unanswered("no_ready_member");
                return respond::no_ready_member(&passed_over, call.request_id.clone());
            }
            let wake = demand.next_probe(now).max(now + Duration::from_millis(20));
            tokio::time::sleep_until(wake.min(hold_until).into()).await;
            attempts = self
                .decider()
                .attempt_order(&decision, matches!(target, Target::Member(_)));
        }
    }

    /// Counts the wanted request when the best-ranked member turned out to be cold on dispatch.
    fn count_wanted(&self, best: Option<usize>, counted: bool, outcome: &Outcome) -> bool {
        let Some(b) = best else { return false };
        let answered_by_best = matches!(outcome, Outcome::Delivered { chosen, .. } if *chosen == b);
        if counted || answered_by_best || !self.dispatcher.demand.is_cold(b) {
            return false;
        }
        self.dispatcher.demand.want(b);
        true
    }

    /// Members passed over for being cold: named in the fallback header; the best-ranked one
    /// counted as wanted (once per request).
    fn note_cold(
        &self,
        attempts: &Attempts,
        best: Option<usize>,
        wanted: &mut bool,
        passed_over: &mut Vec<String>,
    ) {
        for &i in &attempts.cold {
            merge_labels(passed_over, [cold_label(&self.pool.members[i].name)]);
        }
        if let Some(b) = best.filter(|b| !*wanted && attempts.cold.contains(b)) {
            self.dispatcher.demand.want(b);
            *wanted = true;
        }
    }

    /// The client's `x-request-id` when it is short enough, else a fresh `lka-<n>`.
    fn request_id(&self, headers: &http::HeaderMap) -> HeaderValue {
        if let Some(id) = headers.get(HEADER_REQUEST_ID).filter(|v| v.len() <= 128) {
            return id.clone();
        }
        let n = self.request_seq.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_maybe_shared(Bytes::from(format!("lka-{n:x}")))
            .unwrap_or(HeaderValue::from_static("lka"))
    }
}

/// How many requests went to members in one dispatch: one per failure, plus the one answered.
fn attempts_sent(outcome: &Outcome) -> usize {
    match outcome {
        Outcome::Delivered { failures, .. } => failures.len() + 1,
        Outcome::Exhausted { failures, .. } => failures.len(),
        Outcome::Rejected(_) => 0,
    }
}

/// The decision on the request span (exported with the trace, printed by JSON logs): the best
/// three scores, as in `x-lookahead-scores`.
fn record_decision(span: &tracing::Span, pool: &Pool, decision: &Decision) {
    // Nothing records a disabled span's fields: do not format them.
    if span.is_disabled() {
        return;
    }
    if let Some(scores) = respond::top_scores(pool, decision, 3) {
        span.record("scores", scores);
    }
}

/// The answer on the request span: its status (an OpenTelemetry error status for 5xx) and the
/// fallbacks the client is told of in `x-lookahead-fallback`.
fn record_answer(span: &tracing::Span, resp: &http::Response<RespBody>) {
    span.record("status", resp.status().as_u16());
    if resp.status().is_server_error() {
        span.record("otel.status_code", "error");
    }
    if let Some(f) = resp
        .headers()
        .get(HEADER_FALLBACK)
        .and_then(|v| v.to_str().ok())
    {
        span.record("fallback", f);
    }
}

/// Appends each label not already in `labels` (a member named once in the fallback header).
fn merge_labels(labels: &mut Vec<String>, new: impl IntoIterator<Item = String>) {
    for l in new {
        if !labels.contains(&l) {
            labels.push(l);
        }
    }
}

/// The tenants: the API keys (the keys file, or `auth.keysDir`; none: an open router) and the
/// per-key limits.
fn tenants(config: &RouterConfig) -> Result<(Arc<ApiKeys>, Arc<Limiter>), RouterError> {
    let policy = &config.policy;
    let dir = policy.auth.as_ref().and_then(|a| a.keys_dir.clone());
    let keys = match (&policy.api_keys_file, dir) {
        (Some(file), _) => ApiKeys::load(KeySource::File(file.clone()))?,
        (None, Some(dir)) => ApiKeys::load(KeySource::Dir(dir))?,
        (None, None) => ApiKeys::open(),
    };
    Ok((Arc::new(keys), Arc::new(Limiter::new(policy.auth.as_ref()))))
}

/// The keys' reloader, when a Tokio runtime is there to run it (a router built outside one
/// keeps its keys as loaded).
fn spawn_keys_reloader(
    keys: &Arc<ApiKeys>,
    interval: Duration,
) -> Option<tokio::task::JoinHandle<()>> {
    tokio::runtime::Handle::try_current()
        .ok()
        .map(|_| keys.clone().spawn_reloader(interval))
}

/// The member that serves when scoring fails: `defaultModel`, else the first member.
fn default_member(config: &RouterConfig) -> usize {
    config
        .policy
        .default_model
        .as_ref()
        .and_then(|d| config.members.iter().position(|m| m.name == *d))
        .unwrap_or(0)
}

impl Router {
    /// Answers one request: the service that [`crate::serve`] runs for each connection.
    pub fn handle(
        self: Arc<Self>,
        req: http::Request<Incoming>,
    ) -> impl Future<Output = http::Response<RespBody>> + Send + 'static {
        let span = tracing::info_span!(
            "request",
            method = %req.method(),
            path = %req.uri().path(),
            endpoint = tracing::field::Empty,
            stream = tracing::field::Empty,
            member = tracing::field::Empty,
            status = tracing::field::Empty,
            trace_id = tracing::field::Empty,
            scores = tracing::field::Empty,
            fallback = tracing::field::Empty,
            attempts = tracing::field::Empty,
            profile = tracing::field::Empty,
            cost_weight = tracing::field::Empty,
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
        );
        crate::trace_context::accept(&span, req.headers());
        // Boxed once, here: the request's state is ~6 KB, and on its way into the connection's
        // slot (tower's and hyper's wrappers) it would otherwise be copied whole at every step.
        Box::pin(
            async move {
                let in_flight = self.metrics.enter();
                let resp = self.route(req).await;
                record_answer(&tracing::Span::current(), &resp);
                // A stream is in flight until its last byte, not just until its head is sent.
                resp.map(|body| crate::body::hold(body, in_flight))
            }
            .instrument(span),
        )
    }

    /// Called once shutdown begins (readiness turns false), before connections drain.
    pub fn on_shutdown(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }
}
