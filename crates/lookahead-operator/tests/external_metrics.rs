//! The operator's external metrics API server (`external_metrics`) over real TLS on loopback,
//! called by a tokio-rustls + hyper client the way the API server's aggregator calls it.
//!
//! - Without a cluster: the real TLS listener and request-header authenticator, fed a front-proxy
//!   CA made here with rcgen, and a test-double authorizer.
//! - With a cluster (`KUBECONFIG`, e.g. `../shared/k8s/cluster.sh start`): the real `serve` reading
//!   the real ConfigMap `kube-system/extension-apiserver-authentication`, with real TokenReview
//!   and SubjectAccessReview; and the real aggregator proxying to it through an APIService.
//!   Skipped with the reason when there is no cluster, unless `LOOKAHEAD_REQUIRE_CLUSTER=1`.
#![cfg(test)]

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use futures::future::BoxFuture;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use lookahead_operator::external_metrics::{
    requestheader::RequestHeaderAuthenticator, server, tls, Attributes, Authorizer, Decision,
    Handler, MetricSource, MetricValue, RequestHeaderConfig, Selector, ServingCert, Shared, User,
};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_rustls::TlsConnector;

const METRIC: &str = "lookahead_inflight_requests";

/// Test double of the real source: per namespace, one value per model.
struct Inflight;

impl MetricSource for Inflight {
    fn metric_names(&self) -> Vec<String> {
        vec![METRIC.to_string()]
    }

    fn values(
        &self,
        namespace: &str,
        metric: &str,
        selector: &Selector,
    ) -> Option<Vec<MetricValue>> {
        if metric != METRIC {
            return None;
        }
        let values = [("llama", 3.0), ("qwen", 1.5)]
            .into_iter()
            .map(|(model, value)| MetricValue {
                labels: BTreeMap::from([
                    ("model".to_string(), model.to_string()),
                    ("namespace".to_string(), namespace.to_string()),
                ]),
                value,
            })
            .filter(|v| selector.matches(&v.labels))
            .collect();
        Some(values)
    }
}

// ---------------------------------------------------------------------------------------------
// PKI and the client.

/// A client certificate and its key.
struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn client_cert(issuer: &CertifiedIssuer<'static, KeyPair>, cn: &str) -> Identity {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    Identity {
        chain: vec![cert.der().clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    }
}

/// How the client checks the server's certificate.
enum Trust {
    /// Verified against this certificate as the root, for the SNI name.
    Cert(CertificateDer<'static>),
    /// Not verified (to fetch a certificate the test does not know yet).
    Anything,
}

/// An HTTPS client of one server: TLS by tokio-rustls, HTTP/1.1 or HTTP/2 by hyper.
struct Client {
    addr: SocketAddr,
    name: ServerName<'static>,
    config: Arc<ClientConfig>,
    h2: bool,
}

impl Client {
    fn new(addr: SocketAddr, name: &str, trust: Trust, identity: Option<&Identity>) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match trust {
            Trust::Cert(cert) => {
                let mut roots = RootCertStore::empty();
                roots.add(cert).unwrap();
                builder.with_root_certificates(roots)
            }
            Trust::Anything => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnything(provider))),
        };
        let config = match identity {
            Some(id) => builder
                .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        Self {
            addr,
            name: ServerName::try_from(name.to_string()).unwrap(),
            config: Arc::new(config),
            h2: false,
        }
    }

    /// The same client speaking HTTP/2 (negotiated by ALPN, as Go's clients do).
    fn http2(mut self) -> Self {
        let mut config = (*self.config).clone();
        config.alpn_protocols = vec![b"h2".to_vec()];
        self.config = Arc::new(config);
        self.h2 = true;
        self
    }

    async fn connect(&self) -> anyhow::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(self.addr).await?;
        let connector = TlsConnector::from(self.config.clone());
        Ok(connector.connect(self.name.clone(), tcp).await?)
    }

    /// The server's certificate.
    async fn server_certificate(&self) -> anyhow::Result<CertificateDer<'static>> {
        let tls = self.connect().await?;
        let certs = tls
            .get_ref()
            .1
            .peer_certificates()
            .context("no server certificate")?;
        Ok(certs[0].clone().into_owned())
    }

    /// `GET path` with `headers`: the status and the body (JSON, or a JSON string of the text).
    async fn get(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<(StatusCode, Value)> {
        let io = TokioIo::new(self.connect().await?);
        let mut request = Request::get(format!("https://{}{path}", self.addr));
        if !self.h2 {
            // HTTP/1.1 names the host in a header (HTTP/2 in :authority, from the URI).
            request = request.header(http::header::HOST, self.addr.to_string());
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Empty::<Bytes>::new())?;
        let response = if self.h2 {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(conn);
            sender.send_request(request).await?
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(conn);
            sender.send_request(request).await?
        };
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        let value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
        Ok((status, value))
    }
}

/// Accepts any server certificate (signatures still checked): for fetching an unknown one.
#[derive(Debug)]
struct AcceptAnything(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

// ---------------------------------------------------------------------------------------------
// Without a cluster: the real TLS server and request-header authenticator.

/// Test double of the SubjectAccessReview authorizer: everyone but `nosy` may read.
struct DenyNosy;

const NOSY: &str = "system:serviceaccount:team-a:nosy";

impl Authorizer for DenyNosy {
    fn authorize<'a>(
        &'a self,
        user: &'a User,
        _: &'a Attributes,
    ) -> BoxFuture<'a, Result<Decision, lookahead_operator::external_metrics::authz::AuthzError>>
    {
        let decision = if user.name == NOSY {
            Decision::Deny {
                reason: "no RBAC policy matched".to_string(),
            }
        } else {
            Decision::Allow
        };
        Box::pin(async move { Ok(decision) })
    }
}

/// The ConfigMap data a kube-apiserver with a front proxy publishes, for `ca`.
fn extension_apiserver_authentication(
    ca: &CertifiedIssuer<'static, KeyPair>,
) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("requestheader-client-ca-file".to_string(), ca.pem()),
        (
            "requestheader-allowed-names".to_string(),
            r#"["front-proxy-client"]"#.to_string(),
        ),
        (
            "requestheader-username-headers".to_string(),
            r#"["X-Remote-User"]"#.to_string(),
        ),
        (
            "requestheader-group-headers".to_string(),
            r#"["X-Remote-Group"]"#.to_string(),
        ),
        (
            "requestheader-extra-headers-prefix".to_string(),
            r#"["X-Remote-Extra-"]"#.to_string(),
        ),
    ])
}

/// The real server on loopback, and what the test may change or stop.
struct Loopback {
    addr: SocketAddr,
    /// Its self-signed certificate, for "localhost".
    cert: CertificateDer<'static>,
    serving: ServingCert,
    /// What the refresh loop would replace in production.
    tls: Shared<rustls::ServerConfig>,
    request_header: Shared<RequestHeaderConfig>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

/// Starts the real server on 127.0.0.1:0 trusting `front_proxy_ca`.
async fn start_loopback(front_proxy_ca: &CertifiedIssuer<'static, KeyPair>) -> Loopback {
    let data = extension_apiserver_authentication(front_proxy_ca);
    let config = RequestHeaderConfig::from_data(&data).unwrap();
    let serving = ServingCert::self_signed(vec!["localhost".to_string()]).unwrap();
    let tls = Shared::from_arc(tls::server_config(&serving, &config.client_ca).unwrap());
    let request_header = Shared::new(config);
    let handler = Arc::new(Handler::new(
        Arc::new(Inflight),
        Arc::new(RequestHeaderAuthenticator::new(request_header.clone())),
        Arc::new(DenyNosy),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server::run(listener, tls.clone(), handler, async {
        let _ = stopped.await;
    }));
    Loopback {
        addr,
        cert: serving.chain[0].clone(),
        serving,
        tls,
        request_header,
        stop,
        task,
    }
}

fn metric_path(namespace: &str) -> String {
    format!("/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{METRIC}")
}

const CONTROLLER_MANAGER: (&str, &str) = ("X-Remote-User", "system:kube-controller-manager");

#[tokio::test]
async fn external_metrics_front_proxy_client_with_remote_user_gets_the_metric_over_tls() {
    let front_proxy = ca("front-proxy-ca");
    let Loopback {
        addr,
        cert: server_cert,
        stop,
        task,
        ..
    } = start_loopback(&front_proxy).await;
    let aggregator = client_cert(&front_proxy, "front-proxy-client");
    let client = Client::new(
        addr,
        "localhost",
        Trust::Cert(server_cert.clone()),
        Some(&aggregator),
    );

    let path = format!("{}?labelSelector=model%3Dqwen", metric_path("team-a"));
    let (status, body) = client.get(&path, &[CONTROLLER_MANAGER]).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["kind"], "ExternalMetricValueList");
    assert_eq!(body["apiVersion"], "external.metrics.k8s.io/v1beta1");
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{body}");
    assert_eq!(items[0]["metricName"], METRIC);
    assert_eq!(items[0]["metricLabels"]["model"], "qwen");
    assert_eq!(items[0]["metricLabels"]["namespace"], "team-a");
    assert_eq!(items[0]["value"], "1500m");

    // Discovery over HTTP/2, as the aggregator negotiates it.
    let h2 = Client::new(
        addr,
        "localhost",
        Trust::Cert(server_cert),
        Some(&aggregator),
    )
    .http2();
    let headers = [
        CONTROLLER_MANAGER,
        ("X-Remote-Group", "system:authenticated"),
    ];
    let (status, body) = h2
        .get("/apis/external.metrics.k8s.io/v1beta1", &headers)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["kind"], "APIResourceList");
    assert_eq!(body["resources"][0]["name"], METRIC);
    assert_eq!(body["resources"][0]["namespaced"], true);

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .expect("the server stops on shutdown")
        .unwrap();
}

#[tokio::test]
async fn external_metrics_requests_without_front_proxy_credentials_are_refused() {
    let front_proxy = ca("front-proxy-ca");
    let server = start_loopback(&front_proxy).await;
    let (addr, server_cert) = (server.addr, server.cert.clone());
    let trust = || Trust::Cert(server_cert.clone());
    let path = metric_path("team-a");

    // No certificate, no token: 401, even with a user header (only a front proxy may set it).
    let anonymous = Client::new(addr, "localhost", trust(), None);
    let (status, body) = anonymous.get(&path, &[CONTROLLER_MANAGER]).await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["reason"], "Unauthorized");
    assert_eq!(body["code"], 401);
    // Probes need no credentials.
    let (status, _) = anonymous.get("/healthz", &[]).await.unwrap();
    assert_eq!(status, StatusCode::OK);

    // A certificate from another CA (same CN): the TLS handshake refuses it (rustls: UnknownCA).
    let rogue = client_cert(&ca("rogue-ca"), "front-proxy-client");
    let refused = Client::new(addr, "localhost", trust(), Some(&rogue))
        .get(&path, &[CONTROLLER_MANAGER])
        .await;
    let err = refused.expect_err("a certificate from another CA must not get an answer");
    assert!(format!("{err:#}").contains("UnknownCA"), "{err:#}");

    // Signed by the front-proxy CA but not an allowed name: 401.
    let intruder = client_cert(&front_proxy, "intruder");
    let (status, body) = Client::new(addr, "localhost", trust(), Some(&intruder))
        .get(&path, &[CONTROLLER_MANAGER])
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // The front proxy without a user header: nobody, 401.
    let aggregator = client_cert(&front_proxy, "front-proxy-client");
    let (status, _) = Client::new(addr, "localhost", trust(), Some(&aggregator))
        .get(&path, &[])
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn external_metrics_a_user_the_authorizer_denies_gets_403_with_its_reason() {
    let front_proxy = ca("front-proxy-ca");
    let server = start_loopback(&front_proxy).await;
    let (addr, server_cert) = (server.addr, server.cert.clone());
    let aggregator = client_cert(&front_proxy, "front-proxy-client");
    let client = Client::new(
        addr,
        "localhost",
        Trust::Cert(server_cert),
        Some(&aggregator),
    );
    let (status, body) = client
        .get(&metric_path("team-a"), &[("X-Remote-User", NOSY)])
        .await
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["reason"], "Forbidden");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains(NOSY), "{message}");
    assert!(message.ends_with("no RBAC policy matched"), "{message}");

    // An unknown metric, asked by an allowed user: a 404 Status.
    let (status, body) = client
        .get(
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/team-a/unknown",
            &[CONTROLLER_MANAGER],
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["reason"], "NotFound");
}

/// A rotated front-proxy CA (what the refresh loop publishes after the API server's CA
/// changes) applies to the next connection: the new CA's certificates are accepted, the old
/// one's refused.
#[tokio::test]
async fn external_metrics_new_request_header_settings_apply_to_new_connections() {
    let old_ca = ca("front-proxy-ca");
    let server = start_loopback(&old_ca).await;
    let get = |identity: &Identity| {
        let client = Client::new(
            server.addr,
            "localhost",
            Trust::Cert(server.cert.clone()),
            Some(identity),
        );
        async move {
            client
                .get(&metric_path("team-a"), &[CONTROLLER_MANAGER])
                .await
        }
    };
    let old_proxy = client_cert(&old_ca, "front-proxy-client");
    assert_eq!(get(&old_proxy).await.unwrap().0, StatusCode::OK);

    let new_ca = ca("front-proxy-ca-2");
    let data = extension_apiserver_authentication(&new_ca);
    let config = RequestHeaderConfig::from_data(&data).unwrap();
    server
        .tls
        .set(tls::server_config(&server.serving, &config.client_ca).unwrap());
    server.request_header.set(Arc::new(config));

    let new_proxy = client_cert(&new_ca, "front-proxy-client");
    assert_eq!(get(&new_proxy).await.unwrap().0, StatusCode::OK);
    assert!(
        get(&old_proxy).await.is_err(),
        "the old CA is no longer trusted"
    );
    let _ = server.stop.send(());
    let _ = server.task.await;
}

// ---------------------------------------------------------------------------------------------
// With a cluster: the real `serve`, TokenReview, SubjectAccessReview, ConfigMap and aggregator.

use common::{wait_for, TestNamespace};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Endpoints, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::api::{Api, DeleteParams, PostParams};
use lookahead_operator::external_metrics::{serve, Error, ServeOptions};
use serde_json::json;

/// A client for the cluster in `KUBECONFIG`, or `None` with the reason printed; with
/// `LOOKAHEAD_REQUIRE_CLUSTER=1` a missing cluster fails the test instead.
async fn cluster(test: &str) -> Option<kube::Client> {
    let require = std::env::var("LOOKAHEAD_REQUIRE_CLUSTER").as_deref() == Ok("1");
    let reason = match std::env::var("KUBECONFIG") {
        Err(_) => "KUBECONFIG is not set".to_string(),
        Ok(_) => match kube::Client::try_default().await {
            Err(e) => format!("no client: {e}"),
            Ok(client) => match client.apiserver_version().await {
                Ok(_) => return Some(client),
                Err(e) => format!("API server unreachable: {e}"),
            },
        },
    };
    assert!(!require, "{test}: LOOKAHEAD_REQUIRE_CLUSTER=1 but {reason}");
    eprintln!("skipping {test}: {reason} (start one with ../shared/k8s/cluster.sh start)");
    None
}

/// The real `serve` on all interfaces, a free port; returns once it answers.
async fn start_serve(
    client: &kube::Client,
    service: &str,
    namespace: &str,
) -> anyhow::Result<(
    u16,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), Error>>,
)> {
    let port = std::net::TcpListener::bind("0.0.0.0:0")?
        .local_addr()?
        .port();
    let opts = ServeOptions {
        addr: SocketAddr::from(([0, 0, 0, 0], port)),
        tls_cert_file: None,
        tls_key_file: None,
        service_name: service.to_string(),
        service_namespace: namespace.to_string(),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(client.clone(), Arc::new(Inflight), opts, async {
        let _ = stopped.await;
    }));
    let probe = Client::new(
        SocketAddr::from(([127, 0, 0, 1], port)),
        "localhost",
        Trust::Anything,
        None,
    );
    wait_for("the external metrics server to answer /healthz", || async {
        Ok(probe.get("/healthz", &[]).await.ok().map(|_| ()))
    })
    .await?;
    Ok((port, stop, task))
}

async fn service_account_token(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> anyhow::Result<String> {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    sas.create(&PostParams::default(), &sa).await?;
    let request: TokenRequest = serde_json::from_value(json!({"spec": {"audiences": []}}))?;
    let token = sas
        .create_token_request(name, &PostParams::default(), &request)
        .await?;
    Ok(token.status.map(|s| s.token).unwrap_or_default())
}

/// Lets ServiceAccount `reader` of `ns` read external metrics in `ns` (a Role: nothing outlives
/// the namespace).
async fn grant_reader(client: &kube::Client, ns: &str) -> anyhow::Result<()> {
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "external-metrics-reader"},
        "rules": [{"apiGroups": ["external.metrics.k8s.io"], "resources": ["*"], "verbs": ["get", "list"]}],
    }))?;
    Api::<Role>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &role)
        .await?;
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "external-metrics-reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "external-metrics-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": ns}],
    }))?;
    Api::<RoleBinding>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await?;
    Ok(())
}

/// The real `serve` reads the real ConfigMap, serves a self-signed certificate for its Service's
/// names, and lets the API server decide: TokenReview for the bearer token, RBAC through
/// SubjectAccessReview for the metric.
#[tokio::test]
async fn external_metrics_cluster_serve_authenticates_tokens_and_authorizes_with_the_api_server(
) -> anyhow::Result<()> {
    let Some(client) = cluster("cluster_serve_authenticates_tokens").await else {
        return Ok(());
    };
    let published = RequestHeaderConfig::load(&client).await?;
    assert!(
        !published.client_ca.is_empty(),
        "no front-proxy CA published"
    );
    assert_eq!(published.username_headers, ["X-Remote-User"]);
    assert!(published
        .allowed_names
        .iter()
        .any(|n| n == "front-proxy-client"));

    let ns = TestNamespace::create(&client, "extmetrics").await?;
    let reader = service_account_token(&client, &ns.name, "reader").await?;
    let nosy = service_account_token(&client, &ns.name, "nosy").await?;
    grant_reader(&client, &ns.name).await?;
    let (port, stop, task) = start_serve(&client, "lookahead-operator", &ns.name).await?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));

    // The self-signed certificate verifies for the Service's in-cluster name.
    let cert = Client::new(addr, "localhost", Trust::Anything, None)
        .server_certificate()
        .await?;
    let svc_name = format!("lookahead-operator.{}.svc", ns.name);
    let client_of = |token: &str| {
        let auth = format!("Bearer {token}");
        (
            Client::new(addr, &svc_name, Trust::Cert(cert.clone()), None),
            auth,
        )
    };

    let (c, auth) = client_of(&reader);
    let path = format!("{}?labelSelector=model+in+(llama)", metric_path(&ns.name));
    let (status, body) = c.get(&path, &[("Authorization", &auth)]).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["items"][0]["metricLabels"]["model"], "llama");
    assert_eq!(body["items"][0]["value"], "3");

    // RBAC allows `reader` in its own namespace only, and `nosy` nowhere.
    let (status, body) = c
        .get(&metric_path("default"), &[("Authorization", &auth)])
        .await?;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (c, auth) = client_of(&nosy);
    let (status, body) = c
        .get(&metric_path(&ns.name), &[("Authorization", &auth)])
        .await?;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains(":nosy"),
        "{body}"
    );
    // A token the API server does not know.
    let (c, auth) = client_of("not-a-token");
    let (status, body) = c
        .get(&metric_path(&ns.name), &[("Authorization", &auth)])
        .await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(15), task).await???;
    Ok(())
}

/// Deletes the test's APIService when the test ends (also on failure).
struct ApiServiceGuard;

const API_SERVICE: &str = "v1beta1.external.metrics.k8s.io";

impl Drop for ApiServiceGuard {
    fn drop(&mut self) {
        let _ = std::thread::spawn(|| {
            if let Ok(rt) = tokio::runtime::Runtime::new() {
                rt.block_on(async {
                    if let Ok(client) = kube::Client::try_default().await {
                        let api: Api<APIService> = Api::all(client);
                        let _ = api.delete(API_SERVICE, &DeleteParams::default()).await;
                    }
                });
            }
        })
        .join();
    }
}

/// This machine's address on its default route (what the API server can dial an Endpoints
/// address at: Endpoints may not be loopback).
fn host_ip() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("10.255.255.254:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// The real aggregator, with its real front-proxy certificate, proxies
/// `external.metrics.k8s.io` to `serve` through an APIService and a Service, as the chart
/// installs it.
#[tokio::test]
async fn external_metrics_cluster_aggregator_proxies_to_serve() -> anyhow::Result<()> {
    let Some(client) = cluster("cluster_aggregator_proxies_external_metrics").await else {
        return Ok(());
    };
    let api_services: Api<APIService> = Api::all(client.clone());
    if api_services.get_opt(API_SERVICE).await?.is_some() {
        eprintln!("skipping: APIService {API_SERVICE} exists (another server owns it)");
        return Ok(());
    }
    let Some(ip) = host_ip() else {
        eprintln!("skipping: this machine has no non-loopback address the API server can dial");
        return Ok(());
    };
    let ns = TestNamespace::create(&client, "extmetrics-agg").await?;
    let (port, stop, task) = start_serve(&client, "lookahead-operator", &ns.name).await?;
    expose(&client, &ns.name, ip, port).await?;
    let _guard = ApiServiceGuard;
    let api_service: APIService = serde_json::from_value(json!({
        "metadata": {"name": API_SERVICE},
        "spec": {
            "group": "external.metrics.k8s.io", "version": "v1beta1",
            "groupPriorityMinimum": 100, "versionPriority": 100, "insecureSkipTLSVerify": true,
            "service": {"name": "lookahead-operator", "namespace": ns.name, "port": 443},
        },
    }))?;
    api_services
        .create(&PostParams::default(), &api_service)
        .await?;
    let available = wait_for("the APIService to become Available", || async {
        let s = api_services.get(API_SERVICE).await?;
        let conditions = s.status.and_then(|s| s.conditions).unwrap_or_default();
        Ok(conditions
            .iter()
            .any(|c| c.type_ == "Available" && c.status == "True")
            .then_some(()))
    })
    .await;
    if let Err(e) = available {
        let status = api_services.get(API_SERVICE).await?.status;
        anyhow::bail!("{e}; APIService status: {status:?}");
    }

    // The aggregator installs its proxy for the group a moment after the APIService appears:
    // until then the path is the API server's own 404.
    let path = format!("{}?labelSelector=model%3Dqwen", metric_path(&ns.name));
    let list: Value = wait_for("the aggregator to proxy the metric", || async {
        let request = http::Request::get(path.as_str()).body(Vec::new())?;
        match client.request(request).await {
            Ok(list) => Ok(Some(list)),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
            Err(e) => Err(e.into()),
        }
    })
    .await?;
    assert_eq!(list["kind"], "ExternalMetricValueList", "{list}");
    assert_eq!(
        list["items"][0]["metricLabels"]["namespace"],
        ns.name.as_str()
    );
    assert_eq!(list["items"][0]["value"], "1500m");

    // A ServiceAccount RBAC lets read metrics in its namespace, as the HPA controller's is: the
    // aggregator forwards its identity, which the operator reviews again.
    let reader = service_account_token(&client, &ns.name, "reader").await?;
    grant_reader(&client, &ns.name).await?;
    let url = kube::Config::infer().await?.cluster_url;
    let host = url.host().context("API server host")?;
    let apiserver = tokio::net::lookup_host((host, url.port_u16().unwrap_or(443)))
        .await?
        .next()
        .context("API server address")?;
    let as_reader = Client::new(apiserver, "localhost", Trust::Anything, None);
    let auth = format!("Bearer {reader}");
    let (status, body) = as_reader
        .get(&metric_path(&ns.name), &[("Authorization", &auth)])
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["items"].as_array().map(Vec::len), Some(2), "{body}");

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(15), task).await???;
    Ok(())
}

/// Service `lookahead-operator` in `ns` with port 443 → this process at `ip:port` (a selectorless
/// Service and its Endpoints: the server runs in the test, not in a pod).
async fn expose(
    client: &kube::Client,
    ns: &str,
    ip: std::net::IpAddr,
    port: u16,
) -> anyhow::Result<()> {
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "lookahead-operator"},
        "spec": {"ports": [{"name": "https", "port": 443, "targetPort": port, "protocol": "TCP"}]},
    }))?;
    Api::<Service>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &service)
        .await?;
    let endpoints: Endpoints = serde_json::from_value(json!({
        "metadata": {"name": "lookahead-operator"},
        "subsets": [{
            "addresses": [{"ip": ip.to_string()}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        }],
    }))?;
    Api::<Endpoints>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &endpoints)
        .await?;
    Ok(())
}
