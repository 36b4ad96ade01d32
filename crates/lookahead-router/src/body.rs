//! The response body type every handler returns: boxed, so buffered JSON and relayed SSE streams
//! share one type.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, SizeHint};

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

/// `body`, keeping `guard` alive until the body is dropped: after its last byte for a stream
/// (in-flight counts that must cover the whole response, not just its head).
pub fn hold<G: Send + Unpin + 'static>(body: RespBody, guard: G) -> RespBody {
    Holding {
        inner: body,
        _guard: guard,
    }
    .boxed_unsync()
}

struct Holding<G> {
    inner: RespBody,
    _guard: G,
}

impl<G: Unpin> Body for Holding<G> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
