//! `metrics` units to sonde units, and the histogram buckets that go with them.

use std::borrow::Cow;

use sonde_core::Unit;
use sonde_core::histogram::{DEFAULT_BYTES_BUCKETS, DEFAULT_SECONDS_BUCKETS};

/// The sonde unit for a `metrics` unit.
///
/// | `metrics::Unit` | sonde [`Unit`] (UCUM) |
/// |---|---|
/// | `Count` | `Unit::Count("{count}")` |
/// | `Percent` | `Unit::Percent` (`%`) |
/// | `Seconds`, `Milliseconds` | `Unit::Seconds` (`s`), `Unit::Milliseconds` (`ms`) |
/// | `Microseconds`, `Nanoseconds` | `Unit::Custom("us")`, `Unit::Custom("ns")` |
/// | `Bytes` | `Unit::Bytes` (`By`) |
/// | `Kibibytes` ... `Tebibytes` | `Unit::Custom("KiBy")` ... `Unit::Custom("TiBy")` |
/// | `BitsPerSecond` ... `TerabitsPerSecond` | `Unit::Custom("bit/s")` ... `Unit::Custom("Tbit/s")` |
/// | `CountPerSecond` | `Unit::Custom("{count}/s")` |
///
/// Values are never rescaled: a histogram described in nanoseconds holds nanoseconds.
pub fn sonde_unit(unit: metrics::Unit) -> Unit {
    use metrics::Unit as M;
    let custom = |s: &'static str| Unit::Custom(Cow::Borrowed(s));
    match unit {
        M::Count => Unit::Count(Cow::Borrowed("{count}")),
        M::Percent => Unit::Percent,
        M::Seconds => Unit::Seconds,
        M::Milliseconds => Unit::Milliseconds,
        M::Microseconds => custom("us"),
        M::Nanoseconds => custom("ns"),
        M::Bytes => Unit::Bytes,
        M::Kibibytes => custom("KiBy"),
        M::Mebibytes => custom("MiBy"),
        M::Gibibytes => custom("GiBy"),
        M::Tebibytes => custom("TiBy"),
        M::BitsPerSecond => custom("bit/s"),
        M::KilobitsPerSecond => custom("kbit/s"),
        M::MegabitsPerSecond => custom("Mbit/s"),
        M::GigabitsPerSecond => custom("Gbit/s"),
        M::TerabitsPerSecond => custom("Tbit/s"),
        M::CountPerSecond => custom("{count}/s"),
    }
}

/// The unit a histogram gets from its name when nothing described it: names ending in
/// `_seconds`, `.seconds` or `.duration` are in seconds, names ending in `_bytes` or `.bytes`
/// in bytes.
pub(crate) fn histogram_unit_from_name(name: &str) -> Option<metrics::Unit> {
    if [".duration", "_seconds", ".seconds"]
        .iter()
        .any(|s| name.ends_with(s))
    {
        Some(metrics::Unit::Seconds)
    } else if ["_bytes", ".bytes"].iter().any(|s| name.ends_with(s)) {
        Some(metrics::Unit::Bytes)
    } else {
        None
    }
}

/// Buckets and grid start for units sonde has no defaults for: the seconds defaults (0.5 ms to
/// 60 s over a 0.95 µs to 1024 s grid) expressed in micro- or nanoseconds, and the bytes defaults
/// (64 B to 1 GiB over a 16 B to 16 GiB grid) in KiB to TiB. `None`: sonde's defaults for the
/// unit are right (seconds, milliseconds, bytes) or there is nothing better (everything else).
pub(crate) fn scaled_buckets(unit: metrics::Unit) -> Option<(Vec<f64>, i32)> {
    use metrics::Unit as M;
    let (base, factor, exp_shift): (&[f64], f64, i32) = match unit {
        M::Microseconds => (DEFAULT_SECONDS_BUCKETS, 1e6, 20),
        M::Nanoseconds => (DEFAULT_SECONDS_BUCKETS, 1e9, 30),
        M::Kibibytes => (DEFAULT_BYTES_BUCKETS, 1.0 / 1024.0, -10),
        M::Mebibytes => (DEFAULT_BYTES_BUCKETS, 1.0 / 1048576.0, -20),
        M::Gibibytes => (DEFAULT_BYTES_BUCKETS, 1.0 / 1073741824.0, -30),
        M::Tebibytes => (DEFAULT_BYTES_BUCKETS, 1.0 / 1099511627776.0, -40),
        _ => return None,
    };
    let base_exp = if unit.is_time_based() { -20 } else { 4 };
    Some((
        base.iter().map(|b| b * factor).collect(),
        base_exp + exp_shift,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(sonde_unit(metrics::Unit::Seconds), Unit::Seconds);
        assert_eq!(sonde_unit(metrics::Unit::Bytes).ucum(), "By");
        assert_eq!(sonde_unit(metrics::Unit::Count).ucum(), "{count}");
        assert_eq!(sonde_unit(metrics::Unit::Nanoseconds).ucum(), "ns");
        assert_eq!(sonde_unit(metrics::Unit::Mebibytes).ucum(), "MiBy");
        assert_eq!(
            histogram_unit_from_name("http.server.request.duration"),
            Some(metrics::Unit::Seconds)
        );
        assert_eq!(
            histogram_unit_from_name("latency_seconds"),
            Some(metrics::Unit::Seconds)
        );
        assert_eq!(
            histogram_unit_from_name("body_bytes"),
            Some(metrics::Unit::Bytes)
        );
        assert_eq!(histogram_unit_from_name("latency"), None);
    }

    #[test]
    fn scaled() {
        let (b, e) = scaled_buckets(metrics::Unit::Nanoseconds).unwrap();
        assert_eq!(b[0], 500_000.0);
        assert_eq!(e, 10);
        let (b, e) = scaled_buckets(metrics::Unit::Kibibytes).unwrap();
        assert_eq!(b[0], 0.0625);
        assert_eq!(e, -6);
        assert!(scaled_buckets(metrics::Unit::Seconds).is_none());
    }
}
