//! Why the external metrics API server could not start (or stopped).

use std::net::SocketAddr;
use std::path::PathBuf;

/// A failure of the external metrics API server as a whole; failures of one request are HTTP
/// answers, never this.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--tls-cert-file and --tls-key-file go together: give both or neither")]
    IncompleteCertFiles,
    #[error("reading {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: {message}")]
    Pem { what: String, message: String },
    #[error("generating the self-signed serving certificate: {0}")]
    SelfSigned(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("request-header client CA: {0}")]
    ClientCa(String),
    #[error("ConfigMap kube-system/extension-apiserver-authentication: {0}")]
    AuthConfig(String),
    #[error("reading ConfigMap kube-system/extension-apiserver-authentication: {0}")]
    AuthConfigMap(#[source] kube::Error),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}
