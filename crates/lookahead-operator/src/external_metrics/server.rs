//! The TLS listener: accepts connections, completes the handshake with the current TLS settings,
//! serves HTTP/1.1 or HTTP/2 on each with the client's certificate attached to its requests, and
//! drains open connections on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use rustls::pki_types::CertificateDer;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::handler::Handler;
use super::shared::Shared;

/// A client that opens a connection and sends nothing must not hold a task for long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections may finish their requests after shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `listener` with TLS settings from `tls` (read per connection, so a refresh applies to
/// new connections) until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    tls: Shared<ServerConfig>,
    handler: Arc<Handler>,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (tcp, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: pause instead of spinning.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = TlsAcceptor::from(tls.get());
        let handler = handler.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            if let Err(e) = connection(tcp, acceptor, handler, watcher).await {
                tracing::debug!(%peer, error = %e, "external metrics connection ended");
            }
        });
    }
    tracing::info!("external metrics server shutting down");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN_TIMEOUT) => {
            tracing::warn!("open external metrics connections did not finish in time");
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One connection: handshake, then HTTP until the client closes or shutdown drains it.
async fn connection(
    tcp: TcpStream,
    acceptor: TlsAcceptor,
    handler: Arc<Handler>,
    watcher: Watcher,
) -> Result<(), BoxError> {
    let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
        .await
        .map_err(|_| "TLS handshake timed out")??;
    let client_cert: Arc<Option<CertificateDer<'static>>> = Arc::new(
        stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|cert| cert.clone().into_owned()),
    );
    let service = service_fn(move |request: http::Request<Incoming>| {
        let handler = handler.clone();
        let client_cert = client_cert.clone();
        async move {
            let response = handler.handle(request, client_cert.as_ref().as_ref()).await;
            Ok::<_, Infallible>(response)
        }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    watcher
        .watch(builder.serve_connection(TokioIo::new(stream), service))
        .await
}
