//! The real `sonde-agent` binary's `/metrics` passes `promtool check metrics` with no findings,
//! with StatsD input of every type (names included that end in `.count` and `.total`) and the
//! host and own-process collectors on: what a CI pipeline that lints expositions sees.

use crate::common;

use std::time::Duration;

use common::{StatsdAgent, assert_promtool_clean};

#[test]
fn the_agents_exposition_passes_promtool_with_no_findings() {
    let agent = StatsdAgent::start("agent-lint", |statsd, metrics| {
        format!(
            "[agent]\ninterval = \"1h\"\n\n[collectors.host]\nenabled = true\ninterval = \"1s\"\n\n[collectors.process]\nenabled = true\n\n[statsd]\nudp = \"{statsd}\"\n\n[exporters.prometheus]\nlisten = \"{metrics}\"\n"
        )
    });

    // Every StatsD and DogStatsD type, and user names ending in what Prometheus reserves.
    let lines = "shop.orders:1|c\nshop.orders:4|c|@0.5\nshop.queue:40|g\nshop.queue:-15|g\n\
                 shop.checkout:20|ms\nshop.checkout:30|ms\nshop.users:a|s\nshop.users:b|s\n\
                 api.requests:3|c|#route:/users,code:200\napi.latency:0.25|d|#route:/users\n\
                 api.payload:512|h|#route:/users\napi.workers:8|g|#pool:main\n\
                 jobs.count:3|g\nconnections.total:5|g\nqueue.sum:2|g\nretries.count:1|c\n";
    agent.send(lines);
    let text = agent.scrape_until(
        "StatsD, host and process metrics on /metrics",
        Duration::from_secs(20),
        |t| {
            [
                "shop_orders_total ",
                "api_latency_count{",
                "retries_count_total ",
                "system_memory_usage_bytes{",
                "process_memory_usage_bytes",
            ]
            .iter()
            .all(|s| t.contains(s))
        },
    );

    assert_promtool_clean(&text);
    // The gauges whose OpenTelemetry or StatsD names end in a reserved suffix, renamed by the
    // documented rule (README, "Prometheus").
    for name in [
        "process_thread_count_value",
        "process_open_file_descriptor_count_value",
        "system_cpu_logical_count_value",
        "system_process_count_value",
        "jobs_count_value",
        "connections_total_value",
        "queue_sum_value",
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} gauge\n")),
            "{name} missing:\n{text}"
        );
    }
}
