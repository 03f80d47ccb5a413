//! End-to-end tests of the `sonde-agent` binary: real StatsD clients from PyPI, a real
//! Prometheus scraping it, the OTLP test receiver, signals and configuration errors.

use crate::common;

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{
    BIN, LoggedAgent, assert_config_ok, check_config, check_config_with_env, refused_config,
    write_file,
};
use sonde_tests::agent::{free_udp, sample_value as value};
use sonde_tests::otlp::{OtlpReceiver, find_metrics};
use sonde_tests::prometheus::Prometheus;
use sonde_tests::{TempDir, free_addr, require_program};

/// Starts the agent on `config` (and `env`), with backtraces; its `/metrics` is where the
/// configuration's `listen` says.
fn start_agent(config: &str, env: &[(&str, &str)]) -> LoggedAgent {
    let metrics = config
        .lines()
        .find_map(|l| l.trim().strip_prefix("listen = \""))
        .map(|s| s.trim_end_matches('"').parse().unwrap())
        .expect("the test config sets exporters.prometheus.listen");
    let env: Vec<(&str, &str)> = [("RUST_BACKTRACE", "1")]
        .into_iter()
        .chain(env.iter().copied())
        .collect();
    LoggedAgent::start("agent", config, metrics, &env)
}

/// An agent with [`base_config`], its StatsD address and a socket to send it lines.
fn start_base() -> (LoggedAgent, SocketAddr, std::net::UdpSocket) {
    let statsd = free_udp();
    let agent = start_agent(&base_config(statsd, free_addr()), &[]);
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    (agent, statsd, sock)
}

/// Sets rotate every agent interval: an hour, so the tests see whole windows.
fn base_config(statsd: SocketAddr, metrics: SocketAddr) -> String {
    format!(
        "[agent]\ninterval = \"1h\"\n\n[collectors.host]\ninterval = \"1s\"\n\n[statsd]\nudp = \"{statsd}\"\n\n[exporters.prometheus]\nlisten = \"{metrics}\"\n"
    )
}

fn python(script: &str) {
    let python = require_program("python3", "apt-get install -y python3");
    let out = Command::new(python).args(["-c", script]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("No module named") {
        panic!(
            "a Python StatsD client is missing: pip install statsd datadog (scripts/test does this)\n{err}"
        );
    }
    assert!(out.status.success(), "python failed:\n{err}");
}

#[test]
fn real_statsd_clients_reach_prometheus_through_the_agent() {
    let statsd = free_udp();
    let metrics = free_addr();
    // Sets publish each closed interval: a short one, so the test sees one close.
    let agent = start_agent(
        &base_config(statsd, metrics).replace("\"1h\"", "\"3s\""),
        &[],
    );
    let prom = Prometheus::start(&[metrics], &[], &[]);
    // Prometheus's target discovery can take seconds after it is ready; a set's figure lasts
    // one 3 s interval, so let scraping begin before sending anything.
    prom.wait_for_series("up == 1", Duration::from_secs(20));
    let port = statsd.port();
    // The `statsd` package: counters, sampled counters, gauges with deltas, timers, sets (in
    // one datagram, so in one interval).
    python(&format!(
        r#"
import statsd, time
c = statsd.StatsClient("127.0.0.1", {port})
for _ in range(10): c.incr("shop.orders")
c.incr("shop.orders", 5)
c.gauge("shop.queue", 40)
c.gauge("shop.queue", -15, delta=True)
for ms in (10, 20, 30, 40): c.timing("shop.checkout", ms)
with c.pipeline() as p:
    for u in ("a", "b", "a", "c"): p.set("shop.users", u)
"#
    ));
    // datadog's DogStatsD client: tags become labels, distributions and histograms.
    python(&format!(
        r#"
from datadog.dogstatsd import DogStatsd
d = DogStatsd(host="127.0.0.1", port={port}, disable_telemetry=True)
d.increment("api.requests", 3, tags=["route:/users", "code:200"])
d.increment("api.requests", 1, tags=["route:/users", "code:500"])
d.distribution("api.latency", 0.25, tags=["route:/users"])
d.distribution("api.latency", 0.75, tags=["route:/users"])
d.histogram("api.payload", 512, tags=["route:/users"])
d.gauge("api.workers", 8, tags=["pool:main"])
d.flush()
"#
    ));
    let q = |expr: &str| {
        prom.wait_for_series(expr, Duration::from_secs(20))
            .first()
            .map(|s| s.value)
            .unwrap()
    };
    assert_eq!(q("shop_orders_total"), 15.0);
    assert_eq!(q("shop_queue"), 25.0);
    assert_eq!(q("shop_checkout_seconds_count"), 4.0);
    assert!((q("shop_checkout_seconds_sum") - 0.1).abs() < 1e-9);
    // The distinct count of the whole interval, read by some scrape before the next one closes.
    assert_eq!(q("max_over_time(shop_users[5m]) == 3"), 3.0);
    assert_eq!(q(r#"api_requests_total{route="/users",code="200"}"#), 3.0);
    assert_eq!(q(r#"api_requests_total{route="/users",code="500"}"#), 1.0);
    assert_eq!(q(r#"api_latency_count{route="/users"}"#), 2.0);
    assert_eq!(q(r#"api_latency_sum{route="/users"}"#), 1.0);
    assert_eq!(q(r#"api_payload_count{route="/users"}"#), 1.0);
    assert_eq!(q(r#"api_workers{pool="main"}"#), 8.0);
    // Host and own-process metrics with the defaults.
    assert!(q("system_memory_usage_bytes{system_memory_state=\"used\"}") > 0.0);
    assert!(q("process_memory_usage_bytes") > 0.0);
    assert!(q("up") == 1.0);
    // Malformed lines are counted by reason and nothing breaks.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(
        b"bad line\nshop.orders:x|c\nshop.orders:1|zz\nshop.orders:1|c",
        statsd,
    )
    .unwrap();
    let text = agent.scrape_until("the parse errors", Duration::from_secs(10), |t| {
        value(t, "shop_orders_total") == Some(16.0)
    });
    assert!(
        text.contains("sonde_statsd_parse_errors_total{reason="),
        "{text}"
    );
    let (status, log) = agent.terminate(Duration::from_secs(30));
    assert!(status.success(), "{log}");
}

#[test]
fn sigterm_delivers_the_last_interval_to_the_otlp_receiver() {
    let rx = OtlpReceiver::start();
    let statsd = free_udp();
    let metrics = free_addr();
    let config = format!(
        "{}\n[exporters.otlp]\nendpoint = \"{}\"\nprotocol = \"grpc\"\ninterval = \"1h\"\n",
        base_config(statsd, metrics),
        rx.grpc_endpoint()
    );
    let agent = start_agent(&config, &[]);
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..7 {
        sock.send_to(b"jobs.done:1|c|#queue:fast", statsd).unwrap();
    }
    // Received but not exported yet (the interval is an hour).
    agent.scrape_until("the counter on /metrics", Duration::from_secs(10), |t| {
        value(t, "jobs_done_total{queue=\"fast\"}") == Some(7.0)
    });
    assert!(rx.metrics().is_empty());
    let (status, log) = agent.terminate(Duration::from_secs(30));
    assert!(status.success(), "exit {status:?}\n{log}");
    let reqs = rx.metrics();
    let m = find_metrics(&reqs, "jobs.done");
    assert!(!m.is_empty(), "the last interval did not arrive:\n{log}");
    let json = format!("{:?}", m.last().unwrap());
    assert!(
        json.contains("AsDouble(7.0)") || json.contains("AsInt(7)"),
        "{json}"
    );
}

/// Issue #21 item 6: a new DogStatsD tag key used to wipe every earlier series.
#[test]
fn a_new_tag_key_keeps_every_series_on_metrics() {
    let (agent, statsd, sock) = start_base();
    let send = |tags: &str| {
        sock.send_to(
            format!("api.hits:1|c{tags}\napi.lat:100|ms{tags}").as_bytes(),
            statsd,
        )
        .unwrap();
    };
    for _ in 0..5 {
        send("");
    }
    send("|#route:/users");
    send("");
    send("|#host:a");
    let want = [
        (r#"api_hits_total{host="",route=""}"#, 6.0),
        (r#"api_hits_total{host="",route="/users"}"#, 1.0),
        (r#"api_hits_total{host="a",route=""}"#, 1.0),
        (r#"api_lat_seconds_count{host="",route=""}"#, 6.0),
        (r#"api_lat_seconds_sum{host="",route=""}"#, 0.6),
        (r#"api_lat_seconds_count{host="",route="/users"}"#, 1.0),
        (r#"api_lat_seconds_count{host="a",route=""}"#, 1.0),
    ];
    // Both lines of the last datagram: a scrape may fall between the counter's and the
    // timer's (each widens its own family).
    let text = agent.scrape_until("every series", Duration::from_secs(20), |t| {
        value(t, r#"api_hits_total{host="a",route=""}"#) == Some(1.0)
            && value(t, r#"api_lat_seconds_count{host="a",route=""}"#) == Some(1.0)
    });
    for (series, v) in want {
        let got = value(&text, series);
        assert!(
            got.is_some_and(|g| (g - v).abs() < 1e-9),
            "{series}: {got:?}\n{text}"
        );
    }
}

#[test]
fn sighup_reloads_without_losing_series() {
    let (agent, statsd, sock) = start_base();
    sock.send_to(b"kept:5|c", statsd).unwrap();
    agent.scrape_until("kept", Duration::from_secs(10), |t| {
        value(t, "kept_total") == Some(5.0)
    });
    // Add a TCP probe to a local listener and reload.
    let target = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = format!(
        "{}\n[[probes.tcp]]\nname = \"local\"\naddress = \"{}\"\ninterval = \"200ms\"\n",
        base_config(statsd, agent.metrics),
        target.local_addr().unwrap()
    );
    std::fs::write(agent.path(), &config).unwrap();
    agent.signal("-HUP");
    let text = agent.scrape_until("the probe after the reload", Duration::from_secs(15), |t| {
        // The new probe may report before the reload is counted as done.
        t.lines().any(|l| {
            l.starts_with("probe_success{")
                && l.contains("probe_name=\"local\"")
                && l.ends_with(" 1")
        }) && t.contains("sonde_agent_reloads_total{result=\"success\"} 1")
    });
    assert_eq!(value(&text, "kept_total"), Some(5.0), "{text}");
    assert!(
        text.contains("sonde_agent_reloads_total{result=\"success\"} 1"),
        "{text}"
    );
    // An invalid configuration is refused and the running one kept.
    std::fs::write(agent.path(), "[statsd]\nudp = 5\n").unwrap();
    agent.signal("-HUP");
    let text = agent.scrape_until("the failed reload", Duration::from_secs(10), |t| {
        t.contains("sonde_agent_reloads_total{result=\"failure\"} 1")
    });
    sock.send_to(b"kept:1|c", statsd).unwrap();
    agent.scrape_until("still receiving", Duration::from_secs(10), |t| {
        value(t, "kept_total") == Some(6.0)
    });
    assert!(text.contains("probe_success"));
    let (status, log) = agent.terminate(Duration::from_secs(30));
    assert!(status.success());
    assert!(log.contains("invalid"), "{log}");
}

#[test]
fn check_config_reports_every_error_with_location_and_hint() {
    let dir = TempDir::new("check-config");
    let bad = dir.0.join("bad.toml");
    let err = refused_config(
        &bad,
        "[agent]\ninterval = 10\n\n[statsd]\nudp = \"nowhere\"\nrecieve_buffer = \"1MiB\"\n\n[exporters.otlp]\nprotocol = \"carrier-pigeon\"\n",
    );
    let file = bad.to_str().unwrap();
    for needle in [
        format!("{file}:2:12"),
        format!("{file}:5:7"),
        format!("{file}:6:1: unknown key `recieve_buffer`"),
        "did you mean `receive_buffer`?".to_string(),
        format!("{file}:9:12"),
        "hint:".to_string(),
        "4 errors in the configuration".to_string(),
    ] {
        assert!(err.contains(&needle), "missing {needle:?} in:\n{err}");
    }
    // The example configuration and the embedded defaults are valid.
    let full = concat!(env!("CARGO_MANIFEST_DIR"), "/examples-config/full.toml");
    assert_config_ok(Path::new(full));
    let defaults = Command::new(BIN)
        .arg("print-default-config")
        .output()
        .unwrap();
    let path = write_file(&dir, "defaults.toml", &defaults.stdout);
    assert_config_ok(&path);
    // A missing file, an unknown SONDE_ variable, --version.
    let out = check_config(Path::new("/nonexistent.toml"));
    assert_eq!(out.status.code(), Some(2));
    let out = check_config_with_env(&path, &[("SONDE_STATSD_UPD", "1")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SONDE_STATSD_UDP"));
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("sonde-agent 0."));
    // A file named without --config: refused, with the command that runs it.
    let out = Command::new(BIN).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let run = format!("sonde-agent --config {}", path.display());
    assert!(err.contains(&run), "no {run:?} in:\n{err}");
    // Running with a bad configuration exits 2 before starting anything.
    let mut child = Command::new(BIN)
        .args(["--config", bad.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(2), "{err}");
}

#[test]
fn json_logs_when_asked() {
    let statsd = free_udp();
    let metrics = free_addr();
    let config =
        base_config(statsd, metrics).replace("[agent]\n", "[agent]\nlog_format = \"json\"\n");
    let agent = start_agent(&config, &[]);
    let (status, log) = agent.terminate(Duration::from_secs(30));
    assert!(status.success());
    let first = log.lines().next().unwrap();
    let v: serde_json::Value = serde_json::from_str(first).unwrap();
    assert!(
        v["fields"]["message"].as_str().unwrap().contains("started"),
        "{first}"
    );
}

/// `[statsd] tcp`: the `statsd` package's TCP client (newline-delimited lines on one
/// connection) reaches `/metrics` through the agent, next to UDP.
#[test]
fn the_python_tcp_statsd_client_reaches_metrics() {
    let (statsd, metrics) = (free_udp(), free_addr());
    let tcp = free_addr();
    let agent = start_agent(
        &base_config(statsd, metrics).replace(
            "[statsd]\n",
            &format!("[statsd]\ntcp = \"{tcp}\"\ntcp_idle_timeout = \"5s\"\n"),
        ),
        &[],
    );
    let port = tcp.port();
    python(&format!(
        r#"
import statsd
c = statsd.TCPStatsClient("127.0.0.1", {port}, timeout=5)
for _ in range(100): c.incr("tcp.orders")
c.gauge("tcp.queue", 12)
c.timing("tcp.checkout", 40)
with c.pipeline() as p:
    for _ in range(50): p.incr("tcp.orders")
c.close()
"#
    ));
    let scrape = agent.scrape_until("the TCP lines on /metrics", Duration::from_secs(20), |s| {
        value(s, "tcp_orders_total") == Some(150.0)
    });
    assert_eq!(value(&scrape, "tcp_queue"), Some(12.0));
    assert_eq!(value(&scrape, "tcp_checkout_seconds_count"), Some(1.0));
    assert!(
        value(&scrape, r#"sonde_statsd_packets_total{transport="tcp"}"#).unwrap_or(0.0) >= 1.0,
        "{scrape}"
    );
}
