//! An example service instrumented with sonde: a simulated workload of HTTP requests, database
//! calls, external API calls, a cache and a cold start, recording the OpenTelemetry semantic
//! convention metrics. The binary serves them on `/metrics`; the end-to-end tests drive the same
//! workload in-process against a real Prometheus.
//!
//! ```
//! use std::time::Duration;
//! let registry = sonde::Registry::new();
//! let workload = sonde_example::Workload::start(&registry, sonde_example::Options::default())?;
//! std::thread::sleep(Duration::from_millis(50));
//! workload.stop();
//! assert!(registry.snapshot().family("http.server.request.duration").is_some());
//! # Ok::<(), sonde::Error>(())
//! ```
#![warn(missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use sonde::{Counter, Family, Histogram, Registry, Unit, UpDownCounter};

/// What the simulated service does.
#[derive(Debug, Clone)]
pub struct Options {
    /// Worker threads handling requests.
    pub workers: usize,
    /// Pause between requests per worker (the service's idle time).
    pub pause: Duration,
    /// Simulated cold start before the first request.
    pub cold_start: Duration,
    /// Median latency of the database, in seconds (raise it to simulate a slow database).
    pub db_median: f64,
    /// Probability that a request to the payments API fails.
    pub api_error_rate: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            workers: 2,
            pause: Duration::from_micros(500),
            cold_start: Duration::from_millis(150),
            db_median: 0.004,
            api_error_rate: 0.02,
        }
    }
}

/// The service's instruments.
struct Metrics {
    requests: Family<Histogram>,
    active: UpDownCounter,
    db: Family<Histogram>,
    api: Family<Histogram>,
    cache: Family<Counter>,
}

impl Metrics {
    fn new(reg: &Registry) -> Result<Self, sonde::Error> {
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
                .description("Number of active HTTP server requests.")
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
                .description("Duration of HTTP client requests.")
                .unit(Unit::Seconds)
                .labels([
                    "http.request.method",
                    "server.address",
                    "http.response.status_code",
                ])
                .build()?,
            cache: reg
                .counter("cache.requests")
                .description("Cache lookups by result; hit ratio is hit / (hit + miss).")
                .labels(["cache.name", "cache.result"])
                .build()?,
        })
    }
}

/// A running simulated workload.
pub struct Workload {
    stop: Arc<AtomicBool>,
    db_median_micros: Arc<AtomicU32>,
    threads: Vec<JoinHandle<()>>,
}

impl Workload {
    /// Records a cold start, then starts the worker threads.
    pub fn start(registry: &Registry, options: Options) -> Result<Workload, sonde::Error> {
        let started = Instant::now();
        let metrics = Arc::new(Metrics::new(registry)?);
        let startup = registry
            .histogram("process.startup.duration")
            .description("Time from process start to ready to serve.")
            .unit(Unit::Seconds)
            .build()?
            .handle();
        thread::sleep(options.cold_start);
        startup.record_since(started);
        let stop = Arc::new(AtomicBool::new(false));
        let db_median_micros = Arc::new(AtomicU32::new((options.db_median * 1e6) as u32));
        let threads = (0..options.workers.max(1))
            .map(|i| {
                let (m, stop, db, options) = (
                    metrics.clone(),
                    stop.clone(),
                    db_median_micros.clone(),
                    options.clone(),
                );
                thread::spawn(move || {
                    worker(
                        &m,
                        0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1),
                        &stop,
                        &db,
                        &options,
                    )
                })
            })
            .collect();
        Ok(Workload {
            stop,
            db_median_micros,
            threads,
        })
    }

    /// Changes the database's median latency while running (fault injection).
    pub fn set_db_median(&self, seconds: f64) {
        self.db_median_micros
            .store((seconds * 1e6) as u32, Ordering::Relaxed);
    }

    /// Stops the workers and waits for them.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A small xorshift generator so the example needs no dependencies.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A log-normal-ish latency around `median` seconds.
    fn latency(&mut self, median: f64) -> f64 {
        let u = (self.next() + self.next() + self.next() - 1.5) * 2.0;
        median * (u * 0.8).exp()
    }
}

fn worker(m: &Metrics, seed: u64, stop: &AtomicBool, db_median: &AtomicU32, options: &Options) {
    let mut rng = Rng(seed | 1);
    let routes = [
        ("GET", "/users/:id"),
        ("GET", "/orders"),
        ("POST", "/orders"),
        ("GET", "/health"),
    ];
    let cache_hit = m.cache.with(&["users", "hit"]);
    let cache_miss = m.cache.with(&["users", "miss"]);
    let db_select_users = m.db.with(&["postgresql", "SELECT", "users"]);
    let db_select_orders = m.db.with(&["postgresql", "SELECT", "orders"]);
    let db_insert = m.db.with(&["postgresql", "INSERT", "orders"]);
    let api_ok = m.api.with(&["POST", "payments.example", "200"]);
    let api_err = m.api.with(&["POST", "payments.example", "503"]);
    while !stop.load(Ordering::Relaxed) {
        let db = db_median.load(Ordering::Relaxed) as f64 / 1e6;
        let (method, route) = routes[(rng.next() * routes.len() as f64) as usize % routes.len()];
        m.active.inc();
        let mut total = 0.0001;
        let mut status = "200";
        match (method, route) {
            (_, "/users/:id") => {
                if rng.next() < 0.8 {
                    cache_hit.inc();
                } else {
                    cache_miss.inc();
                    let d = rng.latency(db);
                    db_select_users.observe(d);
                    total += d;
                }
            }
            ("POST", "/orders") => {
                let d = rng.latency(db * 2.0);
                db_insert.observe(d);
                let a = rng.latency(0.12);
                if rng.next() < options.api_error_rate {
                    api_err.observe(a);
                    status = "502";
                } else {
                    api_ok.observe(a);
                }
                total += d + a;
            }
            (_, "/orders") => {
                let d = rng.latency(db * 4.0);
                db_select_orders.observe(d);
                total += d;
            }
            _ => {}
        }
        m.requests
            .with(&[method, route, status])
            .observe(total + rng.latency(0.0005));
        m.active.dec();
        thread::sleep(options.pause);
    }
}
