//! Metric and label name validation and sanitizing, and the Prometheus form of a family's name.

use std::borrow::Cow;

use crate::{Error, Kind, Unit};

/// Longest accepted metric name, as in the OpenTelemetry API.
pub const MAX_NAME_LEN: usize = 255;

/// Whether `ch` may follow the first letter of a metric name.
fn metric_name_char(ch: char) -> bool {
    ch.is_ascii_alphanumeric() || matches!(ch, '_' | '.' | '-' | '/')
}

/// Checks a metric (instrument) name: `[A-Za-z][A-Za-z0-9_.\-/]*`, at most 255 bytes.
pub fn validate_metric_name(name: &str) -> Result<(), Error> {
    let bad = |problem: String| Error::InvalidMetricName {
        name: name.to_owned(),
        problem,
    };
    if let Some(problem) = length_problem(name) {
        return Err(bad(problem));
    }
    match char_problem(name, |ch| ch.is_ascii_alphabetic(), metric_name_char) {
        Some(problem) => Err(bad(problem)),
        None => Ok(()),
    }
}

/// What is wrong with the length of a metric or label name, if anything: empty, or longer
/// than [`MAX_NAME_LEN`] bytes.
fn length_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("the name is empty".into());
    }
    (name.len() > MAX_NAME_LEN).then(|| format!("it is {} bytes long", name.len()))
}

/// The first character of `name` that is not allowed, said as a problem: at byte 0 where
/// `first` refuses it, after that where `rest` does.
fn char_problem(
    name: &str,
    first: impl Fn(char) -> bool,
    rest: impl Fn(char) -> bool,
) -> Option<String> {
    let (pos, ch) = name.char_indices().find(|&(pos, ch)| {
        let ok = if pos == 0 { first(ch) } else { rest(ch) };
        !ok
    })?;
    Some(format!("character {ch:?} at byte {pos} is not allowed"))
}

/// Checks a label (attribute) name: `[A-Za-z_][A-Za-z0-9_.]*`, not starting with `__`
/// (reserved by Prometheus), and not `le`/`quantile` on kinds that render them.
pub fn validate_label_name(metric: &str, label: &str, reserved: &[&str]) -> Result<(), Error> {
    let bad = |problem: String| Error::InvalidLabelName {
        metric: metric.to_owned(),
        label: label.to_owned(),
        problem,
    };
    if let Some(problem) = length_problem(label) {
        return Err(bad(problem));
    }
    if label.starts_with("__") {
        return Err(bad(
            "names starting with '__' are reserved by Prometheus".into()
        ));
    }
    if reserved.contains(&label) {
        return Err(bad(format!(
            "{label:?} is reserved for this kind of metric (it is added when rendering)"
        )));
    }
    let first = |ch: char| ch.is_ascii_alphabetic() || ch == '_';
    match char_problem(label, first, label_name_char) {
        Some(problem) => Err(bad(problem)),
        None => Ok(()),
    }
}

/// What [`sanitize_metric_name`] does with a name longer than [`MAX_NAME_LEN`] bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LongName {
    /// Cut it to [`MAX_NAME_LEN`] bytes, so that it can be registered (the `metrics` recorder,
    /// where every name has to land in some family).
    Truncate,
    /// Keep it, for the caller to refuse and count (the StatsD server counts such lines as
    /// `too_long` rather than merging them under a cut name).
    Keep,
}

/// Makes `name` a valid metric name (see [`validate_metric_name`]): every character outside
/// `[A-Za-z0-9_.\-/]` becomes `_` (one per character: `héllo` → `h_llo`), a name that does not
/// start with a letter gets `prefix` in front (`9lives` → `m_9lives` with the prefix `m_`), and
/// `long` says what happens past [`MAX_NAME_LEN`] bytes. A valid name is borrowed as it is; an
/// empty name stays empty (callers refuse it). `prefix` should itself be a valid name.
///
/// ```
/// use sonde_core::name::{LongName, sanitize_metric_name};
/// assert_eq!(sanitize_metric_name("my.lib.latency", "m_", LongName::Truncate), "my.lib.latency");
/// assert_eq!(sanitize_metric_name("5xx count", "statsd_", LongName::Keep), "statsd_5xx_count");
/// ```
pub fn sanitize_metric_name<'a>(name: &'a str, prefix: &str, long: LongName) -> Cow<'a, str> {
    let starts_well = name.chars().next().is_none_or(|c| c.is_ascii_alphabetic());
    let fits = long == LongName::Keep || name.len() <= MAX_NAME_LEN;
    if starts_well && fits && name.chars().all(metric_name_char) {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len() + prefix.len());
    if !starts_well {
        out.push_str(prefix);
    }
    out.extend(
        name.chars()
            .map(|c| if metric_name_char(c) { c } else { '_' }),
    );
    if long == LongName::Truncate && out.len() > MAX_NAME_LEN {
        // Only a non-ASCII prefix can put a character across the cut.
        let mut end = MAX_NAME_LEN;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    Cow::Owned(out)
}

/// Whether `ch` may follow the first character of a label name.
fn label_name_char(ch: char) -> bool {
    ch.is_ascii_alphanumeric() || matches!(ch, '_' | '.')
}

/// The character part of making `key` a valid label name (see [`validate_label_name`]): every
/// character outside `[A-Za-z0-9_.]` becomes `_` (`content-type` → `content_type`), and a key
/// that would then not start with a letter or `_` (a digit, `.`, or nothing) gets a leading
/// `_` (`2xx` → `_2xx`, `` → `_`). A key that needs neither is borrowed as it is.
///
/// Callers still decide, each by its own rule, what to do with a leading `__` (reserved by
/// Prometheus), names reserved for a kind (`le`, `quantile`) and names over [`MAX_NAME_LEN`]:
/// the `metrics` recorder shortens and cuts them, the StatsD server renames and refuses them.
///
/// ```
/// use sonde_core::name::sanitize_label_chars;
/// assert_eq!(sanitize_label_chars("http.method"), "http.method");
/// assert_eq!(sanitize_label_chars(".x"), "_.x");
/// ```
pub fn sanitize_label_chars(key: &str) -> Cow<'_, str> {
    let starts_well = |s: &str| s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_');
    if starts_well(key) && key.chars().all(label_name_char) {
        return Cow::Borrowed(key);
    }
    let mut out = String::with_capacity(key.len() + 1);
    out.extend(
        key.chars()
            .map(|c| if label_name_char(c) { c } else { '_' }),
    );
    if !starts_well(&out) {
        out.insert(0, '_');
    }
    Cow::Owned(out)
}

/// Whether `name` is a Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__`
/// (reserved for Prometheus's own labels). Stricter than [`validate_label_name`], which also
/// takes `.`: this is for names sent to Prometheus as given (remote write's external labels,
/// the Pushgateway's grouping key), where nothing translates them.
///
/// ```
/// use sonde_core::name::is_prometheus_label_name;
/// assert!(is_prometheus_label_name("instance"));
/// assert!(!is_prometheus_label_name("http.route"));
/// assert!(!is_prometheus_label_name("__name__"));
/// ```
pub fn is_prometheus_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

/// Replaces every character outside `[a-zA-Z0-9_:]` (or `[a-zA-Z0-9_]` without `allow_colon`)
/// with `_`, collapsing runs, and prefixes a leading digit with `_`; appends to `out`.
pub fn prometheus_sanitize(s: &str, allow_colon: bool, out: &mut String) {
    let start = out.len();
    for ch in s.chars() {
        let ok = ch.is_ascii_alphanumeric() || ch == '_' || (allow_colon && ch == ':');
        if ok {
            out.push(ch);
        } else if !out[start..].ends_with('_') {
            out.push('_');
        }
    }
    if out[start..].starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(start, '_');
    }
}

/// The Prometheus unit word for a unit of a family of `kind`, if it has one (`seconds`,
/// `bytes`...).
pub fn prometheus_unit_word(unit: &Unit, kind: Kind) -> Option<String> {
    let word = match unit {
        Unit::None | Unit::Count(_) => return None,
        Unit::Seconds => "seconds",
        Unit::Milliseconds => "milliseconds",
        Unit::Bytes => "bytes",
        Unit::Percent => "percent",
        // "1" is a ratio for gauges; on counters it only says "a count".
        Unit::Ratio => {
            return (kind != Kind::Counter).then(|| "ratio".to_owned());
        }
        Unit::Custom(s) => match s.as_ref() {
            "d" => "days",
            "h" => "hours",
            "min" => "minutes",
            "us" => "microseconds",
            "ns" => "nanoseconds",
            "KiBy" => "kibibytes",
            "MiBy" => "mebibytes",
            "GiBy" => "gibibytes",
            "KBy" => "kilobytes",
            "MBy" => "megabytes",
            "GBy" => "gigabytes",
            "By/s" => "bytes_per_second",
            "m" => "meters",
            "V" => "volts",
            "A" => "amperes",
            "J" => "joules",
            "W" => "watts",
            "g" => "grams",
            "Cel" => "celsius",
            "Hz" => "hertz",
            other if other.starts_with('{') => return None,
            other => {
                let mut w = String::new();
                prometheus_sanitize(other, false, &mut w);
                let w = w.trim_matches('_').to_ascii_lowercase();
                return (!w.is_empty()).then_some(w);
            }
        },
    };
    Some(word.to_owned())
}

/// A name or dimension value as CloudWatch takes it: ASCII only (other characters and control
/// characters become `_`), at most `max` bytes. The CloudWatch exporter and the objectives'
/// alarms render with this one rule, so an alarm names the metric the exporter sends.
///
/// ```
/// assert_eq!(sonde_core::name::cloudwatch_text("café\tbar", 6), "caf__b");
/// ```
pub fn cloudwatch_text(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                c
            } else {
                '_'
            }
        })
        .collect();
    out.truncate(max);
    out
}

/// The Prometheus family name of a family: the name sanitized, with the unit suffix, without
/// `_total` (encoders add it to counter samples), and `_value` after a suffix Prometheus
/// reserves for another type (`process.thread.count` gauge → `process_thread_count_value`).
///
/// The registry refuses a family whose Prometheus name equals another family's (see
/// [`Error::NameCollision`]), and every Prometheus encoder names families with this function,
/// so the two agree exactly.
///
/// ```
/// use sonde_core::{Kind, Unit, name::prometheus_name};
/// assert_eq!(prometheus_name("http.server.request.duration", Kind::Histogram, &Unit::Seconds), "http_server_request_duration_seconds");
/// assert_eq!(prometheus_name("jobs.total", Kind::Counter, &Unit::None), "jobs");
/// assert_eq!(prometheus_name("x", Kind::Gauge, &Unit::Seconds), prometheus_name("x.seconds", Kind::Gauge, &Unit::None));
/// ```
pub fn prometheus_name(name: &str, kind: Kind, unit: &Unit) -> String {
    let mut out = String::with_capacity(name.len() + 18);
    prometheus_sanitize(name, true, &mut out);
    if kind == Kind::Counter {
        while let Some(stripped) = out.strip_suffix("_total") {
            out.truncate(stripped.len());
        }
    }
    if let Some(word) = prometheus_unit_word(unit, kind) {
        let suffix = format!("_{word}");
        if !out.ends_with(&suffix) {
            out.push_str(&suffix);
        }
    }
    if reserved_suffix(&out, kind) {
        out.push_str("_value");
    }
    out
}

/// Whether a family of `kind` named `name` would end in a suffix that Prometheus (and
/// `promtool check metrics`) reserves for the samples of another type. Counters are rendered
/// with `_total` after the name, so only their samples' names count, and those are fine.
fn reserved_suffix(name: &str, kind: Kind) -> bool {
    match kind {
        Kind::Counter => false,
        Kind::Histogram => name.ends_with("_total"),
        Kind::Gauge | Kind::UpDownCounter => ["_count", "_sum", "_bucket", "_total"]
            .iter()
            .any(|s| name.ends_with(s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names() {
        for ok in ["a", "http.server.request.duration", "x_1-2/3", "A9"] {
            assert!(validate_metric_name(ok).is_ok(), "{ok}");
        }
        let err = validate_metric_name("http server").unwrap_err().to_string();
        assert!(err.contains("' '") && err.contains("byte 4"), "{err}");
        assert!(validate_metric_name("1abc").is_err());
        assert!(validate_metric_name("").is_err());
        assert!(validate_metric_name(&"a".repeat(256)).is_err());
        let err = validate_metric_name("héllo").unwrap_err().to_string();
        assert!(err.contains("'é'"), "{err}");
    }

    #[test]
    fn label_names() {
        assert!(validate_label_name("m", "http.route", &[]).is_ok());
        assert!(validate_label_name("m", "_x", &[]).is_ok());
        assert!(validate_label_name("m", "__name__", &[]).is_err());
        assert!(validate_label_name("m", "le", &["le"]).is_err());
        let err = validate_label_name("m", "a-b", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("'-'") && err.contains("byte 1"), "{err}");
    }

    #[test]
    fn sanitized_metric_names() {
        let t = |n| sanitize_metric_name(n, "m_", LongName::Truncate);
        let k = |n| sanitize_metric_name(n, "statsd_", LongName::Keep);
        assert!(matches!(t("a.b-c/d_e"), Cow::Borrowed("a.b-c/d_e")));
        assert_eq!(t("héllo wörld"), "h_llo_w_rld");
        assert_eq!(t("_x"), "m__x");
        assert_eq!(k("5xx"), "statsd_5xx");
        assert_eq!(k(""), "");
        let long = "x".repeat(300);
        assert_eq!(t(&long).len(), MAX_NAME_LEN);
        assert!(matches!(k(&long), Cow::Borrowed(_)));
        let prefix = "é".repeat(200);
        let cut = sanitize_metric_name("1", &prefix, LongName::Truncate);
        assert!(cut.len() <= MAX_NAME_LEN, "{cut}");
        for n in ["9", "a b", "é", "a:b", "-"] {
            assert!(validate_metric_name(&t(n)).is_ok(), "{n}");
            assert!(validate_metric_name(&k(n)).is_ok(), "{n}");
        }
    }

    #[test]
    fn sanitized_label_chars() {
        assert!(matches!(
            sanitize_label_chars("_x.y"),
            Cow::Borrowed("_x.y")
        ));
        for (input, want) in [
            ("a-b", "a_b"),
            ("5xx", "_5xx"),
            (".x", "_.x"),
            ("", "_"),
            ("-x", "_x"),
            ("lé", "l_"),
            ("__name__", "__name__"),
        ] {
            assert_eq!(sanitize_label_chars(input), want, "{input:?}");
        }
    }

    #[test]
    fn prometheus_label_names() {
        for ok in ["a", "_x", "job", "A_9"] {
            assert!(is_prometheus_label_name(ok), "{ok}");
        }
        for bad in ["", "9a", "a.b", "a-b", "__x", "é"] {
            assert!(!is_prometheus_label_name(bad), "{bad}");
        }
    }

    #[test]
    fn prometheus_names_that_collide() {
        // Unitless, the case of every pair but one.
        let counter = |name: &str| prometheus_name(name, Kind::Counter, &Unit::None);
        let gauge = |name: &str| prometheus_name(name, Kind::Gauge, &Unit::None);
        assert_eq!(counter("a.b"), counter("a_b"));
        assert_eq!(counter("system_cpu_time"), counter("system.cpu.time"));
        assert_eq!(
            prometheus_name("x", Kind::Gauge, &Unit::Seconds),
            gauge("x.seconds")
        );
        assert_eq!(counter("jobs"), counter("jobs.total"));
        assert_eq!(gauge("a..b"), gauge("a-b"));
        // A gauge named like a counter's sample gets `_value`, so it cannot collide.
        assert_ne!(gauge("jobs.total"), counter("jobs"));
        assert_eq!(gauge("9lives"), "_9lives");
    }
}
