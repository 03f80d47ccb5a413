//! The durable queue (issue #18 item 6) end to end: the real agent binary remote-writes to a
//! real Prometheus through a connection that goes down; the agent is killed with SIGKILL during
//! the outage and started again; when the receiver is back, every collection made while it was
//! down is in Prometheus. And the queue's disk use stays under its cap while the outage lasts.

use crate::common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{BIN, write_config};

use sonde_tests::agent::{sample_value, scrape_metrics, spawn_agent};
use sonde_tests::prometheus::Prometheus;
use sonde_tests::switch::Switch;
use sonde_tests::{TempDir, free_addr, wait_for};

/// One sample of it per collection, from the first one on.
const REFERENCE: &str = "sonde_exporter_interval_seconds{exporter=\"remote_write\"}";

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn config(
    metrics: std::net::SocketAddr,
    write: std::net::SocketAddr,
    queue: &std::path::Path,
    extra: &str,
) -> String {
    format!(
        "[agent]\ninterval = \"1h\"\n\n[collectors.host]\nenabled = false\n\n[statsd]\nenabled = false\n\n\
         [exporters.prometheus]\nlisten = \"{metrics}\"\n\n\
         [exporters.remote_write]\nurl = \"http://{write}/api/v1/write\"\ninterval = \"200ms\"\n\
         queue_dir = \"{}\"\n{extra}",
        queue.display()
    )
}

/// A Prometheus that takes remote writes, behind a switch, and in a new temporary directory the
/// configuration (`path`) of an agent that remote-writes to it through a durable queue, with
/// `extra` settings of the remote writer.
struct Setup {
    prom: Prometheus,
    switch: Switch,
    dir: TempDir,
    queue: std::path::PathBuf,
    metrics: std::net::SocketAddr,
    path: std::path::PathBuf,
}

impl Setup {
    fn new(name: &str, extra: &str) -> Self {
        let prom = Prometheus::start(&[], &[], &["--web.enable-remote-write-receiver"]);
        let switch = Switch::start(prom.addr);
        let dir = TempDir::new(name);
        let queue = dir.0.join("queue");
        let metrics = free_addr();
        let path = write_config(&dir, config(metrics, switch.addr, &queue, extra));
        Setup {
            prom,
            switch,
            dir,
            queue,
            metrics,
            path,
        }
    }
}

/// The timestamps (seconds) of every sample of `expr` in the last `range`, all series merged.
fn timestamps(prom: &Prometheus, expr: &str, range: &str) -> Vec<f64> {
    let body = prom.api("query", &[("query", &format!("{expr}[{range}]"))]);
    let mut ts: Vec<f64> = body["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["values"].as_array().unwrap().iter())
        .map(|v| v[0].as_f64().unwrap())
        .collect();
    ts.sort_by(f64::total_cmp);
    ts.dedup();
    ts
}

fn metric(addr: std::net::SocketAddr, series: &str) -> f64 {
    scrape_metrics(addr)
        .and_then(|s| sample_value(&s, series))
        .unwrap_or(0.0)
}

#[test]
fn collections_made_during_an_outage_and_a_kill_9_all_arrive() {
    let mut setup = Setup::new("agent-durable", "");

    let mut first = spawn_agent(BIN, &setup.path, &setup.dir.0);
    setup
        .prom
        .wait_for_series(REFERENCE, Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(1));

    // The receiver goes away; collections queue on disk.
    setup.switch.off();
    let off = now_s();
    std::thread::sleep(Duration::from_millis(1500));
    let queued = metric(
        setup.metrics,
        "sonde_exporter_queue_size{exporter=\"remote_write\"}",
    );
    assert!(queued >= 4.0, "requests queued during the outage: {queued}");
    // Killed without a chance to flush anything.
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    let killed = now_s();
    let log = std::fs::read_to_string(setup.dir.0.join("agent.log")).unwrap();

    let second = spawn_agent(BIN, &setup.path, &setup.dir.0);
    wait_for(
        "the restarted agent's /metrics",
        Duration::from_secs(20),
        || scrape_metrics(setup.metrics),
    );
    let restarted = now_s();
    std::thread::sleep(Duration::from_millis(1500));
    setup.switch.on();
    let on = now_s();

    // Drained: the newest collections arrive again.
    wait_for(
        "the queue to drain after the receiver came back",
        Duration::from_secs(30),
        || {
            let ts = timestamps(&setup.prom, REFERENCE, "2m");
            (ts.last().is_some_and(|t| *t > on + 1.0)
                && metric(
                    setup.metrics,
                    "sonde_exporter_queue_size{exporter=\"remote_write\"}",
                ) <= 1.0)
                .then_some(())
        },
    );
    let ts = timestamps(&setup.prom, REFERENCE, "2m");
    let agent_log = std::fs::read_to_string(setup.dir.0.join("agent.log")).unwrap();
    let context = format!(
        "off {off:.3} killed {killed:.3} restarted {restarted:.3} on {on:.3}\nsamples {ts:?}\nfirst agent:\n{log}\nsecond agent:\n{agent_log}\nprometheus:\n{}",
        setup.prom.log()
    );
    // Every collection of the first agent reached Prometheus, through the outage up to the
    // kill: no gap longer than two intervals before it...
    let before: Vec<f64> = ts.iter().copied().filter(|t| *t <= killed).collect();
    let during: usize = before.iter().filter(|t| **t > off).count();
    assert!(
        during as f64 >= queued - 1.0,
        "{during} samples from the outage before the kill, {queued} requests were queued\n{context}"
    );
    for w in before.windows(2) {
        assert!(
            w[1] - w[0] < 0.45,
            "a gap before the kill: {w:?}\n{context}"
        );
    }
    // ...and of the second one, queued while still down, then live.
    let after: Vec<f64> = ts.iter().copied().filter(|t| *t > killed).collect();
    assert!(
        after.iter().filter(|t| **t < on).count() >= 5,
        "the second agent's collections during the outage\n{context}"
    );
    for w in after.windows(2) {
        assert!(
            w[1] - w[0] < 0.45,
            "a gap after the restart: {w:?}\n{context}"
        );
    }
    // The only hole is the time no agent ran.
    assert!(
        after[0] - before.last().unwrap() < restarted - killed + 1.0,
        "{context}"
    );
    assert!(agent_log.contains("resuming"), "{agent_log}");
    let scrape = scrape_metrics(setup.metrics).unwrap();
    for line in scrape.lines() {
        if line.starts_with("sonde_exporter_dropped_points_total{exporter=\"remote_write\"") {
            assert!(line.ends_with(" 0"), "nothing dropped: {line}");
        }
    }
    drop(second);
}

#[test]
fn the_queue_stays_under_its_cap_through_a_long_outage() {
    let mut setup = Setup::new(
        "agent-durable-cap",
        "queue_max_size = \"64KiB\"\nqueue_fsync = \"never\"\n",
    );
    setup.switch.off();
    let cap = 64 * 1024;
    let _agent = spawn_agent(BIN, &setup.path, &setup.dir.0);
    wait_for("the agent's /metrics", Duration::from_secs(20), || {
        scrape_metrics(setup.metrics)
    });
    let dropped =
        "sonde_exporter_dropped_points_total{exporter=\"remote_write\",reason=\"queue_full\"}";
    let started = Instant::now();
    let mut largest = 0;
    // Until the cap has pushed requests out for a while (bounded).
    while started.elapsed() < Duration::from_secs(30) {
        let on_disk: u64 = std::fs::read_dir(&setup.queue)
            .map(|d| {
                d.filter_map(|e| e.ok()?.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        largest = largest.max(on_disk);
        // The segments, plus the 24-byte ack file.
        assert!(on_disk <= cap + 24, "{on_disk} bytes on disk, cap {cap}");
        let gauge = metric(
            setup.metrics,
            "sonde_exporter_queue_disk_bytes{exporter=\"remote_write\"}",
        );
        assert!(gauge <= cap as f64, "disk_bytes {gauge}");
        if metric(setup.metrics, dropped) > 0.0 && started.elapsed() > Duration::from_secs(3) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        metric(setup.metrics, dropped) > 0.0,
        "the cap dropped requests, counted"
    );
    assert!(
        largest > cap / 2,
        "the queue filled up to its cap: {largest}"
    );
    // The newest requests were kept and go out when the receiver is back.
    setup.switch.on();
    setup
        .prom
        .wait_for_series(REFERENCE, Duration::from_secs(20));
}

/// A reload that changes the remote writer but keeps its queue directory: the old writer lets go
/// of the directory, the new one takes it over with what was queued (no "in use" refusal).
#[test]
fn a_reload_hands_the_queue_over() {
    let mut setup = Setup::new("agent-durable-reload", "");
    let agent = spawn_agent(BIN, &setup.path, &setup.dir.0);
    setup
        .prom
        .wait_for_series(REFERENCE, Duration::from_secs(20));
    setup.switch.off();
    let off = now_s();
    std::thread::sleep(Duration::from_millis(1200));
    // Same queue, another tenant header: the writer restarts.
    std::fs::write(
        &setup.path,
        config(
            setup.metrics,
            setup.switch.addr,
            &setup.queue,
            "tenant = \"team-b\"\n",
        ),
    )
    .unwrap();
    let pid = agent.0.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let hup = now_s();
    let log = || std::fs::read_to_string(setup.dir.0.join("agent.log")).unwrap();
    wait_for("the reload", Duration::from_secs(20), || {
        (metric(
            setup.metrics,
            "sonde_agent_reloads_total{result=\"success\"}",
        ) == 1.0)
            .then_some(())
    });
    let reloaded = now_s();
    std::thread::sleep(Duration::from_millis(600));
    setup.switch.on();
    let on = now_s();
    wait_for("delivery after the reload", Duration::from_secs(30), || {
        timestamps(&setup.prom, REFERENCE, "2m")
            .last()
            .is_some_and(|t| *t > on + 0.5)
            .then_some(())
    });
    let ts = timestamps(&setup.prom, REFERENCE, "2m");
    // Through the outage and the reload, no collection is missing: two intervals at most between
    // samples, and across the reload itself (the old writer stops, the new one starts its
    // schedule) the time it took on top.
    let first = ts.iter().position(|t| *t > off - 1.0).unwrap();
    for w in ts[first..].windows(2) {
        let spans_reload = w[0] < reloaded && w[1] > hup;
        let allowed = if spans_reload {
            0.45 + (reloaded - hup)
        } else {
            0.45
        };
        assert!(
            w[1] - w[0] < allowed,
            "a gap: {w:?} (off {off:.3}, hup {hup:.3}, reloaded {reloaded:.3}, on {on:.3})\n{ts:?}\n{}",
            log()
        );
    }
    assert!(!log().contains("in use by another process"), "{}", log());
    assert_eq!(
        metric(
            setup.metrics,
            "sonde_agent_reloads_total{result=\"failure\"}"
        ),
        0.0,
        "{}",
        log()
    );
}
