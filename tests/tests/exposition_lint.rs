//! The example service's `/metrics` passes `promtool check metrics` with no findings: every
//! instrumentation helper, the process metrics and `target_info`, as a CI pipeline that lints
//! expositions sees them. (sonde-agent's exposition is linted in
//! `crates/sonde-agent/tests/exposition_lint.rs`.)

use sonde::Component as _;
use std::time::Duration;

use sonde::{Registry, Resource};
use sonde_tests::example::workload;
use sonde_tests::{http, prometheus, wait_for};

#[test]
fn the_example_services_exposition_passes_promtool_with_no_findings() {
    let reg = Registry::new();
    let workload = workload(&reg, Duration::from_millis(20));
    let server = sonde_tests::loopback_exporter(&reg)
        .resource(Resource::empty().with("service.name", "example"))
        .install()
        .unwrap();
    let url = format!("http://{}/metrics", server.local_addr());
    // Wait until the workload has touched every helper: HTTP server and client, database,
    // cache, and the process metrics.
    let text = wait_for("the example's metrics", Duration::from_secs(20), || {
        let t = http::get(&url, &[]).text();
        [
            "http_server_request_duration_seconds_bucket{",
            "http_client_request_duration_seconds_bucket{",
            "db_client_operation_duration_seconds_bucket{",
            "cache_requests_total{",
            "db_client_connection_count_value{",
            "process_thread_count_value",
        ]
        .iter()
        .all(|s| t.contains(s))
        .then_some(t)
    });
    let findings = prometheus::promtool_check_metrics(&text);
    assert!(
        findings.trim().is_empty(),
        "promtool check metrics has findings on the example service's exposition:\n{findings}\n---\n{text}"
    );
    workload.stop();
    server.shutdown(std::time::Duration::from_secs(10)).unwrap();
}
