//! # sonde-otlp-receiver
//!
//! An OTLP metrics receiver, gRPC (`MetricsService/Export`) and HTTP/protobuf (`POST
//! /v1/metrics`), gzip or not, that records what services push into a
//! [`sonde_core::Registry`]: a local agent holds the cloud credentials and fans out to every
//! exporter (`/metrics`, CloudWatch, remote write, OTLP).
//!
//! The mapping:
//! - a metric keeps its name, description and unit (`s`, `ms`, `By`, `1`); its points'
//!   attributes become labels, plus `job` (`service.namespace/service.name`, or
//!   `service.name`) and `instance` (`service.instance.id`) from the resource, as Prometheus'
//!   own OTLP receiver derives them;
//! - other resource attributes go, as in Prometheus' OTLP receiver, to one `target_info`
//!   series per sender (`job`, `instance` and the attributes, value 1) instead of onto every
//!   series; join them in PromQL (`* on (job, instance) group_left(service_version)
//!   target_info`). Which attributes are kept is a list
//!   ([`DEFAULT_TARGET_INFO_ATTRIBUTES`], or [`OtlpReceiverBuilder::target_info_attributes`]);
//!   the Prometheus exporters put these series in the same `target_info` family as the agent's
//!   own resource;
//! - monotonic sums are counters, other sums up-down counters, gauges gauges, summaries their
//!   quantiles as a gauge with a `quantile` label; cumulative points are turned into changes
//!   (a total that went down starts a new series), delta points are added;
//! - histograms keep the sender's bounds as their explicit buckets: bucket counts, count and
//!   sum are exact; exponential histograms go to the default grid, each bucket at its middle,
//!   with an exact count and sum.
//!
//! Bounded: a request over `max_request_bytes`, as sent or once decompressed, is refused. Over
//! HTTP the answer is 413, counted in
//! `sonde.otlp_receiver.points{transport="http",outcome="refused",reason="too_large"}`. Over
//! gRPC tonic applies the limit, before the receiver sees the request (so nothing is
//! counted): a message longer than the limit as sent gets OUT_OF_RANGE (a code the OTLP
//! specification lists as retryable: the sender may send it again until its retries run out);
//! a gzip message within the limit that decompresses past it gets RESOURCE_EXHAUSTED without a
//! retry delay (not retryable). When the registry's memory budget is full, requests are
//! refused with HTTP 429 / gRPC RESOURCE_EXHAUSTED and a retry delay, as the OTLP
//! specification asks, so the sender keeps its data and retries. Points that cannot be
//! recorded (a name another source holds with another kind, attributes a family did not have
//! at first, non-finite values) are counted in
//! `sonde.otlp_receiver.points{outcome="rejected",reason}` and reported back in
//! `partial_success`.
//!
//! ```no_run
//! let registry = sonde_core::Registry::new();
//! let receiver = sonde_otlp_receiver::OtlpReceiverBuilder::new()
//!     .grpc("127.0.0.1:4317")
//!     .http("127.0.0.1:4318")
//!     .registry(registry.clone())
//!     .start()?;
//! println!("OTLP/gRPC on {:?}, OTLP/HTTP on {:?}", receiver.grpc_addr(), receiver.http_addr());
//! # Ok::<(), sonde_otlp_receiver::Error>(())
//! ```
#![warn(missing_docs)]

mod config;
mod record;
mod serve;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sonde_core::{ComponentThread, Counter, Family, Registry};

pub use config::OtlpReceiverConfig;
pub use record::Outcome;
#[cfg(fuzzing)]
#[doc(hidden)]
pub use record::fuzzing;

/// Largest request by default (compressed, and again once decompressed).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 16 << 20;
/// The delay asked of senders when the memory budget is full.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

/// Errors starting a receiver.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Neither a gRPC nor an HTTP address was given.
    #[error("no OTLP listener configured: call .grpc(address) or .http(address) before .start()")]
    NoListener,
    /// A listener could not be bound.
    #[error("cannot bind the OTLP {transport} listener {address}: {source}")]
    Bind {
        /// `grpc` or `http`.
        transport: &'static str,
        /// The address as given.
        address: String,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// The TLS certificate or key could not be loaded.
    #[error("the OTLP receiver's TLS files: {0}")]
    Tls(String),
    /// The runtime or its thread could not start.
    #[error("cannot start the OTLP receiver: {0}")]
    Start(String),
}

/// The resource attributes a sender's `target_info` series keeps by default (see
/// [`sonde_core::TARGET_INFO_ATTRIBUTES`]).
pub use sonde_core::TARGET_INFO_ATTRIBUTES as DEFAULT_TARGET_INFO_ATTRIBUTES;

/// Configures an [`OtlpReceiver`].
// The token stays out of `Debug` output.
#[derive(custom_debug::Debug, Clone)]
#[must_use = "call .start() to start the receiver"]
pub struct OtlpReceiverBuilder {
    grpc: Option<String>,
    http: Option<String>,
    registry: Option<Registry>,
    max_request_bytes: usize,
    #[debug(with = sonde_settings::redact::secret)]
    bearer_token: Option<String>,
    tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
    target_info_attributes: Vec<String>,
    series_ttl: Option<Duration>,
    #[debug(skip)]
    continue_from: Option<Arc<record::Recorder>>,
}

/// The default [`OtlpReceiverBuilder::series_ttl`]: ten minutes, ten of the OpenTelemetry SDKs'
/// default export intervals (the Collector's Prometheus exporter expires after five).
pub const DEFAULT_SERIES_TTL: Duration = Duration::from_secs(600);

impl Default for OtlpReceiverBuilder {
    fn default() -> Self {
        OtlpReceiverBuilder::new()
    }
}

impl OtlpReceiverBuilder {
    /// No listener yet, the global registry, 16 MiB requests, no authentication, series
    /// expiring after [`DEFAULT_SERIES_TTL`] without a point.
    pub fn new() -> Self {
        OtlpReceiverBuilder {
            grpc: None,
            http: None,
            registry: None,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            bearer_token: None,
            tls: None,
            target_info_attributes: DEFAULT_TARGET_INFO_ATTRIBUTES
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            series_ttl: Some(DEFAULT_SERIES_TTL),
            continue_from: None,
        }
    }

    /// The resource attributes kept in each sender's `target_info` series (default:
    /// [`DEFAULT_TARGET_INFO_ATTRIBUTES`]; empty: no `target_info`).
    pub fn target_info_attributes<S: Into<String>>(
        mut self,
        attributes: impl IntoIterator<Item = S>,
    ) -> Self {
        // In the order given (scrape targets register the family with the same list, and a
        // registry compares label names in order); repeats dropped.
        let mut kept: Vec<String> = Vec::new();
        for a in attributes.into_iter().map(Into::into) {
            if !kept.contains(&a) {
                kept.push(a);
            }
        }
        self.target_info_attributes = kept;
        self
    }

    /// Serves both transports over TLS with this PEM certificate chain and private key (read
    /// at start).
    pub fn tls(
        mut self,
        cert_chain_pem: impl Into<std::path::PathBuf>,
        private_key_pem: impl Into<std::path::PathBuf>,
    ) -> Self {
        self.tls = Some((cert_chain_pem.into(), private_key_pem.into()));
        self
    }

    /// Serves OTLP/gRPC on `address` (`127.0.0.1:4317`; port 0 picks one).
    pub fn grpc(mut self, address: impl Into<String>) -> Self {
        self.grpc = Some(address.into());
        self
    }

    /// Serves OTLP/HTTP (protobuf) on `address` (`127.0.0.1:4318`; port 0 picks one).
    pub fn http(mut self, address: impl Into<String>) -> Self {
        self.http = Some(address.into());
        self
    }

    /// The registry to record into (default: the global one).
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Largest request accepted, compressed and decompressed (default 16 MiB).
    pub fn max_request_bytes(mut self, bytes: usize) -> Self {
        self.max_request_bytes = bytes.max(1024);
        self
    }

    /// How long a series is kept without a point (`None`: for ever). A sender that stops, or
    /// restarts with a new `service.instance.id` (every deploy, every autoscaled replica),
    /// leaves series that would otherwise stay, and fill the family's series limit and the
    /// memory budget until nothing new is accepted; this expires them, and a name with no
    /// series left is unregistered, like statsd_exporter's TTL and the Collector's
    /// `metric_expiration`. Keep it above the senders' export interval: a series that comes
    /// back after it expired starts over (a counter from its cumulative total). At most 1 s.
    pub fn series_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.series_ttl = ttl.map(|t| t.max(Duration::from_secs(1)));
        self
    }

    /// Takes over what `previous` (stopped, typically: it holds the same addresses) received:
    /// the per-series state that turns senders' cumulative points into increments, moved to
    /// the new receiver at start. Without it, a receiver started in another's place on the
    /// same registry would add each sender's whole cumulative total again to the series the
    /// first one left (the agent's reload of `[sources.otlp]` uses this). The new receiver's
    /// own TTL applies from then on; the senders' `target_info` memory is taken when the
    /// attributes kept are the same. Nothing is taken from a receiver of another registry.
    pub fn continue_from(mut self, previous: &OtlpReceiver) -> Self {
        self.continue_from = Some(previous.recorder.clone());
        self
    }

    /// Requires `Authorization: Bearer <token>` (HTTP header or gRPC metadata).
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.bearer_token = Some(token.into());
        self
    }

    /// Binds the listeners and starts serving on a thread of its own.
    pub fn start(self) -> Result<OtlpReceiver, Error> {
        if self.grpc.is_none() && self.http.is_none() {
            return Err(Error::NoListener);
        }
        let bind = |transport: &'static str, address: &str| {
            let fail = |source| Error::Bind {
                transport,
                address: address.to_owned(),
                source,
            };
            let l = std::net::TcpListener::bind(address).map_err(fail)?;
            l.set_nonblocking(true).map_err(fail)?;
            Ok::<_, Error>(l)
        };
        let grpc = self.grpc.as_deref().map(|a| bind("grpc", a)).transpose()?;
        let http = self.http.as_deref().map(|a| bind("http", a)).transpose()?;
        let grpc_addr = grpc.as_ref().and_then(|l| l.local_addr().ok());
        let http_addr = http.as_ref().and_then(|l| l.local_addr().ok());
        let tls = self
            .tls
            .as_ref()
            .map(|(cert, key)| serve::load_tls(cert, key))
            .transpose()
            .map_err(Error::Tls)?;
        let registry = self.registry.unwrap_or_else(|| Registry::global().clone());
        let points = registry
            .counter("sonde.otlp_receiver.points")
            .description("Data points received over OTLP, by transport, outcome and reason.")
            .labels(["transport", "outcome", "reason"])
            .build()
            .ok();
        let recorder = Arc::new(record::Recorder::new(
            registry.clone(),
            self.target_info_attributes,
            self.series_ttl,
        ));
        if let Some(previous) = &self.continue_from {
            recorder.adopt(previous);
        }
        let state = Arc::new(serve::State {
            recorder: recorder.clone(),
            registry: registry.clone(),
            points,
            max_request_bytes: self.max_request_bytes,
            bearer_token: self.bearer_token,
        });
        // Expiry runs at every collection too, so series go even when no request comes.
        let expiry = Arc::downgrade(&state);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Start(e.to_string()))?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let thread = std::thread::Builder::new()
            .name("otlp-receiver".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let started = serve::serve(state, grpc, http, tls);
                    let ok = started.is_ok();
                    let _ = ready_tx.send(started);
                    if ok {
                        let _ = stop_rx.await;
                    }
                });
                runtime.shutdown_timeout(Duration::from_millis(500));
            })
            .map_err(|e| Error::Start(e.to_string()))?;
        let started = match ready_rx.recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::Start(e)),
            Err(_) => Err(Error::Start("the receiver thread stopped".into())),
        };
        if let Err(e) = started {
            // What was taken over goes back, for the next receiver to take.
            if let Some(previous) = &self.continue_from {
                previous.adopt(&recorder);
            }
            return Err(e);
        }
        let expiry = registry.register_collector(move || {
            if let Some(state) = expiry.upgrade() {
                state.recorder.maintain(std::time::Instant::now());
            }
        });
        Ok(OtlpReceiver {
            _expiry: expiry,
            recorder,
            grpc_addr,
            http_addr,
            running: ComponentThread::new(
                "otlp_receiver",
                move || {
                    let _ = stop_tx.send(());
                },
                thread,
            ),
        })
    }
}

/// Checks that `cert` and `key` load as the receiver will load them (for a configuration
/// check before start).
pub fn check_tls(cert: &std::path::Path, key: &std::path::Path) -> Result<(), String> {
    serve::load_tls(cert, key).map(|_| ())
}

/// A running receiver; stops on [`shutdown`](sonde_core::Component::shutdown) or drop.
#[derive(custom_debug::Debug)]
#[must_use = "dropping the receiver stops it: keep it (`let _receiver = ...`) for as long as it should accept"]
pub struct OtlpReceiver {
    /// Runs the series expiry at each collection of the registry; removed with the receiver.
    _expiry: sonde_core::CollectorGuard,
    /// What was received, for a receiver started in this one's place.
    #[debug(skip)]
    recorder: Arc<record::Recorder>,
    grpc_addr: Option<SocketAddr>,
    http_addr: Option<SocketAddr>,
    /// The server thread, stopped by the first shutdown (or drop).
    running: ComponentThread,
}

impl OtlpReceiver {
    /// The bound gRPC address (with the actual port).
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc_addr
    }

    /// The bound HTTP address (with the actual port).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }
}

sonde_core::component_via!(
    /// Each request is recorded before it is answered: `flush` has nothing to do; `shutdown`
    /// stops serving (requests in flight get half a second). The series received stay.
    OtlpReceiver => running
);

/// Counts `n` points with an outcome.
pub(crate) fn count(
    points: &Option<Family<Counter>>,
    transport: &str,
    outcome: &str,
    reason: &str,
    n: u64,
) {
    if let (Some(f), true) = (points, n > 0) {
        f.with(&[transport, outcome, reason]).add(n);
    }
}
