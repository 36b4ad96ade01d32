//! Tenants over real loopback HTTP (hyper client -> the real router -> real replay members,
//! `lookahead-replay`, whose answers carry `usage`): API keys from a Secret-shaped directory
//! (hot-reloaded), per-key requests/min and tokens/min limits answered 429 with `Retry-After`,
//! and per-key usage and spend metrics for buffered and streamed answers.
#![cfg(test)]

mod common;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use lookahead_api::pool::Price;
use lookahead_replay::ReplayOptions;
use lookahead_router::scoring::ScoreSource;
use lookahead_router::Router;
use serde_json::{json, Value};

/// Replay's answer: "what is 2 + 2?" is 5 prompt tokens (whitespace words), "It is 4." is 3.
const PROMPT: &str = "what is 2 + 2?";
const ANSWER: &str = "It is 4.";

fn with_auth(mut req: http::Request<Full<Bytes>>, key: &str) -> http::Request<Full<Bytes>> {
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {key}").parse().expect("header"),
    );
    req
}

/// A chat request asking for the stream's usage itself.
fn chat_with_usage(addr: std::net::SocketAddr) -> http::Request<Full<Bytes>> {
    let body = json!({
        "model": "auto", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": PROMPT}],
    });
    http::Request::post(format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request")
}

/// A directory shaped like a mounted Secret: one file per key id.
fn keys_dir(keys: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("keys dir");
    for (id, key) in keys {
        std::fs::write(dir.path().join(id), format!("{key}\n")).expect("write key");
    }
    dir
}

/// A router over one replay member (`general`, priced) with `auth` (YAML under `policy.auth`).
async fn tenant_router(
    dir: &Path,
    auth: &str,
) -> (Running<Router>, Running<lookahead_replay::ReplayServer>) {
    let member = replay("General-7B", &[(PROMPT, ANSWER)], ReplayOptions::default()).await;
    let mut cfg = config(
        &[("general", "General-7B", member.url())],
        &format!(
            "  method: fixed\n  defaultModel: general\n  auth:\n    keysDir: {}\n{auth}",
            dir.display()
        ),
    );
    cfg.members[0].price = Price {
        input_per_m_tok: 2.0,
        output_per_m_tok: 10.0,
    };
    let r = Router::new(&cfg, ScoreSource::Fixed)
        .expect("router")
        .with_keys_reload_interval(Duration::from_millis(50));
    (router(r).await, member)
}

fn sse_events(body: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect()
}

fn spend(r: &Running<Router>, key: &str) -> f64 {
    lookahead_router::metrics::sample(
        &r.handler.render_metrics(),
        &format!("lookahead_router_spend_total{{key=\"{key}\",member=\"general\"}}"),
    )
}

/// Requests/min per key: after 2 requests key `a` gets 429 `rate_limit_exceeded` (type
/// `requests`) with `Retry-After: 30` before any member is called, while key `b` still passes;
/// the refusal is counted by key id.
#[tokio::test]
async fn requests_per_minute_answer_429_with_retry_after_per_key() {
    let dir = keys_dir(&[("a", "sk-aaa"), ("b", "sk-bbb")]);
    let (r, member) = tenant_router(dir.path(), "    limits: { requestsPerMinute: 2 }\n").await;
    let c = client();
    for _ in 0..2 {
        let ok = send(&c, with_auth(chat(r.addr, "auto", PROMPT, false), "sk-aaa")).await;
        assert_eq!(ok.status, 200, "{:?}", ok.body);
    }
    let limited = send(&c, with_auth(chat(r.addr, "auto", PROMPT, false), "sk-aaa")).await;
    assert_eq!(limited.status, 429);
    // 2 per minute: the next request token in 30 s.
    assert_eq!(limited.header("retry-after").as_deref(), Some("30"));
    let e = &limited.json()["error"];
    assert_eq!(e["code"], "rate_limit_exceeded");
    assert_eq!(e["type"], "requests");
    assert!(e["message"]
        .as_str()
        .is_some_and(|m| m.contains("\"a\"") && !m.contains("sk-")));
    assert_eq!(
        member.handler.served(),
        2,
        "the refused request reached no member"
    );
    let other = send(&c, with_auth(chat(r.addr, "auto", PROMPT, false), "sk-bbb")).await;
    assert_eq!(other.status, 200);
    assert_eq!(
        metric(
            &r,
            "lookahead_router_rate_limited_total{key=\"a\",limit=\"requests\"}"
        ),
        1
    );
    assert_eq!(
        metric(
            &r,
            "lookahead_router_requests_by_key_total{key=\"a\",member=\"general\"}"
        ),
        2
    );
}

/// Tokens/min per key: a request is admitted while the key's bucket is not empty and the
/// answer's reported usage (5 + 3 tokens) is debited after it, so with 8 tokens/min the second
/// request is refused (type `tokens`) until a token has refilled (7.5 s: `Retry-After: 8`).
#[tokio::test]
async fn tokens_per_minute_debit_the_reported_usage() {
    let dir = keys_dir(&[("a", "sk-aaa"), ("b", "sk-bbb")]);
    let limits =
        "    limits: { tokensPerMinute: 8 }\n    keys:\n      - { id: b, tokensPerMinute: 1000 }\n";
    let (r, _member) = tenant_router(dir.path(), limits).await;
    let c = client();
    let first = send(&c, with_auth(chat(r.addr, "auto", PROMPT, false), "sk-aaa")).await;
    assert_eq!(first.status, 200);
    let second = send(&c, with_auth(chat(r.addr, "auto", PROMPT, false), "sk-aaa")).await;
    assert_eq!(second.status, 429, "{:?}", second.body);
    assert_eq!(second.json()["error"]["type"], "tokens");
    assert_eq!(second.header("retry-after").as_deref(), Some("8"));
    // Key b's override allows more.
    for _ in 0..3 {
        let ok = send(&c, with_auth(chat(r.addr, "auto", PROMPT, false), "sk-bbb")).await;
        assert_eq!(ok.status, 200);
    }
    assert_eq!(
        metric(
            &r,
            "lookahead_router_rate_limited_total{key=\"a\",limit=\"tokens\"}"
        ),
        1
    );
}

/// Usage and spend by key id and member, from a buffered answer's `usage` and from streams: the
/// router asks a stream for its usage when the client did not, and hides that usage chunk from
/// such a client; a client that asked gets it.
#[tokio::test]
async fn usage_and_spend_are_metered_per_key_for_buffered_and_streamed_answers() {
    let dir = keys_dir(&[("team-a", "sk-team-a")]);
    let (r, _member) = tenant_router(dir.path(), "").await;
    let c = client();
    let tokens = |kind: &str| {
        metric(
            &r,
            &format!(
                "lookahead_router_tokens_total{{key=\"team-a\",member=\"general\",kind=\"{kind}\"}}"
            ),
        )
    };
    let buffered = send(
        &c,
        with_auth(chat(r.addr, "auto", PROMPT, false), "sk-team-a"),
    )
    .await;
    assert_eq!(buffered.status, 200);
    assert_eq!((tokens("prompt"), tokens("completion")), (5, 3));
    // 5 × 2.0/1e6 + 3 × 10.0/1e6
    assert!(
        (spend(&r, "team-a") - 40e-6).abs() < 1e-12,
        "{}",
        spend(&r, "team-a")
    );

    let hidden = send(
        &c,
        with_auth(chat(r.addr, "auto", PROMPT, true), "sk-team-a"),
    )
    .await;
    assert_eq!(hidden.status, 200);
    let events = sse_events(&hidden.body);
    assert!(!events.is_empty());
    assert!(
        events
            .iter()
            .all(|e| e.get("usage").is_none_or(Value::is_null)),
        "a usage chunk reached a client that did not ask: {events:?}"
    );
    let text: String = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, ANSWER);
    assert!(String::from_utf8_lossy(&hidden.body).ends_with("data: [DONE]\n\n"));
    assert_eq!((tokens("prompt"), tokens("completion")), (10, 6));

    let asked = send(&c, with_auth(chat_with_usage(r.addr), "sk-team-a")).await;
    let usage: Vec<Value> = sse_events(&asked.body)
        .into_iter()
        .filter_map(|e| e.get("usage").filter(|u| !u.is_null()).cloned())
        .collect();
    assert_eq!(usage.len(), 1, "the client that asked gets its usage chunk");
    assert_eq!(usage[0]["prompt_tokens"], 5);
    assert_eq!((tokens("prompt"), tokens("completion")), (15, 9));
    assert!((spend(&r, "team-a") - 120e-6).abs() < 1e-12);
    assert_eq!(
        metric(
            &r,
            "lookahead_router_requests_by_key_total{key=\"team-a\",member=\"general\"}"
        ),
        3
    );
}

/// The keys directory is re-read while the router runs: a key added to it starts working and a
/// removed one stops (401), with no restart.
#[tokio::test]
async fn keys_are_hot_reloaded_without_a_restart() {
    let dir = keys_dir(&[("old", "sk-old")]);
    let (r, _member) = tenant_router(dir.path(), "").await;
    let c = client();
    let status = |key: &'static str| {
        let c = c.clone();
        let addr = r.addr;
        async move {
            send(&c, with_auth(chat(addr, "auto", PROMPT, false), key))
                .await
                .status
        }
    };
    assert_eq!(status("sk-old").await, 200);
    assert_eq!(status("sk-new").await, 401);
    std::fs::write(dir.path().join("new"), "sk-new\n").expect("add key");
    std::fs::remove_file(dir.path().join("old")).expect("remove key");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while status("sk-new").await != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "new key never accepted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status("sk-old").await, 401, "a removed key stops working");
    assert_eq!(
        metric(
            &r,
            "lookahead_router_requests_by_key_total{key=\"new\",member=\"general\"}"
        ),
        1
    );
}

/// A router without keys meters and limits everyone together as `anonymous`.
#[tokio::test]
async fn an_open_router_meters_and_limits_anonymous() {
    let member = replay("General-7B", &[(PROMPT, ANSWER)], ReplayOptions::default()).await;
    let cfg = config(
        &[("general", "General-7B", member.url())],
        "  method: fixed\n  defaultModel: general\n  auth:\n    limits: { requestsPerMinute: 1 }\n",
    );
    let r = router(Router::new(&cfg, ScoreSource::Fixed).expect("router")).await;
    let c = client();
    assert_eq!(
        send(&c, chat(r.addr, "auto", PROMPT, false)).await.status,
        200
    );
    let limited = send(&c, chat(r.addr, "auto", PROMPT, false)).await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("retry-after").as_deref(), Some("60"));
    assert_eq!(
        metric(
            &r,
            "lookahead_router_tokens_total{key=\"anonymous\",member=\"general\",kind=\"completion\"}"
        ),
        3
    );
}

/// The Responses API (`/v1/responses`) is metered from its own usage names
/// (`input_tokens`/`output_tokens`), buffered and streamed (the `response.completed` event, which
/// reaches the client untouched: the router asks nothing of such streams).
#[tokio::test]
async fn responses_api_answers_are_metered_too() {
    let dir = keys_dir(&[("team-a", "sk-team-a")]);
    let (r, _member) = tenant_router(dir.path(), "").await;
    let c = client();
    let completion = || {
        metric(
            &r,
            "lookahead_router_tokens_total{key=\"team-a\",member=\"general\",kind=\"completion\"}",
        )
    };
    for (stream, completion_tokens) in [(false, 3), (true, 6)] {
        let body = json!({"model": "auto", "input": PROMPT, "stream": stream});
        let req = http::Request::post(format!("http://{}/v1/responses", r.addr))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("request");
        let reply = send(&c, with_auth(req, "sk-team-a")).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        if stream {
            let completed = sse_events(&reply.body)
                .into_iter()
                .find(|e| e["type"] == "response.completed")
                .expect("the completed event reaches the client");
            assert_eq!(completed["response"]["usage"]["output_tokens"], 3);
        }
        assert_eq!(completion(), completion_tokens, "stream: {stream}");
    }
    assert!((spend(&r, "team-a") - 80e-6).abs() < 1e-12);
}
