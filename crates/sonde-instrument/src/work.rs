//! Multi-step operations (phase timers) and business events with bounded label values.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use sonde_core::{Counter, Family, Histogram, Registry, Unit};

use crate::Error;

/// A histogram family `name{phase}` (seconds) for operations made of named steps.
///
/// ```
/// let registry = sonde_core::Registry::new();
/// let checkout = sonde_instrument::Phases::install(&registry, "checkout.phase.duration")?;
/// let mut t = checkout.start();
/// // ... validate the cart ...
/// t.checkpoint("validate");
/// // ... charge the card ...
/// t.checkpoint("charge");
/// # Ok::<(), sonde_instrument::Error>(())
/// ```
#[derive(Clone)]
pub struct Phases {
    family: Family<Histogram>,
    total: Option<Family<Histogram>>,
}

/// Most distinct outcomes of a [`PhaseTimer::finish`] family; more go to its overflow series.
pub const MAX_OUTCOMES: usize = 32;

impl Phases {
    /// Registers (or reuses) `name` with the label `phase`.
    pub fn install(registry: &Registry, name: &'static str) -> Result<Phases, Error> {
        Ok(Phases {
            family: registry
                .histogram(name)
                .description("Duration of each phase of a multi-step operation.")
                .unit(Unit::Seconds)
                .labels(["phase"])
                .build()?,
            total: None,
        })
    }

    /// Like [`install`](Self::install), and registers `total_name{outcome}` (seconds), where
    /// [`PhaseTimer::finish`] records each operation's whole duration and how it ended (at most
    /// [`MAX_OUTCOMES`] outcomes; more are counted in the overflow series).
    ///
    /// ```
    /// let registry = sonde_core::Registry::new();
    /// let checkout = sonde_instrument::Phases::install_with_total(
    ///     &registry, "checkout.phase.duration", "checkout.duration")?;
    /// let mut t = checkout.start();
    /// t.checkpoint("validate");
    /// t.checkpoint("charge");
    /// let secs = t.finish("paid");
    /// let snap = registry.snapshot();
    /// let total = snap.point("checkout.duration", &[("outcome", "paid")]).unwrap();
    /// assert_eq!(total.histogram().unwrap().count(), 1);
    /// assert!(secs >= 0.0);
    /// # Ok::<(), sonde_instrument::Error>(())
    /// ```
    pub fn install_with_total(
        registry: &Registry,
        name: &'static str,
        total_name: &'static str,
    ) -> Result<Phases, Error> {
        let mut phases = Phases::install(registry, name)?;
        phases.total = Some(
            registry
                .histogram(total_name)
                .description("Duration of a whole multi-step operation, by how it ended.")
                .unit(Unit::Seconds)
                .labels(["outcome"])
                .max_series(MAX_OUTCOMES)
                .build()?,
        );
        Ok(phases)
    }

    /// Starts a timer at the beginning of the first phase.
    pub fn start(&self) -> PhaseTimer<'_> {
        let now = Instant::now();
        PhaseTimer {
            phases: self,
            start: now,
            last: now,
        }
    }
}

/// Times consecutive phases; see [`Phases`].
pub struct PhaseTimer<'a> {
    phases: &'a Phases,
    start: Instant,
    last: Instant,
}

impl PhaseTimer<'_> {
    /// Ends the operation: records its whole duration with `outcome` (`"paid"`, `"declined"`,
    /// `"error"`...) when the phases were installed
    /// [with a total](Phases::install_with_total), and returns the seconds since
    /// [`start`](Phases::start). The phase in progress, if any, is not recorded: end it with
    /// [`checkpoint`](Self::checkpoint) first.
    pub fn finish(self, outcome: &str) -> f64 {
        let secs = self.start.elapsed().as_secs_f64();
        if let Some(total) = &self.phases.total {
            total.with(&[outcome]).observe(secs);
        }
        secs
    }

    /// Ends the phase called `phase` now (one clock read, one observation) and starts the next.
    /// Returns the phase's seconds.
    pub fn checkpoint(&mut self, phase: &str) -> f64 {
        let now = Instant::now();
        let secs = now.duration_since(self.last).as_secs_f64();
        self.phases.family.with(&[phase]).observe(secs);
        self.last = now;
        secs
    }
}

/// A counter of business events whose label takes values from a fixed set; anything else is
/// counted as `other`, so a typo or a user-supplied value can never explode cardinality.
///
/// ```
/// let registry = sonde_core::Registry::new();
/// let orders = sonde_instrument::Events::install(&registry, "orders.placed", "channel", &["web", "mobile", "api"])?;
/// orders.record("web");
/// orders.record("fax"); // counted as channel="other"
/// # Ok::<(), sonde_instrument::Error>(())
/// ```
#[derive(Clone)]
pub struct Events {
    allowed: Vec<(String, Counter)>,
    other: Counter,
}

impl Events {
    /// Registers `name{label}` and resolves one series per allowed value, plus `other`.
    pub fn install(
        registry: &Registry,
        name: &'static str,
        label: &'static str,
        values: &[&str],
    ) -> Result<Events, Error> {
        let family = registry
            .counter(name)
            .description("Business events by kind.")
            .labels([label])
            .max_series(values.len() + 1)
            .build()?;
        Ok(Events {
            allowed: values
                .iter()
                .map(|v| ((*v).to_owned(), family.with(&[*v])))
                .collect(),
            other: family.with(&["other"]),
        })
    }

    /// Counts one event of kind `value` (`other` if it is not an allowed value).
    #[inline]
    pub fn record(&self, value: &str) {
        self.add(value, 1);
    }

    /// Counts `n` events of kind `value`.
    pub fn add(&self, value: &str, n: u64) {
        match self.allowed.iter().find(|(v, _)| v == value) {
            Some((_, c)) => c.add(n),
            None => self.other.add(n),
        }
    }
}

/// One business event as the sampled log hook sees it: its dimension values (after the
/// `other` mapping), its value, and properties that must not become labels (an order id, a
/// customer tier).
#[derive(Debug, Clone, Copy)]
pub struct BusinessEvent<'a> {
    /// The event name.
    pub name: &'a str,
    /// `(dimension, value)` as recorded.
    pub dimensions: &'a [(&'a str, &'a str)],
    /// The value (amount, items), if the event had one.
    pub value: Option<f64>,
    /// Free-form properties, never labels.
    pub properties: &'a [(&'a str, &'a str)],
}

type Hook = Arc<dyn Fn(&BusinessEvent<'_>) + Send + Sync>;

/// Business events with a value (an amount, a number of items) and a few bounded dimensions:
/// a counter `name{dims}` of events and a histogram `name.value{dims}` of their values, each
/// dimension taking its values from a fixed set (anything else is `other`, so cardinality is
/// bounded by the product of the sets), and an optional hook that sees one event in N with
/// properties that must not become labels.
///
/// ```
/// let registry = sonde_core::Registry::new();
/// let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
/// let log = seen.clone();
/// let orders = sonde_instrument::BusinessEvents::builder("orders")
///     .dimension("channel", &["web", "mobile"])
///     .dimension("country", &["fr", "de", "us"])
///     .value_unit(sonde_core::Unit::None)
///     .sampled_log(10, move |e| {
///         // Events 0, 10 and 20 are seen; the last one has no order id.
///         if e.properties.iter().any(|(k, _)| *k == "order.id") {
///             log.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
///         }
///     })
///     .install(&registry)?;
/// for i in 0..20 {
///     orders.record_with(&["web", "fr"], Some(42.5), &[("order.id", &i.to_string())]);
/// }
/// orders.record(&["fax", "jp"], Some(10.0)); // channel="other", country="other"
/// let snap = registry.snapshot();
/// let n = snap.point("orders", &[("channel", "web"), ("country", "fr")]).unwrap();
/// assert_eq!(n.number().unwrap().as_f64(), 20.0);
/// let v = snap.point("orders.value", &[("channel", "other"), ("country", "other")]).unwrap();
/// assert_eq!(v.histogram().unwrap().sum(), 10.0);
/// assert_eq!(seen.load(std::sync::atomic::Ordering::Relaxed), 2);
/// # Ok::<(), sonde_instrument::Error>(())
/// ```
#[derive(Clone)]
pub struct BusinessEvents {
    name: Arc<str>,
    dimensions: Arc<[(String, Vec<String>)]>,
    count: Family<Counter>,
    value: Family<Histogram>,
    hook: Option<(u64, Hook)>,
    seen: Arc<AtomicU64>,
    invalid: Counter,
}

/// Configures [`BusinessEvents`].
#[must_use = "call .install(&registry)"]
pub struct BusinessEventsBuilder {
    name: &'static str,
    dimensions: Vec<(&'static str, Vec<String>)>,
    unit: Unit,
    hook: Option<(u64, Hook)>,
}

/// Most dimensions of a [`BusinessEvents`].
pub const MAX_DIMENSIONS: usize = 4;
/// Most values per dimension (plus `other`).
pub const MAX_DIMENSION_VALUES: usize = 64;

impl BusinessEvents {
    /// Starts configuring events called `name`.
    pub fn builder(name: &'static str) -> BusinessEventsBuilder {
        BusinessEventsBuilder {
            name,
            dimensions: Vec::new(),
            unit: Unit::None,
            hook: None,
        }
    }

    /// Records one event with `values` for the dimensions, in the order they were declared
    /// (missing ones are `other`), and an optional value.
    #[inline]
    pub fn record(&self, values: &[&str], value: Option<f64>) {
        self.record_with(values, value, &[]);
    }

    /// [`record`](Self::record) with properties for the sampled log hook (never labels).
    /// A NaN or infinite value counts the event but not the value, and is counted in
    /// `sonde.business_events.invalid_values{event}`; negative values (refunds) are recorded as
    /// they are.
    pub fn record_with(&self, values: &[&str], value: Option<f64>, properties: &[(&str, &str)]) {
        let mut labels: [&str; MAX_DIMENSIONS] = [""; MAX_DIMENSIONS];
        for (i, (_, allowed)) in self.dimensions.iter().enumerate() {
            let v = values.get(i).copied().unwrap_or("other");
            labels[i] = if allowed.iter().any(|a| a == v) {
                v
            } else {
                "other"
            };
        }
        let labels = &labels[..self.dimensions.len()];
        self.count.with(labels).inc();
        match value {
            Some(v) if v.is_finite() => self.value.with(labels).observe(v),
            Some(_) => self.invalid.inc(),
            None => {}
        }
        if let Some((every, hook)) = &self.hook
            && self
                .seen
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(*every)
        {
            let dims: Vec<(&str, &str)> = self
                .dimensions
                .iter()
                .map(|(d, _)| d.as_str())
                .zip(labels.iter().copied())
                .collect();
            hook(&BusinessEvent {
                name: &self.name,
                dimensions: &dims,
                value,
                properties,
            });
        }
    }
}

impl BusinessEventsBuilder {
    /// Adds a dimension (a label) with its allowed values; others become `other`. At most
    /// [`MAX_DIMENSIONS`] dimensions of [`MAX_DIMENSION_VALUES`] values each.
    pub fn dimension(mut self, name: &'static str, values: &[&str]) -> Self {
        self.dimensions
            .push((name, values.iter().map(|v| (*v).to_owned()).collect()));
        self
    }

    /// The unit of the values (default none: a count of items, an amount in a currency).
    pub fn value_unit(mut self, unit: Unit) -> Self {
        self.unit = unit;
        self
    }

    /// Calls `hook` for one event in `every` (the first, then every `every`-th), with its
    /// properties: a log line or a trace event for what must not become a label.
    pub fn sampled_log(
        mut self,
        every: u64,
        hook: impl Fn(&BusinessEvent<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.hook = Some((every.max(1), Arc::new(hook)));
        self
    }

    /// Registers `name` (counter) and `name.value` (histogram) with the dimensions as labels.
    pub fn install(self, registry: &Registry) -> Result<BusinessEvents, Error> {
        if self.dimensions.len() > MAX_DIMENSIONS
            || self
                .dimensions
                .iter()
                .any(|(_, v)| v.len() > MAX_DIMENSION_VALUES)
        {
            return Err(Error::Config(format!(
                "business events `{}`: at most {MAX_DIMENSIONS} dimensions of {MAX_DIMENSION_VALUES} values each; put the rest in properties",
                self.name
            )));
        }
        let labels: Vec<&'static str> = self.dimensions.iter().map(|(n, _)| *n).collect();
        let series = self
            .dimensions
            .iter()
            .map(|(_, v)| v.len() + 1)
            .product::<usize>()
            + 1;
        let count = registry
            .counter(self.name)
            .description("Business events, by their bounded dimensions.")
            .labels(labels.clone())
            .max_series(series)
            .build()?;
        let value = registry
            .histogram(format!("{}.value", self.name))
            .description("Values of business events (amounts, items), by their bounded dimensions.")
            .unit(self.unit)
            .labels(labels)
            .max_series(series)
            .build()?;
        let invalid = registry
            .counter("sonde.business_events.invalid_values")
            .description("Business event values that were NaN or infinite, left out, by event.")
            .labels(["event"])
            .build()
            .map(|f| f.with(&[self.name]))?;
        Ok(BusinessEvents {
            name: Arc::from(self.name),
            dimensions: self
                .dimensions
                .into_iter()
                .map(|(n, v)| (n.to_owned(), v))
                .collect(),
            count,
            value,
            hook: self.hook,
            seen: Arc::new(AtomicU64::new(0)),
            invalid,
        })
    }
}

/// `service.build.info{service.name, service.version, vcs.revision, rust.version}` = 1, the
/// `*_build_info` convention of Prometheus exporters, so dashboards can show which build runs
/// and alerts can join on it. Use [`build_info!`](crate::build_info), which fills in the
/// calling crate's name and version and the commit from `GIT_COMMIT`, `VERGEN_GIT_SHA` or
/// `GITHUB_SHA` at build time.
pub struct BuildInfo;

impl BuildInfo {
    /// Registers the gauge with these values (an empty revision when unknown).
    pub fn install(
        registry: &Registry,
        name: &str,
        version: &str,
        revision: Option<&str>,
    ) -> Result<(), Error> {
        registry
            .gauge("service.build.info")
            .description(
                "Always 1: which build of the service runs (name, version, commit, compiler).",
            )
            .labels([
                "service.name",
                "service.version",
                "vcs.revision",
                "rust.version",
            ])
            .max_series(4)
            .build()?
            .with(&[
                name,
                version,
                revision.unwrap_or(""),
                env!("SONDE_RUSTC_VERSION"),
            ])
            .set(1);
        Ok(())
    }
}

/// Registers `service.build.info` for the calling crate: its package name and version, the
/// commit from `GIT_COMMIT`, `VERGEN_GIT_SHA` or `GITHUB_SHA` when the build set one, and the
/// compiler's version.
///
/// ```
/// let registry = sonde_core::Registry::new();
/// sonde_instrument::build_info!(&registry)?;
/// let snap = registry.snapshot();
/// let f = snap.family("service.build.info").unwrap();
/// let labels = f.labels(&f.series[0]);
/// assert!(labels.contains(&("service.name", "sonde-instrument")));
/// assert!(labels.iter().any(|(k, v)| *k == "rust.version" && v.starts_with("1.")));
/// # Ok::<(), sonde_instrument::Error>(())
/// ```
#[macro_export]
macro_rules! build_info {
    ($registry:expr) => {
        $crate::BuildInfo::install(
            $registry,
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
            option_env!("GIT_COMMIT")
                .or(option_env!("VERGEN_GIT_SHA"))
                .or(option_env!("GITHUB_SHA")),
        )
    };
}
