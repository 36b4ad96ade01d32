//! The evaluation report: a Markdown summary plus SVG plots (routing share per source; quality vs
//! cost). Plots use plotters' SVG backend, which writes text as SVG `<text>` elements, so no
//! system fonts (fontconfig) are needed to render it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::{Comparison, ComparisonKind, DataError, Evaluation};

/// File names written by [`write_report`].
pub const REPORT_MD: &str = "report.md";
pub const SHARE_SVG: &str = "share.svg";
pub const QUALITY_COST_SVG: &str = "quality_cost.svg";

fn plot_err(e: impl std::fmt::Display) -> DataError {
    DataError::Report(e.to_string())
}

/// The per-source table (Markdown; also readable as plain text in a terminal).
pub fn summary_table(eval: &Evaluation) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| source | n | router | best single | oracle | random | accuracy |"
    );
    let _ = writeln!(out, "|---|---:|---:|---|---:|---:|---:|");
    for (name, s) in &eval.sources {
        let _ = writeln!(
            out,
            "| {name} | {} | {:.2} | {:.2} ({}) | {:.2} | {:.2} | {:.1}% |",
            s.n,
            s.router,
            s.best_single,
            s.best_single_model,
            s.oracle,
            s.random,
            100.0 * s.accuracy
        );
    }
    let _ = writeln!(
        out,
        "| **average** | {} | **{:.2}** | {:.2} (per source) / {:.2} ({}) | {:.2} | {:.2} | {:.1}% |",
        eval.n,
        eval.average,
        eval.best_single_per_source,
        eval.best_single.average,
        eval.best_single.model,
        eval.oracle,
        eval.random,
        100.0 * eval.accuracy
    );
    out
}

/// Each single model's score per source and averaged, plus the router's share per source.
pub fn singles_table(eval: &Evaluation) -> String {
    let mut out = String::new();
    let _ = write!(out, "| model |");
    for name in eval.sources.keys() {
        let _ = write!(out, " {name} |");
    }
    let _ = writeln!(out, " average | routed |");
    let _ = writeln!(out, "|---|{}---:|---:|", "---:|".repeat(eval.sources.len()));
    for model in &eval.models {
        let _ = write!(out, "| {model} |");
        for s in eval.sources.values() {
            let _ = write!(
                out,
                " {:.2} |",
                s.singles.get(model).copied().unwrap_or(f64::NAN)
            );
        }
        let _ = writeln!(
            out,
            " {:.2} | {:.1}% |",
            eval.singles.get(model).copied().unwrap_or(f64::NAN),
            100.0 * eval.share.get(model).copied().unwrap_or(0.0)
        );
    }
    out
}

/// The router against each baseline of `eval.comparisons` (empty when there is none): the
/// baseline's equal-weight score, router − baseline with its 95% paired bootstrap interval
/// (records resampled within sources), and the models the baseline chose.
pub fn comparison_table(eval: &Evaluation) -> String {
    let mut out = String::new();
    let Some(first) = eval.comparisons.first() else {
        return out;
    };
    let _ = writeln!(
        out,
        "| router ({:.2}) vs | its score | router − it [{:.0}% CI] | its choices |",
        eval.average,
        100.0 * first.gain.level
    );
    let _ = writeln!(out, "|---|---:|---:|---|");
    for c in &eval.comparisons {
        let _ = writeln!(
            out,
            "| {} | {:.2} | {} | {} |",
            c.name,
            c.score,
            c.gain,
            picks_text(c)
        );
    }
    let _ = writeln!(
        out,
        "\nIntervals: paired bootstrap, records resampled within sources, equal weight over \
         sources, {} resamples.",
        first.gain.resamples
    );
    out
}

/// `SOURCE: MODEL (n), ...` per source for the per-source bar; `MODEL (n)` overall otherwise.
fn picks_text(c: &Comparison) -> String {
    let list = |m: &BTreeMap<String, usize>| {
        m.iter()
            .map(|(model, n)| format!("{model} ({n})"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if c.kind == ComparisonKind::HonestBar {
        return c
            .picks
            .iter()
            .map(|(source, m)| format!("{source}: {}", list(m)))
            .collect::<Vec<_>>()
            .join("; ");
    }
    let mut total: BTreeMap<String, usize> = BTreeMap::new();
    for (model, n) in c.picks.values().flatten() {
        *total.entry(model.clone()).or_default() += n;
    }
    list(&total)
}

/// The whole Markdown report; `notes` are lines shown under the title (command, split, skips).
pub fn markdown(eval: &Evaluation, notes: &[String], with_cost_plot: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Routing evaluation: `{}`\n", eval.router);
    for note in notes {
        let _ = writeln!(out, "- {note}");
    }
    let _ = writeln!(
        out,
        "- pool ({}): {}\n- scores are mean scaled scores (0–100 via each source's `score_range`); \
         averages weight every source equally; random is the expected score of uniform routing\n",
        eval.models.len(),
        eval.models.join(", ")
    );
    let _ = writeln!(out, "## Per source\n\n{}", summary_table(eval));
    let _ = writeln!(
        out,
        "## Single models and routing share\n\n{}",
        singles_table(eval)
    );
    if !eval.comparisons.is_empty() {
        let _ = writeln!(
            out,
            "## Against the honest baselines\n\n{}",
            comparison_table(eval)
        );
    }
    let _ = writeln!(
        out,
        "## Routing share per source\n\n![routing share]({SHARE_SVG})\n"
    );
    if with_cost_plot {
        let _ = writeln!(
            out,
            "## Quality vs cost\n\n![quality vs cost]({QUALITY_COST_SVG})\n"
        );
        if let (Some(cost), Some(prices)) = (eval.cost, &eval.prices) {
            let _ = writeln!(out, "| point | cost / query | quality |\n|---|---:|---:|");
            let _ = writeln!(out, "| router | {cost:.3} | {:.2} |", eval.average);
            if let Some(oc) = eval.oracle_cost {
                let _ = writeln!(out, "| oracle | {oc:.3} | {:.2} |", eval.oracle);
            }
            for (m, p) in prices {
                let q = eval.singles.get(m).copied().unwrap_or(f64::NAN);
                let _ = writeln!(out, "| {m} | {p:.3} | {q:.2} |");
            }
            for pt in &eval.quality_cost {
                let _ = writeln!(
                    out,
                    "| router, cost weight {:.4} | {:.3} | {:.2} |",
                    pt.weight, pt.cost, pt.quality
                );
            }
            out.push('\n');
        }
    } else {
        let _ = writeln!(
            out,
            "No prices were given (`--prices MODEL=PRICE,...`), so there is no quality–cost plot.\n"
        );
    }
    out
}

/// Stacked horizontal bars: per source, the fraction routed to each model.
pub fn share_svg(eval: &Evaluation) -> Result<String, DataError> {
    let sources: Vec<&String> = eval.sources.keys().collect();
    let rows = sources.len().max(1);
    let height = 120 + 36 * rows as u32 + 22 * eval.models.len() as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, height)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("Routing share per source: {}", eval.router),
                ("sans-serif", 18),
            )
            .margin(12)
            .margin_right(240)
            .x_label_area_size(30)
            .y_label_area_size(130)
            .build_cartesian_2d(0f64..1f64, 0f64..rows as f64)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .disable_y_axis()
            .x_desc("fraction of prompts")
            .draw()
            .map_err(plot_err)?;
        for (j, model) in eval.models.iter().enumerate() {
            let color = Palette99::pick(j).to_rgba();
            let bars = sources.iter().enumerate().filter_map(|(i, name)| {
                let s = eval.sources.get(*name)?;
                let start: f64 = eval.models[..j]
                    .iter()
                    .map(|m| s.share.get(m).copied().unwrap_or(0.0))
                    .sum();
                let width = s.share.get(model).copied().unwrap_or(0.0);
                let y = (rows - 1 - i) as f64;
                Some(Rectangle::new(
                    [(start, y + 0.15), (start + width, y + 0.85)],
                    color.filled(),
                ))
            });
            chart.draw_series(bars).map_err(plot_err)?;
            // legend right of the plot, so it never hides a bar
            let (x, y) = chart.backend_coord(&(1.0, rows as f64));
            let (x, y) = (x + 20, y + 10 + 22 * j as i32);
            root.draw(&Rectangle::new(
                [(x, y - 6), (x + 14, y + 6)],
                color.filled(),
            ))
            .map_err(plot_err)?;
            let legend = TextStyle::from(("sans-serif", 13).into_font())
                .pos(Pos::new(HPos::Left, VPos::Center));
            root.draw(&Text::new(model.clone(), (x + 20, y), legend))
                .map_err(plot_err)?;
        }
        let style = TextStyle::from(("sans-serif", 14).into_font())
            .pos(Pos::new(HPos::Right, VPos::Center));
        for (i, name) in sources.iter().enumerate() {
            let (x, y) = chart.backend_coord(&(0.0, (rows - 1 - i) as f64 + 0.5));
            root.draw(&Text::new(name.to_string(), (x - 8, y), style.clone()))
                .map_err(plot_err)?;
        }
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// A labelled point of the quality–cost plot: (name, mean price per query, quality).
type CostPoint = (String, f64, f64);

/// Each single model at its price, the oracle (when it has a cost) and the router.
fn cost_points(eval: &Evaluation, prices: &BTreeMap<String, f64>, cost: f64) -> Vec<CostPoint> {
    let mut points: Vec<CostPoint> = prices
        .iter()
        .map(|(m, &p)| {
            (
                m.clone(),
                p,
                eval.singles.get(m).copied().unwrap_or(f64::NAN),
            )
        })
        .collect();
    if let Some(oc) = eval.oracle_cost {
        points.push(("oracle".into(), oc, eval.oracle));
    }
    points.push((format!("router ({})", eval.router), cost, eval.average));
    points
}

/// The plot's largest cost and its quality range (5 points of margin, within 0..105).
fn cost_axes(eval: &Evaluation, points: &[CostPoint]) -> (f64, f64, f64) {
    let all_q = points
        .iter()
        .map(|p| p.2)
        .chain(eval.quality_cost.iter().map(|p| p.quality))
        .filter(|q| q.is_finite());
    let (qmin, qmax) = all_q.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), q| {
        (a.min(q), b.max(q))
    });
    let cmax = points
        .iter()
        .map(|p| p.1)
        .chain(eval.quality_cost.iter().map(|p| p.cost))
        .fold(0.0, f64::max);
    (cmax, (qmin - 5.0).max(0.0), (qmax + 5.0).min(105.0))
}

/// Quality (average scaled score) vs mean price per query: each single model, the oracle, the
/// router, and the router's curve as its cost weight grows. `None` without prices.
pub fn quality_cost_svg(eval: &Evaluation) -> Result<Option<String>, DataError> {
    let (Some(prices), Some(cost)) = (&eval.prices, eval.cost) else {
        return Ok(None);
    };
    let points = cost_points(eval, prices, cost);
    let (cmax, y0, y1) = cost_axes(eval, &points);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (760, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Quality vs cost", ("sans-serif", 18))
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..(cmax * 1.15).max(1e-9), y0..y1.max(y0 + 1.0))
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("mean price per query")
            .y_desc("average scaled score")
            .draw()
            .map_err(plot_err)?;
        if !eval.quality_cost.is_empty() {
            let mut curve: Vec<(f64, f64)> = eval
                .quality_cost
                .iter()
                .map(|p| (p.cost, p.quality))
                .collect();
            curve.sort_by(|a, b| a.0.total_cmp(&b.0));
            chart
                .draw_series(LineSeries::new(curve, BLUE.stroke_width(2)))
                .map_err(plot_err)?
                .label("router, cost weight swept")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE.stroke_width(2)));
        }
        let below = TextStyle::from(("sans-serif", 12).into_font());
        // the router's label goes above its point: it often coincides with another point
        let above = below.clone().pos(Pos::new(HPos::Right, VPos::Bottom));
        for (i, (name, c, q)) in points.iter().enumerate() {
            let color = if name == "oracle" {
                BLACK.to_rgba()
            } else if name.starts_with("router") {
                RED.to_rgba()
            } else {
                Palette99::pick(i).to_rgba()
            };
            chart
                .draw_series(std::iter::once(Circle::new((*c, *q), 5, color.filled())))
                .map_err(plot_err)?;
            chart
                .draw_series(std::iter::once(Text::new(
                    name.clone(),
                    (*c, *q),
                    if name.starts_with("router") {
                        above.clone()
                    } else {
                        below.clone()
                    },
                )))
                .map_err(plot_err)?;
        }
        if !eval.quality_cost.is_empty() {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(WHITE.mix(0.9))
                .border_style(BLACK)
                .draw()
                .map_err(plot_err)?;
        }
        root.present().map_err(plot_err)?;
    }
    Ok(Some(svg))
}

/// Writes `report.md`, `share.svg` and (when priced) `quality_cost.svg` into `dir`.
pub fn write_report(
    dir: &Path,
    eval: &Evaluation,
    notes: &[String],
) -> Result<Vec<PathBuf>, DataError> {
    let write = |name: &str, text: &str| -> Result<PathBuf, DataError> {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|source| DataError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    };
    std::fs::create_dir_all(dir).map_err(|source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut written = vec![write(SHARE_SVG, &share_svg(eval)?)?];
    let cost_svg = quality_cost_svg(eval)?;
    if let Some(svg) = &cost_svg {
        written.push(write(QUALITY_COST_SVG, svg)?);
    }
    written.insert(
        0,
        write(REPORT_MD, &markdown(eval, notes, cost_svg.is_some()))?,
    );
    Ok(written)
}
