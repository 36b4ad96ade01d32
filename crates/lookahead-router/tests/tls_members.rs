//! `https://` members with credentials: the real router (over loopback HTTP) in front of real
//! `lookahead-replay` members served over TLS (`lookahead_replay::serve_tls`) with certificates of
//! a private CA made by rcgen, and plain-http replay members beside them.
#![cfg(test)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use lookahead_api::RouterConfig;
use lookahead_replay::{ReplayBook, ReplayOptions, ReplayServer};
use lookahead_router::scoring::ScoreSource;
use lookahead_router::{Router, ScorerSlot};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// A private CA: its PEM (what `tls.caBundleFile` holds) and what it signs with.
struct TestCa {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// Writes the CA's PEM bundle into `dir`.
    fn bundle(&self, dir: &Path) -> PathBuf {
        let path = dir.join("ca.pem");
        std::fs::write(&path, &self.pem).unwrap();
        path
    }

    /// A server configuration whose certificate names `names`, signed by this CA.
    fn server_config(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

/// A replay member for `model` answering `prompt`, served over TLS with `config`: its
/// `https://127.0.0.1:PORT` URL and the member (its counters, the last `Authorization`).
async fn tls_member(
    model: &str,
    opts: ReplayOptions,
    config: Arc<rustls::ServerConfig>,
) -> (String, Arc<ReplayServer>, tokio::task::JoinHandle<()>) {
    let mut book = ReplayBook::new(model);
    book.insert("what is an integral", "an area under a curve".into());
    let member = Arc::new(ReplayServer::new(book, opts));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let served = member.clone();
    let task = tokio::spawn(async move {
        let _ = lookahead_replay::serve_tls(listener, served, config).await;
    });
    (url, member, task)
}

/// Ranks `Math-7B` first for prompts about integrals, `General-7B` second.
fn keyword_source() -> ScoreSource {
    let scorer = KeywordScorer::new(&[("Math-7B", "integral"), ("General-7B", "zzz")]);
    ScoreSource::InProcess(Arc::new(ScorerSlot::new(Arc::new(scorer), "test".into())))
}

/// A router config: `members` as YAML flow mappings, the CA bundle if any.
fn tls_config(members: &[String], ca_bundle: Option<&Path>) -> RouterConfig {
    let mut y = String::from("listen: 127.0.0.1:0\nmembers:\n");
    for m in members {
        y.push_str(&format!("  - {m}\n"));
    }
    y.push_str("policy: { method: lookahead-lite, artifact: /unused, defaultModel: general }\n");
    if let Some(ca) = ca_bundle {
        y.push_str(&format!("tls: {{ caBundleFile: {} }}\n", ca.display()));
    }
    let config: RouterConfig = serde_yaml::from_str(&y).unwrap();
    config.validate().unwrap();
    config
}

fn member(name: &str, model: &str, url: &str, extra: &str) -> String {
    format!("{{ name: {name}, modelId: {model}, baseUrl: \"{url}/v1\"{extra} }}")
}

fn with_auth(
    mut req: http::Request<http_body_util::Full<bytes::Bytes>>,
    value: &str,
) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    req.headers_mut()
        .insert("authorization", value.parse().unwrap());
    req
}

/// Right CA: the https member answers through the router (named and routed), with its
/// recorded answer, and nothing falls back.
#[tokio::test]
async fn an_https_member_signed_by_the_bundled_ca_answers() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("lookahead test CA");
    let (url, math, _task) = tls_member(
        "Math-7B",
        Default::default(),
        ca.server_config(&["127.0.0.1"]),
    )
    .await;
    let general = replay("General-7B", &[], Default::default()).await;
    let cfg = tls_config(
        &[
            member("math", "Math-7B", &url, ""),
            member("general", "General-7B", &general.url(), ""),
        ],
        Some(&ca.bundle(dir.path())),
    );
    let r = router(Router::new(&cfg, keyword_source()).unwrap()).await;
    let c = client();
    for (model, stream) in [("math", false), ("auto", false), ("auto", true)] {
        let reply = send(&c, chat(r.addr, model, "what is an integral", stream)).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        assert_eq!(reply.header("x-lookahead-model").as_deref(), Some("math"));
        assert_eq!(reply.header("x-lookahead-fallback"), None);
        let body = String::from_utf8_lossy(&reply.body);
        assert!(body.contains("area under"), "{body}");
    }
    assert_eq!(math.hits(), 3);
}

/// Wrong CA: every attempt on the https member fails its handshake with `tls_unknown_ca` (in
/// `x-lookahead-fallback`, and in the 502 of a request naming it); routed requests fall back to
/// the plain member, and the member is ejected after 3 failures like any failing member.
#[tokio::test]
async fn an_https_member_with_an_untrusted_certificate_is_ejected_and_requests_fall_back() {
    let dir = tempfile::tempdir().unwrap();
    let (trusted, signer) = (TestCa::new("trusted CA"), TestCa::new("unknown CA"));
    let (url, math, _task) = tls_member(
        "Math-7B",
        Default::default(),
        signer.server_config(&["127.0.0.1"]),
    )
    .await;
    let general = replay("General-7B", &[], Default::default()).await;
    let cfg = tls_config(
        &[
            member("math", "Math-7B", &url, ""),
            member("general", "General-7B", &general.url(), ""),
        ],
        Some(&trusted.bundle(dir.path())),
    );
    let r = router(Router::new(&cfg, keyword_source()).unwrap()).await;
    let c = client();
    for _ in 0..2 {
        let routed = send(&c, chat(r.addr, "auto", "what is an integral", false)).await;
        assert_eq!(routed.status, 200, "{:?}", routed.body);
        assert_eq!(
            routed.header("x-lookahead-model").as_deref(),
            Some("general")
        );
        let fallback = routed.header("x-lookahead-fallback").unwrap_or_default();
        assert!(fallback.contains("math:tls_unknown_ca"), "{fallback}");
    }
    let named = send(&c, chat(r.addr, "math", "what is an integral", false)).await;
    assert_eq!(named.status, 502, "{:?}", named.body);
    let message = named.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains("math:tls_unknown_ca"), "{message}");
    assert!(metric(&r, "lookahead_router_ejections_total{member=\"math\"}") >= 1);
    // Ejected: the next routed request does not try it at all.
    let after = send(&c, chat(r.addr, "auto", "what is an integral", false)).await;
    assert_eq!(after.status, 200);
    assert_eq!(after.header("x-lookahead-fallback"), None);
    assert_eq!(math.served(), 0, "no request got through the handshake");
}

/// A certificate for another host name (right CA): `tls_bad_hostname`.
#[tokio::test]
async fn a_certificate_for_another_host_reads_as_a_bad_hostname() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("lookahead test CA");
    let (url, _math, _task) = tls_member(
        "Math-7B",
        Default::default(),
        ca.server_config(&["other.example"]),
    )
    .await;
    let general = replay("General-7B", &[], Default::default()).await;
    let cfg = tls_config(
        &[
            member("math", "Math-7B", &url, ""),
            member("general", "General-7B", &general.url(), ""),
        ],
        Some(&ca.bundle(dir.path())),
    );
    let r = router(Router::new(&cfg, keyword_source()).unwrap()).await;
    let named = send(
        &client(),
        chat(r.addr, "math", "what is an integral", false),
    )
    .await;
    assert_eq!(named.status, 502);
    let message = named.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains("math:tls_bad_hostname"), "{message}");
}

/// A member's key goes to that member only, in place of the client's `Authorization`; a member
/// without a key gets the client's (also after a keyed member failed and the request moved on);
/// the key is in no response header.
#[tokio::test]
async fn a_member_key_replaces_the_client_key_for_that_member_only() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("lookahead test CA");
    let hosted_opts = ReplayOptions {
        api_key: Some("sk-hosted-KEY1".into()),
        ..Default::default()
    };
    let (url, hosted, _task) =
        tls_member("Math-7B", hosted_opts, ca.server_config(&["127.0.0.1"])).await;
    let flaky = replay(
        "Flaky-7B",
        &[],
        ReplayOptions {
            failure_rate: 1.0,
            ..Default::default()
        },
    )
    .await;
    let general = replay("General-7B", &[], Default::default()).await;
    let (hosted_key, flaky_key) = (dir.path().join("hosted"), dir.path().join("flaky"));
    std::fs::write(&hosted_key, "sk-hosted-KEY1\n").unwrap();
    std::fs::write(&flaky_key, "sk-flaky-KEY2").unwrap();
    let key_of = |p: &Path| format!(", apiKeyFile: {}", p.display());
    let cfg = tls_config(
        &[
            member("math", "Math-7B", &url, &key_of(&hosted_key)),
            member("flaky", "Flaky-7B", &flaky.url(), &key_of(&flaky_key)),
            member("general", "General-7B", &general.url(), ""),
        ],
        Some(&ca.bundle(dir.path())),
    );
    // flaky first for prompts saying "flaky", then general, then math.
    let scorer = KeywordScorer::new(&[
        ("Flaky-7B", "flaky"),
        ("General-7B", "zzz"),
        ("Math-7B", "integral"),
    ]);
    let source = ScoreSource::InProcess(Arc::new(ScorerSlot::new(Arc::new(scorer), "t".into())));
    let r = router(Router::new(&cfg, source).unwrap()).await;
    let c = client();
    let to_hosted = with_auth(
        chat(r.addr, "math", "what is an integral", false),
        "Bearer sk-client",
    );
    let reply = send(&c, to_hosted).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(
        hosted.last_authorization().as_deref(),
        Some("Bearer sk-hosted-KEY1")
    );
    for (name, value) in &reply.headers {
        let v = value.to_str().unwrap_or_default();
        assert!(!v.contains("KEY1"), "key in response header {name}: {v}");
    }
    // flaky (keyed) fails, the request moves on to general (keyless): the client's key.
    let to_flaky = with_auth(chat(r.addr, "auto", "flaky", false), "Bearer sk-client");
    let reply = send(&c, to_flaky).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(
        reply.header("x-lookahead-model").as_deref(),
        Some("general")
    );
    assert_eq!(
        flaky.handler.last_authorization().as_deref(),
        Some("Bearer sk-flaky-KEY2")
    );
    assert_eq!(
        general.handler.last_authorization().as_deref(),
        Some("Bearer sk-client")
    );
}

/// A mounted Secret is updated by a symlink swap (`..data` → a new timestamped directory): the
/// router sends the new key within a few seconds, without a restart.
#[tokio::test]
async fn a_rotated_member_key_is_sent_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path();
    let write_version = |version: &str, key: &str| {
        let d = mount.join(version);
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("key"), key).unwrap();
        let tmp = mount.join("..data_tmp");
        std::os::unix::fs::symlink(version, &tmp).unwrap();
        std::fs::rename(&tmp, mount.join("..data")).unwrap();
    };
    write_version("..v1", "sk-old-ROTATE");
    std::os::unix::fs::symlink("..data/key", mount.join("key")).unwrap();
    let general = replay("General-7B", &[], Default::default()).await;
    let cfg = tls_config(
        &[member(
            "general",
            "General-7B",
            &general.url(),
            &format!(", apiKeyFile: {}", mount.join("key").display()),
        )],
        None,
    );
    let r = router(Router::new(&cfg, keyword_source()).unwrap()).await;
    let c = client();
    let reply = send(&c, chat(r.addr, "general", "hi", false)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        general.handler.last_authorization().as_deref(),
        Some("Bearer sk-old-ROTATE")
    );
    write_version("..v2", "sk-new-ROTATE\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = send(&c, chat(r.addr, "general", "hi", false)).await;
        assert_eq!(reply.status, 200);
        let seen = general.handler.last_authorization();
        if seen.as_deref() == Some("Bearer sk-new-ROTATE") {
            break;
        }
        assert_eq!(seen.as_deref(), Some("Bearer sk-old-ROTATE"));
        assert!(Instant::now() < deadline, "the new key was never sent");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A CA bundle that cannot be read, or holds no certificate, stops the router with the path.
#[tokio::test]
async fn a_missing_or_empty_ca_bundle_stops_the_router_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let members = [member("general", "General-7B", "https://127.0.0.1:1", "")];
    let missing = dir.path().join("missing.pem");
    let err = Router::new(&tls_config(&members, Some(&missing)), keyword_source())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("missing.pem"), "{err}");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let err = Router::new(&tls_config(&members, Some(&empty)), keyword_source())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("empty.pem") && err.contains("no PEM certificate"),
        "{err}"
    );
}
