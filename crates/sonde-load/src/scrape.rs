//! The service's own view of a run: its `/metrics` (Prometheus text 0.0.4 or OpenMetrics 1.0)
//! read before and after, each histogram series subtracted, and quantiles over exactly the run's
//! window interpolated within the service's buckets, as Prometheus' `histogram_quantile` does.
//!
//! The exposition is parsed by `sonde-scrape`, the parser the agent's scrape source uses.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use sonde_push::redact_url;

use crate::plan::Plan;
use crate::report::list_or_none;
use crate::result::{Quantiles, ServerRoute, ServerView};

pub use sonde_scrape::{ACCEPT, MAX_BODY_BYTES};

/// Label names that carry an HTTP route (template or path), in order of preference.
pub const ROUTE_LABELS: &[&str] = &[
    "http_route",
    "route",
    "path",
    "handler",
    "endpoint",
    "uri",
    "url_path",
    "http_target",
];

/// Label names that carry an HTTP method.
const METHOD_LABELS: &[&str] = &["http_request_method", "method", "http_method"];

/// At most this many HTTP route rows, dependency rows and counters go into a view.
const MAX_ROUTES: usize = 50;
const MAX_DEPENDENCIES: usize = 20;
const MAX_COUNTERS: usize = 50;

/// A series' labels, sorted by name.
pub type Labels = Vec<(String, String)>;

/// One read of a metrics endpoint: every histogram and counter series it exposed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    /// Histogram families by name (`http_server_request_duration_seconds`).
    pub histograms: BTreeMap<String, HistogramFamily>,
    /// Counter series by sample name (`cache_hits_total`), then labels.
    pub counters: BTreeMap<String, BTreeMap<Labels, f64>>,
    /// Lines that did not parse (`line N: problem`), the first few.
    pub skipped: Vec<String>,
    /// How many lines did not parse in all.
    pub skipped_count: usize,
}

/// One histogram family.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramFamily {
    /// The unit from `# UNIT` (OpenMetrics), if given.
    pub unit: Option<String>,
    /// Series by their labels (without `le`).
    pub series: BTreeMap<Labels, HistogramSeries>,
}

/// One histogram series: cumulative buckets, count and sum (with `total` and `quantile`).
pub type HistogramSeries = sonde_scrape::Series;

/// A scrape that failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ScrapeError(pub String);

/// Reads the endpoint once (GET, at most [`MAX_BODY_BYTES`], within `timeout`) and parses it.
pub fn take(url: &str, timeout: Duration) -> Result<Scrape, ScrapeError> {
    let body = sonde_scrape::Request::new(
        url,
        timeout,
        concat!("sonde-load/", env!("CARGO_PKG_VERSION")),
    )
    .text()
    .map_err(|e| ScrapeError(e.message))?;
    parse(&body).map_err(|e| ScrapeError(format!("{}: {e}", redact_url(url))))
}

/// Parses a Prometheus text (0.0.4) or OpenMetrics (1.0) exposition (with `sonde-scrape`)
/// into the histograms and counters a run's view needs.
///
/// Lines that do not parse are counted in [`Scrape::skipped`]; the whole body is refused only
/// when it has lines but not one sample parsed (it is not an exposition: an HTML page, JSON).
pub fn parse(text: &str) -> Result<Scrape, String> {
    let e = sonde_scrape::parse(text)?;
    let mut scrape = Scrape {
        skipped: e.skipped,
        skipped_count: e.skipped_count,
        ..Scrape::default()
    };
    for (name, family) in e.families {
        match family.kind {
            sonde_scrape::Kind::Histogram => {
                let series: BTreeMap<Labels, HistogramSeries> = family
                    .series
                    .into_iter()
                    // A family of only `_count`/`_sum` lines: nothing to window.
                    .filter(|(_, s)| !s.buckets.is_empty())
                    .collect();
                if !series.is_empty() {
                    scrape.histograms.insert(
                        name,
                        HistogramFamily {
                            unit: family.unit,
                            series,
                        },
                    );
                }
            }
            sonde_scrape::Kind::Counter => {
                let values = family
                    .series
                    .into_iter()
                    .filter_map(|(labels, s)| Some((labels, s.value?)))
                    .collect();
                scrape.counters.insert(format!("{name}_total"), values);
            }
            _ => {}
        }
    }
    Ok(scrape)
}

pub use sonde_scrape::bucket_quantile;

/// `k="v",k2="v2"` (values escaped as in the exposition).
pub fn labels_string(labels: &[(String, String)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let v = v
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = write!(out, "{k}=\"{v}\"");
    }
    out
}

fn tokens(name: &str) -> impl Iterator<Item = &str> {
    name.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|t| !t.is_empty())
}

fn has_token(name: &str, set: &[&str]) -> bool {
    tokens(name).any(|t| set.contains(&t))
}

/// Tokens of a histogram that measures something the service calls (not its own serving).
const DEPENDENCY_TOKENS: &[&str] = &[
    "client",
    "db",
    "database",
    "sql",
    "sqlite",
    "postgres",
    "postgresql",
    "mysql",
    "redis",
    "mongo",
    "mongodb",
    "query",
    "queries",
    "cache",
    "pool",
    "upstream",
    "outbound",
    "external",
    "dependency",
];

/// Tokens of a histogram of time.
const TIME_TOKENS: &[&str] = &[
    "seconds",
    "milliseconds",
    "microseconds",
    "ms",
    "duration",
    "latency",
    "time",
    "wait",
];

/// Tokens of a counter worth showing beside a run.
const COUNTER_TOKENS: &[&str] = &[
    "error",
    "errors",
    "fail",
    "failed",
    "failure",
    "failures",
    "exception",
    "exceptions",
    "panic",
    "panics",
    "reject",
    "rejected",
    "timeout",
    "timeouts",
    "retry",
    "retries",
    "dropped",
    "db",
    "database",
    "sql",
    "sqlite",
    "postgres",
    "mysql",
    "redis",
    "query",
    "queries",
    "cache",
    "hit",
    "hits",
    "miss",
    "misses",
    "evicted",
    "evictions",
    "pool",
    "connection",
    "connections",
    "api",
    "client",
    "upstream",
    "external",
    "dependency",
    "request",
    "requests",
    "http",
    "grpc",
    "rpc",
];

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum HistKind {
    /// The service's own HTTP serving time.
    Http,
    /// Time spent on something it calls (database, cache, another API).
    Dependency,
}

/// Whether a histogram family is an HTTP server duration, a dependency's, or neither.
fn classify(name: &str, fam: &HistogramFamily) -> Option<HistKind> {
    // `api_request_duration_seconds` is a service's own (an `api` namespace); only the tokens
    // above make a dependency, and an `http_server_*` name is the server's whatever else it says.
    let http_server = name.starts_with("http_server_");
    let dependency = !http_server && has_token(name, DEPENDENCY_TOKENS);
    let http_name = name.starts_with("http_server_duration")
        || name.starts_with("http_server_request_duration")
        || name.starts_with("http_server_requests")
        || name.ends_with("_request_duration_seconds")
        || name.ends_with("_requests_duration_seconds")
        || name.contains("http_request_duration")
        || name.contains("request_latency");
    let route_label = fam.series.keys().any(|labels| {
        labels
            .iter()
            .any(|(k, _)| ROUTE_LABELS.contains(&k.as_str()))
    });
    // Only time: `http_server_response_body_size_bytes{http_route}` is not a latency.
    let time_unit = fam.unit.as_deref().is_some_and(|u| {
        matches!(
            u,
            "seconds" | "milliseconds" | "microseconds" | "nanoseconds" | "s" | "ms"
        )
    });
    if !(time_unit || has_token(name, TIME_TOKENS)) {
        return None;
    }
    if http_server || (!dependency && (http_name || route_label)) {
        return Some(HistKind::Http);
    }
    if dependency {
        return Some(HistKind::Dependency);
    }
    None
}

/// Seconds per unit of a family's values, and a note when the unit was guessed.
fn unit_scale(name: &str, fam: &HistogramFamily) -> (f64, Option<String>) {
    let by_word = |w: &str| match w {
        "seconds" | "second" | "s" => Some(1.0),
        "milliseconds" | "millisecond" | "ms" => Some(1e-3),
        "microseconds" | "microsecond" | "us" => Some(1e-6),
        "nanoseconds" | "nanosecond" | "ns" => Some(1e-9),
        _ => None,
    };
    if let Some(s) = fam.unit.as_deref().and_then(by_word) {
        return (s, None);
    }
    if let Some(s) = tokens(name).filter(|t| *t != "s").find_map(by_word) {
        return (s, None);
    }
    let largest = fam
        .series
        .values()
        .flat_map(|s| s.buckets.iter().map(|b| b.0))
        .filter(|le| le.is_finite())
        .fold(0.0, f64::max);
    if largest >= 1000.0 {
        (
            1e-3,
            Some(format!(
                "{name} names no unit; its buckets reach {largest}, so its values were taken as milliseconds"
            )),
        )
    } else {
        (
            1.0,
            Some(format!(
                "{name} names no unit; its values were taken as seconds"
            )),
        )
    }
}

/// The series' observations over the window, and whether it restarted (or changed buckets) in
/// it. A restarted series' window is what it counted since its restart, as Prometheus'
/// `increase()` takes it.
fn window(before: Option<&HistogramSeries>, after: &HistogramSeries) -> (HistogramSeries, bool) {
    let Some(before) = before else {
        return (after.clone(), false);
    };
    let same_layout = before.buckets.len() == after.buckets.len()
        && before
            .buckets
            .iter()
            .zip(&after.buckets)
            .all(|(a, b)| a.0 == b.0);
    let went_down = after.total() < before.total()
        || (same_layout
            && before
                .buckets
                .iter()
                .zip(&after.buckets)
                .any(|(a, b)| b.1 < a.1));
    if !same_layout || went_down {
        return (after.clone(), true);
    }
    let delta = HistogramSeries {
        buckets: before
            .buckets
            .iter()
            .zip(&after.buckets)
            .map(|(a, b)| (b.0, b.1 - a.1))
            .collect(),
        count: after.count.map(|c| c - before.count.unwrap_or(0.0)),
        sum: after.sum.map(|s| s - before.sum.unwrap_or(0.0)),
        ..HistogramSeries::default()
    };
    (delta, false)
}

/// Whether a route label value (a path or a template such as `/users/{id}`, `/users/:id`,
/// `/users/<int:id>`, `/files/*path`) matches a concrete request path.
pub fn route_matches(route: &str, path: &str) -> bool {
    fn trim(s: &str) -> &str {
        let s = s.split(['?', '#']).next().unwrap_or(s);
        if s.len() > 1 {
            s.trim_end_matches('/')
        } else {
            s
        }
    }
    let (route, path) = (trim(route), trim(path));
    if route.is_empty() {
        return false;
    }
    if route == path {
        return true;
    }
    let r: Vec<&str> = route.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    for (i, seg) in r.iter().enumerate() {
        let catch_all = *seg == "*"
            || seg.starts_with("{*")
            || (seg.starts_with('{') && seg.ends_with("...}"))
            || (seg.starts_with('*') && seg.len() > 1)
            || *seg == "**";
        if catch_all && i == r.len() - 1 {
            return p.len() >= r.len() - 1;
        }
        let Some(actual) = p.get(i) else {
            return false;
        };
        let param = (seg.starts_with('{') && seg.ends_with('}'))
            || (seg.starts_with('<') && seg.ends_with('>'))
            || (seg.starts_with(':') && seg.len() > 1)
            || (seg.starts_with('[') && seg.ends_with(']'));
        if param {
            if actual.is_empty() {
                return false;
            }
        } else if seg != actual {
            return false;
        }
    }
    r.len() == p.len()
}

fn label<'a>(labels: &'a [(String, String)], names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|n| labels.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str()))
}

/// The server's figures over the window between two scrapes: per HTTP route series (matched to
/// the plan's requests by path and method), per dependency (database, cache, client) series,
/// and the counters that moved.
pub fn server_view(url: &str, before: &Scrape, after: &Scrape, plan: &Plan) -> ServerView {
    let mut notes = Vec::new();
    for (which, s) in [("before", before), ("after", after)] {
        if s.skipped_count > 0 {
            notes.push(format!(
                "{} line{} of the scrape {which} the run did not parse and were skipped ({})",
                s.skipped_count,
                if s.skipped_count == 1 { "" } else { "s" },
                s.skipped.join("; ")
            ));
        }
    }
    let mut http_rows: Vec<(usize, ServerRoute)> = Vec::new();
    let mut dep_rows: Vec<ServerRoute> = Vec::new();
    let mut routes_seen: BTreeSet<String> = BTreeSet::new();
    let mut http_families = 0usize;
    let mut restarted = Vec::new();
    for (name, fam) in &after.histograms {
        let Some(kind) = classify(name, fam) else {
            continue;
        };
        if kind == HistKind::Http {
            http_families += 1;
        }
        let (scale, unit_note) = unit_scale(name, fam);
        let mut moved = false;
        for (labels, series) in &fam.series {
            if kind == HistKind::Http
                && let Some(r) = label(labels, ROUTE_LABELS)
            {
                routes_seen.insert(r.to_owned());
            }
            let prior = before
                .histograms
                .get(name)
                .and_then(|f| f.series.get(labels));
            let (delta, reset) = window(prior, series);
            let count = delta.total().round().max(0.0) as u64;
            if count == 0 {
                continue;
            }
            moved = true;
            if reset {
                restarted.push(format!("{name}{{{}}}", labels_string(labels)));
            }
            if delta.buckets.last().map(|b| b.0) != Some(f64::INFINITY) {
                notes.push(format!(
                    "{name}{{{}}} has no +Inf bucket: its quantiles cannot be computed",
                    labels_string(labels)
                ));
            }
            let mut row = ServerRoute {
                metric: name.clone(),
                labels: labels_string(labels),
                request: None,
                count,
                quantiles: Quantiles::from_fn(|p| delta.quantile(p).map(|v| v * scale)),
                bounds: delta
                    .buckets
                    .iter()
                    .map(|b| b.0 * scale)
                    .filter(|b| b.is_finite())
                    .collect(),
            };
            match kind {
                HistKind::Http => {
                    let mut order = usize::MAX;
                    if let Some(route) = label(labels, ROUTE_LABELS) {
                        let method = label(labels, METHOD_LABELS);
                        let matching: Vec<(usize, &str)> = plan
                            .requests
                            .iter()
                            .enumerate()
                            .filter(|(_, r)| {
                                route_matches(route, r.url.path())
                                    && method
                                        .is_none_or(|m| m.eq_ignore_ascii_case(r.method.as_str()))
                            })
                            .map(|(i, r)| (i, r.name.as_str()))
                            .collect();
                        if let Some(&(i, first)) = matching.first() {
                            order = i;
                            row.request = Some(first.to_owned());
                            if matching.len() > 1 {
                                let names: Vec<&str> = matching.iter().map(|m| m.1).collect();
                                notes.push(format!(
                                    "{name}{{{}}} matches the requests {}; it is shown under {first:?}",
                                    row.labels,
                                    names.join(", ")
                                ));
                            }
                        }
                    }
                    http_rows.push((order, row));
                }
                HistKind::Dependency => dep_rows.push(row),
            }
        }
        if moved && let Some(n) = unit_note {
            notes.push(n);
        }
    }
    if !restarted.is_empty() {
        notes.push(format!(
            "{} series restarted during the run (their counts went down, as after a service restart); their figures cover only the time since: {}",
            restarted.len(),
            restarted
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if http_families == 0 {
        let seen: Vec<&str> = after
            .histograms
            .keys()
            .take(10)
            .map(String::as_str)
            .collect();
        notes.push(format!(
            "no HTTP server duration histogram in the scrape (looked for http_server_request_duration_seconds, *_request_duration_seconds and histograms with a route, path or handler label); histograms seen: {}",
            list_or_none(&seen)
        ));
    } else {
        for r in &plan.requests {
            if !http_rows
                .iter()
                .any(|(_, row)| row.request.as_deref() == Some(r.name.as_str()))
            {
                let known: Vec<&str> = routes_seen.iter().take(10).map(String::as_str).collect();
                notes.push(format!(
                    "request {:?} ({} {}): no server series with this route counted requests during the run (routes the service labels: {})",
                    r.name,
                    r.method,
                    r.url.path(),
                    list_or_none(&known)
                ));
            }
        }
    }
    // Matched rows in the plan's order, then the rest by traffic.
    http_rows.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then(b.1.count.cmp(&a.1.count))
            .then(a.1.labels.cmp(&b.1.labels))
    });
    if http_rows.len() > MAX_ROUTES {
        notes.push(format!(
            "{} more HTTP series moved during the run and are not shown",
            http_rows.len() - MAX_ROUTES
        ));
        http_rows.truncate(MAX_ROUTES);
    }
    dep_rows.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then(a.metric.cmp(&b.metric))
            .then(a.labels.cmp(&b.labels))
    });
    if dep_rows.len() > MAX_DEPENDENCIES {
        notes.push(format!(
            "{} more dependency series (database, cache, clients) moved and are not shown",
            dep_rows.len() - MAX_DEPENDENCIES
        ));
        dep_rows.truncate(MAX_DEPENDENCIES);
    }
    let routes: Vec<ServerRoute> = http_rows.into_iter().map(|(_, r)| r).collect();
    ServerView {
        url: redact_url(url).into_owned(),
        routes,
        dependencies: dep_rows,
        counters: moved_counters(before, after, &mut notes),
        notes,
    }
}

/// Counters that rose during the run and whose names speak of errors, requests, databases,
/// caches, pools or other services: the largest increases first, at most [`MAX_COUNTERS`].
fn moved_counters(before: &Scrape, after: &Scrape, notes: &mut Vec<String>) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    let mut reset = 0usize;
    for (name, series) in &after.counters {
        if !has_token(name, COUNTER_TOKENS) {
            continue;
        }
        for (labels, &v) in series {
            let prior = before.counters.get(name).and_then(|s| s.get(labels));
            let increase = match prior {
                Some(&p) if v < p => {
                    reset += 1;
                    v
                }
                Some(&p) => v - p,
                None => v,
            };
            if increase > 0.0 && increase.is_finite() {
                let id = if labels.is_empty() {
                    name.clone()
                } else {
                    format!("{name}{{{}}}", labels_string(labels))
                };
                out.push((id, increase));
            }
        }
    }
    if reset > 0 {
        notes.push(format!(
            "{reset} counter{} went down during the run (a restart); their increase counts from the restart",
            if reset == 1 { "" } else { "s" }
        ));
    }
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if out.len() > MAX_COUNTERS {
        notes.push(format!(
            "{} more counters moved and are not shown",
            out.len() - MAX_COUNTERS
        ));
        out.truncate(MAX_COUNTERS);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_interpolates_like_prometheus() {
        // 10 in (0, 0.1], 10 in (0.1, 0.2]: the median is the first bucket's top.
        let b = [(0.1, 10.0), (0.2, 20.0), (f64::INFINITY, 20.0)];
        assert_eq!(bucket_quantile(0.5, &b), Some(0.1));
        let p75 = bucket_quantile(0.75, &b).unwrap();
        assert!((p75 - 0.15).abs() < 1e-12, "{p75}");
        // In the +Inf bucket: the highest finite bound.
        let b = [(0.1, 1.0), (f64::INFINITY, 10.0)];
        assert_eq!(bucket_quantile(0.99, &b), Some(0.1));
        assert_eq!(
            bucket_quantile(0.5, &[(0.1, 0.0), (f64::INFINITY, 0.0)]),
            None
        );
        assert_eq!(bucket_quantile(0.5, &[(0.1, 3.0), (0.2, 3.0)]), None);
    }

    #[test]
    fn labels_with_escapes_and_exemplars() {
        let text = "# TYPE x histogram\n\
            x_bucket{path=\"/a,b=\\\"c\\\"}\\\\\",le=\"0.5\"} 3 # {trace_id=\"ab\"} 0.2 1.7e9\n\
            x_bucket{path=\"/a,b=\\\"c\\\"}\\\\\",le=\"+Inf\"} 4\n\
            x_count{path=\"/a,b=\\\"c\\\"}\\\\\"} 4\n\
            x_sum{path=\"/a,b=\\\"c\\\"}\\\\\"} 1.5\n\
            # EOF\n\
            after_eof_total 1\n";
        let s = parse(text).unwrap();
        let fam = &s.histograms["x"];
        let labels = vec![("path".to_owned(), "/a,b=\"c\"}\\".to_owned())];
        let series = &fam.series[&labels];
        assert_eq!(series.buckets, vec![(0.5, 3.0), (f64::INFINITY, 4.0)]);
        assert_eq!((series.count, series.sum), (Some(4.0), Some(1.5)));
        assert!(s.counters.is_empty(), "nothing after # EOF is read");
        assert_eq!(s.skipped_count, 0);
    }

    #[test]
    fn families_are_told_apart() {
        let fam = |labels: &[(&str, &str)]| HistogramFamily {
            unit: None,
            series: [(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                HistogramSeries::default(),
            )]
            .into(),
        };
        let none = fam(&[]);
        let routed = fam(&[("handler", "/x")]);
        assert!(classify("http_server_request_duration_seconds", &none) == Some(HistKind::Http));
        assert!(classify("http_server_requests_seconds", &none) == Some(HistKind::Http));
        assert!(classify("api_request_duration_seconds", &none) == Some(HistKind::Http));
        assert!(classify("myapp_latency_seconds", &routed) == Some(HistKind::Http));
        assert!(
            classify("http_client_request_duration_seconds", &none) == Some(HistKind::Dependency)
        );
        assert!(
            classify("db_client_operation_duration_seconds", &routed) == Some(HistKind::Dependency)
        );
        assert!(classify("payload_size_bytes", &none).is_none());
        assert!(classify("http_server_response_body_size_bytes", &routed).is_none());
    }

    #[test]
    fn routes_match_templates() {
        assert!(route_matches("/api/users/{id}", "/api/users/42"));
        assert!(route_matches("/api/users/:id", "/api/users/42"));
        assert!(route_matches("/api/users/<int:id>", "/api/users/42/"));
        assert!(route_matches("/files/{*rest}", "/files/a/b/c"));
        assert!(route_matches("/orders", "/orders"));
        assert!(!route_matches("/api/users/{id}", "/api/users"));
        assert!(!route_matches("/api/users/{id}", "/api/users/42/orders"));
        assert!(!route_matches("/orders", "/order"));
        assert!(!route_matches("", "/"));
    }

    #[test]
    fn garbage_is_refused_and_odd_lines_skipped() {
        assert!(parse("<html><body>hi</body></html>").is_err());
        let s = parse("good_total 1\nbad{ 2\n").unwrap();
        assert_eq!(s.skipped_count, 1);
        assert_eq!(s.counters["good_total"][&Vec::new()], 1.0);
        assert!(parse("").unwrap().counters.is_empty());
    }
}
