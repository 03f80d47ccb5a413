//! Cold start benchmark: start a service N times, time to its first successful response, and
//! that first request's latency against warm ones.
//!
//! Each run spawns `--command` (split like a shell would, without expansions) in its own
//! process group, polls `--ready` every 3 ms (a refused connection or a non-2xx answer means
//! "not yet") and takes the time from spawn to the end of the first 2xx answer as its *time to
//! ready*; that poll's own latency is the *first request*. Then `--warm-requests` more requests
//! go to the same URL over the same kept-alive connection, as a client of a running service
//! would send them. The process group gets SIGTERM (SIGKILL after 5 s) and is always reaped,
//! even when the run fails or `sonde-load` is interrupted, and the next run waits until the
//! port refuses connections again. Every figure goes into a sonde-core histogram
//! ([`Precision::High`], 1.08 % worst-case quantile error); thresholds apply to time to ready.

use std::collections::VecDeque;
use std::io::{BufRead as _, BufReader};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sonde_core::{Histogram, HistogramPoint, Precision, Registry, Unit};

use crate::cli::{ColdstartArgs, EXIT_FAIL, EXIT_PASS, EXIT_USAGE};
use crate::result::{StoredHistogram, ThresholdOutcome, write_json};
use crate::threshold::{Measure, Op, Threshold};

/// The schema tag of `coldstart --json` files.
pub const SCHEMA: &str = "sonde-load-coldstart/1";

/// How often the ready URL is polled.
const POLL_EVERY: Duration = Duration::from_millis(3);
/// How long a stopped service gets between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(5);
/// How long the port may keep answering after the service was stopped.
const PORT_RELEASE: Duration = Duration::from_secs(10);
/// Lines of the service's stderr kept for an error message.
const STDERR_LINES: usize = 20;

/// What `coldstart --json` writes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ColdstartResult {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// `sonde-load` version that wrote the file.
    pub tool_version: String,
    /// The command as given.
    pub command: String,
    /// The ready URL.
    pub ready: String,
    /// Starts measured.
    pub runs: u32,
    /// Warm requests per start.
    pub warm_requests: u32,
    /// Warm requests that failed (not counted in `warm`).
    pub warm_errors: u64,
    /// Seconds from spawn to the end of the first 2xx answer, one per run.
    pub time_to_ready: StoredHistogram,
    /// The first successful request's own latency in seconds, one per run.
    pub first_request: StoredHistogram,
    /// The warm requests' latencies in seconds, all runs together.
    pub warm: StoredHistogram,
    /// Each run's figures, in order.
    pub per_run: Vec<RunFigures>,
    /// The thresholds (on time to ready) and their verdicts.
    pub thresholds: Vec<ThresholdOutcome>,
}

/// One start's figures.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunFigures {
    /// Seconds from spawn to the first 2xx answer's end.
    pub time_to_ready_seconds: f64,
    /// The first successful request's latency in seconds.
    pub first_request_seconds: f64,
    /// Polls sent until then (the successful one included).
    pub polls: u64,
}

/// Why the benchmark could not measure (exit 2).
#[derive(Debug, thiserror::Error)]
enum ColdstartError {
    #[error("{0}")]
    Usage(String),
    #[error("run {run}: {message}")]
    Run { run: u32, message: String },
}

/// Runs the benchmark and prints its table; the exit code follows the thresholds.
pub fn run(args: &ColdstartArgs) -> ExitCode {
    match measure(args) {
        Ok(result) => {
            print!("{}", table(&result));
            if let Some(path) = &args.json
                && let Err(e) = write_json(&result, path)
            {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
            let failed = result.thresholds.iter().any(|t| !t.passed);
            ExitCode::from(if failed { EXIT_FAIL } else { EXIT_PASS })
        }
        // The run failed because it was interrupted: the service is already stopped.
        Err(_) if interrupt::interrupted() => ExitCode::from(130),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// The host and port the ready URL points at.
fn ready_address(url: &str) -> Result<Vec<SocketAddr>, String> {
    let uri: http::Uri = url.parse().map_err(|e| {
        format!("--ready {url:?}: {e}; give a URL such as http://127.0.0.1:8080/health")
    })?;
    let port = match (uri.scheme_str(), uri.port_u16()) {
        (Some("http"), p) => p.unwrap_or(80),
        (Some("https"), p) => p.unwrap_or(443),
        _ => {
            return Err(format!(
                "--ready {url:?}: use an absolute http:// or https:// URL such as http://127.0.0.1:8080/health"
            ));
        }
    };
    let host = uri
        .host()
        .ok_or_else(|| format!("--ready {url:?} has no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("--ready {url:?}: cannot resolve {host:?}: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("--ready {url:?}: {host:?} resolves to no address"));
    }
    Ok(addrs)
}

fn port_answers(addrs: &[SocketAddr]) -> bool {
    addrs
        .iter()
        .any(|a| TcpStream::connect_timeout(a, Duration::from_millis(200)).is_ok())
}

fn histogram(reg: &Registry, name: &'static str) -> Result<Histogram, String> {
    reg.histogram(name)
        .unit(Unit::Seconds)
        .precision(Precision::High)
        .build()
        .map(|f| f.handle())
        .map_err(|e| format!("internal: histogram {name}: {e}"))
}

fn measure(args: &ColdstartArgs) -> Result<ColdstartResult, ColdstartError> {
    let usage = ColdstartError::Usage;
    if args.runs == 0 {
        return Err(usage("--runs must be at least 1".to_owned()));
    }
    if args.timeout.is_zero() {
        return Err(usage("--timeout must be above 0".to_owned()));
    }
    let thresholds: Vec<Threshold> = args
        .threshold
        .iter()
        .map(|t| t.parse::<Threshold>().map_err(|e| usage(e.to_string())))
        .collect::<Result<_, _>>()?;
    if let Some(t) = thresholds
        .iter()
        .find(|t| matches!(t.measure, Measure::Errors | Measure::Rate))
    {
        return Err(usage(format!(
            "threshold {:?} does not apply to a cold start: thresholds judge the time to ready; write one like 'p95<500ms' or 'max<1s'",
            t.text
        )));
    }
    let argv = shlex::split(&args.command)
        .filter(|a| !a.is_empty())
        .ok_or_else(|| {
            usage(format!(
                "--command {:?}: not a command line (empty, or a quote is not closed)",
                args.command
            ))
        })?;
    // A command that cannot be found is a usage error before anything is checked or started.
    find_command(&argv[0]).map_err(usage)?;
    let addrs = ready_address(&args.ready).map_err(usage)?;
    if port_answers(&addrs) {
        return Err(usage(format!(
            "something already listens on {} (the --ready address) before the service was started; stop it first, or the benchmark would time it instead",
            addrs[0]
        )));
    }
    let reg = Registry::new();
    let h = |n| histogram(&reg, n).map_err(ColdstartError::Usage);
    let (ready_h, first_h, warm_h) = (
        h("coldstart.time_to_ready")?,
        h("coldstart.first_request")?,
        h("coldstart.warm_request")?,
    );
    interrupt::install();
    let mut per_run = Vec::new();
    let mut warm_errors = 0u64;
    for run in 1..=args.runs {
        let err = |message: String| ColdstartError::Run { run, message };
        let figures = one_run(&argv, args, &warm_h, &mut warm_errors).map_err(err)?;
        ready_h.observe(figures.time_to_ready_seconds);
        first_h.observe(figures.first_request_seconds);
        eprintln!(
            "run {run}/{}: ready in {}, first request {}",
            args.runs,
            fmt_secs(Some(figures.time_to_ready_seconds)),
            fmt_secs(Some(figures.first_request_seconds))
        );
        per_run.push(figures);
        // The next start must not find the old one still holding the port.
        let deadline = Instant::now() + PORT_RELEASE;
        while port_answers(&addrs) {
            if Instant::now() >= deadline {
                return Err(err(format!(
                    "{} still accepts connections {} s after the service was stopped; another process may listen there",
                    addrs[0],
                    PORT_RELEASE.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let ready = ready_h.read();
    let outcomes = thresholds
        .iter()
        .map(|t| {
            let observed = observe(t, &ready);
            ThresholdOutcome {
                threshold: t.text.clone(),
                request: None,
                observed,
                passed: observed.is_some_and(|v| holds(t.op, v, t.limit)),
            }
        })
        .collect();
    Ok(ColdstartResult {
        schema: SCHEMA.to_owned(),
        tool_version: env!("CARGO_PKG_VERSION").to_owned(),
        command: args.command.clone(),
        ready: args.ready.clone(),
        runs: args.runs,
        warm_requests: args.warm_requests,
        warm_errors,
        time_to_ready: StoredHistogram::from_point(&ready),
        first_request: StoredHistogram::from_point(&first_h.read()),
        warm: StoredHistogram::from_point(&warm_h.read()),
        per_run,
        thresholds: outcomes,
    })
}

fn observe(t: &Threshold, h: &HistogramPoint) -> Option<f64> {
    match t.measure {
        Measure::Quantile(q) => h.quantile(q),
        Measure::Max => h.max(),
        Measure::Min => h.min(),
        Measure::Mean => (h.count() > 0).then(|| h.sum() / h.count() as f64),
        Measure::Errors | Measure::Rate => None,
    }
}

fn holds(op: Op, observed: f64, limit: f64) -> bool {
    match op {
        Op::Lt => observed < limit,
        Op::Le => observed <= limit,
        Op::Gt => observed > limit,
        Op::Ge => observed >= limit,
    }
}

/// The service's process group, stopped and reaped on drop.
/// Whether `program` can be started: a path to an executable file, or a name found on `PATH`.
fn find_command(program: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    let executable = |p: &std::path::Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let found = if program.contains('/') {
        executable(std::path::Path::new(program))
    } else {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|d| executable(&d.join(program))))
    };
    if found {
        Ok(())
    } else {
        Err(format!(
            "command {program:?} not found (or not executable); give the service's binary by its path (such as target/release/my-service) or a name on PATH"
        ))
    }
}

struct Service {
    child: Child,
    stderr: Arc<Mutex<VecDeque<String>>>,
    reaped: bool,
}

impl Service {
    fn spawn(argv: &[String]) -> Result<Service, String> {
        use std::os::unix::process::CommandExt as _;
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own group: stopping it stops whatever it started too (a wrapper script's
            // child), and a Ctrl-C at the terminal reaches sonde-load, which stops it.
            .process_group(0);
        let mut child = interrupt::spawn(&mut cmd).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!(
                "command {:?} not found; give the service's binary by its path (such as target/release/my-service) or a name on PATH",
                argv[0]
            ),
            std::io::ErrorKind::PermissionDenied => {
                format!("command {:?} cannot be executed (permission denied)", argv[0])
            }
            _ => format!("could not start {:?}: {e}", argv[0]),
        })?;
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(pipe) = child.stderr.take() {
            let keep = stderr.clone();
            // Drained all along so the service never blocks on a full pipe; the last lines are
            // kept for the message when it exits early.
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(mut k) = keep.lock() {
                        if k.len() == STDERR_LINES {
                            k.pop_front();
                        }
                        k.push_back(line);
                    }
                }
            });
        }
        Ok(Service {
            child,
            stderr,
            reaped: false,
        })
    }

    /// The exit status, if it has exited.
    fn exited(&mut self) -> Option<ExitStatus> {
        match self.child.try_wait() {
            Ok(Some(s)) => {
                self.reaped = true;
                // Whatever it started may still run in its group.
                signal_group(self.child.id(), rustix::process::Signal::KILL);
                Some(s)
            }
            _ => None,
        }
    }

    fn last_stderr(&self) -> String {
        // Let the reader thread take the last lines written before the exit.
        std::thread::sleep(Duration::from_millis(50));
        self.stderr
            .lock()
            .map(|l| l.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }

    /// SIGTERM to the group, SIGKILL after the grace period; always reaps.
    fn stop(&mut self) {
        if self.reaped {
            return;
        }
        let pid = self.child.id();
        signal_group(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + GRACE;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                _ => {
                    signal_group(pid, rustix::process::Signal::KILL);
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
            }
        }
        // Children of the service that ignored SIGTERM.
        signal_group(pid, rustix::process::Signal::KILL);
        self.reaped = true;
        interrupt::forget();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
        interrupt::forget();
    }
}

fn signal_group(pid: u32, sig: rustix::process::Signal) {
    if let Some(p) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        // ESRCH (already gone) is the expected outcome more often than not.
        let _ = rustix::process::kill_process_group(p, sig);
    }
}

fn describe_status(s: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => s.to_string(),
    }
}

fn one_run(
    argv: &[String],
    args: &ColdstartArgs,
    warm_h: &Histogram,
    warm_errors: &mut u64,
) -> Result<RunFigures, String> {
    // A fresh client per run: no pooled connection to the previous process. Its requests run
    // on one current-thread runtime, so a request costs no runtime of its own.
    let client = sonde_http1::client::client(
        &sonde_http1::client::TlsFiles::default(),
        args.timeout,
        concat!("sonde-load/", env!("CARGO_PKG_VERSION")),
    )
    .map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime for the requests: {e}"))?;
    let poll = |url: &str, timeout: Duration| runtime.block_on(get(&client, url, timeout));
    let spawned = Instant::now();
    let mut service = Service::spawn(argv)?;
    let deadline = spawned + args.timeout;
    let mut polls = 0u64;
    let mut last = "no answer yet".to_owned();
    let (ready, first) = loop {
        if let Some(status) = service.exited() {
            let tail = service.last_stderr();
            return Err(format!(
                "{:?} exited ({}) {:.0} ms after it was started, before {} answered 2xx{}",
                args.command,
                describe_status(status),
                spawned.elapsed().as_secs_f64() * 1e3,
                args.ready,
                if tail.is_empty() {
                    " (it wrote nothing to stderr)".to_owned()
                } else {
                    format!("; the last lines of its stderr:\n{tail}")
                }
            ));
        }
        let now = Instant::now();
        if now >= deadline {
            service.stop();
            return Err(format!(
                "{:?} did not answer 2xx at {} within {} s of its start (last: {last}); raise --timeout if it needs longer, or check --ready",
                args.command,
                args.ready,
                args.timeout.as_secs_f64()
            ));
        }
        polls += 1;
        let sent = Instant::now();
        let outcome = poll(&args.ready, deadline - now);
        let done = Instant::now();
        match outcome {
            Ok(s) if (200..300).contains(&s) => break (done - spawned, done - sent),
            Ok(s) => last = format!("HTTP {s}"),
            Err(e) => last = e,
        }
        std::thread::sleep(POLL_EVERY);
    };
    let remaining = |now: Instant| {
        deadline
            .saturating_duration_since(now)
            .max(Duration::from_secs(1))
    };
    for _ in 0..args.warm_requests {
        let sent = Instant::now();
        match poll(&args.ready, remaining(sent)) {
            Ok(s) if (200..300).contains(&s) => warm_h.observe(sent.elapsed().as_secs_f64()),
            _ => *warm_errors += 1,
        }
    }
    service.stop();
    Ok(RunFigures {
        time_to_ready_seconds: ready.as_secs_f64(),
        first_request_seconds: first.as_secs_f64(),
        polls,
    })
}

/// GETs `url` and reads the whole body (up to 16 MiB); the status, or why there was none.
async fn get(client: &reqwest::Client, url: &str, timeout: Duration) -> Result<u16, String> {
    let mut response = client.get(url).timeout(timeout).send().await.map_err(|e| {
        if e.is_connect() && connection_refused(&e) {
            "connection refused".to_owned()
        } else {
            sonde_push::error_chain(&e)
        }
    })?;
    let status = response.status().as_u16();
    let read = sonde_http1::client::read_capped(&mut response, 16 << 20).await;
    match (read.error, read.truncated) {
        (Some(e), _) => Err(format!(
            "reading the answer: {}",
            sonde_push::error_chain(&e)
        )),
        (None, true) => Err("reading the answer: it is larger than 16 MiB".to_owned()),
        (None, false) => Ok(status),
    }
}

/// Whether `e` comes from a refused connection (the service is not listening yet).
fn connection_refused(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        source = s.source();
    }
    false
}

/// Seconds as `312.4 ms`, `1.20 ms`, `85 µs`, `1.52 s`.
fn fmt_secs(v: Option<f64>) -> String {
    match v {
        None => "-".to_owned(),
        Some(s) if s >= 1.0 => format!("{s:.2} s"),
        Some(s) if s >= 0.1 => format!("{:.1} ms", s * 1e3),
        Some(s) if s >= 1e-3 => format!("{:.2} ms", s * 1e3),
        Some(s) => format!("{:.0} µs", s * 1e6),
    }
}

/// The summary table.
pub fn table(r: &ColdstartResult) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "cold start: {} run{} of {:?}, ready at {}",
        r.runs,
        if r.runs == 1 { "" } else { "s" },
        r.command,
        r.ready
    );
    let _ = writeln!(
        out,
        "{:<16} {:>10} {:>10} {:>10} {:>7}",
        "", "p50", "p95", "max", "count"
    );
    for (name, h) in [
        ("time to ready", &r.time_to_ready),
        ("first request", &r.first_request),
        ("warm requests", &r.warm),
    ] {
        let _ = writeln!(
            out,
            "{name:<16} {:>10} {:>10} {:>10} {:>7}",
            fmt_secs(h.quantile(0.5)),
            fmt_secs(h.quantile(0.95)),
            fmt_secs(h.parts.max),
            h.parts.count
        );
    }
    let ratio = |q: f64| match (r.first_request.quantile(q), r.warm.quantile(q)) {
        (Some(f), Some(w)) if w > 0.0 => format!("{:.1}x", f / w),
        _ => "-".to_owned(),
    };
    let _ = writeln!(
        out,
        "first request / warm: {} at p50, {} at p95",
        ratio(0.5),
        ratio(0.95)
    );
    if r.warm_errors > 0 {
        let _ = writeln!(
            out,
            "warning: {} warm request{} failed (not counted above)",
            r.warm_errors,
            if r.warm_errors == 1 { "" } else { "s" }
        );
    }
    if !r.thresholds.is_empty() {
        let _ = writeln!(out, "thresholds on time to ready:");
        for t in &r.thresholds {
            let _ = writeln!(
                out,
                "  {}  {:<16} observed {}",
                if t.passed { "PASS" } else { "FAIL" },
                t.threshold,
                fmt_secs(t.observed)
            );
        }
    }
    out
}

/// Stops the service being measured when `sonde-load` is interrupted (Ctrl-C, SIGTERM), since
/// its own process group does not get the terminal's signal.
mod interrupt {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Mutex, Once};
    use std::time::Duration;

    static CURRENT: Mutex<Option<u32>> = Mutex::new(None);
    static INTERRUPTED: AtomicBool = AtomicBool::new(false);

    /// Whether Ctrl-C or SIGTERM arrived.
    pub(super) fn interrupted() -> bool {
        INTERRUPTED.load(Ordering::SeqCst)
    }

    /// Forgets the process being measured (it was reaped).
    pub(super) fn forget() {
        *CURRENT.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Starts the service and records it as the one to stop, under one lock: a Ctrl-C that
    /// comes while it starts waits for its pid instead of leaving it running.
    pub(super) fn spawn(cmd: &mut std::process::Command) -> std::io::Result<std::process::Child> {
        let mut current = CURRENT.lock().unwrap_or_else(|p| p.into_inner());
        // The handler sets the flag before it looks: once set, it may have looked already.
        if interrupted() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "interrupted before the service started",
            ));
        }
        let child = cmd.spawn()?;
        *current = Some(child.id());
        Ok(child)
    }

    /// Starts the watcher once per process.
    pub(super) fn install() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            let installed = crate::signals::on_interrupt(|| {
                INTERRUPTED.store(true, Ordering::SeqCst);
                let pid = *CURRENT.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(pid) = pid {
                    eprintln!("interrupted: stopping the service (process group {pid})");
                    super::signal_group(pid, rustix::process::Signal::TERM);
                    std::thread::sleep(Duration::from_millis(500));
                    super::signal_group(pid, rustix::process::Signal::KILL);
                }
                std::process::exit(130);
            });
            if let Err(e) = installed {
                eprintln!("warning: Ctrl-C may leave the service running ({e})");
            }
        });
    }
}
