//! W3C trace context at the router's two edges: the client's `traceparent`/`tracestate` become
//! the parent of the request span, and every request to a member carries a `traceparent`, so one
//! trace runs client → router → member.
//!
//! With an OpenTelemetry layer installed (the `lookahead` binary with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` set) the headers go through the global propagator: the request
//! span is the client span's child, and members see the request span as their parent. Without
//! one (tracing export off, tests) nothing is created: the client's `traceparent`/`tracestate`
//! reach the member unchanged (the member's parent is then the client's span), and only a format
//! check is paid per request.

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Length of a version-00 `traceparent`: `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`.
const TRACEPARENT_LEN: usize = 55;

/// Reads a propagator's keys from request headers.
struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// Writes a propagator's keys into request headers (a key or value that is not a valid header is
/// dropped: the member then simply starts a trace of its own).
struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Makes the client's trace context (if any) the parent of `span`, before the span starts, and
/// records the request's trace id in its `trace_id` field, which JSON logs print on every line
/// logged inside the request.
pub fn accept(span: &Span, headers: &HeaderMap) {
    if span.is_disabled() {
        return;
    }
    let parent =
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)));
    // An error says there is no OpenTelemetry layer: the span is only logged, nothing to parent.
    if span.set_parent(parent).is_ok() {
        let cx = span.context();
        let own = cx.span().span_context().clone();
        if own.is_valid() {
            span.record("trace_id", tracing::field::display(own.trace_id()));
            return;
        }
    }
    if let Some(trace_id) = valid_traceparent(headers).and_then(|v| v.to_str().ok()?.get(3..35)) {
        span.record("trace_id", trace_id);
    }
}

/// Sets `traceparent` (and `tracestate`) on `out`, a request to a member: the current span's
/// context when the span is traced, else the client's own headers, unchanged (see the module
/// doc). Whatever trace headers the client sent are never copied otherwise.
pub fn inject(client: &HeaderMap, out: &mut HeaderMap) {
    let cx = Span::current().context();
    if cx.span().span_context().is_valid() {
        opentelemetry::global::get_text_map_propagator(|p| {
            p.inject_context(&cx, &mut HeaderInjector(out));
        });
    }
    if out.contains_key(TRACEPARENT) {
        return;
    }
    if let Some(tp) = valid_traceparent(client) {
        out.insert(TRACEPARENT, tp.clone());
        if let Some(ts) = client.get(TRACESTATE) {
            out.insert(TRACESTATE, ts.clone());
        }
    }
}

/// The client's `traceparent` when it is well formed (W3C Trace Context level 1: a later version
/// may append fields after the first 55 characters); anything else is dropped, as the spec asks
/// of a vendor that cannot parse it.
pub fn valid_traceparent(headers: &HeaderMap) -> Option<&HeaderValue> {
    let value = headers.get(TRACEPARENT)?;
    let b = value.as_bytes();
    let fields_ok = b.len() >= TRACEPARENT_LEN
        && (b.len() == TRACEPARENT_LEN || (&b[..2] != b"00" && b[TRACEPARENT_LEN] == b'-'))
        && b[2] == b'-'
        && b[35] == b'-'
        && b[52] == b'-';
    if !fields_ok {
        return None;
    }
    let (version, trace_id, parent_id, flags) = (&b[..2], &b[3..35], &b[36..52], &b[53..55]);
    let ok = [version, trace_id, parent_id, flags]
        .iter()
        .all(|f| lower_hex(f))
        && version != b"ff"
        && !all_zero(trace_id)
        && !all_zero(parent_id);
    ok.then_some(value)
}

fn lower_hex(field: &[u8]) -> bool {
    field
        .iter()
        .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

fn all_zero(field: &[u8]) -> bool {
    field.iter().all(|&c| c == b'0')
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn well_formed_traceparents_are_recognised() {
        assert!(valid_traceparent(&headers(&[("traceparent", TP)])).is_some());
        let future = format!("01{}-extra", &TP[2..]);
        assert!(valid_traceparent(&headers(&[("traceparent", &future)])).is_some());
    }

    #[test]
    fn malformed_traceparents_are_dropped() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(
                valid_traceparent(&headers(&[("traceparent", bad)])).is_none(),
                "{bad}"
            );
        }
    }

    #[test]
    fn without_a_layer_the_clients_headers_pass_unchanged() {
        let client = headers(&[("traceparent", TP), ("tracestate", "vendor=1")]);
        let mut out = HeaderMap::new();
        inject(&client, &mut out);
        assert_eq!(out.get(TRACEPARENT).unwrap(), TP);
        assert_eq!(out.get(TRACESTATE).unwrap(), "vendor=1");
    }

    #[test]
    fn a_tracestate_without_a_valid_traceparent_is_not_forwarded() {
        let client = headers(&[("traceparent", "garbage"), ("tracestate", "vendor=1")]);
        let mut out = HeaderMap::new();
        inject(&client, &mut out);
        assert!(out.is_empty());
    }
}
