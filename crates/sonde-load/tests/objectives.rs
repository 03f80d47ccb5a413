//! `--objectives` (issue #13 item 5): the service's objectives file sets the run's thresholds, so
//! changing one number there changes the load test's verdict.

use crate::support;

use std::time::Duration;

use support::{Target, serial, sonde_load};

const EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../sonde-objectives/examples/objectives.toml"
);

#[test]
fn the_objectives_file_sets_the_thresholds() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start(&["--delay", "10ms"]);
    let url = target.url("/api/users");
    let run = |file: &std::path::Path| {
        sonde_load(
            &[
                "run",
                "--url",
                &url,
                "--rate",
                "50",
                "--duration",
                "2s",
                "--objectives",
                file.to_str().unwrap(),
            ],
            dir.path(),
            Duration::from_secs(30),
        )
    };
    let example = std::fs::read_to_string(EXAMPLE).unwrap();
    let ok = run(std::path::Path::new(EXAMPLE));
    assert_eq!(ok.code(), 0, "{}\n{}", ok.stdout, ok.stderr);
    let judged: Vec<&str> = ok
        .result()
        .thresholds
        .iter()
        .map(|t| t.threshold.as_str())
        .collect();
    for t in ["p95<300ms", "p99<1.5s", "errors<0.1%", "errors<1%"] {
        assert!(judged.contains(&t), "{t} missing from {judged:?}");
    }
    // Objectives a load test cannot see are named, not dropped silently.
    assert!(
        ok.stderr.contains("db-latency-p95: not judged"),
        "{}",
        ok.stderr
    );

    // One number changed in the file: the run is judged by it.
    assert!(example.contains("threshold = \"300ms\""));
    let strict = dir.path().join("objectives.toml");
    std::fs::write(
        &strict,
        example.replacen("threshold = \"300ms\"", "threshold = \"2ms\"", 1),
    )
    .unwrap();
    let failed = run(&strict);
    assert_eq!(failed.code(), 1, "{}\n{}", failed.stdout, failed.stderr);
    let p95 = failed
        .result()
        .thresholds
        .iter()
        .find(|t| t.threshold == "p95<2ms")
        .unwrap();
    assert!(!p95.passed && p95.observed.unwrap() >= 0.01, "{p95:?}");

    // A broken objectives file is a usage error, located, and nothing is sent.
    let broken = dir.path().join("broken.toml");
    std::fs::write(
        &broken,
        "[threshold.x]\npercentile = \"p95\"\nthreshold = \"soon\"\n",
    )
    .unwrap();
    let bad = run(&broken);
    assert_eq!(bad.code(), 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("broken.toml:"), "{}", bad.stderr);
}
