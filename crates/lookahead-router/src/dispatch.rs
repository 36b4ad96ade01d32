//! The dispatch stage: send the request to the planned members in order until one answers,
//! under one deadline for the whole request; every failed attempt is counted against its member
//! (outlier ejection) and retried on the next one. A member that cannot be connected to has no
//! ready replica: it is marked cold ([`crate::demand`]), not ejected, so it is tried again as
//! soon as it may have woken up.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use tokio::time::Instant;

use crate::demand::Demand;
use crate::metrics::RouterMetrics;
use crate::openai::{CompletionRequest, Endpoint};
use crate::outlier::{FailureEffect, OutlierDetector};
use crate::pool::{Member, Pool};
use crate::respond::HEADER_REQUEST_ID;
use crate::upstream::{Answer, AttemptError, Upstream};
use crate::usage::{Metering, Usage};
use crate::ApiError;

/// Sends attempts and keeps score of the members.
#[derive(Debug)]
pub struct Dispatcher {
    pub upstream: Upstream,
    pub outlier: OutlierDetector,
    pub demand: Arc<Demand>,
    pub request_timeout: Duration,
    pub first_token_timeout: Duration,
}

/// One request on its way out.
pub struct Call<'a> {
    pub endpoint: Endpoint,
    pub request: &'a CompletionRequest,
    /// The client's headers (what a member sees of them: [`upstream_headers`]).
    pub client_headers: &'a HeaderMap,
    pub request_id: &'a HeaderValue,
    /// Whether the client's credentials go to the member (the router has no keys of its own).
    pub forward_auth: bool,
    /// The caller's key id and where the answer's usage goes ([`crate::usage`]).
    pub metering: &'a Metering<'a>,
}

/// How the attempts ended.
pub enum Outcome {
    /// A member answered (its status passes through): which one, after which failures.
    Delivered {
        answer: Answer,
        chosen: usize,
        failures: Vec<String>,
    },
    /// Every attempt failed; `all_cold` when none of the members could be connected to.
    Exhausted {
        failures: Vec<String>,
        last_error: Option<AttemptError>,
        all_cold: bool,
    },
    /// The body could not be rewritten for a member.
    Rejected(ApiError),
}

/// The headers a member sees: JSON, the client's `Accept`, the request id, the trace context
/// ([`crate::trace_context::inject`]), and credentials: the member's own key when it has one
/// (`member_key`, never the client's then), else the client's only when the router has no keys
/// of its own (then they are meant for the member).
pub fn upstream_headers(
    client: &HeaderMap,
    request_id: &HeaderValue,
    forward_auth: bool,
    member_key: Option<HeaderValue>,
) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(4);
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(a) = client.get(http::header::ACCEPT) {
        h.insert(http::header::ACCEPT, a.clone());
    }
    match member_key {
        Some(key) => {
            h.insert(http::header::AUTHORIZATION, key);
        }
        None if forward_auth => {
            if let Some(a) = client.get(http::header::AUTHORIZATION) {
                h.insert(http::header::AUTHORIZATION, a.clone());
            }
        }
        None => {}
    }
    h.insert(HEADER_REQUEST_ID, request_id.clone());
    crate::trace_context::inject(client, &mut h);
    h
}

impl Dispatcher {
    pub async fn dispatch(
        &self,
        pool: &Pool,
        metrics: &Arc<RouterMetrics>,
        call: &Call<'_>,
        attempts: &[usize],
    ) -> Outcome {
        let deadline = Instant::now() + self.request_timeout;
        let mut failures: Vec<String> = Vec::new();
        let mut last_error = None;
        let mut all_cold = true;
        // A member's context-length refusal, answered if no larger window takes the request.
        let mut refused: Option<(Answer, usize)> = None;
        for (n, &i) in attempts.iter().enumerate() {
            let member = &pool.members[i];
            if refused
                .as_ref()
                .is_some_and(|(_, r)| !larger_window(pool, *r, i))
            {
                continue;
            }
            let body = match call.request.body_for(&member.model_id) {
                Ok(b) => call.metering.forwarded(b),
                Err(e) => return Outcome::Rejected(e),
            };
            let t0 = Instant::now();
            let load = self.demand.enter(i);
            let result = self.attempt(i, member, metrics, call, body, deadline).await;
            metrics.attempted(i, t0.elapsed());
            match result {
                Ok(answer)
                    if answer.is_context_refusal()
                        && attempts[n + 1..].iter().any(|&j| larger_window(pool, i, j)) =>
                {
                    tracing::info!(member = %member.name, "context-length refusal: trying a larger window");
                    metrics.fell_back(&member.name, "context_length".into());
                    failures.push(format!("{}:context_length", member.name));
                    refused = Some((answer, i));
                }
                Ok(mut answer) => {
                    self.delivered(i, member, metrics, &answer);
                    call.metering.series.answered(Some(i));
                    answer.body = crate::body::hold(answer.body, load);
                    return Outcome::Delivered {
                        answer,
                        chosen: i,
                        failures,
                    };
                }
                Err(e) => {
                    failures.push(self.failed(i, member, metrics, &e));
                    all_cold &= matches!(e, AttemptError::Connect(_));
                    last_error = Some(e);
                    if Instant::now() >= deadline {
                        break;
                    }
                }
            }
        }
        if let Some((answer, chosen)) = refused {
            self.delivered(chosen, &pool.members[chosen], metrics, &answer);
            return Outcome::Delivered {
                answer,
                chosen,
                failures,
            };
        }
        match attempts.last() {
            Some(&i) => metrics.answered(i, "failed"),
            None => metrics.unanswered("failed"),
        }
        call.metering.series.answered(None);
        Outcome::Exhausted {
            failures,
            last_error,
            all_cold: all_cold && !attempts.is_empty(),
        }
    }

    /// One attempt: buffered, or relayed when the client asked for a stream; a successful
    /// answer's usage is metered (a stream's when it ends).
    async fn attempt(
        &self,
        i: usize,
        member: &Member,
        metrics: &Arc<RouterMetrics>,
        call: &Call<'_>,
        body: bytes::Bytes,
        deadline: Instant,
    ) -> Result<Answer, AttemptError> {
        let url = member.url(call.endpoint);
        let key = member.key.as_ref().map(|k| k.authorization());
        let headers =
            upstream_headers(call.client_headers, call.request_id, call.forward_auth, key);
        if !call.request.stream {
            let answer = self.upstream.buffered(url, body, headers, deadline).await?;
            if let Some(bytes) = answer.whole.as_ref().filter(|_| answer.status.is_success()) {
                call.metering.record(i, Usage::from_json(bytes));
            }
            return Ok(answer);
        }
        let first = (Instant::now() + self.first_token_timeout).min(deadline);
        let (metrics, name) = (metrics.clone(), member.name.clone());
        let on_end = Box::new(move |ok: bool| {
            if !ok {
                metrics.stream_broke(&name);
            }
        });
        let mut answer = self
            .upstream
            .streamed(url, body, headers, first, deadline, on_end)
            .await?;
        if answer.status.is_success() {
            let hide = call.metering.ask_usage;
            let meter = call.metering.meter(i);
            let record = Box::new(move |usage: Option<Usage>| meter.record(usage));
            answer.body = crate::usage::tap(answer.body, hide, record);
        }
        Ok(answer)
    }

    fn delivered(&self, i: usize, member: &Member, metrics: &RouterMetrics, answer: &Answer) {
        self.outlier.record_success(i, std::time::Instant::now());
        self.demand.mark_warm(i);
        let outcome = if answer.status.is_success() {
            "ok"
        } else {
            "upstream_client_error"
        };
        metrics.answered(i, outcome);
        let span = tracing::Span::current();
        span.record("member", &*member.name);
    }

    /// Counts a failed attempt (and ejects the member when it keeps failing, or marks it cold
    /// when it could not be reached); its label for `x-lookahead-fallback`.
    fn failed(
        &self,
        i: usize,
        member: &Member,
        metrics: &RouterMetrics,
        e: &AttemptError,
    ) -> String {
        let reason = e.label();
        match e {
            AttemptError::Tls { detail, .. } => {
                tracing::warn!(member = %member.name, %reason, error = %detail, "upstream attempt failed")
            }
            _ => tracing::warn!(member = %member.name, %reason, "upstream attempt failed"),
        }
        metrics.fell_back(&member.name, reason.clone());
        // A TLS failure is not cold: the member answered, with a certificate we cannot trust.
        if let AttemptError::Connect(_) = e {
            self.demand.mark_cold(i, std::time::Instant::now());
            return cold_label(&member.name);
        }
        if e.counts_against_member() {
            if let FailureEffect::Ejected(d) =
                self.outlier.record_failure(i, std::time::Instant::now())
            {
                tracing::warn!(member = %member.name, ejected_for = ?d, "member ejected");
                metrics.ejected(&member.name);
            }
        }
        format!("{}:{reason}", member.name)
    }
}

/// Whether member `j` may hold a prompt that member `i`'s window refused: a larger window, or
/// an unknown one (never the same member again).
fn larger_window(pool: &Pool, i: usize, j: usize) -> bool {
    if i == j {
        return false;
    }
    match (
        pool.members[i].context_window,
        pool.members[j].context_window,
    ) {
        (Some(refused), Some(other)) => other > refused,
        _ => true,
    }
}

/// The `x-lookahead-fallback` entry of a member passed over because it has no ready replica.
pub fn cold_label(member: &str) -> String {
    format!("cold:{member}")
}
