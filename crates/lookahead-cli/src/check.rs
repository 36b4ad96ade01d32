//! `lookahead check`: one HTTP check with an exit status, for images without a shell or curl
//! (the chart's `helm test` pod). Without `--chat`, a GET of `--url` must answer 2xx (the
//! operator's `/readyz`); with `--chat`, `--url` is an OpenAI base URL (`.../v1`) and one chat
//! completion with `"model": "auto"` must answer 200 with an `x-lookahead-model` header (a
//! router's decision). Prints one line: `ok: ...`, or the error (exit status 1).

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use lookahead_client::{ChatClient, ChatEndpoint, ChatReply, ClientError};
use serde_json::json;

/// The header a Lookahead router names its chosen model in.
const MODEL_HEADER: &str = "x-lookahead-model";

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// URL to GET, or with --chat the OpenAI base URL (e.g. http://NAME-router.NS.svc:8080/v1).
    #[arg(long)]
    url: String,
    /// Send one chat completion and require a routing decision (the x-lookahead-model header).
    #[arg(long)]
    chat: bool,
    /// With --chat: the request's `model` (`auto` lets the router decide).
    #[arg(long, default_value = "auto")]
    model: String,
    /// With --chat: the user turn.
    #[arg(long, default_value = "What is 2+2?")]
    prompt: String,
    /// Tries before failing (a Service may still be getting its endpoints).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    attempts: u32,
    /// Pause between tries, e.g. `2s`.
    #[arg(long, default_value = "2s", value_parser = lookahead_api::config::parse_duration)]
    interval: Duration,
    /// Limit of each try, e.g. `30s`.
    #[arg(long, default_value = "30s", value_parser = lookahead_api::config::parse_duration)]
    timeout: Duration,
}

/// What one passing try saw, for the `ok:` line.
#[derive(Debug, PartialEq)]
struct Passed {
    status: u16,
    model: Option<String>,
    latency: Duration,
}

/// Runs the check: prints `ok: ...` and returns, or prints why not (one line on stderr) and exits
/// with status 1.
pub fn run(args: CheckArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let passed = match rt.block_on(check(&args)) {
        Ok(passed) => passed,
        Err(why) => {
            eprintln!("{why}");
            std::process::exit(1);
        }
    };
    let what = if args.chat { "chat completion" } else { "GET" };
    match passed.model {
        Some(model) => println!(
            "ok: {what} {}: HTTP {}, routed to {model} in {} ms",
            args.url,
            passed.status,
            passed.latency.as_millis()
        ),
        None => println!(
            "ok: {what} {}: HTTP {} in {} ms",
            args.url,
            passed.status,
            passed.latency.as_millis()
        ),
    }
    Ok(())
}

/// Tries up to `args.attempts` times; `Err` is the one-line reason of the last failure.
async fn check(args: &CheckArgs) -> Result<Passed, String> {
    let client = ChatClient::new(args.timeout);
    let mut last = String::new();
    for attempt in 1..=args.attempts {
        if attempt > 1 {
            tokio::time::sleep(args.interval).await;
        }
        match try_once(&client, args).await {
            Ok(passed) => return Ok(passed),
            Err(why) => last = why,
        }
    }
    let tries = match args.attempts {
        1 => String::new(),
        n => format!(" ({n} tries)"),
    };
    let what = if args.chat { "chat completion" } else { "GET" };
    Err(format!("check failed{tries}: {what} {}: {last}", args.url))
}

/// One try: `Ok` when it passes, else why not (one line).
async fn try_once(client: &ChatClient, args: &CheckArgs) -> Result<Passed, String> {
    if args.chat {
        let endpoint = ChatEndpoint::new(&args.url);
        let body = json!({
            "model": args.model,
            "messages": [{"role": "user", "content": args.prompt}],
            "max_tokens": 16,
            "stream": false,
        });
        judge_chat(client.send(&endpoint, &body).await)
    } else {
        judge_get(client.get(&args.url).await)
    }
}

fn judge_get(reply: Result<ChatReply, ClientError>) -> Result<Passed, String> {
    let reply = reply.map_err(|e| e.to_string())?;
    if !reply.status.is_success() {
        return Err(format!(
            "HTTP {}: {}",
            reply.status.as_u16(),
            excerpt(&reply)
        ));
    }
    Ok(Passed {
        status: reply.status.as_u16(),
        model: None,
        latency: reply.latency,
    })
}

fn judge_chat(reply: Result<ChatReply, ClientError>) -> Result<Passed, String> {
    let reply = reply.map_err(|e| e.to_string())?;
    if reply.status.as_u16() != 200 {
        return Err(format!(
            "HTTP {}: {}",
            reply.status.as_u16(),
            excerpt(&reply)
        ));
    }
    let Some(model) = reply.header(MODEL_HEADER).filter(|m| !m.is_empty()) else {
        return Err(format!(
            "HTTP 200 without an {MODEL_HEADER} header (not a Lookahead router?)"
        ));
    };
    Ok(Passed {
        status: 200,
        model: Some(model.to_string()),
        latency: reply.latency,
    })
}

/// The start of a body, on one line.
fn excerpt(reply: &ChatReply) -> String {
    let text: String = String::from_utf8_lossy(&reply.body)
        .chars()
        .take(200)
        .collect();
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::{HeaderMap, HeaderValue, StatusCode};

    use super::*;

    fn reply(status: u16, model: Option<&str>, body: &str) -> Result<ChatReply, ClientError> {
        let mut headers = HeaderMap::new();
        if let Some(m) = model {
            headers.insert(MODEL_HEADER, HeaderValue::from_str(m).expect("header"));
        }
        Ok(ChatReply {
            status: StatusCode::from_u16(status).expect("status"),
            headers,
            body: Bytes::from(body.to_string()),
            latency: Duration::from_millis(3),
        })
    }

    #[test]
    fn a_chat_passes_only_with_200_and_the_decision_header() {
        assert_eq!(
            judge_chat(reply(200, Some("qwen-coder"), "{}")),
            Ok(Passed {
                status: 200,
                model: Some("qwen-coder".into()),
                latency: Duration::from_millis(3)
            })
        );
        let no_header = judge_chat(reply(200, None, "{}")).expect_err("no header");
        assert!(no_header.contains("x-lookahead-model"), "{no_header}");
        let down = judge_chat(reply(503, Some("m"), "no ready member\n  at all")).expect_err("503");
        assert_eq!(down, "HTTP 503: no ready member at all");
        let refused = judge_chat(Err(ClientError::Transport("connection refused".into())))
            .expect_err("refused");
        assert!(refused.contains("connection refused"), "{refused}");
    }

    #[test]
    fn a_get_passes_on_2xx() {
        assert!(judge_get(reply(200, None, "ok")).is_ok());
        assert_eq!(
            judge_get(reply(503, None, "not ready")),
            Err("HTTP 503: not ready".to_string())
        );
    }
}
