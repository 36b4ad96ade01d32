//! The external metrics API (`external.metrics.k8s.io/v1beta1`), served from the operator
//! process the way KEDA's and metrics-server's aggregated API servers serve theirs: the API
//! server's aggregator proxies `/apis/external.metrics.k8s.io/v1beta1/...` here (APIService
//! `v1beta1.external.metrics.k8s.io`), so the controller-manager's HPA controller can scale model
//! Deployments on metrics Lookahead knows (docs/autoscaling.md).
//!
//! Modules, from the wire in:
//! - [`server`]: TLS listener, HTTP/1.1 and HTTP/2, graceful drain; [`tls`]: certificates.
//! - [`handler`]: one request: [`routes`] (which endpoint), [`authn`] and [`requestheader`]
//!   (who: front-proxy certificate + headers, or a bearer token through `TokenReview`),
//!   [`authz`] (may they: `SubjectAccessReview`), then [`api`] (the JSON answer) from the
//!   [`MetricSource`], filtered by a [`Selector`].
//! - [`reload`]: re-reads the request-header ConfigMap and certificate files while serving,
//!   publishing them through [`shared`]; [`cache`]: review answers reused for a few seconds.

pub mod api;
pub mod authn;
pub mod authz;
pub mod cache;
mod error;
pub mod handler;
pub mod reload;
pub mod requestheader;
pub mod routes;
pub mod selector;
pub mod server;
pub mod shared;
pub mod tls;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use kube::Client;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use authn::{Authenticator, Credentials, User};
pub use authz::{Attributes, Authorizer, Decision};
pub use error::Error;
pub use handler::Handler;
pub use requestheader::RequestHeaderConfig;
pub use selector::{Selector, SelectorError};
pub use shared::Shared;
pub use tls::ServingCert;

/// One value of an external metric, as the HPA reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricValue {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Where metric values come from (a snapshot: no I/O on the request path).
pub trait MetricSource: Send + Sync + 'static {
    /// Names of the metrics this source serves (for discovery).
    fn metric_names(&self) -> Vec<String>;
    /// Values of `metric` in `namespace` whose labels match every `selector` pair (an unknown
    /// metric: None).
    fn values(
        &self,
        namespace: &str,
        metric: &str,
        selector: &Selector,
    ) -> Option<Vec<MetricValue>>;
}

/// Where and how to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Listen address, e.g. `0.0.0.0:6443`.
    pub addr: SocketAddr,
    /// PEM serving certificate (chain) and key; both or neither. Neither: self-signed.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// The Service the APIService names: the self-signed certificate's DNS names.
    pub service_name: String,
    pub service_namespace: String,
}

/// Serves the external metrics API from `source` until `shutdown` resolves: TLS with the
/// configured or a self-signed certificate, request-header (front proxy) and bearer-token
/// authentication, `SubjectAccessReview` authorization. Fails at start when the certificate
/// files cannot be read, ConfigMap `kube-system/extension-apiserver-authentication` cannot be
/// read, or the address cannot be bound.
pub async fn serve(
    client: Client,
    source: Arc<dyn MetricSource>,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let cert_files = cert_files(&opts)?;
    let serving = serving_cert(&opts, cert_files.as_ref())?;
    let request_header = RequestHeaderConfig::load(&client).await?;
    let tls = Shared::from_arc(tls::server_config(&serving, &request_header.client_ca)?);
    let request_header = Shared::new(request_header);
    let handler = Arc::new(Handler::new(
        source,
        delegated_authenticator(client.clone(), request_header.clone()),
        Arc::new(authz::SubjectAccessReviewAuthorizer::new(client.clone())),
    ));
    let listener = TcpListener::bind(opts.addr)
        .await
        .map_err(|source| Error::Bind {
            addr: opts.addr,
            source,
        })?;
    tracing::info!(addr = %opts.addr, "serving external.metrics.k8s.io/v1beta1");
    let refresher = reload::Refresher {
        client,
        cert_files,
        serving,
        request_header,
        tls: tls.clone(),
    };
    let _refresh = AbortOnDrop(tokio::spawn(refresher.run(reload::REFRESH_PERIOD)));
    server::run(listener, tls, handler, shutdown).await;
    Ok(())
}

/// Front-proxy request headers first (the aggregator's way in), then bearer tokens.
pub fn delegated_authenticator(
    client: Client,
    request_header: Shared<RequestHeaderConfig>,
) -> Arc<dyn Authenticator> {
    Arc::new(authn::Union::new(vec![
        Arc::new(requestheader::RequestHeaderAuthenticator::new(
            request_header,
        )),
        Arc::new(authn::TokenReviewAuthenticator::new(client)),
    ]))
}

fn cert_files(opts: &ServeOptions) -> Result<Option<(PathBuf, PathBuf)>, Error> {
    match (&opts.tls_cert_file, &opts.tls_key_file) {
        (Some(cert), Some(key)) => Ok(Some((cert.clone(), key.clone()))),
        (None, None) => Ok(None),
        _ => Err(Error::IncompleteCertFiles),
    }
}

fn serving_cert(
    opts: &ServeOptions,
    files: Option<&(PathBuf, PathBuf)>,
) -> Result<ServingCert, Error> {
    if let Some((cert, key)) = files {
        return ServingCert::from_pem_files(cert, key);
    }
    let names = tls::service_dns_names(&opts.service_name, &opts.service_namespace);
    tracing::info!(
        ?names,
        "no --tls-cert-file: serving a self-signed certificate (the APIService must skip TLS \
         verification, or set a caBundle and mount a certificate)"
    );
    ServingCert::self_signed(names)
}

/// Stops the refresh loop when `serve` returns or is dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
