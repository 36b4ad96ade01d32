//! The HTTP serve loop for any `tower::Service` (the [`Router`] is served as one): hyper 1 (HTTP/1.1 and h2c),
//! header-read timeout against slow clients, TCP_NODELAY, and graceful shutdown: readiness turns
//! false, new connections are still accepted for a short delay (whoever routes to the pod, a
//! Service's NAT or a load balancer, learns of it only after the endpoint update has reached
//! them), then accepting stops and in-flight requests finish (up to a grace period).
//!
//! Dropping (aborting) the serve future instead drops every connection at once: tests use that to
//! kill a backend abruptly.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::body::RespBody;
use crate::router::Router;

/// Longest a client may take to send request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest request head (request line and headers) read at all: hyper answers a larger one 431
/// without reading it whole. Heads between [`crate::ingest::MAX_HEADER_BYTES`] and this get the
/// router's own 431 with an OpenAI-style error body.
pub const MAX_HEAD_BYTES: usize = 128 * 1024;

/// How a server stops once its shutdown signal fires: readiness turns false at once, new
/// connections are still accepted for `delay` (a Service moves new connections elsewhere only
/// after the endpoint change reaches every node's NAT, a second or more after the pod is told to
/// stop: until then a closed listener would refuse them), then accepting stops and in-flight
/// requests get at most `grace` to finish.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drain {
    pub delay: Duration,
    pub grace: Duration,
}

/// A grace period alone: accepting stops at the signal (tests, processes behind no Service).
impl From<Duration> for Drain {
    fn from(grace: Duration) -> Self {
        Self {
            delay: Duration::ZERO,
            grace,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then drains as `drain` says.
pub async fn serve(
    listener: TcpListener,
    router: Arc<Router>,
    shutdown: impl Future<Output = ()>,
    drain: impl Into<Drain>,
) {
    let r = router.clone();
    let service = tower::service_fn(move |req| r.clone().handle(req).map(Ok::<_, Infallible>));
    serve_service(listener, service, shutdown, drain, move || {
        router.on_shutdown()
    })
    .await;
}

/// Serves a `tower::Service` on `listener` until `shutdown` resolves; then calls `on_shutdown`
/// (readiness turns false), keeps accepting for the drain delay, stops accepting and drains for
/// at most the grace period.
pub async fn serve_service<S>(
    listener: TcpListener,
    service: S,
    shutdown: impl Future<Output = ()>,
    drain: impl Into<Drain>,
    on_shutdown: impl FnOnce(),
) where
    S: tower::Service<
            http::Request<Incoming>,
            Response = http::Response<RespBody>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let drain = drain.into();
    let mut acceptor = Acceptor::new(service);
    acceptor.accept_until(&listener, shutdown).await;
    on_shutdown();
    if !drain.delay.is_zero() {
        tracing::info!(delay = ?drain.delay, "shutting down: not ready; accepting until the endpoint change has spread");
        acceptor
            .accept_until(&listener, tokio::time::sleep(drain.delay))
            .await;
    }
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    let Acceptor {
        graceful,
        mut conns,
        ..
    } = acceptor;
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("drained"),
        () = tokio::time::sleep(drain.grace) => tracing::warn!(grace = ?drain.grace, "grace period over; closing remaining connections"),
    }
    conns.abort_all();
}

/// Accepts connections and serves each on its own task, watched for graceful shutdown.
struct Acceptor<S> {
    service: S,
    builder: auto::Builder<TokioExecutor>,
    graceful: GracefulShutdown,
    conns: JoinSet<()>,
}

impl<S> Acceptor<S>
where
    S: tower::Service<
            http::Request<Incoming>,
            Response = http::Response<RespBody>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    fn new(service: S) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .max_buf_size(MAX_HEAD_BYTES)
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(MAX_HEAD_BYTES as u32);
        Self {
            service,
            builder,
            graceful: GracefulShutdown::new(),
            conns: JoinSet::new(),
        }
    }

    /// Accepts and serves connections until `until` resolves.
    async fn accept_until(&mut self, listener: &TcpListener, until: impl Future<Output = ()>) {
        tokio::pin!(until);
        loop {
            // Reap finished connection tasks so the set stays small.
            while self.conns.try_join_next().is_some() {}
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _peer)) => self.serve(stream),
                    Err(e) => {
                        // EMFILE and friends: back off briefly rather than spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                },
                () = &mut until => return,
            }
        }
    }

    fn serve(&mut self, stream: tokio::net::TcpStream) {
        let _ = stream.set_nodelay(true);
        let svc = TowerToHyperService::new(self.service.clone());
        let conn = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(stream), svc);
        let conn = self.graceful.watch(conn.into_owned());
        self.conns.spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}
