//! Label selectors: PromQL-like matchers over OpenTelemetry label names.
//!
//! Written either as a string, `'http.route!="/health", http.request.method="GET"'` (braces
//! optional), or as a table, `{ "http.route" = "=~/api/.*" }`, where a value starting with
//! `=~`, `!~`, `!=` or `=` takes that operator and any other value means equality.

use regex::Regex;

use crate::model::prometheus_label;

/// A matcher's operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `=~` (the whole value matches the regular expression)
    Re,
    /// `!~`
    NotRe,
}

impl Op {
    /// As written in PromQL.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Re => "=~",
            Op::NotRe => "!~",
        }
    }
}

/// One matcher: `label op "value"`.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// The OpenTelemetry label name (`http.route`).
    pub label: String,
    /// The operator.
    pub op: Op,
    /// The value or regular expression.
    pub value: String,
    regex: Option<Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.label == other.label && self.op == other.op && self.value == other.value
    }
}

impl Matcher {
    /// A matcher; `Err` says what is wrong with it (a bad label name or regular expression).
    pub fn new(label: &str, op: Op, value: &str) -> Result<Matcher, String> {
        if !valid_label(label) {
            return Err(format!(
                "`{label}` is not a label name (letters, digits, `_` and `.`, not starting with a digit)"
            ));
        }
        if label == "le" || label == "__name__" {
            return Err(format!("`{label}` cannot be selected here"));
        }
        let regex = match op {
            Op::Re | Op::NotRe => Some(Regex::new(&format!("^(?:{value})$")).map_err(|e| {
                format!(
                    "`{value}` is not a regular expression: {}",
                    first_line(&e.to_string())
                )
            })?),
            _ => None,
        };
        Ok(Matcher {
            label: label.to_string(),
            op,
            value: value.to_string(),
            regex,
        })
    }

    /// Whether a label value (empty: the label is absent) matches.
    pub fn matches(&self, v: &str) -> bool {
        match (self.op, &self.regex) {
            (Op::Eq, _) => v == self.value,
            (Op::Ne, _) => v != self.value,
            (Op::Re, Some(r)) => r.is_match(v),
            (Op::NotRe, Some(r)) => !r.is_match(v),
            _ => false,
        }
    }

    /// As PromQL, with the Prometheus label name (`http_route!="/health"`).
    pub fn promql(&self) -> String {
        format!(
            "{}{}{}",
            prometheus_label(&self.label),
            self.op.as_str(),
            promql_string(&self.value)
        )
    }
}

fn first_line(s: &str) -> String {
    s.lines().last().unwrap_or(s).trim().to_string()
}

fn valid_label(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// A double-quoted PromQL string.
pub fn promql_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A set of matchers, all of which must hold.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Selector {
    /// The matchers, in the order written.
    pub matchers: Vec<Matcher>,
}

/// A problem in a selector string, at a byte offset of it.
#[derive(Debug, Clone, PartialEq)]
pub struct SelectorError {
    /// Byte offset in the string.
    pub at: usize,
    /// What is wrong.
    pub message: String,
}

impl Selector {
    /// Parses `label op "value", ...`, optionally in braces.
    pub fn parse(s: &str) -> Result<Selector, SelectorError> {
        let b = s.as_bytes();
        let mut i = 0;
        let skip = |i: &mut usize| {
            while *i < b.len() && b[*i].is_ascii_whitespace() {
                *i += 1;
            }
        };
        skip(&mut i);
        let braced = i < b.len() && b[i] == b'{';
        if braced {
            i += 1;
        }
        let mut matchers = Vec::new();
        loop {
            skip(&mut i);
            if i >= b.len() || (braced && b[i] == b'}') {
                break;
            }
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.') {
                i += 1;
            }
            let label = &s[start..i];
            if label.is_empty() {
                return Err(SelectorError {
                    at: i,
                    message: "expected a label name".into(),
                });
            }
            skip(&mut i);
            let rest = &s[i..];
            let op = if rest.starts_with("=~") {
                Op::Re
            } else if rest.starts_with("!~") {
                Op::NotRe
            } else if rest.starts_with("!=") {
                Op::Ne
            } else if rest.starts_with('=') {
                Op::Eq
            } else {
                return Err(SelectorError {
                    at: i,
                    message: format!("expected =, !=, =~ or !~ after `{label}`"),
                });
            };
            i += op.as_str().len();
            skip(&mut i);
            let value_at = i;
            let quote = match b.get(i) {
                Some(q @ (b'"' | b'\'')) => *q,
                _ => {
                    return Err(SelectorError {
                        at: i,
                        message: format!("expected a quoted value after `{label}{}`", op.as_str()),
                    });
                }
            };
            i += 1;
            let mut value = String::new();
            let mut closed = false;
            let mut chars = s[i..].char_indices();
            while let Some((k, c)) = chars.next() {
                if c as u32 == quote as u32 {
                    i += k + 1;
                    closed = true;
                    break;
                }
                if c == '\\' {
                    match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c)) => value.push(c),
                        None => break,
                    }
                } else {
                    value.push(c);
                }
            }
            if !closed {
                return Err(SelectorError {
                    at: value_at,
                    message: "the quoted value is not closed".into(),
                });
            }
            matchers.push(
                Matcher::new(label, op, &value)
                    .map_err(|message| SelectorError { at: start, message })?,
            );
            skip(&mut i);
            match b.get(i) {
                Some(b',') => i += 1,
                Some(b'}') if braced => {}
                None => {}
                Some(_) => {
                    return Err(SelectorError {
                        at: i,
                        message: "expected `,` between matchers".into(),
                    });
                }
            }
        }
        if braced {
            if b.get(i) != Some(&b'}') {
                return Err(SelectorError {
                    at: i,
                    message: "the `{` is not closed".into(),
                });
            }
            i += 1;
            skip(&mut i);
            if i < b.len() {
                return Err(SelectorError {
                    at: i,
                    message: "unexpected text after `}`".into(),
                });
            }
        }
        Ok(Selector { matchers })
    }

    /// The table form's value: `=~/api/.*` → (`=~`, `/api/.*`); `/orders` → (`=`, `/orders`).
    pub fn table_value(v: &str) -> (Op, &str) {
        for op in [Op::Re, Op::NotRe, Op::Ne, Op::Eq] {
            if let Some(rest) = v.strip_prefix(op.as_str()) {
                return (op, rest);
            }
        }
        (Op::Eq, v)
    }

    /// This selector's matchers followed by `other`'s.
    pub fn and(&self, other: &Selector) -> Selector {
        Selector {
            matchers: self
                .matchers
                .iter()
                .chain(&other.matchers)
                .cloned()
                .collect(),
        }
    }

    /// The matchers as PromQL.
    pub fn promql_matchers(&self) -> Vec<String> {
        self.matchers.iter().map(Matcher::promql).collect()
    }

    /// The labels named (OpenTelemetry names), without duplicates.
    pub fn labels(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for m in &self.matchers {
            if !out.contains(&m.label.as_str()) {
                out.push(&m.label);
            }
        }
        out
    }

    /// Whether a series with these label values (OpenTelemetry names; absent = empty) matches.
    pub fn matches(&self, value_of: &dyn Fn(&str) -> String) -> bool {
        self.matchers.iter().all(|m| m.matches(&value_of(&m.label)))
    }

    /// Label values (OpenTelemetry names; empty values left out) of a series this selector
    /// matches, or `None` when none could be found (for the generated tests' input series).
    pub fn sample(&self) -> Option<Vec<(String, String)>> {
        let mut out = Vec::new();
        for label in self.labels() {
            let ms: Vec<&Matcher> = self.matchers.iter().filter(|m| m.label == label).collect();
            let v = candidates(&ms)
                .into_iter()
                .find(|v| ms.iter().all(|m| m.matches(v)))?;
            if !v.is_empty() {
                out.push((label.to_string(), v));
            }
        }
        Some(out)
    }

    /// Label values of a series that `self` matches and `narrower` (applied on top) does not.
    pub fn sample_excluding(&self, narrower: &Selector) -> Option<Vec<(String, String)>> {
        let base = self.sample()?;
        for m in &narrower.matchers {
            let same: Vec<&Matcher> = self
                .matchers
                .iter()
                .filter(|x| x.label == m.label)
                .collect();
            let mut all = same.clone();
            all.push(m);
            let found = candidates(&all)
                .into_iter()
                .find(|v| same.iter().all(|x| x.matches(v)) && !m.matches(v));
            if let Some(v) = found {
                let mut labels: Vec<(String, String)> = base
                    .iter()
                    .filter(|(k, _)| *k != m.label)
                    .cloned()
                    .collect();
                if !v.is_empty() {
                    labels.push((m.label.clone(), v));
                }
                return Some(labels);
            }
        }
        None
    }
}

/// Values worth trying for a label under `ms`.
fn candidates(ms: &[&Matcher]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for m in ms {
        match m.op {
            Op::Eq => out.push(m.value.clone()),
            Op::Re | Op::NotRe => out.extend(regex_examples(&m.value)),
            Op::Ne => {}
        }
    }
    out.extend(["x", "/x", "0", "500", "sonde-test"].map(String::from));
    out.extend(
        ms.iter()
            .filter(|m| m.op == Op::Ne)
            .map(|m| format!("{}x", m.value)),
    );
    // Last: the label absent.
    out.push(String::new());
    out
}

/// A few strings the regular expression matches (shortest first, one per alternative).
fn regex_examples(pattern: &str) -> Vec<String> {
    match regex_syntax::Parser::new().parse(pattern) {
        Ok(hir) => {
            let mut v = examples(&hir);
            v.truncate(16);
            v
        }
        Err(_) => Vec::new(),
    }
}

fn examples(hir: &regex_syntax::hir::Hir) -> Vec<String> {
    use regex_syntax::hir::{Class, HirKind};
    const CAP: usize = 16;
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => vec![String::new()],
        HirKind::Literal(l) => vec![String::from_utf8_lossy(&l.0).into_owned()],
        HirKind::Class(Class::Unicode(c)) => {
            let mut v: Vec<String> = ['x', 'a', '0', '5', '/', '-']
                .into_iter()
                .filter(|ch| {
                    c.ranges()
                        .iter()
                        .any(|r| r.start() <= *ch && *ch <= r.end())
                })
                .take(1)
                .map(String::from)
                .collect();
            if v.is_empty() {
                v.extend(c.ranges().first().map(|r| r.start().to_string()));
            }
            v
        }
        HirKind::Class(Class::Bytes(c)) => c
            .ranges()
            .first()
            .map(|r| vec![char::from(r.start()).to_string()])
            .unwrap_or_default(),
        HirKind::Repetition(r) => {
            let sub = examples(&r.sub);
            let mut out = Vec::new();
            for n in [r.min, r.min.max(1)] {
                if r.max.is_some_and(|max| n > max) {
                    continue;
                }
                for s in &sub {
                    out.push(s.repeat(n as usize));
                }
            }
            out.dedup();
            out.truncate(CAP);
            out
        }
        HirKind::Capture(c) => examples(&c.sub),
        HirKind::Concat(parts) => {
            let mut acc = vec![String::new()];
            for p in parts {
                let ex = examples(p);
                let mut next = Vec::new();
                for a in &acc {
                    for e in &ex {
                        if next.len() < CAP {
                            next.push(format!("{a}{e}"));
                        }
                    }
                }
                acc = next;
            }
            acc
        }
        HirKind::Alternation(alts) => {
            let mut out: Vec<String> = alts.iter().flat_map(examples).collect();
            out.truncate(CAP);
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms() {
        let s = Selector::parse(r#"{http.route!="/health", error.type=~'5..'}"#).unwrap();
        assert_eq!(
            s.promql_matchers(),
            vec![r#"http_route!="/health""#, r#"error_type=~"5..""#]
        );
        assert_eq!(Selector::table_value("=~/api/.*"), (Op::Re, "/api/.*"));
        assert_eq!(Selector::table_value("/orders"), (Op::Eq, "/orders"));
        assert_eq!(Selector::table_value("!="), (Op::Ne, ""));
    }

    #[test]
    fn bad_selectors_say_where() {
        for (s, at) in [
            ("http.route", 10),
            ("http.route=/x", 11),
            ("a=\"x\" b=\"y\"", 6),
            ("{a=\"x\"", 6),
            ("a=~\"(\"", 0),
            ("a=\"open", 2),
        ] {
            let e = Selector::parse(s).unwrap_err();
            assert_eq!(e.at, at, "{s}: {e:?}");
        }
    }

    #[test]
    fn samples_satisfy_and_exclude() {
        let total =
            Selector::parse(r#"http.route=~"/api/.*|/orders", http.route!="/health""#).unwrap();
        let labels = total.sample().unwrap();
        let get = |l: &[(String, String)], k: &str| {
            l.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        assert!(total.matches(&|k| get(&labels, k)));
        let bad = Selector::parse(r#"error.type!="""#).unwrap();
        let good = total.sample_excluding(&bad).unwrap();
        assert!(total.matches(&|k| get(&good, k)));
        assert!(!bad.matches(&|k| get(&good, k)));
        let cache = Selector::parse(r#"cache.result=~"hit|miss""#).unwrap();
        let hit = Selector::parse(r#"cache.result="hit""#).unwrap();
        let miss = cache.sample_excluding(&hit).unwrap();
        assert_eq!(get(&miss, "cache.result"), "miss");
    }
}
