//! The kind of an instrument: what every layer (errors, names, snapshots) may name without
//! depending on the instruments themselves.

use std::fmt;

/// What kind of instrument a family holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Monotonic sum.
    Counter,
    /// Non-monotonic sum.
    UpDownCounter,
    /// Last value.
    Gauge,
    /// Distribution.
    Histogram,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Counter => "counter",
            Kind::UpDownCounter => "up-down counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        })
    }
}
