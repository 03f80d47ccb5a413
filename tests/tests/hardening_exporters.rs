//! Issue #14, "exporters never die" and "secrets": hostile Retry-After values, redirects and
//! credentials in URLs, against the real OTLP test receiver (gRPC and HTTP on loopback).

use std::time::{Duration, Instant};

use sonde::Registry;
use sonde::otlp::{OtlpMetricsBuilder, OtlpTransport, Protocol};
use sonde_tests::otlp::{Fault, OtlpReceiver, Signal};
use sonde_tests::self_metric;

fn endpoint(rx: &OtlpReceiver, protocol: Protocol) -> String {
    match protocol {
        Protocol::Grpc => rx.grpc_endpoint(),
        Protocol::HttpProtobuf => rx.http_endpoint(),
    }
}

/// An exporter of one counter that collects only when asked, with fast backoff.
fn exporter(reg: &Registry, transport: OtlpTransport) -> sonde::otlp::OtlpMetricsExporter {
    reg.counter("ticks").build().unwrap().handle().inc();
    OtlpMetricsBuilder::new()
        .registry(reg.clone())
        .environment(|_| None)
        .transport(transport.timeout(Duration::from_secs(2)))
        .interval(Duration::from_secs(3600))
        .backoff(Duration::from_millis(10), Duration::from_millis(20))
        .install()
        .unwrap()
}

fn metric_attempts(rx: &OtlpReceiver) -> usize {
    rx.attempts()
        .iter()
        .filter(|a| a.signal == Signal::Metrics)
        .count()
}

#[test]
fn hostile_retry_after_values_neither_kill_nor_stall_the_exporter() {
    let rx = OtlpReceiver::start();
    for protocol in [Protocol::HttpProtobuf, Protocol::Grpc] {
        let reg = Registry::new();
        let exporter = exporter(
            &reg,
            OtlpTransport::new()
                .endpoint(endpoint(&rx, protocol))
                .protocol(protocol),
        );
        // Longer than the retry time (5 minutes by default): the batch is given up at once.
        let huge = [
            "18446744073709551615",
            "99999999999999999999999999999",
            "Fri, 31 Dec 9999 23:59:59 GMT",
        ];
        // No usable delay (garbage, a date in the past): ordinary backoff, then delivered.
        let harmless = ["soon", "-5", "Wed, 21 Oct 2015 07:28:00 GMT"];
        let cases: &[&str] = match protocol {
            // gRPC carries the longest RetryInfo whatever the string.
            Protocol::Grpc => &huge[..1],
            Protocol::HttpProtobuf => &huge,
        };
        for value in cases {
            rx.clear();
            // After a first retry, `elapsed + u64::MAX seconds` used to overflow and kill the
            // exporter's thread.
            rx.script([
                Fault::Unavailable {
                    retry_after: Some(Duration::from_secs(1)),
                },
                Fault::RetryAfterRaw((*value).to_owned()),
            ]);
            let t = Instant::now();
            let e = exporter.flush(Duration::from_secs(10)).unwrap_err();
            assert!(
                e.to_string().contains("gave up"),
                "{protocol:?} {value}: {e}"
            );
            assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
            // Still alive: the next collection is delivered.
            exporter.flush(Duration::from_secs(10)).unwrap();
            assert_eq!(metric_attempts(&rx), 3, "{protocol:?} {value}");
        }
        if protocol == Protocol::HttpProtobuf {
            for value in harmless {
                rx.clear();
                rx.script([Fault::RetryAfterRaw(value.to_owned())]);
                exporter.flush(Duration::from_secs(10)).unwrap();
                assert_eq!(metric_attempts(&rx), 2, "{value}");
            }
        }
        let l = [("exporter", "otlp"), ("reason", "retries_exhausted")];
        assert!(self_metric(&reg, sonde::otlp::DROPPED_POINTS, &l) > 0.0);
        assert_eq!(
            self_metric(&reg, sonde::otlp::PANICS, &[("exporter", "otlp")]),
            0.0
        );
        let t = Instant::now();
        exporter.shutdown(Duration::from_secs(5)).unwrap();
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }
}

#[test]
fn redirects_are_not_followed_and_are_failures() {
    let rx = OtlpReceiver::start();
    let elsewhere = OtlpReceiver::start();
    let reg = Registry::new();
    let exporter = exporter(
        &reg,
        OtlpTransport::new()
            .endpoint(rx.http_endpoint())
            .protocol(Protocol::HttpProtobuf)
            .header("x-api-key", "s3cret-key"),
    );
    // A 307 keeps the method and body: following it would hand the API key to another host.
    let to = elsewhere
        .http_endpoint()
        .replace("http://", "http://user:pw@");
    rx.script([Fault::Redirect {
        status: 307,
        location: format!("{to}/v1/metrics"),
    }]);
    let e = exporter.flush(Duration::from_secs(10)).unwrap_err();
    let shown = elsewhere
        .http_endpoint()
        .replace("http://", "http://<redacted>@");
    assert!(
        e.to_string()
            .contains(&format!("redirect to {shown}/v1/metrics")),
        "{e}"
    );
    assert!(!e.to_string().contains("pw@"), "{e}");
    assert!(
        elsewhere.attempts().is_empty(),
        "{:?}",
        elsewhere.attempts()
    );
    assert_eq!(metric_attempts(&rx), 1, "a redirect is not retried");

    // A 302 to a login page used to end in a 200 HTML page counted as delivered.
    rx.clear();
    rx.script([Fault::Redirect {
        status: 302,
        location: format!("{}/login", rx.http_endpoint()),
    }]);
    let e = exporter.flush(Duration::from_secs(10)).unwrap_err();
    assert!(e.to_string().contains("/login"), "{e}");
    let l = [("exporter", "otlp"), ("reason", "rejected")];
    assert!(self_metric(&reg, sonde::otlp::DROPPED_POINTS, &l) > 0.0);
    exporter.flush(Duration::from_secs(10)).unwrap();
    exporter.shutdown(Duration::from_secs(5)).unwrap();
}

#[test]
fn url_credentials_and_header_values_stay_out_of_errors_and_debug() {
    // A port nothing listens on: the connection error names the URL.
    let port = sonde_tests::free_port();
    let reg = Registry::new();
    let url = format!("http://user:hunter2@127.0.0.1:{port}");
    let transport = OtlpTransport::new()
        .endpoint(url.as_str())
        .protocol(Protocol::HttpProtobuf)
        .header("authorization", "Bearer hunter2-token");
    let builder_debug = format!(
        "{:?}",
        OtlpMetricsBuilder::new()
            .environment(|_| None)
            .transport(transport.clone())
    );
    reg.counter("ticks").build().unwrap().handle().inc();
    // Given up quickly, so the flush error carries the last transport error.
    let exporter = OtlpMetricsBuilder::new()
        .registry(reg.clone())
        .environment(|_| None)
        .transport(transport)
        .interval(Duration::from_secs(3600))
        .backoff(Duration::from_millis(10), Duration::from_millis(20))
        .max_retry_time(Duration::from_millis(50))
        .install()
        .unwrap();
    let e = exporter
        .flush(Duration::from_secs(5))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("could not reach http://<redacted>@127.0.0.1"),
        "{e}"
    );
    for shown in [e, builder_debug, format!("{exporter:?}")] {
        assert!(!shown.contains("hunter2"), "{shown}");
    }
    exporter.shutdown(Duration::from_secs(2)).ok();
}

/// A loopback HTTP/1.1 server answering the `n`th request with `answers[n]` (a status line
/// and headers; the last answer repeats), one request per connection; it stops after
/// `answers.len() + 8` requests or 30 s. Returns its address and the request count.
fn scripted_http(
    answers: Vec<&'static str>,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::io::{Read, Write};
    use std::sync::atomic::Ordering;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(30);
        while Instant::now() < end && seen.load(Ordering::SeqCst) < answers.len() + 8 {
            let Ok((mut conn, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            conn.set_nonblocking(false).unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            // Headers, then as many body bytes as Content-Length says.
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            let mut want = None;
            while want.is_none_or(|w| buf.len() < w) {
                let Ok(n) = conn.read(&mut chunk) else { break };
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                if want.is_none()
                    && let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n")
                {
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    want = Some(end + 4 + length);
                }
            }
            let n = seen.fetch_add(1, Ordering::SeqCst);
            let answer = answers[n.min(answers.len() - 1)];
            let _ = write!(
                conn,
                "{answer}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    (addr, count)
}

#[test]
fn remote_write_survives_a_hostile_retry_after() {
    use sonde::prometheus::remote_write::{self, RemoteWriteBuilder};
    use std::sync::atomic::Ordering;
    let (addr, requests) = scripted_http(vec![
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1",
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 18446744073709551615",
        "HTTP/1.1 204 No Content",
    ]);
    let reg = Registry::new();
    reg.counter("ticks").build().unwrap().handle().inc();
    let writer = RemoteWriteBuilder::new(format!("http://{addr}/api/v1/write"))
        .registry(reg.clone())
        .interval(Duration::from_secs(3600))
        .backoff(Duration::from_millis(10), Duration::from_millis(20))
        .install()
        .unwrap();
    let t = Instant::now();
    let e = writer.flush(Duration::from_secs(10)).unwrap_err();
    assert!(e.to_string().contains("gave up"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    writer.flush(Duration::from_secs(10)).unwrap();
    assert_eq!(requests.load(Ordering::SeqCst), 3);
    let l = [
        ("exporter", "remote_write"),
        ("reason", "retries_exhausted"),
    ];
    assert!(self_metric(&reg, remote_write::DROPPED_POINTS, &l) > 0.0);
    writer.shutdown(Duration::from_secs(5)).unwrap();
}

/// A loopback server that takes one connection, reads the request's first bytes, then lets
/// `answer` write to it.
fn answer_once(
    answer: impl FnOnce(&mut std::net::TcpStream) + Send + 'static,
) -> std::net::SocketAddr {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let Ok((mut conn, _)) = listener.accept() else {
            return;
        };
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 65536];
        let _ = conn.read(&mut buf);
        answer(&mut conn);
    });
    addr
}

#[test]
fn a_huge_response_body_is_read_only_up_to_a_limit() {
    use std::io::Write;
    // Announces a gigabyte, sends 1 MiB, then stalls: reading it whole would never end.
    let addr = answer_once(|conn| {
        let _ = write!(
            conn,
            "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 1000000000\r\n\r\n"
        );
        let junk = vec![b'x'; 1 << 20];
        let _ = conn.write_all(&junk);
        std::thread::sleep(Duration::from_secs(10));
    });
    let reg = Registry::new();
    let exporter = exporter(
        &reg,
        OtlpTransport::new()
            .endpoint(format!("http://{addr}"))
            .protocol(Protocol::HttpProtobuf),
    );
    let t = Instant::now();
    let e = exporter.flush(Duration::from_secs(10)).unwrap_err();
    assert!(e.to_string().contains("answered HTTP 400"), "{e}");
    // Well within the 2 s request timeout: the body was not waited for.
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    // The last collection meets a server that no longer answers.
    exporter.shutdown(Duration::from_millis(200)).ok();
}

#[test]
fn an_endless_cloudwatch_answer_is_read_only_up_to_a_limit() {
    use sonde::cloudwatch::CloudWatchBuilder;
    use std::io::Write;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    // Answers 200 with a chunked body that never ends, as fast as loopback takes it, until the
    // client hangs up (or 20 s pass); counts what it wrote. Before the cap, the AWS SDK held it
    // all until the attempt's timeout: about 600 MB a second in this test.
    let written = Arc::new(AtomicU64::new(0));
    let sent = written.clone();
    let addr = answer_once(move |conn| {
        let _ = write!(
            conn,
            "HTTP/1.1 200 OK\r\nContent-Type: application/cbor\r\nsmithy-protocol: rpc-v2-cbor\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        let mut piece = format!("{:x}\r\n", 1 << 20).into_bytes();
        piece.extend(std::iter::repeat_n(0xa0u8, 1 << 20));
        piece.extend_from_slice(b"\r\n");
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end && conn.write_all(&piece).is_ok() {
            sent.fetch_add(piece.len() as u64, Ordering::SeqCst);
        }
    });
    let reg = Registry::new();
    reg.counter("ticks").build().unwrap().handle().inc();
    let exporter = CloudWatchBuilder::new("sonde-test")
        .registry(reg.clone())
        .endpoint_url(format!("http://{addr}"))
        .credentials("AKIDEXAMPLE", "secret")
        .region("us-east-1")
        .interval(Duration::from_secs(3600))
        .timeout(Duration::from_secs(8))
        .max_retries(0)
        .install()
        .unwrap();
    let t = Instant::now();
    let e = exporter.flush(Duration::from_secs(15)).unwrap_err();
    let took = t.elapsed();
    let bytes = written.load(Ordering::SeqCst);
    eprintln!("flush failed after {took:?} with {bytes} bytes written: {e}");
    // Given up at the cap, not at the 8 s timeout, and having taken little of the stream (the
    // cap, plus what loopback's socket buffers hold).
    assert!(took < Duration::from_secs(4), "{took:?}: {e}");
    assert!(e.to_string().contains("body is over 1048576 bytes"), "{e}");
    assert!(bytes < 64 << 20, "{bytes} bytes were read before giving up");
    exporter.shutdown(Duration::from_millis(200)).ok();
}
