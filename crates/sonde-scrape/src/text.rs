//! The Prometheus text format (0.0.4) and OpenMetrics (1.0), parsed into families.
//!
//! The parser is sonde's own. The crates.io candidates each fail one thing a scrape of an
//! arbitrary endpoint needs: `prometheus-parse` (0.2) splits labels on `,` and `=` without
//! honouring quotes or escapes and reads an OpenMetrics exemplar as a timestamp;
//! `prom_text_format_parser` (0.1) knows neither `# EOF`, `# UNIT` nor exemplars and keeps label
//! escapes unexpanded; `openmetrics-parser` is LGPL-3.0, which the workspace's MIT/Apache-2.0
//! binaries cannot take on. The grammar is small: sample lines (with quoted label values and
//! their `\\`, `\"`, `\n` escapes, the quoted metric names of Prometheus 3, a timestamp and an
//! exemplar that are ignored), `# TYPE`, `# UNIT`, `# HELP` and `# EOF`. A line that does not
//! parse is skipped and reported, never fatal: one odd line must not lose a whole scrape.

use std::collections::{BTreeMap, BTreeSet};

/// A series' labels, sorted by name.
pub type Labels = Vec<(String, String)>;

/// What a family is, from `# TYPE` (or guessed from its sample names when it has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A monotonic total (`_total` samples in OpenMetrics).
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// Cumulative `_bucket{le}` counts, `_count` and `_sum`.
    Histogram,
    /// Quantiles (`{quantile}`), `_count` and `_sum`.
    Summary,
    /// No type, or one without a better mapping (`info`, `stateset`): read as a gauge.
    Untyped,
}

/// One family of an exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// What it is.
    pub kind: Kind,
    /// `# HELP`, if given.
    pub help: Option<String>,
    /// `# UNIT` (OpenMetrics), if given.
    pub unit: Option<String>,
    /// Series by their labels (without `le` or `quantile`).
    pub series: BTreeMap<Labels, Series>,
}

/// One series: a value, or the parts of a histogram or summary.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    /// The sample of a counter, gauge or untyped series.
    pub value: Option<f64>,
    /// `(le, cumulative count)`, sorted by `le`; the last is `+Inf` in a well-formed series.
    pub buckets: Vec<(f64, f64)>,
    /// `(quantile, value)` of a summary, sorted by quantile.
    pub quantiles: Vec<(f64, f64)>,
    /// `_count`, if exposed.
    pub count: Option<f64>,
    /// `_sum`, if exposed.
    pub sum: Option<f64>,
    /// The native (exponential) form of a histogram, read from the protobuf format only.
    pub native: Option<Native>,
}

/// A native histogram: exponential buckets at a schema, as Prometheus exposes them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Native {
    /// Resolution: bucket `i` holds `(base^(i-1), base^i]` with `base = 2^(2^-schema)`.
    pub schema: i32,
    /// Observations whose magnitude is at most the zero threshold.
    pub zero_count: f64,
    /// `(bucket index, count)` of positive observations (counts per bucket, not cumulative).
    pub positive: Vec<(i32, f64)>,
    /// `(bucket index, count)` of negative observations, indexed by magnitude.
    pub negative: Vec<(i32, f64)>,
}

impl Native {
    /// The buckets as `(value, count)` pairs for [`sonde_core::Histogram::record_counts`]:
    /// each bucket at its geometric middle, the zero bucket at 0; `None` for a schema outside
    /// the standard -4..=8 or a count that is not a whole non-negative number.
    pub fn values(&self) -> Option<Vec<(f64, u64)>> {
        if !(-4..=8).contains(&self.schema) {
            return None;
        }
        let whole =
            |c: f64| (c.is_finite() && c >= 0.0 && c < 2f64.powi(63)).then(|| c.round() as u64);
        let mut out = Vec::with_capacity(self.positive.len() + self.negative.len() + 1);
        if self.zero_count != 0.0 {
            out.push((0.0, whole(self.zero_count)?));
        }
        for (sign, buckets) in [(1.0, &self.positive), (-1.0, &self.negative)] {
            for &(i, c) in buckets {
                let n = whole(c)?;
                if n > 0 {
                    // Prometheus's bucket i is OpenTelemetry's i - 1.
                    let middle =
                        sonde_core::histogram::exponential_middle(self.schema, i64::from(i) - 1);
                    out.push((sign * middle, n));
                }
            }
        }
        out.iter().all(|(v, _)| v.is_finite()).then_some(out)
    }
}

impl Series {
    /// The `q` quantile of a histogram, interpolated linearly within the bucket that holds it,
    /// exactly as Prometheus' `histogram_quantile`: `None` without a `+Inf` bucket or
    /// observations; the highest finite bound when the quantile falls in the `+Inf` bucket.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        bucket_quantile(q, &self.buckets)
    }

    /// Observations of a histogram: `_count`, or the `+Inf` bucket.
    pub fn total(&self) -> f64 {
        self.count
            .or_else(|| {
                self.buckets
                    .last()
                    .filter(|b| b.0 == f64::INFINITY)
                    .map(|b| b.1)
            })
            .unwrap_or(0.0)
    }
}

/// Prometheus' `histogram_quantile` over cumulative `(le, count)` buckets sorted by `le`.
pub fn bucket_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    if !(0.0..=1.0).contains(&q) || buckets.len() < 2 {
        return None;
    }
    if buckets.last().map(|b| b.0) != Some(f64::INFINITY) {
        return None;
    }
    // Counts scraped mid-update can be slightly non-monotonic; Prometheus evens them out.
    let mut cum: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    let mut max = 0.0f64;
    for &(le, n) in buckets {
        max = max.max(if n.is_finite() { n } else { 0.0 });
        cum.push((le, max));
    }
    let total = cum[cum.len() - 1].1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let last = cum.len() - 1;
    let b = cum[..last].iter().position(|x| x.1 >= rank).unwrap_or(last);
    if b == last {
        return Some(cum[last - 1].0);
    }
    if b == 0 && cum[0].0 <= 0.0 {
        return Some(cum[0].0);
    }
    let (start, below) = if b == 0 {
        (0.0, 0.0)
    } else {
        (cum[b - 1].0, cum[b - 1].1)
    };
    let (end, count) = (cum[b].0, cum[b].1 - below);
    if count <= 0.0 {
        return Some(end);
    }
    Some(start + (end - start) * ((rank - below) / count))
}

/// A parsed exposition. Counter families are named without `_total`
/// (`http_requests` for the samples `http_requests_total`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exposition {
    /// Families by name.
    pub families: BTreeMap<String, Family>,
    /// Lines that did not parse (`line N: problem: text`), the first five.
    pub skipped: Vec<String>,
    /// How many lines did not parse in all.
    pub skipped_count: usize,
}

/// A sample line, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The sample name (`http_requests_total`, `latency_bucket`).
    pub name: String,
    /// Its labels, sorted by name.
    pub labels: Labels,
    /// Its value.
    pub value: f64,
}

/// Parses a Prometheus text (0.0.4) or OpenMetrics (1.0) exposition.
///
/// Lines that do not parse are counted in [`Exposition::skipped`]; the whole body is refused
/// only when it has lines but not one sample parsed (it is not an exposition: an HTML page,
/// JSON).
///
/// ```
/// let text = "# TYPE http_requests counter\nhttp_requests_total{code=\"200\"} 7\n\
///             # TYPE latency histogram\nlatency_bucket{le=\"0.1\"} 2\nlatency_bucket{le=\"+Inf\"} 3\n\
///             latency_count 3\nlatency_sum 0.42\ntemperature 21.5\n";
/// let e = sonde_scrape::parse(text).unwrap();
/// let requests = &e.families["http_requests"];
/// assert_eq!(requests.kind, sonde_scrape::Kind::Counter);
/// assert_eq!(requests.series[&vec![("code".into(), "200".into())]].value, Some(7.0));
/// assert_eq!(e.families["latency"].series[&vec![]].buckets, vec![(0.1, 2.0), (f64::INFINITY, 3.0)]);
/// assert_eq!(e.families["temperature"].kind, sonde_scrape::Kind::Untyped);
/// ```
pub fn parse(text: &str) -> Result<Exposition, String> {
    parse_at_most(text, usize::MAX).map_err(|e| e.to_string())
}

/// Why an exposition was not read.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Unreadable {
    /// It is not an exposition in this format: what is wrong.
    Invalid(String),
    /// It has more samples than the limit (reading stopped there).
    TooManySamples(usize),
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unreadable::Invalid(problem) => f.write_str(problem),
            Unreadable::TooManySamples(limit) => write!(f, "more than {limit} samples"),
        }
    }
}

/// [`parse`], stopping as soon as more than `max_samples` sample lines have parsed: a target
/// cannot make the reader hold more than that, whatever its body's size.
pub(crate) fn parse_at_most(text: &str, max_samples: usize) -> Result<Exposition, Unreadable> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut units: BTreeMap<String, String> = BTreeMap::new();
    let mut helps: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = Vec::new();
    let mut out = Exposition::default();
    let mut content_lines = 0usize;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches('\r').trim();
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let comment = comment.trim_start();
            let (word, rest) = comment
                .split_once(char::is_whitespace)
                .unwrap_or((comment, ""));
            let (name, rest) = rest
                .trim_start()
                .split_once(char::is_whitespace)
                .unwrap_or((rest.trim(), ""));
            match word {
                "EOF" => break,
                "TYPE" if !name.is_empty() => {
                    types.insert(unquote_name(name), rest.trim().to_ascii_lowercase());
                }
                "UNIT" if !name.is_empty() => {
                    units.insert(unquote_name(name), rest.trim().to_owned());
                }
                "HELP" if !name.is_empty() => {
                    helps.insert(unquote_name(name), unescape_help(rest.trim()));
                }
                _ => {}
            }
            continue;
        }
        content_lines += 1;
        match parse_sample(line) {
            Ok(_) if samples.len() == max_samples => {
                return Err(Unreadable::TooManySamples(max_samples));
            }
            Ok(s) => samples.push(s),
            Err(problem) => {
                out.skipped_count += 1;
                if out.skipped.len() < 5 {
                    let shown: String = line.chars().take(120).collect();
                    out.skipped
                        .push(format!("line {}: {problem}: {shown}", i + 1));
                }
            }
        }
    }
    if content_lines > 0 && samples.is_empty() {
        let first = out.skipped.first().cloned().unwrap_or_default();
        return Err(Unreadable::Invalid(format!(
            "the body is not Prometheus text or OpenMetrics (no sample line parsed; {first})"
        )));
    }
    // Histogram families without `# TYPE` (some hand-written exporters): a `_bucket` series
    // with an `le` label is enough.
    let untyped_histograms: BTreeSet<String> = samples
        .iter()
        .filter(|s| s.labels.iter().any(|(k, _)| k == "le"))
        .filter_map(|s| s.name.strip_suffix("_bucket"))
        .filter(|base| !types.contains_key(*base))
        .map(str::to_owned)
        .collect();
    for s in samples {
        let (family, kind) = resolve_family(&s.name, &types, &untyped_histograms);
        let suffix = s.name.get(family.len()..).unwrap_or("").to_owned();
        // Counters are named without `_total`, whichever format named the family.
        let key = match kind {
            Kind::Counter => family.strip_suffix("_total").unwrap_or(&family).to_owned(),
            _ => family.clone(),
        };
        let fam = out.families.entry(key).or_insert_with(|| Family {
            kind,
            help: helps.get(&family).cloned(),
            unit: units.get(&family).cloned(),
            series: BTreeMap::new(),
        });
        let mut labels = s.labels;
        let take = |labels: &mut Labels, name: &str| {
            labels
                .iter()
                .position(|(k, _)| k == name)
                .map(|i| labels.remove(i).1)
        };
        match kind {
            Kind::Histogram => {
                let le = take(&mut labels, "le");
                let series = fam.series.entry(labels).or_default();
                match (suffix.as_str(), le) {
                    ("_bucket", Some(le)) => {
                        if let Some(le) = parse_value(&le) {
                            match series.buckets.iter_mut().find(|b| b.0 == le) {
                                Some(b) => b.1 = s.value,
                                None => series.buckets.push((le, s.value)),
                            }
                        }
                    }
                    ("_count", _) => series.count = Some(s.value),
                    ("_sum", _) => series.sum = Some(s.value),
                    _ => {} // `_created`, `_gcount`...
                }
            }
            Kind::Summary => {
                let q = take(&mut labels, "quantile");
                let series = fam.series.entry(labels).or_default();
                match (suffix.as_str(), q.as_deref().and_then(parse_value)) {
                    ("", Some(q)) => series.quantiles.push((q, s.value)),
                    ("_count", _) => series.count = Some(s.value),
                    ("_sum", _) => series.sum = Some(s.value),
                    _ => {}
                }
            }
            Kind::Counter => {
                if suffix == "_created" {
                    continue;
                }
                fam.series.entry(labels).or_default().value = Some(s.value);
            }
            Kind::Gauge | Kind::Untyped => {
                fam.series.entry(labels).or_default().value = Some(s.value);
            }
        }
    }
    for fam in out.families.values_mut() {
        for series in fam.series.values_mut() {
            series.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            series.quantiles.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
    }
    Ok(out)
}

/// The family a sample belongs to and its kind: by `# TYPE` of the name itself, else of the
/// name without a suffix its type allows; untyped `_total` samples are counters.
fn resolve_family(
    name: &str,
    types: &BTreeMap<String, String>,
    untyped_histograms: &BTreeSet<String>,
) -> (String, Kind) {
    let kind_of = |t: &str| match t {
        "histogram" | "gaugehistogram" => Kind::Histogram,
        "counter" => Kind::Counter,
        "gauge" => Kind::Gauge,
        "summary" => Kind::Summary,
        _ => Kind::Untyped,
    };
    if let Some(t) = types.get(name) {
        return (name.to_owned(), kind_of(t));
    }
    for suffix in ["_bucket", "_count", "_sum", "_created", "_total", "_info"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if let Some(t) = types.get(base) {
                let kind = kind_of(t);
                let fits = match kind {
                    Kind::Histogram => matches!(suffix, "_bucket" | "_count" | "_sum" | "_created"),
                    Kind::Summary => matches!(suffix, "_count" | "_sum" | "_created"),
                    Kind::Counter => suffix == "_total" || suffix == "_created",
                    Kind::Gauge => false,
                    Kind::Untyped => suffix == "_info",
                };
                if fits && suffix == "_info" {
                    // An OpenMetrics info family's samples keep their `_info` name, which is
                    // what the family is called in the text format and by the agent's own.
                    return (name.to_owned(), kind);
                }
                if fits {
                    return (base.to_owned(), kind);
                }
            }
            if untyped_histograms.contains(base) && matches!(suffix, "_bucket" | "_count" | "_sum")
            {
                return (base.to_owned(), Kind::Histogram);
            }
        }
    }
    if name.ends_with("_total") {
        return (name.to_owned(), Kind::Counter);
    }
    (name.to_owned(), Kind::Untyped)
}

/// `"name"` (a quoted UTF-8 name) or `name`.
fn unquote_name(s: &str) -> String {
    s.strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .unwrap_or(s)
        .to_owned()
}

/// `# HELP` text with its `\\` and `\n` escapes expanded.
fn unescape_help(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            ('\\', Some('n')) => {
                out.push('\n');
                chars.next();
            }
            ('\\', Some('\\')) => {
                out.push('\\');
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

/// A sample value: a float, `+Inf`, `-Inf` or `NaN` (Go's spellings, which Rust also reads).
pub fn parse_value(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok()
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// A cursor over one line.
struct Cursor<'a> {
    s: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<char> {
        self.s.get(self.at..)?.chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.at += c.len_utf8();
        Some(c)
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.at += 1;
        }
    }

    fn name(&mut self) -> Option<&'a str> {
        let start = self.at;
        match self.peek() {
            Some(c) if is_name_start(c) => {}
            _ => return None,
        }
        while self.peek().is_some_and(is_name_char) {
            self.at += 1;
        }
        self.s.get(start..self.at)
    }

    /// A double-quoted string with `\\`, `\"` and `\n` escapes (others kept as written).
    fn quoted(&mut self) -> Result<String, String> {
        if self.bump() != Some('"') {
            return Err("expected '\"'".to_owned());
        }
        let mut out = String::new();
        loop {
            match self.bump() {
                None => return Err("unterminated quoted string".to_owned()),
                Some('"') => return Ok(out),
                Some('\\') => match self.bump() {
                    Some('n') => out.push('\n'),
                    Some('\\') => out.push('\\'),
                    Some('"') => out.push('"'),
                    Some(c) => {
                        out.push('\\');
                        out.push(c);
                    }
                    None => return Err("unterminated quoted string".to_owned()),
                },
                Some(c) => out.push(c),
            }
        }
    }
}

/// Parses one sample line (name, labels, value; a timestamp or exemplar after it is ignored).
pub fn parse_sample(line: &str) -> Result<Sample, String> {
    let mut c = Cursor { s: line, at: 0 };
    let mut name = c.name().map(str::to_owned);
    let mut labels = Vec::new();
    c.skip_ws();
    if c.peek() == Some('{') {
        c.bump();
        loop {
            c.skip_ws();
            match c.peek() {
                Some('}') => {
                    c.bump();
                    break;
                }
                None => return Err("unterminated label set".to_owned()),
                _ => {}
            }
            let key = if c.peek() == Some('"') {
                c.quoted()?
            } else {
                c.name()
                    .ok_or_else(|| "a label name was expected".to_owned())?
                    .to_owned()
            };
            c.skip_ws();
            if c.peek() == Some('=') {
                c.bump();
                c.skip_ws();
                let value = c.quoted()?;
                labels.push((key, value));
            } else if name.is_none() {
                // Prometheus 3: `{"metric.name", label="v"}`.
                name = Some(key);
            } else {
                return Err(format!("label {key:?} has no '='"));
            }
            c.skip_ws();
            match c.bump() {
                Some(',') => {}
                Some('}') => break,
                _ => return Err("expected ',' or '}' in the label set".to_owned()),
            }
        }
    }
    let name = name.ok_or_else(|| "no metric name".to_owned())?;
    c.skip_ws();
    let rest = line.get(c.at..).unwrap_or("");
    let token = rest.split_whitespace().next().unwrap_or("");
    let value = parse_value(token).ok_or_else(|| format!("{token:?} is not a sample value"))?;
    labels.sort();
    Ok(Sample {
        name,
        labels,
        value,
    })
}
