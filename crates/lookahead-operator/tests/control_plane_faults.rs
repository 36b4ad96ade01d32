//! Control-plane faults on the real API server (`../shared/k8s/cluster.sh`, 1.20 with
//! controller-manager), controllers in-process: the API server restarted while the operator
//! works converges with no duplicate Jobs or Deployments. (A failing training Job and an operator
//! killed mid-reconcile are in `apiserver.rs`.)
//!
//! The restart test stops and starts the test cluster's own kube-apiserver process (same command
//! line, environment and pid file, so `cluster.sh stop` still finds it). It lives in a test binary
//! of its own: cargo runs test binaries one after another, so no other test sees the outage.
#![cfg(test)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use kube::api::Api;
use kube::Client;
use lookahead_api::{LLMPool, RoutingPolicy};

/// The running kube-apiserver of the test cluster: its state directory (where `cluster.sh`
/// keeps the kubeconfig, pid file and log) and process id.
struct ApiServerProcess {
    state: PathBuf,
    pid: u32,
}

impl ApiServerProcess {
    /// Finds it from `KUBECONFIG` (`$STATE/kubeconfig`), or says why not.
    fn find() -> Result<Self, String> {
        let kubeconfig = std::env::var("KUBECONFIG").map_err(|_| "KUBECONFIG is not set")?;
        let state = Path::new(&kubeconfig)
            .parent()
            .ok_or("KUBECONFIG has no directory")?
            .to_path_buf();
        let pid_file = state.join("kube-apiserver.pid");
        let pid: u32 = std::fs::read_to_string(&pid_file)
            .map_err(|e| format!("{}: {e}", pid_file.display()))?
            .trim()
            .parse()
            .map_err(|e| format!("{}: {e}", pid_file.display()))?;
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .map_err(|e| format!("process {pid}: {e}"))?;
        if !exe.ends_with("kube-apiserver") {
            return Err(format!(
                "process {pid} is {}, not kube-apiserver",
                exe.display()
            ));
        }
        Ok(Self { state, pid })
    }

    /// Stops the server, waits until it is gone, holds it down for `down`, and starts it again with the same command line and
    /// environment.
    fn restart(&mut self, down: Duration) -> anyhow::Result<()> {
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", self.pid))?;
        let environ = std::fs::read(format!("/proc/{}/environ", self.pid))?;
        let cwd = std::fs::read_link(format!("/proc/{}/cwd", self.pid))?;
        let args: Vec<String> = split_nul(&cmdline);
        let env: Vec<(String, String)> = split_nul(&environ)
            .into_iter()
            .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.into(), v.into())))
            .collect();
        anyhow::ensure!(!args.is_empty(), "empty command line");
        // SIGTERM, then SIGKILL after a grace period, as the kubelet stops a static pod: 1.20
        // drains long-running watches for up to a minute after SIGTERM.
        signal("TERM", self.pid)?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while is_running(self.pid) {
            if Instant::now() > deadline {
                signal("KILL", self.pid)?;
                let hard = Instant::now() + Duration::from_secs(10);
                while is_running(self.pid) {
                    anyhow::ensure!(Instant::now() < hard, "kube-apiserver survived SIGKILL");
                    std::thread::sleep(Duration::from_millis(50));
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(down);
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.state.join("kube-apiserver.log"))?;
        // `setsid`, like cluster.sh: the server must outlive this test process.
        let child = std::process::Command::new("setsid")
            .args(&args)
            .env_clear()
            .envs(env)
            .current_dir(cwd)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.pid = child.id();
        std::fs::write(
            self.state.join("kube-apiserver.pid"),
            format!("{}\n", self.pid),
        )?;
        Ok(())
    }
}

fn signal(name: &str, pid: u32) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill -{name} {pid} failed");
    Ok(())
}

/// Whether `pid` is alive (a zombie waiting for its parent to reap it counts as gone).
fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            let state = stat.rsplit(')').next().unwrap_or_default().trim_start();
            !state.starts_with('Z')
        })
        .unwrap_or(false)
}

/// Sum of `lookahead_operator_reconcile_failures_total` over its labels.
fn failures(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("lookahead_operator_reconcile_failures_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn split_nul(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

async fn wait_until_serving(client: &Client, limit: Duration) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        if let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_secs(2), client.apiserver_version()).await
        {
            return Ok(start.elapsed());
        }
        anyhow::ensure!(
            start.elapsed() < limit,
            "API server not back after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The API server is restarted right after a membership change, while the operator reconciles
/// it: once the server is back the operator converges on its own (watches re-established) to one
/// Deployment per member, one router Deployment and one training Job, for the new pool (the old
/// pool's unfinished Job is superseded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiserver_restart_while_reconciling_converges_without_duplicates() -> anyhow::Result<()> {
    let Some(client) = client_or_skip("apiserver_restart").await else {
        return Ok(());
    };
    let mut server = match ApiServerProcess::find() {
        Ok(s) => s,
        Err(why) => {
            eprintln!("skipping apiserver_restart: cannot restart the API server ({why})");
            return Ok(());
        }
    };
    let ns = TestNamespace::create(&client, "restart-apiserver").await?;
    let (op, ctx) = start_operator(&client, &ns.name).await?;
    dataset(&client, &ns.name, &["a", "b", "c"]).await?;
    let pools: Api<LLMPool> = Api::namespaced(client.clone(), &ns.name);
    let policies: Api<RoutingPolicy> = Api::namespaced(client.clone(), &ns.name);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns.name);
    apply(&pools, &pool_yaml("pool", &["a", "b"])?).await?;
    apply(&policies, &policy_yaml("rp", "pool", "a")?).await?;
    wait_for("first children and Job", || async {
        let d = names(&deployments, "lookahead.dev/pool=pool").await?;
        let j = names(&jobs, "lookahead.dev/policy=rp").await?;
        Ok((d.len() == 2 && j.len() == 1).then_some(()))
    })
    .await?;

    // Change the pool, and take the server down while the operator acts on it.
    let grown = pool_yaml("pool", &["a", "b", "c"])?;
    let wanted_job = format!("rp-train-{}", grown.spec.fingerprint());
    apply(&pools, &grown).await?;
    let stopped_at = Instant::now();
    tokio::task::block_in_place(|| server.restart(Duration::from_secs(3)))?;
    let back = wait_until_serving(&client, Duration::from_secs(90)).await?;
    let outage = stopped_at.elapsed();
    let converged = wait_for("convergence after the restart", || async {
        let d = names(&deployments, "lookahead.dev/pool=pool").await?;
        let j = names(&jobs, "lookahead.dev/policy=rp").await?;
        let router = deployments.get_opt("rp-router").await?;
        Ok((d.len() == 3 && j == [wanted_job.clone()] && router.is_some()).then_some(()))
    })
    .await;
    let since_back = stopped_at.elapsed().saturating_sub(outage);
    if let Err(e) = converged {
        let d = names(&deployments, "lookahead.dev/pool=pool").await?;
        let j = names(&jobs, "lookahead.dev/policy=rp").await?;
        let router = deployments.get_opt("rp-router").await?.is_some();
        anyhow::bail!("{e}: member Deployments {d:?}, Jobs {j:?}, router Deployment {router}");
    }
    // Stays converged: requeues and re-lists after the outage create nothing more.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        names(&deployments, "lookahead.dev/pool=pool").await?,
        ["pool-a", "pool-b", "pool-c"]
    );
    // The first Job was still running for the old pool: superseded, not kept beside the new one.
    assert_eq!(names(&jobs, "lookahead.dev/policy=rp").await?, [wanted_job]);
    eprintln!(
        "FIGURE apiserver restart: unreachable {outage:.1?} (ready {back:.1?} after the new \
         process started), converged {since_back:.1?} after that; reconcile failures meanwhile: {}",
        failures(&ctx.metrics.render())
    );
    op.abort();
    Ok(())
}
