//! End to end: the real `sonde-load` binary against `sonde-load-target` (and a few raw
//! sockets) on 127.0.0.1, read back through `--json`. Each run lasts a few seconds at most and
//! they run one at a time (`support::serial`), so timing figures are not skewed by each other.

use crate::support;

use std::net::TcpListener;
use std::time::Duration;

use sonde_load::engine::{METRIC, RunOptions, run, run_with_registry};
use sonde_load::plan::{Model, Plan, RequestSpec, Stage};
use sonde_load::result::RunResult;
use support::{Target, serial, sonde_load};

const LIMIT: Duration = Duration::from_secs(30);

fn within(value: f64, truth: f64, tolerance: f64) -> bool {
    (value - truth).abs() <= truth * tolerance
}

/// `sonde-load run --url URL ARGS…` in a fresh directory: it must exit 0; its `--json` result.
fn passing_run(url: &str, args: &[&str]) -> RunResult {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = sonde_load(
        &[&["run", "--url", url][..], args].concat(),
        dir.path(),
        LIMIT,
    );
    assert_eq!(out.code(), 0, "{}", out.stderr);
    out.result().clone()
}

#[test]
fn open_model_achieves_the_target_rate() {
    let _g = serial();
    let target = Target::start(&[]);
    let r = passing_run(&target.url("/"), &["--rate", "200", "--duration", "3s"]);
    eprintln!(
        "open 200/s for 3 s: count {} achieved {:.2}/s target {:?} late {} max lag {:.6} s p50 {:?}",
        r.total.count,
        r.achieved_rate,
        r.target_rate,
        r.generator.late_requests,
        r.generator.max_lag_seconds,
        r.total.latency.quantile(0.5)
    );
    assert_eq!(r.model, "open");
    assert_eq!(r.target_rate, Some(200.0));
    assert!(
        within(r.total.count as f64, 600.0, 0.02),
        "{}",
        r.total.count
    );
    assert!(within(r.achieved_rate, 200.0, 0.02), "{}", r.achieved_rate);
    assert_eq!(r.total.ok, r.total.count);
    assert_eq!(r.total.statuses.get("200"), Some(&r.total.count));
    assert_eq!(r.total.latency.parts.count, r.total.count);
    // About one window a second, together holding every request.
    assert_eq!(r.total.timeline.len(), 3, "{:?}", r.total.timeline);
    let in_windows: u64 = r.total.timeline.iter().map(|w| w.count).sum();
    assert_eq!(in_windows, r.total.count);
    assert_eq!(r.requests.len(), 1);
    assert_eq!(r.requests[0].name, "default");
    assert_eq!(r.requests[0].count, r.total.count);
}

#[test]
fn closed_model_runs_the_users() {
    let _g = serial();
    let target = Target::start(&["--delay", "10ms"]);
    let r = passing_run(&target.url("/"), &["--users", "4", "--duration", "2s"]);
    let p50 = r.total.latency.quantile(0.5).expect("p50");
    let mean = r.total.latency.mean().expect("mean");
    eprintln!(
        "closed 4 users, 10 ms server: count {} achieved {:.1}/s p50 {:.5} s mean {:.5} s",
        r.total.count, r.achieved_rate, p50, mean
    );
    assert_eq!(r.model, "closed");
    assert_eq!(r.users, Some(4));
    assert_eq!(r.target_rate, None);
    // Never faster than the server's delay; the rest is the loopback round trip.
    assert!((0.010..0.015).contains(&p50), "{p50}");
    // Four users always busy: throughput = users / mean latency (Little's law), so at most
    // 400/s here.
    assert!(
        within(r.achieved_rate, 4.0 / mean, 0.05),
        "{}",
        r.achieved_rate
    );
    assert!(r.achieved_rate <= 402.0, "{}", r.achieved_rate);
    assert_eq!(r.total.errors.total(), 0);
}

/// The median latency a minimal client sees: one kept-alive blocking socket, one request every
/// 10 ms (the pace of a 100/s run), timed from write to the last byte of the answer. The
/// target answers `xx` with a Content-Length, so the answer ends with the headers' blank line
/// and two bytes.
fn minimal_client_p50(addr: &str, requests: usize) -> f64 {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let req = format!("GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let mut lat = Vec::with_capacity(requests);
    let mut buf = [0u8; 4096];
    for _ in 0..requests {
        let t = std::time::Instant::now();
        s.write_all(req.as_bytes()).expect("write");
        let mut got = Vec::new();
        loop {
            let n = s.read(&mut buf).expect("read");
            assert!(n > 0, "the target closed the connection");
            got.extend_from_slice(&buf[..n]);
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n")
                && got.len() >= end + 4 + 2
            {
                break;
            }
        }
        lat.push(t.elapsed().as_secs_f64());
        std::thread::sleep(Duration::from_millis(10));
    }
    lat.sort_by(f64::total_cmp);
    lat[lat.len() / 2]
}

#[test]
fn reported_percentiles_match_a_known_delay() {
    let _g = serial();
    // The truth: the server's delay plus what it costs to reach it on this machine, as a
    // minimal blocking client measures it against the same delaying server (in a debug build
    // on a small VM, most of a millisecond: waking idle threads, hyper unoptimized).
    let probe = Target::start(&["--delay", "20ms"]);
    let overhead = minimal_client_p50(&probe.addr, 60) - 0.020;
    drop(probe);
    // 2 % slow rather than 1 %: with exactly 1 % slow the 99th percentile is the last fast
    // request or the first slow one depending on the count (a knife edge in any tool).
    let target = Target::start(&[
        "--delay",
        "20ms",
        "--slow-delay",
        "200ms",
        "--slow-ratio",
        "0.02",
    ]);
    let r = passing_run(&target.url("/"), &["--rate", "100", "--duration", "4s"]);
    let p50 = r.total.latency.quantile(0.5).expect("p50");
    let p99 = r.total.latency.quantile(0.99).expect("p99");
    let (true50, true99) = (0.020 + overhead, 0.200 + overhead);
    eprintln!(
        "delay 20 ms + 2 % at 200 ms: count {} minimal client overhead {overhead:.6} s; p50 {p50:.6} s ({:+.2} % of the minimal client's, {:+.2} % of 20 ms) p99 {p99:.6} s ({:+.2} %, {:+.2} % of 200 ms) late {}",
        r.total.count,
        (p50 / true50 - 1.0) * 100.0,
        (p50 / 0.020 - 1.0) * 100.0,
        (p99 / true99 - 1.0) * 100.0,
        (p99 / 0.200 - 1.0) * 100.0,
        r.generator.late_requests
    );
    // The truth lies between the server's delay and what the minimal client sees: the
    // server's timer wakes on a 1 ms tick, and a client that sends the next request the
    // moment the last one ends meets it at the same (worst) phase every time, while requests
    // at a fixed rate meet every phase. Within 2 % of that range; an unoptimized build's own
    // client stack (tokio at opt-level 0) adds up to about 0.5 ms, which a test build allows.
    let allowance = if cfg!(debug_assertions) { 0.0005 } else { 0.0 };
    assert!(
        p50 >= 0.020 * 0.98 && p50 <= true50 * 1.02 + allowance,
        "p50 {p50}, truth between 0.020 and {true50}"
    );
    assert!(
        p99 >= 0.200 * 0.98 && p99 <= true99 * 1.02 + allowance,
        "p99 {p99}, truth between 0.200 and {true99}"
    );
    assert_eq!(r.total.errors.total(), 0);
}

#[test]
fn a_stall_shows_in_the_percentiles() {
    let _g = serial();
    let target = Target::start(&["--stall", "1s", "--stall-every", "2s"]);
    let r = passing_run(&target.url("/"), &["--rate", "100", "--duration", "4s"]);
    let q = |q| r.total.latency.quantile(q).expect("quantile");
    eprintln!(
        "stall 1 s every 2 s at 100/s: count {} p50 {:.4} p90 {:.4} p99 {:.4} max {:?} queued {}",
        r.total.count,
        q(0.5),
        q(0.9),
        q(0.99),
        r.total.latency.parts.max,
        r.generator.queued_requests
    );
    // Half the arrivals land in a stall and wait for its end: measured from their scheduled
    // start, the top decile is most of a second. A client timing from the send would show the
    // stall only for the few requests in flight when it began.
    assert!(q(0.99) >= 0.8, "p99 {}", q(0.99));
    assert!(q(0.9) >= 0.5, "p90 {}", q(0.9));
    assert!(r.generator.queued_requests > 0);
    assert!(
        within(r.total.count as f64, 400.0, 0.02),
        "{}",
        r.total.count
    );
}

#[test]
fn thresholds_set_the_exit_code() {
    let _g = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let target = Target::start(&["--delay", "5ms"]);
    let url = target.url("/");
    let base = ["run", "--url", &url, "--rate", "50", "--duration", "1s"];
    let pass = sonde_load(
        &[&base[..], &["--threshold", "p95<1s"]].concat(),
        dir.path(),
        LIMIT,
    );
    assert_eq!(pass.code(), 0, "{}", pass.stderr);
    assert!(pass.result().thresholds.iter().all(|t| t.passed));
    let fail = sonde_load(
        &[&base[..], &["--threshold", "p95<1ms"]].concat(),
        dir.path(),
        LIMIT,
    );
    assert_eq!(fail.code(), 1, "{}", fail.stderr);
    let t = &fail.result().thresholds[0];
    assert!(!t.passed && t.observed.is_some_and(|v| v >= 0.005), "{t:?}");
    let bad = sonde_load(
        &[&base[..], &["--threshold", "p95<<1s"]].concat(),
        dir.path(),
        LIMIT,
    );
    assert_eq!(bad.code(), 2, "{}", bad.stderr);
    assert!(
        bad.result.is_none(),
        "nothing is run on a malformed threshold"
    );
    assert!(bad.stderr.contains("threshold"), "{}", bad.stderr);
}

#[test]
fn a_refused_port_counts_connect_errors() {
    let _g = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    // A port that was free a moment ago: connections are refused.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let url = format!("http://127.0.0.1:{port}/");
    let base = ["run", "--url", &url, "--rate", "50", "--duration", "1s"];
    let out = sonde_load(&base, dir.path(), LIMIT);
    assert_eq!(
        out.code(),
        0,
        "no threshold: the run itself passes\n{}",
        out.stderr
    );
    let r = out.result();
    eprintln!(
        "refused port: count {} errors {:?}",
        r.total.count, r.total.errors
    );
    assert!(
        within(r.total.count as f64, 50.0, 0.04),
        "{}",
        r.total.count
    );
    assert_eq!(r.total.errors.connect, r.total.count);
    assert_eq!(r.total.ok, 0);
    let out = sonde_load(
        &[&base[..], &["--threshold", "errors<1%"]].concat(),
        dir.path(),
        LIMIT,
    );
    assert_eq!(out.code(), 1, "{}", out.stderr);
}

#[test]
fn server_errors_are_counted_by_class() {
    let _g = serial();
    let target = Target::start(&["--error-ratio", "0.5", "--error-status", "503"]);
    let r = passing_run(&target.url("/"), &["--rate", "200", "--duration", "1s"]);
    let e = r.total.errors;
    eprintln!(
        "error server: count {} errors {e:?} statuses {:?}",
        r.total.count, r.total.statuses
    );
    assert!(e.http_5xx.abs_diff(r.total.count / 2) <= 1, "{e:?}");
    assert_eq!(r.total.statuses.get("503"), Some(&e.http_5xx));
    assert_eq!(e.total(), e.http_5xx);
    assert_eq!(r.total.ok + e.http_5xx, r.total.count);
}

#[test]
fn a_server_that_never_answers_times_out() {
    let _g = serial();
    // Accepts connections and holds them, never reading or answering; until the test is done,
    // at most 20 s.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    listener.set_nonblocking(true).expect("nonblocking");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_holder = std::sync::Arc::clone(&stop);
    let holder = std::thread::spawn(move || {
        let mut held = Vec::new();
        let end = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < end
            && !stop_holder.load(std::sync::atomic::Ordering::Relaxed)
        {
            match listener.accept() {
                Ok((s, _)) => held.push(s),
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        held.len()
    });
    let url = format!("http://{addr}/");
    let r = passing_run(
        &url,
        &["--rate", "20", "--duration", "1s", "--timeout", "300ms"],
    );
    let p50 = r.total.latency.quantile(0.5).expect("p50");
    eprintln!(
        "never answers: count {} errors {:?} p50 {p50:.4}",
        r.total.count, r.total.errors
    );
    assert_eq!(r.total.count, 20);
    assert_eq!(r.total.errors.timeout, r.total.count);
    // A timeout's latency is the time until it fired.
    assert!((0.29..0.35).contains(&p50), "{p50}");
    // One connection: most arrivals wait for it past their timeout and fail unsent, at the
    // moment their timeout ran out.
    let r = passing_run(
        &url,
        &[
            "--rate",
            "20",
            "--duration",
            "1s",
            "--timeout",
            "300ms",
            "--connections",
            "1",
        ],
    );
    let max = r.total.latency.parts.max.expect("max");
    assert_eq!(r.total.errors.timeout, 20);
    assert!(r.generator.queued_requests >= 10, "{:?}", r.generator);
    assert!((0.29..0.35).contains(&max), "{max}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(holder.join().expect("holder") > 0);
}

#[test]
fn https_to_a_plain_server_is_a_tls_error() {
    let _g = serial();
    let target = Target::start(&[]);
    let url = format!("https://{}/", target.addr);
    let r = passing_run(&url, &["--rate", "20", "--duration", "1s"]);
    eprintln!(
        "https to plain http: count {} errors {:?}",
        r.total.count, r.total.errors
    );
    assert_eq!(r.total.count, 20);
    assert_eq!(r.total.errors.tls, r.total.count);
}

#[test]
fn an_unknown_host_is_a_usage_error() {
    let _g = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = sonde_load(
        &[
            "run",
            "--url",
            "http://no-such-host.invalid/",
            "--rate",
            "10",
            "--duration",
            "1s",
        ],
        dir.path(),
        LIMIT,
    );
    assert_eq!(out.code(), 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("no-such-host.invalid"),
        "{}",
        out.stderr
    );
}

#[test]
fn http2_prior_knowledge_works() {
    let _g = serial();
    let target = Target::start(&[]);
    let r = passing_run(
        &target.url("/"),
        &["--rate", "100", "--duration", "1s", "--http2"],
    );
    assert_eq!(r.total.count, 100);
    assert_eq!(r.total.ok, 100, "{:?}", r.total.errors);
}

#[test]
fn warmup_is_sent_but_not_recorded() {
    let _g = serial();
    let target = Target::start(&[]);
    let started = std::time::Instant::now();
    let r = passing_run(
        &target.url("/"),
        &["--rate", "100", "--warmup", "1s", "--duration", "1s"],
    );
    // Warm-up and measured second were both sent: the last request is scheduled one interval
    // (10 ms) before the two seconds are up, and the run ends when it is answered.
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(r.total.count, 100, "only the measured second counts");
    assert_eq!(r.duration_seconds, 1.0);
}

fn plan(url: &str, model: Model, stages: Vec<Stage>, connections: usize) -> Plan {
    let home = RequestSpec::new("home", http::Method::GET, url.parse().expect("url"));
    Plan {
        model,
        connections,
        timeout: Duration::from_secs(2),
        ..Plan::new(vec![home], stages)
    }
}

fn stage(seconds: u64, target: f64, hold: bool) -> Stage {
    Stage {
        duration: Duration::from_secs(seconds),
        target,
        hold,
    }
}

/// Runs a plan of `model` over `stages` with `connections` in this process, against a target
/// started with `flags`: its result and the requests of each window of its timeline.
fn ramp(
    flags: &[&str],
    model: Model,
    stages: Vec<Stage>,
    connections: usize,
) -> (RunResult, Vec<u64>) {
    let target = Target::start(flags);
    let p = plan(&target.url("/"), model, stages, connections);
    let r = run(&p, &RunOptions::default()).expect("run");
    let windows = r.total.timeline.iter().map(|w| w.count).collect();
    (r, windows)
}

#[test]
fn an_open_ramp_speeds_up_the_arrivals() {
    let _g = serial();
    // 0 → 200/s over 2 s: 200 requests, a quarter of them in the first second.
    let (r, windows) = ramp(&[], Model::Open, vec![stage(2, 200.0, false)], 8);
    eprintln!(
        "open ramp 0→200/s over 2 s: count {} windows {windows:?}",
        r.total.count
    );
    assert_eq!(r.total.count, 200);
    assert_eq!(r.target_rate, Some(100.0));
    assert!(windows[0].abs_diff(50) <= 3, "{windows:?}");
}

#[test]
fn a_closed_ramp_adds_users() {
    let _g = serial();
    // 0 → 4 users over 1 s (2 on average), then 4 for 1 s.
    let (r, windows) = ramp(
        &["--delay", "10ms"],
        Model::Closed,
        vec![stage(1, 4.0, false), stage(1, 4.0, true)],
        4,
    );
    eprintln!(
        "closed ramp 0→4 users: count {} windows {windows:?}",
        r.total.count
    );
    assert_eq!(r.users, Some(4));
    assert_eq!(windows.len(), 2);
    // Half the user-seconds in the ramp's second as in the hold's.
    let ratio = windows[0] as f64 / windows[1] as f64;
    assert!((0.4..0.6).contains(&ratio), "{windows:?}");
}

#[test]
fn the_run_is_kept_as_metrics_in_a_registry() {
    let _g = serial();
    let target = Target::start(&["--error-ratio", "0.25"]);
    let plan = plan(
        &target.url("/"),
        Model::Open,
        vec![stage(1, 100.0, true)],
        4,
    );
    let registry = sonde_core::Registry::new();
    let r = run_with_registry(&plan, &RunOptions::default(), &registry).expect("run");
    let family = registry
        .histogram(METRIC)
        .unit(sonde_core::Unit::Seconds)
        .precision(sonde_core::Precision::High)
        .labels(["request.name", "error.type"])
        .build()
        .expect("the run's family");
    let ok = family.with(&["home", ""]).read().count();
    let failed = family.with(&["home", "http_5xx"]).read().count();
    assert_eq!(r.total.count, 100);
    assert_eq!(ok, r.total.ok);
    assert_eq!(failed, r.total.errors.http_5xx);
    assert_eq!(failed, 25);
}

/// A TLS server (self-signed for 127.0.0.1, ALPN h2 and http/1.1) on its own runtime, counting
/// the HTTP/2 requests it answers; stopped on drop.
struct TlsServer {
    addr: std::net::SocketAddr,
    h2_requests: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TlsServer {
    fn start() -> TlsServer {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU64, Ordering};

        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("cert");
        let chain = vec![cert.cert.der().clone()];
        let key = rustls_pki_types::PrivateKeyDer::Pkcs8(
            rustls_pki_types::PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()),
        );
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let h2_requests = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&h2_requests);
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let thread =
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    let tcp = tokio::select! {
                        a = listener.accept() => match a { Ok((s, _)) => s, Err(_) => continue },
                        _ = &mut stopped => return,
                    };
                    let (acceptor, counter) = (acceptor.clone(), Arc::clone(&counter));
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else { return };
                        let svc = hyper::service::service_fn(move |req: http::Request<_>| {
                            if req.version() == http::Version::HTTP_2 {
                                counter.fetch_add(1, Ordering::Relaxed);
                            }
                            async {
                                Ok::<_, std::convert::Infallible>(http::Response::new(
                                    http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                                ))
                            }
                        });
                        let builder = hyper_util::server::conn::auto::Builder::new(
                            hyper_util::rt::TokioExecutor::new(),
                        );
                        let _ = builder
                            .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                            .await;
                    });
                }
            });
            });
        TlsServer {
            addr,
            h2_requests,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn https_works_with_http1_and_http2_and_checks_certificates() {
    let _g = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TlsServer::start();
    let url = format!("https://{}/", server.addr);
    let base = ["run", "--url", &url, "--rate", "50", "--duration", "1s"];
    let h1 = sonde_load(&[&base[..], &["--insecure"]].concat(), dir.path(), LIMIT);
    assert_eq!(h1.code(), 0, "{}", h1.stderr);
    assert_eq!(h1.result().total.ok, 50, "{:?}", h1.result().total.errors);
    let h2 = sonde_load(
        &[&base[..], &["--insecure", "--http2"]].concat(),
        dir.path(),
        LIMIT,
    );
    assert_eq!(h2.code(), 0, "{}", h2.stderr);
    assert_eq!(h2.result().total.ok, 50, "{:?}", h2.result().total.errors);
    // Only the second run asked for h2 (by ALPN).
    assert_eq!(
        server
            .h2_requests
            .load(std::sync::atomic::Ordering::Relaxed),
        50
    );
    // A self-signed certificate is refused without --insecure: TLS errors, run completes.
    let strict = sonde_load(&base, dir.path(), LIMIT);
    assert_eq!(strict.code(), 0, "{}", strict.stderr);
    let r = strict.result();
    assert_eq!(r.total.errors.tls, r.total.count, "{:?}", r.total.errors);
    assert_eq!(r.total.count, 50);
}

/// Ctrl-C (SIGINT) or SIGTERM ends a run early, in either model: the requests in flight
/// finish, and the summary and `--json` are still written, marked interrupted and covering
/// the time the run lasted; the exit code is 130 (not a pass).
#[test]
fn an_interrupted_run_writes_what_it_measured() {
    use std::process::{Command, Stdio};
    use std::time::Instant;
    let _g = serial();
    let target = Target::start(&["--delay", "5ms"]);
    for (model, signal) in [
        (["--rate", "200"], rustix::process::Signal::INT),
        (["--users", "4"], rustix::process::Signal::TERM),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let json = dir.path().join("run.json");
        let child = Command::new(env!("CARGO_BIN_EXE_sonde-load"))
            .args(["run", "--url", &target.url("/"), "--duration", "60s"])
            .args(model)
            .arg("--json")
            .arg(&json)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sonde-load starts");
        std::thread::sleep(Duration::from_millis(1500));
        let sent = Instant::now();
        let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("a pid");
        rustix::process::kill_process(pid, signal).expect("signal sent");
        // Bounded: the run ends within its 60 s only if the signal was heard.
        let waiter = std::thread::spawn(move || child.wait_with_output());
        while !waiter.is_finished() && sent.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if !waiter.is_finished() {
            rustix::process::kill_process(pid, rustix::process::Signal::KILL).ok();
            panic!("{model:?}: sonde-load still running 20 s after {signal:?}");
        }
        let out = waiter.join().expect("waiter").expect("output");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(130), "{model:?}: {stderr}");
        assert!(stderr.contains("interrupted"), "{stderr}");
        assert!(stdout.contains("the run was interrupted after"), "{stdout}");
        let r = sonde_load::result::RunResult::read(&json).expect("--json written");
        assert!(r.interrupted);
        assert!(
            (1.0..5.0).contains(&r.duration_seconds),
            "{model:?}: covers {} s of a 60 s plan, stopped after 1.5 s",
            r.duration_seconds
        );
        assert!(r.total.count > 20, "{model:?}: {} requests", r.total.count);
        assert!(
            within(
                r.achieved_rate,
                r.total.count as f64 / r.duration_seconds,
                0.001
            ),
            "the rate is over the time run: {} vs {} / {}",
            r.achieved_rate,
            r.total.count,
            r.duration_seconds
        );
        assert_eq!(
            r.total.ok, r.total.count,
            "{model:?}: nothing cut off counted as an error"
        );
    }
}
