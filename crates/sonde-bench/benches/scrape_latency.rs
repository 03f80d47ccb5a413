//! Scrape latency of sonde's Prometheus server under concurrent scrapers: not a criterion
//! benchmark (criterion reports a mean time per iteration, this wants the tail) but a table
//! printed by `cargo bench -p sonde-bench --bench scrape_latency`.
//!
//! sonde's `/metrics` server (`sonde::prometheus::PrometheusBuilder`, `max_concurrent_scrapes(20)`,
//! empty resource) serves the 10k mixed series of [`sonde_bench::Mixed`] on `127.0.0.1`. Then:
//!
//! 1. `1 scraper`: one thread does [`SOLO_SCRAPES`] sequential `GET /metrics`, for the
//!    latency without contention;
//! 2. `20 scrapers`: [`SCRAPERS`] threads released together, each doing [`SCRAPES`] sequential
//!    `GET /metrics` (closed loop: a thread sends its next scrape as soon as the previous body
//!    is read, so 20 scrapes are always in flight; this is far more load than 20 Prometheus
//!    servers scraping every few seconds).
//!
//! Each scraper keeps its connection alive (as Prometheus does), asks for text 0.0.4 (plain, or
//! gzip as Prometheus does), reads answers with sonde-http1's reader on a current-thread runtime
//! of its own (no thread besides its own; the body is read to its last byte and discarded), and
//! times each request from sending it until the whole body has been read. One untimed warm-up scrape per thread comes first. Both phases stop
//! early after [`DEADLINE`]. Any response other than `200` counts as an error.
//!
//! prometheus-client and metrics-exporter-prometheus are not measured here: prometheus-client
//! has no server, and the `metrics` exporter's listener (feature `http-listener`) is not built
//! in this crate.
//!
//! The scrapers run on the same (2-core) machine as the server and compete with it for the
//! CPU: each reads and discards several MB per scrape.
#![allow(clippy::unwrap_used, missing_docs)]

use sonde::Component as _;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use sonde_bench::{Mixed, sonde_mixed};

/// Series served.
const SERIES: usize = 10_000;
/// Concurrent scraper threads.
const SCRAPERS: usize = 20;
/// Timed scrapes per thread in the concurrent phase.
const SCRAPES: usize = 25;
/// Timed scrapes of the single scraper.
const SOLO_SCRAPES: usize = 50;
/// Each phase stops starting new scrapes after this long.
const DEADLINE: Duration = Duration::from_secs(60);

struct Outcome {
    latencies: Vec<Duration>,
    errors: usize,
    bytes: usize,
}

/// One scraper: a kept-alive connection (reopened when the server closes it), the request
/// bytes written once, and sonde-http1's answer reader (httparse head, the body framed as the
/// head says and read to its last byte), all on a current-thread runtime of its own, so the
/// client adds no thread to the two cores it shares with the server.
struct Scraper {
    runtime: tokio::runtime::Runtime,
    addr: std::net::SocketAddr,
    request: Vec<u8>,
    stream: Option<tokio::net::TcpStream>,
    reader: sonde_http1::AnswerReader,
}

impl Scraper {
    fn new(addr: std::net::SocketAddr, gzip: bool) -> Scraper {
        // As Prometheus asks for gzip; the time runs until the compressed body is in.
        let encoding = if gzip {
            "accept-encoding: gzip\r\n"
        } else {
            ""
        };
        Scraper {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            addr,
            request: format!(
                "GET /metrics HTTP/1.1\r\nhost: {addr}\r\naccept: text/plain\r\n{encoding}\r\n"
            )
            .into_bytes(),
            stream: None,
            reader: sonde_http1::AnswerReader::new(64 * 1024),
        }
    }

    /// One scrape: its latency and body size, or the error.
    fn scrape(&mut self) -> Result<(Duration, usize), String> {
        use tokio::io::AsyncWriteExt as _;
        let start = Instant::now();
        let Scraper {
            runtime,
            addr,
            request,
            stream,
            reader,
        } = self;
        runtime.block_on(async {
            let mut conn = match stream.take() {
                Some(s) => s,
                None => tokio::net::TcpStream::connect(*addr)
                    .await
                    .map_err(|e| e.to_string())?,
            };
            conn.write_all(request).await.map_err(|e| e.to_string())?;
            let answer = reader
                .read(&mut conn, false, || {})
                .await
                .map_err(|e| e.to_string())?;
            if answer.status != 200 {
                return Err(format!("HTTP {}", answer.status));
            }
            if answer.reusable {
                *stream = Some(conn);
            }
            Ok((start.elapsed(), answer.body_bytes as usize))
        })
    }
}

/// Runs `threads` scrapers of `scrapes` each, released together after one warm-up scrape each.
fn run(
    addr: std::net::SocketAddr,
    threads: usize,
    scrapes: usize,
    gzip: bool,
) -> (Outcome, Duration) {
    let barrier = Barrier::new(threads + 1);
    let deadline_and_results = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let barrier = &barrier;
                s.spawn(move || {
                    let mut scraper = Scraper::new(addr, gzip);
                    let _ = scraper.scrape();
                    barrier.wait();
                    let started = Instant::now();
                    let mut out = Outcome {
                        latencies: Vec::with_capacity(scrapes),
                        errors: 0,
                        bytes: 0,
                    };
                    for _ in 0..scrapes {
                        if started.elapsed() > DEADLINE {
                            break;
                        }
                        match scraper.scrape() {
                            Ok((d, n)) => {
                                out.latencies.push(d);
                                out.bytes = n;
                            }
                            Err(e) => {
                                if out.errors == 0 {
                                    eprintln!("scrape failed: {e}");
                                }
                                out.errors += 1;
                            }
                        }
                    }
                    out
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let outs: Vec<Outcome> = workers.into_iter().map(|w| w.join().unwrap()).collect();
        (outs, start.elapsed())
    });
    let (outs, wall) = deadline_and_results;
    let mut all = Outcome {
        latencies: Vec::new(),
        errors: 0,
        bytes: 0,
    };
    for o in outs {
        all.latencies.extend(o.latencies);
        all.errors += o.errors;
        all.bytes = all.bytes.max(o.bytes);
    }
    all.latencies.sort_unstable();
    (all, wall)
}

/// Nearest-rank percentile of sorted latencies, in milliseconds.
fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1e3
}

fn print_row(name: &str, o: &Outcome, wall: Duration) {
    let l = &o.latencies;
    println!(
        "{name:<18} {:>6} {:>6} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>11.1}",
        l.len(),
        o.errors,
        pct(l, 50.0),
        pct(l, 95.0),
        pct(l, 99.0),
        l.last().map_or(f64::NAN, |d| d.as_secs_f64() * 1e3),
        l.len() as f64 / wall.as_secs_f64(),
        o.bytes as f64 / 1e6,
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let mixed = Mixed::new(SERIES);
    let registry = sonde_mixed(&mixed);
    drop(mixed);
    let server = sonde::prometheus::PrometheusBuilder::new()
        .registry(registry.clone())
        .resource(sonde::Resource::empty())
        .bind("127.0.0.1:0".parse().unwrap())
        .max_concurrent_scrapes(SCRAPERS)
        .install()
        .unwrap();
    let addr = server.local_addr();

    println!(
        "scrape_latency: sonde /metrics, {SERIES} mixed series (40% counters, 30% gauges, 30% histograms), text 0.0.4"
    );
    println!(
        "{:<18} {:>6} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>11}",
        "scrapers", "ok", "errors", "p50 ms", "p95 ms", "p99 ms", "max ms", "scrapes/s", "body MB"
    );
    for gzip in [false, true] {
        let how = if gzip { "gzip" } else { "plain" };
        let (solo, wall) = run(addr, 1, SOLO_SCRAPES, gzip);
        print_row(&format!("1, {how}"), &solo, wall);
        let (many, wall) = run(addr, SCRAPERS, SCRAPES, gzip);
        print_row(&format!("{SCRAPERS}, {how}"), &many, wall);
        let p99 = pct(&many.latencies, 99.0);
        println!(
            "target ({how}): p99 <= 50 ms with {SCRAPERS} concurrent scrapers: {} (p99 {p99:.1} ms)",
            if p99 <= 50.0 && many.errors == 0 {
                "met"
            } else {
                "MISSED"
            }
        );
    }
    server.shutdown(std::time::Duration::from_secs(10)).unwrap();
}
