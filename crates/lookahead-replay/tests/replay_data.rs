//! The replay backend over the real routing dataset (skips with a reason when it is absent).
#![cfg(test)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lookahead_client::{ChatClient, ChatEndpoint};
use lookahead_data::Dataset;
use lookahead_replay::{serve, ReplayBook, ReplayOptions, ReplayServer, FALLBACK_TEXT};
use serde_json::{json, Value};

/// The routing dataset, when present (CI has it).
fn data_dir() -> Option<PathBuf> {
    lookahead_data::locate::shared_dataset()
        .map_err(|why| eprintln!("SKIP: {why}"))
        .ok()
}

#[tokio::test]
async fn replays_recorded_responses_of_one_model_over_http() {
    let Some(dir) = data_dir() else {
        eprintln!("SKIP: routing dataset not found (set LOOKAHEAD_DATA or provide ../shared/data/routing)");
        return;
    };
    let model = "Yi-1.5-34B-Chat";
    let data = Dataset::open(&dir).expect("dataset");
    let record = data
        .records("GSM8K")
        .expect("GSM8K")
        .next()
        .expect("a record")
        .expect("valid record");
    let recorded = record.responses[model].text.clone();
    let book = ReplayBook::load(&dir, model).expect("book");
    assert!(book.len() > 5000, "every source read: {}", book.len());
    let server = Arc::new(ReplayServer::new(book, ReplayOptions::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(serve(
        listener,
        server.clone(),
        std::future::pending(),
        Duration::ZERO,
    ));
    let client = ChatClient::new(Duration::from_secs(20));
    let endpoint = ChatEndpoint::new(&format!("http://{addr}/v1"));
    let chat = |prompt: &str| json!({"model": model, "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": prompt}]});
    let reply = client
        .send(&endpoint, &chat(&record.prompt))
        .await
        .expect("reply");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-replay-hit"), Some("true"));
    let body: Value = serde_json::from_slice(&reply.body).expect("json");
    assert_eq!(body["choices"][0]["message"]["content"], recorded.as_str());
    let reply = client
        .send(&endpoint, &chat("a prompt nobody recorded"))
        .await
        .expect("reply");
    let body: Value = serde_json::from_slice(&reply.body).expect("json");
    assert_eq!(body["choices"][0]["message"]["content"], FALLBACK_TEXT);
    assert_eq!(server.hits(), 1);
}
