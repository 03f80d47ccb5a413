//! The metrics exporter: periodic collection and delivery on a thread and runtime of its own.

use std::time::Duration;

use sonde_core::Temporality;
use sonde_push::{PushConfig, PushExporter, ReadSettings, Source, StartError};

use crate::Error;
use crate::config::{Shared, Signal, millis, setting, var};
use crate::convert::{self, HistogramAggregation};
use crate::transport::Client;

/// The `exporter` label of the self-metrics.
pub const EXPORTER: &str = "otlp";

pub use sonde_push::DROP_SHUTDOWN_TIMEOUT;

/// Configures and starts an [`OtlpMetricsExporter`].
///
/// Every setting left unset comes from the standard variables (`OTEL_EXPORTER_OTLP_*`,
/// `OTEL_METRIC_EXPORT_INTERVAL`, `OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`,
/// `OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION`), then from the defaults.
// The transport's `Debug` redacts header values and URL credentials.
#[derive(Debug)]
pub struct OtlpMetricsBuilder {
    /// The registry, selection and deltas to continue.
    read: ReadSettings,
    /// Transport, resource and where variables are read.
    shared: Shared,
    interval: Option<Duration>,
    temporality: Option<Temporality>,
    histograms: Option<HistogramAggregation>,
    max_points_per_request: usize,
    max_request_bytes: usize,
    /// Queue and retry settings (interval and timeout are resolved at install).
    delivery: PushConfig,
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
            read: ReadSettings::default(),
            shared: Shared::new(),
            interval: None,
            temporality: None,
            histograms: None,
            max_points_per_request: 10_000,
            max_request_bytes: 4 * 1024 * 1024,
            // 256 requests or 64 MiB queued, backoff 500 ms to 5 s, retried for 5 minutes.
            delivery: PushConfig::new(EXPORTER),
        }
    }

    sonde_push::read_setters!(read, delta_state: "OtlpMetricsExporter::delta_state");

    crate::config::shared_setters!();

    sonde_push::builder_setters! {
        /// Time between collections (default `OTEL_METRIC_EXPORT_INTERVAL`, else 60 s; at least
        /// 10 ms).
        interval: Some(Duration);
        /// Cumulative (default) or delta. With delta, counters and histograms carry the change per
        /// interval and up-down counters stay cumulative, as the `delta` preference of the
        /// specification asks.
        temporality: Some(Temporality);
        /// Explicit-bucket (default) or exponential histograms.
        histograms: Some(HistogramAggregation);
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
        self.delivery.queue_capacity = requests.max(1);
        self.delivery.max_queue_bytes = bytes.max(1);
        self
    }

    sonde_push::delivery_setters!(delivery, backoff: "500 ms to 5 s", retries: "no limit");

    /// Resolves the settings, registers the self-metrics and starts the exporter's thread.
    /// The first collection happens one interval from now.
    pub fn install(self) -> Result<OtlpMetricsExporter, Error> {
        let (settings, resource, env) = self.shared.resolve(Signal::Metrics)?;
        let interval = setting(
            self.interval,
            var(&*env, "OTEL_METRIC_EXPORT_INTERVAL"),
            millis,
            "it must be a whole number of milliseconds, like 60000",
            Duration::from_secs(60),
        )
        .max(Duration::from_millis(10));
        let temporality = setting(
            self.temporality,
            var(&*env, "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"),
            |v| match v.to_ascii_lowercase().as_str() {
                "cumulative" => Some(Temporality::Cumulative),
                // Every sonde instrument is synchronous, so `lowmemory` selects what `delta`
                // does.
                "delta" | "lowmemory" => Some(Temporality::Delta),
                _ => None,
            },
            "use cumulative, delta or lowmemory",
            Temporality::Cumulative,
        );
        let histograms = setting(
            self.histograms,
            var(
                &*env,
                "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION",
            ),
            |v| match v {
                "explicit_bucket_histogram" => Some(HistogramAggregation::ExplicitBuckets),
                "base2_exponential_bucket_histogram" => Some(HistogramAggregation::Exponential),
                _ => None,
            },
            "use explicit_bucket_histogram or base2_exponential_bucket_histogram",
            HistogramAggregation::ExplicitBuckets,
        );
        let mut options = convert::Options::new(&resource);
        options.histograms = histograms;
        options.max_points = self.max_points_per_request;
        options.max_bytes = self.max_request_bytes;
        let reader = self.read.reader(temporality);
        let delta_state = (temporality == Temporality::Delta).then(|| reader.delta_state());
        let mut config = self.delivery.clone();
        config.interval = interval;
        config.timeout = settings.timeout;
        let endpoint = settings.endpoint.clone();
        let source = Collector { reader, options };
        let inner = sonde_push::start(&self.read.registry, config, source, move || async move {
            Client::new(&settings)
        })
        .map_err(StartError::into_exporter)?;
        Ok(OtlpMetricsExporter {
            inner,
            endpoint,
            delta_state,
        })
    }
}

sonde_push::push_builder!(OtlpMetricsBuilder => OtlpMetricsExporter, error: Error);

/// A running OTLP metrics exporter. Dropping it shuts it down, waiting up to
/// [`DROP_SHUTDOWN_TIMEOUT`] for the last collection to be delivered, and logs that it did.
#[must_use = "dropping the handle stops the exporter: keep it (`let _otlp = ...`) for as long as it should export"]
pub struct OtlpMetricsExporter {
    inner: PushExporter,
    endpoint: String,
    delta_state: Option<sonde_core::DeltaState>,
}

sonde_push::component_via_inner!(OtlpMetricsExporter, error: Error, debug_url: endpoint);

impl OtlpMetricsExporter {
    /// Where requests go (for HTTP, the full URL).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// With delta temporality, what its deltas start from, for the exporter that replaces it
    /// ([`OtlpMetricsBuilder::continue_deltas`]).
    pub fn delta_state(&self) -> Option<sonde_core::DeltaState> {
        self.delta_state.clone()
    }
}

/// Reads, converts and encodes on the exporter's thread.
struct Collector {
    reader: sonde_core::Reader,
    options: convert::Options,
}

impl Source for Collector {
    type Batch = convert::Encoded;

    fn collect(&mut self) -> Vec<convert::Encoded> {
        let snapshot = self.reader.collect();
        convert::encode(&snapshot, &self.options)
    }
}
