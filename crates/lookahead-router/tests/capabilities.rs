//! Capability- and context-aware routing through the real router (`lookahead_router::Router`
//! over HTTP) in front of real `lookahead-replay` members: members declare `contextWindow`,
//! `maxOutputTokens` and `supports`; requests go only where they fit, a member's own
//! context-length refusal is retried on a larger window, `/v1/embeddings` goes by name to
//! members marked for it and `/v1/responses` is routed like chat.

#![cfg(test)]

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use lookahead_api::RouterConfig;
use lookahead_replay::ReplayOptions;
use lookahead_router::scoring::ScoreSource;
use lookahead_router::Router;
use serde_json::{json, Value};

/// A router config: `members` as YAML flow maps (without `baseUrl`, added from `urls`), the
/// fixed method preferring the first member.
fn config_with(members: &[(&str, String)], urls: &[String]) -> RouterConfig {
    let mut y = String::from("listen: 127.0.0.1:0\nmembers:\n");
    for ((fields, name), url) in members.iter().map(|(f, n)| (f, n)).zip(urls) {
        y.push_str(&format!(
            "  - {{ name: {name}, modelId: {name}-id, baseUrl: \"{url}/v1\"{fields} }}\n"
        ));
    }
    let first = &members[0].1;
    y.push_str(&format!(
        "policy:\n  method: fixed\n  defaultModel: {first}\n"
    ));
    serde_yaml::from_str(&y).expect("test config")
}

fn post(addr: std::net::SocketAddr, path: &str, body: &Value) -> http::Request<Full<Bytes>> {
    http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request")
}

fn chat_body(model: &str, prompt: &str, extra: Value) -> Value {
    let mut body = json!({"model": model, "messages": [{"role": "user", "content": prompt}]});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    body
}

fn words(n: usize) -> String {
    vec!["word"; n].join(" ")
}

#[tokio::test]
async fn requests_go_only_to_members_they_fit_and_whose_capabilities_they_use() {
    let small = replay("small-id", &[], ReplayOptions::default()).await;
    let large = replay("large-id", &[], ReplayOptions::default()).await;
    let cfg = config_with(
        &[
            (
                ", contextWindow: 64, maxOutputTokens: 32, supports: [chat]",
                "small".into(),
            ),
            (
                ", contextWindow: 100000, supports: [chat, tools]",
                "large".into(),
            ),
        ],
        &[small.url(), large.url()],
    );
    let r = router(Router::new(&cfg, ScoreSource::Fixed).expect("router")).await;
    let c = client();
    let tools =
        json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]});
    let cases = [
        (chat_body("auto", "hi", json!({})), "small"),
        (chat_body("auto", &words(300), json!({})), "large"),
        (chat_body("auto", "hi", tools.clone()), "large"),
        (chat_body("auto", "hi", json!({"max_tokens": 500})), "large"),
    ];
    for (body, want) in cases {
        let reply = send(&c, post(r.addr, "/v1/chat/completions", &body)).await;
        assert_eq!(
            reply.status,
            200,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        assert_eq!(
            reply.header("x-lookahead-model").as_deref(),
            Some(want),
            "{body}"
        );
    }
    assert_eq!(
        small.handler.served(),
        1,
        "only the short plain prompt reached small"
    );
    // Named, a member still refuses what it certainly cannot do, before it is called.
    let pinned = send(
        &c,
        post(
            r.addr,
            "/v1/chat/completions",
            &chat_body("small", "hi", tools),
        ),
    )
    .await;
    assert_eq!(pinned.status, 400);
    let e = &pinned.json()["error"];
    assert_eq!(
        (e["code"].as_str(), e["param"].as_str()),
        (Some("unsupported_parameter"), Some("tools"))
    );
    assert!(
        e["message"].as_str().unwrap_or("").contains("\"small\""),
        "{e}"
    );
    assert_eq!(small.handler.served(), 1);
}

#[tokio::test]
async fn a_prompt_too_long_for_every_window_is_refused_before_any_member_is_called() {
    let a = replay("a-id", &[], ReplayOptions::default()).await;
    let b = replay("b-id", &[], ReplayOptions::default()).await;
    let cfg = config_with(
        &[
            (", contextWindow: 64", "a".into()),
            (", contextWindow: 128", "b".into()),
        ],
        &[a.url(), b.url()],
    );
    let r = router(Router::new(&cfg, ScoreSource::Fixed).expect("router")).await;
    let reply = send(
        &client(),
        post(
            r.addr,
            "/v1/chat/completions",
            &chat_body("auto", &words(1000), json!({})),
        ),
    )
    .await;
    assert_eq!(reply.status, 400);
    let e = &reply.json()["error"];
    assert_eq!(e["code"], "context_length_exceeded");
    assert!(
        e["message"].as_str().unwrap_or("").contains("128 tokens"),
        "{e}"
    );
    assert_eq!(a.handler.served() + b.handler.served(), 0);
    // 100 words may fit 128 (the conservative count says no, the lower bound says maybe): the
    // largest window is tried, and answers.
    let maybe = send(
        &client(),
        post(
            r.addr,
            "/v1/chat/completions",
            &chat_body("auto", &words(100), json!({})),
        ),
    )
    .await;
    assert_eq!(maybe.status, 200);
    assert_eq!(maybe.header("x-lookahead-model").as_deref(), Some("b"));
}

#[tokio::test]
async fn a_members_context_length_refusal_is_retried_on_a_larger_window() {
    // `tight` really holds 10 words but does not say so; `roomy` declares nothing.
    let tight = replay(
        "tight-id",
        &[],
        ReplayOptions {
            context_window: Some(10),
            ..Default::default()
        },
    )
    .await;
    let roomy = replay("roomy-id", &[], ReplayOptions::default()).await;
    let cfg = config_with(
        &[("", "tight".into()), ("", "roomy".into())],
        &[tight.url(), roomy.url()],
    );
    let r = router(Router::new(&cfg, ScoreSource::Fixed).expect("router")).await;
    let c = client();
    for stream in [false, true] {
        let body = chat_body("auto", &words(30), json!({"stream": stream}));
        let reply = send(&c, post(r.addr, "/v1/chat/completions", &body)).await;
        assert_eq!(
            reply.status,
            200,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        assert_eq!(reply.header("x-lookahead-model").as_deref(), Some("roomy"));
        let fallback = reply.header("x-lookahead-fallback").unwrap_or_default();
        assert!(fallback.contains("tight:context_length"), "{fallback}");
        if stream {
            assert!(String::from_utf8_lossy(&reply.body).contains("data: [DONE]"));
        }
    }
    assert_eq!(tight.handler.served(), 2);
    assert_eq!(
        metric(
            &r,
            "lookahead_router_fallbacks_total{member=\"tight\",reason=\"context_length\"}"
        ),
        2
    );
    // Named, there is nowhere else to go: the member's own 400 reaches the client unchanged.
    let pinned = send(
        &c,
        post(
            r.addr,
            "/v1/chat/completions",
            &chat_body("tight", &words(30), json!({})),
        ),
    )
    .await;
    assert_eq!(pinned.status, 400);
    let message = pinned.json()["error"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        message.contains("maximum context length is 10 tokens"),
        "{message}"
    );
}

#[tokio::test]
async fn embeddings_go_by_name_to_members_marked_for_them() {
    let chat = replay("chat-id", &[], ReplayOptions::default()).await;
    let embed = replay("embed-id", &[], ReplayOptions::default()).await;
    let cfg = config_with(
        &[
            ("", "chat".into()),
            (", supports: [embeddings]", "embed".into()),
        ],
        &[chat.url(), embed.url()],
    );
    let r = router(Router::new(&cfg, ScoreSource::Fixed).expect("router")).await;
    let c = client();
    for model in ["auto", "embed", "embed-id"] {
        let body = json!({"model": model, "input": ["alpha", "beta"]});
        let reply = send(&c, post(r.addr, "/v1/embeddings", &body)).await;
        assert_eq!(
            reply.status,
            200,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        assert_eq!(reply.header("x-lookahead-model").as_deref(), Some("embed"));
        let v = reply.json();
        assert_eq!(v["model"], "embed-id", "the member's model id was sent");
        assert_eq!(v["data"].as_array().map(Vec::len), Some(2));
        assert_eq!(v["data"][0]["embedding"].as_array().map(Vec::len), Some(8));
    }
    let refused = send(
        &c,
        post(
            r.addr,
            "/v1/embeddings",
            &json!({"model": "chat", "input": "x"}),
        ),
    )
    .await;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.json()["error"]["code"], "unsupported_parameter");
    let missing = send(
        &c,
        post(r.addr, "/v1/embeddings", &json!({"model": "auto"})),
    )
    .await;
    assert_eq!(
        (missing.status, missing.json()["error"]["param"].as_str()),
        (400, Some("input"))
    );
    assert_eq!(chat.handler.served(), 0);
    // Chat never goes to an embeddings-only member.
    let reply = send(
        &c,
        post(
            r.addr,
            "/v1/chat/completions",
            &chat_body("embed", "hi", json!({})),
        ),
    )
    .await;
    assert_eq!(reply.status, 400);
}

#[tokio::test]
async fn the_responses_api_is_routed_like_chat() {
    let a = replay(
        "a-id",
        &[("what is up", "the sky")],
        ReplayOptions::default(),
    )
    .await;
    let b = replay("b-id", &[], ReplayOptions::default()).await;
    let cfg = config_with(&[("", "a".into()), ("", "b".into())], &[a.url(), b.url()]);
    let r = router(Router::new(&cfg, ScoreSource::Fixed).expect("router")).await;
    let c = client();
    let body = json!({"model": "auto", "instructions": "be brief",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "what is up"}]}]});
    let reply = send(&c, post(r.addr, "/v1/responses", &body)).await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.header("x-lookahead-model").as_deref(), Some("a"));
    let v = reply.json();
    assert_eq!(
        (v["object"].as_str(), v["model"].as_str()),
        (Some("response"), Some("a-id"))
    );
    assert_eq!(v["output"][0]["content"][0]["text"], "the sky");
    let streamed = send(
        &c,
        post(
            r.addr,
            "/v1/responses",
            &json!({"model": "auto", "input": "what is up", "stream": true}),
        ),
    )
    .await;
    assert_eq!(streamed.status, 200);
    let text = String::from_utf8_lossy(&streamed.body);
    assert!(text.contains("event: response.completed"), "{text}");
    let bad = send(
        &c,
        post(
            r.addr,
            "/v1/responses",
            &json!({"model": "auto", "max_output_tokens": -1, "input": "x"}),
        ),
    )
    .await;
    assert_eq!(
        (bad.status, bad.json()["error"]["param"].as_str()),
        (400, Some("max_output_tokens"))
    );
}
