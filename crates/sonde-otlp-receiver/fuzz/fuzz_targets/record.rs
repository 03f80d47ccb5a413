//! `cargo +nightly fuzz run record` (from crates/sonde-otlp-receiver): OTLP/protobuf metrics
//! request bodies decoded and recorded the way the receiver does (with or without a small
//! memory budget), with series expiry run on a simulated clock, then the registry is encoded
//! as the agent serves it. None of it may panic, and what sonde serves must read back without
//! a skipped line.
//!
//! An input is a header byte (bit 0: a 64 KiB memory budget), then requests separated by
//! `served::STEP`, each a mode byte and a body: bit 0 moves the clock on half a TTL and runs
//! expiry, bit 1 checks what is served after it. Every input starts from an empty registry, so
//! a crash replays from its input alone.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use sonde_otlp_receiver::fuzzing::Recording;

#[path = "../../../sonde-scrape/fuzz/shared/served.rs"]
mod served;

fuzz_target!(|data: &[u8]| {
    let Some((registry, steps)) = served::input(data) else {
        return;
    };
    let recording = Recording::new(registry.clone(), Some(Duration::from_secs(60)));
    let mut now = Instant::now();
    for (mode, body) in steps {
        let _ = recording.record(body);
        if mode & 1 != 0 {
            now += Duration::from_secs(31);
            recording.maintain(now);
        }
        if mode & 2 != 0 {
            served::assert_served_reads_back(&registry);
        }
    }
    served::assert_served_reads_back(&registry);
});
