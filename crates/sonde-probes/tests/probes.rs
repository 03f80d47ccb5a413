//! End-to-end checks against servers on 127.0.0.1.

#![allow(clippy::unwrap_used)] // tests panic on failure by design

use sonde_core::Component as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sonde_core::{Registry, Snapshot, testing};
use sonde_probes::{Error, HttpProbe, ProbeResult, ProbeTarget, Prober, TcpProbe};

/// Serves every connection on its own thread with `handler`; returns the port.
fn serve(handler: impl Fn(TcpStream) + Send + Sync + 'static) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handler = Arc::new(handler);
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let handler = handler.clone();
            thread::spawn(move || handler(conn));
        }
    });
    port
}

/// Reads a request head (up to the blank line).
fn read_request(conn: &mut impl Read) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match conn.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// A connection handler that reads the request and answers with `response`, then closes.
fn answer(response: &'static [u8]) -> Box<dyn Fn(TcpStream) + Send + Sync> {
    Box::new(move |mut conn: TcpStream| {
        read_request(&mut conn);
        let _ = conn.write_all(response);
    })
}

/// A server that reads the request and answers with `response`, then closes.
fn respond(response: &'static [u8]) -> u16 {
    serve(answer(response))
}

/// Writes `parts` one after the other, pausing `pause` after each, until the peer goes away.
fn write_each<'a>(
    conn: &mut TcpStream,
    parts: impl IntoIterator<Item = &'a [u8]>,
    pause: Duration,
) {
    for part in parts {
        if conn.write_all(part).is_err() {
            break;
        }
        if !pause.is_zero() {
            thread::sleep(pause);
        }
    }
}

/// A port with nothing listening.
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn http(name: &str, url: String) -> HttpProbe {
    HttpProbe {
        timeout: Duration::from_secs(3),
        ..HttpProbe::new(name, url)
    }
}

fn one(target: impl Into<ProbeTarget>) -> (Registry, ProbeResult) {
    let registry = Registry::new();
    let prober = Prober::new(&registry, vec![target.into()]).unwrap();
    let mut results = prober.run_once();
    assert_eq!(results.len(), 1);
    (registry, results.remove(0))
}

/// A TCP probe of the local `port`, checking every `interval`.
fn tcp_every(name: &str, port: u16, interval: Duration) -> ProbeTarget {
    TcpProbe {
        interval,
        ..TcpProbe::new(name, format!("127.0.0.1:{port}"))
    }
    .into()
}

/// A prober, on a registry of its own, of the one target `probe` makes for the port of a
/// local server that accepts connections and closes them.
fn lone_prober(probe: impl FnOnce(u16) -> ProbeTarget) -> Prober {
    let port = serve(drop);
    Prober::new(&Registry::new(), vec![probe(port)]).unwrap()
}

/// Runs `targets` once on `registry`, asserting that it takes less than `limit`.
fn run_within(registry: &Registry, targets: Vec<ProbeTarget>, limit: Duration) -> Vec<ProbeResult> {
    let prober = Prober::new(registry, targets).unwrap();
    let start = Instant::now();
    let results = prober.run_once();
    assert!(start.elapsed() < limit, "{:?}", start.elapsed());
    results
}

/// Asserts that the probe labelled `l` failed once, with `error_type`.
#[track_caller]
fn assert_one_failure(snap: &Snapshot, l: [(&str, &str); 3], error_type: &str) {
    testing::assert_counter(
        snap,
        "probe.failures",
        &with(l, ("error.type", error_type)),
        1.0,
    );
}

fn labels<'a>(name: &'a str, ty: &'a str) -> [(&'a str, &'a str); 3] {
    [
        ("probe.name", name),
        ("probe.type", ty),
        ("server.address", "127.0.0.1"),
    ]
}

fn with<'a>(l: [(&'a str, &'a str); 3], extra: (&'a str, &'a str)) -> [(&'a str, &'a str); 4] {
    [l[0], l[1], l[2], extra]
}

fn histogram_count(snap: &Snapshot, l: [(&str, &str); 3], phase: &str) -> u64 {
    snap.point("probe.duration", &with(l, ("probe.phase", phase)))
        .and_then(|p| p.histogram())
        .map_or(0, |h| h.count())
}

fn counter(snap: &Snapshot, name: &str, labels: &[(&str, &str)]) -> f64 {
    snap.point(name, labels)
        .and_then(|p| p.number())
        .map_or(0.0, |n| n.as_f64())
}

fn phase_names(r: &ProbeResult) -> Vec<&'static str> {
    r.phases.iter().map(|p| p.0).collect()
}

fn assert_ordered(r: &ProbeResult) {
    for w in r.phases.windows(2) {
        assert!(w[0].1 <= w[1].1, "phases out of order: {:?}", r.phases);
    }
}

#[test]
fn http_200_success_with_phases_and_metrics() {
    let (tx, rx) = mpsc::channel();
    let port = serve(move |mut conn| {
        let _ = tx.send(read_request(&mut conn));
        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
    });
    let (registry, r) = one(HttpProbe {
        expect_status: vec![200],
        headers: vec![("X-Probe".into(), "yes".into())],
        ..http("web", format!("http://127.0.0.1:{port}/health?full=1"))
    });
    assert!(r.success, "{r:?}");
    assert_eq!(
        (r.status, r.error.as_deref(), r.error_type),
        (Some(200), None, None)
    );
    assert_eq!(phase_names(&r), ["dns", "connect", "first_byte", "total"]);
    assert_ordered(&r);
    assert!(r.phase("connect").unwrap() <= r.phase("first_byte").unwrap());
    assert!(r.phase("first_byte").unwrap() <= r.phase("total").unwrap());

    let request = rx.recv_timeout(Duration::from_secs(1)).unwrap();
    assert!(
        request.starts_with("GET /health?full=1 HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(
        request.contains(&format!("Host: 127.0.0.1:{port}\r\n")),
        "{request}"
    );
    assert!(request.contains(concat!(
        "User-Agent: sonde-probe/",
        env!("CARGO_PKG_VERSION")
    )));
    assert!(request.contains("Connection: close\r\n"), "{request}");
    assert!(request.contains("X-Probe: yes\r\n"), "{request}");

    let snap = registry.snapshot();
    let l = labels("web", "http");
    testing::assert_gauge(&snap, "probe.success", &l, 1.0);
    testing::assert_gauge(&snap, "probe.http.status_code", &l, 200.0);
    testing::assert_counter(&snap, "probe.checks", &with(l, ("result", "success")), 1.0);
    testing::assert_counter(&snap, "probe.checks", &with(l, ("result", "failure")), 0.0);
    for phase in ["dns", "connect", "first_byte", "total"] {
        assert_eq!(histogram_count(&snap, l, phase), 1, "{phase}");
    }
    assert_eq!(histogram_count(&snap, l, "tls"), 0);
    assert!(snap.family("probe.failures").unwrap().series.is_empty());
    assert!(
        snap.family("probe.tls.cert_expiry")
            .unwrap()
            .series
            .is_empty()
    );
}

#[test]
fn http_bodies_chunked_until_close_head_and_informational() {
    let chunked =
        respond(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
    // The chunked server keeps the connection open: the probe must stop at the last chunk.
    let chunked_open = serve(|mut conn| {
        read_request(&mut conn);
        let _ = conn.write_all(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        );
        thread::sleep(Duration::from_secs(10));
    });
    let until_close = respond(b"HTTP/1.0 200 OK\r\n\r\nall of this until close");
    let head = serve(|mut conn| {
        read_request(&mut conn);
        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
        thread::sleep(Duration::from_secs(10));
    });
    let continue_then_ok = respond(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n");
    let redirect = respond(
        b"HTTP/1.1 301 Moved\r\nLocation: http://127.0.0.1:1/\r\nContent-Length: 0\r\n\r\n",
    );
    let big = serve(|mut conn| {
        read_request(&mut conn);
        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\n\r\n");
        let block = vec![b'x'; 64 * 1024];
        // 4 MiB: more than the probe reads.
        for _ in 0..64 {
            if conn.write_all(&block).is_err() {
                break;
            }
        }
    });
    let registry = Registry::new();
    let targets = vec![
        http("chunked", format!("http://127.0.0.1:{chunked}/")).into(),
        http("chunked-open", format!("http://127.0.0.1:{chunked_open}/")).into(),
        http("until-close", format!("http://127.0.0.1:{until_close}/")).into(),
        HttpProbe {
            method: "HEAD".into(),
            ..http("head", format!("http://127.0.0.1:{head}/"))
        }
        .into(),
        http("continue", format!("http://127.0.0.1:{continue_then_ok}/")).into(),
        http("redirect", format!("http://127.0.0.1:{redirect}/")).into(),
        http("big", format!("http://127.0.0.1:{big}/")).into(),
    ];
    let results = run_within(&registry, targets, Duration::from_secs(2));
    for r in &results {
        assert!(r.success, "{r:?}");
    }
    let statuses: Vec<_> = results.iter().map(|r| r.status.unwrap()).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 204, 301, 200]);
}

#[test]
fn unexpected_status_is_a_status_failure() {
    let port = respond(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy");
    let (registry, r) = one(HttpProbe {
        expect_status: vec![200, 204],
        ..http("api", format!("http://127.0.0.1:{port}/"))
    });
    assert!(!r.success);
    assert_eq!((r.status, r.error_type), (Some(503), Some("status")));
    assert!(r.error.as_deref().unwrap().contains("503"), "{r:?}");
    assert_eq!(phase_names(&r), ["dns", "connect", "first_byte", "total"]);
    let snap = registry.snapshot();
    let l = labels("api", "http");
    testing::assert_gauge(&snap, "probe.success", &l, 0.0);
    testing::assert_gauge(&snap, "probe.http.status_code", &l, 503.0);
    testing::assert_counter(&snap, "probe.checks", &with(l, ("result", "failure")), 1.0);
    assert_one_failure(&snap, l, "status");

    // Default expectation: any 2xx or 3xx.
    let (_, r) = one(http("api", format!("http://127.0.0.1:{port}/")));
    assert_eq!(r.error_type, Some("status"));
}

#[test]
fn silent_server_times_out() {
    let port = serve(|conn| {
        thread::sleep(Duration::from_secs(10));
        drop(conn);
    });
    let timeout = Duration::from_millis(300);
    let start = Instant::now();
    let (registry, r) = one(HttpProbe {
        timeout,
        ..http("slow", format!("http://127.0.0.1:{port}/"))
    });
    let elapsed = start.elapsed();
    assert!(
        elapsed >= timeout && elapsed < timeout + Duration::from_millis(700),
        "{elapsed:?}"
    );
    assert!(!r.success);
    assert_eq!((r.status, r.error_type), (None, Some("timeout")));
    assert!(r.error.as_deref().unwrap().contains("connect"), "{r:?}");
    assert_eq!(phase_names(&r), ["dns", "connect", "total"]);
    assert!(r.phase("total").unwrap() >= timeout);
    let snap = registry.snapshot();
    let l = labels("slow", "http");
    assert_one_failure(&snap, l, "timeout");
    testing::assert_gauge(&snap, "probe.http.status_code", &l, 0.0);
}

#[test]
fn connection_refused() {
    let port = closed_port();
    let (registry, r) = one(http("down", format!("http://127.0.0.1:{port}/")));
    assert!(!r.success);
    assert_eq!(r.error_type, Some("connection_refused"), "{r:?}");
    assert_eq!(phase_names(&r), ["dns", "total"]);
    let snap = registry.snapshot();
    let l = labels("down", "http");
    assert_one_failure(&snap, l, "connection_refused");

    let (registry, r) = one(TcpProbe::new("db", format!("127.0.0.1:{port}")));
    assert!(!r.success);
    assert_eq!(r.error_type, Some("connection_refused"), "{r:?}");
    let snap = registry.snapshot();
    let l = labels("db", "tcp");
    testing::assert_gauge(&snap, "probe.success", &l, 0.0);
    assert!(
        snap.family("probe.http.status_code")
            .unwrap()
            .series
            .is_empty()
    );
}

#[test]
fn tcp_success() {
    let port = serve(drop);
    let (registry, r) = one(TcpProbe::new("db", format!("127.0.0.1:{port}")));
    assert!(r.success, "{r:?}");
    assert_eq!(r.status, None);
    assert_eq!(phase_names(&r), ["dns", "connect", "total"]);
    assert_ordered(&r);
    let snap = registry.snapshot();
    let l = labels("db", "tcp");
    testing::assert_gauge(&snap, "probe.success", &l, 1.0);
    testing::assert_counter(&snap, "probe.checks", &with(l, ("result", "success")), 1.0);
    assert_eq!(histogram_count(&snap, l, "connect"), 1);
}

struct Tls {
    port: u16,
    ca_file: PathBuf,
    not_after: SystemTime,
}

fn tls_server() -> Tls {
    static FILES: AtomicUsize = AtomicUsize::new(0);
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    params.not_after = rcgen::date_time_ymd(2035, 7, 1);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let ca_file = std::env::temp_dir().join(format!(
        "sonde-probes-test-{}-{}.pem",
        std::process::id(),
        FILES.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&ca_file, cert.pem()).unwrap();
    // ring: the workspace's one TLS stack (deprecated in rustls 0.23.48 for lacking post-quantum
    // key exchange).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let config = Arc::new(config);
    let port = serve(move |conn| {
        let Ok(server) = rustls::ServerConnection::new(config.clone()) else {
            return;
        };
        let mut tls = rustls::StreamOwned::new(server, conn);
        read_request(&mut tls);
        let _ = tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecure");
        tls.conn.send_close_notify();
        let _ = tls.flush();
    });
    Tls {
        port,
        ca_file,
        not_after: UNIX_EPOCH + Duration::from_secs(2_066_860_800), // 2035-07-01
    }
}

#[test]
fn https_self_signed() {
    let tls = tls_server();
    let url = format!("https://127.0.0.1:{}/", tls.port);

    // The system's roots do not include our certificate.
    let (registry, r) = one(http("secure", url.clone()));
    assert!(!r.success);
    assert_eq!(r.error_type, Some("tls"), "{r:?}");
    assert_eq!(phase_names(&r), ["dns", "connect", "total"]);
    let snap = registry.snapshot();
    let l = labels("secure", "http");
    assert_one_failure(&snap, l, "tls");

    // Trusting it explicitly.
    let (registry, r) = one(HttpProbe {
        ca_certificate: Some(tls.ca_file.clone()),
        ..http("secure", url.clone())
    });
    assert!(r.success, "{r:?}");
    assert_eq!(r.status, Some(200));
    assert_eq!(
        phase_names(&r),
        ["dns", "connect", "tls", "first_byte", "total"]
    );
    assert_ordered(&r);
    assert_eq!(r.tls_cert_not_after, Some(tls.not_after));
    let snap = registry.snapshot();
    assert_eq!(histogram_count(&snap, l, "tls"), 1);
    testing::assert_gauge(&snap, "probe.tls.cert_expiry", &l, 2_066_860_800.0);

    // Or trusting anything.
    let (_, r) = one(HttpProbe {
        insecure_skip_verify: true,
        ..http("secure", url.clone())
    });
    assert!(r.success, "{r:?}");
    assert_eq!(r.tls_cert_not_after, Some(tls.not_after));

    // A plain-HTTP server behind an https URL is a TLS failure.
    let plain = serve(|mut conn| {
        let mut buf = [0u8; 4096];
        let _ = conn.read(&mut buf);
        let _ = conn.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
    });
    let (_, r) = one(HttpProbe {
        insecure_skip_verify: true,
        ..http("plain", format!("https://127.0.0.1:{plain}/"))
    });
    assert_eq!(r.error_type, Some("tls"), "{r:?}");

    let _ = std::fs::remove_file(&tls.ca_file);
}

#[test]
fn misbehaving_servers_do_not_panic() {
    type Handler = Box<dyn Fn(TcpStream) + Send + Sync>;
    let cases: Vec<(&str, &str, Handler)> = vec![
        (
            "garbage",
            "protocol",
            answer(b"\x00\xffgarbage \xc3\x28 not http\r\n\r\n"),
        ),
        (
            "empty",
            "protocol",
            Box::new(|mut c: TcpStream| {
                read_request(&mut c);
            }),
        ),
        (
            "no-blank-line",
            "protocol",
            answer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n"),
        ),
        ("bad-status", "protocol", answer(b"HTTP/1.1 2x0 OK\r\n\r\n")),
        (
            "status-out-of-range",
            "protocol",
            answer(b"HTTP/1.1 999 What\r\n\r\n"),
        ),
        (
            "bad-length",
            "protocol",
            answer(b"HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\n"),
        ),
        (
            "truncated-body",
            "protocol",
            answer(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"),
        ),
        (
            "bad-chunks",
            "protocol",
            answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
        ),
        (
            "endless-continue",
            "protocol",
            Box::new(|mut c: TcpStream| {
                read_request(&mut c);
                let continues = [b"HTTP/1.1 100 Continue\r\n\r\n".as_slice(); 100];
                write_each(&mut c, continues, Duration::ZERO);
            }),
        ),
        (
            "huge-headers",
            "protocol",
            Box::new(|mut c: TcpStream| {
                read_request(&mut c);
                let line = format!("X-Filler: {}\r\n", "y".repeat(1000));
                let head = std::iter::once(b"HTTP/1.1 200 OK\r\n".as_slice());
                let filler = std::iter::repeat_n(line.as_bytes(), 200);
                write_each(&mut c, head.chain(filler), Duration::ZERO);
            }),
        ),
        (
            "slow-drip",
            "timeout",
            Box::new(|mut c: TcpStream| {
                read_request(&mut c);
                let bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".chunks(1);
                write_each(&mut c, bytes, Duration::from_millis(100));
            }),
        ),
        (
            "reset",
            "connection_reset",
            Box::new(|c: TcpStream| {
                // Closing with unread data makes the kernel send a reset.
                thread::sleep(Duration::from_millis(100));
                drop(c);
            }),
        ),
    ];
    let mut targets = Vec::new();
    let mut expected = Vec::new();
    for (name, error_type, handler) in cases {
        let port = serve(handler);
        expected.push((name, error_type));
        targets.push(
            HttpProbe {
                timeout: Duration::from_millis(1500),
                ..http(name, format!("http://127.0.0.1:{port}/"))
            }
            .into(),
        );
    }
    let registry = Registry::new();
    let results = run_within(&registry, targets, Duration::from_secs(3));
    for (r, (name, error_type)) in results.iter().zip(expected) {
        assert_eq!(r.name, name);
        assert!(!r.success, "{r:?}");
        assert_eq!(r.error_type, Some(error_type), "{name}: {r:?}");
        assert!(r.error.is_some());
        assert_eq!(r.phases.last().map(|p| p.0), Some("total"));
    }
}

#[test]
fn start_runs_periodically_and_shuts_down_quickly() {
    let port = serve(drop);
    let hung = serve(|c| {
        thread::sleep(Duration::from_secs(30));
        drop(c);
    });
    let registry = Registry::new();
    let prober = Prober::new(
        &registry,
        vec![
            tcp_every("db", port, Duration::from_millis(100)),
            HttpProbe {
                interval: Duration::from_millis(100),
                timeout: Duration::from_secs(60),
                ..HttpProbe::new("hung", format!("http://127.0.0.1:{hung}/"))
            }
            .into(),
        ],
    )
    .unwrap();
    let running = prober.start().unwrap();
    thread::sleep(Duration::from_millis(500));
    let snap = registry.snapshot();
    let l = labels("db", "tcp");
    let checks = counter(&snap, "probe.checks", &with(l, ("result", "success")));
    assert!((3.0..=7.0).contains(&checks), "{checks} checks in 500 ms");
    testing::assert_gauge(&snap, "probe.success", &l, 1.0);
    // The hung probe has not completed a check yet.
    assert!(
        snap.point("probe.success", &labels("hung", "http"))
            .is_none()
    );

    let start = Instant::now();
    running
        .shutdown(std::time::Duration::from_secs(10))
        .unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    let successes = || {
        let snap = registry.snapshot();
        counter(&snap, "probe.checks", &with(l, ("result", "success")))
    };
    let after = successes();
    thread::sleep(Duration::from_millis(300));
    let later = successes();
    assert_eq!(after, later, "probes kept running after shutdown");
}

#[test]
fn dropping_the_running_prober_stops_it() {
    let prober = lone_prober(|port| tcp_every("db", port, Duration::from_millis(50)));
    let start = Instant::now();
    drop(prober.start().unwrap());
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[test]
fn run_once_inside_a_tokio_runtime() {
    let prober = lone_prober(|port| TcpProbe::new("db", format!("127.0.0.1:{port}")).into());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let results = rt.block_on(async { prober.run_once() });
    assert!(results[0].success, "{results:?}");
}

#[test]
fn invalid_targets_are_refused_with_the_probe_name() {
    let registry = Registry::new();
    let refuse = |targets: Vec<ProbeTarget>, needle: &str| {
        let e = Prober::new(&registry, targets).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::InvalidTarget { .. }), "{msg}");
        assert!(msg.contains("\"bad\""), "{msg}");
        assert!(msg.contains(needle), "{msg} does not mention {needle}");
    };
    let refuse_one = |target: ProbeTarget, needle: &str| refuse(vec![target], needle);
    let http = |url: &str| HttpProbe::new("bad", url);
    let tcp = |address: &str| TcpProbe::new("bad", address);
    refuse_one(http("ftp://example.com/").into(), "https://");
    refuse_one(http("http://exa mple.com/").into(), "percent-encode");
    refuse_one(tcp("db.internal").into(), "host:port");
    refuse_one(tcp("db.internal:99999").into(), "65535");
    refuse(vec![tcp("db:1").into(), http("http://x/").into()], "unique");
    let untrusted = HttpProbe {
        ca_certificate: Some("/nonexistent/ca.pem".into()),
        ..http("https://x/")
    };
    refuse_one(untrusted.into(), "/nonexistent/ca.pem");
    let no_time = HttpProbe {
        timeout: Duration::ZERO,
        ..http("http://x/")
    };
    refuse_one(no_time.into(), "timeout");
    // Nothing was registered by the failed attempts.
    assert!(registry.snapshot().family("probe.success").is_none());
}

#[test]
fn dns_failure() {
    // `.invalid` never resolves (RFC 6761); without a resolver this fails fast too.
    let (_, r) = one(HttpProbe {
        timeout: Duration::from_secs(5),
        ..http("nowhere", "http://does-not-exist.invalid/".into())
    });
    assert!(!r.success);
    assert!(matches!(r.error_type, Some("dns" | "timeout")), "{r:?}");
}

#[test]
fn handles_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Prober>();
    check::<sonde_probes::RunningProber>();
    check::<ProbeResult>();
    check::<Error>();
}

/// Issue #14 item 4: a probe removed by a reload kept its series forever.
#[test]
fn replace_with_removes_the_series_of_the_probes_left_out_and_keeps_the_others() {
    let port = serve(drop);
    let registry = Registry::new();
    let tcp = |name: &str| tcp_every(name, port, Duration::from_millis(50));
    let old = Prober::new(&registry, vec![tcp("kept"), tcp("gone")])
        .unwrap()
        .start()
        .unwrap();
    let has = |name: &str| {
        let snap = registry.snapshot();
        snap.families.iter().any(|f| {
            f.series
                .iter()
                .any(|s| f.labels(s).contains(&("probe.name", name)))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while registry
        .snapshot()
        .point("probe.success", &labels("gone", "tcp"))
        .is_none()
    {
        assert!(Instant::now() < deadline, "no check of `gone`");
        thread::sleep(Duration::from_millis(20));
    }
    let next = Prober::new(&registry, vec![tcp("kept")])
        .unwrap()
        .start()
        .unwrap();
    old.replace_with(&next);
    assert!(!has("gone"));
    assert!(has("kept"));
    next.uninstall();
    assert!(!has("kept"));
}
