//! TLS of the server: the serving certificate (mounted PEM files, else self-signed at start),
//! optional client certificates verified against the request-header CA, and the CN of a client
//! certificate.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use super::Error;

/// The certificate chain and key the server presents.
#[derive(Debug)]
pub struct ServingCert {
    pub chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// Generated at start: clients cannot verify it (the APIService then skips verification).
    pub self_signed: bool,
}

impl Clone for ServingCert {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            self_signed: self.self_signed,
        }
    }
}

impl ServingCert {
    /// Reads a PEM certificate chain and its PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem_files(cert_file: &Path, key_file: &Path) -> Result<Self, Error> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| Error::ReadFile {
                path: path.to_path_buf(),
                source,
            })
        };
        let chain = parse_certificates(&read(cert_file)?, &cert_file.display().to_string())?;
        let key = PrivateKeyDer::from_pem_slice(&read(key_file)?).map_err(|e| Error::Pem {
            what: key_file.display().to_string(),
            message: format!("no private key: {e}"),
        })?;
        Ok(Self {
            chain,
            key,
            self_signed: false,
        })
    }

    /// A fresh self-signed certificate (and key) for `dns_names`.
    pub fn self_signed(dns_names: Vec<String>) -> Result<Self, Error> {
        let certified = rcgen::generate_simple_self_signed(dns_names)?;
        let key = PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
        Ok(Self {
            chain: vec![certified.cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(key),
            self_signed: true,
        })
    }
}

/// The names the API server's aggregator may dial the Service by.
pub fn service_dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
    ]
}

/// Every certificate in a PEM bundle; at least one.
pub fn parse_certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Pem {
            what: what.to_string(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(Error::Pem {
            what: what.to_string(),
            message: "no PEM certificate".to_string(),
        });
    }
    Ok(certs)
}

/// The server's TLS settings: `cert` served; client certificates optional and, when presented,
/// verified against `client_ca` only (so a verified certificate is a front proxy's: the
/// request-header authenticator relies on it); no client certificates asked for when
/// `client_ca` is empty. HTTP/2 and HTTP/1.1 offered.
pub fn server_config(
    cert: &ServingCert,
    client_ca: &[CertificateDer<'static>],
) -> Result<Arc<ServerConfig>, Error> {
    // An explicit provider: the process-wide default is unset when several are compiled in.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = if client_ca.is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        for ca in client_ca {
            roots.add(ca.clone())?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .allow_unauthenticated()
            .build()
            .map_err(|e| Error::ClientCa(e.to_string()))?;
        builder.with_client_cert_verifier(verifier)
    };
    let mut config = builder.with_single_cert(cert.chain.clone(), cert.key.clone_key())?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The subject CN of a DER certificate, if it has one.
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_certificate_names_the_service() {
        let names = service_dns_names("lookahead-operator", "lookahead-system");
        assert_eq!(
            names,
            [
                "lookahead-operator",
                "lookahead-operator.lookahead-system",
                "lookahead-operator.lookahead-system.svc"
            ]
        );
        let cert = ServingCert::self_signed(names).unwrap();
        assert!(cert.self_signed);
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.chain[0].as_ref()).unwrap();
        let san = parsed.subject_alternative_name().unwrap().unwrap();
        let dns: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(dns.len(), 3, "{dns:?}");
        assert!(dns
            .iter()
            .any(|n| n.contains("lookahead-operator.lookahead-system.svc")));
        // Usable by rustls, with and without client certificates.
        server_config(&cert, &[]).unwrap();
        server_config(&cert, &cert.chain).unwrap();
    }

    #[test]
    fn common_name_of_a_client_certificate() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "front-proxy-client");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            common_name(cert.der()).as_deref(),
            Some("front-proxy-client")
        );
        assert_eq!(common_name(&CertificateDer::from(vec![1, 2, 3])), None);
    }

    #[test]
    fn pem_files_are_read_and_bad_ones_named() {
        let cert = rcgen::generate_simple_self_signed(vec!["x".to_string()]).unwrap();
        let dir = std::env::temp_dir().join(format!("lookahead-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (c, k) = (dir.join("tls.crt"), dir.join("tls.key"));
        std::fs::write(&c, cert.cert.pem()).unwrap();
        std::fs::write(&k, cert.signing_key.serialize_pem()).unwrap();
        let loaded = ServingCert::from_pem_files(&c, &k).unwrap();
        assert_eq!(loaded.chain, vec![cert.cert.der().clone()]);
        assert!(!loaded.self_signed);
        std::fs::write(&k, "not a key").unwrap();
        let err = ServingCert::from_pem_files(&c, &k).unwrap_err();
        assert!(err.to_string().contains("tls.key"), "{err}");
        let err = ServingCert::from_pem_files(&dir.join("missing"), &k).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
