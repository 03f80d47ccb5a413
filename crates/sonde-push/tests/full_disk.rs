//! A durable queue on a disk that fills up (a 64 KiB tmpfs, mounted by the test: it runs as
//! root, like the cgroup tests): writes that fail drop their batch, counted with reason
//! `disk_error`; nothing panics, the exporter keeps running, and once the receiver is back
//! the queued batches are delivered and new ones are written again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sonde_core::Registry;
use sonde_push::{DiskQueueConfig, Outcome, PushConfig, Sink, Source};

struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

struct Big(u64);
impl Source for Big {
    type Batch = Vec<u64>;
    fn collect(&mut self) -> Vec<Vec<u64>> {
        self.0 += 1;
        vec![vec![self.0; 512]]
    }
}

#[path = "support/gated.rs"]
mod gated;
use gated::Gated;

fn value(reg: &Registry, name: &str, labels: &[(&str, &str)]) -> f64 {
    reg.snapshot()
        .point(name, labels)
        .and_then(|p| p.number())
        .map_or(0.0, |n| n.as_f64())
}

#[test]
fn a_full_disk_drops_and_counts_and_the_queue_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "sonde-full-disk"])
        .arg(dir.path())
        .status()
        .expect("mount(8) must exist");
    assert!(
        status.success(),
        "mounting a 64 KiB tmpfs failed: this test needs root (CI runs as root)"
    );
    let _mounted = Mounted(dir.path().to_path_buf());

    let mut config = PushConfig::new("fulldisk");
    config.interval = Duration::from_millis(10);
    config.initial_backoff = Duration::from_millis(5);
    config.max_backoff = Duration::from_millis(20);
    let mut queue = DiskQueueConfig::new(dir.path().join("queue"));
    // Larger than the disk: the disk fills first.
    queue.max_bytes = 1024 * 1024;
    queue.segment_bytes = 16 * 1024;
    config.durable = Some(queue);
    let reg = Registry::new();
    let down = Arc::new(AtomicBool::new(true));
    let got = Arc::new(Mutex::new(Vec::new()));
    let (d, g) = (down.clone(), got.clone());
    let exporter = sonde_push::start(&reg, config, Big(0), move || async move {
        Ok::<_, ()>(Gated { down: d, got: g })
    })
    .unwrap();

    let labels = [("exporter", "fulldisk"), ("reason", "disk_error")];
    let started = Instant::now();
    while value(&reg, sonde_push::telemetry::DROPPED_POINTS, &labels) < 2048.0 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no write failed on a full disk"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let dropped = value(&reg, sonde_push::telemetry::DROPPED_POINTS, &labels);
    assert_eq!(dropped % 512.0, 0.0, "whole batches: {dropped}");

    // The receiver is back: what the disk held goes out, in order, and writes work again.
    down.store(false, Ordering::SeqCst);
    let started = Instant::now();
    loop {
        // A flush fails while a write fails; once there is room again one succeeds.
        if exporter.flush(Duration::from_secs(5)).is_ok() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never recovered"
        );
    }
    let got = got.lock().unwrap().clone();
    // The sink keeps every number: each batch arrived whole, 512 copies of its number.
    assert_eq!(got.len() % 512, 0, "whole batches: {} numbers", got.len());
    assert!(
        got.chunks(512).all(|b| b.iter().all(|n| *n == b[0])),
        "whole batches"
    );
    let got: Vec<u64> = got.chunks(512).map(|b| b[0]).collect();
    assert!(got.len() >= 10, "{got:?}");
    assert!(got.windows(2).all(|w| w[0] < w[1]), "in order: {got:?}");
    exporter.shutdown(Duration::from_secs(5)).unwrap();
}
