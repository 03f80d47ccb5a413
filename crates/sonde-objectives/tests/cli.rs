//! The `sonde-objectives` binary: exit codes, located errors, atomic output, and `validate`
//! against a live `/metrics` page served on loopback.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;

use sonde_core::testing::assert_contains_all;
use support::{run, text};

use crate::support;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/objectives.toml");

#[test]
fn validate_the_example() {
    let o = run(&["validate", EXAMPLE]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("needs bucket boundary 0.3 on http.server.request.duration"));
}

#[test]
fn a_malformed_file_exits_2_with_located_errors() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("objectives.toml");
    std::fs::write(
        &file,
        "[threshold.api]\nmetric = \"http.server.request.duration\"\npercentile = \"p95\"\nthreshold = \"300\"\nwindw = \"5m\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let f = file.display().to_string();
    for cmd in ["validate", "generate"] {
        let mut args = vec![cmd, f.as_str()];
        let out = dir.path().join("out").display().to_string();
        if cmd == "generate" {
            args.extend(["--out", out.as_str()]);
        }
        let o = run(&args);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(2), "{t}");
        assert!(
            t.contains(&format!(
                "{f}:4:13: `threshold` of threshold objective `api` is `300`"
            )),
            "{t}"
        );
        assert!(
            t.contains(&format!(
                "{f}:5:1: unknown key `windw` in [threshold.api]; did you mean `window`?"
            )),
            "{t}"
        );
        assert!(!dir.path().join("out").exists(), "nothing written on error");
    }
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(run(&[]).status.code(), Some(2));
    assert_eq!(run(&["generate", EXAMPLE]).status.code(), Some(2));
    assert_eq!(
        run(&["validate", "/nonexistent/objectives.toml"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(run(&["--help"]).status.code(), Some(0));
}

#[test]
fn generate_replaces_its_own_output_and_refuses_a_foreign_directory() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = dir.path().join("rules");
    let o = run(&["generate", EXAMPLE, "--out", &out.display().to_string()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(out.join("alerts/objectives.alerts.yml").is_file());
    assert!(out.join("alerts/tests/objectives.test.yml").is_file());
    assert!(out.join("dashboards/sonde-slo.json").is_file());
    assert!(out.join("cloudwatch/sonde-objectives.yaml").is_file());
    // Again, over its own output.
    let o = run(&["generate", EXAMPLE, "--out", &out.display().to_string()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // A directory with someone else's file is left alone.
    std::fs::write(out.join("notes.txt"), "mine").unwrap_or_else(|e| panic!("{e}"));
    let o = run(&["generate", EXAMPLE, "--out", &out.display().to_string()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("notes.txt"), "{}", text(&o));
    assert!(out.join("notes.txt").is_file() && out.join("alerts/objectives.alerts.yml").is_file());
    // No temporary directory left behind.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Serves `page` on loopback for `requests` requests; returns the URL.
fn serve(page: String, requests: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    std::thread::spawn(move || {
        for stream in listener.incoming().take(requests) {
            let Ok(mut s) = stream else { continue };
            let mut reader = BufReader::new(s.try_clone().unwrap_or_else(|e| panic!("{e}")));
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let head = sonde_testkit::http_head(
                "HTTP/1.1 200 OK",
                page.len(),
                &[("Content-Type", "text/plain; version=0.0.4")],
            );
            let _ = write!(s, "{head}{page}");
        }
    });
    format!("http://{addr}/metrics")
}

fn histogram(name: &str, labels: &str, les: &[&str]) -> String {
    let mut out = format!("# TYPE {name} histogram\n");
    for le in les.iter().chain(&["+Inf"]) {
        out.push_str(&format!("{name}_bucket{{{labels},le=\"{le}\"}} 1\n"));
    }
    out.push_str(&format!(
        "{name}_sum{{{labels}}} 1\n{name}_count{{{labels}}} 1\n"
    ));
    out
}

#[test]
fn validate_against_a_live_metrics_page() {
    let http = "http_request_method=\"GET\",http_route=\"/orders\",http_response_status_code=\"200\",error_type=\"\"";
    let db = "db_system_name=\"sqlite\",db_operation_name=\"SELECT\",db_collection_name=\"users\",error_type=\"\"";
    let complete = [
        histogram("http_server_request_duration_seconds", http, &["0.1", "0.25", "0.3", "0.5", "1.0", "1.5"]),
        histogram("db_client_operation_duration_seconds", db, &["0.05", "0.1", "0.25"]),
        histogram("faas_init_duration_seconds", "faas_trigger=\"http\"", &["0.25", "0.5", "1.0"]),
        "# TYPE cache_requests counter\ncache_requests_total{cache_name=\"users\",cache_result=\"hit\"} 5\ncache_requests_total{cache_name=\"users\",cache_result=\"miss\"} 1\n".to_string(),
    ]
    .concat();
    let url = serve(complete.clone(), 1);
    let o = run(&["validate", EXAMPLE, "--metrics-url", &url]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // sonde's default buckets (no 0.3), no cold starts, no cache, the route label renamed.
    let partial = [
        histogram(
            "http_server_request_duration_seconds",
            &http.replace("http_route", "route"),
            &["0.1", "0.25", "0.5", "1.0", "2.5"],
        ),
        histogram(
            "db_client_operation_duration_seconds",
            db,
            &["0.05", "0.1", "0.25"],
        ),
    ]
    .concat();
    let url = serve(partial, 1);
    let o = run(&["validate", EXAMPLE, "--metrics-url", &url]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert_contains_all(
        &t,
        &[
            "the service exports no `faas_init_duration_seconds_bucket` (metric faas.init_duration)",
            "the service exports no `cache_requests_total` (metric cache.requests)",
            "`http_server_request_duration_seconds_bucket` has no label `http.route` (http_route)",
            "has no bucket boundary at 300ms (le=\"0.3\")",
            "has no bucket boundary at 1.5s (le=\"1.5\")",
        ],
    );
    assert!(
        t.lines()
            .all(|l| l.starts_with(EXAMPLE) || l.starts_with("warning:")),
        "every line located:\n{t}"
    );

    // Nobody listening: exit 1.
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        l.local_addr().unwrap_or_else(|e| panic!("{e}"))
    };
    let o = run(&[
        "validate",
        EXAMPLE,
        "--metrics-url",
        &format!("http://{dead}/metrics"),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("cannot fetch"));
    let _ = Path::new(EXAMPLE);
}
