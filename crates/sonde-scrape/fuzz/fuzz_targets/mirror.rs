//! `cargo +nightly fuzz run mirror` (from crates/sonde-scrape): a scraped body, text or
//! protobuf, is parsed and mirrored into a registry the way a scrape does, by one of two
//! targets sharing the registry, then the registry is encoded as the agent serves it. None of
//! it may panic, and what sonde serves must parse back without a skipped line.
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use sonde_core::Registry;
use sonde_scrape::fuzzing::Mirrors;

#[path = "../shared/served.rs"]
mod served;

struct State {
    registry: Registry,
    targets: [Mirrors; 2],
}

thread_local! {
    // Kept across inputs, so series and families left by earlier bodies are replaced, given
    // back and taken again by the other target.
    static STATE: RefCell<State> = RefCell::new({
        let registry = Registry::new();
        State {
            targets: [Mirrors::new(&registry), Mirrors::new(&registry)],
            registry,
        }
    });
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    STATE.with(|state| {
        let mut state = state.borrow_mut();
        let protobuf = mode & 1 != 0;
        let limit = [5, 100, 1_000, 50_000][usize::from(mode >> 1 & 3)];
        state.targets[usize::from(mode >> 3 & 1)].scrape(body, protobuf, limit);
        if mode & 0x10 != 0 {
            served::assert_served_reads_back(&state.registry, true);
        }
    });
});
