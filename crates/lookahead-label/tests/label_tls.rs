//! `lookahead label` asking an `https://` member with its own key: a real `lookahead-replay`
//! member behind TLS (`lookahead_replay::serve_tls`, a certificate of a private CA made by rcgen)
//! that wants an API key, a judge stub over plain HTTP on loopback.
#![cfg(test)]

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::response::IntoResponse;
use lookahead_data::{read_records, Record};
use lookahead_label::{self as label, GradersConfig, JudgeConfig, LabelJob, SandboxLimits};
use lookahead_replay::{ReplayBook, ReplayOptions, ReplayServer};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

const NEW_MEMBER: &str = "gemma-2-9b-it";
const MEMBER_KEY: &str = "sk-hosted-LABELKEY";

/// A private CA named `name`: its PEM and a TLS server configuration for `127.0.0.1` signed by
/// it.
fn ca_and_server(name: &str) -> (String, Arc<rustls::ServerConfig>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = params.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    (ca_pem, Arc::new(config))
}

/// The replay member for `gemma` behind TLS, wanting `MEMBER_KEY`; its `https://` URL.
async fn tls_member(config: Arc<rustls::ServerConfig>) -> (String, Arc<ReplayServer>) {
    let opts = ReplayOptions {
        api_key: Some(MEMBER_KEY.into()),
        ..Default::default()
    };
    let member = Arc::new(ReplayServer::new(ReplayBook::new(NEW_MEMBER), opts));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let served = member.clone();
    tokio::spawn(async move { lookahead_replay::serve_tls(listener, served, config).await });
    (url, member)
}

/// A judge rating every answer 7/10, over plain HTTP.
async fn judge() -> String {
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(|| async {
            let body = serde_json::json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "Rating: [[7]]"}, "finish_reason": "stop"}]});
            ([("content-type", "application/json")], body.to_string()).into_response()
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// Three chat prompts, answered so far by `old` only.
fn chat_dataset(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("manifest.json"),
        r#"{"Chat": {"score_range": [1, 10], "models": ["old"]}}"#,
    )
    .unwrap();
    let mut f = std::fs::File::create(dir.join("Chat.jsonl")).unwrap();
    for i in 0..3 {
        let r: Record = serde_json::from_value(serde_json::json!({
            "id": format!("chat-{i}"), "source": "Chat", "prompt": format!("Tell me about topic {i}"),
            "responses": { "old": { "text": "an old answer", "score": 5.0 } }
        }))
        .unwrap();
        serde_json::to_writer(&mut f, &r).unwrap();
        f.write_all(b"\n").unwrap();
    }
}

/// A labelling job for member `gemma` of a pool config naming the CA bundle and the key file.
fn job(member_yaml: &str, ca: &Path, data: &Path, out: &Path, judge: &str) -> LabelJob {
    let yaml = format!(
        "members:\n  - {member_yaml}\npolicy: {{ method: random }}\ntls: {{ caBundleFile: {} }}\n",
        ca.display()
    );
    LabelJob {
        pool: serde_yaml::from_str(&yaml).unwrap(),
        data: data.to_owned(),
        out: out.to_owned(),
        members: vec!["gemma".into()],
        sources: None,
        limit: Some(10),
        concurrency: 2,
        rate_per_sec: None,
        timeout: Duration::from_secs(10),
        max_tokens: 64,
        attempts: 1,
        graders: GradersConfig {
            sources: Default::default(),
            judge: Some(JudgeConfig {
                base_url: format!("{judge}/v1"),
                model: "judge".into(),
                api_key_env: None,
                rubric: None,
                attempts: 1,
            }),
        },
        sandbox: SandboxLimits::default(),
        progress: false,
    }
}

/// With the pool's CA bundle and the member's key file, every prompt is asked over TLS with the
/// member's key and graded; a bundle of another CA fails each pair with the certificate problem
/// named in the journal, and nothing is merged.
#[tokio::test]
async fn labels_an_https_member_with_its_key_and_the_pool_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, out) = (tmp.path().join("data"), tmp.path().join("out"));
    chat_dataset(&data);
    let (ca_pem, server) = ca_and_server("label CA");
    let (other_ca, _) = ca_and_server("another CA");
    let (right, wrong) = (tmp.path().join("ca.pem"), tmp.path().join("other.pem"));
    std::fs::write(&right, ca_pem).unwrap();
    std::fs::write(&wrong, other_ca).unwrap();
    let key_file = tmp.path().join("key");
    std::fs::write(&key_file, format!("{MEMBER_KEY}\n")).unwrap();
    let (url, member) = tls_member(server).await;
    let judge = judge().await;
    let gemma = format!(
        "{{ name: gemma, modelId: {NEW_MEMBER}, baseUrl: \"{url}/v1\", apiKeyFile: {} }}",
        key_file.display()
    );

    let untrusted = label::run(job(&gemma, &wrong, &data, &out, &judge))
        .await
        .unwrap();
    assert_eq!((untrusted.asked, untrusted.failed), (3, 3), "{untrusted:?}");
    let journal = std::fs::read_to_string(out.join(label::JOURNAL_FILE)).unwrap();
    assert!(
        journal.contains("UnknownIssuer") && journal.contains("tls.caBundleFile"),
        "{journal}"
    );
    assert!(
        !journal.contains("LABELKEY"),
        "key in the journal: {journal}"
    );
    assert_eq!(member.served(), 0);

    let trusted = label::run(job(&gemma, &right, &data, &out, &judge))
        .await
        .unwrap();
    assert_eq!(
        (trusted.asked, trusted.graded, trusted.failed),
        (3, 3, 0),
        "{trusted:?}"
    );
    assert_eq!(
        member.last_authorization().as_deref(),
        Some(&*format!("Bearer {MEMBER_KEY}"))
    );
    let records = read_records(&out.join("Chat.jsonl.gz")).unwrap();
    assert!(records.iter().all(|r| r.responses.contains_key(NEW_MEMBER)));
}
