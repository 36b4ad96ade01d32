//! `lookahead eval --calibrate`: the costWeight that meets a target on the held-out records,
//! printed as a table and a RoutingPolicy snippet with the quality to expect. `eval` scores the
//! records once (its held-out split and scoring path) and hands them here; [`search`] finds the
//! weight, [`prices`] says what members cost.
//!
//! Targets: `--max-share MEMBER=FRACTION` (at most that fraction of the requests routed to that
//! member: the share of the records whose first choice it is) and `--max-mean-price P` (mean
//! estimated price per request, see [`prices`]); several targets must all hold.

pub mod prices;
pub mod search;

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use lookahead_data::{EvalSet, PoolRecord};

use self::prices::Prices;
use self::search::{Point, Records, SearchError, Target};

/// The `--calibrate` flags of `lookahead eval`.
#[derive(Args, Debug, Default, Clone)]
pub struct CalibrateArgs {
    /// Find the smallest costWeight meeting --max-share / --max-mean-price on the evaluated
    /// records (the router's scores computed once) and print it as a RoutingPolicy snippet with
    /// the quality there. Needs a router with predictions (--artifact, or --router oracle) and
    /// prices (--pool and/or --price).
    #[arg(long, conflicts_with_all = ["cost_weight", "versus", "report", "predictions_out"])]
    pub calibrate: bool,
    /// Target: at most FRACTION (0–1) of the requests routed to MEMBER (a model id, or a member
    /// name of --pool). Repeat for several members.
    #[arg(long, value_name = "MEMBER=FRACTION", requires = "calibrate")]
    pub max_share: Vec<String>,
    /// Target: mean price per request at most this (the pool's currency units; estimated from
    /// the recorded prompt and answer lengths at 4 characters per token).
    #[arg(long, value_name = "PRICE", requires = "calibrate")]
    pub max_mean_price: Option<f64>,
    /// An LLMPool manifest: each member's name, modelId and price per million tokens.
    #[arg(long, value_name = "LLMPOOL_YAML", requires = "calibrate")]
    pub pool: Option<PathBuf>,
    /// A member's price per million tokens, `NAME=IN/OUT` (or `NAME=P` for both); NAME is a
    /// model id or a member name of --pool, and wins over --pool's price. Repeatable.
    #[arg(long, value_name = "NAME=IN/OUT", requires = "calibrate")]
    pub price: Vec<String>,
    /// Print the weight as profile NAME (`objective.profiles`, requested as `auto:NAME`)
    /// rather than as `objective.costWeight`.
    #[arg(long, value_name = "NAME", requires = "calibrate")]
    pub profile: Option<String>,
}

/// The scored held-out records `eval` hands over.
pub struct Input<'a> {
    pub router: String,
    /// Which records, in words (`test split (80/10/10 by record-id hash)`).
    pub subset: String,
    pub set: &'a EvalSet,
    /// The records of `set`, in its order (texts for the request prices).
    pub records: &'a [PoolRecord],
    /// The router's prediction per record and pool model.
    pub predictions: Vec<Vec<f64>>,
}

/// What `--calibrate` found.
#[derive(Debug)]
pub struct Calibration {
    pub router: String,
    pub subset: String,
    /// How many records the weight was calibrated on.
    pub records: usize,
    pub models: Vec<String>,
    pub targets: Vec<String>,
    /// Rows of the table, by weight: 0, a grid over the weights where decisions change, and
    /// the found one.
    pub rows: Vec<Point>,
    pub found: Point,
    pub profile: Option<String>,
    pub prices: Vec<String>,
}

/// Runs the search on `input` with the targets and prices of `args`.
pub fn run(args: &CalibrateArgs, input: Input<'_>) -> anyhow::Result<Calibration> {
    let models = input.set.models().to_vec();
    let n = input.set.len();
    let prices = Prices::load(args.pool.as_deref(), &args.price)?;
    let price = prices.for_models(&models)?;
    let (targets, described) = targets(args, &prices, &models)?;
    if let Some(name) = &args.profile {
        let one = std::collections::BTreeMap::from([(name.clone(), 0.0)]);
        lookahead_api::policy::check_cost_profiles("--profile", &one, None)
            .map_err(anyhow::Error::msg)?;
    }
    let records = Records {
        predictions: input.predictions,
        rank_price: price.iter().map(prices::rank_price).collect(),
        request_price: input
            .records
            .iter()
            .map(|r| {
                r.responses
                    .iter()
                    .zip(&price)
                    .map(|(answer, p)| prices::request_price(p, &r.prompt, &answer.text))
                    .collect()
            })
            .collect(),
        quality: input.set.items().iter().map(|i| i.scaled.clone()).collect(),
        source: input.set.items().iter().map(|i| i.source).collect(),
    };
    let found = search::calibrate(&records, &targets).map_err(|e| explain(e, &described))?;
    Ok(Calibration {
        router: input.router,
        subset: input.subset,
        records: n,
        rows: table_rows(&records, &found),
        found,
        targets: described,
        profile: args.profile.clone(),
        prices: models
            .iter()
            .zip(&price)
            .map(|(m, p)| format!("{m}={}/{}", p.input_per_m_tok, p.output_per_m_tok))
            .collect(),
        models,
    })
}

/// The targets, checked, and how to name them.
fn targets(
    args: &CalibrateArgs,
    prices: &Prices,
    models: &[String],
) -> anyhow::Result<(Vec<Target>, Vec<String>)> {
    let mut targets = Vec::new();
    let mut described = Vec::new();
    for spec in &args.max_share {
        let (name, fraction) = spec
            .split_once('=')
            .with_context(|| format!("--max-share {spec:?} is not MEMBER=FRACTION"))?;
        let fraction: f64 = fraction
            .trim()
            .parse()
            .ok()
            .filter(|f: &f64| (0.0..=1.0).contains(f))
            .with_context(|| format!("--max-share {spec:?}: the fraction is a number 0..1"))?;
        let model = prices.model_of(name.trim());
        let member = models.iter().position(|m| *m == model).with_context(|| {
            format!(
                "--max-share {spec:?}: {model:?} is not in the pool ({})",
                models.join(", ")
            )
        })?;
        targets.push(Target::MaxShare { member, fraction });
        described.push(format!("share of {model} <= {}", percent(fraction)));
    }
    if let Some(p) = args.max_mean_price {
        if !(p.is_finite() && p >= 0.0) {
            bail!("--max-mean-price {p}: a finite price >= 0");
        }
        targets.push(Target::MaxMeanPrice(p));
        described.push(format!("mean price per request <= {}", significant(p, 3)));
    }
    if targets.is_empty() {
        bail!("--calibrate needs a target: --max-share MEMBER=FRACTION and/or --max-mean-price P");
    }
    Ok((targets, described))
}

/// The search's error in the user's terms: for an unreachable target, the best any weight does.
fn explain(e: SearchError, described: &[String]) -> anyhow::Error {
    let SearchError::Unreachable(best) = e else {
        return e.into();
    };
    let closest: Vec<String> = best
        .iter()
        .zip(described)
        .map(|(b, what)| {
            let reached = match b.target {
                Target::MaxShare { .. } => percent(b.measure),
                Target::MaxMeanPrice(_) => significant(b.measure, 3),
            };
            format!(
                "{what}: the best any costWeight reaches is {reached} (from costWeight {})",
                b.weight
            )
        })
        .collect();
    anyhow::anyhow!(
        "no costWeight meets the targets on these records; {}",
        closest.join("; ")
    )
}

/// Weight 0, eight weights spread geometrically over where decisions change, and `found`.
fn table_rows(records: &Records, found: &Point) -> Vec<Point> {
    let mut weights = vec![0.0, found.weight];
    if let Some((lo, hi)) = records.active_range() {
        let steps = 7;
        // Two significant digits: the row is computed at the weight it prints.
        weights.extend((0..=steps).map(|k| {
            let w = lo * (hi / lo).powf(f64::from(k) / f64::from(steps));
            significant(w, 2).parse().unwrap_or(w)
        }));
    }
    weights.sort_by(f64::total_cmp);
    weights.dedup();
    weights
        .into_iter()
        .map(|w| {
            if w == found.weight {
                found.clone()
            } else {
                records.point(w)
            }
        })
        .collect()
}

fn percent(f: f64) -> String {
    format!("{:.1}%", f * 100.0)
}

/// `x` with `digits` significant digits (prices per request are small).
fn significant(x: f64, digits: i32) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let decimals = (digits - 1 - x.abs().log10().floor() as i32).max(0) as usize;
    format!("{x:.decimals$}")
}

impl Calibration {
    /// The table and the snippet, as printed.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "router: {}", self.router);
        let _ = writeln!(out, "records: {} ({})", self.records, self.subset);
        let _ = writeln!(
            out,
            "prices per million tokens (in/out): {}",
            self.prices.join(", ")
        );
        let _ = writeln!(
            out,
            "ranking: predicted score - costWeight x mean(in, out) price, as the router ranks; \
             price per request estimated from the recorded prompt and answer at {} characters \
             per token",
            prices::CHARS_PER_TOKEN
        );
        let _ = writeln!(out, "targets: {}\n", self.targets.join(", "));
        out.push_str(&self.table());
        out.push('\n');
        out.push_str(&self.snippet());
        out
    }

    fn table(&self) -> String {
        let mut out = String::from("| costWeight | equal-weight score | pooled score |");
        for m in &self.models {
            let _ = write!(out, " share {m} |");
        }
        out.push_str(" mean price / request |\n|---|---|---|");
        out.push_str(&"---|".repeat(self.models.len() + 1));
        out.push('\n');
        for p in &self.rows {
            let mark = if p.weight == self.found.weight {
                " ◀"
            } else {
                ""
            };
            let _ = write!(
                out,
                "| {}{mark} | {:.2} | {:.2} |",
                p.weight, p.equal_weight, p.pooled
            );
            for s in &p.share {
                let _ = write!(out, " {} |", percent(*s));
            }
            let _ = writeln!(out, " {} |", significant(p.mean_price, 3));
        }
        out
    }

    /// A merge patch for the RoutingPolicy, the expected quality in comments.
    pub fn snippet(&self) -> String {
        let f = &self.found;
        let base = self.rows.first().filter(|p| p.weight == 0.0);
        let at_zero =
            |v: Option<f64>| v.map_or(String::new(), |v| format!(" ({v:.2} at costWeight 0)"));
        let shares: Vec<String> = self
            .models
            .iter()
            .zip(&f.share)
            .map(|(m, s)| format!("{m} {}", percent(*s)))
            .collect();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# smallest costWeight meeting {}, on {} records ({}):",
            self.targets.join(" and "),
            self.records,
            self.subset
        );
        let _ = writeln!(
            out,
            "# expected equal-weight score {:.2}{}, pooled {:.2}{}; mean price per request {}",
            f.equal_weight,
            at_zero(base.map(|b| b.equal_weight)),
            f.pooled,
            at_zero(base.map(|b| b.pooled)),
            significant(f.mean_price, 3)
        );
        let _ = writeln!(out, "# routed share: {}", shares.join(", "));
        let _ = writeln!(
            out,
            "# apply: kubectl patch routingpolicy NAME --type merge --patch-file THIS.yaml"
        );
        out.push_str("spec:\n  objective:\n");
        match &self.profile {
            Some(name) => {
                let _ = writeln!(out, "    profiles:\n      {name}: {}", f.weight);
            }
            None => {
                let _ = writeln!(out, "    costWeight: {}", f.weight);
            }
        }
        out
    }
}
