//! Exemplars: one per bucket, latest wins, never torn under concurrent writes.

use sonde_core::exemplar::set_trace_context_provider;
use sonde_core::{Registry, TraceContext, testing};

fn ctx(n: u64) -> TraceContext {
    // The span id is derived from the trace id, so a torn read would show a mismatch.
    let mut trace_id = [0u8; 16];
    trace_id[..8].copy_from_slice(&n.to_be_bytes());
    trace_id[8..].copy_from_slice(&(!n).to_be_bytes());
    TraceContext {
        trace_id,
        span_id: n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes(),
    }
}

fn consistent(e: &sonde_core::Exemplar) -> u64 {
    let n = u64::from_be_bytes(e.trace_id[..8].try_into().unwrap());
    assert_eq!(
        u64::from_be_bytes(e.trace_id[8..].try_into().unwrap()),
        !n,
        "torn trace id"
    );
    assert_eq!(
        e.span_id,
        n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes(),
        "torn span id"
    );
    n
}

#[test]
fn latest_exemplar_per_bucket_and_no_tearing() {
    let reg = Registry::new();
    let h = sonde_core::testing::exemplar_histogram(&reg, "latency", &[0.1, 1.0]);
    h.observe_with_exemplar(0.05, &ctx(1));
    h.observe_with_exemplar(0.07, &ctx(2));
    h.observe_with_exemplar(0.5, &ctx(3));
    let p = h.read();
    let ex = p.exemplars();
    assert_eq!(ex.len(), 3);
    let first = ex[0].unwrap();
    assert_eq!((first.value, consistent(&first)), (0.07, 2), "latest wins");
    assert_eq!(consistent(&ex[1].unwrap()), 3);
    assert!(ex[2].is_none(), "nothing above 1 s yet");
    assert_eq!(first.trace_id_hex().len(), 32);
    assert_eq!(first.span_id_hex().len(), 16);

    // Writers race on one bucket while a reader checks every read is whole.
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let (h, stop) = (&h, &stop);
            s.spawn(move || {
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 2_000_000 {
                    h.observe_with_exemplar(0.01, &ctx(t * 1_000_000_000 + i));
                    i += 1;
                }
            });
        }
        for _ in 0..20_000 {
            if let Some(e) = h.read().exemplars()[0] {
                consistent(&e);
                assert_eq!(e.value, 0.01_f64.max(e.value).min(0.07));
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
}

#[test]
fn families_without_exemplars_keep_none_and_the_provider_feeds_plain_observe() {
    let reg = Registry::new();
    let plain = testing::handle(reg.histogram("plain"));
    plain.observe_with_exemplar(1.0, &ctx(9));
    assert!(plain.read().exemplars().is_empty());

    fn provider() -> Option<TraceContext> {
        Some(ctx(42))
    }
    assert!(set_trace_context_provider(provider));
    assert!(!set_trace_context_provider(provider), "installed once");
    let h = testing::handle(reg.histogram("with").exemplars(true));
    h.observe(3.0);
    let e = h
        .read()
        .exemplars()
        .iter()
        .flatten()
        .copied()
        .next()
        .unwrap();
    assert_eq!((e.value, consistent(&e)), (3.0, 42));
}
