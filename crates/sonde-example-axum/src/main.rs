//! `sonde-example-axum`: an axum service with per-route HTTP metrics and process metrics,
//! served by sonde's Prometheus exporter on its own address.
//!
//! ```text
//! cargo run -p sonde-example-axum -- [--listen 127.0.0.1:3000] [--metrics 127.0.0.1:9464]
//! curl localhost:3000/users/42; curl localhost:9464/metrics
//! ```

use std::net::SocketAddr;

use sonde::instrument::HttpServerMetrics;
use sonde::process::ProcessCollector;
use sonde::prometheus::PrometheusBuilder;

const USAGE: &str = "usage: sonde-example-axum [--listen ADDR] [--metrics ADDR]
  --listen ADDR   where to serve the application (default $LISTEN_ADDR, else 127.0.0.1:3000)
  --metrics ADDR  where to serve /metrics (default OTEL_EXPORTER_PROMETHEUS_HOST/PORT, else 127.0.0.1:9464)
Port 0 picks a free port; both addresses are printed on stdout once listening.";

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let (listen, metrics_addr) = parse_args()?;

    // `/metrics` from the exporter's own thread. The handle is kept until `run` returns: the
    // exporter serves for the life of the service.
    let mut builder = PrometheusBuilder::new();
    if let Some(addr) = metrics_addr {
        builder = builder.bind(addr);
    }
    let exporter = builder.install()?;
    // CPU, memory, threads, file descriptors: read at each scrape.
    let _process = ProcessCollector::current().install()?;
    let http = HttpServerMetrics::install(sonde::Registry::global())?;

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("could not listen on {listen}: {e}; choose another with --listen"))?;
    println!("listening on http://{}", listener.local_addr()?);
    println!("metrics on http://{}/metrics", exporter.local_addr());
    axum::serve(listener, sonde_example_axum::app(http))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

fn parse_args() -> Result<(SocketAddr, Option<SocketAddr>), String> {
    let addr = |flag: &str, v: Option<String>| -> Result<SocketAddr, String> {
        let v = v.ok_or_else(|| format!("{flag} needs an address\n{USAGE}"))?;
        v.parse()
            .map_err(|e| format!("{flag} {v:?}: {e} (expected IP:PORT, such as 127.0.0.1:3000)"))
    };
    let mut listen = None;
    let mut metrics = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = Some(addr("--listen", args.next())?),
            "--metrics" => metrics = Some(addr("--metrics", args.next())?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let listen = match listen {
        Some(a) => a,
        None => match std::env::var("LISTEN_ADDR") {
            Ok(v) => addr("LISTEN_ADDR", Some(v))?,
            Err(_) => SocketAddr::from(([127, 0, 0, 1], 3000)),
        },
    };
    Ok((listen, metrics))
}
