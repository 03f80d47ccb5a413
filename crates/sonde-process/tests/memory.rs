//! Resident and virtual memory of the current process, against `/proc/self/status`.

#![cfg(target_os = "linux")] // compared with /proc
#![allow(clippy::unwrap_used)] // tests panic on failure by design

mod common;

use common::{assert_kind_unit, install, status_field, value};
use sonde_core::{Kind, Unit};
use sonde_process::{MEMORY_USAGE, MEMORY_VIRTUAL, ProcessCollector};

const MIB: f64 = 1024.0 * 1024.0;

fn within(a: f64, b: f64, abs: f64, rel: f64) -> bool {
    (a - b).abs() <= abs.max(rel * b.abs())
}

#[test]
fn resident_memory_follows_allocations() {
    let (registry, _process) = install(ProcessCollector::current());

    let s0 = registry.snapshot();
    assert_kind_unit(&s0, MEMORY_USAGE, Kind::Gauge, Unit::Bytes);
    let rss0 = value(&s0, MEMORY_USAGE, &[]);
    let vm0 = value(&s0, MEMORY_VIRTUAL, &[]);
    assert!(rss0 > MIB && vm0 >= rss0, "rss {rss0} virtual {vm0}");

    // 64 MiB, every page written (vec![1; n] fills it; the loop makes sure).
    let mut block = vec![1u8; 64 << 20];
    for i in (0..block.len()).step_by(4096) {
        block[i] = i as u8;
    }
    std::hint::black_box(&mut block);

    let s1 = registry.snapshot();
    let vmrss = status_field("VmRSS") as f64 * 1024.0;
    let vmsize = status_field("VmSize") as f64 * 1024.0;
    let rss1 = value(&s1, MEMORY_USAGE, &[]);
    let vm1 = value(&s1, MEMORY_VIRTUAL, &[]);
    assert!(
        rss1 - rss0 >= 56.0 * MIB,
        "resident memory grew by {:.1} MiB after touching 64 MiB",
        (rss1 - rss0) / MIB
    );
    assert!(
        within(rss1, vmrss, 4.0 * MIB, 0.05),
        "process.memory.usage {rss1} vs VmRSS {vmrss}"
    );
    assert!(vm1 - vm0 >= 60.0 * MIB, "virtual {vm0} -> {vm1}");
    assert!(
        within(vm1, vmsize, 4.0 * MIB, 0.05),
        "process.memory.virtual {vm1} vs VmSize {vmsize}"
    );

    // 64 MiB is above glibc's mmap threshold: freeing it returns it to the OS.
    drop(block);
    let rss2 = value(&registry.snapshot(), MEMORY_USAGE, &[]);
    assert!(
        rss1 - rss2 >= 56.0 * MIB,
        "resident memory {rss1} -> {rss2} after freeing 64 MiB"
    );
}
