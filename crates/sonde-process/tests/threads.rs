//! Thread count of the current process, against `/proc/self/status`.

#![cfg(target_os = "linux")] // compared with /proc
#![allow(clippy::unwrap_used)] // tests panic on failure by design

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};

use common::{current_value_is, install_current_gauge, status_field, value};
use sonde_core::Unit;
use sonde_process::THREAD_COUNT;

#[test]
fn thread_count_follows_spawned_threads() {
    let (registry, _process, before) =
        install_current_gauge(THREAD_COUNT, Unit::Count("{thread}".into()), || {
            status_field("Threads") as f64
        });

    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(Barrier::new(5));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (stop, started) = (stop.clone(), started.clone());
            std::thread::spawn(move || {
                started.wait();
                while !stop.load(Ordering::Acquire) {
                    std::thread::park();
                }
            })
        })
        .collect();
    started.wait();

    let during = current_value_is(&registry, THREAD_COUNT, || status_field("Threads") as f64);
    assert_eq!(during, before + 4.0);

    stop.store(true, Ordering::Release);
    for t in threads {
        t.thread().unpark();
        t.join().unwrap();
    }
    // `join` returns once a thread has run to its end, a moment before the kernel takes it
    // off the thread group, so the count may lag briefly: wait for it, bounded.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut after = value(&registry.snapshot(), THREAD_COUNT, &[]);
    while after != before && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
        after = value(&registry.snapshot(), THREAD_COUNT, &[]);
    }
    assert_eq!(after, before);
}
