//! Counters, gauges and up-down counters, and the trait every instrument implements.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::histogram::Precision;
use crate::kind::Kind;
use crate::labels::LabelValues;
use crate::number::{AtomicNumber, NumberCore, NumberKind};
use crate::series::Series;
use crate::snapshot::Point;
use crate::{Error, Number, Unit};

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

pub(crate) mod sealed {
    pub trait Sealed {}
}

/// An instrument handle type: [`Counter`], [`Gauge`], [`UpDownCounter`] or
/// [`Histogram`](crate::Histogram). Sealed; the hidden items are the engine's plumbing.
pub trait Instrument: sealed::Sealed + Clone + Send + Sync + 'static {
    #[doc(hidden)]
    type Core: Send + Sync + 'static;
    #[doc(hidden)]
    type Config: Send + Sync + 'static;
    #[doc(hidden)]
    const KIND: Kind;
    #[doc(hidden)]
    const NUMBER: NumberKind;
    #[doc(hidden)]
    const RESERVED_LABELS: &'static [&'static str];
    #[doc(hidden)]
    fn make_config(
        name: &str,
        unit: &Unit,
        options: &InstrumentOptions,
    ) -> Result<Self::Config, Error>;
    #[doc(hidden)]
    fn fallback_config() -> Self::Config;
    #[doc(hidden)]
    fn new_core(config: &Arc<Self::Config>) -> Self::Core;
    #[doc(hidden)]
    fn from_series(series: Arc<Series<Self::Core>>) -> Self;
    #[doc(hidden)]
    fn read(core: &Self::Core) -> Point;
    /// Adds what `src` recorded to `dst` (a gauge takes `src`'s value): how
    /// [`Registry::widen_family`](crate::Registry::widen_family) moves a series.
    #[doc(hidden)]
    fn absorb(dst: &Self::Core, src: &Self::Core);
    /// Estimated bytes of one series' storage (inline and heap), for the registry's memory
    /// budget.
    #[doc(hidden)]
    fn core_bytes(_config: &Self::Config) -> usize {
        std::mem::size_of::<Self::Core>()
    }
    /// Estimated heap bytes of a family's configuration (the histogram layout).
    #[doc(hidden)]
    fn config_bytes(_config: &Self::Config) -> usize {
        0
    }

    /// A handle that records into a private series no registry exports.
    ///
    /// Returned when a series cannot be resolved (wrong label count, failed static
    /// registration) so the hot path never fails or panics.
    fn detached(config: &Arc<Self::Config>) -> Self {
        Self::from_series(Series::new(
            LabelValues::empty(),
            false,
            Self::new_core(config),
        ))
    }
}

/// Numbers a counter can count: `u64` and `f64`.
pub trait CounterNumber: AtomicNumber {}
impl CounterNumber for u64 {}
impl CounterNumber for f64 {}

/// Numbers a gauge or up-down counter can hold: `i64` and `f64`.
pub trait GaugeNumber: AtomicNumber {}
impl GaugeNumber for i64 {}
impl GaugeNumber for f64 {}

macro_rules! number_instrument {
    ($(#[$doc:meta])* $name:ident, $bound:ident, $default:ty, $kind:expr) => {
        $(#[$doc])*
        #[must_use = "a handle records nothing until you call a method on it"]
        pub struct $name<N: $bound = $default>(pub(crate) Arc<Series<NumberCore<N>>>, PhantomData<fn(N)>);

        impl<N: $bound> Clone for $name<N> {
            fn clone(&self) -> Self {
                $name(self.0.clone(), PhantomData)
            }
        }

        impl<N: $bound> fmt::Debug for $name<N> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name)).field("value", &self.value()).finish()
            }
        }

        impl<N: $bound> sealed::Sealed for $name<N> {}

        impl<N: $bound> Instrument for $name<N> {
            type Core = NumberCore<N>;
            type Config = usize;
            const KIND: Kind = $kind;
            const NUMBER: NumberKind = N::KIND;
            const RESERVED_LABELS: &'static [&'static str] = &[];
            fn make_config(_: &str, _: &Unit, options: &InstrumentOptions) -> Result<usize, Error> {
                // Gauges are set, not added to, so stripes would not add up.
                Ok(if $kind == Kind::Gauge { 1 } else { options.stripes.unwrap_or(1) })
            }
            fn fallback_config() -> usize {
                1
            }
            fn new_core(stripes: &Arc<usize>) -> NumberCore<N> {
                NumberCore::new(**stripes)
            }
            fn core_bytes(stripes: &usize) -> usize {
                // Striped cores keep one cache line per stripe on the heap.
                std::mem::size_of::<NumberCore<N>>() + if *stripes > 1 { stripes * 64 } else { 0 }
            }
            fn from_series(series: Arc<Series<NumberCore<N>>>) -> Self {
                $name(series, PhantomData)
            }
            fn read(core: &NumberCore<N>) -> Point {
                match $kind {
                    Kind::Counter => Point::Counter(core.load()),
                    Kind::UpDownCounter => Point::UpDownCounter(core.load()),
                    _ => Point::Gauge(core.load()),
                }
            }
            fn absorb(dst: &NumberCore<N>, src: &NumberCore<N>) {
                dst.absorb(src, $kind == Kind::Gauge);
            }
        }

        impl<N: $bound> $name<N> {
            /// Whether this handle records into its family's overflow series (the label set
            /// was past the series limit or the memory budget when it was resolved).
            pub fn is_overflow(&self) -> bool {
                self.0.header.is_overflow()
            }

            /// The current value (for tests and diagnostics; exporters read snapshots).
            pub fn value(&self) -> Number {
                self.0.core.load()
            }
        }
    };
}

number_instrument!(
    /// A monotonic counter: requests served, bytes sent, seconds of CPU.
    ///
    /// `Counter` (`u64`) and `Counter<f64>`. Each increment is one relaxed atomic
    /// operation on the series; negative or NaN increments of `Counter<f64>` are ignored,
    /// since a counter never goes down.
    ///
    /// ```
    /// let registry = sonde_core::Registry::new();
    /// let requests = registry.counter("http.server.requests").labels(["method"]).build()?;
    /// let get = requests.with(&["GET"]);
    /// get.inc();
    /// get.add(2);
    /// assert_eq!(get.value(), sonde_core::Number::U64(3));
    /// # Ok::<(), sonde_core::Error>(())
    /// ```
    Counter, CounterNumber, u64, Kind::Counter
);

number_instrument!(
    /// A gauge: the last value of something that goes up and down (temperature, queue depth,
    /// pool size). `Gauge` (`i64`) and `Gauge<f64>`.
    ///
    /// ```
    /// let registry = sonde_core::Registry::new();
    /// let depth = registry.gauge("queue.depth").build()?.handle();
    /// depth.set(10);
    /// depth.dec();
    /// assert_eq!(depth.value(), sonde_core::Number::I64(9));
    /// # Ok::<(), sonde_core::Error>(())
    /// ```
    Gauge, GaugeNumber, i64, Kind::Gauge
);

number_instrument!(
    /// An up-down counter: a sum that can decrease, like active requests or items in a cache.
    /// `UpDownCounter` (`i64`) and `UpDownCounter<f64>`. Unlike a gauge it is only ever
    /// added to, so delta exports carry the change.
    ///
    /// ```
    /// let registry = sonde_core::Registry::new();
    /// let active = registry.up_down_counter("http.server.active_requests").build()?.handle();
    /// active.inc();
    /// active.dec();
    /// assert_eq!(active.value(), sonde_core::Number::I64(0));
    /// # Ok::<(), sonde_core::Error>(())
    /// ```
    UpDownCounter, GaugeNumber, i64, Kind::UpDownCounter
);

impl<N: CounterNumber> Counter<N> {
    /// Adds one.
    #[inline(always)]
    pub fn inc(&self) {
        N::add(self.0.core.slot(), N::ONE);
    }

    /// Adds `v`; negative and NaN values are ignored.
    #[inline(always)]
    pub fn add(&self, v: N) {
        if N::is_non_negative(v) {
            N::add(self.0.core.slot(), v);
        }
    }
}

impl<N: GaugeNumber> Gauge<N> {
    /// Sets the value.
    #[inline(always)]
    pub fn set(&self, v: N) {
        N::set(self.0.core.value(), v);
    }
}

/// Writes `add`, `sub`, `inc` and `dec` of an instrument that goes both ways, on the atomic
/// its core's `$cell` gives: a gauge's single value (it is also set), an up-down counter's
/// stripe for the calling thread.
macro_rules! up_down_methods {
    ($name:ident, $cell:ident) => {
        impl<N: GaugeNumber> $name<N> {
            /// Adds `v` (which may be negative).
            #[inline(always)]
            pub fn add(&self, v: N) {
                N::add(self.0.core.$cell(), v);
            }

            /// Subtracts `v`.
            #[inline(always)]
            pub fn sub(&self, v: N) {
                N::sub(self.0.core.$cell(), v);
            }

            /// Adds one.
            #[inline(always)]
            pub fn inc(&self) {
                self.add(N::ONE);
            }

            /// Subtracts one.
            #[inline(always)]
            pub fn dec(&self) {
                self.sub(N::ONE);
            }
        }
    };
}

up_down_methods!(Gauge, value);
up_down_methods!(UpDownCounter, slot);
