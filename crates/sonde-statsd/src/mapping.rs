//! Mapping rules: glob patterns on `.`-separated StatsD names that rename, label or drop
//! metrics, in the style of statsd_exporter's glob mappings.
//!
//! Rules are tried in order and the first match wins. In a pattern, `*` matches any run of
//! characters other than `.` (possibly empty), so `api.*.requests` matches
//! `api.users.requests` but not `api.v1.users.requests`; `*` may also sit inside a segment
//! (`api_*_total`). Each `*` is a capture: `$1` is the first, `$2` the second, `${10}` the
//! tenth. Captures may be used in the new name and in label values. Names that match no rule
//! keep their name and get no labels. Every resulting name is
//! [sanitized](sanitize_metric_name).
//!
//! ```
//! use sonde_statsd::{Mapper, MappingRule};
//! let mut mapper = Mapper::new(vec![
//!     MappingRule::new("api.*.requests").name("http.requests").label("route", "$1"),
//!     MappingRule::new("debug.*").drop(),
//! ])?;
//! let m = mapper.map("api.users.requests").unwrap();
//! assert_eq!(m.name, "http.requests");
//! assert_eq!(m.labels, [("route".to_string(), "users".to_string())]);
//! assert!(mapper.map("debug.anything").is_none());
//! assert_eq!(mapper.map("other metric").unwrap().name, "other_metric");
//! # Ok::<(), sonde_statsd::MappingError>(())
//! ```

use std::borrow::Cow;
use std::collections::HashMap;

use sonde_core::name::{self, LongName, MAX_NAME_LEN, validate_label_name};

/// Distinct names whose mapping is remembered; past it the cache starts over.
const CACHE_LIMIT: usize = 65_536;
/// Bytes of names and mappings remembered (estimated); past it the cache starts over.
const CACHE_BYTES: usize = 4 << 20;

/// One mapping rule. In a configuration file: `match = "api.*.requests"`, `name`, `labels =
/// { route = "$1" }`, `drop = true`.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingRule {
    /// The glob pattern, e.g. `api.*.requests` (`match` in a file).
    #[serde(rename = "match")]
    pub pattern: String,
    /// The new name; may use captures (`http.$1.requests`). `None` keeps the name.
    #[serde(default)]
    pub name: Option<String>,
    /// Labels to add, `(name, value template)`; values may use captures. They take precedence
    /// over DogStatsD tags of the same name.
    #[serde(default, with = "sonde_settings::pairs")]
    pub labels: Vec<(String, String)>,
    /// Drop matching metrics (counted in `sonde.statsd.dropped{reason="mapping"}`).
    #[serde(default)]
    pub drop: bool,
}

impl MappingRule {
    /// A rule for `pattern` that does nothing yet; add [`name`](Self::name),
    /// [`label`](Self::label) or [`drop`](Self::drop).
    pub fn new(pattern: impl Into<String>) -> Self {
        MappingRule {
            pattern: pattern.into(),
            ..Self::default()
        }
    }

    /// Renames matching metrics.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Adds a label to matching metrics.
    pub fn label(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.push((name.into(), value.into()));
        self
    }

    /// Drops matching metrics.
    pub fn drop(mut self) -> Self {
        self.drop = true;
        self
    }
}

/// A rule that cannot be used, with its position in the list and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mapping rule #{index} (pattern {pattern:?}): {problem}")]
pub struct MappingError {
    /// Position of the rule in the list, from 0.
    pub index: usize,
    /// The rule's pattern.
    pub pattern: String,
    /// What is wrong and how to fix it.
    pub problem: String,
}

/// What a name maps to (when it is not dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapped {
    /// The sanitized metric name.
    pub name: String,
    /// Labels from the rule, with captures substituted.
    pub labels: Vec<(String, String)>,
    /// The index of the matching rule, if one matched.
    pub rule: Option<usize>,
}

#[derive(Debug, Clone)]
enum Piece {
    Literal(String),
    Capture(usize),
}

#[derive(Debug, Clone)]
struct Template(Vec<Piece>);

impl Template {
    fn parse(s: &str, captures: usize) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = s.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c != '$' {
                literal.push(c);
                continue;
            }
            let braced = chars.peek().map(|&(_, c)| c) == Some('{');
            if braced {
                chars.next();
            }
            let mut n: usize = 0;
            let mut digits = 0;
            while let Some(&(_, d)) = chars.peek() {
                let Some(v) = d.to_digit(10) else { break };
                n = n.saturating_mul(10).saturating_add(v as usize);
                digits += 1;
                chars.next();
            }
            if braced && chars.next().map(|(_, c)| c) != Some('}') {
                return Err(format!(
                    "unterminated '${{' at byte {i} of {s:?}; write ${{1}}"
                ));
            }
            if digits == 0 {
                return Err(format!(
                    "'$' at byte {i} of {s:?} is not followed by a capture number; write $1 for the first '*'"
                ));
            }
            if n == 0 || n > captures {
                return Err(format!(
                    "{s:?} refers to capture ${n}, but the pattern has {captures} '*' (captures are numbered from $1)"
                ));
            }
            if !literal.is_empty() {
                pieces.push(Piece::Literal(std::mem::take(&mut literal)));
            }
            pieces.push(Piece::Capture(n - 1));
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        Ok(Template(pieces))
    }

    fn render(&self, name: &str, captures: &[(usize, usize)]) -> String {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Piece::Literal(s) => out.push_str(s),
                Piece::Capture(i) => {
                    if let Some(&(a, b)) = captures.get(*i) {
                        out.push_str(name.get(a..b).unwrap_or(""));
                    }
                }
            }
        }
        out
    }
}

/// A pattern segment: the literal pieces between its `*`s (a segment without `*` is one piece).
#[derive(Debug, Clone)]
struct Segment {
    parts: Vec<String>,
}

impl Segment {
    fn stars(&self) -> usize {
        self.parts.len() - 1
    }

    /// Matches `text` (one segment of the name, starting at byte `offset` of it), pushing one
    /// capture per `*`. The last `*` takes what the others leave; the others are shortest.
    fn matches(&self, text: &str, offset: usize, captures: &mut Vec<(usize, usize)>) -> bool {
        let parts = &self.parts;
        if parts.len() == 1 {
            return text == parts[0];
        }
        let (first, last) = (&parts[0], &parts[parts.len() - 1]);
        if text.len() < first.len() + last.len()
            || !text.starts_with(first.as_str())
            || !text.ends_with(last.as_str())
        {
            return false;
        }
        let end = text.len() - last.len();
        let mut pos = first.len();
        for middle in &parts[1..parts.len() - 1] {
            let Some(found) = text.get(pos..end).and_then(|t| t.find(middle.as_str())) else {
                return false;
            };
            captures.push((offset + pos, offset + pos + found));
            pos += found + middle.len();
        }
        captures.push((offset + pos, offset + end));
        true
    }
}

#[derive(Debug, Clone)]
struct Compiled {
    segments: Vec<Segment>,
    name: Option<Template>,
    labels: Vec<(String, Template)>,
    drop: bool,
}

impl Compiled {
    fn compile(index: usize, rule: &MappingRule) -> Result<Compiled, MappingError> {
        let fail = |problem: String| MappingError {
            index,
            pattern: rule.pattern.clone(),
            problem,
        };
        if rule.pattern.is_empty() {
            return Err(fail("the pattern is empty".into()));
        }
        if rule.pattern.contains("**") {
            return Err(fail(
                "'**' is not supported: '*' matches within one '.'-separated segment; write one '*' per segment".into(),
            ));
        }
        let mut segments = Vec::new();
        for seg in rule.pattern.split('.') {
            if seg.is_empty() {
                return Err(fail(
                    "the pattern has an empty segment (a leading, trailing or doubled '.')".into(),
                ));
            }
            segments.push(Segment {
                parts: seg.split('*').map(str::to_owned).collect(),
            });
        }
        let captures: usize = segments.iter().map(Segment::stars).sum();
        if rule.drop && (rule.name.is_some() || !rule.labels.is_empty()) {
            return Err(fail(
                "a drop rule takes no name or labels; remove them or drop = false".into(),
            ));
        }
        if !rule.drop && rule.name.is_none() && rule.labels.is_empty() {
            return Err(fail(
                "the rule does nothing; give it a name, labels, or drop = true".into(),
            ));
        }
        let name = match &rule.name {
            Some(n) if n.is_empty() => return Err(fail("the new name is empty".into())),
            Some(n) => Some(Template::parse(n, captures).map_err(&fail)?),
            None => None,
        };
        let mut labels: Vec<(String, Template)> = Vec::new();
        for (k, v) in &rule.labels {
            validate_label_name(&rule.pattern, k, &[]).map_err(|e| fail(e.to_string()))?;
            if labels.iter().any(|(have, _)| have == k) {
                return Err(fail(format!("label {k:?} is given twice")));
            }
            labels.push((k.clone(), Template::parse(v, captures).map_err(&fail)?));
        }
        Ok(Compiled {
            segments,
            name,
            labels,
            drop: rule.drop,
        })
    }

    fn matches(&self, name: &str, captures: &mut Vec<(usize, usize)>) -> bool {
        captures.clear();
        let mut offset = 0;
        let mut rest = Some(name);
        for seg in &self.segments {
            let Some(text) = rest else { return false };
            let (this, next) = match text.find('.') {
                Some(i) => (&text[..i], Some(&text[i + 1..])),
                None => (text, None),
            };
            if !seg.matches(this, offset, captures) {
                return false;
            }
            offset += this.len() + 1;
            rest = next;
        }
        rest.is_none()
    }
}

/// Compiled mapping rules with a per-name cache (names repeat, so each distinct name is
/// matched once).
#[derive(Debug, Clone, Default)]
pub struct Mapper {
    rules: Vec<Compiled>,
    cache: HashMap<Box<str>, Option<Mapped>, foldhash::fast::RandomState>,
    cache_bytes: usize,
    captures: Vec<(usize, usize)>,
}

impl Mapper {
    /// Compiles `rules`; the error names the first unusable rule and what is wrong with it.
    pub fn new(rules: impl IntoIterator<Item = MappingRule>) -> Result<Mapper, MappingError> {
        let rules = rules
            .into_iter()
            .enumerate()
            .map(|(i, r)| Compiled::compile(i, &r))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Mapper {
            rules,
            ..Mapper::default()
        })
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules (names are only sanitized).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// What `name` maps to, or `None` when a drop rule matches. Cached per distinct name.
    pub fn map(&mut self, name: &str) -> Option<&Mapped> {
        if !self.cache.contains_key(name) {
            let mapped = map_with(&self.rules, &mut self.captures, name);
            self.remember(name, mapped);
        }
        self.cache.get(name).and_then(Option::as_ref)
    }

    /// The remembered mapping of `name`, if any (`Some(None)`: a drop rule matched).
    pub fn cached(&self, name: &str) -> Option<Option<&Mapped>> {
        self.cache.get(name).map(Option::as_ref)
    }

    /// Remembers what `name` maps to, within the cache's entry and byte bounds: a caller that
    /// may still refuse the name maps it with [`map_uncached`](Self::map_uncached) and
    /// remembers it only once accepted, so refused names never fill the cache.
    pub fn remember(&mut self, name: &str, mapped: Option<Mapped>) {
        let bytes = 64
            + name.len()
            + mapped.as_ref().map_or(0, |m| {
                m.name.len()
                    + m.labels
                        .iter()
                        .map(|(k, v)| 48 + k.len() + v.len())
                        .sum::<usize>()
            });
        if self.cache.len() >= CACHE_LIMIT || self.cache_bytes + bytes > CACHE_BYTES {
            self.cache.clear();
            self.cache_bytes = 0;
        }
        self.cache_bytes += bytes;
        self.cache.insert(name.into(), mapped);
    }

    /// Like [`map`](Self::map), without the cache.
    pub fn map_uncached(&self, name: &str) -> Option<Mapped> {
        map_with(&self.rules, &mut Vec::new(), name)
    }
}

fn map_with(rules: &[Compiled], captures: &mut Vec<(usize, usize)>, name: &str) -> Option<Mapped> {
    for (i, rule) in rules.iter().enumerate() {
        if !rule.matches(name, captures) {
            continue;
        }
        if rule.drop {
            return None;
        }
        let new_name = match &rule.name {
            Some(t) => sanitize_metric_name(&t.render(name, captures)).into_owned(),
            None => sanitize_metric_name(name).into_owned(),
        };
        let labels = rule
            .labels
            .iter()
            .map(|(k, t)| (k.clone(), t.render(name, captures)))
            .collect();
        return Some(Mapped {
            name: new_name,
            labels,
            rule: Some(i),
        });
    }
    Some(Mapped {
        name: sanitize_metric_name(name).into_owned(),
        labels: Vec::new(),
        rule: None,
    })
}

/// Prefix given to names that do not start with a letter (`5xx.errors` becomes
/// `statsd_5xx.errors`).
pub const NAME_PREFIX: &str = "statsd_";

/// Makes `name` a valid sonde metric name: every character other than ASCII letters, digits,
/// `_`, `.`, `-` and `/` becomes `_`, and a name that does not start with a letter gets the
/// prefix [`NAME_PREFIX`]. (An empty name stays empty; the parser never produces one.) Names
/// longer than 255 bytes are left long and refused later (counted as `too_long`). The rule is
/// [`sonde_core::name::sanitize_metric_name`] with [`LongName::Keep`].
pub fn sanitize_metric_name(name: &str) -> Cow<'_, str> {
    name::sanitize_metric_name(name, NAME_PREFIX, LongName::Keep)
}

/// Makes a DogStatsD tag key a valid label name: characters other than ASCII letters, digits,
/// `_` and `.` become `_`; then a key starting with `__` (reserved by Prometheus) gets the
/// prefix `tag`, and one starting with a digit or `.` a leading `_` (the character rule is
/// [`sonde_core::name::sanitize_label_chars`]). Returns `None` when the result is longer than
/// 255 bytes.
pub fn sanitize_label_name(key: &str) -> Option<Cow<'_, str>> {
    let mut out = name::sanitize_label_chars(key);
    if out.starts_with("__") {
        out = Cow::Owned(format!("tag{out}"));
    }
    (out.len() <= MAX_NAME_LEN).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sonde_core::name::validate_metric_name;

    fn mapper(rules: Vec<MappingRule>) -> Mapper {
        Mapper::new(rules).unwrap()
    }

    #[test]
    fn glob_rename_with_captures_and_labels() {
        let mut m = mapper(vec![
            MappingRule::new("api.*.requests")
                .name("http.requests")
                .label("route", "$1"),
            MappingRule::new("svc.*.*.latency")
                .name("$1.$2.duration")
                .label("svc", "${1}-x"),
            MappingRule::new("jobs.*_queue.*")
                .label("queue", "$1")
                .label("event", "$2"),
        ]);
        let got = m.map("api.users.requests").unwrap().clone();
        assert_eq!(got.name, "http.requests");
        assert_eq!(got.labels, [("route".into(), "users".into())]);
        assert_eq!(got.rule, Some(0));

        let got = m.map("svc.auth.login.latency").unwrap();
        assert_eq!(got.name, "auth.login.duration");
        assert_eq!(got.labels, [("svc".into(), "auth-x".into())]);

        // A label-only rule keeps the (sanitized) name.
        let got = m.map("jobs.mail_queue.done").unwrap();
        assert_eq!(got.name, "jobs.mail_queue.done");
        assert_eq!(
            got.labels,
            [
                ("queue".into(), "mail".into()),
                ("event".into(), "done".into())
            ]
        );

        // Segment counts must agree; '*' never crosses '.'.
        for name in [
            "api.v1.users.requests",
            "api.requests",
            "api.users.requests.x",
        ] {
            let got = m.map(name).unwrap();
            assert_eq!(got.rule, None, "{name}");
            assert_eq!(got.name, name);
            assert!(got.labels.is_empty());
        }
        // '*' may match an empty segment, like statsd_exporter.
        assert_eq!(m.map("api..requests").unwrap().labels[0].1, "");
    }

    #[test]
    fn first_match_wins_and_drop() {
        let mut m = mapper(vec![
            MappingRule::new("debug.*").drop(),
            MappingRule::new("*.*").name("two.$1"),
            MappingRule::new("debug.x").name("never"),
        ]);
        assert!(m.map("debug.x").is_none());
        assert!(m.map("debug.y").is_none());
        assert_eq!(m.map("a.b").unwrap().name, "two.a");
        assert_eq!(m.map("a").unwrap().name, "a");
        // Cached answers are the same.
        assert!(m.map("debug.x").is_none());
        assert_eq!(m.map("a.b").unwrap().name, "two.a");
        assert_eq!(m.map_uncached("a.b").unwrap().name, "two.a");
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn several_stars_in_one_segment() {
        let mut m = mapper(vec![MappingRule::new("a*b*c.x").label("l", "$1|$2")]);
        assert_eq!(m.map("a1b2c.x").unwrap().labels[0].1, "1|2");
        assert_eq!(m.map("abc.x").unwrap().labels[0].1, "|");
        assert_eq!(m.map("a1bb2c.x").unwrap().labels[0].1, "1|b2");
        assert_eq!(m.map("a1c.x").unwrap().rule, None);
        assert_eq!(m.map("ab.x").unwrap().rule, None);
        let mut m = mapper(vec![MappingRule::new("*x*").label("l", "$1,$2")]);
        assert_eq!(m.map("x").unwrap().labels[0].1, ",");
        assert_eq!(m.map("axbxc").unwrap().labels[0].1, "a,bxc");
    }

    #[test]
    fn mapped_names_are_sanitized() {
        let mut m = mapper(vec![MappingRule::new("raw.*").name("clean.$1")]);
        assert_eq!(m.map("raw.a b").unwrap().name, "clean.a_b");
        assert_eq!(m.map("5xx count").unwrap().name, "statsd_5xx_count");
        assert_eq!(m.map("héllo").unwrap().name, "h_llo");
        for n in ["a", "a.b-c/d_e", "x1"] {
            assert_eq!(sanitize_metric_name(n), Cow::Borrowed(n));
        }
        for n in ["_x", "1", "a:b", "é", "a b"] {
            let s = sanitize_metric_name(n);
            assert!(validate_metric_name(&s).is_ok(), "{n} -> {s}");
        }
    }

    #[test]
    fn label_names_are_sanitized() {
        let s = |k: &str| sanitize_label_name(k).map(Cow::into_owned);
        assert_eq!(s("env").as_deref(), Some("env"));
        assert_eq!(s("_x.y").as_deref(), Some("_x.y"));
        assert_eq!(s("a-b").as_deref(), Some("a_b"));
        assert_eq!(s("5xx").as_deref(), Some("_5xx"));
        assert_eq!(s("__name__").as_deref(), Some("tag__name__"));
        assert_eq!(s(".x").as_deref(), Some("_.x"));
        assert_eq!(s(&"k".repeat(300)), None);
        for k in ["a-b", "5xx", "__name__", ".x", "é", "_", "k:v"] {
            let out = s(k).unwrap();
            assert!(validate_label_name("m", &out, &[]).is_ok(), "{k} -> {out}");
        }
    }

    #[test]
    fn bad_rules_say_which_and_why() {
        let cases = [
            (MappingRule::new("").name("x"), "empty"),
            (MappingRule::new("a..b").name("x"), "empty segment"),
            (MappingRule::new("a.").name("x"), "empty segment"),
            (MappingRule::new("a.**").name("x"), "'**'"),
            (MappingRule::new("a.*"), "does nothing"),
            (MappingRule::new("a.*").name("x").drop(), "drop rule"),
            (MappingRule::new("a.*").name("x.$2"), "capture $2"),
            (MappingRule::new("a.*").name("x.$0"), "capture $0"),
            (MappingRule::new("a.*").name("x.$"), "not followed"),
            (MappingRule::new("a.*").name("x.${1"), "unterminated"),
            (MappingRule::new("a.*").name(""), "empty"),
            (
                MappingRule::new("a.*").label("bad-label", "$1"),
                "bad-label",
            ),
            (
                MappingRule::new("a.*").label("l", "1").label("l", "2"),
                "twice",
            ),
        ];
        for (rule, want) in cases {
            let pattern = rule.pattern.clone();
            let err = Mapper::new(vec![MappingRule::new("ok").name("fine"), rule]).unwrap_err();
            assert_eq!(err.index, 1);
            assert_eq!(err.pattern, pattern);
            let msg = err.to_string();
            assert!(msg.contains(want) && msg.contains("rule #1"), "{msg}");
        }
    }

    #[test]
    fn the_cache_is_bounded() {
        let mut m = mapper(vec![MappingRule::new("a.*").name("b")]);
        for i in 0..CACHE_LIMIT + 10 {
            let name = format!("n{i}");
            assert_eq!(m.map(&name).unwrap().name, name);
        }
        assert!(m.cache.len() <= CACHE_LIMIT);
    }
}
