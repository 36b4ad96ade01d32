//! TLS to OpenAI-compatible members (the router's member connections and [`crate::ChatClient`]):
//! rustls (ring) trusting the system's root certificates plus, optionally, the CAs of a PEM
//! bundle (a private CA of self-hosted members), and a short, fixed label for each way a
//! handshake fails, for headers, metrics and logs.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{CertificateError, ClientConfig, RootCertStore};

/// Why the TLS client configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read CA bundle {path}: {reason}")]
    ReadBundle { path: PathBuf, reason: String },
    #[error("CA bundle {path} holds no PEM certificate")]
    EmptyBundle { path: PathBuf },
    #[error("CA bundle {path}: certificate {index} is not a usable CA: {reason}")]
    BadCertificate {
        path: PathBuf,
        index: usize,
        reason: String,
    },
    #[error("TLS setup: {0}")]
    Setup(String),
}

/// The system's root certificates, read once per process (a rustls-native-certs scan of the
/// platform store, `SSL_CERT_FILE`/`SSL_CERT_DIR` honoured).
fn system_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!(error = %e, "some system root certificates could not be read");
        }
        let mut roots = RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            tracing::warn!(
                "no system root certificates found: https members need tls.caBundleFile"
            );
        }
        tracing::debug!(added, ignored, "system root certificates");
        roots
    })
}

/// The CA certificates of a PEM bundle (every `CERTIFICATE` block; other blocks are skipped).
pub fn read_bundle(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|e| TlsError::ReadBundle {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::ReadBundle {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::EmptyBundle {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// A client configuration trusting the system roots plus `ca_bundle`'s CAs, offering
/// `alpn` (e.g. `http/1.1`; empty: no ALPN).
pub fn client_config(
    ca_bundle: Option<&Path>,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = system_roots().clone();
    if let Some(path) = ca_bundle {
        for (index, cert) in read_bundle(path)?.into_iter().enumerate() {
            roots.add(cert).map_err(|e| TlsError::BadCertificate {
                path: path.to_owned(),
                index,
                reason: e.to_string(),
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A failed TLS handshake: a short label (`tls_unknown_ca`, `tls_bad_hostname`, ...) and the
/// rustls error text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFailure {
    pub label: &'static str,
    pub detail: String,
}

/// The TLS failure behind `e` (anywhere in its source chain, `std::io::Error` wrappers
/// included: hyper-rustls wraps tokio-rustls' `io::Error` in another), if it is one.
pub fn tls_failure(e: &(dyn std::error::Error + 'static)) -> Option<TlsFailure> {
    if let Some(r) = e.downcast_ref::<rustls::Error>() {
        return Some(classify(r));
    }
    // An io::Error's source() skips the error it wraps: look at that one first.
    let wrapped = e
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
        .map(|inner| inner as &(dyn std::error::Error + 'static));
    wrapped
        .and_then(tls_failure)
        .or_else(|| e.source().and_then(tls_failure))
}

/// The label of a rustls error, with a hint for the usual fix.
pub fn classify(e: &rustls::Error) -> TlsFailure {
    let (label, hint) = match e {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => (
                "tls_unknown_ca",
                " (the member's certificate is not signed by a trusted CA: add its CA to tls.caBundleFile)",
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => (
                "tls_bad_hostname",
                " (the certificate does not name the host in the member's baseUrl)",
            ),
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => ("tls_expired", ""),
            _ => ("tls_bad_certificate", ""),
        },
        rustls::Error::AlertReceived(_) => ("tls_alert", ""),
        _ => ("tls_handshake", ""),
    };
    TlsFailure {
        label,
        detail: format!("TLS: {e}{hint}"),
    }
}
