//! The respond stage: the member's answer with the decision in headers (`x-lookahead-model`,
//! `x-lookahead-scores`, `x-lookahead-fallback`, `x-request-id`), or the OpenAI-style error when
//! no member could answer.

use std::fmt::Write as _;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use crate::body::RespBody;
use crate::pool::Pool;
use crate::scoring::Decision;
use crate::upstream::{Answer, AttemptError};
use crate::ApiError;

pub const HEADER_MODEL: HeaderName = HeaderName::from_static("x-lookahead-model");
pub const HEADER_SCORES: HeaderName = HeaderName::from_static("x-lookahead-scores");
pub const HEADER_FALLBACK: HeaderName = HeaderName::from_static("x-lookahead-fallback");
pub const HEADER_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A header value from text built per request (no copy; dropped when not a valid value).
fn header_value(text: String) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(Bytes::from(text)).ok()
}

/// The member's answer, passed through with the decision headers.
pub fn answered(
    pool: &Pool,
    answer: Answer,
    chosen: usize,
    decision: &Decision,
    failures: &[String],
    request_id: HeaderValue,
) -> http::Response<RespBody> {
    let mut resp = http::Response::new(answer.body);
    *resp.status_mut() = answer.status;
    let h = resp.headers_mut();
    if let Some(ct) = answer.content_type {
        if ct.as_bytes().starts_with(b"text/event-stream") {
            h.insert(
                http::header::CACHE_CONTROL,
                HeaderValue::from_static("no-cache"),
            );
        }
        h.insert(http::header::CONTENT_TYPE, ct);
    }
    if let Some(v) = &pool.members[chosen].name_header {
        h.insert(HEADER_MODEL, v.clone());
    }
    if let Some(v) = compact_scores(pool, decision).and_then(header_value) {
        h.insert(HEADER_SCORES, v);
    }
    let fallback: Vec<&str> = decision
        .fallback
        .map(|f| f.reason())
        .into_iter()
        .chain(failures.iter().map(String::as_str))
        .collect();
    if !fallback.is_empty() {
        if let Some(v) = header_value(fallback.join(",")) {
            h.insert(HEADER_FALLBACK, v);
        }
    }
    h.insert(HEADER_REQUEST_ID, request_id);
    resp
}

/// No member answered: 504 when the last attempt timed out, else 502, naming every failure.
pub fn exhausted(
    failures: &[String],
    last_error: Option<AttemptError>,
    request_id: HeaderValue,
) -> http::Response<RespBody> {
    let message = format!("No pool member could answer ({}).", failures.join(", "));
    let err = match last_error {
        Some(AttemptError::Timeout) => ApiError::upstream_timeout(message),
        _ => ApiError::upstream_failed(message),
    };
    let mut resp = err.into_response();
    if let Some(v) = header_value(failures.join(",")) {
        resp.headers_mut().insert(HEADER_FALLBACK, v);
    }
    resp.headers_mut().insert(HEADER_REQUEST_ID, request_id);
    resp
}

/// Seconds a client is told to wait when no member had a ready replica within the request's
/// cold-start hold: long enough for a waking member's next readiness probe.
pub const COLD_RETRY_AFTER_SECS: u32 = 5;

/// No member had a ready replica for the whole cold-start hold: 503 with `Retry-After`, naming
/// the cold members.
pub fn no_ready_member(
    passed_over: &[String],
    request_id: HeaderValue,
) -> http::Response<RespBody> {
    let message = format!(
        "No pool member has a ready replica yet ({}); members scaled to zero are starting.",
        passed_over.join(", ")
    );
    let mut resp = ApiError::unavailable(message).into_response();
    let h = resp.headers_mut();
    h.insert(
        http::header::RETRY_AFTER,
        HeaderValue::from(COLD_RETRY_AFTER_SECS),
    );
    if let Some(v) = header_value(passed_over.join(",")) {
        h.insert(HEADER_FALLBACK, v);
    }
    h.insert(HEADER_REQUEST_ID, request_id);
    resp
}

/// `name=utility` for scored members, best first, three decimals; `None` when nothing was scored.
fn compact_scores(pool: &Pool, d: &Decision) -> Option<String> {
    top_scores(pool, d, usize::MAX)
}

/// [`compact_scores`] of the best `n` scored members (the request span carries the top three).
pub fn top_scores(pool: &Pool, d: &Decision, n: usize) -> Option<String> {
    let scored = d
        .order
        .iter()
        .filter_map(|&i| Some((i, d.utility.get(i).copied().flatten()?)));
    // Sized for every member up front: growing the string costs an allocation per doubling.
    let names: usize = d
        .order
        .iter()
        .take(n)
        .map(|&i| pool.members[i].name.len())
        .sum();
    let mut out = String::with_capacity(names + 8 * d.order.len().min(n));
    for (i, u) in scored.take(n) {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(&pool.members[i].name);
        out.push('=');
        push_thousandths(&mut out, u);
    }
    (!out.is_empty()).then_some(out)
}

/// Appends `u` with three decimals, exactly as `format!("{u:.3}")` writes it, in integer
/// arithmetic when that cannot differ: the float formatter's exact decimal rounding costs more
/// than the rest of the header, and a router writes one per scored member per request.
fn push_thousandths(out: &mut String, u: f64) {
    let x = u * 1000.0;
    let r = x.round();
    // |x| < 2^53 / 1000 keeps x's rounding error below 0.01, so a value 0.49 from a tie rounds
    // to r whichever way the exact product lies; zero keeps the formatter (it prints `-0.000`).
    if !(r != 0.0 && r.abs() < 1e12 && (x - r).abs() < 0.49) {
        let _ = write!(out, "{u:.3}");
        return;
    }
    let n = r as i64;
    if n < 0 {
        out.push('-');
    }
    let n = n.unsigned_abs();
    let frac = n % 1000;
    let _ = write!(out, "{}.", n / 1000);
    for d in [frac / 100, frac / 10 % 10, frac % 10] {
        out.push(char::from(b'0' + d as u8));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(names: &[&str]) -> Pool {
        let mut y = String::from("members:\n");
        for n in names {
            y.push_str(&format!(
                "  - {{ name: {n}, modelId: {n}, baseUrl: \"http://127.0.0.1:9/v1\" }}\n"
            ));
        }
        y.push_str("policy:\n  method: fixed\n");
        let config: lookahead_api::RouterConfig = serde_yaml::from_str(&y).unwrap();
        Pool::from_config(&config).unwrap()
    }

    #[test]
    fn scores_are_written_as_the_float_formatter_writes_three_decimals() {
        let mut cases = vec![
            0.0,
            -0.0,
            0.0004,
            -0.0004,
            0.0005,
            0.0015,
            0.0025,
            -0.0025,
            0.1235,
            0.9995,
            1.0,
            -1.0,
            12.3456,
            -7.0005,
            1e11,
            -1e11,
            1e13,
            1e300,
            f64::MIN_POSITIVE,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            0.1 + 0.2,
        ];
        // Deterministic pseudo-random scores over a wide range, ties included.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for i in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let unit = (state >> 11) as f64 / (1u64 << 53) as f64;
            let scale = [1.0, 10.0, 1000.0, 1e6][i % 4];
            cases.push((unit - 0.5) * scale);
            cases.push((state % 20_000) as f64 / 2000.0 - 5.0 + 0.0005);
        }
        for u in cases {
            let mut out = String::new();
            push_thousandths(&mut out, u);
            assert_eq!(out, format!("{u:.3}"), "{u:e}");
        }
    }

    #[test]
    fn top_scores_are_the_best_scored_members_in_order() {
        let pool = pool(&["a", "b", "c", "d", "e"]);
        let d = Decision {
            order: vec![3, 0, 4, 1, 2],
            utility: vec![Some(0.5), Some(0.2), Some(0.1), Some(0.9), None],
            fallback: None,
        };
        assert_eq!(
            top_scores(&pool, &d, 3).as_deref(),
            Some("d=0.900,a=0.500,b=0.200")
        );
        assert_eq!(
            compact_scores(&pool, &d).as_deref(),
            Some("d=0.900,a=0.500,b=0.200,c=0.100")
        );
        let unscored = Decision {
            order: vec![0],
            utility: vec![None; 5],
            fallback: None,
        };
        assert_eq!(top_scores(&pool, &unscored, 3), None);
    }
}
