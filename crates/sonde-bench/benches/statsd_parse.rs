//! StatsD parsing and ingest throughput (lines per second on one core), criterion.
//!
//! The workload is what StatsD/DogStatsD clients send: ~1400-byte datagrams mixing tagged counters,
//! timers with a sample rate, gauges, histograms and sets over a few hundred names.
//! `parse` only parses; `ingest` parses and records into a registry (handles cached, as in a
//! steady state).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sonde::Registry;
use sonde_bench::statsd_packets;
use sonde_statsd::{Ingest, parse_packet};

fn bench(c: &mut Criterion) {
    let (packets, lines) = statsd_packets();
    let mut g = c.benchmark_group("statsd");
    g.throughput(Throughput::Elements(lines as u64));
    g.bench_function("parse", |b| {
        b.iter(|| {
            let mut ok = 0usize;
            for p in &packets {
                parse_packet(black_box(p), |r| ok += usize::from(r.is_ok()));
            }
            assert_eq!(ok, lines);
        })
    });
    let registry = Registry::new();
    let mut ingest = Ingest::new(registry);
    for p in &packets {
        ingest.ingest_packet(p);
    }
    g.bench_function("ingest", |b| {
        b.iter(|| {
            let mut n = 0;
            for p in &packets {
                n += ingest.ingest_packet(black_box(p));
            }
            assert_eq!(n, lines);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
