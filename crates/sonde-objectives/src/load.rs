//! Load-test thresholds from the objectives: what a load generator (`sonde-load`) can check
//! from the client side, in its threshold syntax (`p95<300ms`, `errors<0.1%`).

use crate::model::{Objectives, Ratio, SourceKind, Subset, Threshold};
use crate::selector::{Op, Selector};

/// The HTTP server duration histogram: the only metric whose objectives a load test measures
/// from the client side (each request it sends is one observation of it on the server).
pub const HTTP_SERVER_DURATION: &str = "http.server.request.duration";

/// The label of the route in the HTTP server metrics.
pub const HTTP_ROUTE: &str = "http.route";

/// The label that marks a failed request in the HTTP server metrics.
pub const ERROR_TYPE: &str = "error.type";

/// One load-test threshold taken from an objective.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadThreshold {
    /// The objective's name (`api-latency-p95`).
    pub objective: String,
    /// The `http.route` the objective is about, from its selector: the value of an
    /// `http.route="..."` matcher, or the regular expression of an `http.route=~"..."` one
    /// (anchored: it must match the whole route). `None` when the selector names no route or
    /// only excludes some (`http.route!="/health"`): the threshold then covers every request
    /// of the test.
    pub route: Option<String>,
    /// The threshold in `sonde-load` syntax: `p95<300ms`, `p99<1.5s`, `errors<0.1%`.
    pub threshold: String,
}

/// An objective that has no load-test threshold, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedObjective {
    /// The objective's name (`db-latency-p95`).
    pub objective: String,
    /// Why it has no client-side meaning, in words.
    pub reason: String,
}

/// The load-test thresholds of `objectives`, and the objectives left out with the reason.
///
/// A load test sees each request it sends: its latency and whether it failed. So only
/// objectives on the HTTP server's requests (`http.server.request.duration`) become
/// thresholds:
///
/// | objective | threshold |
/// |---|---|
/// | threshold objective on `http.server.request.duration`: `pNN < X` over a window | `pNN<X` (`p95<300ms`, `p99<1.5s`; `X` as written in the file) |
/// | ratio objective of *availability*: total = `http.server.request.duration`, bad = the same requests with `error.type` set (or good = without it), target `T` | `errors<B` with `B = 1 - T` as a percentage (`99.9%` → `errors<0.1%`, `99%` → `errors<1%`) |
/// | ratio objective of *latency as a ratio*: good = the observations of `http.server.request.duration` at most `le`, target `T` (`95 %` of requests within `300ms`) | `pT<le` (`p95<300ms`): "at least T of the requests within le" is "the T-quantile at most le" |
///
/// `route` is the `http.route` the selector selects (`=` or `=~`), when it selects one;
/// exclusions (`http.route!="/health"`) leave it `None` (a load test does not call the health
/// route anyway). Other labels of the selector (`http.request.method`, ...) are not carried
/// over. The window (`over 5m`, `30d`) does not carry over either: a load test judges its whole
/// run.
///
/// Skipped, each with its reason in the second list: objectives on any other metric (database
/// operations, cache lookups, cold starts, client calls: the load generator does not see them),
/// ratio objectives whose good or bad events are narrowed by anything else than `error.type`
/// or a latency bucket (a load test cannot tell those requests apart), and threshold
/// objectives whose histogram is not in seconds.
pub fn load_thresholds(objectives: &Objectives) -> (Vec<LoadThreshold>, Vec<SkippedObjective>) {
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    let thresholds = objectives
        .thresholds
        .iter()
        .map(|t| (&t.common.name, threshold(t)));
    let ratios = objectives.ratios.iter().map(|r| (&r.common.name, ratio(r)));
    for (name, translated) in thresholds.chain(ratios) {
        match translated {
            Ok(l) => out.push(l),
            Err(reason) => skipped.push(SkippedObjective {
                objective: name.clone(),
                reason,
            }),
        }
    }
    (out, skipped)
}

fn not_http(metric: &str) -> String {
    format!(
        "it is about {metric}, which a load test does not observe: only {HTTP_SERVER_DURATION} (the requests it sends) has a client-side meaning"
    )
}

/// The `http.route` a selector selects, if it selects one.
fn route(s: &Selector) -> Option<String> {
    s.matchers
        .iter()
        .filter(|m| m.label == HTTP_ROUTE)
        .find_map(|m| match m.op {
            Op::Eq | Op::Re if !m.value.is_empty() => Some(m.value.clone()),
            _ => None,
        })
}

fn threshold(t: &Threshold) -> Result<LoadThreshold, String> {
    if t.metric != HTTP_SERVER_DURATION {
        return Err(not_http(&t.metric));
    }
    Ok(LoadThreshold {
        objective: t.common.name.clone(),
        route: route(&t.selector),
        threshold: format!("{}<{}", t.percentile.text, t.threshold.text),
    })
}

/// The matchers `narrow` adds to `base`.
fn added<'a>(base: &Selector, narrow: &'a Selector) -> Vec<&'a crate::selector::Matcher> {
    narrow
        .matchers
        .iter()
        .filter(|m| !base.matchers.contains(m))
        .collect()
}

fn ratio(r: &Ratio) -> Result<LoadThreshold, String> {
    let total = &r.total;
    if total.metric != HTTP_SERVER_DURATION || !matches!(total.kind, SourceKind::Histogram { .. }) {
        return Err(not_http(&total.metric));
    }
    let (events, good) = match &r.subset {
        Subset::Good(e) => (e, true),
        Subset::Bad(e) => (e, false),
    };
    if events.metric != total.metric {
        return Err(format!(
            "its {} events are counted by {}, not by the requests' {HTTP_SERVER_DURATION}: a load test cannot count them",
            if good { "good" } else { "bad" },
            events.metric
        ));
    }
    let extra = added(&total.selector, &events.selector);
    let route = route(&total.selector);
    let objective = r.common.name.clone();
    match (&events.le, good, extra.as_slice()) {
        // Latency as a ratio: T of the requests within `le` is the T-quantile at most `le`.
        (Some(le), true, []) => Ok(LoadThreshold {
            objective,
            route,
            threshold: format!("p{}<{}", r.target.fraction.times(100), le.text),
        }),
        // Availability: the failed requests carry `error.type`.
        (None, _, [m]) if m.label == ERROR_TYPE && marks_errors(m, good) => Ok(LoadThreshold {
            objective,
            route,
            threshold: format!("errors<{}%", r.target.budget.times(100)),
        }),
        _ => Err(format!(
            "its {} events are the requests matching {}: a load test can only tell failed requests (error.type set) and requests within a latency (le) apart",
            if good { "good" } else { "bad" },
            extra
                .iter()
                .map(|m| m.promql())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Whether `m` selects the failed requests (bad) or the successful ones (good): `error.type`
/// set (`!=""`, `=~".+"`) for bad ones, unset (`=""`) for good ones.
fn marks_errors(m: &crate::selector::Matcher, good: bool) -> bool {
    matches!(
        (m.op, m.value.as_str(), good),
        (Op::Ne, "", false) | (Op::Re, ".+", false) | (Op::Eq, "", true) | (Op::NotRe, ".+", true)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../examples/objectives.toml");

    fn example() -> Objectives {
        crate::parse("objectives.toml", EXAMPLE).unwrap_or_else(|p| panic!("{p:?}"))
    }

    fn t(objective: &str, route: Option<&str>, threshold: &str) -> LoadThreshold {
        LoadThreshold {
            objective: objective.into(),
            route: route.map(Into::into),
            threshold: threshold.into(),
        }
    }

    #[test]
    fn the_example_maps_its_http_objectives() {
        let (thresholds, skipped) = load_thresholds(&example());
        assert_eq!(
            thresholds,
            vec![
                t("api-latency-p95", None, "p95<300ms"),
                t("api-latency-p99", None, "p99<1.5s"),
                t("availability", None, "errors<0.1%"),
                t("errors", None, "errors<1%"),
                t("api-fast-requests", None, "p95<300ms"),
            ]
        );
        let skipped: Vec<&str> = skipped.iter().map(|s| s.objective.as_str()).collect();
        assert_eq!(skipped, ["db-latency-p95", "cold-start-p95", "cache-hits"]);
    }

    #[test]
    fn skipped_objectives_say_why() {
        let (_, skipped) = load_thresholds(&example());
        let reason = |name: &str| {
            skipped
                .iter()
                .find(|s| s.objective == name)
                .map(|s| s.reason.clone())
                .unwrap_or_default()
        };
        assert!(reason("db-latency-p95").contains("db.client.operation.duration"));
        assert!(reason("cold-start-p95").contains("faas.init_duration"));
        assert!(reason("cache-hits").contains("cache.requests"));
        assert!(reason("cache-hits").contains("does not observe"));
    }

    #[test]
    fn one_number_changes_the_threshold() {
        let changed = EXAMPLE
            .replacen("threshold = \"300ms\"", "threshold = \"250ms\"", 1)
            .replacen("target = \"99.9%\"", "target = \"99.95%\"", 1);
        let o = crate::parse("objectives.toml", &changed).unwrap_or_else(|p| panic!("{p:?}"));
        let (thresholds, _) = load_thresholds(&o);
        assert_eq!(thresholds[0], t("api-latency-p95", None, "p95<250ms"));
        assert_eq!(thresholds[2], t("availability", None, "errors<0.05%"));
    }

    #[test]
    fn routes_and_other_shapes() {
        let text = r#"
[threshold.checkout]
metric = "http.server.request.duration"
selector = 'http.route="/checkout"'
percentile = "p99.9"
threshold = "2s"
window = "5m"

[threshold.api]
metric = "http.server.request.duration"
selector = 'http.route=~"/api/.*"'
percentile = "p90"
threshold = "250ms"
window = "5m"

[ratio.ok]
target = "99.5%"
window = "30d"
total = { histogram = "http.server.request.duration", selector = 'http.route="/pay"' }
good = { selector = 'error.type=""' }

[ratio.fast]
target = "99.9%"
window = "7d"
total = { histogram = "http.server.request.duration", selector = 'http.route=~"/api/.*"' }
good = { le = "1s" }

[ratio.gets]
target = "99%"
window = "30d"
total = { histogram = "http.server.request.duration" }
bad = { selector = 'http.request.method="GET"' }
"#;
        let o = crate::parse("objectives.toml", text).unwrap_or_else(|p| panic!("{p:?}"));
        let (thresholds, skipped) = load_thresholds(&o);
        assert_eq!(
            thresholds,
            vec![
                t("checkout", Some("/checkout"), "p99.9<2s"),
                t("api", Some("/api/.*"), "p90<250ms"),
                t("ok", Some("/pay"), "errors<0.5%"),
                t("fast", Some("/api/.*"), "p99.9<1s"),
            ]
        );
        assert_eq!(skipped.len(), 1);
        assert!(
            skipped[0].reason.contains("http_request_method=\"GET\"")
                || skipped[0].reason.contains("http.request.method"),
            "{}",
            skipped[0].reason
        );
    }
}
