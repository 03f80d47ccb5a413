//! An example service instrumented with sonde: simulated HTTP traffic against a real embedded
//! SQLite database (through an r2d2 pool), a cache, a payments API, a cold start, multi-step
//! checkouts and business events, all recorded with the OpenTelemetry semantic-convention
//! helpers of `sonde-instrument`, plus process metrics and `#[measured]`. The binary serves them on
//! `/metrics`; the end-to-end tests drive the same workload in-process.
//!
//! ```
//! use std::time::Duration;
//! let registry = sonde::Registry::new();
//! let workload = sonde_example::Workload::start(&registry, sonde_example::Options::default())?;
//! std::thread::sleep(Duration::from_millis(50));
//! workload.stop();
//! assert!(registry.snapshot().family("http.server.request.duration").is_some());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Its objectives ([`OBJECTIVES`], the repository's `crates/sonde-objectives/examples/objectives.toml`,
//! embedded) are loaded by [`load_objectives`]: the binary adds their bucket boundaries to its
//! registry before the workload registers its histograms, and judges them in `/report`.
#![warn(missing_docs)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use r2d2_sqlite::SqliteConnectionManager;
use r2d2_sqlite::rusqlite;
use sonde::Registry;
use sonde::instrument::{
    CacheMetrics, DbMetrics, Events, HttpClientMetrics, HttpServerMetrics, Lifecycle, Phases,
    PoolMetrics,
};

/// The example service's objectives file, embedded: the one the repository's alerts,
/// dashboards and CloudWatch alarms are generated from.
pub const OBJECTIVES: &str = include_str!("../../sonde-objectives/examples/objectives.toml");

/// The name [`OBJECTIVES`] goes by in messages: its path in the repository.
pub const OBJECTIVES_ORIGIN: &str = "crates/sonde-objectives/examples/objectives.toml";

/// The objectives in `path`, or the embedded [`OBJECTIVES`] without one. Problems in the file
/// are located (`file:line:column`) in the error.
///
/// ```
/// let objectives = sonde_example::load_objectives(None)?;
/// assert!(objectives.thresholds.iter().any(|t| t.common.name == "api-latency-p95"));
/// // The boundaries go in before the workload registers its histograms.
/// let registry = sonde::Registry::new();
/// objectives.install_boundaries(&registry)?;
/// # Ok::<(), sonde_objectives::Error>(())
/// ```
pub fn load_objectives(
    path: Option<&std::path::Path>,
) -> Result<sonde_objectives::Objectives, sonde_objectives::Error> {
    match path {
        Some(p) => sonde_objectives::load(p),
        None => Ok(sonde_objectives::parse(OBJECTIVES_ORIGIN, OBJECTIVES)?),
    }
}

/// Users in the database; the cache holds fewer, so some lookups miss.
pub const USERS: u32 = 50;
/// Cache capacity.
pub const CACHE_CAPACITY: usize = 40;
/// Order channels counted in `orders.placed{channel}`.
pub const CHANNELS: &[&str] = &["web", "mobile", "api"];

/// What the simulated service does.
#[derive(Debug, Clone)]
pub struct Options {
    /// Worker threads handling requests.
    pub workers: usize,
    /// Pause between requests per worker.
    pub pause: Duration,
    /// Simulated initialization before the service is ready.
    pub cold_start: Duration,
    /// Median latency of the payments API.
    pub api_median: Duration,
    /// Probability that the payments API answers 503.
    pub api_error_rate: f64,
    /// Extra latency added to every database call (fault injection: a slow database).
    pub db_delay: Duration,
    /// Also collect process metrics (CPU, memory...) into the registry.
    pub process_metrics: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            workers: 2,
            pause: Duration::from_micros(500),
            cold_start: Duration::from_millis(150),
            api_median: Duration::from_millis(15),
            api_error_rate: 0.02,
            db_delay: Duration::ZERO,
            process_metrics: true,
        }
    }
}

/// Knobs that can change while the workload runs (fault injection).
#[derive(Default)]
struct Faults {
    db_delay_micros: AtomicU64,
    api_error_per_mille: AtomicU64,
    api_delay_micros: AtomicU64,
}

struct App {
    lifecycle: Lifecycle,
    http: HttpServerMetrics,
    db: DbMetrics,
    api: HttpClientMetrics,
    cache: CacheMetrics,
    checkout: Phases,
    orders: Events,
    pool: r2d2::Pool<SqliteConnectionManager>,
    users: Mutex<HashMap<u32, String>>,
    faults: Faults,
    options: Options,
}

/// Errors starting the workload.
#[derive(Debug)]
pub enum Error {
    /// Registering metrics failed.
    Metrics(String),
    /// The database could not be set up.
    Database(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Metrics(e) => write!(f, "could not register the example's metrics: {e}"),
            Error::Database(e) => write!(f, "could not set up the example's SQLite database: {e}"),
        }
    }
}

impl std::error::Error for Error {}

fn metrics_err(e: impl std::fmt::Display) -> Error {
    Error::Metrics(e.to_string())
}

fn db_err(e: impl std::fmt::Display) -> Error {
    Error::Database(e.to_string())
}

/// A running simulated workload.
pub struct Workload {
    stop: Arc<AtomicBool>,
    app: Arc<App>,
    threads: Vec<JoinHandle<()>>,
    /// Keeps the process metrics collected for as long as the workload runs.
    _process: Option<sonde::process::ProcessMetrics>,
}

impl Workload {
    /// Sets up the database and metrics (the cold start), marks the service ready, then starts
    /// the worker threads.
    pub fn start(registry: &Registry, options: Options) -> Result<Workload, Error> {
        let lifecycle = Lifecycle::install(registry).map_err(metrics_err)?;
        let process = if options.process_metrics {
            Some(
                sonde::process::ProcessCollector::current()
                    .registry(registry)
                    .install()
                    .map_err(metrics_err)?,
            )
        } else {
            None
        };
        let pool_metrics = PoolMetrics::install(registry, "sqlite").map_err(metrics_err)?;
        // A private in-memory database shared by the pool's connections.
        let uri = format!("file:sonde-example-{}?mode=memory&cache=shared", unique());
        let manager = SqliteConnectionManager::file(uri).with_flags(
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
                | rusqlite::OpenFlags::SQLITE_OPEN_CREATE
                | rusqlite::OpenFlags::SQLITE_OPEN_URI,
        );
        let pool = r2d2::Pool::builder()
            .max_size(4)
            .connection_timeout(Duration::from_secs(2))
            .event_handler(Box::new(pool_metrics.r2d2_events()))
            .build(manager)
            .map_err(db_err)?;
        pool_metrics.watch_r2d2(&pool);
        seed(&pool).map_err(db_err)?;
        thread::sleep(options.cold_start);
        let app = Arc::new(App {
            http: HttpServerMetrics::install(registry).map_err(metrics_err)?,
            db: DbMetrics::install(registry).map_err(metrics_err)?,
            api: HttpClientMetrics::install(registry).map_err(metrics_err)?,
            cache: CacheMetrics::install(registry, "users").map_err(metrics_err)?,
            checkout: Phases::install(registry, "checkout.phase.duration").map_err(metrics_err)?,
            orders: Events::install(registry, "orders.placed", "channel", CHANNELS)
                .map_err(metrics_err)?,
            lifecycle,
            pool,
            users: Mutex::new(HashMap::new()),
            faults: Faults::default(),
            options: options.clone(),
        });
        app.faults
            .db_delay_micros
            .store(options.db_delay.as_micros() as u64, Ordering::Relaxed);
        app.faults
            .api_error_per_mille
            .store((options.api_error_rate * 1000.0) as u64, Ordering::Relaxed);
        app.lifecycle.mark_ready();
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..options.workers.max(1))
            .map(|i| {
                let (app, stop) = (app.clone(), stop.clone());
                thread::spawn(move || worker(&app, 0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1), &stop))
            })
            .collect();
        Ok(Workload {
            stop,
            app,
            threads,
            _process: process,
        })
    }

    /// Adds `delay` to every database call from now on (a slow database).
    pub fn set_db_delay(&self, delay: Duration) {
        self.app
            .faults
            .db_delay_micros
            .store(delay.as_micros() as u64, Ordering::Relaxed);
    }

    /// Sets the probability that the payments API fails (an error burst).
    pub fn set_api_error_rate(&self, rate: f64) {
        self.app
            .faults
            .api_error_per_mille
            .store((rate.clamp(0.0, 1.0) * 1000.0) as u64, Ordering::Relaxed);
    }

    /// Adds `delay` to every payments API call from now on (a slow dependency).
    pub fn set_api_delay(&self, delay: Duration) {
        self.app
            .faults
            .api_delay_micros
            .store(delay.as_micros() as u64, Ordering::Relaxed);
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

fn unique() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    (std::process::id() as u64) << 32 | N.fetch_add(1, Ordering::Relaxed)
}

fn seed(pool: &r2d2::Pool<SqliteConnectionManager>) -> Result<(), Box<dyn std::error::Error>> {
    let conn = pool.get()?;
    conn.execute_batch(
        "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
         CREATE TABLE orders (id INTEGER PRIMARY KEY AUTOINCREMENT, user_id INTEGER NOT NULL, channel TEXT NOT NULL, amount INTEGER NOT NULL);",
    )?;
    for id in 0..USERS {
        conn.execute(
            "INSERT INTO users (id, name) VALUES (?1, ?2)",
            (id, format!("user-{id}")),
        )?;
    }
    Ok(())
}

/// A small xorshift generator so the workload needs no dependencies.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: u32) -> u32 {
        (self.next() * n as f64) as u32 % n.max(1)
    }

    /// A log-normal-ish duration around `median`.
    fn latency(&mut self, median: Duration) -> Duration {
        let u = (self.next() + self.next() + self.next() - 1.5) * 2.0;
        median.mul_f64((u * 0.6).exp())
    }
}

#[derive(Debug)]
struct ApiUnavailable;

/// Computes an order's total: a CPU-bound step, measured per function.
#[sonde::measured]
fn price(items: u32, rng_value: f64) -> u64 {
    (0..items as u64)
        .map(|i| i * 100 + (rng_value * 50.0) as u64)
        .sum()
}

impl App {
    fn db_delay(&self) {
        let micros = self.faults.db_delay_micros.load(Ordering::Relaxed);
        if micros > 0 {
            thread::sleep(Duration::from_micros(micros));
        }
    }

    fn get_user(&self, id: u32) -> Result<String, String> {
        if let Some(name) = self
            .users
            .lock()
            .map_err(|e| e.to_string())?
            .get(&id)
            .cloned()
        {
            self.cache.hit();
            return Ok(name);
        }
        self.cache.miss();
        let name = self.db.time_sync("sqlite", "SELECT", "users", || {
            self.db_delay();
            let conn = self.pool.get().map_err(|e| e.to_string())?;
            conn.query_row("SELECT name FROM users WHERE id = ?1", [id], |r| {
                r.get::<_, String>(0)
            })
            .map_err(|e| e.to_string())
        })?;
        let mut cache = self.users.lock().map_err(|e| e.to_string())?;
        if cache.len() >= CACHE_CAPACITY
            && let Some(victim) = cache.keys().next().copied()
        {
            cache.remove(&victim);
            self.cache.evicted(1);
        }
        cache.insert(id, name.clone());
        self.cache.set_size(cache.len() as i64);
        Ok(name)
    }

    fn list_orders(&self, user: u32) -> Result<i64, String> {
        self.db.time_sync("sqlite", "SELECT", "orders", || {
            self.db_delay();
            let conn = self.pool.get().map_err(|e| e.to_string())?;
            conn.query_row(
                "SELECT COUNT(*) FROM orders WHERE user_id = ?1",
                [user],
                |r| r.get(0),
            )
            .map_err(|e| e.to_string())
        })
    }

    /// Validates, charges through the payments API, stores: each step is a checkout phase.
    fn place_order(&self, rng: &mut Rng) -> u16 {
        let mut phases = self.checkout.start();
        let user = rng.below(USERS);
        let total = price(1 + rng.below(5), rng.next());
        phases.checkpoint("validate");
        let fail = rng.below(1000) < self.faults.api_error_per_mille.load(Ordering::Relaxed) as u32;
        let latency = rng.latency(self.options.api_median)
            + Duration::from_micros(self.faults.api_delay_micros.load(Ordering::Relaxed));
        let charged: Result<u16, ApiUnavailable> = self.api.time_sync(
            "POST",
            "payments.example",
            |s| *s,
            || {
                thread::sleep(latency);
                if fail { Ok(503) } else { Ok(201) }
            },
        );
        phases.checkpoint("charge");
        if charged.ok() != Some(201) {
            return 502;
        }
        let channel = CHANNELS[rng.below(CHANNELS.len() as u32) as usize];
        let stored: Result<usize, String> = self.db.time_sync("sqlite", "INSERT", "orders", || {
            self.db_delay();
            let conn = self.pool.get().map_err(|e| e.to_string())?;
            conn.execute(
                "INSERT INTO orders (user_id, channel, amount) VALUES (?1, ?2, ?3)",
                (user, channel, total as i64),
            )
            .map_err(|e| e.to_string())
        });
        phases.checkpoint("store");
        match stored {
            Ok(_) => {
                self.orders.record(channel);
                201
            }
            Err(_) => 500,
        }
    }
}

fn worker(app: &App, seed: u64, stop: &AtomicBool) {
    let mut rng = Rng(seed | 1);
    while !stop.load(Ordering::Relaxed) {
        let roll = rng.below(100);
        let (method, route) = match roll {
            0..45 => ("GET", "/users/{id}"),
            45..70 => ("GET", "/orders"),
            70..85 => ("POST", "/orders"),
            _ => ("GET", "/health"),
        };
        app.lifecycle.mark_first_request();
        let request = app.http.start(method);
        let status = match (method, route) {
            (_, "/users/{id}") => match app.get_user(rng.below(USERS)) {
                Ok(_) => 200,
                Err(_) => 500,
            },
            ("GET", "/orders") => match app.list_orders(rng.below(USERS)) {
                Ok(_) => 200,
                Err(_) => 500,
            },
            ("POST", "/orders") => app.place_order(&mut rng),
            _ => 200,
        };
        request.finish(route, status);
        thread::sleep(app.options.pause);
    }
}
