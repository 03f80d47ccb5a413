//! Prometheus remote write 1.0: snapshots pushed as snappy-compressed protobuf
//! `prometheus.WriteRequest`s to any compatible receiver (Prometheus with
//! `--web.enable-remote-write-receiver`, VictoriaMetrics, Mimir, Thanos receive...).
//!
//! Two threads of the exporter's own do the work, never the application's: a collector that reads
//! a snapshot every interval, converts it with the names and labels of the `/metrics` encoder
//! (counters `_total`, histograms `_bucket{le}`/`_sum`/`_count`, the resource as `target_info`)
//! and queues the requests; and a sender that posts them in order, retrying network errors, 5xx
//! and 429 with jittered exponential backoff (honouring `Retry-After`). The queue is bounded:
//! when full, the oldest request is dropped (the newest cumulative values supersede it) and its
//! samples are counted in `sonde_exporter_dropped_points_total{exporter="remote_write"}`.
//!
//! ```no_run
//! use std::time::Duration;
//! use sonde_core::Registry;
//! use sonde_prometheus::RemoteWriteBuilder;
//!
//! let registry = Registry::new();
//! let writer = RemoteWriteBuilder::new("http://127.0.0.1:9090/api/v1/write")
//!     .registry(registry.clone())
//!     .interval(Duration::from_secs(15))
//!     .external_label("job", "checkout")
//!     .install()?;
//! registry.counter("jobs.done").build()?.handle().inc();
//! // Deliver what was recorded, e.g. before exiting.
//! writer.shutdown(Duration::from_secs(5))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod convert;
pub(crate) mod http;

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sonde_core::{Registry, Resource, Temporality};

use crate::Error;
use http::{Backoff, Outcome};
pub use sonde_core::telemetry;
use sonde_core::telemetry::ExporterMetrics;
pub use sonde_core::telemetry::{DROPPED_POINTS, LAST_SUCCESS, QUEUE_SIZE, REQUESTS, RETRIES};

/// The `exporter` label of the self-metrics.
const EXPORTER: &str = "remote_write";

/// How long dropping a [`RemoteWriter`] waits for the last collection to be delivered.
pub const DROP_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);

/// Longer durations are treated as this (a century), so no deadline arithmetic overflows.
const LONGEST: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `now + d`, saturating at a century from now.
fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d.min(LONGEST)).unwrap_or(now)
}

/// The protocol's protobuf messages (`prometheus.WriteRequest` of remote write 1.0, field
/// numbers as in Prometheus's `prompb`), declared with prost.
pub mod pb {
    /// A request: series and, optionally, metadata.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        /// The series, each with its samples.
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
        /// Type, help and unit per metric family.
        #[prost(message, repeated, tag = "3")]
        pub metadata: Vec<MetricMetadata>,
    }

    /// One series: labels sorted by name, including `__name__`, and samples in time order.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        /// Labels, sorted by name.
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        /// Samples, oldest first.
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
    }

    /// A label pair.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        /// The name.
        #[prost(string, tag = "1")]
        pub name: String,
        /// The value.
        #[prost(string, tag = "2")]
        pub value: String,
    }

    /// A value at a time.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        /// The value.
        #[prost(double, tag = "1")]
        pub value: f64,
        /// Milliseconds since the Unix epoch.
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }

    /// Metadata of a metric family.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MetricMetadata {
        /// A [`MetricType`].
        #[prost(enumeration = "MetricType", tag = "1")]
        pub r#type: i32,
        /// The family name (a counter's with `_total`, as in the text format).
        #[prost(string, tag = "2")]
        pub metric_family_name: String,
        /// The description.
        #[prost(string, tag = "4")]
        pub help: String,
        /// The unit word (`seconds`, `bytes`...), or empty.
        #[prost(string, tag = "5")]
        pub unit: String,
    }

    /// Metric types of [`MetricMetadata`].
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum MetricType {
        /// Unknown.
        Unknown = 0,
        /// Counter.
        Counter = 1,
        /// Gauge.
        Gauge = 2,
        /// Histogram.
        Histogram = 3,
        /// Gauge histogram.
        Gaugehistogram = 4,
        /// Summary.
        Summary = 5,
        /// Info.
        Info = 6,
        /// State set.
        Stateset = 7,
    }
}

/// Decodes a remote write request body (snappy block format around a protobuf `WriteRequest`),
/// as a receiver would; `None` if it is not one. For tests and fake receivers.
pub fn decode_request(body: &[u8]) -> Option<pb::WriteRequest> {
    convert::decode(body)
}

/// Configures and starts a remote writer.
///
/// Defaults: the global registry, every 15 s, the resource from `OTEL_*` variables as
/// `target_info`, no external labels, 2000 series per request, a queue of 100 requests, 10
/// retries with backoff from 100 ms to 30 s, a 10 s request timeout, metadata sent.
#[must_use = "call .install() to start the remote writer"]
#[derive(Debug, Clone)]
pub struct RemoteWriteBuilder {
    url: String,
    registry: Registry,
    interval: Duration,
    resource: Option<Resource>,
    external_labels: Vec<(String, String)>,
    max_series_per_request: usize,
    queue_capacity: usize,
    max_retries: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    timeout: Duration,
    metadata: bool,
    headers: Vec<(String, String)>,
}

impl RemoteWriteBuilder {
    /// A writer to `url`, the receiver's endpoint (`http://host:9090/api/v1/write` for
    /// Prometheus, `http://host:8428/api/v1/write` for VictoriaMetrics).
    pub fn new(url: impl Into<String>) -> Self {
        RemoteWriteBuilder {
            url: url.into(),
            registry: Registry::global().clone(),
            interval: Duration::from_secs(15),
            resource: None,
            external_labels: Vec::new(),
            max_series_per_request: 2000,
            queue_capacity: 100,
            max_retries: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
            metadata: true,
            headers: Vec::new(),
        }
    }

    /// Exports this registry instead of the global one (the self-metrics go there too).
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = registry;
        self
    }

    /// Time between collections (default 15 s; at least 10 ms).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval.clamp(Duration::from_millis(10), LONGEST);
        self
    }

    /// The resource sent as `target_info` (default: [`Resource::from_env`]; an empty resource
    /// sends none).
    pub fn resource(mut self, resource: Resource) -> Self {
        self.resource = Some(resource);
        self
    }

    /// Adds a label to every series that does not have one of that name, like Prometheus's
    /// `external_labels` (`job`, `instance`, `cluster`...). Setting a name again replaces its
    /// value. Names must match `[a-zA-Z_][a-zA-Z0-9_]*` and not start with `__`.
    pub fn external_label(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let (name, value) = (name.into(), value.into());
        match self.external_labels.iter_mut().find(|(n, _)| *n == name) {
            Some(pair) => pair.1 = value,
            None => self.external_labels.push((name, value)),
        }
        self
    }

    /// Adds an HTTP header to every request (authentication, `X-Scope-OrgID` for Mimir...).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Requests waiting to be sent; past it the oldest is dropped (default 100, at least 1).
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n.max(1);
        self
    }

    /// Series per request; larger collections are split (default 2000, at least 1).
    pub fn max_series_per_request(mut self, n: usize) -> Self {
        self.max_series_per_request = n.max(1);
        self
    }

    /// Retries of a request after a network error, 5xx or 429 before it is dropped (default 10).
    /// Other 4xx are never retried.
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// The first and the largest delay between retries (default 100 ms and 30 s); each delay
    /// doubles, with jitter.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial.clamp(Duration::from_millis(1), LONGEST);
        self.max_backoff = max.clamp(self.initial_backoff, LONGEST);
        self
    }

    /// Time allowed for one request, connection included (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.clamp(Duration::from_millis(1), LONGEST);
        self
    }

    /// Whether to send type, help and unit metadata with the series (default true).
    pub fn metadata(mut self, on: bool) -> Self {
        self.metadata = on;
        self
    }

    /// Checks the settings, registers the self-metrics and starts the collector and sender
    /// threads. The first collection happens one interval from now.
    pub fn install(self) -> Result<RemoteWriter, Error> {
        http::check_url(&self.url, "http://127.0.0.1:9090/api/v1/write")?;
        let mut external_labels = self.external_labels;
        for (name, _) in &external_labels {
            if !valid_label_name(name) {
                return Err(Error::Config(format!(
                    "external label name {name:?} is invalid; use [a-zA-Z_][a-zA-Z0-9_]* not starting with __"
                )));
            }
        }
        external_labels.sort();
        for (name, value) in &self.headers {
            if ureq::http::HeaderName::from_bytes(name.as_bytes()).is_err()
                || ureq::http::HeaderValue::from_str(value).is_err()
            {
                return Err(Error::Config(format!(
                    "the HTTP header {name:?} is invalid; use a token name and a visible ASCII value"
                )));
            }
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
            metrics: ExporterMetrics::register(&self.registry, EXPORTER),
            queue_capacity: self.queue_capacity,
        });
        shared.metrics.queue_size(0);
        let collector = Collector {
            shared: shared.clone(),
            reader: self.registry.reader(Temporality::Cumulative),
            interval: self.interval,
            last_timestamp: 0,
            options: convert::Options {
                resource: self.resource.unwrap_or_else(Resource::from_env),
                external_labels,
                max_series_per_request: self.max_series_per_request,
                metadata: self.metadata,
            },
        };
        let sender = Sender {
            shared: shared.clone(),
            agent: http::agent(self.timeout),
            url: self.url.clone(),
            headers: self.headers,
            timeout: self.timeout,
            max_retries: self.max_retries,
            backoff: Backoff::new(self.initial_backoff, self.max_backoff),
        };
        let sender = std::thread::Builder::new()
            .name("sonde-remote-write-send".into())
            .spawn(move || sender.run())
            .map_err(Error::Start)?;
        let collector = match std::thread::Builder::new()
            .name("sonde-remote-write".into())
            .spawn(move || collector.run())
        {
            Ok(t) => t,
            Err(e) => {
                // Let the sender stop on its own.
                let mut st = shared.lock();
                st.shutdown = true;
                st.collector_done = true;
                drop(st);
                shared.cv.notify_all();
                return Err(Error::Start(e));
            }
        };
        Ok(RemoteWriter {
            shared,
            url: self.url,
            threads: Mutex::new(Some((collector, sender))),
        })
    }
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

/// A running remote writer. Dropping it shuts it down, waiting up to
/// [`DROP_SHUTDOWN_TIMEOUT`] for the last collection to be delivered.
pub struct RemoteWriter {
    shared: Arc<Shared>,
    url: String,
    threads: Mutex<Option<(JoinHandle<()>, JoinHandle<()>)>>,
}

impl sonde_core::Flush for RemoteWriter {
    fn force_flush(
        &self,
        timeout: Duration,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        RemoteWriter::force_flush(self, timeout).map_err(Into::into)
    }
}

impl std::fmt::Debug for RemoteWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.shared.lock();
        f.debug_struct("RemoteWriter")
            .field("url", &self.url)
            .field("queued", &st.queue.len())
            .field("stopped", &st.shutdown)
            .finish()
    }
}

impl RemoteWriter {
    /// The receiver's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Collects now and waits until that collection and everything queued before it has been
    /// delivered, or `timeout` has passed. Errors if something was dropped or rejected meanwhile
    /// (the error says why) or the deadline passed first.
    pub fn force_flush(&self, timeout: Duration) -> Result<(), Error> {
        let deadline = after(Instant::now(), timeout);
        let shared = &self.shared;
        let mut st = shared.lock();
        if st.shutdown {
            return Err(Error::Incomplete(
                "the remote writer was shut down; install a new one".into(),
            ));
        }
        let failures_before = st.failures;
        st.collect_requests += 1;
        let wanted = st.collect_requests;
        shared.cv.notify_all();
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

    /// Collects one last time, delivers what is queued within `timeout`, and stops the threads.
    /// Requests still queued at the deadline are dropped (counted with reason `shutdown`).
    /// Errors like [`force_flush`](Self::force_flush); calling it again returns `Ok`.
    pub fn shutdown(&self, timeout: Duration) -> Result<(), Error> {
        let Some((collector, sender)) = self.threads.lock().ok().and_then(|mut t| t.take()) else {
            return Ok(());
        };
        let deadline = after(Instant::now(), timeout);
        let shared = &self.shared;
        let failures_before = {
            let mut st = shared.lock();
            st.shutdown = true;
            st.deadline = Some(deadline);
            shared.cv.notify_all();
            st.failures
        };
        // The final collection waits for queue room at most until the deadline.
        let _ = collector.join();
        {
            // Even if the collector panicked, let the sender finish.
            let mut st = shared.lock();
            st.collector_done = true;
            shared.cv.notify_all();
        }
        // A request in flight at the deadline times out then; allow it a moment to return.
        let grace = after(deadline, Duration::from_millis(100));
        let st = shared.wait_until(shared.lock(), grace, |st| st.sender_done);
        let (done, failures, suffix) = (st.sender_done, st.failures, st.last_error_suffix());
        drop(st);
        if done {
            let _ = sender.join();
        } else {
            // Stuck in a request past the deadline: it ends at the request timeout on its own.
            return Err(Error::Incomplete(format!(
                "a request was still in flight after {timeout:?}{suffix}; it ends by itself at the request timeout"
            )));
        }
        if failures > failures_before {
            return Err(Error::Incomplete(format!(
                "{} requests were dropped{suffix}",
                failures - failures_before
            )));
        }
        Ok(())
    }
}

impl Drop for RemoteWriter {
    fn drop(&mut self) {
        let _ = self.shutdown(DROP_SHUTDOWN_TIMEOUT);
    }
}

/// One encoded request.
struct Batch {
    id: u64,
    body: Vec<u8>,
    samples: u64,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Batch>,
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
    /// Whether every batch up to `id` is resolved (delivered or dropped).
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
    cv: Condvar,
    metrics: ExporterMetrics,
    queue_capacity: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits on the condition variable until `done` or `deadline`.
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

    fn fail(&self, st: &mut State, reason: &str, samples: u64, error: String) {
        st.failures += 1;
        st.last_error = Some(error);
        self.metrics.dropped(reason, samples);
    }
}

struct Collector {
    shared: Arc<Shared>,
    reader: sonde_core::Reader,
    interval: Duration,
    options: convert::Options,
    last_timestamp: i64,
}

impl Collector {
    fn run(mut self) {
        let shared = self.shared.clone();
        let mut next = after(Instant::now(), self.interval);
        loop {
            let mut st = shared.lock();
            loop {
                if st.shutdown || st.collect_requests > st.collections_done {
                    break;
                }
                let now = Instant::now();
                if now >= next {
                    break;
                }
                st = shared
                    .cv
                    .wait_timeout(st, next - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            let last = st.shutdown;
            let requested = st.collect_requests;
            let shutdown_deadline = st.deadline;
            drop(st);
            let now = Instant::now();
            if now >= next {
                next = after(next, self.interval);
                if next <= now {
                    next = after(now, self.interval);
                }
            }
            let room_deadline = match shutdown_deadline {
                Some(d) if last => d,
                _ => next,
            };
            self.collect(room_deadline);
            let mut st = shared.lock();
            st.collections_done = requested;
            if last {
                st.collector_done = true;
            }
            drop(st);
            shared.cv.notify_all();
            if last {
                return;
            }
        }
    }

    /// Collects, converts and queues. When the queue is full, waits for the sender to make
    /// room until `room_deadline` (the next tick, or the shutdown deadline), then drops the
    /// oldest request: a large collection split into more requests than the queue holds is
    /// not lost while the receiver keeps up.
    fn collect(&mut self, room_deadline: Instant) {
        let snapshot = self.reader.collect();
        // Strictly increasing per collection: a receiver rejects a whole request holding a
        // second, different value at a timestamp it already has.
        let timestamp = convert::timestamp_ms(&snapshot).max(self.last_timestamp + 1);
        self.last_timestamp = timestamp;
        let requests = convert::write_requests(&snapshot, timestamp, &self.options);
        drop(snapshot);
        let shared = &self.shared;
        for r in requests {
            let samples: u64 = r.timeseries.iter().map(|t| t.samples.len() as u64).sum();
            let body = match convert::encode(&r) {
                Ok(body) => body,
                Err(e) => {
                    let mut st = shared.lock();
                    shared.fail(
                        &mut st,
                        "encode",
                        samples,
                        format!("could not compress a request: {e}; lower max_series_per_request"),
                    );
                    continue;
                }
            };
            drop(r);
            let capacity = shared.queue_capacity;
            let mut st =
                shared.wait_until(shared.lock(), room_deadline, |st| st.queue.len() < capacity);
            if st.queue.len() >= capacity
                && let Some(old) = st.queue.pop_front()
            {
                let msg = format!(
                    "the queue was full ({capacity} requests), so the oldest was dropped; the receiver is down or slower than the collection interval"
                );
                shared.fail(&mut st, "queue_full", old.samples, msg);
            }
            st.last_enqueued += 1;
            let id = st.last_enqueued;
            st.queue.push_back(Batch { id, body, samples });
            shared.metrics.queue_size(st.pending());
            drop(st);
            shared.cv.notify_all();
        }
    }
}

struct Sender {
    shared: Arc<Shared>,
    agent: ureq::Agent,
    url: String,
    headers: Vec<(String, String)>,
    timeout: Duration,
    max_retries: u32,
    backoff: Backoff,
}

impl Sender {
    fn run(mut self) {
        let shared = self.shared.clone();
        loop {
            let mut st = shared.lock();
            loop {
                if !st.queue.is_empty() || (st.shutdown && st.collector_done) {
                    break;
                }
                st = shared.cv.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            if st.deadline.is_some_and(|d| Instant::now() >= d) {
                // Out of time: what is left is dropped.
                while let Some(b) = st.queue.pop_front() {
                    shared.fail(
                        &mut st,
                        "shutdown",
                        b.samples,
                        "the shutdown deadline passed before the request was sent".into(),
                    );
                }
            }
            let Some(batch) = st.queue.pop_front() else {
                // Empty, shut down and the final collection is queued: done.
                st.sender_done = true;
                shared.metrics.queue_size(0);
                drop(st);
                shared.cv.notify_all();
                return;
            };
            st.in_flight = Some(batch.id);
            drop(st);
            // Room in the queue for a waiting collector.
            shared.cv.notify_all();
            let result = self.send(&batch);
            let mut st = shared.lock();
            st.in_flight = None;
            if let Err((reason, error)) = result {
                shared.fail(&mut st, reason, batch.samples, error);
            }
            shared.metrics.queue_size(st.pending());
            drop(st);
            shared.cv.notify_all();
        }
    }

    /// Sends one batch with retries; on failure, the drop reason and the error.
    fn send(&mut self, batch: &Batch) -> Result<(), (&'static str, String)> {
        let shared = self.shared.clone();
        let mut attempt = 0u32;
        loop {
            let deadline = shared.lock().deadline;
            let mut timeout = self.timeout;
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
            let mut request = self
                .agent
                .post(&self.url)
                .config()
                .timeout_global(Some(timeout))
                .build()
                .header("Content-Encoding", "snappy")
                .header("Content-Type", "application/x-protobuf")
                .header("X-Prometheus-Remote-Write-Version", "0.1.0");
            for (k, v) in &self.headers {
                request = request.header(k.as_str(), v.as_str());
            }
            let result = request.send(&batch.body[..]);
            match http::outcome(&self.url, result, hint) {
                Outcome::Success => {
                    shared.metrics.request(true);
                    self.backoff.reset();
                    return Ok(());
                }
                Outcome::Fail(e) => {
                    shared.metrics.request(false);
                    return Err(("rejected", e.to_string()));
                }
                Outcome::Retry { error, retry_after } => {
                    shared.metrics.request(false);
                    if attempt >= self.max_retries {
                        return Err((
                            "retries_exhausted",
                            format!("{error} (gave up after {} retries)", self.max_retries),
                        ));
                    }
                    let wait = self.backoff.next(retry_after);
                    let until = after(Instant::now(), wait);
                    if deadline.is_some_and(|d| until >= d) {
                        return Err((
                            "shutdown",
                            format!("{error} (no time left to retry before the shutdown deadline)"),
                        ));
                    }
                    // Sleep, but wake for a shutdown whose deadline comes before the retry.
                    let st = shared.wait_until(shared.lock(), until, |st| {
                        st.deadline.is_some_and(|d| d <= until)
                    });
                    let cut = st.deadline.is_some_and(|d| d <= until);
                    drop(st);
                    if cut {
                        return Err((
                            "shutdown",
                            format!("{error} (no time left to retry before the shutdown deadline)"),
                        ));
                    }
                    attempt += 1;
                    shared.metrics.retry();
                }
            }
        }
    }
}

fn hint(status: u16) -> &'static str {
    match status {
        404 | 405 => {
            "check the URL path (/api/v1/write for Prometheus and VictoriaMetrics, /api/v1/push for Mimir) and, for Prometheus, that it runs with --web.enable-remote-write-receiver"
        }
        401 | 403 => "the receiver wants credentials: add them with RemoteWriteBuilder::header",
        413 => "the request is too large for the receiver: lower max_series_per_request",
        400 | 422 => {
            "the receiver rejected the samples (out of order, duplicate or invalid series); they were dropped"
        }
        429 => "the receiver is rate limiting; requests are retried with backoff",
        s if s >= 500 => "the receiver failed; requests are retried with backoff",
        _ => "check the URL and the receiver's logs",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn writer_is_send_and_sync() {
        assert_send_sync::<RemoteWriter>();
    }

    #[test]
    fn invalid_settings_are_errors_that_say_what_to_do() {
        let err = |b: RemoteWriteBuilder| b.registry(Registry::new()).install().unwrap_err();
        let e = err(RemoteWriteBuilder::new("localhost:9090/api/v1/write"));
        assert!(
            e.to_string().contains("http://127.0.0.1:9090/api/v1/write"),
            "{e}"
        );
        let e = err(RemoteWriteBuilder::new("http://127.0.0.1:1/w").external_label("__x", "v"));
        assert!(e.to_string().contains("external label name \"__x\""), "{e}");
        assert!(matches!(
            err(RemoteWriteBuilder::new("http://127.0.0.1:1/w").external_label("a-b", "v")),
            Error::Config(_)
        ));
        let e = err(RemoteWriteBuilder::new("http://127.0.0.1:1/w").header("bad header", "v"));
        assert!(e.to_string().contains("HTTP header"), "{e}");
    }

    #[test]
    fn extreme_durations_do_not_panic() {
        let writer = RemoteWriteBuilder::new("http://127.0.0.1:9/api/v1/write")
            .registry(Registry::new())
            .interval(Duration::MAX)
            .backoff(Duration::MAX, Duration::MAX)
            .timeout(Duration::MAX)
            .install()
            .unwrap();
        let _ = writer.force_flush(Duration::ZERO);
        let start = Instant::now();
        let _ = writer.shutdown(Duration::ZERO);
        assert!(start.elapsed() < Duration::from_secs(5));
        let b = RemoteWriteBuilder::new("http://h/").interval(Duration::ZERO);
        assert_eq!(b.interval, Duration::from_millis(10));
    }

    #[test]
    fn shutdown_without_a_receiver_is_bounded() {
        // A port nobody listens on: the final collection cannot be delivered.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let reg = Registry::new();
        let writer = RemoteWriteBuilder::new(format!("http://127.0.0.1:{port}/api/v1/write"))
            .registry(reg.clone())
            .resource(Resource::empty())
            .interval(Duration::from_secs(3600))
            .backoff(Duration::from_millis(5), Duration::from_millis(10))
            .max_retries(2)
            .install()
            .unwrap();
        let start = Instant::now();
        let e = writer.force_flush(Duration::from_secs(5)).unwrap_err();
        assert!(e.to_string().contains("dropped"), "{e}");
        assert!(e.to_string().contains("gave up after 2 retries"), "{e}");
        assert!(writer.shutdown(Duration::from_secs(5)).is_err());
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(writer.shutdown(Duration::from_secs(5)).is_ok());
        let dropped = reg
            .snapshot()
            .point(
                DROPPED_POINTS,
                &[
                    ("exporter", "remote_write"),
                    ("reason", "retries_exhausted"),
                ],
            )
            .and_then(|p| p.number())
            .map(|n| n.as_f64())
            .unwrap_or(0.0);
        assert!(dropped > 0.0);
    }
}
