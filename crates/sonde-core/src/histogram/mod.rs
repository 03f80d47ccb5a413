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
//! Memory follows the range the data spans, never the number of observations or collections: a
//! series holds `8 × (boundaries + 1)` bytes of counters and a table of blocks, and allocates a
//! block of 48 grid cells (16-bit counters, 96 bytes: two octaves at the default precision) the
//! first time a value lands in it. A latency series spanning three decades holds about 1 KB
//! with its labels, one spanning the whole grid 1.9 KB ([`HistogramLayout::series_bytes`], what
//! a memory budget is charged); striped families hold blocks per stripe. A cell that reaches
//! 2^15 observations moves them to a 32-bit carry for its block (192 bytes, and the first time
//! about 160 more for the series' table of carries; not charged to a memory budget), so a cell
//! counts up to 2^47 (where it saturates).

// By concern: `layout` (the grid, shared by a family's series), `record` (the atomic storage
// and the hot path), `read` (points and what is computed from them); this file holds the handle.
// The three never use this file nor the instrument trait, so `instrument` and `snapshot` can
// depend on them while this file implements `Instrument` for the handle: no import circle.
mod layout;
mod read;
mod record;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use crate::exemplar::TraceContext;
use crate::series::Series;
pub use layout::{
    DEFAULT_BUCKETS, DEFAULT_BYTES_BUCKETS, DEFAULT_SECONDS_BUCKETS, HistogramConfig,
    HistogramLayout, OCTAVES, Precision,
};
pub use read::{ExponentialBuckets, HistogramParts, HistogramPoint};
pub use record::{HistogramCore, MAX_CELL_COUNT};

/// A value inside each bucket of explicit `bounds` (`+Inf` implied): each bound, then just above
/// the last one. The values to give [`Histogram::record_counts`] with each bucket's count, in a
/// family whose boundaries are `bounds`.
///
/// ```
/// assert_eq!(sonde_core::histogram::bucket_values(&[0.1, 0.5]), [0.1, 0.5, 0.5f64.next_up()]);
/// ```
pub fn bucket_values(bounds: &[f64]) -> Vec<f64> {
    let mut values = bounds.to_vec();
    values.push(bounds.last().map_or(0.0, |b| b.next_up()));
    values
}

/// The middle (geometric) of bucket `index` of an exponential histogram at `scale`, in
/// OpenTelemetry's indexing: bucket `index` holds `(base^index, base^(index+1)]` with
/// `base = 2^(2^-scale)` (a Prometheus native histogram's bucket `i` is OpenTelemetry's
/// `i - 1`). The value that stands for the bucket's observations when they are recorded
/// into sonde's grid with [`Histogram::record_counts`].
///
/// ```
/// let m = sonde_core::histogram::exponential_middle(0, 0); // (1, 2]
/// assert!((m - 2f64.sqrt()).abs() < 1e-12);
/// ```
pub fn exponential_middle(scale: i32, index: i64) -> f64 {
    let base = 2f64.powf(2f64.powi(-scale));
    base.powf(index as f64 + 0.5)
}

/// What was added between two cumulative readings of `(value, count)` pairs: `now - before`
/// per value, or `None` when a count went down or a value disappeared (the source restarted).
pub fn counts_since(now: &[(f64, u64)], before: &[(f64, u64)]) -> Option<Vec<(f64, u64)>> {
    counts_between(now, before, None)
}

/// [`counts_since`] for exponential buckets stood at their middles (see
/// [`exponential_middle`]), `now` read at `scale`: a `before` value that is not one of `now`'s
/// counts in the `now` bucket that holds it. Sources lower the scale as a histogram's range
/// widens (client_golang's native histograms, the OpenTelemetry SDKs' exponential ones), and
/// the old buckets nest in the new ones, so what was added stays exact instead of looking like
/// a restart. `None` when a count went down or a value fits no bucket of `now`.
pub fn counts_since_at_scale(
    now: &[(f64, u64)],
    before: &[(f64, u64)],
    scale: i32,
) -> Option<Vec<(f64, u64)>> {
    counts_between(now, before, Some(scale))
}

fn counts_between(
    now: &[(f64, u64)],
    before: &[(f64, u64)],
    scale: Option<i32>,
) -> Option<Vec<(f64, u64)>> {
    // `now`'s values sorted, so each `before` value is found in O(log n).
    let mut sorted: Vec<(f64, usize)> = now.iter().enumerate().map(|(i, (v, _))| (*v, i)).collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let half_width = scale.map(|s| 0.5 * 2f64.powi(-s) * (1.0 + 1e-9));
    let mut taken = vec![0u64; now.len()];
    for &(v, n) in before {
        let at = sorted.partition_point(|(x, _)| x.total_cmp(&v).is_lt());
        let exact = sorted.get(at).filter(|(x, _)| *x == v).map(|(_, i)| *i);
        let index = match (exact, half_width) {
            (Some(i), _) => i,
            (None, Some(half)) if v != 0.0 && v.is_finite() => {
                // The neighbour of the same sign whose bucket holds v.
                let fits = |k: usize| {
                    sorted.get(k).and_then(|&(m, i)| {
                        (m.signum() == v.signum()
                            && m != 0.0
                            && (m.abs().log2() - v.abs().log2()).abs() <= half)
                            .then_some(i)
                    })
                };
                fits(at).or_else(|| at.checked_sub(1).and_then(fits))?
            }
            _ => return None,
        };
        taken[index] = taken[index].checked_add(n)?;
    }
    now.iter()
        .zip(&taken)
        .map(|(&(v, n), &t)| Some((v, n.checked_sub(t)?)))
        .collect()
}

/// A histogram series handle: records `f64` observations.
///
/// An observation is two relaxed atomic operations in the common case (its grid cell and the
/// sum) plus reads of min and max; nothing locks or hashes. It allocates only the first time a
/// value reaches a block of cells, and the first time a cell of that block passes 2^15
/// observations (its carries): a bounded cost per block, see the module docs.
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
            .field("count", &p.count())
            .field("sum", &p.sum())
            .finish()
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
    /// buckets. Finite values enter the sum; an infinity is counted but kept out of the sum,
    /// which would otherwise stay infinite (or NaN) for the life of the series. See
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
    ///   to the exact product). A product beyond `f64::MAX` is kept out of the sum, like an
    ///   infinity.
    /// - `n == 0` records nothing. NaN is ignored, as by `observe`.
    /// - `±Inf` is recorded as by `observe`: counted in the high (`+Inf`) or low (`-Inf`) cell,
    ///   bucket and count, and kept out of the sum, so the sum stays finite; min or max then
    ///   holds the infinity, which [`HistogramPoint::min`]/[`max`](HistogramPoint::max) report
    ///   as `None`.
    /// - Zero and negative values are counted, as by `observe`: in the low cell, in the exact
    ///   explicit buckets, and in the sum and min (a histogram does not know whether its unit
    ///   is signed).
    /// - Counts saturate: one grid cell of a series holds at most [`MAX_CELL_COUNT`] (2^46)
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

    /// Records `n` observations at each value of `counts` and adds `sum` to the sum (instead of
    /// each value times its count): for histograms mirrored from elsewhere, such as a scraped
    /// Prometheus histogram or a received OTLP point, whose bucket counts and sum are exact
    /// but whose single observations are unknown. Give each bucket's count at a value inside
    /// it (its upper bound, say) in a family whose explicit boundaries are that histogram's
    /// bounds: the explicit buckets, the count and the sum are then exact; the grid cells, min
    /// and max see the representative values.
    ///
    /// ```
    /// let registry = sonde_core::Registry::new();
    /// let h = registry
    ///     .histogram("mirrored")
    ///     .buckets([0.1, 0.5])
    ///     .build()?
    ///     .with::<&str>(&[]);
    /// // 3 observations <= 0.1, 2 in (0.1, 0.5], 1 above, summing to 1.37.
    /// h.record_counts(&[(0.1, 3), (0.5, 2), (0.5f64.next_up(), 1)], 1.37);
    /// let snap = registry.snapshot();
    /// let p = snap.point("mirrored", &[]).unwrap().histogram().unwrap();
    /// assert_eq!(p.count(), 6);
    /// assert_eq!(p.sum(), 1.37);
    /// let buckets: Vec<u64> = p.cumulative_buckets().iter().map(|b| b.1).collect();
    /// assert_eq!(buckets, [3, 5, 6]);
    /// # Ok::<(), sonde_core::Error>(())
    /// ```
    pub fn record_counts(&self, counts: &[(f64, u64)], sum: f64) {
        for &(v, n) in counts {
            self.0.core.record_n::<false>(v, n);
        }
        self.0.core.add_to_sum(sum);
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
