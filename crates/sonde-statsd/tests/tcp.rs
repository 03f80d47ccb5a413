//! StatsD over TCP on 127.0.0.1: newline-delimited lines, split anywhere by the network, a last
//! line without a newline, backpressure instead of drops, a connection cap, an idle timeout and
//! a line too long for any buffer.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use sonde_core::{Registry, Snapshot};
use sonde_statsd::{StatsdServer, StatsdServerBuilder, Transport};

/// A server taking TCP on a free loopback port into `registry`, as `configure` sets it up;
/// and that port's address.
fn tcp_server(
    registry: &Registry,
    configure: impl FnOnce(StatsdServerBuilder) -> StatsdServerBuilder,
) -> (StatsdServer, std::net::SocketAddr) {
    let builder = StatsdServer::builder()
        .tcp("127.0.0.1:0")
        .registry(registry.clone());
    let server = configure(builder).start().unwrap();
    let addr = server.tcp_addr().unwrap();
    (server, addr)
}

fn number(snap: &Snapshot, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    snap.point(name, labels)
        .and_then(|p| p.number())
        .map(|n| n.as_f64())
}

/// Waits until `name` reads `want` (TCP lines are queued once read; there is no flush for them).
fn wait_for_value(registry: &Registry, name: &str, labels: &[(&str, &str)], want: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = number(&registry.snapshot(), name, labels);
        if got == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name}{labels:?} = {got:?}, want {want}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn lines_split_anywhere_arrive_whole_and_nothing_is_dropped_under_a_small_queue() {
    let registry = Registry::new();
    let (server, addr) = tcp_server(&registry, |b| b.queue(2));
    assert_eq!(server.listeners()[0].transport, Transport::Tcp);
    assert!(server.local_addr().is_none(), "no UDP listener");
    let mut conn = TcpStream::connect(addr).unwrap();
    // One line cut in the middle of its name and of its value, across two writes.
    conn.write_all(b"shop.ord").unwrap();
    conn.flush().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    conn.write_all(b"ers:1|c|#region:eu\nshop.latency:2")
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    conn.write_all(b"5|ms\n").unwrap();
    // 20,000 more lines as fast as the socket takes them: the queue of 2 pushes back.
    let bulk: String = (0..20_000).map(|_| "bulk.hits:1|c\n").collect();
    conn.write_all(bulk.as_bytes()).unwrap();
    // The last line has no newline: taken when the client closes.
    conn.write_all(b"shop.last:7|g").unwrap();
    drop(conn);
    wait_for_value(&registry, "bulk.hits", &[], 20_000.0);
    wait_for_value(&registry, "shop.orders", &[("region", "eu")], 1.0);
    wait_for_value(&registry, "shop.last", &[], 7.0);
    let snap = registry.snapshot();
    sonde_core::testing::assert_histogram(&snap, "shop.latency", &[], 1, 0.025);
    assert_eq!(
        number(&snap, "sonde.statsd.dropped", &[("reason", "queue_full")]),
        None,
        "TCP waits instead of dropping"
    );
    assert!(number(&snap, "sonde.statsd.packets", &[("transport", "tcp")]).unwrap() >= 1.0);
}

#[test]
fn connections_past_the_cap_are_closed_and_counted() {
    let registry = Registry::new();
    let (_server, addr) = tcp_server(&registry, |b| b.tcp_max_connections(2));
    let mut held: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
    for (i, c) in held.iter_mut().enumerate() {
        writeln!(c, "held.{i}:1|c").unwrap();
    }
    wait_for_value(&registry, "held.1", &[], 1.0);
    // The third is accepted and closed at once: its read sees the end (or a reset).
    let mut third = TcpStream::connect(addr).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 8];
    let r = third.read(&mut buf);
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    wait_for_value(
        &registry,
        "sonde.statsd.dropped",
        &[("reason", "connection_limit")],
        1.0,
    );
    // The held ones still work; once one closes, a new client gets in.
    writeln!(held[0], "held.0:1|c").unwrap();
    wait_for_value(&registry, "held.0", &[], 2.0);
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = TcpStream::connect(addr).unwrap();
        writeln!(c, "late:1|c").unwrap();
        drop(c);
        std::thread::sleep(Duration::from_millis(100));
        if number(&registry.snapshot(), "late", &[]).is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no room after a connection closed"
        );
    }
}

#[test]
fn an_idle_connection_is_closed_and_a_huge_line_is_skipped() {
    let registry = Registry::new();
    let (_server, addr) = tcp_server(&registry, |b| {
        b.tcp_idle_timeout(Duration::from_millis(500))
    });
    let mut c = TcpStream::connect(addr).unwrap();
    // 200 KiB without a newline, then good lines.
    c.write_all(&vec![b'x'; 200 * 1024]).unwrap();
    c.write_all(b"\nafter.huge:3|c\n").unwrap();
    wait_for_value(&registry, "after.huge", &[], 3.0);
    assert_eq!(
        number(
            &registry.snapshot(),
            "sonde.statsd.dropped",
            &[("reason", "line_too_long")]
        ),
        Some(1.0)
    );
    // Silent for longer than the idle timeout: the server closes.
    let start = Instant::now();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 8];
    let r = c.read(&mut buf);
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(4),
        "closed after {waited:?}"
    );
}
