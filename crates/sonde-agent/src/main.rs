//! `sonde-agent`: host and process metrics, StatsD/DogStatsD ingest, synthetic probes and every
//! sonde exporter in one daemon with one config file.
//!
//! ```text
//! sonde-agent [--config FILE]          run (embedded defaults without --config)
//! sonde-agent check-config FILE        report every configuration error; exit 2 if any
//! sonde-agent cost [FILE]              what the CloudWatch exporter would send and cost
//! sonde-agent print-default-config     the embedded defaults, a starting point
//! sonde-agent print-example-config     every section and key, commented
//! sonde-agent --version
//! ```
//!
//! Signals: SIGHUP reloads the configuration without losing series; SIGTERM and SIGINT deliver
//! the last interval through every push exporter within `agent.shutdown_timeout`, then exit 0.

mod agent;
mod config;
mod detect;
mod select;

use std::process::ExitCode;

use config::{Config, DEFAULT_CONFIG, LogFormat};

/// Every section and key with comments, for `print-example-config`.
const EXAMPLE_CONFIG: &str = include_str!("../examples-config/full.toml");

const USAGE: &str = "usage:
  sonde-agent [--config FILE]         run (embedded defaults without --config)
  sonde-agent check-config FILE       report every configuration error, exit 2 if any
  sonde-agent cost [FILE]             the CloudWatch metrics this host would send with FILE's
                                      selection, PutMetricData calls and monthly list price
  sonde-agent print-default-config    print the embedded defaults
  sonde-agent print-example-config    print every section and key, commented
                                      (also crates/sonde-agent/examples-config/full.toml)
  sonde-agent --version

Every setting can be overridden from the environment: SONDE_<SECTION>_<KEY>,
e.g. SONDE_STATSD_UDP=0.0.0.0:8125, SONDE_EXPORTERS_OTLP_ENABLED=true.
Signals: SIGHUP reloads the configuration; SIGTERM/SIGINT flush the push exporters and exit.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut config_path: Option<String> = None;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--version" | "-V" => {
                println!("sonde-agent {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "print-default-config" => {
                print!("{DEFAULT_CONFIG}");
                return ExitCode::SUCCESS;
            }
            "print-example-config" => {
                print!("{EXAMPLE_CONFIG}");
                return ExitCode::SUCCESS;
            }
            "check-config" => {
                let Some(path) = args.get(i + 1) else {
                    eprintln!("check-config needs a file\n{USAGE}");
                    return ExitCode::from(2);
                };
                return match load(Some(path)) {
                    Ok(_) => {
                        println!("{path}: ok");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("{e}");
                        ExitCode::from(2)
                    }
                };
            }
            "cost" => {
                let path = args.get(i + 1).map(String::as_str);
                let config = match load(path) {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("{e}");
                        return ExitCode::from(2);
                    }
                };
                let origin = path.unwrap_or("the embedded defaults");
                return match agent::cost_report(&config, origin) {
                    Ok(report) => {
                        println!("{report}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("{e}");
                        ExitCode::from(1)
                    }
                };
            }
            "--config" | "-c" => {
                let Some(path) = args.get(i + 1) else {
                    eprintln!("--config needs a file\n{USAGE}");
                    return ExitCode::from(2);
                };
                config_path = Some(path.clone());
                i += 1;
            }
            "run" => {}
            other => {
                // `sonde-agent agent.toml` is the likeliest slip: name the flag it needs.
                let hint = if std::path::Path::new(other).is_file() {
                    format!(" (to run with this file: sonde-agent --config {other})")
                } else {
                    String::new()
                };
                eprintln!("unknown argument {other:?}{hint}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
        i += 1;
    }
    let config = match load(config_path.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    init_logs(&config);
    match agent::run(config, config_path) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Logs go to stderr already: one line, not two.
            tracing::error!("{e}");
            ExitCode::from(1)
        }
    }
}

/// Reads and validates the configuration (the embedded defaults without a path).
pub(crate) fn load(path: Option<&str>) -> Result<Config, String> {
    let (text, origin) = match path {
        None => (
            DEFAULT_CONFIG.to_string(),
            "<embedded defaults>".to_string(),
        ),
        Some(p) => match std::fs::read_to_string(p) {
            Ok(t) => (t, p.to_string()),
            Err(e) => {
                return Err(format!(
                    "{p}: cannot read the configuration: {e}\n  hint: give the path of a TOML file; `sonde-agent print-default-config` prints a starting point"
                ));
            }
        },
    };
    let names: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| k.starts_with("SONDE_"))
        .collect();
    Config::parse(&text, &origin, &|k| std::env::var(k).ok(), &names).map_err(|e| {
        let n = e.0.len();
        format!(
            "{e}\n{n} error{} in the configuration",
            if n == 1 { "" } else { "s" }
        )
    })
}

fn init_logs(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.agent.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: a file or the journal would keep the escape codes.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match config.agent.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
