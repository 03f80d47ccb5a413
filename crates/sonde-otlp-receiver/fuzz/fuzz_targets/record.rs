//! `cargo +nightly fuzz run record` (from crates/sonde-otlp-receiver): an OTLP/protobuf
//! metrics request body is decoded and recorded the way the receiver does, with series expiry
//! run now and then, and the registry is encoded as the agent serves it. None of it may panic,
//! and what sonde serves must parse back without a skipped line.
#![no_main]

use std::cell::RefCell;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use sonde_core::Registry;
use sonde_otlp_receiver::fuzzing::Recording;

#[path = "../../../sonde-scrape/fuzz/shared/served.rs"]
mod served;

struct State {
    registry: Registry,
    recording: Recording,
    /// The clock expiry is told, moved on by inputs.
    now: Instant,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new({
        let registry = Registry::new();
        State {
            recording: Recording::new(registry.clone(), Some(Duration::from_secs(60))),
            registry,
            now: Instant::now(),
        }
    });
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    STATE.with(|state| {
        let mut state = state.borrow_mut();
        let _ = state.recording.record(body);
        if mode & 1 != 0 {
            // Half a TTL on: enough for one expiry step.
            state.now += Duration::from_secs(31);
            let now = state.now;
            state.recording.maintain(now);
        }
        if mode & 2 != 0 {
            served::assert_served_reads_back(&state.registry, true);
        }
    });
});
