//! `[[sources.scrape]]` (issue #17 item 2) with real peers: the agent scrapes a real
//! prometheus-node-exporter, a real Prometheus scrapes the agent and sees node_exporter's values
//! exactly, and CloudWatch receives only the metrics chosen for it, with the cost logged.

use crate::common;

use common::{BIN, line_starting_with, refused_config, temp_config, write_config};
use sonde_core::Component as _;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use sonde_tests::agent::{KillOnDrop, sample_value, scrape_metrics, spawn_agent_with_env};
use sonde_tests::cloudwatch::{CloudWatchEndpoint, Datum, TEST_ENV};
use sonde_tests::prometheus::Prometheus;
use sonde_tests::{TempDir, free_addr, require_program, wait_for};

/// The start of every agent config here: no export interval to wait for, no host collector,
/// no StatsD socket (its default port would collide between tests).
const QUIET: &str = "[agent]\ninterval = \"1h\"\n\n[collectors.host]\nenabled = false\n\n[statsd]\nenabled = false\n\n";

fn node_exporter() -> (KillOnDrop, SocketAddr) {
    let bin = require_program(
        "prometheus-node-exporter",
        "apt-get install -y prometheus-node-exporter",
    );
    let addr = free_addr();
    let child = Command::new(bin)
        .arg(format!("--web.listen-address={addr}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let kid = KillOnDrop(child);
    wait_for("node_exporter", Duration::from_secs(20), || {
        scrape_metrics(addr)
    });
    (kid, addr)
}

/// The metric names of what CloudWatch received.
fn metric_names(datums: &[(String, Datum)]) -> BTreeSet<&str> {
    datums.iter().map(|(_, d)| d.metric_name.as_str()).collect()
}

/// What CloudWatch received once every one of `expected` has come and two more intervals have
/// passed (so that whatever else would be sent has been).
fn received_once_settled(cw: &CloudWatchEndpoint, expected: &[&str]) -> Vec<(String, Datum)> {
    wait_for(
        &format!("{expected:?} in CloudWatch"),
        Duration::from_secs(30),
        || {
            let datums = cw.datums();
            let names = metric_names(&datums);
            expected.iter().all(|e| names.contains(e)).then_some(())
        },
    );
    std::thread::sleep(Duration::from_millis(1200));
    cw.datums()
}

#[test]
fn node_exporter_through_the_agent_to_prometheus_and_cloudwatch() {
    let (_node, node) = node_exporter();
    let cw = CloudWatchEndpoint::start();
    let metrics = free_addr();
    let (dir, config) = temp_config(
        "agent-sources",
        format!(
            "{QUIET}\
             [[sources.scrape]]\njob = \"node\"\nurl = \"http://{node}/metrics\"\n\
             interval = \"500ms\"\ntimeout = \"500ms\"\n\n\
             [exporters.prometheus]\nlisten = \"{metrics}\"\n\n\
             [exporters.cloudwatch]\nnamespace = \"sources\"\nregion = \"us-east-1\"\n\
             endpoint_url = \"{}\"\ninterval = \"500ms\"\n\n\
             [[exporters.cloudwatch.select]]\n\
             include = [\"node_memory_MemTotal_bytes\", \"node_filesystem_size_bytes\"]\n\
             labels = {{ fstype = [\"!tmpfs\"] }}\ndrop_labels = [\"instance\"]\n",
            cw.url()
        ),
    );
    let _agent = spawn_agent_with_env(BIN, &config, &dir.0, &TEST_ENV);
    let inst = node.to_string();
    let series = format!("node_memory_MemTotal_bytes{{job=\"node\",instance=\"{inst}\"}}");
    let up = format!("up{{job=\"node\",instance=\"{inst}\"}}");
    // One /metrics body is not one instant: a render that overlaps a failed scrape (a 500 ms
    // timeout on a loaded machine) can read the mirrored series before they go and `up` after
    // it turns 0. Wait for a body from a healthy moment.
    let scrape = wait_for(
        "node_exporter's metrics on the agent",
        Duration::from_secs(20),
        || {
            scrape_metrics(metrics)
                .filter(|t| sample_value(t, &series).is_some() && sample_value(t, &up) == Some(1.0))
        },
    );
    // The agent mirrors node_exporter's value exactly (MemTotal does not move).
    let direct = scrape_metrics(node).unwrap();
    let mem = sample_value(&direct, "node_memory_MemTotal_bytes").unwrap();
    assert_eq!(sample_value(&scrape, &series), Some(mem));
    assert_eq!(sample_value(&scrape, &up), Some(1.0));
    // Hundreds of series came through (node_exporter exposes about 500), read in the
    // protobuf format: nothing failed to parse. The one refusal is Go's counter
    // go_memstats_alloc_bytes_total next to the gauge go_memstats_alloc_bytes, which
    // OpenMetrics cannot tell apart (both are families named go_memstats_alloc_bytes).
    let mirrored = scrape.lines().filter(|l| l.starts_with("node_")).count();
    assert!(mirrored > 100, "{mirrored} node_* samples on the agent");
    assert!(!scrape.contains("reason=\"bad_line\""), "{scrape}");
    assert!(scrape.contains("go_memstats_alloc_bytes{"), "{scrape}");
    // The exposition parses in promtool (its lint findings are node_exporter's own names).
    let promtool = require_program("promtool", "apt-get install -y prometheus");
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), scrape.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        !text.contains("error while linting") && !text.contains("parse error"),
        "{text}"
    );

    // A real Prometheus scraping the agent reads node_exporter's value (its own job label
    // wins; the mirrored one is kept as exported_job, as with any honor_labels=false target).
    let prom = Prometheus::start(&[metrics], &[], &[]);
    let got = prom.wait_for_series(
        "node_memory_MemTotal_bytes{exported_job=\"node\"}",
        Duration::from_secs(30),
    );
    assert_eq!(got.first().map(|s| s.value), Some(mem));

    // CloudWatch: only the two chosen metrics, without the instance dimension, tmpfs left out.
    let datums = received_once_settled(
        &cw,
        &["node_memory_MemTotal_bytes", "node_filesystem_size_bytes"],
    );
    let names = metric_names(&datums);
    assert_eq!(
        names,
        ["node_filesystem_size_bytes", "node_memory_MemTotal_bytes"].into(),
        "only the selection reaches CloudWatch"
    );
    for (_, d) in &datums {
        assert!(d.dimensions.iter().all(|(k, _)| k != "instance"), "{d:?}");
        assert!(
            d.dimensions.iter().any(|(k, v)| k == "job" && v == "node"),
            "{d:?}"
        );
        assert!(
            d.dimensions
                .iter()
                .all(|(k, v)| k != "fstype" || v != "tmpfs"),
            "{d:?}"
        );
    }
    let mem_cw = datums
        .iter()
        .find(|(_, d)| d.metric_name == "node_memory_MemTotal_bytes")
        .and_then(|(_, d)| d.value)
        .unwrap();
    assert_eq!(mem_cw, mem);
    let log = std::fs::read_to_string(dir.0.join("agent.log")).unwrap();
    assert!(log.contains("/month at list price"), "no cost line:\n{log}");
}

#[test]
fn a_target_that_fails_is_down_and_bad_targets_are_config_errors() {
    let dir = TempDir::new("agent-sources");
    // Nothing listens there: up is 0, the agent goes on.
    let dead = free_addr();
    let metrics = free_addr();
    let config = write_config(
        &dir,
        format!(
            "{QUIET}\
             [[sources.scrape]]\njob = \"gone\"\nurl = \"http://{dead}/metrics\"\ninterval = \"300ms\"\ntimeout = \"200ms\"\n\n\
             [exporters.prometheus]\nlisten = \"{metrics}\"\n"
        ),
    );
    let _agent = spawn_agent_with_env(BIN, &config, &dir.0, &[]);
    let up = format!("up{{job=\"gone\",instance=\"{dead}\"}}");
    wait_for("up == 0", Duration::from_secs(20), || {
        scrape_metrics(metrics).filter(|t| sample_value(t, &up) == Some(0.0))
    });
    let err = refused_config(
        &dir.0.join("bad.toml"),
        "[[sources.scrape]]\njob = \"a\"\nurl = \"localhost:9100\"\n\n\
         [[sources.scrape]]\nurl = \"http://127.0.0.1:9100/metrics\"\n\n\
         [[sources.scrape]]\njob = \"b\"\nurl = \"http://127.0.0.1:9100/metrics\"\ninterval = \"1s\"\ntimeout = \"5s\"\nusername = \"u\"\n\n\
         [[sources.scrape]]\njob = \"c\"\nurl = \"http://127.0.0.1:9101/metrics\"\nprotobuf = \"yes\"\ncert_file = \"/etc/hostname\"\n",
    );
    sonde_core::testing::assert_contains_all(
        &err,
        &[
            "bad.toml:3:",
            "not an absolute http:// or https:// URL",
            "needs `job` and `url`",
            "longer than its interval",
            "`username` and `password` together",
            "`protobuf` must be true or false",
            "give `cert_file` and `key_file` together",
        ],
    );
}

fn python(script: &str) {
    let python = require_program("python3", "apt-get install -y python3");
    let out = Command::new(python).args(["-c", script]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("No module named"),
        "the OpenTelemetry Python SDK is missing: pip install opentelemetry-sdk opentelemetry-exporter-otlp-proto-http (scripts/test does this)\n{err}"
    );
    assert!(out.status.success(), "python failed:\n{err}");
}

/// The README's host: a service pushes OTLP to the agent (the OpenTelemetry Python SDK),
/// node_exporter is scraped, `/metrics` has both, and CloudWatch receives only what was chosen,
/// with the cost logged at start.
/// A block of the README's host example (`<!-- host-example:TAG -->` and the fenced block
/// after it), without the list item's indentation.
fn readme_block(tag: &str) -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let marker = format!("<!-- host-example:{tag} -->");
    let after = &readme[readme.find(&marker).expect("the README's host example") + marker.len()..];
    let fence = after.find("```").unwrap();
    let body = fence + after[fence..].find('\n').unwrap() + 1;
    let end = body + after[body..].find("```").unwrap();
    after[body..end]
        .lines()
        .map(|l| l.strip_prefix("  ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The README's host example, run as written there (ports and intervals the test's own): a
/// service pushes OTLP, node_exporter is scraped, CloudWatch gets only the chosen metrics,
/// and the price is logged and printed.
#[test]
fn otlp_pushed_and_node_exporter_scraped_reach_cloudwatch_as_chosen() {
    let (_node, node) = node_exporter();
    let cw = CloudWatchEndpoint::start();
    let (metrics, otlp, grpc) = (free_addr(), free_addr(), free_addr());
    let dir = TempDir::new("agent-sources");
    let config = dir.0.join("agent.toml");
    let example = readme_block("agent.toml")
        .replace("127.0.0.1:4317", &grpc.to_string())
        .replace("127.0.0.1:4318", &otlp.to_string())
        .replace("127.0.0.1:9100", &node.to_string())
        .replace(
            "interval = \"15s\"",
            "interval = \"500ms\"\ntimeout = \"500ms\"",
        );
    assert!(
        example.contains(&format!("url = \"http://{node}/metrics\"")),
        "{example}"
    );
    std::fs::write(
        &config,
        format!(
            "{QUIET}\
             [exporters.prometheus]\nlisten = \"{metrics}\"\n\n{example}\n"
        ),
    )
    .unwrap();
    let cw_url = cw.url();
    let mut env: Vec<(&str, &str)> = TEST_ENV.to_vec();
    env.push(("SONDE_EXPORTERS_CLOUDWATCH_ENDPOINT_URL", &cw_url));
    env.push(("SONDE_EXPORTERS_CLOUDWATCH_INTERVAL", "500ms"));
    let _agent = spawn_agent_with_env(BIN, &config, &dir.0, &env);
    wait_for("the agent", Duration::from_secs(20), || {
        scrape_metrics(metrics)
    });
    python(&readme_block("service.py").replace("127.0.0.1:4318", &otlp.to_string()));
    let scrape = wait_for(
        "OTLP and node_exporter on /metrics",
        Duration::from_secs(20),
        || {
            scrape_metrics(metrics).filter(|t| {
                t.contains("checkout_orders_total{") && t.contains("node_memory_MemTotal_bytes{")
            })
        },
    );
    assert_eq!(
        sample_value(
            &scrape,
            r#"checkout_orders_total{region="eu",job="checkout",instance="pod-1"}"#
        ),
        Some(3.0),
        "{}",
        scrape
            .lines()
            .filter(|l| l.contains("checkout"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(
        sample_value(
            &scrape,
            r#"checkout_duration_seconds_count{route="/pay",job="checkout",instance="pod-1"}"#
        ),
        Some(3.0)
    );
    let sum = sample_value(
        &scrape,
        r#"checkout_duration_seconds_sum{route="/pay",job="checkout",instance="pod-1"}"#,
    )
    .unwrap();
    assert!((sum - 0.7).abs() < 1e-9, "{sum}");
    // The sender's other resource attributes are its `target_info` series, in the one
    // `target_info` family next to the agent's own resource.
    assert_eq!(scrape.matches("# TYPE target_info ").count(), 1, "{scrape}");
    let info = line_starting_with(&scrape, "target_info{job=\"checkout\"");
    sonde_core::testing::assert_contains_all(
        info,
        &[
            r#"instance="pod-1""#,
            r#"service_version="2.1.0""#,
            r#"deployment_environment_name="prod""#,
            r#"telemetry_sdk_language="python""#,
        ],
    );
    // A real Prometheus takes the exposition (a second `target_info` family would fail the
    // scrape) and joins the version onto the sender's series.
    let prom = Prometheus::start(&[metrics], &[], &[]);
    let joined = prom.wait_for_series(
        "checkout_orders_total * on (exported_job, exported_instance) \
         group_left(service_version) target_info",
        Duration::from_secs(30),
    );
    assert_eq!(joined.len(), 1, "{joined:?}");
    assert_eq!(joined[0].value, 3.0);
    assert_eq!(
        joined[0].labels.get("service_version").map(String::as_str),
        Some("2.1.0")
    );

    let datums = received_once_settled(&cw, &["checkout.orders", "node_memory_MemTotal_bytes"]);
    let names = metric_names(&datums);
    assert_eq!(
        names,
        [
            "checkout.duration",
            "checkout.orders",
            "node_memory_MemTotal_bytes"
        ]
        .into(),
        "only the selection reaches CloudWatch"
    );
    let orders: f64 = datums
        .iter()
        .filter(|(_, d)| d.metric_name == "checkout.orders")
        .filter_map(|(_, d)| d.value)
        .sum();
    assert_eq!(orders, 3.0, "the counter's change, sent once");
    let log = std::fs::read_to_string(dir.0.join("agent.log")).unwrap();
    assert!(log.contains("/month at list price"), "no cost line:\n{log}");
    // `sonde-agent cost` on the same file: node_exporter's one chosen metric is priced (the
    // pushed ones exist only once a service sends them), against hundreds without selection.
    let out = Command::new(BIN)
        .arg("cost")
        .arg(&config)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/month"), "{text}");
    let selected = text
        .lines()
        .find(|l| l.contains("metrics (name + dimension values):"))
        .and_then(|l| l.split_whitespace().nth(5))
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(selected, 1, "{text}");
}

#[test]
fn otlp_receiver_settings_are_checked_before_start() {
    let dir = TempDir::new("agent-sources");
    let err = refused_config(
        &dir.0.join("bad.toml"),
        "[sources.otlp]\ngrpc = \"off\"\nhttp = \"off\"\nmax_request_size = \"2GiB\"\n\
         tls_cert_file = \"/etc/hostname\"\ntls_key_file = \"/etc/hostname\"\ntoken = \"x\"\n",
    );
    sonde_core::testing::assert_contains_all(
        &err,
        &[
            "neither `grpc` nor `http`",
            "max_request_size",
            "holds no PEM certificate",
            "unknown key `token`",
        ],
    );
}

/// A service for the agent to scrape: sonde's own `/metrics` server on a free loopback port,
/// serving `registry` with its `service.name` and `service.version` in target_info.
fn scraped_service(
    registry: sonde_core::Registry,
    name: &str,
    version: &str,
) -> sonde_prometheus::PrometheusServer {
    sonde_tests::loopback_exporter(&registry)
        .resource(
            sonde_core::Resource::empty()
                .with("service.name", name)
                .with("service.version", version),
        )
        .install()
        .unwrap()
}

/// The OpenTelemetry Rust SDK pushes over OTLP/gRPC with gzip to the real agent, cumulative:
/// the agent's /metrics holds exactly what was recorded, after two exports.
#[test]
fn the_rust_sdk_pushes_to_the_agent_over_grpc() {
    use opentelemetry::KeyValue;

    let (metrics, grpc) = (free_addr(), free_addr());
    // A scraped service with a target_info of its own: OTLP senders and scrape targets share
    // the agent's one target_info family.
    let scraped = scraped_service(sonde_core::Registry::new(), "scraped", "7.7");
    let (dir, config) = temp_config(
        "agent-sources",
        format!(
            "{QUIET}\
             [sources.otlp]\ngrpc = \"{grpc}\"\nhttp = \"off\"\n\n\
             [[sources.scrape]]\njob = \"scraped\"\nurl = \"http://{}/metrics\"\ninterval = \"300ms\"\ntimeout = \"300ms\"\n\n\
             [exporters.prometheus]\nlisten = \"{metrics}\"\n",
            scraped.local_addr()
        ),
    );
    let _agent = spawn_agent_with_env(BIN, &config, &dir.0, &[]);
    wait_for("the agent", Duration::from_secs(20), || {
        scrape_metrics(metrics)
    });
    let (runtime, exporter) = common::sdk_grpc_exporter(grpc, true);
    let _guard = runtime.enter();
    sonde_tests::otel_sdk::push_orders_and_latency(
        exporter,
        [
            KeyValue::new("service.name", "rust-grpc"),
            KeyValue::new("service.instance.id", "i-1"),
            KeyValue::new("service.version", "0.33"),
        ],
        "grpc",
    );

    let id = "job=\"rust-grpc\",instance=\"i-1\"";
    let text = wait_for("the pushed values", Duration::from_secs(20), || {
        scrape_metrics(metrics).filter(|t| {
            sample_value(t, &format!("grpc_orders_total{{region=\"eu\",{id}}}")) == Some(10.0)
        })
    });
    for (series, want) in [
        (
            format!("grpc_latency_seconds_bucket{{{id},le=\"0.1\"}}"),
            1.0,
        ),
        (
            format!("grpc_latency_seconds_bucket{{{id},le=\"0.5\"}}"),
            2.0,
        ),
        (
            format!("grpc_latency_seconds_bucket{{{id},le=\"+Inf\"}}"),
            3.0,
        ),
        (format!("grpc_latency_seconds_count{{{id}}}"), 3.0),
    ] {
        assert_eq!(sample_value(&text, &series), Some(want), "{series}\n{text}");
    }
    let sum = sample_value(&text, &format!("grpc_latency_seconds_sum{{{id}}}")).unwrap();
    assert!((sum - 2.35).abs() < 1e-9, "{sum}");
    // Both kinds of sources in the one target_info family (had the second registration been
    // refused, its series would be missing).
    let text = wait_for("both target_info series", Duration::from_secs(20), || {
        scrape_metrics(metrics).filter(|t| t.contains("target_info{job=\"scraped\""))
    });
    for (job, version) in [("rust-grpc", "0.33"), ("scraped", "7.7")] {
        assert!(
            text.lines().any(|l| {
                l.starts_with(&format!("target_info{{job=\"{job}\""))
                    && l.contains(&format!("service_version=\"{version}\""))
            }),
            "{job}: {text}"
        );
    }
    assert_eq!(text.matches("# TYPE target_info ").count(), 1, "{text}");
    assert!(
        !text.contains("target_info\",reason=\"name_collision"),
        "{text}"
    );
    scraped
        .shutdown(std::time::Duration::from_secs(10))
        .unwrap();
}

/// The example service (its workload, served by sonde's own exporter as
/// `sonde-example-service` serves it) scraped by the real agent: once the workload stops, the
/// agent's /metrics carries the service's request histogram bucket for bucket, its database
/// and cache figures, and its target_info.
#[test]
fn the_example_service_is_scraped_exactly() {
    let registry = sonde_core::Registry::new();
    let workload = sonde_tests::example::steady_workload(&registry);
    let service = scraped_service(registry.clone(), "sonde-example-service", "9.9.9");
    let addr = service.local_addr();
    let metrics = free_addr();
    let dir = TempDir::new("agent-sources");
    let config = write_config(
        &dir,
        format!(
            "{QUIET}\
             [[sources.scrape]]\njob = \"example\"\nurl = \"http://{addr}/metrics\"\n\
             interval = \"300ms\"\ntimeout = \"300ms\"\n\n\
             [exporters.prometheus]\nlisten = \"{metrics}\"\n"
        ),
    );
    let _agent = spawn_agent_with_env(BIN, &config, &dir.0, &[]);
    std::thread::sleep(Duration::from_millis(800));
    workload.stop();
    // The service's own exposition, read now that nothing moves, against the agent's mirror:
    // every series of the request histogram, the database histogram and the cache counters,
    // with the agent's job and instance added.
    let direct = sonde_scrape::parse(&scrape_metrics(addr).unwrap()).unwrap();
    let ids = format!("job=\"example\",instance=\"{addr}\"");
    let chosen: Vec<(&String, &sonde_scrape::Family)> = direct
        .families
        .iter()
        .filter(|(name, _)| {
            name.starts_with("http_server_request_duration")
                || name.starts_with("db_client_operation_duration")
                || name.starts_with("cache_")
        })
        .collect();
    assert!(chosen.len() >= 3, "{:?}", direct.families.keys());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let agent = loop {
        let text = scrape_metrics(metrics).unwrap_or_default();
        let mirror = sonde_scrape::parse(&text).unwrap();
        let mut wrong = Vec::new();
        let mut compared = 0;
        for (name, family) in &chosen {
            for (labels, series) in &family.series {
                let mut key = labels.clone();
                key.push(("job".into(), "example".into()));
                key.push(("instance".into(), addr.to_string()));
                key.sort();
                let got = mirror.families.get(*name).and_then(|f| f.series.get(&key));
                // Buckets, counts and values exact; a sum is rebuilt from the changes between
                // scrapes, so it may differ in its last bits.
                let same = got.is_some_and(|g| {
                    g.value == series.value
                        && g.buckets == series.buckets
                        && g.count == series.count
                        && match (g.sum, series.sum) {
                            (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * b.abs().max(1e-9),
                            (a, b) => a == b,
                        }
                });
                if !same {
                    wrong.push(format!("{name}{labels:?}: {series:?} vs {got:?}"));
                }
                compared += 1;
            }
        }
        if wrong.is_empty() {
            assert!(compared > 10, "{compared}");
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the agent's mirror differs from the stopped service in {} of {compared} series, such as {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(3)]
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        agent
            .lines()
            .any(|l| l.starts_with(&format!("target_info{{{ids}"))
                && l.contains("service_version=\"9.9.9\"")),
        "{agent}"
    );
    service
        .shutdown(std::time::Duration::from_secs(10))
        .unwrap();
}

/// The agent's remote write to a store behind HTTPS with client certificates and basic auth
/// (issue #18 item 5): a real Prometheus with its own web configuration receives the agent's
/// series, sent with the credentials and certificates the config file names.
#[test]
fn the_agent_remote_writes_through_mtls_and_basic_auth() {
    let certs = sonde_tests::certs::Certs::generate();
    let prom = sonde_tests::prometheus::SecuredApi::prometheus(&certs, "agent", "fleet pass");
    let dir = TempDir::new("agent-remote-write");
    let config = dir.0.join("agent.toml");
    let metrics = free_addr();
    std::fs::write(
        &config,
        format!(
            "{QUIET}\
             [exporters.prometheus]\nlisten = \"{}\"\n\n\
             [exporters.remote_write]\nurl = \"https://{}/api/v1/write\"\ninterval = \"300ms\"\n\
             username = \"agent\"\npassword = \"fleet pass\"\ntenant = \"team-a\"\n\
             ca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            metrics,
            prom.addr,
            certs.server_cert.display(),
            certs.client_cert.display(),
            certs.client_key.display(),
        ),
    )
    .unwrap();
    let _agent = spawn_agent_with_env(BIN, &config, &dir.0, &[]);
    let got = wait_for(
        "the agent's series in the secured Prometheus",
        Duration::from_secs(20),
        || {
            let r = prom.query(
                "sonde_exporter_requests_total{exporter=\"remote_write\",result=\"success\"}",
            );
            (!r.is_empty()).then_some(r)
        },
    );
    assert_eq!(got.len(), 1, "{got:?}");
    // Every request so far was accepted: none refused for its credentials or certificate.
    let scrape = scrape_metrics(metrics).unwrap();
    assert_eq!(
        sample_value(
            &scrape,
            "sonde_exporter_requests_total{exporter=\"remote_write\",result=\"failure\"}"
        )
        .unwrap_or(0.0),
        0.0,
        "{scrape}"
    );
}

/// Host pressure stall information (issue #18 item 1), cross-checked with node_exporter on the
/// same kernel: over a window with more runnable threads than CPUs, the agent's
/// `system.pressure.waiting{cpu}` grows by what node_exporter's
/// `node_pressure_cpu_waiting_seconds_total` grows by (both read `/proc/pressure/cpu`; the
/// tolerance covers the agent's 100 ms collection interval at each end).
#[test]
fn host_pressure_agrees_with_node_exporter() {
    let (_node, node) = node_exporter();
    let metrics = free_addr();
    let (dir, config) = temp_config(
        "agent-pressure",
        format!(
            "[agent]\ninterval = \"1h\"\n\n[collectors.host]\ninterval = \"100ms\"\n\n\
             [statsd]\nenabled = false\n\n[exporters.prometheus]\nlisten = \"{metrics}\"\n"
        ),
    );
    let _agent = spawn_agent_with_env(BIN, &config, &dir.0, &[]);
    let ours = "system_pressure_waiting_seconds_total{system_pressure_resource=\"cpu\"}";
    let theirs = "node_pressure_cpu_waiting_seconds_total";
    if !std::path::Path::new("/proc/pressure/cpu").exists() {
        // A kernel without PSI: no series, and node_exporter has none either.
        let scrape = wait_for("the agent", Duration::from_secs(20), || {
            scrape_metrics(metrics)
        });
        assert_eq!(sample_value(&scrape, ours), None);
        return;
    }
    // The agent is started without waiting for it: until it listens, a read is `None`.
    let read = || {
        let n = sample_value(&scrape_metrics(node)?, theirs)?;
        let a = sample_value(&scrape_metrics(metrics)?, ours);
        Some((n, a))
    };
    wait_for(
        "the agent's first pressure reading",
        Duration::from_secs(20),
        || read().and_then(|(_, a)| a),
    );
    let (n0, a0) = read().unwrap();
    // More busy threads than CPUs for a second: tasks wait for a CPU.
    let busy = std::thread::available_parallelism().map_or(2, |n| n.get()) * 2;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..busy)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    let (n1, a1) = read().unwrap();
    let (node_delta, agent_delta) = (n1 - n0, a1.unwrap() - a0.unwrap());
    assert!(
        node_delta > 0.1,
        "node_exporter saw no CPU pressure: {node_delta}"
    );
    assert!(
        (node_delta - agent_delta).abs() < 0.25,
        "node_exporter +{node_delta:.3} s, the agent +{agent_delta:.3} s"
    );
}
