//! A delta reader handing its memory to its successor (an exporter restarted on a reload):
//! every increment is reported once, by one of them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use sonde_core::{Number, Registry, Temporality, testing};

fn hits(r: &mut sonde_core::Reader) -> u64 {
    match r.collect().point("hits", &[]).unwrap().number().unwrap() {
        Number::U64(n) => n,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_reader_continuing_from_another_reports_each_change_once() {
    let registry = Registry::new();
    let c = testing::handle(registry.counter("hits"));
    let mut old = registry.reader(Temporality::Delta);
    c.add(5);
    assert_eq!(hits(&mut old), 5);
    c.add(3);
    // Without the handover, the new reader's first point is the lifetime total.
    assert_eq!(hits(&mut registry.reader(Temporality::Delta)), 8);
    let mut new = registry
        .reader(Temporality::Delta)
        .continue_from(&old.delta_state());
    // While both run, in any order, each increment comes out of exactly one of them.
    assert_eq!(hits(&mut new), 3);
    c.add(2);
    assert_eq!(hits(&mut old), 2);
    c.add(4);
    assert_eq!(hits(&mut new), 4);
    assert_eq!(hits(&mut old), 0);
}

#[test]
fn readers_sharing_memory_collecting_at_once_count_every_increment_once() {
    let registry = Registry::new();
    let c = testing::handle(registry.counter("hits"));
    let first = registry.reader(Temporality::Delta);
    let state = first.delta_state();
    let total = AtomicU64::new(0);
    let written = AtomicBool::new(false);
    std::thread::scope(|s| {
        for mut r in [
            first,
            registry.reader(Temporality::Delta).continue_from(&state),
            registry.reader(Temporality::Delta).continue_from(&state),
        ] {
            let (total, written) = (&total, &written);
            s.spawn(move || {
                loop {
                    let done = written.load(Ordering::Acquire);
                    total.fetch_add(hits(&mut r), Ordering::Relaxed);
                    if done {
                        break;
                    }
                }
            });
        }
        for _ in 0..200_000 {
            c.inc();
        }
        written.store(true, Ordering::Release);
    });
    assert_eq!(total.into_inner(), 200_000);
}
