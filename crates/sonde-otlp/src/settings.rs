//! [`OtlpExporterConfig`]: the metrics exporter as a configuration file sets it (the agent's
//! `[exporters.otlp]`), checked by resolving it as start-up does.

use std::time::Duration;

use serde::Deserialize;
use sonde_core::Temporality;
use sonde_settings::{Expect, Problem, Settings};

use crate::{Compression, OtlpMetricsBuilder, OtlpTransport, Protocol, Signal};

/// The OTLP metrics exporter's settings. What is not set here comes from the
/// `OTEL_EXPORTER_OTLP_*` variables, else the defaults. The registry, resource, selection and a
/// durable queue are the caller's to add to the [builder](Self::builder).
///
/// ```
/// use sonde_otlp::OtlpExporterConfig;
/// use sonde_settings::Settings;
///
/// let config: OtlpExporterConfig = serde_json::from_str(
///     r#"{"endpoint": "http://collector:4318", "protocol": "http/protobuf", "temporality": "delta"}"#,
/// )?;
/// assert!(config.validate().is_empty());
/// let bad = OtlpExporterConfig { endpoint: Some("collector:4318".into()), ..config };
/// assert!(bad.validate()[0].message.contains("must be an http:// or https:// URL"));
/// # Ok::<(), serde_json::Error>(())
/// ```
// Header values (API keys, tokens) and URL credentials stay out of `Debug` output.
#[derive(Clone, PartialEq, Deserialize, custom_debug::Debug)]
#[serde(default, deny_unknown_fields)]
pub struct OtlpExporterConfig {
    /// The receiver (`http://collector:4317`).
    #[debug(with = sonde_settings::redact::optional_url)]
    pub endpoint: Option<String>,
    /// `grpc` or `http/protobuf`.
    pub protocol: Option<Protocol>,
    /// `gzip` or `none`.
    pub compression: Option<Compression>,
    /// Extra headers (API keys, tenants).
    #[serde(with = "sonde_settings::pairs")]
    #[debug(with = sonde_settings::redact::headers)]
    pub headers: Vec<(String, String)>,
    /// Each request's deadline.
    #[serde(deserialize_with = "some_duration")]
    pub timeout: Option<Duration>,
    /// Export interval (default 60 s).
    #[serde(with = "sonde_settings::duration")]
    pub interval: Duration,
    /// `cumulative` or `delta` (default: `OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`,
    /// else cumulative).
    #[serde(deserialize_with = "temporality")]
    pub temporality: Option<Temporality>,
}

impl Default for OtlpExporterConfig {
    fn default() -> Self {
        OtlpExporterConfig {
            endpoint: None,
            protocol: None,
            compression: None,
            headers: Vec::new(),
            timeout: None,
            interval: Duration::from_secs(60),
            temporality: None,
        }
    }
}

fn some_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    sonde_settings::duration::deserialize(d).map(Some)
}

fn temporality<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Temporality>, D::Error> {
    match String::deserialize(d)?.as_str() {
        "cumulative" => Ok(Some(Temporality::Cumulative)),
        "delta" => Ok(Some(Temporality::Delta)),
        other => Err(serde::de::Error::unknown_variant(
            other,
            &["cumulative", "delta"],
        )),
    }
}

impl OtlpExporterConfig {
    /// The transport these settings describe (the rest from `OTEL_EXPORTER_OTLP_*`).
    pub fn transport(&self) -> OtlpTransport {
        let mut t = OtlpTransport::new();
        if let Some(e) = &self.endpoint {
            t = t.endpoint(e.clone());
        }
        if let Some(p) = self.protocol {
            t = t.protocol(p);
        }
        if let Some(c) = self.compression {
            t = t.compression(c);
        }
        for (k, v) in &self.headers {
            t = t.header(k.clone(), v.clone());
        }
        if let Some(d) = self.timeout {
            t = t.timeout(d);
        }
        t
    }

    /// The exporter these settings describe.
    pub fn builder(&self) -> OtlpMetricsBuilder {
        let b = OtlpMetricsBuilder::new()
            .transport(self.transport())
            .interval(self.interval);
        match self.temporality {
            Some(t) => b.temporality(t),
            None => b,
        }
    }
}

impl Settings for OtlpExporterConfig {
    fn expect(key: &str) -> Option<Expect> {
        Some(match key {
            "interval" => Expect::interval(Duration::from_secs(60)),
            "timeout" => Expect::duration(
                Duration::from_millis(10)..=Duration::from_secs(3600),
                Duration::from_secs(10),
            ),
            "protocol" => Expect::OneOf(Protocol::NAMES),
            "compression" => Expect::OneOf(Compression::NAMES),
            "temporality" => Expect::OneOf(&["cumulative", "delta"]),
            _ => return None,
        })
    }

    /// The ranges, then the transport resolved as start-up resolves it (with this process's
    /// `OTEL_EXPORTER_OTLP_*` variables).
    fn validate(&self) -> Vec<Problem> {
        let mut problems: Vec<Problem> = [
            Self::within("interval", self.interval),
            self.timeout.and_then(|t| Self::within("timeout", t)),
        ]
        .into_iter()
        .flatten()
        .collect();
        let env = |k: &str| std::env::var(k).ok();
        if let Err(e) = self.transport().resolve(Signal::Metrics, &env) {
            let message = e.to_string();
            let key = if message.contains("header") {
                "headers"
            } else {
                "endpoint"
            };
            problems.push(Problem::new(
                key,
                message,
                "fix it here (or in the OTEL_EXPORTER_OTLP_* variable it names)",
            ));
        }
        problems
    }
}
