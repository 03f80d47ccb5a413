//! The objectives, once read: what a file declares, with every number already checked.

use sonde_core::name::{prometheus_name, prometheus_sanitize};
use sonde_core::{Kind, Unit};

use crate::selector::Selector;

/// A decimal number kept exactly as written (`99.9`, `0.3`), so that budgets such as
/// `1 - 0.999` print as `0.001` and not `0.0010000000000000009`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decimal {
    /// The digits, without the decimal point.
    pub mantissa: u128,
    /// How many of them are after the decimal point.
    pub scale: u32,
}

impl Decimal {
    /// Parses `12`, `0.5`, `99.95` (no sign, no exponent).
    pub fn parse(s: &str) -> Option<Decimal> {
        let (int, frac) = s.split_once('.').unwrap_or((s, ""));
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        if !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit()) || frac.len() > 18 {
            return None;
        }
        if int.len() > 18 {
            return None;
        }
        let digits = format!("{int}{frac}");
        Some(Decimal {
            mantissa: digits.parse().ok()?,
            scale: frac.len() as u32,
        })
    }

    /// `self × 10^-places`.
    pub fn shift(self, places: u32) -> Decimal {
        Decimal {
            mantissa: self.mantissa,
            scale: self.scale + places,
        }
    }

    /// `self × k`.
    pub fn times(self, k: u128) -> Decimal {
        Decimal {
            mantissa: self.mantissa * k,
            scale: self.scale,
        }
    }

    /// `1 - self` when self ≤ 1.
    pub fn one_minus(self) -> Option<Decimal> {
        let one = 10u128.checked_pow(self.scale)?;
        Some(Decimal {
            mantissa: one.checked_sub(self.mantissa)?,
            scale: self.scale,
        })
    }

    /// Whether the number is zero.
    pub fn is_zero(self) -> bool {
        self.mantissa == 0
    }

    /// The nearest `f64`.
    pub fn to_f64(self) -> f64 {
        self.to_string().parse().unwrap_or(f64::NAN)
    }
}

impl std::fmt::Display for Decimal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let digits = self.mantissa.to_string();
        let scale = self.scale as usize;
        let (int, frac) = if digits.len() > scale {
            let (a, b) = digits.split_at(digits.len() - scale);
            (a.to_string(), b.to_string())
        } else {
            (
                "0".to_string(),
                format!("{}{digits}", "0".repeat(scale - digits.len())),
            )
        };
        let frac = frac.trim_end_matches('0');
        if frac.is_empty() {
            write!(f, "{int}")
        } else {
            write!(f, "{int}.{frac}")
        }
    }
}

/// A Prometheus duration (`5m`, `30d`), as written and in seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// As written in the file and in the rules (`5m`).
    pub text: String,
    /// In seconds.
    pub seconds: u64,
}

/// The longest window or `for` accepted: a year (366 days). Longer ones are no use to
/// Prometheus (it keeps 15 days by default) and would overflow the generator's arithmetic.
pub const MAX_WINDOW_SECONDS: u64 = 366 * 86_400;

impl Window {
    /// Parses `<whole number><s|m|h|d|w>`, above zero and at most
    /// [`MAX_WINDOW_SECONDS`].
    pub fn parse(s: &str) -> Option<Window> {
        let split = s.find(|c: char| !c.is_ascii_digit())?;
        let (n, unit) = s.split_at(split);
        let n: u64 = n.parse().ok()?;
        let k = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 604_800,
            _ => return None,
        };
        let seconds = n.checked_mul(k)?;
        (seconds > 0 && seconds <= MAX_WINDOW_SECONDS).then(|| Window {
            text: s.to_string(),
            seconds,
        })
    }

    /// A window of `seconds`, written the shortest way (`3600` → `1h`).
    pub fn from_seconds(seconds: u64) -> Window {
        let text = [(86_400, "d"), (3600, "h"), (60, "m")]
            .iter()
            .find(|(k, _)| seconds.is_multiple_of(*k))
            .map(|(k, u)| format!("{}{u}", seconds / k))
            .unwrap_or_else(|| format!("{seconds}s"));
        Window { text, seconds }
    }
}

/// A latency (`300ms`, `1.5s`), as written and in seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Latency {
    /// As written (`300ms`).
    pub text: String,
    /// In seconds, exactly (`0.3`).
    pub seconds: Decimal,
}

impl Latency {
    /// Parses `<decimal><us|ms|s|m>`.
    pub fn parse(s: &str) -> Option<Latency> {
        let split = s.find(|c: char| !c.is_ascii_digit() && c != '.')?;
        let (n, unit) = s.split_at(split);
        let n = Decimal::parse(n)?;
        let seconds = match unit {
            "us" | "µs" => n.shift(6),
            "ms" => n.shift(3),
            "s" => n,
            "m" => n.times(60),
            _ => return None,
        };
        (!seconds.is_zero()).then(|| Latency {
            text: s.to_string(),
            seconds,
        })
    }

    /// In seconds.
    pub fn as_f64(&self) -> f64 {
        self.seconds.to_f64()
    }

    /// The text of the `le` label of this boundary as sonde renders it (Rust's `{:?}` of the
    /// `f64`: `0.3`, `1.0`).
    pub fn le(&self) -> String {
        format!("{:?}", self.as_f64())
    }
}

/// A percentile (`p95`, `p99.9`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Percentile {
    /// As written (`p99.9`).
    pub text: String,
    /// As a quantile (`0.999`).
    pub quantile: Decimal,
}

impl Percentile {
    /// Parses `p<decimal>` with the decimal strictly between 0 and 100.
    pub fn parse(s: &str) -> Option<Percentile> {
        let d = Decimal::parse(s.strip_prefix('p')?)?;
        let q = d.shift(2);
        (!q.is_zero() && q.to_f64() < 1.0).then(|| Percentile {
            text: s.to_string(),
            quantile: q,
        })
    }

    /// The tag used in recording rule names: `p95`, `p99_9`.
    pub fn tag(&self) -> String {
        self.text.replace('.', "_")
    }
}

/// A target (`99.9%`): the share of good events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// As written (`99.9%`).
    pub text: String,
    /// As a fraction (`0.999`).
    pub fraction: Decimal,
    /// The error budget, `1 - fraction` (`0.001`).
    pub budget: Decimal,
}

impl Target {
    /// Parses `<decimal>%`, strictly between 0 % and 100 %.
    pub fn parse(s: &str) -> Option<Target> {
        let d = Decimal::parse(s.strip_suffix('%')?.trim_end())?;
        let fraction = d.shift(2);
        let budget = fraction.one_minus()?;
        (!fraction.is_zero() && !budget.is_zero()).then(|| Target {
            text: s.to_string(),
            fraction,
            budget,
        })
    }
}

/// A minimum traffic (`1/min`): below it an alert does not fire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinTraffic {
    /// As written (`1/min`).
    pub text: String,
    /// Events.
    pub events: Decimal,
    /// Per this many seconds.
    pub per_seconds: u64,
}

impl MinTraffic {
    /// Parses `<decimal>/<s|min|h>`.
    pub fn parse(s: &str) -> Option<MinTraffic> {
        let (n, unit) = s.split_once('/')?;
        let events = Decimal::parse(n.trim())?;
        let per_seconds = match unit.trim() {
            "s" => 1,
            "min" => 60,
            "h" => 3600,
            _ => return None,
        };
        Some(MinTraffic {
            text: s.to_string(),
            events,
            per_seconds,
        })
    }

    /// The floor in events per second, as a PromQL expression (`1/60`, `0.1`).
    pub fn promql(&self) -> String {
        let per = u128::from(self.per_seconds);
        for k in 0..=6u32 {
            let m = self.events.mantissa * 10u128.pow(k);
            if m.is_multiple_of(per) {
                return Decimal {
                    mantissa: m / per,
                    scale: self.events.scale + k,
                }
                .to_string();
            }
        }
        format!("{}/{}", self.events, self.per_seconds)
    }

    /// The floor in events per second.
    pub fn per_second(&self) -> f64 {
        self.events.to_f64() / self.per_seconds as f64
    }
}

/// An alert's severity label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Pages someone.
    Critical,
    /// Opens a ticket.
    Warning,
    /// For dashboards and chat.
    Info,
}

impl Severity {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// Where events are counted: a counter, or a histogram's observations.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceKind {
    /// A counter: its `_total` samples.
    Counter,
    /// A histogram: its `_count` samples, or its `_bucket{le}` samples with `le`.
    Histogram {
        /// The histogram's unit (its Prometheus name's suffix); seconds by default.
        unit: Unit,
    },
}

/// Events: a metric, a label selector, and for a histogram optionally a bucket boundary (only
/// the observations at most `le` count).
#[derive(Debug, Clone, PartialEq)]
pub struct Events {
    /// Counter or histogram.
    pub kind: SourceKind,
    /// The OpenTelemetry metric name (`http.server.request.duration`).
    pub metric: String,
    /// Which series count (for `good`/`bad`: the total's selector and its own).
    pub selector: Selector,
    /// Only observations at most this (histograms only).
    pub le: Option<Latency>,
}

impl Events {
    /// The Prometheus family name (`http_server_request_duration_seconds`, `cache_requests`).
    pub fn family(&self) -> String {
        match &self.kind {
            SourceKind::Counter => prometheus_name(&self.metric, Kind::Counter, &Unit::None),
            SourceKind::Histogram { unit } => prometheus_name(&self.metric, Kind::Histogram, unit),
        }
    }

    /// The Prometheus series name of these events (`..._count`, `..._bucket`, `..._total`).
    pub fn series_name(&self) -> String {
        let family = self.family();
        match (&self.kind, &self.le) {
            (SourceKind::Counter, _) => format!("{family}_total"),
            (SourceKind::Histogram { .. }, None) => format!("{family}_count"),
            (SourceKind::Histogram { .. }, Some(_)) => format!("{family}_bucket"),
        }
    }

    /// The PromQL vector selector (`name{matchers}`), `le` included.
    pub fn promql(&self) -> String {
        let mut matchers = self.selector.promql_matchers();
        if let Some(le) = &self.le {
            matchers.push(format!("le=\"{}\"", le.le()));
        }
        format!("{}{{{}}}", self.series_name(), matchers.join(", "))
    }
}

/// Which events a ratio objective names besides the total.
#[derive(Debug, Clone, PartialEq)]
pub enum Subset {
    /// The good events: the error ratio is `1 - good / total`.
    Good(Events),
    /// The bad events: the error ratio is `bad / total`.
    Bad(Events),
}

/// Labels always kept in the rules: the scrape job.
pub const ALWAYS_BY: &[&str] = &["job"];

/// Target labels Prometheus adds at scrape time, not found in a `/metrics` page.
pub const TARGET_LABELS: &[&str] = &["job", "instance"];

/// The Prometheus name of a label (`http.route` → `http_route`).
pub fn prometheus_label(label: &str) -> String {
    let mut out = String::new();
    prometheus_sanitize(label, false, &mut out);
    out
}

/// What every objective has.
#[derive(Debug, Clone, PartialEq)]
pub struct Common {
    /// The objective's name, the key of its table (`api-latency-p95`).
    pub name: String,
    /// What it is about, in words (`API requests`).
    pub description: String,
    /// Labels the SLI is computed per (`job` first, then the `by` key's).
    pub by: Vec<String>,
    /// Below this traffic the alerts stay silent.
    pub min_traffic: MinTraffic,
    /// `file:line:column` of the objective's table, for messages.
    pub location: String,
}

impl Common {
    /// `by` as Prometheus label names, comma-separated.
    pub fn by_promql(&self) -> String {
        self.by
            .iter()
            .map(|l| prometheus_label(l))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A threshold objective: a percentile of a latency histogram stays below a threshold over a
/// window (`http.server.request.duration{http.route!="/health"} p95 < 300ms over 5m`).
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    /// Name, description, grouping, traffic floor.
    pub common: Common,
    /// The histogram (OpenTelemetry name, in seconds).
    pub metric: String,
    /// Which series.
    pub selector: Selector,
    /// Which percentile.
    pub percentile: Percentile,
    /// The percentile stays below this.
    pub threshold: Latency,
    /// Over this window.
    pub window: Window,
    /// For this long before the alert fires.
    pub for_: Window,
    /// The alert's severity.
    pub severity: Severity,
    /// The alert's name.
    pub alert: String,
    /// The alert's runbook link.
    pub runbook_url: String,
}

impl Threshold {
    /// The histogram's Prometheus family name.
    pub fn family(&self) -> String {
        prometheus_name(&self.metric, Kind::Histogram, &Unit::Seconds)
    }
}

/// A ratio objective: good events over total events meet a target over a compliance window,
/// alerted on with multi-window multi-burn-rate alerts.
#[derive(Debug, Clone, PartialEq)]
pub struct Ratio {
    /// Name, description, grouping, traffic floor.
    pub common: Common,
    /// All events.
    pub total: Events,
    /// The good or the bad ones.
    pub subset: Subset,
    /// The share of good events to reach.
    pub target: Target,
    /// The compliance window (`30d`).
    pub window: Window,
    /// The page alert's name (`...BudgetBurnFast`).
    pub alert_page: String,
    /// The ticket alert's name (`...BudgetBurnSlow`).
    pub alert_ticket: String,
    /// Runbook link of the page alert.
    pub runbook_page: String,
    /// Runbook link of the ticket alert.
    pub runbook_ticket: String,
}

/// One pair of windows of a multi-window multi-burn-rate alert.
#[derive(Debug, Clone, PartialEq)]
pub struct BurnPair {
    /// The long window (`1h`).
    pub long: Window,
    /// The short window (`5m`).
    pub short: Window,
    /// The burn rate both must exceed.
    pub factor: f64,
}

impl BurnPair {
    /// The factor as written in the rules (`14.4`).
    pub fn factor_text(&self) -> String {
        format!("{}", (self.factor * 10_000.0).round() / 10_000.0)
    }

    /// `pairs` as one line for an alert or a panel: `1h and 5m above 14.4, or 6h and 30m
    /// above 6`.
    pub fn describe(pairs: &[BurnPair]) -> String {
        pairs
            .iter()
            .map(|p| {
                format!(
                    "{} and {} above {}",
                    p.long.text,
                    p.short.text,
                    p.factor_text()
                )
            })
            .collect::<Vec<_>>()
            .join(", or ")
    }
}

/// The Google SRE workbook's pairs, as (long, short, share of the budget spent when the
/// long window burns at the factor): page on 2 % in 1 h or 5 % in 6 h, ticket on 10 % in
/// 1 d or 10 % in 3 d.
const PAGE: [(u64, u64, f64); 2] = [(3600, 300, 0.02), (21_600, 1800, 0.05)];
const TICKET: [(u64, u64, f64); 2] = [(86_400, 7200, 0.10), (259_200, 21_600, 0.10)];

impl Ratio {
    /// The budget as a fraction (`0.001`).
    pub fn budget(&self) -> f64 {
        self.target.budget.to_f64()
    }

    fn pairs(&self, table: &[(u64, u64, f64)]) -> Vec<BurnPair> {
        table
            .iter()
            .map(|&(long, short, share)| BurnPair {
                long: Window::from_seconds(long),
                short: Window::from_seconds(short),
                // 30 days: 14.4, 6, 3, 1 (the workbook's); scaled for other windows, never
                // below 1 (a burn rate of 1 or less never spends the budget).
                factor: (share * self.window.seconds as f64 / long as f64).max(1.0),
            })
            .collect()
    }

    /// The page pairs (1h/5m, 6h/30m) whose error ratio threshold is below 1: with a large
    /// budget (a 70 % target) a burn rate of 14.4 is an error ratio above 100 % and can never
    /// happen, so that pair is left out.
    pub fn page_pairs(&self) -> Vec<BurnPair> {
        self.pairs_that_can_fire(&[&PAGE], true)
    }

    /// The ticket pairs (1d/2h, 3d/6h) that can happen (see [`Ratio::page_pairs`]).
    pub fn ticket_pairs(&self) -> Vec<BurnPair> {
        self.pairs_that_can_fire(&[&TICKET], true)
    }

    /// The pairs that can never fire, for warnings.
    pub fn impossible_pairs(&self) -> Vec<BurnPair> {
        self.pairs_that_can_fire(&[&PAGE, &TICKET], false)
    }

    /// The pairs of `tables` that can fire (`can`), or those that never can: an error ratio
    /// of `factor` × budget must stay below 1.
    fn pairs_that_can_fire(&self, tables: &[&[(u64, u64, f64)]], can: bool) -> Vec<BurnPair> {
        let b = self.budget();
        tables
            .iter()
            .flat_map(|t| self.pairs(t))
            // `>= 1.0` for "never": a NaN budget then leaves out no pair, as it always did.
            .filter(|p| {
                if can {
                    p.factor * b < 1.0
                } else {
                    p.factor * b >= 1.0
                }
            })
            .collect()
    }

    /// Every window an SLI is recorded over, short to long.
    pub fn sli_windows(&self) -> Vec<Window> {
        let mut w: Vec<Window> = self
            .page_pairs()
            .into_iter()
            .chain(self.ticket_pairs())
            .flat_map(|p| [p.long, p.short])
            .collect();
        w.sort_by_key(|w| w.seconds);
        w.dedup();
        if !w.iter().any(|w| w.seconds == 3600) {
            // The traffic guard's window.
            w.push(Window::from_seconds(3600));
            w.sort_by_key(|w| w.seconds);
        }
        w
    }
}

/// A whole objectives file.
#[derive(Debug, Clone, PartialEq)]
pub struct Objectives {
    /// The file's name, as given (for messages and the generated files' headers).
    pub origin: String,
    /// Threshold objectives, in file order.
    pub thresholds: Vec<Threshold>,
    /// Ratio objectives, in file order.
    pub ratios: Vec<Ratio>,
}

impl Objectives {
    /// The latency thresholds that must be bucket boundaries of their histograms for the rules
    /// to be exact: every ratio objective's `le`, and every threshold objective's threshold
    /// (then `histogram_quantile(...) > threshold` holds exactly when fewer than the
    /// percentile's share of the observations are at most the threshold). As (OpenTelemetry
    /// metric name, boundary in the histogram's unit), sorted, without duplicates.
    pub fn required_buckets(&self) -> Vec<(String, f64)> {
        let mut out: Vec<(String, f64)> = self
            .thresholds
            .iter()
            .map(|t| (t.metric.clone(), t.threshold.as_f64()))
            .chain(self.ratios.iter().filter_map(|r| match &r.subset {
                Subset::Good(e) | Subset::Bad(e) => {
                    e.le.as_ref().map(|le| (e.metric.clone(), le.as_f64()))
                }
            }))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        out.dedup();
        out
    }

    /// [`Objectives::required_buckets`] per histogram: (OpenTelemetry metric name, its
    /// boundaries in increasing order).
    pub fn bucket_boundaries(&self) -> Vec<(String, Vec<f64>)> {
        let mut out: Vec<(String, Vec<f64>)> = Vec::new();
        for (metric, bound) in self.required_buckets() {
            match out.last_mut() {
                Some((m, bounds)) if *m == metric => bounds.push(bound),
                _ => out.push((metric, vec![bound])),
            }
        }
        out
    }

    /// Adds every [`Objectives::bucket_boundaries`] to its histogram in `registry`
    /// ([`Registry::add_bucket_boundaries`](sonde_core::Registry::add_bucket_boundaries)), so
    /// the generated rules read exact buckets (`le="0.3"`) and `/report` counts fast requests
    /// exactly. Call it before any instrumentation registers those histograms. Every histogram
    /// is tried; those already registered without a boundary are all named in the error (the
    /// others got theirs), which the caller may report and go on: the rules reading a missing
    /// bucket then see no series, and `/report` estimates from sonde's grid.
    pub fn install_boundaries(&self, registry: &sonde_core::Registry) -> Result<(), crate::Error> {
        let mut late = Vec::new();
        for (metric, bounds) in self.bucket_boundaries() {
            if let Err(e) = registry.add_bucket_boundaries(&metric, &bounds) {
                late.push(format!("{}: {e}", self.origin));
            }
        }
        if late.is_empty() {
            Ok(())
        } else {
            Err(crate::Error::Boundaries(late))
        }
    }

    /// Warnings that do not make the file wrong: burn-rate pairs that can never fire.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for r in &self.ratios {
            for p in r.impossible_pairs() {
                out.push(format!(
                    "{}: ratio objective `{}`: the {}/{} burn-rate alert (burn rate {}) is left out: with a {} target it needs an error ratio of {:.0}% or more, which cannot happen; a higher target (smaller budget) or a longer window brings it back",
                    r.common.location,
                    r.common.name,
                    p.long.text,
                    p.short.text,
                    p.factor_text(),
                    r.target.text,
                    p.factor * r.budget() * 100.0
                ));
            }
        }
        out
    }
}
