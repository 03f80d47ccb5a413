//! The run's own metrics pushed with sonde's exporters while it goes, so a load test shows up
//! on the dashboards next to the service it loads: `http.client.request.duration` by request
//! name, status and error class, through Prometheus remote write or OTLP.

use std::time::Duration;

use sonde_core::{Registry, Resource};

/// Where to push, and how often: `sonde-load run`'s `--push-*` flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PushOptions {
    /// Push the run's own metrics (`http.client.request.duration` by request, status and
    /// error) to this Prometheus remote-write endpoint while it goes.
    #[arg(long = "push-remote-write", value_name = "URL", value_parser = parse_url)]
    pub remote_write: Option<String>,
    /// Push the run's own metrics to this OTLP/HTTP endpoint (`http://host:4318`) while it goes.
    #[arg(long = "push-otlp", value_name = "URL", value_parser = parse_url)]
    pub otlp: Option<String>,
    /// How often the run's metrics are pushed.
    #[arg(long = "push-interval", default_value = "5s", value_parser = parse_interval)]
    pub interval: Duration,
    /// Resource attribute on the pushed metrics, `key=value` (repeatable; `service.name` is
    /// `sonde-load`).
    #[arg(long = "push-attribute", value_name = "KEY=VALUE", value_parser = parse_attribute)]
    pub attributes: Vec<(String, String)>,
}

fn parse_url(u: &str) -> Result<String, String> {
    if u.starts_with("http://") || u.starts_with("https://") {
        Ok(u.to_owned())
    } else {
        Err("use an http:// or https:// URL".to_owned())
    }
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = crate::cli::parse_duration(s)?;
    if d < Duration::from_millis(100) {
        return Err("must be at least 100ms".to_owned());
    }
    Ok(d)
}

fn parse_attribute(a: &str) -> Result<(String, String), String> {
    let (k, v) = a
        .split_once('=')
        .filter(|(k, _)| !k.trim().is_empty())
        .ok_or("write it as key=value")?;
    Ok((k.trim().to_owned(), v.trim().to_owned()))
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
