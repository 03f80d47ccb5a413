//! Rough single-threaded throughput of `parse_packet` and `Ingest::ingest_packet`.
//!
//! `cargo run --release -p sonde-statsd --example parse_throughput [lines]`
//!
//! Indicative only (the criterion benchmarks live in sonde-bench): lines are a mix of tagged
//! counters, gauges, timers, histograms and sets over a few hundred distinct names, packed into
//! ~1400-byte datagrams as clients send them.

use std::hint::black_box;
use std::time::Instant;

use sonde_core::Registry;
use sonde_statsd::{Ingest, parse_packet};

fn packets() -> (Vec<Vec<u8>>, usize) {
    let routes = ["/users", "/users/:id", "/orders", "/health", "/login"];
    let mut packets = Vec::new();
    let mut packet = Vec::new();
    let mut lines = 0;
    for i in 0..20_000usize {
        let route = routes[i % routes.len()];
        let line = match i % 6 {
            0 => format!("api.requests:1|c|#route:{route},method:GET,code:200\n"),
            1 => format!("api.latency:{}|ms|@0.5|#route:{route}\n", 3 + i % 200),
            2 => format!("svc{}.queue.depth:{}|g\n", i % 100, i % 1000),
            3 => format!("payload.size:{}.5|h|#route:{route}\n", i % 5000),
            4 => format!("svc{}.hits:1|c\n", i % 200),
            _ => format!("users.active:u{}|s\n", i % 300),
        };
        if packet.len() + line.len() > 1400 {
            packets.push(std::mem::take(&mut packet));
        }
        packet.extend_from_slice(line.as_bytes());
        lines += 1;
    }
    packets.push(packet);
    (packets, lines)
}

fn main() {
    let target: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000_000);
    let (packets, lines_per_round) = packets();
    let rounds = target.div_ceil(lines_per_round);
    let bytes: usize = packets.iter().map(Vec::len).sum();
    println!(
        "{} datagrams, {lines_per_round} lines, {bytes} bytes per round; {rounds} rounds",
        packets.len()
    );

    // Parse only.
    let start = Instant::now();
    let mut ok = 0usize;
    for _ in 0..rounds {
        for p in &packets {
            parse_packet(black_box(p), |r| {
                if let Ok(s) = r {
                    ok += 1;
                    black_box(&s);
                }
            });
        }
    }
    let elapsed = start.elapsed();
    let n = rounds * lines_per_round;
    assert_eq!(ok, n);
    println!(
        "parse_packet:          {n} lines in {elapsed:.2?}: {:.1} M lines/s, {:.0} MB/s",
        n as f64 / elapsed.as_secs_f64() / 1e6,
        (rounds * bytes) as f64 / elapsed.as_secs_f64() / 1e6
    );

    // Parse and record.
    let registry = Registry::new();
    let mut ingest = Ingest::new(registry.clone());
    let start = Instant::now();
    for _ in 0..rounds {
        for p in &packets {
            ingest.ingest_packet(black_box(p));
        }
    }
    let elapsed = start.elapsed();
    println!(
        "Ingest::ingest_packet: {n} lines in {elapsed:.2?}: {:.1} M lines/s ({} metrics)",
        n as f64 / elapsed.as_secs_f64() / 1e6,
        ingest.metric_count()
    );
}
