//! The repository's `alerts/`, `dashboards/` and `cloudwatch/` are what the example service's
//! objectives file generates: regenerated into a temporary copy, every file must equal the
//! committed one (the failure names the file and shows where it differs; `scripts/
//! generate-objectives` rewrites them). And one number changed in a copy of the file moves the
//! alert, the SLO dashboard, the hand-written dashboards' threshold lines and the CloudWatch
//! alarm and dashboard line, and nothing else, and turns the `/report` verdict of the same
//! traffic from met to violated and the load-test threshold from `p95<300ms` to `p95<250ms`.

use std::path::{Path, PathBuf};

use support::{run_in, text};

use crate::support;

/// The example service's objectives, as the committed files name it (relative to the root).
const OBJECTIVES: &str = "crates/sonde-objectives/examples/objectives.toml";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Every file under `dir`, relative to it, sorted.
fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in std::fs::read_dir(dir.join(&rel)).unwrap_or_else(|e| panic!("{e}")) {
            let e = e.unwrap_or_else(|e| panic!("{e}"));
            let r = rel.join(e.file_name());
            if e.path().is_dir() {
                stack.push(r);
            } else {
                out.push(r.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

/// A temporary copy of the root's `alerts/`, `dashboards/` and `cloudwatch/` and of the
/// objectives file, at the same relative paths.
fn copy_of_the_tree() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let root = root();
    for dir in ["alerts", "dashboards", "cloudwatch"] {
        for rel in walk(&root.join(dir)) {
            let to = tmp.path().join(dir).join(&rel);
            std::fs::create_dir_all(to.parent().unwrap_or(tmp.path()))
                .unwrap_or_else(|e| panic!("{e}"));
            std::fs::copy(root.join(dir).join(&rel), &to).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    let to = tmp.path().join(OBJECTIVES);
    std::fs::create_dir_all(to.parent().unwrap_or(tmp.path())).unwrap_or_else(|e| panic!("{e}"));
    std::fs::copy(root.join(OBJECTIVES), &to).unwrap_or_else(|e| panic!("{e}"));
    tmp
}

/// Regenerates into a copy of the tree; returns the copy and the files written.
fn regenerate(objectives: Option<&str>) -> (tempfile::TempDir, Vec<String>) {
    let tmp = copy_of_the_tree();
    if let Some(text) = objectives {
        std::fs::write(tmp.path().join(OBJECTIVES), text).unwrap_or_else(|e| panic!("{e}"));
    }
    let o = run_in(tmp.path(), &["generate", OBJECTIVES, "--into", "."]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let written: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("wrote ./").map(str::to_string))
        .collect();
    (tmp, written)
}

#[test]
fn the_committed_alerts_dashboards_and_alarms_are_what_the_objectives_generate() {
    let (tmp, written) = regenerate(None);
    for expected in [
        "alerts/objectives.recording.yml",
        "alerts/objectives.alerts.yml",
        "alerts/tests/objectives.test.yml",
        "dashboards/sonde-slo.json",
        "cloudwatch/sonde-objectives.yaml",
        // Hand-written, with threshold lines tied to objectives.
        "dashboards/sonde-service-overview.json",
        "dashboards/sonde-dependencies.json",
        "dashboards/sonde-runtime.json",
        "cloudwatch/sonde-cloudwatch.yaml",
    ] {
        assert!(
            written.iter().any(|w| w == expected),
            "{expected} not written: {written:?}"
        );
    }
    let root = root();
    let mut problems = Vec::new();
    for dir in ["alerts", "dashboards", "cloudwatch"] {
        let generated = walk(&tmp.path().join(dir));
        let committed = walk(&root.join(dir));
        for rel in &generated {
            let path = format!("{dir}/{rel}");
            let new = std::fs::read_to_string(tmp.path().join(&path)).unwrap_or_default();
            match std::fs::read_to_string(root.join(&path)) {
                Ok(old) if old == new => {}
                Ok(old) => problems.push(format!(
                    "{path} {}",
                    sonde_objectives::tree::excerpt(&old, &new)
                )),
                Err(e) => problems.push(format!("{path}: generated, not committed ({e})")),
            }
        }
        assert_eq!(generated, committed, "{dir}/: files generated vs committed");
    }
    assert!(
        problems.is_empty(),
        "the committed files differ from what {OBJECTIVES} generates; run scripts/generate-objectives and commit the result:\n{}",
        problems.join("\n")
    );
    // The binary's own check agrees.
    let o = run_in(&root, &["generate", OBJECTIVES, "--into", ".", "--check"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

#[test]
fn check_names_the_file_that_differs_and_generating_fixes_it() {
    let tmp = copy_of_the_tree();
    let overview = tmp.path().join("dashboards/sonde-service-overview.json");
    let text0 = std::fs::read_to_string(&overview).unwrap_or_else(|e| panic!("{e}"));
    // Someone edits a threshold line by hand.
    let edited = text0.replacen("\"value\": 0.3\n", "\"value\": 0.4\n", 1);
    assert_ne!(edited, text0, "the overview draws the 0.3 s objective");
    std::fs::write(&overview, &edited).unwrap_or_else(|e| panic!("{e}"));
    std::fs::remove_file(tmp.path().join("alerts/objectives.alerts.yml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let o = run_in(
        tmp.path(),
        &["generate", OBJECTIVES, "--into", ".", "--check"],
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("dashboards/sonde-service-overview.json: differs from line")
            && t.contains("  - ")
            && t.contains("\"value\": 0.4")
            && t.contains("  + ")
            && t.contains("\"value\": 0.3"),
        "{t}"
    );
    assert!(
        t.contains("alerts/objectives.alerts.yml: cannot be read"),
        "{t}"
    );
    assert!(t.contains("2 of 9 files differ"), "{t}");
    // --check wrote nothing.
    assert_eq!(
        std::fs::read_to_string(&overview).ok().as_deref(),
        Some(edited.as_str())
    );
    // A file of the tree the generator does not own is left alone.
    std::fs::write(tmp.path().join("alerts/mine.yml"), "groups: []\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let o = run_in(tmp.path(), &["generate", OBJECTIVES, "--into", "."]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(std::fs::read_to_string(&overview).ok(), Some(text0));
    assert!(tmp.path().join("alerts/objectives.alerts.yml").is_file());
    assert!(tmp.path().join("alerts/mine.yml").is_file());
    let o = run_in(
        tmp.path(),
        &["generate", OBJECTIVES, "--into", ".", "--check"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // Usage: --check needs --into, --out and --into exclude each other.
    for args in [
        vec!["generate", OBJECTIVES, "--check"],
        vec!["generate", OBJECTIVES, "--out", "x", "--into", "."],
    ] {
        assert_eq!(run_in(tmp.path(), &args).status.code(), Some(2), "{args:?}");
    }
}

/// The lines of `b` that differ from `a` (same length), as (line number, a, b).
fn changed_lines(a: &str, b: &str) -> Vec<(usize, String, String)> {
    assert_eq!(a.lines().count(), b.lines().count(), "same length");
    a.lines()
        .zip(b.lines())
        .enumerate()
        .filter(|(_, (x, y))| x != y)
        .map(|(n, (x, y))| (n + 1, x.trim().to_string(), y.trim().to_string()))
        .collect()
}

#[test]
fn api_p95_300ms_to_250ms_moves_the_alert_the_dashboard_lines_and_the_alarms() {
    let example =
        std::fs::read_to_string(root().join(OBJECTIVES)).unwrap_or_else(|e| panic!("{e}"));
    let changed = example.replacen("threshold = \"300ms\"", "threshold = \"250ms\"", 1);
    assert_ne!(changed, example);
    let (before, _) = regenerate(None);
    let (after, _) = regenerate(Some(&changed));
    let read = |dir: &tempfile::TempDir, path: &str| {
        std::fs::read_to_string(dir.path().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
    };

    // The alert.
    let alert = "objective:http_server_request_duration_seconds:p95_rate5m{objective=\"api-latency-p95\"} >";
    assert!(read(&before, "alerts/objectives.alerts.yml").contains(&format!("{alert} 0.3\n")));
    assert!(read(&after, "alerts/objectives.alerts.yml").contains(&format!("{alert} 0.25\n")));

    // The hand-written latency panel: only its p95 line moved (p99 stays at 1.5 s).
    let path = "dashboards/sonde-service-overview.json";
    let lines = changed_lines(&read(&before, path), &read(&after, path));
    assert_eq!(
        lines
            .iter()
            .map(|(_, a, b)| (a.as_str(), b.as_str()))
            .collect::<Vec<_>>(),
        vec![("\"value\": 0.3", "\"value\": 0.25")],
        "{path}"
    );
    let d: serde_json::Value =
        serde_json::from_str(&read(&after, path)).unwrap_or_else(|e| panic!("{e}"));
    let panel = d["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["title"] == "Latency p50/p95/p99 by route")
        .unwrap_or_else(|| panic!("no latency panel"));
    let steps: Vec<f64> = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["value"].as_f64())
        .collect();
    assert_eq!(steps, vec![0.25, 1.5]);
    // The other hand-written dashboards draw other objectives: unchanged.
    for path in [
        "dashboards/sonde-dependencies.json",
        "dashboards/sonde-runtime.json",
    ] {
        assert_eq!(read(&before, path), read(&after, path), "{path}");
    }
    // The SLO dashboard.
    let slo = changed_lines(
        &read(&before, "dashboards/sonde-slo.json"),
        &read(&after, "dashboards/sonde-slo.json"),
    );
    assert!(
        slo.iter()
            .any(|(_, a, b)| a == "\"value\": 0.3" && b == "\"value\": 0.25"),
        "{slo:?}"
    );

    // The CloudWatch alarm, and the CloudWatch dashboard's lines of that alert.
    let alarm = |dir: &tempfile::TempDir| {
        let t = read(dir, "cloudwatch/sonde-objectives.yaml");
        t.lines()
            .skip_while(|l| *l != "  ApiLatencyP95HighAlarm:")
            .skip(1)
            .take_while(|l| l.starts_with("    "))
            .find_map(|l| l.trim().strip_prefix("Threshold: ").map(str::to_string))
            .unwrap_or_else(|| panic!("no ApiLatencyP95HighAlarm threshold in\n{t}"))
    };
    assert_eq!(alarm(&before), "0.3");
    assert_eq!(alarm(&after), "0.25");
    let path = "cloudwatch/sonde-cloudwatch.yaml";
    let lines = changed_lines(&read(&before, path), &read(&after, path));
    assert!(!lines.is_empty());
    for (n, a, b) in &lines {
        assert_eq!(
            (a.as_str(), b.as_str()),
            ("\"value\": 0.3,", "\"value\": 0.25,"),
            "{path}:{n}"
        );
        let label = read(&after, path)
            .lines()
            .nth(n - 2)
            .unwrap_or_default()
            .trim()
            .to_string();
        assert_eq!(label, "\"label\": \"ApiLatencyP95High\",", "{path}:{n}");
    }

    // The /report verdict for the same recorded traffic, through the real Judge.
    #[cfg(feature = "report")]
    {
        let (met, violated) = (report_verdict(&example), report_verdict(&changed));
        assert_eq!(met, "met");
        assert_eq!(violated, "violated");
    }

    // The load-test threshold.
    let p95 = |text: &str| {
        let o = sonde_objectives::parse(OBJECTIVES, text).unwrap_or_else(|e| panic!("{e:?}"));
        let (thresholds, _) = sonde_objectives::load_thresholds(&o);
        thresholds
            .into_iter()
            .find(|t| t.objective == "api-latency-p95")
            .map(|t| t.threshold)
            .unwrap_or_else(|| panic!("no api-latency-p95 load threshold"))
    };
    assert_eq!(p95(&example), "p95<300ms");
    assert_eq!(p95(&changed), "p95<250ms");
}

/// The `/report` verdict of `api-latency-p95` under `objectives_text` for the same traffic:
/// API requests taking 270 ms, on a registry with the file's boundaries installed, over a
/// five-minute window and since start.
#[cfg(feature = "report")]
fn report_verdict(objectives_text: &str) -> String {
    use sonde_prometheus::Window;
    use std::time::Duration;
    let objectives =
        sonde_objectives::parse(OBJECTIVES, objectives_text).unwrap_or_else(|e| panic!("{e:?}"));
    let registry = sonde_core::Registry::new();
    objectives
        .install_boundaries(&registry)
        .unwrap_or_else(|e| panic!("{e}"));
    let h = sonde_core::testing::seconds_histogram(
        &registry,
        "http.server.request.duration",
        &[
            "http.request.method",
            "http.route",
            "http.response.status_code",
            "error.type",
        ],
    );
    for _ in 0..200 {
        h.with(&["GET", "/orders", "200", ""]).observe(0.270);
    }
    let now = registry.snapshot();
    let windows = [
        Window {
            name: "5m".into(),
            span: Some(Duration::from_secs(300)),
            covered: Duration::from_secs(300),
            changes: now.clone(),
        },
        Window {
            name: "since_start".into(),
            span: None,
            covered: Duration::from_secs(300),
            changes: now,
        },
    ];
    let verdicts = objectives.judge().judge(&windows);
    let o = verdicts
        .as_array()
        .and_then(|a| a.iter().find(|o| o["name"] == "api-latency-p95"))
        .unwrap_or_else(|| panic!("no api-latency-p95 in {verdicts}"));
    assert_eq!(o["window"], "5m", "{o}");
    let p95 = o["value"].as_f64().unwrap_or_else(|| panic!("{o}"));
    assert!((p95 - 0.27).abs() / 0.27 < 0.02, "{o}");
    o["verdict"].as_str().unwrap_or_default().to_owned()
}
