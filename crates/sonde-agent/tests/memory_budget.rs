//! The real `sonde-agent` binary under a flood of distinct StatsD timer series stays within its
//! memory budget, counts what it refuses, and accepts a legitimate new name once the junk has
//! expired (`statsd.ttl`). Also: `check-config` refuses budgets and TTLs out of range.

use crate::common;

use std::time::{Duration, Instant};

use common::{StatsdAgent, check_config, write_file};
use sonde_tests::{TempDir, wait_for};

/// VmRSS of `pid`, bytes.
fn rss(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

/// Sum of the samples of `metric` whose line contains every one of `having`.
fn sum(text: &str, metric: &str, having: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(metric) && having.iter().all(|h| l.contains(h)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

const BUDGET: usize = 8 << 20;
/// Flood size: with 100 names, 2000 series per family would allow all of them (~1.2 GB of
/// timer series) without the budget.
const LINES: usize = 200_000;
const NAMES: usize = 100;

#[test]
fn a_flood_of_timer_series_stays_within_the_memory_budget_and_expires() {
    let agent = StatsdAgent::start("agent-budget", |statsd, metrics| {
        format!(
            "[agent]\ninterval = \"1h\"\nmemory_budget = \"8MiB\"\n\n[collectors.host]\nenabled = false\n\n\
             [collectors.process]\nenabled = false\n\n[statsd]\nudp = \"{statsd}\"\nttl = \"2s\"\n\
             max_metrics = 1000\n\n[exporters.prometheus]\nlisten = \"{metrics}\"\n"
        )
    });
    let pid = agent.pid();
    let scrape = || agent.scrape();
    // Warm up: the first lines, scrape and exposition buffers are part of the baseline.
    agent.send("warm.count:1|c");
    agent.scrape_until("warm-up on /metrics", Duration::from_secs(10), |t| {
        t.contains("warm_count_total")
    });
    let baseline = rss(pid);

    // 200k distinct (name, tag value) timer series, 40 lines a datagram, at a bounded rate.
    let started = Instant::now();
    let mut peak = baseline;
    let mut batch = String::new();
    for i in 0..LINES {
        batch.push_str(&format!("flood.{}.lat:{}|ms|#id:{i}\n", i % NAMES, i % 997));
        if (i + 1) % 40 == 0 {
            agent.send(&batch);
            batch.clear();
            if (i + 1) % 800 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            if (i + 1) % 20_000 == 0 {
                peak = peak.max(rss(pid));
            }
        }
    }
    // A new name right after the flood, while the budget is full: refused, not allocated. Sent
    // a few times: on a loaded machine the kernel may drop a datagram while the agent is still
    // parsing the flood (a socket drop, not the agent's), and one arrival is enough.
    for _ in 0..5 {
        agent.send("early.requests:1|c");
        std::thread::sleep(Duration::from_millis(10));
    }
    let sent_in = started.elapsed();
    // Wait until the agent has parsed what arrived (the line count stops moving).
    let mut last = -1.0;
    let text = wait_for("the flood parsed", Duration::from_secs(20), || {
        let t = scrape()?;
        let lines = sum(&t, "sonde_statsd_lines_total", &[]);
        let done = lines == last;
        last = lines;
        done.then_some(t)
    });
    peak = peak.max(rss(pid));
    let refused = sum(&text, "sonde_series_refused_total", &["reason=\"budget\""]);
    let dropped = sum(&text, "sonde_statsd_dropped_total", &["reason=\"budget\""]);
    let series = text
        .lines()
        .filter(|l| l.starts_with("flood_") && l.contains("_count{"))
        .count();
    let growth = peak.saturating_sub(baseline);
    eprintln!(
        "baseline RSS {} KiB, peak {} KiB (+{} KiB), flood series exported {series} (with \
         overflow series), refused {refused}, names dropped {dropped}, sent in {sent_in:?}",
        baseline / 1024,
        peak / 1024,
        growth / 1024
    );
    assert!(refused > 0.0, "nothing refused by the budget:\n{text}");
    assert!(dropped >= 1.0, "the new name was not refused:\n{text}");
    assert!(!text.contains("early_requests"));
    // A timer series is charged 1.9 KB (what it holds with every block of cells; about 6 KB
    // before the 32-bit cells, 3.3 KB before the sparse blocks): an 8 MiB budget holds about
    // 4,300 of them, with the families' overflow series.
    assert!(
        series < 4700,
        "{series} flood series: more than an 8 MiB budget holds"
    );
    // The budget, plus the handle and mapping caches' byte bounds and allocator slack.
    assert!(
        growth < BUDGET + (24 << 20),
        "RSS grew by {} KiB over a budget of {} KiB",
        growth / 1024,
        BUDGET / 1024
    );

    // The flood stops: after the TTL the junk expires and a new name gets in.
    let t = Instant::now();
    let text = wait_for(
        "a legitimate name after the flood",
        Duration::from_secs(15),
        || {
            agent.send("legit.requests:1|c|#route:/users");
            scrape().filter(|t| t.contains("legit_requests_total{route=\"/users\"}"))
        },
    );
    eprintln!(
        "legitimate name exported {:?} after the flood; flood series left: {}",
        t.elapsed(),
        sum(&text, "sonde_series_active", &["metric=\"flood."])
    );
    let text = agent.scrape_until("the flood's families gone", Duration::from_secs(10), |t| {
        !t.lines().any(|l| l.starts_with("flood_"))
    });
    // And their self-metric series with them: names that come and go leave nothing behind.
    for self_metric in ["sonde_series_refused_total{", "sonde_series_active{"] {
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with(self_metric) && l.contains("metric=\"flood.")),
            "{self_metric} series of expired names are left:\n{text}"
        );
    }
    // Room again for new series of new names.
    for i in 0..50 {
        agent.send(&format!("after.lat:1|ms|#id:{i}"));
    }
    agent.scrape_until("new series after expiry", Duration::from_secs(10), |t| {
        t.lines()
            .filter(|l| l.starts_with("after_lat_seconds_count{id="))
            .count()
            == 50
    });
    drop(text);
}

#[test]
fn check_config_refuses_a_budget_or_ttl_out_of_range() {
    let dir = TempDir::new("agent-budget-config");
    for (toml, key) in [
        ("[agent]\nmemory_budget = \"1KiB\"\n", "agent.memory_budget"),
        ("[agent]\nmemory_budget = \"lots\"\n", "agent.memory_budget"),
        ("[statsd]\nttl = \"0s\"\n", "statsd.ttl"),
        ("[statsd]\nttl = \"30d\"\n", "statsd.ttl"),
    ] {
        let path = write_file(&dir, "bad.toml", toml);
        let out = check_config(&path);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{toml}");
        assert!(err.contains(key), "{toml}: {err}");
    }
    let path = write_file(
        &dir,
        "good.toml",
        "[agent]\nmemory_budget = \"64MiB\"\n\n[statsd]\nttl = \"5m\"\n",
    );
    let out = check_config(&path);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
