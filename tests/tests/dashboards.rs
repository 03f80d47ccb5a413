//! The dashboards of `dashboards/` and the CloudFormation template of `cloudwatch/` follow the
//! rules of a usable dashboard:
//!
//! - Grafana: importable both by file provisioning and by UI import (a `datasource` variable of
//!   type prometheus used by every panel and query, never `${DS_...}` inputs; `id` null; a stable
//!   `uid`), `job` and `instance` variables used by every metric selector, a title, description,
//!   unit and thresholds on every panel, counters only through `rate()`/`increase()` over
//!   `$__rate_interval`, every histogram shown as a heatmap and its other uses through
//!   `histogram_quantile` (or one SLI bucket), exemplars on latency queries, panels on the
//!   24-column grid without overlaps, and the thresholds of a panel that links an alert's runbook
//!   equal to that alert's thresholds (for an objective's burn-rate alert: its error budget, or
//!   its target), every alert being linked from some panel. The recorded series of the
//!   generated objectives' rules (`objective:...`) keep only their objective's labels, so
//!   queries over them need not select `instance`. (That each tied line is the objective's
//!   number is checked by sonde-objectives' `committed` test, which regenerates the files.)
//! - CloudWatch: `cfn-lint` accepts the template; the dashboard's widgets sit on the 24-column
//!   grid without overlapping; every metric the widgets and alarms use (name and dimension names)
//!   is one the CloudWatch exporter emits for the example service with the settings
//!   `cloudwatch/README.md` gives; alarms named after a Prometheus alert use its threshold.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;
use sonde::Registry;
use sonde_tests::grafana::{
    Dashboard, all_rules, comparison_thresholds, markdown_anchors, read_yaml, repo_root, selectors,
    str_of,
};
use sonde_tests::require_program;

const RUNBOOK: &str = "https://example.invalid/sonde/blob/main/alerts/runbook.md#";

/// Alert name (lower case, as in runbook anchors) -> (name, thresholds). A burn-rate alert
/// compares `error ratio / budget` with its factors: its budget (the error ratio a panel draws)
/// and its target (1 - budget, the success ratio a panel draws) count as its thresholds too.
fn alert_thresholds() -> BTreeMap<String, (String, Vec<f64>)> {
    all_rules()
        .into_iter()
        .filter_map(|r| {
            let name = r.alert.clone()?;
            let mut thresholds = comparison_thresholds(&r.expr);
            for budget in r
                .expr
                .split("/ ")
                .skip(1)
                .filter_map(|s| s.split_whitespace().next()?.parse::<f64>().ok())
            {
                thresholds.push(budget);
                thresholds.push(((1.0 - budget) * 1e9).round() / 1e9);
            }
            Some((name.to_ascii_lowercase(), (name, thresholds)))
        })
        .collect()
}

/// The histograms (base names) the dashboards and rules use: every `<base>_bucket` selector.
fn histograms() -> BTreeSet<String> {
    let mut exprs: Vec<String> = all_rules().into_iter().map(|r| r.expr).collect();
    for d in Dashboard::load_all() {
        exprs.extend(d.queries().into_iter().map(|q| q.expr));
    }
    exprs
        .iter()
        .flat_map(|e| selectors(e))
        .filter_map(|s| s.name.strip_suffix("_bucket").map(str::to_owned))
        .collect()
}

/// Whether a series is cumulative: a counter (sonde's always end in `_total`) or a histogram's
/// `_bucket`, `_count` or `_sum` of a histogram the queries use (gauges never end in those: sonde
/// renders `process.thread.count` as `process_thread_count_value`).
fn is_counter_like(name: &str, histograms: &BTreeSet<String>) -> bool {
    name.ends_with("_total")
        || name.ends_with("_bucket")
        || ["_count", "_sum"].iter().any(|suffix| {
            name.strip_suffix(suffix)
                .is_some_and(|base| histograms.contains(base))
        })
}

/// `name`'s rectangle from the members of `pos` named `keys` (x, y, width, height): a missing
/// position reads -1 and a missing size 0, both off the grid for [`check_grid`].
fn grid_rect(name: String, pos: &Value, keys: [&str; 4]) -> (String, i64, i64, i64, i64) {
    let [x, y, w, h] = keys.map(|k| pos[k].as_i64());
    (
        name,
        x.unwrap_or(-1),
        y.unwrap_or(-1),
        w.unwrap_or(0),
        h.unwrap_or(0),
    )
}

/// A rectangle on a 24-column grid: (x, y, w, h).
fn check_grid(what: &str, rects: &[(String, i64, i64, i64, i64)], problems: &mut Vec<String>) {
    for (name, x, y, w, h) in rects {
        if *w <= 0 || *h <= 0 || *x < 0 || *y < 0 || x + w > 24 {
            problems.push(format!(
                "{what}: {name:?} at x={x} y={y} w={w} h={h} is off the 24-column grid"
            ));
        }
    }
    for (i, a) in rects.iter().enumerate() {
        for b in &rects[i + 1..] {
            let overlap = a.1 < b.1 + b.3 && b.1 < a.1 + a.3 && a.2 < b.2 + b.4 && b.2 < a.2 + a.4;
            if overlap {
                problems.push(format!("{what}: {:?} overlaps {:?}", a.0, b.0));
            }
        }
    }
}

fn lint(d: &Dashboard, alerts: &BTreeMap<String, (String, Vec<f64>)>) -> Vec<String> {
    let histograms = histograms();
    let mut problems = Vec::new();
    let file = d.file_name();
    let mut bad = |what: String| problems.push(format!("{file}: {what}"));
    let text = serde_json::to_string(&d.json).unwrap();

    // Importable by provisioning and by the UI.
    let uid = d.uid();
    let stem = file.trim_end_matches(".json");
    if uid != stem
        || uid.len() > 40
        || !uid
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        bad(format!(
            "uid {uid:?} must be stable: the file's name, [a-z0-9-], at most 40 characters"
        ));
    }
    if !d.json["id"].is_null() {
        bad("\"id\" must be null (Grafana assigns it on import)".into());
    }
    if d.json["schemaVersion"].as_i64().unwrap_or(0) < 39 {
        bad(format!("schemaVersion {} < 39", d.json["schemaVersion"]));
    }
    if text.contains("${DS_") || d.json.get("__inputs").is_some() {
        bad(
            "uses ${DS_...} inputs, which break file provisioning; use the $datasource variable"
                .into(),
        );
    }
    if str_of(&d.json, "title").is_empty() || str_of(&d.json, "description").is_empty() {
        bad("the dashboard needs a title and a description".into());
    }

    // Variables.
    match d.variable("datasource") {
        Some(v) if str_of(v, "type") == "datasource" && str_of(v, "query") == "prometheus" => {}
        _ => bad("no `datasource` variable of type datasource, query prometheus".into()),
    }
    for name in ["job", "instance"] {
        match d.variable(name) {
            Some(v) if str_of(v, "type") == "query" => {
                if v["datasource"]["uid"] != "${datasource}" {
                    bad(format!("variable {name} must query ${{datasource}}"));
                }
                if v["includeAll"] != true || str_of(v, "allValue") != ".+" {
                    bad(format!(
                        "variable {name} needs includeAll with allValue \".+\" (queries use =~)"
                    ));
                }
            }
            _ => bad(format!("no `{name}` query variable")),
        }
    }
    if !d
        .variable_query("instance")
        .unwrap_or_default()
        .contains("$job")
    {
        bad("the instance variable must be filtered by $job".into());
    }

    // Panels.
    let panels = d.panels();
    let mut ids = BTreeSet::new();
    let mut titles = BTreeSet::new();
    let mut rects = Vec::new();
    let mut heatmap_histograms = BTreeSet::new();
    let mut used_histograms = BTreeSet::new();
    for p in &panels {
        let title = str_of(p, "title").to_owned();
        let ty = str_of(p, "type");
        let mut bad = |what: String| problems.push(format!("{file}: panel {title:?}: {what}"));
        if title.is_empty() || !titles.insert(title.clone()) {
            bad("needs a unique title".into());
        }
        if !ids.insert(p["id"].as_i64().unwrap_or(-1)) {
            bad(format!("duplicate id {}", p["id"]));
        }
        if str_of(p, "description").len() < 20 {
            bad("needs a description".into());
        }
        if p["datasource"]["uid"] != "${datasource}" || p["datasource"]["type"] != "prometheus" {
            bad(format!(
                "datasource must be {{type: prometheus, uid: ${{datasource}}}}, is {}",
                p["datasource"]
            ));
        }
        let defaults = &p["fieldConfig"]["defaults"];
        if str_of(defaults, "unit").is_empty() {
            bad("no unit (fieldConfig.defaults.unit)".into());
        }
        let steps = defaults["thresholds"]["steps"].as_array();
        match steps {
            Some(s) if !s.is_empty() && s[0]["value"].is_null() => {}
            _ => bad("needs thresholds (fieldConfig.defaults.thresholds.steps, base first)".into()),
        }
        let g = &p["gridPos"];
        rects.push(grid_rect(title.clone(), g, ["x", "y", "w", "h"]));

        // Thresholds equal to the alerts' thresholds for the panels that link an alert.
        let linked: Vec<String> = p["links"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| str_of(l, "url").strip_prefix(RUNBOOK).map(str::to_owned))
            .collect();
        let values: Vec<f64> = steps
            .into_iter()
            .flatten()
            .filter_map(|s| s["value"].as_f64())
            .collect();
        let mut allowed = Vec::new();
        for anchor in &linked {
            match alerts.get(anchor) {
                None => bad(format!(
                    "links runbook section #{anchor}, which no alert has"
                )),
                Some((name, thresholds)) => {
                    if !thresholds.iter().any(|t| values.contains(t)) {
                        bad(format!(
                            "links {name} but none of its thresholds {thresholds:?} is among the panel's {values:?}"
                        ));
                    }
                    allowed.extend(thresholds.iter().copied());
                }
            }
        }
        if !linked.is_empty() {
            for v in &values {
                if !allowed.contains(v) {
                    bad(format!(
                        "threshold {v} is none of the linked alerts' thresholds {allowed:?}"
                    ));
                }
            }
            if ty == "timeseries" && str_of(&defaults["custom"]["thresholdsStyle"], "mode") == "off"
            {
                bad("shows an alert's threshold: draw it (custom.thresholdsStyle.mode)".into());
            }
        }

        // Queries.
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            bad("no query".into());
        }
        if ty == "heatmap" && p["options"]["calculate"] != false {
            bad(
                "a heatmap of histogram buckets must not re-bucket (options.calculate: false)"
                    .into(),
            );
        }
        for t in &targets {
            let expr = str_of(t, "expr");
            let mut bad = |what: String| {
                problems.push(format!("{file}: panel {title:?}: {what}\n    {expr}"))
            };
            if t["datasource"]["uid"] != "${datasource}" {
                bad("the query's datasource must be ${datasource}".into());
            }
            let sels = selectors(expr);
            if sels.is_empty() {
                bad("queries no metric".into());
            }
            if ty == "heatmap" {
                if str_of(t, "format") != "heatmap" {
                    bad("heatmap queries need format: heatmap".into());
                }
                if !expr.starts_with("sum by (le)") {
                    bad("a heatmap query sums the bucket rates by le".into());
                }
            }
            for s in &sels {
                // The objectives' recorded series keep only their objective's labels.
                let per_instance = !s.name.starts_with("objective:");
                if !s.has("job", "=~", "$job")
                    || (per_instance && !s.has("instance", "=~", "$instance"))
                {
                    bad(format!(
                        "{} must be filtered by job=~\"$job\" and instance=~\"$instance\"",
                        s.name
                    ));
                }
                // A stat's instant query may total a counter over the whole time range.
                let total_over_range = ty == "stat" && t["instant"] == true && t["range"] != true;
                if let Some(r) = &s.range
                    && r != "$__rate_interval"
                    && !(r == "$__range" && total_over_range)
                {
                    bad(format!(
                        "{}[{r}]: ranges must be $__rate_interval ($__range only in a stat's instant query)",
                        s.name
                    ));
                }
                if is_counter_like(&s.name, &histograms) {
                    let f = s.innermost_function().unwrap_or_default();
                    if !(matches!(f, "rate" | "increase") && s.range.is_some()) {
                        bad(format!(
                            "{} is a counter: only through rate() or increase() over $__rate_interval",
                            s.name
                        ));
                    }
                }
                if let Some(base) = s.name.strip_suffix("_bucket") {
                    used_histograms.insert(base.to_owned());
                    if ty == "heatmap" {
                        heatmap_histograms.insert(base.to_owned());
                    } else {
                        let quantile = s.functions.iter().any(|f| f == "histogram_quantile");
                        let sli_bucket = s.matchers.iter().any(|m| m.label == "le" && m.op == "=");
                        if !(quantile || sli_bucket) {
                            bad(format!(
                                "{}: buckets belong in a heatmap, in histogram_quantile or as one SLI bucket (le=\"...\")",
                                s.name
                            ));
                        }
                    }
                    let distribution =
                        ty == "heatmap" || s.functions.iter().any(|f| f == "histogram_quantile");
                    if base.ends_with("_seconds") && distribution && t["exemplar"] != true {
                        bad(format!(
                            "{}: a latency query asks for exemplars (\"exemplar\": true)",
                            s.name
                        ));
                    }
                }
            }
        }
    }
    for h in used_histograms.difference(&heatmap_histograms) {
        problems.push(format!(
            "{file}: histogram {h} is shown without a heatmap of {h}_bucket"
        ));
    }
    check_grid(&file, &rects, &mut problems);
    problems
}

#[test]
fn dashboards_follow_the_rules() {
    let dashboards = Dashboard::load_all();
    let uids: BTreeSet<&str> = dashboards.iter().map(Dashboard::uid).collect();
    assert_eq!(
        uids,
        BTreeSet::from([
            "sonde-dependencies",
            "sonde-host",
            "sonde-runtime",
            "sonde-self-health",
            "sonde-service-overview",
            "sonde-slo"
        ])
    );
    let alerts = alert_thresholds();
    let problems: Vec<String> = dashboards.iter().flat_map(|d| lint(d, &alerts)).collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_alert_is_drawn_on_a_dashboard() {
    let mut linked = BTreeSet::new();
    for d in Dashboard::load_all() {
        for p in d.panels() {
            for l in p["links"].as_array().into_iter().flatten() {
                if let Some(anchor) = str_of(l, "url").strip_prefix(RUNBOOK) {
                    linked.insert(anchor.to_owned());
                }
            }
        }
    }
    let missing: Vec<String> = alert_thresholds()
        .into_iter()
        .filter(|(anchor, _)| !linked.contains(anchor))
        .map(|(_, (name, _))| name)
        .collect();
    assert!(
        missing.is_empty(),
        "no panel shows (links the runbook of) {missing:?}"
    );
}

#[test]
fn the_lint_catches_what_it_should() {
    // A dashboard breaking every rule once: the lint names each problem.
    let alerts = alert_thresholds();
    let mut d = Dashboard::load_all()
        .into_iter()
        .find(|d| d.uid() == "sonde-service-overview")
        .unwrap();
    fn panel<'a>(panels: &'a mut [Value], title: &str) -> &'a mut Value {
        panels
            .iter_mut()
            .find(|p| p["title"] == title)
            .unwrap_or_else(|| panic!("no panel {title:?}"))
    }
    let panels = d.json["panels"].as_array_mut().unwrap();
    panel(panels, "Request rate by route")["targets"][0]["expr"] =
        "sum(http_server_request_duration_seconds_count{job=~\"$job\"})".into();
    panel(panels, "Error ratio")["fieldConfig"]["defaults"]["thresholds"]["steps"][1]["value"] =
        0.05.into();
    panel(panels, "Latency p50/p95/p99 by route")["targets"][0]["exemplar"] = false.into();
    panel(panels, "Latency heatmap")["type"] = "timeseries".into();
    panel(panels, "Active requests")["fieldConfig"]["defaults"]["unit"] = "".into();
    // A range query of a stat totalling over the dashboard's range.
    let active = panel(panels, "Active requests");
    active["type"] = "stat".into();
    active["targets"][0]["expr"] =
        "sum(rate(http_server_request_duration_seconds_count{job=~\"$job\",instance=~\"$instance\"}[$__range]))".into();
    let status = panel(panels, "Requests by status code");
    status["datasource"]["uid"] = "${DS_PROMETHEUS}".into();
    status["gridPos"]["x"] = 20.into();
    let problems = lint(&d, &alerts).join("\n");
    for expected in [
        "instance=~\"$instance\"",
        "only through rate() or increase()",
        "threshold 0.05 is none of the linked alerts' thresholds",
        "asks for exemplars",
        "buckets belong in a heatmap",
        "without a heatmap",
        "no unit",
        "${DS_",
        "off the 24-column grid",
        "$__range only in a stat's instant query",
    ] {
        assert!(
            problems.contains(expected),
            "the lint missed {expected:?}:\n{problems}"
        );
    }
}

#[test]
fn the_cold_starts_stat_totals_the_dashboard_time_range() {
    // Over $__rate_interval it showed the cold starts of the last few scrapes, whatever range
    // the dashboard shows.
    let d = Dashboard::load_all()
        .into_iter()
        .find(|d| d.uid() == "sonde-runtime")
        .unwrap();
    let p = d
        .panels()
        .into_iter()
        .find(|p| p["title"] == "Cold starts")
        .unwrap();
    let t = &p["targets"][0];
    assert!(
        str_of(t, "expr").contains("increase(faas_coldstarts_total")
            && str_of(t, "expr").contains("[$__range]")
            && t["instant"] == true,
        "{t}"
    );
    assert!(str_of(p, "description").contains("time range"));
}

#[test]
fn provisioning_file_loads_the_dashboards_directory() {
    let p = read_yaml(&repo_root().join("dashboards/provisioning/sonde.yaml"));
    assert_eq!(p["apiVersion"], 1);
    let providers = p["providers"].as_array().unwrap();
    assert_eq!(providers.len(), 1);
    let pr = &providers[0];
    assert_eq!(pr["type"], "file");
    assert!(!str_of(pr, "name").is_empty());
    assert!(str_of(&pr["options"], "path").starts_with('/'));
}

// ---------------------------------------------------------------------------------------------
// CloudWatch

const TEMPLATE: &str = "cloudwatch/sonde-cloudwatch.yaml";
/// The alarms generated from the example service's objectives.
const OBJECTIVES_TEMPLATE: &str = "cloudwatch/sonde-objectives.yaml";

fn template() -> Value {
    read_yaml(&repo_root().join(TEMPLATE))
}

/// Metric name -> the dimension-name sets the CloudWatch exporter sends it with, for the example
/// service (plus a FaaS handler) with the rollups of cloudwatch/README.md.
fn emitted_metrics() -> BTreeMap<String, BTreeSet<BTreeSet<String>>> {
    use sonde::cloudwatch::datum::{Settings, convert};
    use sonde::instrument::{Faas, Trigger};
    let reg = Registry::new();
    let workload = sonde_example::Workload::start(
        &reg,
        sonde_example::Options {
            cold_start: Duration::from_millis(10),
            api_error_rate: 0.2,
            ..Default::default()
        },
    )
    .unwrap();
    let faas = Faas::install(&reg).unwrap();
    for _ in 0..3 {
        let r: Result<(), std::io::Error> = faas.invoke(Trigger::Http, || Ok(()));
        r.unwrap();
    }
    std::thread::sleep(Duration::from_millis(1500));
    workload.stop();
    let mut settings = Settings::default();
    settings.dimensions.rollups = vec![
        vec![],
        vec!["http.route".into()],
        vec!["error.type".into()],
        vec!["db.operation.name".into(), "db.collection.name".into()],
        vec!["server.address".into()],
        vec!["server.address".into(), "error.type".into()],
        vec!["cache.name".into(), "cache.result".into()],
    ];
    let resource = sonde::Resource::empty().with("service.name", "example");
    let converted = convert(&reg.snapshot(), &resource, &settings);
    let mut out: BTreeMap<String, BTreeSet<BTreeSet<String>>> = BTreeMap::new();
    for d in converted.datums {
        out.entry(d.name.clone())
            .or_default()
            .insert(d.dimensions.iter().map(|(k, _)| k.clone()).collect());
    }
    out
}

fn check_metric(
    emitted: &BTreeMap<String, BTreeSet<BTreeSet<String>>>,
    what: &str,
    name: &str,
    dims: BTreeSet<String>,
    problems: &mut Vec<String>,
) {
    match emitted.get(name) {
        None => problems.push(format!("{what}: the exporter emits no metric {name:?}")),
        Some(sets) if !sets.contains(&dims) => problems.push(format!(
            "{what}: {name} is never sent with exactly the dimensions {dims:?} (it is with {sets:?})"
        )),
        Some(_) => {}
    }
}

/// The dashboard body with `${...}` resolved: parameters by their defaults, the region, and
/// `${Resource.Arn}` by a fake ARN naming the resource (which must exist).
fn dashboard_body(t: &Value) -> Value {
    let body = t["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
        .as_str()
        .expect("DashboardBody is an Fn::Sub string");
    let re = regex::Regex::new(r"\$\{([A-Za-z0-9:]+)(\.Arn)?\}").unwrap();
    let resolved = re.replace_all(body, |c: &regex::Captures<'_>| {
        let name = &c[1];
        if c.get(2).is_some() {
            assert!(
                t["Resources"][name].is_object(),
                "the dashboard refers to ${{{name}.Arn}}, which is not a resource"
            );
            return format!("arn:aws:cloudwatch:us-east-1:123456789012:alarm:{name}");
        }
        if name == "AWS::Region" {
            return "us-east-1".to_owned();
        }
        let p = &t["Parameters"][name]["Default"];
        assert!(
            !p.is_null(),
            "the dashboard refers to ${{{name}}}, no parameter default"
        );
        match p {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    });
    assert!(!resolved.contains("${"), "unresolved: {resolved}");
    serde_json::from_str(&resolved).unwrap_or_else(|e| panic!("dashboard body: {e}\n{resolved}"))
}

#[test]
fn cloudwatch_template_passes_cfn_lint() {
    let bin = require_program("cfn-lint", "python3 -m pip install cfn-lint");
    // Both in one run: cfn-lint's start-up is most of its time.
    let out = std::process::Command::new(&bin)
        .args([TEMPLATE, OBJECTIVES_TEMPLATE])
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cfn-lint {TEMPLATE} {OBJECTIVES_TEMPLATE} ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn cloudwatch_dashboard_and_alarms_use_emitted_metrics_and_the_alert_thresholds() {
    let t = template();
    let emitted = emitted_metrics();
    let alerts = alert_thresholds();
    let mut problems = Vec::new();

    // The dashboard.
    let body = dashboard_body(&t);
    let widgets = body["widgets"].as_array().unwrap();
    assert!(widgets.len() >= 10, "{} widgets", widgets.len());
    let mut rects = Vec::new();
    let search =
        regex::Regex::new(r#"SEARCH\('\{([^,}]+),([^}]*)\} MetricName="([^"]+)""#).unwrap();
    let mut metrics_seen = 0;
    for w in widgets {
        let title = str_of(&w["properties"], "title").to_owned();
        let name = if title.is_empty() {
            str_of(w, "type").to_owned()
        } else {
            title.clone()
        };
        rects.push(grid_rect(name.clone(), w, ["x", "y", "width", "height"]));
        if str_of(w, "type") != "metric" {
            continue;
        }
        let what = format!("dashboard widget {name:?}");
        let mut ids = BTreeSet::new();
        let mut expressions = Vec::new();
        for m in w["properties"]["metrics"].as_array().unwrap() {
            let m = m.as_array().unwrap();
            if let Some(opts) = m.last().and_then(Value::as_object)
                && let Some(id) = opts.get("id").and_then(Value::as_str)
            {
                ids.insert(id.to_owned());
            }
            if let Some(expr) = m[0].get("expression").and_then(Value::as_str) {
                expressions.push(expr.to_owned());
                continue;
            }
            let strings: Vec<&str> = m.iter().filter_map(Value::as_str).collect();
            assert_eq!(strings[0], "Sonde/Service", "{what}: namespace");
            let dims: BTreeSet<String> = strings[2..].chunks(2).map(|c| c[0].to_owned()).collect();
            check_metric(&emitted, &what, strings[1], dims, &mut problems);
            metrics_seen += 1;
        }
        for expr in expressions {
            if let Some(c) = search.captures(&expr) {
                let dims: BTreeSet<String> = c[2]
                    .split(',')
                    .map(|d| d.trim().trim_matches('"').to_owned())
                    .collect();
                check_metric(&emitted, &what, &c[3], dims, &mut problems);
                metrics_seen += 1;
            } else {
                // Metric math refers to the widget's metric ids.
                for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                    if word.starts_with(|c: char| c.is_ascii_lowercase()) && !ids.contains(word) {
                        problems.push(format!(
                            "{what}: {expr:?} uses {word:?}, no metric id of the widget"
                        ));
                    }
                }
            }
        }
        for a in w["properties"]["annotations"]["horizontal"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let label = str_of(a, "label");
            let value = a["value"].as_f64().unwrap();
            match alerts.get(&label.to_ascii_lowercase()) {
                Some((_, thresholds)) if thresholds.contains(&value) => {}
                Some((_, thresholds)) => problems.push(format!(
                    "{what}: annotation {label} at {value}, but the alert's thresholds are {thresholds:?}"
                )),
                None => problems.push(format!("{what}: annotation {label:?} names no alert")),
            }
        }
    }
    assert!(
        metrics_seen >= 20,
        "{metrics_seen} metrics on the dashboard"
    );
    check_grid("CloudWatch dashboard", &rects, &mut problems);

    // The alarms, hand-written and generated from the objectives.
    let runbook =
        markdown_anchors(&std::fs::read_to_string(repo_root().join("alerts/runbook.md")).unwrap());
    let reference = regex::Regex::new(r"\$\{(\w+)\}").unwrap();
    let mut alarms = 0;
    let generated = read_yaml(&repo_root().join(OBJECTIVES_TEMPLATE));
    for (t, (id, r)) in [&t, &generated].into_iter().flat_map(|t| {
        t["Resources"]
            .as_object()
            .unwrap()
            .iter()
            .map(move |resource| (t, resource))
    }) {
        let what = format!("alarm {id}");
        let p = &r["Properties"];
        match str_of(r, "Type") {
            "AWS::CloudWatch::Alarm" => {
                alarms += 1;
                let mut metrics = Vec::new();
                if p.get("MetricName").is_some() {
                    metrics.push(p.clone());
                }
                for m in p["Metrics"].as_array().into_iter().flatten() {
                    if m.get("MetricStat").is_some() {
                        metrics.push(m["MetricStat"]["Metric"].clone());
                    }
                }
                assert!(!metrics.is_empty(), "{what}: no metric");
                for m in metrics {
                    assert_eq!(m["Namespace"]["Ref"], "Namespace", "{what}");
                    let dims: BTreeSet<String> = m["Dimensions"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|d| str_of(d, "Name").to_owned())
                        .collect();
                    check_metric(
                        &emitted,
                        &what,
                        str_of(&m, "MetricName"),
                        dims,
                        &mut problems,
                    );
                }
                // The alert it stands for: its own name (the burn-rate alarms of one window of
                // an objective compare an error ratio, factor x budget: sonde-objectives'
                // tests check those numbers).
                let alert = id.trim_end_matches("Alarm");
                let threshold = p["Threshold"].as_f64().unwrap();
                if let Some((_, thresholds)) = alerts.get(&alert.to_ascii_lowercase())
                    && !thresholds.contains(&threshold)
                {
                    problems.push(format!(
                        "{what}: threshold {threshold}, but {alert}'s are {thresholds:?}"
                    ));
                }
                let description = p["AlarmDescription"]
                    .as_str()
                    .or(p["AlarmDescription"]["Fn::Sub"].as_str())
                    .unwrap_or_default();
                match description.split_once(RUNBOOK) {
                    None => problems.push(format!("{what}: the description has no runbook link")),
                    Some((_, anchor)) => {
                        let anchor = anchor.trim_end_matches(['.', ' ']);
                        if !runbook.contains(anchor) {
                            problems.push(format!(
                                "{what}: alerts/runbook.md has no section #{anchor}"
                            ));
                        }
                    }
                }
            }
            "AWS::CloudWatch::CompositeAlarm" => {
                let rule = p["AlarmRule"]["Fn::Sub"].as_str().unwrap();
                for c in reference.captures_iter(rule) {
                    assert!(
                        t["Resources"][&c[1]]["Type"] == "AWS::CloudWatch::Alarm",
                        "{what}: {} is not an alarm",
                        &c[1]
                    );
                }
            }
            _ => {}
        }
    }
    assert!(alarms >= 10, "{alarms} alarms");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
