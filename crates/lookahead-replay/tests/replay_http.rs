//! The replay server over loopback HTTP with an in-memory book: recorded and fallback answers,
//! SSE streaming, injected failures, OpenAI-style errors and graceful shutdown.
#![cfg(test)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lookahead_client::{ChatClient, ChatEndpoint};
use lookahead_replay::{serve, ReplayBook, ReplayOptions, ReplayServer, FALLBACK_TEXT};
use serde_json::{json, Value};

async fn start(
    options: ReplayOptions,
) -> (
    SocketAddr,
    Arc<ReplayServer>,
    tokio::sync::oneshot::Sender<()>,
) {
    let mut book = ReplayBook::new("Math-7B");
    book.insert("what is 2 + 2?", "It is 4.".into());
    let server = Arc::new(ReplayServer::new(book, options));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    tokio::spawn(serve(
        listener,
        server.clone(),
        shutdown,
        Duration::from_secs(1),
    ));
    (addr, server, stop)
}

fn chat(prompt: &str, stream: bool) -> Value {
    json!({"model": "Math-7B", "stream": stream, "messages": [{"role": "user", "content": prompt}]})
}

#[tokio::test]
async fn answers_recorded_prompts_and_falls_back_on_others() {
    let (addr, server, _stop) = start(ReplayOptions::default()).await;
    let client = ChatClient::new(Duration::from_secs(10));
    let endpoint = ChatEndpoint::new(&format!("http://{addr}/v1/"));
    let text = client
        .complete(
            &endpoint,
            "Math-7B",
            Some("be brief"),
            " what is 2 + 2?\n",
            16,
        )
        .await
        .expect("answer");
    assert_eq!(text, "It is 4.", "prompts match trimmed");
    let text = client
        .complete(&endpoint, "Math-7B", None, "unknown", 16)
        .await
        .expect("answer");
    assert_eq!(text, FALLBACK_TEXT);
    assert_eq!((server.served(), server.hits()), (2, 1));
}

#[tokio::test]
async fn streams_the_answer_as_sse_chunks() {
    let options = ReplayOptions {
        chunk_chars: 3,
        ..ReplayOptions::default()
    };
    let (addr, _server, _stop) = start(options).await;
    let client = ChatClient::new(Duration::from_secs(10));
    let endpoint = ChatEndpoint::new(&format!("http://{addr}/v1"));
    let reply = client
        .send(&endpoint, &chat("what is 2 + 2?", true))
        .await
        .expect("reply");
    assert_eq!(reply.header("content-type"), Some("text/event-stream"));
    let body = String::from_utf8(reply.body.to_vec()).expect("utf-8");
    let events: Vec<&str> = body.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.last(), Some(&"data: [DONE]"));
    let text: String = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e.strip_prefix("data: ")?).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(text, "It is 4.");
    // role event + ceil(8 / 3) pieces + stop event + [DONE]
    assert_eq!(events.len(), 1 + 3 + 1 + 1, "{body}");
}

/// The replay server's stream ends with OpenAI's usage chunk (no choices) before `[DONE]` only
/// when the request asks for it with `stream_options.include_usage`.
#[tokio::test]
async fn streams_a_usage_chunk_only_when_asked() {
    let (addr, _server, _stop) = start(ReplayOptions::default()).await;
    let client = ChatClient::new(Duration::from_secs(10));
    let endpoint = ChatEndpoint::new(&format!("http://{addr}/v1"));
    let events = |body: &[u8]| -> Vec<String> {
        String::from_utf8(body.to_vec())
            .expect("utf-8")
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(str::to_string)
            .collect()
    };
    let mut asked = chat("what is 2 + 2?", true);
    asked["stream_options"] = json!({"include_usage": true});
    let reply = client.send(&endpoint, &asked).await.expect("reply");
    let with = events(&reply.body);
    let usage: Value = serde_json::from_str(
        with[with.len() - 2]
            .strip_prefix("data: ")
            .expect("data event"),
    )
    .expect("json");
    assert_eq!(usage["choices"], json!([]));
    // Whitespace words: "what is 2 + 2?" is 5, "It is 4." is 3.
    assert_eq!(usage["usage"]["prompt_tokens"], 5);
    assert_eq!(usage["usage"]["completion_tokens"], 3);
    assert_eq!(with.last().map(String::as_str), Some("data: [DONE]"));
    let reply = client
        .send(&endpoint, &chat("what is 2 + 2?", true))
        .await
        .expect("reply");
    let without = events(&reply.body);
    assert_eq!(without.len() + 1, with.len());
    assert!(
        without.iter().all(|e| !e.contains("\"usage\"")),
        "{without:?}"
    );
}

#[tokio::test]
async fn injected_failures_and_bad_requests_get_openai_errors() {
    let options = ReplayOptions {
        failure_rate: 1.0,
        ..ReplayOptions::default()
    };
    let (addr, _server, stop) = start(options).await;
    let client = ChatClient::new(Duration::from_secs(10));
    let endpoint = ChatEndpoint::new(&format!("http://{addr}/v1"));
    let reply = client
        .send(&endpoint, &chat("what is 2 + 2?", false))
        .await
        .expect("reply");
    assert_eq!(reply.status, 503);
    let err = client
        .complete(&endpoint, "Math-7B", None, "x", 1)
        .await
        .expect_err("503");
    assert!(err.is_transient(), "{err}");
    let reply = client
        .send(&endpoint, &json!({"messages": []}))
        .await
        .expect("reply");
    assert_eq!(reply.status, 400);
    let body: Value = serde_json::from_slice(&reply.body).expect("json");
    assert_eq!(body["error"]["code"], "missing_required_parameter");
    let wrong_path = ChatEndpoint::new(&format!("http://{addr}/v2"));
    let reply = client.send(&wrong_path, &json!({})).await.expect("reply");
    assert_eq!(reply.status, 404);
    let body: Value = serde_json::from_slice(&reply.body).expect("json");
    assert_eq!(body["error"]["code"], "unknown_url");

    stop.send(()).expect("server running");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = client.send(&endpoint, &chat("x", false)).await;
    assert!(
        matches!(after, Err(ref e) if e.is_transient()),
        "stopped accepting: {after:?}"
    );
}
