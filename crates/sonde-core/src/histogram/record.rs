//! Recording: the atomic storage of one series and everything that writes to it.

use std::sync::atomic::{
    AtomicU32, AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
    fence,
};
use std::sync::{Arc, OnceLock};

use super::layout::{HistogramLayout, NO_SPLIT};
use crate::exemplar::{Slot, TraceContext};
use crate::number::add_f64;

// Here, not in layout.rs, because it needs the core's size and the layout must not depend on
// the core.
impl HistogramLayout {
    /// Bytes one series of this layout holds (its atomic storage; labels come on top).
    pub fn series_bytes(&self) -> usize {
        std::mem::size_of::<HistogramCore>()
            + (4 * self.cell_block + 8 * self.head_block) * self.stripes
    }
}

/// The most observations [`Histogram::observe_n`](super::Histogram::observe_n) lets one grid
/// cell of a series (per stripe) hold: 2^48 ≈ 2.8 × 10^14. Past it, the rest of a batch is
/// dropped from every figure (count, buckets, sum), so a huge `n` never wraps a counter and the
/// total of all cells stays below 2^63. Plain [`Histogram::observe`](super::Histogram::observe)
/// adds one at a time and has no such limit (2^64 observations are out of reach).
pub const MAX_CELL_COUNT: u64 = 1 << 48;

/// A grid cell counts in 32 bits; each time one reaches this, it is moved to the cell's 64-bit
/// carry (a transfer). Low in unit tests, so they exercise transfers constantly.
#[cfg(not(test))]
pub(super) const HALF: u32 = 1 << 31;
#[cfg(test)]
pub(super) const HALF: u32 = 1 << 8;
/// Past this, increments check for a transfer (the margin covers increments racing past it).
const NEAR_HALF: u32 = HALF - HALF / 4;
/// Batches of at least this many observations go straight to the carry.
const LARGE: u64 = if (HALF as u64 / 2) < (1 << 20) {
    HALF as u64 / 2
} else {
    1 << 20
};

/// The atomic storage of one histogram series, per stripe (one stripe unless the family is
/// striped): the grid cells as 32-bit counters (half the memory of 64-bit ones), and the split
/// counters (one per explicit boundary) and the sum as 64-bit ones, each padded to whole cache
/// lines. A cell that reaches [`HALF`] moves that much to its 64-bit carry, allocated for the
/// series the first time it happens (after 2^31 observations in one cell); readers see a cell
/// as cell + carry, and read again when a transfer ran meanwhile.
// In this order: what every observation touches first, then the rarely used carry.
#[repr(C)]
pub struct HistogramCore {
    pub(super) layout: Arc<HistogramLayout>,
    pub(super) cells: Box<[AtomicU32]>,
    /// The split counters then the sum, per stripe.
    pub(super) counters: Box<[AtomicU64]>,
    /// One bit per group of cells that has ever been written (in any stripe), so reads skip
    /// empty groups.
    pub(super) occupied: AtomicU64,
    /// Written only by new extremes, so it stays shared in every core's cache.
    pub(super) min: AtomicU64,
    pub(super) max: AtomicU64,
    /// One exemplar per explicit bucket (with `+Inf`), for families that keep them.
    pub(super) exemplars: Option<Box<[Slot]>>,
    pub(super) carry: OnceLock<Box<[AtomicU64]>>,
    /// Transfers begun and finished, for readers to see whether one overlapped their read.
    pub(super) transfers_started: AtomicU64,
    pub(super) transfers_done: AtomicU64,
}

impl HistogramCore {
    pub(crate) fn new(layout: &Arc<HistogramLayout>) -> Self {
        HistogramCore {
            layout: layout.clone(),
            cells: (0..layout.cell_block * layout.stripes)
                .map(|_| AtomicU32::new(0))
                .collect(),
            counters: (0..layout.head_block * layout.stripes)
                .map(|_| AtomicU64::new(0))
                .collect(),
            carry: OnceLock::new(),
            transfers_started: AtomicU64::new(0),
            transfers_done: AtomicU64::new(0),
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

    /// The stripe of the calling thread: the offsets of its cells and of its head (splits,
    /// sum).
    #[inline(always)]
    fn stripe(&self) -> (usize, usize) {
        let l = &*self.layout;
        if l.stripes > 1 {
            let s = crate::number::thread_stripe() & (l.stripes - 1);
            (s * l.cell_block, s * l.head_block)
        } else {
            (0, 0)
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
        let (cells, head) = self.stripe();
        let at = cells + cell;
        let c = &self.cells[at];
        // A plain increment (no returned value to wait for) until the cell nears HALF; from
        // there the slow path increments and moves HALF to the carry. An increment racing past
        // the threshold only leaves the cell a little above HALF until the next observation.
        if c.load(Relaxed) < NEAR_HALF {
            c.fetch_add(1, Relaxed);
        } else {
            self.add_count(at, 1);
        }
        let first = l.split_first[cell];
        if first != NO_SPLIT {
            self.split(head, cell, first as usize, v, 1);
        }
        if SUM {
            add_f64(&self.counters[head + l.sum_at], v);
        }
        if v < f64::from_bits(self.min.load(Relaxed)) {
            update_extreme(&self.min, v, |new, cur| new < cur);
        }
        if v > f64::from_bits(self.max.load(Relaxed)) {
            update_extreme(&self.max, v, |new, cur| new > cur);
        }
    }

    /// The carry array, allocated the first time a cell needs it.
    #[cold]
    fn carry(&self) -> &[AtomicU64] {
        self.carry
            .get_or_init(|| (0..self.cells.len()).map(|_| AtomicU64::new(0)).collect())
    }

    /// Moves [`HALF`] from cell `at` into its carry, if the cell still holds that much
    /// (several threads may try; each move is whole). Announced to readers by the transfer
    /// counters: a reader that sees any part of it also sees it begun, and reads again.
    #[cold]
    #[inline(never)]
    fn move_to_carry(&self, at: usize) {
        let carry = self.carry();
        self.transfers_started.fetch_add(1, Relaxed);
        // Pairs with the fence in `read`: its check of `transfers_started` then sees this one.
        fence(Release);
        let moved = self.cells[at]
            .fetch_update(Relaxed, Relaxed, |v| (v >= HALF).then(|| v - HALF))
            .is_ok();
        if moved {
            carry[at].fetch_add(u64::from(HALF), Relaxed);
        }
        self.transfers_done.fetch_add(1, Release);
    }

    /// Adds `n` new observations to cell `at` through its carry, at most [`MAX_CELL_COUNT`] in
    /// the cell's whole count; returns how many were kept. One atomic add, like a cell's: no
    /// transfer bracket. (Racing a transfer of the same cell, the limit may be passed by up to
    /// [`HALF`]; the count itself stays exact.)
    #[cold]
    #[inline(never)]
    fn add_to_carry_clamped(&self, at: usize, n: u64) -> u64 {
        let carry = &self.carry()[at];
        let before = carry.fetch_add(n, Relaxed) + u64::from(self.cells[at].load(Relaxed));
        if before > MAX_CELL_COUNT - n {
            give_back(carry, before, n)
        } else {
            n
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

    /// Adds `n` to cell `at`, with no limit (for `absorb`): into the cell while it stays well
    /// below [`HALF`], else into the carry (which a batch of that size allocates only when the
    /// cell really needs more than 32 bits).
    fn add_count(&self, at: usize, n: u64) {
        let cell = &self.cells[at];
        if n < LARGE {
            let old = cell.fetch_add(n as u32, Relaxed);
            if u64::from(old) + n >= u64::from(HALF) {
                self.move_to_carry(at);
            }
        } else if cell
            .fetch_update(Relaxed, Relaxed, |v| {
                (u64::from(v) + n < u64::from(NEAR_HALF)).then(|| v + n as u32)
            })
            .is_err()
        {
            self.carry()[at].fetch_add(n, Relaxed);
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
        let (cells, head) = self.stripe();
        let at = cells + cell;
        // Clamped first so that one call can never carry a counter past u64::MAX.
        let n = n.min(MAX_CELL_COUNT);
        // Without a carry a cell holds less than 2^32, far below the limit: no check needed.
        // With one, batches go through the carry, which keeps the limit.
        let n = if self.carry.get().is_some() {
            self.add_to_carry_clamped(at, n)
        } else if n < LARGE {
            self.add_count(at, n);
            n
        } else if self.cells[at]
            .fetch_update(Relaxed, Relaxed, |v| {
                (u64::from(v) + n < u64::from(NEAR_HALF)).then(|| v + n as u32)
            })
            .is_ok()
        {
            n
        } else {
            self.add_to_carry_clamped(at, n)
        };
        if n == 0 {
            return;
        }
        let first = l.split_first[cell];
        if first != NO_SPLIT {
            self.split(head, cell, first as usize, v, n);
        }
        // One rounding for the whole batch; n <= 2^48 is exact as an f64. Infinities (and a
        // product past f64::MAX) stay out of the sum, as in `observe`.
        let add = v * n as f64;
        if SUM && add.is_finite() {
            add_f64(&self.counters[head + l.sum_at], add);
        }
        if v < f64::from_bits(self.min.load(Relaxed)) {
            update_extreme(&self.min, v, |new, cur| new < cur);
        }
        if v > f64::from_bits(self.max.load(Relaxed)) {
            update_extreme(&self.max, v, |new, cur| new > cur);
        }
    }

    #[cold]
    fn split(&self, head: usize, cell: usize, first: usize, v: f64, n: u64) {
        let l = &*self.layout;
        for j in first..l.explicit.len() {
            if l.explicit_cell[j] as usize != cell {
                break;
            }
            if v <= l.explicit[j] {
                // Release pairs with the Acquire in `read`: a reader that sees this split
                // also sees the cell increment above, so cell >= splits in every read.
                self.counters[head + j].fetch_add(n, Release);
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
        // One consistent read of `src` (every stripe, cells with their carries, splits never
        // ahead of cells), added to the first stripe here: the cells, then the splits. The
        // occupied groups are taken after it, so none of the cells read is hidden.
        let parts = src.read().to_parts();
        self.occupied.fetch_or(src.occupied.load(Acquire), Relaxed);
        for (cell, c) in parts.cells {
            self.add_count(cell, c);
        }
        for (j, c) in parts.splits.into_iter().enumerate() {
            if c != 0 {
                // Release after the cells, as in `split`: readers never see splits ahead.
                self.counters[j].fetch_add(c, Release);
            }
        }
        add_f64(&self.counters[l.sum_at], parts.sum);
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
    // `before` is the cell's whole count (carry and cell) before the batch.
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

    /// Cells count in 32 bits and move 2^31 (256 in tests) into a 64-bit carry: every figure
    /// stays exact across many transfers, with batches of every size.
    #[test]
    fn cells_carry_over_exactly() {
        let l = layout(Precision::Standard);
        let core = HistogramCore::new(&l);
        for _ in 0..10_000 {
            core.observe(0.1);
        }
        assert!(core.carry.get().is_some(), "transfers happened");
        let mut expect = 10_000u64;
        for n in [
            1,
            100,
            LARGE - 1,
            LARGE,
            LARGE + 1,
            1000,
            5 * u64::from(HALF),
        ] {
            core.observe_n(0.1, n);
            expect += n;
        }
        core.observe_n(0.0005, 3 * u64::from(HALF) + 7);
        let p = core.read();
        assert_eq!(p.count(), expect + 3 * u64::from(HALF) + 7);
        let cum = p.cumulative_buckets();
        // 0.0005 is a boundary (le 0.0005); 0.1 is one too.
        assert_eq!(cum[0], (0.0005, 3 * u64::from(HALF) + 7));
        let le_01 = cum.iter().find(|(le, _)| *le == 0.1).unwrap().1;
        assert_eq!(le_01, p.count());
        assert!(
            (p.sum() - (expect as f64 * 0.1 + (3 * u64::from(HALF) + 7) as f64 * 0.0005)).abs()
                < 1e-6
        );
        // Merged into another core, with its carries.
        let other = HistogramCore::new(&l);
        other.observe(0.1);
        assert!(other.absorb(&core));
        assert_eq!(other.read().count(), p.count() + 1);
    }

    /// A batch the 32-bit cell can hold (a scraped bucket's whole count, say) allocates no
    /// carry; only a cell that outgrows 32 bits does.
    #[test]
    fn a_large_batch_that_fits_allocates_no_carry() {
        let core = HistogramCore::new(&layout(Precision::Standard));
        core.observe_n(0.1, LARGE + 10);
        assert!(core.carry.get().is_none());
        assert_eq!(core.read().count(), LARGE + 10);
        core.observe_n(0.1, 5 * u64::from(HALF));
        assert!(core.carry.get().is_some());
        assert_eq!(core.read().count(), LARGE + 10 + 5 * u64::from(HALF));
    }

    /// Two writers crossing the transfer point again and again while a reader reads: every
    /// read is consistent (count = sum of cells, buckets within it, never going back), and the
    /// end is exact.
    #[test]
    fn transfers_under_concurrent_reads_stay_consistent() {
        for stripes in [1, 2] {
            let mut l = HistogramLayout::new(
                "t",
                &crate::Unit::Seconds,
                super::super::layout::HistogramConfig::for_unit(&crate::Unit::Seconds),
            )
            .unwrap();
            l.stripes = stripes;
            let core = Arc::new(HistogramCore::new(&Arc::new(l)));
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let reader = {
                let (core, stop) = (core.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut last = 0;
                    let mut reads = 0;
                    while !stop.load(Relaxed) || reads == 0 {
                        let p = core.read();
                        let cells: u64 = p.cells().map(|(_, c)| c).sum();
                        assert_eq!(cells, p.count());
                        assert!(p.count() >= last, "{} after {last}", p.count());
                        for (_, c) in p.cumulative_buckets() {
                            assert!(c <= p.count());
                        }
                        last = p.count();
                        reads += 1;
                    }
                    reads
                })
            };
            let writers: Vec<_> = (0..2)
                .map(|t| {
                    let core = core.clone();
                    std::thread::spawn(move || {
                        for i in 0..50_000u64 {
                            match (i + t) % 3 {
                                0 => core.observe(0.1),
                                1 => core.observe(0.003),
                                _ => core.observe_n(2.0, 3),
                            }
                        }
                    })
                })
                .collect();
            for w in writers {
                w.join().unwrap();
            }
            stop.store(true, Relaxed);
            assert!(reader.join().unwrap() > 0);
            let p = core.read();
            // Per writer: 16,667 or 16,666 of each kind; the batches count 3 each.
            let (a, b, c) = (33_334u64, 33_333u64, 33_333u64);
            assert_eq!(p.count(), a + b + 3 * c, "stripes {stripes}");
        }
    }
}
