//! Reading: a series' point and everything computed from it (explicit buckets, quantiles,
//! exponential buckets, CloudWatch pairs, deltas, parts and merges).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering::{Acquire, Relaxed};
use std::sync::atomic::fence;

use super::layout::{BLOCK, HistogramLayout, clamp};
use super::record::HistogramCore;
use crate::Error;
use crate::exemplar::{Exemplar, Slot};

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

/// A histogram point as plain data (see [`HistogramPoint::to_parts`]); with the `serde` feature,
/// serializable as its fields (cells as `[cell, count]` pairs).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
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

impl HistogramCore {
    /// A cumulative read of every stripe.
    pub(crate) fn read(&self) -> HistogramPoint {
        // A transfer (a cell moving 2^15 into its carry) that overlaps the read makes it start
        // over; they happen once per 2^15 observations of a cell and take a few instructions,
        // so this loop almost always runs once.
        let mut waits = 0u32;
        loop {
            // A series that never moved a cell has no transfer counters yet; a transfer first
            // allocates them, so a read that saw any part of one finds them afterwards.
            let (done, started) = self
                .carry
                .get()
                .map_or((0, 0), |c| (c.done.load(Acquire), c.started.load(Acquire)));
            if started != done {
                // A writer is inside a transfer (a few instructions, unless it was preempted).
                waits += 1;
                if waits < 64 {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
                continue;
            }
            let point = self.read_once();
            // Pairs with the fence in `move_to_carry`: a transfer whose writes this read saw is
            // counted in `started` now.
            fence(Acquire);
            if self.carry.get().map_or(0, |c| c.started.load(Relaxed)) == started {
                return point;
            }
        }
    }

    fn read_once(&self) -> HistogramPoint {
        let l = &self.layout;
        // Splits first (Acquire): every cell read after them holds at least what they count.
        let splits = self.splits();
        // One pass, cells in ascending order: dense counts from the first non-empty cell to
        // the last (a gap between blocks is filled with zeros, trailing zeros never added).
        let mut counts: Vec<u64> = Vec::new();
        let mut first = usize::MAX;
        self.each_cell(|cell, c| {
            if c == 0 {
                return;
            }
            if first == usize::MAX {
                first = cell;
                counts.reserve(BLOCK);
            }
            counts.resize(cell - first, 0);
            counts.push(c);
        });
        let count = counts.iter().sum();
        HistogramPoint {
            layout: l.clone(),
            count,
            sum: self.sum(),
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

#[cfg(test)]
mod tests {
    use super::super::layout::{Precision, test_layout as layout};
    use super::*;
    use crate::Unit;

    #[test]
    fn parts_round_trip_and_merge_is_the_union() {
        let reg = crate::Registry::new();
        let seconds = |name: &'static str| {
            reg.histogram(name)
                .unit(Unit::Seconds)
                .build()
                .unwrap()
                .handle()
        };
        let (a, b, all) = (seconds("a"), seconds("b"), seconds("all"));
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
