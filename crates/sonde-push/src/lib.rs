//! The delivery engine of sonde's push exporters (OTLP metrics, CloudWatch PutMetricData,
//! Prometheus remote write): one thread with its own Tokio runtime, never the application's,
//! running
//!
//! - a collector that asks a [`Source`] for batches every interval (the first tick optionally
//!   jittered, so a fleet started together does not push in step) and queues them;
//! - a sender that hands batches in order to a [`Sink`], retrying what the sink calls
//!   retryable with jittered exponential backoff (or the server's delay) for up to a maximum
//!   time per batch;
//! - a bounded queue (batches and bytes) that drops the oldest batch when full, or, with
//!   [`PushConfig::durable`], a bounded queue on disk ([`disk`]) that survives restarts and
//!   outages longer than memory allows;
//! - [`PushExporter::flush`] and [`PushExporter::shutdown`], which deliver everything
//!   pending within a deadline, blocking only the caller (also as [`sonde_core::Component`],
//!   the lifecycle every sonde source and exporter shares).
//!
//! Every outcome is counted in the exporter self-metrics of [`telemetry`], which every push
//! exporter shares, as do the CloudWatch EMF writer (which writes when called, on the caller's
//! thread, not on this engine) and the Pushgateway client's retries (through
//! [`telemetry::Backoff`]).
//!
//! ```
//! use std::time::Duration;
//! use sonde_push::{Outcome, PushConfig, Sink, Source};
//!
//! struct Numbers(u64);
//! impl Source for Numbers {
//!     type Batch = Vec<u64>;
//!     fn collect(&mut self) -> Vec<Vec<u64>> {
//!         self.0 += 1;
//!         vec![vec![self.0]]
//!     }
//! }
//! struct Print;
//! impl Sink for Print {
//!     type Batch = Vec<u64>;
//!     async fn send(&mut self, batch: &Vec<u64>, _timeout: Duration) -> Outcome {
//!         println!("{batch:?}");
//!         Outcome::Success { rejected: 0, message: String::new() }
//!     }
//! }
//! let registry = sonde_core::Registry::new();
//! let exporter = sonde_push::start(&registry, PushConfig::new("example"), Numbers(0), || async { Ok::<_, std::io::Error>(Print) })?;
//! exporter.flush(Duration::from_secs(1))?;
//! exporter.shutdown(Duration::from_secs(1))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use sonde_core::Registry;
use sonde_core::diag::{self, RateLimit};
use telemetry::{Backoff, ExporterMetrics};

pub mod disk;
pub mod telemetry;
use disk::{DiskMetrics, DiskQueue};
pub use disk::{DiskQueueConfig, Fsync, QueueError, QueueSettings};
use tokio::sync::Notify;

/// Longer durations are treated as this (a century), so no deadline arithmetic overflows.
const LONGEST: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `now + d`, saturating: never panics, and a delay too long to represent still lies far ahead
/// (a day, at worst) rather than collapsing to `now`.
fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d.min(LONGEST))
        .or_else(|| now.checked_add(d.min(Duration::from_secs(24 * 3600))))
        .unwrap_or(now)
}

/// The longest delay a peer may impose (HTTP `Retry-After`, gRPC `RetryInfo`): longer ones are
/// treated as this, so a broken or hostile answer can neither overflow the engine's deadline
/// arithmetic nor park a batch for years. A delay past the batch's remaining retry time drops
/// the batch (`retries_exhausted`) and delivery moves on to the next one.
pub const MAX_PEER_DELAY: Duration = Duration::from_secs(3600);

/// A delay requested by a peer, clamped to [`MAX_PEER_DELAY`]. Every transport passes the
/// server's delay through here; the engine clamps again, so a sink that forgets cannot hurt it.
pub fn peer_delay(d: Duration) -> Duration {
    d.min(MAX_PEER_DELAY)
}

/// Parses an HTTP `Retry-After` value (RFC 9110 10.2.3): delay-seconds, however many digits
/// (too large clamps to [`MAX_PEER_DELAY`]), or an HTTP-date (a date in the past is no delay).
/// `None` for anything else, so the sender's own backoff applies.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    parse_retry_after_at(value, SystemTime::now())
}

fn parse_retry_after_at(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // More digits than a u64 holds is still "a very long time", not garbage.
        let secs = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(peer_delay(Duration::from_secs(secs)));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(peer_delay(
        date.duration_since(now).unwrap_or(Duration::ZERO),
    ))
}

/// The text of a panic's payload, for the log line.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "a non-string panic payload"
    }
}

/// Polls a future inside `catch_unwind`, so a panicking sink fails one attempt instead of the
/// exporter's thread. The inner future is not polled again after it panicked.
struct CatchUnwind<F>(F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn std::any::Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| Pin::new(inner).poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

/// Errors of the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The exporter's thread or runtime could not start.
    #[error("could not start the exporter thread: {0}")]
    Start(#[source] std::io::Error),
    /// Not everything was delivered by the deadline, or some data was dropped; the message
    /// says what and why.
    #[error("{0}")]
    Incomplete(String),
    /// The durable queue could not be opened.
    #[error(transparent)]
    Queue(#[from] QueueError),
}

impl Error {
    /// What an exporter's own error keeps of this one: `Ok` with the cause when the thread or
    /// runtime could not start ([`Error::Start`]), `Err` with the message of anything else
    /// (something not delivered, a queue that did not open).
    pub fn start_or_message(self) -> Result<std::io::Error, String> {
        match self {
            Error::Start(e) => Ok(e),
            other => Err(other.to_string()),
        }
    }

    /// This error as an exporter's own ([`ExporterError`]).
    pub fn into_exporter<E: ExporterError>(self) -> E {
        self.start_or_message().map_or_else(E::INCOMPLETE, E::START)
    }
}

/// An exporter's own error type, which keeps the engine's errors as every push exporter does:
/// a thread or runtime that could not start stays a start failure; anything else (something
/// not delivered, a queue that did not open) becomes its message.
pub trait ExporterError: Sized {
    /// The variant of a thread or runtime that could not start.
    const START: fn(std::io::Error) -> Self;
    /// The variant of anything else, with the message.
    const INCOMPLETE: fn(String) -> Self;
}

/// What a batch is worth, for the queue's limits and the drop counters.
pub trait Batch: Send + 'static {
    /// Data points it carries.
    fn points(&self) -> u64;
    /// Bytes it holds in memory.
    fn bytes(&self) -> usize;
    /// Whether [`encode`](Self::encode) and [`decode`](Self::decode) are implemented, so the
    /// batches can go through a durable queue.
    const DURABLE: bool = false;
    /// Appends the batch's bytes for the durable queue (its point count is stored beside).
    fn encode(&self, _out: &mut Vec<u8>) {}
    /// The batch [`encode`](Self::encode) wrote, or `None` if the bytes are not one.
    fn decode(_bytes: Vec<u8>, _points: u64) -> Option<Self>
    where
        Self: Sized,
    {
        None
    }
}

impl Batch for Vec<u64> {
    fn points(&self) -> u64 {
        self.len() as u64
    }
    fn bytes(&self) -> usize {
        self.len() * 8
    }
    const DURABLE: bool = true;
    fn encode(&self, out: &mut Vec<u8>) {
        for v in self {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    fn decode(bytes: Vec<u8>, _points: u64) -> Option<Self> {
        if !bytes.len().is_multiple_of(8) {
            return None;
        }
        Some(
            bytes
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
                .collect(),
        )
    }
}

/// A request already encoded for the wire (an OTLP or remote-write body) with the data points
/// it carries: the batch of exporters that encode at collection time. It can go through a
/// durable queue as it is.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// The request body.
    pub body: bytes::Bytes,
    /// Data points in it.
    pub points: u64,
}

impl Batch for Encoded {
    fn points(&self) -> u64 {
        self.points
    }
    fn bytes(&self) -> usize {
        self.body.len()
    }
    const DURABLE: bool = true;
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.body);
    }
    fn decode(bytes: Vec<u8>, points: u64) -> Option<Self> {
        Some(Encoded {
            body: bytes.into(),
            points,
        })
    }
}

/// Produces the batches of one collection. Runs on the exporter's thread.
pub trait Source: Send + 'static {
    /// The batch type.
    type Batch: Batch;
    /// Reads the registry and converts it, already split into batches a sink accepts.
    fn collect(&mut self) -> Vec<Self::Batch>;
    /// Points the source left out in the last collection (invalid values...), by reason, to
    /// count as dropped.
    fn take_dropped(&mut self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Accepted; `rejected` points were refused by the receiver (partial success).
    Success {
        /// Points the receiver refused.
        rejected: u64,
        /// Its explanation.
        message: String,
    },
    /// Worth retrying, after the server's delay when it gave one.
    Retry {
        /// What happened.
        error: String,
        /// The server's requested delay.
        after: Option<Duration>,
    },
    /// Not worth retrying; the batch is dropped (reason `rejected`).
    Fail(String),
}

/// Delivers batches. Runs on the exporter's runtime.
pub trait Sink: Send + 'static {
    /// The batch type.
    type Batch: Batch;
    /// Sends one batch once, within `timeout`.
    fn send(
        &mut self,
        batch: &Self::Batch,
        timeout: Duration,
    ) -> impl Future<Output = Outcome> + Send;
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct PushConfig {
    /// The `exporter` label of the self-metrics, and the thread's name suffix.
    pub name: &'static str,
    /// Time between collections.
    pub interval: Duration,
    /// Draw the first collection uniformly in `[interval/10, interval)` instead of at
    /// `interval`, so processes started together spread their pushes.
    pub jitter_first: bool,
    /// How long one attempt may take.
    pub timeout: Duration,
    /// Most batches waiting.
    pub queue_capacity: usize,
    /// Most bytes waiting.
    pub max_queue_bytes: usize,
    /// First retry delay.
    pub initial_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
    /// How long one batch is retried before it is dropped (reason `retries_exhausted`).
    pub max_retry_time: Duration,
    /// At most this many retries per batch, if set (also `retries_exhausted`).
    pub max_retries: Option<u32>,
    /// Queue batches on disk instead of in memory: they survive a restart or a crash and an
    /// outage as long as the queue's size cap allows. Batches are then retried until they are
    /// delivered or pushed out by the cap (`max_retry_time` and `max_retries` do not apply,
    /// nor `queue_capacity` and `max_queue_bytes`); a request the receiver refuses as not
    /// retryable is still dropped. What is left at shutdown stays on disk for the next start.
    pub durable: Option<DiskQueueConfig>,
}

impl PushConfig {
    /// Defaults: 60 s interval, 10 s timeout, 256 batches or 64 MiB queued, backoff 500 ms to
    /// 5 s, retried for up to 5 minutes.
    pub fn new(name: &'static str) -> Self {
        PushConfig {
            name,
            interval: Duration::from_secs(60),
            jitter_first: false,
            timeout: Duration::from_secs(10),
            queue_capacity: 256,
            max_queue_bytes: 64 * 1024 * 1024,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(5),
            max_retry_time: Duration::from_secs(300),
            max_retries: None,
            durable: None,
        }
    }
}

/// A backoff from the builders' `backoff(initial, max)`, made safe: `initial` from 1 ms and
/// `max` from `initial`, both at most a hundred years (so `Duration::MAX` cannot overflow a
/// deadline).
pub fn clamp_backoff(initial: Duration, max: Duration) -> (Duration, Duration) {
    const LONGEST: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    let initial = initial.clamp(Duration::from_millis(1), LONGEST);
    (initial, max.clamp(initial, LONGEST))
}

/// Writes the delivery setters every push exporter's builder offers, on its [`PushConfig`]
/// field `$field`, so they are named, documented and behave alike everywhere:
/// `durable_queue`, `backoff`, `max_retry_time` and `max_retries`. The builder sets its own
/// defaults in that field and names them for the docs (`backoff: "500 ms to 5 s"`).
#[macro_export]
macro_rules! delivery_setters {
    ($field:ident, backoff: $backoff:literal, retries: $retries:literal) => {
        /// Queues requests on disk instead of in memory: they survive a restart, a crash
        /// (`kill -9`) and an outage of the receiver up to the queue's `max_bytes`, past which
        /// the oldest are dropped (counted in `sonde.exporter.dropped_points` with reason
        /// `queue_full`). Requests are then retried until delivered (the retry limits do not
        /// apply); one in flight at a crash is sent again at the next start (counted in
        /// `sonde.exporter.queue.redelivered_points`). Give each exporter its own directory.
        /// Layout and fsync policy: the `sonde_push::disk` module.
        pub fn durable_queue(mut self, queue: $crate::DiskQueueConfig) -> Self {
            self.$field.durable = Some(queue);
            self
        }

        /// Backoff between retries: from `initial` doubling up to `max`, each delay drawn with
        /// jitter; a server's `Retry-After` (or gRPC `RetryInfo`) replaces the drawn delay,
        /// clamped.
        #[doc = concat!("Default: ", $backoff, ".")]
        pub fn backoff(mut self, initial: std::time::Duration, max: std::time::Duration) -> Self {
            (self.$field.initial_backoff, self.$field.max_backoff) =
                $crate::clamp_backoff(initial, max);
            self
        }

        /// How long one request is retried before it is dropped (default 5 min; counted with
        /// reason `retries_exhausted`). Later requests wait behind it, queued, so an outage
        /// shorter than this loses nothing.
        pub fn max_retry_time(mut self, d: std::time::Duration) -> Self {
            self.$field.max_retry_time = d;
            self
        }

        /// At most `n` retries per request, within [`max_retry_time`](Self::max_retry_time);
        /// `0` sends each request once. Only failures worth another try are retried: network
        /// errors, 5xx, 429 (and their gRPC equivalents).
        #[doc = concat!("Default: ", $retries, ".")]
        pub fn max_retries(mut self, n: u32) -> Self {
            self.$field.max_retries = Some(n);
            self
        }
    };
}

/// What the builders of the OTLP and CloudWatch exporters share, for code that sets either up
/// the same way: what it reads, the resource, a durable queue, and the start. Each builder's
/// inherent methods of the same names do the work ([`push_builder!`] writes the impl). The
/// remote-write builder is not one: it has no deltas to continue, so no `read_settings`.
pub trait PushBuilder: Sized {
    /// The running exporter's handle.
    type Exporter;
    /// Why it did not start.
    type Error: std::fmt::Display;
    /// The registry, selection and deltas to continue.
    fn read_settings(self, read: ReadSettings) -> Self;
    /// The resource the exporter sends its series with.
    fn resource(self, resource: sonde_core::Resource) -> Self;
    /// Queues requests on disk instead of in memory.
    fn durable_queue(self, queue: DiskQueueConfig) -> Self;
    /// Starts the exporter.
    fn install(self) -> Result<Self::Exporter, Self::Error>;
}

/// Implements [`PushBuilder`] for `$builder` by its inherent `read_settings` (from
/// [`read_setters!`]), `resource`, `durable_queue` (from [`delivery_setters!`]) and
/// `install`, which starts `$exporter` or fails with `$error`; and [`ExporterError`] for
/// `$error` by its variants `Start(std::io::Error)` and `Incomplete(String)`, which every push
/// exporter's error has. `push_builder!(error: E)` implements only the latter.
///
/// The builder must have all four inherent methods: a missing one would resolve to the trait's
/// own method and call itself.
#[macro_export]
macro_rules! push_builder {
    (error: $error:ident) => {
        /// The engine's errors, kept as every push exporter keeps them.
        impl $crate::ExporterError for $error {
            const START: fn(std::io::Error) -> Self = $error::Start;
            const INCOMPLETE: fn(String) -> Self = $error::Incomplete;
        }
    };
    ($builder:ty => $exporter:ty, error: $error:ident) => {
        $crate::push_builder!(error: $error);

        // `<$builder>::name` is the inherent method: inherent items come first.
        impl $crate::PushBuilder for $builder {
            type Exporter = $exporter;
            type Error = $error;

            fn read_settings(self, read: $crate::ReadSettings) -> Self {
                <$builder>::read_settings(self, read)
            }

            fn resource(self, resource: $crate::__sonde_core::Resource) -> Self {
                <$builder>::resource(self, resource)
            }

            fn durable_queue(self, queue: $crate::DiskQueueConfig) -> Self {
                <$builder>::durable_queue(self, queue)
            }

            fn install(self) -> Result<$exporter, $error> {
                <$builder>::install(self)
            }
        }
    };
}

/// What a push exporter reads, as its builder collects it: the registry, the selection of
/// metrics and series, and the deltas of the exporter it replaces. Builders offer its setters
/// through [`read_setters!`].
#[derive(Debug, Clone)]
pub struct ReadSettings {
    /// The registry to read, where the self-metrics go too (default: the global one).
    pub registry: Registry,
    /// Which metrics and series to send, and which labels to keep (default: everything).
    pub selection: sonde_core::Selection,
    /// The deltas of the exporter this one replaces, continued by a delta reader.
    pub continue_deltas: Option<sonde_core::DeltaState>,
}

impl Default for ReadSettings {
    /// The global registry, everything in it, no deltas to continue.
    fn default() -> Self {
        ReadSettings {
            registry: Registry::global().clone(),
            selection: sonde_core::Selection::new(),
            continue_deltas: None,
        }
    }
}

impl ReadSettings {
    /// The reader of an exporter with `temporality` (see [`Registry::export_reader`]).
    pub fn reader(&self, temporality: sonde_core::Temporality) -> sonde_core::Reader {
        self.registry.export_reader(
            temporality,
            self.selection.clone(),
            self.continue_deltas.as_ref(),
        )
    }
}

/// Writes the setters of the [`ReadSettings`] field `$field` of a push exporter's builder:
/// `read_settings` (all at once), `registry`, `selection` and `continue_deltas`, named, documented and behaving alike
/// everywhere. `delta_state` names, for the docs, the method of the built exporter that
/// gives the state to continue (`"EmfWriter::delta_state"`).
#[macro_export]
macro_rules! read_setters {
    ($field:ident, delta_state: $delta_state:literal) => {
        /// The registry, selection and deltas to continue, all at once (what [`registry`](Self::registry),
        /// [`selection`](Self::selection) and [`continue_deltas`](Self::continue_deltas) set one by one).
        pub fn read_settings(mut self, read: $crate::ReadSettings) -> Self {
            self.$field = read;
            self
        }

        /// The registry to export (default: the global one); the self-metrics go there too.
        pub fn registry(mut self, registry: $crate::__sonde_core::Registry) -> Self {
            self.$field.registry = registry;
            self
        }

        /// Which metrics and series to send, and which labels to keep
        /// ([`sonde_core::Selection`]; default: everything).
        pub fn selection(mut self, selection: $crate::__sonde_core::Selection) -> Self {
            self.$field.selection = selection;
            self
        }

        #[doc = concat!(
            "With delta temporality, continues the deltas of the exporter or writer this one ",
            "replaces (its [`", $delta_state, "`]): each change goes out once, by one of the ",
            "two, instead of this one's first export (or write) repeating every counter's total."
        )]
        pub fn continue_deltas(mut self, state: $crate::__sonde_core::DeltaState) -> Self {
            self.$field.continue_deltas = Some(state);
            self
        }
    };
}

/// The plain-setter macro every builder uses, from `sonde-core` (kept at this path).
pub use sonde_core::builder_setters;

/// Sets `name` to `value` in a list of label pairs (a Pushgateway grouping key, remote
/// write's external labels): a name set again keeps its place and takes the new value.
pub fn set_label(labels: &mut Vec<(String, String)>, name: String, value: String) {
    match labels.iter_mut().find(|(n, _)| *n == name) {
        Some(pair) => pair.1 = value,
        None => labels.push((name, value)),
    }
}

/// `error: cause: cause...`, for messages about transport errors whose `Display` hides the
/// cause (connection refused, TLS, DNS).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// Whether `url` is an absolute `http://` or `https://` URL with a host: what every push
/// exporter's endpoint must be.
pub fn is_http_url(url: &str) -> bool {
    url.parse::<http::Uri>()
        .is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some())
}

// Where every component's `Debug` finds them (settings fields); re-exported for the push
// exporters' logs and errors.
pub use sonde_settings::redact::{REDACTED, redact_url, redacted_headers};

/// Failures and drops are logged at most once per this period, with the count since.
pub const LOG_PERIOD: Duration = Duration::from_secs(60);

/// The tail of a rate-limited line: how many occurrences it stands for.
fn held_back(n: u64, what: &str) -> String {
    if n > 1 {
        format!(" ({n} {what} since the last report)")
    } else {
        " (repeats are reported at most once a minute)".to_owned()
    }
}

/// How long dropping a [`PushExporter`] waits for the last collection to be delivered.
pub const DROP_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);

/// Starts the engine: registers the self-metrics in `registry`, then on a new thread builds a
/// current-thread runtime and, on it, the sink with the future `make_sink` returns (so clients
/// that register with a runtime, or load their configuration asynchronously, find this one).
/// Returns once the sink is built, or its error.
pub fn start<S, K, E, F>(
    registry: &Registry,
    config: PushConfig,
    source: S,
    make_sink: impl FnOnce() -> F + Send + 'static,
) -> Result<PushExporter, StartError<E>>
where
    S: Source,
    K: Sink<Batch = S::Batch>,
    E: Send + 'static,
    F: Future<Output = Result<K, E>>,
{
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        cv: Condvar::new(),
        collector_wake: Notify::new(),
        room: Notify::new(),
        sender_wake: Notify::new(),
        metrics: ExporterMetrics::register(registry, config.name),
        queue_capacity: config.queue_capacity.max(1),
        max_queue_bytes: config.max_queue_bytes.max(1),
        failed_attempts: AtomicU64::new(0),
        failure_log: RateLimit::new(LOG_PERIOD),
        drop_log: RateLimit::new(LOG_PERIOD),
        panic_log: RateLimit::new(LOG_PERIOD),
    });
    let mut durable = false;
    if let Some(cfg) = &config.durable {
        if !S::Batch::DURABLE {
            return Err(StartError::Start(Error::Queue(QueueError::Unsupported(
                config.name,
            ))));
        }
        let queue = DiskQueue::open(
            cfg,
            config.name,
            DiskMetrics::register(registry, config.name),
        )
        .map_err(|e| StartError::Start(e.into()))?;
        let mut st = shared.lock();
        st.last_enqueued = queue.last_id();
        st.disk = Some(queue);
        durable = true;
    }
    shared.metrics.queue_size(shared.lock().pending());
    let interval = config.interval.max(Duration::from_millis(10));
    shared.metrics.interval(interval);
    let mut backoff = Backoff::new(config.initial_backoff, config.max_backoff);
    let first = if config.jitter_first {
        // A draw in [0.5, 1) of the backoff's jitter, stretched to [0.1, 1).
        let f = backoff.next(None).as_secs_f64() / config.initial_backoff.as_secs_f64().max(1e-9);
        interval.mul_f64((0.1 + 0.9 * (f - 0.5) * 2.0).clamp(0.1, 1.0))
    } else {
        interval
    };
    backoff.reset();
    let collector = Collector {
        shared: shared.clone(),
        source,
        interval,
        first,
        scratch: Vec::new(),
    };
    let sender = SenderConfig {
        timeout: config.timeout.max(Duration::from_millis(1)),
        backoff,
        max_retry_time: if durable {
            LONGEST
        } else {
            config.max_retry_time
        },
        max_retries: if durable { None } else { config.max_retries },
        durable,
    };
    let (started_tx, started_rx) = std::sync::mpsc::channel::<Result<(), StartError<E>>>();
    let thread_shared = shared.clone();
    let thread = std::thread::Builder::new()
        .name(format!("sonde-{}", config.name))
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = started_tx.send(Err(StartError::Start(Error::Start(e))));
                    return;
                }
            };
            let sink = rt.block_on(make_sink());
            let sink = match sink {
                Ok(s) => s,
                Err(e) => {
                    let _ = started_tx.send(Err(StartError::Sink(e)));
                    return;
                }
            };
            let _ = started_tx.send(Ok(()));
            rt.block_on(async move {
                tokio::join!(collector.run(), sender_loop(thread_shared, sink, sender));
            });
        })
        .map_err(|e| StartError::Start(Error::Start(e)))?;
    match started_rx.recv() {
        Ok(Ok(())) => Ok(PushExporter {
            shared,
            thread: Mutex::new(Some(thread)),
        }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => {
            let _ = thread.join();
            Err(StartError::Start(Error::Start(std::io::Error::other(
                "the exporter thread stopped while starting",
            ))))
        }
    }
}

/// Why [`start`] failed.
#[derive(Debug)]
pub enum StartError<E> {
    /// The thread or runtime.
    Start(Error),
    /// Building the sink.
    Sink(E),
}

impl<E: std::fmt::Display> std::fmt::Display for StartError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Start(e) => e.fmt(f),
            StartError::Sink(e) => e.fmt(f),
        }
    }
}

impl<E: std::fmt::Debug + std::fmt::Display> std::error::Error for StartError<E> {}

impl<E: ExporterError> StartError<E> {
    /// The exporter's error: the sink's as it is, the engine's by [`Error::into_exporter`].
    pub fn into_exporter(self) -> E {
        match self {
            StartError::Start(e) => e.into_exporter(),
            StartError::Sink(e) => e,
        }
    }
}

/// A running exporter. Dropping it shuts it down, waiting up to [`DROP_SHUTDOWN_TIMEOUT`], and
/// logs that it did.
#[must_use = "dropping the handle stops the exporter: keep it (`let _exporter = ...`) for as long as it should export"]
pub struct PushExporter {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for PushExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.shared.lock();
        f.debug_struct("PushExporter")
            .field("queued", &st.pending())
            .field("stopped", &st.shutdown)
            .finish()
    }
}

impl PushExporter {
    /// Collects now and waits until that collection and everything queued before it has been
    /// delivered, or `timeout` has passed. Errors if something was dropped meanwhile (the error
    /// says why) or the deadline passed first. Blocks the calling thread.
    pub fn flush(&self, timeout: Duration) -> Result<(), Error> {
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
                "the collection did not finish within {timeout:?}; give flush more time"
            )));
        }
        let target = st.last_enqueued;
        st = shared.wait_until(st, deadline, |st| st.delivered_through(target));
        if !st.delivered_through(target) {
            return Err(Error::Incomplete(format!(
                "{} requests were still waiting after {timeout:?}{}; give flush more time or check the receiver",
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
    /// Batches still queued at the deadline are dropped (reason `shutdown`). Errors like
    /// [`flush`](Self::flush); calling it again returns `Ok`.
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
        // Attempts in flight are cut at the deadline; allow them a moment to return.
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

/// The lifecycle of an exporter handle whose field `inner` is its [`PushExporter`] and whose
/// errors are `error` (an [`ExporterError`]): [`sonde_core::Component`] with the same name,
/// flush and shutdown, and the handle's own `flush` and `shutdown` returning `error` (what
/// every push exporter does). With `debug_url: field`, also `Debug`, showing `inner` and the
/// URL in `field` without its credentials.
#[macro_export]
macro_rules! component_via_inner {
    ($handle:ident, error: $error:ty, debug_url: $url:ident) => {
        $crate::component_via_inner!($handle, error: $error);

        // Not derived: the URL's credentials stay out of logs.
        impl ::std::fmt::Debug for $handle {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.debug_struct(stringify!($handle))
                    .field("inner", &self.inner)
                    .field(stringify!($url), &$crate::redact_url(&self.$url))
                    .finish()
            }
        }
    };
    ($handle:ty, error: $error:ty) => {
        $crate::__sonde_core::component_via!(
            /// The lifecycle every sonde component shares, through the exporter's delivery engine.
            $handle => inner
        );

        impl $handle {
            /// Collects now and waits until that collection and everything queued before it
            /// has been delivered, or `timeout` has passed. Errors if something was dropped or
            /// rejected meanwhile (the error says why) or the deadline passed first. Blocks the
            /// calling thread.
            pub fn flush(&self, timeout: ::std::time::Duration) -> Result<(), $error> {
                self.inner
                    .flush(timeout)
                    .map_err($crate::Error::into_exporter)
            }

            /// Collects one last time, delivers what is queued within `timeout`, and stops the
            /// exporter's threads. Requests still queued at the deadline are dropped (counted
            /// with reason `shutdown`). Errors like [`flush`](Self::flush); calling it again
            /// returns `Ok`.
            pub fn shutdown(&self, timeout: ::std::time::Duration) -> Result<(), $error> {
                self.inner
                    .shutdown(timeout)
                    .map_err($crate::Error::into_exporter)
            }
        }
    };
}

#[doc(hidden)]
pub use sonde_core as __sonde_core;

impl sonde_core::Component for PushExporter {
    fn name(&self) -> &'static str {
        self.shared.metrics.exporter()
    }

    fn flush(&self, timeout: Duration) -> Result<(), sonde_core::ComponentError> {
        PushExporter::flush(self, timeout)
            .map_err(|e| sonde_core::ComponentError::new(self.shared.metrics.exporter(), e))
    }

    fn shutdown(&self, timeout: Duration) -> Result<(), sonde_core::ComponentError> {
        PushExporter::shutdown(self, timeout)
            .map_err(|e| sonde_core::ComponentError::new(self.shared.metrics.exporter(), e))
    }
}

impl Drop for PushExporter {
    fn drop(&mut self) {
        let running = self.thread.lock().map(|t| t.is_some()).unwrap_or(false);
        if running {
            diag::info(format_args!(
                "{} exporter: stopping because its handle was dropped (keep it in a variable, `let _exporter = ...`, for as long as it should export)",
                self.shared.metrics.exporter()
            ));
        }
        if let Err(e) = self.shutdown(DROP_SHUTDOWN_TIMEOUT) {
            diag::warn(format_args!(
                "{} exporter: {e}",
                self.shared.metrics.exporter()
            ));
        }
    }
}

struct Queued<B> {
    id: u64,
    batch: B,
}

struct State<B = ()> {
    queue: VecDeque<Queued<B>>,
    queued_bytes: usize,
    in_flight: Option<u64>,
    last_enqueued: u64,
    collect_requests: u64,
    collections_done: u64,
    failures: u64,
    last_error: Option<String>,
    shutdown: bool,
    deadline: Option<Instant>,
    collector_done: bool,
    sender_done: bool,
    disk: Option<DiskQueue>,
}

impl<B> Default for State<B> {
    fn default() -> Self {
        State {
            queue: VecDeque::new(),
            queued_bytes: 0,
            in_flight: None,
            last_enqueued: 0,
            collect_requests: 0,
            collections_done: 0,
            failures: 0,
            last_error: None,
            shutdown: false,
            deadline: None,
            collector_done: false,
            sender_done: false,
            disk: None,
        }
    }
}

impl<B> State<B> {
    fn delivered_through(&self, id: u64) -> bool {
        if let Some(disk) = &self.disk {
            return disk.delivered_through(id);
        }
        self.in_flight.is_none_or(|f| f > id) && self.queue.front().is_none_or(|b| b.id > id)
    }

    fn pending(&self) -> usize {
        if let Some(disk) = &self.disk {
            return usize::try_from(disk.pending_records()).unwrap_or(usize::MAX);
        }
        self.queue.len() + usize::from(self.in_flight.is_some())
    }

    fn last_error_suffix(&self) -> String {
        match &self.last_error {
            Some(e) => format!(" (last error: {e})"),
            None => String::new(),
        }
    }
}

/// Type-erased batches, so the handle is not generic.
type AnyBatch = Box<dyn ErasedBatch>;

trait ErasedBatch: Send {
    fn points(&self) -> u64;
    fn bytes(&self) -> usize;
    fn as_any(&self) -> &dyn std::any::Any;
}

impl<B: Batch> ErasedBatch for B {
    fn points(&self) -> u64 {
        Batch::points(self)
    }
    fn bytes(&self) -> usize {
        Batch::bytes(self)
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

struct Shared {
    state: Mutex<State<AnyBatch>>,
    /// Wakes application threads waiting in `force_flush`/`shutdown`.
    cv: Condvar,
    collector_wake: Notify,
    sender_wake: Notify,
    /// Signalled when the sender takes a batch off the queue.
    room: Notify,
    metrics: ExporterMetrics,
    queue_capacity: usize,
    max_queue_bytes: usize,
    /// Failed attempts since the last success, for the "delivering again" line.
    failed_attempts: AtomicU64,
    /// One warning per minute about failed attempts, and one about drops.
    failure_log: RateLimit,
    drop_log: RateLimit,
    /// One warning per minute about caught panics.
    panic_log: RateLimit,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State<AnyBatch>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait_until<'a>(
        &self,
        mut st: MutexGuard<'a, State<AnyBatch>>,
        deadline: Instant,
        done: impl Fn(&State<AnyBatch>) -> bool,
    ) -> MutexGuard<'a, State<AnyBatch>> {
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

    fn fail(&self, st: &mut State<AnyBatch>, reason: &str, points: u64, error: String) {
        if let Some(n) = self.drop_log.hit() {
            diag::warn(format_args!(
                "{} exporter: dropped {points} data points ({reason}): {error}{}",
                self.metrics.exporter(),
                held_back(n, "drops")
            ));
        }
        st.failures += 1;
        st.last_error = Some(error);
        self.metrics.dropped(reason, points);
    }

    /// Counts a failed attempt and warns about it, at most once per [`LOG_PERIOD`].
    fn attempt_failed(&self, error: &str, next: &str) {
        self.metrics.request(false);
        self.failed_attempts.fetch_add(1, Ordering::Relaxed);
        if let Some(n) = self.failure_log.hit() {
            diag::warn(format_args!(
                "{} exporter: request failed: {error}; {next}{}",
                self.metrics.exporter(),
                held_back(n, "failed requests")
            ));
        }
    }

    /// Counts and logs a panic caught in `what` (the source's collection, the sink's send).
    fn panicked(&self, what: &str, payload: &(dyn std::any::Any + Send)) {
        self.metrics.panicked();
        if let Some(n) = self.panic_log.hit() {
            diag::warn(format_args!(
                "{} exporter: {what} panicked: {}; the exporter keeps running{}",
                self.metrics.exporter(),
                panic_message(payload),
                held_back(n, "panics")
            ));
        }
    }

    /// Says what a stopping durable queue keeps for the next start.
    fn kept_on_disk(&self, disk: &DiskQueue) {
        if disk.pending_records() > 0 {
            diag::info(format_args!(
                "{} exporter: {} requests ({} data points) stay in the durable queue {} and are sent at the next start",
                self.metrics.exporter(),
                disk.pending_records(),
                disk.pending_points(),
                disk.dir().display()
            ));
        }
    }

    fn attempt_succeeded(&self) {
        self.metrics.request(true);
        let failed = self.failed_attempts.swap(0, Ordering::Relaxed);
        if failed > 0 {
            self.failure_log.reset();
            diag::info(format_args!(
                "{} exporter: delivering again after {failed} failed requests",
                self.metrics.exporter()
            ));
        }
    }
}

struct Collector<S> {
    shared: Arc<Shared>,
    source: S,
    interval: Duration,
    first: Duration,
    /// Encoding buffer for the durable queue.
    scratch: Vec<u8>,
}

impl<S: Source> Collector<S> {
    async fn run(mut self) {
        let shared = self.shared.clone();
        let mut next = after(Instant::now(), self.first);
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
            // Room for a large collection is awaited until the next tick (or the shutdown
            // deadline) before the oldest batches are dropped.
            let room_deadline = match shared.lock().deadline {
                Some(d) if last => d,
                _ => next,
            };
            self.collect(room_deadline).await;
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

    /// Collects and queues. When the queue is full, waits for the sender to make room until
    /// `room_deadline`, then drops the oldest batch: a collection split into more batches than
    /// the queue holds is not lost while the receiver keeps up.
    async fn collect(&mut self, room_deadline: Instant) {
        let shared = self.shared.clone();
        // A panicking source loses this collection, not the exporter.
        let source = &mut self.source;
        let collected = std::panic::catch_unwind(AssertUnwindSafe(|| {
            (source.collect(), source.take_dropped())
        }));
        let (batches, dropped) = match collected {
            Ok(c) => c,
            Err(payload) => {
                shared.panicked("the collection", &*payload);
                return;
            }
        };
        for (reason, n) in dropped {
            shared.metrics.dropped(reason, n);
        }
        if shared.lock().disk.is_some() {
            self.persist(batches);
            return;
        }
        for batch in batches {
            let size = Batch::bytes(&batch);
            loop {
                let room = shared.room.notified();
                {
                    let st = shared.lock();
                    if st.queue.is_empty()
                        || (st.queue.len() < shared.queue_capacity
                            && st.queued_bytes + size <= shared.max_queue_bytes)
                    {
                        break;
                    }
                }
                if Instant::now() >= room_deadline {
                    break;
                }
                shared.sender_wake.notify_one();
                tokio::select! {
                    _ = tokio::time::sleep_until(room_deadline.into()) => break,
                    _ = room => {}
                }
            }
            let mut st = shared.lock();
            while !st.queue.is_empty()
                && (st.queue.len() >= shared.queue_capacity
                    || st.queued_bytes + size > shared.max_queue_bytes)
            {
                let Some(old) = st.queue.pop_front() else {
                    break;
                };
                st.queued_bytes -= old.batch.bytes();
                let msg = format!(
                    "the queue was full ({} requests, {} bytes), so the oldest was dropped; the receiver is down or slower than the collection interval",
                    shared.queue_capacity, shared.max_queue_bytes
                );
                shared.fail(&mut st, "queue_full", old.batch.points(), msg);
            }
            st.last_enqueued += 1;
            let id = st.last_enqueued;
            st.queued_bytes += size;
            st.queue.push_back(Queued {
                id,
                batch: Box::new(batch),
            });
            shared.metrics.queue_size(st.pending());
            drop(st);
            shared.sender_wake.notify_one();
        }
    }
}

impl<S: Source> Collector<S> {
    /// Appends the batches to the durable queue (the oldest segments make room when the cap
    /// is reached) and syncs them as its policy says.
    fn persist(&mut self, batches: Vec<S::Batch>) {
        let shared = &self.shared;
        let mut st = shared.lock();
        let Some(disk) = st.disk.as_mut() else {
            return;
        };
        let mut failed: Vec<(&'static str, u64, String)> = Vec::new();
        for batch in batches {
            self.scratch.clear();
            batch.encode(&mut self.scratch);
            let points = Batch::points(&batch);
            match disk.append(points, &self.scratch) {
                Ok(d) if d.records > 0 => failed.push((
                    "queue_full",
                    d.points,
                    format!(
                        "the durable queue {} reached its size cap, so its oldest {} requests were dropped; the receiver is down or slower than the collection interval",
                        disk.dir().display(),
                        d.records
                    ),
                )),
                Ok(_) => {}
                Err(e) => failed.push((
                    "disk_error",
                    points,
                    format!(
                        "could not write to the durable queue {}: {e}",
                        disk.dir().display()
                    ),
                )),
            }
        }
        if let Err(e) = disk.sync() {
            failed.push((
                "disk_error",
                0,
                format!(
                    "could not sync the durable queue {}: {e}",
                    disk.dir().display()
                ),
            ));
        }
        st.last_enqueued = disk.last_id();
        for (reason, points, msg) in failed {
            shared.fail(&mut st, reason, points, msg);
        }
        shared.metrics.queue_size(st.pending());
        drop(st);
        shared.sender_wake.notify_one();
    }
}

struct SenderConfig {
    /// Batches are safe on disk: at shutdown a failed attempt is not retried.
    durable: bool,
    timeout: Duration,
    backoff: Backoff,
    max_retry_time: Duration,
    max_retries: Option<u32>,
}

async fn sender_loop<K: Sink>(shared: Arc<Shared>, mut sink: K, mut cfg: SenderConfig) {
    if shared.lock().disk.is_some() {
        return durable_sender_loop(shared, sink, cfg).await;
    }
    loop {
        let item = {
            let mut st = shared.lock();
            if st.deadline.is_some_and(|d| Instant::now() >= d) {
                while let Some(b) = st.queue.pop_front() {
                    st.queued_bytes -= b.batch.bytes();
                    shared.fail(
                        &mut st,
                        "shutdown",
                        b.batch.points(),
                        "the shutdown deadline passed before the request was sent".into(),
                    );
                }
            }
            match st.queue.pop_front() {
                Some(b) => {
                    st.queued_bytes -= b.batch.bytes();
                    st.in_flight = Some(b.id);
                    shared.room.notify_one();
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
        let Some(item) = item else {
            shared.sender_wake.notified().await;
            continue;
        };
        let points = item.batch.points();
        let result = match item.batch.as_any().downcast_ref::<K::Batch>() {
            Some(batch) => send(&shared, &mut sink, &mut cfg, batch).await,
            None => Err((
                "rejected",
                "internal error: a batch of the wrong type".into(),
            )),
        };
        let mut st = shared.lock();
        st.in_flight = None;
        match result {
            Ok(()) => shared.metrics.sent(points),
            Err((reason, error)) => shared.fail(&mut st, reason, points, error),
        }
        shared.metrics.queue_size(st.pending());
        drop(st);
        shared.cv.notify_all();
    }
}

/// The sender of a durable queue: reads one record at a time from disk, and moves the queue
/// past it once it is delivered or dropped for good. At the shutdown deadline, what is left
/// stays on disk.
async fn durable_sender_loop<K: Sink>(shared: Arc<Shared>, mut sink: K, mut cfg: SenderConfig) {
    loop {
        let (record, unreadable) = {
            let mut st = shared.lock();
            let past_deadline = st.deadline.is_some_and(|d| Instant::now() >= d);
            let stopping = st.shutdown && st.collector_done;
            let (record, unreadable, skipped) = match st.disk.as_mut() {
                Some(disk) if !past_deadline => {
                    let (record, unreadable) = match disk.next() {
                        Ok(r) => (r, None),
                        Err(e) => (None, Some(e)),
                    };
                    (record, unreadable, disk.take_skipped())
                }
                _ => (None, None, Default::default()),
            };
            if skipped.records > 0 {
                shared.fail(
                    &mut st,
                    "corrupt",
                    skipped.points,
                    format!(
                        "{} requests in a corrupt region of the durable queue were skipped",
                        skipped.records
                    ),
                );
            }
            if record.is_none() && (past_deadline || stopping) {
                if let Some(disk) = &st.disk {
                    shared.kept_on_disk(disk);
                }
                st.sender_done = true;
                drop(st);
                shared.cv.notify_all();
                return;
            }
            shared.metrics.queue_size(st.pending());
            (record, unreadable)
        };
        if let Some(error) = unreadable {
            // Nothing is skipped: the same record is tried again after a pause.
            if let Some(n) = shared.failure_log.hit() {
                diag::warn(format_args!(
                    "{} exporter: {error}; trying again{}",
                    shared.metrics.exporter(),
                    held_back(n, "read errors")
                ));
            }
            let woken = shared.sender_wake.notified();
            tokio::select! {
                _ = tokio::time::sleep(cfg.backoff.next(None)) => {}
                _ = woken => {}
            }
            continue;
        }
        let Some(record) = record else {
            shared.sender_wake.notified().await;
            continue;
        };
        let (id, points) = (record.id, record.points);
        let result = match K::Batch::decode(record.payload, points) {
            Some(batch) => send(&shared, &mut sink, &mut cfg, &batch).await,
            None => Err((
                "corrupt",
                "a request in the durable queue could not be read back (written by another version?)".into(),
            )),
        };
        let mut st = shared.lock();
        match result {
            Ok(()) => shared.metrics.sent(points),
            // Stopping and the receiver fails: the batch, and what follows it, wait on disk for
            // the next start.
            Err(("shutdown", _)) => {
                if let Some(disk) = st.disk.as_mut() {
                    disk.release();
                    shared.kept_on_disk(disk);
                }
                st.sender_done = true;
                drop(st);
                shared.cv.notify_all();
                return;
            }
            Err((reason, error)) => shared.fail(&mut st, reason, points, error),
        }
        if let Some(disk) = st.disk.as_mut() {
            disk.ack(id);
        }
        shared.metrics.queue_size(st.pending());
        drop(st);
        shared.cv.notify_all();
    }
}

/// Sends one batch, retrying retryable outcomes; on failure, the drop reason and the error.
async fn send<K: Sink>(
    shared: &Shared,
    sink: &mut K,
    cfg: &mut SenderConfig,
    batch: &K::Batch,
) -> Result<(), (&'static str, String)> {
    let started = Instant::now();
    let mut retries = 0u32;
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
        // The sink's own timeout may be longer than the deadline allows.
        let attempt = CatchUnwind(std::pin::pin!(sink.send(batch, timeout)));
        let outcome = match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(o)) => o,
            Ok(Err(payload)) => {
                // Retrying would most likely panic again: the batch is dropped.
                shared.panicked("sending a request", &*payload);
                shared.metrics.request(false);
                return Err((
                    "panic",
                    format!("the sink panicked: {}", panic_message(&*payload)),
                ));
            }
            Err(_) => Outcome::Retry {
                error: format!("no answer within {timeout:?}"),
                after: None,
            },
        };
        match outcome {
            Outcome::Success { rejected, message } => {
                shared.attempt_succeeded();
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
                shared.attempt_failed(&e, "not retryable, the request is dropped");
                return Err(("rejected", e));
            }
            Outcome::Retry {
                error,
                after: delay,
            } => {
                shared.attempt_failed(&error, "retrying with backoff");
                if cfg.durable {
                    let st = shared.lock();
                    if st.deadline.is_some() {
                        // Stopping: the batch waits on disk for the next start.
                        return Err(cut(&error));
                    }
                    if st.disk.as_ref().is_some_and(DiskQueue::in_flight_orphaned) {
                        return Err((
                            "queue_full",
                            format!(
                                "{error} (the durable queue's size cap pushed the request out while it was retried)"
                            ),
                        ));
                    }
                }
                if let Some(max) = cfg.max_retries
                    && retries >= max
                {
                    return Err((
                        "retries_exhausted",
                        format!("{error} (gave up after {max} retries)"),
                    ));
                }
                retries += 1;
                let wait = match delay {
                    Some(d) => peer_delay(d),
                    None => cfg.backoff.next(None),
                };
                if started.elapsed().saturating_add(wait) > cfg.max_retry_time {
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
                    // A durable queue keeps the batch: stopping needs no last attempt.
                    if shared
                        .lock()
                        .deadline
                        .is_some_and(|d| d <= until || cfg.durable)
                    {
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

/// The test sink the integration tests use too.
#[cfg(test)]
#[path = "../tests/support/gated.rs"]
mod gated;

#[cfg(test)]
mod tests {
    use super::*;

    struct Counting(u64);
    impl Source for Counting {
        type Batch = Vec<u64>;
        fn collect(&mut self) -> Vec<Vec<u64>> {
            self.0 += 1;
            vec![vec![self.0]]
        }
    }

    /// What the test sinks do with a batch they take: keep its numbers in `got`.
    fn accept(got: &Mutex<Vec<u64>>, batch: &[u64]) -> Outcome {
        got.lock().unwrap().extend(batch);
        Outcome::Success {
            rejected: 0,
            message: String::new(),
        }
    }

    /// Starts `source` with `config` into `sink`, which is ready at once.
    fn start_into<S, K>(reg: &Registry, c: PushConfig, source: S, sink: K) -> PushExporter
    where
        S: Source<Batch = Vec<u64>>,
        K: Sink<Batch = Vec<u64>> + Send + 'static,
    {
        start(reg, c, source, move || async move { Ok::<_, ()>(sink) }).unwrap()
    }

    /// Where a test sink keeps the numbers of the batches it accepted.
    type Got = Arc<Mutex<Vec<u64>>>;

    /// Starts `source` with `c` into the sink `sink` makes around a new [`Got`], returned with
    /// the exporter so the test can read what was delivered.
    fn start_collecting<S, K>(
        reg: &Registry,
        c: PushConfig,
        source: S,
        sink: impl FnOnce(Got) -> K,
    ) -> (PushExporter, Got)
    where
        S: Source<Batch = Vec<u64>>,
        K: Sink<Batch = Vec<u64>> + Send + 'static,
    {
        let got = Got::default();
        let e = start_into(reg, c, source, sink(got.clone()));
        (e, got)
    }

    /// Fails the first `fail` attempts with a retryable outcome, then accepts.
    struct Flaky {
        fail: u32,
        got: Got,
    }
    impl Sink for Flaky {
        type Batch = Vec<u64>;
        async fn send(&mut self, batch: &Vec<u64>, _timeout: Duration) -> Outcome {
            if self.fail > 0 {
                self.fail -= 1;
                return Outcome::Retry {
                    error: "down".into(),
                    after: None,
                };
            }
            accept(&self.got, batch)
        }
    }

    /// A sink that accepts every batch.
    fn accepting(got: Got) -> Flaky {
        Flaky { fail: 0, got }
    }

    fn config() -> PushConfig {
        let mut c = PushConfig::new("test");
        c.interval = Duration::from_secs(3600);
        c.initial_backoff = Duration::from_millis(1);
        c.max_backoff = Duration::from_millis(2);
        c
    }

    #[test]
    fn flush_delivers_through_retries_and_counts_them() {
        let reg = Registry::new();
        let (e, got) = start_collecting(&reg, config(), Counting(0), |got| Flaky { fail: 3, got });
        e.flush(Duration::from_secs(5)).unwrap();
        e.flush(Duration::from_secs(5)).unwrap();
        e.shutdown(Duration::from_secs(5)).unwrap();
        assert_eq!(*got.lock().unwrap(), vec![1, 2, 3]);
        let retries = value(&reg, crate::telemetry::RETRIES, &[("exporter", "test")]);
        assert_eq!(retries, Some(3.0));
    }

    use crate::gated::Gated;

    fn start_gated(
        reg: &Registry,
        c: PushConfig,
        first: u64,
        down: &Arc<std::sync::atomic::AtomicBool>,
        got: &Got,
    ) -> PushExporter {
        let (down, got) = (down.clone(), got.clone());
        start_into(reg, c, Counting(first), Gated { down, got })
    }

    #[test]
    fn a_durable_queue_keeps_every_batch_through_an_outage_and_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config();
        c.interval = Duration::from_millis(10);
        // Longer than the outage: the memory queue would drop; the durable one must not.
        c.max_retry_time = Duration::from_millis(20);
        c.durable = Some(DiskQueueConfig::new(dir.path()));
        let down = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let got = Got::default();
        let reg = Registry::new();
        let e = start_gated(&reg, c.clone(), 0, &down, &got);
        std::thread::sleep(Duration::from_millis(300));
        // What is not delivered by the deadline stays on disk: not an error, not a drop.
        e.shutdown(Duration::from_millis(50)).unwrap();
        drop(e);
        assert!(got.lock().unwrap().is_empty());
        let queued = std::fs::read_dir(dir.path()).unwrap().count();
        assert!(queued >= 3, "segment, ack and lock files: {queued}");

        // The next process (the receiver is back) sends them first, in order, then its own.
        down.store(false, Ordering::SeqCst);
        let reg2 = Registry::new();
        let e = start_gated(&reg2, c, 1000, &down, &got);
        e.flush(Duration::from_secs(5)).unwrap();
        e.shutdown(Duration::from_secs(5)).unwrap();
        let got = got.lock().unwrap().clone();
        let old: Vec<u64> = got.iter().copied().filter(|v| *v < 1000).collect();
        let new: Vec<u64> = got.iter().copied().filter(|v| *v > 1000).collect();
        assert!(old.len() >= 10, "{got:?}");
        assert_eq!(old, (1..=old.len() as u64).collect::<Vec<_>>(), "{got:?}");
        assert_eq!(&got[..old.len()], &old[..], "old batches first: {got:?}");
        assert_eq!(new[0], 1001, "{got:?}");
        for r in [&reg, &reg2] {
            assert_eq!(dropped(r, "retries_exhausted"), None, "nothing dropped");
        }
        let resent = value(
            &reg2,
            crate::telemetry::QUEUE_REDELIVERED,
            &[("exporter", "test")],
        )
        .unwrap_or(0.0);
        // The batch being retried at the shutdown may have reached the receiver.
        assert_eq!(resent, 1.0);
    }

    #[test]
    fn a_batch_type_without_encoding_cannot_have_a_durable_queue() {
        struct Plain;
        impl Batch for Plain {
            fn points(&self) -> u64 {
                1
            }
            fn bytes(&self) -> usize {
                1
            }
        }
        struct One;
        impl Source for One {
            type Batch = Plain;
            fn collect(&mut self) -> Vec<Plain> {
                vec![Plain]
            }
        }
        struct Nowhere;
        impl Sink for Nowhere {
            type Batch = Plain;
            async fn send(&mut self, _: &Plain, _: Duration) -> Outcome {
                Outcome::Fail("no".into())
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let mut c = config();
        c.durable = Some(DiskQueueConfig::new(dir.path()));
        let e = start(&Registry::new(), c, One, || async { Ok::<_, ()>(Nowhere) });
        let Err(StartError::Start(e)) = e else {
            panic!("started");
        };
        assert!(e.to_string().contains("has no durable queue"), "{e}");
    }

    #[test]
    fn a_sink_that_cannot_be_built_is_an_error() {
        let reg = Registry::new();
        let e = start(&reg, config(), Counting(0), || async {
            Err::<Flaky, _>("no")
        });
        assert!(matches!(e, Err(StartError::Sink("no"))));
    }

    #[test]
    fn the_first_collection_is_jittered_within_the_interval() {
        // Collections are counted by the source; wait for the first without any flush.
        let reg = Registry::new();
        let mut c = config();
        c.interval = Duration::from_millis(400);
        c.jitter_first = true;
        let start = std::time::Instant::now();
        let (e, got) = start_collecting(&reg, c, Counting(0), accepting);
        while got.lock().unwrap().is_empty() {
            assert!(start.elapsed() < Duration::from_secs(5));
            std::thread::sleep(Duration::from_millis(2));
        }
        let first = start.elapsed();
        assert!(first >= Duration::from_millis(35), "{first:?}");
        assert!(first < Duration::from_millis(400 + 150), "{first:?}");
        e.shutdown(Duration::from_secs(5)).unwrap();
    }

    /// Answers the first attempt with `Retry { after }`, then accepts.
    struct Throttling {
        after: Option<Duration>,
        got: Got,
    }
    impl Sink for Throttling {
        type Batch = Vec<u64>;
        async fn send(&mut self, batch: &Vec<u64>, _timeout: Duration) -> Outcome {
            if let Some(after) = self.after.take() {
                return Outcome::Retry {
                    error: "503".into(),
                    after: Some(after),
                };
            }
            accept(&self.got, batch)
        }
    }

    fn value(reg: &Registry, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        reg.snapshot()
            .point(name, labels)
            .and_then(|p| p.number())
            .map(|n| n.as_f64())
    }

    /// The points the test exporter counted as dropped for `reason`.
    fn dropped(reg: &Registry, reason: &str) -> Option<f64> {
        let labels = [("exporter", "test"), ("reason", reason)];
        value(reg, crate::telemetry::DROPPED_POINTS, &labels)
    }

    #[test]
    fn a_huge_server_delay_drops_the_batch_and_the_exporter_goes_on() {
        // Duration::MAX used to overflow `elapsed + wait` and kill the exporter thread.
        let reg = Registry::new();
        let (e, got) = start_collecting(&reg, config(), Counting(0), |got| Throttling {
            after: Some(Duration::MAX),
            got,
        });
        let err = e.flush(Duration::from_secs(5)).unwrap_err();
        assert!(err.to_string().contains("gave up"), "{err}");
        e.flush(Duration::from_secs(5)).unwrap();
        e.shutdown(Duration::from_secs(5)).unwrap();
        assert_eq!(*got.lock().unwrap(), vec![2, 3]);
        assert_eq!(dropped(&reg, "retries_exhausted"), Some(1.0));
    }

    #[test]
    fn a_server_delay_within_the_retry_time_is_honoured() {
        let reg = Registry::new();
        let (e, got) = start_collecting(&reg, config(), Counting(0), |got| Throttling {
            after: Some(Duration::from_millis(300)),
            got,
        });
        let t = Instant::now();
        e.flush(Duration::from_secs(5)).unwrap();
        assert!(
            t.elapsed() >= Duration::from_millis(300),
            "{:?}",
            t.elapsed()
        );
        e.shutdown(Duration::from_secs(5)).unwrap();
        assert_eq!(*got.lock().unwrap(), vec![1, 2]);
    }

    #[test]
    fn retry_after_values() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        let p = |v| parse_retry_after_at(v, now);
        assert_eq!(p("7"), Some(Duration::from_secs(7)));
        assert_eq!(p(" 0 "), Some(Duration::ZERO));
        assert_eq!(p("18446744073709551615"), Some(MAX_PEER_DELAY));
        assert_eq!(p("99999999999999999999999999"), Some(MAX_PEER_DELAY));
        // 2015-10-21 07:28:00 is `now`.
        assert_eq!(
            p("Wed, 21 Oct 2015 07:29:40 GMT"),
            Some(Duration::from_secs(100))
        );
        assert_eq!(p("Wed, 21 Oct 2015 07:00:00 GMT"), Some(Duration::ZERO));
        assert_eq!(p("Fri, 31 Dec 9999 23:59:59 GMT"), Some(MAX_PEER_DELAY));
        for bad in ["", "-1", "1.5", "soon", "0x10", "+3"] {
            assert_eq!(p(bad), None, "{bad:?}");
        }
        assert_eq!(peer_delay(Duration::MAX), MAX_PEER_DELAY);
        let now = Instant::now();
        assert!(after(now, Duration::MAX) > now);
    }

    /// Panics on the sends (or collections) whose number is in the list.
    struct Panicky {
        on: Vec<u32>,
        n: u32,
        got: Got,
    }
    impl Sink for Panicky {
        type Batch = Vec<u64>;
        async fn send(&mut self, batch: &Vec<u64>, _timeout: Duration) -> Outcome {
            self.n += 1;
            if self.on.contains(&self.n) {
                panic!("sink bug #{}", self.n);
            }
            accept(&self.got, batch)
        }
    }
    impl Source for Panicky {
        type Batch = Vec<u64>;
        fn collect(&mut self) -> Vec<Vec<u64>> {
            self.n += 1;
            if self.on.contains(&self.n) {
                panic!("source bug #{}", self.n);
            }
            vec![vec![u64::from(self.n)]]
        }
    }

    #[test]
    fn a_panicking_sink_drops_the_batch_and_the_exporter_goes_on() {
        let reg = Registry::new();
        let (e, got) = start_collecting(&reg, config(), Counting(0), |got| Panicky {
            on: vec![2],
            n: 0,
            got,
        });
        e.flush(Duration::from_secs(5)).unwrap();
        let err = e.flush(Duration::from_secs(5)).unwrap_err();
        assert!(err.to_string().contains("sink bug #2"), "{err}");
        e.flush(Duration::from_secs(5)).unwrap();
        e.shutdown(Duration::from_secs(5)).unwrap();
        assert_eq!(*got.lock().unwrap(), vec![1, 3, 4]);
        let ex = [("exporter", "test")];
        assert_eq!(value(&reg, crate::telemetry::PANICS, &ex), Some(1.0));
        assert_eq!(dropped(&reg, "panic"), Some(1.0));
    }

    #[test]
    fn a_panicking_source_loses_one_collection_and_the_exporter_goes_on() {
        let reg = Registry::new();
        let source = Panicky {
            on: vec![1, 3],
            n: 0,
            got: Got::default(),
        };
        let (e, got) = start_collecting(&reg, config(), source, accepting);
        e.flush(Duration::from_secs(5)).unwrap();
        e.flush(Duration::from_secs(5)).unwrap();
        e.flush(Duration::from_secs(5)).unwrap();
        e.shutdown(Duration::from_secs(5)).unwrap();
        assert_eq!(*got.lock().unwrap(), vec![2, 4]);
        let ex = [("exporter", "test")];
        assert_eq!(value(&reg, crate::telemetry::PANICS, &ex), Some(2.0));
    }

    #[test]
    fn extreme_durations_do_not_panic() {
        let reg = Registry::new();
        let mut c = config();
        c.interval = Duration::MAX;
        c.timeout = Duration::MAX;
        c.initial_backoff = Duration::MAX;
        c.max_backoff = Duration::MAX;
        c.jitter_first = true;
        let (e, _) = start_collecting(&reg, c, Counting(0), accepting);
        e.flush(Duration::from_secs(5)).unwrap();
        let _ = e.flush(Duration::ZERO);
        e.shutdown(Duration::from_secs(5)).unwrap();
    }
}
