//! Per-exporter selection (issue #17 item 3): the CloudWatch exporter sends a lean host summary
//! plus every application metric by default, an explicit `select` chooses metrics, series and
//! labels (aggregating what becomes equal), `/metrics` keeps everything, and `sonde-agent cost`
//! prices both. Real agent binary, the CloudWatch test endpoint, StatsD on loopback.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

use common::{BIN, line_starting_with, refused_config, temp_config, write_file};
use sonde_tests::agent::{KillOnDrop, free_udp, scrape_metrics, spawn_agent_with_env};
use sonde_tests::cloudwatch::{CloudWatchEndpoint, Datum, TEST_ENV};
use sonde_tests::{TempDir, free_addr, wait_for};

/// The dimensions of `d` but the resource's `service.name`, which every datum carries.
fn own_dimensions(d: &Datum) -> impl Iterator<Item = &(String, String)> {
    d.dimensions.iter().filter(|(k, _)| k != "service.name")
}

/// The sum of what CloudWatch received for `name` with exactly `dims` (in any order).
fn received(datums: &[(String, Datum)], name: &str, dims: &[(&str, &str)]) -> f64 {
    datums
        .iter()
        .filter(|(_, d)| {
            d.metric_name == name
                && own_dimensions(d).count() == dims.len()
                && dims
                    .iter()
                    .all(|(k, v)| own_dimensions(d).any(|(dk, dv)| dk == k && dv == v))
        })
        .map(|(_, d)| {
            d.value
                .or(d.statistic_values.as_ref().map(|s| s.sum))
                .unwrap_or(0.0)
        })
        .sum()
}

fn names(datums: &[(String, Datum)]) -> BTreeSet<String> {
    datums.iter().map(|(_, d)| d.metric_name.clone()).collect()
}

/// Dimension names seen per metric name.
fn dimensions(datums: &[(String, Datum)]) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (_, d) in datums {
        out.entry(d.metric_name.clone())
            .or_default()
            .extend(own_dimensions(d).map(|(k, _)| k.clone()));
    }
    out
}

/// Asserts whether the datums of `metric` carry the dimension `label`.
fn assert_dimension(
    dims: &BTreeMap<String, BTreeSet<String>>,
    metric: &str,
    label: &str,
    present: bool,
) {
    assert_eq!(
        dims[metric].contains(label),
        present,
        "{metric} {label}: {dims:?}"
    );
}

/// The agent under test: StatsD in, `/metrics`, the host collected every 200 ms, and CloudWatch
/// (a test endpoint) with `selection` at the end of the configuration.
struct SelectAgent {
    cw: CloudWatchEndpoint,
    statsd: SocketAddr,
    metrics: SocketAddr,
    dir: TempDir,
    sock: UdpSocket,
    _agent: KillOnDrop,
}

impl SelectAgent {
    /// Starts the agent and returns once it takes StatsD lines.
    fn start(selection: &str) -> Self {
        let cw = CloudWatchEndpoint::start();
        let (statsd, metrics) = (free_udp(), free_addr());
        let (dir, config) = temp_config(
            "agent-select",
            format!(
                "[agent]\ninterval = \"1h\"\n\n[collectors.host]\ninterval = \"200ms\"\n\n\
                 [statsd]\nudp = \"{statsd}\"\n\n[exporters.prometheus]\nlisten = \"{metrics}\"\n\n\
                 [exporters.cloudwatch]\nnamespace = \"select\"\nregion = \"us-east-1\"\n\
                 endpoint_url = \"{}\"\ninterval = \"500ms\"\n{selection}",
                cw.url()
            ),
        );
        let agent = spawn_agent_with_env(BIN, &config, &dir.0, &TEST_ENV);
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        wait_for("StatsD takes lines", Duration::from_secs(20), || {
            sock.send_to(b"shop.ready:1|c", statsd).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            scrape_metrics(metrics).filter(|t| t.contains("shop_ready_total"))
        });
        SelectAgent {
            cw,
            statsd,
            metrics,
            dir,
            sock,
            _agent: agent,
        }
    }

    /// Sends one StatsD line.
    fn send(&self, line: &str) {
        self.sock.send_to(line.as_bytes(), self.statsd).unwrap();
    }
}

#[test]
fn cloudwatch_gets_the_lean_default_while_metrics_keeps_everything() {
    let agent = SelectAgent::start("");
    let (cw, metrics, dir) = (&agent.cw, agent.metrics, &agent.dir);
    agent.send("shop.orders:2|c|#region:eu");
    wait_for(
        "the StatsD counter and the host summary in CloudWatch",
        Duration::from_secs(30),
        || {
            let d = cw.datums();
            (received(&d, "shop.orders", &[("region", "eu")]) == 2.0
                && names(&d).contains("system.cpu.utilization")
                && names(&d).contains("system.network.io"))
            .then_some(())
        },
    );
    // Two more intervals, so whatever else would be sent has been.
    std::thread::sleep(Duration::from_millis(1200));
    let datums = cw.datums();
    let sent = names(&datums);
    let host_summary = [
        "system.cpu.utilization",
        "system.memory.utilization",
        "system.filesystem.utilization",
        "system.disk.io_time",
        "system.network.io",
    ];
    for name in &sent {
        assert!(
            host_summary.contains(&name.as_str()) || name.starts_with("shop."),
            "{name} reached CloudWatch though the default selection leaves it out; sent: {sent:?}"
        );
    }
    let dims = dimensions(&datums);
    // The whole host: CPUs averaged, interfaces summed (loopback left out), used ratios only.
    assert_dimension(&dims, "system.cpu.utilization", "cpu.logical_number", false);
    assert_dimension(&dims, "system.cpu.utilization", "cpu.mode", true);
    assert_dimension(&dims, "system.network.io", "network.interface.name", false);
    assert_dimension(&dims, "system.network.io", "network.io.direction", true);
    let values_of = |name: &str, label: &str| -> BTreeSet<String> {
        datums
            .iter()
            .filter(|(_, d)| d.metric_name == name)
            .flat_map(|(_, d)| {
                d.dimensions
                    .iter()
                    .filter(|(k, _)| k == label)
                    .map(|(_, v)| v.clone())
            })
            .collect()
    };
    assert_eq!(
        values_of("system.memory.utilization", "system.memory.state"),
        ["used".to_string()].into()
    );
    assert_eq!(
        values_of("system.filesystem.utilization", "system.filesystem.state"),
        ["used".to_string()].into()
    );
    assert_eq!(
        values_of("system.cpu.utilization", "cpu.mode"),
        ["idle", "iowait", "steal", "system", "user"]
            .map(String::from)
            .into()
    );
    assert_eq!(
        values_of("system.network.io", "network.io.direction"),
        ["receive", "transmit"].map(String::from).into()
    );
    // /metrics is another exporter: it keeps every host series.
    let scrape = scrape_metrics(metrics).unwrap();
    for kept in [
        "system_cpu_time_seconds_total{",
        "system_network_packet_count_total{",
        "process_cpu_time_seconds_total",
    ] {
        assert!(scrape.contains(kept), "{kept} missing from /metrics");
    }
    let log = std::fs::read_to_string(dir.0.join("agent.log")).unwrap();
    assert!(
        log.contains("CloudWatch: ") && log.contains("/month at list price"),
        "no cost line in the log:\n{log}"
    );
}

#[test]
fn an_explicit_selection_filters_series_and_aggregates_dropped_labels() {
    let agent = SelectAgent::start(
        "\n[[exporters.cloudwatch.select]]\ninclude = [\"/^shop\\\\.(orders|latency)$/\"]\n\
         labels = { region = [\"eu*\"] }\ndrop_labels = [\"host\"]\n\n\
         [[exporters.cloudwatch.select]]\ninclude = [\"system.memory.utilization\"]\n\
         keep_labels = []\ngauges = \"max\"\n",
    );
    let cw = &agent.cw;
    for line in [
        "shop.orders:1|c|#region:eu-west,host:a",
        "shop.orders:2|c|#region:eu-west,host:b",
        "shop.orders:4|c|#region:us-east,host:a",
        "shop.latency:10|ms|#region:eu-west,host:a",
        "shop.latency:30|ms|#region:eu-west,host:b",
        "shop.other:1|c|#region:eu-west,host:a",
    ] {
        agent.send(line);
    }
    wait_for(
        "the aggregated counter in CloudWatch",
        Duration::from_secs(30),
        || (received(&cw.datums(), "shop.orders", &[("region", "eu-west")]) == 3.0).then_some(()),
    );
    std::thread::sleep(Duration::from_millis(1200));
    let datums = cw.datums();
    let sent = names(&datums);
    assert_eq!(
        sent,
        ["shop.latency", "shop.orders", "system.memory.utilization"]
            .map(String::from)
            .into(),
        "only the selected metrics"
    );
    // us-east left out by the label condition; host dropped and the two eu-west series added.
    assert_eq!(
        received(&datums, "shop.orders", &[("region", "eu-west")]),
        3.0
    );
    assert!(
        datums
            .iter()
            .all(|(_, d)| d.dimensions.iter().all(|(k, _)| k != "host"))
    );
    // The two timers merged into one histogram: 2 observations, sum 40 ms.
    let latency: Vec<&Datum> = datums
        .iter()
        .map(|(_, d)| d)
        .filter(|d| d.metric_name == "shop.latency")
        .collect();
    let count: f64 = latency
        .iter()
        .map(|d| {
            d.statistic_values
                .as_ref()
                .map(|s| s.sample_count)
                .unwrap_or_else(|| d.counts.iter().sum())
        })
        .sum();
    assert_eq!(count, 2.0, "{latency:#?}");
    // keep_labels = []: one memory series, no dimensions of its own.
    let dims = dimensions(&datums);
    assert!(
        !dims["system.memory.utilization"].contains("system.memory.state"),
        "{dims:?}"
    );
}

#[test]
fn cost_prices_the_selection_and_everything() {
    let dir = TempDir::new("agent-cost");
    let lean = write_file(
        &dir,
        "lean.toml",
        "[exporters.cloudwatch]\nnamespace = \"x\"\n",
    );
    let all = write_file(
        &dir,
        "all.toml",
        "[exporters.cloudwatch]\nnamespace = \"x\"\n\n[exporters.cloudwatch.select]\ninclude = [\"*\"]\n",
    );
    let run = |path: &std::path::Path| {
        let out = Command::new(BIN).arg("cost").arg(path).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let metrics_of = |text: &str| -> usize {
        let line = text
            .lines()
            .find(|l| l.contains("metrics (name + dimension values):"))
            .unwrap_or_else(|| panic!("no metrics line in:\n{text}"));
        line.split_whitespace().nth(5).unwrap().parse().unwrap()
    };
    let everything_of = |text: &str| -> usize {
        let line = line_starting_with(text, "Without a selection");
        line.split(": ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let lean_text = run(&lean);
    let all_text = run(&all);
    let (lean_n, all_n) = (metrics_of(&lean_text), metrics_of(&all_text));
    assert!(
        lean_n > 0 && lean_n < all_n,
        "lean {lean_n}, all {all_n}\n{lean_text}\n{all_text}"
    );
    // The comparison line of the lean config is the whole host, as the include-all config says
    // (the host's series may differ by a few between the two runs: a process, a mount).
    let everything = everything_of(&lean_text);
    assert!(
        everything.abs_diff(all_n) <= all_n / 10,
        "{everything} vs {all_n}"
    );
    assert!(lean_text.contains("~$") && lean_text.contains("/month"));
    // A bad selection is a configuration error, exit 2, located.
    let bad = dir.0.join("bad.toml");
    let err = refused_config(
        &bad,
        "[exporters.cloudwatch]\nnamespace = \"x\"\n\n[exporters.cloudwatch.select]\ninclude = [\"/(/\"]\ngauges = \"avg\"\n",
    );
    assert!(
        err.contains("bad.toml:5:") && err.contains("not a valid regular expression"),
        "{err}"
    );
    assert!(
        err.contains("bad.toml:6:") && err.contains("\"mean\", \"sum\""),
        "{err}"
    );
    let out = Command::new(BIN).arg("cost").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
