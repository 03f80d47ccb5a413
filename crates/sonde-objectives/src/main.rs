//! `sonde-objectives`: validate an objectives file, and generate from it Prometheus rules and
//! their promtool tests, a Grafana SLO dashboard and CloudWatch alarms.
//!
//! ```text
//! sonde-objectives validate objectives.toml [--metrics-url http://127.0.0.1:9464/metrics]
//! sonde-objectives generate objectives.toml --out rules/
//! sonde-objectives generate objectives.toml --into . [--check]
//! ```
//!
//! Exit codes: 0 all good; 1 the output could not be written or the `/metrics` page fetched, or
//! (`--check`) a file differs from what the objectives generate; 2 a usage error, or a problem
//! in the file (or a metric, label or bucket the live service does not have).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sonde_objectives::{Error, generate, live, load, tree, write_atomically};

#[derive(Parser)]
#[command(
    name = "sonde-objectives",
    version,
    about = "Service level objectives: validate objectives.toml, generate Prometheus rules, alerts and promtool tests, a Grafana SLO dashboard and CloudWatch alarms"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check the file (and optionally that a live service exports every metric and label it names).
    Validate {
        /// The objectives file.
        file: PathBuf,
        /// A service's Prometheus `/metrics` URL to check the metrics, labels and buckets against.
        #[arg(long)]
        metrics_url: Option<String>,
    },
    /// Write the recording rules, alerts and promtool tests (alerts/objectives.*), the Grafana
    /// SLO dashboard (dashboards/sonde-slo.json) and the CloudWatch alarms
    /// (cloudwatch/sonde-objectives.yaml) into a new directory (--out), or into a repository
    /// (--into), where the hand-written dashboards' panels that link an objective's alert also
    /// get its number as their threshold line.
    Generate {
        /// The objectives file.
        file: PathBuf,
        /// The output directory (replaced as a whole; only ever holds generated files).
        #[arg(long, required_unless_present = "into", conflicts_with = "into")]
        out: Option<PathBuf>,
        /// A directory holding alerts/, dashboards/ and cloudwatch/: the generated files are
        /// written at their paths in it, other files are left alone.
        #[arg(long)]
        into: Option<PathBuf>,
        /// With --into: write nothing, list the files that differ from what would be written
        /// (exit 1 when any does).
        #[arg(long, requires = "into")]
        check: bool,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{e}");
            match e {
                Error::Read { .. } | Error::Invalid(_) | Error::Generate(_) => ExitCode::from(2),
                Error::Write { .. } | Error::Fetch { .. } | Error::Boundaries(_) => {
                    ExitCode::from(1)
                }
            }
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, Error> {
    match cli.command {
        Command::Validate { file, metrics_url } => {
            let o = load(&file)?;
            for w in o.warnings() {
                eprintln!("warning: {w}");
            }
            // Generating checks that test series can be built for every selector.
            generate(&o)?;
            if let Some(url) = metrics_url {
                let page = live::Exposition::parse(&live::fetch(&url)?);
                let problems = live::check(&o, &page);
                if !problems.is_empty() {
                    for p in &problems {
                        eprintln!("{p}");
                    }
                    return Ok(ExitCode::from(2));
                }
                println!(
                    "{}: {} objectives, every metric, label and bucket boundary found on {url}",
                    file.display(),
                    o.thresholds.len() + o.ratios.len()
                );
            } else {
                println!(
                    "{}: {} threshold and {} ratio objectives, valid",
                    file.display(),
                    o.thresholds.len(),
                    o.ratios.len()
                );
            }
            for (metric, boundary) in o.required_buckets() {
                println!("needs bucket boundary {boundary} on {metric}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Generate {
            file,
            out,
            into,
            check,
        } => {
            let o = load(&file)?;
            for w in o.warnings() {
                eprintln!("warning: {w}");
            }
            let g = generate(&o)?;
            for note in sonde_objectives::cloudwatch::template(&o).1 {
                eprintln!("note: CloudWatch: {note}");
            }
            match (out, into) {
                (Some(out), _) => {
                    write_atomically(&g, &out)?;
                    for (path, _) in &g.files {
                        println!("wrote {}", out.join(path).display());
                    }
                }
                (None, Some(root)) => {
                    let files = tree::files_into(&o, &g, &root)?;
                    if check {
                        let differences = tree::differences(&files, &root);
                        for d in &differences {
                            eprintln!("{}: {}", root.join(&d.path).display(), d.excerpt);
                        }
                        if !differences.is_empty() {
                            eprintln!(
                                "{} of {} files differ from what {} generates; run `sonde-objectives generate {} --into {}` and commit the result",
                                differences.len(),
                                files.len(),
                                file.display(),
                                file.display(),
                                root.display()
                            );
                            return Ok(ExitCode::from(1));
                        }
                        println!(
                            "{} files under {} are what {} generates",
                            files.len(),
                            root.display(),
                            file.display()
                        );
                    } else {
                        tree::write_into(&files, &root)?;
                        for (path, _) in &files {
                            println!("wrote {}", root.join(path).display());
                        }
                    }
                }
                // clap requires one of them.
                (None, None) => {}
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
