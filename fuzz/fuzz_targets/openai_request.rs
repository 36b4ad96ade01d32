//! The router's OpenAI request parser (`lookahead_router::openai::parse`) on arbitrary bytes: it
//! must return a request or an `ApiError` with a 4xx status, never panic, and bound the prompt.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lookahead_router::openai::{parse, Endpoint, MAX_SCORED_CHARS};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the endpoint so both prompt extractors are explored.
    let (endpoint, body) = match data.split_first() {
        Some((b, rest)) if b % 2 == 0 => (Endpoint::Chat, rest),
        Some((_, rest)) => (Endpoint::Completions, rest),
        None => (Endpoint::Chat, data),
    };
    match parse(endpoint, body) {
        Ok(r) => {
            assert!(!r.model.is_empty());
            assert!(r.prompt.chars().count() <= MAX_SCORED_CHARS);
        }
        Err(e) => {
            assert!(e.status.is_client_error());
            assert!(!e.message.is_empty());
        }
    }
});
