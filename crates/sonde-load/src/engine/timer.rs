//! Waits more precise than tokio's timer, whose 1 ms wheel fires 1–2 ms late: an open-model
//! latency is measured from the scheduled start, so a late send would show up as server latency
//! (and a test server's 20 ms delay as 21 ms).
//!
//! [`wait_until`] blocks an OS thread: it sleeps to just before the deadline and spins the rest.
//! [`PreciseTimer`] gives async tasks the same precision from one timer thread.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// How long before a deadline an OS sleep hands over to spinning (Linux wakes a sleeping
/// thread 50–100 µs late through its default timer slack).
const SPIN: Duration = Duration::from_micros(120);

/// Of `left` to wait, what to spend blocked in the OS (sleeping or parked); `None` when the
/// rest is to be spun, with `spin`, in the last [`SPIN`].
fn blocking_part(left: Duration, spin: bool) -> Option<Duration> {
    if !spin {
        Some(left)
    } else if left > SPIN {
        Some(left - SPIN)
    } else {
        None
    }
}

/// Blocks the calling thread until `deadline`. With `spin`, the last ~120 µs are spent
/// spinning, for a wake-up within a few microseconds; without, the OS sleep decides (about
/// 60–100 µs late).
pub fn wait_until(deadline: Instant, spin: bool) {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        match blocking_part(deadline - now, spin) {
            Some(d) => std::thread::sleep(d),
            None => std::hint::spin_loop(),
        }
    }
}

#[derive(Debug)]
struct Entry {
    at: Instant,
    seq: u64,
    waker: Waker,
    done: Arc<AtomicBool>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at && self.seq == other.seq
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    // Reversed: the heap's top is the earliest deadline.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

#[derive(Debug)]
struct Shared {
    heap: Mutex<BinaryHeap<Entry>>,
    seq: AtomicU64,
    stop: AtomicBool,
    thread: OnceLock<std::thread::Thread>,
}

impl Shared {
    fn unpark(&self) {
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }
}

/// One timer thread serving precise sleeps to async tasks (for the test server's delays).
///
/// It spins the last ~120 µs before a deadline while it wakes fewer than 2,000 times a second;
/// above that it only sleeps (about 60–100 µs late), so a busy timer does not burn a core.
#[derive(Debug)]
pub struct PreciseTimer {
    shared: Arc<Shared>,
}

impl PreciseTimer {
    /// Starts the timer thread.
    pub fn start() -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            heap: Mutex::new(BinaryHeap::new()),
            seq: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            thread: OnceLock::new(),
        });
        let s = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name("precise-timer".to_owned())
            .spawn(move || timer_thread(&s))?;
        let _ = shared.thread.set(handle.thread().clone());
        Ok(PreciseTimer { shared })
    }

    /// A future that completes at `at` (within microseconds while the timer is not busy).
    pub fn sleep_until(&self, at: Instant) -> PreciseSleep {
        PreciseSleep {
            at,
            shared: Arc::clone(&self.shared),
            done: None,
        }
    }
}

impl Drop for PreciseTimer {
    fn drop(&mut self) {
        self.shared.stop.store(true, AtomicOrdering::Release);
        self.shared.unpark();
    }
}

/// Created by [`PreciseTimer::sleep_until`].
#[derive(Debug)]
pub struct PreciseSleep {
    at: Instant,
    shared: Arc<Shared>,
    done: Option<Arc<AtomicBool>>,
}

impl Future for PreciseSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this
            .done
            .as_ref()
            .is_some_and(|d| d.load(AtomicOrdering::Acquire))
            || Instant::now() >= this.at
        {
            return Poll::Ready(());
        }
        // (Re-)register: a spurious poll may come with another waker; a stale entry only
        // causes one extra wake.
        let done = Arc::new(AtomicBool::new(false));
        let earliest = {
            let mut heap = match this.shared.heap.lock() {
                Ok(h) => h,
                Err(poisoned) => poisoned.into_inner(),
            };
            let earliest = heap.peek().is_none_or(|e| this.at < e.at);
            heap.push(Entry {
                at: this.at,
                seq: this.shared.seq.fetch_add(1, AtomicOrdering::Relaxed),
                waker: cx.waker().clone(),
                done: Arc::clone(&done),
            });
            earliest
        };
        this.done = Some(done);
        if earliest {
            this.shared.unpark();
        }
        Poll::Pending
    }
}

fn timer_thread(shared: &Shared) {
    let mut due = Vec::new();
    let mut wakes_in_period = 0u32;
    let mut period_start = Instant::now();
    let mut spin = true;
    while !shared.stop.load(AtomicOrdering::Acquire) {
        let now = Instant::now();
        let next = {
            let mut heap = match shared.heap.lock() {
                Ok(h) => h,
                Err(poisoned) => poisoned.into_inner(),
            };
            while heap.peek().is_some_and(|e| e.at <= now) {
                if let Some(e) = heap.pop() {
                    due.push(e);
                }
            }
            heap.peek().map(|e| e.at)
        };
        if !due.is_empty() {
            wakes_in_period += 1;
            for e in due.drain(..) {
                e.done.store(true, AtomicOrdering::Release);
                e.waker.wake();
            }
        }
        if now.duration_since(period_start) >= Duration::from_millis(100) {
            spin = wakes_in_period < 200;
            wakes_in_period = 0;
            period_start = now;
        }
        match next {
            None => std::thread::park(),
            Some(at) => match blocking_part(at.saturating_duration_since(Instant::now()), spin) {
                Some(d) => std::thread::park_timeout(d),
                None => std::hint::spin_loop(),
            },
        }
    }
}

/// An async sleep on a Linux timerfd: the kernel's high-resolution timer wakes the runtime's
/// own epoll, so the task resumes on the worker that was waiting, with no thread hand-off and
/// no 1 ms rounding (tokio's timer wheel). One timer, reused.
#[cfg(target_os = "linux")]
#[derive(Debug)]
pub struct TimerFd {
    fd: tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
}

#[cfg(target_os = "linux")]
impl TimerFd {
    /// A new timer, registered with the current tokio runtime (call inside one).
    pub fn new() -> std::io::Result<TimerFd> {
        use rustix::time::{TimerfdClockId, TimerfdFlags, timerfd_create};
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        // Deprecated for fds that could be closed while registered; this one is owned by the
        // AsyncFd and lives exactly as long as its registration (the replacement is `unsafe`).
        #[allow(deprecated)]
        let fd = tokio::io::unix::AsyncFd::with_interest(fd, tokio::io::Interest::READABLE)?;
        Ok(TimerFd { fd })
    }

    /// Completes at `at` (at once if it has passed).
    pub async fn sleep_until(&mut self, at: Instant) -> std::io::Result<()> {
        use rustix::time::{Itimerspec, TimerfdTimerFlags, Timespec, timerfd_settime};
        let left = at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let value = Timespec {
            tv_sec: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: left.subsec_nanos().into(),
        };
        timerfd_settime(
            self.fd.get_ref(),
            TimerfdTimerFlags::empty(),
            &Itimerspec {
                it_interval: zero,
                it_value: value,
            },
        )?;
        loop {
            let mut guard = self.fd.readable().await?;
            let mut buf = [0u8; 8];
            match rustix::io::read(guard.get_inner(), &mut buf) {
                Ok(_) => return Ok(()),
                Err(rustix::io::Errno::AGAIN) => guard.clear_ready(),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_until_is_not_early_and_rarely_late() {
        let mut late = Vec::new();
        for i in 0..20u64 {
            let at = Instant::now() + Duration::from_micros(2_000 + i * 37);
            wait_until(at, true);
            let now = Instant::now();
            assert!(now >= at);
            late.push(now - at);
        }
        late.sort();
        // The median wake-up is under tokio's 1 ms granularity (loose for loaded machines).
        assert!(late[10] < Duration::from_millis(1), "{late:?}");
    }

    #[test]
    fn precise_sleep_wakes_every_task_never_early() {
        let timer = PreciseTimer::start().expect("timer thread");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let lates = rt.block_on(async {
            let mut set = tokio::task::JoinSet::new();
            for i in 0..10u64 {
                let at = Instant::now() + Duration::from_millis(5 + i);
                let s = timer.sleep_until(at);
                set.spawn(async move {
                    s.await;
                    let now = Instant::now();
                    assert!(now >= at, "woke early");
                    now - at
                });
            }
            let mut v = Vec::new();
            while let Some(r) = set.join_next().await {
                v.push(r.expect("task"));
            }
            v
        });
        assert_eq!(lates.len(), 10);
        let mut sorted = lates.clone();
        sorted.sort();
        // Loose: a loaded 2-core machine delays any wake-up; this catches a timer that does
        // not fire until something else wakes it.
        assert!(sorted[5] < Duration::from_millis(20), "{sorted:?}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn timerfd_sleeps_are_not_early_and_rarely_late() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let late = rt.block_on(async {
            let mut t = TimerFd::new().expect("timerfd");
            let mut late = Vec::new();
            for i in 0..20u64 {
                let at = Instant::now() + Duration::from_micros(2_000 + i * 37);
                t.sleep_until(at).await.expect("sleep");
                let now = Instant::now();
                assert!(now >= at);
                late.push(now - at);
            }
            late
        });
        let mut late = late;
        late.sort();
        assert!(late[10] < Duration::from_millis(1), "{late:?}");
    }
}
