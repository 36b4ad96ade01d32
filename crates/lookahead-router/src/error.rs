//! Errors: [`ApiError`] is what a client sees (an OpenAI-style JSON error with the right status);
//! [`RouterError`] is what stops the router from starting.

use http::{HeaderValue, StatusCode};
use serde_json::json;

use crate::body::{json_response, RespBody};

/// An error answered to the client as `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    /// OpenAI's `type` field.
    pub kind: &'static str,
    /// OpenAI's `code` field; also the metric label.
    pub code: &'static str,
    pub message: String,
    pub param: Option<&'static str>,
    /// `Allow` header value for 405.
    pub allow: Option<&'static str>,
    /// `Retry-After` seconds (429 of a per-key limit).
    pub retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, code: &'static str, message: String) -> Self {
        Self {
            status,
            kind,
            code,
            message,
            param: None,
            allow: None,
            retry_after: None,
        }
    }

    pub fn with_param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            code,
            message.into(),
        )
    }

    pub fn model_not_found(model: &str, known: &str) -> Self {
        let mut shown: String = model.chars().take(128).collect();
        if shown.len() < model.len() {
            shown.push('…');
        }
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "model_not_found",
            format!("The model {shown:?} does not exist. Known models: {known}."),
        )
        .with_param("model")
    }

    pub fn path_not_found(path: &str) -> Self {
        let shown: String = path.chars().take(128).collect();
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "unknown_url",
            format!("Unknown request URL: {shown}."),
        )
    }

    pub fn method_not_allowed(method: &http::Method, allow: &'static str) -> Self {
        let mut e = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            "method_not_allowed",
            format!("Method {method} is not allowed here; use {allow}."),
        );
        e.allow = Some(allow);
        e
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "invalid_api_key",
            "Missing or incorrect API key: send `Authorization: Bearer <key>`.".into(),
        )
    }

    pub fn payload_too_large(limit: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "request_too_large",
            format!("Request body exceeds the limit of {limit} bytes."),
        )
    }

    pub fn headers_too_large(size: usize, limit: usize) -> Self {
        Self::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "invalid_request_error",
            "request_header_fields_too_large",
            format!("Request headers take {size} bytes; the limit is {limit} bytes."),
        )
    }

    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request_error",
            "unsupported_media_type",
            "Content-Type must be application/json.".into(),
        )
    }

    pub fn body_timeout() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            "request_timeout",
            "The request body did not arrive in time.".into(),
        )
    }

    pub fn upstream_failed(message: String) -> Self {
        Self::new(
            StatusCode::BAD_GATEWAY,
            "api_error",
            "upstream_unavailable",
            message,
        )
    }

    pub fn upstream_timeout(message: String) -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "api_error",
            "upstream_timeout",
            message,
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            "unavailable",
            message.into(),
        )
    }

    /// 429 from a per-key limit, as OpenAI words it (`type` is the limit: `requests` or
    /// `tokens`), with `Retry-After`. Names the key's id, never the key.
    pub fn rate_limited(key: &str, refusal: &crate::limits::Refusal) -> Self {
        let limit = refusal.limit.label();
        let wait = refusal.retry_after_secs();
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            limit,
            "rate_limit_exceeded",
            format!(
                "Rate limit reached for key {key:?} on {limit} per minute: limit {}. Please try again in {wait}s.",
                refusal.per_minute
            ),
        );
        e.retry_after = Some(wait);
        e
    }

    /// The JSON body.
    pub fn to_json(&self) -> serde_json::Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }

    pub fn into_response(self) -> http::Response<RespBody> {
        let mut resp = json_response(self.status, &self.to_json());
        if let Some(allow) = self.allow {
            resp.headers_mut()
                .insert(http::header::ALLOW, HeaderValue::from_static(allow));
        }
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

/// Why the router (or a sidecar) could not start.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error(transparent)]
    Config(#[from] lookahead_api::ConfigError),
    #[error("member {member}: invalid baseUrl {url:?}: {reason}")]
    BaseUrl {
        member: String,
        url: String,
        reason: String,
    },
    #[error("cannot read API keys {path}: {source}")]
    ApiKeys {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("member {member}: API key file: {source}")]
    MemberKey {
        member: String,
        source: crate::member_key::KeyError,
    },
    #[error("member TLS: {0}")]
    Tls(#[from] lookahead_client::tls::TlsError),
    #[error("scorer: {0}")]
    Scorer(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl RouterError {
    /// Short label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            RouterError::Config(_) => "config",
            RouterError::BaseUrl { .. } => "base_url",
            RouterError::ApiKeys { .. } => "api_keys",
            RouterError::MemberKey { .. } => "member_key",
            RouterError::Tls(_) => "tls",
            RouterError::Scorer(_) => "scorer",
            RouterError::Io(_) => "io",
        }
    }
}
