//! The `/metrics` server: warp routes served by hyper on a dedicated thread and runtime.

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use http::{Response, StatusCode, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use sonde_core::{Registry, Resource, Temporality};
use tokio::sync::{Semaphore, oneshot};
use warp::Filter;

use crate::Error;
use crate::encode::{Format, encode};

/// The default listen address: loopback only, port 9464 (the OpenTelemetry Prometheus
/// exporter's port). Binding to all interfaces is a decision to make explicitly.
pub const DEFAULT_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9464);

/// Configures and starts the exporter.
///
/// Settings come from explicit calls first, then `OTEL_EXPORTER_PROMETHEUS_HOST` and
/// `OTEL_EXPORTER_PROMETHEUS_PORT`, then the defaults (`127.0.0.1:9464`, 4 concurrent scrapes,
/// 10 s request timeout, the global registry, the resource from `OTEL_*` variables).
#[must_use = "call .install() to start the server"]
pub struct PrometheusBuilder {
    registry: Registry,
    addr: Option<SocketAddr>,
    resource: Option<Resource>,
    max_concurrent_scrapes: usize,
    request_timeout: Duration,
}

impl Default for PrometheusBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl PrometheusBuilder {
    /// A builder with the defaults.
    pub fn new() -> Self {
        PrometheusBuilder {
            registry: Registry::global().clone(),
            addr: None,
            resource: None,
            max_concurrent_scrapes: 4,
            request_timeout: Duration::from_secs(10),
        }
    }

    /// Serves this registry instead of the global one.
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = registry;
        self
    }

    /// Listens on `addr` (port 0 picks a free port; see [`PrometheusServer::local_addr`]).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.addr = Some(addr);
        self
    }

    /// The resource rendered as `target_info` (default: [`Resource::from_env`]).
    pub fn resource(mut self, resource: Resource) -> Self {
        self.resource = Some(resource);
        self
    }

    /// Scrapes encoded at once; more get `503` at once rather than queueing (default 4).
    pub fn max_concurrent_scrapes(mut self, n: usize) -> Self {
        self.max_concurrent_scrapes = n.max(1);
        self
    }

    /// Time allowed to read a request's headers and to produce a response (default 10 s).
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.request_timeout = d;
        self
    }

    /// Binds the address and starts the server thread.
    pub fn install(self) -> Result<PrometheusServer, Error> {
        let addr = match self.addr {
            Some(a) => a,
            None => addr_from_env(
                std::env::var("OTEL_EXPORTER_PROMETHEUS_HOST")
                    .ok()
                    .as_deref(),
                std::env::var("OTEL_EXPORTER_PROMETHEUS_PORT")
                    .ok()
                    .as_deref(),
            )?,
        };
        // Bound here, so a taken port is the caller's error rather than a log line later.
        let listener =
            std::net::TcpListener::bind(addr).map_err(|source| Error::Bind { addr, source })?;
        let local_addr = listener.local_addr().map_err(Error::Start)?;
        listener.set_nonblocking(true).map_err(Error::Start)?;
        let state = Arc::new(State {
            registry: self.registry,
            resource: self.resource.unwrap_or_else(Resource::from_env),
            scrapes: Arc::new(Semaphore::new(self.max_concurrent_scrapes)),
            timeout: self.request_timeout,
            started: Instant::now(),
            buffers: Mutex::new(Vec::new()),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(self.max_concurrent_scrapes)
            .thread_name("sonde-prometheus")
            .enable_all()
            .build()
            .map_err(Error::Start)?;
        let (tx, rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("sonde-prometheus".into())
            .spawn(move || runtime.block_on(serve(listener, state, rx)))
            .map_err(Error::Start)?;
        Ok(PrometheusServer {
            addr: local_addr,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }
}

fn addr_from_env(host: Option<&str>, port: Option<&str>) -> Result<SocketAddr, Error> {
    let ip = match host.map(str::trim).filter(|h| !h.is_empty()) {
        None | Some("localhost") => DEFAULT_ADDR.ip(),
        Some(h) => h.parse::<IpAddr>().map_err(|e| Error::Address {
            value: h.to_owned(),
            reason: e.to_string(),
        })?,
    };
    let port = match port.map(str::trim).filter(|p| !p.is_empty()) {
        None => DEFAULT_ADDR.port(),
        Some(p) => p.parse::<u16>().map_err(|e| Error::Address {
            value: p.to_owned(),
            reason: e.to_string(),
        })?,
    };
    Ok(SocketAddr::new(ip, port))
}

/// A running exporter. Dropping it stops the server.
pub struct PrometheusServer {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for PrometheusServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusServer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl PrometheusServer {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, finishes the requests in flight and joins the thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        self.stop();
    }
}

struct State {
    registry: Registry,
    resource: Resource,
    scrapes: Arc<Semaphore>,
    timeout: Duration,
    started: Instant,
    /// Encoding buffers kept between scrapes, so a steady scrape allocates little.
    buffers: Mutex<Vec<Vec<u8>>>,
}

impl State {
    fn render(&self, format: Format, gzip: bool) -> Vec<u8> {
        let mut buf = self
            .buffers
            .lock()
            .ok()
            .and_then(|mut b| b.pop())
            .unwrap_or_default();
        buf.clear();
        let snapshot = self.registry.reader(Temporality::Cumulative).collect();
        encode(&snapshot, Some(&self.resource), format, &mut buf);
        let body = if gzip {
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(buf.len() / 4),
                flate2::Compression::fast(),
            );
            // Writing to a Vec cannot fail.
            let _ = enc.write_all(&buf);
            enc.finish().unwrap_or_default()
        } else {
            buf.clone()
        };
        if let Ok(mut b) = self.buffers.lock() {
            b.push(buf);
        }
        body
    }
}

async fn serve(
    listener: std::net::TcpListener,
    state: Arc<State>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    let service = warp::service(routes(state.clone()));
    let (conns_done_tx, mut conns_done) = tokio::sync::mpsc::channel::<()>(1);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let service = service.clone();
                let timeout = state.timeout;
                let done = conns_done_tx.clone();
                tokio::spawn(async move {
                    let conn = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(timeout)
                        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
                    let _ = conn.await;
                    drop(done);
                });
            }
        }
    }
    // Wait (bounded) for connections in flight.
    drop(conns_done_tx);
    let _ = tokio::time::timeout(state.timeout, conns_done.recv()).await;
}

fn routes(
    state: Arc<State>,
) -> impl Filter<Extract = (Response<Vec<u8>>,), Error = warp::Rejection> + Clone {
    let with_state = warp::any().map(move || state.clone());
    let metrics = warp::path("metrics")
        .and(warp::path::end())
        .and(warp::get())
        .and(with_state.clone())
        .and(warp::header::optional::<String>("accept"))
        .and(warp::header::optional::<String>("accept-encoding"))
        .then(metrics);
    let health = warp::path("health")
        .and(warp::path::end())
        .and(warp::get())
        .and(with_state)
        .map(|state: Arc<State>| health(&state));
    metrics.or(health).unify()
}

async fn metrics(
    state: Arc<State>,
    accept: Option<String>,
    encoding: Option<String>,
) -> Response<Vec<u8>> {
    let Ok(permit) = state.scrapes.clone().try_acquire_owned() else {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many concurrent scrapes; raise max_concurrent_scrapes or scrape less often\n",
        );
    };
    let format = Format::negotiate(accept.as_deref());
    let gzip = encoding.is_some_and(|e| e.split(',').any(|t| t.trim().starts_with("gzip")));
    let job = {
        let state = state.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            state.render(format, gzip)
        })
    };
    match tokio::time::timeout(state.timeout, job).await {
        Ok(Ok(body)) => {
            let mut r = Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, format.content_type());
            if gzip {
                r = r.header(header::CONTENT_ENCODING, "gzip");
            }
            r.body(body)
                .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "response error\n"))
        }
        Ok(Err(_)) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding the metrics failed\n",
        ),
        Err(_) => plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "encoding the metrics took longer than the request timeout\n",
        ),
    }
}

fn health(state: &State) -> Response<Vec<u8>> {
    let body = serde_json::json!({
        "status": "ok",
        "uptime_seconds": state.started.elapsed().as_secs_f64(),
        "families": state.registry.family_names().len(),
        "exporters": {},
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.to_string().into_bytes())
        .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "response error\n"))
}

fn plain(status: StatusCode, msg: &'static str) -> Response<Vec<u8>> {
    let mut r = Response::new(msg.as_bytes().to_vec());
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_address() {
        assert_eq!(addr_from_env(None, None).unwrap(), DEFAULT_ADDR);
        assert_eq!(
            addr_from_env(Some("0.0.0.0"), Some("9100"))
                .unwrap()
                .to_string(),
            "0.0.0.0:9100"
        );
        assert_eq!(
            addr_from_env(Some("localhost"), None).unwrap(),
            DEFAULT_ADDR
        );
        let e = addr_from_env(None, Some("http")).unwrap_err().to_string();
        assert!(e.contains("OTEL_EXPORTER_PROMETHEUS_PORT"), "{e}");
        assert!(addr_from_env(Some("example"), None).is_err());
    }
}
