//! Exemplars: the trace an observation came from, kept per histogram bucket (latest wins), so a
//! dashboard can jump from a latency bucket to the trace.

use std::sync::OnceLock;
use std::sync::atomic::{
    AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};

/// The ids of the span an observation was made in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// W3C trace id.
    pub trace_id: [u8; 16],
    /// W3C span id.
    pub span_id: [u8; 8],
}

/// An exemplar read from a histogram bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exemplar {
    /// The observed value.
    pub value: f64,
    /// The trace it belongs to.
    pub trace_id: [u8; 16],
    /// The span it was observed in.
    pub span_id: [u8; 8],
    /// When it was observed, UNIX nanoseconds.
    pub unix_nanos: u64,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Exemplar {
    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// The span id as 16 lowercase hex digits.
    pub fn span_id_hex(&self) -> String {
        hex(&self.span_id)
    }
}

static PROVIDER: OnceLock<fn() -> Option<TraceContext>> = OnceLock::new();

/// Installs the function that tells which sampled span the current thread is in (the tracing
/// integration installs one). Histograms with exemplars enabled call it on each observation.
/// Returns `false` if a provider was already installed.
pub fn set_trace_context_provider(provider: fn() -> Option<TraceContext>) -> bool {
    PROVIDER.set(provider).is_ok()
}

#[inline]
pub(crate) fn current_trace_context() -> Option<TraceContext> {
    PROVIDER.get().and_then(|f| f())
}

/// One bucket's exemplar, written without locks: a sequence number that is odd while a writer
/// is storing makes readers retry, and a writer that finds another one mid-write leaves (the
/// other one's exemplar is just as recent).
#[derive(Default)]
pub(crate) struct Slot {
    seq: AtomicU64,
    value: AtomicU64,
    trace_hi: AtomicU64,
    trace_lo: AtomicU64,
    span: AtomicU64,
    time: AtomicU64,
}

impl Slot {
    pub(crate) fn write(&self, value: f64, ctx: &TraceContext, unix_nanos: u64) {
        let s = self.seq.load(Relaxed);
        if s & 1 == 1
            || self
                .seq
                .compare_exchange(s, s + 1, Acquire, Relaxed)
                .is_err()
        {
            return;
        }
        let (hi, lo) = ctx.trace_id.split_at(8);
        self.value.store(value.to_bits(), Relaxed);
        self.trace_hi.store(
            u64::from_be_bytes(hi.try_into().unwrap_or_default()),
            Relaxed,
        );
        self.trace_lo.store(
            u64::from_be_bytes(lo.try_into().unwrap_or_default()),
            Relaxed,
        );
        self.span.store(u64::from_be_bytes(ctx.span_id), Relaxed);
        self.time.store(unix_nanos, Relaxed);
        self.seq.store(s + 2, Release);
    }

    pub(crate) fn read(&self) -> Option<Exemplar> {
        for _ in 0..64 {
            let s1 = self.seq.load(Acquire);
            if s1 == 0 {
                return None;
            }
            if s1 & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let value = f64::from_bits(self.value.load(Relaxed));
            let hi = self.trace_hi.load(Relaxed);
            let lo = self.trace_lo.load(Relaxed);
            let span = self.span.load(Relaxed);
            let time = self.time.load(Relaxed);
            std::sync::atomic::fence(Acquire);
            if self.seq.load(Relaxed) == s1 {
                let mut trace_id = [0u8; 16];
                trace_id[..8].copy_from_slice(&hi.to_be_bytes());
                trace_id[8..].copy_from_slice(&lo.to_be_bytes());
                return Some(Exemplar {
                    value,
                    trace_id,
                    span_id: span.to_be_bytes(),
                    unix_nanos: time,
                });
            }
        }
        // A writer kept the slot busy for 64 tries: report no exemplar rather than wait.
        None
    }
}
