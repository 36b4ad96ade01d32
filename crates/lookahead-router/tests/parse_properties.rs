//! Property-style robustness of the router's OpenAI request parser (`openai::parse`, the same
//! function the `openai_request` fuzz target drives): thousands of mutated and random bodies, no
//! panic, every rejection a 4xx `ApiError` with a message, every accepted prompt bounded. Runs in
//! plain `cargo test`, so CI covers what the fuzzer explores for longer.
#![cfg(test)]

use lookahead_router::openai::{parse, Endpoint, MAX_SCORED_CHARS};

/// A small deterministic mutator (xorshift64*), so the property tests need no extra crates and
/// every failure is reproducible from its seed.
struct Mutator(u64);

impl Mutator {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// Applies 1 to 8 random edits: byte flips, inserted bytes or tokens, deletions,
    /// duplications and truncation.
    fn mutate(&mut self, input: &[u8], tokens: &[&[u8]]) -> Vec<u8> {
        let mut v = input.to_vec();
        for _ in 0..1 + self.below(8) {
            let at = self.below(v.len() + 1);
            match self.below(7) {
                0 if !v.is_empty() => {
                    let i = self.below(v.len());
                    v[i] ^= 1 << self.below(8);
                }
                1 => v.insert(at, self.next() as u8),
                2 => {
                    let t = tokens[self.below(tokens.len())];
                    v.splice(at..at, t.iter().copied());
                }
                3 if !v.is_empty() => {
                    let end = (at + self.below(16)).min(v.len());
                    v.drain(at.min(end)..end);
                }
                4 if !v.is_empty() => {
                    let start = self.below(v.len());
                    let end = (start + self.below(64)).min(v.len());
                    let chunk = v[start..end].to_vec();
                    v.splice(at..at, chunk);
                }
                5 => v.truncate(at),
                _ => {
                    let t = tokens[self.below(tokens.len())];
                    let end = (at + t.len()).min(v.len());
                    v.splice(at..end, t.iter().copied());
                }
            }
        }
        v
    }
}

const SEEDS: &[&[u8]] = &[
    br#"{"model":"auto","stream":true,"messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"x"}}]}]}"#,
    br#"{"model":"math","messages":[{"role":"user","content":"an integral"},{"role":"assistant","content":null},{"role":"tool","content":"42"}]}"#,
    br#"{"model":"auto","prompt":"complete me","max_tokens":5}"#,
    br#"{"model":"auto","prompt":[[1,2,3],"x"]}"#,
];

const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b",",
    b":",
    b"null",
    b"true",
    b"1e999",
    b"-0",
    b"\\u0000",
    b"\\ud800",
    b"\xff",
    b"\xc3\xa9",
    b"\"model\":",
    b"\"messages\":",
    b"\"prompt\":",
    b"\"content\":",
    b"\"role\":\"user\"",
    b"[[[[[[[[",
    b"]]]]]]]]",
    b"\"stream\":\"x\"",
];

fn check(endpoint: Endpoint, body: &[u8]) -> bool {
    // The one-pass parser accepts exactly the JSON objects `serde_json::Value` accepts, and the
    // body it forwards is the client's with only `model` replaced.
    let value = serde_json::from_slice::<serde_json::Value>(body);
    match parse(endpoint, body) {
        Ok(r) => {
            assert!(!r.model.is_empty(), "{:?}", String::from_utf8_lossy(body));
            assert!(r.prompt.chars().count() <= MAX_SCORED_CHARS);
            let Ok(serde_json::Value::Object(mut want)) = value else {
                panic!(
                    "accepted a body Value rejects: {:?}",
                    String::from_utf8_lossy(body)
                );
            };
            assert_eq!(
                want.get("model").and_then(|m| m.as_str()),
                Some(r.model.as_str())
            );
            want.insert("model".into(), "member \"x\"".into());
            let sent = r.body_for("member \"x\"").expect("rewritten body");
            let sent: serde_json::Value = serde_json::from_slice(&sent).expect("forwarded JSON");
            assert_eq!(sent, serde_json::Value::Object(want));
            true
        }
        Err(e) => {
            assert_eq!(
                e.code == "invalid_json",
                !value.as_ref().is_ok_and(|v| v.is_object()),
                "{e:?} for {:?}",
                String::from_utf8_lossy(body)
            );
            assert!(e.status.is_client_error(), "{e:?}");
            assert!(!e.message.is_empty());
            let j = e.to_json();
            assert!(j["error"]["code"].is_string() && j["error"]["type"].is_string());
            false
        }
    }
}

#[test]
fn mutated_bodies_never_panic_and_get_4xx_errors() {
    let mut m = Mutator::new(0x5eed_0001);
    let (mut ok, mut rejected) = (0, 0);
    for i in 0..6000 {
        let seed = SEEDS[i % SEEDS.len()];
        let body = m.mutate(seed, TOKENS);
        for endpoint in [Endpoint::Chat, Endpoint::Completions] {
            if check(endpoint, &body) {
                ok += 1;
            } else {
                rejected += 1;
            }
        }
    }
    // The mutations must explore both sides, or the test proves nothing.
    assert!(ok > 100 && rejected > 1000, "ok {ok}, rejected {rejected}");
}

/// Random JSON values in every field position the parser reads.
fn random_value(m: &mut Mutator, depth: u32) -> serde_json::Value {
    use serde_json::{json, Value};
    match m.below(if depth > 3 { 5 } else { 7 }) {
        0 => Value::Null,
        1 => Value::Bool(m.below(2) == 0),
        2 => json!(m.next() as i64),
        3 => json!(f64::from_bits(m.next() & 0x7fef_ffff_ffff_ffff)),
        4 => Value::String(
            (0..m.below(12))
                .map(|_| char::from_u32(m.below(0x3000) as u32).unwrap_or('?'))
                .collect(),
        ),
        5 => Value::Array(
            (0..m.below(4))
                .map(|_| random_value(m, depth + 1))
                .collect(),
        ),
        _ => {
            let keys = [
                "model", "role", "content", "text", "type", "messages", "prompt", "x",
            ];
            Value::Object(
                (0..m.below(4))
                    .map(|_| {
                        (
                            keys[m.below(keys.len())].to_string(),
                            random_value(m, depth + 1),
                        )
                    })
                    .collect(),
            )
        }
    }
}

const ROLES: [&str; 4] = ["user", "system", "assistant", "x"];

#[test]
fn random_field_types_never_panic() {
    let mut m = Mutator::new(0x5eed_0002);
    for _ in 0..4000 {
        let mut body = serde_json::Map::new();
        for key in ["model", "stream", "messages", "prompt"] {
            if m.below(4) != 0 {
                body.insert(key.into(), random_value(&mut m, 0));
            }
        }
        if m.below(2) == 0 {
            let msgs: Vec<_> = (0..1 + m.below(3))
                .map(|_| {
                    serde_json::json!({
                        "role": ROLES[m.below(4)],
                        "content": random_value(&mut m, 1),
                    })
                })
                .collect();
            body.insert("messages".into(), msgs.into());
        }
        let bytes = serde_json::to_vec(&body).expect("serialise");
        check(Endpoint::Chat, &bytes);
        check(Endpoint::Completions, &bytes);
    }
}
