//! Tracing end to end, with real components: the `lookahead router` binary (spawned), two stub
//! members that record the `traceparent` they receive (the first answers 503, so the request is
//! retried on the second), an in-test OTLP receiver (the collector's gRPC `TraceService`, from
//! `opentelemetry-proto`, served by tonic) and a hyper client sending a known `traceparent`.
//!
//! - With `OTEL_EXPORTER_OTLP_ENDPOINT` set, the receiver gets the request span, exported at
//!   shutdown (the batch delay is set far beyond the test: this is the exit flush), with the
//!   client's trace id, the client's span as parent, the decision on it and the router's
//!   `service.name`; each member saw the router's span as its parent.
//! - With `LOOKAHEAD_LOG_FORMAT=json`, every stderr line is a JSON object, and the lines logged
//!   inside the request carry its `trace_id` (with or without export).
#![cfg(test)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN_ID: &str = "00f067aa0ba902b7";

fn client_traceparent() -> String {
    format!("00-{TRACE_ID}-{CLIENT_SPAN_ID}-01")
}

/// The in-test collector: every export request, as received.
#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.lock().expect("receiver").push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Receiver {
    async fn start(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        addr
    }

    /// Every span received, with the `service.name` of its resource.
    fn spans(&self) -> Vec<(String, Span)> {
        let mut out = Vec::new();
        for req in self.0.lock().expect("receiver").iter() {
            for rs in &req.resource_spans {
                let service = rs
                    .resource
                    .as_ref()
                    .map(|r| attributes(&r.attributes))
                    .and_then(|mut a| a.remove("service.name"))
                    .unwrap_or_default();
                for ss in &rs.scope_spans {
                    out.extend(ss.spans.iter().map(|s| (service.clone(), s.clone())));
                }
            }
        }
        out
    }
}

/// Attributes as text (`status = 200` reads "200").
fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.clone()) {
                Some(Value::StringValue(s)) => s,
                Some(Value::IntValue(i)) => i.to_string(),
                Some(Value::BoolValue(b)) => b.to_string(),
                Some(Value::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A stub member answering `status`; records the `traceparent` of each request.
async fn member(status: u16, seen: Arc<Mutex<Vec<Option<String>>>>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let service = tower::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let tp = req
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        seen.lock().expect("seen").push(tp);
        let body = serde_json::json!({
            "id": "x", "object": "chat.completion", "created": 0, "model": "M",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "ok"}}],
        });
        let status = http::StatusCode::from_u16(status).expect("status");
        std::future::ready(Ok::<_, Infallible>(lookahead_router::body::json_response(
            status, &body,
        )))
    });
    tokio::spawn(lookahead_router::serve_service(
        listener,
        service,
        std::future::pending(),
        Duration::from_secs(1),
        || {},
    ));
    addr
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
}

/// The router binary serving `first` then `second` (fixed order, one retry), with `env`;
/// stderr is collected.
struct RouterProcess {
    child: Child,
    addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
    _config: tempfile::NamedTempFile,
}

impl RouterProcess {
    fn start(first: SocketAddr, second: SocketAddr, env: &[(&str, String)]) -> Self {
        let addr = free_port();
        let config = tempfile::NamedTempFile::new().expect("config");
        let yaml = format!(
            "listen: {addr}\nmembers:\n  - {{ name: first, modelId: First-7B, baseUrl: \"http://{first}/v1\" }}\n  - {{ name: second, modelId: Second-7B, baseUrl: \"http://{second}/v1\" }}\npolicy:\n  method: fixed\n  defaultModel: first\n  retries: 1\n"
        );
        std::fs::write(config.path(), yaml).expect("write config");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lookahead"));
        cmd.args(["router", "--grace", "1s", "--config"])
            .arg(config.path())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("OTEL_")) {
            cmd.env_remove(k);
        }
        cmd.env_remove("LOOKAHEAD_LOG_FORMAT");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn lookahead router");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .expect("stderr")
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Self {
            child,
            addr,
            stderr,
            _config: config,
        }
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(self.addr).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "router did not start: {}",
                self.stderr.lock().expect("stderr")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM (what the kubelet sends), then waits for the exit.
    fn stop(mut self) -> String {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "router exit: {status:?}");
        // The reader thread ends with the pipe; give it a moment to drain.
        std::thread::sleep(Duration::from_millis(200));
        let text = self.stderr.lock().expect("stderr").clone();
        text
    }
}

/// A chat completion with the client's `traceparent`; its status.
async fn chat(router: SocketAddr) -> u16 {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let body = serde_json::json!({
        "model": "auto", "messages": [{"role": "user", "content": "hi"}],
    });
    let req = http::Request::post(format!("http://{router}/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("traceparent", client_traceparent())
        .header("tracestate", "vendor=a1")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(20), client.request(req))
        .await
        .expect("answer in time")
        .expect("answer");
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    status
}

/// Each stderr line as JSON (panics on a line that is not); the lines whose span carries a
/// `trace_id`, with it.
fn json_lines(stderr: &str) -> Vec<serde_json::Value> {
    stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn traced_lines(lines: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    lines
        .iter()
        .filter(|l| l["span"]["trace_id"].as_str() == Some(TRACE_ID))
        .collect()
}

/// Two members: the first answers 503. Returns what each member saw.
async fn members() -> (
    (SocketAddr, Arc<Mutex<Vec<Option<String>>>>),
    (SocketAddr, Arc<Mutex<Vec<Option<String>>>>),
) {
    let (seen1, seen2) = (Arc::default(), Arc::default());
    let first = member(503, Arc::clone(&seen1)).await;
    let second = member(200, Arc::clone(&seen2)).await;
    ((first, seen1), (second, seen2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_span_reaches_the_collector_as_the_clients_child_and_the_members_parent() {
    let receiver = Receiver::default();
    let otlp = receiver.start().await;
    let ((first, seen1), (second, seen2)) = members().await;
    let router = RouterProcess::start(
        first,
        second,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp}")),
            // Nothing is exported before exit: the spans arrive through the exit flush.
            ("OTEL_BSP_SCHEDULE_DELAY", "600000".into()),
            ("LOOKAHEAD_LOG_FORMAT", "json".into()),
        ],
    );
    router.wait_ready().await;
    assert_eq!(chat(router.addr).await, 200);
    let stderr = router.stop();

    let spans = receiver.spans();
    let requests: Vec<&(String, Span)> =
        spans.iter().filter(|(_, s)| s.name == "request").collect();
    assert_eq!(requests.len(), 1, "one request span: {spans:?}\n{stderr}");
    let (service, span) = requests[0];
    assert_eq!(service, "lookahead-router");
    assert_eq!(hex(&span.trace_id), TRACE_ID, "the client's trace");
    assert_eq!(
        hex(&span.parent_span_id),
        CLIENT_SPAN_ID,
        "the client's span is the parent"
    );
    let attrs = attributes(&span.attributes);
    assert_eq!(attrs["member"], "second");
    assert_eq!(attrs["attempts"], "2");
    assert_eq!(attrs["fallback"], "first:status_503");
    assert_eq!(attrs["status"], "200");
    assert_eq!(attrs["path"], "/v1/chat/completions");
    assert_eq!(attrs["trace_id"], TRACE_ID);

    let router_parent = format!("00-{TRACE_ID}-{}-01", hex(&span.span_id));
    for seen in [&seen1, &seen2] {
        let seen = seen.lock().expect("seen").clone();
        assert_eq!(
            seen,
            vec![Some(router_parent.clone())],
            "the router's span is the member's parent"
        );
    }

    let lines = json_lines(&stderr);
    let traced = traced_lines(&lines);
    assert!(
        traced
            .iter()
            .any(|l| l["fields"]["message"] == "upstream attempt failed"),
        "the failed attempt's warning carries the trace id:\n{stderr}"
    );
}

/// JSON logs without export: the trace id is the client's, read from its `traceparent`, and the
/// members receive the client's `traceparent` unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_clients_trace_id_without_export() {
    let ((first, seen1), (second, seen2)) = members().await;
    let router = RouterProcess::start(first, second, &[("LOOKAHEAD_LOG_FORMAT", "json".into())]);
    router.wait_ready().await;
    assert_eq!(chat(router.addr).await, 200);
    let stderr = router.stop();

    let lines = json_lines(&stderr);
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "router serving"),
        "{stderr}"
    );
    let traced = traced_lines(&lines);
    let warning = traced
        .iter()
        .find(|l| l["fields"]["message"] == "upstream attempt failed")
        .unwrap_or_else(|| panic!("no traced warning:\n{stderr}"));
    assert_eq!(warning["level"], "WARN");
    assert_eq!(warning["span"]["name"], "request");
    assert_eq!(warning["fields"]["member"], "first");
    for seen in [&seen1, &seen2] {
        assert_eq!(
            *seen.lock().expect("seen"),
            vec![Some(client_traceparent())]
        );
    }
}
