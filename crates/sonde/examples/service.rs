//! A simulated web service: requests, database calls, external API calls, a cache and a cold
//! start, recorded with sonde; every few seconds it prints a report of where the time goes.
//!
//! `cargo run --release -p sonde --example service -- --seconds 10`
//!
//! Until the Prometheus exporter and the daemon land this is sonde's main job: it shows the
//! engine under a realistic load and what its snapshots hold.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use sonde::{Histogram, Point, Registry, Temporality, Unit};

struct Metrics {
    requests: sonde::Family<Histogram>,
    active: sonde::UpDownCounter,
    db: sonde::Family<Histogram>,
    api: sonde::Family<Histogram>,
    cache: sonde::Family<sonde::Counter>,
}

fn metrics(reg: &Registry) -> Result<Metrics, sonde::Error> {
    Ok(Metrics {
        requests: reg
            .histogram("http.server.request.duration")
            .description("Duration of HTTP server requests.")
            .unit(Unit::Seconds)
            .labels([
                "http.request.method",
                "http.route",
                "http.response.status_code",
            ])
            .build()?,
        active: reg
            .up_down_counter("http.server.active_requests")
            .description("Requests in flight.")
            .unit(Unit::Count("{request}".into()))
            .build()?
            .handle(),
        db: reg
            .histogram("db.client.operation.duration")
            .description("Duration of database client operations.")
            .unit(Unit::Seconds)
            .labels(["db.system.name", "db.operation.name", "db.collection.name"])
            .build()?,
        api: reg
            .histogram("http.client.request.duration")
            .description("Duration of outgoing HTTP requests.")
            .unit(Unit::Seconds)
            .labels([
                "http.request.method",
                "server.address",
                "http.response.status_code",
            ])
            .build()?,
        cache: reg
            .counter("cache.requests")
            .description("Cache lookups by result.")
            .labels(["cache.name", "cache.result"])
            .build()?,
    })
}

/// A tiny xorshift generator so the example needs no dependencies.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Log-normal-ish latency around `median` seconds.
    fn latency(&mut self, median: f64) -> f64 {
        let u = (self.next() + self.next() + self.next() - 1.5) * 2.0;
        median * (u * 0.8).exp()
    }
}

fn worker(m: &Metrics, seed: u64, stop: &AtomicBool) {
    let mut rng = Rng(seed | 1);
    let routes = [
        ("GET", "/users/:id"),
        ("GET", "/orders"),
        ("POST", "/orders"),
        ("GET", "/health"),
    ];
    let cache_hit = m.cache.with(&["users", "hit"]);
    let cache_miss = m.cache.with(&["users", "miss"]);
    let db_select = m.db.with(&["postgresql", "SELECT", "users"]);
    let db_insert = m.db.with(&["postgresql", "INSERT", "orders"]);
    let api_ok = m.api.with(&["POST", "payments.example", "200"]);
    let api_err = m.api.with(&["POST", "payments.example", "503"]);
    while !stop.load(Ordering::Relaxed) {
        let (method, route) = routes[(rng.next() * routes.len() as f64) as usize % routes.len()];
        m.active.inc();
        let mut total = 0.0001;
        let mut status = "200";
        match route {
            "/users/:id" => {
                if rng.next() < 0.8 {
                    cache_hit.inc();
                } else {
                    cache_miss.inc();
                    let d = rng.latency(0.004);
                    db_select.observe(d);
                    total += d;
                }
            }
            "/orders" if method == "POST" => {
                let d = rng.latency(0.008);
                db_insert.observe(d);
                let a = rng.latency(0.12);
                if rng.next() < 0.02 {
                    api_err.observe(a);
                    status = "502";
                } else {
                    api_ok.observe(a);
                }
                total += d + a;
            }
            "/orders" => {
                let d = rng.latency(0.015);
                db_select.observe(d);
                total += d;
            }
            _ => {}
        }
        m.requests
            .with(&[method, route, status])
            .observe(total + rng.latency(0.0005));
        m.active.dec();
        // Real handlers would wait on I/O; a short sleep keeps the simulation from spinning.
        thread::sleep(Duration::from_micros(200));
    }
}

fn report(snapshot: &sonde::Snapshot, interval: f64) {
    println!(
        "--- sonde report ({} families, {} series) ---",
        snapshot.families.len(),
        snapshot.series_count()
    );
    for f in &snapshot.families {
        for s in &f.series {
            let labels: Vec<String> = f
                .labels(s)
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            match &s.point {
                Point::Histogram(h) if h.count() > 0 => println!(
                    "{:<32} {:<60} n={:<6} rate={:>7.1}/s p50={:>8.2}ms p95={:>8.2}ms p99={:>8.2}ms max={:>8.2}ms",
                    f.meta.name(),
                    labels.join(","),
                    h.count(),
                    h.count() as f64 / interval,
                    h.quantile(0.5).unwrap_or(0.0) * 1e3,
                    h.quantile(0.95).unwrap_or(0.0) * 1e3,
                    h.quantile(0.99).unwrap_or(0.0) * 1e3,
                    h.max().unwrap_or(0.0) * 1e3,
                ),
                Point::Counter(n) | Point::Gauge(n) | Point::UpDownCounter(n)
                    if n.as_f64() != 0.0 =>
                {
                    println!(
                        "{:<32} {:<60} {}",
                        f.meta.name(),
                        labels.join(","),
                        n.as_f64()
                    )
                }
                _ => {}
            }
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut seconds = 10u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => {
                seconds = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .ok_or("--seconds needs a number")?
            }
            "--help" | "-h" => {
                println!("usage: service [--seconds N]   (0 runs until interrupted)");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?}; try --help").into()),
        }
    }
    let started = Instant::now();
    let reg = Registry::global().clone();
    let m = Arc::new(metrics(&reg)?);
    let startup = reg
        .histogram("process.startup.duration")
        .description("Time from process start to ready.")
        .unit(Unit::Seconds)
        .build()?
        .handle();
    // Simulated cold start: loading configuration and warming the cache.
    thread::sleep(Duration::from_millis(150));
    startup.record_since(started);

    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..2)
        .map(|i| {
            let (m, stop) = (m.clone(), stop.clone());
            thread::spawn(move || worker(&m, 0x9e3779b97f4a7c15 ^ i, &stop))
        })
        .collect();
    let mut deltas = reg.reader(Temporality::Delta);
    let interval = 5u64;
    let mut elapsed = 0;
    while seconds == 0 || elapsed < seconds {
        let step = if seconds == 0 {
            interval
        } else {
            interval.min(seconds - elapsed)
        };
        thread::sleep(Duration::from_secs(step));
        elapsed += step;
        report(&deltas.collect(), step as f64);
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    Ok(())
}
