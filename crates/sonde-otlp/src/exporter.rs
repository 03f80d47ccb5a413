//! The metrics exporter: periodic collection and delivery on a thread and runtime of its own.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sonde_core::telemetry::{Backoff, ExporterMetrics};
use sonde_core::{Kind, Registry, Resource, Temporality};
use tokio::sync::Notify;

use crate::Error;
use crate::config::{OtlpTransport, Signal, process_env};
use crate::convert::{self, HistogramAggregation};
use crate::transport::{Client, Outcome};

/// The `exporter` label of the self-metrics.
pub const EXPORTER: &str = "otlp";

/// How long dropping an [`OtlpMetricsExporter`] waits for the last collection to be delivered.
pub const DROP_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);

/// Longer durations are treated as this (a century), so no deadline arithmetic overflows.
const LONGEST: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d.min(LONGEST)).unwrap_or(now)
}

type Env = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Configures and starts an [`OtlpMetricsExporter`].
///
/// Every setting left unset comes from the standard variables (`OTEL_EXPORTER_OTLP_*`,
/// `OTEL_METRIC_EXPORT_INTERVAL`, `OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`,
/// `OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION`), then from the defaults.
pub struct OtlpMetricsBuilder {
    registry: Registry,
    transport: OtlpTransport,
    interval: Option<Duration>,
    temporality: Option<Temporality>,
    histograms: Option<HistogramAggregation>,
    resource: Option<Resource>,
    max_points_per_request: usize,
    max_request_bytes: usize,
    queue_capacity: usize,
    max_queue_bytes: usize,
    initial_backoff: Duration,
    max_backoff: Duration,
    max_retry_time: Duration,
    env: Env,
}

impl std::fmt::Debug for OtlpMetricsBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpMetricsBuilder")
            .field("transport", &self.transport)
            .field("interval", &self.interval)
            .field("temporality", &self.temporality)
            .finish_non_exhaustive()
    }
}

impl Default for OtlpMetricsBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl OtlpMetricsBuilder {
    /// Exports the global registry with everything from the environment or the defaults.
    pub fn new() -> Self {
        OtlpMetricsBuilder {
            registry: Registry::global().clone(),
            transport: OtlpTransport::new(),
            interval: None,
            temporality: None,
            histograms: None,
            resource: None,
            max_points_per_request: 10_000,
            max_request_bytes: 4 * 1024 * 1024,
            queue_capacity: 256,
            max_queue_bytes: 64 * 1024 * 1024,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(5),
            max_retry_time: Duration::from_secs(300),
            env: Arc::new(process_env),
        }
    }

    /// The registry to export (default: the global one).
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = registry;
        self
    }

    /// Endpoint, protocol, headers, compression, timeout and TLS.
    pub fn transport(mut self, transport: OtlpTransport) -> Self {
        self.transport = transport;
        self
    }

    /// Time between collections (default `OTEL_METRIC_EXPORT_INTERVAL`, else 60 s; at least
    /// 10 ms).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = Some(interval);
        self
    }

    /// Cumulative (default) or delta. With delta, counters and histograms carry the change per
    /// interval and up-down counters stay cumulative, as the `delta` preference of the
    /// specification asks.
    pub fn temporality(mut self, temporality: Temporality) -> Self {
        self.temporality = Some(temporality);
        self
    }

    /// Explicit-bucket (default) or exponential histograms.
    pub fn histograms(mut self, aggregation: HistogramAggregation) -> Self {
        self.histograms = Some(aggregation);
        self
    }

    /// The resource (default: [`Resource::detect`], i.e. `OTEL_SERVICE_NAME`,
    /// `OTEL_RESOURCE_ATTRIBUTES`, host, process and FaaS attributes).
    pub fn resource(mut self, resource: Resource) -> Self {
        self.resource = Some(resource);
        self
    }

    /// Most data points per request (default 10 000); larger collections are split.
    pub fn max_points_per_request(mut self, n: usize) -> Self {
        self.max_points_per_request = n.max(1);
        self
    }

    /// Most bytes per uncompressed request (default 4 MiB, gRPC's default message limit).
    pub fn max_request_bytes(mut self, n: usize) -> Self {
        self.max_request_bytes = n.max(1024);
        self
    }

    /// Most requests waiting to be sent (default 256) and most bytes they may hold (default
    /// 64 MiB). When either is reached the oldest request is dropped and its points counted in
    /// `sonde.exporter.dropped_points{exporter="otlp",reason="queue_full"}`.
    pub fn queue_capacity(mut self, requests: usize, bytes: usize) -> Self {
        self.queue_capacity = requests.max(1);
        self.max_queue_bytes = bytes.max(1);
        self
    }

    /// Backoff between retries: from `initial` (default 500 ms) doubling up to `max`
    /// (default 5 s), each delay drawn with jitter; a server's RetryInfo or Retry-After
    /// replaces the drawn delay.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max;
        self
    }

    /// How long one request is retried before it is dropped (default 5 min). Later requests
    /// wait behind it, queued, so an outage shorter than this loses nothing.
    pub fn max_retry_time(mut self, d: Duration) -> Self {
        self.max_retry_time = d;
        self
    }

    /// Reads configuration variables through `env` instead of the process environment (for
    /// tests and for embedding in a daemon with its own configuration).
    pub fn environment(
        mut self,
        env: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.env = Arc::new(env);
        self
    }

    /// Resolves the settings, registers the self-metrics and starts the exporter's thread.
    /// The first collection happens one interval from now.
    pub fn install(self) -> Result<OtlpMetricsExporter, Error> {
        let env = self.env.clone();
        let settings = self.transport.resolve(Signal::Metrics, &*env)?;
        let interval = match self.interval {
            Some(i) => i,
            None => match env("OTEL_METRIC_EXPORT_INTERVAL").filter(|v| !v.trim().is_empty()) {
                None => Duration::from_secs(60),
                Some(v) => Duration::from_millis(v.trim().parse().map_err(|_| {
                    Error::Config(format!(
                        "OTEL_METRIC_EXPORT_INTERVAL={v:?} must be a whole number of milliseconds, like 60000"
                    ))
                })?),
            },
        }
        .max(Duration::from_millis(10));
        let temporality = match self.temporality {
            Some(t) => t,
            None => match env("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE")
                .filter(|v| !v.trim().is_empty())
            {
                None => Temporality::Cumulative,
                Some(v) => match v.trim().to_ascii_lowercase().as_str() {
                    "cumulative" => Temporality::Cumulative,
                    // Every sonde instrument is synchronous, so `lowmemory` selects what
                    // `delta` does.
                    "delta" | "lowmemory" => Temporality::Delta,
                    _ => {
                        return Err(Error::Config(format!(
                            "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE={v:?} is not supported; use cumulative, delta or lowmemory"
                        )));
                    }
                },
            },
        };
        let histograms = match self.histograms {
            Some(h) => h,
            None => match env("OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION")
                .filter(|v| !v.trim().is_empty())
            {
                None => HistogramAggregation::ExplicitBuckets,
                Some(v) => match v.trim() {
                    "explicit_bucket_histogram" => HistogramAggregation::ExplicitBuckets,
                    "base2_exponential_bucket_histogram" => HistogramAggregation::Exponential,
                    _ => {
                        return Err(Error::Config(format!(
                            "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION={v:?} is not supported; use explicit_bucket_histogram or base2_exponential_bucket_histogram"
                        )));
                    }
                },
            },
        };
        let resource = self
            .resource
            .unwrap_or_else(|| Resource::detect_from(&*env));
        let mut options = convert::Options::new(&resource);
        options.histograms = histograms;
        options.max_points = self.max_points_per_request;
        options.max_bytes = self.max_request_bytes;
        let mut reader = self.registry.reader(temporality);
        if temporality == Temporality::Delta {
            reader = reader.with_cumulative_kinds(&[Kind::UpDownCounter]);
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
            collector_wake: Notify::new(),
            sender_wake: Notify::new(),
            metrics: ExporterMetrics::register(&self.registry, EXPORTER),
            queue_capacity: self.queue_capacity,
            max_queue_bytes: self.max_queue_bytes,
        });
        shared.metrics.queue_size(0);
        let collector = Collector {
            shared: shared.clone(),
            reader,
            interval,
            options,
        };
        let sender = SenderConfig {
            timeout: settings.timeout,
            backoff: Backoff::new(self.initial_backoff, self.max_backoff),
            max_retry_time: self.max_retry_time,
        };
        let endpoint = settings.endpoint.clone();
        let (started_tx, started_rx) = std::sync::mpsc::channel::<Result<(), Error>>();
        let thread_shared = shared.clone();
        // Runtime and client are made on the exporter's thread, so nothing of them is ever
        // created or dropped on an application thread (which may be inside its own runtime).
        let thread = std::thread::Builder::new()
            .name("sonde-otlp".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = started_tx.send(Err(Error::Start(e)));
                        return;
                    }
                };
                let client = {
                    let _guard = rt.enter();
                    Client::new(&settings)
                };
                let client = match client {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                        return;
                    }
                };
                let _ = started_tx.send(Ok(()));
                rt.block_on(async move {
                    tokio::join!(collector.run(), sender_loop(thread_shared, client, sender));
                });
            })
            .map_err(Error::Start)?;
        match started_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(Error::Start(std::io::Error::other(
                    "the exporter thread stopped while starting",
                )));
            }
        }
        Ok(OtlpMetricsExporter {
            shared,
            endpoint,
            thread: Mutex::new(Some(thread)),
        })
    }
}

/// A running OTLP metrics exporter. Dropping it shuts it down, waiting up to
/// [`DROP_SHUTDOWN_TIMEOUT`] for the last collection to be delivered.
pub struct OtlpMetricsExporter {
    shared: Arc<Shared>,
    endpoint: String,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for OtlpMetricsExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.shared.lock();
        f.debug_struct("OtlpMetricsExporter")
            .field("endpoint", &self.endpoint)
            .field("queued", &st.queue.len())
            .field("stopped", &st.shutdown)
            .finish()
    }
}

impl sonde_core::Flush for OtlpMetricsExporter {
    fn force_flush(
        &self,
        timeout: Duration,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        OtlpMetricsExporter::force_flush(self, timeout).map_err(Into::into)
    }
}

impl OtlpMetricsExporter {
    /// Where requests go (for HTTP, the full URL).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Collects now and waits until that collection and everything queued before it has been
    /// delivered, or `timeout` has passed. Errors if something was dropped or rejected meanwhile
    /// (the error says why) or the deadline passed first. Blocks the calling thread.
    pub fn force_flush(&self, timeout: Duration) -> Result<(), Error> {
        let deadline = after(Instant::now(), timeout);
        let shared = &self.shared;
        let mut st = shared.lock();
        if st.shutdown {
            return Err(Error::Incomplete(
                "the exporter was shut down; install a new one".into(),
            ));
        }
        let failures_before = st.failures;
        st.collect_requests += 1;
        let wanted = st.collect_requests;
        shared.collector_wake.notify_one();
        st = shared.wait_until(st, deadline, |st| {
            st.collections_done >= wanted || st.collector_done
        });
        if st.collections_done < wanted {
            return Err(Error::Incomplete(format!(
                "the collection did not finish within {timeout:?}; give force_flush more time"
            )));
        }
        let target = st.last_enqueued;
        st = shared.wait_until(st, deadline, |st| st.delivered_through(target));
        if !st.delivered_through(target) {
            return Err(Error::Incomplete(format!(
                "{} requests were still waiting after {timeout:?}{}; give force_flush more time or check the receiver",
                st.pending(),
                st.last_error_suffix()
            )));
        }
        if st.failures > failures_before {
            return Err(Error::Incomplete(format!(
                "{} requests were dropped{}",
                st.failures - failures_before,
                st.last_error_suffix()
            )));
        }
        Ok(())
    }

    /// Collects one last time, delivers what is queued within `timeout`, and stops the thread.
    /// Requests still queued at the deadline are dropped (counted with reason `shutdown`).
    /// Errors like [`force_flush`](Self::force_flush); calling it again returns `Ok`.
    pub fn shutdown(&self, timeout: Duration) -> Result<(), Error> {
        let Some(thread) = self.thread.lock().ok().and_then(|mut t| t.take()) else {
            return Ok(());
        };
        let deadline = after(Instant::now(), timeout);
        let shared = &self.shared;
        let failures_before = {
            let mut st = shared.lock();
            st.shutdown = true;
            st.deadline = Some(deadline);
            st.failures
        };
        shared.collector_wake.notify_one();
        shared.sender_wake.notify_one();
        // Requests in flight are cut at the deadline; allow them a moment to return.
        let grace = after(deadline, Duration::from_millis(200));
        let st = shared.wait_until(shared.lock(), grace, |st| st.sender_done);
        let (done, failures, suffix) = (st.sender_done, st.failures, st.last_error_suffix());
        drop(st);
        if !done {
            return Err(Error::Incomplete(format!(
                "the exporter did not stop within {timeout:?}{suffix}"
            )));
        }
        let _ = thread.join();
        if failures > failures_before {
            return Err(Error::Incomplete(format!(
                "{} requests were dropped{suffix}",
                failures - failures_before
            )));
        }
        Ok(())
    }
}

impl Drop for OtlpMetricsExporter {
    fn drop(&mut self) {
        let _ = self.shutdown(DROP_SHUTDOWN_TIMEOUT);
    }
}

/// One encoded request.
struct Batch {
    id: u64,
    body: Bytes,
    points: u64,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Batch>,
    queued_bytes: usize,
    /// The batch being sent.
    in_flight: Option<u64>,
    /// Id of the last batch queued (ids start at 1).
    last_enqueued: u64,
    /// Collections asked for by `force_flush`, and how many of those were done.
    collect_requests: u64,
    collections_done: u64,
    /// Batches dropped for any reason, and the last error.
    failures: u64,
    last_error: Option<String>,
    shutdown: bool,
    deadline: Option<Instant>,
    collector_done: bool,
    sender_done: bool,
}

impl State {
    fn delivered_through(&self, id: u64) -> bool {
        self.in_flight.is_none_or(|f| f > id) && self.queue.front().is_none_or(|b| b.id > id)
    }

    fn pending(&self) -> usize {
        self.queue.len() + usize::from(self.in_flight.is_some())
    }

    fn last_error_suffix(&self) -> String {
        match &self.last_error {
            Some(e) => format!(" (last error: {e})"),
            None => String::new(),
        }
    }
}

struct Shared {
    state: Mutex<State>,
    /// Wakes application threads waiting in `force_flush`/`shutdown`.
    cv: Condvar,
    collector_wake: Notify,
    sender_wake: Notify,
    metrics: ExporterMetrics,
    queue_capacity: usize,
    max_queue_bytes: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait_until<'a>(
        &self,
        mut st: MutexGuard<'a, State>,
        deadline: Instant,
        done: impl Fn(&State) -> bool,
    ) -> MutexGuard<'a, State> {
        while !done(&st) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            st = self
                .cv
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        st
    }

    fn fail(&self, st: &mut State, reason: &str, points: u64, error: String) {
        st.failures += 1;
        st.last_error = Some(error);
        self.metrics.dropped(reason, points);
    }
}

struct Collector {
    shared: Arc<Shared>,
    reader: sonde_core::Reader,
    interval: Duration,
    options: convert::Options,
}

impl Collector {
    async fn run(mut self) {
        let shared = self.shared.clone();
        let mut next = after(Instant::now(), self.interval);
        loop {
            loop {
                let woken = shared.collector_wake.notified();
                {
                    let st = shared.lock();
                    if st.shutdown || st.collect_requests > st.collections_done {
                        break;
                    }
                }
                if Instant::now() >= next {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep_until(next.into()) => break,
                    _ = woken => {}
                }
            }
            let (last, requested) = {
                let st = shared.lock();
                (st.shutdown, st.collect_requests)
            };
            let now = Instant::now();
            if now >= next {
                next = after(next, self.interval);
                if next <= now {
                    next = after(now, self.interval);
                }
            }
            self.collect();
            let mut st = shared.lock();
            st.collections_done = requested;
            if last {
                st.collector_done = true;
            }
            drop(st);
            shared.cv.notify_all();
            shared.sender_wake.notify_one();
            if last {
                return;
            }
        }
    }

    /// Collects, converts and queues, dropping the oldest requests when the queue is full.
    fn collect(&mut self) {
        let snapshot = self.reader.collect();
        let requests = convert::encode(&snapshot, &self.options);
        drop(snapshot);
        let shared = &self.shared;
        let mut st = shared.lock();
        for r in requests {
            let body = Bytes::from(r.body);
            while !st.queue.is_empty()
                && (st.queue.len() >= shared.queue_capacity
                    || st.queued_bytes + body.len() > shared.max_queue_bytes)
            {
                let Some(old) = st.queue.pop_front() else {
                    break;
                };
                st.queued_bytes -= old.body.len();
                let msg = format!(
                    "the queue was full ({} requests, {} bytes), so the oldest was dropped; the receiver is down or slower than the collection interval",
                    shared.queue_capacity, shared.max_queue_bytes
                );
                shared.fail(&mut st, "queue_full", old.points, msg);
            }
            st.last_enqueued += 1;
            let id = st.last_enqueued;
            st.queued_bytes += body.len();
            st.queue.push_back(Batch {
                id,
                body,
                points: r.points,
            });
        }
        shared.metrics.queue_size(st.pending());
    }
}

struct SenderConfig {
    timeout: Duration,
    backoff: Backoff,
    max_retry_time: Duration,
}

async fn sender_loop(shared: Arc<Shared>, mut client: Client, mut cfg: SenderConfig) {
    loop {
        let batch = {
            let mut st = shared.lock();
            if st.deadline.is_some_and(|d| Instant::now() >= d) {
                while let Some(b) = st.queue.pop_front() {
                    st.queued_bytes -= b.body.len();
                    shared.fail(
                        &mut st,
                        "shutdown",
                        b.points,
                        "the shutdown deadline passed before the request was sent".into(),
                    );
                }
            }
            match st.queue.pop_front() {
                Some(b) => {
                    st.queued_bytes -= b.body.len();
                    st.in_flight = Some(b.id);
                    Some(b)
                }
                None if st.shutdown && st.collector_done => {
                    st.sender_done = true;
                    shared.metrics.queue_size(0);
                    drop(st);
                    shared.cv.notify_all();
                    return;
                }
                None => None,
            }
        };
        let Some(batch) = batch else {
            shared.sender_wake.notified().await;
            continue;
        };
        let result = send(&shared, &mut client, &mut cfg, &batch).await;
        let mut st = shared.lock();
        st.in_flight = None;
        if let Err((reason, error)) = result {
            shared.fail(&mut st, reason, batch.points, error);
        }
        shared.metrics.queue_size(st.pending());
        drop(st);
        shared.cv.notify_all();
    }
}

/// Sends one batch, retrying retryable answers; on failure, the drop reason and the error.
async fn send(
    shared: &Shared,
    client: &mut Client,
    cfg: &mut SenderConfig,
    batch: &Batch,
) -> Result<(), (&'static str, String)> {
    let started = Instant::now();
    let cut = |error: &str| {
        (
            "shutdown",
            format!("{error} (no time left to retry before the shutdown deadline)"),
        )
    };
    loop {
        let deadline = shared.lock().deadline;
        let mut timeout = cfg.timeout;
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err((
                    "shutdown",
                    "the shutdown deadline passed before the request was sent".into(),
                ));
            }
            timeout = timeout.min(left);
        }
        match client.send(&batch.body, timeout).await {
            Outcome::Success { rejected, message } => {
                shared.metrics.request(true);
                cfg.backoff.reset();
                if rejected > 0 {
                    shared.metrics.rejected(rejected);
                    shared.lock().last_error = Some(format!(
                        "the receiver rejected {rejected} data points: {message}"
                    ));
                }
                return Ok(());
            }
            Outcome::Fail(e) => {
                shared.metrics.request(false);
                return Err(("rejected", e));
            }
            Outcome::Retry {
                error,
                after: delay,
            } => {
                shared.metrics.request(false);
                let wait = match delay {
                    Some(d) => d,
                    None => cfg.backoff.next(None),
                };
                if started.elapsed() + wait > cfg.max_retry_time {
                    return Err((
                        "retries_exhausted",
                        format!(
                            "{error} (gave up after retrying for {:?})",
                            started.elapsed()
                        ),
                    ));
                }
                let until = after(Instant::now(), wait);
                loop {
                    let woken = shared.sender_wake.notified();
                    if shared.lock().deadline.is_some_and(|d| d <= until) {
                        return Err(cut(&error));
                    }
                    if Instant::now() >= until {
                        break;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep_until(until.into()) => break,
                        _ = woken => {}
                    }
                }
                shared.metrics.retry();
            }
        }
    }
}
