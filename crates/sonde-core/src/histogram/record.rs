//! Recording: the atomic storage of one series and everything that writes to it.

use std::sync::Arc;
use std::sync::atomic::{
    AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};

use super::layout::{HistogramLayout, NO_SPLIT};
use crate::exemplar::{Slot, TraceContext};
use crate::number::add_f64;

// Here, not in layout.rs, because it needs the core's size and the layout must not depend on
// the core.
impl HistogramLayout {
    /// Bytes one series of this layout holds (its atomic storage; labels come on top).
    pub fn series_bytes(&self) -> usize {
        std::mem::size_of::<HistogramCore>() + 8 * self.block * self.stripes
    }
}

/// The most observations [`Histogram::observe_n`](super::Histogram::observe_n) lets one grid
/// cell of a series (per stripe) hold: 2^48 ≈ 2.8 × 10^14. Past it, the rest of a batch is
/// dropped from every figure (count, buckets, sum), so a huge `n` never wraps a counter and the
/// total of all cells stays below 2^63. Plain [`Histogram::observe`](super::Histogram::observe)
/// adds one at a time and has no such limit (2^64 observations are out of reach).
pub const MAX_CELL_COUNT: u64 = 1 << 48;

/// The atomic storage of one histogram series: one block of counters per stripe (one stripe
/// unless the family is striped), each block holding the cells, one split counter per explicit
/// boundary and the sum, padded to whole cache lines.
pub struct HistogramCore {
    pub(super) layout: Arc<HistogramLayout>,
    pub(super) counters: Box<[AtomicU64]>,
    /// Written only by new extremes, so it stays shared in every core's cache.
    pub(super) min: AtomicU64,
    pub(super) max: AtomicU64,
    /// One bit per group of cells that has ever been written (in any stripe), so reads skip
    /// empty groups.
    pub(super) occupied: AtomicU64,
    /// One exemplar per explicit bucket (with `+Inf`), for families that keep them.
    pub(super) exemplars: Option<Box<[Slot]>>,
}

impl HistogramCore {
    pub(crate) fn new(layout: &Arc<HistogramLayout>) -> Self {
        let n = layout.block * layout.stripes;
        HistogramCore {
            layout: layout.clone(),
            counters: (0..n).map(|_| AtomicU64::new(0)).collect(),
            min: AtomicU64::new(f64::INFINITY.to_bits()),
            max: AtomicU64::new(f64::NEG_INFINITY.to_bits()),
            occupied: AtomicU64::new(0),
            exemplars: layout.exemplars.then(|| {
                (0..=layout.explicit.len())
                    .map(|_| Slot::default())
                    .collect()
            }),
        }
    }

    #[inline]
    pub(super) fn observe_with(&self, v: f64, ctx: Option<&TraceContext>) {
        self.observe(v);
        self.exemplar(v, ctx);
    }

    /// [`observe_n`](Self::observe_n) and, when `n > 0`, one exemplar for the batch.
    #[inline]
    pub(super) fn observe_n_with(&self, v: f64, n: u64, ctx: Option<&TraceContext>) {
        self.observe_n(v, n);
        if n > 0 {
            self.exemplar(v, ctx);
        }
    }

    /// Keeps `v` as its bucket's exemplar when the family keeps them and a trace is current.
    #[inline]
    fn exemplar(&self, v: f64, ctx: Option<&TraceContext>) {
        if let Some(slots) = &self.exemplars
            && !v.is_nan()
        {
            let current;
            let ctx = match ctx {
                Some(c) => c,
                None => match crate::exemplar::current_trace_context() {
                    Some(c) => {
                        current = c;
                        &current
                    }
                    None => return,
                },
            };
            let bucket = self.layout.explicit.partition_point(|b| *b < v);
            if let Some(slot) = slots.get(bucket) {
                slot.write(v, ctx, crate::series::unix_nanos());
            }
        }
    }

    #[inline(always)]
    pub(super) fn observe(&self, v: f64) {
        // One test for NaN and the infinities, as the NaN test alone was: the common case
        // then runs exactly the instructions it ran before infinities left the sum.
        if !v.is_finite() {
            return self.observe_non_finite(v);
        }
        self.record_one::<true>(v);
    }

    /// NaN is ignored; an infinity is counted (cell, bucket, count) but kept out of the sum,
    /// which would stay infinite, or NaN, for the life of the series.
    #[cold]
    fn observe_non_finite(&self, v: f64) {
        if !v.is_nan() {
            self.record_one::<false>(v);
        }
    }

    #[inline(always)]
    fn record_one<const SUM: bool>(&self, v: f64) {
        let l = &*self.layout;
        let cell = l.index(v);
        let bit = 1u64 << (cell >> l.occupancy_shift);
        if self.occupied.load(Relaxed) & bit == 0 {
            self.occupied.fetch_or(bit, Relaxed);
        }
        let base = if l.stripes > 1 {
            (crate::number::thread_stripe() & (l.stripes - 1)) * l.block
        } else {
            0
        };
        self.counters[base + cell].fetch_add(1, Relaxed);
        let first = l.split_first[cell];
        if first != NO_SPLIT {
            self.split(base, cell, first as usize, v, 1);
        }
        if SUM {
            add_f64(&self.counters[base + l.sum_at], v);
        }
        if v < f64::from_bits(self.min.load(Relaxed)) {
            update_extreme(&self.min, v, |new, cur| new < cur);
        }
        if v > f64::from_bits(self.max.load(Relaxed)) {
            update_extreme(&self.max, v, |new, cur| new > cur);
        }
    }

    /// `n` observations of `v` with the atomic operations of one: see
    /// [`Histogram::observe_n`](super::Histogram::observe_n).
    #[inline(always)]
    pub(super) fn observe_n(&self, v: f64, n: u64) {
        self.record_n::<true>(v, n);
    }

    /// Adds `delta` to the sum (stripe 0), unless it is not finite.
    pub(super) fn add_to_sum(&self, delta: f64) {
        if delta.is_finite() {
            add_f64(&self.counters[self.layout.sum_at], delta);
        }
    }

    /// `n` observations of `v`; with `SUM` false the sum is left to the caller.
    #[inline(always)]
    pub(super) fn record_n<const SUM: bool>(&self, v: f64, n: u64) {
        if v.is_nan() || n == 0 {
            return;
        }
        let l = &*self.layout;
        let cell = l.index(v);
        let bit = 1u64 << (cell >> l.occupancy_shift);
        if self.occupied.load(Relaxed) & bit == 0 {
            self.occupied.fetch_or(bit, Relaxed);
        }
        let base = if l.stripes > 1 {
            (crate::number::thread_stripe() & (l.stripes - 1)) * l.block
        } else {
            0
        };
        // Clamped first so that one call can never carry a counter past u64::MAX.
        let n = n.min(MAX_CELL_COUNT);
        let counter = &self.counters[base + cell];
        let before = counter.fetch_add(n, Relaxed);
        let n = if before > MAX_CELL_COUNT - n {
            give_back(counter, before, n)
        } else {
            n
        };
        if n == 0 {
            return;
        }
        let first = l.split_first[cell];
        if first != NO_SPLIT {
            self.split(base, cell, first as usize, v, n);
        }
        // One rounding for the whole batch; n <= 2^48 is exact as an f64. Infinities (and a
        // product past f64::MAX) stay out of the sum, as in `observe`.
        let add = v * n as f64;
        if SUM && add.is_finite() {
            add_f64(&self.counters[base + l.sum_at], add);
        }
        if v < f64::from_bits(self.min.load(Relaxed)) {
            update_extreme(&self.min, v, |new, cur| new < cur);
        }
        if v > f64::from_bits(self.max.load(Relaxed)) {
            update_extreme(&self.max, v, |new, cur| new > cur);
        }
    }

    #[cold]
    fn split(&self, base: usize, cell: usize, first: usize, v: f64, n: u64) {
        let l = &*self.layout;
        let splits = base + l.cells();
        for j in first..l.explicit.len() {
            if l.explicit_cell[j] as usize != cell {
                break;
            }
            if v <= l.explicit[j] {
                // Release pairs with the Acquire in `read`: a reader that sees this split
                // also sees the cell increment above, so cell >= splits in every read.
                self.counters[splits + j].fetch_add(n, Release);
                break;
            }
        }
    }

    /// Adds everything `src` recorded (cells, bucket splits, sum, extremes, exemplars; every
    /// stripe of `src` goes to this core's first block) to this core. Both must share a grid:
    /// same buckets, precision and range (stripes may differ); otherwise nothing is added and
    /// the result is false. Not for the hot path.
    pub(crate) fn absorb(&self, src: &HistogramCore) -> bool {
        let (l, sl) = (&*self.layout, &*src.layout);
        if l.cells() != sl.cells() || l.min_exp != sl.min_exp || l.explicit != sl.explicit {
            return false;
        }
        let cells = l.cells();
        self.occupied.fetch_or(src.occupied.load(Acquire), Relaxed);
        for base in (0..sl.stripes).map(|s| s * sl.block) {
            for cell in 0..cells {
                let c = src.counters[base + cell].load(Relaxed);
                if c != 0 {
                    self.counters[cell].fetch_add(c, Relaxed);
                }
            }
            for j in 0..l.explicit.len() {
                let c = src.counters[base + cells + j].load(Acquire);
                if c != 0 {
                    // Release after the cells, as in `split`: readers never see splits ahead.
                    self.counters[cells + j].fetch_add(c, Release);
                }
            }
            add_f64(
                &self.counters[l.sum_at],
                f64::from_bits(src.counters[base + sl.sum_at].load(Relaxed)),
            );
        }
        update_extreme(&self.min, f64::from_bits(src.min.load(Relaxed)), |n, c| {
            n < c
        });
        update_extreme(&self.max, f64::from_bits(src.max.load(Relaxed)), |n, c| {
            n > c
        });
        if let (Some(dst), Some(from)) = (&self.exemplars, &src.exemplars) {
            for (d, s) in dst.iter().zip(from.iter()) {
                if let Some(e) = s.read() {
                    let ctx = TraceContext {
                        trace_id: e.trace_id,
                        span_id: e.span_id,
                    };
                    d.write(e.value, &ctx, e.unix_nanos);
                }
            }
        }
        true
    }
}

/// Takes back the part of a batch of `n` that carried a cell counter (which held `before`)
/// past [`MAX_CELL_COUNT`], and returns the part kept. Never lowers the counter below
/// `before`, so counts recorded by `observe` past the limit stay.
#[cold]
fn give_back(counter: &AtomicU64, before: u64, n: u64) -> u64 {
    let kept = MAX_CELL_COUNT.saturating_sub(before).min(n);
    counter.fetch_sub(n - kept, Relaxed);
    kept
}

#[inline]
fn update_extreme(a: &AtomicU64, v: f64, better: impl Fn(f64, f64) -> bool) {
    let mut cur = a.load(Relaxed);
    while better(v, f64::from_bits(cur)) {
        match a.compare_exchange_weak(cur, v.to_bits(), Relaxed, Relaxed) {
            Ok(_) => return,
            Err(actual) => cur = actual,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::layout::{Precision, test_layout as layout};
    use super::*;

    #[test]
    fn explicit_buckets_are_exact() {
        let l = layout(Precision::Standard);
        let core = HistogramCore::new(&l);
        let values = [
            0.0, 0.0005, 0.00050001, 0.001, 0.0009999, 0.1, 0.1000001, 59.0, 60.0, 61.0, 5000.0,
            -1.0,
        ];
        for v in values {
            core.observe(v);
        }
        let p = core.read();
        let cum = p.cumulative_buckets();
        for (le, n) in cum {
            let expect = values.iter().filter(|v| **v <= le).count() as u64;
            assert_eq!(n, expect, "le={le}");
        }
        assert_eq!(p.count(), values.len() as u64);
        assert_eq!(p.min(), Some(-1.0));
        assert_eq!(p.max(), Some(5000.0));
    }
}
