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
