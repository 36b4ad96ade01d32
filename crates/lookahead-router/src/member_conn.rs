//! Keep-alive HTTP/1.1 connections to members, driven inside the request's own task.
//!
//! hyper's pooled client runs every connection in a task of its own, so each request costs two
//! extra task wake-ups (request in, response out). Here the request's task polls the connection
//! itself: while waiting for the head ([`Connections::send`]) and while the body is read
//! ([`MemberBody`]). At end of body the connection goes back to an idle list per member address;
//! one that errors, closes or is dropped mid-body is simply dropped.
//!
//! `https://` members get TLS ([`crate::member_stream`]); plain `http://` connections are a bare
//! `TcpStream`, as before.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::Authority;
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{Builder, Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use crate::member_stream::{handshake, HandshakeError, MemberStream};

type Sender = SendRequest<Full<Bytes>>;
/// Boxed: the connection's state (buffers, parser) is ~700 bytes, and a connection moves between
/// the idle list, the request's futures and the response body several times per request.
type Driver = Pin<Box<Connection<TokioIo<MemberStream>, Full<Bytes>>>>;

/// Longest a TCP connect (and, separately, a TLS handshake) to a member may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// An idle connection older than this is not reused (the member may have closed it).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per member address.
const MAX_IDLE_PER_MEMBER: usize = 1024;

/// Why a request could not be sent or its head not read.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("unsupported member URL {0} (http or https only)")]
    Url(String),
    /// The TLS handshake failed: `label` is `tls_unknown_ca`, `tls_bad_hostname`, ...
    #[error("TLS to {addr} failed: {detail}")]
    Tls {
        addr: String,
        label: &'static str,
        detail: String,
    },
    #[error("connect to {addr} failed: {reason}")]
    Connect { addr: String, reason: String },
    #[error("connect to {0} timed out")]
    ConnectTimeout(String),
    #[error("{0}")]
    Http(String),
}

/// One connection: the request half, the I/O half (polled by whoever holds it) and the `Host`
/// its requests carry (built once per connection, not per request).
struct Conn {
    sender: Sender,
    driver: Driver,
    host: Option<HeaderValue>,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// A member address: scheme (https or not) and authority.
type Address = (bool, Authority);

type IdleLists = Arc<Mutex<HashMap<Address, Vec<Idle>>>>;

/// Idle connections per member address, and the TLS client for `https://` members.
#[derive(Clone, Default)]
pub struct Connections {
    idle: IdleLists,
    /// Absent: `https://` URLs are refused ([`SendError::Url`]).
    tls: Option<TlsConnector>,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections").finish_non_exhaustive()
    }
}

impl Connections {
    /// Connections that also speak TLS to `https://` members, with `config`.
    pub fn with_tls(config: Arc<rustls::ClientConfig>) -> Self {
        Self {
            idle: IdleLists::default(),
            tls: Some(TlsConnector::from(config)),
        }
    }

    /// Sends `req` (absolute `url`) on an idle or new connection; returns the head with a body
    /// that keeps the connection going until it ends.
    pub async fn send(
        &self,
        url: &Uri,
        mut req: Request<Full<Bytes>>,
    ) -> Result<Response<MemberBody>, SendError> {
        let address = match (url.scheme_str(), url.authority()) {
            (Some("http"), Some(a)) => (false, a.clone()),
            (Some("https"), Some(a)) if self.tls.is_some() => (true, a.clone()),
            _ => return Err(SendError::Url(url.to_string())),
        };
        *req.uri_mut() = url
            .path_and_query()
            .map(|p| Uri::from(p.clone()))
            .unwrap_or_else(|| Uri::from_static("/"));
        let mut conn = self.ready_conn(&address).await?;
        if !req.headers().contains_key(http::header::HOST) {
            if let Some(host) = &conn.host {
                req.headers_mut().insert(http::header::HOST, host.clone());
            }
        }
        let sending = std::pin::pin!(conn.sender.send_request(req));
        let (head, driver) = drive(conn.driver, sending).await;
        let resp = head.map_err(|e| SendError::Http(error_chain(&e)))?;
        let back = driver.map(|driver| Returned {
            conn: Conn { driver, ..conn },
            address,
            idle: self.idle.clone(),
        });
        Ok(resp.map(|incoming| MemberBody { incoming, back }))
    }

    /// An idle connection that is still open and ready, else a new one.
    async fn ready_conn(&self, address: &Address) -> Result<Conn, SendError> {
        while let Some(conn) = self.take_idle(address) {
            if let Ok(conn) = ready(conn).await {
                return Ok(conn);
            }
        }
        let tls = if address.0 { self.tls.as_ref() } else { None };
        ready(connect(&address.1, tls).await?).await
    }

    fn take_idle(&self, address: &Address) -> Option<Conn> {
        let mut lists = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = lists.get_mut(address)?;
        while let Some(idle) = list.pop() {
            if idle.since.elapsed() < IDLE_TIMEOUT && !idle.conn.sender.is_closed() {
                return Some(idle.conn);
            }
        }
        None
    }
}

/// A TCP connection to `authority`, with a TLS handshake when `tls` is given (under the same
/// connect timeout), then the HTTP/1.1 handshake.
async fn connect(authority: &Authority, tls: Option<&TlsConnector>) -> Result<Conn, SendError> {
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority
        .port_u16()
        .unwrap_or(if tls.is_some() { 443 } else { 80 });
    let addr = authority.as_str().to_string();
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port)))
        .await
        .map_err(|_| SendError::ConnectTimeout(addr.clone()))?
        .map_err(|e| SendError::Connect {
            addr: addr.clone(),
            reason: e.to_string(),
        })?;
    let _ = stream.set_nodelay(true);
    let stream = match tls {
        None => MemberStream::Plain(stream),
        Some(tls) => match handshake(tls, host, stream, CONNECT_TIMEOUT).await {
            Ok(s) => MemberStream::Tls(Box::new(s)),
            Err(HandshakeError::Tls(f)) => {
                return Err(SendError::Tls {
                    addr,
                    label: f.label,
                    detail: f.detail,
                })
            }
            Err(HandshakeError::Io(reason)) => return Err(SendError::Connect { addr, reason }),
            Err(HandshakeError::Timeout) => return Err(SendError::ConnectTimeout(addr)),
        },
    };
    let (sender, driver) = Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| SendError::Connect {
            addr,
            reason: error_chain(&e),
        })?;
    Ok(Conn {
        sender,
        driver: Box::pin(driver),
        host: HeaderValue::from_str(authority.as_str()).ok(),
    })
}

/// Polls `driver` (the connection's I/O) alongside `fut` until `fut` completes; the driver comes
/// back unless the connection ended meanwhile (then it is dropped, which fails `fut`).
/// `conn` once it can take a request, driving its connection meanwhile; an error when it failed
/// or closed first.
async fn ready(mut conn: Conn) -> Result<Conn, SendError> {
    let ready = std::future::poll_fn(|cx| conn.sender.poll_ready(cx));
    match drive(conn.driver, ready).await {
        (Ok(()), Some(driver)) => {
            conn.driver = driver;
            Ok(conn)
        }
        (Err(e), _) => Err(SendError::Http(error_chain(&e))),
        (Ok(()), None) => Err(SendError::Http("connection closed".into())),
    }
}

async fn drive<F: Future + Unpin>(driver: Driver, mut fut: F) -> (F::Output, Option<Driver>) {
    let mut driver = Some(driver);
    let out = std::future::poll_fn(|cx| {
        if let Some(d) = driver.as_mut() {
            if d.as_mut().poll(cx).is_ready() {
                driver = None;
            }
        }
        Pin::new(&mut fut).poll(cx)
    })
    .await;
    (out, driver)
}

/// A connection to hand back to its idle list once the body has ended.
struct Returned {
    conn: Conn,
    address: Address,
    idle: IdleLists,
}

impl Returned {
    fn give_back(self) {
        let mut lists = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = lists.entry(self.address).or_default();
        if list.len() < MAX_IDLE_PER_MEMBER {
            list.push(Idle {
                conn: self.conn,
                since: Instant::now(),
            });
        }
    }
}

/// A member's response body: polls the connection while it is read and returns the connection to
/// the idle list at its end. Dropped before the end, the connection is closed.
pub struct MemberBody {
    incoming: Incoming,
    back: Option<Returned>,
}

impl Body for MemberBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        if let Some(back) = this.back.as_mut() {
            if back.conn.driver.as_mut().poll(cx).is_ready() {
                this.back = None;
            }
        }
        let frame = ready!(Pin::new(&mut this.incoming).poll_frame(cx));
        match &frame {
            None => {
                if let Some(back) = this.back.take() {
                    back.give_back();
                }
            }
            Some(Err(_)) => this.back = None,
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;
    use tokio::net::TcpListener;

    use super::*;

    /// A backend answering `ok` that counts the connections it accepts.
    async fn counting_backend() -> (Uri, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url: Uri = format!(
            "http://{}/v1/chat/completions",
            listener.local_addr().unwrap()
        )
        .parse()
        .unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from("ok"))))
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc),
                );
            }
        });
        (url, accepted)
    }

    #[tokio::test]
    async fn a_connection_is_reused_once_its_body_is_read_and_not_before() {
        let (url, accepted) = counting_backend().await;
        let conns = Connections::default();
        for _ in 0..3 {
            let resp = conns
                .send(&url, Request::new(Full::default()))
                .await
                .unwrap();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        // A body still unread holds its connection: a second request opens another.
        let held = conns
            .send(&url, Request::new(Full::default()))
            .await
            .unwrap();
        let _ = conns
            .send(&url, Request::new(Full::default()))
            .await
            .unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        drop(held);
    }

    #[tokio::test]
    async fn a_refused_connect_and_a_non_http_url_are_errors() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url: Uri = format!("http://{}/x", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        drop(listener);
        let conns = Connections::default();
        let refused = conns.send(&url, Request::new(Full::default())).await;
        assert!(matches!(refused, Err(SendError::Connect { .. })));
        let https: Uri = "https://example.invalid/x".parse().unwrap();
        let unsupported = conns.send(&https, Request::new(Full::default())).await;
        assert!(matches!(unsupported, Err(SendError::Url(_))));
    }
}
