//! The run's own metrics pushed with sonde's exporters while it goes, so a load test shows up
//! on the dashboards next to the service it loads: `http.client.request.duration` by request
//! name, status and error class, through Prometheus remote write or OTLP.

use std::time::Duration;

use sonde_core::{Registry, Resource};

/// Where to push, and how often.
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// Prometheus remote-write endpoint (`http://host:9090/api/v1/write`).
    pub remote_write: Option<String>,
    /// OTLP/HTTP endpoint (`http://host:4318`).
    pub otlp: Option<String>,
    /// Export interval while the run goes.
    pub interval: Duration,
    /// Extra resource attributes (`run.id=abc`), as `key=value`.
    pub attributes: Vec<(String, String)>,
}

impl PushOptions {
    /// Whether anything is to be pushed.
    pub fn any(&self) -> bool {
        self.remote_write.is_some() || self.otlp.is_some()
    }
}

/// The running exporters.
#[derive(Debug, Default)]
pub struct Pushers {
    remote_write: Option<sonde_prometheus::RemoteWriter>,
    otlp: Option<sonde_otlp::OtlpMetricsExporter>,
}

/// Starts the exporters over `registry` (the engine's metrics).
pub fn start(registry: &Registry, opts: &PushOptions) -> Result<Pushers, String> {
    let mut resource = Resource::empty().with("service.name", "sonde-load");
    for (k, v) in &opts.attributes {
        resource = resource.with(k.clone(), v.clone());
    }
    let mut p = Pushers::default();
    if let Some(url) = &opts.remote_write {
        p.remote_write = Some(
            sonde_prometheus::RemoteWriteBuilder::new(url.clone())
                .registry(registry.clone())
                .resource(resource.clone())
                .interval(opts.interval)
                .install()
                .map_err(|e| format!("--push-remote-write: {e}"))?,
        );
    }
    if let Some(url) = &opts.otlp {
        p.otlp = Some(
            sonde_otlp::OtlpMetricsBuilder::new()
                .registry(registry.clone())
                .resource(resource)
                .interval(opts.interval)
                .transport(
                    sonde_otlp::OtlpTransport::new()
                        .endpoint(url.clone())
                        .protocol(sonde_otlp::Protocol::HttpProtobuf),
                )
                .install()
                .map_err(|e| format!("--push-otlp: {e}"))?,
        );
    }
    Ok(p)
}

impl Pushers {
    /// Delivers the last figures and stops; returns one message per exporter that could not.
    pub fn finish(self, timeout: Duration) -> Vec<String> {
        let mut errors = Vec::new();
        if let Some(rw) = self.remote_write
            && let Err(e) = rw.shutdown(timeout)
        {
            errors.push(format!("remote write: {e}"));
        }
        if let Some(o) = self.otlp
            && let Err(e) = o.shutdown(timeout)
        {
            errors.push(format!("OTLP: {e}"));
        }
        errors
    }
}
