//! Issue #14, the reliability suite against the real `sonde-agent` binary: a flood of random and
//! malformed StatsD datagrams (the agent lives, `/metrics` stays valid and finite, errors are
//! counted by reason, a legitimate line still gets in), and SIGTERM under load with an OTLP
//! receiver that never answers (the agent exits within `agent.shutdown_timeout`).
//! File-descriptor exhaustion is in prometheus_web.rs; the long runs are in scripts/soak.

use crate::common;

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::LoggedAgent;

use sonde_tests::agent::free_udp;
use sonde_tests::otlp::{Fault, OtlpReceiver};
use sonde_tests::prometheus;
use sonde_tests::{free_addr, wait_for};

/// xorshift64*: reproducible junk without a new dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// A short name from a small alphabet, so a fraction of lines are valid and hit a bounded
    /// set of families (no letters promtool's lint reads as unit abbreviations, like `_b_`).
    fn name(&mut self) -> String {
        let len = 1 + self.below(6);
        (0..len)
            .map(|_| b"qzw._-"[self.below(6)] as char)
            .collect::<String>()
            .trim_start_matches(['.', '_', '-'])
            .to_owned()
            + "x"
    }
}

const TYPES: &[&str] = &["c", "g", "ms", "h", "d", "s", "x", "", "cc", "|"];
const VALUES: &[&str] = &[
    "1",
    "-1",
    "+1",
    "0.5",
    "1e308",
    "-1e308",
    "1.7976931348623157e308",
    "1e309",
    "-1e999",
    "99999999999999999999999999999999999999999999",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "+Inf",
    "Infinity",
    "0x10",
    "1,2",
    "1:2:3",
    "",
    " ",
    "1e-400",
    "--1",
];

/// One hostile datagram of `kind` (0..12).
fn datagram(rng: &mut Rng, kind: usize) -> Vec<u8> {
    match kind {
        // Random bytes.
        0 => {
            let n = rng.below(1400);
            rng.bytes(n)
        }
        // Empty packet.
        1 => Vec::new(),
        // A valid-looking line cut short.
        2 => {
            let line = format!(
                "{}:{}|{}|@0.{}|#k:{}",
                rng.name(),
                rng.below(1000),
                rng.pick(TYPES),
                rng.below(10),
                rng.below(10)
            );
            let cut = rng.below(line.len() + 1);
            line.as_bytes()[..cut].to_vec()
        }
        // Huge, tiny, non-finite and garbage values with every type.
        3 | 4 => format!("{}:{}|{}", rng.name(), rng.pick(VALUES), rng.pick(TYPES)).into_bytes(),
        // A 16 KiB name.
        5 => {
            let mut line = "n".repeat(16 << 10);
            line.push_str(":1|c");
            line.into_bytes()
        }
        // A 16 KiB tag value.
        6 => format!("{}:1|c|#k:{}", rng.name(), "v".repeat(16 << 10)).into_bytes(),
        // Many tags.
        7 => {
            let n = 1 + rng.below(2000);
            let tags: Vec<String> = (0..n).map(|i| format!("t{i}:{}", rng.below(5))).collect();
            format!("{}:1|c|#{}", rng.name(), tags.join(",")).into_bytes()
        }
        // Invalid UTF-8 in the name, a tag or the value.
        8 => {
            let mut line = b"bad".to_vec();
            line.extend([0xff, 0xfe, 0xc3]);
            line.extend(b":1|c|#k:");
            line.extend([0x80, 0xed, 0xa0, 0x80]);
            let at = rng.below(line.len());
            line.insert(at, 0xc0);
            line
        }
        // Structure characters in random order, several lines.
        9 => {
            let n = 1 + rng.below(60);
            const CHARS: &[u8] = b":|#@,\n\r\t 1ac.=_";
            (0..n).map(|_| CHARS[rng.below(CHARS.len())]).collect()
        }
        // Sample rates, timestamps and packed values at their edges.
        10 => format!(
            "{}:{}|{}|@{}|T{}",
            rng.name(),
            ["1:2:3", "5", "0", "1e308:1e308"][rng.below(4)],
            rng.pick(TYPES),
            rng.pick(&["0", "-1", "1e-300", "nan", "2", "0.0000001", ""]),
            rng.pick(&["0", "-1", "99999999999999999999", "x"])
        )
        .into_bytes(),
        // Valid lines, many in one datagram.
        _ => {
            let n = 1 + rng.below(20);
            (0..n)
                .map(|_| {
                    format!(
                        "{}:{}|{}",
                        rng.name(),
                        rng.below(100),
                        rng.pick(&["c", "g", "ms", "h", "d", "s"])
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
                .into_bytes()
        }
    }
}

/// A sample's value: the last field (exposition lines here carry no timestamps).
fn sample_value(line: &str) -> &str {
    line.rsplit(' ').next().unwrap_or("")
}

#[test]
fn random_and_malformed_datagrams_leave_a_valid_finite_exposition() {
    const DATAGRAMS: usize = 50_000;
    const SEED: u64 = 0x5eed_0014;
    let statsd = free_udp();
    let metrics = free_addr();
    let mut agent = LoggedAgent::start(
        "agent-reliability",
        &format!(
            "[agent]\ninterval = \"1h\"\n\n[collectors.host]\nenabled = false\n\n[statsd]\nudp = \"{statsd}\"\n\n[exporters.prometheus]\nlisten = \"{metrics}\"\n"
        ),
        metrics,
        &[("RUST_BACKTRACE", "1")],
    );

    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut rng = Rng(SEED);
    let start = Instant::now();
    let mut sent_bytes = 0usize;
    for i in 0..DATAGRAMS {
        let packet = datagram(&mut rng, i % 12);
        // A full socket buffer is the agent's to count; the sender never stops for it.
        let _ = sock.send_to(&packet, statsd);
        sent_bytes += packet.len();
        // At most ~20,000 datagrams a second: a flood, but one a debug build can parse.
        if i % 200 == 199 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let send_time = start.elapsed();
    assert!(
        agent.exited().is_none(),
        "the agent died during the flood:\n{}",
        agent.log()
    );

    // A legitimate line after the junk is exported.
    sock.send_to(b"reliability.after:7|c|#phase:after", statsd)
        .unwrap();
    let text = agent.scrape_until(
        "the legitimate line on /metrics",
        Duration::from_secs(20),
        |t| t.contains("\nreliability_after_total{phase=\"after\"} 7\n"),
    );
    assert!(agent.exited().is_none(), "{}", agent.log());

    // promtool parses it (it exits non-zero on a parse error).
    let findings = prometheus::promtool_check_metrics(&text);

    // Nothing infinite or NaN is exported; `+Inf` only as an `le` bound.
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let value = sample_value(line);
        assert!(
            !matches!(value, "NaN" | "+Inf" | "-Inf" | "Inf"),
            "non-finite sample: {line}"
        );
    }

    // Parse errors are counted by reason.
    let errors: Vec<(&str, f64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("sonde_statsd_parse_errors_total{reason=\""))
        .filter_map(|l| {
            let (reason, rest) = l.split_once('"')?;
            Some((reason, sample_value(rest).parse().ok()?))
        })
        .collect();
    for reason in [
        "bad_value",
        "bad_type",
        "missing_value",
        "not_utf8",
        "bad_name",
    ] {
        assert!(
            errors.iter().any(|(r, n)| *r == reason && *n > 0.0),
            "no parse_errors{{reason=\"{reason}\"}}: {errors:?}"
        );
    }
    let total: f64 = errors.iter().map(|(_, n)| n).sum();
    assert!(total >= 10_000.0, "{errors:?}");
    eprintln!(
        "{DATAGRAMS} datagrams ({sent_bytes} bytes) in {send_time:?}; parse errors {total}: {errors:?}; promtool: {}",
        findings.trim()
    );
}

#[test]
fn sigterm_under_load_with_a_hung_receiver_exits_within_the_shutdown_budget() {
    const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);
    // Process exit and the scheduler of a loaded 2-core machine.
    const MARGIN: Duration = Duration::from_millis(1500);
    let receiver = OtlpReceiver::start();
    // Accepts the connection, reads the request, then answers nothing for a minute.
    receiver.set_default(Fault::Hang(Duration::from_secs(60)));
    let statsd = free_udp();
    let metrics = free_addr();
    let agent = LoggedAgent::start(
        "agent-reliability",
        &format!(
            "[agent]\ninterval = \"1h\"\nshutdown_timeout = \"2s\"\n\n[collectors.host]\nenabled = false\n\n\
             [statsd]\nudp = \"{statsd}\"\n\n[exporters.prometheus]\nlisten = \"{metrics}\"\n\n\
             [exporters.otlp]\nenabled = true\nendpoint = \"{}\"\nprotocol = \"http/protobuf\"\ninterval = \"200ms\"\ntimeout = \"30s\"\n",
            receiver.http_endpoint()
        ),
        metrics,
        &[("RUST_BACKTRACE", "1")],
    );

    // StatsD traffic until told to stop (at most 30 s).
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let load = {
        let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
        std::thread::spawn(move || {
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            let start = Instant::now();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(30) {
                let line = format!(
                    "load.requests:1|c|#shard:{}\nload.latency:{}|ms",
                    i % 50,
                    i % 97
                );
                let _ = sock.send_to(line.as_bytes(), statsd);
                i += 1;
                if i.is_multiple_of(100) {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            sent.store(i, Ordering::Relaxed);
        })
    };
    agent.scrape_until("StatsD load on /metrics", Duration::from_secs(20), |t| {
        t.contains("load_requests_total{shard=\"1\"}")
    });
    // The exporter is stuck in a request the receiver will not answer.
    wait_for(
        "an OTLP request to the hung receiver",
        Duration::from_secs(20),
        || (!receiver.attempts().is_empty()).then_some(()),
    );
    std::thread::sleep(Duration::from_millis(300));

    let signalled = Instant::now();
    let (status, log) = agent.terminate(Duration::from_secs(20));
    let took = signalled.elapsed();
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(
        took <= SHUTDOWN_TIMEOUT + MARGIN,
        "exit took {took:?}, budget {SHUTDOWN_TIMEOUT:?} + {MARGIN:?}:\n{log}"
    );
    // The undelivered last interval is reported, not silently dropped.
    assert!(log.contains("not delivered"), "{log}");
    eprintln!(
        "exited {status} {took:?} after SIGTERM ({} datagrams sent, {} OTLP attempts)",
        sent.load(Ordering::Relaxed),
        receiver.attempts().len()
    );
}

/// What [`credentials_and_receiver`] runs.
struct CredentialPeers {
    creds: std::net::SocketAddr,
    receiver: std::net::SocketAddr,
    /// Every write's `Authorization`.
    authorizations: Arc<std::sync::Mutex<Vec<String>>>,
    /// Bytes written into the endless answers, and how many of them ended.
    endless: Arc<[AtomicU64; 2]>,
}

/// A loopback AWS container-credentials endpoint (`AWS_CONTAINER_CREDENTIALS_FULL_URI`) whose
/// first `endless` answers stream a body that never ends (for 10 s at most, or until the
/// client hangs up), then answer keys; and a remote-write receiver that keeps every request's
/// `Authorization`.
fn credentials_and_receiver(endless: usize) -> CredentialPeers {
    use std::io::{BufRead, BufReader, Read, Write};
    /// The request head's lines, and its body read as content-length says.
    fn read_request(conn: &std::net::TcpStream) -> Vec<String> {
        let mut reader = BufReader::new(conn);
        let mut head = Vec::new();
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line.trim_end() != "" {
            head.push(line.trim_end().to_owned());
            line.clear();
        }
        let length = head
            .iter()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(str::to_owned)
            })
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        let _ = reader.read_exact(&mut body);
        head
    }
    let creds = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let receiver = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (creds_addr, receiver_addr) = (creds.local_addr().unwrap(), receiver.local_addr().unwrap());
    let endless_written = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let written = endless_written.clone();
    std::thread::spawn(move || {
        for (n, conn) in creds.incoming().take(64).enumerate() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            read_request(&conn);
            if n < endless {
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
                );
                let mut piece = format!("{:x}\r\n", 1 << 20).into_bytes();
                piece.extend(std::iter::repeat_n(b' ', 1 << 20));
                piece.extend_from_slice(b"\r\n");
                let end = Instant::now() + Duration::from_secs(10);
                while Instant::now() < end && conn.write_all(&piece).is_ok() {
                    written[0].fetch_add(piece.len() as u64, Ordering::SeqCst);
                }
                written[1].fetch_add(1, Ordering::SeqCst);
            } else {
                let body = r#"{"AccessKeyId":"AKIDFROMECS","SecretAccessKey":"s3cret","Token":"t","Expiration":"2099-01-01T00:00:00Z"}"#;
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        }
    });
    let authorizations = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = authorizations.clone();
    std::thread::spawn(move || {
        for conn in receiver.incoming().take(256) {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let head = read_request(&conn);
            if let Some(auth) = head.iter().find_map(|l| {
                l.strip_prefix("authorization:")
                    .or(l.strip_prefix("Authorization:"))
            }) {
                seen.lock().unwrap().push(auth.trim().to_owned());
            }
            let _ = conn.write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n");
        }
    });
    CredentialPeers {
        creds: creds_addr,
        receiver: receiver_addr,
        authorizations,
        endless: endless_written,
    }
}

#[test]
fn an_endless_credentials_answer_is_cut_at_the_cap_and_good_keys_then_sign() {
    // SigV4 remote write takes its keys from the container-credentials endpoint; its first two
    // answers never end. Before the cap, the AWS SDK held them whole: gigabytes a few seconds.
    let CredentialPeers {
        creds,
        receiver,
        authorizations,
        endless,
    } = credentials_and_receiver(2);
    let metrics = free_addr();
    let config = format!(
        "[agent]\ninterval = \"1s\"\n\n[collectors.host]\nenabled = false\n\n[statsd]\nenabled = false\n\n\
         [exporters.prometheus]\nlisten = \"{metrics}\"\n\n[exporters.remote_write]\n\
         url = \"http://{receiver}/api/v1/write\"\ninterval = \"1s\"\nsigv4 = true\nsigv4_region = \"us-east-1\"\n"
    );
    let uri = format!("http://{creds}/creds");
    let agent = LoggedAgent::start(
        "agent-sigv4-credentials",
        &config,
        metrics,
        &[
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", &uri),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
            ("AWS_CONFIG_FILE", "/nonexistent"),
            ("AWS_ACCESS_KEY_ID", ""),
            ("AWS_SECRET_ACCESS_KEY", ""),
        ],
    );
    let signed = wait_for(
        "a write signed with the endpoint's keys",
        Duration::from_secs(30),
        || {
            authorizations
                .lock()
                .unwrap()
                .iter()
                .find(|a| a.contains("Credential=AKIDFROMECS/"))
                .cloned()
        },
    );
    // Both endless answers were asked for, and cut: what loopback's socket buffers hold past
    // the 1 MiB cap, not the seconds of streaming they would have taken.
    let (bytes, answers) = (
        endless[0].load(Ordering::SeqCst),
        endless[1].load(Ordering::SeqCst),
    );
    eprintln!("{answers} endless answers cut after {bytes} bytes written in all");
    assert_eq!(answers, 2, "{}", agent.log());
    assert!(
        bytes < 64 << 20,
        "{bytes} bytes of endless answers were read"
    );
    assert!(signed.contains("/us-east-1/aps/aws4_request"), "{signed}");
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).unwrap();
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    // A debug build; without the cap the two answers alone would be gigabytes.
    assert!(rss_kib < 256 << 10, "RSS {rss_kib} KiB");
}
