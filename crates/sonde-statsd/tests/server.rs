//! End to end: real datagrams over UDP on 127.0.0.1 and a unix datagram socket.

use sonde_core::Component as _;
use std::net::UdpSocket;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sonde_core::{Registry, Snapshot, Unit};
use sonde_statsd::{Error, MappingRule, StatsdServer, Transport};

fn temp_socket(tag: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let dir =
        std::env::temp_dir().join(format!("sonde-statsd-{}-{tag}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("dsd.sock")
}

fn number(snap: &Snapshot, name: &str, labels: &[(&str, &str)]) -> f64 {
    snap.point(name, labels)
        .and_then(|p| p.number())
        .unwrap_or_else(|| panic!("no {name} {labels:?}"))
        .as_f64()
}

#[test]
fn udp_and_unix_datagrams_end_up_in_the_registry() {
    let registry = Registry::new();
    let path = temp_socket("e2e");
    let server = StatsdServer::builder()
        .udp("127.0.0.1:0")
        .unix(&path)
        .receive_buffer(1 << 20)
        .queue(256)
        .mapping([MappingRule::new("api.*.requests")
            .name("http.requests")
            .label("route", "$1")])
        .registry(registry.clone())
        .start()
        .unwrap();
    let addr = server.local_addr().unwrap();
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_ne!(addr.port(), 0);
    let listeners = server.listeners();
    assert_eq!(listeners.len(), 2);
    assert_eq!(listeners[0].transport, Transport::Udp);
    assert_eq!(listeners[1].transport, Transport::Unix);
    assert!(
        listeners.iter().all(|l| l.receive_buffer > 0),
        "{listeners:?}"
    );
    assert!(path.exists());

    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..50 {
        udp.send_to(
            b"api.users.requests:1|c|#code:200\nqueue.depth:7|g\nlatency:250|ms",
            addr,
        )
        .unwrap();
    }
    udp.send_to(b"broken line\n_e{1,1}:a|b\r\n", addr).unwrap();
    let unix = UnixDatagram::unbound().unwrap();
    for i in 0..20 {
        unix.send_to(
            format!("users:u{}|s\nconnections:+1|g", i % 5).as_bytes(),
            &path,
        )
        .unwrap();
    }
    assert!(server.flush(std::time::Duration::from_secs(5)).is_ok());

    let snap = registry.snapshot();
    assert_eq!(
        number(
            &snap,
            "http.requests",
            &[("route", "users"), ("code", "200")]
        ),
        50.0
    );
    assert_eq!(number(&snap, "queue.depth", &[]), 7.0);
    assert_eq!(number(&snap, "connections", &[]), 20.0);
    let latency = snap.family("latency").unwrap();
    assert_eq!(latency.meta.unit(), &Unit::Seconds);
    let h = snap.point("latency", &[]).unwrap().histogram().unwrap();
    assert_eq!((h.count(), h.sum()), (50, 12.5));
    // A set shows the last complete window: none has closed yet.
    assert_eq!(number(&snap, "users", &[]), 0.0);
    assert_eq!(
        number(&snap, "sonde.statsd.packets", &[("transport", "udp")]),
        51.0
    );
    assert_eq!(
        number(&snap, "sonde.statsd.packets", &[("transport", "unix")]),
        20.0
    );
    assert_eq!(
        number(&snap, "sonde.statsd.lines", &[]),
        50.0 * 3.0 + 2.0 + 40.0
    );
    assert_eq!(
        number(
            &snap,
            "sonde.statsd.parse_errors",
            &[("reason", "missing_value")]
        ),
        1.0
    );
    assert_eq!(
        number(&snap, "sonde.statsd.ignored", &[("kind", "event")]),
        1.0
    );
    assert_eq!(number(&snap, "sonde.statsd.queue.size", &[]), 0.0);

    // Rotating closes the window: its distinct count is published and stays until the next.
    assert!(server.rotate_sets());
    assert_eq!(number(&registry.snapshot(), "users", &[]), 5.0);
    unix.send_to(b"users:u1|s", &path).unwrap();
    assert!(server.flush(std::time::Duration::from_secs(5)).is_ok());
    assert_eq!(number(&registry.snapshot(), "users", &[]), 5.0);
    assert!(server.rotate_sets());
    assert_eq!(number(&registry.snapshot(), "users", &[]), 1.0);

    let started = Instant::now();
    server.shutdown(std::time::Duration::from_secs(10)).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(!path.exists(), "the socket file is removed");
    assert!(server.flush(std::time::Duration::from_secs(5)).is_err());
    assert!(!server.rotate_sets());
    server.shutdown(std::time::Duration::from_secs(10)).unwrap();
    let _ = std::fs::remove_dir(path.parent().unwrap());
}

#[test]
fn flush_sees_datagrams_still_in_the_socket_buffer() {
    let registry = Registry::new();
    let server = StatsdServer::builder()
        .udp("127.0.0.1:0")
        .registry(registry.clone())
        .start()
        .unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    for round in 1..=20 {
        udp.send_to(b"rounds:1|c", server.local_addr().unwrap())
            .unwrap();
        assert!(server.flush(std::time::Duration::from_secs(5)).is_ok());
        assert_eq!(
            number(&registry.snapshot(), "rounds", &[]),
            f64::from(round)
        );
    }
}

#[test]
fn a_full_queue_drops_and_counts_datagrams() {
    let registry = Registry::new();
    let server = StatsdServer::builder()
        .udp("127.0.0.1:0")
        .receive_buffer(8 << 20)
        .queue(1)
        .registry(registry.clone())
        .start()
        .unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    // Big datagrams of many lines, so the parser falls behind the receiver.
    let packet: String = (0..400)
        .map(|i| format!("load.m{}:1|c|#k:{i}\n", i % 7))
        .collect();
    for _ in 0..300 {
        udp.send_to(packet.as_bytes(), server.local_addr().unwrap())
            .unwrap();
    }
    assert!(server.flush(std::time::Duration::from_secs(5)).is_ok());
    let snap = registry.snapshot();
    let received = number(&snap, "sonde.statsd.packets", &[("transport", "udp")]);
    let dropped = snap
        .point("sonde.statsd.dropped", &[("reason", "queue_full")])
        .and_then(|p| p.number())
        .map_or(0.0, |n| n.as_f64());
    let parsed = number(&snap, "sonde.statsd.lines", &[]) / 400.0;
    // Every datagram read from the socket was either parsed or dropped (the kernel may drop
    // some before that, which is not ours to count).
    eprintln!("received {received} parsed {parsed} dropped {dropped}");
    assert!(received > 0.0);
    assert_eq!(
        parsed + dropped,
        received,
        "parsed {parsed} dropped {dropped}"
    );
    let total: f64 = (0..7)
        .map(|m| {
            snap.family(&format!("load.m{m}"))
                .map(|f| {
                    f.series
                        .iter()
                        .map(|s| s.point.number().unwrap().as_f64())
                        .sum::<f64>()
                })
                .unwrap_or(0.0)
        })
        .sum();
    assert_eq!(total, parsed * 400.0);
}

#[test]
fn stale_socket_files_are_replaced_but_live_ones_are_not() {
    let path = temp_socket("stale");
    // A socket file nobody listens on any more.
    drop(UnixDatagram::bind(&path).unwrap());
    assert!(path.exists());
    let server = StatsdServer::builder()
        .unix(&path)
        .registry(Registry::new())
        .start()
        .unwrap();

    // Now it is live: a second server must not take it over.
    match StatsdServer::builder()
        .unix(&path)
        .registry(Registry::new())
        .start()
    {
        Err(Error::Bind { transport, .. }) => assert_eq!(transport, "unix"),
        other => panic!("{other:?}"),
    }
    drop(server);
    assert!(!path.exists());

    // Not a socket: left alone.
    std::fs::write(&path, b"not a socket").unwrap();
    assert!(matches!(
        StatsdServer::builder().unix(&path).start(),
        Err(Error::Bind { .. })
    ));
    assert_eq!(std::fs::read(&path).unwrap(), b"not a socket");
    std::fs::remove_file(&path).unwrap();
    let _ = std::fs::remove_dir(path.parent().unwrap());
}

#[test]
fn configuration_errors() {
    assert!(matches!(
        StatsdServer::builder().start(),
        Err(Error::NoListener)
    ));
    let err = StatsdServer::builder()
        .udp("127.0.0.1:0")
        .mapping([MappingRule::new("a.*").name("$3")])
        .start()
        .unwrap_err();
    assert!(matches!(err, Error::Mapping(_)));
    assert!(err.to_string().contains("rule #0"), "{err}");
    assert!(matches!(
        StatsdServer::builder().udp("not an address").start(),
        Err(Error::Resolve { .. })
    ));
    // A port in use.
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let err = StatsdServer::builder()
        .udp(taken.local_addr().unwrap().to_string())
        .start()
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Bind {
                transport: "udp",
                ..
            }
        ),
        "{err}"
    );

    // A failed start leaves no socket file behind.
    let path = temp_socket("cleanup");
    let err = StatsdServer::builder()
        .unix(&path)
        .unix(&path)
        .start()
        .unwrap_err();
    assert!(matches!(err, Error::Bind { .. }), "{err}");
    assert!(!path.exists());
    let _ = std::fs::remove_dir(path.parent().unwrap());
}

#[test]
fn the_server_can_be_shared_and_the_ingest_moved_to_a_thread() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<StatsdServer>();
    send::<sonde_statsd::Ingest>();
}

/// Issue #14: `SO_RCVBUF` is a C int; 4 GiB used to become 0 and 2 GiB a negative size,
/// both accepted without a word.
#[test]
fn a_receive_buffer_the_socket_api_cannot_take_is_refused() {
    for bytes in [2usize << 30, 4 << 30] {
        let err = StatsdServer::builder()
            .udp("127.0.0.1:0")
            .receive_buffer(bytes)
            .start()
            .unwrap_err();
        assert!(
            matches!(err, Error::Bind { .. }) && err.to_string().contains("receive buffer"),
            "{err}"
        );
    }
    let ok = StatsdServer::builder()
        .udp("127.0.0.1:0")
        .receive_buffer(i32::MAX as usize)
        .start()
        .unwrap();
    assert!(ok.listeners()[0].receive_buffer > 0);
}
