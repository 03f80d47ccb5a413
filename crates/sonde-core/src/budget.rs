//! The registry-wide memory budget: a cap on live series and on their estimated bytes, checked
//! before a new series is allocated.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Limits on every series of a registry together, on top of each family's series limit. Past
/// either, a new label set goes to its family's overflow series and is counted in
/// `sonde.series.refused{metric,reason="budget"}`; series that are removed or expire give
/// their share back. Existing series record as before.
///
/// ```
/// use sonde_core::{MemoryBudget, Registry};
/// let registry = Registry::with_budget(2000, MemoryBudget::new(10_000, 64 << 20));
/// assert_eq!(registry.budget().unwrap().max_series(), 10_000);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBudget {
    max_series: usize,
    max_bytes: usize,
}

impl MemoryBudget {
    /// At most `max_series` series taking at most `max_bytes` (estimated: a histogram series
    /// is charged what it holds with every cell block allocated, 1.9 KB at the default
    /// precision, though most hold about half that; a counter or gauge about 150 bytes, plus its
    /// label values).
    pub fn new(max_series: usize, max_bytes: usize) -> Self {
        MemoryBudget {
            max_series,
            max_bytes,
        }
    }

    /// The series cap.
    pub fn max_series(&self) -> usize {
        self.max_series
    }

    /// The byte cap.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }
}

/// What is in use, shared by the families of one registry.
#[derive(Debug)]
pub(crate) struct BudgetState {
    pub(crate) limits: MemoryBudget,
    series: AtomicUsize,
    bytes: AtomicUsize,
}

impl BudgetState {
    pub(crate) fn new(limits: MemoryBudget) -> Self {
        BudgetState {
            limits,
            series: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
        }
    }

    /// Takes one series of `bytes` if both fit. Two relaxed reads and, when it fits, two adds:
    /// racing creators can overshoot by one series each, which is fine for an estimate.
    #[inline]
    pub(crate) fn try_take(&self, bytes: usize) -> bool {
        if self.series.load(Relaxed) >= self.limits.max_series
            || self.bytes.load(Relaxed).saturating_add(bytes) > self.limits.max_bytes
        {
            return false;
        }
        self.take(1, bytes);
        true
    }

    /// Takes without checking: series that exist already (widening, a family's only series).
    pub(crate) fn take(&self, series: usize, bytes: usize) {
        self.series.fetch_add(series, Relaxed);
        self.bytes.fetch_add(bytes, Relaxed);
    }

    pub(crate) fn give_back(&self, series: usize, bytes: usize) {
        // Saturating: never wrap on a bookkeeping slip.
        let _ = self
            .series
            .fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(series)));
        let _ = self
            .bytes
            .fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(bytes)));
    }

    /// Whether a series of `bytes` would be refused now.
    pub(crate) fn full(&self, bytes: usize) -> bool {
        self.series.load(Relaxed) >= self.limits.max_series
            || self.bytes.load(Relaxed).saturating_add(bytes) > self.limits.max_bytes
    }

    pub(crate) fn used(&self) -> (usize, usize) {
        (self.series.load(Relaxed), self.bytes.load(Relaxed))
    }
}
