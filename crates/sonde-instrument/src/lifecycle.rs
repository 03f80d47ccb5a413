//! Process lifecycle: when the process started (from the OS), how long it took to become ready,
//! and how long until it served its first request.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sonde_core::{Gauge, Registry, Unit};

use crate::Error;

/// When the process started, as the OS records it (Linux: the process's age from its
/// `/proc/self/stat` start time and `/proc/uptime`, 10 ms resolution); elsewhere, the first
/// time sonde was asked.
pub fn process_start_time() -> SystemTime {
    static START: OnceLock<SystemTime> = OnceLock::new();
    *START.get_or_init(|| os_start_time(std::process::id()).unwrap_or_else(SystemTime::now))
}

/// The start time of process `pid` from `/proc` (Linux only): now minus its age, the time
/// since boot (`/proc/uptime`) less its start in clock ticks after boot. Not the boot time
/// (`btime` in `/proc/stat`) plus the start: `btime` is in whole seconds, which made every
/// duration since start up to a second too long.
pub fn os_start_time(pid: u32) -> Option<SystemTime> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    // `starttime` is field 22 overall, the 20th after the command name.
    let start_ticks: u64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    // USER_HZ is 100 on every Linux ABI in use.
    let age = uptime - start_ticks as f64 / 100.0;
    if !age.is_finite() {
        return None;
    }
    SystemTime::now().checked_sub(Duration::from_secs_f64(age.max(0.0)))
}

fn since_start() -> f64 {
    SystemTime::now()
        .duration_since(process_start_time())
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Startup metrics: `process.startup.duration` (start to ready) and
/// `process.first_request.duration` (start to the first request), both in seconds, set once.
///
/// ```
/// let registry = sonde_core::Registry::new();
/// let lifecycle = sonde_instrument::Lifecycle::install(&registry)?;
/// // ... load configuration, open pools, warm caches ...
/// lifecycle.mark_ready();
/// lifecycle.mark_first_request(); // middleware calls this on every request; only the first counts
/// # Ok::<(), sonde_instrument::Error>(())
/// ```
pub struct Lifecycle {
    startup: Gauge<f64>,
    first_request: Gauge<f64>,
    start_time: Gauge<f64>,
    ready: AtomicBool,
    served: AtomicBool,
}

impl Lifecycle {
    /// Registers the families and records the process start time
    /// (`process.start_time`, UNIX seconds).
    pub fn install(registry: &Registry) -> Result<Lifecycle, Error> {
        let gauge = |name: &'static str, description: &'static str, unit: Unit| {
            registry
                .gauge_f64(name)
                .description(description)
                .unit(unit)
                .build()
                .map(|f| f.handle())
        };
        let start_time = gauge(
            "process.start_time",
            "When the process started, UNIX seconds.",
            Unit::Seconds,
        )?;
        start_time.set(
            process_start_time()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
        );
        Ok(Lifecycle {
            startup: gauge(
                "process.startup.duration",
                "Time from process start until the service declared itself ready.",
                Unit::Seconds,
            )?,
            first_request: gauge(
                "process.first_request.duration",
                "Time from process start until the first request arrived.",
                Unit::Seconds,
            )?,
            start_time,
            ready: AtomicBool::new(false),
            served: AtomicBool::new(false),
        })
    }

    /// Records the startup duration; only the first call counts. Returns the seconds recorded.
    pub fn mark_ready(&self) -> Option<f64> {
        if self.ready.swap(true, Ordering::Relaxed) {
            return None;
        }
        let secs = since_start();
        self.startup.set(secs);
        Some(secs)
    }

    /// Records the time to the first request; cheap to call on every request (one relaxed load
    /// after the first).
    #[inline]
    pub fn mark_first_request(&self) {
        if !self.served.load(Ordering::Relaxed) && !self.served.swap(true, Ordering::Relaxed) {
            self.first_request.set(since_start());
        }
    }

    /// The process start time gauge (for tests and exporters that want it).
    pub fn start_time(&self) -> &Gauge<f64> {
        &self.start_time
    }
}
