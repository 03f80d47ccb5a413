//! `cargo +nightly fuzz run mirror` (from crates/sonde-scrape): scraped bodies, text or
//! protobuf, parsed and mirrored into a registry the way scrapes do, by two targets sharing the
//! registry (with or without a small memory budget), then the registry is encoded as the agent
//! serves it. None of it may panic, and what sonde serves must read back without a skipped
//! line.
//!
//! An input is a header byte (bit 0: a 64 KiB memory budget), then scrapes separated by
//! [`served::STEP`], each a mode byte and a body: bit 0 protobuf, bits 1-2 the sample limit,
//! bit 3 which target, bit 4 check what is served after it. Every input starts from an empty
//! registry, so a crash replays from its input alone.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sonde_scrape::fuzzing::Mirrors;

#[path = "../shared/served.rs"]
mod served;

fuzz_target!(|data: &[u8]| {
    let Some((registry, steps)) = served::input(data) else {
        return;
    };
    let mut targets = [Mirrors::new(&registry, 0), Mirrors::new(&registry, 1)];
    for (mode, body) in steps {
        let limit = [5, 100, 1_000, 50_000][usize::from(mode >> 1 & 3)];
        targets[usize::from(mode >> 3 & 1)].scrape(body, mode & 1 != 0, limit);
        if mode & 0x10 != 0 {
            served::assert_served_reads_back(&registry);
        }
    }
    served::assert_served_reads_back(&registry);
});
