//! What changes while the server runs, and the loop that re-reads it: the API server's
//! request-header settings (its front-proxy CA rotates) and mounted serving-certificate files
//! (cert-manager renews them), both folded into the TLS settings new connections get.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use rustls::ServerConfig;

use super::requestheader::RequestHeaderConfig;
use super::shared::Shared;
use super::tls::{self, ServingCert};

/// How often the request-header ConfigMap and the certificate files are re-read.
pub const REFRESH_PERIOD: Duration = Duration::from_secs(300);

/// Re-reads the settings every period and publishes new TLS settings; a failed read keeps the
/// last good settings (the server keeps serving) and is logged.
pub struct Refresher {
    pub client: Client,
    /// Mounted certificate and key files; `None`: the self-signed certificate stays.
    pub cert_files: Option<(PathBuf, PathBuf)>,
    pub serving: ServingCert,
    pub request_header: Shared<RequestHeaderConfig>,
    pub tls: Shared<ServerConfig>,
}

impl Refresher {
    /// Runs until dropped (the server aborts it when it stops).
    pub async fn run(mut self, period: Duration) {
        let mut tick = tokio::time::interval(period);
        tick.tick().await;
        loop {
            tick.tick().await;
            self.refresh().await;
        }
    }

    async fn refresh(&mut self) {
        let request_header = match RequestHeaderConfig::load(&self.client).await {
            Ok(config) => Arc::new(config),
            Err(e) => {
                tracing::warn!(error = %e, "keeping the last request-header settings");
                self.request_header.get()
            }
        };
        if let Some((cert, key)) = &self.cert_files {
            match ServingCert::from_pem_files(cert, key) {
                Ok(serving) => self.serving = serving,
                Err(e) => tracing::warn!(error = %e, "keeping the last serving certificate"),
            }
        }
        match tls::server_config(&self.serving, &request_header.client_ca) {
            Ok(config) => {
                if *request_header != *self.request_header.get() {
                    tracing::info!("request-header settings changed");
                }
                self.request_header.set(request_header);
                self.tls.set(config);
            }
            Err(e) => tracing::warn!(error = %e, "keeping the last TLS settings"),
        }
    }
}
