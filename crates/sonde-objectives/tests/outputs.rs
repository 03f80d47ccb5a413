//! The Grafana SLO dashboard and the CloudWatch alarms generated from the example objectives:
//! the dashboard's house rules (and its queries parsed by the real promtool), the template
//! checked by the real cfn-lint, and one number of the file changing both. These tests fail
//! when promtool or cfn-lint is absent.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use sonde_objectives::cloudwatch::CLOUDWATCH_FILE;
use sonde_objectives::grafana::{DASHBOARD_FILE, DASHBOARD_UID};
use sonde_objectives::{generate, parse};

const EXAMPLE: &str = include_str!("../examples/objectives.toml");

fn generated(text: &str, file: &str) -> String {
    let o = parse("objectives.toml", text).unwrap_or_else(|p| panic!("{p:?}"));
    let g = generate(&o).unwrap_or_else(|e| panic!("{e}"));
    g.file(file)
        .unwrap_or_else(|| panic!("{file} not generated"))
        .to_string()
}

fn dashboard(text: &str) -> Value {
    let s = generated(text, DASHBOARD_FILE);
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("{DASHBOARD_FILE}: invalid JSON: {e}"))
}

fn panels(d: &Value) -> Vec<&Value> {
    d["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["type"] != "row")
        .collect()
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_default()
}

/// The panel of the dashboard `d` titled `title`.
fn panel<'a>(d: &'a Value, title: &str) -> Option<&'a Value> {
    panels(d).into_iter().find(|p| str_of(p, "title") == title)
}

/// The values of a panel's threshold steps (the first, the base, has none).
fn steps(p: &Value) -> Vec<f64> {
    p["fieldConfig"]["defaults"]["thresholds"]["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["value"].as_f64())
        .collect()
}

/// The example with api-latency-p95's threshold at 250ms and availability at 99.95 %.
fn changed() -> String {
    let c = EXAMPLE
        .replacen("threshold = \"300ms\"", "threshold = \"250ms\"", 1)
        .replacen("target = \"99.9%\"", "target = \"99.95%\"", 1);
    assert_ne!(c, EXAMPLE);
    c
}

/// Objectives of other shapes: a latency ratio on a histogram no threshold objective draws,
/// per instance, and a counter ratio with bad events.
const OTHER: &str = r#"
[ratio.checkout-fast]
description = "checkout requests within 1s"
target = "99%"
window = "7d"
total = { histogram = "http.server.request.duration", selector = 'http.route="/checkout"' }
good = { le = "1s" }
by = ["instance"]

[ratio.jobs]
description = "jobs succeed"
target = "99.5%"
window = "30d"
total = { counter = "jobs.processed" }
bad = { selector = 'outcome=~"failed|timeout"' }
"#;

#[test]
fn the_dashboard_follows_the_house_rules() {
    let example = dashboard(EXAMPLE);
    house_rules(&example);
    // 4 threshold objectives × 3 panels, 4 ratio objectives × 3 panels.
    assert_eq!(panels(&example).len(), 24);
    let other = dashboard(OTHER);
    house_rules(&other);
    let titles: Vec<&str> = panels(&other).iter().map(|p| str_of(p, "title")).collect();
    assert!(
        titles.contains(&"checkout-fast: distribution"),
        "{titles:?}"
    );
}

fn house_rules(d: &Value) {
    let d = d.clone();
    assert_eq!(d["uid"], DASHBOARD_UID);
    assert!(d["id"].is_null());
    assert!(d["schemaVersion"].as_i64().unwrap_or(0) >= 39);
    assert!(!str_of(&d, "title").is_empty() && !str_of(&d, "description").is_empty());
    let vars = d["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no variable {name}"))
    };
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    for name in ["job", "instance"] {
        let v = var(name);
        assert_eq!(v["type"], "query");
        assert_eq!(v["datasource"]["uid"], "${datasource}");
        assert_eq!(v["includeAll"], true);
        assert_eq!(v["allValue"], ".+");
    }
    assert!(str_of(&var("instance"), "query").contains("$job"));

    let ps = panels(&d);
    assert!(ps.len() >= 3, "{} panels", ps.len());
    let mut titles = BTreeSet::new();
    let mut ids = BTreeSet::new();
    let mut cells = BTreeSet::new();
    for p in d["panels"].as_array().into_iter().flatten() {
        assert!(ids.insert(p["id"].as_i64().unwrap_or(-1)), "duplicate id");
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_i64().unwrap_or(-1),
            g["y"].as_i64().unwrap_or(-1),
            g["w"].as_i64().unwrap_or(0),
            g["h"].as_i64().unwrap_or(0),
        );
        assert!(x >= 0 && y >= 0 && w > 0 && h > 0 && x + w <= 24, "{g}");
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(cells.insert((cx, cy)), "panels overlap at {cx},{cy}: {g}");
            }
        }
    }
    for p in ps {
        let title = str_of(p, "title");
        assert!(!title.is_empty() && titles.insert(title.to_string()), "{p}");
        assert!(str_of(p, "description").len() >= 20, "{title}: description");
        assert_eq!(p["datasource"]["type"], "prometheus", "{title}");
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let defaults = &p["fieldConfig"]["defaults"];
        assert!(!str_of(defaults, "unit").is_empty(), "{title}: unit");
        let steps = defaults["thresholds"]["steps"].as_array();
        assert!(
            steps.is_some_and(|s| !s.is_empty() && s[0]["value"].is_null()),
            "{title}: thresholds"
        );
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
            let expr = str_of(&t, "expr");
            assert!(expr.contains("job=~\"$job\""), "{title}: {expr}");
            // Raw series are narrowed by instance too; recording rules when they keep it.
            if !expr.contains("objective:") {
                assert!(expr.contains("instance=~\"$instance\""), "{title}: {expr}");
            }
        }
    }
}

#[test]
fn the_dashboard_shows_each_objective_and_its_numbers() {
    let d = dashboard(EXAMPLE);
    let panel = |title: &str| panel(&d, title).unwrap_or_else(|| panic!("no panel {title:?}"));
    let exprs = |p: &Value| -> Vec<String> {
        p["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| str_of(t, "expr").to_string())
            .collect()
    };
    // Threshold objective: the recording rule over its window, a line at the threshold.
    let p95 = panel("api-latency-p95: p95 over 5m");
    assert_eq!(steps(p95), vec![0.3]);
    assert!(exprs(p95)[0].starts_with(
        "objective:http_server_request_duration_seconds:p95_rate5m{objective=\"api-latency-p95\""
    ));
    assert_eq!(steps(panel("cold-start-p95: p95 now")), vec![0.5]);
    // Ratio objective: SLI and budget over the compliance window, burn rates from the rules.
    let sli = panel("availability: SLI over 30d");
    assert_eq!(sli["timeFrom"], "30d");
    assert_eq!(steps(sli), vec![0.999]);
    assert!(exprs(sli)[0].contains("[$__range]"));
    let budget = panel("availability: error budget remaining");
    assert!(
        exprs(budget)[0].ends_with(") / 0.001"),
        "{:?}",
        exprs(budget)
    );
    assert_eq!(steps(budget), vec![0.0]);
    let burn = panel("availability: burn rate 1h and 6h");
    let e = exprs(burn);
    assert_eq!(
        e,
        vec![
            "objective:sli_error:ratio_rate1h{objective=\"availability\",job=~\"$job\"} / 0.001",
            "objective:sli_error:ratio_rate6h{objective=\"availability\",job=~\"$job\"} / 0.001",
        ]
    );
    assert_eq!(steps(burn), vec![1.0, 3.0, 6.0, 14.4]);
    // cache-hits (70 %): no page pair can happen, its lines are the ticket's.
    assert_eq!(
        steps(panel("cache-hits: burn rate 1h and 6h")),
        vec![1.0, 3.0]
    );
}

#[test]
fn one_number_changes_the_dashboard_threshold() {
    let before = dashboard(EXAMPLE);
    let after = dashboard(&changed());
    let value =
        |d: &Value, title: &str| -> Vec<f64> { panel(d, title).map(steps).unwrap_or_default() };
    for title in ["api-latency-p95: p95 now", "api-latency-p95: p95 over 5m"] {
        assert_eq!(value(&before, title), vec![0.3], "{title}");
        assert_eq!(value(&after, title), vec![0.25], "{title}");
    }
    assert_eq!(value(&after, "availability: SLI over 30d"), vec![0.9995]);
    // The other objectives' panels did not move.
    assert_eq!(value(&after, "api-latency-p99: p99 over 5m"), vec![1.5]);
}

/// Every dashboard query, with Grafana's variables filled in, parses as PromQL: checked by
/// promtool as the expressions of recording rules.
#[test]
fn the_dashboard_queries_parse_with_promtool() {
    let (d, other) = (dashboard(EXAMPLE), dashboard(OTHER));
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let mut n = 0;
    for p in panels(&d).into_iter().chain(panels(&other)) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = str_of(t, "expr")
                .replace("$job", ".+")
                .replace("$instance", ".+")
                .replace("$__rate_interval", "1m")
                .replace("$__range", "30d");
            n += 1;
            rules.push_str(&format!(
                "      - record: dashboard:query{n}\n        expr: {}\n",
                serde_json::to_string(&expr).unwrap_or_default()
            ));
        }
    }
    assert!(n >= 30);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.path().join("dashboard.yml"), rules).unwrap_or_else(|e| panic!("{e}"));
    run_tool(
        dir.path(),
        "promtool",
        &["check", "rules", "dashboard.yml"],
        "install it (Debian: apt-get install -y prometheus)",
    );
}

fn cfn_lint(dir: &Path, files: &[&str]) {
    run_tool(dir, "cfn-lint", files, "python3 -m pip install cfn-lint");
}

/// Runs `program ARGS` in `dir` and fails the test with its output unless it succeeds;
/// `install` says how to get the program.
fn run_tool(dir: &Path, program: &str, args: &[&str], install: &str) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}): {install}"));
    assert!(
        out.status.success(),
        "{program} {} ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The property `key` of the resource `id` (the first line `key: value` of its block).
fn property(template: &str, id: &str, key: &str) -> String {
    let header = format!("  {id}:");
    let block: Vec<&str> = template
        .lines()
        .skip_while(|l| *l != header)
        .skip(1)
        .take_while(|l| l.starts_with("   "))
        .collect();
    assert!(!block.is_empty(), "no resource {id}");
    block
        .iter()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("{id} has no {key}:\n{}", block.join("\n")))
        .to_string()
}

/// The `Threshold` of the alarm `id`.
fn alarm_threshold(template: &str, id: &str) -> String {
    property(template, id, "Threshold")
}

#[test]
fn the_cloudwatch_template_passes_cfn_lint() {
    // One cfn-lint run for the three (its start-up is most of its time).
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let files = ["example.yaml", "changed.yaml", "other.yaml"];
    for (text, file) in [EXAMPLE.to_string(), changed(), OTHER.to_string()]
        .iter()
        .zip(files)
    {
        std::fs::write(dir.path().join(file), generated(text, CLOUDWATCH_FILE))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    cfn_lint(dir.path(), &files);
}

#[test]
fn the_cloudwatch_alarms_carry_the_objectives_numbers() {
    let t = generated(EXAMPLE, CLOUDWATCH_FILE);
    // One alarm per threshold objective: the percentile statistic over the window.
    assert_eq!(alarm_threshold(&t, "ApiLatencyP95HighAlarm"), "0.3");
    assert_eq!(
        property(&t, "ApiLatencyP95HighAlarm", "ExtendedStatistic"),
        "'p95'"
    );
    assert_eq!(
        property(&t, "ApiLatencyP95HighAlarm", "MetricName"),
        "'http.server.request.duration'"
    );
    assert_eq!(property(&t, "ApiLatencyP95HighAlarm", "Period"), "300");
    assert_eq!(alarm_threshold(&t, "ApiLatencyP99HighAlarm"), "1.5");
    assert_eq!(alarm_threshold(&t, "DbLatencyP95HighAlarm"), "0.1");
    assert_eq!(alarm_threshold(&t, "ColdStartP95HighAlarm"), "0.5");
    assert_eq!(property(&t, "ColdStartP95HighAlarm", "Period"), "3600");
    // Ratio objectives: the error ratio by metric math, above factor × budget.
    assert_eq!(alarm_threshold(&t, "AvailabilityBurn1hAlarm"), "0.0144");
    assert_eq!(alarm_threshold(&t, "AvailabilityBurn6hAlarm"), "0.006");
    assert!(
        property(&t, "AvailabilityBurn1hAlarm", "Expression").contains("FILL(e4, 0)) / t0"),
        "{t}"
    );
    assert_eq!(alarm_threshold(&t, "ErrorsBurn5mAlarm"), "0.144");
    assert!(t.contains("Stat: 'PR(:0.3)'"));
    assert_eq!(alarm_threshold(&t, "CacheHitsBurn2hAlarm"), "0.9");
    assert_eq!(
        property(&t, "SloAvailabilityBudgetBurnFastAlarm", "Type"),
        "'AWS::CloudWatch::CompositeAlarm'"
    );
    assert!(t.contains(
        "(ALARM(\"${AvailabilityBurn1hAlarm}\") AND ALARM(\"${AvailabilityBurn5mAlarm}\")) OR (ALARM(\"${AvailabilityBurn6hAlarm}\") AND ALARM(\"${AvailabilityBurn30mAlarm}\"))"
    ));
    // The rollups the exporter must send are listed.
    assert!(t.contains("#       .rollup([\"error.type\"])"), "{t}");
}

#[test]
fn one_number_changes_the_cloudwatch_alarm_threshold() {
    let before = generated(EXAMPLE, CLOUDWATCH_FILE);
    let after = generated(&changed(), CLOUDWATCH_FILE);
    assert_eq!(alarm_threshold(&before, "ApiLatencyP95HighAlarm"), "0.3");
    assert_eq!(alarm_threshold(&after, "ApiLatencyP95HighAlarm"), "0.25");
    // 99.95 %: a budget of 0.0005, so 14.4 × 0.0005.
    assert_eq!(alarm_threshold(&after, "AvailabilityBurn1hAlarm"), "0.0072");
    // Nothing else moved but those two objectives' alarms.
    assert_eq!(alarm_threshold(&after, "ApiLatencyP99HighAlarm"), "1.5");
    assert_eq!(alarm_threshold(&after, "ErrorsBurn1hAlarm"), "0.144");
}
