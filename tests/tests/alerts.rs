//! The Prometheus rules of `alerts/`: promtool accepts them and their unit tests pass, every alert
//! follows the conventions (CamelCase name, severity, static summary, templated description, a
//! runbook link to a section that exists), every alert has a promtool case where it fires and
//! one where it does not, and the README documents each one.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use sonde_tests::grafana::{
    self, Rule, all_rules, comparison_thresholds, markdown_anchors, read_yaml, repo_root,
    rule_files, rule_test_files, str_of,
};
const RUNBOOK_BASE: &str = "https://example.invalid/sonde/blob/main/alerts/runbook.md#";

/// promtool run at the repository root.
fn promtool(args: &[&str]) -> String {
    sonde_tests::prometheus::promtool(&repo_root(), args)
}

fn relative(paths: &[std::path::PathBuf]) -> Vec<String> {
    paths
        .iter()
        .map(|p| {
            p.strip_prefix(repo_root())
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

fn alerts() -> Vec<Rule> {
    all_rules()
        .into_iter()
        .filter(|r| r.alert.is_some())
        .collect()
}

#[test]
fn promtool_checks_the_rule_files() {
    let files = relative(&rule_files());
    assert!(files.len() >= 5, "rule files: {files:?}");
    let mut args = vec!["check", "rules"];
    args.extend(files.iter().map(String::as_str));
    let out = promtool(&args);
    assert_eq!(
        out.matches("SUCCESS").count(),
        files.len(),
        "every file checked:\n{out}"
    );
}

#[test]
fn promtool_unit_tests_pass() {
    let files = relative(&rule_test_files());
    assert!(!files.is_empty());
    let mut args = vec!["test", "rules"];
    args.extend(files.iter().map(String::as_str));
    let out = promtool(&args);
    assert!(!out.contains("FAILED"), "{out}");
    // Every rule file is exercised by some test file.
    let mut tested = BTreeSet::new();
    for f in rule_test_files() {
        for r in read_yaml(&f)["rule_files"].as_array().into_iter().flatten() {
            let path = f.parent().unwrap().join(r.as_str().unwrap());
            tested.insert(path.canonicalize().unwrap());
        }
    }
    for f in rule_files() {
        assert!(
            tested.contains(&f.canonicalize().unwrap()),
            "{} is not loaded by any promtool test in alerts/tests/",
            f.display()
        );
    }
}

fn is_camel_case(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_uppercase())
        && name.chars().all(|c| c.is_ascii_alphanumeric())
        && name.chars().any(|c| c.is_ascii_lowercase())
}

#[test]
fn every_alert_follows_the_conventions() {
    let runbook = std::fs::read_to_string(repo_root().join("alerts/runbook.md")).unwrap();
    let anchors = markdown_anchors(&runbook);
    let alerts = alerts();
    assert!(alerts.len() >= 20, "{} alerts", alerts.len());
    let mut names = BTreeSet::new();
    let mut problems = Vec::new();
    for a in &alerts {
        let name = a.name();
        let mut bad = |what: String| problems.push(format!("{} ({}): {what}", name, a.file_name()));
        if !names.insert(name.to_owned()) {
            bad("defined twice".into());
        }
        if !is_camel_case(name) {
            bad("the name is not CamelCase".into());
        }
        match a.labels.get("severity").map(String::as_str) {
            Some("critical" | "warning" | "info") => {}
            other => bad(format!("severity {other:?}: use critical, warning or info")),
        }
        let summary = a.annotations.get("summary").cloned().unwrap_or_default();
        if summary.trim().is_empty() {
            bad("no summary".into());
        } else if summary.contains("{{") {
            bad(format!(
                "the summary must be static (it groups notifications): {summary:?}"
            ));
        }
        let description = a
            .annotations
            .get("description")
            .cloned()
            .unwrap_or_default();
        if !(description.contains("{{") && description.contains("$labels")) {
            bad(format!(
                "the description must be templated with the labels: {description:?}"
            ));
        }
        match a.annotations.get("runbook_url") {
            None => bad("no runbook_url".into()),
            Some(url) => match url.strip_prefix(RUNBOOK_BASE) {
                None => bad(format!(
                    "runbook_url {url:?} does not point into alerts/runbook.md ({RUNBOOK_BASE}...)"
                )),
                Some(anchor) => {
                    if !anchors.contains(anchor) {
                        bad(format!("alerts/runbook.md has no section #{anchor}"));
                    }
                    if anchor != name.to_ascii_lowercase() {
                        bad(format!(
                            "the runbook anchor #{anchor} is not the alert's name in lower case"
                        ));
                    }
                }
            },
        }
        if comparison_thresholds(&a.expr).is_empty() {
            bad(format!(
                "no threshold: the expression compares nothing with a number: {}",
                a.expr
            ));
        }
        if let Some(f) = &a.for_ {
            assert!(grafana::parse_duration(f).is_some(), "{name}: for: {f}");
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn recording_rules_follow_the_naming_convention() {
    let mut problems = Vec::new();
    let mut names = BTreeSet::new();
    let mut series = BTreeSet::new();
    for r in all_rules().iter().filter(|r| r.record.is_some()) {
        let name = r.name();
        names.insert(name.to_owned());
        // One series per name and labels: the generated objectives' rules record one name per
        // objective, told apart by their `objective` label.
        if !series.insert((name.to_owned(), r.labels.clone())) {
            problems.push(format!("{name} {:?}: recorded twice", r.labels));
        }
        let parts: Vec<&str> = name.split(':').collect();
        if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
            problems.push(format!("{name}: not level:metric:operations"));
        }
        // Recorded values are for alerts and dashboards: never a threshold inside.
        if !grafana::comparison_thresholds(&r.expr).is_empty() {
            problems.push(format!("{name}: compares with a threshold: {}", r.expr));
        }
    }
    assert!(names.len() >= 30, "{} recording rules", names.len());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// alertname -> (cases where it fires, cases where it does not), over alerts/tests/*.yml.
fn test_cases() -> BTreeMap<String, (usize, usize)> {
    let mut out: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for f in rule_test_files() {
        let doc = read_yaml(&f);
        for t in doc["tests"].as_array().into_iter().flatten() {
            for case in t["alert_rule_test"].as_array().into_iter().flatten() {
                let name = str_of(case, "alertname").to_owned();
                let fires = match &case["exp_alerts"] {
                    Value::Array(a) => !a.is_empty(),
                    _ => false,
                };
                let e = out.entry(name).or_default();
                if fires {
                    e.0 += 1;
                } else {
                    e.1 += 1;
                }
            }
        }
    }
    out
}

#[test]
fn every_alert_has_a_firing_and_a_silent_promtool_case() {
    let cases = test_cases();
    let mut problems = Vec::new();
    let names: BTreeSet<String> = alerts().iter().map(|a| a.name().to_owned()).collect();
    for name in &names {
        match cases.get(name) {
            None => problems.push(format!("{name}: no promtool case at all")),
            Some((0, _)) => problems.push(format!("{name}: no case where it fires")),
            Some((_, 0)) => problems.push(format!(
                "{name}: no case where it does not fire (exp_alerts: [])"
            )),
            Some(_) => {}
        }
    }
    for name in cases.keys() {
        if !names.contains(name) {
            problems.push(format!(
                "alerts/tests tests {name}, which no rule file defines"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_readme_documents_every_alert_and_how_to_change_thresholds_and_objectives() {
    let readme = std::fs::read_to_string(repo_root().join("alerts/README.md")).unwrap();
    for a in alerts() {
        assert!(
            readme.contains(&format!("`{}`", a.name())),
            "alerts/README.md does not list {}",
            a.name()
        );
    }
    sonde::testing::assert_contains_all(
        &readme,
        &[
            "## Objectives",
            "## Changing a threshold",
            "## Changing an objective",
        ],
    );
    assert!(readme.contains("scripts/generate-objectives"));
    // Every burn-rate alert divides its error ratios by the budget of the target its summary
    // states ("(objective availability, 99.9% over 30d)": 1 - 0.999).
    let target = regex::Regex::new(r"\(objective [a-z0-9_-]+, ([0-9.]+)% over").unwrap();
    let mut burn_alerts = 0;
    for a in alerts().iter().filter(|a| a.name().starts_with("Slo")) {
        burn_alerts += 1;
        let summary = &a.annotations["summary"];
        let pct: f64 = target
            .captures(summary)
            .unwrap_or_else(|| panic!("{}: no target in {summary:?}", a.name()))[1]
            .parse()
            .unwrap();
        let budget = 1.0 - pct / 100.0;
        let divisors: Vec<f64> = a
            .expr
            .split("/ ")
            .skip(1)
            .filter_map(|s| s.split_whitespace().next()?.parse().ok())
            .collect();
        assert!(
            !divisors.is_empty() && divisors.iter().all(|d| (d - budget).abs() < 1e-9),
            "{}: divides by {divisors:?}, its budget is {budget}: {}",
            a.name(),
            a.expr
        );
    }
    assert!(burn_alerts >= 4, "{burn_alerts} burn-rate alerts");
}
