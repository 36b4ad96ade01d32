//! Calls to pool members: one attempt, buffered (non-streaming) or relayed (streaming), each
//! classified as success, a failure worth retrying elsewhere, or an answer to pass through.

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Frame;
use tokio::time::Instant;

use crate::body::{BoxError, RespBody};
use crate::member_conn::{error_chain, Connections, MemberBody, SendError};

/// Why an attempt failed in a way that justifies trying another member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptError {
    Connect(String),
    /// The TLS handshake failed (`label`: `tls_unknown_ca`, `tls_bad_hostname`, ...): the member
    /// is up but cannot be trusted, which counts against it (ejection), unlike a refused connect.
    Tls {
        label: &'static str,
        detail: String,
    },
    Timeout,
    /// 5xx or 429 from the member.
    Status(u16),
    /// The body broke before any byte reached the client.
    Body(String),
}

impl AttemptError {
    /// Short label for headers and metrics.
    pub fn label(&self) -> String {
        match self {
            AttemptError::Connect(_) => "connect".into(),
            AttemptError::Tls { label, .. } => (*label).into(),
            AttemptError::Timeout => "timeout".into(),
            AttemptError::Status(s) => format!("status_{s}"),
            AttemptError::Body(_) => "body".into(),
        }
    }

    /// Whether it says the member is unhealthy (429 only says it is busy).
    pub fn counts_against_member(&self) -> bool {
        !matches!(self, AttemptError::Status(429))
    }
}

/// The HTTP client for members (keep-alive connections, see [`crate::member_conn`]).
#[derive(Clone, Debug, Default)]
pub struct Upstream {
    connections: Connections,
}

impl Upstream {
    /// A client that also reaches `https://` members, trusting the system roots plus the CAs
    /// of `ca_bundle`.
    pub fn with_tls(
        ca_bundle: Option<&std::path::Path>,
    ) -> Result<Self, lookahead_client::tls::TlsError> {
        let config = lookahead_client::tls::client_config(ca_bundle, &[b"http/1.1"])?;
        Ok(Self {
            connections: Connections::with_tls(config),
        })
    }
}

/// Joins a member's base URL (ending in `/v1`) and an API path.
pub fn join_url(base: &str, path: &str) -> Result<Uri, String> {
    format!("{}{}", base.trim_end_matches('/'), path)
        .parse::<Uri>()
        .map_err(|e| e.to_string())
}

/// A relayed or buffered upstream answer.
pub struct Answer {
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    pub body: RespBody,
    /// The whole body when it was read before answering: every buffered answer, and a
    /// streamed request's 4xx (for the router to see why the member refused); `None` for a
    /// relayed stream.
    pub whole: Option<Bytes>,
}

impl Answer {
    /// Whether the member refused the request for not fitting its context window (vLLM,
    /// OpenAI, llama.cpp, TGI, SGLang and Anthropic-style messages), which another member with
    /// a larger window may not.
    pub fn is_context_refusal(&self) -> bool {
        let Some(body) = &self.whole else {
            return false;
        };
        let status = self.status.as_u16();
        if !matches!(status, 400 | 413 | 422) {
            return false;
        }
        let text = String::from_utf8_lossy(body).to_ascii_lowercase();
        CONTEXT_REFUSALS.iter().any(|m| text.contains(m))
    }
}

/// What members say when a request does not fit their context window.
const CONTEXT_REFUSALS: &[&str] = &[
    "context_length_exceeded",
    "maximum context length",
    "context length",
    "context size",
    "context window",
    "exceed_context_size",
    "prompt is too long",
    "input is too long",
    "tokens + `max_new_tokens` must be <=",
];

impl Upstream {
    /// Sends the request and waits for the response head (no deadline of its own).
    async fn send(
        &self,
        url: &Uri,
        body: Bytes,
        headers: HeaderMap,
    ) -> Result<http::Response<MemberBody>, AttemptError> {
        let mut req = Request::post(url.clone())
            .body(Full::new(body))
            .map_err(|e| AttemptError::Connect(e.to_string()))?;
        *req.headers_mut() = headers;
        self.connections.send(url, req).await.map_err(|e| match e {
            SendError::Tls { label, detail, .. } => AttemptError::Tls { label, detail },
            e => AttemptError::Connect(error_chain(&e)),
        })
    }

    /// A non-streaming attempt: the whole answer is read (under `deadline`, one timer for the
    /// head and the body) before anything goes to the client, so any failure can still be
    /// retried elsewhere.
    pub async fn buffered(
        &self,
        url: &Uri,
        body: Bytes,
        headers: HeaderMap,
        deadline: Instant,
    ) -> Result<Answer, AttemptError> {
        let attempt = async {
            let resp = self.send(url, body, headers).await?;
            let status = resp.status();
            if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                return Err(AttemptError::Status(status.as_u16()));
            }
            let content_type = resp.headers().get(http::header::CONTENT_TYPE).cloned();
            let bytes = read_whole(resp.into_body())
                .await
                .map_err(|e| AttemptError::Body(error_chain(&e)))?;
            Ok(Answer {
                status,
                content_type,
                body: crate::body::full(bytes.clone()),
                whole: Some(bytes),
            })
        };
        tokio::time::timeout_at(deadline, attempt)
            .await
            .unwrap_or(Err(AttemptError::Timeout))
    }

    /// A streaming attempt: waits for the response head and the first body chunk until
    /// `first_byte_deadline` (failures so far are retryable), then relays the rest chunk by chunk
    /// until `deadline`. `on_end(ok)` runs when the relay finishes.
    pub async fn streamed(
        &self,
        url: &Uri,
        body: Bytes,
        headers: HeaderMap,
        first_byte_deadline: Instant,
        deadline: Instant,
        on_end: Box<dyn FnOnce(bool) + Send>,
    ) -> Result<Answer, AttemptError> {
        let resp = tokio::time::timeout_at(first_byte_deadline, self.send(url, body, headers))
            .await
            .unwrap_or(Err(AttemptError::Timeout))?;
        let status = resp.status();
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            return Err(AttemptError::Status(status.as_u16()));
        }
        let content_type = resp.headers().get(http::header::CONTENT_TYPE).cloned();
        if status.is_client_error() {
            return refused(status, content_type, resp.into_body(), first_byte_deadline).await;
        }
        let mut incoming = resp.into_body();
        let first = match tokio::time::timeout_at(first_byte_deadline, incoming.frame()).await {
            Err(_) => return Err(AttemptError::Timeout),
            Ok(None) => None,
            Ok(Some(Err(e))) => return Err(AttemptError::Body(error_chain(&e))),
            Ok(Some(Ok(f))) => Some(f),
        };
        Ok(Answer {
            status,
            content_type,
            body: relay(first, incoming, deadline, on_end),
            whole: None,
        })
    }
}

/// A streamed request's 4xx answer, read whole (it is an error body, not a stream) so that
/// the router can tell a context-length refusal.
async fn refused(
    status: StatusCode,
    content_type: Option<HeaderValue>,
    body: MemberBody,
    deadline: Instant,
) -> Result<Answer, AttemptError> {
    let bytes = tokio::time::timeout_at(deadline, body.collect())
        .await
        .map_err(|_| AttemptError::Timeout)?
        .map_err(|e| AttemptError::Body(error_chain(&e)))?
        .to_bytes();
    Ok(Answer {
        status,
        content_type,
        body: crate::body::full(bytes.clone()),
        whole: Some(bytes),
    })
}

struct RelayState {
    first: Option<Frame<Bytes>>,
    rest: Option<MemberBody>,
    deadline: Instant,
    on_end: Option<Box<dyn FnOnce(bool) + Send>>,
}

impl RelayState {
    fn finish(&mut self, ok: bool) {
        self.rest = None;
        if let Some(f) = self.on_end.take() {
            f(ok);
        }
    }
}

impl Drop for RelayState {
    fn drop(&mut self) {
        // The client went away mid-stream: not the member's fault.
        self.finish(true);
    }
}

/// Relays frames as they arrive: nothing is buffered beyond one frame.
fn relay(
    first: Option<Frame<Bytes>>,
    rest: MemberBody,
    deadline: Instant,
    on_end: Box<dyn FnOnce(bool) + Send>,
) -> RespBody {
    let state = RelayState {
        first,
        rest: Some(rest),
        deadline,
        on_end: Some(on_end),
    };
    let stream = futures::stream::unfold(state, |mut s| async move {
        if let Some(f) = s.first.take() {
            return Some((Ok(f), s));
        }
        let rest = s.rest.as_mut()?;
        match tokio::time::timeout_at(s.deadline, rest.frame()).await {
            Ok(Some(Ok(f))) => Some((Ok(f), s)),
            Ok(None) => {
                s.finish(true);
                None
            }
            Ok(Some(Err(e))) => {
                s.finish(false);
                Some((Err(Box::new(e) as BoxError), s))
            }
            Err(_) => {
                s.finish(false);
                Some((
                    Err("upstream stream exceeded the request timeout".into()),
                    s,
                ))
            }
        }
    });
    http_body_util::StreamBody::new(stream).boxed_unsync()
}

/// A body's data, whole: a body of one data frame (the usual answer, whose length the member
/// sends) is that frame as is, with no list of frames built and no copy; more frames are joined.
async fn read_whole(mut body: MemberBody) -> Result<Bytes, hyper::Error> {
    let mut first: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue; // trailers: not part of an OpenAI answer
        };
        match (&first, &mut joined) {
            (None, _) => first = Some(data),
            (Some(f), None) => {
                let mut all = BytesMut::with_capacity(f.len() + data.len());
                all.extend_from_slice(f);
                all.extend_from_slice(&data);
                joined = Some(all);
            }
            (Some(_), Some(all)) => all.extend_from_slice(&data),
        }
    }
    Ok(joined.map(BytesMut::freeze).or(first).unwrap_or_default())
}
