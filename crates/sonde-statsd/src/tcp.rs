//! Newline-delimited StatsD over TCP, as statsd_exporter's and DogStatsD's TCP listeners take
//! it: clients that must not lose lines to a full socket buffer, or whose lines do not fit a
//! datagram.
//!
//! One accept thread and one thread per connection, at most `max_connections` of them (a
//! connection past the cap is closed at once and counted in
//! `sonde.statsd.dropped{reason="connection_limit"}`). A connection idle for `idle_timeout` is
//! closed. Complete lines go to the same bounded queue as datagrams, in chunks of up to 64 KiB;
//! when the queue is full the connection waits (TCP pushes back on the client) instead of
//! dropping. A line longer than [`MAX_DATAGRAM`] is skipped up to its newline and counted
//! (`reason="line_too_long"`); a last line without a newline is taken when the client closes.

use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::SyncSender;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sonde_core::Counter;

use crate::self_metrics::Stats;
use crate::server::{Error, Listener, MAX_DATAGRAM, Msg, READ_TIMEOUT, Shared, Transport};

/// Default most concurrent TCP connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// Default time a TCP connection may stay silent before it is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Binds `address` for the accept thread.
pub(crate) fn bind(address: &str) -> Result<(TcpListener, Listener), Error> {
    let bind_error = |source| Error::Bind {
        transport: "tcp",
        address: address.to_owned(),
        source,
    };
    let addrs: Vec<SocketAddr> = address
        .to_socket_addrs()
        .map_err(|source| Error::Resolve {
            address: address.to_owned(),
            source,
        })?
        .collect();
    let listener = TcpListener::bind(&addrs[..]).map_err(bind_error)?;
    // Non-blocking accepts, so the thread notices a shutdown within READ_TIMEOUT.
    listener.set_nonblocking(true).map_err(bind_error)?;
    let local = listener.local_addr().map_err(bind_error)?;
    let receive_buffer = socket2::SockRef::from(&listener)
        .recv_buffer_size()
        .unwrap_or(0);
    Ok((
        listener,
        Listener {
            transport: Transport::Tcp,
            address: local.to_string(),
            local_addr: Some(local),
            receive_buffer,
        },
    ))
}

/// The accept loop and what each connection needs.
pub(crate) struct Acceptor {
    pub(crate) listener: TcpListener,
    pub(crate) tx: SyncSender<Msg>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) stats: Stats,
    pub(crate) max_connections: usize,
    pub(crate) idle_timeout: Duration,
    pub(crate) packets: Option<Counter>,
    pub(crate) errors: Option<Counter>,
}

impl Acceptor {
    pub(crate) fn run(self) {
        let open = Arc::new(AtomicUsize::new(0));
        let mut connections: Vec<JoinHandle<()>> = Vec::new();
        let mut error_streak = 0u32;
        while !self.shared.stop.load(Ordering::Acquire) {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    error_streak = 0;
                    connections.retain(|c| !c.is_finished());
                    if open.load(Ordering::Acquire) >= self.max_connections {
                        self.stats.dropped("connection_limit", 1);
                        drop(stream);
                        continue;
                    }
                    open.fetch_add(1, Ordering::AcqRel);
                    let conn = Connection {
                        stream,
                        tx: self.tx.clone(),
                        shared: self.shared.clone(),
                        stats: self.stats.clone(),
                        idle_timeout: self.idle_timeout,
                        packets: self.packets.clone(),
                        errors: self.errors.clone(),
                    };
                    let open_conn = open.clone();
                    let spawned = std::thread::Builder::new()
                        .name("statsd-tcp-conn".into())
                        .spawn(move || {
                            conn.run();
                            open_conn.fetch_sub(1, Ordering::AcqRel);
                        });
                    match spawned {
                        Ok(handle) => connections.push(handle),
                        Err(_) => {
                            // The closure (and the stream) is gone with the error.
                            open.fetch_sub(1, Ordering::AcqRel);
                            self.stats.dropped("connection_limit", 1);
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(READ_TIMEOUT.min(Duration::from_millis(20)));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    // Out of descriptors and the like: count, and back off instead of spinning.
                    if let Some(c) = &self.errors {
                        c.inc();
                    }
                    error_streak = error_streak.saturating_add(1);
                    std::thread::sleep(Duration::from_millis(u64::from(error_streak.min(100))));
                }
            }
        }
        for c in connections {
            let _ = c.join();
        }
    }
}

struct Connection {
    stream: TcpStream,
    tx: SyncSender<Msg>,
    shared: Arc<Shared>,
    stats: Stats,
    idle_timeout: Duration,
    packets: Option<Counter>,
    errors: Option<Counter>,
}

impl Connection {
    fn run(mut self) {
        // Accepted sockets may inherit non-blocking mode on some systems: reads block here,
        // with a timeout to notice a shutdown or the idle limit.
        if self.stream.set_nonblocking(false).is_err()
            || self.stream.set_read_timeout(Some(READ_TIMEOUT)).is_err()
        {
            return;
        }
        let mut pending: Vec<u8> = Vec::with_capacity(8 * 1024);
        let mut chunk = [0u8; 16 * 1024];
        let mut discarding = false;
        let mut last_read = Instant::now();
        while !self.shared.stop.load(Ordering::Acquire) {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    // The client closed: its last line needs no newline.
                    if !discarding && !pending.is_empty() {
                        self.send(std::mem::take(&mut pending));
                    }
                    return;
                }
                Ok(n) => {
                    last_read = Instant::now();
                    let mut data = chunk.get(..n).unwrap_or(&chunk[..]);
                    if discarding {
                        match data.iter().position(|&b| b == b'\n') {
                            Some(i) => {
                                discarding = false;
                                data = data.get(i + 1..).unwrap_or(&[]);
                            }
                            None => continue,
                        }
                    }
                    pending.extend_from_slice(data);
                    if let Some(last) = pending.iter().rposition(|&b| b == b'\n') {
                        let rest = pending.split_off(last + 1);
                        let lines = std::mem::replace(&mut pending, rest);
                        if !self.send(lines) {
                            return;
                        }
                    }
                    if pending.len() > MAX_DATAGRAM {
                        self.stats.dropped("line_too_long", 1);
                        pending.clear();
                        discarding = true;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    if last_read.elapsed() >= self.idle_timeout {
                        return;
                    }
                }
                Err(_) => {
                    if let Some(c) = &self.errors {
                        c.inc();
                    }
                    return;
                }
            }
        }
    }

    /// Queues complete lines, waiting while the queue is full; false once the parser is gone.
    fn send(&self, lines: Vec<u8>) -> bool {
        if let Some(c) = &self.packets {
            c.inc();
        }
        self.shared.queued.fetch_add(1, Ordering::Relaxed);
        // No buffer pool: `usize::MAX` names none, the parser frees the buffer.
        if self.tx.send(Msg::Packet(lines, usize::MAX)).is_err() {
            self.shared.queued.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }
}
