//! The README's Rust snippets, compiled and run exactly as written (extracted by `build.rs`,
//! run by `readme_snippets`, each in a process of its own as a user would run it) against
//! loopback peers: the data each snippet promises is checked on `/metrics` and in the OTLP
//! receiver.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use sonde_tests::otlp::{OtlpReceiver, find_metrics};
use sonde_tests::{free_port, http, wait_for};

const SNIPPETS: &str = env!("CARGO_BIN_EXE_readme_snippets");
const NAMES: &str = include_str!(concat!(env!("OUT_DIR"), "/readme/names.txt"));
const UNMARKED: &str = include_str!(concat!(env!("OUT_DIR"), "/readme/unmarked.txt"));

/// A running snippet; killed on drop.
struct Snippet {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Snippet {
    fn start(name: &str, env: &[(&str, String)]) -> Snippet {
        let mut cmd = Command::new(SNIPPETS);
        cmd.arg(name)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .env_remove("OTEL_EXPORTER_PROMETHEUS_HOST")
            .env_remove("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        Snippet { child, out }
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        line.trim_end().to_owned()
    }

    /// Waits for the snippet's end (`READY`), runs `check` while its handles live, then lets
    /// it return and returns the rest of its output.
    fn at_end(mut self, check: impl FnOnce()) -> String {
        assert_eq!(self.line(), "READY");
        check();
        self.child.stdin.take().unwrap().write_all(b"\n").unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status:?}");
        let mut rest = String::new();
        while {
            let l = self.line();
            rest.push_str(&l);
            !l.is_empty()
        } {}
        rest
    }
}

impl Drop for Snippet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn scrape(port: u16) -> String {
    http::get(&format!("http://127.0.0.1:{port}/metrics"), &[]).text()
}

#[test]
fn every_rust_block_of_the_readme_is_a_snippet_run_here() {
    assert!(
        UNMARKED.is_empty(),
        "README Rust blocks without a snippet marker:\n{UNMARKED}"
    );
    let names: Vec<&str> = NAMES.lines().collect();
    assert_eq!(
        names,
        ["quick_start", "instrumenting", "prometheus", "otlp"]
    );
}

#[test]
fn quick_start() {
    let rest = Snippet::start("quick_start", &[]).at_end(|| {});
    // The observation, and the timer that recorded when it dropped.
    assert_eq!(rest, "count=2");
}

#[test]
fn prometheus_serves_while_the_handle_lives() {
    let port = free_port();
    let env = [("OTEL_EXPORTER_PROMETHEUS_PORT", port.to_string())];
    Snippet::start("prometheus", &env).at_end(|| {
        let text = scrape(port);
        sonde::testing::assert_has_line(&text, "orders_placed_total{payment_method=\"card\"} 1");
    });
}

#[test]
fn otlp_delivers_the_last_interval_when_the_handle_drops() {
    let rx = OtlpReceiver::start();
    let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", rx.http_endpoint())];
    Snippet::start("otlp", &env).at_end(|| {
        // The interval is a minute: nothing yet.
        assert!(find_metrics(&rx.metrics(), "payment.duration").is_empty());
    });
    let reqs = rx.metrics();
    assert!(
        !find_metrics(&reqs, "payment.duration").is_empty(),
        "payment.duration did not reach the OTLP receiver"
    );
}

#[test]
fn the_axum_service_records_route_templates() {
    let port = free_port();
    // The snippet listens on 127.0.0.1:3000, as written.
    assert!(
        std::net::TcpListener::bind("127.0.0.1:3000").is_ok(),
        "port 3000 is taken: the README's axum snippet needs it"
    );
    let _service = Snippet::start(
        "instrumenting",
        &[("OTEL_EXPORTER_PROMETHEUS_PORT", port.to_string())],
    );
    let url = "http://127.0.0.1:3000/users/42";
    wait_for("the README's axum service", Duration::from_secs(20), || {
        http::try_get(url).filter(|r| r.status == 200)
    });
    let series = "http_server_request_duration_seconds_count{http_request_method=\"GET\",http_route=\"/users/{id}\",http_response_status_code=\"200\",error_type=\"\"} 1";
    let text = wait_for("the request on /metrics", Duration::from_secs(10), || {
        let text = scrape(port);
        text.contains(series).then_some(text)
    });
    assert!(
        !text.contains("/users/42"),
        "a raw path became a label:\n{text}"
    );
}
