//! How durations, sizes and addresses are written, read and shown.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};

/// Parses `10s`, `500ms`, `2m`, `1h`, `7d` (fractions too: `1.5s`); `None` for anything else
/// or past 10^9 seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit() && c != '.')?);
    let n: f64 = num.parse().ok()?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        // Days, as Prometheus writes them (`30d`); the example configuration says `7d`.
        "d" => n * 86_400.0,
        _ => return None,
    };
    (0.0..1e9)
        .contains(&secs)
        .then(|| Duration::from_secs_f64(secs))
}

/// Parses `8MiB`, `64KiB`, `1GiB`, `4096` (`K`, `KB`, `M`, `MB`, `G`, `GB` are binary too).
pub fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num.parse().ok()?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "KB" => 1024,
        "MiB" | "M" | "MB" => 1024 * 1024,
        "GiB" | "G" | "GB" => 1024 * 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// `d` the way it is written in a configuration (`500ms`, `10s`, `2m`, `24h`).
pub fn show_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// `n` bytes the way it is written in a configuration (`8MiB`, `4096`).
pub fn show_size(n: usize) -> String {
    if n >= 1 << 30 && n.is_multiple_of(1 << 30) {
        format!("{}GiB", n >> 30)
    } else if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{}MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{}KiB", n >> 10)
    } else {
        n.to_string()
    }
}

/// A visitor reading a `T` from a string with `parse` (a string it refuses is an invalid
/// value), and from a whole number with `whole` when that is given; `expecting` says what it
/// takes.
struct Parsed<T> {
    expecting: &'static str,
    parse: fn(&str) -> Option<T>,
    whole: Option<fn(i128) -> Option<T>>,
}

impl<T> Visitor<'_> for Parsed<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<T, E> {
        (self.parse)(s).ok_or_else(|| E::invalid_value(de::Unexpected::Str(s), &self))
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<T, E> {
        self.visit_whole(i128::from(n), de::Unexpected::Unsigned(n))
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<T, E> {
        self.visit_whole(i128::from(n), de::Unexpected::Signed(n))
    }
}

impl<T> Parsed<T> {
    /// A whole number (`unexpected` when it is not taken): an invalid value when `whole`
    /// refuses it, an invalid type when there is no `whole`.
    fn visit_whole<E: de::Error>(self, n: i128, unexpected: de::Unexpected<'_>) -> Result<T, E> {
        match self.whole {
            Some(whole) => whole(n).ok_or_else(|| E::invalid_value(unexpected, &self)),
            None => Err(E::invalid_type(unexpected, &self)),
        }
    }
}

/// `#[serde(with = "sonde_settings::duration")]`: a [`Duration`] written `"10s"`, `"500ms"`.
pub mod duration {
    use super::*;

    /// Reads a duration string.
    pub fn deserialize<'de, D: de::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_str(Parsed {
            expecting: "a duration like \"10s\", \"500ms\", \"2m\" or \"1h\"",
            parse: parse_duration,
            whole: None,
        })
    }
}

/// `#[serde(with = "sonde_settings::size")]`: bytes written `"8MiB"`, `"64KiB"` or a number.
pub mod size {
    use super::*;

    /// Reads a size string or a whole number.
    pub fn deserialize<'de, D: de::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        d.deserialize_any(Parsed {
            expecting: "a size like \"8MiB\", \"64KiB\" or a number of bytes",
            parse: parse_size,
            whole: Some(|n| usize::try_from(n).ok()),
        })
    }
}

/// `#[serde(with = "sonde_settings::address")]`: an optional socket address, `"ip:port"`;
/// `"off"` or `""` for none.
pub mod address {
    use std::net::SocketAddr;

    use super::*;

    /// Reads an address string.
    pub fn deserialize<'de, D: de::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<SocketAddr>, D::Error> {
        d.deserialize_str(Parsed {
            expecting: "an address like \"127.0.0.1:8125\", or \"off\"",
            parse: |s| match s.trim() {
                "" | "off" => Some(None),
                a => a.parse().ok().map(Some),
            },
            whole: None,
        })
    }
}

/// `#[serde(with = "sonde_settings::pairs")]`: a table of strings (`{ route = "$1" }`) as
/// `(key, value)` pairs, in the order written.
pub mod pairs {
    use super::*;

    /// Reads a table of strings.
    pub fn deserialize<'de, D: de::Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<(String, String)>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Vec<(String, String)>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of strings, like { route = \"$1\" }")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut pairs = Vec::new();
                while let Some(pair) = map.next_entry::<String, String>()? {
                    pairs.push(pair);
                }
                Ok(pairs)
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_read_back_as_shown() {
        for d in [
            Duration::from_millis(500),
            Duration::from_secs(10),
            Duration::from_secs(120),
            Duration::from_secs(24 * 3600),
        ] {
            assert_eq!(parse_duration(&show_duration(d)), Some(d));
        }
        for n in [4096, 64 << 10, 8 << 20, 1 << 30, 1000] {
            assert_eq!(parse_size(&show_size(n)), Some(n));
        }
        // Moved with the parsers from the agent (its `durations_and_sizes`).
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_duration("7d"),
            Some(Duration::from_secs(7 * 24 * 3600))
        );
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_size("8MiB"), Some(8 << 20));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("1EiB"), None);
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("10 parsecs"), None);
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(parse_size("8 MiB"), Some(8 << 20));
        assert_eq!(parse_size("99999999999999999999GiB"), None);
    }
}
