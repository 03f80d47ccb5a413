//! The `/metrics` server under hostile clients: a connection cap that evicts idle connections,
//! slowloris and non-reading clients cut by timeouts, idle keep-alive connections closed, and
//! memory bounded with thousands of idle connections while scrapers keep succeeding.

use sonde_core::Component as _;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sonde_core::{Registry, Resource, testing};
use sonde_prometheus::{PrometheusBuilder, PrometheusServer};

/// `GET /metrics` on a new connection; the body, or why it failed.
fn scrape(addr: SocketAddr) -> Result<String, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .map_err(|e| format!("read: {e}"))?;
    if !out.starts_with("HTTP/1.1 200") {
        return Err(format!("status: {:?}", out.lines().next()));
    }
    Ok(out)
}

/// The value of an unlabelled sample in a scrape.
fn value(body: &str, name: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Whether the server closed `s` (EOF or reset) within `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The soft open-files limit, raised to the hard limit first (with `prlimit`, on this process).
fn raise_nofile() -> u64 {
    let soft = || {
        std::fs::read_to_string("/proc/self/limits")
            .ok()?
            .lines()
            .find(|l| l.starts_with("Max open files"))?
            .split_whitespace()
            .nth(3)?
            .parse::<u64>()
            .ok()
    };
    let pid = std::process::id().to_string();
    if let Some(hard) = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))?
                .split_whitespace()
                .nth(4)?
                .parse::<u64>()
                .ok()
        })
    {
        let _ = std::process::Command::new("prlimit")
            .args(["--pid", &pid, &format!("--nofile={hard}:{hard}")])
            .status();
    }
    soft().unwrap_or(1024)
}

fn server(reg: &Registry) -> PrometheusBuilder {
    PrometheusBuilder::new()
        .registry(reg.clone())
        .bind("127.0.0.1:0".parse().unwrap())
        .resource(Resource::empty())
}

/// Starts the server `builder` configures; the handle and the address it listens on.
fn start(builder: PrometheusBuilder) -> (PrometheusServer, SocketAddr) {
    let server = builder.install().unwrap();
    let addr = server.local_addr();
    (server, addr)
}

#[test]
fn idle_connections_are_capped_while_scrapers_keep_succeeding() {
    let limit = raise_nofile();
    let mut idle_target = 3000usize;
    if limit < 3000 + 600 + 200 {
        idle_target = (limit as usize).saturating_sub(800).max(600);
        println!(
            "note: open-files limit {limit}: opening {idle_target} idle connections, not 3000"
        );
    }
    let reg = Registry::new();
    let (server, addr) = start(server(&reg));
    for _ in 0..20 {
        scrape(addr).unwrap();
    }
    let before = rss_kib();

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let scrapers: Vec<_> = (0..50)
        .map(|_| {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            std::thread::spawn(move || {
                let mut errors = Vec::new();
                // Bounded: at most 400 scrapes each, or until told to stop.
                for _ in 0..400 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    match scrape(addr) {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            errors.push(e);
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                    std::thread::sleep(Duration::from_millis(20));
                }
                errors
            })
        })
        .collect();

    let mut idle = Vec::with_capacity(idle_target);
    for _ in 0..idle_target {
        idle.push(TcpStream::connect(addr).unwrap());
    }
    // Let the server take them all in, then measure while they are held.
    std::thread::sleep(Duration::from_secs(2));
    let during = rss_kib();
    let ok_during = ok.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let errors: Vec<String> = scrapers
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let body = scrape(addr).unwrap();
    let open = value(&body, "sonde_http_connections_open");
    let evicted = value(&body, "sonde_http_connections_evicted_total");
    let growth_mib = during.saturating_sub(before) as f64 / 1024.0;
    println!(
        "{idle_target} idle connections: RSS {before} -> {during} KiB (+{growth_mib:.1} MiB); scrapes ok {} (during the flood {ok_during}), failed {}; open {open}, evicted {evicted}",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    assert!(errors.is_empty(), "scrapes failed: {errors:?}");
    assert!(
        ok_during >= 50,
        "scrapers made too little progress: {ok_during}"
    );
    assert!(open <= 512.0, "open connections {open} over the cap");
    assert!(evicted >= (idle_target - 512) as f64, "evicted {evicted}");
    // 512 held connections take a few MiB (measured +2 to +6 MiB); without the cap, 3,000
    // took 56 MB.
    assert!(growth_mib < 20.0, "RSS grew {growth_mib:.1} MiB");
    drop(idle);
    server.shutdown(std::time::Duration::from_secs(10)).unwrap();
}

#[test]
fn at_the_cap_the_oldest_idle_connection_makes_room_and_busy_ones_refuse() {
    let reg = Registry::new();
    big_family(&reg);
    let (server, addr) = start(
        server(&reg)
            .max_connections(4)
            .write_timeout(Duration::from_secs(30)),
    );
    let mut idle: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    // A fifth connection evicts the oldest idle one, and is served.
    let body = scrape(addr).unwrap();
    assert!(closed_within(&mut idle[0], Duration::from_secs(2)));
    assert_eq!(value(&body, "sonde_http_connections_evicted_total"), 1.0);
    // Four clients that request the (large) body and do not read it are busy: not evicted.
    let mut stuck: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            std::thread::sleep(Duration::from_millis(500));
            s
        })
        .collect();
    let mut refused = TcpStream::connect(addr).unwrap();
    refused
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(closed_within(&mut refused, Duration::from_secs(2)));
    drop(stuck.drain(..));
    std::thread::sleep(Duration::from_millis(300));
    let body = scrape(addr).unwrap();
    assert!(
        value(&body, "sonde_http_connections_refused_total") >= 1.0,
        "{}",
        body.lines()
            .filter(|l| l.contains("connections"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    server.shutdown(std::time::Duration::from_secs(10)).unwrap();
}

/// Enough series for a response larger than what loopback socket buffers hold (~10 MB).
fn big_family(reg: &Registry) {
    let f = testing::family(
        reg.counter("big.series")
            .labels(["id", "pad"])
            .max_series(80_000),
    );
    let pad = "p".repeat(100);
    for i in 0..80_000 {
        f.with(&[i.to_string().as_str(), pad.as_str()]).add(1);
    }
}

#[test]
fn a_client_that_does_not_read_is_cut_and_does_not_block_scrapes() {
    let reg = Registry::new();
    big_family(&reg);
    let (server, addr) = start(server(&reg).write_timeout(Duration::from_secs(2)));
    let mut stuck = TcpStream::connect(addr).unwrap();
    stuck
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let started = Instant::now();
    // Others are served meanwhile.
    for _ in 0..3 {
        let body = scrape(addr).unwrap();
        assert!(body.len() > 8_000_000, "{}", body.len());
    }
    // Past the write timeout, the stuck response was abandoned: reading it now ends short.
    std::thread::sleep(Duration::from_secs(4).saturating_sub(started.elapsed()));
    stuck
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut got = Vec::new();
    let _ = stuck.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got[..got.len().min(4096)]).to_string();
    let length: usize = text
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(usize::MAX);
    assert!(
        got.len() < length,
        "the non-reading client got the whole response ({} bytes): it was not cut",
        got.len()
    );
    server.shutdown(std::time::Duration::from_secs(10)).unwrap();
}

#[test]
fn slowloris_and_idle_keep_alive_connections_are_cut_at_the_header_timeout() {
    let reg = Registry::new();
    let (server, addr) = start(server(&reg).request_timeout(Duration::from_secs(1)));
    // Headers one byte every 100 ms: never complete within the 1 s timeout.
    let mut slow = TcpStream::connect(addr).unwrap();
    let started = Instant::now();
    let request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut cut = None;
    for b in request {
        if slow.write_all(&[*b]).is_err() {
            cut = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        if started.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    let cut = cut.unwrap_or_else(|| {
        assert!(
            closed_within(&mut slow, Duration::from_millis(100)),
            "slowloris not cut"
        );
        started.elapsed()
    });
    assert!(cut < Duration::from_millis(2500), "cut after {cut:?}");

    // A kept-alive connection that goes idle after a response is closed after the timeout.
    let mut keep = TcpStream::connect(addr).unwrap();
    keep.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    keep.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 4096];
    let n = keep.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let idle_from = Instant::now();
    assert!(closed_within(&mut keep, Duration::from_secs(3)));
    assert!(idle_from.elapsed() >= Duration::from_millis(800));
    server.shutdown(std::time::Duration::from_secs(10)).unwrap();
}
