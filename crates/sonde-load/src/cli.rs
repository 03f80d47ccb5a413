//! The `sonde-load` command line: argument definitions and the `run` flow that ties the parts
//! together. Exit codes: 0 every threshold holds and no regression, 1 one fails, 2 a usage,
//! configuration or file error (nothing was judged).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::compare::{self, CompareOptions};
use crate::engine::{self, RunOptions};
use crate::plan::{Model, Plan, RequestSpec, Stage};
use crate::result::RunResult;
use crate::threshold::{self, Threshold};
use crate::{coldstart, push, report, scenario, scrape};

/// Every threshold held and nothing regressed.
pub const EXIT_PASS: u8 = 0;
/// A threshold failed or a regression was found.
pub const EXIT_FAIL: u8 = 1;
/// Usage, configuration or file error.
pub const EXIT_USAGE: u8 = 2;
/// The run was interrupted (Ctrl-C or SIGTERM); what it measured was still written.
pub const EXIT_INTERRUPTED: u8 = 130;

/// Load tests and benchmarks that judge a service.
#[derive(Debug, Parser)]
#[command(name = "sonde-load", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Put a service under load (from flags or a scenario file) and judge it.
    Run(Box<RunArgs>),
    /// Validate a scenario file without sending anything.
    Check {
        /// The scenario file (TOML).
        scenario: PathBuf,
    },
    /// Compare two result files (`--json` output): per-request deltas and a regression verdict.
    Compare {
        /// The older run (the baseline).
        old: PathBuf,
        /// The newer run.
        new: PathBuf,
        /// How strict the comparison is.
        #[command(flatten)]
        options: CompareOptions,
    },
    /// Merge results of runs made at the same time on several machines into one (exact
    /// percentiles of all requests together).
    Merge(MergeArgs),
    /// Start a service N times and measure its cold start.
    Coldstart(ColdstartArgs),
}

/// `sonde-load run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Scenario file (TOML); flags given beside it override its settings.
    #[arg(long, short = 's', conflicts_with_all = ["url", "method", "header", "body", "body_file"])]
    pub scenario: Option<PathBuf>,
    /// URL to load (http:// or https://).
    #[arg(long, short = 'u')]
    pub url: Option<String>,
    /// Open model: requests per second (the default model; 10 when neither --rate nor --users).
    #[arg(long, short = 'r', conflicts_with = "users")]
    pub rate: Option<f64>,
    /// Closed model: this many virtual users, each sending its next request when the previous
    /// one completes.
    #[arg(long)]
    pub users: Option<u64>,
    /// Measured duration (warm-up not included).
    #[arg(long, short = 'd', value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Load sent before measuring starts.
    #[arg(long, value_parser = parse_duration)]
    pub warmup: Option<Duration>,
    /// Connections kept open (closed model: at least one per user).
    #[arg(long, short = 'c')]
    pub connections: Option<usize>,
    /// HTTP method.
    #[arg(long, short = 'm')]
    pub method: Option<String>,
    /// Extra header, `Name: value` (repeatable).
    #[arg(long, short = 'H')]
    pub header: Vec<String>,
    /// Request body.
    #[arg(long, conflicts_with = "body_file")]
    pub body: Option<String>,
    /// Request body read from a file.
    #[arg(long)]
    pub body_file: Option<PathBuf>,
    /// Per-request timeout.
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Use HTTP/2.
    #[arg(long)]
    pub http2: bool,
    /// Accept any TLS certificate (self-signed test servers only).
    #[arg(long)]
    pub insecure: bool,
    /// Threshold over all requests (repeatable): 'p95<300ms', 'p99<1.5s', 'errors<1%', 'rate>=490'.
    #[arg(long, short = 't')]
    pub threshold: Vec<String>,
    /// The service's objectives file (`objectives.toml`, see sonde-objectives): its latency and
    /// error objectives on HTTP requests become thresholds of this run.
    #[arg(long, value_name = "FILE")]
    pub objectives: Option<PathBuf>,
    /// Where the result is written.
    #[command(flatten)]
    pub output: OutputArgs,
    /// Store this run as the named baseline.
    #[arg(long)]
    pub save_baseline: Option<String>,
    /// Compare with the named baseline and fail on a regression.
    #[arg(long)]
    pub baseline: Option<String>,
    /// Where baselines are kept.
    #[arg(long, default_value = ".sonde-load/baselines")]
    pub baseline_dir: PathBuf,
    /// How strict the comparison with the baseline is.
    #[command(flatten)]
    pub compare: CompareOptions,
    /// The service's metrics endpoint (Prometheus text or OpenMetrics), read before and after the
    /// run for its own view of the run's window.
    #[arg(long)]
    pub scrape: Option<String>,
    /// No live progress line (it is only drawn on a terminal anyway).
    #[arg(long)]
    pub no_progress: bool,
    /// Where and how often the run's own metrics are pushed (`--push-*`).
    #[command(flatten)]
    pub push: push::PushOptions,
}

/// `--json` and `--report`, the files `run` and `merge` write their result to.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Write the result as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write a Markdown report (with an SVG chart beside it).
    #[arg(long)]
    pub report: Option<PathBuf>,
}

impl OutputArgs {
    /// Writes the files asked for; a failure is printed and becomes the usage exit code.
    fn write(
        &self,
        result: &RunResult,
        comparison: Option<&compare::Comparison>,
    ) -> Result<(), ExitCode> {
        if let Some(p) = &self.json {
            result.write(p).map_err(usage)?;
        }
        if let Some(p) = &self.report {
            report::write_report(result, comparison, p)
                .map_err(|e| usage(format!("{}: {e}", p.display())))?;
        }
        Ok(())
    }
}

/// `sonde-load merge`.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Result files to merge.
    #[arg(required = true, num_args = 2..)]
    pub files: Vec<PathBuf>,
    /// Where the merged result is written.
    #[command(flatten)]
    pub output: OutputArgs,
    /// Thresholds over the merged requests (repeatable).
    #[arg(long, short = 't')]
    pub threshold: Vec<String>,
}

/// `sonde-load coldstart`.
#[derive(Debug, Args)]
pub struct ColdstartArgs {
    /// The service's command line (split like a shell would, without expansions).
    #[arg(long)]
    pub command: String,
    /// URL that answers 2xx once the service is ready.
    #[arg(long)]
    pub ready: String,
    /// How many starts.
    #[arg(long, default_value_t = 10)]
    pub runs: u32,
    /// Warm requests sent after each start's first one, to compare against.
    #[arg(long, default_value_t = 20)]
    pub warm_requests: u32,
    /// Give up on a start after this long.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Threshold on time to first successful response (repeatable), e.g. 'p95<500ms'.
    #[arg(long, short = 't')]
    pub threshold: Vec<String>,
    /// Write the result as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Parses `10%` or `0.1` into a ratio.
pub fn parse_percent(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let v = match s.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => s.parse::<f64>(),
    }
    .map_err(|_| format!("{s:?} is not a percentage; write it like 10%"))?;
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(format!("{s:?} must be a percentage of 0 or more"))
    }
}

/// Parses `30s`, `500ms`, `2m`, `1h` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    threshold::parse_seconds(s, 1.0)
        .filter(|v| *v <= 365.0 * 86400.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{s:?} is not a duration; write it like 30s, 500ms or 2m"))
}

fn usage(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(EXIT_USAGE)
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                EXIT_USAGE
            } else {
                EXIT_PASS
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        Command::Run(args) => run(*args),
        Command::Check { scenario } => match scenario::load(&scenario) {
            Ok(plan) => {
                println!(
                    "{}: ok ({} request{}, {} stage{}, {} model, {} s)",
                    scenario.display(),
                    plan.requests.len(),
                    if plan.requests.len() == 1 { "" } else { "s" },
                    plan.stages.len(),
                    if plan.stages.len() == 1 { "" } else { "s" },
                    match plan.model {
                        Model::Open => "open",
                        Model::Closed => "closed",
                    },
                    plan.duration().as_secs_f64()
                );
                ExitCode::from(EXIT_PASS)
            }
            Err(e) => usage(e),
        },
        Command::Compare { old, new, options } => {
            let (old, new) = match (RunResult::read(&old), RunResult::read(&new)) {
                (Ok(o), Ok(n)) => (o, n),
                (Err(e), _) | (_, Err(e)) => return usage(e),
            };
            let c = compare::compare(&old, &new, &options);
            print!("{c}");
            ExitCode::from(if c.regressed { EXIT_FAIL } else { EXIT_PASS })
        }
        Command::Merge(args) => merge(args),
        Command::Coldstart(args) => coldstart::run(&args),
    }
}

fn parse_thresholds(texts: &[String]) -> Result<Vec<Threshold>, threshold::ThresholdError> {
    texts.iter().map(|t| t.parse()).collect()
}

/// Builds the plan from the flags (and the scenario file, when given).
pub fn build_plan(args: &RunArgs) -> Result<Plan, String> {
    let mut plan = match &args.scenario {
        Some(path) => scenario::load(path).map_err(|e| e.to_string())?,
        None => {
            let url = args
                .url
                .as_deref()
                .ok_or("give --url URL (or --scenario FILE)")?;
            let uri: http::Uri = url.parse().map_err(|e| format!("--url {url:?}: {e}"))?;
            match uri.scheme_str() {
                Some("http") | Some("https") if uri.host().is_some() => {}
                _ => {
                    return Err(format!(
                        "--url {url:?}: use an absolute http:// or https:// URL"
                    ));
                }
            }
            let method = args.method.as_deref().unwrap_or("GET");
            let method = http::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
                .map_err(|_| format!("--method {method:?} is not an HTTP method"))?;
            let mut headers = Vec::new();
            for h in &args.header {
                let (n, v) = h
                    .split_once(':')
                    .ok_or_else(|| format!("--header {h:?}: write it as 'Name: value'"))?;
                let n = http::HeaderName::from_bytes(n.trim().as_bytes())
                    .map_err(|_| format!("--header {h:?}: {:?} is not a header name", n.trim()))?;
                let v = http::HeaderValue::from_str(v.trim()).map_err(|_| {
                    format!("--header {h:?}: the value has characters a header cannot carry")
                })?;
                headers.push((n, v));
            }
            let body = match (&args.body, &args.body_file) {
                (Some(b), _) => bytes::Bytes::from(b.clone()),
                (None, Some(p)) => std::fs::read(p)
                    .map(bytes::Bytes::from)
                    .map_err(|e| format!("--body-file {}: {e}", p.display()))?,
                (None, None) => bytes::Bytes::new(),
            };
            let request = RequestSpec {
                headers,
                body,
                ..RequestSpec::new("default", method, uri)
            };
            let stage = Stage {
                duration: Duration::from_secs(10),
                target: 10.0,
                hold: true,
            };
            Plan::new(vec![request], vec![stage])
        }
    };
    // Flags override the scenario's (or the defaults').
    if let Some(users) = args.users {
        if users == 0 {
            return Err("--users must be at least 1".to_owned());
        }
        plan.model = Model::Closed;
        plan.stages = vec![Stage {
            duration: args.duration.unwrap_or(plan.duration()),
            target: users as f64,
            hold: true,
        }];
    } else if let Some(rate) = args.rate {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(format!("--rate {rate} must be above 0"));
        }
        plan.model = Model::Open;
        plan.stages = vec![Stage {
            duration: args.duration.unwrap_or(plan.duration()),
            target: rate,
            hold: true,
        }];
    } else if let Some(d) = args.duration {
        if plan.stages.len() != 1 {
            return Err(
                "--duration cannot reshape a scenario with several stages; edit the stages instead"
                    .to_owned(),
            );
        }
        plan.stages[0].duration = d;
    }
    if plan.duration().is_zero() {
        return Err("the run has no duration; give --duration 30s".to_owned());
    }
    if let Some(w) = args.warmup {
        plan.warmup = w;
    }
    if let Some(c) = args.connections {
        if c == 0 {
            return Err("--connections must be at least 1".to_owned());
        }
        plan.connections = c;
    }
    if let Some(t) = args.timeout {
        if t.is_zero() {
            return Err("--timeout must be above 0".to_owned());
        }
        plan.timeout = t;
    }
    plan.http2 |= args.http2;
    plan.insecure |= args.insecure;
    plan.thresholds
        .extend(parse_thresholds(&args.threshold).map_err(|e| e.to_string())?);
    if let Some(path) = &args.objectives {
        apply_objectives(&mut plan, path)?;
    }
    if plan.connections == 0 {
        // Closed model: one connection per user; open model: enough for the rate at a few
        // hundred milliseconds per request, as wrk2 and oha would need to be told.
        let peak = plan.stages.iter().map(|s| s.target).fold(0.0, f64::max);
        plan.connections = match plan.model {
            Model::Closed => peak.ceil() as usize,
            Model::Open => ((peak / 10.0).ceil() as usize).clamp(8, 1024),
        };
    }
    if plan.model == Model::Closed {
        let peak = plan
            .stages
            .iter()
            .map(|s| s.target)
            .fold(0.0, f64::max)
            .ceil() as usize;
        plan.connections = plan.connections.max(peak);
    }
    Ok(plan)
}

fn run(args: RunArgs) -> ExitCode {
    let plan = match build_plan(&args) {
        Ok(p) => p,
        Err(e) => return usage(e),
    };
    let baseline = match &args.baseline {
        Some(name) => {
            let path = compare::baseline_path(&args.baseline_dir, name);
            match RunResult::read(&path) {
                Ok(r) => Some(r),
                Err(e) => {
                    return usage(format!(
                        "baseline {name:?}: {e}; record it first with --save-baseline {name}"
                    ));
                }
            }
        }
        None => None,
    };
    let before = match &args.scrape {
        Some(url) => match scrape::take(url, Duration::from_secs(10)) {
            Ok(s) => Some(s),
            Err(e) => return usage(format!("--scrape: {e}")),
        },
        None => None,
    };
    let opts = RunOptions {
        progress: !args.no_progress,
        ..RunOptions::default()
    };
    stop_on_signal(&opts.stop);
    let registry = sonde_core::Registry::new();
    let pushers = if args.push.any() {
        match push::start(&registry, &args.push) {
            Ok(p) => Some(p),
            Err(e) => return usage(e),
        }
    } else {
        None
    };
    let run = engine::run_with_registry(&plan, &opts, &registry);
    if let Some(p) = pushers {
        for e in p.finish(Duration::from_secs(10)) {
            eprintln!("warning: the run's metrics were not all pushed: {e}");
        }
    }
    let mut result = match run {
        Ok(r) => r,
        Err(e) => return usage(e),
    };
    if let (Some(url), Some(before)) = (&args.scrape, &before) {
        result.server = Some(match scrape::take(url, Duration::from_secs(10)) {
            Ok(after) => scrape::server_view(url, before, &after, &plan),
            Err(e) => crate::result::ServerView {
                url: sonde_push::redact_url(url).into_owned(),
                notes: vec![format!("the scrape after the run failed: {e}")],
                ..Default::default()
            },
        });
    }
    let per_request: Vec<(String, Vec<Threshold>)> = plan
        .requests
        .iter()
        .filter(|r| !r.thresholds.is_empty())
        .map(|r| (r.name.clone(), r.thresholds.clone()))
        .collect();
    result.thresholds = threshold::evaluate_all(&plan.thresholds, &per_request, &result);
    print!("{}", report::summary_table(&result));
    let comparison = baseline
        .as_ref()
        .map(|old| compare::compare(old, &result, &args.compare));
    if let Some(c) = &comparison {
        print!("{c}");
    }
    if let Err(code) = write_outputs(&result, comparison.as_ref(), &args) {
        return code;
    }
    if result.interrupted {
        // A run cut short is not judged a pass, whatever its thresholds say.
        return ExitCode::from(EXIT_INTERRUPTED);
    }
    let failed = result.thresholds.iter().any(|t| !t.passed)
        || comparison.as_ref().is_some_and(|c| c.regressed);
    ExitCode::from(if failed { EXIT_FAIL } else { EXIT_PASS })
}

/// The first Ctrl-C (or SIGTERM) ends the run early, keeping what it measured: the summary,
/// `--json` and `--report` are still written. A second one quits at once.
fn stop_on_signal(stop: &Arc<AtomicBool>) {
    let stop = Arc::clone(stop);
    let installed = crate::signals::on_interrupt(move || {
        stop.store(true, Ordering::Relaxed);
        eprintln!(
            "\ninterrupted: stopping the run; the requests in flight finish, then what it measured is written (interrupt again to quit now)"
        );
    });
    if let Err(e) = installed {
        eprintln!("warning: Ctrl-C will end sonde-load without writing results ({e})");
    }
}

/// Turns the objectives file's HTTP objectives into thresholds: one without a route applies to
/// every request, one with a route (an `http.route` value, template or regular expression) to
/// the requests whose path it matches. What a load test cannot judge is said, not dropped
/// silently.
fn apply_objectives(plan: &mut Plan, path: &std::path::Path) -> Result<(), String> {
    let objectives = sonde_objectives::load(path).map_err(|e| format!("--objectives: {e}"))?;
    let (thresholds, skipped) = sonde_objectives::load_thresholds(&objectives);
    for t in thresholds {
        let parsed: Threshold = t
            .threshold
            .parse()
            .map_err(|e| format!("--objectives: objective {:?}: {e}", t.objective))?;
        match &t.route {
            None => {
                eprintln!(
                    "objective {}: {} over all requests",
                    t.objective, t.threshold
                );
                plan.thresholds.push(parsed);
            }
            Some(route) => {
                // Anchored like Prometheus' `=~`; a template (`/users/{id}`) is not a valid
                // regular expression and matches as a template instead.
                let regex = regex::Regex::new(&format!("^(?:{route})$")).ok();
                let mut hit = Vec::new();
                for r in &mut plan.requests {
                    let p = r.url.path();
                    if scrape::route_matches(route, p)
                        || regex.as_ref().is_some_and(|x| x.is_match(p))
                    {
                        r.thresholds.push(parsed.clone());
                        hit.push(r.name.clone());
                    }
                }
                if hit.is_empty() {
                    eprintln!(
                        "objective {}: {} on route {route:?} is not judged: no request of this run goes there",
                        t.objective, t.threshold
                    );
                } else {
                    eprintln!(
                        "objective {}: {} on {}",
                        t.objective,
                        t.threshold,
                        hit.join(", ")
                    );
                }
            }
        }
    }
    for s in skipped {
        eprintln!(
            "objective {}: not judged by a load test ({})",
            s.objective, s.reason
        );
    }
    Ok(())
}

fn write_outputs(
    result: &RunResult,
    comparison: Option<&compare::Comparison>,
    args: &RunArgs,
) -> Result<(), ExitCode> {
    args.output.write(result, comparison)?;
    if let Some(name) = &args.save_baseline {
        let p = compare::baseline_path(&args.baseline_dir, name);
        result.write(&p).map_err(usage)?;
        println!("baseline {name:?} saved to {}", p.display());
    }
    Ok(())
}

fn merge(args: MergeArgs) -> ExitCode {
    let mut results = Vec::new();
    for f in &args.files {
        match RunResult::read(f) {
            Ok(r) => results.push((f.display().to_string(), r)),
            Err(e) => return usage(e),
        }
    }
    let mut merged = match compare::merge(&results) {
        Ok(m) => m,
        Err(e) => return usage(e),
    };
    let thresholds = match parse_thresholds(&args.threshold) {
        Ok(t) => t,
        Err(e) => return usage(e),
    };
    merged.thresholds = threshold::evaluate_all(&thresholds, &[], &merged);
    print!("{}", report::summary_table(&merged));
    if let Err(code) = args.output.write(&merged, None) {
        return code;
    }
    let failed = merged.thresholds.iter().any(|t| !t.passed);
    ExitCode::from(if failed { EXIT_FAIL } else { EXIT_PASS })
}
