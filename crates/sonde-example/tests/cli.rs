//! The example service's command line: the CloudWatch cost preview it prints.
#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn cloudwatch_cost_preview_is_printed() {
    let out = Command::new(env!("CARGO_BIN_EXE_sonde-example-service"))
        .args([
            "--seconds",
            "5",
            "--cloudwatch-cost",
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("CloudWatch cost preview"), "{text}");
    let metrics: usize = text
        .lines()
        .find(|l| l.contains("metrics (name + dimension values)"))
        .and_then(|l| l.split_whitespace().find_map(|w| w.parse().ok()))
        .unwrap();
    // The example's series (HTTP, DB, cache, pool, process...) are there, each billed.
    assert!(metrics > 20, "{text}");
    assert!(text.contains("PutMetricData calls per hour"), "{text}");
}

/// Starts the service with `args` (and a free port), waits for the line saying where it
/// serves, and answers (its stdout so far, the status line and body of `GET path` for each
/// path), then lets it finish.
fn serve_and_get(args: &[&str], paths: &[&str]) -> (String, Vec<(String, String)>) {
    use std::io::{BufRead as _, Read as _, Write as _};
    let mut child = Command::new(env!("CARGO_BIN_EXE_sonde-example-service"))
        .args(["--seconds", "3", "--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = String::new();
    let addr = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("the service ended before serving: {seen}"))
            .unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if let Some(rest) = line.strip_prefix("serving metrics on http://") {
            break rest.trim_end_matches("/metrics").to_owned();
        }
    };
    // A moment of traffic first.
    std::thread::sleep(std::time::Duration::from_millis(700));
    let answers = paths
        .iter()
        .map(|path| {
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .unwrap();
            write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
            (
                head.lines().next().unwrap_or_default().to_owned(),
                body.to_owned(),
            )
        })
        .collect();
    for line in lines {
        seen.push_str(&line.unwrap());
        seen.push('\n');
    }
    assert!(child.wait().unwrap().success(), "{seen}");
    (seen, answers)
}

/// Out of the box the service loads its embedded objectives file, adds its thresholds as
/// bucket boundaries (so `le="0.3"` good events are exact) and judges every objective on
/// `/report`, the cold start one included (the service records its own start as one).
#[test]
fn report_judges_the_embedded_objectives() {
    let (stdout, answers) = serve_and_get(&[], &["/report", "/report?format=md"]);
    assert!(
        stdout.contains(
            "objectives: crates/sonde-objectives/examples/objectives.toml (embedded; 4 threshold, 4 ratio), judged on /report"
        ),
        "{stdout}"
    );
    let (status, body) = &answers[0];
    assert!(status.contains(" 200 "), "{status}");
    let report: serde_json::Value = serde_json::from_str(body).unwrap();
    let objectives = report["objectives"].as_array().unwrap();
    let names: Vec<&str> = objectives
        .iter()
        .filter_map(|o| o["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "api-latency-p95",
            "api-latency-p99",
            "db-latency-p95",
            "cold-start-p95",
            "availability",
            "errors",
            "api-fast-requests",
            "cache-hits"
        ],
        "{report}"
    );
    for o in objectives {
        assert!(
            ["met", "violated", "no_data"].contains(&o["verdict"].as_str().unwrap()),
            "{o}"
        );
        assert_eq!(o["window"], "5m", "{o}");
    }
    let find = |n: &str| objectives.iter().find(|o| o["name"] == n).unwrap();
    // One cold start (process start to the first invocation), judged on what was recorded
    // (its duration depends on the machine, so not its verdict).
    let cold = find("cold-start-p95");
    assert_eq!(cold["groups"][0]["events"], 1, "{cold}");
    let recorded = report["histograms"]
        .as_array()
        .and_then(|h| h.iter().find(|h| h["metric"] == "faas.init_duration"))
        .and_then(|h| h["p95"].as_f64())
        .unwrap();
    let judged = cold["value"].as_f64().unwrap();
    assert!((judged - recorded).abs() <= recorded * 0.02, "{cold}");
    assert_eq!(
        cold["verdict"],
        if judged > 0.5 { "violated" } else { "met" },
        "{cold}"
    );
    // Fast requests are counted exactly at the installed 0.3 s boundary.
    let fast = find("api-fast-requests");
    assert_eq!(fast["groups"][0]["exact"], true, "{fast}");
    assert!(
        fast["groups"][0]["events"].as_f64().unwrap() > 0.0,
        "{fast}"
    );
    let (status, md) = &answers[1];
    assert!(status.contains(" 200 "), "{status}");
    assert!(md.contains("## Objectives"), "{md}");
    assert!(md.contains("| cold-start-p95 | 5m |"), "{md}");
}

/// `--objectives FILE` replaces the embedded file; a file with problems stops the service
/// with the located problem and exit code 2.
#[test]
fn objectives_from_a_file_and_a_located_error() {
    let dir = std::env::temp_dir().join(format!("sonde-example-objectives-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("objectives.toml");
    std::fs::write(
        &file,
        "[threshold.orders-p99]\nmetric = \"http.server.request.duration\"\nselector = 'http.route=\"/orders\"'\npercentile = \"p99\"\nthreshold = \"2s\"\nwindow = \"1m\"\n",
    )
    .unwrap();
    let path = file.to_string_lossy().into_owned();
    let (stdout, answers) = serve_and_get(&["--objectives", &path], &["/report"]);
    assert!(
        stdout.contains(&format!(
            "objectives: {path} (--objectives; 1 threshold, 0 ratio)"
        )),
        "{stdout}"
    );
    let report: serde_json::Value = serde_json::from_str(&answers[0].1).unwrap();
    let objectives = report["objectives"].as_array().unwrap();
    assert_eq!(objectives.len(), 1, "{report}");
    assert_eq!(objectives[0]["name"], "orders-p99");
    assert_eq!(objectives[0]["window"], "1m");
    assert_eq!(objectives[0]["verdict"], "met", "{report}");

    std::fs::write(&file, "[threshold.x]\nmetirc = \"a\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sonde-example-service"))
        .args([
            "--seconds",
            "1",
            "--listen",
            "127.0.0.1:0",
            "--objectives",
            &path,
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("{path}:2:1: unknown key `metirc`")),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
