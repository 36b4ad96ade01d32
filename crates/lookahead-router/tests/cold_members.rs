//! Members with no ready replica (a Deployment scaled to zero, or starting): the real router
//! over loopback HTTP in front of replay members (`lookahead-replay`), some of them on addresses
//! where nothing listens yet, so connections are refused as a Service without ready endpoints
//! refuses them. What autoscaling needs from the router (docs/autoscaling.md): no client error
//! while another member can answer, wanted demand counted, routing back once the member is up,
//! a bounded wait when nobody is up, and in-flight counts that cover whole streams.
#![cfg(test)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use lookahead_replay::{ReplayBook, ReplayOptions, ReplayServer};
use lookahead_router::scoring::ScoreSource;
use lookahead_router::{Router, ScorerSlot};

const TRAINED: &str = "  method: lookahead-lite\n  artifact: /unused\n  defaultModel: general\n";

fn router_for(members: &[(&str, &str, String)], extra: &str) -> Router {
    let cfg = config(members, &format!("{TRAINED}{extra}"));
    let scorer = KeywordScorer::new(&[("Math-7B", "integral"), ("General-7B", "zzz")]);
    let source = ScoreSource::InProcess(Arc::new(ScorerSlot::new(Arc::new(scorer), "t".into())));
    Router::new(&cfg, source).expect("router")
}

fn member(model: &str, opts: ReplayOptions) -> ReplayServer {
    ReplayServer::new(ReplayBook::new(model), opts)
}

#[tokio::test]
async fn a_cold_best_member_is_passed_over_counted_as_wanted_and_routed_to_once_up() {
    let math_addr = free_addr();
    let general = replay("General-7B", &[], Default::default()).await;
    let r = router(router_for(
        &[
            ("math", "Math-7B", format!("http://{math_addr}")),
            ("general", "General-7B", general.url()),
        ],
        "",
    ))
    .await;
    let c = client();
    for _ in 0..2 {
        let reply = send(&c, chat(r.addr, "auto", "an integral", false)).await;
        assert_eq!(
            reply.status, 200,
            "no client error while general can answer"
        );
        assert_eq!(
            reply.header("x-lookahead-model").as_deref(),
            Some("general")
        );
        let fallback = reply.header("x-lookahead-fallback").unwrap_or_default();
        assert!(fallback.contains("cold:math"), "{fallback}");
    }
    let demand = r.handler.demand_report();
    assert_eq!(
        (demand.members[0].wanted, demand.members[0].cold),
        (2, true)
    );
    assert_eq!(demand.members[1].requests, 2);

    // The member wakes up where its Service was: routing returns to it within a probe interval.
    let math = start_replay_at(math_addr, member("Math-7B", Default::default())).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let answered_by_math = loop {
        let reply = send(&c, chat(r.addr, "auto", "an integral", false)).await;
        assert_eq!(reply.status, 200);
        if reply.header("x-lookahead-model").as_deref() == Some("math") {
            break reply;
        }
        assert!(Instant::now() < deadline, "routing never returned to math");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(answered_by_math.header("x-lookahead-fallback"), None);
    assert!(!r.handler.demand_report().members[0].cold);
    assert!(math.handler.served() >= 1);
    let metrics =
        String::from_utf8_lossy(&send(&c, get(r.addr, "/metrics")).await.body).into_owned();
    assert!(
        metrics.contains("lookahead_router_member_wanted_total{member=\"math\"}"),
        "{metrics}"
    );
    let demand_json = send(&c, get(r.addr, "/demand")).await;
    let parsed: lookahead_api::demand::DemandReport =
        serde_json::from_slice(&demand_json.body).expect("demand JSON");
    assert!(parsed.members[0].wanted >= 2);
}

#[tokio::test]
async fn a_request_waits_while_no_member_is_ready_and_is_answered_once_one_wakes() {
    let (math_addr, general_addr) = (free_addr(), free_addr());
    let r = router(router_for(
        &[
            ("math", "Math-7B", format!("http://{math_addr}")),
            ("general", "General-7B", format!("http://{general_addr}")),
        ],
        "  coldStartTimeout: 20s\n",
    ))
    .await;
    let addr = r.addr;
    let t0 = Instant::now();
    let pending =
        tokio::spawn(
            async move { send(&client(), chat(addr, "auto", "an integral", false)).await },
        );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!pending.is_finished(), "held while nothing is ready");
    let _math = start_replay_at(math_addr, member("Math-7B", Default::default())).await;
    let reply = pending.await.expect("join");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-lookahead-model").as_deref(), Some("math"));
    assert!(t0.elapsed() >= Duration::from_millis(800));
    assert_eq!(
        r.handler.demand_report().members[0].wanted,
        1,
        "wanted once per request"
    );
}

#[tokio::test]
async fn with_no_member_ready_for_the_whole_cold_start_timeout_the_answer_is_503_with_retry_after()
{
    let r = router(router_for(
        &[
            ("math", "Math-7B", format!("http://{}", free_addr())),
            ("general", "General-7B", format!("http://{}", free_addr())),
        ],
        "  coldStartTimeout: 300ms\n",
    ))
    .await;
    let reply = send(&client(), chat(r.addr, "math", "an integral", false)).await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("retry-after").as_deref(), Some("5"));
    let body: serde_json::Value = serde_json::from_slice(&reply.body).expect("json");
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    let fallback = reply.header("x-lookahead-fallback").unwrap_or_default();
    assert!(fallback.contains("cold:math"), "{fallback}");
    assert_eq!(
        metric(
            &r,
            "lookahead_router_requests_total{member=\"none\",outcome=\"no_ready_member\"}"
        ),
        1
    );
}

#[tokio::test]
async fn a_stream_is_in_flight_at_its_member_until_its_last_byte() {
    let slow = ReplayOptions {
        chunk_delay: Duration::from_millis(150),
        chunk_chars: 4,
        ..Default::default()
    };
    let general = start_replay(member("General-7B", slow)).await;
    let r = router(router_for(&[("general", "General-7B", general.url())], "")).await;
    let addr = r.addr;
    let stream = tokio::spawn(async move {
        send(&client(), chat(addr, "general", "tell me a story", true)).await
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let during = r.handler.demand_report();
    assert_eq!(during.members[0].in_flight, 1, "{during:?}");
    assert!(during.in_flight >= 1);
    let reply = stream.await.expect("join");
    assert_eq!(reply.status, 200);
    let after = r.handler.demand_report();
    assert_eq!(
        (after.members[0].in_flight, after.members[0].requests),
        (0, 1)
    );
}
