//! The PutMetricData exporter, on the push engine's thread and runtime.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_credential_types::Credentials;
use aws_sdk_cloudwatch::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use sonde_core::{Resource, Temporality};
use sonde_push::{Outcome, PushConfig, PushExporter, ReadSettings, Sink, Source, StartError};

use crate::Error;
use crate::datum::{self, Datum, DatumValue, MAX_REQUEST_BYTES, Settings};

/// The `exporter` label of the self-metrics.
pub const EXPORTER: &str = "cloudwatch";

pub use sonde_push::DROP_SHUTDOWN_TIMEOUT;

/// Configures and starts a [`CloudWatchExporter`].
///
/// Region and credentials come from the standard AWS chain (`AWS_REGION`, `AWS_PROFILE`,
/// `AWS_ACCESS_KEY_ID`..., instance and container roles) unless set here.
// No credential, and no `user:password@` of an endpoint URL, in `Debug` output.
#[derive(custom_debug::Debug)]
pub struct CloudWatchBuilder {
    /// The registry, selection and deltas to continue.
    #[debug(skip)]
    read: ReadSettings,
    namespace: String,
    interval: Duration,
    settings: Settings,
    #[debug(skip)]
    resource: Option<Resource>,
    region: Option<String>,
    #[debug(with = sonde_settings::redact::optional_url)]
    endpoint_url: Option<String>,
    #[debug(with = sonde_settings::redact::secret)]
    credentials: Option<Credentials>,
    timeout: Duration,
    /// Queue and retry settings.
    #[debug(skip)]
    delivery: PushConfig,
    #[debug(skip)]
    jitter_first: bool,
}

impl CloudWatchBuilder {
    /// Exports the global registry to `namespace` every 60 s.
    pub fn new(namespace: impl Into<String>) -> Self {
        CloudWatchBuilder {
            read: ReadSettings::default(),
            namespace: namespace.into(),
            interval: Duration::from_secs(60),
            settings: Settings::default(),
            resource: None,
            region: None,
            endpoint_url: None,
            credentials: None,
            timeout: Duration::from_secs(10),
            delivery: PushConfig {
                queue_capacity: 64,
                max_backoff: Duration::from_secs(10),
                ..PushConfig::new(EXPORTER)
            },
            jitter_first: true,
        }
    }

    /// Time between collections (default 60 s; at least 1 s).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_secs(1));
        self
    }

    /// High-resolution (1 s) storage instead of 60 s; CloudWatch charges more for it.
    pub fn high_resolution(mut self, on: bool) -> Self {
        self.settings.storage_resolution = if on { 1 } else { 60 };
        self
    }

    /// Only these labels become dimensions.
    pub fn allow_dimensions<S: Into<String>>(
        mut self,
        labels: impl IntoIterator<Item = S>,
    ) -> Self {
        self.settings.dimensions.allow = Some(labels.into_iter().map(Into::into).collect());
        self
    }

    /// These labels never become dimensions (the series are summed or merged across them).
    pub fn deny_dimensions<S: Into<String>>(mut self, labels: impl IntoIterator<Item = S>) -> Self {
        self.settings.dimensions.deny = labels.into_iter().map(Into::into).collect();
        self
    }

    /// Resource attributes added as dimensions to every datum (default `service.name`).
    pub fn resource_dimensions<S: Into<String>>(
        mut self,
        keys: impl IntoIterator<Item = S>,
    ) -> Self {
        self.settings.dimensions.resource = keys.into_iter().map(Into::into).collect();
        self
    }

    /// Also sends every metric aggregated to this dimension set, like the EMF libraries'
    /// dimension sets and the CloudWatch agent's `aggregation_dimensions`: counters summed,
    /// gauges and histograms merged into one distribution. `[]` is the metric without labels.
    pub fn rollup<S: Into<String>>(mut self, labels: impl IntoIterator<Item = S>) -> Self {
        self.settings
            .dimensions
            .rollups
            .push(labels.into_iter().map(Into::into).collect());
        self
    }

    /// Whether each series is also sent with all its labels (default true); turn off to send
    /// only the rollups.
    pub fn full_dimensions(mut self, on: bool) -> Self {
        self.settings.dimensions.full = on;
        self
    }

    /// Most `Values` per histogram series per interval (default 150: one datum per series).
    pub fn max_values_per_series(mut self, n: usize) -> Self {
        self.settings.max_values_per_series = n.max(1);
        self
    }

    /// Whether sonde's own `sonde.*` metrics are sent too (default false: every CloudWatch
    /// metric is billed).
    pub fn self_metrics(mut self, on: bool) -> Self {
        self.settings.self_metrics = on;
        self
    }

    /// Whether counters that did not change are sent as 0 (default true).
    pub fn send_unchanged_counters(mut self, on: bool) -> Self {
        self.settings.send_unchanged_counters = on;
        self
    }

    sonde_push::builder_setters! {
        /// The resource (default [`Resource::detect`]).
        resource: Some(Resource);
        /// The AWS region (default: the standard chain).
        region: Some(impl Into<String>);
        /// Another endpoint (a VPC endpoint, or a test endpoint); `AWS_ENDPOINT_URL_CLOUDWATCH`
        /// works too.
        endpoint_url: Some(impl Into<String>);
    }

    /// Static credentials instead of the standard chain.
    pub fn credentials(mut self, access_key_id: &str, secret_access_key: &str) -> Self {
        self.credentials = Some(Credentials::new(
            access_key_id,
            secret_access_key,
            None,
            None,
            "sonde",
        ));
        self
    }

    /// How long one PutMetricData call may take (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Most requests waiting (default 64); the oldest is dropped when full.
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.delivery.queue_capacity = n.max(1);
        self
    }

    sonde_push::delivery_setters!(delivery, backoff: "500 ms to 10 s", retries: "no limit");

    /// Whether the first collection is drawn at random within the first interval (default
    /// true), so a fleet started together does not call the API in step.
    pub fn jitter_first_flush(mut self, on: bool) -> Self {
        self.jitter_first = on;
        self
    }

    sonde_push::read_setters!(read, delta_state: "CloudWatchExporter::delta_state");

    /// The conversion settings, for [`crate::cost_preview`].
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// What this exporter would cost for the series its registry holds now: its selection,
    /// settings and interval applied (see [`crate::cost_preview`]).
    pub fn cost_preview(&self) -> crate::CostPreview {
        let resource = self.resource.clone().unwrap_or_else(Resource::detect);
        crate::cost::cost_preview_selected(
            &self.read.registry,
            &resource,
            &self.settings,
            self.interval,
            &self.read.selection,
        )
    }

    /// Checks the settings, loads the AWS configuration and starts the exporter's thread.
    pub fn install(self) -> Result<CloudWatchExporter, Error> {
        check_namespace(&self.namespace)?;
        if self.region.as_deref().is_some_and(|r| r.trim().is_empty()) {
            return Err(Error::Config(
                "the region is empty; give one like \"us-east-1\"".into(),
            ));
        }
        let resource = self.resource.unwrap_or_else(Resource::detect);
        let reader = self.read.reader(Temporality::Delta);
        let delta_state = reader.delta_state();
        let source = Collector {
            reader,
            resource,
            settings: self.settings,
            dropped: Vec::new(),
        };
        let mut config = self.delivery.clone();
        config.interval = self.interval;
        config.jitter_first = self.jitter_first;
        config.timeout = self.timeout;
        let (region, endpoint_url, credentials, timeout) = (
            self.region,
            self.endpoint_url,
            self.credentials,
            self.timeout,
        );
        let namespace = self.namespace.clone();
        let inner = sonde_push::start(&self.read.registry, config, source, move || async move {
            // Answers capped: an endless body would otherwise be held whole.
            let http = sonde_http1::aws::http_client(sonde_http1::aws::MAX_ANSWER_BYTES);
            let mut loader = aws_config::defaults(BehaviorVersion::latest())
                .http_client(http)
                // Retries are ours: per batch, counted, bounded by the shutdown deadline.
                .retry_config(aws_config::retry::RetryConfig::disabled())
                .timeout_config(
                    aws_config::timeout::TimeoutConfig::builder()
                        .operation_attempt_timeout(timeout)
                        .connect_timeout(timeout)
                        .build(),
                );
            if let Some(r) = region {
                loader = loader.region(aws_config::Region::new(r));
            }
            if let Some(u) = endpoint_url {
                loader = loader.endpoint_url(u);
            }
            if let Some(c) = credentials {
                loader = loader.credentials_provider(c);
            }
            let sdk = loader.load().await;
            if sdk.region().is_none_or(|r| r.as_ref().trim().is_empty()) {
                return Err(Error::Config(
                    "no AWS region: set AWS_REGION (or a profile's region) or call CloudWatchBuilder::region".into(),
                ));
            }
            Ok(PutMetricData {
                client: aws_sdk_cloudwatch::Client::new(&sdk),
                namespace,
            })
        })
        .map_err(StartError::into_exporter)?;
        Ok(CloudWatchExporter {
            inner,
            namespace: self.namespace,
            delta_state,
        })
    }
}

sonde_push::push_builder!(CloudWatchBuilder => CloudWatchExporter, error: Error);

/// Checks a namespace as [`CloudWatchBuilder::install`] and [`EmfBuilder::build`](crate::EmfBuilder::build)
/// do: 1-255 printable ASCII characters, not starting with `AWS/` (reserved for AWS services)
/// or `:`. Public so that a configuration check refuses exactly what start-up would.
pub fn check_namespace(ns: &str) -> Result<(), Error> {
    if ns.is_empty()
        || ns.len() > 255
        || !ns.chars().all(|c| c.is_ascii() && !c.is_ascii_control())
        || ns.starts_with("AWS/")
        || ns.starts_with(':')
    {
        return Err(Error::Config(format!(
            "the namespace {ns:?} is not accepted by CloudWatch: use 1-255 printable ASCII characters, not starting with \"AWS/\" (reserved for AWS services) or \":\""
        )));
    }
    Ok(())
}

/// A running CloudWatch exporter. Dropping it shuts it down, waiting up to
/// [`DROP_SHUTDOWN_TIMEOUT`] for the last interval, and logs that it did.
#[derive(Debug)]
#[must_use = "dropping the handle stops the exporter: keep it (`let _cloudwatch = ...`) for as long as it should export"]
pub struct CloudWatchExporter {
    inner: PushExporter,
    namespace: String,
    delta_state: sonde_core::DeltaState,
}

sonde_push::component_via_inner!(CloudWatchExporter, error: Error);

impl CloudWatchExporter {
    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// What its deltas start from, for the exporter that replaces it
    /// ([`CloudWatchBuilder::continue_deltas`]).
    pub fn delta_state(&self) -> sonde_core::DeltaState {
        self.delta_state.clone()
    }
}

/// One PutMetricData request's datums.
pub(crate) struct Batch {
    datums: Vec<Datum>,
    bytes: usize,
}

impl sonde_push::Batch for Batch {
    fn points(&self) -> u64 {
        self.datums.len() as u64
    }
    fn bytes(&self) -> usize {
        self.bytes
    }
    const DURABLE: bool = true;
    fn encode(&self, out: &mut Vec<u8>) {
        datum::encode_datums(&self.datums, out);
    }
    fn decode(bytes: Vec<u8>, _points: u64) -> Option<Self> {
        let datums = datum::decode_datums(&bytes, StandardUnit::values())?;
        Some(Batch {
            bytes: datums.iter().map(Datum::encoded_size_bound).sum(),
            datums,
        })
    }
}

struct Collector {
    reader: sonde_core::Reader,
    resource: Resource,
    settings: Settings,
    dropped: Vec<(&'static str, u64)>,
}

impl Source for Collector {
    type Batch = Batch;

    fn collect(&mut self) -> Vec<Batch> {
        let snapshot = self.reader.collect();
        let converted = datum::convert(&snapshot, &self.resource, &self.settings);
        self.dropped = converted.dropped.into_iter().collect();
        datum::batches(converted.datums, MAX_REQUEST_BYTES)
            .into_iter()
            .map(|datums| Batch {
                bytes: datums.iter().map(Datum::encoded_size_bound).sum(),
                datums,
            })
            .collect()
    }

    fn take_dropped(&mut self) -> Vec<(&'static str, u64)> {
        std::mem::take(&mut self.dropped)
    }
}

pub(crate) fn sdk_datum(d: &Datum) -> MetricDatum {
    let mut b = MetricDatum::builder()
        .metric_name(&d.name)
        .set_dimensions(Some(
            d.dimensions
                .iter()
                .map(|(k, v)| Dimension::builder().name(k).value(v).build())
                .collect(),
        ))
        .timestamp(aws_smithy_types::DateTime::from_millis(
            i64::try_from(d.timestamp_ms).unwrap_or(i64::MAX),
        ))
        .unit(StandardUnit::from(d.unit))
        .storage_resolution(d.storage_resolution);
    b = match &d.value {
        DatumValue::Value(v) => b.value(*v),
        DatumValue::Values { values, counts } => b
            .set_values(Some(values.clone()))
            .set_counts(Some(counts.clone())),
    };
    b.build()
}

struct PutMetricData {
    client: aws_sdk_cloudwatch::Client,
    namespace: String,
}

/// Error codes CloudWatch uses for throttling and its own faults.
const RETRYABLE_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestLimitExceeded",
    "InternalServiceFault",
    "InternalServiceError",
    "InternalFailure",
    "ServiceUnavailable",
];

impl Sink for PutMetricData {
    type Batch = Batch;

    async fn send(&mut self, batch: &Batch, _timeout: Duration) -> Outcome {
        let result = self
            .client
            .put_metric_data()
            .namespace(&self.namespace)
            .set_metric_data(Some(batch.datums.iter().map(sdk_datum).collect()))
            .send()
            .await;
        match result {
            Ok(_) => Outcome::Success {
                rejected: 0,
                message: String::new(),
            },
            Err(SdkError::ServiceError(e)) => classify(
                e.raw().status().as_u16(),
                e.err().code().unwrap_or(""),
                e.err().message().unwrap_or(""),
            ),
            Err(SdkError::ConstructionFailure(e)) => {
                Outcome::Fail(format!("could not build the request: {e:?}"))
            }
            Err(e) => {
                // A response error: the endpoint answered, but the answer could not be read
                // (cut at the cap, or not what CloudWatch sends).
                let what = if matches!(e, SdkError::ResponseError(_)) {
                    "CloudWatch's answer could not be read"
                } else {
                    "could not reach CloudWatch"
                };
                Outcome::Retry {
                    error: format!("{what}: {}", sonde_push::error_chain(&e)),
                    after: None,
                }
            }
        }
    }
}

/// Throttling, faults and 5xx are retried; anything else (InvalidParameter*, MissingParameter,
/// access denied) would fail again the same way.
fn classify(status: u16, code: &str, message: &str) -> Outcome {
    let error = format!("CloudWatch answered {status} {code}: {message}");
    if RETRYABLE_CODES.contains(&code) || status >= 500 || status == 429 {
        Outcome::Retry { error, after: None }
    } else {
        Outcome::Fail(format!(
            "{error}; the datums were dropped (if the code is InvalidParameter*, sonde's validation missed a limit: please report it)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_credentials() {
        let b = CloudWatchBuilder::new("App")
            .endpoint_url("https://user:s3cret-pw@monitoring.example")
            .credentials("AKIDEXAMPLE", "s3cret-key");
        // The configuration the agent reads hides the endpoint's credentials as well.
        let config = crate::CloudWatchConfig {
            endpoint_url: Some("https://user:s3cret-pw@monitoring.example".into()),
            ..Default::default()
        };
        for shown in [format!("{b:?}"), format!("{config:?}")] {
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(!shown.contains("AKIDEXAMPLE"), "{shown}");
            assert!(
                shown.contains("https://<redacted>@monitoring.example"),
                "{shown}"
            );
        }
    }

    #[test]
    fn throttling_and_faults_are_retried_invalid_parameters_are_not() {
        let retry = |status, code| matches!(classify(status, code, "m"), Outcome::Retry { .. });
        assert!(retry(400, "Throttling"));
        assert!(retry(500, "InternalServiceError"));
        assert!(retry(500, "InternalServiceFault"));
        assert!(retry(503, ""));
        assert!(retry(429, ""));
        for code in [
            "InvalidParameterValue",
            "InvalidParameterCombination",
            "MissingParameter",
            "AccessDenied",
        ] {
            assert!(!retry(400, code), "{code}");
        }
    }

    #[test]
    fn namespaces_are_checked() {
        assert!(check_namespace("checkout").is_ok());
        assert!(check_namespace("team/checkout-api").is_ok());
        for bad in ["", "AWS/EC2", "naïve", &"x".repeat(256)] {
            assert!(check_namespace(bad).is_err(), "{bad}");
        }
    }
}
