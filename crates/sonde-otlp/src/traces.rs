//! The one-call tracing pipeline: `tracing` spans become OpenTelemetry spans exported over
//! OTLP (tracing-opentelemetry + opentelemetry-otlp) and, through [`sonde_tracing::SondeLayer`],
//! latency metrics whose histogram buckets keep the trace ids as exemplars.
//!
//! The span exporter shares [`OtlpTransport`](crate::OtlpTransport) with the metrics exporter
//! (same endpoint, headers, compression, TLS; `OTEL_EXPORTER_OTLP_TRACES_*` variables for
//! traces), and runs on a runtime of its own, so neither the application's runtime nor its
//! threads wait on the network.
//!
//! ```no_run
//! use sonde_otlp::traces::TracesBuilder;
//! use sonde_otlp::OtlpTransport;
//!
//! let registry = sonde_core::Registry::global().clone();
//! let pipeline = TracesBuilder::new()
//!     .transport(OtlpTransport::new().endpoint("http://127.0.0.1:4318"))
//!     .registry(registry)
//!     .install()?;
//! tracing::info_span!("GET /users/:id", http.route = "/users/:id", http.request.method = "GET")
//!     .in_scope(|| { /* handle the request */ });
//! pipeline.shutdown(std::time::Duration::from_secs(5))?;
//! # Ok::<(), sonde_otlp::Error>(())
//! ```

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData, SpanExporter, Tracer};
use sonde_core::Registry;
use tracing_subscriber::layer::SubscriberExt as _;

use crate::Error;
use crate::config::{Compression, Protocol, Shared, Signal, setting, var};

/// Configures the tracing pipeline.
// The transport's `Debug` redacts header values and URL credentials.
#[derive(Debug)]
pub struct TracesBuilder {
    /// Transport, resource and where variables are read.
    shared: Shared,
    registry: Registry,
    sampler: Option<Sampler>,
    span_durations: bool,
    log_to_stderr: bool,
}

impl Default for TracesBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl TracesBuilder {
    /// Everything from the environment or the defaults; metrics go to the global registry.
    pub fn new() -> Self {
        TracesBuilder {
            shared: Shared::new(),
            registry: Registry::global().clone(),
            sampler: None,
            span_durations: false,
            log_to_stderr: true,
        }
    }

    crate::config::shared_setters!();

    sonde_push::builder_setters! {
        /// Where span latency metrics are recorded.
        registry: Registry;
        /// The sampler (default: `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`, else
        /// parent-based always-on).
        sampler: Some(Sampler);
        /// Also record `span.duration{span.name}` for spans without semantic-convention fields.
        span_durations: bool;
        /// Whether [`install`](Self::install) also prints the application's own events (its
        /// `tracing::info!`...) on stderr, filtered by `RUST_LOG` (default `info`), with colours
        /// only on a terminal. On by default, since the installed subscriber replaces any logging
        /// the application would otherwise set up; turn it off to compose your own with
        /// [`build`](Self::build) and [`TracingPipeline::subscriber`].
        log_to_stderr: bool;
    }

    /// Builds the exporter and tracer provider without installing anything globally; use
    /// [`TracingPipeline::subscriber`] or [`TracingPipeline::tracer`] to compose your own.
    pub fn build(self) -> Result<TracingPipeline, Error> {
        let (settings, resource, env) = self.shared.resolve(Signal::Traces)?;
        let sampler = match self.sampler {
            Some(s) => s,
            None => sampler_from(&*env),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sonde-otlp-traces")
            .enable_all()
            .build()
            .map_err(Error::Start)?;
        let exporter = {
            let _guard = runtime.enter();
            build_exporter(&settings)
        };
        let exporter = match exporter {
            Ok(e) => e,
            Err(e) => {
                runtime.shutdown_background();
                return Err(e);
            }
        };
        let exporter = OnRuntime {
            inner: exporter,
            handle: runtime.handle().clone(),
        };
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(sampler)
            .with_resource(
                opentelemetry_sdk::Resource::builder_empty()
                    .with_attributes(
                        resource
                            .iter()
                            .map(|(k, v)| KeyValue::new(k.to_string(), v.to_string())),
                    )
                    .build(),
            )
            .build();
        let tracer = provider.tracer("sonde");
        Ok(TracingPipeline {
            provider,
            tracer,
            registry: self.registry,
            span_durations: self.span_durations,
            log_filter: self.log_to_stderr.then(|| {
                let filter = env("RUST_LOG").unwrap_or_default();
                if filter.trim().is_empty() {
                    "info".to_owned()
                } else {
                    filter
                }
            }),
            runtime: Some(runtime),
        })
    }

    /// [`build`](Self::build), then installs the subscriber (`tracing_subscriber::registry()`
    /// with the sonde metrics layer inside the OpenTelemetry layer, and a stderr log layer
    /// unless [`log_to_stderr(false)`](Self::log_to_stderr)) as the global default, the
    /// provider as OpenTelemetry's global one, and the exemplar provider, so plain histogram
    /// observations inside sampled spans also keep their trace ids. Errors if a global
    /// subscriber is already set.
    pub fn install(self) -> Result<TracingPipeline, Error> {
        let pipeline = self.build()?;
        let subscriber = pipeline.compose(pipeline.log_filter.as_deref())?;
        tracing::subscriber::set_global_default(subscriber).map_err(|e| {
            Error::Config(format!(
                "a global tracing subscriber is already installed ({e}); use build() and compose TracingPipeline::subscriber() or tracer() into yours"
            ))
        })?;
        opentelemetry::global::set_tracer_provider(pipeline.provider.clone());
        sonde_tracing::install_exemplar_provider();
        Ok(pipeline)
    }
}

/// A running tracing pipeline. Dropping it shuts the provider down (exporting what is left)
/// and logs that it did.
#[must_use = "dropping the pipeline stops exporting spans: keep it (`let _tracing = ...`) for as long as spans should be exported"]
pub struct TracingPipeline {
    provider: SdkTracerProvider,
    tracer: Tracer,
    registry: Registry,
    span_durations: bool,
    /// The `RUST_LOG`-style filter of the stderr log layer `install` adds, if any.
    log_filter: Option<String>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for TracingPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TracingPipeline").finish_non_exhaustive()
    }
}

impl TracingPipeline {
    /// The OpenTelemetry tracer, for `tracing_opentelemetry::layer().with_tracer(..)`.
    pub fn tracer(&self) -> Tracer {
        self.tracer.clone()
    }

    /// The tracer provider.
    pub fn provider(&self) -> &SdkTracerProvider {
        &self.provider
    }

    /// A subscriber with the sonde metrics layer inside the OpenTelemetry layer, for
    /// `tracing::subscriber::with_default` or to install yourself.
    pub fn subscriber(&self) -> Result<impl tracing::Subscriber + Send + Sync + 'static, Error> {
        self.compose(None)
    }

    /// The subscriber, with a stderr log layer filtered by `log_filter` when given.
    fn compose(
        &self,
        log_filter: Option<&str>,
    ) -> Result<impl tracing::Subscriber + Send + Sync + 'static, Error> {
        use tracing_subscriber::Layer as _;
        let sonde = sonde_tracing::SondeLayer::new(&self.registry)
            .map_err(|e| Error::Config(format!("cannot register the span metrics: {e}")))?
            .span_durations(self.span_durations);
        let logs = log_filter.map(|f| {
            let filter = tracing_subscriber::EnvFilter::try_new(f).unwrap_or_else(|e| {
                sonde_core::diag::warn(format_args!(
                    "RUST_LOG={f:?} is ignored ({e}); logging at info"
                ));
                tracing_subscriber::EnvFilter::new("info")
            });
            // Colours only on a terminal: a file or the journal would keep the escape codes.
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_filter(filter)
        });
        Ok(tracing_subscriber::registry()
            .with(logs)
            .with(sonde)
            .with(tracing_opentelemetry::layer().with_tracer(self.tracer.clone())))
    }

    /// Exports every finished span now, waiting up to `timeout` (the export goes on in the
    /// background after that, bounded by the SDK's own export timeout).
    pub fn flush(&self, timeout: Duration) -> Result<(), Error> {
        // The SDK's force_flush takes no deadline: it runs on a helper thread, waited for here.
        let provider = self.provider.clone();
        let (done_tx, done) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("sonde-traces-flush".into())
            .spawn(move || {
                let _ = done_tx.send(provider.force_flush());
            })
            .map_err(|e| Error::Incomplete(format!("cannot start the flush thread: {e}")))?;
        match done.recv_timeout(timeout) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::Incomplete(format!("spans not exported: {e}"))),
            Err(_) => Err(Error::Incomplete(format!(
                "spans not exported within {timeout:?}; the export goes on in the background"
            ))),
        }
    }

    /// Exports what is left within `timeout` and stops; later spans are dropped. Calling it
    /// again returns `Ok`.
    pub fn shutdown(&self, timeout: Duration) -> Result<(), Error> {
        match self.provider.shutdown_with_timeout(timeout) {
            Ok(()) | Err(opentelemetry_sdk::error::OTelSdkError::AlreadyShutdown) => Ok(()),
            Err(e) => Err(Error::Incomplete(format!(
                "spans not exported at shutdown: {e}"
            ))),
        }
    }
}

/// The lifecycle every sonde component shares; the same as the inherent
/// [`flush`](TracingPipeline::flush) and [`shutdown`](TracingPipeline::shutdown).
impl sonde_core::Component for TracingPipeline {
    fn name(&self) -> &'static str {
        "otlp_traces"
    }

    fn flush(&self, timeout: Duration) -> Result<(), sonde_core::ComponentError> {
        TracingPipeline::flush(self, timeout)
            .map_err(|e| sonde_core::ComponentError::new("otlp_traces", e))
    }

    fn shutdown(&self, timeout: Duration) -> Result<(), sonde_core::ComponentError> {
        TracingPipeline::shutdown(self, timeout)
            .map_err(|e| sonde_core::ComponentError::new("otlp_traces", e))
    }
}

impl Drop for TracingPipeline {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown() {
            // Already shut down by `shutdown()` is the expected case, not worth a line.
            if !matches!(e, opentelemetry_sdk::error::OTelSdkError::AlreadyShutdown) {
                sonde_core::diag::warn(format_args!("tracing pipeline: {e}"));
            }
        } else {
            sonde_core::diag::info(format_args!(
                "tracing pipeline: stopped exporting spans because its handle was dropped (keep it in a variable, `let _tracing = ...`, for as long as spans should be exported)"
            ));
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

fn build_exporter(
    settings: &crate::config::Resolved,
) -> Result<opentelemetry_otlp::SpanExporter, Error> {
    let built = match settings.protocol {
        Protocol::Grpc => {
            let mut metadata = tonic::metadata::MetadataMap::new();
            for (k, v) in &settings.headers {
                let (Ok(k), Ok(v)) = (
                    k.parse::<tonic::metadata::AsciiMetadataKey>(),
                    v.parse::<tonic::metadata::AsciiMetadataValue>(),
                ) else {
                    return Err(Error::Config(format!(
                        "the header {k:?} cannot be sent as gRPC metadata"
                    )));
                };
                metadata.insert(k, v);
            }
            let mut b = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(settings.endpoint.clone())
                .with_timeout(settings.timeout)
                .with_metadata(metadata);
            if settings.compression == Compression::Gzip {
                b = b.with_compression(opentelemetry_otlp::Compression::Gzip);
            }
            if settings.endpoint.starts_with("https://") {
                b = b.with_tls_config(crate::transport::grpc_tls(settings)?);
            }
            b.build()
        }
        Protocol::HttpProtobuf => {
            let mut b = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(settings.endpoint.clone())
                .with_timeout(settings.timeout)
                .with_headers(settings.headers.iter().cloned().collect::<HashMap<_, _>>())
                .with_http_client(crate::transport::http_client(settings)?);
            if settings.compression == Compression::Gzip {
                b = b.with_compression(opentelemetry_otlp::Compression::Gzip);
            }
            b.build()
        }
    };
    built.map_err(|e| Error::Config(format!("cannot build the OTLP span exporter: {e}")))
}

/// Runs the inner exporter's futures on the pipeline's runtime: the SDK's batch processor
/// polls them on its own thread, where neither tonic nor reqwest would find a reactor.
struct OnRuntime {
    inner: opentelemetry_otlp::SpanExporter,
    handle: tokio::runtime::Handle,
}

// Not derived: the SDK exporter's `Debug` may show its headers.
impl std::fmt::Debug for OnRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnRuntime").finish_non_exhaustive()
    }
}

impl SpanExporter for OnRuntime {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let fut = self.inner.export(batch);
        if tokio::runtime::Handle::try_current().is_ok() {
            // Already on a runtime (a simple processor on an async thread): block_on would
            // panic there, so wait from a scoped thread instead.
            std::thread::scope(|s| {
                s.spawn(|| self.handle.block_on(fut))
                    .join()
                    .unwrap_or_else(|_| {
                        Err(opentelemetry_sdk::error::OTelSdkError::InternalFailure(
                            "the export panicked".into(),
                        ))
                    })
            })
        } else {
            self.handle.block_on(fut)
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// The sampler of `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`; values that cannot be
/// used are warned about and replaced by the defaults, as the specification asks.
fn sampler_from(env: &dyn Fn(&str) -> Option<String>) -> Sampler {
    let arg = || {
        setting(
            None,
            var(env, "OTEL_TRACES_SAMPLER_ARG"),
            |v| v.parse().ok().filter(|r| (0.0..=1.0).contains(r)),
            "it must be a ratio between 0 and 1, like 0.25",
            1.0,
        )
    };
    setting(
        None,
        var(env, "OTEL_TRACES_SAMPLER"),
        |name| match name {
            "always_on" => Some(Sampler::AlwaysOn),
            "always_off" => Some(Sampler::AlwaysOff),
            "traceidratio" => Some(Sampler::TraceIdRatioBased(arg())),
            "parentbased_always_on" => Some(Sampler::ParentBased(Box::new(Sampler::AlwaysOn))),
            "parentbased_always_off" => Some(Sampler::ParentBased(Box::new(Sampler::AlwaysOff))),
            "parentbased_traceidratio" => Some(Sampler::ParentBased(Box::new(
                Sampler::TraceIdRatioBased(arg()),
            ))),
            _ => None,
        },
        "use always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio",
        Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::fixed_env as env;

    #[test]
    fn samplers_come_from_the_environment() {
        assert!(matches!(sampler_from(&env(&[])), Sampler::ParentBased(_)));
        assert!(matches!(
            sampler_from(&env(&[("OTEL_TRACES_SAMPLER", "always_off")])),
            Sampler::AlwaysOff
        ));
        match sampler_from(&env(&[
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
        ])) {
            Sampler::TraceIdRatioBased(r) => assert_eq!(r, 0.25),
            s => panic!("{s:?}"),
        }
    }

    #[test]
    fn bad_sampler_variables_warn_and_fall_back_to_the_defaults() {
        let (s, lines) = sonde_core::testing::capture_diagnostics(|| {
            sampler_from(&env(&[
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "2"),
            ]))
        });
        assert!(
            matches!(s, Sampler::TraceIdRatioBased(r) if r == 1.0),
            "{s:?}"
        );
        assert!(
            lines.len() == 1 && lines[0].contains("between 0 and 1"),
            "{lines:?}"
        );
        let (s, lines) = sonde_core::testing::capture_diagnostics(|| {
            sampler_from(&env(&[("OTEL_TRACES_SAMPLER", "jaeger")]))
        });
        assert!(matches!(s, Sampler::ParentBased(_)), "{s:?}");
        assert!(
            lines[0].starts_with("WARN OTEL_TRACES_SAMPLER=\"jaeger\" is ignored"),
            "{lines:?}"
        );
    }
}
