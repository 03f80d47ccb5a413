//! The grid: configuration, the layout shared by a family's series, and the cell of a value.

use std::fmt;
use std::sync::Arc;

use crate::{Error, Unit};

/// Number of octaves (powers of two) the grid spans.
pub const OCTAVES: i32 = 30;
pub(super) const NO_SPLIT: u16 = u16::MAX;
/// Fine cells per block, the unit in which a series' grid is allocated: two octaves at the
/// default precision (six at `Compact`, one and a half at `High`), 96 bytes.
pub(super) const BLOCK: usize = 48;
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
    /// 8 cells per octave: quantile error at most 4.33 %, exponential scale up to 3, at most
    /// 0.9 KB per series.
    Compact,
    /// 24 cells per octave: quantile error at most 1.44 %, exponential scale up to 3, at most 1.9 KB
    /// per series (about 1 KB for three decades of latencies).
    #[default]
    Standard,
    /// 32 cells per octave: quantile error at most 1.08 %, exponential scale up to 5, at most 2.4 KB
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

/// The grid and boundary tables of one family, shared by all its series.
pub struct HistogramLayout {
    pub(super) per_octave: u32,
    pub(super) min_exp: i32,
    pub(super) n_fine: usize,
    /// `2^(i / per_octave)` for `i` in `0..per_octave`.
    pub(super) octave_bounds: Box<[f64]>,
    /// For the top 8 mantissa bits `t`: how many `octave_bounds[1..]` are below `1 + t/256`.
    cell_of: [u8; 256],
    pub(super) low: f64,
    high: f64,
    pub(super) explicit: Box<[f64]>,
    pub(super) explicit_cell: Box<[u32]>,
    /// Per cell, the first explicit boundary inside it, or `NO_SPLIT`.
    pub(super) split_first: Box<[u16]>,
    /// Blocks of [`BLOCK`] cells per stripe: the fine cells, then one more block whose first
    /// two cells are the high and the low cell.
    pub(super) blocks: usize,
    /// Per stripe, the 64-bit counters: the split counters, then the sum (at `sum_at`); whole
    /// cache lines when the family is striped.
    pub(super) head_block: usize,
    pub(super) sum_at: usize,
    /// Blocks per series: 1, or a power of two for striped families.
    pub(super) stripes: usize,
    /// Whether series keep one exemplar per explicit bucket.
    pub(super) exemplars: bool,
    pub(super) seconds_scale: f64,
    pub(super) config: HistogramConfig,
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
    pub(super) fn build(unit: &Unit, config: HistogramConfig) -> Self {
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
            blocks: (n_fine + 2).div_ceil(BLOCK),
            head_block: head_block(config.buckets.len(), 1),
            sum_at: config.buckets.len(),
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

    /// Sets what each series of the family carries: `stripes` blocks of cells (a power of
    /// two) and whether it keeps exemplars.
    pub(crate) fn set_series_options(&mut self, stripes: usize, exemplars: bool) {
        self.stripes = stripes;
        self.head_block = head_block(self.explicit.len(), stripes);
        self.exemplars = exemplars;
    }

    /// The layout of a family whose own configuration was refused (the defaults, no unit).
    pub(crate) fn fallback() -> Self {
        Self::build(&Unit::None, HistogramConfig::for_unit(&Unit::None))
    }

    /// Bytes the layout itself holds (shared by the family's series).
    pub(crate) fn layout_bytes(&self) -> usize {
        std::mem::size_of::<HistogramLayout>()
            + (self.octave_bounds.len() + self.explicit.len()) * 8
            + self.explicit_cell.len() * 4
            + self.split_first.len() * 2
    }

    /// Bytes of a series' exemplar slots (none unless the family keeps exemplars).
    pub(crate) fn exemplar_bytes(&self) -> usize {
        if self.exemplars {
            (self.explicit.len() + 1) * std::mem::size_of::<crate::exemplar::Slot>()
        } else {
            0
        }
    }

    /// A layout outside any registry, for tools that store a histogram's cells and rebuild it
    /// later with [`HistogramPoint::from_parts`](super::HistogramPoint::from_parts) (a load
    /// generator's saved runs, for example).
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
    pub(super) fn representative(&self, cell: usize, min: f64, max: f64) -> f64 {
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

/// `v` clamped to `[min, max]` when `min <= max` (a series that saw something), else `v`.
pub(super) fn clamp(v: f64, min: f64, max: f64) -> f64 {
    if min <= max { v.max(min).min(max) } else { v }
}

/// The counters of one stripe's head: a split counter per explicit bucket and the sum, padded
/// to whole cache lines when striped (stripes are there to keep threads off each other's
/// lines).
fn head_block(explicit: usize, stripes: usize) -> usize {
    let head = explicit + 1;
    if stripes > 1 {
        head.next_multiple_of(8)
    } else {
        head
    }
}

/// A standalone layout at `p` with the seconds defaults, for the tests of every histogram file.
#[cfg(test)]
pub(super) fn test_layout(p: Precision) -> Arc<HistogramLayout> {
    let mut c = HistogramConfig::for_unit(&Unit::Seconds);
    c.precision = p;
    Arc::new(HistogramLayout::new("t", &Unit::Seconds, c).unwrap())
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::test_layout as layout;

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
}
