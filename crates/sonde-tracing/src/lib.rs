//! # sonde-tracing
//!
//! A [`tracing_subscriber::Layer`] that turns spans into duration histograms:
//!
//! - spans carrying semantic-convention fields become the conventional metrics:
//!   `http.route` (with `http.request.method`, `http.response.status_code`) →
//!   `http.server.request.duration`; `server.address` with `http.request.method` →
//!   `http.client.request.duration`; `db.system.name` (with `db.operation.name`,
//!   `db.collection.name`) → `db.client.operation.duration`; `error.type` is carried over;
//! - other spans, opt-in ([`SondeLayer::span_durations`]), → `span.duration{span.name}`.
//!
//! With `tracing-opentelemetry` installed, each observation keeps the span's trace and span id as
//! its bucket's exemplar when the span is sampled, so a dashboard jumps from a slow bucket to the
//! trace; [`install_exemplar_provider`] does the same for plain `observe` calls made inside spans.
//!
//! Put the sonde layer *inside* the OpenTelemetry layer (`registry().with(sonde).with(otel)`):
//! inner layers see a span close first, while its OpenTelemetry ids still exist.
//!
//! ```
//! use tracing_subscriber::layer::SubscriberExt;
//! let registry = sonde_core::Registry::new();
//! let layer = sonde_tracing::SondeLayer::new(&registry)?.span_durations(true);
//! let subscriber = tracing_subscriber::registry().with(layer);
//! tracing::subscriber::with_default(subscriber, || {
//!     let _s = tracing::info_span!("db", db.system.name = "sqlite", db.operation.name = "SELECT", db.collection.name = "users").entered();
//! });
//! assert!(registry.snapshot().family("db.client.operation.duration").is_some());
//! # Ok::<(), sonde_tracing::Error>(())
//! ```
#![warn(missing_docs)]

use std::fmt;
use std::sync::OnceLock;
use std::time::Instant;

use opentelemetry::trace::TraceContextExt;
use sonde_core::{Family, Histogram, Registry, TraceContext, Unit};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Dispatch, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// Errors of the tracing integration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A family could not be registered (usually: the name exists with another definition).
    #[error("could not register the span metrics: {0}")]
    Register(#[from] sonde_core::Error),
}

/// The fields the layer understands, collected from a span's attributes and later records.
#[derive(Default, Debug)]
struct Fields {
    method: Option<String>,
    route: Option<String>,
    status: Option<String>,
    server: Option<String>,
    db_system: Option<String>,
    db_operation: Option<String>,
    db_collection: Option<String>,
    error: Option<String>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.set(field.name(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.set(field.name(), value.to_owned());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.set(field.name(), value.to_string());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.set(field.name(), value.to_string());
    }
}

impl Fields {
    fn set(&mut self, name: &str, value: String) {
        let slot = match name {
            "http.request.method" => &mut self.method,
            "http.route" => &mut self.route,
            "http.response.status_code" => &mut self.status,
            "server.address" => &mut self.server,
            "db.system.name" => &mut self.db_system,
            "db.operation.name" => &mut self.db_operation,
            "db.collection.name" => &mut self.db_collection,
            "error.type" => &mut self.error,
            _ => return,
        };
        *slot = Some(value);
    }
}

struct Timing {
    start: Instant,
    fields: Fields,
}

/// Turns closing spans into duration observations; see the crate docs.
pub struct SondeLayer {
    http_server: Family<Histogram>,
    http_client: Family<Histogram>,
    db: Family<Histogram>,
    spans: Option<Family<Histogram>>,
    registry: Registry,
    dispatch: OnceLock<tracing::dispatcher::WeakDispatch>,
}

impl SondeLayer {
    /// Registers (or reuses) the conventional families in `registry`, with exemplars.
    pub fn new(registry: &Registry) -> Result<SondeLayer, Error> {
        use sonde_instrument::conventions as c;
        Ok(SondeLayer {
            http_server: c::http_server_request_duration(registry)?,
            http_client: c::http_client_request_duration(registry)?,
            db: c::db_client_operation_duration(registry)?,
            spans: None,
            registry: registry.clone(),
            dispatch: OnceLock::new(),
        })
    }

    /// Also records spans without semantic-convention fields in `span.duration{span.name}`
    /// (seconds). Span names are static strings in `tracing`, so cardinality stays bounded.
    pub fn span_durations(mut self, on: bool) -> Self {
        self.spans = if on {
            self.registry
                .histogram("span.duration")
                .description("Duration of tracing spans by name.")
                .unit(Unit::Seconds)
                .labels(["span.name"])
                .exemplars(true)
                .build()
                .ok()
        } else {
            None
        };
        self
    }

    fn trace_context(&self, id: &Id) -> Option<TraceContext> {
        let dispatch = self.dispatch.get()?.upgrade()?;
        let cx = tracing_opentelemetry::get_otel_context(id, &dispatch)?;
        span_trace_context(&cx)
    }
}

fn span_trace_context(cx: &opentelemetry::Context) -> Option<TraceContext> {
    let span = cx.span();
    let sc = span.span_context();
    (sc.is_valid() && sc.is_sampled()).then(|| TraceContext {
        trace_id: sc.trace_id().to_bytes(),
        span_id: sc.span_id().to_bytes(),
    })
}

/// Installs the provider that gives plain `Histogram::observe` calls made inside a sampled span
/// that span's ids as exemplar (for families with exemplars enabled). Returns `false` if a
/// provider was already installed.
pub fn install_exemplar_provider() -> bool {
    fn current() -> Option<TraceContext> {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let span = tracing::Span::current();
        if span.is_disabled() {
            return None;
        }
        span_trace_context(&span.context())
    }
    sonde_core::exemplar::set_trace_context_provider(current)
}

impl<S> tracing_subscriber::Layer<S> for SondeLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        let _ = self.dispatch.set(subscriber.downgrade());
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        span.extensions_mut().insert(Timing {
            start: Instant::now(),
            fields,
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(t) = span.extensions_mut().get_mut::<Timing>()
        {
            values.record(&mut t.fields);
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(t) = span.extensions_mut().remove::<Timing>() else {
            return;
        };
        let name = span.name();
        drop(span);
        let secs = t.start.elapsed().as_secs_f64();
        let f = &t.fields;
        fn s(v: &Option<String>) -> &str {
            v.as_deref().unwrap_or("")
        }
        // Borrowed label arrays: no copies of the field values.
        let h = if f.db_system.is_some() {
            self.db.with(&[
                s(&f.db_system),
                s(&f.db_operation),
                s(&f.db_collection),
                s(&f.error),
            ])
        } else if f.server.is_some() && f.method.is_some() {
            self.http_client
                .with(&[s(&f.method), s(&f.server), s(&f.status), s(&f.error), ""])
        } else if f.route.is_some() || f.method.is_some() {
            self.http_server
                .with(&[s(&f.method), s(&f.route), s(&f.status), s(&f.error)])
        } else if let Some(spans) = &self.spans {
            spans.with(&[name])
        } else {
            return;
        };
        match self.trace_context(&id) {
            Some(cx) => h.observe_with_exemplar(secs, &cx),
            None => h.observe(secs),
        }
    }
}
