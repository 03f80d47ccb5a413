//! Load a test keeps up in the background: a thread taking one step at a time until stopped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// A thread that runs `step(n)` for n = 1, 2, … with a pause after each step, until stopped;
/// stopped (and joined) on drop.
pub struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    /// Starts the thread: `step(1)`, `pause`, `step(2)`, `pause`, …
    pub fn start(pause: Duration, mut step: impl FnMut(u64) + Send + 'static) -> Ticker {
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut n = 0u64;
            while !s.load(Ordering::Relaxed) {
                n += 1;
                step(n);
                std::thread::sleep(pause);
            }
        });
        Ticker {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the thread and waits for it to end; `Err` with the panic of a step that failed
    /// (an assertion in it, say). `Ok` when already stopped.
    pub fn stop(&mut self) -> std::thread::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().map_or(Ok(()), JoinHandle::join)
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
