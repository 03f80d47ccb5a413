//! `sonde-example-axum-sqlx`: the shop service of `lib.rs` on a SQLite file, with `/metrics`
//! from sonde's Prometheus exporter.
//!
//! ```text
//! cargo run -p sonde-example-axum-sqlx -- [--listen 127.0.0.1:3001] [--metrics 127.0.0.1:9466] [--db shop.db]
//! curl localhost:3001/products/7; curl -X POST localhost:3001/orders/7; curl localhost:9466/metrics
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use sonde::instrument::HttpServerMetrics;
use sonde::prometheus::PrometheusBuilder;

const USAGE: &str = "usage: sonde-example-axum-sqlx [--listen ADDR] [--metrics ADDR] [--db PATH]
  --listen ADDR   where to serve the shop (default 127.0.0.1:3001)
  --metrics ADDR  where to serve /metrics (default 127.0.0.1:9466)
  --db PATH       the SQLite file (default shop.db in the system's temporary directory)
Port 0 picks a free port; both addresses are printed on stdout once listening.";

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}

async fn run() -> Result<(), sonde_example_axum_sqlx::Error> {
    let (listen, metrics, db) = parse_args()?;
    let exporter = PrometheusBuilder::new().bind(metrics).install()?;
    let _process = sonde::process::ProcessCollector::current().install()?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("could not listen on {listen}: {e}; choose another with --listen"))?;
    let own = listener.local_addr()?;
    let registry = sonde::Registry::global();
    // Payments go to this service's own /payments route.
    let shop =
        sonde_example_axum_sqlx::Shop::open(registry, &db, 4, &format!("http://{own}")).await?;
    let http = HttpServerMetrics::install(registry)?;
    println!("listening on http://{own}");
    println!("metrics on http://{}/metrics", exporter.local_addr());
    axum::serve(listener, shop.app(http))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

fn parse_args() -> Result<(SocketAddr, SocketAddr, PathBuf), String> {
    let addr = |flag: &str, v: Option<String>| -> Result<SocketAddr, String> {
        let v = v.ok_or_else(|| format!("{flag} needs an address\n{USAGE}"))?;
        v.parse()
            .map_err(|e| format!("{flag} {v:?}: {e} (expected IP:PORT, such as 127.0.0.1:3001)"))
    };
    let mut listen = SocketAddr::from(([127, 0, 0, 1], 3001));
    let mut metrics = SocketAddr::from(([127, 0, 0, 1], 9466));
    let mut db = std::env::temp_dir().join("shop.db");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = addr("--listen", args.next())?,
            "--metrics" => metrics = addr("--metrics", args.next())?,
            "--db" => {
                db = args
                    .next()
                    .map(PathBuf::from)
                    .ok_or_else(|| format!("--db needs a path\n{USAGE}"))?
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok((listen, metrics, db))
}
