//! Timing of outgoing calls: database operations (`db.client.operation.duration`) and HTTP/API
//! requests (`http.client.request.duration`), with `error.type` on failure.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Instant;

use sonde_core::{Family, Histogram, Registry};

use crate::Error;

/// The `error.type` of an error: its type's name without the module path
/// (`std::io::Error` → `Error`, `sqlx::Error` → `Error`, `MyDbError` → `MyDbError`).
pub fn error_type<E>() -> &'static str {
    let full = std::any::type_name::<E>();
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base)
}

/// Database client timings: `db.client.operation.duration` (seconds) by `db.system.name`,
/// `db.operation.name`, `db.collection.name` and `error.type` (empty on success).
///
/// ```
/// let registry = sonde_core::Registry::new();
/// let db = sonde_instrument::DbMetrics::install(&registry)?;
/// let rows: Result<u32, std::io::Error> = db.time_sync("sqlite", "SELECT", "users", || Ok(3));
/// assert_eq!(rows.unwrap(), 3);
/// # Ok::<(), sonde_instrument::Error>(())
/// ```
#[derive(Clone)]
pub struct DbMetrics {
    duration: Family<Histogram>,
}

impl DbMetrics {
    /// Registers the family.
    pub fn install(registry: &Registry) -> Result<DbMetrics, Error> {
        Ok(DbMetrics {
            duration: crate::conventions::db_client_operation_duration(registry)?,
        })
    }

    /// Times an async operation.
    pub async fn time<T, E>(
        &self,
        system: &str,
        operation: &str,
        collection: &str,
        op: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let start = Instant::now();
        let out = op.await;
        self.finish(system, operation, collection, &out, start);
        out
    }

    /// Times a blocking operation.
    pub fn time_sync<T, E>(
        &self,
        system: &str,
        operation: &str,
        collection: &str,
        op: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        let start = Instant::now();
        let out = op();
        self.finish(system, operation, collection, &out, start);
        out
    }

    /// Records an operation timed from `start` that returned `out`.
    fn finish<T, E>(
        &self,
        system: &str,
        operation: &str,
        collection: &str,
        out: &Result<T, E>,
        start: Instant,
    ) {
        let error = out.is_err().then(error_type::<E>);
        self.record(system, operation, collection, error, start);
    }

    /// Records an operation timed elsewhere (`error`: its `error.type`, `None` on success).
    pub fn record(
        &self,
        system: &str,
        operation: &str,
        collection: &str,
        error: Option<&str>,
        start: Instant,
    ) {
        self.duration
            .with(&[system, operation, collection, error.unwrap_or("")])
            .record_since(start);
    }
}

/// HTTP/API client timings: `http.client.request.duration` (seconds) by `http.request.method`,
/// `server.address`, `http.response.status_code`, `error.type` (the status code for 4xx/5xx
/// answers, the error's type when no answer came, empty otherwise) and `url.template` (the
/// route template the caller gives, such as `/users/{id}`, in a [`UrlTemplate`] request
/// extension; empty otherwise: never the URL's path, whose ids would make a series each).
///
/// ```
/// let registry = sonde_core::Registry::new();
/// let api = sonde_instrument::HttpClientMetrics::install(&registry)?;
/// let reply: Result<u16, std::io::Error> = api.time_sync("POST", "payments.example", |status| *status, || Ok(201));
/// assert_eq!(reply.unwrap(), 201);
/// # Ok::<(), sonde_instrument::Error>(())
/// ```
#[derive(Clone)]
pub struct HttpClientMetrics {
    duration: Family<Histogram>,
}

impl HttpClientMetrics {
    /// Registers the family.
    pub fn install(registry: &Registry) -> Result<HttpClientMetrics, Error> {
        Ok(HttpClientMetrics {
            duration: crate::conventions::http_client_request_duration(registry)?,
        })
    }

    /// Times an async request; `status` reads the status code from a response.
    pub async fn time<R, E>(
        &self,
        method: &str,
        server: &str,
        status: impl FnOnce(&R) -> u16,
        request: impl Future<Output = Result<R, E>>,
    ) -> Result<R, E> {
        let start = Instant::now();
        let out = request.await;
        self.finish(method, server, &out, status, start);
        out
    }

    /// Times a blocking request.
    pub fn time_sync<R, E>(
        &self,
        method: &str,
        server: &str,
        status: impl FnOnce(&R) -> u16,
        request: impl FnOnce() -> Result<R, E>,
    ) -> Result<R, E> {
        let start = Instant::now();
        let out = request();
        self.finish(method, server, &out, status, start);
        out
    }

    fn finish<R, E>(
        &self,
        method: &str,
        server: &str,
        out: &Result<R, E>,
        status: impl FnOnce(&R) -> u16,
        start: Instant,
    ) {
        match out {
            Ok(r) => self.record(method, server, Some(status(r)), None, start),
            Err(_) => self.record(method, server, None, Some(error_type::<E>()), start),
        }
    }

    /// Records a request timed elsewhere.
    pub fn record(
        &self,
        method: &str,
        server: &str,
        status: Option<u16>,
        error: Option<&str>,
        start: Instant,
    ) {
        self.record_template(method, server, "", status, error, start);
    }

    /// Records a request timed elsewhere, with its route template (`url.template`).
    pub fn record_template(
        &self,
        method: &str,
        server: &str,
        template: &str,
        status: Option<u16>,
        error: Option<&str>,
        start: Instant,
    ) {
        let mut buf = [0u8; 5];
        let code = status.map(|s| status_str(s, &mut buf)).unwrap_or("");
        let error = match (error, status) {
            (Some(e), _) => e,
            (None, Some(s)) if s >= 400 => code,
            _ => "",
        };
        self.duration
            .with(&[method, server, code, error, template])
            .record_since(start);
    }
}

/// The route template of an outgoing request (`url.template`, such as `/users/{id}`), given by
/// the caller as a request extension: `req.extensions_mut().insert(UrlTemplate("/users/{id}"))`
/// for the tower client layer, `.with_extension(UrlTemplate("/users/{id}"))` with
/// reqwest-middleware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UrlTemplate(pub &'static str);

/// Formats a status code into `buf` without allocating.
pub(crate) fn status_str(mut s: u16, buf: &mut [u8; 5]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (s % 10) as u8;
        s /= 10;
        if s == 0 || i == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).unwrap_or("")
}

static GLOBAL_DB: OnceLock<Option<DbMetrics>> = OnceLock::new();

/// [`DbMetrics::time`] on the global registry.
pub async fn time_db<T, E>(
    system: &str,
    operation: &str,
    collection: &str,
    op: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    match GLOBAL_DB.get_or_init(|| DbMetrics::install(Registry::global()).ok()) {
        Some(db) => db.time(system, operation, collection, op).await,
        None => op.await,
    }
}

/// [`DbMetrics::time_sync`] on the global registry.
pub fn time_db_sync<T, E>(
    system: &str,
    operation: &str,
    collection: &str,
    op: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    match GLOBAL_DB.get_or_init(|| DbMetrics::install(Registry::global()).ok()) {
        Some(db) => db.time_sync(system, operation, collection, op),
        None => op(),
    }
}

#[cfg(feature = "tower")]
pub use client_layer::{HttpClientLayer, HttpClientService};

#[cfg(feature = "tower")]
mod client_layer {
    use std::time::Instant;

    use super::{HttpClientMetrics, error_type};
    use crate::recorded::{Instrumented, Observe, Record};

    /// A tower `Layer` for HTTP clients (hyper-util's client or any
    /// `Service<http::Request<B>, Response = http::Response<R>>`) recording
    /// [`HttpClientMetrics`]: the method, `server.address` from the URI's host, the status, and the
    /// error's type when no answer came.
    ///
    /// ```
    /// let registry = sonde_core::Registry::new();
    /// let metrics = sonde_instrument::HttpClientMetrics::install(&registry).unwrap();
    /// let layer = sonde_instrument::HttpClientLayer::new(metrics);
    /// # let _ = layer;
    /// ```
    #[derive(Clone)]
    pub struct HttpClientLayer {
        metrics: HttpClientMetrics,
    }

    impl HttpClientLayer {
        /// A layer recording into `metrics`.
        pub fn new(metrics: HttpClientMetrics) -> Self {
            HttpClientLayer { metrics }
        }
    }

    impl<S> tower_layer::Layer<S> for HttpClientLayer {
        type Service = HttpClientService<S>;

        fn layer(&self, inner: S) -> Self::Service {
            Instrumented::new(inner, self.clone())
        }
    }

    /// The service [`HttpClientLayer`] wraps around a client.
    pub type HttpClientService<S> = Instrumented<S, HttpClientLayer>;

    impl<B> Observe<B> for HttpClientLayer {
        type Request = ClientRequest;

        fn begin(&self, req: &http::Request<B>) -> ClientRequest {
            ClientRequest {
                metrics: self.metrics.clone(),
                method: crate::server::method_label(req.method().as_str()),
                server: req.uri().host().unwrap_or("").to_owned(),
                template: req
                    .extensions()
                    .get::<super::UrlTemplate>()
                    .map_or("", |t| t.0),
                start: Instant::now(),
            }
        }
    }

    /// A request on its way: what it is recorded under.
    pub struct ClientRequest {
        metrics: HttpClientMetrics,
        method: &'static str,
        server: String,
        template: &'static str,
        start: Instant,
    }

    impl<RB, E> Record<Result<http::Response<RB>, E>> for ClientRequest {
        fn record(self, out: &Result<http::Response<RB>, E>) {
            let (status, error) = match out {
                Ok(resp) => (Some(resp.status().as_u16()), None),
                Err(_) => (None, Some(error_type::<E>())),
            };
            self.metrics.record_template(
                self.method,
                &self.server,
                self.template,
                status,
                error,
                self.start,
            );
        }
    }
}

#[cfg(feature = "reqwest")]
pub use reqwest_middleware_adapter::HttpClientMiddleware;

#[cfg(feature = "reqwest")]
mod reqwest_middleware_adapter {
    use std::time::Instant;

    use super::{HttpClientMetrics, UrlTemplate};

    /// A reqwest-middleware `Middleware` recording [`HttpClientMetrics`] for every request of a
    /// `reqwest_middleware::ClientWithMiddleware`: the method, `server.address` from the URL's
    /// host, the status (4xx/5xx also as `error.type`), the kind of failure when no answer came
    /// (`timeout`, `connect`, `request`, `body`, `decode`, `redirect`, `middleware`), and the
    /// route template from a [`UrlTemplate`] extension.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use sonde_instrument::{HttpClientMetrics, HttpClientMiddleware, UrlTemplate};
    /// let metrics = HttpClientMetrics::install(sonde_core::Registry::global())?;
    /// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
    ///     .with(HttpClientMiddleware::new(metrics))
    ///     .build();
    /// let user = client
    ///     .get("http://users.internal/users/42")
    ///     .with_extension(UrlTemplate("/users/{id}"))
    ///     .send()
    ///     .await?;
    /// # let _ = user; Ok(()) }
    /// ```
    #[derive(Clone)]
    pub struct HttpClientMiddleware {
        metrics: HttpClientMetrics,
    }

    impl HttpClientMiddleware {
        /// A middleware recording into `metrics`.
        pub fn new(metrics: HttpClientMetrics) -> Self {
            HttpClientMiddleware { metrics }
        }
    }

    /// A low-cardinality `error.type` for a request that got no answer.
    fn failure(e: &reqwest_middleware::Error) -> &'static str {
        match e {
            reqwest_middleware::Error::Middleware(_) => "middleware",
            reqwest_middleware::Error::Reqwest(e) if e.is_timeout() => "timeout",
            reqwest_middleware::Error::Reqwest(e) if e.is_connect() => "connect",
            reqwest_middleware::Error::Reqwest(e) if e.is_redirect() => "redirect",
            reqwest_middleware::Error::Reqwest(e) if e.is_body() => "body",
            reqwest_middleware::Error::Reqwest(e) if e.is_decode() => "decode",
            reqwest_middleware::Error::Reqwest(e) if e.is_request() => "request",
            reqwest_middleware::Error::Reqwest(_) => "_OTHER",
        }
    }

    #[async_trait::async_trait]
    impl reqwest_middleware::Middleware for HttpClientMiddleware {
        async fn handle(
            &self,
            req: reqwest::Request,
            extensions: &mut http::Extensions,
            next: reqwest_middleware::Next<'_>,
        ) -> reqwest_middleware::Result<reqwest::Response> {
            let method = crate::server::method_label(req.method().as_str());
            let server = req.url().host_str().unwrap_or("").to_owned();
            let template = extensions.get::<UrlTemplate>().map_or("", |t| t.0);
            let start = Instant::now();
            let out = next.run(req, extensions).await;
            match &out {
                Ok(resp) => self.metrics.record_template(
                    method,
                    &server,
                    template,
                    Some(resp.status().as_u16()),
                    None,
                    start,
                ),
                Err(e) => self.metrics.record_template(
                    method,
                    &server,
                    template,
                    None,
                    Some(failure(e)),
                    start,
                ),
            }
            out
        }
    }
}
