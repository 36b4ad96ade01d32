//! The replay backend over the real routing dataset (skips with a reason when it is absent).

mod common;

use std::sync::Arc;

use common::*;
use lookahead_data::Dataset;
use lookahead_router::replay::{ReplayBook, ReplayOptions, ReplayServer, FALLBACK_TEXT};

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
    let server = start(Arc::new(ReplayServer::new(book, ReplayOptions::default()))).await;
    let c = client();
    let reply = send(&c, chat(server.addr, model, &record.prompt, false)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-replay-hit").as_deref(), Some("true"));
    assert_eq!(
        reply.json()["choices"][0]["message"]["content"],
        recorded.as_str()
    );
    let reply = send(
        &c,
        chat(server.addr, model, "a prompt nobody recorded", false),
    )
    .await;
    assert_eq!(
        reply.json()["choices"][0]["message"]["content"],
        FALLBACK_TEXT
    );
    assert_eq!(server.handler.hits(), 1);
}
