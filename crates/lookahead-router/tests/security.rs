//! Security behaviour of the router over real loopback HTTP (hyper client -> router -> replay or
//! recording members): API keys (wrong keys get OpenAI-style 401s, good keys pass, the router's key
//! never reaches a member), and logs that carry neither prompts nor keys. (Logs: see
//! `no_secrets_in_logs.rs`.)
#![cfg(test)]

mod common;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use lookahead_router::scoring::ScoreSource;
use lookahead_router::Router;

const KEY: &str = "sk-live-SECRETKEY-4b1e";

fn keys_file(keys: &[&str]) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().expect("keys file");
    std::fs::write(
        f.path(),
        format!("# rotated monthly\n{}\n", keys.join("\n")),
    )
    .expect("write");
    f
}

fn with_auth(mut req: http::Request<Full<Bytes>>, value: &str) -> http::Request<Full<Bytes>> {
    req.headers_mut()
        .insert("authorization", value.parse().expect("header"));
    req
}

/// Keys from a file (comments skipped, several keys): each configured key passes, anything else
/// gets a 401 OpenAI-style error, and the router's key is not forwarded to the member.
#[tokio::test]
async fn api_keys_gate_requests_and_stay_at_the_router() {
    let seen = Arc::new(Mutex::new(Vec::<Option<String>>::new()));
    let recorded = seen.clone();
    let member = start_service(tower::service_fn(move |req| {
        std::future::ready(Ok::<_, std::convert::Infallible>(recording_member(
            &recorded, req,
        )))
    }))
    .await;
    let keys = keys_file(&["sk-one", KEY]);
    let cfg = config(
        &[("general", "General-7B", member.url())],
        &format!(
            "  method: fixed\n  defaultModel: general\n  apiKeysFile: {}\n",
            keys.path().display()
        ),
    );
    let r = router(Router::new(&cfg, ScoreSource::Fixed).expect("router")).await;
    let c = client();
    for good in ["Bearer sk-one", &format!("Bearer {KEY}")] {
        let reply = send(&c, with_auth(chat(r.addr, "auto", "hi", false), good)).await;
        assert_eq!(reply.status, 200, "{good}");
        let models = send(&c, with_auth(get(r.addr, "/v1/models"), good)).await;
        assert_eq!(models.status, 200);
    }
    for bad in [
        "Bearer sk-on",
        "Bearer sk-onesk-one",
        "bearer sk-one",
        "Token sk-one",
        "sk-one",
        "Bearer # rotated monthly",
        "Bearer ",
    ] {
        let reply = send(&c, with_auth(chat(r.addr, "auto", "hi", false), bad)).await;
        assert_eq!(reply.status, 401, "{bad:?}");
        let e = &reply.json()["error"];
        assert_eq!(e["code"], "invalid_api_key", "{bad:?}");
        assert_eq!(e["type"], "invalid_request_error");
        assert!(e["message"].as_str().is_some_and(|m| !m.contains("sk-")));
    }
    let none = send(&c, chat(r.addr, "auto", "hi", false)).await;
    assert_eq!(none.status, 401);
    let seen = seen.lock().expect("seen").clone();
    assert_eq!(
        seen.len(),
        2,
        "only authenticated requests reached the member"
    );
    assert!(
        seen.iter().all(Option::is_none),
        "the router's API key was forwarded to the member: {seen:?}"
    );
}

/// A member that records the `authorization` header it receives and answers a chat completion.
fn recording_member(
    seen: &Mutex<Vec<Option<String>>>,
    req: http::Request<hyper::body::Incoming>,
) -> http::Response<lookahead_router::body::RespBody> {
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    seen.lock().expect("seen").push(auth);
    lookahead_router::body::json_response(
        http::StatusCode::OK,
        &serde_json::json!({
            "id": "x", "object": "chat.completion", "created": 0, "model": "General-7B",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "ok"}}],
        }),
    )
}
