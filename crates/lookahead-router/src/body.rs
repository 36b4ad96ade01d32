//! The response body type every handler returns: boxed, so buffered JSON and relayed SSE streams
//! share one type.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

/// Error type of relayed bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Body of every response the servers in this crate send.
pub type RespBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// A buffered body.
pub fn full(bytes: impl Into<Bytes>) -> RespBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> RespBody {
    full(Bytes::new())
}

/// A JSON response with `status`.
pub fn json_response(
    status: http::StatusCode,
    value: &serde_json::Value,
) -> http::Response<RespBody> {
    let mut resp = http::Response::new(full(value.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}
