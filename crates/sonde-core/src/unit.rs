//! Units of measure, in UCUM as OpenTelemetry writes them.

use std::borrow::Cow;
use std::fmt;

/// The unit of a family's values.
///
/// Prefer [`Unit::Seconds`] and [`Unit::Bytes`]: the OpenTelemetry conventions measure durations in
/// seconds and sizes in bytes, and exporters render those suffixes (`_seconds`, `_bytes`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Unit {
    /// No unit (`"1"` is a ratio or a plain count; this is "unspecified").
    #[default]
    None,
    /// A dimensionless ratio or count (`"1"`).
    Ratio,
    /// Seconds (`"s"`).
    Seconds,
    /// Milliseconds (`"ms"`), for data that arrives in milliseconds (StatsD timers).
    Milliseconds,
    /// Bytes (`"By"`).
    Bytes,
    /// Percent (`"%"`).
    Percent,
    /// A count of things, written as an annotation such as `"{request}"`.
    Count(Cow<'static, str>),
    /// Any other UCUM unit string.
    Custom(Cow<'static, str>),
}

impl Unit {
    /// The UCUM string (`"s"`, `"By"`, `"1"`, `"{request}"`...), empty for [`Unit::None`].
    pub fn ucum(&self) -> &str {
        match self {
            Unit::None => "",
            Unit::Ratio => "1",
            Unit::Seconds => "s",
            Unit::Milliseconds => "ms",
            Unit::Bytes => "By",
            Unit::Percent => "%",
            Unit::Count(s) | Unit::Custom(s) => s,
        }
    }

    /// Parses a UCUM string back into a unit.
    pub fn from_ucum(s: &str) -> Unit {
        match s {
            "" => Unit::None,
            "1" => Unit::Ratio,
            "s" => Unit::Seconds,
            "ms" => Unit::Milliseconds,
            "By" => Unit::Bytes,
            "%" => Unit::Percent,
            s if s.starts_with('{') && s.ends_with('}') => Unit::Count(Cow::Owned(s.to_owned())),
            s => Unit::Custom(Cow::Owned(s.to_owned())),
        }
    }

    /// How many of this unit make one second, for timers (`None` if not a time unit).
    pub fn per_second(&self) -> Option<f64> {
        match self {
            Unit::Seconds => Some(1.0),
            Unit::Milliseconds => Some(1e3),
            _ => None,
        }
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.ucum())
    }
}
