//! # sonde-probes
//!
//! Synthetic checks for the sonde agent, in the spirit of the Prometheus blackbox exporter's
//! `http` and `tcp` modules: periodic HTTP(S) requests timed by phase and TCP connect checks,
//! recorded as `probe.*` metrics in a sonde [`Registry`].
//!
//! HTTP checks use a small HTTP/1.1 client over tokio (and rustls for `https`) so every phase
//! can be timed: name resolution, TCP connect, TLS handshake, first response byte and the end
//! of the body. One request per check with `Connection: close`; redirects are not followed (a
//! 3xx is reported as is); at most 64 KiB of headers and 1 MiB of body are read; the whole check
//! is bounded by the probe's timeout.
//!
//! ```
//! use std::io::{Read, Write};
//! use std::time::Duration;
//! use sonde_core::{Registry, testing};
//! use sonde_probes::{HttpProbe, Prober, ProbeTarget, TcpProbe};
//!
//! // A tiny local server that answers every request with 200.
//! let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
//! let port = listener.local_addr()?.port();
//! std::thread::spawn(move || {
//!     for conn in listener.incoming() {
//!         let Ok(mut conn) = conn else { continue };
//!         let mut buf = [0u8; 1024];
//!         let _ = conn.read(&mut buf);
//!         let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
//!     }
//! });
//!
//! let registry = Registry::new();
//! let prober = Prober::new(&registry, vec![
//!     ProbeTarget::Http(HttpProbe {
//!         expect_status: vec![200],
//!         timeout: Duration::from_secs(2),
//!         ..HttpProbe::new("home", format!("http://127.0.0.1:{port}/"))
//!     }),
//!     ProbeTarget::Tcp(TcpProbe::new("home-port", format!("127.0.0.1:{port}"))),
//! ])?;
//!
//! // One round now; `prober.start()` runs every probe on its interval instead.
//! let results = prober.run_once();
//! assert!(results.iter().all(|r| r.success), "{results:?}");
//! assert_eq!(results[0].status, Some(200));
//! let phases: Vec<&str> = results[0].phases.iter().map(|p| p.0).collect();
//! assert_eq!(phases, ["dns", "connect", "first_byte", "total"]);
//!
//! let labels = [("probe.name", "home"), ("probe.type", "http"), ("server.address", "127.0.0.1")];
//! let snapshot = registry.snapshot();
//! testing::assert_gauge(&snapshot, "probe.success", &labels, 1.0);
//! testing::assert_gauge(&snapshot, "probe.http.status_code", &labels, 200.0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Metrics
//!
//! Every series carries `probe.name`, `probe.type` (`http` or `tcp`) and `server.address` (the
//! host of the URL or address), so the series count is bounded by the configured targets.
//!
//! | name | kind | extra labels | meaning |
//! |---|---|---|---|
//! | `probe.success` | gauge | | 1 if the last check succeeded, else 0 |
//! | `probe.duration` | histogram (s) | `probe.phase` | time from the start of the check to the end of `dns`, `connect`, `tls`, `first_byte` and `total` |
//! | `probe.http.status_code` | gauge | | status of the last response, 0 if none |
//! | `probe.checks` | counter | `result` = `success`/`failure` | checks run |
//! | `probe.failures` | counter | `error.type` | failed checks by cause |
//! | `probe.tls.cert_expiry` | gauge (s) | | notAfter of the server's leaf certificate, seconds since the epoch (https) |
//!
//! Phases are cumulative, like curl's timings: `connect` is the time from the start of the check
//! until the connection was established, so the time spent connecting is `connect - dns`.
//! Phases reached by failed checks are recorded too, and `total` is recorded for every check.
//!
//! `error.type` is one of `timeout`, `dns`, `connection_refused`, `connection_reset`,
//! `unreachable`, `tls`, `status` (unexpected status code), `protocol` (malformed or truncated
//! response) and `io`.
#![warn(missing_docs)]

mod check;
mod config;
pub mod metrics;
mod tls;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sonde_core::{ComponentThread, Registry};

pub use config::{
    DEFAULT_INTERVAL, DEFAULT_TIMEOUT, HttpProbe, ProbeTarget, ProbesConfig, TcpProbe,
};

use check::{ErrorType, Failure, HttpInfo, Phases};
use config::HttpSpec;
use metrics::Metrics;
use tls::{TlsFactory, TlsSetup};

/// Errors of configuration and startup. Check failures are not errors: they are recorded in
/// the metrics and in [`ProbeResult`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A probe definition is unusable; the message says what to change.
    #[error("invalid probe {probe:?}: {problem}")]
    InvalidTarget {
        /// The probe's name.
        probe: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// The `probe.*` families could not be registered (a family of the same name exists with
    /// another definition).
    #[error("cannot register the probe metrics: {0}")]
    Metrics(#[from] sonde_core::Error),
    /// The prober's thread or runtime could not be started.
    #[error("cannot start the prober: {0}")]
    Start(#[source] std::io::Error),
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeResult {
    /// The probe's name.
    pub name: String,
    /// Whether the check succeeded.
    pub success: bool,
    /// The final HTTP status received, if any (also when it was not an expected one).
    pub status: Option<u16>,
    /// Phases reached, in order, each with the time from the start of the check to its end:
    /// `dns`, `connect`, `tls` (https), `first_byte` (http), and always `total` last.
    pub phases: Vec<(&'static str, Duration)>,
    /// What went wrong, for people.
    pub error: Option<String>,
    /// The `error.type` of a failed check (`timeout`, `dns`, `connection_refused`, ...).
    pub error_type: Option<&'static str>,
    /// The notAfter of the leaf certificate the server presented (https).
    pub tls_cert_not_after: Option<SystemTime>,
}

impl ProbeResult {
    /// The duration of `phase` (see [`phases`](Self::phases)), if it was reached.
    pub fn phase(&self, phase: &str) -> Option<Duration> {
        self.phases.iter().find(|p| p.0 == phase).map(|p| p.1)
    }
}

enum Kind {
    Http {
        spec: HttpSpec,
        request: Vec<u8>,
        tls: Option<TlsSetup>,
    },
    Tcp {
        host: String,
        port: u16,
    },
}

struct Probe {
    name: String,
    labels: [String; 3],
    timeout: Duration,
    interval: Duration,
    kind: Kind,
    metrics: Arc<Metrics>,
}

impl Probe {
    async fn run(&self) -> ProbeResult {
        let mut phases = Phases::new();
        let mut info = HttpInfo::default();
        let outcome: Result<Option<u16>, Failure> = match &self.kind {
            Kind::Http { spec, request, tls } => {
                let checked = tokio::time::timeout(
                    self.timeout,
                    check::http(spec, request, tls.as_ref(), &mut phases, &mut info),
                )
                .await;
                match checked {
                    Err(_) => Err(Failure {
                        kind: ErrorType::Timeout,
                        message: format!(
                            "no complete response within {:?} (last phase completed: {})",
                            self.timeout,
                            phases.reached()
                        ),
                    }),
                    Ok(Err(f)) => Err(f),
                    Ok(Ok(status)) => check_status(&spec.expect_status, status).map(Some),
                }
            }
            Kind::Tcp { host, port } => {
                match tokio::time::timeout(self.timeout, check::tcp(host, *port, &mut phases)).await
                {
                    Err(_) => Err(Failure {
                        kind: ErrorType::Timeout,
                        message: format!(
                            "no connection within {:?} (last phase completed: {})",
                            self.timeout,
                            phases.reached()
                        ),
                    }),
                    Ok(r) => r.map(|()| None),
                }
            }
        };
        phases.finish();
        let (error_type, error) = match outcome {
            Ok(_) => (None, None),
            Err(f) => (Some(f.kind.as_str()), Some(f.message)),
        };
        let result = ProbeResult {
            name: self.name.clone(),
            success: error.is_none(),
            status: info.status,
            phases: phases.list,
            error,
            error_type,
            tls_cert_not_after: info.cert_not_after.and_then(|s| {
                let secs = Duration::from_secs(s.unsigned_abs());
                if s >= 0 {
                    UNIX_EPOCH.checked_add(secs)
                } else {
                    UNIX_EPOCH.checked_sub(secs)
                }
            }),
        };
        self.metrics.record(
            &self.labels,
            matches!(self.kind, Kind::Http { .. }),
            &result,
        );
        result
    }
}

fn check_status(expect: &[u16], status: u16) -> Result<u16, Failure> {
    let ok = if expect.is_empty() {
        (200..400).contains(&status)
    } else {
        expect.contains(&status)
    };
    if ok {
        return Ok(status);
    }
    let expected = if expect.is_empty() {
        "2xx or 3xx".to_owned()
    } else {
        let list: Vec<String> = expect.iter().map(u16::to_string).collect();
        format!("one of {}", list.join(", "))
    };
    Err(Failure {
        kind: ErrorType::Status,
        message: format!("status {status}, expected {expected}"),
    })
}

fn build_request(spec: &HttpSpec) -> Vec<u8> {
    let has = |name: &str| {
        spec.headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(name))
    };
    let mut r = format!("{} {} HTTP/1.1\r\n", spec.method, spec.url.target);
    if !has("host") {
        r.push_str(&format!("Host: {}\r\n", spec.url.host_header()));
    }
    if !has("user-agent") {
        r.push_str(concat!(
            "User-Agent: sonde-probe/",
            env!("CARGO_PKG_VERSION"),
            "\r\n"
        ));
    }
    if !has("accept") {
        r.push_str("Accept: */*\r\n");
    }
    for (k, v) in &spec.headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    if matches!(spec.method.as_str(), "POST" | "PUT" | "PATCH") {
        r.push_str("Content-Length: 0\r\n");
    }
    r.push_str("Connection: close\r\n\r\n");
    r.into_bytes()
}

/// A set of validated probes with their metrics registered. Run them once with
/// [`run_once`](Self::run_once) or periodically with [`start`](Self::start).
pub struct Prober {
    probes: Vec<Arc<Probe>>,
}

impl fmt::Debug for Prober {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prober")
            .field("probes", &self.names().collect::<Vec<_>>())
            .finish()
    }
}

impl Prober {
    /// Validates `targets` (names unique and non-empty, URL syntax and scheme, `host:port`,
    /// headers, CA file) and registers the `probe.*` families in `registry`. Errors name the
    /// probe and the fix.
    pub fn new(registry: &Registry, targets: Vec<ProbeTarget>) -> Result<Prober, Error> {
        let mut kinds = Vec::with_capacity(targets.len());
        let mut tls = TlsFactory::default();
        for (i, target) in targets.iter().enumerate() {
            if targets[..i].iter().any(|t| t.name() == target.name()) {
                return Err(Error::InvalidTarget {
                    probe: target.name().to_owned(),
                    problem: "the name is used by another probe; give every probe a unique name"
                        .into(),
                });
            }
            let (kind, host) = match target {
                ProbeTarget::Http(p) => {
                    let spec = config::validate_http(p)?;
                    let tls = if spec.url.https {
                        Some(tls.for_probe(p)?)
                    } else {
                        None
                    };
                    let host = spec.url.host.clone();
                    let request = build_request(&spec);
                    (Kind::Http { spec, request, tls }, host)
                }
                ProbeTarget::Tcp(p) => {
                    let (host, port) = config::validate_tcp(p)?;
                    (
                        Kind::Tcp {
                            host: host.clone(),
                            port,
                        },
                        host,
                    )
                }
            };
            kinds.push((kind, host));
        }
        let metrics = Arc::new(Metrics::register(registry, targets.len())?);
        let probes = targets
            .into_iter()
            .zip(kinds)
            .map(|(target, (kind, host))| {
                let (name, timeout, interval, ty) = match target {
                    ProbeTarget::Http(p) => (p.name, p.timeout, p.interval, "http"),
                    ProbeTarget::Tcp(p) => (p.name, p.timeout, p.interval, "tcp"),
                };
                let labels = [name.clone(), ty.to_owned(), host];
                metrics.init(&labels);
                Arc::new(Probe {
                    name,
                    labels,
                    timeout,
                    interval,
                    kind,
                    metrics: metrics.clone(),
                })
            })
            .collect();
        Ok(Prober { probes })
    }

    /// The probes' names, in configuration order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.probes.iter().map(|p| p.name.as_str())
    }

    /// Runs every probe on its interval, the first run immediately, on a dedicated thread
    /// (`sonde-probes`) with its own current-thread tokio runtime; the caller's runtime, if
    /// any, is not used. Each probe's checks run one after another: a check that takes longer
    /// than the interval delays the next one.
    pub fn start(self) -> Result<RunningProber, Error> {
        let runtime = runtime().map_err(Error::Start)?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let probes = self.probes;
        let labels = probes.iter().map(|p| p.labels.clone()).collect();
        let metrics = probes.first().map(|p| p.metrics.clone());
        let thread = std::thread::Builder::new()
            .name("sonde-probes".into())
            .spawn(move || {
                runtime.block_on(async move {
                    for probe in probes {
                        tokio::spawn(async move {
                            let mut ticks = tokio::time::interval(probe.interval);
                            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                            loop {
                                ticks.tick().await;
                                probe.run().await;
                            }
                        });
                    }
                    // Resolves on shutdown() and when the RunningProber is dropped.
                    let _ = stopped.await;
                });
                // Name lookups run on blocking threads that cannot be cancelled: do not wait.
                runtime.shutdown_background();
            })
            .map_err(Error::Start)?;
        Ok(RunningProber {
            running: ComponentThread::new(
                "probes",
                move || {
                    let _ = stop.send(());
                },
                thread,
            ),
            labels,
            metrics,
        })
    }

    /// Runs one check of every probe now, concurrently, on a temporary runtime (on a helper
    /// thread when called from within a tokio runtime), records them and returns the results
    /// in configuration order. Takes at most about the longest probe timeout.
    pub fn run_once(&self) -> Vec<ProbeResult> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return std::thread::scope(|s| match s.spawn(|| self.run_once_here()).join() {
                Ok(results) => results,
                Err(panic) => std::panic::resume_unwind(panic),
            });
        }
        self.run_once_here()
    }

    fn run_once_here(&self) -> Vec<ProbeResult> {
        let failed = |p: &Probe, message: String| ProbeResult {
            name: p.name.clone(),
            success: false,
            status: None,
            phases: Vec::new(),
            error: Some(message),
            error_type: Some(ErrorType::Io.as_str()),
            tls_cert_not_after: None,
        };
        let runtime = match runtime() {
            Ok(rt) => rt,
            Err(e) => {
                return self
                    .probes
                    .iter()
                    .map(|p| failed(p, format!("cannot start a tokio runtime: {e}")))
                    .collect();
            }
        };
        let results = runtime.block_on(async {
            let tasks: Vec<_> = self
                .probes
                .iter()
                .map(|p| {
                    let p = p.clone();
                    tokio::spawn(async move { p.run().await })
                })
                .collect();
            let mut results = Vec::with_capacity(tasks.len());
            for (task, probe) in tasks.into_iter().zip(&self.probes) {
                results.push(match task.await {
                    Ok(r) => r,
                    Err(e) => failed(probe, format!("the check did not complete: {e}")),
                });
            }
            results
        });
        runtime.shutdown_background();
        results
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("sonde-probes-dns")
        .build()
}

/// Probes running on their thread; stop them with
/// [`shutdown`](sonde_core::Component::shutdown) (dropping it stops them too).
#[must_use = "dropping the prober stops the probes: keep it (`let _probes = ...`) for as long as they should run"]
pub struct RunningProber {
    /// The probes' thread, stopped by the first stop (or drop).
    running: ComponentThread,
    /// Each probe's label values, to remove its series.
    labels: Vec<[String; 3]>,
    metrics: Option<Arc<Metrics>>,
}

impl fmt::Debug for RunningProber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunningProber")
            .field("running", &self.running.is_running())
            .finish()
    }
}

impl RunningProber {
    /// Stops the probes and removes their series, so they no longer appear in exports.
    pub fn uninstall(self) {
        self.running.stop();
        self.remove_series(None);
    }

    /// Stops the probes and removes the series of those `next` does not run (same name, type
    /// and server address): on a reload, the probes kept continue their series in `next`, the
    /// ones removed disappear from exports.
    pub fn replace_with(self, next: &RunningProber) {
        self.running.stop();
        self.remove_series(Some(next));
    }

    fn remove_series(&self, keep: Option<&RunningProber>) {
        let Some(metrics) = &self.metrics else { return };
        for l in &self.labels {
            if keep.is_some_and(|k| k.labels.contains(l)) {
                continue;
            }
            metrics.remove(l);
        }
    }
}

sonde_core::component_via!(
    /// Probes hold nothing to deliver (each check records its result when it ends): `flush`
    /// has nothing to do; `shutdown` stops the probes, abandoning checks in progress, and waits
    /// for the thread to exit (well under a second). The series stay with their last values.
    RunningProber => running
);
