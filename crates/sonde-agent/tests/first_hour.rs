//! The agent as a new user first meets it: the default port next to a sonde service, the error
//! when the port is taken, export failures in the log and on `/health`, `--help`, and log
//! colours when stderr is not a terminal.

use crate::common;

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, write_config};

use sonde_tests::agent::{free_udp, spawn_agent, spawn_agent_with_env};
use sonde_tests::{TempDir, free_addr, wait_for};

/// Item 5: the agent's default port is not the library's 9464, and `print-default-config`
/// says so.
#[test]
fn the_default_port_is_not_the_librarys() {
    let out = Command::new(BIN)
        .arg("print-default-config")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("listen = \"127.0.0.1:9465\""), "{text}");
    assert!(!text.contains("9464\""), "{text}");
}

/// Item 5: a taken port is reported once, naming the agent's own key and variable, not the
/// library's settings.
#[test]
fn a_taken_port_names_the_agents_key_once() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = TempDir::new("agent-port");
    let config = format!(
        "[collectors.host]\nenabled = false\n\n[statsd]\nudp = \"{}\"\n\n[exporters.prometheus]\nlisten = \"{addr}\"\n",
        free_udp()
    );
    let path = write_config(&dir, &config);
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.matches("cannot listen").count(),
        1,
        "printed once: {stderr}"
    );
    assert!(
        stderr.contains("`listen` in [exporters.prometheus]")
            && stderr.contains("SONDE_EXPORTERS_PROMETHEUS_LISTEN")
            && stderr.contains(&addr.to_string()),
        "{stderr}"
    );
    assert!(
        !stderr.contains("PrometheusBuilder") && !stderr.contains("OTEL_EXPORTER_PROMETHEUS"),
        "{stderr}"
    );
}

/// Item 4 (agent) and item 10 (colours): OTLP to a closed port is logged while the agent runs,
/// once per minute at most, without colour codes in a log file; `/health` turns `degraded`.
#[test]
fn export_failures_show_in_the_log_and_on_health() {
    let dir = TempDir::new("agent-failing");
    let metrics = free_addr();
    let closed = free_addr();
    let config = format!(
        "[collectors.host]\nenabled = false\n\n[statsd]\nudp = \"{}\"\n\n[exporters.prometheus]\nlisten = \"{metrics}\"\n\n[exporters.otlp]\nenabled = true\nendpoint = \"http://{closed}\"\ninterval = \"200ms\"\ntimeout = \"200ms\"\n",
        free_udp()
    );
    let path = write_config(&dir, &config);
    let agent = spawn_agent(BIN, &path, &dir.0);
    let url = format!("http://{metrics}/health");
    let start = Instant::now();
    let body = wait_for(
        "/health to report the OTLP exporter failing",
        Duration::from_secs(20),
        || {
            let reply = sonde_tests::http::try_get(&url)?;
            let body: serde_json::Value = serde_json::from_str(&reply.text()).ok()?;
            (body["status"] == "degraded").then_some(body)
        },
    );
    assert_eq!(
        body["failing_exporters"],
        serde_json::json!(["otlp"]),
        "{body}"
    );
    // Let a few more attempts fail, then read the log.
    while start.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(agent);
    let log = std::fs::read_to_string(dir.0.join("agent.log")).unwrap();
    let failures = log.matches("otlp exporter: request failed").count();
    assert_eq!(failures, 1, "rate-limited to one line a minute:\n{log}");
    assert!(log.contains("WARN"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log file:\n{log:?}"
    );
}

/// Item 10: `--help` points to the full example configuration, which the binary can print.
#[test]
fn help_points_to_the_full_example_configuration() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(
        help.contains("print-example-config") && help.contains("examples-config/full.toml"),
        "{help}"
    );
    let out = Command::new(BIN)
        .arg("print-example-config")
        .output()
        .unwrap();
    assert!(out.status.success());
    let full = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples-config/full.toml"
    ))
    .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), full);
}

/// A script that waits for `/metrics` and then sends StatsD loses nothing: the StatsD socket is
/// bound before `/metrics` answers, even when an exporter (CloudWatch, whose SDK takes a while
/// to set up) starts in between. StatsD used to start after every exporter.
#[test]
fn statsd_is_listening_once_metrics_answers() {
    let dir = TempDir::new("agent-statsd-first");
    let (statsd, metrics) = (free_udp(), free_addr());
    let config = write_config(
        &dir,
        format!(
            "[agent]\ninterval = \"1h\"\n\n[collectors.host]\nenabled = false\n\n\
             [statsd]\nudp = \"{statsd}\"\n\n[exporters.prometheus]\nlisten = \"{metrics}\"\n\n\
             [exporters.cloudwatch]\nnamespace = \"first\"\nregion = \"us-east-1\"\n\
             endpoint_url = \"http://127.0.0.1:9\"\ninterval = \"1h\"\n"
        ),
    );
    let _agent = spawn_agent_with_env(
        BIN,
        &config,
        &dir.0,
        &[
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
    );
    // The moment /metrics first answers, one datagram, once.
    let deadline = Instant::now() + Duration::from_secs(20);
    while sonde_tests::agent::scrape_metrics(metrics).is_none() {
        assert!(Instant::now() < deadline, "no /metrics");
        std::thread::sleep(Duration::from_millis(5));
    }
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(b"first.line:1|c", statsd).unwrap();
    wait_for(
        "the first datagram on /metrics",
        Duration::from_secs(10),
        || {
            sonde_tests::agent::scrape_metrics(metrics)
                .filter(|t| t.contains("first_line_total 1"))
                .map(|_| ())
        },
    );
}
