//! The replay routes behind TLS: a stand-in for a hosted or self-hosted `https://` member, so
//! that the router's and the labelling client's certificate checks run against a real server.

use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::ReplayServer;

/// Serves `server` over TLS with `config` (certificate and key) on `listener`, HTTP/1.1 and h2
/// (by ALPN), until the task is dropped. A failed handshake (a client that does not trust the
/// certificate) closes that connection only.
pub async fn serve_tls(
    listener: TcpListener,
    server: Arc<ReplayServer>,
    config: Arc<rustls::ServerConfig>,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(config);
    let app = server.app();
    loop {
        let (tcp, peer) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
            };
            let served = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}
