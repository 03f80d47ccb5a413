//! What a new user meets in the first hour, tried the way they meet it: handles bound or
//! dropped, exports that fail while the service runs, the one-call tracing pipeline's logs,
//! `/health` while a receiver is down. Child-process cases run `first_hour_child`, so that
//! stderr is read as the user sees it.

use sonde::Component as _;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use sonde::Registry;
use sonde::otlp::{OtlpMetricsBuilder, OtlpTransport};
use sonde_tests::otlp::{Fault, OtlpReceiver};
use sonde_tests::{free_addr, http};

const CHILD: &str = env!("CARGO_BIN_EXE_first_hour_child");

fn child(args: &[&str]) -> (Output, String) {
    let out = Command::new(CHILD)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{args:?} failed: {stderr}");
    (out, stderr)
}

/// Item 1: a handle dropped at once (the README's old `install()?;` pasted as a statement)
/// says so, on stderr when the service has no subscriber, through `tracing` when it has one.
#[test]
fn a_dropped_handle_says_that_it_stopped() {
    let (_, stderr) = child(&["drop-handles"]);
    assert!(
        stderr.contains("sonde INFO: Prometheus server on 127.0.0.1:")
            && stderr.contains("stopping because its handle was dropped"),
        "{stderr}"
    );
    assert!(
        stderr.contains("sonde INFO: otlp exporter: stopping because its handle was dropped"),
        "{stderr}"
    );

    let ((), lines) = sonde::testing::capture_diagnostics(|| {
        let server = sonde_tests::loopback_exporter(&Registry::new())
            .install()
            .unwrap();
        drop(server);
    });
    assert!(
        lines.len() == 1 && lines[0].starts_with("INFO Prometheus server on 127.0.0.1:"),
        "{lines:?}"
    );
    // An explicit shutdown is not reported as an accident.
    let ((), lines) = sonde::testing::capture_diagnostics(|| {
        sonde_tests::loopback_exporter(&Registry::new())
            .install()
            .unwrap()
            .shutdown(std::time::Duration::from_secs(10))
            .unwrap();
    });
    assert!(lines.is_empty(), "{lines:?}");
}

/// Item 4: OTLP to a closed port is reported while the service runs, once per minute at most,
/// not only at shutdown; with no subscriber, on stderr.
#[test]
fn export_failures_are_logged_while_running_and_rate_limited() {
    let closed = format!("http://{}", free_addr());
    let (out, stderr) = child(&["failing-export", &closed]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let attempts: f64 = stdout
        .trim()
        .strip_prefix("failures=")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    let lines = stderr
        .lines()
        .filter(|l| l.starts_with("sonde WARN: otlp exporter: request failed:"))
        .count();
    // Several attempts failed within the child's 3 s; one line reported them.
    assert!(attempts >= 3.0, "{attempts} failed attempts: {stderr}");
    assert_eq!(lines, 1, "{stderr}");
    assert!(
        stderr.contains("Connection refused") || stderr.contains("connect"),
        "{stderr}"
    );
}

/// Item 4: `/health` turns `degraded` and names the exporter after three intervals without a
/// success, and back to `ok` when the receiver recovers.
#[test]
fn health_reports_an_exporter_that_has_not_succeeded_for_three_intervals() {
    let rx = OtlpReceiver::start();
    rx.set_default(Fault::Unavailable { retry_after: None });
    let registry = Registry::new();
    registry.counter("orders").build().unwrap().handle().inc();
    let server = sonde_tests::loopback_exporter(&registry).install().unwrap();
    let url = format!("http://{}/health", server.local_addr());
    {
        let exporter = OtlpMetricsBuilder::new()
            .registry(registry.clone())
            .transport(OtlpTransport::new().endpoint(rx.http_endpoint()))
            .interval(Duration::from_millis(200))
            .install()
            .unwrap();
        let health = |want: &str| {
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                let body: serde_json::Value =
                    serde_json::from_str(&http::get(&url, &[]).text()).unwrap();
                if body["status"] == want || Instant::now() > deadline {
                    return body;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        };
        let body = health("degraded");
        assert_eq!(body["status"], "degraded", "{body}");
        assert_eq!(
            body["failing_exporters"],
            serde_json::json!(["otlp"]),
            "{body}"
        );
        let otlp = &body["exporters"]["otlp"];
        assert_eq!(otlp["healthy"], false, "{body}");
        assert!(
            otlp["reason"]
                .as_str()
                .unwrap()
                .contains("no successful request"),
            "{body}"
        );
        rx.set_default(Fault::Ok);
        let body = health("ok");
        assert_eq!(body["status"], "ok", "{body}");
        assert_eq!(body["exporters"]["otlp"]["healthy"], true, "{body}");
        exporter.shutdown(Duration::from_secs(5)).unwrap();
    }
    server.shutdown(std::time::Duration::from_secs(10)).unwrap();
}

/// Item 10: the one-call tracing pipeline keeps the service's own log lines (on stderr,
/// `RUST_LOG` default `info`, no colour codes when stderr is not a terminal).
#[test]
fn the_tracing_pipeline_keeps_the_services_own_logs() {
    let rx = OtlpReceiver::start();
    let (_, stderr) = child(&["traces", &rx.http_endpoint()]);
    let line = stderr
        .lines()
        .find(|l| l.contains("order placed"))
        .unwrap_or_else(|| panic!("the service's info line is missing: {stderr}"));
    assert!(line.contains("INFO") && line.contains("order=42"), "{line}");
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes on a pipe: {stderr:?}"
    );
    assert!(
        !stderr.contains("not shown at the default level"),
        "{stderr}"
    );
}
