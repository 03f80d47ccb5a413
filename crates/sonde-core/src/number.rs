//! Atomic number storage for counters and gauges.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// A number read from a series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    /// An unsigned integer (`Counter<u64>`).
    U64(u64),
    /// A signed integer (`Gauge<i64>`, `UpDownCounter<i64>`).
    I64(i64),
    /// A float (`*<f64>` instruments).
    F64(f64),
}

impl Number {
    /// The value as `f64` (large integers lose precision past 2^53).
    pub fn as_f64(self) -> f64 {
        match self {
            Number::U64(v) => v as f64,
            Number::I64(v) => v as f64,
            Number::F64(v) => v,
        }
    }

    /// `self - earlier`, the change between two reads of the same series.
    pub(crate) fn minus(self, earlier: Number) -> Number {
        match (self, earlier) {
            (Number::U64(a), Number::U64(b)) => Number::U64(a.wrapping_sub(b)),
            (Number::I64(a), Number::I64(b)) => Number::I64(a.wrapping_sub(b)),
            (Number::F64(a), Number::F64(b)) => Number::F64(a - b),
            (a, _) => a,
        }
    }
}

/// The kind of number an instrument holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NumberKind {
    /// `u64`
    U64,
    /// `i64`
    I64,
    /// `f64`
    F64,
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for u64 {}
    impl Sealed for i64 {}
    impl Sealed for f64 {}
}

/// Numbers an instrument can hold: `u64` and `f64` for counters, `i64` and `f64` for gauges
/// and up-down counters. Sealed.
pub trait AtomicNumber: sealed::Sealed + Copy + Send + Sync + 'static {
    #[doc(hidden)]
    type Atomic: Send + Sync + 'static;
    #[doc(hidden)]
    const KIND: NumberKind;
    #[doc(hidden)]
    const ONE: Self;
    #[doc(hidden)]
    fn new_atomic() -> Self::Atomic;
    #[doc(hidden)]
    fn add(a: &Self::Atomic, v: Self);
    #[doc(hidden)]
    fn sub(a: &Self::Atomic, v: Self);
    #[doc(hidden)]
    fn set(a: &Self::Atomic, v: Self);
    #[doc(hidden)]
    fn load(a: &Self::Atomic) -> Number;
    #[doc(hidden)]
    fn get(a: &Self::Atomic) -> Self;
    #[doc(hidden)]
    fn is_non_negative(v: Self) -> bool;
    #[doc(hidden)]
    fn plus(a: Number, b: Number) -> Number;
}

/// Implements [`AtomicNumber`] for an integer type stored in its own atomic type: adds wrap,
/// like the atomics' `fetch_add`. `is_non_negative` tells whether a value may be added to a
/// counter.
macro_rules! integer_atomic_number {
    ($int:ty, $atomic:ident, $variant:ident, is_non_negative($v:ident) = $non_negative:expr) => {
        impl AtomicNumber for $int {
            type Atomic = $atomic;
            const KIND: NumberKind = NumberKind::$variant;
            const ONE: $int = 1;
            fn new_atomic() -> $atomic {
                $atomic::new(0)
            }
            #[inline(always)]
            fn add(a: &$atomic, v: $int) {
                a.fetch_add(v, Relaxed);
            }
            #[inline(always)]
            fn sub(a: &$atomic, v: $int) {
                a.fetch_sub(v, Relaxed);
            }
            #[inline(always)]
            fn set(a: &$atomic, v: $int) {
                a.store(v, Relaxed);
            }
            fn load(a: &$atomic) -> Number {
                Number::$variant(a.load(Relaxed))
            }
            fn get(a: &$atomic) -> $int {
                a.load(Relaxed)
            }
            #[inline(always)]
            fn plus(a: Number, b: Number) -> Number {
                match (a, b) {
                    (Number::$variant(x), Number::$variant(y)) => {
                        Number::$variant(x.wrapping_add(y))
                    }
                    (a, _) => a,
                }
            }
            #[inline(always)]
            fn is_non_negative($v: $int) -> bool {
                $non_negative
            }
        }
    };
}

integer_atomic_number!(u64, AtomicU64, U64, is_non_negative(_v) = true);
integer_atomic_number!(i64, AtomicI64, I64, is_non_negative(v) = v >= 0);

impl AtomicNumber for f64 {
    type Atomic = AtomicU64;
    const KIND: NumberKind = NumberKind::F64;
    const ONE: f64 = 1.0;
    fn new_atomic() -> AtomicU64 {
        AtomicU64::new(0f64.to_bits())
    }
    #[inline(always)]
    fn add(a: &AtomicU64, v: f64) {
        add_f64(a, v);
    }
    #[inline(always)]
    fn sub(a: &AtomicU64, v: f64) {
        add_f64(a, -v);
    }
    #[inline(always)]
    fn set(a: &AtomicU64, v: f64) {
        a.store(v.to_bits(), Relaxed);
    }
    fn load(a: &AtomicU64) -> Number {
        Number::F64(f64::from_bits(a.load(Relaxed)))
    }
    fn get(a: &AtomicU64) -> f64 {
        f64::from_bits(a.load(Relaxed))
    }
    #[inline(always)]
    fn plus(a: Number, b: Number) -> Number {
        match (a, b) {
            (Number::F64(x), Number::F64(y)) => Number::F64(x + y),
            (a, _) => a,
        }
    }
    #[inline(always)]
    fn is_non_negative(v: f64) -> bool {
        v >= 0.0
    }
}

/// Adds to an `f64` stored as bits: a compare-and-swap loop, one atomic operation when uncontended.
#[inline(always)]
pub(crate) fn add_f64(a: &AtomicU64, v: f64) {
    let mut cur = a.load(Relaxed);
    loop {
        let new = (f64::from_bits(cur) + v).to_bits();
        match a.compare_exchange_weak(cur, new, Relaxed, Relaxed) {
            Ok(_) => return,
            Err(actual) => cur = actual,
        }
    }
}

/// A cache line holding one stripe of a striped counter.
#[repr(align(64))]
struct Padded<T>(T);

/// Storage of a counter, up-down counter or gauge: one atomic, plus per-thread stripes on their
/// own cache lines for striped families, so threads adding to the same series do not contend.
pub struct NumberCore<N: AtomicNumber> {
    value: N::Atomic,
    stripes: Option<Box<[Padded<N::Atomic>]>>,
}

impl<N: AtomicNumber> NumberCore<N> {
    pub(crate) fn new(stripes: usize) -> Self {
        NumberCore {
            value: N::new_atomic(),
            stripes: (stripes > 1).then(|| {
                (0..stripes.next_power_of_two())
                    .map(|_| Padded(N::new_atomic()))
                    .collect()
            }),
        }
    }

    /// The atomic an add goes to: the calling thread's stripe, or the single value.
    #[inline(always)]
    pub(crate) fn slot(&self) -> &N::Atomic {
        match &self.stripes {
            None => &self.value,
            Some(s) => &s[thread_stripe() & (s.len() - 1)].0,
        }
    }

    /// The single value, for `set` (gauges are never striped).
    #[inline(always)]
    pub(crate) fn value(&self) -> &N::Atomic {
        &self.value
    }

    /// Adds everything `src` holds (its value and every stripe) to this core's value, or, with
    /// `replace`, stores `src`'s value (gauges, which are never striped). For moving a series
    /// into another family; not for the hot path.
    pub(crate) fn absorb(&self, src: &NumberCore<N>, replace: bool) {
        if replace {
            N::set(&self.value, N::get(&src.value));
            return;
        }
        N::add(&self.value, N::get(&src.value));
        for p in src.stripes.iter().flatten() {
            N::add(&self.value, N::get(&p.0));
        }
    }

    pub(crate) fn load(&self) -> Number {
        let mut n = N::load(&self.value);
        if let Some(s) = &self.stripes {
            for p in s.iter() {
                n = N::plus(n, N::load(&p.0));
            }
        }
        n
    }
}

std::thread_local! {
    static STRIPE: std::cell::Cell<usize> = const { std::cell::Cell::new(usize::MAX) };
}
static NEXT_STRIPE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A small per-thread number, handed out round-robin on first use.
#[inline(always)]
pub(crate) fn thread_stripe() -> usize {
    let v = STRIPE.get();
    if v != usize::MAX { v } else { assign_stripe() }
}

#[cold]
#[inline(never)]
fn assign_stripe() -> usize {
    let n = NEXT_STRIPE.fetch_add(1, Relaxed) & (usize::MAX >> 1);
    STRIPE.set(n);
    n
}

/// Stripes for a striped family: enough that the threads of this machine rarely share one.
pub(crate) fn default_stripes() -> usize {
    static N: std::sync::LazyLock<usize> = std::sync::LazyLock::new(|| {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(4);
        (2 * cpus).next_power_of_two().min(32)
    });
    *N
}
