//! The router never logs prompts or API keys (the clients' nor a member's own `apiKeyFile`): requests over real loopback HTTP (hyper client ->
//! router -> replay members) through every logging path, with a test subscriber that records
//! every span field, span update and event at DEBUG (the CLI's default filter is `info`, so this is
//! stricter than what ships). One test per binary: tracing's callsite interest cache is global, so
//! a scoped subscriber must not race other tests' threads.
#![cfg(test)]

mod common;

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use lookahead_replay::ReplayOptions;
use lookahead_router::scoring::ScoreSource;
use lookahead_router::{Router, ScorerSlot};

const PROMPT: &str = "my-secret-prompt-7f3a9 about an integral";
const KEY: &str = "sk-live-SECRETKEY-4b1e";
const MEMBER_KEY: &str = "sk-member-MEMBERSECRET-9c2d";
const TRAINED: &str = "  method: lookahead-lite\n  artifact: /unused\n  defaultModel: general\n";

/// Records the text of every span and event, with all fields.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<String>>);

struct FieldText<'a>(&'a mut String);

impl tracing::field::Visit for FieldText<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={:?}", field.name(), value);
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        let _ = write!(self.0, " {}={}", field.name(), value);
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, m: &tracing::Metadata<'_>) -> bool {
        *m.level() <= tracing::Level::DEBUG
    }
    fn new_span(&self, attrs: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut s = self.0.lock().expect("log");
        let _ = write!(s, "\nspan {}", attrs.metadata().name());
        attrs.record(&mut FieldText(&mut s));
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        let mut s = self.0.lock().expect("log");
        s.push_str("\nrecord");
        values.record(&mut FieldText(&mut s));
    }
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut s = self.0.lock().expect("log");
        let _ = write!(
            s,
            "\n{} {}",
            event.metadata().level(),
            event.metadata().target()
        );
        event.record(&mut FieldText(&mut s));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

fn keyword_source() -> ScoreSource {
    let scorer = KeywordScorer::new(&[("Math-7B", "integral"), ("General-7B", "zzz")]);
    ScoreSource::InProcess(Arc::new(ScorerSlot::new(Arc::new(scorer), "test".into())))
}

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

/// The tenants' paths (`crate::auth`, `crate::limits`, `crate::usage`): keys from a
/// Secret-shaped directory (loaded, then reloaded after a change), metered buffered and streamed
/// answers, a 429 from the key's limit. Neither the logs nor `/metrics` carry the key.
async fn tenant_paths(
    c: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
) {
    // A member of its own: the test's `healthy` member must see only its own key last.
    let member = replay("General-7B", &[], Default::default()).await;
    let dir = tempfile::tempdir().expect("keys dir");
    std::fs::write(dir.path().join("team-a"), format!("{KEY}\n")).expect("write");
    let cfg = config(
        &[("general", "General-7B", member.url())],
        &format!(
            "  method: fixed\n  defaultModel: general\n  auth:\n    keysDir: {}\n    limits: {{ requestsPerMinute: 2 }}\n",
            dir.path().display()
        ),
    );
    let r = router(
        Router::new(&cfg, ScoreSource::Fixed)
            .expect("router")
            .with_keys_reload_interval(std::time::Duration::from_millis(20)),
    )
    .await;
    let bearer = format!("Bearer {KEY}");
    for (stream, status) in [(false, 200), (true, 200), (false, 429)] {
        let reply = send(c, with_auth(chat(r.addr, "auto", PROMPT, stream), &bearer)).await;
        assert_eq!(reply.status, status, "{:?}", reply.body);
        assert!(!String::from_utf8_lossy(&reply.body).contains("SECRETKEY"));
    }
    std::fs::write(dir.path().join("team-b"), "sk-live-SECRETKEY-other\n").expect("write");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let metrics = r.handler.render_metrics();
    assert!(metrics.contains("key=\"team-a\""), "{metrics}");
    assert!(
        !metrics.contains("SECRETKEY"),
        "API key in /metrics:\n{metrics}"
    );
}

/// Requests through every logging path (scored and routed, a member failing and retried,
/// streaming, an unknown model, a wrong key, and the tenants' paths), with a test subscriber as the thread's default:
/// the prompt and the API key appear nowhere in the captured spans and events.
#[tokio::test]
async fn the_router_logs_neither_prompts_nor_api_keys() {
    let log = Capture::default();
    let _guard = tracing::subscriber::set_default(log.clone());
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
    let keys = keys_file(&[KEY]);
    let member_key = tempfile::NamedTempFile::new().expect("member key file");
    std::fs::write(member_key.path(), MEMBER_KEY).expect("write");
    let mut cfg = config(
        &[
            ("math", "Math-7B", failing.url()),
            ("general", "General-7B", healthy.url()),
        ],
        &format!("{TRAINED}  apiKeysFile: {}\n", keys.path().display()),
    );
    // Both members have their own key: the failing one's attempts and the answering one's.
    for m in &mut cfg.members {
        m.api_key_file = Some(member_key.path().to_owned());
    }
    let r = router(Router::new(&cfg, keyword_source()).expect("router")).await;
    let c = client();
    let bearer = format!("Bearer {KEY}");
    for stream in [false, true] {
        let reply = send(&c, with_auth(chat(r.addr, "auto", PROMPT, stream), &bearer)).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        assert!(
            reply.header("x-lookahead-fallback").is_some(),
            "the retry path ran"
        );
    }
    let unknown = send(&c, with_auth(chat(r.addr, PROMPT, PROMPT, false), &bearer)).await;
    assert_eq!(unknown.status, 404);
    let wrong = send(
        &c,
        with_auth(chat(r.addr, "auto", PROMPT, false), "Bearer sk-wrong"),
    )
    .await;
    assert_eq!(wrong.status, 401);
    tenant_paths(&c).await;
    drop(_guard);
    let text = log.0.lock().expect("log").clone();
    assert!(
        text.contains("span request") && text.contains("upstream attempt failed"),
        "the subscriber saw the router's spans and events:\n{text}"
    );
    assert!(
        !text.contains("my-secret-prompt"),
        "prompt in logs:\n{text}"
    );
    assert!(
        text.contains("API keys reloaded"),
        "the key reload was logged:\n{text}"
    );
    assert!(!text.contains("SECRETKEY"), "API key in logs:\n{text}");
    assert!(
        healthy.handler.last_authorization().as_deref() == Some(&*format!("Bearer {MEMBER_KEY}")),
        "the member got its key"
    );
    assert!(
        !text.contains("MEMBERSECRET"),
        "member key in logs:\n{text}"
    );
    assert!(!text.contains("sk-wrong"), "presented key in logs:\n{text}");
}
