//! UDP and unix datagram receivers (and newline-delimited TCP, see [`crate::tcp`]), decoupled
//! from parsing by a bounded queue.
//!
//! Each socket has its own receive thread, which copies each datagram into a pooled buffer and
//! hands it to a bounded queue; when the queue is full the datagram is dropped and counted in
//! `sonde.statsd.dropped{reason="queue_full"}`, so a slow parser never blocks the sockets (the
//! kernel buffer, sized with [`receive_buffer`](StatsdServerBuilder::receive_buffer), absorbs
//! bursts). One parser thread drains the queue into an [`Ingest`] and returns the buffers to
//! their pool.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, Socket, Type};
use sonde_core::{Counter, Registry};

use crate::ingest::Ingest;
use crate::mapping::{Mapper, MappingError, MappingRule};
use crate::self_metrics::Stats;

/// Largest datagram read; longer ones (possible on unix sockets) are truncated.
pub const MAX_DATAGRAM: usize = 64 * 1024;
/// Default queue capacity, in datagrams.
pub const DEFAULT_QUEUE: usize = 1024;
/// How often receive threads look up from a blocking read to notice a shutdown or flush.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_millis(100);
/// How long [`StatsdServer::rotate_sets`] waits at most.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors starting a [`StatsdServer`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Neither [`udp`](StatsdServerBuilder::udp) nor [`unix`](StatsdServerBuilder::unix) was
    /// called.
    #[error(
        "no StatsD listener configured: call .udp(address), .unix(path) or .tcp(address) before .start()"
    )]
    NoListener,
    /// A UDP address did not resolve.
    #[error("cannot resolve StatsD UDP address {address:?}: {source}")]
    Resolve {
        /// The address as given.
        address: String,
        /// The resolver error.
        #[source]
        source: io::Error,
    },
    /// A socket could not be created or bound.
    #[error("cannot bind the StatsD {transport} socket {address}: {source}")]
    Bind {
        /// `udp`, `unix` or `tcp`.
        transport: &'static str,
        /// The address or path.
        address: String,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// A mapping rule is unusable.
    #[error(transparent)]
    Mapping(#[from] MappingError),
    /// A thread could not be started.
    #[error("cannot start a StatsD thread: {0}")]
    Thread(#[source] io::Error),
}

/// The kind of socket a listener reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// A UDP socket.
    Udp,
    /// A unix datagram socket.
    Unix,
    /// A TCP listener (newline-delimited lines).
    Tcp,
}

impl Transport {
    /// `udp` or `unix`, the `transport` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Unix => "unix",
            Transport::Tcp => "tcp",
        }
    }
}

/// A bound socket of a running server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// UDP, unix or TCP.
    pub transport: Transport,
    /// The bound address (with the actual port) or the socket path.
    pub address: String,
    /// The UDP or TCP address, with the actual port when port 0 was asked for.
    pub local_addr: Option<SocketAddr>,
    /// The effective receive buffer (`SO_RCVBUF` as the kernel reports it; Linux doubles the
    /// requested size and caps it at `net.core.rmem_max`).
    pub receive_buffer: usize,
}

/// Configures and starts a [`StatsdServer`].
#[derive(Debug, Default)]
#[must_use = "call .start() to start the server"]
pub struct StatsdServerBuilder {
    udp: Vec<String>,
    unix: Vec<PathBuf>,
    receive_buffer: Option<usize>,
    queue: Option<usize>,
    rules: Vec<MappingRule>,
    registry: Option<Registry>,
    max_metrics: Option<usize>,
    max_series: Option<usize>,
    max_labels: Option<usize>,
    ttl: Option<Duration>,
    tcp: Vec<String>,
    tcp_max_connections: Option<usize>,
    tcp_idle_timeout: Option<Duration>,
}

impl StatsdServerBuilder {
    /// Listens on a UDP address such as `127.0.0.1:8125` or `[::]:8125` (port 0 picks a free
    /// port; see [`StatsdServer::local_addr`]). May be called several times.
    pub fn udp(mut self, address: impl Into<String>) -> Self {
        self.udp.push(address.into());
        self
    }

    /// Listens on a unix datagram socket at `path` (DogStatsD's `dogstatsd.socket`). A stale
    /// socket file left by a previous run is replaced; the file is removed at shutdown. May be
    /// called several times.
    pub fn unix(mut self, path: impl AsRef<Path>) -> Self {
        self.unix.push(path.as_ref().to_owned());
        self
    }

    sonde_core::builder_setters! {
        /// Asks for a socket receive buffer (`SO_RCVBUF`) of this many bytes, at most `i32::MAX` (more is
        /// an error at [`start`](Self::start)); the effective size is in
        /// [`StatsdServer::listeners`]. By default the system default is kept.
        receive_buffer: Some(usize);
        /// The capacity of the queue between the receive threads and the parser, in datagrams
        /// (default 1024).
        queue: Some(usize);
        /// The registry to record into (default: [`Registry::global`]).
        registry: Some(Registry);
        /// The limit on distinct metric names (default 10 000); see [`Ingest::max_metrics`].
        max_metrics: Some(usize);
        /// The series limit of each family (default 2000); see [`Ingest::max_series`].
        max_series: Some(usize);
        /// The limit on label names per family (default 32); see [`Ingest::max_labels`].
        max_labels: Some(usize);
        /// Expires series and names idle for `ttl` (off by default); see [`Ingest::ttl`].
        ttl: Some(Duration);
        /// How long a TCP connection may stay silent before it is closed (default
        /// [`DEFAULT_IDLE_TIMEOUT`](crate::tcp::DEFAULT_IDLE_TIMEOUT)).
        tcp_idle_timeout: Some(Duration);
    }

    /// Mapping rules applied to every metric name (see [`Mapper`]).
    pub fn mapping(mut self, rules: impl IntoIterator<Item = MappingRule>) -> Self {
        self.rules = rules.into_iter().collect();
        self
    }

    /// Listens for newline-delimited lines on a TCP address such as `127.0.0.1:8125` (port 0
    /// picks a free port; see [`StatsdServer::tcp_addr`]).
    pub fn tcp(mut self, address: impl Into<String>) -> Self {
        self.tcp.push(address.into());
        self
    }

    /// Most concurrent TCP connections (default
    /// [`DEFAULT_MAX_CONNECTIONS`](crate::tcp::DEFAULT_MAX_CONNECTIONS)); more are closed at
    /// once and counted in `sonde.statsd.dropped{reason="connection_limit"}`.
    pub fn tcp_max_connections(mut self, n: usize) -> Self {
        self.tcp_max_connections = Some(n.max(1));
        self
    }

    /// Everything `config` sets: its listeners (added to any set before), buffers, limits and
    /// mapping rules. Check it first with
    /// [`validate`](sonde_settings::Settings::validate), which names each problem's key.
    pub fn config(mut self, config: &crate::StatsdConfig) -> Self {
        if let Some(a) = config.udp {
            self = self.udp(a.to_string());
        }
        if let Some(p) = &config.unix {
            self = self.unix(p);
        }
        if let Some(a) = config.tcp {
            self = self.tcp(a.to_string());
        }
        self.tcp_max_connections(config.tcp_max_connections)
            .tcp_idle_timeout(config.tcp_idle_timeout)
            .receive_buffer(config.receive_buffer)
            .queue(config.queue)
            .max_metrics(config.max_metrics)
            .ttl(config.ttl)
            .mapping(config.mappings.iter().cloned())
    }

    /// Binds the sockets and starts the threads.
    pub fn start(self) -> Result<StatsdServer, Error> {
        if self.udp.is_empty() && self.unix.is_empty() && self.tcp.is_empty() {
            return Err(Error::NoListener);
        }
        let mapper = Mapper::new(self.rules)?;
        let registry = self.registry.unwrap_or_else(|| Registry::global().clone());
        let mut ingest = Ingest::new(registry.clone()).mapper(mapper);
        if let Some(n) = self.max_metrics {
            ingest = ingest.max_metrics(n);
        }
        if let Some(n) = self.max_series {
            ingest = ingest.max_series(n);
        }
        if let Some(n) = self.max_labels {
            ingest = ingest.max_labels(n);
        }
        if let Some(t) = self.ttl {
            ingest = ingest.ttl(t);
        }

        let mut sockets = Vec::new();
        let mut listeners = Vec::new();
        let mut tcp_listeners = Vec::new();
        let mut unix_paths: Vec<PathBuf> = Vec::new();
        let bound = (|| {
            for address in &self.udp {
                let (socket, info) = bind_udp(address, self.receive_buffer)?;
                sockets.push(Dgram::Udp(socket));
                listeners.push(info);
            }
            for path in &self.unix {
                let (socket, info) = bind_unix(path, self.receive_buffer)?;
                unix_paths.push(path.clone());
                sockets.push(Dgram::Unix(socket));
                listeners.push(info);
            }
            for address in &self.tcp {
                let (listener, info) = crate::tcp::bind(address)?;
                tcp_listeners.push(listener);
                listeners.push(info);
            }
            Ok::<(), Error>(())
        })();
        if let Err(e) = bound {
            // The socket files bound so far are ours: do not leave them behind.
            for path in &unix_paths {
                let _ = std::fs::remove_file(path);
            }
            return Err(e);
        }

        let stats = Stats::register(&registry);
        let capacity = self.queue.unwrap_or(DEFAULT_QUEUE).max(1);
        let (tx, rx) = mpsc::sync_channel::<Msg>(capacity);
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            flush_requested: AtomicU64::new(0),
            flushed: sockets.iter().map(|_| AtomicU64::new(0)).collect(),
            queued: AtomicI64::new(0),
        });

        // The queue size is read when the registry is collected. The hook holds the server's
        // state weakly: once the server is gone it does nothing.
        if let Some(gauge) = stats.queue_size.clone() {
            let weak = Arc::downgrade(&shared);
            registry.add_collect_hook(move || {
                if let Some(shared) = weak.upgrade() {
                    gauge.set(shared.queued.load(Ordering::Relaxed).max(0));
                }
            });
        }

        let server = StatsdServer {
            listeners,
            shared: shared.clone(),
            control: Mutex::new(Some(tx.clone())),
            threads: Mutex::new(Threads {
                unix_paths,
                ..Threads::default()
            }),
        };
        let mut receivers = Vec::new();

        let mut pools = Vec::new();
        for (i, socket) in sockets.into_iter().enumerate() {
            let (pool_tx, pool_rx) = mpsc::sync_channel::<Vec<u8>>(capacity + 1);
            pools.push(pool_tx);
            let transport = socket.transport().as_str();
            let receiver = ReceiveLoop {
                socket,
                id: i,
                tx: tx.clone(),
                pool: pool_rx,
                shared: shared.clone(),
                stats: stats.clone(),
                packets: stats.packets.as_ref().map(|f| f.with(&[transport])),
                errors: stats.receive_errors.as_ref().map(|f| f.with(&[transport])),
            };
            let handle = std::thread::Builder::new()
                .name(format!("statsd-recv-{transport}-{i}"))
                .spawn(move || receiver.run())
                .map_err(Error::Thread)?;
            receivers.push(handle);
        }
        for listener in tcp_listeners {
            let transport = Transport::Tcp.as_str();
            let acceptor = crate::tcp::Acceptor {
                listener,
                tx: tx.clone(),
                shared: shared.clone(),
                stats: stats.clone(),
                max_connections: self
                    .tcp_max_connections
                    .unwrap_or(crate::tcp::DEFAULT_MAX_CONNECTIONS),
                idle_timeout: self
                    .tcp_idle_timeout
                    .unwrap_or(crate::tcp::DEFAULT_IDLE_TIMEOUT),
                packets: stats.packets.as_ref().map(|f| f.with(&[transport])),
                errors: stats.receive_errors.as_ref().map(|f| f.with(&[transport])),
            };
            let handle = std::thread::Builder::new()
                .name("statsd-tcp-accept".into())
                .spawn(move || acceptor.run())
                .map_err(Error::Thread)?;
            receivers.push(handle);
        }
        drop(tx);

        let parser_shared = shared;
        let parser = std::thread::Builder::new()
            .name("statsd-parse".into())
            .spawn(move || parse_loop(rx, pools, ingest, parser_shared))
            .map_err(Error::Thread)?;
        {
            let mut threads = server.threads();
            threads.receivers = receivers;
            threads.parser = Some(parser);
        }
        Ok(server)
    }
}

/// `SO_RCVBUF` is a C `int`: 2 GiB and more would be truncated (4 GiB to 0), so it is refused.
fn set_receive_buffer(socket: &Socket, bytes: usize) -> io::Result<()> {
    if i32::try_from(bytes).is_err() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a receive buffer of {bytes} bytes is more than the {} the socket API accepts; ask for less (the kernel caps it at net.core.rmem_max anyway)",
                i32::MAX
            ),
        ));
    }
    socket.set_recv_buffer_size(bytes)
}

fn bind_udp(address: &str, receive_buffer: Option<usize>) -> Result<(UdpSocket, Listener), Error> {
    let addr = address
        .to_socket_addrs()
        .and_then(|mut a| {
            a.next().ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, "the name resolved to no address")
            })
        })
        .map_err(|source| Error::Resolve {
            address: address.to_owned(),
            source,
        })?;
    let bind_err = |source| Error::Bind {
        transport: "udp",
        address: address.to_owned(),
        source,
    };
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, None).map_err(bind_err)?;
    if let Some(n) = receive_buffer {
        set_receive_buffer(&socket, n).map_err(bind_err)?;
    }
    socket.bind(&addr.into()).map_err(bind_err)?;
    socket
        .set_read_timeout(Some(READ_TIMEOUT))
        .map_err(bind_err)?;
    let effective = socket.recv_buffer_size().unwrap_or(0);
    let socket: UdpSocket = socket.into();
    let local = socket.local_addr().map_err(bind_err)?;
    Ok((
        socket,
        Listener {
            transport: Transport::Udp,
            address: local.to_string(),
            local_addr: Some(local),
            receive_buffer: effective,
        },
    ))
}

fn bind_unix(
    path: &Path,
    receive_buffer: Option<usize>,
) -> Result<(UnixDatagram, Listener), Error> {
    let bind_err = |source| Error::Bind {
        transport: "unix",
        address: path.display().to_string(),
        source,
    };
    let addr = SockAddr::unix(path).map_err(bind_err)?;
    let socket = Socket::new(Domain::UNIX, Type::DGRAM, None).map_err(bind_err)?;
    if let Some(n) = receive_buffer {
        set_receive_buffer(&socket, n).map_err(bind_err)?;
    }
    if let Err(e) = socket.bind(&addr) {
        // A socket file nobody listens on (a previous run that crashed) may be replaced; a live
        // one or any other file may not.
        let stale = e.kind() == io::ErrorKind::AddrInUse
            && std::fs::symlink_metadata(path).is_ok_and(|m| {
                use std::os::unix::fs::FileTypeExt;
                m.file_type().is_socket()
            })
            && UnixDatagram::unbound()
                .and_then(|probe| probe.connect(path))
                .is_err_and(|e| e.kind() == io::ErrorKind::ConnectionRefused);
        if !stale {
            return Err(bind_err(e));
        }
        std::fs::remove_file(path).map_err(bind_err)?;
        socket.bind(&addr).map_err(bind_err)?;
    }
    socket
        .set_read_timeout(Some(READ_TIMEOUT))
        .map_err(bind_err)?;
    let effective = socket.recv_buffer_size().unwrap_or(0);
    Ok((
        socket.into(),
        Listener {
            transport: Transport::Unix,
            address: path.display().to_string(),
            local_addr: None,
            receive_buffer: effective,
        },
    ))
}

enum Dgram {
    Udp(UdpSocket),
    Unix(UnixDatagram),
}

impl Dgram {
    fn transport(&self) -> Transport {
        match self {
            Dgram::Udp(_) => Transport::Udp,
            Dgram::Unix(_) => Transport::Unix,
        }
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Dgram::Udp(s) => s.recv_from(buf).map(|(n, _)| n),
            Dgram::Unix(s) => s.recv(buf),
        }
    }

    fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Dgram::Udp(s) => s.set_nonblocking(on),
            Dgram::Unix(s) => s.set_nonblocking(on),
        }
    }
}

pub(crate) enum Msg {
    /// A datagram and the index of the receiver whose pool its buffer returns to.
    Packet(Vec<u8>, usize),
    /// Answered once everything queued before it has been ingested.
    Barrier(mpsc::Sender<()>),
    /// Rotates the sets, then answers.
    Rotate(mpsc::Sender<()>),
}

pub(crate) struct Shared {
    pub(crate) stop: AtomicBool,
    /// Incremented by each flush.
    flush_requested: AtomicU64,
    /// Per receiver: the last flush request it has served (everything readable from its
    /// socket at that point has been queued or dropped).
    flushed: Vec<AtomicU64>,
    /// Datagrams in the queue.
    pub(crate) queued: AtomicI64,
}

struct ReceiveLoop {
    socket: Dgram,
    id: usize,
    tx: SyncSender<Msg>,
    pool: Receiver<Vec<u8>>,
    shared: Arc<Shared>,
    stats: Stats,
    packets: Option<Counter>,
    errors: Option<Counter>,
}

impl ReceiveLoop {
    fn run(self) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut spare: Option<Vec<u8>> = None;
        let mut error_streak = 0u32;
        while !self.shared.stop.load(Ordering::Acquire) {
            match self.socket.recv(&mut buf) {
                Ok(n) => {
                    error_streak = 0;
                    if !self.deliver(buf.get(..n).unwrap_or(&buf), &mut spare) {
                        return;
                    }
                    if !self.batch(&mut buf, &mut spare) {
                        return;
                    }
                }
                Err(e) if is_timeout(&e) => {}
                Err(_) => {
                    if let Some(c) = &self.errors {
                        c.inc();
                    }
                    // Back off on persistent errors instead of spinning.
                    error_streak = error_streak.saturating_add(1);
                    std::thread::sleep(Duration::from_millis(u64::from(error_streak.min(10))));
                }
            }
            let requested = self.shared.flush_requested.load(Ordering::Acquire);
            let flushed = &self.shared.flushed[self.id];
            if requested != flushed.load(Ordering::Relaxed) {
                if !self.drain(&mut buf, &mut spare) {
                    return;
                }
                flushed.store(requested, Ordering::Release);
            }
        }
    }

    /// While datagrams keep coming: naps and then takes everything the socket received
    /// meanwhile, instead of being woken by the kernel for each one, until two naps in a row
    /// find nothing. A nap holds fewer than [`BUSY_DRAIN`] datagrams in the socket buffer (at
    /// most 64 × 8 KiB of DogStatsD datagrams: raise `receive_buffer` past the 208 KiB Linux
    /// default for such traffic); above that rate a drain finds that many and the next one
    /// follows without a nap. Flush requests are answered after each drain. False when the
    /// parser is gone.
    fn batch(&self, buf: &mut [u8], spare: &mut Option<Vec<u8>>) -> bool {
        if self.socket.set_nonblocking(true).is_err() {
            return true;
        }
        let alive = while_busy(
            || self.shared.stop.load(Ordering::Acquire),
            || {
                let requested = self.shared.flush_requested.load(Ordering::Acquire);
                let drained = self.drain_now(buf, spare)?;
                self.shared.flushed[self.id].store(requested, Ordering::Release);
                Some(drained)
            },
        );
        let _ = self.socket.set_nonblocking(false);
        alive
    }

    /// Queues whatever the socket holds right now (the socket is non-blocking); how many
    /// datagrams, or None when the parser is gone.
    fn drain_now(&self, buf: &mut [u8], spare: &mut Option<Vec<u8>>) -> Option<usize> {
        let mut drained = 0;
        loop {
            match self.socket.recv(buf) {
                Ok(n) => {
                    drained += 1;
                    if !self.deliver(buf.get(..n).unwrap_or(buf), spare) {
                        return None;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(drained),
                Err(_) => {
                    if let Some(c) = &self.errors {
                        c.inc();
                    }
                    return Some(drained);
                }
            }
        }
    }

    /// Queues whatever the socket holds right now.
    fn drain(&self, buf: &mut [u8], spare: &mut Option<Vec<u8>>) -> bool {
        if self.socket.set_nonblocking(true).is_err() {
            return true;
        }
        let alive = self.drain_now(buf, spare).is_some();
        let _ = self.socket.set_nonblocking(false);
        alive
    }

    /// Queues one datagram; false when the parser is gone.
    fn deliver(&self, data: &[u8], spare: &mut Option<Vec<u8>>) -> bool {
        if data.is_empty() {
            // Wake-ups from flush(), or clients' empty datagrams: nothing to parse.
            return true;
        }
        if let Some(c) = &self.packets {
            c.inc();
        }
        let mut packet = spare
            .take()
            .or_else(|| self.pool.try_recv().ok())
            .unwrap_or_default();
        packet.clear();
        packet.extend_from_slice(data);
        self.shared.queued.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(Msg::Packet(packet, self.id)) {
            Ok(()) => true,
            Err(TrySendError::Full(msg)) => {
                self.shared.queued.fetch_sub(1, Ordering::Relaxed);
                self.stats.dropped("queue_full", 1);
                if let Msg::Packet(p, _) = msg {
                    *spare = Some(p);
                }
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// How long the receive threads and the parser nap between drains while datagrams keep
/// coming.
const NAP: Duration = Duration::from_millis(1);
/// A drain that finds at least this many datagrams means the traffic outruns the naps: the
/// next drain follows at once.
const BUSY_DRAIN: usize = 64;

fn parse_loop(
    rx: Receiver<Msg>,
    pools: Vec<SyncSender<Vec<u8>>>,
    mut ingest: Ingest,
    shared: Arc<Shared>,
) {
    let handle = |ingest: &mut Ingest, msg: Msg| match msg {
        Msg::Packet(packet, source) => {
            shared.queued.fetch_sub(1, Ordering::Relaxed);
            ingest.ingest_packet(&packet);
            if let Some(pool) = pools.get(source) {
                // A full pool just frees the buffer.
                let _ = pool.try_send(packet);
            }
        }
        Msg::Barrier(done) => {
            let _ = done.send(());
        }
        Msg::Rotate(done) => {
            ingest.rotate_sets();
            let _ = done.send(());
        }
    };
    // Ends when every receiver and the server's control sender are gone. Wakes up at least
    // every second so expiry runs when no packets arrive too.
    loop {
        let msg = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(msg) => msg,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                ingest.maintain(Instant::now());
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        ingest.maintain(Instant::now());
        handle(&mut ingest, msg);
        // Datagrams are coming. Being woken for each one (a futex wake-up from the receive
        // thread and a context switch, more than parsing a datagram costs) is avoided by
        // napping and then taking everything that queued meanwhile, until two naps in a row
        // find nothing; a drain that finds the queue busy goes on without a nap. Costs at most
        // a NAP of delay (flushes wait for it too); the queue holds far more than a NAP of
        // traffic at any rate the parser keeps up with.
        while_busy(
            || false,
            || {
                let mut drained = 0;
                while drained < BUSY_DRAIN {
                    let Ok(msg) = rx.try_recv() else { break };
                    handle(&mut ingest, msg);
                    drained += 1;
                }
                ingest.maintain(Instant::now());
                Some(drained)
            },
        );
    }
}

/// Calls `drain` (which takes what has arrived and says how much, or None to give up) while
/// traffic keeps coming: after a drain of fewer than [`BUSY_DRAIN`] it naps [`NAP`], after a
/// busy one it drains again at once; two empty drains in a row, or `stop`, end it. False when
/// `drain` gave up.
fn while_busy(stop: impl Fn() -> bool, mut drain: impl FnMut() -> Option<usize>) -> bool {
    let mut empty = 0;
    while !stop() {
        let Some(drained) = drain() else {
            return false;
        };
        if drained >= BUSY_DRAIN {
            continue;
        }
        if drained == 0 {
            empty += 1;
            if empty == 2 {
                break;
            }
        } else {
            empty = 0;
        }
        std::thread::sleep(NAP);
    }
    true
}
/// A running StatsD/DogStatsD server: receive threads (one per socket) and a parser thread
/// recording into a registry. Stops on [`Component::shutdown`](sonde_core::Component::shutdown) or drop.
///
/// ```no_run
/// use sonde_statsd::{MappingRule, StatsdServer};
/// let registry = sonde_core::Registry::new();
/// let server = StatsdServer::builder()
///     .udp("127.0.0.1:8125")
///     .unix("/var/run/sonde/dsd.socket")
///     .receive_buffer(8 << 20)
///     .queue(4096)
///     .mapping([MappingRule::new("api.*.requests").name("http.requests").label("route", "$1")])
///     .registry(registry.clone())
///     .start()?;
/// for l in server.listeners() {
///     println!("{:?} on {} (receive buffer {} bytes)", l.transport, l.address, l.receive_buffer);
/// }
/// // Each export interval: close the set window (its distinct counts become the set
/// // gauges, read alike by every exporter until the next interval), then export.
/// server.rotate_sets();
/// let snapshot = registry.snapshot();
/// # Ok::<(), sonde_statsd::Error>(())
/// ```
#[derive(custom_debug::Debug)]
#[must_use = "dropping the server stops receiving: keep it (`let _statsd = ...`) for as long as it should listen"]
pub struct StatsdServer {
    listeners: Vec<Listener>,
    #[debug(skip)]
    shared: Arc<Shared>,
    #[debug(skip)]
    control: Mutex<Option<SyncSender<Msg>>>,
    #[debug(skip)]
    threads: Mutex<Threads>,
}

/// What [`StatsdServer`]'s shutdown joins and removes (behind a lock, so it takes `&self`).
#[derive(Default)]
struct Threads {
    receivers: Vec<JoinHandle<()>>,
    parser: Option<JoinHandle<()>>,
    unix_paths: Vec<PathBuf>,
}

impl StatsdServer {
    /// Starts configuring a server.
    pub fn builder() -> StatsdServerBuilder {
        StatsdServerBuilder::default()
    }

    /// The address of the first UDP listener (with the actual port when port 0 was asked for).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .filter(|l| l.transport == Transport::Udp)
            .find_map(|l| l.local_addr)
    }

    /// The address of the first TCP listener (with the actual port when port 0 was asked for).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .filter(|l| l.transport == Transport::Tcp)
            .find_map(|l| l.local_addr)
    }

    /// The bound sockets: UDP, then unix, then TCP, each in the order given.
    pub fn listeners(&self) -> &[Listener] {
        &self.listeners
    }

    fn control(&self) -> Option<SyncSender<Msg>> {
        self.control
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn threads(&self) -> std::sync::MutexGuard<'_, Threads> {
        self.threads.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until every datagram received so far (including those still in the sockets'
    /// buffers) has been parsed and recorded, for up to `timeout`. False on timeout or after
    /// shutdown.
    fn flush_within(&self, timeout: Duration) -> bool {
        // A timeout too long to add waits as long as the threads run (a stop ends it).
        let deadline = Instant::now()
            .checked_add(timeout)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365));
        let Some(control) = self.control() else {
            return false;
        };
        let request = self.shared.flush_requested.fetch_add(1, Ordering::AcqRel) + 1;
        self.wake_receivers();
        // Each receiver queues what its socket holds, then acknowledges.
        for flushed in &self.shared.flushed {
            while flushed.load(Ordering::Acquire) < request {
                // A shutdown on another thread stops the receivers before they answer.
                if Instant::now() >= deadline || self.shared.stop.load(Ordering::Acquire) {
                    return false;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        // Then a barrier behind those datagrams in the queue.
        let (done_tx, done_rx) = mpsc::channel();
        if control.send(Msg::Barrier(done_tx)).is_err() {
            return false;
        }
        done_rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    }

    /// Closes the set window after everything queued so far: each set gauge takes the
    /// window's distinct count and a new window starts (see [`Ingest::rotate_sets`]). Waits
    /// for it up to 5 seconds and returns whether it happened. Call it once per export
    /// interval, before that interval's exports.
    pub fn rotate_sets(&self) -> bool {
        let Some(control) = self.control() else {
            return false;
        };
        let (done_tx, done_rx) = mpsc::channel();
        if control.send(Msg::Rotate(done_tx)).is_err() {
            return false;
        }
        done_rx.recv_timeout(CONTROL_TIMEOUT).is_ok()
    }

    /// Sends an empty datagram to each socket, so a receiver blocked in a read looks up now
    /// rather than at its read timeout. Best effort.
    fn wake_receivers(&self) {
        for l in &self.listeners {
            match (l.transport, l.local_addr) {
                (Transport::Udp, Some(addr)) => {
                    let target = match addr {
                        SocketAddr::V4(a) if a.ip().is_unspecified() => {
                            SocketAddr::from((Ipv4Addr::LOCALHOST, a.port()))
                        }
                        SocketAddr::V6(a) if a.ip().is_unspecified() => {
                            SocketAddr::from((Ipv6Addr::LOCALHOST, a.port()))
                        }
                        a => a,
                    };
                    let any: SocketAddr = if target.is_ipv4() {
                        (Ipv4Addr::UNSPECIFIED, 0).into()
                    } else {
                        (Ipv6Addr::UNSPECIFIED, 0).into()
                    };
                    if let Ok(s) = UdpSocket::bind(any) {
                        let _ = s.send_to(&[], target);
                    }
                }
                (Transport::Unix, _) => {
                    if let Ok(s) = UnixDatagram::unbound() {
                        let _ = s.send_to(&[], &l.address);
                    }
                }
                _ => {}
            }
        }
    }

    /// Stops the threads (within about 100 ms plus the time to parse what is queued), and
    /// removes the unix socket files. Idempotent. Datagrams still in the sockets' buffers are
    /// not read: `shutdown` flushes them first, a drop does not.
    fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        let mut threads = self.threads();
        for r in threads.receivers.drain(..) {
            let _ = r.join();
        }
        // The receivers' senders are gone; dropping the last one lets the parser finish the
        // queue and stop.
        self.control
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(p) = threads.parser.take() {
            let _ = p.join();
        }
        for path in threads.unix_paths.drain(..) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// `flush` waits until every datagram received so far (including those still in the sockets'
/// buffers) has been parsed and recorded: call it before a final export, or in tests.
/// `shutdown` does that, then stops the threads (within about 100 ms plus the time to parse
/// what is queued) and removes the unix socket files. Dropping the server stops it without
/// reading what the sockets still hold.
impl sonde_core::Component for StatsdServer {
    fn name(&self) -> &'static str {
        "statsd"
    }

    fn flush(&self, timeout: Duration) -> Result<(), sonde_core::ComponentError> {
        if self.flush_within(timeout) {
            Ok(())
        } else if self.control().is_none() {
            Err(sonde_core::ComponentError::new(
                "statsd",
                "the server was shut down",
            ))
        } else {
            Err(sonde_core::ComponentError::new(
                "statsd",
                format_args!(
                    "the datagrams received were not all recorded within {timeout:?}; they are recorded later"
                ),
            ))
        }
    }

    fn shutdown(&self, timeout: Duration) -> Result<(), sonde_core::ComponentError> {
        if self.control().is_none() {
            return Ok(());
        }
        let flushed = sonde_core::Component::flush(self, timeout);
        self.stop();
        flushed
    }
}

impl Drop for StatsdServer {
    fn drop(&mut self) {
        self.stop();
    }
}
