//! Per-request and per-span cost of sonde's instrumentation helpers, side by side with a bare
//! baseline and with tracing-opentelemetry's metrics layer, in one criterion run.
//!
//! Groups:
//!
//! - `http_server_request`: one request through a trivial tower service (`service_fn` answering
//!   an empty `200`), polled once with a no-op waker (its future is ready at once):
//!   - `bare`: the service alone;
//!   - `sonde_layer`: the same service wrapped in [`HttpServerLayer`], the route template read
//!     from a `String` extension of the request;
//!   - `sonde_direct`: `HttpServerMetrics::start("GET").finish("/users/{id}", 200)`, no tower
//!     (and no request).
//!
//!   `bare` and `sonde_layer` build the same request (URI, route extension) in every iteration
//!   and drop the same response, so their difference is the layer.
//! - `http_server_hyper`: the same handler as a hyper `service_fn`, called through hyper 1's own
//!   `Service` trait, bare and wrapped (`HttpServerLayer` implements hyper's `Service` with
//!   feature `hyper`);
//! - `http_client_request`: one request through a reqwest-middleware chain whose last
//!   middleware answers `200` without network, on a current-thread Tokio runtime: `bare`
//!   (that middleware alone) and `sonde_middleware` (+ `HttpClientMiddleware`, with a
//!   `UrlTemplate` extension), so their difference is the middleware.
//! - `http_server_actix`: one `GET /users/42` through an actix-web `App` (one route answering
//!   `200`) with actix's test helpers (`call_service`, no network), `bare` and wrapped in
//!   `HttpServerMetricsActix`;
//! - `span`: one `info_span!("request", http.request.method, http.route,
//!   http.response.status_code)` entered around a trivial body:
//!   - `no_layer`: a `tracing_subscriber::registry()` without layers (span bookkeeping only);
//!   - `sonde_layer`: + `SondeLayer` (records `http.server.request.duration`);
//!   - `otel_metrics_layer`: + tracing-opentelemetry's `MetricsLayer`, with the user code that
//!     layer needs for the same histogram (see [`otel_span_body`]).
//! - `span_by_name`: one `info_span!("request")` without semantic-convention fields:
//!   - `no_layer`, `sonde_span_durations` (`SondeLayer::span_durations(true)`, records
//!     `span.duration{span.name}`) and `otel_metrics_layer` (same idea as above).
//!
//! The OpenTelemetry pipeline is the SDK's cumulative one with a `ManualReader`, as in the
//! `instruments` bench. Before measuring, each variant is run once and checked to have recorded
//! exactly what it should (so that no variant is fast because it records nothing).
#![allow(clippy::unwrap_used, missing_docs)]

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, criterion_group, criterion_main};
use http::{Request, Response, Uri};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{
    InstrumentKind, ManualReader, Pipeline, SdkMeterProvider, Temporality,
};
use sonde::instrument::{HttpServerLayer, HttpServerMetrics};
use sonde::tracing::SondeLayer;
use tower::{Layer as _, Service, service_fn};
use tracing::Subscriber;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;

const ROUTE: &str = "/users/{id}";

/// The labels sonde records for one `GET /users/{id}` answered `200`.
const HTTP_LABELS: [(&str, &str); 4] = [
    ("http.request.method", "GET"),
    ("http.route", ROUTE),
    ("http.response.status_code", "200"),
    ("error.type", ""),
];

/// A request as a router would hand it to the middleware: its URI and, as an extension, the
/// matched route template (what `route_with` reads).
fn request() -> Request<()> {
    let mut req = Request::new(());
    *req.uri_mut() = Uri::from_static("/users/42");
    req.extensions_mut().insert(String::from(ROUTE));
    req
}

/// Calls a tower service once, as a server would: `poll_ready`, `call`, then polls the response
/// future. The trivial handler is ready at once, so a no-op waker is all the executor needed.
fn call<S>(svc: &mut S, req: Request<()>) -> Response<()>
where
    S: Service<Request<()>, Response = Response<()>, Error = Infallible>,
{
    let mut cx = Context::from_waker(Waker::noop());
    match svc.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        Poll::Ready(Err(e)) => match e {},
        Poll::Pending => panic!("the service is always ready"),
    }
    match pin!(svc.call(req)).poll(&mut cx) {
        Poll::Ready(Ok(resp)) => resp,
        Poll::Ready(Err(e)) => match e {},
        Poll::Pending => panic!("the handler answers at once"),
    }
}

fn handler()
-> impl Service<Request<()>, Response = Response<()>, Error = Infallible, Future: Send> + Clone {
    service_fn(|_req: Request<()>| async { Ok::<_, Infallible>(Response::new(())) })
}

/// Number of observations in the sonde histogram series `name{labels}` (0 if absent).
fn sonde_count(registry: &sonde::Registry, name: &str, labels: &[(&str, &str)]) -> u64 {
    registry
        .snapshot()
        .point(name, labels)
        .and_then(|p| p.histogram())
        .map_or(0, |h| h.count())
}

fn http_server_request(c: &mut Criterion) {
    let mut g = c.benchmark_group("http_server_request");

    let mut bare = handler();
    g.bench_function("bare", |b| b.iter(|| call(&mut bare, black_box(request()))));

    let registry = sonde::Registry::new();
    let metrics = HttpServerMetrics::install(&registry).unwrap();
    let layer = HttpServerLayer::new(metrics).route_with(|_uri, ext| ext.get::<String>().cloned());
    let mut wrapped = layer.layer(handler());
    call(&mut wrapped, request());
    let duration = "http.server.request.duration";
    assert_eq!(sonde_count(&registry, duration, &HTTP_LABELS), 1);
    g.bench_function("sonde_layer", |b| {
        b.iter(|| call(&mut wrapped, black_box(request())))
    });

    let registry = sonde::Registry::new();
    let metrics = HttpServerMetrics::install(&registry).unwrap();
    metrics.start("GET").finish(ROUTE, 200);
    assert_eq!(sonde_count(&registry, duration, &HTTP_LABELS), 1);
    g.bench_function("sonde_direct", |b| {
        b.iter(|| {
            black_box(&metrics)
                .start(black_box("GET"))
                .finish(black_box(ROUTE), 200)
        })
    });

    g.finish();
}

/// A `ManualReader` shared with the benchmark, so that the OpenTelemetry variants can be checked
/// to record (the provider takes ownership of its readers).
#[derive(Debug, Clone)]
struct SharedReader(Arc<ManualReader>);

impl MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline)
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

fn otel() -> (SdkMeterProvider, SharedReader) {
    let reader = SharedReader(Arc::new(ManualReader::builder().build()));
    let provider = SdkMeterProvider::builder()
        .with_reader(reader.clone())
        .build();
    (provider, reader)
}

/// Number of observations of the OpenTelemetry f64 histogram `name`, over all its attribute
/// sets, and the number of attributes of its first data point.
fn otel_count(reader: &SharedReader, name: &str) -> (u64, usize) {
    let mut rm = ResourceMetrics::default();
    reader.collect(&mut rm).unwrap();
    let mut out = (0, 0);
    for m in rm.scope_metrics().flat_map(|s| s.metrics()) {
        if m.name() != name {
            continue;
        }
        if let AggregatedMetrics::F64(MetricData::Histogram(h)) = m.data() {
            for (i, p) in h.data_points().enumerate() {
                out.0 += p.count();
                if i == 0 {
                    out.1 = p.attributes().count();
                }
            }
        }
    }
    out
}

/// The span of the `span` group, with the fields `SondeLayer` maps to
/// `http.server.request.duration`.
fn http_span() -> tracing::Span {
    tracing::info_span!(
        "request",
        http.request.method = "GET",
        http.route = "/users/{id}",
        http.response.status_code = 200u64
    )
}

/// The fair peer of `SondeLayer` with tracing-opentelemetry: its `MetricsLayer` does not time
/// spans (it only turns events with `histogram.` / `counter.` / `gauge.` fields into
/// instruments), so the equivalent of a span recorded as `http.server.request.duration` is user
/// code timing the span's body and emitting one event with the duration and the same attributes
/// before leaving the span. Two clock reads and one histogram record, like sonde's layer.
fn otel_span_body() -> i32 {
    let start = Instant::now();
    let out = black_box(1);
    tracing::info!(
        histogram.http.server.request.duration = start.elapsed().as_secs_f64(),
        http.request.method = "GET",
        http.route = "/users/{id}",
        http.response.status_code = 200u64
    );
    out
}

/// As [`otel_span_body`] for a span recorded by name (`span.duration{span.name}`).
fn otel_named_span_body() -> i32 {
    let start = Instant::now();
    let out = black_box(1);
    tracing::info!(
        histogram.span.duration = start.elapsed().as_secs_f64(),
        span.name = "request"
    );
    out
}

/// Benchmarks one span made by `make` and entered around `body`, with `subscriber` as the
/// thread's default, after checking that the span is enabled (a subscriber can filter spans out
/// and skip their bookkeeping altogether).
fn bench_span<S>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    id: &str,
    subscriber: S,
    make: fn() -> tracing::Span,
    body: fn() -> i32,
) where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync + 'static,
{
    tracing::subscriber::with_default(subscriber, || {
        let span = make();
        assert!(!span.is_disabled(), "{id}: span disabled");
        span.in_scope(body);
        g.bench_function(id, |b| b.iter(|| make().in_scope(body)));
    });
}

fn trivial_body() -> i32 {
    black_box(1)
}

fn span(c: &mut Criterion) {
    let mut g = c.benchmark_group("span");

    let none = tracing_subscriber::registry();
    bench_span(&mut g, "no_layer", none, http_span, trivial_body);

    let registry = sonde::Registry::new();
    let sonde = tracing_subscriber::registry().with(SondeLayer::new(&registry).unwrap());
    bench_span(&mut g, "sonde_layer", sonde, http_span, trivial_body);
    let n = sonde_count(&registry, "http.server.request.duration", &HTTP_LABELS);
    assert!(n > 1, "{n}");

    // The layer owns a clone of the provider: the pipeline must outlive the subscriber to be read.
    let (provider, reader) = otel();
    let otel = tracing_subscriber::registry()
        .with(tracing_opentelemetry::MetricsLayer::new(provider.clone()));
    bench_span(
        &mut g,
        "otel_metrics_layer",
        otel,
        http_span,
        otel_span_body,
    );
    let (n, attributes) = otel_count(&reader, "http.server.request.duration");
    assert!(n > 1 && attributes == 3, "{n} {attributes}");

    g.finish();
}

/// The span of the `span_by_name` group: no semantic-convention fields.
fn named_span() -> tracing::Span {
    tracing::info_span!("request")
}

fn span_by_name(c: &mut Criterion) {
    let mut g = c.benchmark_group("span_by_name");

    let none = tracing_subscriber::registry();
    bench_span(&mut g, "no_layer", none, named_span, trivial_body);

    let registry = sonde::Registry::new();
    let layer = SondeLayer::new(&registry).unwrap().span_durations(true);
    let sonde = tracing_subscriber::registry().with(layer);
    bench_span(
        &mut g,
        "sonde_span_durations",
        sonde,
        named_span,
        trivial_body,
    );
    let n = sonde_count(&registry, "span.duration", &[("span.name", "request")]);
    assert!(n > 1, "{n}");

    let (provider, reader) = otel();
    let otel = tracing_subscriber::registry()
        .with(tracing_opentelemetry::MetricsLayer::new(provider.clone()));
    bench_span(
        &mut g,
        "otel_metrics_layer",
        otel,
        named_span,
        otel_named_span_body,
    );
    let (n, attributes) = otel_count(&reader, "span.duration");
    assert!(n > 1 && attributes == 1, "{n} {attributes}");

    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
}

/// Calls a hyper service once through hyper's own trait, polling its future with a no-op waker.
fn call_hyper<S>(svc: &S, req: Request<String>) -> Response<String>
where
    S: hyper::service::Service<Request<String>, Response = Response<String>, Error = Infallible>,
{
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(svc.call(req)).poll(&mut cx) {
        Poll::Ready(Ok(resp)) => resp,
        Poll::Ready(Err(e)) => match e {},
        Poll::Pending => panic!("the handler answers at once"),
    }
}

fn http_server_hyper(c: &mut Criterion) {
    let mut g = c.benchmark_group("http_server_hyper");
    // hyper's `service_fn` wants bodies: empty strings.
    let hyper_handler = || {
        hyper::service::service_fn(|_req: Request<String>| async {
            Ok::<_, Infallible>(Response::new(String::new()))
        })
    };
    let request = || request().map(|()| String::new());
    let bare = hyper_handler();
    g.bench_function("bare", |b| {
        b.iter(|| call_hyper(&bare, black_box(request())))
    });
    let registry = sonde::Registry::new();
    let metrics = HttpServerMetrics::install(&registry).unwrap();
    let wrapped = HttpServerLayer::new(metrics)
        .route_with(|_uri, ext| ext.get::<String>().cloned())
        .layer(hyper_handler());
    call_hyper(&wrapped, request());
    assert_eq!(
        sonde_count(&registry, "http.server.request.duration", &HTTP_LABELS),
        1
    );
    g.bench_function("sonde_layer", |b| {
        b.iter(|| call_hyper(&wrapped, black_box(request())))
    });
    g.finish();
}

/// The last middleware of the client benches: answers `200` at once, no network.
struct Canned;

#[async_trait::async_trait]
impl reqwest_middleware::Middleware for Canned {
    async fn handle(
        &self,
        _req: reqwest::Request,
        _extensions: &mut http::Extensions,
        _next: reqwest_middleware::Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        Ok(reqwest::Response::from(Response::new("")))
    }
}

fn http_client_request(c: &mut Criterion) {
    use sonde::instrument::{HttpClientMetrics, HttpClientMiddleware, UrlTemplate};
    // reqwest is built with `rustls-no-provider` here: a client needs one installed.
    #[allow(deprecated)] // ring: the workspace's one TLS stack
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut g = c.benchmark_group("http_client_request");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let client = || reqwest::Client::builder().build().unwrap();
    let bare = reqwest_middleware::ClientBuilder::new(client())
        .with(Canned)
        .build();
    let send = |c: &reqwest_middleware::ClientWithMiddleware| {
        rt.block_on(
            c.get("http://users.internal/users/42")
                .with_extension(UrlTemplate("/users/{id}"))
                .send(),
        )
        .unwrap()
    };
    g.bench_function("bare", |b| b.iter(|| black_box(send(&bare))));
    let registry = sonde::Registry::new();
    let metrics = HttpClientMetrics::install(&registry).unwrap();
    let wrapped = reqwest_middleware::ClientBuilder::new(client())
        .with(HttpClientMiddleware::new(metrics))
        .with(Canned)
        .build();
    send(&wrapped);
    assert_eq!(
        sonde_count(
            &registry,
            "http.client.request.duration",
            &[
                ("http.request.method", "GET"),
                ("server.address", "users.internal"),
                ("http.response.status_code", "200"),
                ("error.type", ""),
                ("url.template", "/users/{id}"),
            ]
        ),
        1
    );
    g.bench_function("sonde_middleware", |b| b.iter(|| black_box(send(&wrapped))));
    g.finish();
}

fn http_server_actix(c: &mut Criterion) {
    use actix_web::{App, test, web};
    use sonde::instrument::HttpServerMetricsActix;
    let mut g = c.benchmark_group("http_server_actix");
    let system = actix_web::rt::System::new();
    let registry = sonde::Registry::new();
    let metrics = HttpServerMetrics::install(&registry).unwrap();
    let (bare, wrapped) = system.block_on(async {
        let bare =
            test::init_service(App::new().route("/users/{id}", web::get().to(|| async { "user" })))
                .await;
        let wrapped = test::init_service(
            App::new()
                .wrap(HttpServerMetricsActix::new(metrics))
                .route("/users/{id}", web::get().to(|| async { "user" })),
        )
        .await;
        (bare, wrapped)
    });
    let req = || test::TestRequest::get().uri("/users/42").to_request();
    g.bench_function("bare", |b| {
        b.iter(|| black_box(system.block_on(test::call_service(&bare, req()))))
    });
    system.block_on(test::call_service(&wrapped, req()));
    assert_eq!(
        sonde_count(&registry, "http.server.request.duration", &HTTP_LABELS),
        1
    );
    g.bench_function("sonde_middleware", |b| {
        b.iter(|| black_box(system.block_on(test::call_service(&wrapped, req()))))
    });
    g.finish();
}

criterion_group! {
    name = middleware;
    config = config();
    targets = http_server_request, http_server_hyper, http_server_actix, http_client_request, span, span_by_name
}
criterion_main!(middleware);
