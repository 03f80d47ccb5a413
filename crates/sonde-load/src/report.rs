//! Reports: the summary table on stdout, a Markdown report with an SVG chart.
//!
//! The Markdown report (`--report run.md`) holds the same content as the summary table, as
//! Markdown tables, with the comparison against a baseline when there is one, and links to an
//! SVG chart written beside it (`run.svg`): latency over time (p50, p95 and p99 per window) and
//! the percentile distribution (latency by percentile, on a log scale of percentiles as
//! HdrHistogram plots draw it: 0, 90, 99, 99.9, ... equally spaced).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::compare::{Comparison, format_change, format_noise, format_value};
use crate::result::{
    ErrorCounts, Quantiles, RequestStats, RunResult, ServerRoute, ThresholdOutcome,
};
use crate::threshold::{Measure, Threshold};

/// A duration in seconds as people read it: `850µs`, `12.3ms`, `1.25s`.
pub fn format_seconds(s: f64) -> String {
    if !s.is_finite() {
        return "-".to_owned();
    }
    let a = s.abs();
    if a == 0.0 {
        "0".to_owned()
    } else if a < 1e-3 {
        format!("{:.0}µs", s * 1e6)
    } else if a < 0.01 {
        format!("{:.2}ms", s * 1e3)
    } else if a < 1.0 {
        format!("{:.1}ms", s * 1e3)
    } else if a < 100.0 {
        format!("{s:.2}s")
    } else {
        format!("{s:.0}s")
    }
}

/// A ratio as a percentage: `0.5%`, `12%`.
pub fn format_percent(r: f64) -> String {
    if !r.is_finite() {
        return "-".to_owned();
    }
    let p = r * 100.0;
    if p == 0.0 {
        "0%".to_owned()
    } else if p.abs() < 0.1 {
        format!("{p:.3}%")
    } else if p.abs() < 10.0 {
        format!("{p:.2}%")
    } else {
        format!("{p:.1}%")
    }
}

/// Requests per second: `499.8/s`.
pub fn format_rate(r: f64) -> String {
    if !r.is_finite() {
        "-".to_owned()
    } else if r.abs() < 100.0 {
        format!("{r:.2}/s")
    } else {
        format!("{r:.1}/s")
    }
}

/// `s` cut to `width` characters (with `…`).
pub fn clip(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

fn opt_seconds(v: Option<f64>) -> String {
    v.map_or("-".to_owned(), format_seconds)
}

/// Errors by class, non-zero ones only: `timeout 3, 5xx 12`.
fn error_classes(e: &ErrorCounts) -> String {
    let parts: Vec<String> = [
        ("connect", e.connect),
        ("timeout", e.timeout),
        ("tls", e.tls),
        ("4xx", e.http_4xx),
        ("5xx", e.http_5xx),
        ("other", e.other),
    ]
    .iter()
    .filter(|(_, n)| *n > 0)
    .map(|(c, n)| format!("{c} {n}"))
    .collect();
    list_or_none(&parts)
}

/// `items` joined by commas, or `none`.
pub(crate) fn list_or_none<S: AsRef<str>>(items: &[S]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items
            .iter()
            .map(|s| s.as_ref())
            .collect::<Vec<&str>>()
            .join(", ")
    }
}

/// The observed value of a threshold in its unit.
fn format_observed(t: &ThresholdOutcome) -> String {
    let Some(v) = t.observed else {
        return "nothing measured".to_owned();
    };
    match t.threshold.parse::<Threshold>().map(|t| t.measure) {
        Ok(Measure::Errors) => format_percent(v),
        Ok(Measure::Rate) => format_rate(v),
        Ok(_) => format_seconds(v),
        Err(_) => format!("{v}"),
    }
}

/// The model line: what was asked and what was achieved.
fn model_line(r: &RunResult) -> String {
    let mut s = format!(
        "{} model, {} measured",
        r.model,
        format_seconds(r.duration_seconds)
    );
    if let Some(t) = r.target_rate {
        let _ = write!(
            s,
            ", target {} (mean), achieved {}",
            format_rate(t),
            format_rate(r.achieved_rate)
        );
        if t > 0.0 {
            let _ = write!(s, " ({:.1}% of the target)", 100.0 * r.achieved_rate / t);
        }
    } else {
        if let Some(u) = r.users {
            let _ = write!(s, ", {u} users");
        }
        let _ = write!(s, ", achieved {}", format_rate(r.achieved_rate));
    }
    if !r.merged_from.is_empty() {
        let _ = write!(
            s,
            "; merged from {} runs ({})",
            r.merged_from.len(),
            r.merged_from.join(", ")
        );
    }
    s
}

/// What to know about the generator, each a full sentence, with whether it is a warning (the
/// figures are not the server's alone) or a note.
fn generator_lines(r: &RunResult) -> Vec<(bool, String)> {
    let g = &r.generator;
    let mut out = Vec::new();
    if r.interrupted {
        out.push((
            true,
            format!(
                "the run was interrupted after {}: every figure covers that time only.",
                format_seconds(r.duration_seconds)
            ),
        ));
    }
    if g.saturated {
        out.push((true, format!(
            "the generator could not keep up: {} requests left more than 1 ms late (up to {} behind schedule) while connections were free; the achieved rate is a limit of this machine, not the server. Use a lower rate, or run on several machines and combine the results with `sonde-load merge`.",
            g.late_requests,
            format_seconds(g.max_lag_seconds)
        )));
    } else if g.late_requests > 0 {
        out.push((false, format!(
            "{} requests left more than 1 ms late (up to {} behind schedule); their latency counts from the scheduled time.",
            g.late_requests,
            format_seconds(g.max_lag_seconds)
        )));
    }
    if g.queued_requests > 0 {
        out.push((true, format!(
            "{} requests waited for a free connection: the server was slower than this rate needs with these connections; their latency includes the wait (coordinated omission corrected). Add --connections if the server should take more at once.",
            g.queued_requests
        )));
    }
    out
}

/// One request's line of the requests table, text or Markdown alike.
struct Row {
    name: String,
    /// Count, rate, p50, p95, p99 and max.
    figures: [String; 6],
    errors: String,
}

/// The widths of [`Row::figures`] in the text table (right-aligned).
const FIGURE_WIDTHS: [usize; 6] = [9, 10, 9, 9, 9, 9];

/// One line of the text requests table: the name in `w` columns, the figures right-aligned.
fn text_row(
    s: &mut String,
    w: usize,
    name: &str,
    figures: &[impl std::fmt::Display],
    errors: &str,
) {
    let _ = write!(s, "{:<w$}", clip(name, w));
    for (f, width) in figures.iter().zip(FIGURE_WIDTHS) {
        let _ = write!(s, " {f:>width$}");
    }
    let _ = writeln!(s, "  {errors}");
}

fn row(r: &RequestStats) -> Row {
    let point = r.latency.to_point().ok();
    let q = |q: f64| opt_seconds(point.as_ref().and_then(|p| p.quantile(q)));
    let errors = if r.error_count() == 0 {
        "0".to_owned()
    } else {
        format!("{} ({})", r.error_count(), format_percent(r.error_ratio()))
    };
    Row {
        name: r.name.clone(),
        figures: [
            r.count.to_string(),
            format_rate(r.rate),
            q(0.5),
            q(0.95),
            q(0.99),
            opt_seconds(r.latency.parts.max),
        ],
        errors,
    }
}

fn all_rows(r: &RunResult) -> Vec<(&RequestStats, Row)> {
    let mut rows: Vec<(&RequestStats, Row)> = r.requests.iter().map(|s| (s, row(s))).collect();
    // One request: its row and the total say the same.
    if r.requests.len() != 1 {
        rows.push((&r.total, row(&r.total)));
    }
    rows
}

/// Client-side quantiles of the request a server route matched.
fn client_quantiles(r: &RunResult, route: &ServerRoute) -> [Option<f64>; 3] {
    // Only a route matched to a request is compared: an unmatched one is other traffic.
    let stats = route.request.as_deref().and_then(|n| r.request(Some(n)));
    let point = stats.and_then(|s| s.latency.to_point().ok());
    Quantiles::KEPT.map(|q| point.as_ref().and_then(|p| p.quantile(q)))
}

/// What `≤` and `≈` mean in the server-view tables.
const BUCKET_NOTE: &str = "≤ x: in the service's first bucket, so only known to be at most x; ≈: the client's value lies in the bucket that holds the service's, which its buckets cannot tell apart";

/// One route's cells after its label: count, server p50/p95/p99, client p50/p95/p99 and the
/// three differences, for the text table and the Markdown one alike.
fn route_cells(r: &RunResult, x: &ServerRoute) -> [String; 10] {
    let c = client_quantiles(r, x);
    let srv = x.quantiles.to_array();
    let cell = |v: Option<f64>| match v.and_then(|v| bucket_of(v, &x.bounds)) {
        // Interpolating inside the first bucket assumes values spread evenly from zero.
        Some((lo, hi)) if lo <= 0.0 => format!("≤{}", format_seconds(hi)),
        _ => opt_seconds(v),
    };
    let delta = |c: Option<f64>, s: Option<f64>| match (c, s.and_then(|s| bucket_of(s, &x.bounds)))
    {
        (Some(c), Some((lo, hi))) if c > lo && c <= hi => "≈".to_owned(),
        _ => diff(c, s),
    };
    [
        x.count.to_string(),
        cell(srv[0]),
        cell(srv[1]),
        cell(srv[2]),
        opt_seconds(c[0]),
        opt_seconds(c[1]),
        opt_seconds(c[2]),
        delta(c[0], srv[0]),
        delta(c[1], srv[1]),
        delta(c[2], srv[2]),
    ]
}

/// The bucket `(lower, upper]` of `bounds` that holds `v` (the first one starts at zero, as
/// Prometheus assumes for positive bounds); none above the last bound.
fn bucket_of(v: f64, bounds: &[f64]) -> Option<(f64, f64)> {
    let i = bounds.iter().position(|b| *b >= v)?;
    let lo = match i {
        0 if bounds[0] > 0.0 => 0.0,
        0 => f64::NEG_INFINITY,
        _ => bounds[i - 1],
    };
    Some((lo, bounds[i]))
}

fn diff(client: Option<f64>, server: Option<f64>) -> String {
    match (client, server) {
        (Some(c), Some(s)) => {
            let d = c - s;
            if d >= 0.0 {
                format!("+{}", format_seconds(d))
            } else {
                format!("-{}", format_seconds(-d))
            }
        }
        _ => "-".to_owned(),
    }
}

/// The end-of-run table.
pub fn summary_table(r: &RunResult) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "\n{}", model_line(r));
    for (warning, l) in generator_lines(r) {
        let _ = writeln!(s, "{} {l}", if warning { "!" } else { "note:" });
    }
    let rows = all_rows(r);
    let w = rows
        .iter()
        .map(|(_, x)| x.name.chars().count())
        .max()
        .unwrap_or(0)
        .clamp(7, 40);
    s.push('\n');
    let head = ["count", "rate", "p50", "p95", "p99", "max"];
    text_row(&mut s, w, "request", &head, "errors");
    for (_, x) in &rows {
        text_row(&mut s, w, &x.name, &x.figures, &x.errors);
    }
    for (stats, _) in &rows {
        // The total's classes are the sum of the requests' lines above.
        let is_sum = std::ptr::eq(*stats, &r.total) && !r.requests.is_empty();
        if stats.error_count() > 0 && !is_sum {
            let _ = writeln!(
                s,
                "  errors of {}: {}",
                stats.name,
                error_classes(&stats.errors)
            );
        }
    }
    if !r.thresholds.is_empty() {
        let _ = writeln!(s, "\nthresholds:");
        for t in &r.thresholds {
            let _ = writeln!(
                s,
                "  {} {}{}: {}",
                if t.passed { "✓" } else { "✗" },
                t.threshold,
                t.request
                    .as_deref()
                    .map_or(String::new(), |n| format!(" ({n})")),
                format_observed(t)
            );
        }
        let failed = r.thresholds.iter().filter(|t| !t.passed).count();
        let _ = writeln!(
            s,
            "{}",
            if failed == 0 {
                "all thresholds hold".to_owned()
            } else {
                format!(
                    "{failed} threshold{} failed",
                    if failed == 1 { "" } else { "s" }
                )
            }
        );
    }
    if let Some(v) = &r.server {
        let metric = single_metric(v);
        let _ = writeln!(
            s,
            "\nthe server's own view over the run ({}{}):",
            v.url,
            metric.map_or(String::new(), |m| format!(", {m}"))
        );
        if !v.routes.is_empty() {
            let lw = v
                .routes
                .iter()
                .map(|x| route_label(x, metric.is_none()).chars().count())
                .max()
                .unwrap_or(0)
                .clamp(5, 60);
            let _ = writeln!(
                s,
                "{:<lw$} {:>8} {:>9} {:>9} {:>9}   {:>9} {:>9} {:>9}   {:>9} {:>9} {:>9}",
                "route",
                "count",
                "srv p50",
                "srv p95",
                "srv p99",
                "cli p50",
                "cli p95",
                "cli p99",
                "Δp50",
                "Δp95",
                "Δp99"
            );
            for x in &v.routes {
                let [n, sp50, sp95, sp99, cp50, cp95, cp99, d50, d95, d99] = route_cells(r, x);
                let _ = writeln!(
                    s,
                    "{:<lw$} {n:>8} {sp50:>9} {sp95:>9} {sp99:>9}   {cp50:>9} {cp95:>9} {cp99:>9}   {d50:>9} {d95:>9} {d99:>9}",
                    clip(&route_label(x, metric.is_none()), lw),
                );
            }
            let _ = writeln!(
                s,
                "(Δ = client − server: network, queueing and the client's own time; {BUCKET_NOTE})"
            );
        }
        if !v.dependencies.is_empty() {
            let _ = writeln!(s, "dependencies over the run:");
            let lw = v
                .dependencies
                .iter()
                .map(|x| route_label(x, true).chars().count())
                .max()
                .unwrap_or(0)
                .clamp(10, 70);
            let _ = writeln!(
                s,
                "{:<lw$} {:>8} {:>9} {:>9} {:>9}",
                "series", "count", "p50", "p95", "p99"
            );
            for x in &v.dependencies {
                let _ = writeln!(
                    s,
                    "{:<lw$} {:>8} {:>9} {:>9} {:>9}",
                    clip(&route_label(x, true), lw),
                    x.count,
                    opt_seconds(x.quantiles.p50),
                    opt_seconds(x.quantiles.p95),
                    opt_seconds(x.quantiles.p99)
                );
            }
        }
        for (series, inc) in &v.counters {
            let _ = writeln!(s, "  {series}: +{inc}");
        }
        for n in &v.notes {
            let _ = writeln!(s, "  note: {n}");
        }
    }
    s
}

/// A route as `request: labels` (the metric too when the routes come from several).
fn route_label(x: &ServerRoute, with_metric: bool) -> String {
    let series = match (with_metric, x.labels.is_empty()) {
        (_, true) => x.metric.clone(),
        (true, false) => format!("{}{{{}}}", x.metric, x.labels),
        (false, false) => x.labels.clone(),
    };
    match &x.request {
        Some(n) => format!("{n}: {series}"),
        None => series,
    }
}

/// The metric every route comes from, when there is one.
fn single_metric(v: &crate::result::ServerView) -> Option<&str> {
    let first = v.routes.first()?.metric.as_str();
    v.routes.iter().all(|r| r.metric == first).then_some(first)
}

/// Escapes text for a Markdown table cell.
fn md(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace('\n', " ")
        .replace('<', "&lt;")
}

/// The Markdown report.
pub fn markdown(r: &RunResult, c: Option<&Comparison>, svg_name: Option<&str>) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# sonde-load report\n");
    let _ = writeln!(s, "{}\n", md(&model_line(r)));
    for (warning, l) in generator_lines(r) {
        let head = if warning { "Warning" } else { "Note" };
        let _ = writeln!(s, "> **{head}:** {}\n", md(&l));
    }
    let _ = writeln!(s, "## Requests\n");
    let _ = writeln!(
        s,
        "| request | count | rate | p50 | p95 | p99 | max | errors | errors by class |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for (stats, x) in all_rows(r) {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            md(&x.name),
            x.figures.join(" | "),
            x.errors,
            error_classes(&stats.errors)
        );
    }
    if let Some(svg) = svg_name {
        let _ = writeln!(s, "\n![latency over time and by percentile]({svg})");
    }
    if !r.thresholds.is_empty() {
        let _ = writeln!(s, "\n## Thresholds\n");
        let _ = writeln!(s, "| | threshold | request | observed |");
        let _ = writeln!(s, "|---|---|---|---:|");
        for t in &r.thresholds {
            let _ = writeln!(
                s,
                "| {} | `{}` | {} | {} |",
                if t.passed { "✓" } else { "✗" },
                t.threshold.replace('`', "'"),
                t.request.as_deref().map_or("all".to_owned(), md),
                format_observed(t)
            );
        }
    }
    if let Some(v) = &r.server {
        let _ = writeln!(s, "\n## The server's view\n");
        let metric = single_metric(v);
        let _ = writeln!(
            s,
            "Scraped from {} before and after the run{}.\n",
            md(&v.url),
            metric.map_or(String::new(), |m| format!(" (`{m}`)"))
        );
        if !v.routes.is_empty() {
            let _ = writeln!(
                s,
                "| route | count | server p50 | server p95 | server p99 | client p50 | client p95 | client p99 | Δ p50 | Δ p95 | Δ p99 |"
            );
            let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
            for x in &v.routes {
                let _ = writeln!(
                    s,
                    "| {} | {} |",
                    md(&route_label(x, metric.is_none())),
                    route_cells(r, x).join(" | ")
                );
            }
            let _ = writeln!(
                s,
                "\nΔ = client − server: network, queueing and the client's own time; {BUCKET_NOTE}."
            );
        }
        if !v.dependencies.is_empty() {
            let _ = writeln!(
                s,
                "\n| dependency series | count | p50 | p95 | p99 |\n|---|---:|---:|---:|---:|"
            );
            for x in &v.dependencies {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} |",
                    md(&route_label(x, true)),
                    x.count,
                    opt_seconds(x.quantiles.p50),
                    opt_seconds(x.quantiles.p95),
                    opt_seconds(x.quantiles.p99)
                );
            }
        }
        if !v.counters.is_empty() {
            let _ = writeln!(s, "\n| counter | increase |\n|---|---:|");
            for (series, inc) in &v.counters {
                let _ = writeln!(s, "| `{}` | {inc} |", series.replace('`', "'"));
            }
        }
        for n in &v.notes {
            let _ = writeln!(s, "\n- {}", md(n));
        }
    }
    if let Some(c) = c {
        let _ = writeln!(s, "\n## Comparison with the baseline\n");
        let _ = writeln!(
            s,
            "Tolerance {}; a figure regresses only when it is worse by more than {}σ of the two runs' noise (estimated from each run's histograms and timeline) **and** by more than the tolerance plus {}σ. *noise* marks a figure beyond the tolerance that fails these tests.\n",
            format_percent(c.max_regression),
            crate::compare::NOISE_Z,
            crate::compare::TOLERANCE_Z
        );
        let _ = writeln!(
            s,
            "| request | figure | old | new | change | noise | verdict |"
        );
        let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---|");
        for row in &c.rows {
            for d in &row.deltas {
                let verdict = match &d.note {
                    Some(n) => format!("{} ({})", d.verdict, md(n)),
                    None => d.verdict.to_string(),
                };
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    md(&row.name),
                    d.metric,
                    format_value(d.metric, d.old),
                    format_value(d.metric, d.new),
                    format_change(d),
                    format_noise(d),
                    verdict
                );
            }
        }
        for n in &c.notes {
            let _ = writeln!(s, "\n- {}", md(n));
        }
        let _ = writeln!(s, "\n**{}**", md(&c.verdict_line()));
    }
    s
}

/// Where the chart of a report at `path` goes: `run.md` → `run.svg`.
pub fn svg_path(path: &Path) -> PathBuf {
    path.with_extension("svg")
}

/// Writes the Markdown report at `path` and its SVG chart beside it.
pub fn write_report(r: &RunResult, c: Option<&Comparison>, path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let svg = svg_path(path);
    if svg == path {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the report would overwrite its own chart; name it with .md",
        ));
    }
    let svg_name = svg
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "chart.svg".to_owned());
    std::fs::write(&svg, chart_svg(r))?;
    std::fs::write(path, markdown(r, c, Some(&svg_name)))
}

/// Escapes text for XML.
fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters are not allowed in XML 1.0.
            c if c.is_control() && c != '\n' && c != '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

const W: f64 = 760.0;
const PANEL_H: f64 = 240.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const COLORS: [(&str, &str); 3] = [("p50", "#2b8a3e"), ("p95", "#e67700"), ("p99", "#c92a2a")];

/// "Nice" axis ticks over `0..=max`.
fn ticks(max: f64) -> Vec<f64> {
    if !(max.is_finite() && max > 0.0) {
        return vec![0.0];
    }
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    (0..=((max / step).ceil() as usize).min(20))
        .map(|i| i as f64 * step)
        .collect()
}

/// A polyline through `pts` (already in pixels), split where a point is missing.
fn polylines(out: &mut String, pts: &[Option<(f64, f64)>], color: &str) {
    let mut seg: Vec<(f64, f64)> = Vec::new();
    let flush = |out: &mut String, seg: &mut Vec<(f64, f64)>| {
        if seg.len() == 1 {
            let (x, y) = seg[0];
            let _ = writeln!(
                out,
                r#"<circle cx="{x:.1}" cy="{y:.1}" r="2" fill="{color}"/>"#
            );
        } else if seg.len() > 1 {
            let p: Vec<String> = seg.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
            let _ = writeln!(
                out,
                r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="1.5"/>"#,
                p.join(" ")
            );
        }
        seg.clear();
    };
    for p in pts {
        match p {
            Some(xy) => seg.push(*xy),
            None => flush(out, &mut seg),
        }
    }
    flush(out, &mut seg);
}

/// The chart: latency over time (p50/p95/p99 per window) above the percentile distribution.
pub fn chart_svg(r: &RunResult) -> String {
    // Two panels, each with its title above and its axis labels below.
    let h = 2.0 * PANEL_H + 145.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{h}" fill="white"/>"#);
    over_time(&mut s, r, 30.0);
    by_percentile(&mut s, r, 30.0 + PANEL_H + 60.0);
    // Legend.
    for (i, (name, color)) in COLORS.iter().enumerate() {
        let x = LEFT + 10.0 + i as f64 * 60.0;
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="6" width="10" height="10" fill="{color}"/><text x="{}" y="15">{name}</text>"#,
            x + 14.0
        );
    }
    s.push_str("</svg>\n");
    s
}

fn axes(s: &mut String, top: f64, title: &str, xlabel: &str) {
    let (x0, x1, y1) = (LEFT, W - RIGHT, top + PANEL_H);
    let _ = writeln!(
        s,
        r#"<text x="{x0}" y="{}" font-size="13" font-weight="bold">{}</text>"#,
        top - 8.0,
        xml(title)
    );
    let _ = writeln!(
        s,
        r##"<rect x="{x0}" y="{top}" width="{}" height="{PANEL_H}" fill="none" stroke="#888"/>"##,
        x1 - x0
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        (x0 + x1) / 2.0,
        y1 + 32.0,
        xml(xlabel)
    );
}

fn y_axis(s: &mut String, top: f64, ymax: f64) -> impl Fn(f64) -> f64 + use<> {
    let t = ticks(ymax);
    let top_value = t.last().copied().filter(|v| *v > 0.0).unwrap_or(1.0);
    let y = move |v: f64| top + PANEL_H - (v / top_value).clamp(0.0, 1.0) * PANEL_H;
    for v in &t {
        let py = y(*v);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{py:.1}" x2="{}" y2="{py:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            W - RIGHT,
            LEFT - 4.0,
            py + 4.0,
            xml(&format_seconds(*v))
        );
    }
    y
}

fn over_time(s: &mut String, r: &RunResult, top: f64) {
    axes(
        s,
        top,
        "Latency over time (all requests)",
        "seconds into the run",
    );
    let tl = &r.total.timeline;
    let tmax = tl
        .iter()
        .map(|w| w.start_seconds + w.seconds)
        .fold(r.duration_seconds, f64::max);
    if tl.is_empty() || tmax.is_nan() || tmax <= 0.0 {
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">no timeline recorded</text>"#,
            W / 2.0,
            top + PANEL_H / 2.0
        );
        return;
    }
    let ymax = tl
        .iter()
        .filter_map(|w| w.quantiles.p99.or(w.quantiles.p95).or(w.quantiles.p50))
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let y = y_axis(s, top, ymax);
    let x = |t: f64| LEFT + (t / tmax).clamp(0.0, 1.0) * (W - LEFT - RIGHT);
    for t in ticks(tmax) {
        if t > tmax {
            break;
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            x(t),
            top + PANEL_H + 14.0,
            xml(&format_seconds(t))
        );
    }
    for (i, (_, color)) in COLORS.iter().enumerate() {
        let pts: Vec<Option<(f64, f64)>> = tl
            .iter()
            .map(|w| {
                w.quantiles.to_array()[i]
                    .filter(|v| v.is_finite())
                    .map(|v| (x(w.start_seconds + w.seconds / 2.0), y(v)))
            })
            .collect();
        polylines(s, &pts, color);
    }
}

fn by_percentile(s: &mut String, r: &RunResult, top: f64) {
    axes(
        s,
        top,
        "Latency by percentile (all requests)",
        "percentile (log scale)",
    );
    let point = r.total.latency.to_point().ok().filter(|p| p.count() > 0);
    let Some(point) = point else {
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">no latency recorded</text>"#,
            W / 2.0,
            top + PANEL_H / 2.0
        );
        return;
    };
    // x = log10(1 / (1 − q)): 0 at p0, 1 at p90, 2 at p99, ... up to what the count resolves.
    let n = point.count() as f64;
    let xmax = n.log10().clamp(1.0, 6.0).ceil();
    let steps = 200;
    let curve: Vec<(f64, f64)> = (0..=steps)
        .filter_map(|i| {
            let lx = xmax * i as f64 / steps as f64;
            let q = 1.0 - 10f64.powf(-lx);
            point.quantile(q).map(|v| (lx, v))
        })
        .collect();
    let ymax = point
        .max()
        .unwrap_or(0.0)
        .max(curve.iter().map(|c| c.1).fold(0.0, f64::max));
    let y = y_axis(s, top, ymax);
    let x = |lx: f64| LEFT + (lx / xmax) * (W - LEFT - RIGHT);
    for k in 0..=(xmax as usize) {
        let label = match k {
            0 => "0".to_owned(),
            1 => "90".to_owned(),
            k => format!("99.{}", "9".repeat(k - 2))
                .trim_end_matches('.')
                .to_owned(),
        };
        let px = x(k as f64);
        let _ = writeln!(
            s,
            r##"<line x1="{px:.1}" y1="{top}" x2="{px:.1}" y2="{}" stroke="#eee"/><text x="{px:.1}" y="{}" text-anchor="middle">{label}</text>"##,
            top + PANEL_H,
            top + PANEL_H + 14.0
        );
    }
    let pts: Vec<Option<(f64, f64)>> = curve.iter().map(|(lx, v)| Some((x(*lx), y(*v)))).collect();
    polylines(s, &pts, "#1c7ed6");
    // Mark p50, p95 and p99 on the curve in the legend's colours.
    for ((name, color), q) in COLORS.iter().zip([0.5, 0.95, 0.99]) {
        if let Some(v) = point.quantile(q) {
            let lx = -(1.0 - q).log10();
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{color}"><title>{name} {}</title></circle>"#,
                x(lx),
                y(v),
                xml(&format_seconds(v))
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_read_well() {
        assert_eq!(format_seconds(0.0123), "12.3ms");
        assert_eq!(format_seconds(0.00085), "850µs");
        assert_eq!(format_seconds(0.0042), "4.20ms");
        assert_eq!(format_seconds(1.25), "1.25s");
        assert_eq!(format_percent(0.01), "1.00%");
        assert_eq!(format_percent(0.0), "0%");
        assert_eq!(format_rate(499.84), "499.8/s");
        assert_eq!(clip("abcdef", 4), "abc…");
    }

    #[test]
    fn ticks_cover_the_range() {
        let t = ticks(0.137);
        assert_eq!(t.first(), Some(&0.0));
        assert!(*t.last().expect("ticks") >= 0.137);
        assert!(t.len() <= 8, "{t:?}");
        assert_eq!(ticks(f64::NAN), vec![0.0]);
    }

    #[test]
    fn xml_escapes() {
        assert_eq!(xml("a<b & \"c\"\u{1}"), "a&lt;b &amp; &quot;c&quot; ");
    }
}
