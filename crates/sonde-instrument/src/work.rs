//! Multi-step operations (phase timers) and business events with bounded label values.

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
}

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
        })
    }

    /// Starts a timer at the beginning of the first phase.
    pub fn start(&self) -> PhaseTimer<'_> {
        PhaseTimer {
            phases: self,
            last: Instant::now(),
        }
    }
}

/// Times consecutive phases; see [`Phases`].
pub struct PhaseTimer<'a> {
    phases: &'a Phases,
    last: Instant,
}

impl PhaseTimer<'_> {
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
