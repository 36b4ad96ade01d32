//! Test harness: replay members (`lookahead-replay`), routers and scoring sidecars on loopback, a
//! keyword scorer, and a plain hyper client.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use lookahead_api::RouterConfig;
use lookahead_model::{ScoreError, Scorer};
use lookahead_replay::{ReplayBook, ReplayOptions, ReplayServer};
use lookahead_router::body::RespBody;
use lookahead_router::{serve, serve_service, Router};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Scores 0.9 for a model whose keyword occurs in the prompt, 0.1 otherwise (plus a small
/// per-model tie-break so rankings are total).
pub struct KeywordScorer {
    pub models: Vec<String>,
    pub keywords: Vec<String>,
    pub delay: Duration,
}

impl KeywordScorer {
    pub fn new(pairs: &[(&str, &str)]) -> Self {
        Self {
            models: pairs.iter().map(|(m, _)| m.to_string()).collect(),
            keywords: pairs.iter().map(|(_, k)| k.to_string()).collect(),
            delay: Duration::ZERO,
        }
    }
}

impl Scorer for KeywordScorer {
    fn models(&self) -> &[String] {
        &self.models
    }

    fn score_batch(&self, prompts: &[&str]) -> Result<Vec<Vec<f32>>, ScoreError> {
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        Ok(prompts
            .iter()
            .map(|p| {
                self.keywords
                    .iter()
                    .enumerate()
                    .map(|(i, k)| if p.contains(k.as_str()) { 0.9 } else { 0.1 } - 0.01 * i as f32)
                    .collect()
            })
            .collect())
    }
}

/// A running server; `kill()` drops it and all its connections at once.
pub struct Running<H> {
    pub addr: SocketAddr,
    pub handler: Arc<H>,
    task: JoinHandle<()>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl<H> Running<H> {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn kill(&self) {
        self.task.abort();
    }
    /// Graceful shutdown; returns the serve task to await.
    pub fn shutdown(mut self) -> JoinHandle<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task
    }
}

/// Serves a stand-in backend on loopback (no shutdown hook).
pub async fn start_service<S>(service: S) -> Running<()>
where
    S: tower::Service<
            http::Request<Incoming>,
            Response = http::Response<RespBody>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    spawn_serve(Arc::new(()), move |listener, stop| {
        serve_service(listener, service, stop, SERVE_GRACE, || {})
    })
    .await
}

const SERVE_GRACE: Duration = Duration::from_secs(10);

/// Runs `serve_fn(listener, stop)` on loopback; the returned `Running` exposes `handler`.
async fn spawn_serve<H, F, Fut>(handler: Arc<H>, serve_fn: F) -> Running<H>
where
    F: FnOnce(TcpListener, Pin<Box<dyn Future<Output = ()> + Send>>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    spawn_serve_at("127.0.0.1:0".parse().expect("addr"), handler, serve_fn).await
}

/// [`spawn_serve`] on a given address (a member that comes back where it was).
async fn spawn_serve_at<H, F, Fut>(at: SocketAddr, handler: Arc<H>, serve_fn: F) -> Running<H>
where
    F: FnOnce(TcpListener, Pin<Box<dyn Future<Output = ()> + Send>>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind(at).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let stop = Box::pin(async {
        let _ = rx.await;
    });
    let task = tokio::spawn(serve_fn(listener, stop));
    Running {
        addr,
        handler,
        task,
        stop: Some(tx),
    }
}

/// A replay member on loopback; `handler` is the member (its counters).
pub async fn start_replay(member: ReplayServer) -> Running<ReplayServer> {
    start_replay_at("127.0.0.1:0".parse().expect("addr"), member).await
}

/// A loopback address nobody listens on (yet): connections to it are refused.
#[allow(dead_code)]
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
}

/// A replay member listening on `at`.
pub async fn start_replay_at(at: SocketAddr, member: ReplayServer) -> Running<ReplayServer> {
    let member = Arc::new(member);
    // The member's axum routes behind the router's own serve loop, so that `kill()` drops a
    // member's connections at once, as it does a router's.
    let routes = tower::ServiceBuilder::new()
        .map_response(|resp: http::Response<axum::body::Body>| {
            resp.map(|body| body.map_err(Into::into).boxed_unsync())
        })
        .service(member.clone().app());
    spawn_serve_at(at, member, move |listener, stop| {
        serve_service(listener, routes, stop, SERVE_GRACE, || {})
    })
    .await
}

pub async fn replay(
    model: &str,
    answers: &[(&str, &str)],
    opts: ReplayOptions,
) -> Running<ReplayServer> {
    let mut book = ReplayBook::new(model);
    for (p, a) in answers {
        book.insert(p, a.to_string());
    }
    start_replay(ReplayServer::new(book, opts)).await
}

/// A config YAML for members `(name, modelId, url)`.
pub fn config(members: &[(&str, &str, String)], policy_extra: &str) -> RouterConfig {
    let mut y = String::from("listen: 127.0.0.1:0\nmembers:\n");
    for (n, id, url) in members {
        y.push_str(&format!(
            "  - {{ name: {n}, modelId: {id}, baseUrl: \"{url}/v1\" }}\n"
        ));
    }
    y.push_str("policy:\n");
    y.push_str(policy_extra);
    serde_yaml::from_str(&y).expect("test config")
}

pub async fn router(router: Router) -> Running<Router> {
    let router = Arc::new(router);
    let served = router.clone();
    spawn_serve(router, move |listener, stop| {
        serve(listener, served, stop, SERVE_GRACE)
    })
    .await
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A response, fully read.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

pub async fn send(
    c: &Client<HttpConnector, Full<Bytes>>,
    req: http::Request<Full<Bytes>>,
) -> Reply {
    let resp = tokio::time::timeout(Duration::from_secs(20), c.request(req))
        .await
        .expect("response in time")
        .expect("response");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

pub fn chat(
    addr: SocketAddr,
    model: &str,
    prompt: &str,
    stream: bool,
) -> http::Request<Full<Bytes>> {
    let body = serde_json::json!({
        "model": model,
        "stream": stream,
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": prompt}],
    });
    http::Request::post(format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request")
}

pub fn get(addr: SocketAddr, path: &str) -> http::Request<Full<Bytes>> {
    http::Request::get(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::new()))
        .expect("request")
}

/// The routing dataset, when present (CI has it).
pub fn data_dir() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("LOOKAHEAD_DATA")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/routing")
        });
    dir.join("manifest.json").exists().then_some(dir)
}

/// The value of `series` in the router's `/metrics` exposition, read as a scraper reads it.
pub fn metric(r: &Running<lookahead_router::Router>, series: &str) -> u64 {
    lookahead_router::metrics::sample(&r.handler.render_metrics(), series) as u64
}

/// The sum over every labelled series of `family` (e.g. `lookahead_router_fail_open_total`).
pub fn metric_sum(r: &Running<lookahead_router::Router>, family: &str) -> u64 {
    let text = r.handler.render_metrics();
    let prefix = format!("{family}{{");
    text.lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}
