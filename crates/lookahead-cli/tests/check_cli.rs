//! The `lookahead check` binary (the chart's `helm test` pod runs it) against a stub HTTP server
//! on loopback: a router's answer passes only with 200 and an `x-lookahead-model` header, a GET
//! only with 2xx; failures exit 1 with one line; `--attempts` rides out a first failure.
#![cfg(test)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

/// A request the stub received: request line and body.
#[derive(Debug, Clone)]
struct Seen {
    line: String,
    body: String,
}

/// Serves `answers` in order, one per connection (raw HTTP/1.1 responses), recording requests.
fn stub(answers: Vec<String>) -> (u16, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for answer in answers {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            let request = read_request(&stream);
            log.lock().expect("lock").push(request);
            let mut stream = stream;
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    (port, seen)
}

fn read_request(stream: &TcpStream) -> Seen {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).expect("request line");
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).expect("header");
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().expect("content-length");
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("body");
    Seen {
        line: line.trim_end().to_string(),
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn response(status: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut text = format!(
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    text.push_str(body);
    text
}

fn check(args: &[&str]) -> (Output, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lookahead"))
        .arg("check")
        .args(args)
        .output()
        .expect("lookahead runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

const COMPLETION: &str = r#"{"choices":[{"message":{"role":"assistant","content":"4"}}]}"#;

#[test]
fn a_routed_chat_completion_passes() {
    let (port, seen) = stub(vec![response(
        "200 OK",
        &[
            ("content-type", "application/json"),
            ("x-lookahead-model", "qwen-coder"),
        ],
        COMPLETION,
    )]);
    let url = format!("http://127.0.0.1:{port}/v1");
    let (out, stdout, stderr) = check(&["--url", &url, "--chat"]);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.starts_with(&format!(
            "ok: chat completion {url}: HTTP 200, routed to qwen-coder"
        )),
        "{stdout}"
    );
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen[0].line, "POST /v1/chat/completions HTTP/1.1");
    let body: serde_json::Value = serde_json::from_str(&seen[0].body).expect("json body");
    assert_eq!(body["model"], "auto");
    assert_eq!(body["messages"][0]["role"], "user");
}

#[test]
fn an_answer_without_a_routing_decision_fails_with_one_line() {
    let (port, _) = stub(vec![response("200 OK", &[], COMPLETION)]);
    let url = format!("http://127.0.0.1:{port}/v1");
    let (out, stdout, stderr) = check(&["--url", &url, "--chat"]);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("x-lookahead-model"), "{stderr}");

    let (port, _) = stub(vec![response(
        "503 Service Unavailable",
        &[],
        "no member is ready",
    )]);
    let url = format!("http://127.0.0.1:{port}/v1");
    let (out, _, stderr) = check(&["--url", &url, "--chat"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("HTTP 503: no member is ready"), "{stderr}");
}

#[test]
fn a_get_passes_on_2xx_and_attempts_ride_out_a_first_failure() {
    let (port, seen) = stub(vec![
        response("503 Service Unavailable", &[], "not ready"),
        response("200 OK", &[], "ok"),
    ]);
    let url = format!("http://127.0.0.1:{port}/readyz");
    let (out, stdout, stderr) = check(&["--url", &url, "--attempts", "3", "--interval", "10ms"]);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.starts_with(&format!("ok: GET {url}: HTTP 200")),
        "{stdout}"
    );
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].line, "GET /readyz HTTP/1.1");

    let (port, _) = stub(vec![response("503 Service Unavailable", &[], "not ready")]);
    let url = format!("http://127.0.0.1:{port}/readyz");
    let (out, _, stderr) = check(&["--url", &url]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains(&format!("check failed: GET {url}: HTTP 503: not ready")),
        "{stderr}"
    );
}

#[test]
fn nothing_listening_fails_after_its_attempts() {
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let url = format!("http://127.0.0.1:{port}/readyz");
    let (out, _, stderr) = check(&["--url", &url, "--attempts", "2", "--interval", "10ms"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("(2 tries)"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}
