//! The load generator: open model (constant arrival rate, latency from the scheduled start) and
//! closed model (virtual users), with keep-alive, HTTP/1.1 (each request serialized once,
//! answers framed by `sonde-http1`) or HTTP/2 (hyper), rustls.
//!
//! # Threads
//! The load runs on one single-threaded tokio runtime per core (a "lane", as wrk's threads):
//! a connection's task never moves between threads, so an answer wakes the thread that waits
//! for it, and HTTP/1.1 connections are driven inside the task that sends on them. Lane `i`
//! of `n` takes arrivals (or users) `i, i + n, ...` and its share of the connections.
//!
//! # Open model
//! Arrival `k` is scheduled where the integral of the target rate reaches `k` (ramps included;
//! a warm-up runs at the first stage's target before the measured part). A pacer releases each
//! arrival at its time: on Linux a task sleeping on a timerfd (the kernel's high-resolution
//! timer wakes the lane's own epoll), elsewhere a thread that sleeps then spins; tokio's
//! 1 ms timer wheel would add 1–2 ms to every latency. One of the lane's connection tasks
//! takes the arrival. Latency and the timeout both count from the scheduled time, so a
//! stalled server shows its stall (coordinated omission corrected, as wrk2 does). An arrival
//! that finds every connection of its lane busy waits for one (`generator.queued_requests`);
//! one whose timeout passes before a connection frees up fails as a timeout without being sent
//! (latency: the timeout). An arrival sent more than 1 ms late while a connection was free is the
//! generator's own lag (`late_requests`, `max_lag_seconds`); when more than 1 % of the
//! requests are late and the lag reached 10 ms the run is marked `saturated`: the figures are
//! then a limit of this machine, not of the server. After the last arrival the run drains:
//! in-flight and queued requests get at most the timeout to finish, and the last timeline
//! window runs to the end of the drain.
//!
//! # Closed model
//! `target_at(t)` users (rounded; ramps add and remove users, checked every 20 ms), each with
//! its own connection, sending the next request when the previous one completes; latency and
//! timeout count from the send. After a connect or TLS failure a user pauses 10 ms, so a
//! refused port is counted without spinning a core.
//!
//! # Requests
//! The plan's requests are picked by weight in a smooth weighted round-robin order (3:1 gives
//! a a b a), deterministic from run to run. A connection closed by the server is reopened; a
//! kept-alive connection that turns out closed as a request goes out is retried once on a
//! fresh one (when the request was not sent, or its method is idempotent).
//!
//! # Recording
//! Every latency (errors too: the time until the failure) goes into sonde-core histograms
//! ([`Precision::High`], seconds) of the family [`METRIC`], labelled `request.name` and
//! `error.type` (empty for an answered request, else `connect`, `timeout`, `tls`, `http_4xx`,
//! `http_5xx`, `other`): memory is flat however long the run. The timeline is read from them
//! every second (every `duration / 1000` for runs over 1,000 s). Warm-up requests are recorded
//! nowhere.
//!
//! # Errors
//! Refused or unreachable hosts, TLS failures, servers that never answer are counted by class
//! and the run goes on. Only a plan that cannot run at all fails: a host name that does not
//! resolve at the start (nothing could be sent), a URL without a host, TLS roots that cannot
//! be loaded.

mod client;
mod schedule;
pub mod timer;

use std::io::IsTerminal as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sonde_core::{Histogram, HistogramPoint, Precision, Registry, Unit};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::plan::{Model, Plan};
use crate::result::{
    ErrorCounts, GeneratorStats, Quantiles, RequestStats, RunResult, SCHEMA, StoredHistogram,
    Window,
};
use client::{CLASSES, Class, Client, Conn, Phase};
use schedule::{Timeline, users_at, weighted_order};

/// The histogram family the run records into (seconds, labels `request.name`, `error.type`).
pub const METRIC: &str = "http.client.request.duration";

/// A send later than this behind its schedule, with a connection free, is the generator's lag.
const LATE: Duration = Duration::from_millis(1);
/// How soon a sleeping pacer or sampler sees [`RunOptions::stop`].
const STOP_POLL: Duration = Duration::from_millis(50);

/// With more than 1 % of the sends late, a run is saturated once the lag reached this: a
/// generator that cannot keep up falls further and further behind, while a busy machine's
/// scheduling hiccups stay at a few milliseconds (still counted in `late_requests`).
const SATURATED_LAG: Duration = Duration::from_millis(10);

/// How a run is shown while it goes. (The run's metrics go to a registry given to
/// [`run_with_registry`].)
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Draw a live progress line (only on a terminal).
    pub progress: bool,
    /// Set it (from a Ctrl-C handler, say) to end the run early: no new request is started,
    /// those in flight finish (within the timeout), and the result covers the time run.
    pub stop: Arc<AtomicBool>,
}

/// A run that could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The plan cannot be run as written.
    #[error("the plan cannot run: {0}")]
    Plan(String),
    /// A host name does not resolve.
    #[error("cannot resolve the host {host:?} ({detail}); check the URL (nothing was sent)")]
    Resolve {
        /// The host.
        host: String,
        /// The resolver's answer.
        detail: String,
    },
    /// TLS cannot be set up.
    #[error("{0}")]
    Tls(String),
    /// The runtime or the pacer thread could not start.
    #[error("cannot start the load generator: {0}")]
    Runtime(#[from] std::io::Error),
    /// The metric family could not be registered (the registry holds another `METRIC`).
    #[error("cannot register {METRIC}: {0}")]
    Metrics(String),
}

/// Runs the plan to its end and returns the result (thresholds not yet evaluated).
pub fn run(plan: &Plan, opts: &RunOptions) -> Result<RunResult, EngineError> {
    run_with_registry(plan, opts, &Registry::new())
}

/// Like [`run`], recording into `registry`'s [`METRIC`] family, so the run's histograms can be
/// pushed with sonde's exporters (Prometheus remote write, OTLP) beside the service's. The
/// result holds only this run's requests even if the family already had data.
pub fn run_with_registry(
    plan: &Plan,
    opts: &RunOptions,
    registry: &Registry,
) -> Result<RunResult, EngineError> {
    if plan.requests.is_empty() {
        return Err(EngineError::Plan("it has no request to send".to_owned()));
    }
    if plan.stages.is_empty() || plan.duration().is_zero() {
        return Err(EngineError::Plan(
            "it has no stage with a duration".to_owned(),
        ));
    }
    if plan.timeout.is_zero() {
        return Err(EngineError::Plan("the timeout must be above 0".to_owned()));
    }
    let mut names: Vec<String> = Vec::new();
    for r in &plan.requests {
        if !names.contains(&r.name) {
            names.push(r.name.clone());
        }
    }
    let peak_users = plan
        .stages
        .iter()
        .map(|s| s.target.max(0.0).round() as usize)
        .max()
        .unwrap_or(0)
        .max(1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let lanes = match plan.model {
        Model::Open => cores.min(plan.connections.max(1)),
        Model::Closed => cores.min(peak_users),
    }
    .max(1);
    let stats = Stats::new(registry, &names, lanes)?;
    // Resolving and TLS set-up need a runtime; the load itself runs on one single-threaded
    // runtime per core ("lane"), as wrk does: a connection's task never hops threads, so an
    // answer wakes the thread that waits for it and nothing is stolen or handed over.
    let setup = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = setup.block_on(Client::new(
        &plan.requests,
        &names,
        plan.http2,
        plan.insecure,
    ))?;
    drop(setup);
    let weights: Vec<u32> = plan.requests.iter().map(|r| r.weight).collect();
    let progress = progress_bar(opts, plan);
    let timeline = Arc::new(Timeline::new(plan));
    let run_start = Instant::now();
    let started_at = SystemTime::now() + plan.warmup;
    let ctx = Arc::new(Ctx {
        client,
        stats,
        order: weighted_order(&weights),
        timeout: plan.timeout,
        measure_start: run_start + plan.warmup,
        stop: Arc::clone(&opts.stop),
    });
    let duration = plan.duration();
    let window = Duration::from_secs_f64((duration.as_secs_f64() / 1000.0).max(1.0));
    // The first read is taken before any request can be recorded.
    let mut sampler = Sampler {
        prev: ctx.stats.read(),
        per_name: vec![Vec::new(); ctx.stats.names.len()],
        total: Vec::new(),
        last_t: 0.0,
    };
    let mut threads = Vec::with_capacity(lanes);
    for index in 0..lanes {
        let (ctx, plan, tl) = (Arc::clone(&ctx), plan.clone(), Arc::clone(&timeline));
        let lane = Lane {
            index,
            count: lanes,
        };
        let spawned = std::thread::Builder::new()
            .name(format!("sonde-load-{index}"))
            .spawn(move || -> Result<(), EngineError> {
                LANE.set(index);
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    match plan.model {
                        Model::Open => open_lane(&ctx, &plan, tl, lane, run_start).await,
                        Model::Closed => {
                            closed_lane(&ctx, &plan, lane, peak_users, run_start).await;
                            Ok(())
                        }
                    }
                })
            });
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => {
                // Lanes already started end with the plan's duration.
                for t in threads {
                    let _ = t.join();
                }
                return Err(EngineError::Runtime(e));
            }
        }
    }
    sample(&ctx, &mut sampler, window, duration, progress.as_ref());
    // Stopped early: the measured time ends now, not when the plan would have.
    let stopped_after = ctx
        .stopped()
        .then(|| ctx.measure_start.elapsed().min(duration));
    let mut failure = None;
    for t in threads {
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failure = Some(e),
            Err(_) => failure = Some(EngineError::Plan("a load thread panicked".to_owned())),
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    // The last window runs to the end of the drain (requests in flight at the end).
    let end = ctx.measure_start.elapsed().as_secs_f64();
    sampler.window(&ctx.stats, end.max(sampler.last_t));
    if let Some(pb) = progress {
        pb.finish_and_clear();
    }
    let (target_rate, users) = match plan.model {
        Model::Open => (Some(timeline.mean_measured_rate()), None),
        Model::Closed => (None, Some(peak_users as u64)),
    };
    Ok(assemble(
        &ctx,
        plan,
        &sampler,
        started_at,
        target_rate,
        users,
        stopped_after,
    ))
}

/// One thread's share of the load: arrivals `index, index + count, ...` (open model) or users
/// `index, index + count, ...` (closed model), with its share of the connections.
#[derive(Debug, Clone, Copy)]
struct Lane {
    index: usize,
    count: usize,
}

impl Lane {
    /// How many of `total` arrivals are this lane's.
    fn arrivals(self, total: u64) -> u64 {
        let (i, n) = (self.index as u64, self.count as u64);
        if total > i {
            (total - i).div_ceil(n)
        } else {
            0
        }
    }

    /// The run-wide number of this lane's `j`-th arrival.
    fn arrival(self, j: u64) -> u64 {
        self.index as u64 + j * self.count as u64
    }

    /// This lane's share of `n` (connections).
    fn share(self, n: usize) -> usize {
        n / self.count + usize::from(self.index < n % self.count)
    }
}

struct Ctx {
    client: Client,
    stats: Stats,
    order: Vec<u32>,
    timeout: Duration,
    measure_start: Instant,
    /// Set to end the run early ([`RunOptions::stop`]).
    stop: Arc<AtomicBool>,
}

impl Ctx {
    fn pick(&self, k: u64) -> usize {
        self.order[(k % self.order.len() as u64) as usize] as usize
    }

    /// Sends request `idx` bounded by `deadline`; on a timeout the origin's connection is
    /// dropped (an HTTP/1.1 connection with a request in flight cannot be reused).
    async fn send(
        &self,
        conns: &mut [Option<Conn>],
        idx: usize,
        deadline: Instant,
    ) -> (Class, u16) {
        let mut phase = Phase::Connect;
        let sent =
            tokio::time::timeout_at(deadline.into(), self.client.send(conns, idx, &mut phase))
                .await;
        match sent {
            Ok(r) => r,
            Err(_) => {
                conns[self.client.requests[idx].origin()] = None;
                (phase.timeout_class(), 0)
            }
        }
    }

    fn record(&self, idx: usize, class: Class, status: u16, since: Instant) {
        let secs = Instant::now()
            .saturating_duration_since(since)
            .as_secs_f64();
        self.stats
            .record(self.client.requests[idx].name, class, status, secs);
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn new_conns(&self) -> Vec<Option<Conn>> {
        (0..self.client.origin_count()).map(|_| None).collect()
    }
}

thread_local! {
    /// The lane this thread runs (0 outside the lanes).
    static LANE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Every figure the load tasks write: lock-free histograms and counters.
struct Stats {
    names: Vec<String>,
    per: Vec<NameStats>,
    /// Reads at the start (non-empty only when the registry's family already had data).
    base: Vec<Vec<HistogramPoint>>,
    late: AtomicU64,
    queued: AtomicU64,
    max_lag_nanos: AtomicU64,
}

struct NameStats {
    /// One per [`Class`], by index.
    hist: Vec<Histogram>,
    /// Answers by lane then status code (index = lane * 600 + code): each lane counts in its
    /// own block, so two lanes never write the same cache line.
    statuses: Vec<AtomicU64>,
}

impl Stats {
    fn new(registry: &Registry, names: &[String], lanes: usize) -> Result<Stats, EngineError> {
        let family = registry
            .histogram(METRIC)
            .description(
                "Latency of the requests sonde-load sent (open model: from the scheduled start).",
            )
            .unit(Unit::Seconds)
            .precision(Precision::High)
            .labels(["request.name", "error.type"])
            // Every lane records into the same few series: one block of counters per thread.
            .striped(true)
            .build()
            .map_err(|e| EngineError::Metrics(e.to_string()))?;
        let per: Vec<NameStats> = names
            .iter()
            .map(|n| NameStats {
                hist: CLASSES
                    .iter()
                    .map(|c| family.with(&[n.as_str(), c.label()]))
                    .collect(),
                statuses: (0..600 * lanes).map(|_| AtomicU64::new(0)).collect(),
            })
            .collect();
        let mut stats = Stats {
            names: names.to_vec(),
            per,
            base: Vec::new(),
            late: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            max_lag_nanos: AtomicU64::new(0),
        };
        stats.base = stats.read_raw();
        Ok(stats)
    }

    fn record(&self, name: usize, class: Class, status: u16, secs: f64) {
        let n = &self.per[name];
        n.hist[class as usize].observe(secs);
        let block = LANE.get() * 600;
        if let Some(c) = n
            .statuses
            .get(block + usize::from(status))
            .filter(|_| status > 0 && status < 600)
        {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn read_raw(&self) -> Vec<Vec<HistogramPoint>> {
        self.per
            .iter()
            .map(|n| n.hist.iter().map(Histogram::read).collect())
            .collect()
    }

    /// This run's cumulative reads, by name then class.
    fn read(&self) -> Vec<Vec<HistogramPoint>> {
        let mut cur = self.read_raw();
        for (c, b) in cur.iter_mut().zip(&self.base) {
            for (p, base) in c.iter_mut().zip(b) {
                if base.count() > 0 {
                    *p = p.minus(base);
                }
            }
        }
        cur
    }

    fn lag(&self, lag: Duration) {
        if lag > LATE {
            self.late.fetch_add(1, Ordering::Relaxed);
            let nanos = u64::try_from(lag.as_nanos()).unwrap_or(u64::MAX);
            self.max_lag_nanos.fetch_max(nanos, Ordering::Relaxed);
        }
    }
}

fn merge_all<'a>(points: impl IntoIterator<Item = &'a HistogramPoint>) -> Option<HistogramPoint> {
    let mut it = points.into_iter();
    let first = it.next()?.clone();
    // Points of one family share a layout, so a merge cannot fail; keep what we have if it did.
    Some(it.fold(first, |acc, p| acc.merge(p).unwrap_or(acc)))
}

fn error_count(classes: &[HistogramPoint]) -> u64 {
    classes.iter().skip(1).map(HistogramPoint::count).sum()
}

fn window_of(p: Option<&HistogramPoint>, errors: u64, start: f64, end: f64) -> Window {
    let count = p.map_or(0, HistogramPoint::count);
    Window {
        start_seconds: start,
        seconds: end - start,
        count,
        errors,
        quantiles: Quantiles::from_fn(|q| p.and_then(|p| p.quantile(q))),
        max: p.filter(|p| p.count() > 0).and_then(HistogramPoint::max),
    }
}

/// Periodic reads turned into timeline windows.
struct Sampler {
    prev: Vec<Vec<HistogramPoint>>,
    per_name: Vec<Vec<Window>>,
    total: Vec<Window>,
    last_t: f64,
}

impl Sampler {
    fn window(&mut self, stats: &Stats, t: f64) -> Window {
        let cur = stats.read();
        let mut name_points = Vec::with_capacity(cur.len());
        let mut all_errors = 0;
        for (i, (c, p)) in cur.iter().zip(&self.prev).enumerate() {
            let deltas: Vec<HistogramPoint> = c.iter().zip(p).map(|(c, p)| c.minus(p)).collect();
            let errors = error_count(&deltas);
            all_errors += errors;
            let merged = merge_all(&deltas);
            self.per_name[i].push(window_of(merged.as_ref(), errors, self.last_t, t));
            if let Some(m) = merged {
                name_points.push(m);
            }
        }
        let total = window_of(merge_all(&name_points).as_ref(), all_errors, self.last_t, t);
        self.total.push(total);
        self.prev = cur;
        self.last_t = t;
        total
    }
}

/// Reads a window at each boundary until the last one before the end (which is read once the
/// run has drained), updating the progress line.
fn sample(
    ctx: &Ctx,
    s: &mut Sampler,
    window: Duration,
    duration: Duration,
    progress: Option<&ProgressBar>,
) {
    let mut k = 1u32;
    loop {
        let boundary = window * k;
        if boundary + Duration::from_millis(1) >= duration {
            break;
        }
        let at = ctx.measure_start + boundary;
        // In slices, to see a stop within a moment.
        loop {
            if ctx.stopped() {
                return;
            }
            let left = at.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(STOP_POLL));
        }
        let w = s.window(&ctx.stats, boundary.as_secs_f64());
        if let Some(pb) = progress {
            pb.set_position(boundary.as_secs());
            pb.set_message(progress_text(ctx, &w, boundary, duration));
        }
        k += 1;
    }
}

fn progress_text(ctx: &Ctx, w: &Window, elapsed: Duration, duration: Duration) -> String {
    let errors: u64 = ctx.stats.read().iter().map(|c| error_count(c)).sum();
    let p99 = w
        .quantiles
        .p99
        .map_or_else(|| "-".to_owned(), |v| format!("{:.1} ms", v * 1e3));
    format!(
        "{:.0}/{:.0} s  {:.0} req/s  {errors} errors  p99 {p99}",
        elapsed.as_secs_f64(),
        duration.as_secs_f64(),
        w.count as f64 / w.seconds.max(1e-9),
    )
}

fn progress_bar(opts: &RunOptions, plan: &Plan) -> Option<ProgressBar> {
    if !opts.progress || !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = ProgressBar::with_draw_target(
        Some(plan.duration().as_secs().max(1)),
        ProgressDrawTarget::stderr(),
    );
    let style = ProgressStyle::with_template("{bar:24} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style);
    pb.set_message(if plan.warmup.is_zero() {
        "starting".to_owned()
    } else {
        format!("warm-up {:.0} s", plan.warmup.as_secs_f64())
    });
    Some(pb)
}

async fn open_lane(
    ctx: &Arc<Ctx>,
    plan: &Plan,
    timeline: Arc<Timeline>,
    lane: Lane,
    run_start: Instant,
) -> Result<(), EngineError> {
    let connections = lane.share(plan.connections.max(1));
    if connections == 0 {
        return Ok(());
    }
    let sem = Arc::new(Semaphore::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let pacer = start_pacer(&timeline, lane, run_start, &sem, connections, &ctx.stop)?;
    let mut set = JoinSet::new();
    for _ in 0..connections {
        set.spawn(open_worker(
            Arc::clone(ctx),
            Arc::clone(&sem),
            Arc::clone(&next),
            Arc::clone(&timeline),
            lane,
            run_start,
        ));
    }
    while set.join_next().await.is_some() {}
    // The pacer has released its last permits once every worker has left.
    match pacer {
        Pacer::Task(t) => {
            let _ = t.await;
        }
        Pacer::Thread(t) => {
            let _ = t.join();
        }
    }
    Ok(())
}

enum Pacer {
    Task(tokio::task::JoinHandle<()>),
    Thread(std::thread::JoinHandle<()>),
}

/// On Linux the pacer is a task sleeping on a timerfd: the kernel's high-resolution timer
/// wakes the lane's epoll and the connection task it releases runs next on the same thread.
/// Elsewhere (or without timerfd) it is a thread that sleeps and spins.
fn start_pacer(
    timeline: &Arc<Timeline>,
    lane: Lane,
    origin: Instant,
    sem: &Arc<Semaphore>,
    workers: usize,
    stop: &Arc<AtomicBool>,
) -> Result<Pacer, EngineError> {
    #[cfg(target_os = "linux")]
    if let Ok(mut tfd) = timer::TimerFd::new() {
        let (sem, tl, stop) = (Arc::clone(sem), Arc::clone(timeline), Arc::clone(stop));
        return Ok(Pacer::Task(tokio::spawn(async move {
            let total = lane.arrivals(tl.total());
            let mut j = 0;
            while j < total {
                let Some((_, at)) = next_arrival(&tl, lane, origin, &sem, &stop, j) else {
                    return;
                };
                // A distant arrival is waited for in slices, to see a stop.
                let wake = at.min(Instant::now() + STOP_POLL);
                // At high rates the next arrival is microseconds away: yielding until it is
                // cheaper than a timer round trip through the kernel.
                while at.saturating_duration_since(Instant::now()) < Duration::from_micros(30)
                    && Instant::now() < at
                {
                    tokio::task::yield_now().await;
                }
                if tfd.sleep_until(wake).await.is_err() {
                    // The timer broke: finish on tokio's coarser one rather than stall.
                    tokio::time::sleep_until(wake.into()).await;
                }
                j = release_due(&tl, lane, origin, &sem, j);
            }
            sem.add_permits(workers);
        })));
    }
    let (sem, tl, stop) = (Arc::clone(sem), Arc::clone(timeline), Arc::clone(stop));
    let t = std::thread::Builder::new()
        .name(format!("sonde-load-pacer-{}", lane.index))
        .spawn(move || pace(&tl, lane, origin, &sem, workers, &stop))?;
    Ok(Pacer::Thread(t))
}

/// The lane's arrival `j`: its time into the run and its instant; `None` once a stop is
/// asked, the semaphore then closed (waiting workers leave; those sending finish their
/// request).
fn next_arrival(
    tl: &Timeline,
    lane: Lane,
    origin: Instant,
    sem: &Semaphore,
    stop: &AtomicBool,
    j: u64,
) -> Option<(f64, Instant)> {
    if stop.load(Ordering::Relaxed) {
        sem.close();
        return None;
    }
    let t = tl.arrival(lane.arrival(j));
    Some((t, origin + Duration::from_secs_f64(t)))
}

/// Releases the lane's arrivals from `j` on that are already due (none when a pacer woke
/// early); returns the next.
fn release_due(tl: &Timeline, lane: Lane, origin: Instant, sem: &Semaphore, mut j: u64) -> u64 {
    let total = lane.arrivals(tl.total());
    let now = Instant::now();
    let mut n = 0;
    while j < total && origin + Duration::from_secs_f64(tl.arrival(lane.arrival(j))) <= now {
        j += 1;
        n += 1;
    }
    if n > 0 {
        sem.add_permits(n);
    }
    j
}

/// Releases each of the lane's arrivals at its time (one permit each), then one permit per
/// worker to let it leave.
fn pace(
    tl: &Timeline,
    lane: Lane,
    origin: Instant,
    sem: &Semaphore,
    workers: usize,
    stop: &AtomicBool,
) {
    let total = lane.arrivals(tl.total());
    let mut j = 0;
    while j < total {
        let Some((t, at)) = next_arrival(tl, lane, origin, sem, stop, j) else {
            return;
        };
        // Spinning the last ~100 µs is cheap at moderate rates; above 2,000/s arrivals come
        // in batches anyway and a spinning pacer would take a core from the connections.
        timer::wait_until(at.min(Instant::now() + STOP_POLL), tl.rate_at(t) <= 2000.0);
        j = release_due(tl, lane, origin, sem, j);
    }
    sem.add_permits(workers);
}

async fn open_worker(
    ctx: Arc<Ctx>,
    sem: Arc<Semaphore>,
    next: Arc<AtomicU64>,
    tl: Arc<Timeline>,
    lane: Lane,
    origin: Instant,
) {
    let mut conns = ctx.new_conns();
    let total = lane.arrivals(tl.total());
    // A worker is free from the run's start, even if the runtime polls it a moment later.
    let mut first = true;
    loop {
        let idle_since = if first { origin } else { Instant::now() };
        first = false;
        match sem.acquire().await {
            Ok(p) => p.forget(),
            Err(_) => break,
        }
        let j = next.fetch_add(1, Ordering::Relaxed);
        if j >= total {
            break;
        }
        let k = lane.arrival(j);
        let scheduled = origin + Duration::from_secs_f64(tl.arrival(k));
        let measured = scheduled >= ctx.measure_start;
        let now = Instant::now();
        if measured {
            if idle_since <= scheduled {
                ctx.stats.lag(now.saturating_duration_since(scheduled));
            } else {
                ctx.stats.queued.fetch_add(1, Ordering::Relaxed);
            }
        }
        let idx = ctx.pick(k);
        let deadline = scheduled + ctx.timeout;
        if now >= deadline {
            // Waited out its timeout for a connection: a timeout, not sent, that failed when
            // its timeout ran out.
            if measured {
                let name = ctx.client.requests[idx].name;
                ctx.stats
                    .record(name, Class::Timeout, 0, ctx.timeout.as_secs_f64());
            }
            continue;
        }
        let (class, status) = ctx.send(&mut conns, idx, deadline).await;
        if measured {
            ctx.record(idx, class, status, scheduled);
        }
    }
}

/// Runs the lane's users (`index, index + count, ...` below the plan's number at each moment).
async fn closed_lane(ctx: &Arc<Ctx>, plan: &Plan, lane: Lane, peak: usize, run_start: Instant) {
    let end = ctx.measure_start + plan.duration();
    let desired = Arc::new(AtomicUsize::new(0));
    let mine: Vec<usize> = (lane.index..peak).step_by(lane.count).collect();
    let alive: Arc<Vec<AtomicBool>> =
        Arc::new((0..mine.len()).map(|_| AtomicBool::new(false)).collect());
    let mut set = JoinSet::new();
    loop {
        let now = Instant::now();
        if now >= end || ctx.stopped() {
            break;
        }
        let want = users_at(plan, now - run_start).min(peak);
        desired.store(want, Ordering::Release);
        for (slot, &i) in mine.iter().enumerate().take_while(|(_, i)| **i < want) {
            if !alive[slot].swap(true, Ordering::AcqRel) {
                set.spawn(user(
                    Arc::clone(ctx),
                    i,
                    slot,
                    Arc::clone(&desired),
                    Arc::clone(&alive),
                    end,
                ));
            }
        }
        while set.try_join_next().is_some() {}
        tokio::time::sleep_until((now + Duration::from_millis(20)).min(end).into()).await;
    }
    while set.join_next().await.is_some() {}
}

async fn user(
    ctx: Arc<Ctx>,
    i: usize,
    slot: usize,
    desired: Arc<AtomicUsize>,
    alive: Arc<Vec<AtomicBool>>,
    end: Instant,
) {
    let mut conns = ctx.new_conns();
    let mut k = i as u64;
    loop {
        let start = Instant::now();
        if start >= end || ctx.stopped() || i >= desired.load(Ordering::Acquire) {
            break;
        }
        // Each user walks the weighted order from its own place: the mix is the same and no
        // counter is shared between lanes.
        let idx = ctx.pick(k);
        k += 1;
        let (class, status) = ctx.send(&mut conns, idx, start + ctx.timeout).await;
        if start >= ctx.measure_start {
            ctx.record(idx, class, status, start);
        }
        if matches!(class, Class::Connect | Class::Tls) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    alive[slot].store(false, Ordering::Release);
}

fn assemble(
    ctx: &Ctx,
    plan: &Plan,
    sampler: &Sampler,
    started_at: SystemTime,
    target_rate: Option<f64>,
    users: Option<u64>,
    stopped_after: Option<Duration>,
) -> RunResult {
    // Stopped during the warm-up: nothing measured, rates of zero rather than NaN.
    let duration = stopped_after
        .unwrap_or(plan.duration())
        .as_secs_f64()
        .max(1e-9);
    let reads = ctx.stats.read();
    let mut requests = Vec::with_capacity(reads.len());
    let mut name_points = Vec::new();
    let mut total_errors = ErrorCounts::default();
    let mut total_statuses = std::collections::BTreeMap::new();
    for (i, classes) in reads.iter().enumerate() {
        let c = |class: Class| classes[class as usize].count();
        let errors = ErrorCounts {
            connect: c(Class::Connect),
            timeout: c(Class::Timeout),
            tls: c(Class::Tls),
            http_4xx: c(Class::Http4xx),
            http_5xx: c(Class::Http5xx),
            other: c(Class::Other),
        };
        total_errors.add(&errors);
        let mut statuses = std::collections::BTreeMap::new();
        let per_lane = &ctx.stats.per[i].statuses;
        for code in 0..600 {
            let n: u64 = per_lane
                .iter()
                .skip(code)
                .step_by(600)
                .map(|c| c.load(Ordering::Relaxed))
                .sum();
            if n > 0 {
                statuses.insert(code.to_string(), n);
                *total_statuses.entry(code.to_string()).or_insert(0) += n;
            }
        }
        let merged = merge_all(classes);
        let count = merged.as_ref().map_or(0, HistogramPoint::count);
        if let Some(m) = &merged {
            name_points.push(m.clone());
        }
        requests.push(RequestStats {
            name: ctx.stats.names[i].clone(),
            count,
            ok: c(Class::Ok),
            errors,
            statuses,
            rate: count as f64 / duration,
            latency: stored(merged.as_ref(), &classes[0]),
            timeline: sampler.per_name[i].clone(),
        });
    }
    requests.sort_by(|a, b| a.name.cmp(&b.name));
    let merged = merge_all(&name_points);
    let count = merged.as_ref().map_or(0, HistogramPoint::count);
    let ok = requests.iter().map(|r| r.ok).sum();
    let first = &reads[0][0];
    let total = RequestStats {
        name: "total".to_owned(),
        count,
        ok,
        errors: total_errors,
        statuses: total_statuses,
        rate: count as f64 / duration,
        latency: stored(merged.as_ref(), first),
        timeline: sampler.total.clone(),
    };
    let late = ctx.stats.late.load(Ordering::Relaxed);
    let max_lag = ctx.stats.max_lag_nanos.load(Ordering::Relaxed) as f64 / 1e9;
    let generator = GeneratorStats {
        late_requests: late,
        max_lag_seconds: max_lag,
        saturated: late >= 5
            && late as f64 > 0.01 * count as f64
            && max_lag >= SATURATED_LAG.as_secs_f64(),
        queued_requests: ctx.stats.queued.load(Ordering::Relaxed),
    };
    RunResult {
        schema: SCHEMA.to_owned(),
        tool_version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at_unix_ms: started_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        duration_seconds: stopped_after.map_or(duration, |d| d.as_secs_f64()),
        interrupted: stopped_after.is_some(),
        model: match plan.model {
            Model::Open => "open",
            Model::Closed => "closed",
        }
        .to_owned(),
        target_rate,
        users,
        achieved_rate: count as f64 / duration,
        generator,
        requests,
        total,
        thresholds: Vec::new(),
        server: None,
        merged_from: Vec::new(),
    }
}

/// Stores `merged`, or an empty histogram of the same layout when nothing was recorded.
fn stored(merged: Option<&HistogramPoint>, empty_like: &HistogramPoint) -> StoredHistogram {
    match merged {
        Some(p) => StoredHistogram::from_point(p),
        None => StoredHistogram::from_point(&empty_like.minus(empty_like)),
    }
}
