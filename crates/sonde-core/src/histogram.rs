//! One histogram core, every rendering.
//!
//! Each series counts observations on a fixed base-2 log-linear grid: `per_octave` cells per
//! power of two over 30 octaves (by default 24 cells from 2^-20 s ≈ 0.95 µs to 2^10 s = 1024 s),
//! plus one cell below and one above. From that grid come:
//!
//! - quantiles with a worst-case relative error of `(b - 1) / (b + 1)` where `b = 2^(1/per_octave)`:
//!   1.44 % at the default 24 cells per octave, for any distribution inside the range;
//! - exponential (base-2) buckets at any scale up to 3 (24 = 3 × 2³ cells nest exactly), the
//!   schema of OTLP `ExponentialHistogram` and Prometheus native histograms;
//! - up to N (value, count) pairs for CloudWatch `Values`/`Counts`;
//! - exact counts for the classic explicit buckets (`le` boundaries), kept by one extra
//!   "split" counter per boundary for the grid cell that contains it, so counts at a boundary
//!   are exact whatever the boundary is;
//! - exact sum, count, min and max.
//!
//! `n` equal observations ([`Histogram::observe_n`]: a sampled StatsD timer, a batch) cost the
//! atomic operations of one; bad input (NaN, infinities, a huge `n`) is handled as its docs say.
//!
//! Memory is fixed when the series is created and never depends on collection:
//! `8 × (cells + 2 + boundaries + 1)` bytes rounded up to whole cache lines, plus a few words
//! (6.0 KB at the defaults, 2.2 KB with [`Precision::Compact`]); striped families hold one such
//! block per stripe.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{
    AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};
use std::task::{Context, Poll};
use std::time::Instant;

use crate::exemplar::{Exemplar, Slot, TraceContext};
use crate::instrument::{Instrument, Kind, sealed};
use crate::number::{NumberKind, add_f64};
use crate::series::Series;
use crate::snapshot::Point;
use crate::{Error, Unit};

/// Number of octaves (powers of two) the grid spans.
pub const OCTAVES: i32 = 30;
/// The most observations [`Histogram::observe_n`] lets one grid cell of a series (per stripe)
/// hold: 2^48 ≈ 2.8 × 10^14. Past it, the rest of a batch is dropped from every figure (count,
/// buckets, sum), so a huge `n` never wraps a counter and the total of all cells stays below
/// 2^63. Plain [`Histogram::observe`] adds one at a time and has no such limit (2^64
/// observations are out of reach).
pub const MAX_CELL_COUNT: u64 = 1 << 48;
const NO_SPLIT: u16 = u16::MAX;
const MANTISSA: u64 = (1 << 52) - 1;

/// Default explicit bucket boundaries for durations in seconds: 0.5 ms to 60 s.
pub const DEFAULT_SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];
/// Default explicit bucket boundaries for sizes in bytes: 64 B to 1 GiB, powers of 4.
pub const DEFAULT_BYTES_BUCKETS: &[f64] = &[
    64.0,
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262144.0,
    1048576.0,
    4194304.0,
    16777216.0,
    67108864.0,
    268435456.0,
    1073741824.0,
];
/// Default explicit bucket boundaries for anything else (the OpenTelemetry SDK defaults).
pub const DEFAULT_BUCKETS: &[f64] = &[
    0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0, 5000.0, 7500.0,
    10000.0,
];

/// Resolution of the quantile grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// 8 cells per octave: quantile error at most 4.33 %, exponential scale up to 3, about 2.2 KB
    /// per series.
    Compact,
    /// 24 cells per octave: quantile error at most 1.44 %, exponential scale up to 3, about 6.0 KB
    /// per series.
    #[default]
    Standard,
    /// 32 cells per octave: quantile error at most 1.08 %, exponential scale up to 5, about 7.9 KB
    /// per series.
    High,
}

impl Precision {
    /// Grid cells per power of two.
    pub fn cells_per_octave(self) -> u32 {
        match self {
            Precision::Compact => 8,
            Precision::Standard => 24,
            Precision::High => 32,
        }
    }

    /// The worst-case relative error of a quantile estimate inside the grid's range.
    pub fn max_relative_error(self) -> f64 {
        let b = 2f64.powf(1.0 / self.cells_per_octave() as f64);
        (b - 1.0) / (b + 1.0)
    }
}

/// Histogram configuration, fixed per family.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramConfig {
    /// Explicit (classic) bucket upper bounds, strictly increasing and finite; `+Inf` is implied.
    pub buckets: Vec<f64>,
    /// Quantile grid resolution.
    pub precision: Precision,
    /// The grid spans `(2^min_exponent, 2^(min_exponent + 30)]`; values at or below go to
    /// the low cell (with zero and negatives), values above to the high cell.
    pub min_exponent: i32,
}

impl HistogramConfig {
    /// Defaults for a unit: seconds get 0.5 ms–60 s buckets over a 0.95 µs–1024 s grid, bytes get
    /// 64 B–1 GiB buckets over a 16 B–16 GiB grid, anything else the OpenTelemetry defaults over
    /// a 2^-10–2^20 grid.
    pub fn for_unit(unit: &Unit) -> Self {
        let (buckets, min_exponent): (Vec<f64>, i32) = match unit {
            Unit::Seconds => (DEFAULT_SECONDS_BUCKETS.to_vec(), -20),
            Unit::Milliseconds => (
                DEFAULT_SECONDS_BUCKETS.iter().map(|b| b * 1000.0).collect(),
                -10,
            ),
            Unit::Bytes => (DEFAULT_BYTES_BUCKETS.to_vec(), 4),
            _ => (DEFAULT_BUCKETS.to_vec(), -10),
        };
        HistogramConfig {
            buckets,
            precision: Precision::Standard,
            min_exponent,
        }
    }
}

/// Settings a family builder collects for the instrument's storage.
#[doc(hidden)]
#[derive(Debug, Clone, Default)]
pub struct InstrumentOptions {
    pub buckets: Option<Vec<f64>>,
    pub precision: Option<Precision>,
    pub min_exponent: Option<i32>,
    pub stripes: Option<usize>,
    pub exemplars: Option<bool>,
}

/// The grid and boundary tables of one family, shared by all its series.
pub struct HistogramLayout {
    per_octave: u32,
    min_exp: i32,
    n_fine: usize,
    /// `2^(i / per_octave)` for `i` in `0..per_octave`.
    octave_bounds: Box<[f64]>,
    /// For the top 8 mantissa bits `t`: how many `octave_bounds[1..]` are below `1 + t/256`.
    cell_of: [u8; 256],
    low: f64,
    high: f64,
    explicit: Box<[f64]>,
    explicit_cell: Box<[u32]>,
    /// Per cell, the first explicit boundary inside it, or `NO_SPLIT`.
    split_first: Box<[u16]>,
    occupancy_shift: u32,
    /// Offset of the sum in a block, and the block length (whole cache lines).
    sum_at: usize,
    block: usize,
    /// Blocks per series: 1, or a power of two for striped families.
    stripes: usize,
    /// Whether series keep one exemplar per explicit bucket.
    exemplars: bool,
    seconds_scale: f64,
    config: HistogramConfig,
}

impl fmt::Debug for HistogramLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HistogramLayout")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl HistogramLayout {
    pub(crate) fn new(name: &str, unit: &Unit, config: HistogramConfig) -> Result<Self, Error> {
        let bad = |problem: String| Error::InvalidHistogram {
            metric: name.to_owned(),
            problem,
        };
        if !(-1000..=990).contains(&config.min_exponent) {
            return Err(bad(format!(
                "min_exponent {} is out of range; use a value between -1000 and 990",
                config.min_exponent
            )));
        }
        if config.buckets.len() >= NO_SPLIT as usize {
            return Err(bad(format!(
                "{} buckets are too many; use fewer than 65535",
                config.buckets.len()
            )));
        }
        for (i, b) in config.buckets.iter().enumerate() {
            if !b.is_finite() {
                return Err(bad(format!(
                    "bucket boundary {b} at position {i} is not finite; +Inf is always implied, list only finite boundaries"
                )));
            }
            if i > 0 && *b <= config.buckets[i - 1] {
                return Err(bad(format!(
                    "bucket boundaries must be strictly increasing, but {b} at position {i} follows {}",
                    config.buckets[i - 1]
                )));
            }
        }
        Ok(Self::build(unit, config))
    }

    /// Builds a layout from a validated configuration.
    fn build(unit: &Unit, config: HistogramConfig) -> Self {
        let per_octave = config.precision.cells_per_octave();
        let octave_bounds: Box<[f64]> = (0..per_octave)
            .map(|i| 2f64.powf(i as f64 / per_octave as f64))
            .collect();
        let mut cell_of = [0u8; 256];
        for (t, c) in cell_of.iter_mut().enumerate() {
            let m = 1.0 + t as f64 / 256.0;
            *c = octave_bounds[1..].iter().filter(|b| **b < m).count() as u8;
        }
        let n_fine = per_octave as usize * OCTAVES as usize;
        let cells = n_fine + 2;
        let mut occupancy_shift = 0;
        while (cells >> occupancy_shift) >= 64 {
            occupancy_shift += 1;
        }
        let mut layout = HistogramLayout {
            per_octave,
            min_exp: config.min_exponent,
            n_fine,
            octave_bounds,
            cell_of,
            low: 2f64.powi(config.min_exponent),
            high: 2f64.powi(config.min_exponent + OCTAVES),
            explicit: config.buckets.clone().into_boxed_slice(),
            explicit_cell: Box::new([]),
            split_first: vec![NO_SPLIT; cells].into_boxed_slice(),
            occupancy_shift,
            sum_at: cells + config.buckets.len(),
            block: (cells + config.buckets.len() + 1).next_multiple_of(8),
            stripes: 1,
            exemplars: false,
            seconds_scale: unit.per_second().unwrap_or(1.0),
            config,
        };
        let explicit_cell: Box<[u32]> = layout
            .explicit
            .iter()
            .map(|b| layout.index(*b) as u32)
            .collect();
        for (j, cell) in explicit_cell.iter().enumerate().rev() {
            layout.split_first[*cell as usize] = j as u16;
        }
        layout.explicit_cell = explicit_cell;
        layout
    }

    /// A layout outside any registry, for tools that store a histogram's cells and rebuild it
    /// later with [`HistogramPoint::from_parts`] (a load generator's saved runs, for example).
    pub fn standalone(unit: &Unit, config: HistogramConfig) -> Result<Arc<Self>, Error> {
        Ok(Arc::new(Self::new("histogram", unit, config)?))
    }

    /// Number of cells, including the low and high cells.
    pub fn cells(&self) -> usize {
        self.n_fine + 2
    }

    /// The configuration this layout was built from.
    pub fn config(&self) -> &HistogramConfig {
        &self.config
    }

    /// Explicit bucket upper bounds (without `+Inf`).
    pub fn explicit_bounds(&self) -> &[f64] {
        &self.explicit
    }

    /// Bytes one series of this layout holds (its atomic storage; labels come on top).
    pub fn series_bytes(&self) -> usize {
        std::mem::size_of::<HistogramCore>() + 8 * self.block * self.stripes
    }

    /// Counter blocks per series (more than one for striped families).
    pub fn stripes(&self) -> usize {
        self.stripes
    }

    /// The largest exponential scale whose buckets the grid nests into exactly.
    pub fn max_scale(&self) -> i32 {
        self.per_octave.trailing_zeros() as i32
    }

    /// The cell of `x`: 0 for `x <= 2^min_exp` (and NaN), `1..=n_fine` inside the grid, where
    /// cell `k` is `(2^(min_exp + (k-1)/n), 2^(min_exp + k/n)]`, and `n_fine + 1` above.
    #[inline(always)]
    pub fn index(&self, x: f64) -> usize {
        // `<=` alone would send NaN into the grid; NaN belongs with the low cell.
        if x <= self.low || x.is_nan() {
            return 0;
        }
        if x > self.high {
            return self.n_fine + 1;
        }
        let bits = x.to_bits();
        let exp = ((bits >> 52) & 0x7ff) as i32 - 1023;
        let octave = (exp - self.min_exp) as usize * self.per_octave as usize;
        let mant = bits & MANTISSA;
        if mant == 0 {
            // An exact power of two is the upper bound of the cell below it.
            return octave;
        }
        let mut j = self.cell_of[(mant >> 44) as usize] as usize;
        let m = f64::from_bits(mant | (1023 << 52));
        if j + 1 < self.per_octave as usize && self.octave_bounds[j + 1] < m {
            j += 1;
        }
        octave + j + 1
    }

    /// Lower and upper bound of a cell (`-inf` below the grid, `+inf` above it).
    pub fn cell_bounds(&self, cell: usize) -> (f64, f64) {
        if cell == 0 {
            return (f64::NEG_INFINITY, self.low);
        }
        if cell > self.n_fine {
            return (self.high, f64::INFINITY);
        }
        let n = self.per_octave as f64;
        let lo = 2f64.powf(self.min_exp as f64 + (cell - 1) as f64 / n);
        let hi = 2f64.powf(self.min_exp as f64 + cell as f64 / n);
        (lo, hi)
    }

    /// The value that stands for a cell: the point with the least worst-case relative error.
    fn representative(&self, cell: usize, min: f64, max: f64) -> f64 {
        let v = if cell == 0 {
            min.min(self.low)
        } else if cell > self.n_fine {
            max.max(self.high)
        } else {
            let (lo, hi) = self.cell_bounds(cell);
            2.0 * lo * hi / (lo + hi)
        };
        clamp(v, min, max)
    }
}

fn clamp(v: f64, min: f64, max: f64) -> f64 {
    if min <= max { v.max(min).min(max) } else { v }
}

/// The atomic storage of one histogram series: one block of counters per stripe (one stripe
/// unless the family is striped), each block holding the cells, one split counter per explicit
/// boundary and the sum, padded to whole cache lines.
pub struct HistogramCore {
    layout: Arc<HistogramLayout>,
    counters: Box<[AtomicU64]>,
    /// Written only by new extremes, so it stays shared in every core's cache.
    min: AtomicU64,
    max: AtomicU64,
    /// One bit per group of cells that has ever been written (in any stripe), so reads skip
    /// empty groups.
    occupied: AtomicU64,
    /// One exemplar per explicit bucket (with `+Inf`), for families that keep them.
    exemplars: Option<Box<[Slot]>>,
}

impl HistogramCore {
    fn new(layout: &Arc<HistogramLayout>) -> Self {
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
    fn observe_with(&self, v: f64, ctx: Option<&TraceContext>) {
        self.observe(v);
        self.exemplar(v, ctx);
    }

    /// [`observe_n`](Self::observe_n) and, when `n > 0`, one exemplar for the batch.
    #[inline]
    fn observe_n_with(&self, v: f64, n: u64, ctx: Option<&TraceContext>) {
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
    fn observe(&self, v: f64) {
        if v.is_nan() {
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
        self.counters[base + cell].fetch_add(1, Relaxed);
        let first = l.split_first[cell];
        if first != NO_SPLIT {
            self.split(base, cell, first as usize, v, 1);
        }
        add_f64(&self.counters[base + l.sum_at], v);
        if v < f64::from_bits(self.min.load(Relaxed)) {
            update_extreme(&self.min, v, |new, cur| new < cur);
        }
        if v > f64::from_bits(self.max.load(Relaxed)) {
            update_extreme(&self.max, v, |new, cur| new > cur);
        }
    }

    /// `n` observations of `v` with the atomic operations of one: see [`Histogram::observe_n`].
    #[inline(always)]
    fn observe_n(&self, v: f64, n: u64) {
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
        // One rounding for the whole batch; n <= 2^48 is exact as an f64.
        add_f64(&self.counters[base + l.sum_at], v * n as f64);
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

    fn read(&self) -> HistogramPoint {
        let l = &self.layout;
        let cells = l.cells();
        let blocks = || (0..l.stripes).map(|s| s * l.block);
        let mut splits = vec![0u64; l.explicit.len()];
        for base in blocks() {
            for (j, split) in splits.iter_mut().enumerate() {
                *split += self.counters[base + cells + j].load(Acquire);
            }
        }
        let occupied = self.occupied.load(Acquire);
        let group = 1usize << l.occupancy_shift;
        let cell_sum = |cell: usize| -> u64 {
            blocks()
                .map(|b| self.counters[b + cell].load(Relaxed))
                .sum()
        };
        // Visits every cell of the groups that have ever been written, in ascending order.
        let each_occupied = |f: &mut dyn FnMut(usize)| {
            let mut g = occupied;
            while g != 0 {
                let start = g.trailing_zeros() as usize * group;
                g &= g - 1;
                (start..(start + group).min(cells)).for_each(&mut *f);
            }
        };
        // First pass: the lowest and highest non-empty cells, so the dense counts are allocated
        // once at their final size.
        let (mut first, mut last) = (usize::MAX, 0usize);
        each_occupied(&mut |cell| {
            if cell_sum(cell) != 0 {
                first = first.min(cell);
                last = cell;
            }
        });
        let mut counts = if first == usize::MAX {
            Vec::new()
        } else {
            vec![0u64; last - first + 1]
        };
        let mut count = 0u64;
        // Second pass: a cell first written between the passes is outside the range and is left
        // for the next read, which keeps `count` equal to the sum of `counts`.
        each_occupied(&mut |cell| {
            if (first..=last).contains(&cell) {
                let c = cell_sum(cell);
                counts[cell - first] = c;
                count += c;
            }
        });
        HistogramPoint {
            layout: l.clone(),
            count,
            sum: blocks()
                .map(|b| f64::from_bits(self.counters[b + l.sum_at].load(Relaxed)))
                .sum(),
            min: f64::from_bits(self.min.load(Relaxed)),
            max: f64::from_bits(self.max.load(Relaxed)),
            offset: if first == usize::MAX { 0 } else { first },
            counts,
            splits,
            exemplars: self
                .exemplars
                .as_ref()
                .map(|slots| slots.iter().map(Slot::read).collect())
                .unwrap_or_default(),
        }
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

/// A histogram series handle: records `f64` observations.
///
/// An observation is two relaxed atomic operations in the common case (its grid cell and the
/// sum) plus reads of min and max; nothing allocates, locks or hashes.
///
/// ```
/// use sonde_core::{Registry, Unit};
/// let registry = Registry::new();
/// let latency = registry
///     .histogram("http.server.request.duration")
///     .unit(Unit::Seconds)
///     .labels(["http.route"])
///     .build()?;
/// let users = latency.with(&["/users/:id"]);
/// users.observe(0.012);
/// let _timer = users.start_timer(); // records the elapsed seconds when dropped
/// # Ok::<(), sonde_core::Error>(())
/// ```
#[must_use = "a handle records nothing until you call a method on it"]
#[derive(Clone)]
pub struct Histogram(pub(crate) Arc<Series<HistogramCore>>);

impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.0.core.read();
        f.debug_struct("Histogram")
            .field("count", &p.count)
            .field("sum", &p.sum)
            .finish()
    }
}

impl sealed::Sealed for Histogram {}

impl Instrument for Histogram {
    type Core = HistogramCore;
    type Config = HistogramLayout;
    const KIND: Kind = Kind::Histogram;
    const NUMBER: NumberKind = NumberKind::F64;
    const RESERVED_LABELS: &'static [&'static str] = &["le", "quantile"];

    fn make_config(
        name: &str,
        unit: &Unit,
        options: &InstrumentOptions,
    ) -> Result<HistogramLayout, Error> {
        let mut config = HistogramConfig::for_unit(unit);
        if let Some(b) = &options.buckets {
            config.buckets = b.clone();
        }
        if let Some(p) = options.precision {
            config.precision = p;
        }
        if let Some(e) = options.min_exponent {
            config.min_exponent = e;
        }
        let mut layout = HistogramLayout::new(name, unit, config)?;
        // Each stripe is a whole copy of the cells, so histograms take fewer than counters.
        layout.stripes = options.stripes.unwrap_or(1).clamp(1, 8).next_power_of_two();
        layout.exemplars = options.exemplars.unwrap_or(false);
        Ok(layout)
    }
    fn fallback_config() -> HistogramLayout {
        HistogramLayout::build(&Unit::None, HistogramConfig::for_unit(&Unit::None))
    }
    fn new_core(config: &Arc<HistogramLayout>) -> HistogramCore {
        HistogramCore::new(config)
    }
    fn config_bytes(l: &HistogramLayout) -> usize {
        std::mem::size_of::<HistogramLayout>()
            + (l.octave_bounds.len() + l.explicit.len()) * 8
            + l.explicit_cell.len() * 4
            + l.split_first.len() * 2
    }
    fn core_bytes(l: &HistogramLayout) -> usize {
        let exemplars = if l.exemplars {
            (l.explicit.len() + 1) * std::mem::size_of::<Slot>()
        } else {
            0
        };
        std::mem::size_of::<HistogramCore>() + l.block * l.stripes * 8 + exemplars
    }
    fn from_series(series: Arc<Series<HistogramCore>>) -> Self {
        Histogram(series)
    }
    fn read(core: &HistogramCore) -> Point {
        Point::Histogram(core.read())
    }
    fn absorb(dst: &HistogramCore, src: &HistogramCore) {
        dst.absorb(src);
    }
}

impl Histogram {
    /// Whether this handle records into its family's overflow series (the label set was past
    /// the series limit or the memory budget when it was resolved).
    pub fn is_overflow(&self) -> bool {
        self.0.header.is_overflow()
    }

    /// Records one observation. NaN is ignored; values at or below the grid (zero, negative,
    /// `-Inf`) and above it (`+Inf`) are counted in the low and high cells and in the explicit
    /// buckets, and enter the sum (an infinity makes it infinite). See
    /// [`observe_n`](Self::observe_n) for `n` observations of one value at once.
    #[inline(always)]
    pub fn observe(&self, v: f64) {
        if self.0.core.exemplars.is_some() {
            self.0.core.observe_with(v, None);
        } else {
            self.0.core.observe(v);
        }
    }

    /// Records `n` observations of `v` at once, as `n` calls of [`observe`](Self::observe)
    /// would, with the atomic operations of a single call: for sampled StatsD timers
    /// (`|@0.01` stands for 100 observations), pre-aggregated batches and similar sources.
    ///
    /// - The cell, the explicit bucket and the count grow by `n`; min and max are updated once;
    ///   the family's exemplar (if it keeps them) is updated once, as for one observation.
    /// - The sum grows by `v × n` computed once in `f64`: one rounding where `n` calls round `n`
    ///   times, so the sum can differ from theirs in the last bits (it is the closer of the two
    ///   to the exact product). If `v × n` is beyond `f64::MAX` the sum becomes infinite, as it
    ///   would after `n` calls.
    /// - `n == 0` records nothing. NaN is ignored, as by `observe`.
    /// - `±Inf` is recorded as by `observe`: counted in the high (`+Inf`) or low (`-Inf`) cell
    ///   and bucket, and it makes the sum infinite (NaN once both signs were seen); min or max
    ///   then holds the infinity, which [`HistogramPoint::min`]/[`max`](HistogramPoint::max)
    ///   report as `None`. Sources that must never export an infinite sum (sonde-statsd) refuse
    ///   infinite values before recording.
    /// - Zero and negative values are counted, as by `observe`: in the low cell, in the exact
    ///   explicit buckets, and in the sum and min (a histogram does not know whether its unit
    ///   is signed).
    /// - Counts saturate: one grid cell of a series holds at most [`MAX_CELL_COUNT`] (2^48)
    ///   observations through `observe_n`; the part of a batch past that is dropped from every
    ///   figure (count, buckets and sum stay consistent), so a huge `n` (even `u64::MAX`)
    ///   neither panics nor wraps.
    ///
    /// ```
    /// use sonde_core::{Registry, Unit};
    /// let registry = Registry::new();
    /// let latency = registry.histogram("job.duration").unit(Unit::Seconds).build()?.handle();
    /// latency.observe_n(0.25, 100); // a timer sampled at 1 %
    /// let p = latency.read();
    /// assert_eq!((p.count(), p.sum()), (100, 25.0));
    /// # Ok::<(), sonde_core::Error>(())
    /// ```
    #[inline(always)]
    pub fn observe_n(&self, v: f64, n: u64) {
        if self.0.core.exemplars.is_some() {
            self.0.core.observe_n_with(v, n, None);
        } else {
            self.0.core.observe_n(v, n);
        }
    }

    /// Records an observation made in the span `ctx`, kept as its bucket's exemplar (latest
    /// wins) when the family keeps exemplars ([`FamilyBuilder::exemplars`](crate::FamilyBuilder::exemplars)).
    /// Plain [`observe`](Self::observe) does the same with the context from the installed
    /// [trace context provider](crate::exemplar::set_trace_context_provider).
    #[inline]
    pub fn observe_with_exemplar(&self, v: f64, ctx: &TraceContext) {
        self.0.core.observe_with(v, Some(ctx));
    }

    /// Starts a timer that records the elapsed time (in the family's unit: seconds unless the
    /// unit is milliseconds) when dropped.
    pub fn start_timer(&self) -> HistogramTimer<'_> {
        HistogramTimer {
            histogram: self,
            start: Some(Instant::now()),
        }
    }

    /// Runs `f` and records how long it took.
    pub fn time<T>(&self, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = f();
        self.record_since(start);
        out
    }

    /// Wraps a future so the time from its first poll to completion is recorded.
    pub fn time_future<F: Future>(&self, fut: F) -> Timed<F> {
        Timed {
            fut,
            histogram: self.clone(),
            start: None,
        }
    }

    /// Records the time elapsed since `start`.
    #[inline]
    pub fn record_since(&self, start: Instant) {
        self.observe(start.elapsed().as_secs_f64() * self.0.core.layout.seconds_scale);
    }

    /// A cumulative read of this series (for tests and diagnostics).
    pub fn read(&self) -> HistogramPoint {
        self.0.core.read()
    }
}

/// Records the elapsed time into a histogram when dropped. Created by
/// [`Histogram::start_timer`].
#[must_use = "the timer records when dropped; dropping it at once records ~0"]
pub struct HistogramTimer<'a> {
    histogram: &'a Histogram,
    start: Option<Instant>,
}

impl HistogramTimer<'_> {
    /// Records now and returns the elapsed seconds.
    pub fn stop(mut self) -> f64 {
        match self.start.take() {
            Some(start) => {
                let secs = start.elapsed().as_secs_f64();
                self.histogram
                    .observe(secs * self.histogram.0.core.layout.seconds_scale);
                secs
            }
            None => 0.0,
        }
    }

    /// Drops the timer without recording.
    pub fn discard(mut self) {
        self.start = None;
    }
}

impl Drop for HistogramTimer<'_> {
    fn drop(&mut self) {
        if let Some(start) = self.start.take() {
            self.histogram.record_since(start);
        }
    }
}

pin_project_lite::pin_project! {
    /// A future whose run time is recorded into a histogram; see [`Histogram::time_future`].
    #[must_use = "futures do nothing unless polled"]
    pub struct Timed<F> {
        #[pin]
        fut: F,
        histogram: Histogram,
        start: Option<Instant>,
    }
}

impl<F: Future> Future for Timed<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let start = *this.start.get_or_insert_with(Instant::now);
        match this.fut.poll(cx) {
            Poll::Ready(out) => {
                this.histogram.record_since(start);
                Poll::Ready(out)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A read of one histogram series: cumulative, or the change over an interval.
#[derive(Clone)]
pub struct HistogramPoint {
    layout: Arc<HistogramLayout>,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    /// Cell index of `counts[0]`.
    offset: usize,
    /// Dense cell counts from the first to the last non-empty cell.
    counts: Vec<u64>,
    /// Split counters, one per explicit boundary.
    splits: Vec<u64>,
    /// Exemplars per explicit bucket (empty when the family keeps none).
    exemplars: Vec<Option<Exemplar>>,
}

impl fmt::Debug for HistogramPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HistogramPoint")
            .field("count", &self.count)
            .field("sum", &self.sum)
            .field("min", &self.min())
            .field("max", &self.max())
            .finish_non_exhaustive()
    }
}

/// A histogram point as plain data (see [`HistogramPoint::to_parts`]).
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramParts {
    /// Number of observations.
    pub count: u64,
    /// Sum of observations.
    pub sum: f64,
    /// Smallest observation, when any.
    pub min: Option<f64>,
    /// Largest observation, when any.
    pub max: Option<f64>,
    /// Non-empty grid cells as `(cell, count)`.
    pub cells: Vec<(usize, u64)>,
    /// Split counters, one per explicit boundary (exact explicit-bucket counts).
    pub splits: Vec<u64>,
}

/// Exponential (base-2) buckets: bucket `offset + i` of the positive range holds
/// `counts[i]` observations in `(base^(offset+i), base^(offset+i+1)]`, `base = 2^(2^-scale)`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExponentialBuckets {
    /// The scale (`-4..=max_scale`).
    pub scale: i32,
    /// Observations at or below `zero_threshold` (includes zero and negative values).
    pub zero_count: u64,
    /// Upper bound of the zero bucket.
    pub zero_threshold: f64,
    /// Index of the first positive bucket.
    pub offset: i32,
    /// Positive bucket counts (may contain zeros between non-empty buckets).
    pub counts: Vec<u64>,
}

impl HistogramPoint {
    /// The layout (grid and explicit bounds) of the family.
    pub fn layout(&self) -> &HistogramLayout {
        &self.layout
    }

    /// The latest exemplar of each explicit bucket (one entry per bound, then `+Inf`), or an empty
    /// slice when the family keeps no exemplars.
    pub fn exemplars(&self) -> &[Option<Exemplar>] {
        &self.exemplars
    }

    /// Number of observations (always the sum of the bucket counts).
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of observations.
    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// Smallest observation (an interval's smallest, estimated within one grid cell, for deltas);
    /// `None` when empty.
    pub fn min(&self) -> Option<f64> {
        (self.count > 0 && self.min.is_finite()).then_some(self.min)
    }

    /// Largest observation; see [`min`](Self::min).
    pub fn max(&self) -> Option<f64> {
        (self.count > 0 && self.max.is_finite()).then_some(self.max)
    }

    /// Iterates over non-empty grid cells as `(cell, count)`.
    pub fn cells(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(move |(i, c)| (self.offset + i, *c))
    }

    /// Explicit bucket counts, not cumulative: one per explicit bound, then the `+Inf` bucket.
    pub fn bucket_counts(&self) -> Vec<u64> {
        let mut out = Vec::with_capacity(self.layout.explicit.len() + 1);
        self.cumulative_into(&mut out);
        let mut prev = 0;
        for c in out.iter_mut() {
            let v = *c - prev;
            prev = *c;
            *c = v;
        }
        out
    }

    /// Cumulative explicit bucket counts (Prometheus `le` semantics): one per explicit bound,
    /// then the total for `+Inf`. Reuses `out`.
    pub fn cumulative_into(&self, out: &mut Vec<u64>) {
        out.clear();
        let l = &self.layout;
        let mut below = 0u64; // observations in cells before the current boundary's cell
        // Cells below the first non-empty one hold nothing, so start there.
        let mut cell = self.offset; // next cell not yet added to `below`
        let mut in_cell = 0u64; // split counts accumulated inside the current cell
        let mut current = usize::MAX;
        for (j, &bcell) in l.explicit_cell.iter().enumerate() {
            let bcell = bcell as usize;
            if cell < bcell {
                let from = cell - self.offset;
                let to = (bcell - self.offset).min(self.counts.len());
                if from < to {
                    below += self.counts[from..to].iter().sum::<u64>();
                }
                cell = bcell;
            }
            if current != bcell {
                current = bcell;
                in_cell = 0;
            }
            in_cell += self.splits.get(j).copied().unwrap_or(0);
            out.push((below + in_cell.min(self.cell_count(bcell))).min(self.count));
        }
        out.push(self.count);
    }

    /// Cumulative explicit buckets as `(upper bound, cumulative count)`, ending with `+Inf`.
    pub fn cumulative_buckets(&self) -> Vec<(f64, u64)> {
        let mut counts = Vec::new();
        self.cumulative_into(&mut counts);
        self.layout
            .explicit
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(counts)
            .collect()
    }

    fn cell_count(&self, cell: usize) -> u64 {
        cell.checked_sub(self.offset)
            .and_then(|i| self.counts.get(i))
            .copied()
            .unwrap_or(0)
    }

    /// Estimates the `q` quantile (`0.0..=1.0`): the grid cell holding the observation of rank
    /// `ceil(q * count)`, reported at the point of least relative error and clamped to
    /// `[min, max]`. `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 || q.is_nan() {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(
                    self.layout
                        .representative(self.offset + i, self.min, self.max),
                );
            }
        }
        self.max()
    }

    /// The buckets at `scale` (clamped to `-4..=layout.max_scale()`), exact sums of grid cells.
    /// Observations above the grid land in the bucket just above it.
    pub fn exponential(&self, scale: i32) -> ExponentialBuckets {
        let l = &self.layout;
        let scale = scale.clamp(-4, l.max_scale());
        // Cells per bucket at this scale (per_octave / 2^scale), as a shift when scale >= 0.
        let per_octave = l.per_octave as i64;
        let cells_per_bucket = if scale >= 0 {
            per_octave >> scale
        } else {
            per_octave << (-scale)
        };
        let bucket_of = |cell: usize| -> i64 {
            let pos = l.min_exp as i64 * per_octave + cell as i64 - 1;
            pos.div_euclid(cells_per_bucket)
        };
        let zero_count = self.cell_count(0);
        let mut offset = i64::MAX;
        let mut counts: Vec<u64> = Vec::new();
        for (cell, c) in self.cells() {
            if cell == 0 {
                continue;
            }
            let b = bucket_of(cell.min(l.n_fine + 1));
            if offset == i64::MAX {
                offset = b;
            }
            let i = (b - offset) as usize;
            if counts.len() <= i {
                counts.resize(i + 1, 0);
            }
            counts[i] += c;
        }
        ExponentialBuckets {
            scale,
            zero_count,
            zero_threshold: l.low,
            offset: if offset == i64::MAX { 0 } else { offset as i32 },
            counts,
        }
    }

    /// At most `max_pairs` (value, count) pairs that together hold every observation, for
    /// CloudWatch `Values`/`Counts`: grid cells merged by the smallest power of two that fits,
    /// each reported at its representative value, clamped to `[min, max]`.
    pub fn value_counts(&self, max_pairs: usize) -> Vec<(f64, u64)> {
        let max_pairs = max_pairs.max(1);
        let mut merge = 1usize;
        loop {
            let mut out: Vec<(usize, usize, u64)> = Vec::new(); // (first cell, last cell, count)
            for (cell, c) in self.cells() {
                let group = group_of(cell, merge, &self.layout);
                match out.last_mut() {
                    Some((first, last, n)) if group_of(*first, merge, &self.layout) == group => {
                        *last = cell;
                        *n += c;
                    }
                    _ => out.push((cell, cell, c)),
                }
            }
            if out.len() <= max_pairs || merge > self.layout.n_fine {
                return out
                    .into_iter()
                    .map(|(first, last, n)| (self.group_value(first, last), n))
                    .collect();
            }
            merge *= 2;
        }
    }

    fn group_value(&self, first: usize, last: usize) -> f64 {
        if first == last {
            return self.layout.representative(first, self.min, self.max);
        }
        let (lo, _) = self.layout.cell_bounds(first);
        let (_, hi) = self.layout.cell_bounds(last);
        clamp(2.0 * lo * hi / (lo + hi), self.min, self.max)
    }

    /// The change from `earlier` (an older read of the same series) to `self`. Min and max of
    /// the interval are estimated from its lowest and highest non-empty cells, clamped by the
    /// series' exact all-time extremes.
    pub fn minus(&self, earlier: &HistogramPoint) -> HistogramPoint {
        let lo = self.offset.min(earlier.offset);
        let hi = (self.offset + self.counts.len()).max(earlier.offset + earlier.counts.len());
        let mut counts = Vec::with_capacity(hi - lo);
        let mut first = None;
        let mut last = 0;
        let mut count = 0;
        for cell in lo..hi {
            let d = self
                .cell_count(cell)
                .saturating_sub(earlier.cell_count(cell));
            if d > 0 {
                first.get_or_insert(cell);
                last = cell;
                count += d;
            }
            if first.is_some() {
                counts.push(d);
            }
        }
        let offset = first.unwrap_or(0);
        counts.truncate(if first.is_some() {
            last - offset + 1
        } else {
            0
        });
        let splits = self
            .splits
            .iter()
            .zip(earlier.splits.iter().chain(std::iter::repeat(&0)))
            .map(|(a, b)| a.saturating_sub(*b))
            .collect();
        let (min, max) = match first {
            Some(f) => {
                let (cell_lo, _) = self.layout.cell_bounds(f);
                let (_, cell_hi) = self.layout.cell_bounds(last);
                let mut min = if cell_lo.is_finite() {
                    cell_lo.max(self.min)
                } else {
                    self.min
                };
                let mut max = if cell_hi.is_finite() {
                    cell_hi.min(self.max)
                } else {
                    self.max
                };
                if min > max {
                    std::mem::swap(&mut min, &mut max);
                }
                (min, max)
            }
            None => (f64::INFINITY, f64::NEG_INFINITY),
        };
        HistogramPoint {
            layout: self.layout.clone(),
            count,
            sum: self.sum - earlier.sum,
            min,
            max,
            offset,
            counts,
            splits,
            exemplars: self.exemplars.clone(),
        }
    }

    /// The point's contents as plain data: what [`from_parts`](Self::from_parts) needs to
    /// rebuild it exactly (exemplars are not kept).
    pub fn to_parts(&self) -> HistogramParts {
        HistogramParts {
            count: self.count,
            sum: self.sum,
            min: self.min(),
            max: self.max(),
            cells: self.cells().collect(),
            splits: self.splits.clone(),
        }
    }

    /// Rebuilds a point from [`to_parts`](Self::to_parts) output over the same layout
    /// configuration. Refuses cells outside the layout, a split list of the wrong length, and a
    /// count that is not the sum of the cells, so a damaged file cannot yield wrong quantiles.
    pub fn from_parts(
        layout: Arc<HistogramLayout>,
        parts: &HistogramParts,
    ) -> Result<HistogramPoint, Error> {
        let bad = |problem: String| Error::InvalidHistogram {
            metric: "stored histogram".to_owned(),
            problem,
        };
        if parts.splits.len() != layout.explicit.len() {
            return Err(bad(format!(
                "{} split counts for {} bucket boundaries",
                parts.splits.len(),
                layout.explicit.len()
            )));
        }
        let mut cells: Vec<(usize, u64)> =
            parts.cells.iter().copied().filter(|c| c.1 > 0).collect();
        cells.sort_unstable_by_key(|c| c.0);
        if let Some(&(c, _)) = cells.iter().find(|c| c.0 >= layout.cells()) {
            return Err(bad(format!(
                "cell {c} is outside the layout's {} cells",
                layout.cells()
            )));
        }
        let total = cells.iter().try_fold(0u64, |a, c| a.checked_add(c.1));
        if total != Some(parts.count) {
            return Err(bad(format!(
                "count {} is not the sum of the cells",
                parts.count
            )));
        }
        let offset = cells.first().map_or(0, |c| c.0);
        let len = cells.last().map_or(0, |c| c.0 - offset + 1);
        let mut counts = vec![0u64; len];
        for (c, n) in &cells {
            counts[c - offset] += n;
        }
        Ok(HistogramPoint {
            layout,
            count: parts.count,
            sum: parts.sum,
            min: parts.min.unwrap_or(f64::INFINITY),
            max: parts.max.unwrap_or(f64::NEG_INFINITY),
            offset,
            counts,
            splits: parts.splits.clone(),
            exemplars: Vec::new(),
        })
    }

    /// The union of two points of the same layout configuration: cells, counts and sums add,
    /// extremes combine. Quantiles of the result are those of all observations together, within
    /// the grid's bound (not an average of two quantiles).
    pub fn merge(&self, other: &HistogramPoint) -> Result<HistogramPoint, Error> {
        if self.layout.config != other.layout.config {
            return Err(Error::InvalidHistogram {
                metric: "merged histogram".to_owned(),
                problem: "the two histograms have different bucket or precision settings"
                    .to_owned(),
            });
        }
        let mut parts = self.to_parts();
        let o = other.to_parts();
        parts.cells.extend(o.cells);
        let mut merged: Vec<(usize, u64)> = Vec::with_capacity(parts.cells.len());
        parts.cells.sort_unstable_by_key(|c| c.0);
        for (c, n) in parts.cells {
            match merged.last_mut() {
                Some((lc, ln)) if *lc == c => *ln = ln.saturating_add(n),
                _ => merged.push((c, n)),
            }
        }
        parts.cells = merged;
        parts.count = parts.count.saturating_add(o.count);
        parts.sum += o.sum;
        parts.min = match (parts.min, o.min) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        parts.max = match (parts.max, o.max) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        for (a, b) in parts.splits.iter_mut().zip(o.splits) {
            *a = a.saturating_add(b);
        }
        HistogramPoint::from_parts(self.layout.clone(), &parts)
    }

    /// Heap bytes held by this point.
    pub fn heap_bytes(&self) -> usize {
        8 * (self.counts.capacity() + self.splits.capacity())
    }
}

/// The merge group of a cell; the low and high cells always stay on their own.
fn group_of(cell: usize, merge: usize, layout: &HistogramLayout) -> usize {
    if cell == 0 || cell > layout.n_fine {
        usize::MAX - cell.min(1)
    } else {
        (cell - 1) / merge
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(p: Precision) -> Arc<HistogramLayout> {
        let mut c = HistogramConfig::for_unit(&Unit::Seconds);
        c.precision = p;
        Arc::new(HistogramLayout::new("t", &Unit::Seconds, c).unwrap())
    }

    #[test]
    fn parts_round_trip_and_merge_is_the_union() {
        let reg = crate::Registry::new();
        let a = reg
            .histogram("a")
            .unit(Unit::Seconds)
            .build()
            .unwrap()
            .handle();
        let b = reg
            .histogram("b")
            .unit(Unit::Seconds)
            .build()
            .unwrap()
            .handle();
        let all = reg
            .histogram("all")
            .unit(Unit::Seconds)
            .build()
            .unwrap()
            .handle();
        for i in 1..=1000 {
            let v = i as f64 / 1000.0;
            if i % 3 == 0 {
                b.observe(v)
            } else {
                a.observe(v)
            }
            all.observe(v);
        }
        let (pa, pb, pall) = (a.read(), b.read(), all.read());
        let rebuilt = HistogramPoint::from_parts(pa.layout.clone(), &pa.to_parts()).unwrap();
        assert_eq!(rebuilt.to_parts(), pa.to_parts());
        assert_eq!(rebuilt.quantile(0.99), pa.quantile(0.99));
        let m = pa.merge(&pb).unwrap();
        assert_eq!(m.count(), 1000);
        for q in [0.5, 0.9, 0.99, 1.0] {
            assert_eq!(m.quantile(q), pall.quantile(q), "q={q}");
        }
        assert_eq!(m.cumulative_buckets(), pall.cumulative_buckets());
        let mut broken = pa.to_parts();
        broken.count += 1;
        assert!(HistogramPoint::from_parts(pa.layout.clone(), &broken).is_err());
        broken.count -= 1;
        broken.cells.push((pa.layout.cells(), 1));
        assert!(HistogramPoint::from_parts(pa.layout.clone(), &broken).is_err());
    }

    #[test]
    fn index_matches_bounds() {
        for p in [Precision::Compact, Precision::Standard, Precision::High] {
            let l = layout(p);
            let mut x = 1e-7;
            while x < 2000.0 {
                let cell = l.index(x);
                let (lo, hi) = l.cell_bounds(cell);
                // Allow one ulp of slack at the irrational boundaries.
                assert!(
                    x > lo * (1.0 - 1e-15) && x <= hi * (1.0 + 1e-15),
                    "{x} in {cell} = ({lo}, {hi}]"
                );
                x *= 1.0007;
            }
            // Exact powers of two are upper bounds.
            let cell = l.index(1.0);
            assert_eq!(l.cell_bounds(cell).1, 1.0);
            assert_eq!(l.index(0.0), 0);
            assert_eq!(l.index(-5.0), 0);
            assert_eq!(l.index(f64::INFINITY), l.cells() - 1);
        }
    }

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

    #[test]
    fn exponential_nests() {
        let l = layout(Precision::Standard);
        let core = HistogramCore::new(&l);
        for v in [0.001, 0.0011, 0.5, 1.0, 1.0001, 3.0] {
            core.observe(v);
        }
        let p = core.read();
        for scale in [-2, 0, 1, 2, 3] {
            let e = p.exponential(scale);
            let base = 2f64.powf(2f64.powi(-scale));
            let total: u64 = e.counts.iter().sum();
            assert_eq!(total, 6);
            for v in [0.001f64, 0.0011, 0.5, 1.0, 1.0001, 3.0] {
                // index of v at this scale: ceil(log_base(v)) - 1
                let idx = (v.log2() * 2f64.powi(scale)).ceil() as i32 - 1;
                let i = (idx - e.offset) as usize;
                assert!(
                    e.counts[i] > 0,
                    "scale {scale}: {v} -> bucket {idx} base {base}"
                );
            }
        }
    }

    #[test]
    fn value_counts_bounded() {
        let l = layout(Precision::Standard);
        let core = HistogramCore::new(&l);
        let mut x = 1e-6;
        while x < 1000.0 {
            core.observe(x);
            x *= 1.01;
        }
        let p = core.read();
        let pairs = p.value_counts(150);
        assert!(pairs.len() <= 150, "{}", pairs.len());
        assert_eq!(pairs.iter().map(|p| p.1).sum::<u64>(), p.count());
        assert!(pairs.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
