//! Reading `objectives.toml`: every problem collected, each located `file:line:column`, with
//! what to do about it.

use std::ops::Range;

use sonde_core::Unit;
use sonde_core::diag::location;
use toml_edit::{Document, Item, TableLike, Value};

use crate::Problem;
use crate::model::{
    ALWAYS_BY, Common, Events, Latency, MinTraffic, Objectives, Percentile, Ratio, Severity,
    SourceKind, Subset, Target, Threshold, Window,
};
use crate::selector::{Matcher, Selector};

/// Where the alerts' runbook links point unless `[alerts] runbook` says otherwise.
pub const DEFAULT_RUNBOOK: &str = "https://example.invalid/sonde/blob/main/alerts/runbook.md";

const TOP_KEYS: &[&str] = &["alerts", "threshold", "ratio"];
const ALERTS_KEYS: &[&str] = &["runbook"];
const THRESHOLD_KEYS: &[&str] = &[
    "description",
    "metric",
    "selector",
    "percentile",
    "threshold",
    "window",
    "by",
    "for",
    "severity",
    "min_traffic",
    "alert",
    "runbook",
];
const RATIO_KEYS: &[&str] = &[
    "description",
    "target",
    "window",
    "total",
    "good",
    "bad",
    "by",
    "min_traffic",
    "alert",
    "runbook",
];
const EVENTS_KEYS: &[&str] = &["counter", "histogram", "unit", "selector", "le"];

struct Reader<'a> {
    origin: &'a str,
    text: &'a str,
    problems: Vec<Problem>,
}

/// One `[KIND.NAME]` objective being read, with what every kind has.
struct Entry<'t> {
    name: &'t str,
    table: &'t dyn TableLike,
    span: Option<Range<usize>>,
    /// What messages call it, such as threshold objective `api-latency-p95`.
    what: String,
    /// How many problems there were before it (it is kept only if it adds none).
    before: usize,
    common: Common,
    /// The `[alerts]` runbook page, unless it names its own.
    runbook: &'t str,
}

/// `s`, cut to 64 bytes for messages.
fn shorten(s: &str) -> String {
    sonde_core::diag::shorten(s, 64)
}

/// `api-latency-p95` → `ApiLatencyP95`.
pub fn camel(name: &str) -> String {
    camel_words(name.split(['-', '_']))
}

/// The words one after the other, each with its first letter in upper case (empty ones left
/// out).
pub(crate) fn camel_words<'a>(words: impl Iterator<Item = &'a str>) -> String {
    words
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

fn valid_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f.is_ascii_lowercase() || f.is_ascii_digit())
        && c.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn valid_alert(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic())
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The runbook link of an alert: the base, `#`, the alert's name in lower case.
fn runbook_url(base: &str, alert: &str) -> String {
    format!("{base}#{}", alert.to_ascii_lowercase())
}

impl<'a> Reader<'a> {
    fn at(&self, span: Option<Range<usize>>) -> String {
        location(self.origin, self.text, span.map(|s| s.start).unwrap_or(0))
    }

    fn error(&mut self, location: String, message: impl Into<String>, hint: impl Into<String>) {
        self.problems.push(Problem {
            location,
            message: message.into(),
            hint: hint.into(),
        });
    }

    fn unknown_keys(&mut self, table: &dyn TableLike, what: &str, known: &[&str]) {
        for (key, _) in table.iter() {
            if known.contains(&key) {
                continue;
            }
            let span = table.key(key).and_then(|k| k.span());
            let (message, hint) = sonde_core::diag::unknown_key(key, known, Some(what));
            self.error(self.at(span), message, hint);
        }
    }

    fn table<'t>(&mut self, item: &'t Item, what: &str, hint: &str) -> Option<&'t dyn TableLike> {
        match item.as_table_like() {
            Some(t) => Some(t),
            None => {
                self.error(
                    self.at(item.span()),
                    format!("{what} must be a table"),
                    hint,
                );
                None
            }
        }
    }

    /// A string value, with where it is; a problem when it is something else.
    fn string(
        &mut self,
        t: &dyn TableLike,
        key: &str,
        what: &str,
        example: &str,
    ) -> Option<(String, String, Option<Range<usize>>)> {
        let item = t.get(key)?;
        match item {
            Item::Value(Value::String(s)) => Some((s.value().clone(), self.at(s.span()), s.span())),
            other => {
                self.error(
                    self.at(other.span()),
                    format!("`{key}` of {what} must be a string"),
                    format!("write it in double quotes, for example {key} = \"{example}\""),
                );
                None
            }
        }
    }

    /// A string the objective must have: its absence is an error at the objective.
    fn required(
        &mut self,
        e: &Entry<'_>,
        key: &str,
        example: &str,
    ) -> Option<(String, String, Option<Range<usize>>)> {
        if e.table.get(key).is_none() {
            self.error(
                self.at(e.span.clone()),
                format!("{} has no `{key}`", e.what),
                format!("add it, for example {key} = \"{example}\""),
            );
            return None;
        }
        self.string(e.table, key, &e.what, example)
    }

    fn parsed<T>(
        &mut self,
        t: &dyn TableLike,
        key: &str,
        what: &str,
        example: &str,
        parse: fn(&str) -> Option<T>,
        expected: &str,
    ) -> Option<T> {
        let (s, loc, _) = self.string(t, key, what, example)?;
        match parse(s.trim()) {
            Some(v) => Some(v),
            None => {
                self.error(
                    loc,
                    format!("`{key}` of {what} is `{}`, not {expected}", shorten(&s)),
                    format!("write it like \"{example}\""),
                );
                None
            }
        }
    }

    /// [`parsed`](Self::parsed) for a key the objective must have: its absence is an error at
    /// the objective.
    fn needed<T>(
        &mut self,
        e: &Entry<'_>,
        key: &str,
        example: &str,
        parse: fn(&str) -> Option<T>,
        expected: &str,
    ) -> Option<T> {
        // Absent or not a string: said once, by `required`.
        self.required(e, key, example)?;
        self.parsed(e.table, key, &e.what, example, parse, expected)
    }

    fn selector(&mut self, t: &dyn TableLike, what: &str) -> Selector {
        let Some(item) = t.get("selector") else {
            return Selector::default();
        };
        if let Some(Value::String(s)) = item.as_value() {
            return match Selector::parse(s.value()) {
                Ok(sel) => sel,
                Err(e) => {
                    // The string's text starts after its opening quote (exact unless it has
                    // escapes before the problem).
                    let at = s.span().map(|r| r.start + 1 + e.at);
                    self.error(
                        location(self.origin, self.text, at.unwrap_or(0)),
                        format!("selector of {what}: {}", e.message),
                        "write matchers like 'http.route!=\"/health\", error.type=~\"5..\"' (label, =, !=, =~ or !~, a quoted value, commas between)",
                    );
                    Selector::default()
                }
            };
        }
        let Some(table) = item.as_table_like() else {
            self.error(
                self.at(item.span()),
                format!("selector of {what} must be a string or a table"),
                "write selector = 'http.route!=\"/health\"' or selector = { \"http.route\" = \"!=/health\" }",
            );
            return Selector::default();
        };
        let mut matchers = Vec::new();
        for (label, v) in table.iter() {
            let loc = self.at(table.key(label).and_then(|k| k.span()));
            let Some(value) = v.as_str() else {
                self.error(
                    self.at(v.span()),
                    format!("the value of label `{label}` in the selector of {what} must be a string"),
                    "write it in quotes, optionally after an operator: \"=~/api/.*\", \"!=/health\", \"GET\"",
                );
                continue;
            };
            let (op, value) = Selector::table_value(value);
            match Matcher::new(label, op, value) {
                Ok(m) => matchers.push(m),
                Err(message) => self.error(
                    loc,
                    format!("selector of {what}: {message}"),
                    "fix the label name or the regular expression (RE2 syntax, matched against the whole value)",
                ),
            }
        }
        Selector { matchers }
    }

    fn by(&mut self, t: &dyn TableLike, what: &str) -> Vec<String> {
        let mut by: Vec<String> = ALWAYS_BY.iter().map(|s| s.to_string()).collect();
        let Some(item) = t.get("by") else {
            return by;
        };
        let Some(arr) = item.as_array() else {
            self.error(
                self.at(item.span()),
                format!("`by` of {what} must be a list of label names"),
                "write it like by = [\"instance\", \"http.route\"]",
            );
            return by;
        };
        for v in arr.iter() {
            match v.as_str() {
                Some(l) if Matcher::new(l, crate::selector::Op::Eq, "").is_ok() => {
                    if !by.iter().any(|b| b == l) {
                        by.push(l.to_string());
                    }
                }
                _ => self.error(
                    self.at(v.span()),
                    format!(
                        "`by` of {what} has `{}`, not a label name",
                        shorten(v.as_str().unwrap_or(v.type_name()))
                    ),
                    "use label names in quotes (letters, digits, `_`, `.`), such as \"http.route\"",
                ),
            }
        }
        by
    }

    fn metric_name(&mut self, name: &str, loc: String, what: &str) -> bool {
        match sonde_core::name::validate_metric_name(name) {
            Ok(()) => true,
            Err(e) => {
                self.error(
                    loc,
                    format!("metric of {what}: {e}"),
                    "use the OpenTelemetry name the service registers, such as \"http.server.request.duration\"",
                );
                false
            }
        }
    }

    fn common(
        &mut self,
        t: &dyn TableLike,
        name: &str,
        span: Option<Range<usize>>,
        what: &str,
        default_traffic: &str,
    ) -> Common {
        let description = self
            .string(t, "description", what, "API requests")
            .map(|(s, _, _)| s)
            .unwrap_or_else(|| name.to_string());
        let min_traffic = self
            .parsed(
                t,
                "min_traffic",
                what,
                default_traffic,
                MinTraffic::parse,
                "a rate such as 1/min, 0.1/s or 10/h",
            )
            .unwrap_or_else(|| {
                MinTraffic::parse(default_traffic).unwrap_or(MinTraffic {
                    text: String::new(),
                    events: crate::model::Decimal {
                        mantissa: 0,
                        scale: 0,
                    },
                    per_seconds: 1,
                })
            });
        Common {
            name: name.to_string(),
            description,
            by: self.by(t, what),
            min_traffic,
            location: self.at(span),
        }
    }

    /// The start of reading a `[KIND.NAME]` objective (`threshold` or `ratio`): its keys
    /// checked and those every kind has read.
    fn entry<'t>(
        &mut self,
        kind: &str,
        name: &'t str,
        table: &'t dyn TableLike,
        span: Option<Range<usize>>,
        runbook: &'t str,
    ) -> Entry<'t> {
        let (keys, default_traffic) = match kind {
            "threshold" => (THRESHOLD_KEYS, "1/min"),
            _ => (RATIO_KEYS, "6/min"),
        };
        let what = format!("{kind} objective `{name}`");
        self.unknown_keys(table, &format!("[{kind}.{name}]"), keys);
        let before = self.problems.len();
        let common = self.common(table, name, span.clone(), &what, default_traffic);
        Entry {
            name,
            table,
            span,
            what,
            before,
            common,
            runbook,
        }
    }

    /// The objective's runbook page: its own `runbook`, else `default` (the `[alerts]` one).
    fn runbook(&mut self, t: &dyn TableLike, what: &str, default: &str) -> String {
        self.string(t, "runbook", what, DEFAULT_RUNBOOK)
            .map(|(s, _, _)| s)
            .unwrap_or_else(|| default.to_string())
    }

    fn alert_name(&mut self, t: &dyn TableLike, what: &str, default: String) -> String {
        match self.string(t, "alert", what, "ApiLatencyP95High") {
            Some((s, loc, _)) if !valid_alert(&s) => {
                self.error(
                    loc,
                    format!("alert name `{}` of {what} is not a valid alert name", shorten(&s)),
                    "use letters, digits and `_`, starting with a letter, CamelCase like ApiLatencyP95High",
                );
                default
            }
            Some((s, _, _)) => s,
            None => default,
        }
    }

    fn threshold(&mut self, e: Entry<'_>) -> Option<Threshold> {
        let (t, what) = (e.table, e.what.as_str());
        let metric = self.required(&e, "metric", "http.server.request.duration");
        if let Some((m, loc, _)) = &metric {
            self.metric_name(m, loc.clone(), what);
        }
        let selector = self.selector(t, what);
        let percentile = self.needed(
            &e,
            "percentile",
            "p95",
            Percentile::parse,
            "a percentile from p0.1 to p99.99",
        );
        let threshold = self.needed(
            &e,
            "threshold",
            "300ms",
            Latency::parse,
            "a latency above zero such as 300ms or 1.5s",
        );
        let window = self.needed(
            &e,
            "window",
            "5m",
            Window::parse,
            "a window such as 5m or 1h (whole number and s, m, h, d or w; a year at most)",
        );
        let for_ = self
            .parsed(
                t,
                "for",
                what,
                "10m",
                Window::parse,
                "a duration above zero and up to a year such as 10m",
            )
            .unwrap_or(Window {
                text: "10m".into(),
                seconds: 600,
            });
        let severity = match self.string(t, "severity", what, "warning") {
            None => Severity::Warning,
            Some((s, loc, _)) => match s.as_str() {
                "critical" => Severity::Critical,
                "warning" => Severity::Warning,
                "info" => Severity::Info,
                other => {
                    let hint =
                        match sonde_core::diag::closest(other, &["critical", "warning", "info"]) {
                            Some(k) => format!("did you mean \"{k}\"?"),
                            None => "use \"critical\" (pages), \"warning\" (a ticket) or \"info\""
                                .into(),
                        };
                    self.error(
                        loc,
                        format!("severity `{}` of {what} is not a severity", shorten(other)),
                        hint,
                    );
                    Severity::Warning
                }
            },
        };
        let alert = self.alert_name(t, what, format!("{}High", camel(e.name)));
        let base = self.runbook(t, what, e.runbook);
        if self.problems.len() > e.before {
            return None;
        }
        Some(Threshold {
            common: e.common,
            metric: metric?.0,
            selector,
            percentile: percentile?,
            threshold: threshold?,
            window: window?,
            for_,
            severity,
            runbook_url: runbook_url(&base, &alert),
            alert,
        })
    }

    /// `total`, `good` or `bad` of a ratio objective; `base` is the total for the others.
    fn events(
        &mut self,
        t: &dyn TableLike,
        key: &str,
        what: &str,
        base: Option<&Events>,
    ) -> Option<Events> {
        let item = t.get(key)?;
        let what = format!("`{key}` of {what}");
        let table = self.table(
            item,
            &what,
            "write it like { histogram = \"http.server.request.duration\", selector = 'http.route!=\"/health\"' } or { counter = \"cache.requests\" }",
        )?;
        self.unknown_keys(table, &what, EVENTS_KEYS);
        let before = self.problems.len();
        let counter = self.string(table, "counter", &what, "cache.requests");
        let histogram = self.string(table, "histogram", &what, "http.server.request.duration");
        let unit = self.string(table, "unit", &what, "s");
        let (kind, metric) = match (counter, histogram) {
            (Some(_), Some((_, loc, _))) => {
                self.error(
                    loc,
                    format!("{what} names both a counter and a histogram"),
                    "keep one of them",
                );
                return None;
            }
            (Some((m, loc, _)), None) => {
                self.metric_name(&m, loc, &what);
                if let Some((_, loc, _)) = &unit {
                    self.error(
                        loc.clone(),
                        format!("{what}: `unit` is for histograms"),
                        "remove it; a counter's events have no unit",
                    );
                }
                (SourceKind::Counter, m)
            }
            (None, Some((m, loc, _))) => {
                self.metric_name(&m, loc, &what);
                let unit = unit
                    .map(|(u, _, _)| Unit::from_ucum(&u))
                    .unwrap_or(Unit::Seconds);
                (SourceKind::Histogram { unit }, m)
            }
            (None, None) => match base {
                Some(b) => (b.kind.clone(), b.metric.clone()),
                None => {
                    self.error(
                        self.at(item.span()),
                        format!("{what} names no metric"),
                        "add counter = \"...\" (events are its increments) or histogram = \"...\" (events are its observations)",
                    );
                    return None;
                }
            },
        };
        let own = self.selector(table, &what);
        let selector = match base {
            Some(b) if b.metric == metric => b.selector.and(&own),
            _ => own,
        };
        let le = match self.string(table, "le", &what, "300ms") {
            None => None,
            Some((s, loc, _)) => {
                if key != "good" {
                    self.error(
                        loc,
                        format!("{what}: `le` is only for good events"),
                        "move it to `good` (the good events are the observations at most `le`)",
                    );
                    None
                } else if !matches!(
                    kind,
                    SourceKind::Histogram {
                        unit: Unit::Seconds
                    }
                ) {
                    self.error(
                        loc,
                        format!("{what}: `le` needs a histogram in seconds"),
                        "name a latency histogram: histogram = \"http.server.request.duration\"",
                    );
                    None
                } else {
                    let le = Latency::parse(s.trim());
                    if le.is_none() {
                        self.error(
                            loc,
                            format!(
                                "`le` of {what} is `{}`, not a latency above zero such as 300ms",
                                shorten(&s)
                            ),
                            "write it like \"300ms\"",
                        );
                    }
                    le
                }
            }
        };
        if self.problems.len() > before {
            return None;
        }
        Some(Events {
            kind,
            metric,
            selector,
            le,
        })
    }

    fn ratio(&mut self, e: Entry<'_>) -> Option<Ratio> {
        let (t, what) = (e.table, e.what.as_str());
        let target = self.needed(
            &e,
            "target",
            "99.9%",
            Target::parse,
            "a percentage between 0% and 100% such as 99.9%",
        );
        let window = self.needed(
            &e,
            "window",
            "30d",
            Window::parse,
            "a compliance window of a year at most such as 30d or 4w",
        );
        if let Some(w) = &window
            && w.seconds < 3 * 86_400
            && let Some((_, loc, _)) = self.string(t, "window", what, "30d")
        {
            self.error(loc, format!("window `{}` of {what} is shorter than the 3 days of the slowest burn-rate window", w.text), "use a compliance window of 3d or more, typically 28d or 30d");
        }
        let total = if t.contains_key("total") {
            self.events(t, "total", what, None)
        } else {
            self.error(
                self.at(e.span.clone()),
                format!("{what} has no `total`"),
                "add total = { histogram = \"http.server.request.duration\" } (or a counter) and good = {...} or bad = {...}",
            );
            None
        };
        let subset = match (t.contains_key("good"), t.contains_key("bad")) {
            (true, true) => {
                let loc = self.at(t.key("bad").and_then(|k| k.span()));
                self.error(
                    loc,
                    format!("{what} has both `good` and `bad`"),
                    "keep one: the other is total minus it",
                );
                None
            }
            (false, false) => {
                self.error(
                    self.at(e.span.clone()),
                    format!("{what} has neither `good` nor `bad`"),
                    "add good = { le = \"300ms\" } (fast requests), good = { selector = 'cache.result=\"hit\"' } or bad = { selector = 'error.type!=\"\"' }",
                );
                None
            }
            (true, false) => total
                .as_ref()
                .and_then(|b| self.events(t, "good", what, Some(b)))
                .map(Subset::Good),
            (false, true) => total
                .as_ref()
                .and_then(|b| self.events(t, "bad", what, Some(b)))
                .map(Subset::Bad),
        };
        if let (Some(total), Some(Subset::Good(e) | Subset::Bad(e))) = (&total, &subset)
            && e.selector == total.selector
            && e.le.is_none()
            && e.metric == total.metric
        {
            let key = if matches!(subset, Some(Subset::Good(_))) {
                "good"
            } else {
                "bad"
            };
            let loc = self.at(t.key(key).and_then(|k| k.span()));
            self.error(
                loc,
                format!("`{key}` of {what} selects the same events as `total`"),
                "narrow it with a selector (or `le` for good events of a histogram)",
            );
        }
        let prefix = self.alert_name(t, what, format!("Slo{}", camel(e.name)));
        let base = self.runbook(t, what, e.runbook);
        if self.problems.len() > e.before {
            return None;
        }
        let alert_page = format!("{prefix}BudgetBurnFast");
        let alert_ticket = format!("{prefix}BudgetBurnSlow");
        Some(Ratio {
            common: e.common,
            total: total?,
            subset: subset?,
            target: target?,
            window: window?,
            runbook_page: runbook_url(&base, &alert_page),
            runbook_ticket: runbook_url(&base, &alert_ticket),
            alert_page,
            alert_ticket,
        })
    }
}

/// Parses an objectives file; `origin` names it in the problems' locations.
pub fn parse(origin: &str, text: &str) -> Result<Objectives, Vec<Problem>> {
    let mut r = Reader {
        origin,
        text,
        problems: Vec::new(),
    };
    let doc = match Document::parse(text.to_string()) {
        Ok(d) => d,
        Err(e) => {
            let at = e.span().map(|s| s.start).unwrap_or(0);
            let message = e.message().trim().to_string();
            r.error(
                location(origin, text, at),
                format!("this is not valid TOML: {message}"),
                "fix the syntax (quotes around strings, one `key = value` per line, [section] headers)",
            );
            return Err(r.problems);
        }
    };
    let root = doc.as_table();
    r.unknown_keys(root, "the objectives file", TOP_KEYS);
    let mut runbook = DEFAULT_RUNBOOK.to_string();
    if let Some(item) = root.get("alerts")
        && let Some(t) = r.table(
            item,
            "[alerts]",
            "write it as an [alerts] section with runbook = \"https://...\"",
        )
    {
        r.unknown_keys(t, "[alerts]", ALERTS_KEYS);
        if let Some((s, loc, _)) = r.string(t, "runbook", "[alerts]", DEFAULT_RUNBOOK) {
            if s.starts_with("http://") || s.starts_with("https://") {
                runbook = s;
            } else {
                r.error(loc, format!("runbook `{}` is not an http(s) URL", shorten(&s)), "write the link to your runbook page, such as \"https://git.example.com/ops/sonde/-/blob/main/alerts/runbook.md\"");
            }
        }
    }
    let mut out = Objectives {
        origin: origin.to_string(),
        thresholds: Vec::new(),
        ratios: Vec::new(),
    };
    let mut names: Vec<String> = Vec::new();
    let mut alerts: Vec<(String, String)> = Vec::new();
    for kind in ["threshold", "ratio"] {
        let Some(item) = root.get(kind) else { continue };
        let Some(t) = r.table(
            item,
            &format!("`{kind}`"),
            &format!("write each objective as a [{kind}.NAME] section"),
        ) else {
            continue;
        };
        for (name, obj) in t.iter() {
            let key_span = t.key(name).and_then(|k| k.span());
            let span = obj.span().or(key_span.clone());
            if !valid_name(name) {
                r.error(
                    r.at(key_span.clone().or(span.clone())),
                    format!("objective name `{}` is not allowed", shorten(name)),
                    "use lower-case letters, digits, `-` and `_`, such as api-latency-p95",
                );
                continue;
            }
            if names.iter().any(|n| n == name) {
                r.error(
                    r.at(span.clone()),
                    format!("there is already an objective named `{name}`"),
                    "give every objective, threshold or ratio, its own name",
                );
                continue;
            }
            names.push(name.to_string());
            let Some(obj) = r.table(
                obj,
                &format!("[{kind}.{name}]"),
                &format!("write it as a [{kind}.{name}] section with its keys"),
            ) else {
                continue;
            };
            let loc = r.at(span.clone());
            let entry = r.entry(kind, name, obj, span, &runbook);
            if kind == "threshold" {
                if let Some(o) = r.threshold(entry) {
                    alerts.push((o.alert.clone(), loc));
                    out.thresholds.push(o);
                }
            } else if let Some(o) = r.ratio(entry) {
                alerts.push((o.alert_page.clone(), loc.clone()));
                alerts.push((o.alert_ticket.clone(), loc));
                out.ratios.push(o);
            }
        }
    }
    for (i, (a, loc)) in alerts.iter().enumerate() {
        if alerts[..i].iter().any(|(b, _)| b == a) {
            r.error(
                loc.clone(),
                format!("alert name `{a}` is used by another objective"),
                "set `alert` on one of them to a different name",
            );
        }
    }
    if out.thresholds.is_empty() && out.ratios.is_empty() && r.problems.is_empty() {
        r.error(
            location(origin, text, 0),
            "the file declares no objective",
            "add a [threshold.NAME] or [ratio.NAME] section (see crates/sonde-objectives/examples/objectives.toml)",
        );
    }
    if r.problems.is_empty() {
        Ok(out)
    } else {
        // In file order.
        let key = |p: &Problem| -> (usize, usize) {
            let mut it = p.location.rsplit(':').map(|n| n.parse().unwrap_or(0));
            let col = it.next().unwrap_or(0);
            (it.next().unwrap_or(0), col)
        };
        r.problems.sort_by_key(key);
        Err(r.problems)
    }
}
