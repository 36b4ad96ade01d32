//! `lookahead bench proxy` (the real binary, its stub backend and a real router in process):
//! `--log` runs the router with the subscriber `lookahead router` installs in production.
#![cfg(test)]

use std::process::Command;

fn bench_proxy(log: bool) -> (String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lookahead"));
    cmd.args(["bench", "proxy", "--no-litellm", "--rate", "200"])
        .args(["--duration", "200ms", "--throughput-duration", "200ms"])
        .args(["--concurrency", "4", "--rounds", "1"])
        .env_remove("RUST_LOG");
    if log {
        cmd.arg("--log");
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

#[test]
fn bench_proxy_logs_the_routers_lines_only_when_asked() {
    let (table, quiet) = bench_proxy(false);
    assert!(
        table.contains("| lookahead router (auto, stub scorer) |"),
        "{table}"
    );
    assert!(!quiet.contains("API keys loaded"), "{quiet}");
    let (table, logged) = bench_proxy(true);
    assert!(
        table.contains("| lookahead router (auto, stub scorer) |"),
        "{table}"
    );
    // The router's start-up line, at info: the subscriber is installed as in production.
    assert!(
        logged.contains("INFO") && logged.contains("API keys loaded"),
        "{logged}"
    );
}
