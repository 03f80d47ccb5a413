//! Families declared in `static`s, registered in the global registry on first use.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use crate::family::Family;
use crate::instrument::Instrument;
use crate::registry::Registry;
use crate::{Error, Unit};

/// A family known at compile time, registered in [`Registry::global`] on first use.
///
/// ```
/// use sonde_core::{Counter, LazyFamily, Unit};
/// static JOBS: LazyFamily<Counter> = LazyFamily::new("jobs.processed")
///     .description("Jobs processed, by queue.")
///     .labels(&["queue"]);
///
/// JOBS.with(&["emails"]).inc();
/// ```
///
/// If registration fails (a conflicting definition elsewhere), handles are detached, the
/// error is kept in [`get`](Self::get), and `sonde.instrumentation.errors` is not affected:
/// static definitions are checked by tests with [`LazyFamily::get`].
pub struct LazyFamily<M: Instrument> {
    name: &'static str,
    description: &'static str,
    unit: Option<fn() -> Unit>,
    labels: &'static [&'static str],
    buckets: Option<&'static [f64]>,
    cell: OnceLock<Result<Family<M>, Error>>,
    detached: OnceLock<Arc<M::Config>>,
}

impl<M: Instrument> LazyFamily<M> {
    /// Declares a family named `name`.
    pub const fn new(name: &'static str) -> Self {
        LazyFamily {
            name,
            description: "",
            unit: None,
            labels: &[],
            buckets: None,
            cell: OnceLock::new(),
            detached: OnceLock::new(),
        }
    }

    /// Sets the description.
    pub const fn description(mut self, d: &'static str) -> Self {
        self.description = d;
        self
    }

    /// Sets the label names.
    pub const fn labels(mut self, labels: &'static [&'static str]) -> Self {
        self.labels = labels;
        self
    }

    /// Sets the unit as a function, since [`Unit`] is not `const`-constructible for every unit:
    /// `.unit(|| Unit::Seconds)`.
    pub const fn unit(mut self, unit: fn() -> Unit) -> Self {
        self.unit = Some(unit);
        self
    }

    /// Sets explicit histogram buckets (ignored for other instruments).
    pub const fn buckets(mut self, buckets: &'static [f64]) -> Self {
        self.buckets = Some(buckets);
        self
    }

    /// The registered family, or why registration failed.
    pub fn get(&self) -> Result<&Family<M>, &Error> {
        self.cell
            .get_or_init(|| {
                let registry = Registry::global();
                let unit = self.unit.map(|f| f()).unwrap_or_default();
                let mut b = registry
                    .family::<M>(Cow::Borrowed(self.name))
                    .description(self.description)
                    .unit(unit)
                    .labels(self.labels.iter().copied());
                if let Some(buckets) = self.buckets {
                    b.histogram.buckets = Some(buckets.to_vec());
                }
                b.build().map_err(|e| Error::Static {
                    name: self.name.to_owned(),
                    reason: e.to_string(),
                })
            })
            .as_ref()
    }

    /// The series with these label values (see [`Family::with`]).
    #[inline]
    pub fn with<S: AsRef<str>>(&self, values: &[S]) -> M {
        match self.get() {
            Ok(f) => f.with(values),
            Err(_) => self.detached_handle(),
        }
    }

    /// The only series of an unlabelled family.
    #[inline]
    pub fn handle(&self) -> M {
        match self.get() {
            Ok(f) => f.handle(),
            Err(_) => self.detached_handle(),
        }
    }

    #[cold]
    fn detached_handle(&self) -> M {
        let config = self.detached.get_or_init(|| Arc::new(M::fallback_config()));
        M::detached(config)
    }
}

/// Declares or reuses a counter in the global registry and returns its handle.
///
/// With literal label values the handle is cached per call site (no lookup at all after the
/// first call); with computed values the family is cached and the series looked up.
///
/// ```
/// sonde_core::counter!("cache.requests", "cache.name" => "users", "cache.result" => "hit").inc();
/// let result = "miss";
/// sonde_core::counter!("cache.requests", "cache.name" => "users", "cache.result" => result).inc();
/// ```
#[macro_export]
macro_rules! counter {
    ($($tt:tt)*) => { $crate::__metric!($crate::Counter, $($tt)*) };
}

/// Declares or reuses an `i64` gauge in the global registry; see [`counter!`].
#[macro_export]
macro_rules! gauge {
    ($($tt:tt)*) => { $crate::__metric!($crate::Gauge, $($tt)*) };
}

/// Declares or reuses a histogram in the global registry; see [`counter!`]. Names ending in
/// `.duration` get the unit seconds.
///
/// ```
/// sonde_core::histogram!("job.duration", "queue" => "emails").observe(0.25);
/// ```
#[macro_export]
macro_rules! histogram {
    ($($tt:tt)*) => { $crate::__metric!($crate::Histogram, $($tt)*) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __metric {
    ($ty:ty, $name:literal $(,)?) => {{
        static __HANDLE: ::std::sync::OnceLock<$ty> = ::std::sync::OnceLock::new();
        __HANDLE
            .get_or_init(|| $crate::__family::<$ty>($name, &[]).handle())
            .clone()
    }};
    ($ty:ty, $name:literal $(, $k:literal => $v:literal)+ $(,)?) => {{
        static __HANDLE: ::std::sync::OnceLock<$ty> = ::std::sync::OnceLock::new();
        __HANDLE
            .get_or_init(|| $crate::__family::<$ty>($name, &[$($k),+]).with(&[$($v),+]))
            .clone()
    }};
    ($ty:ty, $name:literal $(, $k:literal => $v:expr)+ $(,)?) => {{
        static __FAMILY: $crate::LazyFamily<$ty> = $crate::LazyFamily::new($name)
            .labels(&[$($k),+])
            .unit($crate::__unit_for_name($name));
        __FAMILY.with(&[$(::core::convert::AsRef::<str>::as_ref(&$v)),+])
    }};
}

#[doc(hidden)]
pub fn __family<M: Instrument>(
    name: &'static str,
    labels: &'static [&'static str],
) -> LazyFamily<M> {
    LazyFamily::new(name)
        .labels(labels)
        .unit(__unit_for_name(name))
}

#[doc(hidden)]
pub const fn __unit_for_name(name: &str) -> fn() -> Unit {
    let b = name.as_bytes();
    let s = b".duration";
    if b.len() >= s.len() {
        let mut i = 0;
        let mut eq = true;
        while i < s.len() {
            if b[b.len() - s.len() + i] != s[i] {
                eq = false;
            }
            i += 1;
        }
        if eq {
            return || Unit::Seconds;
        }
    }
    || Unit::None
}
