//! `metrics` handle implementations over sonde handles.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use metrics::{CounterFn, GaugeFn, HistogramFn};
use sonde_core::{Counter, Family, Gauge, Histogram};

use crate::reason;

/// How a counter handle turns `absolute(v)` into additions.
pub(crate) enum Absolute {
    /// The handle is cached per key, so it sees every `absolute` of its key: it remembers the
    /// largest value and adds the growth.
    Tracked(AtomicU64),
    /// The handle is not cached (the key cache is full), so a call site that registers on every
    /// call gets a fresh handle each time and the previous value is unknown: `absolute` is
    /// ignored and counted.
    Untracked {
        errors: Option<Family<Counter>>,
        metric: Arc<str>,
    },
}

/// A `metrics` counter over a sonde `Counter` (`u64`).
pub(crate) struct CounterHandle {
    pub(crate) counter: Counter,
    pub(crate) absolute: Absolute,
}

impl CounterFn for CounterHandle {
    #[inline]
    fn increment(&self, value: u64) {
        self.counter.add(value);
    }

    fn absolute(&self, value: u64) {
        match &self.absolute {
            Absolute::Tracked(last) => {
                let prev = last.fetch_max(value, Relaxed);
                if value > prev {
                    self.counter.add(value - prev);
                }
            }
            Absolute::Untracked { errors, metric } => {
                if let Some(f) = errors {
                    f.with(&[&**metric, reason::ABSOLUTE_UNCACHED]).inc();
                }
            }
        }
    }
}

/// A `metrics` gauge over a sonde `Gauge<f64>`.
pub(crate) struct GaugeHandle(pub(crate) Gauge<f64>);

impl GaugeFn for GaugeHandle {
    #[inline]
    fn increment(&self, value: f64) {
        self.0.add(value);
    }

    #[inline]
    fn decrement(&self, value: f64) {
        self.0.sub(value);
    }

    #[inline]
    fn set(&self, value: f64) {
        self.0.set(value);
    }
}

/// A `metrics` histogram over a sonde `Histogram`.
pub(crate) struct HistogramHandle(pub(crate) Histogram);

impl HistogramFn for HistogramHandle {
    #[inline]
    fn record(&self, value: f64) {
        self.0.observe(value);
    }

    /// One batched update instead of the trait's default loop of `count` records.
    #[inline]
    fn record_many(&self, value: f64, count: usize) {
        self.0.observe_n(value, count as u64);
    }
}
