//! What the scripted in-process test servers ([`crate::cloudwatch`], [`crate::otlp`]) share:
//! the queue of answers a test scripts, their state behind a lock, the thread and runtime they
//! serve on, and the helpers they record requests with.

use std::collections::VecDeque;
use std::net::{SocketAddr, TcpListener as StdTcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use http::HeaderMap;

/// The answers a test queued, consumed one per request, then a default.
pub(crate) struct Script<F> {
    queue: VecDeque<F>,
    default: F,
}

impl<F: Clone> Script<F> {
    /// An empty script answering `default`.
    pub(crate) fn new(default: F) -> Self {
        Script {
            queue: VecDeque::new(),
            default,
        }
    }

    /// Queues `answers` after those already queued.
    pub(crate) fn extend(&mut self, answers: impl IntoIterator<Item = F>) {
        self.queue.extend(answers);
    }

    /// The answer once the queue is used up.
    pub(crate) fn set_default(&mut self, default: F) {
        self.default = default;
    }

    /// Takes the next answer: the queue's first, else the default.
    pub(crate) fn next(&mut self) -> F {
        self.queue
            .pop_front()
            .unwrap_or_else(|| self.default.clone())
    }
}

/// State shared by a server and its test; a handler that panicked does not hide it from the
/// test (the lock ignores poisoning).
pub(crate) struct Shared<S>(Mutex<S>);

impl<S> Shared<S> {
    pub(crate) fn new(state: S) -> Self {
        Shared(Mutex::new(state))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, S> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A server running on its own thread with its own current-thread Tokio runtime, so blocking
/// and async tests can use it alike; stopped on drop.
pub(crate) struct ServerThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: mpsc::Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

impl ServerThread {
    /// Runs `serve` (which spawns the server's tasks on the current runtime) on a thread named
    /// `thread_name`; returns once it has started. Panics, naming `peer`, if it cannot.
    pub(crate) fn start(
        peer: &str,
        thread_name: &str,
        serve: impl FnOnce() -> Result<(), String> + Send + 'static,
    ) -> ServerThread {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{peer}: cannot build a tokio runtime: {e}"));
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(thread_name.to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    let started = serve();
                    let failed = started.is_err();
                    let _ = ready_tx.send(started);
                    if !failed {
                        // Also ends when the server is gone without sending.
                        let _ = stop_rx.await;
                    }
                });
                runtime.shutdown_timeout(Duration::from_millis(300));
                let _ = done_tx.send(());
            })
            .unwrap_or_else(|e| panic!("{peer}: cannot spawn its thread: {e}"));

        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("{peer}: cannot start: {e}"),
            Err(e) => panic!("{peer}: the server thread did not start: {e}"),
        }
        ServerThread {
            stop: Some(stop_tx),
            done: done_rx,
            thread: Some(thread),
        }
    }
}

/// A scripted server: its state, shared with the handlers, and the thread serving it (stopped
/// on drop). The peers' public types hold one beside their addresses.
pub(crate) struct ScriptedServer<S> {
    shared: Arc<Shared<S>>,
    _thread: ServerThread,
}

impl<S: Send + Sync + 'static> ScriptedServer<S> {
    /// Puts `state` behind the lock and runs `serve` with it on a [`ServerThread`] (see
    /// [`ServerThread::start`] for `peer`, `thread_name` and the panics).
    pub(crate) fn start(
        peer: &str,
        thread_name: &str,
        state: S,
        serve: impl FnOnce(Arc<Shared<S>>) -> Result<(), String> + Send + 'static,
    ) -> Self {
        let shared = Arc::new(Shared::new(state));
        let served = Arc::clone(&shared);
        let thread = ServerThread::start(peer, thread_name, move || serve(served));
        ScriptedServer {
            shared,
            _thread: thread,
        }
    }

    /// The state, locked (see [`Shared::lock`]).
    pub(crate) fn lock(&self) -> MutexGuard<'_, S> {
        self.shared.lock()
    }
}

impl Drop for ServerThread {
    /// Stops the server and its runtime; waits at most about a second for the thread.
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if self.done.recv_timeout(Duration::from_secs(1)).is_ok()
            && let Some(thread) = self.thread.take()
        {
            let _ = thread.join();
        }
    }
}

/// A non-blocking listener on a free 127.0.0.1 port, for a [`ServerThread`] to serve, and its
/// address; panics, naming `peer` and the `what` port, if it cannot.
pub(crate) fn bind_loopback(peer: &str, what: &str) -> (StdTcpListener, SocketAddr) {
    let listener = StdTcpListener::bind("127.0.0.1:0")
        .unwrap_or_else(|e| panic!("{peer}: cannot bind a {what} port on 127.0.0.1: {e}"));
    listener
        .set_nonblocking(true)
        .unwrap_or_else(|e| panic!("{peer}: cannot make the {what} listener non-blocking: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("{peer}: no local address for {what}: {e}"));
    (listener, addr)
}

/// Panics, naming `peer` and the `what` port, unless `addr` accepts a connection within 5 s.
pub(crate) fn expect_accepting(peer: &str, what: &str, addr: SocketAddr) {
    TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap_or_else(|e| {
        panic!("{peer}: the {what} port {addr} does not accept connections: {e}")
    });
}

/// Checks `cond` every 20 ms (at least once) until it holds or `timeout` passes; returns
/// whether it held.
pub(crate) fn poll_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Headers as (lowercased name, value) pairs, skipping values that are not visible ASCII.
pub(crate) fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter_map(|(name, value)| {
            let value = value.to_str().ok()?;
            Some((name.as_str().to_ascii_lowercase(), value.to_owned()))
        })
        .collect()
}

/// The first value of header `name` (case-insensitive) among recorded `headers`.
pub(crate) fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}
