//! The `/metrics` server: warp routes served by hyper on a dedicated thread and runtime.

use std::collections::BTreeMap;
use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Response, StatusCode, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use sonde_core::{Counter, Gauge, Registry, Resource, Temporality};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, Semaphore, oneshot};
use tokio_rustls::TlsAcceptor;
use warp::Filter;

use crate::Error;
use crate::encode::{Format, encode_registry};
use crate::ready::Readiness;
use crate::report::{Judge, Ring};

/// The default listen address: loopback only, port 9464 (the OpenTelemetry Prometheus
/// exporter's port). Binding to all interfaces is a decision to make explicitly.
pub const DEFAULT_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9464);

/// Connections open on the `/metrics` server (gauge).
pub const CONNECTIONS_OPEN: &str = "sonde.http.connections.open";
/// Connections closed at once because [`PrometheusBuilder::max_connections`] were open and all
/// of them were serving a request (counter).
pub const CONNECTIONS_REFUSED: &str = "sonde.http.connections.refused";
/// Idle connections (no request in progress) closed to make room for a new one at the
/// connection limit (counter).
pub const CONNECTIONS_EVICTED: &str = "sonde.http.connections.evicted";
/// `accept` failures, such as running out of file descriptors (counter).
pub const ACCEPT_ERRORS: &str = "sonde.http.accept.errors";

/// The sliding windows of `/report` by default: the last minute and the last five minutes.
pub const DEFAULT_REPORT_WINDOWS: [Duration; 2] =
    [Duration::from_secs(60), Duration::from_secs(300)];

/// How often `/report` closes an interval for its windows by default.
pub const DEFAULT_REPORT_RESOLUTION: Duration = Duration::from_secs(10);

/// Bytes `/report` holds at most for its windows by default (16 MiB).
pub const DEFAULT_REPORT_MEMORY_LIMIT: usize = 16 << 20;

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
    write_timeout: Duration,
    max_connections: usize,
    users: Vec<(String, String)>,
    tls: Option<(PathBuf, PathBuf)>,
    listener: Option<std::net::TcpListener>,
    readiness: Option<Readiness>,
    exporters_affect_readiness: bool,
    report_windows: Vec<Duration>,
    report_resolution: Duration,
    report_memory_limit: usize,
    judge: Option<Arc<dyn Judge>>,
}

/// What the server's accept loop is told when it stops: hand the listening socket over (to a
/// successor, [`PrometheusServer::into_listener`]) or close it.
type Stop = Option<std::sync::mpsc::SyncSender<std::net::TcpListener>>;

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
            write_timeout: Duration::from_secs(10),
            max_connections: 512,
            users: Vec::new(),
            tls: None,
            listener: None,
            readiness: None,
            exporters_affect_readiness: true,
            report_windows: DEFAULT_REPORT_WINDOWS.to_vec(),
            report_resolution: DEFAULT_REPORT_RESOLUTION,
            report_memory_limit: DEFAULT_REPORT_MEMORY_LIMIT,
            judge: None,
        }
    }

    sonde_core::builder_setters! {
        /// Judges objectives on every `/report`: `judge`'s verdicts over the report's windows
        /// fill its `objectives` key, and the Markdown rendering's "Objectives" table (see
        /// [`Judge`]; `sonde_objectives::judge` judges an `objectives.toml`). Without one, the
        /// report has no `objectives` key.
        judge: Some(Arc<dyn Judge>);
        /// Serves this readiness on `/ready` (default: a new one, see
        /// [`PrometheusServer::readiness`]). Passing one created beforehand lets the server start
        /// not ready (a cache still loading) from its first request on, and keeps the conditions
        /// when a server replaces another.
        readiness: Some(Readiness);
        /// Whether a failing exporter (no successful request for [`FAILING_AFTER_INTERVALS`] of
        /// its intervals) makes `/ready` answer 503 (default true). Turn it off where refusing
        /// traffic is worse than losing metrics: when every replica pushes to the same receiver,
        /// that receiver's outage makes them all not ready at once.
        exporters_affect_readiness: bool;
    }

    /// The sliding windows of `/report` (default: 1 minute and 5 minutes; `since_start` is
    /// always there). An empty list serves since start only and reads nothing in between.
    pub fn report_windows(mut self, windows: impl IntoIterator<Item = Duration>) -> Self {
        self.report_windows = windows.into_iter().collect();
        self
    }

    sonde_core::builder_setters! {
        /// How often `/report` closes an interval of changes for its windows (default 10 s, at
        /// least 10 ms): a window's span is met to within half of it. The intervals kept grow with
        /// the longest window divided by this (the resolution is coarsened past 720 of them).
        report_resolution: Duration;
        /// Bytes `/report` may hold for its windows' changes (default 16 MiB). Only the series that
        /// change in an interval take room; when a busy registry needs more, the oldest intervals
        /// go first and the longest window reports that it covers less (`"complete": false`).
        report_memory_limit: usize;
    }

    /// Requires HTTP basic auth: `user` with the password whose bcrypt hash is `bcrypt_hash`
    /// (as `htpasswd -nB` or Prometheus's web config make them). Call again for more users.
    /// Successful checks are cached, since bcrypt is slow on purpose.
    pub fn basic_auth_user(
        mut self,
        user: impl Into<String>,
        bcrypt_hash: impl Into<String>,
    ) -> Self {
        self.users.push((user.into(), bcrypt_hash.into()));
        self
    }

    /// Serves HTTPS with the PEM certificate chain and private key in these files. The files
    /// are checked for changes (at most once a second, on new connections) and read again when
    /// they change, so a renewed certificate is served without a restart; a pair that does not
    /// load keeps the previous one in use (and is logged).
    pub fn tls(
        mut self,
        cert_chain_pem: impl Into<PathBuf>,
        private_key_pem: impl Into<PathBuf>,
    ) -> Self {
        self.tls = Some((cert_chain_pem.into(), private_key_pem.into()));
        self
    }

    /// Listens on `addr` (port 0 picks a free port; see [`PrometheusServer::local_addr`]).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.addr = Some(addr);
        self
    }

    sonde_core::builder_setters! {
        /// Serves this registry instead of the global one.
        registry: Registry;
        /// Serves on a socket that is already listening (from [`PrometheusServer::into_listener`]
        /// of the server this one replaces) instead of binding: connections that arrive during the
        /// handover wait in the socket's backlog rather than being refused.
        listener: Some(std::net::TcpListener);
        /// The resource rendered as `target_info` (default: [`Resource::from_env`]).
        resource: Some(Resource);
    }

    /// Scrapes encoded at once; more get `503` at once rather than queueing (default 4).
    pub fn max_concurrent_scrapes(mut self, n: usize) -> Self {
        self.max_concurrent_scrapes = n.max(1);
        self
    }

    /// Time allowed to read a request's headers (from the connection's start, or from the end
    /// of the previous response on a kept-alive connection, so it is also the idle timeout) and
    /// to produce a response (default 10 s).
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.request_timeout = d.max(Duration::from_millis(1));
        self
    }

    /// Time a write may wait on a client that does not read: past it the connection is closed
    /// (default 10 s).
    pub fn write_timeout(mut self, d: Duration) -> Self {
        self.write_timeout = d.max(Duration::from_millis(1));
        self
    }

    /// Connections held open at most (default 512). At the limit a new connection replaces
    /// the oldest one that is not serving a request (idle, or still sending its headers); when
    /// every one is serving a request, the new one is closed at once. Both are counted
    /// ([`CONNECTIONS_EVICTED`], [`CONNECTIONS_REFUSED`]).
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
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
            ),
        };
        let auth = Auth::new(&self.users)?.map(Arc::new);
        let tls = match &self.tls {
            Some((cert, key)) => Some(Arc::new(ReloadingTls::new(cert, key)?)),
            None => None,
        };
        // Bound here, so a taken port is the caller's error rather than a log line later.
        let listener = match self.listener {
            Some(l) => l,
            None => {
                std::net::TcpListener::bind(addr).map_err(|source| Error::Bind { addr, source })?
            }
        };
        let local_addr = listener.local_addr().map_err(Error::Start)?;
        listener.set_nonblocking(true).map_err(Error::Start)?;
        let conns = Arc::new(Conns::new(
            &self.registry,
            self.max_connections,
            self.write_timeout,
        ));
        let readiness = self.readiness.unwrap_or_default();
        let ring = Ring::new(
            &self.registry,
            self.report_resolution,
            &self.report_windows,
            self.report_memory_limit,
            Instant::now(),
        );
        let state = Arc::new(State {
            ring: Mutex::new(ring),
            readiness: readiness.clone(),
            exporters_affect_readiness: self.exporters_affect_readiness,
            resource: self.resource.unwrap_or_else(Resource::from_env),
            scrapes: Arc::new(Semaphore::new(self.max_concurrent_scrapes)),
            timeout: self.request_timeout,
            started: Instant::now(),
            buffers: Mutex::new(Vec::new()),
            renders: Default::default(),
            report: Mutex::new((self.registry.reader(Temporality::Delta), Instant::now())),
            judge: self.judge,
            registry: self.registry,
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
            .spawn(move || {
                // Ends with the runtime when serving stops.
                runtime.spawn(sample(state.clone()));
                // On the worker with the connections (not on this thread), so accepting takes
                // turns with serving.
                let serving = runtime.spawn(serve(listener, state, conns, auth, tls, rx));
                let _ = runtime.block_on(serving);
            })
            .map_err(Error::Start)?;
        Ok(PrometheusServer {
            addr: local_addr,
            readiness,
            running: Mutex::new(Running {
                stop: Some(tx),
                thread: Some(thread),
            }),
        })
    }
}

/// The address from `OTEL_EXPORTER_PROMETHEUS_HOST`/`_PORT`. A value that cannot be used is
/// warned about and replaced by the default, as the OpenTelemetry specification asks of
/// environment variables (an address given in code is used as is).
fn addr_from_env(host: Option<&str>, port: Option<&str>) -> SocketAddr {
    let ignored = |var: &str, value: &str, reason: String| {
        sonde_core::diag::warn(format_args!(
            "{var}={value:?} is ignored ({reason}); using the default (127.0.0.1, port 9464)"
        ));
    };
    let ip = match host.map(str::trim).filter(|h| !h.is_empty()) {
        None | Some("localhost") => DEFAULT_ADDR.ip(),
        Some(h) => h.parse::<IpAddr>().unwrap_or_else(|e| {
            ignored("OTEL_EXPORTER_PROMETHEUS_HOST", h, e.to_string());
            DEFAULT_ADDR.ip()
        }),
    };
    let port = match port.map(str::trim).filter(|p| !p.is_empty()) {
        None => DEFAULT_ADDR.port(),
        Some(p) => p.parse::<u16>().unwrap_or_else(|e| {
            ignored("OTEL_EXPORTER_PROMETHEUS_PORT", p, e.to_string());
            DEFAULT_ADDR.port()
        }),
    };
    SocketAddr::new(ip, port)
}

/// A running exporter. Dropping it stops the server (and logs that it did): keep it in a
/// variable for as long as `/metrics` should be served.
#[must_use = "dropping the handle stops the server: keep it (`let _metrics = ...`) for as long as /metrics should be served"]
#[derive(custom_debug::Debug)]
pub struct PrometheusServer {
    addr: SocketAddr,
    #[debug(skip)]
    readiness: Readiness,
    #[debug(skip)]
    running: Mutex<Running>,
}

/// The server thread and how to stop it, taken by the first shutdown.
struct Running {
    stop: Option<oneshot::Sender<Stop>>,
    thread: Option<JoinHandle<()>>,
}

impl PrometheusServer {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The readiness served on `/ready`: declare conditions not ready and ready again on it
    /// (clones share the conditions). See [`Readiness`].
    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// Stops accepting and returns the listening socket, still bound, for a successor
    /// ([`PrometheusBuilder::listener`]): a configuration change on the same address without a
    /// moment in which connections are refused. Requests in flight finish in the background.
    /// `None` if the server had already stopped.
    pub fn into_listener(self) -> Option<std::net::TcpListener> {
        let mut running = self.running();
        let tx = running.stop.take()?;
        let (back, listener) = std::sync::mpsc::sync_channel(1);
        tx.send(Some(back)).ok()?;
        let l = listener.recv_timeout(Duration::from_secs(10)).ok();
        // The thread drains the connections in flight on its own.
        running.thread.take();
        l
    }

    fn running(&self) -> std::sync::MutexGuard<'_, Running> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops accepting and waits up to `timeout` for the requests in flight to finish and the
    /// thread to end; false if it had not ended by then (it goes on finishing them alone).
    fn stop(&self, timeout: Duration) -> bool {
        let (tx, thread) = {
            let mut running = self.running();
            (running.stop.take(), running.thread.take())
        };
        if let Some(tx) = tx {
            let _ = tx.send(None);
        }
        let Some(thread) = thread else {
            return true;
        };
        // No deadline (a timeout too long to add) means: wait for it.
        let deadline = Instant::now().checked_add(timeout);
        while !thread.is_finished() {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = thread.join();
        true
    }
}

/// A pull exporter holds nothing to deliver: `flush` has nothing to do; `shutdown` stops
/// accepting, lets the requests in flight finish within the deadline and ends the thread.
impl sonde_core::Component for PrometheusServer {
    fn name(&self) -> &'static str {
        "prometheus"
    }

    fn shutdown(&self, timeout: Duration) -> Result<(), sonde_core::ComponentError> {
        if self.stop(timeout) {
            Ok(())
        } else {
            Err(sonde_core::ComponentError::new(
                "prometheus",
                format_args!(
                    "requests in flight on {} had not finished after {timeout:?}; they finish in the background",
                    self.addr
                ),
            ))
        }
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        if self.running().thread.is_some() {
            sonde_core::diag::info(format_args!(
                "Prometheus server on {}: stopping because its handle was dropped (keep it in a variable, `let _metrics = ...`, for as long as /metrics should be served)",
                self.addr
            ));
        }
        // As before the trait: a dropped server waits for its requests in flight.
        self.stop(Duration::MAX);
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
    /// The latest body of each (format, gzip) and when its render started. Scrapes that
    /// arrive while a render is running wait for it and share its body.
    renders: [tokio::sync::Mutex<Option<(Instant, Bytes)>>; 6],
    /// `/report`'s own delta reader and when it last read, for rates.
    report: Mutex<(sonde_core::Reader, Instant)>,
    /// `/report`'s intervals of changes, for its sliding windows.
    ring: Mutex<Ring>,
    /// What the application declares on `/ready`.
    readiness: Readiness,
    exporters_affect_readiness: bool,
    /// Fills `/report`'s `objectives`.
    judge: Option<Arc<dyn Judge>>,
}

impl State {
    /// Collects and encodes; `reuse` is an older body whose allocation may be taken back.
    fn render(&self, format: Format, gzip: bool, reuse: Option<Bytes>) -> Bytes {
        let pooled = || {
            self.buffers
                .lock()
                .ok()
                .and_then(|mut b| b.pop())
                .unwrap_or_default()
        };
        // An old body that no response holds any more is reused; one in flight is left alone.
        let reclaimed = reuse.and_then(|b| b.try_into_mut().ok()).map(Vec::from);
        let mut buf = match (gzip, reclaimed) {
            (false, Some(v)) => v,
            _ => pooled(),
        };
        buf.clear();
        encode_registry(&self.registry, Some(&self.resource), format, &mut buf);
        if !gzip {
            return Bytes::from(buf);
        }
        let mut enc = flate2::write::GzEncoder::new(
            Vec::with_capacity(buf.len() / 4),
            flate2::Compression::fast(),
        );
        // Writing to a Vec cannot fail.
        let _ = enc.write_all(&buf);
        if let Ok(mut b) = self.buffers.lock() {
            b.push(buf);
        }
        Bytes::from(enc.finish().unwrap_or_default())
    }
}

/// Closes an interval of `/report`'s windows every resolution, off the worker that serves.
async fn sample(state: Arc<State>) {
    let resolution = match state.ring.lock() {
        Ok(r) if !r.is_empty() => r.resolution(),
        _ => return,
    };
    let mut every = tokio::time::interval(resolution);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate: the ring starts then.
    every.tick().await;
    loop {
        every.tick().await;
        let st = state.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Ok(mut ring) = st.ring.lock() {
                ring.tick(Instant::now());
            }
        })
        .await;
    }
}

/// Serves one connection with `http` until it ends, or until `closing` turns true: then the
/// request in progress is answered and the connection closed.
async fn serve_until_closing<T, S>(
    http: &hyper::server::conn::http1::Builder,
    stream: T,
    service: S,
    closing: &mut tokio::sync::watch::Receiver<bool>,
) where
    T: AsyncRead + AsyncWrite + Unpin,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut conn = std::pin::pin!(http.serve_connection(TokioIo::new(stream), service));
    tokio::select! {
        _ = conn.as_mut() => {}
        // The guard `wait_for` returns is not `Send`: dropped before the branch runs.
        _ = async { let _ = closing.wait_for(|c| *c).await; } => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    state: Arc<State>,
    conns: Arc<Conns>,
    auth: Option<Arc<Auth>>,
    tls: Option<Arc<ReloadingTls>>,
    mut shutdown: oneshot::Receiver<Stop>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    let routes = TowerToHyperService::new(warp::service(routes(state.clone())));
    let (conns_done_tx, mut conns_done) = tokio::sync::mpsc::channel::<()>(1);
    // Set at shutdown: each connection finishes the request in flight and closes, so an idle
    // kept-alive connection (Prometheus keeps one per target) does not hold the shutdown up.
    let (closing_tx, closing_rx) = tokio::sync::watch::channel(false);
    let stop: Stop;
    loop {
        tokio::select! {
            s = &mut shutdown => {
                stop = s.ok().flatten();
                break;
            }
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        if let Some(c) = &conns.accept_errors {
                            c.add(1);
                        }
                        if let Some(pause) = accept_backoff(&e) {
                            // The listener stays readable while the error lasts (no file
                            // descriptor for the pending connection): retrying at once spins.
                            tokio::select! {
                                s = &mut shutdown => {
                                    stop = s.ok().flatten();
                                    break;
                                }
                                _ = tokio::time::sleep(pause) => {}
                            }
                        }
                        continue;
                    }
                };
                let Some(slot) = conns.admit().await else {
                    drop(stream);
                    continue;
                };
                let (routes, auth, tls) = (routes.clone(), auth.clone(), tls.clone());
                let timeout = state.timeout;
                let done = conns_done_tx.clone();
                let conns = conns.clone();
                let mut closing = closing_rx.clone();
                tokio::spawn(async move {
                    let _open = OpenGuard { conns: conns.clone(), id: slot.id };
                    let serving = slot.clone();
                    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (routes, auth) = (routes.clone(), auth.clone());
                        let busy = Busy::new(&serving);
                        async move {
                            let _busy = busy;
                            if let Some(auth) = &auth
                                && !auth.check(req.headers().get(header::AUTHORIZATION)).await
                            {
                                return Ok(warp::Reply::into_response(unauthorized()));
                            }
                            hyper::service::Service::call(&routes, req).await
                        }
                    });
                    let mut http = hyper::server::conn::http1::Builder::new();
                    // hyper restarts this timer when a kept-alive connection goes idle, so it
                    // is the idle timeout as well.
                    http.timer(TokioTimer::new()).header_read_timeout(timeout);
                    let io = Guarded::new(stream, slot.clone(), conns.write_timeout);
                    let work = async {
                        match tls {
                            Some(tls) => {
                                // The handshake gets the same deadline as the headers.
                                let acceptor = tls.acceptor();
                                if let Ok(Ok(stream)) = tokio::time::timeout(timeout, acceptor.accept(io)).await {
                                    serve_until_closing(&http, stream, service, &mut closing).await;
                                }
                            }
                            None => serve_until_closing(&http, io, service, &mut closing).await,
                        }
                    };
                    tokio::select! {
                        _ = work => {}
                        // Evicted to make room: dropping the connection closes it.
                        _ = slot.evict.notified() => {}
                    }
                    drop(done);
                });
                // Let the connections that became readable run before the next accept, so a
                // flood of new connections cannot evict one whose request already arrived.
                tokio::task::yield_now().await;
            }
        }
    }
    // Handing the listener to a successor (a reload on the same address), the kept-alive
    // connections go on being served until they go idle past the timeout: closing them now
    // would fail a scraper's request racing the close. Stopping for good, they close at once
    // (the requests in flight finish first).
    let handover = stop.is_some();
    if let Some(back) = stop
        && let Ok(l) = listener.into_std()
    {
        let _ = back.send(l);
    }
    if !handover {
        let _ = closing_tx.send(true);
    }
    drop(conns_done_tx);
    let _ = tokio::time::timeout(state.timeout, conns_done.recv()).await;
}

/// How long to pause after a failed `accept`, if at all.
fn accept_backoff(e: &std::io::Error) -> Option<Duration> {
    static EXHAUSTED: sonde_core::diag::RateLimit =
        sonde_core::diag::RateLimit::new(Duration::from_secs(60));
    use std::io::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::Interrupted
    ) {
        // That one connection went away before it was accepted; the next one is fine.
        return None;
    }
    // EMFILE, ENFILE, ENOBUFS, ENOMEM: out of descriptors or memory for now.
    if matches!(e.raw_os_error(), Some(23 | 24 | 105 | 12))
        && let Some(n) = EXHAUSTED.hit()
    {
        sonde_core::diag::warn(format_args!(
            "Prometheus server: cannot accept connections: {e} ({n} time(s) in the last minute); retrying every 100 ms. Raise the open-files limit (ulimit -n, LimitNOFILE=) or lower max_connections"
        ));
    }
    Some(Duration::from_millis(100))
}

/// One open connection: whether it is serving a request, and how to close it.
struct Slot {
    id: u64,
    /// Requests in progress (0 or 1 on HTTP/1) plus a response write that is waiting.
    busy: AtomicU64,
    /// The last read found nothing to read: the connection waits on its client (idle, or
    /// headers arriving slowly). Only such connections are evicted; a new one whose request
    /// has not been looked at yet is not.
    waiting: AtomicBool,
    evict: Notify,
}

/// Marks a connection busy while a request is handled.
struct Busy(Arc<Slot>);

impl Busy {
    fn new(slot: &Arc<Slot>) -> Busy {
        slot.busy.fetch_add(1, Ordering::Relaxed);
        Busy(slot.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The open connections, oldest first, and the connection self-metrics.
struct Conns {
    max: usize,
    write_timeout: Duration,
    next: AtomicU64,
    open: Mutex<BTreeMap<u64, Arc<Slot>>>,
    open_gauge: Option<Gauge>,
    refused: Option<Counter>,
    evicted: Option<Counter>,
    accept_errors: Option<Counter>,
}

impl Conns {
    fn new(registry: &Registry, max: usize, write_timeout: Duration) -> Conns {
        let counter = |name: &'static str, help: &'static str| {
            registry
                .counter(name)
                .description(help)
                .build()
                .ok()
                .map(|f| f.handle())
        };
        Conns {
            max,
            write_timeout,
            next: AtomicU64::new(0),
            open: Mutex::new(BTreeMap::new()),
            open_gauge: registry
                .gauge(CONNECTIONS_OPEN)
                .description("Connections open on the /metrics server.")
                .build()
                .ok()
                .map(|f| f.handle()),
            refused: counter(
                CONNECTIONS_REFUSED,
                "Connections to the /metrics server closed at once: the connection limit was reached and every connection was serving a request.",
            ),
            evicted: counter(
                CONNECTIONS_EVICTED,
                "Idle connections to the /metrics server closed to make room for a new one at the connection limit.",
            ),
            accept_errors: counter(
                ACCEPT_ERRORS,
                "Failed accepts on the /metrics server (such as out of file descriptors).",
            ),
        }
    }

    /// Registers a new connection, evicting the oldest idle one at the limit; `None` refuses
    /// it. Connections not yet looked at get up to 100 ms to show whether they are idle.
    async fn admit(&self) -> Option<Arc<Slot>> {
        for _ in 0..50 {
            match self.try_admit() {
                Ok(slot) => return Some(slot),
                Err(false) => break,
                Err(true) => tokio::time::sleep(Duration::from_millis(2)).await,
            }
        }
        if let Some(c) = &self.refused {
            c.add(1);
        }
        None
    }

    /// `Err(true)`: full, but some connections may turn out idle soon.
    fn try_admit(&self) -> Result<Arc<Slot>, bool> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.len() >= self.max {
            let idle = |s: &Slot| s.busy.load(Ordering::Relaxed) == 0;
            let victim = open
                .iter()
                .find(|(_, s)| idle(s) && s.waiting.load(Ordering::Relaxed))
                .map(|(id, _)| *id);
            match victim.and_then(|id| open.remove(&id)) {
                Some(v) => {
                    v.evict.notify_one();
                    if let Some(c) = &self.evicted {
                        c.add(1);
                    }
                }
                None => return Err(open.values().any(|s| idle(s))),
            }
        }
        let slot = Arc::new(Slot {
            id: self.next.fetch_add(1, Ordering::Relaxed),
            busy: AtomicU64::new(0),
            waiting: AtomicBool::new(false),
            evict: Notify::new(),
        });
        open.insert(slot.id, slot.clone());
        if let Some(g) = &self.open_gauge {
            g.set(open.len() as i64);
        }
        Ok(slot)
    }
}

/// Removes a connection from [`Conns`] when its task ends.
struct OpenGuard {
    conns: Arc<Conns>,
    id: u64,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        if let Ok(mut open) = self.conns.open.lock() {
            open.remove(&self.id);
            if let Some(g) = &self.conns.open_gauge {
                g.set(open.len() as i64);
            }
        }
    }
}

/// A connection's socket with a write timeout: a write that cannot progress for
/// `write_timeout` (a client that does not read) fails, which closes the connection. A write
/// that is waiting also keeps the connection from being evicted.
struct Guarded<S> {
    io: S,
    slot: Arc<Slot>,
    write_timeout: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> Guarded<S> {
    fn new(io: S, slot: Arc<Slot>, write_timeout: Duration) -> Self {
        Guarded {
            io,
            slot,
            write_timeout,
            stalled: None,
        }
    }

    fn progress<T>(
        &mut self,
        r: Poll<std::io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<T>> {
        match r {
            Poll::Pending => {
                if self.stalled.is_none() {
                    self.slot.busy.fetch_add(1, Ordering::Relaxed);
                }
                let timeout = self.write_timeout;
                let sleep = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the client did not read the response within the write timeout",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
            ready => {
                self.clear();
                ready
            }
        }
    }

    fn clear(&mut self) {
        if self.stalled.take().is_some() {
            self.slot.busy.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl<S> Drop for Guarded<S> {
    fn drop(&mut self) {
        self.clear();
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        self.slot.waiting.store(r.is_pending(), Ordering::Relaxed);
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.progress(r, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.progress(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        self.progress(r, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_shutdown(cx);
        self.progress(r, cx)
    }
}

fn unauthorized() -> Response<Vec<u8>> {
    let mut r = plain(StatusCode::UNAUTHORIZED, "unauthorized\n");
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Basic realm=\"sonde\""),
    );
    r
}

/// Basic auth users and a cache of credentials that passed bcrypt.
struct Auth {
    users: HashMap<String, String>,
    /// Checked against when the user is unknown, so timing does not reveal which users exist.
    dummy: String,
    verified: Mutex<HashSet<u64>>,
    keys: std::hash::RandomState,
}

impl Auth {
    fn new(users: &[(String, String)]) -> Result<Option<Auth>, Error> {
        if users.is_empty() {
            return Ok(None);
        }
        let mut cost = 4;
        for (user, hash) in users {
            cost = cost.max(bcrypt_cost(user, hash)?);
        }
        let dummy = bcrypt::hash("sonde-unknown-user", cost)
            .map_err(|e| Error::WebConfig(e.to_string()))?;
        Ok(Some(Auth {
            users: users.iter().cloned().collect(),
            dummy,
            verified: Mutex::new(HashSet::new()),
            keys: std::hash::RandomState::new(),
        }))
    }

    async fn check(self: &Arc<Self>, header: Option<&header::HeaderValue>) -> bool {
        use base64::Engine as _;
        use std::hash::BuildHasher as _;
        let Some(credentials) = header
            .and_then(|h| h.to_str().ok())
            .and_then(|h| {
                h.strip_prefix("Basic ")
                    .or_else(|| h.strip_prefix("basic "))
            })
            .and_then(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .ok()
            })
            .and_then(|b| String::from_utf8(b).ok())
        else {
            return false;
        };
        let Some((user, password)) = credentials.split_once(':') else {
            return false;
        };
        let key = self.keys.hash_one((user, password));
        if self.verified.lock().is_ok_and(|v| v.contains(&key)) {
            return true;
        }
        let this = self.clone();
        let (user, password) = (user.to_owned(), password.to_owned());
        let ok = tokio::task::spawn_blocking(move || match this.users.get(&user) {
            Some(hash) => bcrypt::verify(&password, hash).unwrap_or(false),
            None => {
                let _ = bcrypt::verify(&password, &this.dummy);
                false
            }
        })
        .await
        .unwrap_or(false);
        if ok && let Ok(mut v) = self.verified.lock() {
            // Bounded: a flood of distinct valid credentials cannot grow it without limit.
            if v.len() >= 1024 {
                v.clear();
            }
            v.insert(key);
        }
        ok
    }
}

/// The TLS configuration, read again when the certificate or key file changes.
struct ReloadingTls {
    cert: PathBuf,
    key: PathBuf,
    current: Mutex<TlsCurrent>,
}

struct TlsCurrent {
    acceptor: TlsAcceptor,
    stamp: FileStamp,
    checked: Instant,
}

/// Modification time and length of the certificate and key files.
type FileStamp = [Option<(SystemTime, u64)>; 2];

fn file_stamp(cert: &Path, key: &Path) -> FileStamp {
    let one = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())))
    };
    [one(cert), one(key)]
}

impl ReloadingTls {
    fn new(cert: &Path, key: &Path) -> Result<ReloadingTls, Error> {
        let stamp = file_stamp(cert, key);
        Ok(ReloadingTls {
            current: Mutex::new(TlsCurrent {
                acceptor: tls_acceptor(cert, key)?,
                stamp,
                checked: Instant::now(),
            }),
            cert: cert.to_owned(),
            key: key.to_owned(),
        })
    }

    /// The acceptor for a new connection, after reloading the files if they changed (checked
    /// at most once a second).
    fn acceptor(&self) -> TlsAcceptor {
        static FAILED: sonde_core::diag::RateLimit =
            sonde_core::diag::RateLimit::new(Duration::from_secs(60));
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if cur.checked.elapsed() >= Duration::from_secs(1) {
            cur.checked = Instant::now();
            let stamp = file_stamp(&self.cert, &self.key);
            if stamp != cur.stamp {
                // Recorded either way: a failed pair is tried again when a file changes again
                // (a key written after its certificate), not every second.
                cur.stamp = stamp;
                match tls_acceptor(&self.cert, &self.key) {
                    Ok(a) => {
                        cur.acceptor = a;
                        sonde_core::diag::info(format_args!(
                            "Prometheus server: reloaded the TLS certificate from {}",
                            self.cert.display()
                        ));
                    }
                    Err(e) => {
                        if FAILED.hit().is_some() {
                            sonde_core::diag::warn(format_args!(
                                "Prometheus server: the changed TLS files do not load ({e}); still serving the previous certificate"
                            ));
                        }
                    }
                }
            }
        }
        cur.acceptor.clone()
    }
}

/// Checks that a certificate chain and key load as the server would load them (for
/// configuration checks before start).
pub fn check_tls_files(cert: &Path, key: &Path) -> Result<(), Error> {
    tls_acceptor(cert, key).map(drop)
}

/// Checks that `hash` is a bcrypt hash, as [`PrometheusBuilder::basic_auth_user`] requires.
pub fn check_basic_auth_user(user: &str, hash: &str) -> Result<(), Error> {
    bcrypt_cost(user, hash).map(drop)
}

fn bcrypt_cost(user: &str, hash: &str) -> Result<u32, Error> {
    bcrypt::HashParts::from_str(hash)
        .map(|p| p.get_cost())
        .map_err(|_| {
            Error::WebConfig(format!(
                "the password hash for user {user:?} is not a bcrypt hash; create one with `htpasswd -nBC 10 {user}` and pass the part after the colon"
            ))
        })
}

fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, Error> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let bad =
        |path: &Path, what: String| Error::WebConfig(format!("TLS: {}: {what}", path.display()));
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(cert, format!("cannot read the certificate chain: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(cert, format!("not a PEM certificate chain: {e}")))?;
    if certs.is_empty() {
        return Err(bad(cert, "holds no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| bad(key, format!("not a PEM private key: {e}")))?;
    // rustls 0.23.48 deprecates ring for lacking post-quantum key exchange; ring keeps the
    // build free of the C/cmake toolchain aws-lc needs, and is the workspace's one TLS stack.
    #[allow(deprecated)]
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::WebConfig(format!("TLS: {e}")))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| {
        Error::WebConfig(format!(
            "TLS: the certificate and key do not fit together: {e}"
        ))
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn routes(
    state: Arc<State>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
    let with_state = warp::any().map(move || state.clone());
    let metrics = warp::path("metrics")
        .and(warp::path::end())
        .and(warp::get())
        .and(with_state.clone())
        .and(warp::header::optional::<String>("accept"))
        .and(warp::header::optional::<String>("accept-encoding"))
        .then(metrics);
    let report = warp::path("report")
        .and(warp::path::end())
        .and(warp::get())
        .and(with_state.clone())
        // No query string is not an error: the default format.
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .then(report)
        .map(warp::Reply::into_response);
    let health = warp::path("health")
        .and(warp::path::end())
        .and(warp::get())
        .and(with_state.clone())
        .map(|state: Arc<State>| warp::Reply::into_response(health(&state)));
    let ready = warp::path("ready")
        .and(warp::path::end())
        .and(warp::get())
        .and(with_state)
        .map(|state: Arc<State>| warp::Reply::into_response(ready(&state)));
    // `/` only: every other unknown path stays a 404.
    let landing = warp::path::end()
        .and(warp::get())
        .map(|| warp::Reply::into_response(landing()));
    metrics
        .or(report)
        .unify()
        .or(health)
        .unify()
        .or(ready)
        .unify()
        .or(landing)
        .unify()
}

/// The page on `/`, as node_exporter has one: someone who opens the address in a browser
/// learns where the metrics are. Relative links, so it also works behind a path prefix.
const LANDING_PAGE: &str = r#"<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>sonde metrics</title></head>
<body>
<h1>sonde metrics</h1>
<p>This is sonde's Prometheus exporter. Point a Prometheus scrape job at <code>/metrics</code>.</p>
<ul>
<li><a href="metrics">/metrics</a>: the metrics, in the format the scraper asks for (Prometheus text, OpenMetrics or protobuf)</li>
<li><a href="report">/report</a>: a JSON report of where the time goes (rates, percentiles, error ratios per route; last minute, last 5 minutes, since start); <a href="report?format=md">as Markdown</a></li>
<li><a href="health">/health</a>: liveness and the state of each exporter, as JSON</li>
<li><a href="ready">/ready</a>: readiness (what the application declares and the exporters' state), 200 or 503, as JSON</li>
</ul>
</body>
</html>
"#;

fn landing() -> Response<&'static str> {
    let mut r = Response::new(LANDING_PAGE);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

/// The renderings of `/report`.
#[derive(Clone, Copy, PartialEq, Debug)]
enum ReportFormat {
    Json,
    Markdown,
}

/// `format` from `/report`'s query string (other parameters are ignored; the last `format`
/// wins); the error is the 400 body.
fn report_format(query: &str) -> Result<ReportFormat, String> {
    let mut format = ReportFormat::Json;
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key != "format" {
            continue;
        }
        format = match value.to_ascii_lowercase().as_str() {
            "json" => ReportFormat::Json,
            "md" | "markdown" => ReportFormat::Markdown,
            _ => {
                let shown: String = value.chars().take(40).collect();
                return Err(format!(
                    "unknown /report format {shown:?}: use format=json (the default) or format=md (Markdown)\n"
                ));
            }
        };
    }
    Ok(format)
}

async fn report(state: Arc<State>, query: String) -> Response<Vec<u8>> {
    let format = match report_format(&query) {
        Ok(f) => f,
        Err(msg) => return plain_owned(StatusCode::BAD_REQUEST, msg),
    };
    let Ok(permit) = state.scrapes.clone().try_acquire_owned() else {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many concurrent requests\n",
        );
    };
    let job = {
        let state = state.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let (deltas, interval) = match state.report.lock() {
                Ok(mut r) => {
                    let interval = r.1.elapsed().as_secs_f64();
                    r.1 = Instant::now();
                    (r.0.collect(), interval)
                }
                Err(_) => (sonde_core::Snapshot::default(), 0.0),
            };
            let cumulative = state.registry.snapshot();
            let now = Instant::now();
            let uptime = state.started.elapsed();
            let (windows, resolution) = match state.ring.lock() {
                Ok(mut ring) => (ring.windows(&cumulative, now, uptime), ring.resolution()),
                Err(_) => (Vec::new(), Duration::ZERO),
            };
            let mut report = crate::report::report_with_windows(
                &cumulative,
                &deltas,
                interval,
                uptime.as_secs_f64(),
                &windows,
                resolution,
            );
            if let Some(judge) = &state.judge {
                crate::report::add_verdicts(&mut report, judge.as_ref(), &windows);
            }
            match format {
                ReportFormat::Json => report.to_string().into_bytes(),
                ReportFormat::Markdown => crate::report::report_markdown(&report).into_bytes(),
            }
        })
    };
    let content_type = match format {
        ReportFormat::Json => "application/json",
        ReportFormat::Markdown => "text/markdown; charset=utf-8",
    };
    match tokio::time::timeout(state.timeout, job).await {
        Ok(Ok(body)) => Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, content_type)
            .body(body)
            .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "response error\n")),
        Ok(Err(_)) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "building the report failed\n",
        ),
        Err(_) => plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "the report took longer than the request timeout\n",
        ),
    }
}

async fn metrics(
    state: Arc<State>,
    accept: Option<String>,
    encoding: Option<String>,
) -> warp::reply::Response {
    let arrived = Instant::now();
    let format = Format::negotiate(accept.as_deref());
    let gzip = encoding.is_some_and(|e| e.split(',').any(|t| t.trim().starts_with("gzip")));
    let slot = match format {
        Format::Text => 0,
        Format::OpenMetrics => 1,
        Format::Protobuf => 2,
    } * 2
        + usize::from(gzip);
    let work = async {
        let mut latest = state.renders[slot].lock().await;
        // A render that started after this scrape arrived holds everything it asks for.
        if let Some((started, body)) = &*latest
            && *started >= arrived
        {
            return Ok(body.clone());
        }
        let Ok(permit) = state.scrapes.clone().try_acquire_owned() else {
            return Err(plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many concurrent scrapes; raise max_concurrent_scrapes or scrape less often\n",
            ));
        };
        let started = Instant::now();
        let reuse = latest.take().map(|(_, b)| b);
        let st = state.clone();
        let body = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            st.render(format, gzip, reuse)
        })
        .await
        .map_err(|_| {
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "encoding the metrics failed\n",
            )
        })?;
        *latest = Some((started, body.clone()));
        Ok(body)
    };
    match tokio::time::timeout(state.timeout, work).await {
        Ok(Ok(body)) => {
            let mut r = Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, format.content_type());
            if gzip {
                r = r.header(header::CONTENT_ENCODING, "gzip");
            }
            match r.body(body) {
                Ok(r) => warp::Reply::into_response(r),
                Err(_) => warp::Reply::into_response(plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "response error\n",
                )),
            }
        }
        Ok(Err(r)) => warp::Reply::into_response(r),
        Err(_) => warp::Reply::into_response(plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "encoding the metrics took longer than the request timeout\n",
        )),
    }
}

/// An exporter is reported as failing once its requests have failed, with no success, for this
/// many of its intervals.
pub const FAILING_AFTER_INTERVALS: f64 = 3.0;

/// The exporters that report `sonde.exporter.*` self-metrics into the registry: per exporter
/// its figures (JSON object), then the failing ones with their reason, then those whose task
/// panicked.
struct ExporterStates {
    exporters: serde_json::Map<String, serde_json::Value>,
    failing: Vec<(String, String)>,
    panicked: Vec<String>,
}

/// Per exporter that reports `sonde.exporter.*` self-metrics into this registry (remote
/// write, OTLP, CloudWatch): its request counts, drops, queue size, the time of its last
/// success, and whether it is failing: no successful request for [`FAILING_AFTER_INTERVALS`]
/// of its intervals since a request failed.
fn exporter_states(state: &State) -> ExporterStates {
    use sonde_push::telemetry::{
        DROPPED_POINTS, FAILING_SINCE, INTERVAL, LAST_SUCCESS, PANICS, QUEUE_SIZE, REQUESTS,
    };
    let snapshot = state.registry.snapshot_families(&[
        REQUESTS,
        DROPPED_POINTS,
        QUEUE_SIZE,
        LAST_SUCCESS,
        FAILING_SINCE,
        INTERVAL,
        PANICS,
    ]);
    let mut exporters = serde_json::Map::new();
    for f in &snapshot.families {
        for s in &f.series {
            let labels = f.labels(s);
            let get = |k: &str| labels.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
            let Some(name) = get("exporter") else {
                continue;
            };
            let Some(value) = s.point.number().map(|n| n.as_f64()) else {
                continue;
            };
            let entry = exporters
                .entry(name.to_owned())
                .or_insert_with(|| serde_json::json!({}))
                .as_object_mut();
            let Some(entry) = entry else { continue };
            let key = match (f.meta.name(), get("result"), get("reason")) {
                (REQUESTS, Some(result), _) => format!("requests_{result}"),
                (DROPPED_POINTS, _, Some(reason)) => format!("dropped_points_{reason}"),
                (QUEUE_SIZE, _, _) => "queue_size".to_owned(),
                (LAST_SUCCESS, _, _) => "last_success_unix_seconds".to_owned(),
                (FAILING_SINCE, _, _) => "failing_since_unix_seconds".to_owned(),
                (INTERVAL, _, _) => "interval_seconds".to_owned(),
                (PANICS, _, _) => "panics".to_owned(),
                _ => continue,
            };
            entry.insert(key, serde_json::Value::from(value));
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let mut failing = Vec::new();
    let mut panicked = Vec::new();
    for (name, entry) in exporters.iter_mut() {
        let Some(entry) = entry.as_object_mut() else {
            continue;
        };
        let get = |k: &str| entry.get(k).and_then(|v| v.as_f64());
        // A caught panic is a bug in an exporter: it keeps running (the batch is dropped), so
        // it is reported, not counted as a failure.
        if get("panics").unwrap_or(0.0) > 0.0 {
            panicked.push(name.clone());
        }
        let since = get("failing_since_unix_seconds").unwrap_or(0.0);
        let interval = get("interval_seconds").unwrap_or(60.0);
        let down_for = now - since;
        let is_failing = since > 0.0 && down_for >= FAILING_AFTER_INTERVALS * interval;
        entry.insert("healthy".into(), serde_json::Value::from(!is_failing));
        if is_failing {
            let reason = format!(
                "no successful request for {down_for:.0} s ({:.0} intervals of {interval} s); see sonde_exporter_dropped_points_total and the log",
                down_for / interval
            );
            entry.insert("reason".into(), serde_json::Value::from(reason.clone()));
            failing.push((name.clone(), reason));
        }
    }
    ExporterStates {
        exporters,
        failing,
        panicked,
    }
}

/// Liveness: HTTP 200 for as long as the server serves, with each exporter's state (see
/// [`exporter_states`]). A failing exporter turns `status` into `"degraded"` (still 200: the
/// process is alive, and restarting it would not bring the receiver back; `/ready` is where
/// it counts).
fn health(state: &State) -> Response<Vec<u8>> {
    let ExporterStates {
        exporters,
        failing,
        panicked,
    } = exporter_states(state);
    let failing: Vec<String> = failing.into_iter().map(|(name, _)| name).collect();
    let body = serde_json::json!({
        "status": if failing.is_empty() { "ok" } else { "degraded" },
        "failing_exporters": failing,
        "panicked_exporters": panicked,
        "uptime_seconds": state.started.elapsed().as_secs_f64(),
        "families": state.registry.family_names().len(),
        "exporters": exporters,
    });
    json_response(StatusCode::OK, &body)
}

/// Readiness: 200 when no condition the application declared (see [`Readiness`]) is not
/// ready and, unless [`PrometheusBuilder::exporters_affect_readiness`] is off, no exporter is
/// failing; 503 otherwise. The body names every reason.
fn ready(state: &State) -> Response<Vec<u8>> {
    let conditions = state.readiness.snapshot();
    let failing = exporter_states(state).failing;
    let mut reasons: Vec<String> = conditions
        .iter()
        .map(|(name, c)| format!("{name}: {}", c.reason))
        .collect();
    if state.exporters_affect_readiness {
        reasons.extend(
            failing
                .iter()
                .map(|(name, reason)| format!("exporter {name}: {reason}")),
        );
    }
    let ready = reasons.is_empty();
    let conditions: serde_json::Map<String, serde_json::Value> = conditions
        .into_iter()
        .map(|(name, c)| {
            (
                name,
                serde_json::json!({
                    "ready": false,
                    "reason": c.reason,
                    "since_unix_seconds": c.since_unix_seconds,
                }),
            )
        })
        .collect();
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not_ready" },
        "reasons": reasons,
        "conditions": conditions,
        "failing_exporters": failing.into_iter().map(|(name, _)| name).collect::<Vec<_>>(),
        "exporters_affect_readiness": state.exporters_affect_readiness,
        "uptime_seconds": state.started.elapsed().as_secs_f64(),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, &body)
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        // Probes and proxies must not answer from a cache.
        .header(header::CACHE_CONTROL, "no-store")
        .body(body.to_string().into_bytes())
        .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "response error\n"))
}

fn plain_owned(status: StatusCode, msg: String) -> Response<Vec<u8>> {
    let mut r = Response::new(msg.into_bytes());
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn plain(status: StatusCode, msg: &'static str) -> Response<Vec<u8>> {
    plain_owned(status, msg.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_formats_from_the_query() {
        assert_eq!(report_format(""), Ok(ReportFormat::Json));
        assert_eq!(report_format("format=json"), Ok(ReportFormat::Json));
        assert_eq!(report_format("x=1&format=MD"), Ok(ReportFormat::Markdown));
        assert_eq!(report_format("format=markdown"), Ok(ReportFormat::Markdown));
        let err = report_format(&format!("format={}", "y".repeat(500))).unwrap_err();
        assert!(err.len() < 200 && err.contains("format=md"), "{err}");
        assert!(report_format("format").is_err());
    }

    #[test]
    fn env_address() {
        assert_eq!(addr_from_env(None, None), DEFAULT_ADDR);
        assert_eq!(
            addr_from_env(Some("0.0.0.0"), Some("9100")).to_string(),
            "0.0.0.0:9100"
        );
        assert_eq!(addr_from_env(Some("localhost"), None), DEFAULT_ADDR);
        // Unusable values warn and fall back, variable by variable.
        let (addr, lines) =
            sonde_core::testing::capture_diagnostics(|| addr_from_env(None, Some("http")));
        assert_eq!(addr, DEFAULT_ADDR);
        assert!(
            lines.len() == 1
                && lines[0].contains("OTEL_EXPORTER_PROMETHEUS_PORT=\"http\" is ignored"),
            "{lines:?}"
        );
        let (addr, lines) = sonde_core::testing::capture_diagnostics(|| {
            addr_from_env(Some("example"), Some("9100"))
        });
        assert_eq!(addr.to_string(), "127.0.0.1:9100");
        assert!(
            lines[0].contains("OTEL_EXPORTER_PROMETHEUS_HOST"),
            "{lines:?}"
        );
    }
}

#[cfg(test)]
mod landing_tests {
    use sonde_core::Component as _;
    use std::io::{Read as _, Write as _};

    use super::*;

    /// Status line and body of `GET path` over a plain connection.
    fn get(addr: SocketAddr, path: &str) -> (String, String) {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
        (head.to_owned(), body.to_owned())
    }

    /// The body of `GET path`, as JSON.
    fn get_json(addr: SocketAddr, path: &str) -> serde_json::Value {
        let (_, body) = get(addr, path);
        serde_json::from_str(&body).unwrap()
    }

    /// A server of `registry` on a free local port, without a resource.
    fn local(registry: Registry) -> PrometheusBuilder {
        PrometheusBuilder::new()
            .registry(registry)
            .bind("127.0.0.1:0".parse().unwrap())
            .resource(Resource::empty())
    }

    #[test]
    fn health_names_exporters_whose_task_panicked() {
        let registry = Registry::new();
        let server = local(registry.clone()).install().unwrap();
        let metrics = sonde_push::telemetry::ExporterMetrics::register(&registry, "otlp");
        let v = get_json(server.local_addr(), "/health");
        assert_eq!(v["panicked_exporters"], serde_json::json!([]), "{v}");
        metrics.panicked();
        let v = get_json(server.local_addr(), "/health");
        assert_eq!(v["panicked_exporters"], serde_json::json!(["otlp"]), "{v}");
        assert_eq!(v["exporters"]["otlp"]["panics"], 1.0, "{v}");
        assert_eq!(
            v["status"], "ok",
            "a caught panic is reported, the exporter still runs: {v}"
        );
        server.shutdown(std::time::Duration::from_secs(10)).unwrap();
    }

    /// Judges from the windows it is given: met while the shortest window saw a request.
    struct Seen;
    impl Judge for Seen {
        fn judge(&self, windows: &[crate::Window]) -> serde_json::Value {
            let names: Vec<&str> = windows.iter().map(|w| w.name.as_str()).collect();
            let seen = windows
                .first()
                .and_then(|w| w.changes.family("jobs.done"))
                .is_some();
            serde_json::json!([{
                "name": "jobs", "kind": "ratio", "window": names.first(), "unit": "1",
                "target": 0.99, "value": if seen { 1.0 } else { 0.0 },
                "verdict": if seen { "met" } else { "no_data" },
                "error_budget_remaining": 1.0, "windows": names,
            }])
        }
    }

    #[test]
    fn report_carries_the_judge_verdicts_in_json_and_markdown() {
        let registry = Registry::new();
        let server = local(registry.clone())
            .report_windows([Duration::from_secs(60)])
            .judge(Arc::new(Seen))
            .install()
            .unwrap();
        let addr = server.local_addr();
        let report = || get_json(addr, "/report");
        let v = report();
        assert_eq!(v["objectives"][0]["verdict"], "no_data", "{v}");
        assert_eq!(
            v["objectives"][0]["windows"],
            serde_json::json!(["1m", "since_start"]),
            "{v}"
        );
        registry
            .counter("jobs.done")
            .build()
            .unwrap()
            .handle()
            .inc();
        let v = report();
        assert_eq!(v["objectives"][0]["verdict"], "met", "{v}");
        let (_, md) = get(addr, "/report?format=md");
        assert!(md.contains("## Objectives"), "{md}");
        assert!(
            md.contains("| jobs | 1m | 100.00 % | ≥ 99.00 % | met | 100.00 % |"),
            "{md}"
        );
        server.shutdown(std::time::Duration::from_secs(10)).unwrap();

        // Without a judge, no objectives key.
        let server = local(registry).install().unwrap();
        let addr = server.local_addr();
        let v = get_json(addr, "/report");
        assert!(v.get("objectives").is_none(), "{v}");
        server.shutdown(std::time::Duration::from_secs(10)).unwrap();
    }

    #[test]
    fn root_lists_the_endpoints_and_unknown_paths_stay_404() {
        let server = local(Registry::new()).install().unwrap();
        let addr = server.local_addr();
        let (head, body) = get(addr, "/");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: text/html; charset=utf-8"),
            "{head}"
        );
        crate::fixtures::assert_contains_all(
            &body,
            &[
                "href=\"metrics\"",
                "href=\"report\"",
                "href=\"health\"",
                "href=\"ready\"",
            ],
        );
        for path in ["/nope", "/metrics/x", "/index.html"] {
            let (head, _) = get(addr, path);
            assert!(head.starts_with("HTTP/1.1 404"), "{path}: {head}");
        }
        let (head, _) = get(addr, "/metrics");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        server.shutdown(std::time::Duration::from_secs(10)).unwrap();
    }
}
