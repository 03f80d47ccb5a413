//! Issue #14: StatsD names that render to one Prometheus name (`shop.orders` and `shop_orders`, a host metric's
//! name in Prometheus form, `target_info`) and values that would overflow `f64` reach the real
//! `sonde-agent`: the exposition stays valid for `promtool` and a real Prometheus keeps scraping
//! the whole host, with the first family's values and nothing infinite. A histogram `x` next to a
//! counter or gauge `x.count` is no collision and stays valid too.

use crate::common;

use std::time::Duration;

use common::{StatsdAgent, assert_promtool_clean};
use sonde_tests::prometheus::Prometheus;

#[test]
fn colliding_names_and_overflowing_values_leave_a_valid_exposition_and_scrape() {
    let agent = StatsdAgent::start("agent-collisions", |statsd, metrics| {
        format!(
            "[agent]\ninterval = \"1h\"\n\n[collectors.host]\nenabled = true\ninterval = \"1s\"\n\n[statsd]\nudp = \"{statsd}\"\n\n[exporters.prometheus]\nlisten = \"{metrics}\"\n"
        )
    });
    let metrics = agent.metrics;
    let scrape = || agent.scrape();
    agent.scrape_until("the agent's /metrics", Duration::from_secs(20), |t| {
        t.contains("system_cpu_time_seconds_total{")
    });

    // The first of each Prometheus name comes alone, so it is registered first.
    agent.send("shop.orders:3|c");
    agent.scrape_until("shop.orders on /metrics", Duration::from_secs(20), |t| {
        t.contains("\nshop_orders_total 3\n")
    });
    let lines = "shop_orders:1|c\nshop-orders:1|c\nshop_orders:5|g\n\
                 system_cpu_time_seconds:1|c\nsystem_memory_usage_bytes:5|g\ntarget_info:1|g\n\
                 big:1e308|c\nbig:1e308|c\nbig:1e308|c|@0.5\n\
                 level:+1e308|g\nlevel:+1e308|g\n\
                 size:1.7e308|h\nsize:1.7e308|h\n\
                 literal:inf|c\nliteral:nan|g\n\
                 lat:5|h\nlat.count:2|c\nwait:5|h\nwait.count:7|g\n";
    agent.send(lines);
    let text = agent.scrape_until(
        "the StatsD lines counted on /metrics",
        Duration::from_secs(20),
        |t| {
            // A scrape is not one instant: a family registered while it was written
            // shows from the next one, so wait for the last line's family as well.
            t.contains("sonde_statsd_dropped_total{reason=\"non_finite\"} 4\n")
                && t.contains("sonde_statsd_parse_errors_total{reason=\"bad_value\"} 2\n")
                && t.contains("\nsize_sum ")
                && t.contains("\nlat_count_total 2\n")
                && t.contains("\nwait_count_value 7\n")
        },
    );

    assert_promtool_clean(&text);
    for name in [
        "shop_orders",
        "shop_orders_total",
        "system_cpu_time_seconds_total",
        "system_memory_usage_bytes",
        "target_info",
    ] {
        assert_eq!(
            text.matches(&format!("# TYPE {name} ")).count(),
            usize::from(name != "shop_orders"),
            "{name}:\n{text}"
        );
    }
    // `shop_orders:5|g` came with another type than `shop_orders:1|c`, a type conflict; the others collide.
    assert!(
        text.contains("sonde_statsd_parse_errors_total{reason=\"name_collision\"} 4\n"),
        "{text}"
    );
    assert!(text.contains("\nshop_orders_total 3\n"), "{text}");
    assert!(text.contains("\nbig_total 1e308\n"), "{text}");
    assert!(text.contains("\nlevel 1e308\n"), "{text}");
    assert!(text.contains("\nsize_sum 1.7e308\n"), "{text}");
    // A histogram `x` (samples `x_count`) next to a counter or a gauge `x.count` (family
    // `x_count`): not a collision, since no two families write one sample name (the counter's
    // is `x_count_total`, the gauge's `x_count_value`); promtool accepted the text above.
    for name in ["lat", "wait"] {
        assert!(
            text.contains(&format!("# TYPE {name} histogram\n")),
            "{text}"
        );
        assert!(text.contains(&format!("\n{name}_count 1\n")), "{text}");
    }
    assert!(text.contains("# TYPE lat_count_total counter\n"), "{text}");
    assert!(text.contains("# TYPE wait_count_value gauge\n"), "{text}");
    // `target_info` is the resource's: the StatsD gauge of that name is left out and counted.
    // Counted while the skipping scrape is written, so it shows from the next one.
    let next = scrape().unwrap();
    assert!(
        next.contains(
            "sonde_instrumentation_errors_total{metric=\"target_info\",reason=\"name_collision\"}"
        ),
        "{next}"
    );
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let value = line.rsplit(' ').next().unwrap();
        let statsd = [
            "shop_orders",
            "big",
            "level",
            "size",
            "literal",
            "target_info{",
        ]
        .iter()
        .any(|p| line.starts_with(p));
        assert!(
            !(statsd && matches!(value, "+Inf" | "-Inf" | "NaN")),
            "{line}"
        );
    }

    // A real Prometheus scrapes the whole host, with the first family's value.
    let prom = Prometheus::start(&[metrics], &[], &[]);
    let up = prom.wait_for_series("up{job=\"sonde\"} == 1", Duration::from_secs(30));
    assert_eq!(up[0].value, 1.0, "{}", prom.log());
    let orders = prom.wait_for_series("shop_orders_total", Duration::from_secs(30));
    assert_eq!((orders.len(), orders[0].value), (1, 3.0));
    let cpu = prom.wait_for_series("system_cpu_time_seconds_total", Duration::from_secs(30));
    assert!(cpu.len() > 1, "{cpu:?}");
    let big = prom.query("big_total");
    assert_eq!(big[0].value, 1e308);
    assert!(prom.query("up{job=\"sonde\"} == 0").is_empty());
}
