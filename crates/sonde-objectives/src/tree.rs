//! Generating into a repository (`generate FILE --into ROOT`): the generated files at their
//! paths under `ROOT` (`alerts/`, `dashboards/`, `cloudwatch/`), and the threshold lines of the
//! hand-written dashboards that draw an objective set from it; `--check` compares instead of
//! writing.
//!
//! **How a hand-written panel is tied to an objective.** A panel that shows what an alert
//! watches already links to the alert's runbook section (`...runbook.md#apilatencyp95high`).
//! When that alert is an objective's, the generator sets the panel's threshold steps
//! (`fieldConfig.defaults.thresholds.steps`) to the objective's number, one step per linked
//! objective, above the base step:
//!
//! | objective | the panel's line |
//! |---|---|
//! | threshold (`p95 < 300ms`) | the threshold, in seconds (`0.3`) |
//! | ratio with `bad` events (errors under 1 %) | the error budget, the share of bad events allowed (`0.01`) |
//! | ratio with `good` events (cache hits at least 70 %) | the target, the share of good events required (`0.7`) |
//!
//! The steps' colours and everything else in the file are kept as they are: only the step
//! values change (the files are rewritten byte for byte otherwise). In the CloudFormation
//! templates of `cloudwatch/`, a dashboard annotation `{"label": "<alert name>", "value": N}`
//! of an objective's alert gets the same number.

use std::path::{Path, PathBuf};

use crate::Error;
use crate::generate::Generated;
use crate::model::{Decimal, Objectives, Subset};

/// One number an objective draws on the panels that link one of its alerts.
#[derive(Debug, Clone, PartialEq)]
pub struct Tie {
    /// The alert's runbook anchor: its name in lower case.
    pub anchor: String,
    /// The objective's name.
    pub objective: String,
    /// The number (see the module's table).
    pub value: Decimal,
}

/// The numbers of every objective, by the anchors of its alerts.
pub fn ties(o: &Objectives) -> Vec<Tie> {
    let mut out = Vec::new();
    for t in &o.thresholds {
        out.push(Tie {
            anchor: t.alert.to_ascii_lowercase(),
            objective: t.common.name.clone(),
            value: t.threshold.seconds,
        });
    }
    for r in &o.ratios {
        let value = match &r.subset {
            Subset::Bad(_) => r.target.budget,
            Subset::Good(_) => r.target.fraction,
        };
        for alert in [&r.alert_page, &r.alert_ticket] {
            out.push(Tie {
                anchor: alert.to_ascii_lowercase(),
                objective: r.common.name.clone(),
                value,
            });
        }
    }
    out
}

// ------------------------------------------------------------------------------------------
// JSON kept as written: an order-preserving tree whose scalars keep their source text, printed
// back in the layout of the repository's dashboards (two-space indentation, `"key": value`).

#[derive(Debug, Clone, PartialEq)]
enum J {
    /// Keys as written (quotes included), values.
    Obj(Vec<(String, J)>),
    Arr(Vec<J>),
    /// A string (quotes included), number, `true`, `false` or `null`, as written.
    Raw(String),
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn fail<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("{what} at byte {}", self.i))
    }

    /// Consumes `b` if it comes next.
    fn eat(&mut self, b: u8) -> bool {
        let next = self.s.get(self.i) == Some(&b);
        if next {
            self.i += 1;
        }
        next
    }

    /// The items of an object or an array, its opening bracket read, up to `close`: each read
    /// by `item`, commas between.
    fn items<T>(
        &mut self,
        close: u8,
        mut item: impl FnMut(&mut Self) -> Result<T, String>,
    ) -> Result<Vec<T>, String> {
        let mut items = Vec::new();
        self.ws();
        if self.eat(close) {
            return Ok(items);
        }
        loop {
            items.push(item(self)?);
            self.ws();
            if self.eat(close) {
                return Ok(items);
            }
            if !self.eat(b',') {
                return self.fail(&format!("expected `,` or `{}`", close as char));
            }
        }
    }

    fn string(&mut self) -> Result<String, String> {
        let start = self.i;
        self.i += 1;
        while self.i < self.s.len() {
            match self.s[self.i] {
                b'\\' => self.i += 2,
                b'"' => {
                    self.i += 1;
                    return Ok(String::from_utf8_lossy(&self.s[start..self.i]).into_owned());
                }
                _ => self.i += 1,
            }
        }
        self.fail("unterminated string")
    }

    fn value(&mut self, depth: usize) -> Result<J, String> {
        if depth > 64 {
            return self.fail("nested too deeply");
        }
        self.ws();
        match self.s.get(self.i) {
            Some(b'{') => {
                self.i += 1;
                let entries = self.items(b'}', |p| {
                    p.ws();
                    if p.s.get(p.i) != Some(&b'"') {
                        return p.fail("expected a key");
                    }
                    let key = p.string()?;
                    p.ws();
                    if !p.eat(b':') {
                        return p.fail("expected `:`");
                    }
                    Ok((key, p.value(depth + 1)?))
                })?;
                Ok(J::Obj(entries))
            }
            Some(b'[') => {
                self.i += 1;
                Ok(J::Arr(self.items(b']', |p| p.value(depth + 1))?))
            }
            Some(b'"') => Ok(J::Raw(self.string()?)),
            Some(_) => {
                let start = self.i;
                while self.i < self.s.len()
                    && !matches!(self.s[self.i], b',' | b']' | b'}')
                    && !self.s[self.i].is_ascii_whitespace()
                {
                    self.i += 1;
                }
                Ok(J::Raw(
                    String::from_utf8_lossy(&self.s[start..self.i]).into_owned(),
                ))
            }
            None => self.fail("unexpected end"),
        }
    }
}

fn parse_json(text: &str) -> Result<J, String> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    let v = p.value(0)?;
    p.ws();
    if p.i != text.len() {
        return p.fail("trailing text");
    }
    // Checked by a real parser too: the tree above is lenient about scalars.
    serde_json::from_str::<serde_json::Value>(text).map_err(|e| e.to_string())?;
    Ok(v)
}

/// The entries of an object (keys given) or the items of an array, one a line two spaces in
/// from `indent`, between `brackets`.
fn print_items<'j>(
    items: impl ExactSizeIterator<Item = (Option<&'j str>, &'j J)>,
    brackets: (char, char),
    indent: usize,
    out: &mut String,
) {
    let n = items.len();
    out.push(brackets.0);
    out.push('\n');
    for (i, (key, v)) in items.enumerate() {
        out.push_str(&" ".repeat(indent + 2));
        if let Some(k) = key {
            out.push_str(k);
            out.push_str(": ");
        }
        print_json(v, indent + 2, out);
        out.push_str(if i + 1 < n { ",\n" } else { "\n" });
    }
    out.push_str(&" ".repeat(indent));
    out.push(brackets.1);
}

fn print_json(j: &J, indent: usize, out: &mut String) {
    match j {
        J::Raw(r) => out.push_str(r),
        J::Obj(e) if e.is_empty() => out.push_str("{}"),
        J::Arr(a) if a.is_empty() => out.push_str("[]"),
        J::Obj(entries) => print_items(
            entries.iter().map(|(k, v)| (Some(k.as_str()), v)),
            ('{', '}'),
            indent,
            out,
        ),
        J::Arr(items) => print_items(items.iter().map(|v| (None, v)), ('[', ']'), indent, out),
    }
}

impl J {
    fn get(&self, key: &str) -> Option<&J> {
        match self {
            J::Obj(e) => e
                .iter()
                .find(|(k, _)| k.trim_matches('"') == key)
                .map(|(_, v)| v),
            _ => None,
        }
    }

    fn get_mut(&mut self, key: &str) -> Option<&mut J> {
        match self {
            J::Obj(e) => e
                .iter_mut()
                .find(|(k, _)| k.trim_matches('"') == key)
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// A string's value (escapes of `"`, `\` and `/` undone: enough for titles and URLs).
    fn str(&self) -> Option<String> {
        match self {
            J::Raw(r) if r.starts_with('"') => Some(
                r.trim_matches('"')
                    .replace("\\\"", "\"")
                    .replace("\\/", "/")
                    .replace("\\\\", "\\"),
            ),
            _ => None,
        }
    }
}

/// Sets the thresholds of the panels (rows' panels included) that link an objective's alert;
/// `changed` gets a line per panel.
fn tie_panels(panels: &mut J, ties: &[Tie], changed: &mut Vec<String>) -> Result<(), String> {
    let J::Arr(items) = panels else {
        return Ok(());
    };
    for p in items {
        if let Some(inner) = p.get_mut("panels") {
            tie_panels(inner, ties, changed)?;
        }
        let title = p.get("title").and_then(J::str).unwrap_or_default();
        let anchors: Vec<String> = match p.get("links") {
            Some(J::Arr(links)) => links
                .iter()
                .filter_map(|l| l.get("url").and_then(J::str))
                .filter_map(|u| u.rsplit_once('#').map(|(_, a)| a.to_string()))
                .collect(),
            _ => Vec::new(),
        };
        let mut values: Vec<Decimal> = ties
            .iter()
            .filter(|t| anchors.contains(&t.anchor))
            .map(|t| t.value)
            .collect();
        if values.is_empty() {
            continue;
        }
        values.sort_by(|a, b| a.to_f64().total_cmp(&b.to_f64()));
        values.dedup();
        let steps = p
            .get_mut("fieldConfig")
            .and_then(|f| f.get_mut("defaults"))
            .and_then(|d| d.get_mut("thresholds"))
            .and_then(|t| t.get_mut("steps"));
        let Some(J::Arr(steps)) = steps else {
            return Err(format!(
                "panel {title:?} links an objective's alert but has no fieldConfig.defaults.thresholds.steps; add them (a base step {{\"color\": \"green\", \"value\": null}})"
            ));
        };
        let color = |s: Option<&J>| s.and_then(|s| s.get("color")).cloned();
        let base = steps.first().cloned().unwrap_or_else(|| {
            J::Obj(vec![
                ("\"color\"".into(), J::Raw("\"green\"".into())),
                ("\"value\"".into(), J::Raw("null".into())),
            ])
        });
        let mut next = vec![base];
        for (n, v) in values.iter().enumerate() {
            let c = color(steps.get(n + 1)).unwrap_or_else(|| J::Raw("\"red\"".into()));
            next.push(J::Obj(vec![
                ("\"color\"".into(), c),
                ("\"value\"".into(), J::Raw(v.to_string())),
            ]));
        }
        if *steps != next {
            changed.push(format!(
                "{title}: {}",
                values
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            *steps = next;
        }
    }
    Ok(())
}

/// A Grafana dashboard's text with the threshold lines of its panels tied to objectives set.
pub fn tie_dashboard(text: &str, ties: &[Tie]) -> Result<String, String> {
    let mut j = parse_json(text)?;
    let mut changed = Vec::new();
    if let Some(panels) = j.get_mut("panels") {
        tie_panels(panels, ties, &mut changed)?;
    }
    if changed.is_empty() {
        return Ok(text.to_string());
    }
    let mut out = String::with_capacity(text.len());
    print_json(&j, 0, &mut out);
    out.push('\n');
    Ok(out)
}

/// A CloudFormation template's text with the dashboard annotations labelled with an objective's
/// alert set to the objective's number.
pub fn tie_cloudwatch(text: &str, ties: &[Tie]) -> String {
    let Ok(re) = regex::Regex::new(r#"("label": "(\w+)",\s*"value": )(-?[0-9][0-9.eE+-]*)"#) else {
        return text.to_string();
    };
    re.replace_all(text, |c: &regex::Captures<'_>| {
        let anchor = c[2].to_ascii_lowercase();
        match ties.iter().find(|t| t.anchor == anchor) {
            Some(t) => format!("{}{}", &c[1], t.value),
            None => c[0].to_string(),
        }
    })
    .into_owned()
}

// ------------------------------------------------------------------------------------------
// The files of a tree

/// Files directly in `root/dir` whose name ends with `suffix`, as `dir/name`, sorted.
fn listed(root: &Path, dir: &str, suffix: &str) -> Result<Vec<String>, Error> {
    let path = root.join(dir);
    if !path.is_dir() {
        return Ok(Vec::new());
    }
    let entries = std::fs::read_dir(&path).map_err(|source| Error::Read {
        path: path.clone(),
        source,
    })?;
    let mut out = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(suffix) && e.path().is_file() {
            out.push(format!("{dir}/{name}"));
        }
    }
    out.sort();
    Ok(out)
}

/// What `generate --into ROOT` writes: every generated file, then every hand-written
/// `dashboards/*.json` and `cloudwatch/*.yaml` of `ROOT` whose threshold lines are tied to an
/// objective, with those lines set. As (path relative to `ROOT`, content).
pub fn files_into(
    o: &Objectives,
    generated: &Generated,
    root: &Path,
) -> Result<Vec<(String, String)>, Error> {
    let ties = ties(o);
    let mut out = generated.files.clone();
    let ours = |p: &str| generated.files.iter().any(|(g, _)| g == p);
    let read = |rel: &str| {
        let path = root.join(rel);
        std::fs::read_to_string(&path).map_err(|source| Error::Read { path, source })
    };
    for rel in listed(root, "dashboards", ".json")? {
        if ours(&rel) {
            continue;
        }
        let text = read(&rel)?;
        let tied = tie_dashboard(&text, &ties).map_err(|m| {
            Error::Generate(format!(
                "{}: {m}; fix the dashboard so that the objectives' lines can be set in it",
                root.join(&rel).display()
            ))
        })?;
        if tied != text || has_tie(&text, &ties) {
            out.push((rel, tied));
        }
    }
    for rel in listed(root, "cloudwatch", ".yaml")? {
        if ours(&rel) {
            continue;
        }
        let text = read(&rel)?;
        let tied = tie_cloudwatch(&text, &ties);
        if tied != text || has_tie(&text, &ties) {
            out.push((rel, tied));
        }
    }
    Ok(out)
}

/// Whether a hand-written file refers to an objective's alert (so it belongs to the tree).
fn has_tie(text: &str, ties: &[Tie]) -> bool {
    ties.iter().any(|t| {
        text.contains(&format!("#{}\"", t.anchor))
            || text
                .to_ascii_lowercase()
                .contains(&format!("\"label\": \"{}\"", t.anchor))
    })
}

/// Writes `files` under `root`: each into a temporary file beside its destination first, then
/// all renamed into place, so an error leaves every destination as it was.
pub fn write_into(files: &[(String, String)], root: &Path) -> Result<(), Error> {
    let unique = crate::unique_suffix();
    let mut staged: Vec<(PathBuf, PathBuf)> = Vec::new();
    let werr = |path: &Path, message: String| Error::Write {
        path: path.to_path_buf(),
        message,
    };
    let result = (|| -> Result<(), Error> {
        for (rel, content) in files {
            let dest = root.join(rel);
            let dir = dest.parent().unwrap_or(root);
            std::fs::create_dir_all(dir).map_err(|e| {
                werr(
                    dir,
                    format!("{e}; check that {} is writable", root.display()),
                )
            })?;
            let name = dest
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let tmp = dir.join(format!(".{name}.tmp-{unique}"));
            std::fs::write(&tmp, content)
                .map_err(|e| werr(&tmp, format!("{e}; check the free space")))?;
            staged.push((tmp, dest));
        }
        for (tmp, dest) in &staged {
            std::fs::rename(tmp, dest)
                .map_err(|e| werr(dest, format!("{e}; check the permissions")))?;
        }
        Ok(())
    })();
    if result.is_err() {
        for (tmp, _) in &staged {
            let _ = std::fs::remove_file(tmp);
        }
    }
    result
}

/// One file of the tree that differs from what the objectives generate.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    /// Relative to the tree's root.
    pub path: String,
    /// Where and how: the first differing line, with a few lines of each version.
    pub excerpt: String,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.excerpt)
    }
}

/// The first difference between `committed` and `generated`, as a short excerpt: a line of
/// context, then the differing lines of each (at most six).
pub fn excerpt(committed: &str, generated: &str) -> String {
    let a: Vec<&str> = committed.lines().collect();
    let b: Vec<&str> = generated.lines().collect();
    let first = a
        .iter()
        .zip(&b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let same_tail = a[first..]
        .iter()
        .rev()
        .zip(b[first..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (mut a_diff, mut b_diff) = (
        &a[first..a.len() - same_tail],
        &b[first..b.len() - same_tail],
    );
    let mut more = String::new();
    if a.len() == b.len() {
        // Line for line: the first run of differing lines, and how many others differ.
        let run = a_diff
            .iter()
            .zip(b_diff)
            .take_while(|(x, y)| x != y)
            .count();
        let others = a_diff
            .iter()
            .zip(b_diff)
            .skip(run)
            .filter(|(x, y)| x != y)
            .count();
        if others > 0 {
            more = format!("  (and {others} more differing line(s) further down)\n");
        }
        a_diff = &a_diff[..run];
        b_diff = &b_diff[..run];
    }
    let mut out = format!("differs from line {}:\n", first + 1);
    if let Some(l) = first.checked_sub(1).and_then(|i| a.get(i)) {
        out.push_str(&format!("    {l}\n"));
    }
    for (sign, lines) in [("-", a_diff), ("+", b_diff)] {
        for l in lines.iter().take(6) {
            out.push_str(&format!("  {sign} {l}\n"));
        }
        if lines.len() > 6 {
            out.push_str(&format!("  {sign} ... ({} more lines)\n", lines.len() - 6));
        }
    }
    out.push_str(&more);
    out.push_str("  (- committed, + generated)");
    out
}

/// Compares `files` with the tree under `root`: the files that are missing or differ.
pub fn differences(files: &[(String, String)], root: &Path) -> Vec<Difference> {
    let mut out = Vec::new();
    for (rel, content) in files {
        match std::fs::read_to_string(root.join(rel)) {
            Ok(committed) if committed == *content => {}
            Ok(committed) => out.push(Difference {
                path: rel.clone(),
                excerpt: excerpt(&committed, content),
            }),
            Err(e) => out.push(Difference {
                path: rel.clone(),
                excerpt: format!("cannot be read ({e}), but would be generated"),
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_in_the_dashboards_layout() {
        let text = "{\n  \"a\": [],\n  \"b\": {},\n  \"c\": [\n    1,\n    \"x\\\"y\",\n    {\n      \"d\": null\n    }\n  ],\n  \"e\": 1e-09\n}\n";
        let j = parse_json(text).unwrap_or_else(|e| panic!("{e}"));
        let mut out = String::new();
        print_json(&j, 0, &mut out);
        out.push('\n');
        assert_eq!(out, text);
        assert!(parse_json("{\"a\": }").is_err());
        assert!(parse_json("[1, 2").is_err());
    }

    #[test]
    fn panels_linking_an_objective_alert_get_its_number() {
        let ties = vec![Tie {
            anchor: "apilatencyp95high".into(),
            objective: "api-latency-p95".into(),
            value: Decimal {
                mantissa: 3,
                scale: 1,
            },
        }];
        let text = "{\n  \"panels\": [\n    {\n      \"title\": \"p95\",\n      \"links\": [\n        {\n          \"url\": \"https://x/runbook.md#apilatencyp95high\"\n        }\n      ],\n      \"fieldConfig\": {\n        \"defaults\": {\n          \"thresholds\": {\n            \"steps\": [\n              {\n                \"color\": \"green\",\n                \"value\": null\n              },\n              {\n                \"color\": \"orange\",\n                \"value\": 0.5\n              }\n            ]\n          }\n        }\n      }\n    }\n  ]\n}\n";
        let tied = tie_dashboard(text, &ties).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            tied,
            text.replace("\"value\": 0.5", "\"value\": 0.3"),
            "only the value moved, the colour stayed"
        );
        // Idempotent, and a panel without the link is left alone.
        assert_eq!(tie_dashboard(&tied, &ties).as_deref(), Ok(tied.as_str()));
        let other = text.replace("#apilatencyp95high", "#somethingelse");
        assert_eq!(tie_dashboard(&other, &ties).as_deref(), Ok(other.as_str()));
        let cw = "\"label\": \"ApiLatencyP95High\",\n   \"value\": 0.5,\n\"label\": \"Other\", \"value\": 2";
        assert_eq!(
            tie_cloudwatch(cw, &ties),
            "\"label\": \"ApiLatencyP95High\",\n   \"value\": 0.3,\n\"label\": \"Other\", \"value\": 2"
        );
    }
}
