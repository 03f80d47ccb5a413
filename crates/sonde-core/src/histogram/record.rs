//! Recording: the atomic storage of one series and everything that writes to it.

use std::sync::Arc;
use std::sync::atomic::{
    AtomicU16, AtomicU32, AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
    fence,
};

use once_cell::race::OnceBox;

use super::layout::{BLOCK, HistogramLayout, NO_SPLIT};
use crate::exemplar::{Slot, TraceContext};
use crate::number::add_f64;

// Here, not in layout.rs, because it needs the core's size and the layout must not depend on
// the core.
impl HistogramLayout {
    /// Bytes one series of this layout holds at most: its atomic storage with every block of
    /// grid cells allocated (what a memory budget is charged; labels come on top). A series
    /// starts without blocks and allocates one (96 bytes) when it first records a value in its
    /// range (two octaves at the default precision), so a typical latency series holds well
    /// under this. A cell past 2^15 observations adds its block's carry (192 bytes, and the first
    /// time the series' table of carries, about 160), which is not counted here.
    pub fn series_bytes(&self) -> usize {
        self.series_base_bytes() + self.stripes * self.blocks * size_of::<Block>()
    }

    /// Bytes of a series before any block of cells.
    pub(crate) fn series_base_bytes(&self) -> usize {
        size_of::<HistogramCore>()
            + self.stripes * (self.blocks * size_of::<OnceBox<Block>>() + 8 * self.head_block)
    }
}

/// The most observations [`Histogram::observe_n`](super::Histogram::observe_n) lets one grid
/// cell of a series (per stripe) hold: 2^46 ≈ 7 × 10^13. Past it, the rest of a batch is
/// dropped from every figure (count, buckets, sum), so a huge `n` never wraps a counter.
/// Plain [`Histogram::observe`](super::Histogram::observe) adds one at a time and is held
/// only by the cell's own capacity, 2^47 (at a billion observations a second into one cell,
/// more than a day and a half).
pub const MAX_CELL_COUNT: u64 = if cfg!(test) {
    // Within the carry's capacity at the unit tests' small HALF.
    1 << 38
} else {
    1 << 46
};

/// A grid cell counts in 16 bits; each time one reaches [`HALF`], that much moves to the cell's
/// carry, which counts such units in 32 bits. Low in unit tests, so they cross it constantly.
const SHIFT: u32 = if cfg!(test) { 8 } else { 15 };
pub(super) const HALF: u16 = 1 << SHIFT;

/// The cells of one block.
pub(super) type Block = [AtomicU16; BLOCK];
/// A block's carries, in units of [`HALF`].
type CarryBlock = [AtomicU32; BLOCK];

/// What a series holds once it has moved a cell's count to a carry.
pub(super) struct Carry {
    /// Per block (indexed as the series' blocks), allocated at its own first transfer.
    blocks: Box<[OnceBox<CarryBlock>]>,
    /// Transfers begun and finished, for readers to see whether one overlapped their read.
    pub(super) started: AtomicU64,
    pub(super) done: AtomicU64,
}

/// Where a cell lives in the blocks: fine cell `k` at `k - 1`, the high cell at `n_fine`, the
/// low cell at `n_fine + 1` (both in the last block, which a series that stays inside the grid
/// never allocates).
#[inline(always)]
fn slot_of(l: &HistogramLayout, cell: usize) -> usize {
    cell.wrapping_sub(1).min(l.n_fine + 1)
}

/// The atomic storage of one histogram series, per stripe (one stripe unless the family is
/// striped): the grid cells as 16-bit counters in blocks of `BLOCK`, each block allocated
/// the first time one of its cells is written (memory follows the range the data spans, not
/// the grid's 30 octaves), and the split counters (one per explicit boundary) and the sum as
/// 64-bit counters. A cell that reaches `HALF` moves that much to its carry (32-bit units of
/// `HALF`, allocated per block the first time one of its cells needs it); readers see a cell
/// as cell + carry, and read again when a transfer ran meanwhile.
// In this order: what every observation touches first, then the rarely used carry.
#[repr(C)]
pub struct HistogramCore {
    pub(super) layout: Arc<HistogramLayout>,
    /// `layout.blocks` per stripe.
    pub(super) blocks: Box<[OnceBox<Block>]>,
    /// Per stripe (`layout.head_block`): the split counters, then the sum.
    pub(super) counters: Box<[AtomicU64]>,
    /// Written only by new extremes, so it stays shared in every core's cache.
    pub(super) min: AtomicU64,
    pub(super) max: AtomicU64,
    /// One exemplar per explicit bucket (with `+Inf`), for families that keep them.
    /// (Boxed twice so that a series without exemplars pays one word.)
    #[allow(clippy::redundant_allocation)]
    pub(super) exemplars: Option<Box<Box<[Slot]>>>,
    /// Allocated at the series' first transfer.
    pub(super) carry: OnceBox<Carry>,
}

impl HistogramCore {
    pub(crate) fn new(layout: &Arc<HistogramLayout>) -> Self {
        HistogramCore {
            layout: layout.clone(),
            blocks: (0..layout.blocks * layout.stripes)
                .map(|_| OnceBox::new())
                .collect(),
            counters: (0..layout.head_block * layout.stripes)
                .map(|_| AtomicU64::new(0))
                .collect(),
            carry: OnceBox::new(),
            min: AtomicU64::new(f64::INFINITY.to_bits()),
            max: AtomicU64::new(f64::NEG_INFINITY.to_bits()),
            exemplars: layout.exemplars.then(|| {
                Box::new(
                    (0..=layout.explicit.len())
                        .map(|_| Slot::default())
                        .collect(),
                )
            }),
        }
    }

    /// Bytes this series holds now (without its labels and exemplars): what
    /// [`series_bytes`](HistogramLayout::series_bytes) counts for the blocks allocated so far,
    /// plus any carries. (For the tests: a running series is measured through its point,
    /// [`HistogramPoint::heap_bytes`](super::HistogramPoint::heap_bytes).)
    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        let blocks = self.blocks.iter().filter(|b| b.get().is_some()).count();
        let carries = self.carry.get().map_or(0, |c| {
            size_of::<Carry>()
                + c.blocks.len() * size_of::<OnceBox<CarryBlock>>()
                + c.blocks.iter().filter(|b| b.get().is_some()).count() * size_of::<CarryBlock>()
        });
        self.layout.series_base_bytes() + blocks * size_of::<Block>() + carries
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

    /// The stripe of the calling thread: its first block and the offset of its head.
    #[inline(always)]
    fn stripe(&self) -> (usize, usize) {
        let l = &*self.layout;
        if l.stripes > 1 {
            let s = crate::number::thread_stripe() & (l.stripes - 1);
            (s * l.blocks, s * l.head_block)
        } else {
            (0, 0)
        }
    }

    /// Block `b`, allocated if this is its first write.
    #[inline(always)]
    fn block(&self, b: usize) -> &Block {
        match self.blocks[b].get() {
            Some(block) => block,
            None => self.new_block(b),
        }
    }

    #[cold]
    #[inline(never)]
    fn new_block(&self, b: usize) -> &Block {
        // Racing first writers each build one; one is kept, the others are freed.
        self.blocks[b].get_or_init(|| Box::new(std::array::from_fn(|_| AtomicU16::new(0))))
    }

    #[inline(always)]
    fn record_one<const SUM: bool>(&self, v: f64) {
        let l = &*self.layout;
        let cell = l.index(v);
        let (blocks, head) = self.stripe();
        let g = slot_of(l, cell);
        let (b, slot) = (blocks + g / BLOCK, g % BLOCK);
        // The increment that takes the cell to HALF moves HALF to the carry; increments racing
        // past it each try a move too, so the cell stays near HALF at most.
        if self.block(b)[slot].fetch_add(1, Relaxed) >= HALF - 1 {
            self.move_to_carry(b, slot);
        }
        let first = l.split_first[cell];
        if first != NO_SPLIT {
            self.split(head, cell, first as usize, v, 1);
        }
        if SUM {
            add_f64(&self.counters[head + l.sum_at], v);
        }
        self.note_extremes(v);
    }

    /// Lowers the minimum or raises the maximum to `v` where it lies past them; a plain load
    /// first, since most observations change neither.
    #[inline(always)]
    fn note_extremes(&self, v: f64) {
        if v < f64::from_bits(self.min.load(Relaxed)) {
            update_extreme(&self.min, v, |new, cur| new < cur);
        }
        if v > f64::from_bits(self.max.load(Relaxed)) {
            update_extreme(&self.max, v, |new, cur| new > cur);
        }
    }

    /// The series' carries, allocated at its first transfer.
    #[cold]
    fn carry(&self) -> &Carry {
        self.carry.get_or_init(|| {
            Box::new(Carry {
                blocks: (0..self.blocks.len()).map(|_| OnceBox::new()).collect(),
                started: AtomicU64::new(0),
                done: AtomicU64::new(0),
            })
        })
    }

    /// The carries of block `b`, allocated the first time it needs them.
    #[cold]
    fn carry_block(&self, b: usize) -> &CarryBlock {
        self.carry().blocks[b].get_or_init(|| Box::new(std::array::from_fn(|_| AtomicU32::new(0))))
    }

    /// Whether block `b` has carries (so its cells may hold far more than 16 bits).
    #[inline]
    fn has_carry(&self, b: usize) -> bool {
        self.carry
            .get()
            .is_some_and(|c| c.blocks[b].get().is_some())
    }

    /// Observations held for cell `slot` of block `b` in its carry.
    #[inline]
    fn carried(carry: Option<&Carry>, b: usize, slot: usize) -> u64 {
        carry
            .and_then(|c| c.blocks[b].get())
            .map_or(0, |c| u64::from(c[slot].load(Relaxed)) << SHIFT)
    }

    /// Moves [`HALF`] from cell `slot` of block `b` into its carry, if the cell still holds
    /// that much (several threads may try; each move is whole). Announced to readers by the
    /// transfer counters: a reader that sees any part of it also sees it begun, and reads
    /// again.
    #[cold]
    #[inline(never)]
    fn move_to_carry(&self, b: usize, slot: usize) {
        let carry = &self.carry_block(b)[slot];
        let transfers = self.carry();
        transfers.started.fetch_add(1, Relaxed);
        // Pairs with the fence in `read`: its check of `started` then sees this one.
        fence(Release);
        let moved = self.block(b)[slot]
            .fetch_update(Relaxed, Relaxed, |v| (v >= HALF).then(|| v - HALF))
            .is_ok();
        if moved {
            add_units(carry, 1);
        }
        transfers.done.fetch_add(1, Release);
    }

    /// Adds `n` new observations to cell `slot` of block `b`, with no limit: the whole units
    /// of [`HALF`] to its carry (one atomic add, no transfer bracket: nothing moves), the rest
    /// to the cell. When the rest would take the cell to `HALF` or past it, the whole `HALF`s
    /// go to the carry in the same step, so a batch never leaves a cell at `HALF` or above
    /// (single increments leave it there at most by the number of threads incrementing at
    /// that moment, each of which then moves `HALF`): a 16-bit cell cannot wrap.
    fn add_fine(&self, b: usize, slot: usize, n: u64) {
        // The block first, even when all of `n` goes to the carry: readers find a block's
        // carries through the block.
        let cell = &self.block(b)[slot];
        let units = n >> SHIFT;
        if units > 0 {
            add_units(
                &self.carry_block(b)[slot],
                u32::try_from(units).unwrap_or(u32::MAX),
            );
        }
        let rest = u32::from((n & (u64::from(HALF) - 1)) as u16);
        if rest == 0 {
            return;
        }
        let mut v = cell.load(Relaxed);
        loop {
            let total = u32::from(v) + rest;
            let result = if total < u32::from(HALF) {
                cell.compare_exchange_weak(v, total as u16, Relaxed, Relaxed)
                    .map(drop)
            } else {
                self.add_and_move(b, slot, v, total)
            };
            match result {
                Ok(()) => return,
                Err(now) => v = now,
            }
        }
    }

    /// Sets cell `slot` of block `b` from `from` to what remains of `total` below [`HALF`] and
    /// adds the whole `HALF`s to its carry, as one transfer announced to readers; fails with
    /// the cell's value when it no longer holds `from`.
    #[cold]
    #[inline(never)]
    fn add_and_move(&self, b: usize, slot: usize, from: u16, total: u32) -> Result<(), u16> {
        let carry = &self.carry_block(b)[slot];
        let transfers = self.carry();
        transfers.started.fetch_add(1, Relaxed);
        // As in `move_to_carry`.
        fence(Release);
        let left = (total & (u32::from(HALF) - 1)) as u16;
        let result = self.block(b)[slot].compare_exchange(from, left, Relaxed, Relaxed);
        if result.is_ok() {
            add_units(carry, total >> SHIFT);
        }
        transfers.done.fetch_add(1, Release);
        result.map(drop)
    }

    /// Adds `n` to any cell (`0..cells`) of the first stripe, with no limit (for `absorb`).
    fn add_count(&self, cell: usize, n: u64) {
        let g = slot_of(&self.layout, cell);
        self.add_fine(g / BLOCK, g % BLOCK, n);
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
        let (blocks, head) = self.stripe();
        // Clamped first so that one call can never carry a counter past its capacity.
        let n = n.min(MAX_CELL_COUNT);
        let g = slot_of(l, cell);
        let (b, slot) = (blocks + g / BLOCK, g % BLOCK);
        // Without a carry a cell holds less than 2^16, so only a huge batch can pass the
        // limit. (Batches racing into one cell near the limit may pass it by one batch; the
        // carry saturates rather than wrap.)
        let n = if n > MAX_CELL_COUNT - (1 << 16) || self.has_carry(b) {
            let held = u64::from(self.block(b)[slot].load(Relaxed))
                + Self::carried(self.carry.get(), b, slot);
            n.min(MAX_CELL_COUNT.saturating_sub(held))
        } else {
            n
        };
        if n == 0 {
            return;
        }
        self.add_fine(b, slot, n);
        let first = l.split_first[cell];
        if first != NO_SPLIT {
            self.split(head, cell, first as usize, v, n);
        }
        // One rounding for the whole batch; n <= 2^46 is exact as an f64. Infinities (and a
        // product past f64::MAX) stay out of the sum, as in `observe`.
        let add = v * n as f64;
        if SUM && add.is_finite() {
            add_f64(&self.counters[head + l.sum_at], add);
        }
        self.note_extremes(v);
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
    /// stripe of `src` goes to this core's first stripe) to this core. Both must share a grid:
    /// same buckets, precision and range (stripes may differ); otherwise nothing is added and
    /// the result is false. Not for the hot path.
    pub(crate) fn absorb(&self, src: &HistogramCore) -> bool {
        let (l, sl) = (&*self.layout, &*src.layout);
        if l.cells() != sl.cells() || l.min_exp != sl.min_exp || l.explicit != sl.explicit {
            return false;
        }
        // One consistent read of `src` (every stripe, cells with their carries, splits never
        // ahead of cells), added to the first stripe here: the cells, then the splits.
        let parts = src.read().to_parts();
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

    /// Reads every cell that may hold something, in ascending order, as `(cell, count)`: the
    /// low cell, the fine cells of the blocks allocated in any stripe, the high cell (every
    /// stripe summed, carries included; no consistency across cells, see `read`).
    pub(super) fn each_cell(&self, mut f: impl FnMut(usize, u64)) {
        let l = &*self.layout;
        let carry = self.carry.get();
        let mut counts = [0u64; BLOCK];
        // The layouts' fine cells fill whole blocks, so the high and low cells are the first
        // two of the last block.
        debug_assert_eq!(l.n_fine % BLOCK, 0);
        let fine_blocks = l.n_fine / BLOCK;
        let edges = self
            .block_counts(fine_blocks, carry, &mut counts)
            .then_some((counts[1], counts[0]));
        if let Some((low, _)) = edges {
            f(0, low);
        }
        for b in 0..fine_blocks {
            if self.block_counts(b, carry, &mut counts) {
                for (i, c) in counts.iter().enumerate() {
                    f(b * BLOCK + i + 1, *c);
                }
            }
        }
        if let Some((_, high)) = edges {
            f(l.n_fine + 1, high);
        }
    }

    /// The counts of block `b` over every stripe, carries included, into `out`; false (and
    /// `out` untouched) when no stripe has the block.
    #[inline]
    fn block_counts(&self, b: usize, carry: Option<&Carry>, out: &mut [u64; BLOCK]) -> bool {
        let l = &*self.layout;
        let mut any = false;
        for s in 0..l.stripes {
            let at = s * l.blocks + b;
            let Some(block) = self.blocks[at].get() else {
                continue;
            };
            if !any {
                *out = [0; BLOCK];
                any = true;
            }
            for (o, c) in out.iter_mut().zip(block.iter()) {
                *o += u64::from(c.load(Relaxed));
            }
            if let Some(units) = carry.and_then(|c| c.blocks[at].get()) {
                for (o, u) in out.iter_mut().zip(units.iter()) {
                    *o += u64::from(u.load(Relaxed)) << SHIFT;
                }
            }
        }
        any
    }

    /// The sum over every stripe.
    pub(super) fn sum(&self) -> f64 {
        let l = &*self.layout;
        (0..l.stripes)
            .map(|s| f64::from_bits(self.counters[s * l.head_block + l.sum_at].load(Relaxed)))
            .sum()
    }

    /// The split counters summed over every stripe (Acquire: see `split`).
    pub(super) fn splits(&self) -> Vec<u64> {
        let l = &*self.layout;
        let mut splits = vec![0u64; l.explicit.len()];
        for s in 0..l.stripes {
            let head = s * l.head_block;
            for (j, split) in splits.iter_mut().enumerate() {
                *split += self.counters[head + j].load(Acquire);
            }
        }
        splits
    }
}

/// Adds `units` to a carry, saturating at `u32::MAX` rather than wrapping (2^47 observations
/// in one cell).
fn add_units(carry: &AtomicU32, units: u32) {
    let _ = carry.fetch_update(Relaxed, Relaxed, |u| Some(u.saturating_add(units)));
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

    /// A batch of whole units of [`HALF`] into a range nothing reached yet goes to the carry
    /// alone, and is still counted: the block its carry hangs from exists.
    #[test]
    fn a_batch_of_whole_carry_units_into_a_new_block_is_counted() {
        let l = layout(Precision::Standard);
        for units in [1, 3] {
            let core = HistogramCore::new(&l);
            let n = units * u64::from(HALF);
            core.observe_n(0.1, n);
            let p = core.read();
            assert_eq!(p.count(), n);
            assert_eq!(p.cells().map(|(_, c)| c).sum::<u64>(), n);
        }
    }

    /// Cells count in 16 bits and move 2^15 (256 in tests) into their carry: every figure
    /// stays exact across many transfers, with batches of every size.
    #[test]
    fn cells_carry_over_exactly() {
        let l = layout(Precision::Standard);
        let core = HistogramCore::new(&l);
        for _ in 0..10_000 {
            core.observe(0.1);
        }
        assert!(core.carry.get().is_some(), "transfers happened");
        let half = u64::from(HALF);
        let mut expect = 10_000u64;
        for n in [
            1,
            100,
            half - 1,
            half,
            half + 1,
            1000,
            5 * half,
            70_000,
            (1 << 20) + 3,
        ] {
            core.observe_n(0.1, n);
            expect += n;
        }
        core.observe_n(0.0005, 3 * half + 7);
        let p = core.read();
        assert_eq!(p.count(), expect + 3 * half + 7);
        let cum = p.cumulative_buckets();
        // 0.0005 is a boundary (le 0.0005); 0.1 is one too.
        assert_eq!(cum[0], (0.0005, 3 * half + 7));
        let le_01 = cum.iter().find(|(le, _)| *le == 0.1).unwrap().1;
        assert_eq!(le_01, p.count());
        assert!((p.sum() - (expect as f64 * 0.1 + (3 * half + 7) as f64 * 0.0005)).abs() < 1e-6);
        // Merged into another core, with its carries.
        let other = HistogramCore::new(&l);
        other.observe(0.1);
        assert!(other.absorb(&core));
        assert_eq!(other.read().count(), p.count() + 1);
        assert_eq!(other.read().cumulative_buckets()[0], cum[0]);
    }

    /// A series allocates the blocks its values fall in, and carries only for a block with a
    /// cell past 2^15 (256 in tests); the low and high cells share one block.
    #[test]
    fn memory_follows_the_data() {
        let l = layout(Precision::Standard);
        let core = HistogramCore::new(&l);
        let blocks =
            |core: &HistogramCore| core.blocks.iter().filter(|b| b.get().is_some()).count();
        assert_eq!(core.heap_bytes(), l.series_base_bytes());
        core.observe(-1.0);
        core.observe(1e9);
        core.observe_n(0.0, 100);
        assert_eq!(blocks(&core), 1, "the low and high cells share a block");
        // 1 ms .. 1 s: ten octaves, five blocks of two octaves.
        let mut x = 0.001;
        let mut n = 0;
        while x <= 1.0 {
            core.observe(x);
            x *= 1.01;
            n += 1;
        }
        assert_eq!(blocks(&core), 6);
        assert!(core.carry.get().is_none());
        assert_eq!(
            core.heap_bytes(),
            l.series_base_bytes() + 6 * size_of::<Block>()
        );
        assert!(core.heap_bytes() < l.series_bytes());
        let p = core.read();
        assert_eq!(p.count(), 102 + n);
        let cells: Vec<_> = p.cells().collect();
        assert_eq!(cells.first(), Some(&(0, 101)));
        assert_eq!(cells.last(), Some(&(l.cells() - 1, 1)));
        assert_eq!(cells.iter().map(|c| c.1).sum::<u64>(), p.count());

        let hot = HistogramCore::new(&l);
        hot.observe_n(0.1, u64::from(HALF) - 1);
        assert!(
            hot.carry.get().is_none(),
            "a cell below HALF needs no carry"
        );
        hot.observe(0.1);
        let carry = hot.carry.get().unwrap();
        assert_eq!(carry.blocks.iter().filter(|b| b.get().is_some()).count(), 1);
        assert_eq!(hot.read().count(), u64::from(HALF));
        assert_eq!(
            hot.heap_bytes(),
            l.series_base_bytes()
                + size_of::<Block>()
                + size_of::<Carry>()
                + hot.blocks.len() * size_of::<OnceBox<CarryBlock>>()
                + size_of::<CarryBlock>()
        );
    }

    /// A huge batch fills a cell to the limit and no further; the carry never wraps.
    #[test]
    fn the_limit_holds_in_every_cell_kind() {
        let core = HistogramCore::new(&layout(Precision::Standard));
        for v in [0.0, 0.1, 5000.0] {
            core.observe_n(v, u64::MAX);
            core.observe_n(v, u64::MAX);
            core.observe_n(v, 3);
        }
        let p = core.read();
        assert_eq!(p.count(), 3 * MAX_CELL_COUNT);
        assert_eq!(p.cells().count(), 3);
        assert!(p.cells().all(|(_, c)| c == MAX_CELL_COUNT));
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
            l.set_series_options(stripes, false);
            let core = Arc::new(HistogramCore::new(&Arc::new(l)));
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let reader = {
                let (core, stop) = (core.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut last = 0;
                    let mut reads = 0;
                    while !stop.load(Relaxed) || reads == 0 {
                        // A cell is at HALF or above only while single increments are
                        // moving it (two writers here), never after a batch.
                        for block in core.blocks.iter().filter_map(|b| b.get()) {
                            for c in block {
                                let c = c.load(Relaxed);
                                assert!(c < HALF + 2, "a cell at {c}");
                            }
                        }
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
                                // Into the singles' cell, with a rest near HALF (256).
                                _ => core.observe_n(0.1, 200),
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
            // Per writer: 16,667 or 16,666 of each kind; the batches count 200 each.
            let (a, b, c) = (33_334u64, 33_333u64, 33_333u64);
            assert_eq!(p.count(), a + b + 200 * c, "stripes {stripes}");
        }
    }
}
