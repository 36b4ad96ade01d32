//! The first stages of a completion request: authenticate, check the content type and size
//! limits, read the body (bounded in size and time), and parse it into a [`CompletionRequest`].
//! The client's headers stay with the request for the later stages.

use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::auth::ApiKeys;
use crate::limits::Limiter;
use crate::openai::{self, CompletionRequest, Endpoint};
use crate::ApiError;

/// Longest a client may take to send a request body (slow-body protection).
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Most request header bytes (names and values) a completion request may carry: headers are
/// forwarded to members, and no OpenAI client sends more than a few KB. Larger heads get 431
/// (beyond [`crate::server::MAX_HEAD_BYTES`] hyper refuses them before they are read whole).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Who may call, how often and how much they may send.
#[derive(Debug, Clone)]
pub struct Gate {
    pub keys: Arc<ApiKeys>,
    /// Per-key limits, applied by the router once the request is parsed.
    pub limiter: Arc<Limiter>,
    pub max_body_bytes: u64,
}

/// A request that passed the gate.
pub struct Admitted {
    pub head: Parts,
    pub request: CompletionRequest,
    /// The caller's key id ([`crate::auth::ANONYMOUS`] on an open router).
    pub key: Arc<str>,
}

impl Gate {
    /// With router keys configured, the bearer token must be one of them; the caller's key id.
    pub fn authorize(&self, headers: &http::HeaderMap) -> Result<Arc<str>, ApiError> {
        self.keys.identify(headers)
    }

    /// Authentication, then limits, then the parse: each a reason to answer 4xx.
    pub async fn admit(
        &self,
        endpoint: Endpoint,
        req: http::Request<Incoming>,
    ) -> Result<Admitted, ApiError> {
        let (head, body) = req.into_parts();
        let key = self.authorize(&head.headers)?;
        self.check_head(&head.headers)?;
        let bytes = self.read_body(body).await?;
        let request = openai::parse_body(endpoint, bytes)?;
        Ok(Admitted { head, request, key })
    }

    /// Headers within their bound, JSON only, and no declared length over the limit (answered
    /// before reading the body).
    fn check_head(&self, headers: &http::HeaderMap) -> Result<(), ApiError> {
        let size: usize = headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum();
        if size > MAX_HEADER_BYTES {
            return Err(ApiError::headers_too_large(size, MAX_HEADER_BYTES));
        }
        let json_type = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !json_type {
            return Err(ApiError::unsupported_media_type());
        }
        let declared = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body_bytes) {
            return Err(ApiError::payload_too_large(self.max_body_bytes));
        }
        Ok(())
    }

    async fn read_body(&self, body: Incoming) -> Result<bytes::Bytes, ApiError> {
        let limit = usize::try_from(self.max_body_bytes).unwrap_or(usize::MAX);
        let mut collect = std::pin::pin!(Limited::new(body, limit).collect());
        // A small body usually arrived with the head: it needs no timer.
        let collected = match futures::poll!(collect.as_mut()) {
            std::task::Poll::Ready(c) => Ok(c),
            std::task::Poll::Pending => tokio::time::timeout(BODY_READ_TIMEOUT, collect).await,
        };
        match collected {
            Err(_) => Err(ApiError::body_timeout()),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                Err(ApiError::payload_too_large(self.max_body_bytes))
            }
            Ok(Err(e)) => Err(ApiError::bad_request(
                "invalid_body",
                format!("Could not read the request body: {e}"),
            )),
            Ok(Ok(c)) => Ok(c.to_bytes()),
        }
    }
}
