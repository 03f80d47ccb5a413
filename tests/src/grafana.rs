//! The dashboards and alert rules of the repository as data, for the tests that lint them and
//! evaluate them against a live Prometheus: the Grafana dashboards of `dashboards/` (panels,
//! queries, template variables), the Prometheus rule files of `alerts/`, a small PromQL scanner
//! (metric selectors with their matchers, ranges and enclosing functions; the operands and
//! thresholds of an alert's comparisons), and the duration arithmetic that shortens rule windows
//! for a test.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Files directly in `dir` (relative to the repository root) whose name ends with `suffix`,
/// sorted.
pub fn files(dir: &str, suffix: &str) -> Vec<PathBuf> {
    let dir = repo_root().join(dir);
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.to_string_lossy().ends_with(suffix))
        .collect();
    out.sort();
    out
}

/// Reads a YAML file into a JSON value (YAML tags are not supported).
pub fn read_yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Reads a JSON file.
pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The string at `v[key]`, or "".
pub fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Dashboards

/// One Grafana dashboard of `dashboards/`.
#[derive(Debug, Clone)]
pub struct Dashboard {
    /// Its file.
    pub path: PathBuf,
    /// Its JSON model.
    pub json: Value,
}

/// One query of one panel.
#[derive(Debug, Clone)]
pub struct PanelQuery {
    /// The panel's title.
    pub panel: String,
    /// The panel's type (`timeseries`, `heatmap`...).
    pub panel_type: String,
    /// The target's `refId`.
    pub ref_id: String,
    /// The PromQL expression, with Grafana's variables unexpanded.
    pub expr: String,
    /// Whether the target asks for exemplars.
    pub exemplar: bool,
    /// The target's `format` (`time_series`, `heatmap`, `table`).
    pub format: String,
}

impl Dashboard {
    /// Every `dashboards/*.json`.
    pub fn load_all() -> Vec<Dashboard> {
        files("dashboards", ".json")
            .into_iter()
            .map(|path| Dashboard {
                json: read_json(&path),
                path,
            })
            .collect()
    }

    /// The file name, for messages.
    pub fn file_name(&self) -> String {
        self.path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    /// The dashboard's `uid`.
    pub fn uid(&self) -> &str {
        str_of(&self.json, "uid")
    }

    /// Every panel, those inside collapsed rows included; rows themselves are left out.
    pub fn panels(&self) -> Vec<&Value> {
        fn walk<'a>(panels: &'a Value, out: &mut Vec<&'a Value>) {
            for p in panels.as_array().into_iter().flatten() {
                if str_of(p, "type") == "row" {
                    walk(&p["panels"], out);
                } else {
                    out.push(p);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.json["panels"], &mut out);
        out
    }

    /// Every query of every panel.
    pub fn queries(&self) -> Vec<PanelQuery> {
        let mut out = Vec::new();
        for p in self.panels() {
            for t in p["targets"].as_array().into_iter().flatten() {
                out.push(PanelQuery {
                    panel: str_of(p, "title").to_owned(),
                    panel_type: str_of(p, "type").to_owned(),
                    ref_id: str_of(t, "refId").to_owned(),
                    expr: str_of(t, "expr").to_owned(),
                    exemplar: t["exemplar"].as_bool().unwrap_or(false),
                    format: str_of(t, "format").to_owned(),
                });
            }
        }
        out
    }

    /// The template variable called `name`.
    pub fn variable(&self, name: &str) -> Option<&Value> {
        self.json["templating"]["list"]
            .as_array()?
            .iter()
            .find(|v| str_of(v, "name") == name)
    }

    /// The query of a query variable (its `query` string, or `query.query`).
    pub fn variable_query(&self, name: &str) -> Option<String> {
        let v = self.variable(name)?;
        match &v["query"] {
            Value::String(s) => Some(s.clone()),
            Value::Object(o) => o.get("query").and_then(Value::as_str).map(str::to_owned),
            _ => None,
        }
    }
}

/// Expands Grafana variables (`$name`, `${name}`, `${name:format}`, `[[name]]`) with `vars`;
/// unknown variables are left as they are.
pub fn substitute(expr: &str, vars: &[(&str, &str)]) -> String {
    let lookup = |name: &str| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(i) = rest.find(['$', '[']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let (name, len) = if let Some(inner) = tail.strip_prefix("${") {
            match inner.find('}') {
                Some(end) => (inner[..end].split(':').next().unwrap_or(""), end + 3),
                None => ("", 0),
            }
        } else if let Some(inner) = tail.strip_prefix("[[") {
            match inner.find("]]") {
                Some(end) => (&inner[..end], end + 4),
                None => ("", 0),
            }
        } else if let Some(inner) = tail.strip_prefix('$') {
            let end = inner
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(inner.len());
            (&inner[..end], end + 1)
        } else {
            ("", 0)
        };
        match lookup(name) {
            Some(value) if len > 0 => {
                out.push_str(value);
                rest = &tail[len..];
            }
            _ => {
                out.push_str(&tail[..1]);
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------------------------
// Rules

/// One recording or alerting rule of `alerts/*.yml`.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The rule file.
    pub file: PathBuf,
    /// The group's name.
    pub group: String,
    /// The alert's name, for an alerting rule.
    pub alert: Option<String>,
    /// The recorded series' name, for a recording rule.
    pub record: Option<String>,
    /// The expression.
    pub expr: String,
    /// `for:`, if any.
    pub for_: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
}

impl Rule {
    /// The alert's or the recorded series' name.
    pub fn name(&self) -> &str {
        self.alert
            .as_deref()
            .or(self.record.as_deref())
            .unwrap_or_default()
    }

    /// The rule file's name, for messages.
    pub fn file_name(&self) -> String {
        self.file
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }
}

/// The rule files: `alerts/*.yml`.
pub fn rule_files() -> Vec<PathBuf> {
    files("alerts", ".yml")
}

/// The promtool test files: `alerts/tests/*.yml`.
pub fn rule_test_files() -> Vec<PathBuf> {
    files("alerts/tests", ".yml")
}

/// The rules of one file.
pub fn load_rules(path: &Path) -> Vec<Rule> {
    let doc = read_yaml(path);
    let strings = |v: &Value| -> BTreeMap<String, String> {
        v.as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| {
                let s = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), s)
            })
            .collect()
    };
    let mut out = Vec::new();
    for g in doc["groups"].as_array().into_iter().flatten() {
        for r in g["rules"].as_array().into_iter().flatten() {
            out.push(Rule {
                file: path.to_path_buf(),
                group: str_of(g, "name").to_owned(),
                alert: r["alert"].as_str().map(str::to_owned),
                record: r["record"].as_str().map(str::to_owned),
                expr: str_of(r, "expr").trim().to_owned(),
                for_: r["for"].as_str().map(str::to_owned),
                labels: strings(&r["labels"]),
                annotations: strings(&r["annotations"]),
            });
        }
    }
    out
}

/// Every rule of every rule file.
pub fn all_rules() -> Vec<Rule> {
    rule_files().iter().flat_map(|f| load_rules(f)).collect()
}

// ---------------------------------------------------------------------------------------------
// PromQL

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Ident,
    Number,
    Str,
    /// `[...]`, a range or subquery.
    Range,
    Open,
    Close,
    OpenBrace,
    CloseBrace,
    Comma,
    /// `==`, `!=`, `<`, `>`, `<=`, `>=`.
    Compare,
    /// `=`, `=~`, `!~` (label matchers).
    Match,
    /// `+ - * / % ^`.
    Arith,
}

#[derive(Debug, Clone, Copy)]
struct Token {
    kind: Tok,
    start: usize,
    end: usize,
}

/// The operator or punctuation token `rest` starts with, and its length in bytes.
fn operator(rest: &[u8]) -> Option<(Tok, usize)> {
    Some(match rest {
        [b'=' | b'!' | b'<' | b'>', b'=', ..] => (Tok::Compare, 2),
        [b'=' | b'!', b'~', ..] => (Tok::Match, 2),
        [b'=', ..] => (Tok::Match, 1),
        [b'<' | b'>', ..] => (Tok::Compare, 1),
        [b'+' | b'-' | b'*' | b'/' | b'%' | b'^', ..] => (Tok::Arith, 1),
        [b'(', ..] => (Tok::Open, 1),
        [b')', ..] => (Tok::Close, 1),
        [b'{', ..] => (Tok::OpenBrace, 1),
        [b'}', ..] => (Tok::CloseBrace, 1),
        [b',', ..] => (Tok::Comma, 1),
        _ => return None,
    })
}

fn tokenize(expr: &str) -> Vec<Token> {
    let b = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        if let Some((kind, len)) = operator(&b[i..]) {
            i += len;
            out.push(Token {
                kind,
                start,
                end: i,
            });
            continue;
        }
        let kind = match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'"' | b'\'' | b'`' => {
                i += 1;
                while i < b.len() && b[i] != c {
                    if b[i] == b'\\' && c != b'`' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
                Tok::Str
            }
            b'[' => {
                while i < b.len() && b[i] != b']' {
                    i += 1;
                }
                i += 1;
                Tok::Range
            }
            c if c.is_ascii_digit()
                || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) =>
            {
                while i < b.len()
                    && (b[i].is_ascii_alphanumeric()
                        || b[i] == b'.'
                        || ((b[i] == b'+' || b[i] == b'-') && matches!(b[i - 1], b'e' | b'E')))
                {
                    i += 1;
                }
                Tok::Number
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c == b':' || c == b'$' => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b"_:$".contains(&b[i])) {
                    i += 1;
                }
                Tok::Ident
            }
            _ => {
                i += 1;
                Tok::Arith
            }
        };
        out.push(Token {
            kind,
            start,
            end: i.min(b.len()),
        });
    }
    out
}

const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];
const LABEL_LIST_KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
const SET_OPERATORS: &[&str] = &["and", "or", "unless"];
const OTHER_KEYWORDS: &[&str] = &["bool", "offset", "inf", "nan", "Inf", "NaN"];

/// A label matcher of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    /// The label.
    pub label: String,
    /// `=`, `!=`, `=~` or `!~`.
    pub op: String,
    /// The value, unquoted.
    pub value: String,
}

/// A metric selector of an expression.
#[derive(Debug, Clone)]
pub struct Selector {
    /// The metric name.
    pub name: String,
    /// The label matchers.
    pub matchers: Vec<Matcher>,
    /// The range (`5m`, `$__rate_interval`) of a range selector.
    pub range: Option<String>,
    /// The functions and aggregations the selector is inside, outermost first (`""` for a
    /// plain parenthesis).
    pub functions: Vec<String>,
}

impl Selector {
    /// The innermost function the selector is an argument of.
    pub fn innermost_function(&self) -> Option<&str> {
        self.functions
            .iter()
            .rev()
            .find(|f| !f.is_empty())
            .map(String::as_str)
    }

    /// Whether it has the matcher `label op value`.
    pub fn has(&self, label: &str, op: &str, value: &str) -> bool {
        self.matchers
            .iter()
            .any(|m| m.label == label && m.op == op && m.value == value)
    }
}

fn unquote(s: &str) -> String {
    let inner = s.get(1..s.len().saturating_sub(1)).unwrap_or_default();
    inner.replace("\\\"", "\"").replace("\\\\", "\\")
}

/// Every metric selector of `expr`, with the functions it is inside.
pub fn selectors(expr: &str) -> Vec<Selector> {
    let toks = tokenize(expr);
    let text = |t: &Token| &expr[t.start..t.end];
    let mut out = Vec::new();
    let mut stack: Vec<String> = Vec::new();
    let mut pending_call: Option<String> = None;
    let mut i = 0;
    while i < toks.len() {
        let t = toks[i];
        match t.kind {
            Tok::Ident => {
                let word = text(&t);
                let next = toks.get(i + 1).map(|n| n.kind);
                if LABEL_LIST_KEYWORDS.contains(&word) {
                    // A label list follows (optional for group_left/group_right): skip it.
                    if next == Some(Tok::Open) {
                        let mut depth = 0;
                        i += 1;
                        while i < toks.len() {
                            match toks[i].kind {
                                Tok::Open => depth += 1,
                                Tok::Close => {
                                    depth -= 1;
                                    if depth == 0 {
                                        break;
                                    }
                                }
                                _ => {}
                            }
                            i += 1;
                        }
                    }
                } else if AGGREGATIONS.contains(&word) || next == Some(Tok::Open) {
                    // A function call or an aggregation (whose `by (...)` may come first).
                    pending_call = Some(word.to_owned());
                } else if SET_OPERATORS.contains(&word) || OTHER_KEYWORDS.contains(&word) {
                } else if word.starts_with('$') {
                    // A Grafana variable outside a selector (a threshold or a duration).
                } else {
                    let mut sel = Selector {
                        name: word.to_owned(),
                        matchers: Vec::new(),
                        range: None,
                        functions: stack.clone(),
                    };
                    if next == Some(Tok::OpenBrace) {
                        i += 2;
                        while i < toks.len() && toks[i].kind != Tok::CloseBrace {
                            let op = toks.get(i + 1).filter(|t| {
                                t.kind == Tok::Match || (t.kind == Tok::Compare && text(t) == "!=")
                            });
                            if toks[i].kind == Tok::Ident && op.is_some() {
                                let value = toks.get(i + 2).map(|t| unquote(text(t)));
                                sel.matchers.push(Matcher {
                                    label: text(&toks[i]).to_owned(),
                                    op: text(&toks[i + 1]).to_owned(),
                                    value: value.unwrap_or_default(),
                                });
                                i += 3;
                            } else {
                                i += 1;
                            }
                        }
                    }
                    if toks.get(i + 1).map(|t| t.kind) == Some(Tok::Range) {
                        i += 1;
                        let r = text(&toks[i]);
                        sel.range = Some(r[1..r.len() - 1].trim().to_owned());
                    }
                    out.push(sel);
                }
            }
            Tok::Open => stack.push(pending_call.take().unwrap_or_default()),
            Tok::Close => {
                stack.pop();
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// The tokens of `expr` at parenthesis depth 0.
fn top_level(expr: &str) -> Vec<(Token, bool)> {
    let mut depth = 0i32;
    tokenize(expr)
        .into_iter()
        .map(|t| {
            let top = depth == 0;
            match t.kind {
                Tok::Open | Tok::OpenBrace => depth += 1,
                Tok::Close | Tok::CloseBrace => depth -= 1,
                _ => {}
            }
            (t, top && !matches!(t.kind, Tok::Open | Tok::OpenBrace))
        })
        .collect()
}

/// Whether `expr` is one parenthesized group (`( ... )`).
fn wrapped(expr: &str) -> Option<&str> {
    let e = expr.trim();
    let toks = tokenize(e);
    if toks.first()?.kind != Tok::Open || toks.last()?.kind != Tok::Close {
        return None;
    }
    let mut depth = 0;
    for (n, t) in toks.iter().enumerate() {
        match t.kind {
            Tok::Open => depth += 1,
            Tok::Close => {
                depth -= 1;
                if depth == 0 && n != toks.len() - 1 {
                    return None;
                }
            }
            _ => {}
        }
    }
    Some(&e[1..e.len() - 1])
}

/// Drops the modifiers that may follow a binary operator (`bool`, `on (...)`, `ignoring (...)`,
/// `group_left (...)`, `group_right (...)`).
fn strip_modifiers(mut s: &str) -> &str {
    loop {
        let t = s.trim_start();
        let word_end = t
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(t.len());
        let word = &t[..word_end];
        if !["bool", "on", "ignoring", "group_left", "group_right"].contains(&word) {
            return t;
        }
        let after = t[word_end..].trim_start();
        s = if after.starts_with('(') {
            match after.find(')') {
                Some(end) => &after[end + 1..],
                None => after,
            }
        } else {
            after
        };
    }
}

/// Whether `expr` compares anything (outside label matchers), at any depth.
fn has_comparison(expr: &str) -> bool {
    let mut braces = 0;
    tokenize(expr).iter().any(|t| {
        match t.kind {
            Tok::OpenBrace => braces += 1,
            Tok::CloseBrace => braces -= 1,
            _ => {}
        }
        braces == 0 && t.kind == Tok::Compare
    })
}

/// The pieces of `expr` between its top-level comparison and set operators, and those
/// operators; `None` when there is nothing to split (no comparison, or set operators between
/// values that compare nothing).
fn split_top(expr: &str) -> Option<(Vec<String>, Vec<String>)> {
    let toks = top_level(expr);
    let is_op = |t: &Token| {
        t.kind == Tok::Compare
            || (t.kind == Tok::Ident && SET_OPERATORS.contains(&&expr[t.start..t.end]))
    };
    let top_compare = toks.iter().any(|(t, top)| *top && t.kind == Tok::Compare);
    let top_set = toks.iter().any(|(t, top)| *top && is_op(t));
    if !(top_compare || (top_set && has_comparison(expr))) {
        return None;
    }
    let mut pieces = Vec::new();
    let mut ops = Vec::new();
    let mut from = 0;
    for (t, top) in &toks {
        if *top && is_op(t) {
            pieces.push(strip_modifiers(&expr[from..t.start]).trim().to_owned());
            ops.push(expr[t.start..t.end].to_owned());
            from = t.end;
        }
    }
    pieces.push(strip_modifiers(&expr[from..]).trim().to_owned());
    Some((pieces, ops))
}

fn is_number(s: &str) -> bool {
    s.trim().parse::<f64>().is_ok()
}

/// The operands of an alert expression's comparisons: `a > 1 and b < 2` gives `a` and `b`;
/// parenthesized groups of comparisons are opened recursively (`(a > 1 and b > 1) or c > 2`
/// gives `a`, `b`, `c`); numbers are left out. An expression without a comparison is its own
/// operand. These are the values an alert watches: evaluated on their own they return series
/// whether or not the alert fires.
pub fn comparison_operands(expr: &str) -> Vec<String> {
    let expr = expr.trim();
    if !has_comparison(expr) {
        return vec![expr.to_owned()];
    }
    match split_top(expr) {
        Some((pieces, _)) => pieces
            .iter()
            .filter(|p| !is_number(p))
            .flat_map(|p| comparison_operands(p))
            .collect(),
        None => match wrapped(expr) {
            Some(inner) => comparison_operands(inner),
            // A comparison inside a function's argument: the whole is the value.
            None => vec![expr.to_owned()],
        },
    }
}

/// The numbers an alert expression compares against (`a > 0.01` gives 0.01), at any depth of
/// parenthesized comparisons.
pub fn comparison_thresholds(expr: &str) -> Vec<f64> {
    let expr = expr.trim();
    match split_top(expr) {
        Some((pieces, ops)) => {
            let mut out = Vec::new();
            for (n, op) in ops.iter().enumerate() {
                if !SET_OPERATORS.contains(&op.as_str()) {
                    for p in [&pieces[n], &pieces[n + 1]] {
                        if let Ok(v) = p.trim().parse::<f64>() {
                            out.push(v);
                        }
                    }
                }
            }
            for p in &pieces {
                if !is_number(p) {
                    out.extend(comparison_thresholds(p));
                }
            }
            out
        }
        None => match wrapped(expr) {
            Some(inner) => comparison_thresholds(inner),
            None => Vec::new(),
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Durations

/// Seconds in a Prometheus duration (`90s`, `5m`, `1h30m`, `3d`; `ms` rounds down).
pub fn parse_duration(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut total_ms: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let ms = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "y" => 365 * 86_400_000,
            _ => return None,
        };
        total_ms += n * ms;
        rest = &rest[unit_len..];
    }
    Some(total_ms / 1000)
}

/// Rewrites a rule file for a test that cannot wait hours: every range (`[5m]`) and every
/// `for:` becomes its duration divided by `divisor`, rounded up to whole seconds, ranges at least
/// `min_range_secs` (a rate needs a few scrapes) and `for:` at least 1 s. Recording rule names
/// (`..._rate5m`) are left alone, so the rules still refer to each other.
pub fn shorten_rules(text: &str, divisor: u64, min_range_secs: u64) -> String {
    let short = |secs: u64, min: u64| secs.div_ceil(divisor).max(min);
    let ranges = regex::Regex::new(r"\[([0-9]+[a-z]+(?:[0-9]+[a-z]+)*)\]").unwrap();
    let fors = regex::Regex::new(r"(?m)^(\s*for:\s*)([0-9a-z]+)\s*$").unwrap();
    let text = ranges.replace_all(text, |c: &regex::Captures<'_>| {
        let secs = parse_duration(&c[1]).unwrap_or_else(|| panic!("bad range {}", &c[0]));
        format!("[{}s]", short(secs, min_range_secs))
    });
    fors.replace_all(&text, |c: &regex::Captures<'_>| {
        let secs = parse_duration(&c[2]).unwrap_or_else(|| panic!("bad for: {}", &c[0]));
        format!("{}{}s", &c[1], short(secs, 1))
    })
    .into_owned()
}

// ---------------------------------------------------------------------------------------------
// Markdown

/// The anchors GitHub generates for a Markdown file's headings: lower case, spaces to `-`,
/// punctuation other than `-` and `_` dropped.
pub fn markdown_anchors(text: &str) -> BTreeSet<String> {
    let mut in_code = false;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code || !line.starts_with('#') {
            continue;
        }
        let title = line.trim_start_matches('#').trim();
        let slug: String = title
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c.to_ascii_lowercase()),
                _ => None,
            })
            .collect();
        out.insert(slug);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_know_their_functions_and_ranges() {
        let s = selectors(
            r#"histogram_quantile(0.95, sum by (le, http_route) (rate(x_bucket{job=~"$job",le!="1"}[$__rate_interval]))) / on (job) group_left sum(y) or z{a="b"}"#,
        );
        assert_eq!(s.len(), 3, "{s:?}");
        assert_eq!(s[0].name, "x_bucket");
        assert_eq!(
            s[0].functions,
            vec!["histogram_quantile", "sum", "rate"],
            "{s:?}"
        );
        assert_eq!(s[0].range.as_deref(), Some("$__rate_interval"));
        assert!(s[0].has("job", "=~", "$job"));
        assert!(s[0].has("le", "!=", "1"));
        assert_eq!(s[1].name, "y");
        assert_eq!(s[2].name, "z");
        assert_eq!(s[2].innermost_function(), None);
    }

    #[test]
    fn operands_and_thresholds() {
        let e = "((a:b / 0.001 > 14.4 and c / 0.001 > 14.4) or (d > 6 and e > 6)) and on (job) f >= 0.1";
        assert_eq!(
            comparison_operands(e),
            vec!["a:b / 0.001", "c / 0.001", "d", "e", "f"]
        );
        assert_eq!(comparison_thresholds(e), vec![0.1, 14.4, 14.4, 6.0, 6.0]);
        assert_eq!(
            comparison_operands("(x or 0 * y) / z"),
            vec!["(x or 0 * y) / z"]
        );
        assert_eq!(comparison_operands("up < 1"), vec!["up"]);
        assert_eq!(comparison_thresholds("up < 1"), vec![1.0]);
    }

    #[test]
    fn durations_and_shortening() {
        assert_eq!(parse_duration("1h30m"), Some(5400));
        assert_eq!(parse_duration("3d"), Some(259_200));
        let rules = "expr: rate(a[5m]) / rate(a[1h])\n    for: 10m\nrecord: x:rate5m\n";
        assert_eq!(
            shorten_rules(rules, 240, 5),
            "expr: rate(a[5s]) / rate(a[15s])\n    for: 3s\nrecord: x:rate5m\n"
        );
    }

    #[test]
    fn variables_expand() {
        let vars = [("job", "api"), ("__rate_interval", "15s")];
        assert_eq!(
            substitute(
                r#"rate(x{job=~"$job",i="${job}",k="[[job]]"}[$__rate_interval]) $other"#,
                &vars
            ),
            r#"rate(x{job=~"api",i="api",k="api"}[15s]) $other"#
        );
    }

    #[test]
    fn anchors() {
        let a = markdown_anchors("# A runbook\n## HttpErrorRatioHigh\n```\n# not a heading\n```\n");
        assert!(a.contains("httperrorratiohigh"));
        assert!(a.contains("a-runbook"));
        assert!(!a.contains("not-a-heading"));
    }
}
