//! Per-key usage and spend: the `usage` of each answer (`prompt_tokens`, `completion_tokens`),
//! read from a buffered answer's JSON or from a stream's usage chunk, priced at the member's
//! price and debited from the key's tokens bucket ([`crate::limits`]).
//!
//! Streams report usage only when asked (`stream_options.include_usage`), so the router asks on
//! the client's behalf ([`ask_for_usage`]) and hides the extra usage chunk from a client that did
//! not ask ([`tap`]). The tap reads the relay event by event without buffering the stream: it
//! holds back at most one incomplete SSE event.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Frame;
use lookahead_api::pool::Price;
use serde::Deserialize;

use crate::body::{BoxError, RespBody};
use crate::limits::Limiter;
use crate::metrics::KeySeries;
use crate::openai::{CompletionRequest, Endpoint};

/// Tokens an answer used, as the member reported them (chat, completions and embeddings name
/// them `prompt_tokens`/`completion_tokens`; the Responses API `input_tokens`/`output_tokens`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Usage {
    #[serde(default, rename = "prompt_tokens", alias = "input_tokens")]
    pub prompt: u64,
    #[serde(default, rename = "completion_tokens", alias = "output_tokens")]
    pub completion: u64,
}

/// The parts of an answer (or a stream chunk) the router reads.
#[derive(Deserialize)]
struct Reported {
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    choices: Option<Vec<serde::de::IgnoredAny>>,
    /// The Responses API's `response.completed` event carries the response, usage included.
    #[serde(default)]
    response: Option<Box<Reported>>,
}

impl Reported {
    fn usage(&self) -> Option<Usage> {
        self.usage
            .or_else(|| self.response.as_ref().and_then(|r| r.usage))
    }
}

impl Usage {
    /// The `usage` of a JSON answer, if it has one.
    pub fn from_json(body: &[u8]) -> Option<Usage> {
        serde_json::from_slice::<Reported>(body).ok()?.usage()
    }

    pub fn total(&self) -> u64 {
        self.prompt.saturating_add(self.completion)
    }

    /// What the answer cost at `price` (per million tokens).
    pub fn spend(&self, price: &Price) -> f64 {
        self.prompt as f64 * price.input_per_m_tok / 1e6
            + self.completion as f64 * price.output_per_m_tok / 1e6
    }
}

/// Whether the client asked for a stream's usage (`stream_options.include_usage: true`).
pub fn client_wants_usage(request: &CompletionRequest) -> bool {
    request
        .body
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false)
}

/// `body` (a JSON object, as forwarded) with `stream_options.include_usage` set. Without
/// `stream_options` in the client's body (`client_options`) the field is spliced in after the
/// opening brace; otherwise (the client set it to false, or other options) the object is
/// rewritten.
pub fn ask_for_usage(body: Bytes, client_options: bool) -> Bytes {
    if !client_options {
        let Some(brace) = body.iter().position(|&b| b == b'{') else {
            return body;
        };
        let mut out = BytesMut::with_capacity(body.len() + 40);
        out.extend_from_slice(&body[..=brace]);
        out.extend_from_slice(br#""stream_options":{"include_usage":true}"#);
        let rest = &body[brace + 1..];
        if rest.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'}') {
            out.extend_from_slice(b",");
        }
        out.extend_from_slice(rest);
        return out.freeze();
    }
    let Ok(mut tree) = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&body)
    else {
        return body;
    };
    let options = tree
        .entry("stream_options")
        .or_insert_with(|| serde_json::json!({}));
    match options.as_object_mut() {
        Some(o) => {
            o.insert("include_usage".into(), serde_json::Value::Bool(true));
        }
        None => *options = serde_json::json!({"include_usage": true}),
    }
    serde_json::to_vec(&tree).map(Bytes::from).unwrap_or(body)
}

/// Who is calling, and what their requests need metered: the key's series (its id and usage
/// metrics), its limiter, the members' prices (by pool index) and whether the router asks a
/// stream for its usage.
pub struct Metering<'a> {
    pub series: Arc<KeySeries>,
    pub limiter: &'a Arc<Limiter>,
    pub prices: &'a [Price],
    /// A chat or completions stream whose client did not ask for its usage: the router asks
    /// (and hides the usage chunk from the client). Responses API streams always end with
    /// their usage; embeddings do not stream.
    pub ask_usage: bool,
    /// The client's body has `stream_options` (rewritten rather than spliced).
    pub client_options: bool,
}

impl<'a> Metering<'a> {
    pub fn new(
        series: Arc<KeySeries>,
        limiter: &'a Arc<Limiter>,
        prices: &'a [Price],
        request: &CompletionRequest,
    ) -> Self {
        let chat_like = matches!(request.endpoint, Endpoint::Chat | Endpoint::Completions);
        // Only such streams need the client's options (and reading them builds the JSON tree).
        let ask_usage = chat_like && request.stream && !client_wants_usage(request);
        Self {
            series,
            limiter,
            prices,
            ask_usage,
            client_options: ask_usage && request.body.contains_key("stream_options"),
        }
    }

    /// The key's id.
    pub fn key(&self) -> &Arc<str> {
        self.series.key()
    }

    /// The body for a member: a chat or completions stream asks for its usage when the client
    /// did not.
    pub fn forwarded(&self, body: Bytes) -> Bytes {
        if self.ask_usage {
            ask_for_usage(body, self.client_options)
        } else {
            body
        }
    }

    /// Records the usage of a buffered answer from member `i`.
    pub fn record(&self, i: usize, usage: Option<Usage>) {
        let price = self.prices.get(i).cloned().unwrap_or_default();
        record(&self.series, self.limiter, i, &price, usage);
    }

    /// The meter of a streamed answer from member `i` (recorded when the stream ends).
    pub fn meter(&self, i: usize) -> Meter {
        Meter {
            series: self.series.clone(),
            member: i,
            price: self.prices.get(i).cloned().unwrap_or_default(),
            limiter: self.limiter.clone(),
        }
    }
}

/// Records one streamed answer's usage for a key and member (pool index): token and spend
/// metrics, the key's tokens bucket.
#[derive(Clone)]
pub struct Meter {
    pub series: Arc<KeySeries>,
    pub member: usize,
    pub price: Price,
    pub limiter: Arc<Limiter>,
}

impl Meter {
    pub fn record(&self, usage: Option<Usage>) {
        record(&self.series, &self.limiter, self.member, &self.price, usage);
    }
}

/// One answer's usage: the key's token and spend series, and its tokens bucket.
fn record(
    series: &KeySeries,
    limiter: &Limiter,
    member: usize,
    price: &Price,
    usage: Option<Usage>,
) {
    let Some(u) = usage else {
        series.usage_missing(member);
        return;
    };
    series.used(member, [u.prompt, u.completion], u.spend(price));
    limiter.debit_tokens(series.key(), u.total(), Instant::now());
}

/// Longest incomplete SSE event held back; a longer one is passed on unread.
const MAX_HELD_EVENT: usize = 1 << 20;

/// Reads the usage chunk of an SSE stream as its events pass.
#[derive(Default)]
struct SseUsage {
    /// The incomplete event at the end of what has arrived.
    held: BytesMut,
    /// Drop the usage-only chunk (the router asked for it, the client did not).
    hide: bool,
    usage: Option<Usage>,
}

impl SseUsage {
    /// Takes the next data bytes; returns what goes to the client (whole events only).
    fn feed(&mut self, data: Bytes) -> Bytes {
        let mut buf = if self.held.is_empty() {
            BytesMut::from(&data[..])
        } else {
            let mut b = std::mem::take(&mut self.held);
            b.extend_from_slice(&data);
            b
        };
        let complete = last_event_end(&buf);
        self.held = buf.split_off(complete);
        if self.held.len() > MAX_HELD_EVENT {
            buf.extend_from_slice(&std::mem::take(&mut self.held));
        }
        self.events(buf.freeze())
    }

    /// The events in `whole` (complete events), with the usage chunk read (and dropped when
    /// hidden).
    fn events(&mut self, whole: Bytes) -> Bytes {
        let mut out: Option<BytesMut> = None;
        let mut start = 0;
        for end in event_ends(&whole) {
            let event = &whole[start..end];
            if self.read_event(event) {
                // The first dropped event: what came before it goes out as it was.
                out.get_or_insert_with(|| BytesMut::from(&whole[..start]));
            } else if let Some(o) = &mut out {
                o.extend_from_slice(event);
            }
            start = end;
        }
        match out {
            None => whole,
            Some(mut o) => {
                o.extend_from_slice(&whole[start..]);
                o.freeze()
            }
        }
    }

    /// Reads one event's usage; whether to drop it.
    fn read_event(&mut self, event: &[u8]) -> bool {
        let data = sse_data(event);
        if !contains(&data, b"\"usage\"") {
            return false;
        }
        let Ok(chunk) = serde_json::from_slice::<Reported>(&data) else {
            return false;
        };
        let Some(u) = chunk.usage() else {
            return false;
        };
        self.usage = Some(u);
        self.hide && chunk.choices.is_none_or(|c| c.is_empty())
    }

    /// The held-back rest at the end of the stream.
    fn finish(&mut self) -> Bytes {
        let rest = std::mem::take(&mut self.held).freeze();
        if rest.is_empty() {
            return rest;
        }
        self.events(rest)
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Where each complete event in `buf` ends (just after its blank line).
fn event_ends(buf: &[u8]) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut line_start = 0;
    for (i, &b) in buf.iter().enumerate() {
        if b != b'\n' {
            continue;
        }
        let line = &buf[line_start..i];
        if line.is_empty() || line == b"\r" {
            ends.push(i + 1);
        }
        line_start = i + 1;
    }
    ends
}

fn last_event_end(buf: &[u8]) -> usize {
    event_ends(buf).last().copied().unwrap_or(0)
}

/// The event's `data:` lines joined (SSE joins them with newlines; JSON does not mind).
fn sse_data(event: &[u8]) -> Vec<u8> {
    let mut data = Vec::new();
    for line in event.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(d) = line.strip_prefix(b"data:") {
            data.extend_from_slice(d.strip_prefix(b" ").unwrap_or(d));
            data.push(b'\n');
        }
    }
    data
}

struct TapState {
    body: RespBody,
    sse: SseUsage,
    done: bool,
    on_end: Option<Box<dyn FnOnce(Option<Usage>) + Send>>,
}

impl TapState {
    fn finish(&mut self) {
        if let Some(f) = self.on_end.take() {
            f(self.sse.usage);
        }
    }
}

impl Drop for TapState {
    fn drop(&mut self) {
        // The client went away mid-stream: whatever usage was seen is all there is.
        self.finish();
    }
}

/// `body` (an SSE stream) passed on event by event; `on_end` gets the usage it reported when
/// the stream ends (or is dropped). With `hide`, the usage-only chunk is not passed on.
pub fn tap(body: RespBody, hide: bool, on_end: Box<dyn FnOnce(Option<Usage>) + Send>) -> RespBody {
    let state = TapState {
        body,
        sse: SseUsage {
            hide,
            ..SseUsage::default()
        },
        done: false,
        on_end: Some(on_end),
    };
    let stream = futures::stream::unfold(state, |mut s| async move {
        loop {
            if s.done {
                return None;
            }
            let out = match s.body.frame().await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => s.sse.feed(data),
                    Err(frame) => return Some((Ok(frame), s)),
                },
                Some(Err(e)) => {
                    s.done = true;
                    return Some((Err::<Frame<Bytes>, BoxError>(e), s));
                }
                None => {
                    s.done = true;
                    let rest = s.sse.finish();
                    s.finish();
                    rest
                }
            };
            if !out.is_empty() {
                return Some((Ok(Frame::data(out)), s));
            }
        }
    });
    http_body_util::StreamBody::new(stream).boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;

    const USAGE: &str = "data: {\"id\":\"x\",\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3}}\n\n";
    const CHUNK: &str =
        "data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n";
    const DONE: &str = "data: [DONE]\n\n";

    fn run(hide: bool, pieces: &[&str]) -> (String, Option<Usage>) {
        let mut sse = SseUsage {
            hide,
            ..Default::default()
        };
        let mut out = Vec::new();
        for p in pieces {
            out.extend_from_slice(&sse.feed(Bytes::copy_from_slice(p.as_bytes())));
        }
        out.extend_from_slice(&sse.finish());
        (String::from_utf8(out).expect("utf8"), sse.usage)
    }

    #[test]
    fn reads_usage_across_split_frames_and_hides_it_when_asked() {
        let whole = format!("{CHUNK}{USAGE}{DONE}");
        let expected = Some(Usage {
            prompt: 7,
            completion: 3,
        });
        // Split at every byte boundary: the same events come out.
        for cut in 1..whole.len() {
            let (shown, usage) = run(false, &[&whole[..cut], &whole[cut..]]);
            assert_eq!((shown.as_str(), usage), (whole.as_str(), expected), "{cut}");
            let (hidden, usage) = run(true, &[&whole[..cut], &whole[cut..]]);
            assert_eq!(hidden, format!("{CHUNK}{DONE}"), "{cut}");
            assert_eq!(usage, expected);
        }
    }

    #[test]
    fn a_chunk_with_choices_and_usage_is_never_dropped() {
        let both = "data: {\"choices\":[{\"index\":0}],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\r\n\r\n";
        let (shown, usage) = run(true, &[both]);
        assert_eq!(shown, both);
        assert_eq!(usage.map(|u| u.total()), Some(3));
    }

    #[test]
    fn asks_for_usage_keeping_the_rest_of_the_body() {
        let asked = |b: &str| -> serde_json::Value {
            let options = b.contains("stream_options");
            serde_json::from_slice(&ask_for_usage(
                Bytes::copy_from_slice(b.as_bytes()),
                options,
            ))
            .expect("json")
        };
        let v = asked(r#" {"model":"m","stream":true}"#);
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["model"], "m");
        let v = asked(r#"{"model":"m","stream_options":{"include_usage":false,"x":1}}"#);
        assert_eq!(
            v["stream_options"],
            serde_json::json!({"include_usage": true, "x": 1})
        );
        assert_eq!(asked("{}")["stream_options"]["include_usage"], true);
    }

    #[test]
    fn spend_is_tokens_times_price_per_million() {
        let u = Usage {
            prompt: 1_000_000,
            completion: 500_000,
        };
        let price = Price {
            input_per_m_tok: 0.5,
            output_per_m_tok: 1.5,
        };
        assert!((u.spend(&price) - 1.25).abs() < 1e-12);
        assert_eq!(
            Usage::from_json(br#"{"usage":{"prompt_tokens":2}}"#).map(|u| u.total()),
            Some(2)
        );
        assert_eq!(Usage::from_json(b"{}"), None);
        // The Responses API's names, and its `response.completed` stream event.
        let responses = br#"{"usage":{"input_tokens":4,"output_tokens":6}}"#;
        assert_eq!(Usage::from_json(responses).map(|u| u.completion), Some(6));
        let completed = br#"{"type":"response.completed","response":{"usage":{"input_tokens":1,"output_tokens":2}}}"#;
        assert_eq!(Usage::from_json(completed).map(|u| u.total()), Some(3));
    }
}
