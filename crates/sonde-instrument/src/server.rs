//! Incoming HTTP requests: `http.server.request.duration` (seconds) by `http.request.method`,
//! `http.route`, `http.response.status_code` and `error.type` (the status for 5xx), and
//! `http.server.active_requests` by `http.request.method`. The route is the matched template
//! (`/users/{id}`), never the raw path, so cardinality stays bounded.

use std::time::Instant;

use sonde_core::{Family, Histogram, Registry, Unit, UpDownCounter};

use crate::Error;

/// The request methods recorded as themselves; anything else is `_OTHER`, as the conventions
/// ask, so a client cannot mint series with made-up methods.
const KNOWN_METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "_OTHER",
];

/// The method as recorded: a known method, or `_OTHER`.
pub fn method_label(method: &str) -> &'static str {
    KNOWN_METHODS[method_index(method)]
}

/// Index into `KNOWN_METHODS`, the last slot being `_OTHER`.
fn method_index(method: &str) -> usize {
    KNOWN_METHODS[..9]
        .iter()
        .position(|m| *m == method)
        .unwrap_or(9)
}

/// HTTP server metrics, for any framework: call [`start`](Self::start) when a request arrives
/// and [`ActiveRequest::finish`] with the matched route and status when it is answered. The
/// tower `HttpServerLayer` (feature `tower`; with feature `axum` it finds axum's route template
/// by itself) and `instrument_warp` (feature `warp`) do this for you.
///
/// ```
/// let registry = sonde_core::Registry::new();
/// let http = sonde_instrument::HttpServerMetrics::install(&registry)?;
/// let req = http.start("GET");
/// // ... route and handle ...
/// req.finish("/users/{id}", 200);
/// # Ok::<(), sonde_instrument::Error>(())
/// ```
#[derive(Clone)]
pub struct HttpServerMetrics {
    duration: Family<Histogram>,
    /// `http.server.active_requests` per method, resolved at install.
    active: std::sync::Arc<[UpDownCounter; 10]>,
}

impl HttpServerMetrics {
    /// Registers the families.
    pub fn install(registry: &Registry) -> Result<HttpServerMetrics, Error> {
        Ok(HttpServerMetrics {
            duration: crate::conventions::http_server_request_duration(registry)?,
            active: {
                let family = registry
                    .up_down_counter("http.server.active_requests")
                    .description("Number of active HTTP server requests.")
                    .unit(Unit::Count("{request}".into()))
                    .labels(["http.request.method"])
                    .build()?;
                std::sync::Arc::new(KNOWN_METHODS.map(|m| family.with(&[m])))
            },
        })
    }

    /// A request arrived: counts it active until it is finished or dropped.
    pub fn start(&self, method: &str) -> ActiveRequest {
        let index = method_index(method);
        self.active[index].inc();
        ActiveRequest {
            metrics: self.clone(),
            method: KNOWN_METHODS[index],
            index,
            start: Instant::now(),
            done: false,
            record_on_drop: true,
        }
    }
}

/// A request in flight; see [`HttpServerMetrics::start`]. Dropping it unfinished (the client
/// went away, the handler panicked) records it with `error.type="_OTHER"` and no status.
#[must_use = "finish the request to record it"]
pub struct ActiveRequest {
    metrics: HttpServerMetrics,
    method: &'static str,
    index: usize,
    start: Instant,
    done: bool,
    /// Whether dropping it unfinished records an `_OTHER` error (false where a drop means the
    /// route simply did not match, as with warp filters).
    record_on_drop: bool,
}

impl ActiveRequest {
    /// Records the request with its matched route (`""` if none matched) and status.
    pub fn finish(mut self, route: &str, status: u16) {
        let mut buf = [0u8; 5];
        let code = crate::calls::status_str(status, &mut buf);
        let error = if status >= 500 { code } else { "" };
        self.record(route, code, error);
    }

    fn record(&mut self, route: &str, code: &str, error: &str) {
        if self.done {
            return;
        }
        self.done = true;
        self.metrics
            .duration
            .with(&[self.method, route, code, error])
            .record_since(self.start);
        self.metrics.active[self.index].dec();
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        if self.record_on_drop {
            self.record("", "", "_OTHER");
        } else if !self.done {
            self.done = true;
            self.metrics.active[self.index].dec();
        }
    }
}

#[cfg(feature = "warp")]
mod warp_filter {
    use warp::{Filter, Reply};

    use super::HttpServerMetrics;

    /// Wraps one warp route so its requests are recorded under `route` (the template, such as
    /// `/users/:id`). warp filters carry no template to read, so this is the one line each route
    /// needs: without it, nothing is recorded for the route. A request the route does not match
    /// is not recorded by it.
    ///
    /// ```
    /// # #[cfg(feature = "warp")] {
    /// use warp::Filter;
    /// let registry = sonde_core::Registry::new();
    /// let metrics = sonde_instrument::HttpServerMetrics::install(&registry).unwrap();
    /// let users = warp::path!("users" / u32).map(|id: u32| format!("user {id}"));
    /// let routes = sonde_instrument::instrument_warp(&metrics, "/users/:id", users);
    /// # let _ = routes; }
    /// ```
    pub fn instrument_warp<F, R>(
        metrics: &HttpServerMetrics,
        route: &'static str,
        filter: F,
    ) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection>
    + Clone
    + Send
    + Sync
    + 'static
    where
        F: Filter<Extract = (R,), Error = warp::Rejection> + Clone + Send + Sync + 'static,
        R: Reply + Send,
    {
        let metrics = metrics.clone();
        warp::method()
            .map(move |method: warp::http::Method| {
                let mut active = metrics.start(method.as_str());
                active.record_on_drop = false;
                active
            })
            .and(filter)
            .map(move |active: super::ActiveRequest, reply: R| {
                let response = reply.into_response();
                active.finish(route, response.status().as_u16());
                response
            })
    }
}

#[cfg(feature = "warp")]
pub use warp_filter::instrument_warp;

#[cfg(feature = "tower")]
pub use layer::{HttpServerLayer, HttpServerService, RouteFn};

#[cfg(feature = "tower")]
mod layer {
    use std::sync::Arc;

    use super::{ActiveRequest, HttpServerMetrics};
    use crate::recorded::{Instrumented, Observe, Record};

    /// Reads the matched route template of a request from its URI and extensions; see
    /// [`HttpServerLayer::route_with`].
    pub type RouteFn = Arc<dyn Fn(&http::Uri, &http::Extensions) -> Option<String> + Send + Sync>;

    /// A tower `Layer` recording [`HttpServerMetrics`] for every request, with the matched route
    /// template (`/users/{id}`) as `http.route`, never the raw path.
    ///
    /// **axum** (feature `axum`, axum 0.8): nothing to configure. The layer reads axum's
    /// `MatchedPath` from the request, so add it to the router with `Router::layer` (every
    /// request: unmatched ones are recorded with `http.route=""`, a single series) or
    /// `Router::route_layer` (matched routes only), *after* the routes it should see. Nested
    /// routers (`Router::nest`) record the full template (`/api/users/{id}`). Wrapped around the
    /// whole router from outside (`ServiceBuilder`, `Router::into_service`, hyper) it runs before
    /// axum has routed the request and records `""` for everything.
    ///
    /// ```
    /// # #[cfg(feature = "axum")] {
    /// use axum::{Router, routing::get};
    /// use sonde_instrument::{HttpServerLayer, HttpServerMetrics};
    ///
    /// let metrics = HttpServerMetrics::install(sonde_core::Registry::global()).unwrap();
    /// let app: Router = Router::new()
    ///     .route("/users/{id}", get(|| async { "user" }))
    ///     .layer(HttpServerLayer::new(metrics));
    /// # let _ = app; }
    /// ```
    ///
    /// **Any other tower stack** (hyper, tonic, a hand-written router): tell the layer where the
    /// template is with one [`route_with`](Self::route_with) line; without it `http.route` is
    /// `""`. For tonic, the path *is* the template (`/package.Service/Method`):
    ///
    /// ```
    /// # #[cfg(feature = "tower")] {
    /// let metrics = sonde_instrument::HttpServerMetrics::install(sonde_core::Registry::global()).unwrap();
    /// let layer = sonde_instrument::HttpServerLayer::new(metrics)
    ///     .route_with(|uri, _| Some(uri.path().to_owned()));
    /// # let _ = layer; }
    /// ```
    ///
    /// A router of your own that knows the template before the layer runs can leave it in the
    /// request's extensions:
    ///
    /// ```
    /// # #[cfg(feature = "tower")] {
    /// /// The matched template, inserted by an outer routing step.
    /// #[derive(Clone)]
    /// struct Route(&'static str);
    ///
    /// let metrics = sonde_instrument::HttpServerMetrics::install(sonde_core::Registry::global()).unwrap();
    /// let layer = sonde_instrument::HttpServerLayer::new(metrics)
    ///     .route_with(|_, ext| ext.get::<Route>().map(|r| r.0.to_owned()));
    /// # let _ = layer; }
    /// ```
    ///
    /// (warp has no tower router: wrap each route with
    /// [`instrument_warp`](crate::instrument_warp), feature `warp`.)
    #[derive(Clone)]
    pub struct HttpServerLayer {
        metrics: HttpServerMetrics,
        route: Option<RouteFn>,
    }

    impl HttpServerLayer {
        /// A layer recording into `metrics`. Without [`route_with`](Self::route_with), the
        /// route is axum's `MatchedPath` with feature `axum`, and `""` otherwise (never the raw
        /// path).
        pub fn new(metrics: HttpServerMetrics) -> Self {
            HttpServerLayer {
                metrics,
                route: None,
            }
        }

        /// How to find the matched route template of a request, from its URI and extensions
        /// (replacing the axum default). Return a template, never a raw path: each distinct
        /// value is a series. `None` records `""`.
        pub fn route_with(
            mut self,
            f: impl Fn(&http::Uri, &http::Extensions) -> Option<String> + Send + Sync + 'static,
        ) -> Self {
            self.route = Some(Arc::new(f));
            self
        }
    }

    impl<S> tower_layer::Layer<S> for HttpServerLayer {
        type Service = HttpServerService<S>;

        fn layer(&self, inner: S) -> Self::Service {
            Instrumented::new(inner, self.clone())
        }
    }

    /// The service [`HttpServerLayer`] wraps around yours (with feature `hyper`, also a
    /// hyper 1 `Service`, to serve an instrumented hyper service without tower).
    ///
    /// ```
    /// # #[cfg(feature = "hyper")] {
    /// use sonde_instrument::{HttpServerLayer, HttpServerMetrics};
    /// use tower_layer::Layer as _;
    /// let metrics = HttpServerMetrics::install(sonde_core::Registry::global()).unwrap();
    /// let handler = hyper::service::service_fn(|_req: http::Request<hyper::body::Incoming>| async {
    ///     Ok::<_, std::convert::Infallible>(http::Response::new(String::from("hello")))
    /// });
    /// let service = HttpServerLayer::new(metrics)
    ///     .route_with(|uri, _| (uri.path() == "/hello").then(|| "/hello".to_owned()))
    ///     .layer(handler);
    /// // hyper::server::conn::http1::Builder::new().serve_connection(io, service)
    /// # let _ = service; }
    /// ```
    pub type HttpServerService<S> = Instrumented<S, HttpServerLayer>;

    /// The route a request is recorded under, held until it is answered.
    enum Route {
        /// No template known: recorded as `""`, one series for all such requests.
        Unmatched,
        Custom(String),
        /// axum's template, shared with the router (cloning it allocates nothing).
        #[cfg(feature = "axum")]
        Axum(axum::extract::MatchedPath),
    }

    impl Route {
        fn as_str(&self) -> &str {
            match self {
                Route::Unmatched => "",
                Route::Custom(s) => s,
                #[cfg(feature = "axum")]
                Route::Axum(p) => p.as_str(),
            }
        }
    }

    impl<B> Observe<B> for HttpServerLayer {
        type Request = ServerRequest;

        /// Counts the request active and finds its route.
        fn begin(&self, req: &http::Request<B>) -> ServerRequest {
            let active = self.metrics.start(req.method().as_str());
            let route = match &self.route {
                Some(f) => f(req.uri(), req.extensions()).map_or(Route::Unmatched, Route::Custom),
                #[cfg(feature = "axum")]
                None => req
                    .extensions()
                    .get::<axum::extract::MatchedPath>()
                    .cloned()
                    .map_or(Route::Unmatched, Route::Axum),
                #[cfg(not(feature = "axum"))]
                None => Route::Unmatched,
            };
            ServerRequest { active, route }
        }
    }

    /// A request being served: counted active, recorded under its route once answered.
    pub struct ServerRequest {
        active: ActiveRequest,
        route: Route,
    }

    impl<RB, E> Record<Result<http::Response<RB>, E>> for ServerRequest {
        fn record(self, out: &Result<http::Response<RB>, E>) {
            match out {
                Ok(resp) => self
                    .active
                    .finish(self.route.as_str(), resp.status().as_u16()),
                // A service error: recorded by the guard's drop as `_OTHER`.
                Err(_) => drop(self.active),
            }
        }
    }
}

#[cfg(feature = "actix-web")]
pub use actix::{ActixInner, HttpServerMetricsActix, HttpServerMetricsActixService};

#[cfg(feature = "actix-web")]
mod actix {
    use std::future::{Future, Ready, ready};
    use std::pin::Pin;

    use actix_web::Error;
    use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};

    use super::HttpServerMetrics;

    /// An actix-web middleware recording [`HttpServerMetrics`] for every request: the matched
    /// route pattern (`/users/{id}`, from actix's resource map; `""` when nothing matched),
    /// the status (an `Err` from a handler is recorded with its error's status), 5xx as
    /// `error.type`, and `http.server.active_requests` while it runs.
    ///
    /// ```
    /// use actix_web::{App, web};
    /// use sonde_instrument::{HttpServerMetrics, HttpServerMetricsActix};
    ///
    /// let metrics = HttpServerMetrics::install(sonde_core::Registry::global()).unwrap();
    /// let app = App::new()
    ///     .wrap(HttpServerMetricsActix::new(metrics))
    ///     .route("/users/{id}", web::get().to(|| async { "user" }));
    /// # let _ = app;
    /// ```
    #[derive(Clone)]
    pub struct HttpServerMetricsActix {
        metrics: HttpServerMetrics,
    }

    impl HttpServerMetricsActix {
        /// A middleware recording into `metrics`.
        pub fn new(metrics: HttpServerMetrics) -> Self {
            HttpServerMetricsActix { metrics }
        }
    }

    /// The services [`HttpServerMetricsActix`] can wrap: actix's bounds for a middleware,
    /// named once for the two impls below. Every such service implements it.
    pub trait ActixInner:
        Service<
            ServiceRequest,
            Response = ServiceResponse<Self::Body>,
            Error = Error,
            Future: 'static,
        >
    {
        /// The response body.
        type Body: 'static;
    }

    impl<S, B: 'static> ActixInner for S
    where
        S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error, Future: 'static>,
    {
        type Body = B;
    }

    impl<S: ActixInner> Transform<S, ServiceRequest> for HttpServerMetricsActix {
        type Response = ServiceResponse<S::Body>;
        type Error = Error;
        type Transform = HttpServerMetricsActixService<S>;
        type InitError = ();
        type Future = Ready<Result<Self::Transform, Self::InitError>>;

        fn new_transform(&self, service: S) -> Self::Future {
            ready(Ok(HttpServerMetricsActixService {
                service,
                metrics: self.metrics.clone(),
            }))
        }
    }

    /// The service [`HttpServerMetricsActix`] wraps around the application.
    pub struct HttpServerMetricsActixService<S> {
        service: S,
        metrics: HttpServerMetrics,
    }

    type Answer<B> = Pin<Box<dyn Future<Output = Result<ServiceResponse<B>, Error>>>>;

    impl<S: ActixInner> Service<ServiceRequest> for HttpServerMetricsActixService<S> {
        type Response = ServiceResponse<S::Body>;
        type Error = Error;
        type Future = Answer<S::Body>;

        forward_ready!(service);

        fn call(&self, req: ServiceRequest) -> Self::Future {
            let active = self.metrics.start(req.method().as_str());
            let route = req.match_pattern().unwrap_or_default();
            let answer = self.service.call(req);
            Box::pin(async move {
                let out = answer.await;
                let status = match &out {
                    Ok(resp) => resp.status(),
                    Err(e) => e.as_response_error().status_code(),
                };
                active.finish(&route, status.as_u16());
                out
            })
        }
    }
}
