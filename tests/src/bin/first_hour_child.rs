//! A service as a new user writes it, run by `tests/tests/first_hour.rs` as a child process so
//! that its stderr (logs, sonde's own diagnostics) can be read as the user would see it.
//!
//! `first_hour_child traces ENDPOINT`: the one-call tracing pipeline, then the service's own
//! log lines. `first_hour_child drop-handles`: exporters whose handles are dropped at once, with
//! no subscriber installed. `first_hour_child failing-export ENDPOINT`: OTLP to a closed port.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("traces") => {
            let pipeline = sonde::otlp::traces::TracesBuilder::new()
                .transport(sonde::otlp::OtlpTransport::new().endpoint(args[1].clone()))
                .install()
                .unwrap();
            tracing::info!(order = 42, "order placed");
            tracing::debug!("not shown at the default level");
            pipeline
                .shutdown(std::time::Duration::from_secs(5))
                .unwrap();
        }
        Some("drop-handles") => {
            // `let _ =` discards at once (no must_use warning): the user meant to keep it.
            let _ = sonde::prometheus::PrometheusBuilder::new()
                .bind("127.0.0.1:0".parse().unwrap())
                .install()
                .unwrap();
            let _ = sonde::otlp::OtlpMetricsBuilder::new()
                .transport(sonde::otlp::OtlpTransport::new().endpoint("http://127.0.0.1:9"))
                .interval(Duration::from_secs(3600))
                .install()
                .unwrap();
        }
        Some("failing-export") => {
            sonde::counter!("orders").inc();
            let _otlp = sonde::otlp::OtlpMetricsBuilder::new()
                .transport(
                    sonde::otlp::OtlpTransport::new()
                        .endpoint(args[1].clone())
                        .timeout(Duration::from_millis(200)),
                )
                .interval(Duration::from_millis(200))
                .install()
                .unwrap();
            std::thread::sleep(Duration::from_secs(3));
            let failures = sonde::Registry::global()
                .snapshot()
                .point(
                    "sonde.exporter.requests",
                    &[("exporter", "otlp"), ("result", "failure")],
                )
                .and_then(|p| p.number())
                .map_or(0.0, |n| n.as_f64());
            println!("failures={failures}");
        }
        _ => {
            eprintln!(
                "usage: first_hour_child traces ENDPOINT | drop-handles | failing-export ENDPOINT"
            );
            std::process::exit(2);
        }
    }
}
