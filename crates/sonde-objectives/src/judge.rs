//! Verdicts in `/report`: each objective judged in-process over the report's windows (met,
//! violated, no data), by a [`Judge`] given to
//! [`PrometheusBuilder::judge`](sonde_prometheus::PrometheusBuilder::judge). Behind the
//! `report` feature (on by default).
//!
//! The rules (also in sonde-prometheus's `ENDPOINTS.md`, section "Objectives"):
//!
//! - **threshold objective** (`p95 < 300ms over 5m`): the percentile of the matching series
//!   (metric and selector), merged per group of the objective's `by` labels, over the report's
//!   sliding window whose span is closest to the objective's window (ties: the longer; without
//!   sliding windows, since start). `violated` when the percentile is above the threshold,
//!   `met` when at most, `no_data` when the window holds no observation.
//! - **ratio objective** (`99.9%` over `30d`): the bad events over the total (or 1 − good over
//!   total) per group, over two windows: *since start* for the error budget, `remaining =
//!   1 − (bad ratio since start) / (1 − target)`, and the sliding window closest to the page
//!   alert's short window (5 minutes) for the current value and the burn rate `(bad ratio in
//!   it) / (1 − target)`. `violated` when the budget is spent (remaining below 0: the target
//!   is missed over the process's life, which restarting does not undo in Prometheus, so the
//!   verdict stays until then) or when the window burns faster than the page alert's burn rate
//!   (14.4 for 30 days; where the target makes that impossible, the ticket alert's), `no_data`
//!   when the window has no event (and the budget is not spent), else `met`.
//!
//! Good events `le` a latency are read exactly from the histogram's bucket at that boundary
//! ([`Objectives::install_boundaries`](crate::Objectives::install_boundaries) adds it before
//! the family registers); a histogram without that boundary is estimated from sonde's
//! histogram grid (within its precision) and the group says `"exact": false`. `instance` and
//! `job` do not exist in-process: grouping ignores them. A label a series lacks counts as
//! empty, as in PromQL. No input panics: NaN, empty histograms and missing families give
//! `no_data` or `null`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use sonde_core::{FamilySnapshot, HistogramPoint, Point};
use sonde_prometheus::{Judge, Window};

use crate::model::{Events, Objectives, Ratio, SourceKind, Subset, TARGET_LABELS, Threshold};

/// The page alert's short window: a ratio objective's current value and burn rate are read
/// over the report window closest to it.
pub const SHORT_WINDOW: Duration = Duration::from_secs(300);

/// Judges an objectives file on every `/report`.
///
/// ```
/// use std::sync::Arc;
/// let objectives = sonde_objectives::parse("objectives.toml", r#"
/// [threshold.api-latency-p95]
/// metric = "http.server.request.duration"
/// percentile = "p95"
/// threshold = "300ms"
/// window = "5m"
/// "#)?;
/// let registry = sonde_core::Registry::new();
/// objectives.install_boundaries(&registry)?;
/// let server = sonde_prometheus::PrometheusBuilder::new()
///     .registry(registry)
///     .bind("127.0.0.1:0".parse().unwrap())
///     .judge(Arc::new(sonde_objectives::judge::ObjectivesJudge::new(objectives)))
///     .install()
///     .map_err(|e| sonde_objectives::Error::Generate(e.to_string()))?;
/// sonde_core::Component::shutdown(&server, std::time::Duration::from_secs(5))
///     .map_err(|e| sonde_objectives::Error::Generate(e.to_string()))?;
/// # Ok::<(), sonde_objectives::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ObjectivesJudge {
    objectives: Objectives,
}

impl ObjectivesJudge {
    /// A judge of these objectives.
    pub fn new(objectives: Objectives) -> ObjectivesJudge {
        ObjectivesJudge { objectives }
    }

    /// The objectives judged.
    pub fn objectives(&self) -> &Objectives {
        &self.objectives
    }
}

impl Judge for ObjectivesJudge {
    fn judge(&self, windows: &[Window]) -> Value {
        judge(&self.objectives, windows)
    }
}

impl Objectives {
    /// A [`Judge`] of these objectives, for
    /// [`PrometheusBuilder::judge`](sonde_prometheus::PrometheusBuilder::judge).
    pub fn judge(&self) -> Arc<dyn Judge> {
        Arc::new(ObjectivesJudge::new(self.clone()))
    }
}

/// The verdicts of every objective over `windows` (sliding windows, then `since_start`), as
/// the JSON array `/report` serves under `objectives`: threshold objectives first, then ratio
/// objectives, each in file order.
pub fn judge(objectives: &Objectives, windows: &[Window]) -> Value {
    let mut out: Vec<Value> = objectives
        .thresholds
        .iter()
        .map(|t| threshold(t, windows))
        .collect();
    out.extend(objectives.ratios.iter().map(|r| ratio(r, windows)));
    Value::Array(out)
}

/// The sliding window whose span is closest to `span` (ties: the longer), or since start when
/// there is no sliding window.
fn closest(windows: &[Window], span: Duration) -> Option<&Window> {
    windows
        .iter()
        .filter_map(|w| w.span.map(|s| (w, s)))
        .min_by(|(_, a), (_, b)| a.abs_diff(span).cmp(&b.abs_diff(span)).then(b.cmp(a)))
        .map(|(w, _)| w)
        .or_else(|| since_start(windows))
}

fn since_start(windows: &[Window]) -> Option<&Window> {
    windows
        .iter()
        .rev()
        .find(|w| w.span.is_none())
        .or(windows.last())
}

/// The grouping labels that exist in-process (`by` without `job` and `instance`).
fn group_labels(by: &[String]) -> Vec<&str> {
    by.iter()
        .map(String::as_str)
        .filter(|l| !TARGET_LABELS.contains(l))
        .collect()
}

/// A series' group: its values of `by` (absent: empty), in `by`'s order.
fn group_of(pairs: &[(&str, &str)], by: &[&str]) -> Vec<String> {
    by.iter()
        .map(|l| {
            pairs
                .iter()
                .find(|(k, _)| k == l)
                .map(|(_, v)| (*v).to_owned())
                .unwrap_or_default()
        })
        .collect()
}

/// Leaves `groups` as they are unless there are none (no series yet): then one group without
/// labels and with no data, `fields` saying the rest.
fn no_data_unless_any(groups: &mut Vec<Value>, by: &[&str], fields: Value) {
    if !groups.is_empty() {
        return;
    }
    let mut group = json!({"labels": group_json(by, &[]), "verdict": "no_data"});
    if let (Some(g), Value::Object(fields)) = (group.as_object_mut(), fields) {
        g.extend(fields);
    }
    groups.push(group);
}

fn group_json(by: &[&str], key: &[String]) -> Value {
    Value::Object(
        by.iter()
            .zip(key)
            .map(|(k, v)| ((*k).to_owned(), Value::from(v.as_str())))
            .collect::<Map<_, _>>(),
    )
}

fn value_of<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> String + 'a {
    move |label: &str| {
        pairs
            .iter()
            .find(|(k, _)| *k == label)
            .map(|(_, v)| (*v).to_owned())
            .unwrap_or_default()
    }
}

/// `x` seconds in a histogram's unit (seconds unless it says milliseconds).
fn in_unit(seconds: f64, family: &FamilySnapshot) -> f64 {
    match family.meta.unit().ucum() {
        "ms" => seconds * 1e3,
        "us" => seconds * 1e6,
        _ => seconds,
    }
}

fn finite(v: f64) -> Value {
    if v.is_finite() {
        Value::from(v)
    } else {
        Value::Null
    }
}

/// How bad a verdict is, to pick an objective's verdict from its groups' (the worst).
fn rank(verdict: &str) -> u8 {
    match verdict {
        "violated" => 2,
        "met" => 1,
        _ => 0,
    }
}

/// The objective's verdict and the group it comes from: the worst verdict, then the highest
/// `severity` among those.
fn worst(groups: &[Value], severity: impl Fn(&Value) -> f64) -> Option<&Value> {
    groups.iter().max_by(|a, b| {
        let (ra, rb) = (
            rank(a["verdict"].as_str().unwrap_or_default()),
            rank(b["verdict"].as_str().unwrap_or_default()),
        );
        ra.cmp(&rb).then(severity(a).total_cmp(&severity(b)))
    })
}

fn threshold(t: &Threshold, windows: &[Window]) -> Value {
    let by = group_labels(&t.common.by);
    let window = closest(windows, Duration::from_secs(t.window.seconds));
    let q = t.percentile.quantile.to_f64();
    let mut merged: BTreeMap<Vec<String>, Option<HistogramPoint>> = BTreeMap::new();
    let mut unit = "s".to_owned();
    let mut limit = t.threshold.as_f64();
    if let Some(f) = window.and_then(|w| w.changes.family(&t.metric)) {
        unit = f.meta.unit().ucum().to_owned();
        limit = in_unit(limit, f);
        for s in &f.series {
            let Point::Histogram(h) = &s.point else {
                continue;
            };
            let pairs = f.labels(s);
            if h.count() == 0 || !t.selector.matches(&value_of(&pairs)) {
                continue;
            }
            let slot = merged.entry(group_of(&pairs, &by)).or_insert(None);
            *slot = match slot.take() {
                None => Some(h.clone()),
                // Series of one family share a layout; should merging fail, the group keeps
                // what it had rather than a wrong figure.
                Some(m) => Some(m.merge(h).unwrap_or(m)),
            };
        }
    }
    let mut groups: Vec<Value> = merged
        .iter()
        .map(|(key, h)| {
            let count = h.as_ref().map_or(0, HistogramPoint::count);
            let value = h
                .as_ref()
                .and_then(|h| h.quantile(q))
                .filter(|v| v.is_finite());
            let verdict = match value {
                None => "no_data",
                Some(v) if v > limit => "violated",
                Some(_) => "met",
            };
            json!({
                "labels": group_json(&by, key),
                "verdict": verdict,
                "value": value.map_or(Value::Null, finite),
                "events": count,
            })
        })
        .collect();
    no_data_unless_any(&mut groups, &by, json!({"value": Value::Null, "events": 0}));
    let top = worst(&groups, |g| {
        g["value"].as_f64().unwrap_or(f64::NEG_INFINITY)
    });
    json!({
        "name": t.common.name,
        "kind": "threshold",
        "description": t.common.description,
        "metric": t.metric,
        "percentile": t.percentile.text,
        "objective_window": t.window.text,
        "window": window.map(|w| w.name.as_str()),
        "covered_seconds": window.map(|w| w.covered.as_secs_f64()),
        "unit": unit,
        "target": finite(limit),
        "verdict": top.map_or(Value::from("no_data"), |g| g["verdict"].clone()),
        "value": top.map_or(Value::Null, |g| g["value"].clone()),
        "error_budget_remaining": Value::Null,
        "grouped": !by.is_empty(),
        "by": by,
        "groups": groups,
    })
}

/// Events counted per group in a window; `exact` is false when a bucket was estimated.
#[derive(Default)]
struct Counts {
    per_group: BTreeMap<Vec<String>, f64>,
    exact: bool,
}

/// The observations of `h` at most `le` (in the histogram's unit): exact at an explicit
/// boundary, otherwise estimated from the grid cells (linear within the cell holding `le`).
fn at_most(h: &HistogramPoint, le: f64) -> (f64, bool) {
    let exact = h
        .cumulative_buckets()
        .into_iter()
        .find(|(b, _)| (b - le).abs() <= le.abs() * 1e-9);
    if let Some((_, n)) = exact {
        return (n as f64, true);
    }
    let layout = h.layout();
    let mut n = 0.0;
    for (cell, c) in h.cells() {
        let (lo, hi) = layout.cell_bounds(cell);
        if hi <= le {
            n += c as f64;
        } else if lo < le && hi.is_finite() && lo.is_finite() && hi > lo {
            n += c as f64 * (le - lo) / (hi - lo);
        }
    }
    (n.min(h.count() as f64), false)
}

fn count(e: &Events, window: &Window, by: &[&str]) -> Counts {
    let mut out = Counts {
        per_group: BTreeMap::new(),
        exact: true,
    };
    let Some(f) = window.changes.family(&e.metric) else {
        return out;
    };
    for s in &f.series {
        let pairs = f.labels(s);
        if !e.selector.matches(&value_of(&pairs)) {
            continue;
        }
        let n = match (&e.kind, &s.point, &e.le) {
            (SourceKind::Counter, Point::Counter(n), _) => n.as_f64(),
            (SourceKind::Histogram { .. }, Point::Histogram(h), None) => h.count() as f64,
            (SourceKind::Histogram { .. }, Point::Histogram(h), Some(le)) => {
                let (n, exact) = at_most(h, in_unit(le.as_f64(), f));
                out.exact &= exact;
                n
            }
            _ => continue,
        };
        if n.is_finite() && n > 0.0 {
            *out.per_group.entry(group_of(&pairs, by)).or_default() += n;
        }
    }
    out
}

/// Bad events per group and totals per group, and whether every count was exact.
fn bad_and_total(r: &Ratio, window: &Window, by: &[&str]) -> (Counts, Counts) {
    let total = count(&r.total, window, by);
    let bad = match &r.subset {
        Subset::Bad(e) => count(e, window, by),
        Subset::Good(e) => {
            let good = count(e, window, by);
            Counts {
                per_group: total
                    .per_group
                    .iter()
                    .map(|(k, t)| {
                        let g = good.per_group.get(k).copied().unwrap_or(0.0);
                        (k.clone(), (t - g).max(0.0))
                    })
                    .collect(),
                exact: good.exact,
            }
        }
    };
    (bad, total)
}

/// The burn rate above which a ratio objective is violated now: the first page pair's
/// factor, or where the target makes every page pair impossible the first ticket pair's, or 1.
pub fn violation_burn_rate(r: &Ratio) -> f64 {
    r.page_pairs()
        .first()
        .or(r.ticket_pairs().first())
        .map_or(1.0, |p| p.factor)
}

fn ratio(r: &Ratio, windows: &[Window]) -> Value {
    let by = group_labels(&r.common.by);
    let budget = r.budget();
    let target = r.target.fraction.to_f64();
    let limit = violation_burn_rate(r);
    let short = closest(windows, SHORT_WINDOW);
    let start = since_start(windows);
    let empty = || (Counts::default(), Counts::default());
    let (bad_now, total_now) = short.map_or_else(empty, |w| bad_and_total(r, w, &by));
    let (bad_all, total_all) = start.map_or_else(empty, |w| bad_and_total(r, w, &by));
    let exact = short.is_none_or(|_| bad_now.exact) && start.is_none_or(|_| bad_all.exact);
    let mut keys: Vec<&Vec<String>> = total_all
        .per_group
        .keys()
        .chain(total_now.per_group.keys())
        .collect();
    keys.sort();
    keys.dedup();
    let mut groups: Vec<Value> = keys
        .into_iter()
        .map(|key| {
            let ratio = |bad: &Counts, total: &Counts| {
                let t = total.per_group.get(key).copied().unwrap_or(0.0);
                let b = bad.per_group.get(key).copied().unwrap_or(0.0).min(t);
                (t > 0.0).then(|| (b / t, t))
            };
            let now = ratio(&bad_now, &total_now);
            let all = ratio(&bad_all, &total_all);
            let remaining = all.map(|(b, _)| 1.0 - b / budget).filter(|v| v.is_finite());
            let burn = now.map(|(b, _)| b / budget).filter(|v| v.is_finite());
            let mut reasons = Vec::new();
            if remaining.is_some_and(|r| r < 0.0) {
                reasons.push("the error budget is spent (since start)".to_owned());
            }
            if let Some(b) = burn.filter(|b| *b > limit) {
                reasons.push(format!(
                    "the window burns the error budget {} times as fast as it lasts the compliance window, above {}",
                    fmt_factor(b),
                    fmt_factor(limit)
                ));
            }
            let verdict = if !reasons.is_empty() {
                "violated"
            } else if now.is_none() {
                reasons.push("no events in the window".to_owned());
                "no_data"
            } else {
                "met"
            };
            let reason = reasons.join("; ");
            json!({
                "labels": group_json(&by, key),
                "verdict": verdict,
                "reason": reason,
                "value": now.map_or(Value::Null, |(b, _)| finite(1.0 - b)),
                "events": now.map_or(0.0, |(_, t)| t),
                "burn_rate": burn.map_or(Value::Null, finite),
                "since_start": {
                    "value": all.map_or(Value::Null, |(b, _)| finite(1.0 - b)),
                    "events": all.map_or(0.0, |(_, t)| t),
                },
                "error_budget_remaining": remaining.map_or(Value::Null, finite),
                "exact": exact,
            })
        })
        .collect();
    no_data_unless_any(
        &mut groups,
        &by,
        json!({
            "reason": "no events since start",
            "value": Value::Null,
            "events": 0.0,
            "burn_rate": Value::Null,
            "since_start": { "value": Value::Null, "events": 0.0 },
            "error_budget_remaining": Value::Null,
            "exact": exact,
        }),
    );
    // The worst group: worst verdict, then the least budget left.
    let top = worst(&groups, |g| {
        -g["error_budget_remaining"]
            .as_f64()
            .unwrap_or(f64::INFINITY)
    });
    let field = |k: &str| top.map_or(Value::Null, |g| g[k].clone());
    json!({
        "name": r.common.name,
        "kind": "ratio",
        "description": r.common.description,
        "metric": r.total.metric,
        "objective_window": r.window.text,
        "window": short.map(|w| w.name.as_str()),
        "covered_seconds": short.map(|w| w.covered.as_secs_f64()),
        "unit": "1",
        "target": finite(target),
        "violation_burn_rate": finite(limit),
        "verdict": top.map_or(Value::from("no_data"), |g| g["verdict"].clone()),
        "reason": field("reason"),
        "value": field("value"),
        "burn_rate": field("burn_rate"),
        "error_budget_remaining": field("error_budget_remaining"),
        "grouped": !by.is_empty(),
        "by": by,
        "groups": groups,
    })
}

fn fmt_factor(f: f64) -> String {
    format!("{}", (f * 100.0).round() / 100.0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use sonde_core::testing::{labelled_counter, seconds_histogram};
    use sonde_core::{Registry, Snapshot};

    const LABELS: [&str; 3] = ["http.route", "http.response.status_code", "error.type"];

    fn objectives(text: &str) -> Objectives {
        crate::parse("objectives.toml", text).expect("valid objectives")
    }

    fn http(registry: &Registry) -> sonde_core::Family<sonde_core::Histogram> {
        seconds_histogram(registry, "http.server.request.duration", &LABELS)
    }

    /// `short` as the 5m window, `all` as since start.
    fn windows(short: Snapshot, all: Snapshot) -> Vec<Window> {
        vec![
            Window {
                name: "1m".into(),
                span: Some(Duration::from_secs(60)),
                covered: Duration::from_secs(60),
                changes: Snapshot::default(),
            },
            Window {
                name: "5m".into(),
                span: Some(Duration::from_secs(300)),
                covered: Duration::from_secs(300),
                changes: short,
            },
            Window {
                name: "since_start".into(),
                span: None,
                covered: Duration::from_secs(3600),
                changes: all,
            },
        ]
    }

    /// The verdicts on what `registry` holds now, as much in the 5m window as since start.
    fn judge_now(o: &Objectives, registry: &Registry) -> Value {
        let s = registry.snapshot();
        judge(o, &windows(s.clone(), s))
    }

    /// `n` successful requests to `/orders` that took `seconds`.
    fn orders(h: &sonde_core::Family<sonde_core::Histogram>, n: usize, seconds: f64) {
        for _ in 0..n {
            h.with(&["/orders", "200", ""]).observe(seconds);
        }
    }

    fn close(v: &Value, want: f64) -> bool {
        v.as_f64().is_some_and(|x| (x - want).abs() < 1e-9)
    }

    fn find<'a>(verdicts: &'a Value, name: &str) -> &'a Value {
        verdicts
            .as_array()
            .and_then(|a| a.iter().find(|o| o["name"] == name))
            .unwrap_or_else(|| panic!("no {name} in {verdicts}"))
    }

    const LATENCY: &str = r#"
[threshold.api-latency-p95]
metric = "http.server.request.duration"
selector = 'http.route!="/health"'
percentile = "p95"
threshold = "300ms"
window = "5m"
by = ["instance", "http.route"]
"#;

    #[test]
    fn a_threshold_objective_is_judged_per_group_over_the_closest_window() {
        let registry = Registry::new();
        let h = http(&registry);
        for _ in 0..100 {
            h.with(&["/orders", "200", ""]).observe(0.020);
            h.with(&["/users", "200", ""]).observe(0.450);
            // Excluded by the selector.
            h.with(&["/health", "200", ""]).observe(5.0);
        }
        let v = judge_now(&objectives(LATENCY), &registry);
        let o = find(&v, "api-latency-p95");
        assert_eq!(o["window"], "5m", "{o}");
        assert_eq!(o["verdict"], "violated", "{o}");
        assert_eq!(o["target"], 0.3, "{o}");
        assert_eq!(o["by"], json!(["http.route"]), "{o}");
        let groups = o["groups"].as_array().expect("groups");
        assert_eq!(groups.len(), 2, "{o}");
        let group = |route: &str| {
            groups
                .iter()
                .find(|g| g["labels"]["http.route"] == route)
                .unwrap_or_else(|| panic!("{route} in {o}"))
        };
        assert_eq!(group("/orders")["verdict"], "met");
        assert_eq!(group("/users")["verdict"], "violated");
        assert_eq!(group("/users")["events"], 100);
        // The objective's value is the violating group's.
        let value = o["value"].as_f64().expect("a value");
        assert!((value - 0.45).abs() / 0.45 < 0.02, "{o}");
    }

    #[test]
    fn nothing_in_the_window_is_no_data_and_odd_data_does_not_panic() {
        let registry = Registry::new();
        let h = http(&registry);
        // Observed NaN and infinities, a series without the route: nothing panics.
        h.with(&["", "200", ""]).observe(f64::NAN);
        h.with(&["", "200", ""]).observe(f64::INFINITY);
        let file = format!(
            "{LATENCY}\n[ratio.availability]\ntarget = \"99.9%\"\nwindow = \"30d\"\ntotal = {{ histogram = \"http.server.request.duration\" }}\nbad = {{ selector = 'error.type!=\"\"' }}\n[ratio.fast]\ntarget = \"95%\"\nwindow = \"30d\"\ntotal = {{ histogram = \"http.server.request.duration\" }}\ngood = {{ le = \"300ms\" }}\n"
        );
        let o = objectives(&file);
        for ws in [
            Vec::new(),
            windows(Snapshot::default(), Snapshot::default()),
            windows(registry.snapshot(), registry.snapshot()),
        ] {
            let v = judge(&o, &ws);
            for obj in v.as_array().expect("a list") {
                let verdict = obj["verdict"].as_str().expect("a verdict");
                assert!(["met", "violated", "no_data"].contains(&verdict), "{obj}");
            }
        }
        let v = judge(&o, &windows(Snapshot::default(), Snapshot::default()));
        assert_eq!(find(&v, "api-latency-p95")["verdict"], "no_data", "{v}");
        assert_eq!(find(&v, "availability")["verdict"], "no_data", "{v}");
        assert_eq!(find(&v, "availability")["value"], Value::Null, "{v}");
    }

    const FAST: &str = r#"
[ratio.api-fast-requests]
target = "95%"
window = "30d"
total = { histogram = "http.server.request.duration", selector = 'http.route!="/health"' }
good = { le = "300ms" }
"#;

    #[test]
    fn good_events_under_le_are_exact_at_an_installed_boundary() {
        let o = objectives(FAST);
        let registry = Registry::new();
        o.install_boundaries(&registry).expect("before the family");
        let h = http(&registry);
        assert!(
            h.config().explicit_bounds().contains(&0.3),
            "{:?}",
            h.config().explicit_bounds()
        );
        // 97 requests within 300 ms (one exactly at it), 3 above: 3 % bad of a 5 % budget.
        orders(&h, 96, 0.1);
        orders(&h, 1, 0.3);
        orders(&h, 3, 0.301);
        let v = judge_now(&o, &registry);
        let f = find(&v, "api-fast-requests");
        assert_eq!(f["verdict"], "met", "{f}");
        assert!(close(&f["value"], 0.97), "{f}");
        assert_eq!(f["groups"][0]["exact"], true, "{f}");
        let remaining = f["error_budget_remaining"].as_f64().expect("a budget");
        assert!((remaining - 0.4).abs() < 1e-9, "{f}");
        let burn = f["burn_rate"].as_f64().expect("a burn rate");
        assert!((burn - 0.6).abs() < 1e-9, "{f}");

        // Too late for a family already registered: reported, not a panic.
        let late = Registry::new();
        let h = http(&late);
        let e = o
            .install_boundaries(&late)
            .expect_err("registered without 0.3");
        assert!(
            e.to_string().contains("http.server.request.duration"),
            "{e}"
        );
        // The judge then estimates from the grid, and says so.
        orders(&h, 90, 0.1);
        orders(&h, 10, 0.9);
        let v = judge_now(&o, &late);
        let f = find(&v, "api-fast-requests");
        assert_eq!(f["groups"][0]["exact"], false, "{f}");
        assert!(close(&f["value"], 0.9), "{f}");
        assert_eq!(f["verdict"], "violated", "{f}");
    }

    const ERRORS: &str = r#"
[ratio.errors]
target = "99%"
window = "30d"
total = { histogram = "http.server.request.duration" }
bad = { selector = 'error.type!=""' }
by = ["http.route"]
"#;

    fn traffic(registry: &Registry, route: &str, ok: u32, failed: u32) {
        let h = http(registry);
        for _ in 0..ok {
            h.with(&[route, "200", ""]).observe(0.01);
        }
        for _ in 0..failed {
            h.with(&[route, "500", "500"]).observe(0.01);
        }
    }

    #[test]
    fn a_ratio_objective_is_violated_by_a_fast_burn_or_a_spent_budget() {
        let o = objectives(ERRORS);
        // Since start: /orders 0.5 % errors, /users none; the last 5 minutes: /orders burns
        // at 20 (20 % of its requests fail), /users is quiet.
        let all = Registry::new();
        traffic(&all, "/orders", 10_000 - 50, 50);
        traffic(&all, "/users", 1000, 0);
        let now = Registry::new();
        traffic(&now, "/orders", 80, 20);
        let v = judge(&o, &windows(now.snapshot(), all.snapshot()));
        let e = find(&v, "errors");
        assert_eq!(e["window"], "5m", "{e}");
        assert_eq!(e["violation_burn_rate"], 14.4, "{e}");
        assert_eq!(e["verdict"], "violated", "{e}");
        let group = |route: &str| {
            e["groups"]
                .as_array()
                .and_then(|g| g.iter().find(|g| g["labels"]["http.route"] == route))
                .cloned()
                .unwrap_or_else(|| panic!("{route} in {e}"))
        };
        let orders = group("/orders");
        assert_eq!(orders["verdict"], "violated", "{orders}");
        assert!((orders["burn_rate"].as_f64().expect("a rate") - 20.0).abs() < 1e-9);
        let remaining = orders["error_budget_remaining"].as_f64().expect("a budget");
        assert!((remaining - 0.5).abs() < 1e-9, "{orders}");
        // Quiet in the window, budget intact: no data.
        assert_eq!(group("/users")["verdict"], "no_data");

        // A burn below the page rate with budget left: met.
        let now = Registry::new();
        traffic(&now, "/orders", 95, 5);
        let v = judge(&o, &windows(now.snapshot(), all.snapshot()));
        assert_eq!(find(&v, "errors")["verdict"], "met", "{v}");

        // The budget spent since start: violated even with a quiet window.
        let spent = Registry::new();
        traffic(&spent, "/orders", 980, 20);
        let v = judge(&o, &windows(Snapshot::default(), spent.snapshot()));
        let e = find(&v, "errors");
        assert_eq!(e["verdict"], "violated", "{e}");
        assert!(close(&e["error_budget_remaining"], -1.0), "{e}");
        assert_eq!(
            e["reason"], "the error budget is spent (since start)",
            "{e}"
        );
    }

    #[test]
    fn a_target_too_low_for_the_page_rate_uses_the_ticket_rate() {
        let o = objectives(
            r#"
[ratio.cache-hits]
target = "70%"
window = "30d"
total = { counter = "cache.requests", selector = 'cache.result=~"hit|miss"' }
good = { selector = 'cache.result="hit"' }
"#,
        );
        assert_eq!(violation_burn_rate(&o.ratios[0]), 3.0);
        let registry = Registry::new();
        let c = labelled_counter(&registry, "cache.requests", &["cache.name", "cache.result"]);
        c.with(&["users", "hit"]).add(80);
        c.with(&["users", "miss"]).add(20);
        let v = judge_now(&o, &registry);
        let h = find(&v, "cache-hits");
        assert_eq!(h["verdict"], "met", "{h}");
        assert!(close(&h["value"], 0.8), "{h}");
    }
}
