//! The StatsD / DogStatsD line parser: zero-copy, allocation-free, never panics.
//!
//! A line is `name:value[:value...]|type[|@rate][|#tag1:v1,tag2,...][|c:container][|T<ts>]`.
//! Unknown `|x...` extensions are accepted and ignored. DogStatsD events (`_e{...}`) and
//! service checks (`_sc|...`) are recognised and returned as [`Sample::Event`] and
//! [`Sample::ServiceCheck`] without further parsing.

use std::fmt;

/// Longest accepted line, in bytes. Longer lines fail with [`ParseError::TooLong`].
pub const MAX_LINE_LEN: usize = 16 * 1024;

/// The StatsD metric type of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricType {
    /// `c`: a count to add (divided by the sample rate).
    Counter,
    /// `g`: a gauge; a signed value (`+3`, `-3`) is a delta, an unsigned one the new value.
    Gauge,
    /// `ms`: a duration in milliseconds.
    Timer,
    /// `h`: a histogram observation.
    Histogram,
    /// `d`: a DogStatsD distribution observation.
    Distribution,
    /// `s`: a member of a set; the value is an opaque string.
    Set,
}

impl MetricType {
    /// All types, in declaration order.
    pub const ALL: [MetricType; 6] = [
        MetricType::Counter,
        MetricType::Gauge,
        MetricType::Timer,
        MetricType::Histogram,
        MetricType::Distribution,
        MetricType::Set,
    ];

    /// The type as written on the wire (`c`, `g`, `ms`, `h`, `d`, `s`).
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "c",
            MetricType::Gauge => "g",
            MetricType::Timer => "ms",
            MetricType::Histogram => "h",
            MetricType::Distribution => "d",
            MetricType::Set => "s",
        }
    }

    #[inline]
    fn from_bytes(b: &[u8]) -> Option<MetricType> {
        Some(match b {
            b"c" => MetricType::Counter,
            b"g" => MetricType::Gauge,
            b"ms" => MetricType::Timer,
            b"h" => MetricType::Histogram,
            b"d" => MetricType::Distribution,
            b"s" => MetricType::Set,
            _ => return None,
        })
    }
}

impl fmt::Display for MetricType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a line was rejected. [`reason`](Self::reason) is the `reason` label of
/// `sonde.statsd.parse_errors`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// No `:` after the name, or an empty value.
    #[error("the line has no value; expected `name:value|type`")]
    MissingValue,
    /// A value is not a finite decimal number (or a set member is empty).
    #[error("a value is not a finite decimal number")]
    BadValue,
    /// A counter value is negative; counters only go up.
    #[error("a counter value is negative; counters only go up")]
    NegativeCounter,
    /// No `|type`, or a type other than `c`, `g`, `ms`, `h`, `d`, `s`.
    #[error("missing or unknown metric type; expected one of c, g, ms, h, d, s")]
    BadType,
    /// `@rate` is not a number in `(0, 1]`.
    #[error("the sample rate is not a number in (0, 1]")]
    BadSampleRate,
    /// A tag has an empty key, or the line has two tag sections.
    #[error("malformed tags: a tag has an empty key or the line has two tag sections")]
    BadTags,
    /// The name is empty or holds `|` or control characters.
    #[error("the metric name is empty or holds '|' or control characters")]
    BadName,
    /// `|T` is not followed by a Unix timestamp in seconds.
    #[error("the timestamp is not a whole number of seconds")]
    BadTimestamp,
    /// The line is longer than [`MAX_LINE_LEN`].
    #[error("the line is longer than {MAX_LINE_LEN} bytes")]
    TooLong,
    /// The line is not valid UTF-8.
    #[error("the line is not valid UTF-8")]
    NotUtf8,
}

impl ParseError {
    /// Every variant, for pre-resolving counters.
    pub const ALL: [ParseError; 10] = [
        ParseError::MissingValue,
        ParseError::BadValue,
        ParseError::NegativeCounter,
        ParseError::BadType,
        ParseError::BadSampleRate,
        ParseError::BadTags,
        ParseError::BadName,
        ParseError::BadTimestamp,
        ParseError::TooLong,
        ParseError::NotUtf8,
    ];

    /// A short snake_case reason, used as a label value.
    pub fn reason(&self) -> &'static str {
        match self {
            ParseError::MissingValue => "missing_value",
            ParseError::BadValue => "bad_value",
            ParseError::NegativeCounter => "negative_counter",
            ParseError::BadType => "bad_type",
            ParseError::BadSampleRate => "bad_sample_rate",
            ParseError::BadTags => "bad_tags",
            ParseError::BadName => "bad_name",
            ParseError::BadTimestamp => "bad_timestamp",
            ParseError::TooLong => "too_long",
            ParseError::NotUtf8 => "not_utf8",
        }
    }
}

/// One parsed line.
#[derive(Debug, Clone, PartialEq)]
pub enum Sample<'a> {
    /// A metric line.
    Metric(Metric<'a>),
    /// A DogStatsD event (`_e{...}`); not a metric, ingest counts it as ignored.
    Event,
    /// A DogStatsD service check (`_sc|...`); not a metric, ingest counts it as ignored.
    ServiceCheck,
}

impl<'a> Sample<'a> {
    /// The metric, if this is a metric line.
    pub fn metric(&self) -> Option<&Metric<'a>> {
        match self {
            Sample::Metric(m) => Some(m),
            _ => None,
        }
    }
}

/// One number of a metric line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Value {
    /// The number, sign included.
    pub number: f64,
    /// Whether it was written with an explicit `+` or `-`. For gauges this makes it a delta.
    pub signed: bool,
}

/// A metric line, borrowing from the packet.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric<'a> {
    /// The metric name as sent (not yet mapped or sanitized).
    pub name: &'a str,
    /// The type.
    pub metric_type: MetricType,
    /// The sample rate in `(0, 1]`; 1 when absent.
    pub sample_rate: f64,
    /// The DogStatsD tags (`|#...`), possibly empty.
    pub tags: Tags<'a>,
    /// The DogStatsD container id (`|c:...`), if any.
    pub container: Option<&'a str>,
    /// The DogStatsD timestamp (`|T...`, Unix seconds), if any.
    pub timestamp: Option<u64>,
    raw_value: &'a str,
    first: Value,
}

impl<'a> Metric<'a> {
    /// The value field as sent, e.g. `1`, `1:2:3` or a set member.
    pub fn raw_value(&self) -> &'a str {
        self.raw_value
    }

    /// The values (DogStatsD 1.1 allows several, `name:1:2:3|d`). Empty for sets: a set's
    /// value is the opaque [`set_member`](Self::set_member).
    pub fn values(&self) -> Values<'a> {
        if self.metric_type == MetricType::Set {
            return Values {
                first: None,
                rest: None,
            };
        }
        let rest = self
            .raw_value
            .as_bytes()
            .iter()
            .position(|&b| b == b':')
            .map(|i| &self.raw_value[i + 1..]);
        Values {
            first: Some(self.first),
            rest,
        }
    }

    /// The first (usually only) value; for sets, zero.
    pub fn first_value(&self) -> Value {
        self.first
    }

    /// The member of a set line (the whole value field, `:` included: sets take one value
    /// per line, as in DogStatsD). `None` for other types.
    pub fn set_member(&self) -> Option<&'a str> {
        (self.metric_type == MetricType::Set).then_some(self.raw_value)
    }
}

/// The values of a metric line, see [`Metric::values`].
#[derive(Debug, Clone)]
pub struct Values<'a> {
    first: Option<Value>,
    rest: Option<&'a str>,
}

impl Iterator for Values<'_> {
    type Item = Value;

    #[inline]
    fn next(&mut self) -> Option<Value> {
        if let Some(v) = self.first.take() {
            return Some(v);
        }
        // Validated by the parser, so every piece parses; a piece that did not would be skipped.
        loop {
            let rest = self.rest?;
            let (piece, tail) = match rest.as_bytes().iter().position(|&b| b == b':') {
                Some(i) => (&rest[..i], Some(&rest[i + 1..])),
                None => (rest, None),
            };
            self.rest = tail;
            if let Some(v) = parse_value(piece.as_bytes()) {
                return Some(v);
            }
        }
    }
}

/// DogStatsD tags of a line: `k:v` pairs and bare `k` flags, separated by `,`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Tags<'a> {
    raw: &'a str,
}

impl<'a> Tags<'a> {
    /// The tags as sent, without the leading `#`.
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    /// Whether the line has no tags.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The tags in order: `(key, Some(value))` for `key:value` (the value may hold further
    /// `:`), `(key, None)` for a bare `key`. Empty elements (`a,,b`) are skipped.
    pub fn iter(&self) -> TagIter<'a> {
        TagIter { rest: self.raw }
    }
}

impl<'a> IntoIterator for &Tags<'a> {
    type Item = (&'a str, Option<&'a str>);
    type IntoIter = TagIter<'a>;
    fn into_iter(self) -> TagIter<'a> {
        self.iter()
    }
}

/// Iterator over [`Tags`].
#[derive(Debug, Clone)]
pub struct TagIter<'a> {
    rest: &'a str,
}

impl<'a> Iterator for TagIter<'a> {
    type Item = (&'a str, Option<&'a str>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.rest.is_empty() {
                return None;
            }
            let (tag, rest) = match find(b',', self.rest.as_bytes()) {
                Some(i) => (&self.rest[..i], &self.rest[i + 1..]),
                None => (self.rest, ""),
            };
            self.rest = rest;
            if tag.is_empty() {
                continue;
            }
            return Some(match find(b':', tag.as_bytes()) {
                Some(i) => (&tag[..i], Some(&tag[i + 1..])),
                None => (tag, None),
            });
        }
    }
}

#[inline(always)]
fn find(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}

/// Parses one line (without its `\n`). Allocation-free; the result borrows from `line`.
///
/// ```
/// use sonde_statsd::{parse_line, MetricType, Sample};
/// let Ok(Sample::Metric(m)) = parse_line(b"api.requests:3|c|@0.5|#route:/users,canary") else {
///     panic!()
/// };
/// assert_eq!(m.name, "api.requests");
/// assert_eq!(m.metric_type, MetricType::Counter);
/// assert_eq!(m.sample_rate, 0.5);
/// assert_eq!(m.values().map(|v| v.number).collect::<Vec<_>>(), [3.0]);
/// let tags: Vec<_> = m.tags.iter().collect();
/// assert_eq!(tags, [("route", Some("/users")), ("canary", None)]);
/// ```
pub fn parse_line(line: &[u8]) -> Result<Sample<'_>, ParseError> {
    if line.len() > MAX_LINE_LEN {
        return Err(ParseError::TooLong);
    }
    let line = std::str::from_utf8(line).map_err(|_| ParseError::NotUtf8)?;
    let b = line.as_bytes();
    if b.first() == Some(&b'_') {
        if b.starts_with(b"_e{") {
            return Ok(Sample::Event);
        }
        if b.starts_with(b"_sc|") {
            return Ok(Sample::ServiceCheck);
        }
    }

    let colon = find(b':', b).ok_or(ParseError::MissingValue)?;
    let name = &line[..colon];
    if name.is_empty()
        || name
            .as_bytes()
            .iter()
            .any(|&c| c < 0x20 || c == 0x7f || c == b'|')
    {
        return Err(ParseError::BadName);
    }

    let rest = &line[colon + 1..];
    let pipe = match find(b'|', rest.as_bytes()) {
        Some(p) => p,
        None if rest.is_empty() => return Err(ParseError::MissingValue),
        None => return Err(ParseError::BadType),
    };
    let raw_value = &rest[..pipe];
    if raw_value.is_empty() {
        return Err(ParseError::MissingValue);
    }
    let after = &rest[pipe + 1..];
    let type_end = find(b'|', after.as_bytes()).unwrap_or(after.len());
    let metric_type =
        MetricType::from_bytes(&after.as_bytes()[..type_end]).ok_or(ParseError::BadType)?;

    let mut sample_rate = 1.0;
    let mut tags: Option<&str> = None;
    let mut container = None;
    let mut timestamp = None;
    let mut ext = &after[type_end..];
    while !ext.is_empty() {
        // `ext` starts with the '|' before the next field.
        let field_and_more = &ext[1..];
        let end = find(b'|', field_and_more.as_bytes()).unwrap_or(field_and_more.len());
        let field = &field_and_more[..end];
        ext = &field_and_more[end..];
        let fb = field.as_bytes();
        match fb.first() {
            Some(b'@') => sample_rate = parse_rate(&fb[1..])?,
            Some(b'#') => {
                if tags.is_some() {
                    return Err(ParseError::BadTags);
                }
                let t = &field[1..];
                validate_tags(t.as_bytes())?;
                tags = Some(t);
            }
            Some(b'c') if fb.get(1) == Some(&b':') => container = Some(&field[2..]),
            Some(b'T') => timestamp = Some(parse_timestamp(&fb[1..])?),
            // Unknown extensions (and empty fields) are ignored.
            _ => {}
        }
    }

    let first = if metric_type == MetricType::Set {
        Value {
            number: 0.0,
            signed: false,
        }
    } else {
        parse_values(raw_value.as_bytes(), metric_type)?
    };

    Ok(Sample::Metric(Metric {
        name,
        metric_type,
        sample_rate,
        tags: Tags {
            raw: tags.unwrap_or(""),
        },
        container,
        timestamp,
        raw_value,
        first,
    }))
}

/// Validates every `:`-separated value and returns the first.
#[inline]
fn parse_values(raw: &[u8], metric_type: MetricType) -> Result<Value, ParseError> {
    let check = |v: Value| {
        if metric_type == MetricType::Counter && v.number < 0.0 {
            Err(ParseError::NegativeCounter)
        } else {
            Ok(v)
        }
    };
    let Some(colon) = find(b':', raw) else {
        return check(parse_value(raw).ok_or(ParseError::BadValue)?);
    };
    let first = check(parse_value(&raw[..colon]).ok_or(ParseError::BadValue)?)?;
    for piece in raw[colon + 1..].split(|&b| b == b':') {
        check(parse_value(piece).ok_or(ParseError::BadValue)?)?;
    }
    Ok(first)
}

/// A decimal number with an optional sign: integers of up to 15 digits take a fast path,
/// anything else goes through the standard float parser. Infinities and NaN are refused.
#[inline]
fn parse_value(b: &[u8]) -> Option<Value> {
    let (negative, signed, digits) = match b.first()? {
        b'-' => (true, true, &b[1..]),
        b'+' => (false, true, &b[1..]),
        _ => (false, false, b),
    };
    let first = *digits.first()?;
    if digits.len() <= 15 {
        let mut n: u64 = 0;
        let mut integer = true;
        for &c in digits {
            let d = c.wrapping_sub(b'0');
            if d > 9 {
                integer = false;
                break;
            }
            n = n * 10 + u64::from(d);
        }
        if integer {
            // Exact: 15 decimal digits fit in the 53-bit mantissa.
            let v = n as f64;
            return Some(Value {
                number: if negative { -v } else { v },
                signed,
            });
        }
    }
    // The standard parser also takes "inf", "nan" and a second sign; StatsD does not.
    if !(first.is_ascii_digit() || first == b'.') {
        return None;
    }
    // Only ASCII reaches here (checked by the caller's UTF-8 validation and the first byte),
    // but parse from bytes without assuming it.
    let s = std::str::from_utf8(digits).ok()?;
    let v: f64 = s.parse().ok()?;
    if !v.is_finite() {
        return None;
    }
    Some(Value {
        number: if negative { -v } else { v },
        signed,
    })
}

#[inline]
fn parse_rate(b: &[u8]) -> Result<f64, ParseError> {
    match parse_value(b) {
        Some(Value {
            number,
            signed: false,
        }) if number > 0.0 && number <= 1.0 => Ok(number),
        _ => Err(ParseError::BadSampleRate),
    }
}

#[inline]
fn parse_timestamp(b: &[u8]) -> Result<u64, ParseError> {
    if b.is_empty() {
        return Err(ParseError::BadTimestamp);
    }
    let mut n: u64 = 0;
    for &c in b {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return Err(ParseError::BadTimestamp);
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(d)))
            .ok_or(ParseError::BadTimestamp)?;
    }
    Ok(n)
}

#[inline]
fn validate_tags(b: &[u8]) -> Result<(), ParseError> {
    // A tag with an empty key: a ':' at the start of the section or right after a ','.
    let mut at_start = true;
    for &c in b {
        match c {
            b':' if at_start => return Err(ParseError::BadTags),
            b',' => at_start = true,
            _ => at_start = false,
        }
    }
    Ok(())
}

/// Parses every line of a datagram, in order: lines are split on `\n`, a trailing `\r` is
/// removed and empty lines are skipped. `f` receives each line's result.
///
/// ```
/// let mut names = Vec::new();
/// let mut errors = Vec::new();
/// sonde_statsd::parse_packet(b"a:1|c\r\n\nb:oops|g\nc:2|ms\n", |r| match r {
///     Ok(s) => names.push(s.metric().map(|m| m.name)),
///     Err(e) => errors.push(e.reason()),
/// });
/// assert_eq!(names, [Some("a"), Some("c")]);
/// assert_eq!(errors, ["bad_value"]);
/// ```
#[inline]
pub fn parse_packet<'a>(packet: &'a [u8], mut f: impl FnMut(Result<Sample<'a>, ParseError>)) {
    for line in lines(packet) {
        f(parse_line(line));
    }
}

/// The non-empty lines of a datagram, without their `\n` or `\r\n`.
pub(crate) fn lines(packet: &[u8]) -> impl Iterator<Item = &[u8]> {
    packet
        .split(|&b| b == b'\n')
        .map(|line| match line.split_last() {
            Some((b'\r', head)) => head,
            _ => line,
        })
        .filter(|line| !line.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(line: &str) -> Metric<'_> {
        match parse_line(line.as_bytes()) {
            Ok(Sample::Metric(m)) => m,
            other => panic!("{line:?}: {other:?}"),
        }
    }

    fn err(line: &[u8]) -> &'static str {
        match parse_line(line) {
            Err(e) => e.reason(),
            Ok(s) => panic!("{line:?} parsed: {s:?}"),
        }
    }

    fn numbers(m: &Metric<'_>) -> Vec<f64> {
        m.values().map(|v| v.number).collect()
    }

    #[test]
    fn every_type() {
        for (line, t) in [
            ("a:1|c", MetricType::Counter),
            ("a:1|g", MetricType::Gauge),
            ("a:1|ms", MetricType::Timer),
            ("a:1|h", MetricType::Histogram),
            ("a:1|d", MetricType::Distribution),
            ("a:1|s", MetricType::Set),
        ] {
            let m = metric(line);
            assert_eq!(m.metric_type, t, "{line}");
            assert_eq!(m.name, "a");
            assert_eq!(m.sample_rate, 1.0);
            assert!(m.tags.is_empty());
            assert_eq!(format!("a:1|{t}"), line);
        }
    }

    #[test]
    fn values() {
        assert_eq!(numbers(&metric("a:42|c")), [42.0]);
        assert_eq!(numbers(&metric("a:0.25|ms")), [0.25]);
        assert_eq!(numbers(&metric("a:1e3|h")), [1000.0]);
        assert_eq!(numbers(&metric("a:.5|h")), [0.5]);
        assert_eq!(numbers(&metric("a:5.|h")), [5.0]);
        assert_eq!(
            numbers(&metric("a:123456789012345678|h")),
            [123456789012345678.0]
        );
        assert_eq!(numbers(&metric("a:1:2.5:3|d")), [1.0, 2.5, 3.0]);
        assert_eq!(metric("a:1:2.5:3|d").raw_value(), "1:2.5:3");
        let g = metric("a:-3|g");
        assert_eq!(
            g.values().collect::<Vec<_>>(),
            [Value {
                number: -3.0,
                signed: true
            }]
        );
        let g = metric("a:+3.5|g");
        assert_eq!(
            g.first_value(),
            Value {
                number: 3.5,
                signed: true
            }
        );
        let g = metric("a:3|g");
        assert!(!g.first_value().signed);
        assert_eq!(numbers(&metric("a:-0.5|h")), [-0.5]);
        assert_eq!(metric("a:1|c").set_member(), None);
    }

    #[test]
    fn sets_take_the_whole_value() {
        let s = metric("users:alice|s");
        assert_eq!(s.set_member(), Some("alice"));
        assert_eq!(s.values().count(), 0);
        assert_eq!(metric("users:a:b|s").set_member(), Some("a:b"));
        assert_eq!(metric("users:-1|s").set_member(), Some("-1"));
    }

    #[test]
    fn sample_rate_tags_container_timestamp_and_unknown_extensions() {
        let m =
            metric("page.views:1|c|@0.1|#env:prod,region:eu-west-1,canary|c:abc123|T1656581400");
        assert_eq!(m.sample_rate, 0.1);
        assert_eq!(m.tags.raw(), "env:prod,region:eu-west-1,canary");
        assert_eq!(
            m.tags.iter().collect::<Vec<_>>(),
            [
                ("env", Some("prod")),
                ("region", Some("eu-west-1")),
                ("canary", None)
            ]
        );
        assert_eq!(m.container, Some("abc123"));
        assert_eq!(m.timestamp, Some(1656581400));

        // Order does not matter; unknown extensions and empty fields are ignored.
        let m = metric("x:2|h|#a:b|card:high|@1|e:foo||zzz");
        assert_eq!(m.sample_rate, 1.0);
        assert_eq!(m.tags.iter().collect::<Vec<_>>(), [("a", Some("b"))]);
        assert_eq!(m.container, None);
        // Tag values may hold ':' (URLs); empty elements are skipped.
        let m = metric("x:2|h|#url:http://x:80/a,,b:");
        assert_eq!(
            m.tags.iter().collect::<Vec<_>>(),
            [("url", Some("http://x:80/a")), ("b", Some(""))]
        );
        assert_eq!(metric("x:1|c|#").tags.iter().count(), 0);
    }

    #[test]
    fn events_and_service_checks_are_recognised() {
        assert_eq!(parse_line(b"_e{5,4}:title|text|#a:b"), Ok(Sample::Event));
        assert_eq!(
            parse_line(b"_sc|my.check|0|#env:prod"),
            Ok(Sample::ServiceCheck)
        );
        // A metric that merely starts with '_' is a metric.
        assert_eq!(metric("_private:1|c").name, "_private");
    }

    #[test]
    fn malformed_lines_by_reason() {
        let cases: &[(&[u8], &str)] = &[
            (b"nocolon", "missing_value"),
            (b"a:", "missing_value"),
            (b"a:|c", "missing_value"),
            (b"a:1", "bad_type"),
            (b"a:1|", "bad_type"),
            (b"a:1|x", "bad_type"),
            (b"a:1|cc", "bad_type"),
            (b"a:1|C", "bad_type"),
            (b"a:abc|c", "bad_value"),
            (b"a:1..2|g", "bad_value"),
            (b"a:inf|g", "bad_value"),
            (b"a:nan|g", "bad_value"),
            (b"a:+-1|g", "bad_value"),
            (b"a:-|g", "bad_value"),
            (b"a:1e999|h", "bad_value"),
            (b"a:1::2|d", "bad_value"),
            (b"a:1:|d", "bad_value"),
            (b"a:1 |c", "bad_value"),
            (b"a:0x10|c", "bad_value"),
            (b"a:-1|c", "negative_counter"),
            (b"a:1:-2|c", "negative_counter"),
            (b"a:1|c|@0", "bad_sample_rate"),
            (b"a:1|c|@1.5", "bad_sample_rate"),
            (b"a:1|c|@-0.5", "bad_sample_rate"),
            (b"a:1|c|@", "bad_sample_rate"),
            (b"a:1|c|@x", "bad_sample_rate"),
            (b"a:1|c|#:v", "bad_tags"),
            (b"a:1|c|#a:b,:v", "bad_tags"),
            (b"a:1|c|#a|#b", "bad_tags"),
            (b":1|c", "bad_name"),
            (b"a|b:1|c", "bad_name"),
            (b"a\tb:1|c", "bad_name"),
            (b"a:1|c|T", "bad_timestamp"),
            (b"a:1|c|T12a", "bad_timestamp"),
            (b"a:1|c|T99999999999999999999999", "bad_timestamp"),
            (b"a:\xff|c", "not_utf8"),
            (b"\xc3:1|c", "not_utf8"),
        ];
        for (line, reason) in cases {
            assert_eq!(err(line), *reason, "{:?}", String::from_utf8_lossy(line));
        }
        let long = format!("a:1|c|#t:{}", "x".repeat(MAX_LINE_LEN));
        assert_eq!(err(long.as_bytes()), "too_long");
        for e in ParseError::ALL {
            assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn packets_split_on_newlines() {
        let mut got = Vec::new();
        parse_packet(b"a:1|c\nb:2|g\r\n\n\r\nbad\nc:3|ms", |r| {
            got.push(r.map(|s| s.metric().map(|m| m.name.to_string())))
        });
        assert_eq!(
            got,
            [
                Ok(Some("a".into())),
                Ok(Some("b".into())),
                Err(ParseError::MissingValue),
                Ok(Some("c".into()))
            ]
        );
        let mut n = 0;
        parse_packet(b"", |_| n += 1);
        parse_packet(b"\n\n\r\n", |_| n += 1);
        assert_eq!(n, 0);
    }
}
