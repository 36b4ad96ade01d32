//! `lookahead label`: collect routing labels for pool members that lack them.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use lookahead_api::RouterConfig;
use lookahead_label::{GradersConfig, LabelJob, SandboxLimits};

#[derive(Args, Debug)]
pub struct LabelArgs {
    /// Router config listing the pool's members and their base URLs.
    #[arg(long)]
    pool: PathBuf,
    /// Routing dataset to label (manifest.json + one file per source).
    #[arg(long, env = "LOOKAHEAD_DATA")]
    data: PathBuf,
    /// Members (names in the pool config) to collect responses from.
    #[arg(long, value_delimiter = ',', required = true)]
    members: Vec<String>,
    /// Output dataset directory (may equal --data); holds the resumable journal.
    #[arg(long)]
    out: PathBuf,
    /// Sources to label (default: all in the manifest).
    #[arg(long, value_delimiter = ',')]
    sources: Option<Vec<String>>,
    /// At most N prompts per source.
    #[arg(long)]
    limit: Option<usize>,
    /// Calls in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Calls per second across all members (0 = unlimited).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Per-call timeout, seconds.
    #[arg(long, default_value_t = 120)]
    timeout_secs: u64,
    /// `max_tokens` of each member call.
    #[arg(long, default_value_t = 1024)]
    max_tokens: u32,
    /// Graders per source and the judge endpoint (YAML; see docs/labelling.md).
    #[arg(long)]
    graders: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Also write a compact JSON summary here (a Job's `/dev/termination-log`, which the operator
    /// reads into the policy's status).
    #[arg(long)]
    summary_file: Option<PathBuf>,
}

pub fn run(args: LabelArgs) -> anyhow::Result<()> {
    let pool = RouterConfig::from_file(&args.pool)?;
    let graders: GradersConfig = match &args.graders {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            serde_yaml::from_str(&text).with_context(|| format!("parsing {}", p.display()))?
        }
        None => GradersConfig::default(),
    };
    let job = LabelJob {
        pool,
        data: args.data,
        out: args.out,
        members: args.members,
        sources: args.sources,
        limit: args.limit,
        concurrency: args.concurrency,
        rate_per_sec: (args.rate > 0.0).then_some(args.rate),
        timeout: Duration::from_secs(args.timeout_secs),
        max_tokens: args.max_tokens,
        attempts: 3,
        graders,
        sandbox: SandboxLimits::default(),
        progress: !args.json,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let report = runtime.block_on(lookahead_label::run(job))?;
    if let Some(path) = &args.summary_file {
        // Termination messages are capped at 4 KiB: counts only.
        let summary = serde_json::json!({
            "promptsLabelled": report.prompts_labelled,
            "asked": report.asked,
            "graded": report.graded,
            "failed": report.failed,
            "merged": report.merged,
        });
        std::fs::write(path, summary.to_string())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "asked {} pairs: {} graded, {} failed (retried by the next run); {} already labelled",
            report.asked, report.graded, report.failed, report.already_labelled
        );
        for (model, n) in &report.merged {
            println!("  {model}: {n} responses in the output");
        }
        println!(
            "{} prompts labelled; wrote {} files",
            report.prompts_labelled,
            report.files.len()
        );
    }
    Ok(())
}
