//! End-to-end StatsD ingest over UDP on loopback: the highest send rate at which sonde's StatsD
//! server loses nothing (every datagram received, every line parsed and recorded, no queue drop),
//! against the same search for a raw UDP receive loop that only counts datagrams (the ceiling of
//! this machine's loopback and kernel). Not criterion: it prints the rates.
//!
//! Each trial sends datagrams paced at a fixed rate for one second from one thread, then checks
//! for loss; a binary search finds the highest zero-loss rate. A trial whose sender could not
//! reach 97 % of the rate counts as failed, so the result is never the sender's limit mistaken
//! for the receiver's. Both receivers get the same socket
//! buffer (8 MiB) and the same datagrams (~1400 bytes, ~30 lines each).

use sonde::Component as _;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sonde::Registry;
use sonde_bench::statsd_packets;
use sonde_statsd::StatsdServer;
use sonde_tests::ticker::Ticker;

const RCVBUF: usize = 8 * 1024 * 1024;
const TRIAL: Duration = Duration::from_secs(1);

/// Sends `packets` round-robin at `rate` datagrams per second for one trial; returns how many.
fn send(to: SocketAddr, packets: &[Vec<u8>], rate: u64) -> u64 {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < TRIAL {
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        while sent < due {
            let p = &packets[(sent as usize) % packets.len()];
            if sock.send_to(p, to).is_ok() {
                sent += 1;
            }
        }
        std::hint::spin_loop();
    }
    sent
}

/// Whether the sender kept up with `rate` during the trial.
fn reached(sent: u64, rate: u64) -> bool {
    sent as f64 >= rate as f64 * TRIAL.as_secs_f64() * 0.97
}

/// A receive loop that only counts datagrams (on a [`Ticker`] without pauses: it stops when
/// dropped).
struct Raw {
    addr: SocketAddr,
    count: Arc<AtomicU64>,
    _receiver: Ticker,
}

impl Raw {
    fn start() -> Raw {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
        socket2::SockRef::from(&sock)
            .set_recv_buffer_size(RCVBUF)
            .unwrap_or_else(|e| panic!("SO_RCVBUF: {e}"));
        // The timeout lets the loop see the stop flag while nothing arrives.
        sock.set_read_timeout(Some(Duration::from_millis(50))).ok();
        let addr = sock.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let count = Arc::new(AtomicU64::new(0));
        let c = count.clone();
        let mut buf = vec![0u8; 65536];
        let receiver = Ticker::start(Duration::ZERO, move |_| {
            if sock.recv(&mut buf).is_ok() {
                c.fetch_add(1, Ordering::Relaxed);
            }
        });
        Raw {
            addr,
            count,
            _receiver: receiver,
        }
    }
}

fn counter(reg: &Registry, name: &str, labels: &[(&str, &str)]) -> u64 {
    reg.snapshot()
        .point(name, labels)
        .and_then(|p| p.number())
        .map(|n| n.as_f64() as u64)
        .unwrap_or(0)
}

/// The highest zero-loss rate (datagrams/s) found by `trial(rate) -> lossless`.
fn search(mut trial: impl FnMut(u64) -> bool) -> u64 {
    let (mut lo, mut hi) = (5_000u64, 2_000_000u64);
    if !trial(lo) {
        return 0;
    }
    while hi > lo * 21 / 20 {
        let mid = (lo + hi) / 2;
        if trial(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let (packets, lines) = statsd_packets();
    let lines_per_packet = lines as f64 / packets.len() as f64;
    println!(
        "statsd_udp: {} datagrams of ~{} bytes, {lines_per_packet:.1} lines each; 1 s trials, 8 MiB SO_RCVBUF",
        packets.len(),
        packets.iter().map(Vec::len).sum::<usize>() / packets.len()
    );

    let raw = Raw::start();
    let ceiling = search(|rate| {
        let before = raw.count.load(Ordering::Relaxed);
        let sent = send(raw.addr, &packets, rate);
        std::thread::sleep(Duration::from_millis(200));
        let got = raw.count.load(Ordering::Relaxed) - before;
        reached(sent, rate) && got == sent
    });
    drop(raw);

    let registry = Registry::new();
    let server = StatsdServer::builder()
        .registry(registry.clone())
        .udp("127.0.0.1:0")
        .receive_buffer(RCVBUF)
        .queue(4096)
        .start()
        .unwrap_or_else(|e| panic!("statsd server: {e}"));
    let addr = server
        .local_addr()
        .unwrap_or_else(|| panic!("no UDP address"));
    let sonde = search(|rate| {
        let packets_before = counter(&registry, "sonde.statsd.packets", &[("transport", "udp")]);
        let lines_before = counter(&registry, "sonde.statsd.lines", &[]);
        let dropped_before = counter(
            &registry,
            "sonde.statsd.dropped",
            &[("reason", "queue_full")],
        );
        let sent = send(addr, &packets, rate);
        std::thread::sleep(Duration::from_millis(200));
        let _ = server.flush(std::time::Duration::from_secs(5));
        let got =
            counter(&registry, "sonde.statsd.packets", &[("transport", "udp")]) - packets_before;
        let parsed = counter(&registry, "sonde.statsd.lines", &[]) - lines_before;
        let dropped = counter(
            &registry,
            "sonde.statsd.dropped",
            &[("reason", "queue_full")],
        ) - dropped_before;
        got == sent
            && dropped == 0
            && parsed as f64 >= (sent as f64 * lines_per_packet).floor() - lines_per_packet
    });

    let ceiling_lines = ceiling as f64 * lines_per_packet;
    let sonde_lines = sonde as f64 * lines_per_packet;
    println!(
        "raw receive loop (ceiling): {ceiling} datagrams/s, {ceiling_lines:.0} lines/s with zero loss"
    );
    println!(
        "sonde StatsD server:        {sonde} datagrams/s, {sonde_lines:.0} lines/s with zero loss (every line parsed and recorded)"
    );
    println!(
        "sonde / ceiling: {:.2}",
        if ceiling > 0 {
            sonde as f64 / ceiling as f64
        } else {
            0.0
        }
    );
}
