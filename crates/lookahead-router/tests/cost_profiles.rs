//! Cost profiles (`auto:NAME`) and the `x-lookahead-cost-weight` override header, through the real
//! router over loopback HTTP (hyper client -> router -> `lookahead-replay` members), scored by the
//! deterministic keyword scorer of `tests/common`: an expensive member the scorer prefers, a cheap
//! one it rates lower, so the weight decides who answers.
#![cfg(test)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use lookahead_router::scoring::ScoreSource;
use lookahead_router::{Router, ScorerSlot};

/// `big` (price 10 per MTok) scores 0.9 on "hard" prompts, `small` (price 0.1) 0.09: with weight
/// w the utilities are 0.9 - 10 w and 0.09 - 0.1 w, so `small` wins from w > 0.0818.
fn yaml(big: &str, small: &str, policy: &str) -> lookahead_api::RouterConfig {
    let y = format!(
        "listen: 127.0.0.1:0\nmembers:\n\
         \x20 - {{ name: big, modelId: Big-70B, baseUrl: \"{big}/v1\", price: {{ inputPerMTok: 10, outputPerMTok: 10 }} }}\n\
         \x20 - {{ name: small, modelId: Small-7B, baseUrl: \"{small}/v1\", price: {{ inputPerMTok: 0.1, outputPerMTok: 0.1 }} }}\n\
         policy:\n  method: lookahead-lite\n  artifact: /unused\n  defaultModel: small\n{policy}"
    );
    serde_yaml::from_str(&y).expect("test config")
}

const PROFILES: &str =
    "  costWeight: 0.01\n  profiles: { economy: 0.1, premium: 0 }\n  maxCostWeight: 1\n";

fn keyword(delay: Duration) -> ScoreSource {
    let mut scorer = KeywordScorer::new(&[("Big-70B", "hard"), ("Small-7B", "zzz")]);
    scorer.delay = delay;
    ScoreSource::InProcess(Arc::new(ScorerSlot::new(Arc::new(scorer), "test".into())))
}

fn with_weight(
    mut req: http::Request<http_body_util::Full<bytes::Bytes>>,
    w: &str,
) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    req.headers_mut().insert(
        "x-lookahead-cost-weight",
        http::HeaderValue::from_str(w).expect("header value"),
    );
    req
}

#[tokio::test]
async fn a_profile_ranks_with_its_weight_and_the_header_overrides_it_within_the_bound() {
    let big = replay("Big-70B", &[], Default::default()).await;
    let small = replay("Small-7B", &[], Default::default()).await;
    let cfg = yaml(&big.url(), &small.url(), PROFILES);
    let r = router(Router::new(&cfg, keyword(Duration::ZERO)).expect("router")).await;
    let c = client();
    let ask = |model: &str| chat(r.addr, model, "a hard question", false);

    // auto: costWeight 0.01 -> big (0.8 vs 0.089).
    let reply = send(&c, ask("auto")).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.header("x-lookahead-model").as_deref(), Some("big"));
    assert_eq!(
        reply.header("x-lookahead-profile").as_deref(),
        Some("default")
    );
    assert_eq!(
        reply.header("x-lookahead-cost-weight").as_deref(),
        Some("0.01")
    );
    assert_eq!(
        reply.header("x-lookahead-scores").as_deref(),
        Some("big=0.800,small=0.089")
    );

    // auto:economy: 0.1 -> small (-0.1 vs 0.08); the member still sees its own modelId.
    let reply = send(&c, ask("auto:economy")).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.header("x-lookahead-model").as_deref(), Some("small"));
    assert_eq!(
        reply.header("x-lookahead-profile").as_deref(),
        Some("economy")
    );
    assert_eq!(
        reply.header("x-lookahead-cost-weight").as_deref(),
        Some("0.1")
    );
    assert_eq!(reply.json()["model"], "Small-7B");

    // The header wins over the profile: economy with 0.05 -> big again.
    let reply = send(&c, with_weight(ask("auto:economy"), "0.05")).await;
    assert_eq!(reply.header("x-lookahead-model").as_deref(), Some("big"));
    assert_eq!(
        reply.header("x-lookahead-profile").as_deref(),
        Some("economy")
    );
    assert_eq!(
        reply.header("x-lookahead-cost-weight").as_deref(),
        Some("0.05")
    );
    // ... and over the plain alias: auto with 1 (the bound itself) -> small.
    let reply = send(&c, with_weight(ask("auto"), "1")).await;
    assert_eq!(reply.header("x-lookahead-model").as_deref(), Some("small"));

    // A member named explicitly: unscored, no cost headers.
    let reply = send(&c, ask("big")).await;
    assert_eq!(reply.header("x-lookahead-model").as_deref(), Some("big"));
    assert!(reply.header("x-lookahead-cost-weight").is_none());

    let m = |s: &str| metric(&r, s);
    assert_eq!(
        m("lookahead_router_cost_profile_total{profile=\"default\",weight=\"profile\"}"),
        1
    );
    assert_eq!(
        m("lookahead_router_cost_profile_total{profile=\"default\",weight=\"header\"}"),
        1
    );
    assert_eq!(
        m("lookahead_router_cost_profile_total{profile=\"economy\",weight=\"profile\"}"),
        1
    );
    assert_eq!(
        m("lookahead_router_cost_profile_total{profile=\"economy\",weight=\"header\"}"),
        1
    );
    let text = r.handler.render_metrics();
    assert!(
        text.contains(
            "lookahead_router_cost_profile_total{profile=\"premium\",weight=\"profile\"} 0"
        ),
        "every profile's series exists from the start"
    );
}

#[tokio::test]
async fn unknown_profiles_and_bad_override_headers_get_openai_errors_and_reach_no_member() {
    let big = replay("Big-70B", &[], Default::default()).await;
    let small = replay("Small-7B", &[], Default::default()).await;
    let cfg = yaml(&big.url(), &small.url(), PROFILES);
    let r = router(Router::new(&cfg, keyword(Duration::ZERO)).expect("router")).await;
    let c = client();
    let ask = |model: &str| chat(r.addr, model, "a hard question", false);

    // An unknown profile: the router's unknown-model error, listing the profiles.
    let reply = send(&c, ask("auto:cheapest")).await;
    assert_eq!(reply.status, 404, "{:?}", reply.body);
    let e = &reply.json()["error"];
    assert_eq!(e["code"], "model_not_found");
    assert_eq!(e["param"], "model");
    let message = e["message"].as_str().expect("message");
    assert!(
        message.contains("auto:economy") && message.contains("auto:premium"),
        "{message}"
    );

    for (model, bad) in [
        ("auto", "1.5"),
        ("auto:economy", "-0.1"),
        ("auto", "cheap"),
        ("auto", "NaN"),
        ("big", "2"),
    ] {
        let reply = send(&c, with_weight(ask(model), bad)).await;
        assert_eq!(reply.status, 400, "{model} {bad}: {:?}", reply.body);
        let e = &reply.json()["error"];
        assert_eq!(e["type"], "invalid_request_error");
        assert_eq!(e["code"], "invalid_value");
        assert_eq!(e["param"], "x-lookahead-cost-weight", "{bad}");
        let message = e["message"].as_str().expect("message");
        assert!(message.contains("from 0 to 1"), "{message}");
    }
    assert_eq!(big.handler.served(), 0, "no bad request reached a member");
    assert_eq!(small.handler.served(), 0, "no bad request reached a member");

    // Without maxCostWeight the override is off: the header is refused, naming the setting.
    let cfg = yaml(&big.url(), &small.url(), "  profiles: { economy: 0.1 }\n");
    let r = router(Router::new(&cfg, keyword(Duration::ZERO)).expect("router")).await;
    let reply = send(
        &c,
        with_weight(chat(r.addr, "auto", "a hard question", false), "0"),
    )
    .await;
    assert_eq!(reply.status, 400, "{:?}", reply.body);
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(message.contains("maxCostWeight"), "{message}");
    assert_eq!(
        metric(
            &r,
            "lookahead_router_rejected_total{code=\"invalid_value\"}"
        ),
        1
    );
}

#[tokio::test]
async fn fail_open_and_the_fixed_method_ignore_the_weight_but_say_which_profile_was_asked() {
    let big = replay("Big-70B", &[], Default::default()).await;
    let small = replay("Small-7B", &[], Default::default()).await;
    // A scorer slower than scoreTimeout: fails open to the default member whatever the weight.
    let cfg = yaml(
        &big.url(),
        &small.url(),
        &format!("{PROFILES}  scoreTimeout: 50ms\n"),
    );
    let r = router(Router::new(&cfg, keyword(Duration::from_millis(400))).expect("router")).await;
    let c = client();
    let reply = send(
        &c,
        with_weight(chat(r.addr, "auto:premium", "a hard question", false), "0"),
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.header("x-lookahead-model").as_deref(), Some("small"));
    assert_eq!(
        reply.header("x-lookahead-fallback").as_deref(),
        Some("scorer_timeout")
    );
    assert_eq!(
        reply.header("x-lookahead-profile").as_deref(),
        Some("premium")
    );
    assert!(reply.header("x-lookahead-scores").is_none());

    // The fixed method: always the default member, unscored, profile or not.
    let mut cfg = yaml(&big.url(), &small.url(), PROFILES);
    cfg.policy.method = lookahead_api::policy::RouterMethod::Fixed;
    cfg.policy.artifact = None;
    let r = router(Router::new(&cfg, ScoreSource::Fixed).expect("router")).await;
    let reply = send(&c, chat(r.addr, "auto:premium", "a hard question", false)).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.header("x-lookahead-model").as_deref(), Some("small"));
    assert!(reply.header("x-lookahead-fallback").is_none());
    assert_eq!(
        reply.header("x-lookahead-cost-weight").as_deref(),
        Some("0")
    );
}
