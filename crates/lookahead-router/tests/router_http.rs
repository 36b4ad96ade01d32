//! The router over real loopback HTTP (hyper client -> router -> replay members).
#![cfg(test)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use lookahead_replay::ReplayOptions;
use lookahead_router::scoring::ScoreSource;
use lookahead_router::{Router, ScorerSlot};

const TRAINED: &str = "  method: lookahead-lite\n  artifact: /unused\n  defaultModel: general\n";

fn keyword_source(scorer: KeywordScorer) -> ScoreSource {
    ScoreSource::InProcess(Arc::new(ScorerSlot::new(Arc::new(scorer), "test".into())))
}

fn math_code_scorer() -> KeywordScorer {
    KeywordScorer::new(&[
        ("Math-7B", "integral"),
        ("Code-7B", "python"),
        ("General-7B", "zzz"),
    ])
}

#[tokio::test]
async fn auto_is_scored_and_sent_to_the_best_member_with_decision_headers() {
    let math = replay(
        "Math-7B",
        &[("what is the integral of x", "x^2/2 + C")],
        Default::default(),
    )
    .await;
    let code = replay("Code-7B", &[], Default::default()).await;
    let general = replay("General-7B", &[], Default::default()).await;
    let cfg = config(
        &[
            ("math", "Math-7B", math.url()),
            ("code", "Code-7B", code.url()),
            ("general", "General-7B", general.url()),
        ],
        TRAINED,
    );
    let r = router(Router::new(&cfg, keyword_source(math_code_scorer())).expect("router")).await;
    let c = client();

    let reply = send(&c, chat(r.addr, "auto", "what is the integral of x", false)).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.header("x-lookahead-model").as_deref(), Some("math"));
    let scores = reply.header("x-lookahead-scores").expect("scores header");
    assert!(scores.starts_with("math=0.900,"), "{scores}");
    assert!(reply.header("x-lookahead-fallback").is_none());
    let body = reply.json();
    assert_eq!(body["choices"][0]["message"]["content"], "x^2/2 + C");
    assert_eq!(
        body["model"], "Math-7B",
        "model rewritten to the member's modelId"
    );

    let reply = send(&c, chat(r.addr, "auto", "write python to sort", false)).await;
    assert_eq!(reply.header("x-lookahead-model").as_deref(), Some("code"));
    let body = reply.json();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        lookahead_replay::FALLBACK_TEXT
    );

    // An explicit member passes through unscored; so does its modelId.
    let reply = send(
        &c,
        chat(r.addr, "general", "what is the integral of x", false),
    )
    .await;
    assert_eq!(
        reply.header("x-lookahead-model").as_deref(),
        Some("general")
    );
    assert!(reply.header("x-lookahead-scores").is_none());
    let reply = send(&c, chat(r.addr, "Code-7B", "hi", false)).await;
    assert_eq!(reply.header("x-lookahead-model").as_deref(), Some("code"));

    // Unknown model: 404 in OpenAI's shape.
    let reply = send(&c, chat(r.addr, "gpt-9", "hi", false)).await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.json()["error"]["code"], "model_not_found");

    let models = send(&c, get(r.addr, "/v1/models")).await.json();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids, ["auto", "math", "code", "general"]);
    assert_eq!(
        metric(
            &r,
            "lookahead_router_requests_total{member=\"math\",outcome=\"ok\"}"
        ),
        1
    );
    assert_eq!(metric(&r, "lookahead_router_decision_seconds_count"), 2);
}

/// A backend that sends one SSE event, then holds the stream open until released: the client must
/// see the first event while the backend is still holding, i.e. the router does not buffer.
fn gated_stream(
    release: Arc<tokio::sync::Notify>,
    _req: http::Request<hyper::body::Incoming>,
) -> http::Response<lookahead_router::body::RespBody> {
    let events = futures::stream::unfold(0u8, move |n| {
        let release = release.clone();
        async move {
            let data: &'static [u8] = match n {
                0 => b"data: {\"choices\":[{\"delta\":{\"content\":\"first\"}}]}\n\n",
                1 => {
                    release.notified().await;
                    b"data: {\"choices\":[{\"delta\":{\"content\":\"second\"}}]}\n\n"
                }
                2 => b"data: [DONE]\n\n",
                _ => return None,
            };
            Some((
                Ok::<_, lookahead_router::body::BoxError>(hyper::body::Frame::data(
                    Bytes::from_static(data),
                )),
                n + 1,
            ))
        }
    });
    let mut resp = http::Response::new(http_body_util::StreamBody::new(events).boxed_unsync());
    resp.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("text/event-stream"),
    );
    resp
}

#[tokio::test]
async fn streams_are_relayed_event_by_event_without_buffering() {
    let release = Arc::new(tokio::sync::Notify::new());
    let gate = release.clone();
    let backend = start_service(tower::service_fn(move |req| {
        std::future::ready(Ok::<_, std::convert::Infallible>(gated_stream(
            gate.clone(),
            req,
        )))
    }))
    .await;
    let cfg = config(
        &[("general", "General-7B", backend.url())],
        "  method: fixed\n  defaultModel: general\n",
    );
    let r = router(Router::new(&cfg, ScoreSource::Fixed).expect("router")).await;
    let resp = client()
        .request(chat(r.addr, "auto", "hi", true))
        .await
        .expect("response");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(resp.headers()["x-lookahead-model"], "general");
    let mut body = resp.into_body();
    let first = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("first event while the backend still holds the stream")
        .expect("frame")
        .expect("ok");
    let first = first.into_data().expect("data");
    assert!(String::from_utf8_lossy(&first).contains("first"));
    release.notify_one();
    let rest = tokio::time::timeout(Duration::from_secs(10), body.collect())
        .await
        .expect("rest in time")
        .expect("rest")
        .to_bytes();
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        rest.contains("second") && rest.ends_with("data: [DONE]\n\n"),
        "{rest}"
    );
}

/// A member answering a non-stream completion in three body frames written apart (chunked
/// transfer encoding, as a member that flushes as it serialises does): the router's buffered
/// attempt joins them, so the client gets the whole answer as one JSON document.
#[tokio::test]
async fn an_answer_the_member_sends_in_several_chunks_reaches_the_client_whole() {
    use futures::StreamExt;
    let answer = serde_json::json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "General-7B",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "joined from three chunks"}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
    })
    .to_string();
    let third = answer.len() / 3;
    let parts = vec![
        Bytes::copy_from_slice(&answer.as_bytes()[..third]),
        Bytes::copy_from_slice(&answer.as_bytes()[third..2 * third]),
        Bytes::copy_from_slice(&answer.as_bytes()[2 * third..]),
    ];
    let backend = start_service(tower::service_fn(move |_req| {
        let frames = futures::stream::iter(parts.clone()).then(|part| async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok::<_, lookahead_router::body::BoxError>(hyper::body::Frame::data(part))
        });
        let mut resp = http::Response::new(http_body_util::StreamBody::new(frames).boxed_unsync());
        resp.headers_mut().insert(
            "content-type",
            http::HeaderValue::from_static("application/json"),
        );
        std::future::ready(Ok::<_, std::convert::Infallible>(resp))
    }))
    .await;
    let cfg = config(
        &[("general", "General-7B", backend.url())],
        "  method: fixed\n  defaultModel: general\n",
    );
    let r = router(Router::new(&cfg, ScoreSource::Fixed).expect("router")).await;
    let reply = send(&client(), chat(r.addr, "auto", "hi", false)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("x-lookahead-model").as_deref(),
        Some("general")
    );
    assert_eq!(String::from_utf8_lossy(&reply.body), answer);
}

#[tokio::test]
async fn replay_streams_its_recorded_answer_through_the_router() {
    let answer = "The answer is forty-two, as recorded in the dataset.";
    let m = replay(
        "General-7B",
        &[("question", answer)],
        ReplayOptions {
            chunk_chars: 5,
            ..Default::default()
        },
    )
    .await;
    let cfg = config(
        &[("general", "General-7B", m.url())],
        "  method: fixed\n  defaultModel: general\n",
    );
    let r = router(Router::new(&cfg, ScoreSource::Fixed).expect("router")).await;
    let reply = send(&client(), chat(r.addr, "auto", "question", true)).await;
    assert_eq!(reply.status, 200);
    let text = String::from_utf8_lossy(&reply.body);
    let mut content = String::new();
    let mut events = 0;
    for line in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if line == "[DONE]" {
            break;
        }
        events += 1;
        let v: serde_json::Value = serde_json::from_str(line).expect("event json");
        content.push_str(v["choices"][0]["delta"]["content"].as_str().unwrap_or(""));
    }
    assert_eq!(content, answer);
    assert!(events > 10, "answer split into many events, got {events}");
}

#[tokio::test]
async fn failed_members_are_retried_on_the_next_best_and_marked() {
    let failing = replay(
        "Math-7B",
        &[],
        ReplayOptions {
            failure_rate: 1.0,
            ..Default::default()
        },
    )
    .await;
    // A port nobody listens on: connection refused.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let healthy = replay("General-7B", &[], Default::default()).await;
    let cfg = config(
        &[
            ("math", "Math-7B", failing.url()),
            ("code", "Code-7B", format!("http://{dead}")),
            ("general", "General-7B", healthy.url()),
        ],
        TRAINED,
    );
    let r = router(Router::new(&cfg, keyword_source(math_code_scorer())).expect("router")).await;
    let c = client();
    let reply = send(&c, chat(r.addr, "auto", "integral in python", false)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("x-lookahead-model").as_deref(),
        Some("general")
    );
    let fallback = reply
        .header("x-lookahead-fallback")
        .expect("fallback header");
    assert!(
        fallback.contains("math:status_503") && fallback.contains("cold:code"),
        "{fallback}"
    );
    // Streaming requests are retried too while no byte has reached the client.
    let reply = send(&c, chat(r.addr, "auto", "integral in python", true)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("x-lookahead-model").as_deref(),
        Some("general")
    );
    assert!(
        metric(
            &r,
            "lookahead_router_fallbacks_total{member=\"math\",reason=\"status_503\"}"
        ) >= 2
    );
}

#[tokio::test]
async fn a_member_that_keeps_failing_is_ejected_and_skipped() {
    let failing = replay(
        "Math-7B",
        &[],
        ReplayOptions {
            failure_rate: 1.0,
            ..Default::default()
        },
    )
    .await;
    let healthy = replay("General-7B", &[], Default::default()).await;
    let cfg = config(
        &[
            ("math", "Math-7B", failing.url()),
            ("general", "General-7B", healthy.url()),
        ],
        TRAINED,
    );
    let r = router(Router::new(&cfg, keyword_source(math_code_scorer())).expect("router")).await;
    let c = client();
    for _ in 0..10 {
        let reply = send(&c, chat(r.addr, "auto", "an integral", false)).await;
        assert_eq!(reply.status, 200);
    }
    assert_eq!(
        failing.handler.served(),
        3,
        "ejected after 3 consecutive failures"
    );
    assert_eq!(
        metric(&r, "lookahead_router_ejections_total{member=\"math\"}"),
        1
    );
    let metrics =
        String::from_utf8_lossy(&send(&c, get(r.addr, "/metrics")).await.body).into_owned();
    assert!(metrics.contains("lookahead_router_member_ejected{member=\"math\"} 1"));
}

#[tokio::test]
async fn a_slow_scorer_fails_open_to_the_default_model() {
    let a = replay("Math-7B", &[], Default::default()).await;
    let b = replay("General-7B", &[], Default::default()).await;
    let cfg = config(
        &[
            ("math", "Math-7B", a.url()),
            ("general", "General-7B", b.url()),
        ],
        &format!("{TRAINED}  scoreTimeout: 50ms\n"),
    );
    let mut slow = math_code_scorer();
    slow.delay = Duration::from_millis(500);
    let r = router(Router::new(&cfg, keyword_source(slow)).expect("router")).await;
    let reply = send(&client(), chat(r.addr, "auto", "an integral", false)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("x-lookahead-model").as_deref(),
        Some("general")
    );
    assert_eq!(
        reply.header("x-lookahead-fallback").as_deref(),
        Some("scorer_timeout")
    );
    assert_eq!(
        metric(
            &r,
            "lookahead_router_fail_open_total{reason=\"scorer_timeout\"}"
        ),
        1
    );
}

#[tokio::test]
async fn graceful_shutdown_drains_in_flight_requests() {
    let slow = replay(
        "General-7B",
        &[],
        ReplayOptions {
            latency: Duration::from_millis(400),
            ..Default::default()
        },
    )
    .await;
    let cfg = config(
        &[("general", "General-7B", slow.url())],
        "  method: fixed\n  defaultModel: general\n",
    );
    let r = router(Router::new(&cfg, ScoreSource::Fixed).expect("router")).await;
    let addr = r.addr;
    let c = client();
    let in_flight = tokio::spawn(async move { send(&c, chat(addr, "auto", "hi", false)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let served = r.shutdown();
    let reply = in_flight.await.expect("join");
    assert_eq!(reply.status, 200, "the in-flight request completes");
    tokio::time::timeout(Duration::from_secs(5), served)
        .await
        .expect("drained")
        .expect("join");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

/// Sends raw bytes (for requests a well-behaved client would not build) and reads the reply.
async fn raw(addr: std::net::SocketAddr, request: Vec<u8>) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(&request).await.expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

fn http_post(path: &str, content_type: Option<&str>, extra: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    if let Some(ct) = content_type {
        r.push_str(&format!("content-type: {ct}\r\n"));
    }
    r.push_str(extra);
    r.push_str("\r\n");
    let mut v = r.into_bytes();
    v.extend_from_slice(body);
    v
}

#[tokio::test]
async fn malformed_requests_get_openai_errors_and_the_router_keeps_serving() {
    let m = replay("General-7B", &[], Default::default()).await;
    let keys = tempfile::NamedTempFile::new().expect("keys");
    std::fs::write(keys.path(), "sk-test\n").expect("write keys");
    let cfg = config(
        &[("general", "General-7B", m.url())],
        &format!(
            "  method: fixed\n  defaultModel: general\n  maxBodyBytes: 4096\n  apiKeysFile: {}\n",
            keys.path().display()
        ),
    );
    let r = router(Router::new(&cfg, ScoreSource::Fixed).expect("router")).await;
    let auth = "authorization: Bearer sk-test\r\n";
    let json = Some("application/json");
    let msg = br#"{"model":"auto","messages":[{"role":"user","content":"hi"}]}"#;
    let big = format!(
        r#"{{"model":"auto","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "a".repeat(5000)
    );
    let deep = format!("{}{}", "[".repeat(2000), "]".repeat(2000));
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "broken json",
            http_post("/v1/chat/completions", json, auth, b"{\"model\":"),
            400,
            "invalid_json",
        ),
        (
            "not an object",
            http_post("/v1/chat/completions", json, auth, b"[]"),
            400,
            "invalid_json",
        ),
        (
            "invalid utf-8",
            http_post("/v1/chat/completions", json, auth, b"{\"model\":\"\xff\"}"),
            400,
            "invalid_json",
        ),
        (
            "deep nesting",
            http_post("/v1/chat/completions", json, auth, deep.as_bytes()),
            400,
            "invalid_json",
        ),
        (
            "missing messages",
            http_post("/v1/chat/completions", json, auth, br#"{"model":"auto"}"#),
            400,
            "missing_required_parameter",
        ),
        (
            "missing prompt",
            http_post("/v1/completions", json, auth, br#"{"model":"auto"}"#),
            400,
            "missing_required_parameter",
        ),
        (
            "wrong type",
            http_post(
                "/v1/chat/completions",
                json,
                auth,
                br#"{"model":"auto","messages":{}}"#,
            ),
            400,
            "invalid_type",
        ),
        (
            "unknown model",
            http_post(
                "/v1/chat/completions",
                json,
                auth,
                br#"{"model":"gpt-9","messages":[{"role":"user","content":"x"}]}"#,
            ),
            404,
            "model_not_found",
        ),
        (
            "unknown path",
            http_post("/v1/audio/speech", json, auth, msg),
            404,
            "unknown_url",
        ),
        (
            "wrong method",
            b"GET /v1/chat/completions HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".to_vec(),
            405,
            "method_not_allowed",
        ),
        (
            "body over limit",
            http_post("/v1/chat/completions", json, auth, big.as_bytes()),
            413,
            "request_too_large",
        ),
        (
            "chunked over limit",
            {
                let mut v = format!("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\n{auth}transfer-encoding: chunked\r\n\r\n{:x}\r\n", big.len()).into_bytes();
                v.extend_from_slice(big.as_bytes());
                v.extend_from_slice(b"\r\n0\r\n\r\n");
                v
            },
            413,
            "request_too_large",
        ),
        (
            "form content type",
            http_post(
                "/v1/chat/completions",
                Some("application/x-www-form-urlencoded"),
                auth,
                msg,
            ),
            415,
            "unsupported_media_type",
        ),
        (
            "no content type",
            http_post("/v1/chat/completions", None, auth, msg),
            415,
            "unsupported_media_type",
        ),
        (
            "no api key",
            http_post("/v1/chat/completions", json, "", msg),
            401,
            "invalid_api_key",
        ),
        (
            "wrong api key",
            http_post(
                "/v1/chat/completions",
                json,
                "authorization: Bearer sk-tesx\r\n",
                msg,
            ),
            401,
            "invalid_api_key",
        ),
        (
            "models without key",
            b"GET /v1/models HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".to_vec(),
            401,
            "invalid_api_key",
        ),
    ];
    for (name, request, status, code) in cases {
        let (got, body) = raw(r.addr, request).await;
        assert_eq!(got, status, "{name}: {body}");
        assert_eq!(body["error"]["code"], code, "{name}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{name}"
        );
    }
    let (status, body) = raw(r.addr, http_post("/v1/chat/completions", json, auth, msg)).await;
    assert_eq!(status, 200, "still serving: {body}");
    assert_eq!(body["object"], "chat.completion");
}

/// `/metrics` is OpenMetrics that Prometheus' own parser reads: `promtool tsdb
/// create-blocks-from openmetrics` (the backfill importer, which also wants a timestamp on every
/// sample: the test appends one) imports every sample.
#[tokio::test]
async fn metrics_parse_as_openmetrics_with_promtool() {
    let m = replay("General-7B", &[], Default::default()).await;
    let cfg = config(&[("general", "General-7B", m.url())], TRAINED);
    let r = router(
        Router::new(
            &cfg,
            keyword_source(KeywordScorer::new(&[("General-7B", "x")])),
        )
        .expect("router"),
    )
    .await;
    let c = client();
    send(&c, chat(r.addr, "auto", "x", false)).await;
    send(&c, chat(r.addr, "nope", "x", false)).await;
    let reply = send(&c, get(r.addr, "/metrics")).await;
    assert_eq!(reply.status, 200);
    assert!(reply
        .header("content-type")
        .is_some_and(|t| t.starts_with("application/openmetrics-text")));
    let text = String::from_utf8_lossy(&reply.body).into_owned();
    assert!(text.contains("lookahead_router_requests_total{member=\"general\",outcome=\"ok\"} 1"));
    assert!(text.contains("lookahead_router_rejected_total{code=\"model_not_found\"} 1"));
    assert!(text.contains("lookahead_router_routed_total{member=\"general\",basis=\"scores\"} 1"));
    let stamped: String = text
        .lines()
        .map(|l| match l.starts_with('#') {
            true => format!("{l}\n"),
            false => format!("{l} 1700000000\n"),
        })
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("metrics.om");
    std::fs::write(&file, &stamped).expect("write");
    let out = std::process::Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&file)
        .arg(dir.path().join("blocks"))
        .output();
    let Ok(out) = out else {
        eprintln!("SKIP promtool check: promtool not installed (apt-get install prometheus)");
        return;
    };
    assert!(
        out.status.success(),
        "promtool: {}{}\n{stamped}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn health_and_readiness() {
    let m = replay("General-7B", &[], Default::default()).await;
    let cfg = config(
        &[("general", "General-7B", m.url())],
        "  method: fixed\n  defaultModel: general\n",
    );
    let r = router(Router::new(&cfg, ScoreSource::Fixed).expect("router")).await;
    let c = client();
    assert_eq!(send(&c, get(r.addr, "/healthz")).await.status, 200);
    assert_eq!(send(&c, get(r.addr, "/readyz")).await.status, 200);
    let reply = send(
        &c,
        http::Request::post(format!("http://{}/v1/completions", r.addr))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(
                br#"{"model":"auto","prompt":"hello"}"#,
            )))
            .expect("req"),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["object"], "text_completion");
}

/// A stopping router (`lookahead_router::serve` with a drain delay) turns unready at once but
/// still answers new connections until the delay is over, so requests that a Service's NAT sends
/// to it before the endpoint change has spread are answered, not refused; then it stops
/// accepting.
#[tokio::test]
async fn a_stopping_router_turns_unready_and_keeps_answering_for_its_drain_delay() {
    let m = replay("General-7B", &[], Default::default()).await;
    let cfg = config(
        &[("general", "General-7B", m.url())],
        "  method: fixed\n  defaultModel: general\n",
    );
    let router = Arc::new(Router::new(&cfg, ScoreSource::Fixed).expect("router"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let drain = lookahead_router::Drain {
        delay: Duration::from_millis(800),
        grace: Duration::from_secs(1),
    };
    let serving = tokio::spawn(lookahead_router::serve(
        listener,
        router,
        async {
            let _ = stopped.await;
        },
        drain,
    ));
    assert_eq!(send(&client(), get(addr, "/readyz")).await.status, 200);
    stop.send(()).expect("stop");
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Fresh clients: new connections, as a Service's NAT would open.
    assert_eq!(send(&client(), get(addr, "/readyz")).await.status, 503);
    let reply = send(&client(), chat(addr, "auto", "hello", false)).await;
    assert_eq!(reply.status, 200, "answered during the drain delay");
    serving.await.expect("serve ended");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting after the delay and the drain"
    );
}
