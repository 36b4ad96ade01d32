//! The dispatch stage: send the request to the planned members in order until one answers,
//! under one deadline for the whole request; every failed attempt is counted against its member
//! (outlier ejection) and retried on the next one.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use tokio::time::Instant;

use crate::metrics::RouterMetrics;
use crate::openai::{CompletionRequest, Endpoint};
use crate::outlier::{FailureEffect, OutlierDetector};
use crate::pool::{Member, Pool};
use crate::respond::HEADER_REQUEST_ID;
use crate::upstream::{Answer, AttemptError, Upstream};
use crate::ApiError;

/// Sends attempts and keeps score of the members.
#[derive(Debug)]
pub struct Dispatcher {
    pub upstream: Upstream,
    pub outlier: OutlierDetector,
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
    pub attempts: &'a [usize],
}

/// How the attempts ended.
pub enum Outcome {
    /// A member answered (its status passes through): which one, after which failures.
    Delivered {
        answer: Answer,
        chosen: usize,
        failures: Vec<String>,
    },
    /// Every attempt failed.
    Exhausted {
        failures: Vec<String>,
        last_error: Option<AttemptError>,
    },
    /// The body could not be rewritten for a member.
    Rejected(ApiError),
}

/// The headers a member sees: JSON, the client's `Accept`, the request id, and the client's
/// credentials only when the router has no keys of its own (then they are meant for the member).
pub fn upstream_headers(
    client: &HeaderMap,
    request_id: &HeaderValue,
    forward_auth: bool,
) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(4);
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(a) = client.get(http::header::ACCEPT) {
        h.insert(http::header::ACCEPT, a.clone());
    }
    if forward_auth {
        if let Some(a) = client.get(http::header::AUTHORIZATION) {
            h.insert(http::header::AUTHORIZATION, a.clone());
        }
    }
    h.insert(HEADER_REQUEST_ID, request_id.clone());
    h
}

impl Dispatcher {
    pub async fn dispatch(
        &self,
        pool: &Pool,
        metrics: &Arc<RouterMetrics>,
        call: Call<'_>,
    ) -> Outcome {
        let deadline = Instant::now() + self.request_timeout;
        let mut failures: Vec<String> = Vec::new();
        let mut last_error = None;
        for &i in call.attempts {
            let member = &pool.members[i];
            let body = match call.request.body_for(&member.model_id) {
                Ok(b) => b,
                Err(e) => return Outcome::Rejected(e),
            };
            let t0 = Instant::now();
            let result = self.attempt(member, metrics, &call, body, deadline).await;
            metrics.upstream.observe(&[&*member.name], t0.elapsed());
            match result {
                Ok(answer) => {
                    self.delivered(i, member, metrics, &answer);
                    return Outcome::Delivered {
                        answer,
                        chosen: i,
                        failures,
                    };
                }
                Err(e) => {
                    let reason = self.failed(i, member, metrics, &e);
                    failures.push(format!("{}:{reason}", member.name));
                    last_error = Some(e);
                    if Instant::now() >= deadline {
                        break;
                    }
                }
            }
        }
        let last = call
            .attempts
            .last()
            .map(|&i| &*pool.members[i].name)
            .unwrap_or("none");
        metrics.requests.inc(&[last, "failed"]);
        Outcome::Exhausted {
            failures,
            last_error,
        }
    }

    /// One attempt: buffered, or relayed when the client asked for a stream.
    async fn attempt(
        &self,
        member: &Member,
        metrics: &Arc<RouterMetrics>,
        call: &Call<'_>,
        body: bytes::Bytes,
        deadline: Instant,
    ) -> Result<Answer, AttemptError> {
        let url = member.url(call.endpoint);
        let headers = upstream_headers(call.client_headers, call.request_id, call.forward_auth);
        if !call.request.stream {
            return self.upstream.buffered(url, body, headers, deadline).await;
        }
        let first = (Instant::now() + self.first_token_timeout).min(deadline);
        let (metrics, name) = (metrics.clone(), member.name.clone());
        let on_end = Box::new(move |ok: bool| {
            if !ok {
                metrics.stream_errors.inc(&[&*name]);
            }
        });
        self.upstream
            .streamed(url, body, headers, first, deadline, on_end)
            .await
    }

    fn delivered(&self, i: usize, member: &Member, metrics: &RouterMetrics, answer: &Answer) {
        self.outlier.record_success(i, std::time::Instant::now());
        let outcome = if answer.status.is_success() {
            "ok"
        } else {
            "upstream_client_error"
        };
        metrics.requests.inc(&[&*member.name, outcome]);
        let span = tracing::Span::current();
        span.record("member", &*member.name);
        span.record("status", answer.status.as_u16());
    }

    /// Counts a failed attempt (and ejects the member when it keeps failing); its label.
    fn failed(
        &self,
        i: usize,
        member: &Member,
        metrics: &RouterMetrics,
        e: &AttemptError,
    ) -> String {
        let reason = e.label();
        tracing::warn!(member = %member.name, %reason, "upstream attempt failed");
        metrics.fallbacks.inc(&[&*member.name, reason.as_str()]);
        if e.counts_against_member() {
            if let FailureEffect::Ejected(d) =
                self.outlier.record_failure(i, std::time::Instant::now())
            {
                tracing::warn!(member = %member.name, ejected_for = ?d, "member ejected");
                metrics.ejections.inc(&[&*member.name]);
            }
        }
        reason
    }
}
