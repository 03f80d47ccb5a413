//! `sonde-example-service`: the simulated service, serving its metrics on `/metrics`.
//!
//! ```text
//! cargo run --release -p sonde-example -- [--listen 127.0.0.1:9464] [--seconds N] [--objectives FILE] [--report] [--otlp] [--cloudwatch-cost]
//! ```
//!
//! At start it loads its objectives (the embedded example file, or `--objectives FILE`), adds
//! their latency thresholds as bucket boundaries before the workload registers its histograms,
//! and judges them on `/report` (`"objectives"`, and a table in `/report?format=md`).

use sonde::Component as _;
use std::net::SocketAddr;
use std::time::Duration;

use sonde::prometheus::PrometheusBuilder;
use sonde::{Point, Registry, Temporality};
use sonde_example::{Options, Workload};

const USAGE: &str = "usage: sonde-example-service [--listen ADDR] [--seconds N] [--objectives FILE] [--report] [--otlp] [--cloudwatch-cost]
  --listen ADDR  where to serve /metrics (default 127.0.0.1:9464, or OTEL_EXPORTER_PROMETHEUS_HOST/PORT)
  --seconds N    stop after N seconds (default: run until interrupted)
  --objectives FILE  the objectives judged on /report, whose thresholds become bucket boundaries
                 (default: the embedded crates/sonde-objectives/examples/objectives.toml)
  --report       print p50/p95/p99 per series every 5 seconds
  --otlp         also push the metrics over OTLP, configured by the OTEL_EXPORTER_OTLP_* variables
                 (default http://localhost:4318/v1/metrics every OTEL_METRIC_EXPORT_INTERVAL ms)
  --cloudwatch-cost  print, every 5 seconds and at exit, the CloudWatch metrics and PutMetricData
                 calls per hour exporting this service's series every minute would imply";

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut listen: Option<SocketAddr> = None;
    let mut seconds = 0u64;
    let mut report = false;
    let mut otlp = false;
    let mut cost = false;
    let mut objectives_file: Option<std::path::PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => {
                let v = args
                    .next()
                    .ok_or("--listen needs an address such as 127.0.0.1:9464")?;
                listen = Some(v.parse().map_err(|e| format!("--listen {v:?}: {e}"))?);
            }
            "--seconds" => {
                let v = args.next().ok_or("--seconds needs a number")?;
                seconds = v.parse().map_err(|e| format!("--seconds {v:?}: {e}"))?;
            }
            "--objectives" => {
                let v = args
                    .next()
                    .ok_or("--objectives needs a file such as objectives.toml")?;
                objectives_file = Some(v.into());
            }
            "--report" => report = true,
            "--otlp" => otlp = true,
            "--cloudwatch-cost" => cost = true,
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}").into()),
        }
    }
    let registry = Registry::global().clone();
    let objectives = sonde_example::load_objectives(objectives_file.as_deref())?;
    println!(
        "objectives: {} ({}; {} threshold, {} ratio), judged on /report",
        objectives.origin,
        if objectives_file.is_some() {
            "--objectives"
        } else {
            "embedded"
        },
        objectives.thresholds.len(),
        objectives.ratios.len()
    );
    // Before the workload registers its histograms, so the thresholds are exact buckets.
    if let Err(e) = objectives.install_boundaries(&registry) {
        eprintln!("warning: {e}");
    }
    let mut exporter = PrometheusBuilder::new()
        .registry(registry.clone())
        .judge(objectives.judge());
    if let Some(addr) = listen {
        exporter = exporter.bind(addr);
    }
    let server = exporter.install()?;
    println!("serving metrics on http://{}/metrics", server.local_addr());
    let otlp = if otlp {
        let exporter = sonde::otlp::OtlpMetricsBuilder::new()
            .registry(registry.clone())
            .install()?;
        println!("pushing metrics over OTLP to {}", exporter.endpoint());
        Some(exporter)
    } else {
        None
    };
    let workload = Workload::start(&registry, Options::default())?;
    record_cold_start(&registry)?;
    let mut deltas = registry.reader(Temporality::Delta);
    let mut elapsed = 0;
    while seconds == 0 || elapsed < seconds {
        let step = if seconds == 0 {
            5
        } else {
            5.min(seconds - elapsed)
        };
        std::thread::sleep(Duration::from_secs(step));
        elapsed += step;
        if report {
            print_report(&deltas.collect(), step as f64);
        }
        if cost {
            print_cost(&registry);
        }
    }
    workload.stop();
    if let Some(exporter) = otlp {
        exporter.shutdown(Duration::from_secs(5))?;
    }
    server.shutdown(Duration::from_secs(10))?;
    Ok(())
}

/// The cold start objective watches `faas.init_duration`, which the example's workload does not
/// record: this process's start counts as one cold start (from process start to now, through
/// `sonde-instrument`'s FaaS helper), so that objective has data from the start.
fn record_cold_start(registry: &Registry) -> Result<(), Box<dyn std::error::Error>> {
    let faas = sonde::instrument::Faas::install(registry)?;
    faas.invoke(sonde::instrument::Trigger::Http, || {
        Ok::<(), std::convert::Infallible>(())
    })?;
    Ok(())
}

fn print_cost(registry: &Registry) {
    let settings = sonde::cloudwatch::datum::Settings::default();
    let preview = sonde::cloudwatch::cost_preview(
        registry,
        &sonde::Resource::detect(),
        &settings,
        Duration::from_secs(60),
    );
    println!("{preview}");
}

fn print_report(snapshot: &sonde::Snapshot, interval: f64) {
    println!("--- last {interval} s ---");
    for f in &snapshot.families {
        for s in &f.series {
            let labels: Vec<String> = f
                .labels(s)
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            match &s.point {
                Point::Histogram(h) if h.count() > 0 => println!(
                    "{:<30} {:<70} {:>8.1}/s p50 {:>8.2} ms p95 {:>8.2} ms p99 {:>8.2} ms",
                    f.meta.name(),
                    labels.join(","),
                    h.count() as f64 / interval,
                    h.quantile(0.5).unwrap_or(0.0) * 1e3,
                    h.quantile(0.95).unwrap_or(0.0) * 1e3,
                    h.quantile(0.99).unwrap_or(0.0) * 1e3,
                ),
                Point::Counter(n) if n.as_f64() > 0.0 => {
                    println!(
                        "{:<30} {:<70} {:>8.1}/s",
                        f.meta.name(),
                        labels.join(","),
                        n.as_f64() / interval
                    )
                }
                _ => {}
            }
        }
    }
}
