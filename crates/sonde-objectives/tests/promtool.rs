//! The generated rules and tests, checked by the real promtool (`/usr/bin/promtool`; on Debian
//! `apt-get install -y prometheus`). These tests fail when promtool is absent.

use std::path::Path;
use std::process::Command;

use sonde_objectives::{
    ALERTS_FILE, RECORDING_FILE, TESTS_FILE, generate, parse, write_atomically,
};
use sonde_testkit::promtool;

const EXAMPLE: &str = include_str!("../examples/objectives.toml");

/// Generates `text` into a fresh directory and runs `promtool check rules` on its rules;
/// returns the directory (keep it alive while the files are used) and the generated alerts
/// and tests.
fn generate_and_check(text: &str) -> (tempfile::TempDir, String, String) {
    let o = parse("objectives.toml", text).unwrap_or_else(|p| panic!("{p:?}"));
    let g = generate(&o).unwrap_or_else(|e| panic!("{e}"));
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = tmp.path().join("rules");
    write_atomically(&g, &out).unwrap_or_else(|e| panic!("{e}"));
    let check = promtool(&out, &["check", "rules", RECORDING_FILE, ALERTS_FILE]);
    assert!(!check.contains("FAILED"), "{check}");
    let read = |file| std::fs::read_to_string(out.join(file)).unwrap_or_else(|e| panic!("{e}"));
    let (alerts, tests) = (read(ALERTS_FILE), read(TESTS_FILE));
    (tmp, alerts, tests)
}

/// The generated tests file cut down to the header and the test groups whose objective (the
/// group name up to its first `:`) `keep` accepts: promtool takes about 15 s of CPU over every
/// group, and a change to one objective is judged by that objective's groups.
fn groups(tests: &str, keep: impl Fn(&str) -> bool) -> String {
    let mut parts = tests.split("\n  - name: '");
    let mut out = parts.next().unwrap_or_default().to_string();
    for group in parts.filter(|g| g.split_once(": ").is_some_and(|(name, _)| keep(name))) {
        out.push_str("\n  - name: '");
        out.push_str(group);
    }
    out
}

/// Writes `tests` beside the generated tests file (its rule files are relative to it) and runs
/// `promtool test rules` on it.
fn promtool_test(out: &Path, tests: &str) -> std::process::Output {
    let file = out.join(TESTS_FILE).with_file_name("only.test.yml");
    std::fs::write(&file, tests).unwrap_or_else(|e| panic!("{e}"));
    Command::new("promtool")
        .arg("test")
        .arg("rules")
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run promtool ({e}): apt-get install -y prometheus"))
}

#[test]
fn the_example_generates_rules_and_tests_that_promtool_accepts() {
    // promtool checks the rules here; it runs these tests on their committed copy
    // (`alerts::promtool_unit_tests_pass` in sonde-tests), which committed.rs proves is this
    // output: 15 s of promtool's CPU once per run instead of twice.
    let (dir, alerts, tests) = generate_and_check(EXAMPLE);
    // Every alert is tested firing (with its labels and annotations) and quiet.
    let names: Vec<&str> = alerts
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert_eq!(names.len(), 11, "{names:?}");
    for name in &names {
        let firing = tests
            .matches(&format!(
                "alertname: {name}\n        exp_alerts:\n          - exp_labels:"
            ))
            .count();
        let quiet = tests
            .matches(&format!("alertname: {name}\n        exp_alerts: []"))
            .count();
        assert!(
            firing >= 1 && quiet >= 1,
            "{name}: {firing} firing, {quiet} quiet cases"
        );
    }
    // Each alert has a runbook link, a severity, and names its objective and target.
    assert_eq!(
        alerts
            .matches("runbook_url: 'https://example.invalid/sonde/blob/main/alerts/runbook.md#")
            .count(),
        11
    );
    assert!(alerts.contains("summary: 'API requests succeed: error budget burning fast (objective availability, 99.9% over 30d)'"));
    assert!(alerts.contains("severity: critical") && alerts.contains("severity: warning"));
    // The workbook's burn rates and windows.
    for needle in [
        "objective:sli_error:ratio_rate1h{objective=\"availability\"} / 0.001 > 14.4 and objective:sli_error:ratio_rate5m{objective=\"availability\"} / 0.001 > 14.4",
        "objective:sli_error:ratio_rate6h{objective=\"availability\"} / 0.001 > 6 and objective:sli_error:ratio_rate30m{objective=\"availability\"} / 0.001 > 6",
        "objective:sli_error:ratio_rate1d{objective=\"availability\"} / 0.001 > 3 and objective:sli_error:ratio_rate2h{objective=\"availability\"} / 0.001 > 3",
        "objective:sli_error:ratio_rate3d{objective=\"availability\"} / 0.001 > 1 and objective:sli_error:ratio_rate6h{objective=\"availability\"} / 0.001 > 1",
        "objective:sli_events:rate1h{objective=\"availability\"} >= 0.1",
        "objective:http_server_request_duration_seconds:p95_rate5m{objective=\"api-latency-p95\"} > 0.3\n",
        "objective:http_server_request_duration_seconds:rate5m{objective=\"api-latency-p95\"} >= 1/60",
    ] {
        assert!(alerts.contains(needle), "missing {needle}\n{alerts}");
    }
    let recording = std::fs::read_to_string(dir.path().join("rules").join(RECORDING_FILE))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        recording.contains(
            "http_server_request_duration_seconds_bucket{http_route!=\"/health\", le=\"0.3\"}"
        ),
        "{recording}"
    );
    assert!(recording.contains("cache_requests_total{cache_name=\"users\", cache_result=~\"hit|miss\", cache_result=\"hit\"}"), "{recording}");
}

#[test]
fn changing_p95_from_300ms_to_250ms_changes_the_alert_and_its_tests_still_pass() {
    let changed = EXAMPLE.replacen("threshold = \"300ms\"", "threshold = \"250ms\"", 1);
    assert_ne!(changed, EXAMPLE);
    // Before: the example as shipped.
    let o = parse("objectives.toml", EXAMPLE).unwrap_or_else(|p| panic!("{p:?}"));
    let g = generate(&o).unwrap_or_else(|e| panic!("{e}"));
    let before = g.file(ALERTS_FILE).unwrap_or_default().to_string();
    // promtool runs on the changed objective's test groups; the others are the example's, to
    // the letter, and promtool runs on those (their committed copy) in sonde-tests.
    let (dir, after, tests) = generate_and_check(&changed);
    let rules = dir.path().join("rules");
    let only = groups(&tests, |name| name == "api-latency-p95");
    assert_eq!(
        only.matches("\n  - name: 'api-latency-p95: ").count(),
        2,
        "{only}"
    );
    let run = promtool_test(&rules, &only);
    assert!(run.status.success(), "{run:?}");
    let others = |name: &str| name != "api-latency-p95";
    let before_tests = g.file(TESTS_FILE).unwrap_or_default();
    let (kept, before_kept) = (groups(&tests, others), groups(before_tests, others));
    assert!(kept.matches("\n  - name: '").count() >= 20, "{kept}");
    assert_eq!(kept, before_kept);
    let recording =
        std::fs::read_to_string(rules.join(RECORDING_FILE)).unwrap_or_else(|e| panic!("{e}"));
    let before_recording = g.file(RECORDING_FILE).unwrap_or_default();
    let changed_recording: Vec<(&str, &str)> = before_recording
        .lines()
        .zip(recording.lines())
        .filter(|(a, b)| a != b)
        .collect();
    // The recording rules differ only in the objective's comment (the p95 is recorded, not
    // compared): the rules promtool checked for the other objectives are the example's.
    assert_eq!(recording.lines().count(), before_recording.lines().count());
    assert!(
        !changed_recording.is_empty()
            && changed_recording
                .iter()
                .all(|(_, b)| b.trim_start().starts_with("# api-latency-p95: ")),
        "{changed_recording:#?}"
    );
    let p95 = "objective:http_server_request_duration_seconds:p95_rate5m{objective=\"api-latency-p95\"} >";
    assert!(before.contains(&format!("{p95} 0.3\n")), "{before}");
    assert!(after.contains(&format!("{p95} 0.25\n")), "{after}");
    assert!(!after.contains(&format!("{p95} 0.3\n")));
    assert!(after.contains("p95 latency above 250ms (objective api-latency-p95)"));
    // Only that objective's alert changed.
    let diff: Vec<(&str, &str)> = before
        .lines()
        .zip(after.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(diff.len(), 3, "{diff:#?}");
    assert!(
        tests.contains("le=\"0.25\""),
        "the test series use the new boundary"
    );
    let o = parse("objectives.toml", &changed).unwrap_or_else(|p| panic!("{p:?}"));
    assert!(
        o.required_buckets()
            .contains(&("http.server.request.duration".to_string(), 0.25))
    );
}

#[test]
fn a_broken_alert_fails_its_generated_tests() {
    // The tests are not vacuous: loosen the threshold in the generated alert and promtool fails
    // (on the broken objective's test groups, which pass as generated).
    let (dir, alerts, tests) = generate_and_check(EXAMPLE);
    let out = dir.path().join("rules");
    let path = out.join(ALERTS_FILE);
    for (objective, from, to) in [
        (
            "api-latency-p95",
            "{objective=\"api-latency-p95\"} > 0.3\n",
            "{objective=\"api-latency-p95\"} > 3\n",
        ),
        ("availability", "/ 0.001 > 14.4", "/ 0.001 > 44.4"),
    ] {
        let only = groups(&tests, |name| name == objective);
        assert!(only.contains("  - name: '"), "no test group of {objective}");
        std::fs::write(&path, &alerts).unwrap_or_else(|e| panic!("{e}"));
        let status = promtool_test(&out, &only);
        assert!(status.status.success(), "{objective}: {status:?}");
        assert!(alerts.contains(from), "{from:?}");
        std::fs::write(&path, alerts.replace(from, to)).unwrap_or_else(|e| panic!("{e}"));
        let status = promtool_test(&out, &only);
        assert!(!status.status.success(), "promtool passed with {to:?}");
    }
}
