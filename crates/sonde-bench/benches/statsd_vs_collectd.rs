//! CPU per StatsD line: the `sonde-agent` binary against collectd's `statsd` plugin (Debian
//! `collectd-core`), fed the same datagrams at the same rate in one run. Not criterion and not
//! in CI: it prints a table.
//!
//! ```text
//! apt-get install collectd-core          # once
//! cargo build --release -p sonde-agent
//! cargo bench -p sonde-bench --bench statsd_vs_collectd
//! ```
//!
//! Workload: `DATAGRAMS` datagrams (default 200,000) of 40 lines each, 20 counters
//! (`app.c{k}:1|c`) and 20 timers (`app.t{k}:{ms}|ms`), over 100 counter and 100 timer names,
//! sent from one thread paced at `RATE` datagrams a second (default 20,000) to a loopback UDP
//! port. collectd runs with `TimerPercentile` 50, 95 and 99 and `CounterSum true`; sonde-agent
//! with its StatsD server (timers as histograms) and its Prometheus endpoint, host and process
//! collectors off; both at a 10 s interval. Each receiver runs alone, twice, alternating.
//!
//! Measured per run: the receiver's CPU time from the sum of its threads'
//! `/proc/<pid>/task/*/schedstat` (nanoseconds on CPU) from just before the first datagram to
//! when it has been idle for 300 ms after the last, and the kernel's UDP receive-buffer drops
//! (`RcvbufErrors` in `/proc/net/snmp`) over the run: a run with drops is reported as lossy.
//! For sonde the counters on `/metrics` must also add up to every line sent.

#![allow(clippy::unwrap_used, missing_docs)]

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sonde_tests::agent::{KillOnDrop, free_udp, scrape_metrics, spawn_agent};
use sonde_tests::{TempDir, free_addr, wait_for};

const LINES: usize = 40;
const NAMES: usize = 100;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The datagrams: each holds 20 counters and 20 timers, names and values varying.
fn datagrams(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut d = String::with_capacity(LINES * 20);
            for k in 0..LINES / 2 {
                let name = (i * 7 + k) % NAMES;
                d.push_str(&format!("app.c{name}:1|c\n"));
                d.push_str(&format!("app.t{name}:{}|ms\n", 1 + (i * 31 + k * 17) % 900));
            }
            d.pop();
            d.into_bytes()
        })
        .collect()
}

/// Nanoseconds every thread of `pid` has spent on a CPU.
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// The kernel's count of UDP datagrams dropped because a receive buffer was full.
fn rcvbuf_errors() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let (names, values) = (udp.next().unwrap(), udp.next().unwrap());
    let at = names
        .split_whitespace()
        .position(|n| n == "RcvbufErrors")
        .unwrap();
    values.split_whitespace().nth(at).unwrap().parse().unwrap()
}

/// Sends every datagram to `to`, paced at `rate` a second; returns the time it took.
fn send(to: SocketAddr, datagrams: &[Vec<u8>], rate: u64) -> Duration {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let start = Instant::now();
    for (i, d) in datagrams.iter().enumerate() {
        let due = Duration::from_secs_f64(i as f64 / rate as f64);
        while start.elapsed() < due {
            std::hint::spin_loop();
        }
        sock.send_to(d, to).unwrap();
    }
    start.elapsed()
}

/// Waits until `pid` has used no CPU for 300 ms (bounded by 20 s).
fn wait_idle(pid: u32) {
    let start = Instant::now();
    let mut last = cpu_ns(pid);
    while start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(300));
        let now = cpu_ns(pid);
        if now == last {
            return;
        }
        last = now;
    }
}

struct Run {
    cpu: Duration,
    drops: u64,
    sent_in: Duration,
}

/// Feeds `datagrams` to the receiver `pid` listening on `to`.
fn feed(pid: u32, to: SocketAddr, datagrams: &[Vec<u8>], rate: u64) -> Run {
    wait_idle(pid);
    let (cpu0, drops0) = (cpu_ns(pid), rcvbuf_errors());
    let sent_in = send(to, datagrams, rate);
    wait_idle(pid);
    let (cpu1, drops1) = (cpu_ns(pid), rcvbuf_errors());
    Run {
        cpu: Duration::from_nanos(cpu1 - cpu0),
        drops: drops1 - drops0,
        sent_in,
    }
}

fn collectd_binary() -> PathBuf {
    [
        "/usr/sbin/collectd",
        "/usr/bin/collectd",
        "/usr/local/sbin/collectd",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
    .unwrap_or_else(|| panic!("collectd is not installed: apt-get install collectd-core"))
}

fn start_collectd(dir: &Path, statsd: SocketAddr) -> KillOnDrop {
    let conf = dir.join("collectd.conf");
    std::fs::write(
        &conf,
        format!(
            "Hostname \"bench\"\nFQDNLookup false\nBaseDir \"{dir}\"\nPIDFile \"{dir}/collectd.pid\"\n\
             TypesDB \"/usr/share/collectd/types.db\"\nInterval 10\n\
             LoadPlugin statsd\n<Plugin statsd>\n  Host \"{host}\"\n  Port \"{port}\"\n\
             \x20 TimerPercentile 50\n  TimerPercentile 95\n  TimerPercentile 99\n  CounterSum true\n</Plugin>\n",
            dir = dir.display(),
            host = statsd.ip(),
            port = statsd.port(),
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("collectd.log")).unwrap();
    let child: Child = Command::new(collectd_binary())
        .arg("-f")
        .arg("-C")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let collectd = KillOnDrop(child);
    // Ready when its socket is bound: binding the port ourselves then fails.
    wait_for("collectd's statsd socket", Duration::from_secs(10), || {
        UdpSocket::bind(statsd).is_err().then_some(())
    });
    collectd
}

fn agent_binary() -> PathBuf {
    let bin = std::env::var_os("SONDE_AGENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/sonde-agent")
        });
    assert!(
        bin.is_file(),
        "{} is missing: cargo build --release -p sonde-agent (or set SONDE_AGENT)",
        bin.display()
    );
    bin
}

fn start_agent(dir: &Path, statsd: SocketAddr, metrics: SocketAddr) -> KillOnDrop {
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\ninterval = \"10s\"\n\n[collectors.host]\nenabled = false\n\n\
             [collectors.process]\nenabled = false\n\n[statsd]\nudp = \"{statsd}\"\n\n\
             [exporters.prometheus]\nlisten = \"{metrics}\"\n"
        ),
    )
    .unwrap();
    let agent = spawn_agent(&agent_binary().to_string_lossy(), &config, dir);
    wait_for("the agent's /metrics", Duration::from_secs(20), || {
        scrape_metrics(metrics)
    });
    agent
}

/// The sum of the agent's `app_c*_total` counters.
fn agent_counted(metrics: SocketAddr) -> f64 {
    let text = scrape_metrics(metrics).unwrap();
    text.lines()
        .filter(|l| l.starts_with("app_c") && l.contains("_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n = env_or("DATAGRAMS", 200_000) as usize;
    let rate = env_or("RATE", 20_000);
    let datagrams = datagrams(n);
    let lines = (n * LINES) as f64;
    println!(
        "statsd_vs_collectd: {n} datagrams of {LINES} lines (20 counters, 20 timers) at {rate}/s, each receiver alone"
    );
    println!(
        "{:<12} {:>4} {:>10} {:>12} {:>12} {:>10}",
        "receiver", "run", "CPU ms", "ns per line", "kernel drops", "sent in s"
    );
    let mut per_line: Vec<(&str, f64)> = Vec::new();
    for round in 1..=2 {
        {
            let dir = TempDir::new("collectd");
            let statsd = free_udp();
            let collectd = start_collectd(&dir.0, statsd);
            let run = feed(collectd.0.id(), statsd, &datagrams, rate);
            report("collectd", round, &run, lines, &mut per_line);
        }
        {
            let dir = TempDir::new("sonde-agent");
            let (statsd, metrics) = (free_udp(), free_addr());
            let agent = start_agent(&dir.0, statsd, metrics);
            let run = feed(agent.0.id(), statsd, &datagrams, rate);
            let counted = agent_counted(metrics);
            let expected = (n * LINES / 2) as f64;
            report("sonde-agent", round, &run, lines, &mut per_line);
            if counted != expected {
                println!("  sonde-agent counted {counted} of {expected} counter lines");
            }
        }
    }
    let best = |who: &str| {
        per_line
            .iter()
            .filter(|(w, _)| *w == who)
            .map(|(_, ns)| *ns)
            .fold(f64::INFINITY, f64::min)
    };
    println!(
        "best runs: sonde-agent {:.0} ns per line, collectd {:.0} ns per line: sonde at {:.2}x collectd's CPU per line",
        best("sonde-agent"),
        best("collectd"),
        best("sonde-agent") / best("collectd")
    );
}

fn report(who: &'static str, round: u32, run: &Run, lines: f64, out: &mut Vec<(&str, f64)>) {
    let ns = run.cpu.as_nanos() as f64 / lines;
    println!(
        "{who:<12} {round:>4} {:>10.1} {:>12.1} {:>12} {:>10.2}",
        run.cpu.as_secs_f64() * 1e3,
        ns,
        run.drops,
        run.sent_in.as_secs_f64()
    );
    if run.drops == 0 {
        out.push((who, ns));
    }
}
