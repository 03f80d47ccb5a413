//! Baselines, comparisons with a noise-aware regression verdict, and merging runs.
//!
//! # How a comparison tells a regression from noise
//!
//! Two runs of the same server never give the same p99. A comparison therefore judges each
//! figure (p50, p95, p99, error ratio and rate, per request and for all requests together)
//! against the noise of the two runs, estimated from the runs' own data, and calls it a
//! regression only when both of these hold:
//!
//! 1. **The runs differ**: the new value is worse than the old by more than [`NOISE_Z`] (3)
//!    standard errors of the difference, `3 × √(se_old² + se_new²)` (and by more than the
//!    histogram grid's resolution: each quantile may be off by the grid's relative bound,
//!    1.44 % at standard precision).
//! 2. **By more than the tolerance**: the new value is worse than the old by more than
//!    `--max-regression` (10 % by default, relative to the old value) plus [`TOLERANCE_Z`] (2)
//!    standard errors. The tolerance is what may change without failing; this makes the
//!    comparison confident that the change is beyond it, so that a real slowdown of half the
//!    tolerance is not flagged when noise happens to inflate it.
//!
//! Each run's standard error is the larger of two estimates:
//!
//! - **from the histogram counts** (how far the quantile moves by chance with the same
//!   distribution): the rank of the `q` quantile among `n` requests has a binomial spread of
//!   `√(n·q·(1−q))`; the values at quantiles `q ± 3·√(q(1−q)/n)`, read from the histogram, bound
//!   a 3σ confidence interval of the quantile, and a sixth of its width is the standard error.
//!   This is the order-statistic confidence interval; it assumes nothing about the latency
//!   distribution. When the run has too few requests for the interval to fit in the sample
//!   (`n < 9·q/(1−q)`: fewer than 9 for p50, 171 for p95, 891 for p99, see [`min_count`]), the
//!   quantile is close to the largest value and its spread cannot be known: the figure is shown
//!   but not judged;
//! - **from the timeline** (how much the run moved over time, which the counts alone miss:
//!   garbage collection, a noisy neighbour, periodic jobs): the standard deviation of the
//!   quantile across the run's ~1 s windows divided by `√windows`, the standard error of the
//!   mean of the windows' quantiles. Windows with fewer than [`MIN_WINDOW_COUNT`] requests are
//!   left out; at least [`MIN_WINDOWS`] windows are needed.
//!
//! The error ratio is judged the same way, as a two-proportion test: each run's binomial
//! standard error `√(p(1−p)/n)` at the ratio `p` of both runs pooled, or the spread of the
//! windows' error ratios when errors came in bursts (the larger). A rise from 0 errors to a
//! handful in a large run is within noise; from 0 to 1 % of 10,000 requests is not. The rate
//! (completed requests per second) regresses when it falls; its standard error is the larger of
//! the Poisson one (`√count / duration`) and the windows' spread. The rate is not judged when
//! the two runs had different targets, models or users, or when the generator of either run was
//! saturated (its rate was then the machine's limit, not the server's).
//!
//! A figure beyond the tolerance that fails these tests is shown as `noise` and does not fail
//! the comparison; one better by the same standard is shown as `improved`. The verdict is
//! `regressed` (exit 1) when any figure regressed. On synthetic runs (lognormal latencies,
//! ~1 s windows, 60 seeds, `tests/compare.rs`), two runs of one server are never flagged, a
//! 5 % slowdown with a 10 % tolerance at most rarely, and a 30 % slowdown is found in at least
//! 57 of 60 runs of only 500 requests (every time with 30,000).
//!
//! What this does not cover: a difference between the two runs' conditions that is steady over
//! each run (another machine, another build of the generator, a cold cache) looks like a real
//! change, because it is one. Run the baseline and the candidate on the same machine, with the
//! same flags and a warm-up; for the strongest verdict, repeat each run and merge the repeats
//! (`sonde-load merge`) so that both sides carry more requests and more windows.
//!
//! # Merging
//!
//! [`merge`] combines runs made side by side on several machines: requests are matched by name,
//! their histograms are merged exactly (so the merged p99 is the p99 of every request of every
//! run, within the grid's bound, not an average of p99s), counts, errors and statuses are summed,
//! rates are summed, and timelines are combined by window start (relative to each run's start;
//! a merged window's quantiles are the count-weighted mean of the runs' window quantiles, good
//! for a chart, while the run's overall quantiles stay exact).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use sonde_core::HistogramPoint;

use crate::report::{format_percent, format_rate, format_seconds};
use crate::result::{
    ErrorCounts, GeneratorStats, Quantiles, RequestStats, ResultError, RunResult, ServerView,
    Window,
};

/// Standard errors a difference must exceed to count (about 1 in 740 one-sided for a normal
/// statistic: with 5 figures per request, identical runs rarely show a false regression).
pub const NOISE_Z: f64 = 3.0;
/// Standard errors by which a figure must exceed the tolerance to count (about 1 in 44
/// one-sided: a real slowdown of exactly the tolerance is flagged about half the time at most,
/// one of half the tolerance almost never).
pub const TOLERANCE_Z: f64 = 2.0;
/// Windows with fewer requests than this are left out of the timeline's spread.
pub const MIN_WINDOW_COUNT: u64 = 10;
/// The timeline's spread is used only with at least this many windows.
pub const MIN_WINDOWS: usize = 3;

/// How strict a comparison is: `--max-regression` of `compare` and of `run --baseline`.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct CompareOptions {
    /// The largest tolerated slowdown of p50/p95/p99 or rise of the error ratio against the
    /// baseline (`10%`, or the ratio 0.1).
    #[arg(long, default_value = "10%", value_parser = crate::cli::parse_percent)]
    pub max_regression: f64,
}

/// A figure compared between two runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Metric {
    /// A latency quantile (0.5, 0.95, 0.99).
    Quantile(f64),
    /// Failed requests over all requests.
    Errors,
    /// Completed requests per second.
    Rate,
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Metric::Quantile(q) => write!(f, "p{}", q * 100.0),
            Metric::Errors => f.write_str("errors"),
            Metric::Rate => f.write_str("rate"),
        }
    }
}

/// The verdict on one figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the tolerance.
    Ok,
    /// Moved beyond the tolerance, but within the runs' noise.
    Noise,
    /// Better beyond the tolerance and the noise.
    Improved,
    /// Worse beyond the tolerance and the noise.
    Regressed,
    /// Not comparable (missing on one side, no data, or different load); see the note.
    NotJudged,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Ok => "ok",
            Verdict::Noise => "noise",
            Verdict::Improved => "improved",
            Verdict::Regressed => "REGRESSED",
            Verdict::NotJudged => "n/a",
        })
    }
}

/// One figure of one request, old against new.
#[derive(Debug, Clone, PartialEq)]
pub struct Delta {
    /// What is compared.
    pub metric: Metric,
    /// The baseline's value (seconds, ratio or requests per second).
    pub old: Option<f64>,
    /// The new run's value.
    pub new: Option<f64>,
    /// `(new − old) / old` (`None` when the old value is 0 or either is missing).
    pub change: Option<f64>,
    /// The smallest difference that is beyond noise, in the figure's unit.
    pub noise: Option<f64>,
    /// The verdict.
    pub verdict: Verdict,
    /// Why a figure was not judged.
    pub note: Option<String>,
}

/// All figures of one request name (or `total`).
#[derive(Debug, Clone, PartialEq)]
pub struct RowComparison {
    /// The request name, or `total`.
    pub name: String,
    /// p50, p95, p99, errors, rate.
    pub deltas: Vec<Delta>,
}

impl RowComparison {
    /// The row's verdict: regressed if any figure regressed, else improved if any improved,
    /// else noise if any moved within noise, else ok (n/a when nothing was judged).
    pub fn verdict(&self) -> Verdict {
        let any = |v: Verdict| self.deltas.iter().any(|d| d.verdict == v);
        [
            Verdict::Regressed,
            Verdict::Improved,
            Verdict::Noise,
            Verdict::Ok,
        ]
        .into_iter()
        .find(|v| any(*v))
        .unwrap_or(Verdict::NotJudged)
    }
}

/// The outcome of comparing two runs.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// True when a regression beyond the tolerance (and beyond noise) was found.
    pub regressed: bool,
    /// The tolerance used.
    pub max_regression: f64,
    /// Per request (sorted by name), then `total`.
    pub rows: Vec<RowComparison>,
    /// Things to know when reading the rows (different loads, saturated generator, ...).
    pub notes: Vec<String>,
}

impl Comparison {
    /// How many figures regressed.
    pub fn regressions(&self) -> usize {
        self.rows
            .iter()
            .flat_map(|r| &r.deltas)
            .filter(|d| d.verdict == Verdict::Regressed)
            .count()
    }

    /// The one-line verdict.
    pub fn verdict_line(&self) -> String {
        let n = self.regressions();
        if n == 0 {
            format!(
                "no regression beyond {} and the runs' noise",
                format_percent(self.max_regression)
            )
        } else {
            format!(
                "REGRESSED: {n} figure{} worse by more than {} and beyond the runs' noise",
                if n == 1 { "" } else { "s" },
                format_percent(self.max_regression)
            )
        }
    }
}

/// A figure in its unit, for tables.
pub fn format_value(metric: Metric, v: Option<f64>) -> String {
    match v {
        None => "-".to_owned(),
        Some(v) => match metric {
            Metric::Quantile(_) => format_seconds(v),
            Metric::Errors => format_percent(v),
            Metric::Rate => format_rate(v),
        },
    }
}

/// The change column: relative for latencies and rates, percentage points for errors.
pub fn format_change(d: &Delta) -> String {
    match (d.metric, d.old, d.new, d.change) {
        (Metric::Errors, Some(o), Some(n), _) => format!("{:+.2} pp", (n - o) * 100.0),
        (_, _, _, Some(c)) => format!("{:+.1}%", c * 100.0),
        _ => "-".to_owned(),
    }
}

/// The noise column (`±` the smallest difference beyond noise).
pub fn format_noise(d: &Delta) -> String {
    match d.noise {
        None => "-".to_owned(),
        Some(n) => match d.metric {
            Metric::Errors => format!("±{:.2} pp", n * 100.0),
            m => format!("±{}", format_value(m, Some(n))),
        },
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "\ncomparison with the baseline: a figure regresses when worse by more than the noise ({NOISE_Z}σ, from each run's histograms and timeline) and by more than the tolerance ({}) plus {TOLERANCE_Z}σ",
            format_percent(self.max_regression)
        )?;
        let width = self
            .rows
            .iter()
            .map(|r| r.name.chars().count())
            .max()
            .unwrap_or(0)
            .clamp(7, 40);
        writeln!(
            f,
            "{:<width$}  {:<6} {:>10} {:>10} {:>9} {:>11}  verdict",
            "request", "figure", "old", "new", "change", "noise"
        )?;
        for row in &self.rows {
            for (i, d) in row.deltas.iter().enumerate() {
                let name = if i == 0 {
                    crate::report::clip(&row.name, width)
                } else {
                    String::new()
                };
                write!(
                    f,
                    "{:<width$}  {:<6} {:>10} {:>10} {:>9} {:>11}  {}",
                    name,
                    d.metric.to_string(),
                    format_value(d.metric, d.old),
                    format_value(d.metric, d.new),
                    format_change(d),
                    format_noise(d),
                    d.verdict
                )?;
                if let Some(n) = &d.note {
                    write!(f, " ({n})")?;
                }
                writeln!(f)?;
            }
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        writeln!(f, "{}", self.verdict_line())
    }
}

/// Where the named baseline is stored.
pub fn baseline_path(dir: &Path, name: &str) -> PathBuf {
    // A name is a file name, never a path out of the directory.
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let safe = safe.trim_start_matches('.');
    dir.join(format!(
        "{}.json",
        if safe.is_empty() { "baseline" } else { safe }
    ))
}

/// What the noise estimate needs from one run's figures.
struct Side<'a> {
    stats: &'a RequestStats,
    point: Option<HistogramPoint>,
    duration: f64,
}

impl<'a> Side<'a> {
    fn new(stats: &'a RequestStats, duration: f64) -> Self {
        Side {
            stats,
            point: stats.latency.to_point().ok(),
            duration,
        }
    }

    fn quantile(&self, q: f64) -> Option<f64> {
        self.point.as_ref()?.quantile(q)
    }

    /// The standard error of the `q` quantile: the larger of the histogram's order-statistic
    /// estimate and the timeline's spread.
    fn quantile_se(&self, q: f64) -> f64 {
        let Some(p) = &self.point else {
            return 0.0;
        };
        let n = p.count() as f64;
        let from_counts = if n > 0.0 {
            let d = NOISE_Z * (q * (1.0 - q) / n).sqrt();
            match (p.quantile((q - d).max(0.0)), p.quantile((q + d).min(1.0))) {
                (Some(lo), Some(hi)) => (hi - lo).max(0.0) / (2.0 * NOISE_Z),
                _ => 0.0,
            }
        } else {
            0.0
        };
        self.with_window_spread(from_counts, |w| {
            (w.count >= MIN_WINDOW_COUNT)
                .then(|| window_quantile(w, q))
                .flatten()
        })
    }

    fn errors_se(&self, pooled: f64) -> f64 {
        let n = self.stats.count as f64;
        let binomial = if n > 0.0 {
            (pooled * (1.0 - pooled) / n).sqrt()
        } else {
            0.0
        };
        self.with_window_spread(binomial, |w| {
            (w.count >= MIN_WINDOW_COUNT).then(|| w.errors as f64 / w.count as f64)
        })
    }

    fn rate_se(&self) -> f64 {
        let poisson = if self.duration > 0.0 {
            (self.stats.count as f64).sqrt() / self.duration
        } else {
            0.0
        };
        self.with_window_spread(poisson, |w| {
            (w.seconds > 0.0).then(|| w.count as f64 / w.seconds)
        })
    }

    /// The larger of `model` (a standard error from the counts alone) and the standard error
    /// of `figure` across the timeline's windows (those it gives none for left out).
    fn with_window_spread(&self, model: f64, figure: impl FnMut(&Window) -> Option<f64>) -> f64 {
        let windows: Vec<f64> = self.stats.timeline.iter().filter_map(figure).collect();
        model.max(standard_error(&windows))
    }
}

/// The fewest requests whose `q` quantile has a [`NOISE_Z`]σ upper confidence bound inside the
/// sample: the rank `n·q + Z·√(n·q·(1−q))` must stay within `n`, so `n ≥ Z²·q / (1−q)` (9 for
/// p50, 171 for p95, 891 for p99). With fewer, the quantile is the largest value or near it,
/// whose spread the run cannot tell.
pub fn min_count(q: f64) -> u64 {
    if q >= 1.0 {
        return u64::MAX;
    }
    // Less a hair: 9 × 0.99 / 0.01 is 891 in decimals, not quite in binary.
    (NOISE_Z * NOISE_Z * q / (1.0 - q) - 1e-9).ceil().max(1.0) as u64
}

fn window_quantile(w: &Window, q: f64) -> Option<f64> {
    // The timeline keeps p50, p95 and p99; other quantiles use the nearest kept one.
    if q <= 0.7 {
        w.quantiles.p50
    } else if q <= 0.97 {
        w.quantiles.p95
    } else {
        w.quantiles.p99
    }
}

/// The standard error of the mean of `xs` (0 with fewer than [`MIN_WINDOWS`] values).
fn standard_error(xs: &[f64]) -> f64 {
    if xs.len() < MIN_WINDOWS {
        return 0.0;
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (var / n).sqrt()
}

/// The verdict of one figure where larger is worse (`worse_if_higher`) or better, given the
/// standard error `se` of the difference and a `floor` under which no difference counts.
/// Returns the relative change, the verdict and the noise bound (`NOISE_Z · se`, at least the
/// floor).
fn judge(
    old: f64,
    new: f64,
    se: f64,
    floor: f64,
    tolerance: f64,
    worse_if_higher: bool,
) -> (Option<f64>, Verdict, f64) {
    let change = (old != 0.0).then(|| (new - old) / old);
    let noise = (NOISE_Z * se).max(floor);
    // What the tolerance allows, in the figure's unit (from 0, any rise is beyond it).
    let allowed = tolerance * old.abs();
    let worse_by = if worse_if_higher {
        new - old
    } else {
        old - new
    };
    // Beyond noise, and beyond the tolerance by more than the noise allows.
    let confident = |by: f64| by > noise && by - allowed > TOLERANCE_Z * se;
    let verdict = if confident(worse_by) {
        Verdict::Regressed
    } else if confident(-worse_by) {
        Verdict::Improved
    } else if worse_by.abs() > allowed && (old != 0.0 || worse_by != 0.0) {
        Verdict::Noise
    } else {
        Verdict::Ok
    };
    (change, verdict, noise)
}

/// The [`Delta`] of `metric` between two measured figures, `(old, new)`, as [`judge`] sees it.
fn judged(
    metric: Metric,
    (old, new): (f64, f64),
    se: f64,
    floor: f64,
    tolerance: f64,
    worse_if_higher: bool,
) -> Delta {
    let (change, verdict, noise) = judge(old, new, se, floor, tolerance, worse_if_higher);
    Delta {
        metric,
        old: Some(old),
        new: Some(new),
        change,
        noise: Some(noise),
        verdict,
        note: None,
    }
}

fn not_judged(metric: Metric, old: Option<f64>, new: Option<f64>, note: &str) -> Delta {
    Delta {
        metric,
        old,
        new,
        change: match (old, new) {
            (Some(o), Some(n)) if o != 0.0 => Some((n - o) / o),
            _ => None,
        },
        noise: None,
        verdict: Verdict::NotJudged,
        note: Some(note.to_owned()),
    }
}

const QUANTILES: [f64; 3] = [0.5, 0.95, 0.99];

fn compare_row(
    name: &str,
    old: Option<Side<'_>>,
    new: Option<Side<'_>>,
    tolerance: f64,
    rate_note: Option<&str>,
) -> RowComparison {
    let mut deltas = Vec::new();
    let (old, new) = match (old, new) {
        (Some(o), Some(n)) => (o, n),
        (o, n) => {
            let note = if o.is_none() {
                "not in the baseline"
            } else {
                "not in the new run"
            };
            for q in QUANTILES {
                let m = Metric::Quantile(q);
                deltas.push(not_judged(
                    m,
                    o.as_ref().and_then(|s| s.quantile(q)),
                    n.as_ref().and_then(|s| s.quantile(q)),
                    note,
                ));
            }
            let e = |s: &Option<Side<'_>>| s.as_ref().map(|s| s.stats.error_ratio());
            deltas.push(not_judged(Metric::Errors, e(&o), e(&n), note));
            let r = |s: &Option<Side<'_>>| s.as_ref().map(|s| s.stats.rate);
            deltas.push(not_judged(Metric::Rate, r(&o), r(&n), note));
            return RowComparison {
                name: name.to_owned(),
                deltas,
            };
        }
    };
    for q in QUANTILES {
        let m = Metric::Quantile(q);
        let (a, b) = (old.quantile(q), new.quantile(q));
        let (Some(a), Some(b)) = (a, b) else {
            deltas.push(not_judged(m, a, b, "no latency recorded"));
            continue;
        };
        let fewest = old
            .stats
            .latency
            .parts
            .count
            .min(new.stats.latency.parts.count);
        let needed = min_count(q);
        if fewest < needed {
            deltas.push(not_judged(
                m,
                Some(a),
                Some(b),
                &format!(
                    "{fewest} requests cannot bound p{}: it needs {needed}",
                    q * 100.0
                ),
            ));
            continue;
        }
        let se = (old.quantile_se(q).powi(2) + new.quantile_se(q).powi(2)).sqrt();
        // The two quantiles may each be off by the grid's bound.
        let grid = old
            .point
            .as_ref()
            .map_or(0.0, |p| p.layout().config().precision.max_relative_error())
            * (a + b);
        deltas.push(judged(m, (a, b), se, grid, tolerance, true));
    }
    let (no, nn) = (old.stats.count, new.stats.count);
    if no == 0 || nn == 0 {
        deltas.push(not_judged(
            Metric::Errors,
            (no > 0).then(|| old.stats.error_ratio()),
            (nn > 0).then(|| new.stats.error_ratio()),
            "no requests on one side",
        ));
    } else {
        let (a, b) = (old.stats.error_ratio(), new.stats.error_ratio());
        let pooled = (old.stats.error_count() + new.stats.error_count()) as f64 / (no + nn) as f64;
        let se = (old.errors_se(pooled).powi(2) + new.errors_se(pooled).powi(2)).sqrt();
        deltas.push(judged(Metric::Errors, (a, b), se, 0.0, tolerance, true));
    }
    let (a, b) = (old.stats.rate, new.stats.rate);
    match rate_note {
        Some(why) => deltas.push(not_judged(Metric::Rate, Some(a), Some(b), why)),
        None => {
            let se = (old.rate_se().powi(2) + new.rate_se().powi(2)).sqrt();
            deltas.push(judged(Metric::Rate, (a, b), se, 0.0, tolerance, false));
        }
    }
    RowComparison {
        name: name.to_owned(),
        deltas,
    }
}

/// Why the rates of two runs cannot be compared, if they cannot.
fn rate_incomparable(old: &RunResult, new: &RunResult, notes: &mut Vec<String>) -> Option<String> {
    if old.model != new.model {
        notes.push(format!(
            "the baseline used the {} model and this run the {} model: latencies are not measured the same way (the closed model's wait for a free user hides queueing)",
            old.model, new.model
        ));
        return Some("different models".to_owned());
    }
    let differs = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() > 0.01 * a.abs().max(b.abs()),
        (None, None) => false,
        _ => true,
    };
    if differs(old.target_rate, new.target_rate) {
        notes.push(format!(
            "the target rates differ ({} then {}): rates are not judged, and latencies depend on the load",
            old.target_rate.map_or("-".to_owned(), format_rate),
            new.target_rate.map_or("-".to_owned(), format_rate)
        ));
        return Some("different targets".to_owned());
    }
    if old.users != new.users {
        notes.push(format!(
            "the numbers of users differ ({} then {}): rates are not judged, and latencies depend on the load",
            old.users.map_or("-".to_owned(), |u| u.to_string()),
            new.users.map_or("-".to_owned(), |u| u.to_string())
        ));
        return Some("different users".to_owned());
    }
    for (which, r) in [("baseline", old), ("new run", new)] {
        if r.generator.saturated {
            notes.push(format!(
                "the {which}'s generator could not keep up: its rate was this machine's limit, not the server's, so rates are not judged"
            ));
            return Some("generator saturated".to_owned());
        }
    }
    None
}

/// Compares `new` against `old`.
pub fn compare(old: &RunResult, new: &RunResult, opts: &CompareOptions) -> Comparison {
    let tolerance = if opts.max_regression.is_finite() {
        opts.max_regression.max(0.0)
    } else {
        f64::INFINITY
    };
    let mut notes = Vec::new();
    let rate_note = rate_incomparable(old, new, &mut notes);
    let mut names: Vec<&str> = old
        .requests
        .iter()
        .chain(&new.requests)
        .map(|r| r.name.as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    let mut rows = Vec::new();
    for name in names {
        let o = old
            .request(Some(name))
            .map(|s| Side::new(s, old.duration_seconds));
        let n = new
            .request(Some(name))
            .map(|s| Side::new(s, new.duration_seconds));
        rows.push(compare_row(name, o, n, tolerance, rate_note.as_deref()));
    }
    rows.push(compare_row(
        "total",
        Some(Side::new(&old.total, old.duration_seconds)),
        Some(Side::new(&new.total, new.duration_seconds)),
        tolerance,
        rate_note.as_deref(),
    ));
    let regressed = rows
        .iter()
        .flat_map(|r| &r.deltas)
        .any(|d| d.verdict == Verdict::Regressed);
    Comparison {
        regressed,
        max_regression: tolerance,
        rows,
        notes,
    }
}

/// Windows of several runs, combined by start.
fn merge_timelines<'a>(timelines: impl Iterator<Item = &'a [Window]>) -> Vec<Window> {
    // Keyed by the start in milliseconds: runs side by side cut windows at the same offsets.
    let mut by_start: BTreeMap<i64, Vec<&Window>> = BTreeMap::new();
    for t in timelines {
        for w in t {
            by_start
                .entry((w.start_seconds * 1000.0).round() as i64)
                .or_default()
                .push(w);
        }
    }
    by_start
        .into_values()
        .map(|ws| {
            // The `i`th kept quantile, weighted by each window's count.
            let weighted = |i: usize| {
                let (mut sum, mut n) = (0.0, 0u64);
                for w in &ws {
                    if let Some(v) = w.quantiles.to_array()[i] {
                        sum += v * w.count as f64;
                        n += w.count;
                    }
                }
                (n > 0).then(|| sum / n as f64)
            };
            Window {
                start_seconds: ws[0].start_seconds,
                seconds: ws.iter().map(|w| w.seconds).fold(0.0, f64::max),
                count: ws.iter().map(|w| w.count).sum(),
                errors: ws.iter().map(|w| w.errors).sum(),
                quantiles: Quantiles::from_array([0, 1, 2].map(weighted)),
                max: ws.iter().filter_map(|w| w.max).reduce(f64::max),
            }
        })
        .collect()
}

fn merge_stats(name: &str, parts: &[&RequestStats]) -> Result<RequestStats, ResultError> {
    let mut latency = parts[0].latency.clone();
    for p in &parts[1..] {
        latency = latency.merge(&p.latency).map_err(|e| {
            ResultError::Histogram(format!(
                "request {name:?}: {e} (the runs were recorded with different histogram settings)"
            ))
        })?;
    }
    let mut errors = ErrorCounts::default();
    let mut statuses = BTreeMap::new();
    for p in parts {
        errors.add(&p.errors);
        for (s, n) in &p.statuses {
            *statuses.entry(s.clone()).or_insert(0) += n;
        }
    }
    Ok(RequestStats {
        name: name.to_owned(),
        count: parts.iter().map(|p| p.count).sum(),
        ok: parts.iter().map(|p| p.ok).sum(),
        errors,
        statuses,
        rate: parts.iter().map(|p| p.rate).sum(),
        latency,
        timeline: merge_timelines(parts.iter().map(|p| p.timeline.as_slice())),
    })
}

/// Merges runs made side by side (on several machines at the same time) into one result: the
/// percentiles are those of all requests together; rates add up.
pub fn merge(results: &[(String, RunResult)]) -> Result<RunResult, ResultError> {
    let Some((first_name, first)) = results.first() else {
        return Err(ResultError::Format {
            path: "(none)".to_owned(),
            problem: "no result to merge".to_owned(),
        });
    };
    for (name, r) in results {
        if r.model != first.model {
            return Err(ResultError::Format {
                path: name.clone(),
                problem: format!(
                    "the {} model, while {first_name} used the {} model; merge runs of the same scenario",
                    r.model, first.model
                ),
            });
        }
    }
    let mut by_name: BTreeMap<&str, Vec<&RequestStats>> = BTreeMap::new();
    for (_, r) in results {
        for q in &r.requests {
            by_name.entry(q.name.as_str()).or_default().push(q);
        }
    }
    let requests = by_name
        .iter()
        .map(|(name, parts)| merge_stats(name, parts))
        .collect::<Result<Vec<_>, _>>()?;
    let totals: Vec<&RequestStats> = results.iter().map(|(_, r)| &r.total).collect();
    let total = merge_stats("total", &totals)?;
    let sum_opt = |f: fn(&RunResult) -> Option<f64>| {
        results
            .iter()
            .filter_map(|(_, r)| f(r))
            .reduce(|a, b| a + b)
    };
    let generator = GeneratorStats {
        late_requests: results.iter().map(|(_, r)| r.generator.late_requests).sum(),
        max_lag_seconds: results
            .iter()
            .map(|(_, r)| r.generator.max_lag_seconds)
            .fold(0.0, f64::max),
        saturated: results.iter().any(|(_, r)| r.generator.saturated),
        queued_requests: results
            .iter()
            .map(|(_, r)| r.generator.queued_requests)
            .sum(),
    };
    let mut servers = results
        .iter()
        .filter_map(|(n, r)| r.server.as_ref().map(|s| (n, s)));
    let server = servers.next().map(|(n, s)| {
        let mut s: ServerView = s.clone();
        let others = servers.count();
        if others > 0 {
            s.notes.push(format!(
                "the server view is {n}'s; {others} other run{} scraped too (a server's view of one window is not summed)",
                if others == 1 { "" } else { "s" }
            ));
        }
        s
    });
    Ok(RunResult {
        schema: crate::result::SCHEMA.to_owned(),
        tool_version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at_unix_ms: results
            .iter()
            .map(|(_, r)| r.started_at_unix_ms)
            .min()
            .unwrap_or(first.started_at_unix_ms),
        duration_seconds: results
            .iter()
            .map(|(_, r)| r.duration_seconds)
            .fold(0.0, f64::max),
        model: first.model.clone(),
        target_rate: sum_opt(|r| r.target_rate),
        users: results
            .iter()
            .filter_map(|(_, r)| r.users)
            .reduce(|a, b| a + b),
        achieved_rate: results.iter().map(|(_, r)| r.achieved_rate).sum(),
        generator,
        requests,
        total,
        thresholds: Vec::new(),
        server,
        merged_from: results.iter().map(|(n, _)| n.clone()).collect(),
        interrupted: results.iter().any(|(_, r)| r.interrupted),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judge_needs_both_tolerance_and_noise() {
        let v =
            |old, new, se, tol, worse_if_higher| judge(old, new, se, 0.0, tol, worse_if_higher).1;
        // 30 % slower, se 2 %: regressed.
        assert_eq!(v(1.0, 1.3, 0.02, 0.1, true), Verdict::Regressed);
        // 30 % slower but se 15 % (noise ±45 %): noise.
        assert_eq!(v(1.0, 1.3, 0.15, 0.1, true), Verdict::Noise);
        // 5 % slower, far beyond the noise but within the tolerance: ok.
        assert_eq!(v(1.0, 1.05, 0.001, 0.1, true), Verdict::Ok);
        // 12 % slower, beyond 3σ (se 3 %) but not beyond the tolerance by 2σ: noise.
        assert_eq!(v(1.0, 1.12, 0.03, 0.1, true), Verdict::Noise);
        assert_eq!(v(1.0, 1.12, 0.005, 0.1, true), Verdict::Regressed);
        // A rate that falls is worse; one that rises is better.
        assert_eq!(v(100.0, 50.0, 2.0, 0.1, false), Verdict::Regressed);
        assert_eq!(v(100.0, 150.0, 2.0, 0.1, false), Verdict::Improved);
        // From 0 errors, any significant rise regresses.
        assert_eq!(v(0.0, 0.01, 0.002, 0.1, true), Verdict::Regressed);
        assert_eq!(v(0.0, 0.0, 0.0, 0.1, true), Verdict::Ok);
        // The floor (the grid's resolution) holds back what the statistics would pass.
        assert_eq!(judge(1.0, 1.3, 0.0, 0.5, 0.1, true).1, Verdict::Noise);
    }

    #[test]
    fn standard_error_of_the_mean() {
        assert_eq!(standard_error(&[1.0, 2.0]), 0.0);
        let se = standard_error(&[1.0, 2.0, 3.0, 4.0]);
        // sd = 1.291; / 2
        assert!((se - 0.6455).abs() < 1e-3, "{se}");
    }

    #[test]
    fn baseline_names_stay_in_their_directory() {
        let d = Path::new("/b");
        assert_eq!(baseline_path(d, "main"), PathBuf::from("/b/main.json"));
        assert_eq!(
            baseline_path(d, "../../etc/x"),
            PathBuf::from("/b/_.._etc_x.json")
        );
        assert_eq!(baseline_path(d, ""), PathBuf::from("/b/baseline.json"));
    }

    #[test]
    fn quantiles_need_enough_requests() {
        assert_eq!(min_count(0.5), 9);
        assert_eq!(min_count(0.95), 171);
        assert_eq!(min_count(0.99), 891);
        assert_eq!(min_count(0.0), 1);
    }
}
