//! `sonde-load-target`: a minimal HTTP/1.1 and h2c (prior knowledge) server with injected
//! delays, stalls and errors, for sonde-load's tests and benchmarks (and a fair local target
//! for wrk, oha and the like). See `sonde-load-target --help`.

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use sonde_load::cli::parse_duration;
use sonde_load::engine::timer::PreciseTimer;
#[cfg(target_os = "linux")]
use sonde_load::engine::timer::TimerFd;

/// A minimal HTTP/1.1 + h2c server with known delays, stalls and errors.
///
/// Once bound it prints exactly one line, `listening on http://ADDR`, to stdout. Every request
/// except `/health` gets the configured behaviour; `/health` answers 200 at once. The slow and
/// error choices are deterministic: a ratio r picks request n when floor((n+1)·r) > floor(n·r),
/// so 0.01 is every 100th request. Delays are timed on a timerfd (Linux) or a timer thread, to
/// within about 0.1 ms (tokio's timer would add 1–2 ms).
#[derive(Debug, Parser)]
#[command(name = "sonde-load-target", version, about, long_about)]
struct Args {
    /// Address to listen on (port 0: any free port, printed on the first line).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Delay before every answer.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    delay: Duration,
    /// Delay of the slow requests (instead of --delay).
    #[arg(long, value_parser = parse_duration, requires = "slow_ratio")]
    slow_delay: Option<Duration>,
    /// Share of requests that are slow (0.01 = every 100th).
    #[arg(long, value_parser = parse_ratio, requires = "slow_delay")]
    slow_ratio: Option<f64>,
    /// How long each stall lasts: the server answers nothing, requests arriving in a stall wait
    /// until it ends and answers due during it are held until then.
    #[arg(long, value_parser = parse_duration, requires = "stall_every")]
    stall: Option<Duration>,
    /// Stall period: the last --stall of every --stall-every (from the start) is a stall.
    #[arg(long, value_parser = parse_duration, requires = "stall")]
    stall_every: Option<Duration>,
    /// Share of requests answered with --error-status (0.1 = every 10th).
    #[arg(long, value_parser = parse_ratio, default_value = "0")]
    error_ratio: f64,
    /// Status of the error answers.
    #[arg(long, default_value_t = 503, value_parser = clap::value_parser!(u16).range(100..=599))]
    error_status: u16,
    /// Sleep this long before binding (a service's cold start).
    #[arg(long, value_parser = parse_duration)]
    startup_delay: Option<Duration>,
    /// Worker threads (default: one per CPU).
    #[arg(long)]
    threads: Option<usize>,
    /// Size of each answer's body in bytes.
    #[arg(long, default_value_t = 2)]
    body_bytes: usize,
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    let v = match s.trim().strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => s.trim().parse::<f64>(),
    }
    .map_err(|_| format!("{s:?} is not a ratio; write it like 0.01 or 1%"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{s:?} must be between 0 and 1 (0 % and 100 %)"))
    }
}

struct State {
    started: Instant,
    counter: AtomicU64,
    delay: Duration,
    slow: Option<(Duration, f64)>,
    /// (stall, every)
    stall: Option<(Duration, Duration)>,
    error_ratio: f64,
    error_status: StatusCode,
    body: Bytes,
    timer: PreciseTimer,
}

/// Whether request `n` is among the `ratio` picked ones (exactly ratio·n of the first n).
fn picked(n: u64, ratio: f64) -> bool {
    ratio > 0.0 && ((n + 1) as f64 * ratio).floor() > (n as f64 * ratio).floor()
}

impl State {
    /// A precise sleep: on Linux a timerfd of its own (the kernel wakes this runtime's epoll
    /// directly), elsewhere the timer thread.
    async fn sleep_until(&self, at: Instant) {
        #[cfg(target_os = "linux")]
        if let Ok(mut t) = TimerFd::new()
            && t.sleep_until(at).await.is_ok()
        {
            return;
        }
        self.timer.sleep_until(at).await;
    }

    /// The end of the stall `t` falls in, if it falls in one.
    fn stall_end(&self, t: Instant) -> Option<Instant> {
        let (stall, every) = self.stall?;
        let e = t.saturating_duration_since(self.started).as_secs_f64();
        let every_s = every.as_secs_f64();
        let period = (e / every_s).floor();
        let phase = e - period * every_s;
        (phase >= every_s - stall.as_secs_f64())
            .then(|| self.started + Duration::from_secs_f64((period + 1.0) * every_s))
    }

    async fn handle(
        &self,
        req: http::Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        let arrival = Instant::now();
        if req.uri().path() == "/health" {
            return Ok(Response::new(Full::new(Bytes::from_static(b"ok"))));
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        // Read (and drop) the request body so the connection stays usable.
        let mut body = req.into_body();
        while let Some(Ok(_)) = body.frame().await {}
        let delay = match self.slow {
            Some((d, r)) if picked(n, r) => d,
            _ => self.delay,
        };
        let start = self.stall_end(arrival).unwrap_or(arrival);
        let mut ready = start + delay;
        if let Some(end) = self.stall_end(ready) {
            ready = end;
        }
        if ready > Instant::now() {
            self.sleep_until(ready).await;
        }
        let mut res = Response::new(Full::new(self.body.clone()));
        if picked(n, self.error_ratio) {
            *res.status_mut() = self.error_status;
        }
        Ok(res)
    }
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    if let (Some(stall), Some(every)) = (args.stall, args.stall_every)
        && (every.is_zero() || stall >= every)
    {
        eprintln!("error: --stall must be shorter than --stall-every");
        return ExitCode::from(2);
    }
    let Ok(error_status) = StatusCode::from_u16(args.error_status) else {
        eprintln!("error: --error-status must be an HTTP status (100-599)");
        return ExitCode::from(2);
    };
    if let Some(d) = args.startup_delay {
        std::thread::sleep(d);
    }
    let timer = match PreciseTimer::start() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot start the timer thread: {e}");
            return ExitCode::from(1);
        }
    };
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = args.threads.filter(|n| *n > 0) {
        rt.worker_threads(n);
    }
    let rt = match rt.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let state = State {
        started: Instant::now(),
        counter: AtomicU64::new(0),
        delay: args.delay,
        slow: args.slow_delay.zip(args.slow_ratio),
        stall: args.stall.zip(args.stall_every),
        error_ratio: args.error_ratio,
        error_status,
        body: Bytes::from(vec![b'x'; args.body_bytes]),
        timer,
    };
    match rt.block_on(serve(args.listen, Arc::new(state))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}: {e}", args.listen);
            ExitCode::from(1)
        }
    }
}

async fn serve(addr: SocketAddr, state: Arc<State>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{}", listener.local_addr()?)?;
        out.flush()?;
    }
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of file descriptors and the like: wait, the load will ease.
                    eprintln!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let (state, builder) = (Arc::clone(&state), Arc::clone(&builder));
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let state = Arc::clone(&state);
                async move { state.handle(req).await }
            });
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}
