//! W3C trace context through the router without an OpenTelemetry layer (tracing export off, the
//! default): a hyper client -> the real router over loopback -> a recording member. The client's
//! `traceparent`/`tracestate` reach the member unchanged, on every attempt; a malformed one is
//! dropped, and a request without one reaches the member without one. (With export on, the member
//! sees the router's span as parent: `crates/lookahead-cli/tests/tracing_otlp.rs`.)
#![cfg(test)]

mod common;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use lookahead_router::scoring::ScoreSource;
use lookahead_router::Router;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// What one member request carried: `traceparent`, `tracestate`.
type Seen = Arc<Mutex<Vec<(Option<String>, Option<String>)>>>;

fn header(req: &http::Request<hyper::body::Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// A member answering `status` and recording each request's trace headers.
async fn recording_member(seen: Seen, status: u16) -> Running<()> {
    start_service(tower::service_fn(move |req: http::Request<_>| {
        seen.lock()
            .expect("seen")
            .push((header(&req, "traceparent"), header(&req, "tracestate")));
        let body = serde_json::json!({
            "id": "x", "object": "chat.completion", "created": 0, "model": "General-7B",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "ok"}}],
        });
        let status = http::StatusCode::from_u16(status).expect("status");
        std::future::ready(Ok::<_, std::convert::Infallible>(
            lookahead_router::body::json_response(status, &body),
        ))
    }))
    .await
}

fn traced(
    mut req: http::Request<Full<Bytes>>,
    traceparent: &str,
    tracestate: Option<&str>,
) -> http::Request<Full<Bytes>> {
    let h = req.headers_mut();
    h.insert("traceparent", traceparent.parse().expect("header"));
    if let Some(ts) = tracestate {
        h.insert("tracestate", ts.parse().expect("header"));
    }
    req
}

/// The client's trace context reaches every member the request is tried on (here a failing
/// member, then the one that answers), unchanged.
#[tokio::test]
async fn members_receive_the_clients_trace_context() {
    let seen: Seen = Arc::default();
    let failing = recording_member(seen.clone(), 503).await;
    let good = recording_member(seen.clone(), 200).await;
    let cfg = config(
        &[
            ("first", "First-7B", failing.url()),
            ("second", "Second-7B", good.url()),
        ],
        "  method: fixed\n  defaultModel: first\n  retries: 1\n",
    );
    let r = router(Router::new(&cfg, ScoreSource::Fixed).expect("router")).await;
    let req = traced(
        chat(r.addr, "auto", "hi", false),
        TRACEPARENT,
        Some("vendor=a1"),
    );
    let reply = send(&client(), req).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let seen = seen.lock().expect("seen").clone();
    assert_eq!(seen.len(), 2, "one attempt per member: {seen:?}");
    for (tp, ts) in seen {
        assert_eq!(tp.as_deref(), Some(TRACEPARENT));
        assert_eq!(ts.as_deref(), Some("vendor=a1"));
    }
}

/// A malformed `traceparent` (and the `tracestate` that goes with it) is not forwarded; nor is
/// anything invented for a request that came without one.
#[tokio::test]
async fn malformed_or_missing_trace_context_is_not_forwarded() {
    let seen: Seen = Arc::default();
    let member = recording_member(seen.clone(), 200).await;
    let cfg = config(
        &[("general", "General-7B", member.url())],
        "  method: fixed\n  defaultModel: general\n",
    );
    let r = router(Router::new(&cfg, ScoreSource::Fixed).expect("router")).await;
    let c = client();
    let bad = "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01";
    assert_eq!(
        send(
            &c,
            traced(chat(r.addr, "auto", "hi", false), bad, Some("v=1"))
        )
        .await
        .status,
        200
    );
    assert_eq!(
        send(&c, chat(r.addr, "auto", "hi", false)).await.status,
        200
    );
    assert_eq!(
        *seen.lock().expect("seen"),
        vec![(None, None), (None, None)]
    );
}
